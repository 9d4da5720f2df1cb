/**
 * The agent's side of pass reports on demand (core/pass-wanted.ts): it follows PASS_WANTED_KEY
 * and, once it has passed the revision a waiting write asked for, has its health record
 * rewritten with that pass. Unasked, a pass writes nothing: the liveness beat reports it later.
 */
import { parseStored } from '../core/json.js';
import { PASS_WANTED_KEY } from '../core/keys.js';
import type { PassReport } from '../core/model.js';
import { answersPassWanted, decodePassWanted, type PassWanted } from '../core/pass-wanted.js';
import type { Store, Watch } from '../store/store.js';

export interface PassWantsOptions {
  readonly store: Store;
  readonly node: string;
  /** The reconciler's latest pass. */
  readonly lastPass: () => PassReport | undefined;
  /** Rewrites the health record with the latest pass. */
  readonly report: () => void;
}

export interface PassWants {
  /** Called after every pass: answers a standing ask this pass reached. */
  afterPass(): void;
  stop(): void;
}

/** A watch that ended (store restarted, hub gone) is opened again after this long. */
const REOPEN_MS = 1000;

export async function followPassWants(o: PassWantsOptions): Promise<PassWants> {
  let wanted: PassWanted | undefined;
  let answered = 0;
  let stopped = false;
  let watch: Watch | undefined;
  let reopen: NodeJS.Timeout | undefined;

  const answer = (): void => {
    if (stopped || !answersPassWanted(o.node, wanted, o.lastPass(), answered)) return;
    answered = wanted!.revision;
    o.report();
  };
  const take = (value: string): void => {
    const ask = decodePassWanted(safeParse(value));
    if (ask) wanted = ask;
    answer();
  };
  const open = (): void => {
    if (stopped) return;
    // Opened before the first read, so an ask written in between is not missed.
    watch = o.store.watch(PASS_WANTED_KEY, {
      onEvents: (events) => {
        for (const e of events)
          if (e.type === 'put' && e.kv.key === PASS_WANTED_KEY) take(e.kv.value);
      },
      onError: () => {
        watch = undefined;
        if (stopped) return;
        reopen = setTimeout(open, REOPEN_MS);
        reopen.unref();
      },
    });
  };
  open();
  const kv = await o.store.get(PASS_WANTED_KEY).catch(() => undefined);
  if (kv) take(kv.value);
  return {
    afterPass: answer,
    stop() {
      stopped = true;
      if (reopen) clearTimeout(reopen);
      watch?.close();
    },
  };
}

function safeParse(value: string): unknown {
  try {
    return parseStored(PASS_WANTED_KEY, value);
  } catch {
    return undefined;
  }
}
