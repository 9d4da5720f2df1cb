/**
 * Typed access to the JSON records of keys.ts on top of any Store, and the one retry loop for
 * optimistic transactions: read, decide (pure, in core), commit with compares on what was
 * read; when another writer got there first, read again and decide again.
 */
import { IpferryError } from '../core/errors.js';
import { parseStored } from '../core/json.js';
import type { Compare, KeyValue, Store } from '../store/store.js';

export interface Rec<T> {
  readonly value: T;
  readonly kv: KeyValue;
}

export async function getRecord<T>(store: Store, key: string): Promise<Rec<T> | undefined> {
  const kv = await store.get(key);
  return kv ? { value: parseStored<T>(kv.key, kv.value), kv } : undefined;
}

export async function listRecords<T>(
  store: Store,
  prefix: string,
): Promise<{ items: Rec<T>[]; revision: number }> {
  const { kvs, revision } = await store.list(prefix);
  return { items: kvs.map((kv) => ({ value: parseStored<T>(kv.key, kv.value), kv })), revision };
}

/** Compare that `key` is still exactly as it was read (absent if `rec` is undefined). */
export function unchanged(key: string, rec: { kv: KeyValue } | undefined): Compare {
  return { key, target: 'mod', op: '=', value: rec?.kv.modRevision ?? 0 };
}

export function absent(key: string): Compare {
  return { key, target: 'create', op: '=', value: 0 };
}

export const RETRY = Symbol('retry');

/**
 * Runs `attempt` until it returns something other than RETRY. Each RETRY means another writer
 * committed in between, so the loop always makes progress for someone; the bound only protects
 * against a livelock bug.
 */
export async function optimistic<T>(
  what: string,
  attempt: () => Promise<T | typeof RETRY>,
): Promise<T> {
  for (let i = 0; i < 1000; i++) {
    const result = await attempt();
    if (result !== RETRY) return result;
    if (i >= 8)
      await new Promise((resolve) => setTimeout(resolve, Math.random() * Math.min(50, i)));
  }
  throw new IpferryError('IPF_E_CONFLICT', { what });
}
