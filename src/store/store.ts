/**
 * The store: a small revisioned key-value interface modelled on etcd v3, so that the embedded
 * SQLite store, etcd itself and another agent's API (the `http` store) are interchangeable.
 *
 * - Every write transaction gets the next global revision (one revision per transaction, even
 *   when it writes several keys). Reads and failed compares do not change the revision.
 * - A key remembers the revision that created it, the one that last changed it and how many
 *   times it was written since creation (etcd's create_revision, mod_revision, version).
 *   A key that does not exist compares as create = mod = version = 0.
 * - Watches deliver every change under a prefix from a revision on, in order, grouped by
 *   revision; a revision older than the kept history fails with IPF_E_STORE_COMPACTED so the
 *   watcher re-lists and starts again from the current revision.
 * - A lease deletes the keys attached to it when it expires or is revoked (liveness).
 *
 * Values are strings (JSON in practice); the store does not interpret them.
 */

export interface KeyValue {
  readonly key: string;
  readonly value: string;
  readonly createRevision: number;
  readonly modRevision: number;
  readonly version: number;
  /** Lease id the key is attached to, if any. */
  readonly lease?: string;
}

export type CompareOp = '=' | '!=' | '<' | '>';

export type Compare =
  | {
      readonly key: string;
      readonly target: 'value';
      readonly op: '=' | '!=';
      readonly value: string;
    }
  | {
      readonly key: string;
      readonly target: 'create' | 'mod' | 'version';
      readonly op: CompareOp;
      readonly value: number;
    };

export type Op =
  | { readonly type: 'put'; readonly key: string; readonly value: string; readonly lease?: string }
  | { readonly type: 'delete'; readonly key: string }
  | { readonly type: 'deletePrefix'; readonly prefix: string };

export interface Txn {
  readonly compare: readonly Compare[];
  readonly success: readonly Op[];
  readonly failure?: readonly Op[];
}

export interface TxnResult {
  readonly succeeded: boolean;
  /** The store's revision after the transaction (unchanged when nothing was written). */
  readonly revision: number;
}

export interface ListResult {
  readonly kvs: readonly KeyValue[];
  /** The store revision the list is consistent with; watch from `revision + 1` to follow it. */
  readonly revision: number;
}

export interface WatchEvent {
  readonly type: 'put' | 'delete';
  /** For a delete: the key, an empty value and the deleting revision as modRevision. */
  readonly kv: KeyValue;
  readonly prevKv?: KeyValue;
}

export interface WatchOptions {
  /** First revision to deliver (inclusive). Default: the next revision. */
  readonly fromRevision?: number;
  /** Called once per revision with that revision's events under the prefix, in order. */
  readonly onEvents: (events: readonly WatchEvent[], revision: number) => void;
  /** Called once when the watch cannot go on (compacted revision, store closed or lost). */
  readonly onError?: (error: Error) => void;
}

export interface Watch {
  close(): void;
}

export interface Store {
  /** `sqlite`, `etcd`, `http`… for logs and status. */
  readonly kind: string;
  /**
   * The most compares, and the most puts and deletes, one `txn` may carry; absent: no bound.
   * A writer with more (a restore) splits its work (service/state.ts).
   */
  readonly maxTxnOps?: number;
  get(key: string): Promise<KeyValue | undefined>;
  /** Every key starting with `prefix`, sorted by key. */
  list(prefix: string): Promise<ListResult>;
  txn(txn: Txn): Promise<TxnResult>;
  watch(prefix: string, options: WatchOptions): Watch;
  /** A new lease that expires `ttlSeconds` after its last keep-alive. Returns its id. */
  grantLease(ttlSeconds: number): Promise<string>;
  /** Refreshes a lease; fails with IPF_E_STORE when it has already expired. */
  keepAlive(lease: string): Promise<void>;
  /** Revokes a lease and deletes its keys; a lease that does not exist is fine. */
  revokeLease(lease: string): Promise<void>;
  close(): Promise<void>;
}
