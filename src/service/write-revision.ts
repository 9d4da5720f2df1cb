/**
 * Which store revision a request's writes made: the API answers it (header `ipferry-revision`)
 * so a client can wait for exactly that revision to be applied, and the audit trail records it.
 * A store wrapper notes every successful transaction's revision in the request's async context.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import type { Store, Txn, TxnResult } from '../store/store.js';

interface Written {
  revision?: number;
}

const context = new AsyncLocalStorage<Written>();

/** Runs `work`, and tells the latest revision a write of it made (none: it wrote nothing). */
export async function trackWrites<T>(
  work: () => Promise<T>,
): Promise<{ value: T; revision?: number }> {
  const written: Written = {};
  const value = await context.run(written, work);
  return { value, ...(written.revision !== undefined ? { revision: written.revision } : {}) };
}

/** The revision written so far in the current context (for a request that failed midway). */
export function writtenRevision(): number | undefined {
  return context.getStore()?.revision;
}

/** `store` whose successful transactions are noted in the caller's context (trackWrites). */
export function noteWrites(store: Store): Store {
  const txn = async (t: Txn): Promise<TxnResult> => {
    const r = await store.txn(t);
    const written = context.getStore();
    if (r.succeeded && written && t.success.length > 0) {
      written.revision = Math.max(written.revision ?? 0, r.revision);
    }
    return r;
  };
  return new Proxy(store, {
    get(target, property) {
      if (property === 'txn') return txn;
      const value: unknown = Reflect.get(target, property, target);
      return typeof value === 'function'
        ? (value as (...a: unknown[]) => unknown).bind(target)
        : value;
    },
  });
}
