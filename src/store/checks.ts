/**
 * The checks every local store makes on keys and transactions before touching its backend, so
 * SQLite and etcd refuse the same requests with the same IPF_E_STORE message.
 */
import { IpferryError } from '../core/errors.js';
import type { Op, Txn } from './store.js';

export function storeError(reason: string): IpferryError {
  return new IpferryError('IPF_E_STORE', { reason });
}

/**
 * Keys compare as UTF-8 bytes (code point order) in both stores. NUL and lone surrogates would
 * not survive the UTF-8 round trip, so they are refused.
 */
export function checkText(what: string, text: string, allowEmpty: boolean): void {
  if (typeof text !== 'string' || (!allowEmpty && text === '')) {
    throw storeError(`${what} must be a non-empty string`);
  }
  if (text.includes('\0') || /\p{Cs}/u.test(text)) {
    throw storeError(`${what} ${JSON.stringify(text)} contains NUL or an unpaired surrogate`);
  }
}

/**
 * etcd rejects a branch that puts one key twice or puts a key it also deletes ("duplicate key
 * given in txn request"): the result would depend on op order and emit two events for one key in
 * one revision. Checked up front for both branches, as etcd does, so a bad txn fails whichever
 * branch would run, and with our message.
 */
export function checkBranch(ops: readonly Op[]): void {
  const puts = new Set<string>();
  for (const op of ops) {
    checkText(
      op.type === 'deletePrefix' ? 'prefix' : 'key',
      op.type === 'deletePrefix' ? op.prefix : op.key,
      op.type === 'deletePrefix',
    );
    if (op.type !== 'put') continue;
    if (puts.has(op.key)) throw storeError(`key ${JSON.stringify(op.key)} is put twice in one txn`);
    puts.add(op.key);
  }
  for (const op of ops) {
    const clash =
      op.type === 'delete'
        ? puts.has(op.key)
        : op.type === 'deletePrefix' && [...puts].some((key) => key.startsWith(op.prefix));
    if (clash) throw storeError('a txn may not put a key it also deletes');
  }
}

export function checkTxn(txn: Txn): void {
  for (const compare of txn.compare) checkText('key', compare.key, false);
  checkBranch(txn.success);
  checkBranch(txn.failure ?? []);
}
