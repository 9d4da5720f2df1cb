/**
 * The audit trail in the store (core/events.ts): recording an event takes the next sequence
 * number and overwrites the ring's oldest slot in one transaction, compared on the counter, so
 * two writers never take the same number and the trail stays bounded on every store (SQLite,
 * etcd, a hub's store over HTTP). Readers list the ring, and wait for more on its watch.
 */
import {
  type AuditEvent,
  decodeAuditEvent,
  eventSlot,
  EVENTS_CAPACITY,
  MAX_EVENTS_PER_ANSWER,
  type NewAuditEvent,
} from '../core/events.js';
import { keys } from '../core/keys.js';
import { stringifyStored } from '../core/json.js';
import type { Store } from '../store/store.js';
import { optimistic, RETRY } from './records.js';

/** Records `event` as the next one, in the slot of the oldest (`capacity`: for tests). */
export async function recordEvent(
  store: Store,
  event: NewAuditEvent,
  capacity = EVENTS_CAPACITY,
): Promise<AuditEvent> {
  return optimistic('record event', async () => {
    const counter = await store.get(keys.eventsSeq);
    const seq = (counter ? Number(counter.value) || 0 : 0) + 1;
    const recorded: AuditEvent = { seq, ...event };
    const r = await store.txn({
      compare: [{ key: keys.eventsSeq, target: 'mod', op: '=', value: counter?.modRevision ?? 0 }],
      success: [
        { type: 'put', key: keys.eventsSeq, value: String(seq) },
        {
          type: 'put',
          key: keys.event(eventSlot(seq, capacity)),
          value: stringifyStored(recorded),
        },
      ],
    });
    return r.succeeded ? recorded : RETRY;
  });
}

/** The latest `limit` events after sequence number `after` (all kept: 0), oldest first. */
export async function listEvents(
  store: Store,
  options: { after?: number; limit?: number } = {},
): Promise<AuditEvent[]> {
  const after = options.after ?? 0;
  const limit = Math.min(options.limit ?? MAX_EVENTS_PER_ANSWER, MAX_EVENTS_PER_ANSWER);
  const { kvs } = await store.list(keys.events);
  const events = kvs
    .map((kv) => decodeAuditEvent(parse(kv.value)))
    .filter((e): e is AuditEvent => e !== undefined && e.seq > after)
    .sort((a, b) => a.seq - b.seq);
  return events.slice(Math.max(0, events.length - limit));
}

/**
 * Events after `after`; when there are none yet, waits up to `waitMs` for the next on the
 * store's watch (a long poll: `ipferry events --follow`).
 */
export async function waitEvents(
  store: Store,
  options: { after: number; limit?: number },
  waitMs: number,
): Promise<AuditEvent[]> {
  let wake: () => void = () => undefined;
  let seen = false;
  const watch = store.watch(keys.events, {
    onEvents: () => {
      seen = true;
      wake();
    },
    onError: () => wake(),
  });
  try {
    const now = await listEvents(store, options);
    if (now.length > 0 || waitMs <= 0) return now;
    if (!seen) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, waitMs);
        wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    return await listEvents(store, options);
  } finally {
    watch.close();
  }
}

function parse(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}
