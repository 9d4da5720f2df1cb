/**
 * One process of the fleet benchmark (control-fleet.ts): hosts a share of the fleet's agents —
 * real `startAgent`s on the etcd store, each on its own strict fake dataplane — and answers the
 * parent over IPC. Started with `fork`; it exits when told to stop or when the parent goes.
 *
 * Times are the system's monotonic clock (process.hrtime), which every process on the machine
 * shares, so the parent can compare an agent's apply here with its own setPolicy call.
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { resolveConfig } from '../src/agent/config.js';
import { type RunningAgent, startAgent } from '../src/agent/run.js';
import type { IntentDiff } from '../src/intent/diff.js';
import { FakeDataplane } from '../src/dataplane/fake.js';
import { percentile } from './stats.js';

/** Milliseconds on the monotonic clock all processes of the machine share. */
export function clockMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}

export interface Member {
  readonly name: string;
  readonly site: 'a' | 'b';
  readonly addresses: readonly string[];
}

export type ToWorker =
  | {
      readonly type: 'start';
      readonly storeSpec: string;
      readonly dir: string;
      readonly members: readonly Member[];
    }
  | { readonly type: 'realised' }
  | { readonly type: 'await'; readonly port: number }
  | { readonly type: 'holds'; readonly port: number }
  | { readonly type: 'idle'; readonly ms: number }
  | { readonly type: 'passes'; readonly count: number }
  | { readonly type: 'stop' };

export type FromWorker =
  | { readonly type: 'started' }
  | { readonly type: 'realised'; readonly lowest: number; readonly errors: readonly string[] }
  | { readonly type: 'armed' }
  /** When each of its agents applied the awaited change (clockMs). */
  | { readonly type: 'applied'; readonly times: readonly number[] }
  | { readonly type: 'holds'; readonly missing: number }
  | { readonly type: 'idle'; readonly lagP99: number; readonly rssMb: number }
  | { readonly type: 'passes'; readonly ms: readonly number[] }
  | { readonly type: 'stopped' }
  | { readonly type: 'failed'; readonly error: string };

/** A fake dataplane that notes when it first applied a diff adding the awaited port. */
class TimedDataplane extends FakeDataplane {
  awaited?: string;
  appliedAt?: number;

  override async apply(diff: IntentDiff): Promise<void> {
    await super.apply(diff);
    const key = this.awaited;
    if (
      key !== undefined &&
      this.appliedAt === undefined &&
      diff.add.some((e) => e.kind === 'meshport' && e.key === key)
    ) {
      this.appliedAt = clockMs();
    }
  }
}

interface Running {
  readonly member: Member;
  readonly dataplane: TimedDataplane;
  agent?: RunningAgent;
}

const running: Running[] = [];
/** Bumped by every `await`: a wait for an earlier change stops reporting. */
let awaiting = 0;

async function startMember(r: Running, dir: string, storeSpec: string): Promise<void> {
  // Its host's addresses: the agent registers them (src/agent/run.ts, registeredAddresses).
  r.dataplane.hostFacts = { interfaces: ['eth0'], addresses: [...r.member.addresses] };
  r.agent = await startAgent(
    resolveConfig(
      {},
      {
        node: r.member.name,
        site: r.member.site,
        store: storeSpec,
        listen: '127.0.0.1:0',
        tokenFile: join(dir, `${r.member.name}.token`),
        stateDir: join(dir, r.member.name),
        // Drift repair is not what is measured: keep periodic passes out of the way.
        resyncSeconds: 3600,
        probeSeconds: 3600,
        logLevel: 'silent',
      },
      'bench',
    ),
    { dataplane: r.dataplane, neighbours: () => Promise.resolve([]) },
  );
}

/** `items` through `step`, `width` at a time. */
async function inBatches<T>(
  items: readonly T[],
  width: number,
  step: (item: T) => Promise<unknown>,
): Promise<void> {
  for (let i = 0; i < items.length; i += width) {
    await Promise.all(items.slice(i, i + width).map(step));
  }
}

