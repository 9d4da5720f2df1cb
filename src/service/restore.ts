/**
 * Writing a backup onto a store (`ipferry state import`, docs/backup.md): onto an empty store
 * only, all or nothing, in one transaction or, where the store bounds a transaction (etcd's
 * `--max-txn-ops`), in parts under a marker. The records come checked by parseStateDocument
 * (service/state.ts).
 */
import { IpferryError } from '../core/errors.js';
import { stringifyStored } from '../core/json.js';
import { HEALTH_ROOT, RESTORE_KEY, ROOT } from '../core/keys.js';
import type { Compare, Op, Store } from '../store/store.js';
import type { StateRecord } from './state.js';

/** How an import was written: its last revision, and in how many transactions. */
export interface ImportResult {
  readonly revision: number;
  readonly transactions: number;
}

/**
 * Writes `records` onto `store` if the store is empty: no key under ROOT or beside it (health).
 * Refused otherwise with nothing written; every key is also compared as absent, so a writer that
 * slips in between the check and the write fails the import.
 *
 * In one transaction when the store takes that many operations in one; otherwise (etcd's
 * `--max-txn-ops`) in parts, under RESTORE_KEY: the first part creates it, each later part is
 * written only while it is still the one the first part made, and the last deletes it. A part
 * that fails takes back what the earlier parts wrote, so the import is still all or nothing.
 * Revisions start again in the new store: no carried record names one (see the module comment).
 */
export async function importState(
  store: Store,
  records: readonly StateRecord[],
): Promise<ImportResult> {
  await requireEmpty(store);
  const limit = store.maxTxnOps;
  if (limit === undefined || records.length <= limit) {
    const result = await store.txn({
      compare: records.map(absent),
      success: records.map(put),
    });
    if (!result.succeeded) throw await conflict(store);
    return { revision: result.revision, transactions: 1 };
  }
  return importInParts(store, records, limit);
}

async function importInParts(
  store: Store,
  records: readonly StateRecord[],
  limit: number,
): Promise<ImportResult> {
  // One compare and one operation of each part are the marker's.
  const parts = partsOf(records, limit - 1);
  const marker = stringifyStored({ records: records.length, parts: parts.length });
  const first = await store.txn({
    compare: [{ key: RESTORE_KEY, target: 'create', op: '=', value: 0 }, ...parts[0]!.map(absent)],
    success: [{ type: 'put', key: RESTORE_KEY, value: marker }, ...parts[0]!.map(put)],
  });
  if (!first.succeeded) throw await conflict(store);
  const ours = {
    key: RESTORE_KEY,
    target: 'mod' as const,
    op: '=' as const,
    value: first.revision,
  };
  const written: StateRecord[] = [...parts[0]!];
  let revision = first.revision;
  for (const [i, part] of parts.entries()) {
    if (i === 0) continue; // written with the marker, above
    const last = i === parts.length - 1;
    let failure: unknown;
    try {
      const result = await store.txn({
        compare: [ours, ...part.map(absent)],
        success: [
          ...part.map(put),
          ...(last ? [{ type: 'delete' as const, key: RESTORE_KEY }] : []),
        ],
      });
      if (result.succeeded) {
        written.push(...part);
        revision = result.revision;
        continue;
      }
      failure = new IpferryError('IPF_E_CONFLICT', { what: 'a key was written during the import' });
    } catch (e) {
      failure = e;
    }
    await takeBack(store, written, ours, limit, records.length, failure);
    throw failure;
  }
  return { revision, transactions: parts.length };
}

/** Deletes what the earlier parts wrote, while the marker is still the import's, then the marker. */
async function takeBack(
  store: Store,
  written: readonly StateRecord[],
  ours: Compare,
  limit: number,
  total: number,
  failure: unknown,
): Promise<void> {
  try {
    for (const part of partsOf(written, limit)) {
      const result = await store.txn({
        compare: [ours],
        success: part.map((r) => ({ type: 'delete' as const, key: r.key })),
      });
      if (!result.succeeded) throw new Error(`${RESTORE_KEY} changed meanwhile`);
    }
    await store.txn({ compare: [ours], success: [{ type: 'delete', key: RESTORE_KEY }] });
  } catch (e) {
    throw new IpferryError('IPF_E_IMPORT_PARTIAL', {
      written: String(written.length),
      total: String(total),
      reason: failure instanceof Error ? failure.message : String(failure),
      cleanup: e instanceof Error ? e.message : String(e),
    });
  }
}

function partsOf<T>(items: readonly T[], size: number): T[][] {
  const parts: T[][] = [];
  for (let i = 0; i < items.length; i += size) parts.push(items.slice(i, i + size));
  return parts;
}

const absent = (r: StateRecord): Compare => ({ key: r.key, target: 'create', op: '=', value: 0 });
const put = (r: StateRecord): Op => ({ type: 'put', key: r.key, value: stringifyStored(r.value) });

/** A writer came in between: says what it wrote when it is still there. */
async function conflict(store: Store): Promise<IpferryError> {
  await requireEmpty(store);
  return new IpferryError('IPF_E_CONFLICT', { what: 'a key was written during the import' });
}

async function requireEmpty(store: Store): Promise<void> {
  for (const prefix of [ROOT, HEALTH_ROOT, RESTORE_KEY]) {
    const { kvs } = await store.list(prefix);
    const first = kvs[0];
    if (first) {
      throw new IpferryError('IPF_E_STORE_NOT_EMPTY', { count: kvs.length, key: first.key });
    }
  }
}
