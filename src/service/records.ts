/**
 * Typed access to the JSON records of keys.ts on top of any Store, and the one retry loop for
 * optimistic transactions: read, decide (pure, in core), commit with compares on what was
 * read; when another writer got there first, read again and decide again.
 */
import { IpferryError } from '../core/errors.js';
import { keys } from '../core/keys.js';
import {
  decodeFipStatus,
  decodeFloatingIp,
  decodeNodeRecord,
  decodePool,
} from '../core/records.js';
import type { Compare, KeyValue, Store } from '../store/store.js';

/**
 * The records the control plane decodes as the agents do (core/records.ts) before it uses them:
 * one that does not decode is left out of a list, and a get of it is IPF_E_RECORD_UNUSABLE, so
 * a broken record (an older version's, a write around the API) never fails a whole answer.
 */
const DECODERS: readonly (readonly [string, (value: unknown) => unknown])[] = [
  [keys.fips, decodeFloatingIp],
  [keys.statuses, decodeFipStatus],
  [keys.nodes, decodeNodeRecord],
  [keys.pools, decodePool],
];

function decodeStored<T>(kv: KeyValue): T {
  const decode = DECODERS.find(([prefix]) => kv.key.startsWith(prefix))?.[1];
  let value: unknown;
  try {
    value = JSON.parse(kv.value) as unknown;
    return (decode ? decode(value) : value) as T;
  } catch (e) {
    const problems = e instanceof IpferryError ? e.problems : undefined;
    const reason =
      problems && problems.length > 0
        ? problems.map((p) => (p.path ? `${p.path} ${p.message}` : p.message)).join('; ')
        : 'it is not valid JSON';
    throw new IpferryError('IPF_E_RECORD_UNUSABLE', { key: kv.key, reason });
  }
}

/** The record decoded, or undefined when it cannot be used (see DECODERS). */
export function usableRecord<T>(kv: KeyValue): T | undefined {
  try {
    return decodeStored<T>(kv);
  } catch (e) {
    if (isUnusable(e)) return undefined;
    throw e;
  }
}

function isUnusable(e: unknown): boolean {
  return e instanceof IpferryError && e.code === 'IPF_E_RECORD_UNUSABLE';
}

export interface Rec<T> {
  readonly value: T;
  readonly kv: KeyValue;
}

export async function getRecord<T>(store: Store, key: string): Promise<Rec<T> | undefined> {
  const kv = await store.get(key);
  return kv ? { value: decodeStored<T>(kv), kv } : undefined;
}

export async function listRecords<T>(
  store: Store,
  prefix: string,
): Promise<{ items: Rec<T>[]; revision: number }> {
  const { kvs, revision } = await store.list(prefix);
  const items = kvs.flatMap((kv) => {
    try {
      return [{ value: decodeStored<T>(kv), kv }];
    } catch (e) {
      if (isUnusable(e)) return [];
      throw e;
    }
  });
  return { items, revision };
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