/** The p99 delay of a 10 ms timer over `ms`: how busy this process's event loop is. */
async function loopLag(ms: number): Promise<number> {
  const lags: number[] = [];
  const end = clockMs() + ms;
  while (clockMs() < end) {
    const t = clockMs();
    await sleep(10);
    lags.push(clockMs() - t - 10);
  }
  return percentile(lags, 99);
}

/** Reports once every agent here applied the awaited change (the parent times out on its own). */
async function reportApplied(round: number): Promise<void> {
  while (round === awaiting) {
    if (running.every((r) => r.dataplane.appliedAt !== undefined)) {
      send({ type: 'applied', times: running.map((r) => r.dataplane.appliedAt!) });
      return;
    }
    await sleep(2);
  }
}

function send(message: FromWorker): void {
  process.send?.(message);
}

async function handle(m: ToWorker): Promise<void> {
  switch (m.type) {
    case 'start': {
      await mkdir(m.dir, { recursive: true });
      for (const member of m.members) running.push({ member, dataplane: new TimedDataplane() });
      // A few at a time: each start registers, takes a lease, lists the root, opens a watch and
      // listens.
      await inBatches(running, 10, (r) => startMember(r, m.dir, m.storeSpec));
      send({ type: 'started' });
      return;
    }
    case 'realised': {
      const revisions = running.map((r) => r.agent?.reconciler.realisedRevision ?? 0);
      const errors = running.flatMap((r) => {
        const e = r.agent?.reconciler.lastError;
        return e ? [e] : [];
      });
      send({ type: 'realised', lowest: Math.min(...revisions), errors: [...new Set(errors)] });
      return;
    }
    case 'await': {
      const round = ++awaiting;
      for (const r of running) {
        r.dataplane.awaited = `tcp . ${m.port}`;
        r.dataplane.appliedAt = undefined;
      }
      send({ type: 'armed' });
      void reportApplied(round);
      return;
    }
    case 'holds': {
      // Every agent must hold the change: the fake's state, not only its timing.
      const line = `meshport tcp . ${m.port} -> `;
      const missing = running.filter((r) => !r.dataplane.dump().split('\n').includes(line));
      send({ type: 'holds', missing: missing.length });
      return;
    }
    case 'idle': {
      const lagP99 = await loopLag(m.ms);
      send({ type: 'idle', lagP99, rssMb: process.memoryUsage().rss / 2 ** 20 });
      return;
    }
    case 'passes': {
      // One agent's whole pass (compile from its copy of the root, diff, apply, report), run by
      // hand while the fleet is idle: what a change costs each agent on a host of its own.
      const probe = running[0]!.agent!.reconciler;
      const ms: number[] = [];
      for (let i = 0; i < m.count; i++) {
        await probe.settled();
        const t = clockMs();
        await probe.pass();
        ms.push(clockMs() - t);
      }
      send({ type: 'passes', ms });
      return;
    }
    case 'stop': {
      await stopAll();
      send({ type: 'stopped' });
      return;
    }
  }
}

let stopping: Promise<void> | undefined;

/** Stops every agent here, once: each revokes its lease and closes its etcd client. */
function stopAll(): Promise<void> {
  awaiting++;
  stopping ??= inBatches(running, 50, (r) => r.agent?.stop() ?? Promise.resolve());
  return stopping;
}

// Only as the forked worker: control-fleet.ts imports this module for its types and clock.
if (process.send && process.argv[1] === fileURLToPath(import.meta.url)) {
  process.on('message', (m: ToWorker) => {
    handle(m).catch((e: unknown) => {
      send({ type: 'failed', error: e instanceof Error ? e.message : String(e) });
    });
  });
  // The parent gone (killed, crashed): nothing here outlives it.
  process.on('disconnect', () => {
    setTimeout(() => process.exit(0), 10_000).unref();
    void stopAll().finally(() => process.exit(0));
  });
}
