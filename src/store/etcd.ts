/**
 * The `etcd` store: the Store interface on an etcd v3 cluster (3.4 or newer), through the
 * `etcd3` client's gRPC layer. Each Store call is one etcd request, so the semantics are
 * etcd's own: one txn = one revision, compares on value/create/mod/version, leases.
 *
 * - Namespace: every key is stored as NAMESPACE + key (default `/ipferry`, so ipferry's
 *   `/ipferry/v1/pools/p` is `/ipferry/ipferry/v1/pools/p` in etcd), and lists, deletes by
 *   prefix and watches stay inside it: ipferry can share an etcd cluster with other users.
 * - Deadlines: every call has one absolute deadline (default 5 s) across its attempts, so
 *   nothing waits forever on a dead or partitioned member. A request that provably never left
 *   this process (no connection to that member) moves on to the next member at once; reads
 *   are tried once more after any transient failure; a txn that may have reached etcd is never
 *   repeated (its compares would make a retry lie about the outcome). Whatever still fails is
 *   IPF_E_STORE (HTTP 503) naming the endpoints and the cause, as the http store reports a
 *   hub it cannot reach.
 * - Watches are our own streams, not etcd3's Watcher (which resumes from the revision in the
 *   last response header, and can skip events that were still on the wire when a connection
 *   broke). Each watch remembers the first revision it has not delivered; whenever its stream
 *   ends (member restart, network cut, keepalive timeout) it reconnects, to any member, from
 *   exactly there, so events are neither lost nor repeated. If etcd has compacted that
 *   revision meanwhile, the watch ends with IPF_E_STORE_COMPACTED and the caller re-lists.
 * - A watch without fromRevision first reads the current revision; calls made through this
 *   store after watch() wait for that (bounded by the deadline), so a write issued right after
 *   watch() is always seen by it, as with the local stores.
 * - Lease ids are etcd's, as decimal strings. etcd rounds a TTL up to its minimum (about 2 s with
 *   the default election timeout).
 * - Plain http:// endpoints only for now: TLS to etcd (https://, client certificates) is refused
 *   at open with IPF_E_CONFIG.
 */
import {
  Etcd3,
  EtcdLeaseInvalidError,
  GRPCDeadlineExceededError,
  GRPCUnavailableError,
  isRecoverableError,
  type IKeyValue,
  type IEvent,
  type IOptions,
  type IRequestOp,
  type ICompare,
  type IWatchResponse,
  type KVClient,
} from 'etcd3';
import { IpferryError } from '../core/errors.js';
import { checkText, checkTxn, storeError } from './checks.js';
import type {
  Compare,
  KeyValue,
  ListResult,
  Op,
  Store,
  Txn,
  TxnResult,
  Watch,
  WatchEvent,
  WatchOptions,
} from './store.js';

export interface EtcdStoreOptions {
  /** Prepended to every key; non-empty (default `/ipferry`). */
  readonly namespace?: string;
  /** Deadline of every call, in ms (default 5000). */
  readonly timeoutMs?: number;
  /** Longest wait between reconnects of a watch, in ms (default 2000). */
  readonly retryMaxMs?: number;
  /** Keys per range request of a list (default 1000). */
  readonly pageSize?: number;
}

export const DEFAULT_ETCD_NAMESPACE = '/ipferry';
const DEFAULT_TIMEOUT_MS = 5_000;
const DEFAULT_RETRY_MAX_MS = 2_000;
const RETRY_MIN_MS = 50;
const DEFAULT_PAGE_SIZE = 1_000;
/** A list whose pinned revision is compacted while it pages is started over this often. */
const LIST_ATTEMPTS = 3;

type CallOptions = NonNullable<Parameters<KVClient['range']>[1]>;
type Policy = NonNullable<NonNullable<IOptions['faultHandling']>['global']>;

function configError(summary: string): IpferryError {
  return new IpferryError('IPF_E_CONFIG', { source: '--store', summary });
}

// ---------------------------------------------------------------------------------------------
// Endpoints

/**
 * Parses the location of `etcd:URL[,URL…]` into gRPC targets (`host:port`). Each URL is
 * http://HOST[:PORT] (port 2379 by default) with nothing after the authority.
 */
export function parseEtcdEndpoints(location: string): string[] {
  const example = 'etcd:http://127.0.0.1:2379[,http://…]';
  const parts = location.split(',').map((p) => p.trim());
  if (location.trim() === '' || parts.some((p) => p === '')) {
    throw configError(`etcd: needs one or more comma-separated endpoint URLs, e.g. ${example}`);
  }
  const targets: string[] = [];
  for (const part of parts) {
    let url: URL;
    try {
      url = new URL(part);
    } catch {
      throw configError(`etcd endpoint ${JSON.stringify(part)} is not a URL; write ${example}`);
    }
    if (url.protocol === 'https:') {
      throw configError(
        `etcd over TLS (${part}) is not supported yet: reach etcd over http:// on loopback or a trusted private link`,
      );
    }
    if (url.protocol !== 'http:' || url.hostname === '') {
      throw configError(`etcd endpoint ${JSON.stringify(part)} must be http://HOST:PORT`);
    }
    if (url.username || url.password || url.search || url.hash || url.pathname !== '/') {
      throw configError(
        `etcd endpoint ${JSON.stringify(part)} may not carry a user, a password, a path, a query or a fragment`,
      );
    }
    const target = `${url.hostname}:${url.port || '2379'}`;
    if (targets.includes(target)) throw configError(`etcd endpoint ${target} is given twice`);
    targets.push(target);
  }
  return targets;
}

// ---------------------------------------------------------------------------------------------
// Keys and values

/** The first key after every key starting with `prefix` (etcd's range_end for a prefix). */
function rangeEnd(prefix: Buffer): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i]! < 0xff) {
      end[i]!++;
      return end.subarray(0, i + 1);
    }
  }
  return Buffer.from([0]); // no upper bound (cannot happen under a non-empty namespace)
}

const INT64_MAX = 2n ** 63n - 1n;

/** Whether `lease` is an etcd lease id: a positive int64 in decimal. */
function isLeaseId(lease: string): boolean {
  return (
    typeof lease === 'string' && /^[1-9][0-9]{0,18}$/.test(lease) && BigInt(lease) <= INT64_MAX
  );
}

/** Errors that say "no such lease" (revokeLease tolerates exactly those). */
const noSuchLease = new WeakSet<IpferryError>();

function leaseGone(lease?: string): IpferryError {
  const error = storeError(
    `${lease === undefined ? 'the lease' : `lease ${lease}`} does not exist (expired or revoked)`,
  );
  noSuchLease.add(error);
  return error;
}

const COMPARE_RESULT = { '=': 'Equal', '!=': 'NotEqual', '<': 'Less', '>': 'Greater' } as const;
const COMPARE_TARGET = {
  value: 'Value',
  create: 'Create',
  mod: 'Mod',
  version: 'Version',
} as const;

// ---------------------------------------------------------------------------------------------
// Errors and retries

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** The request never reached a member: safe to send elsewhere, whatever it does. */
function neverSent(e: unknown): boolean {
  if (!(e instanceof GRPCUnavailableError)) return false;
  // grpc-js: the channel has no connection to pick; etcd: refused before proposing anything.
  return /No connection established|etcdserver: no leader/.test(e.message);
}

/** A failure a read can simply be repeated after (not a deadline: that is the caller's budget). */
function transient(e: unknown): boolean {
  return (
    e instanceof Error &&
    isRecoverableError(e) &&
    !(e instanceof GRPCDeadlineExceededError) &&
    !/deadline exceeded/i.test(e.message)
  );
}

/**
 * etcd3's fault handling, replaced: no circuit breaker (it would keep failing calls for 5 s after
 * etcd is back), and a retry only onto the next member and only for requests that never left.
 * The pool hands every attempt of one call the next host of one shuffle, so `attempts` tries
 * each member at most once.
 */
function failoverPolicy(attempts: number): Policy {
  const policy = {
    async execute<T>(fn: (context: { signal: AbortSignal }) => PromiseLike<T> | T): Promise<T> {
      const signal = new AbortController().signal;
      for (let attempt = 1; ; attempt++) {
        try {
          return await fn({ signal });
        } catch (e) {
          if (attempt >= attempts || !neverSent(e)) throw e;
        }
      }
    },
  };
  return policy as unknown as Policy;
}

function passThroughPolicy(): Policy {
  const policy = {
    // async: etcd3 throws through this synchronously and relies on getting a rejection back.
    async execute<T>(fn: (context: { signal: AbortSignal }) => PromiseLike<T> | T): Promise<T> {
      return await fn({ signal: new AbortController().signal });
    },
  };
  return policy as unknown as Policy;
}

// ---------------------------------------------------------------------------------------------
// The store

interface Started {
  readonly promise: Promise<void>;
}

export class EtcdStore implements Store {
  readonly kind = 'etcd';
  /** The members' gRPC targets (`host:port`), for logs and errors. */
  readonly endpoints: readonly string[];
  readonly namespace: string;
  readonly retryMaxMs: number;
  private readonly ns: Buffer;
  private readonly client: Etcd3;
  private readonly timeoutMs: number;
  private readonly pageSize: number;
  private readonly watches = new Set<EtcdWatch>();
  /** Watches still learning their start revision; calls wait for them (see the preamble). */
  private readonly starting = new Set<Started>();
  private closed = false;

  /** Use openEtcdStore. */
  constructor(endpoints: readonly string[], options: EtcdStoreOptions = {}) {
    if (endpoints.length === 0) throw configError('etcd: needs at least one endpoint');
    this.endpoints = [...endpoints];
    this.namespace = options.namespace ?? DEFAULT_ETCD_NAMESPACE;
    checkText('namespace', this.namespace, false);
    this.ns = Buffer.from(this.namespace);
    this.timeoutMs = positive('timeoutMs', options.timeoutMs ?? DEFAULT_TIMEOUT_MS);
    this.retryMaxMs = positive('retryMaxMs', options.retryMaxMs ?? DEFAULT_RETRY_MAX_MS);
    this.pageSize = positive('pageSize', options.pageSize ?? DEFAULT_PAGE_SIZE);
    this.client = new Etcd3({
      hosts: this.endpoints.map((e) => `http://${e}`),
      faultHandling: {
        host: () => passThroughPolicy(),
        global: failoverPolicy(this.endpoints.length),
      },
      grpcOptions: {
        // A catch-up watch response carries up to 1000 revisions; the default 4 MiB is too few.
        'grpc.max_receive_message_length': 64 * 1024 * 1024,
        // Notice a silently dead connection (a watch would otherwise wait on it forever); etcd
        // accepts pings every 5 s or slower.
        'grpc.keepalive_time_ms': 10_000,
        'grpc.keepalive_timeout_ms': 5_000,
        'grpc.max_reconnect_backoff_ms': 2_000,
      },
    });
  }

  async get(key: string): Promise<KeyValue | undefined> {
    checkText('key', key, false);
    const res = await this.call('read', (o) => this.client.kv.range({ key: this.key(key) }, o));
    const kv = res.kvs[0];
    return kv ? this.toKv(kv) : undefined;
  }

  async list(prefix: string): Promise<ListResult> {
    checkText('prefix', prefix, true);
    const from = this.key(prefix);
    const end = rangeEnd(from);
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.listPages(from, end);
      } catch (e) {
        // Compacted under a long list: start over at the new current revision.
        if (attempt >= LIST_ATTEMPTS || !/required revision has been compacted/.test(message(e)))
          throw e;
      }
    }
  }

  async txn(txn: Txn): Promise<TxnResult> {
    checkTxn(txn);
    const request = {
      compare: txn.compare.map((c) => this.toCompare(c)),
      success: txn.success.map((o) => this.toRequestOp(o)),
      failure: (txn.failure ?? []).map((o) => this.toRequestOp(o)),
    };
    const res = await this.call('write', (o) => this.client.kv.txn(request, o));
    return { succeeded: res.succeeded, revision: Number(res.header.revision) };
  }

  watch(prefix: string, options: WatchOptions): Watch {
    this.ensureOpen();
    checkText('prefix', prefix, true);
    if (options.fromRevision !== undefined && !Number.isSafeInteger(options.fromRevision)) {
      throw storeError(`fromRevision must be an integer, not ${options.fromRevision}`);
    }
    const key = this.key(prefix);
    const watch = new EtcdWatch(this, { key, end: rangeEnd(key) }, options);
    this.watches.add(watch);
    if (options.fromRevision === undefined) {
      const started: Started = { promise: watch.started };
      this.starting.add(started);
      void watch.started.then(() => this.starting.delete(started));
    }
    watch.connect();
    return watch;
  }

  async grantLease(ttlSeconds: number): Promise<string> {
    const ttl = Math.ceil(ttlSeconds);
    if (!(ttlSeconds > 0) || !Number.isSafeInteger(ttl)) {
      throw storeError(`a lease TTL must be a positive number of seconds, not ${ttlSeconds}`);
    }
    // A repeated grant at worst leaves an unused lease behind, which expires by itself.
    const res = await this.call('read', (o) =>
      this.client.leaseClient.leaseGrant({ TTL: ttl, ID: 0 }, o),
    );
    if (res.error) throw storeError(`etcd refused the lease: ${res.error}`);
    return res.ID;
  }

  /** One keep-alive request on a short-lived LeaseKeepAlive stream; its answer says if it lived. */
  async keepAlive(lease: string): Promise<void> {
    this.ensureOpen();
    if (!isLeaseId(lease)) throw leaseGone(lease);
    await this.waitStarting();
    const deadline = Date.now() + this.timeoutMs;
    let ttl: number;
    for (let attempt = 1; ; attempt++) {
      try {
        ttl = await this.keepAliveOnce(lease, deadline);
        break;
      } catch (e) {
        if (this.closed) throw storeError('the store was closed');
        // The stream is opened on one member: try each once while none could even be reached.
        if (attempt >= this.endpoints.length || !neverSent(e)) throw this.fromEtcd(e);
      }
    }
    if (!(ttl > 0)) throw leaseGone(lease);
  }

  async revokeLease(lease: string): Promise<void> {
    this.ensureOpen();
    if (!isLeaseId(lease)) return; // not an etcd lease id, so no such lease
    try {
      await this.call('read', (o) => this.client.leaseClient.leaseRevoke({ ID: lease }, o));
    } catch (e) {
      if (e instanceof IpferryError && noSuchLease.has(e)) return;
      throw e;
    }
  }

  /**
   * Drops the history up to and including `revision`, as SqliteStore.compact: afterwards a watch
   * from any revision <= `revision` fails with IPF_E_STORE_COMPACTED. etcd keeps the revision it
   * compacts at watchable, so this compacts at `revision + 1` (at most the current revision).
   */
  async compact(revision: number): Promise<void> {
    if (!Number.isSafeInteger(revision) || revision < 1) {
      throw storeError(`cannot compact at revision ${revision}`);
    }
    const current = await this.currentRevision();
    if (revision > current) {
      throw storeError(
        `cannot compact at revision ${revision}: the current revision is ${current}`,
      );
    }
    const at = Math.min(revision + 1, current);
    try {
      await this.call('write', (o) => this.client.kv.compact({ revision: at, physical: true }, o));
    } catch (e) {
      // Compacting again at or below an earlier compaction is a no-op, not a failure.
      if (!/required revision has been compacted/.test(message(e))) throw e;
    }
  }

  /** The current revision of the cluster. */
  currentRevision(): Promise<number> {
    return this.readRevision(true);
  }

  /** Idempotent. Open watches get onError(IPF_E_STORE); later calls fail. */
  close(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.closed = true;
    const error = storeError('the store was closed');
    for (const watch of [...this.watches]) watch.fail(error, false);
    this.client.close();
    return Promise.resolve();
  }

  // --- for watches ---------------------------------------------------------------------------

  /** @internal */
  get isClosed(): boolean {
    return this.closed;
  }

  /** @internal */
  detach(watch: EtcdWatch): void {
    this.watches.delete(watch);
  }

  /**
   * @internal The current revision; a watch learning its start passes `wait` false, since the
   * calls waiting for watches to start would otherwise wait for themselves.
   */
  async readRevision(wait: boolean): Promise<number> {
    // A range that matches nothing: the header alone is what we want.
    const key = this.key('');
    const res = await this.call(
      'read',
      (o) => this.client.kv.range({ key, range_end: key, count_only: true }, o),
      wait,
    );
    return Number(res.header.revision);
  }

  /** @internal A new watch stream on some member. */
  openWatchStream(): ReturnType<Etcd3['watchClient']['watch']> {
    return this.client.watchClient.watch();
  }

  /** @internal */
  toEvent(ev: IEvent): WatchEvent {
    const type = String(ev.type).toLowerCase() === 'delete' ? 'delete' : 'put';
    const kv = this.toKv(ev.kv);
    return ev.prev_kv ? { type, kv, prevKv: this.toKv(ev.prev_kv) } : { type, kv };
  }

  // --- internals -----------------------------------------------------------------------------

  private ensureOpen(): void {
    if (this.closed) throw storeError('the store is closed');
  }

  private async waitStarting(): Promise<void> {
    if (this.starting.size > 0) await Promise.all([...this.starting].map((s) => s.promise));
  }

  /**
   * Runs one etcd request with one deadline. Reads are repeated once after a transient failure
   * (on another member, the pool shuffles); writes never, unless they never left (the policy).
   */
  private async call<T>(
    kind: 'read' | 'write',
    fn: (o: CallOptions) => Promise<T>,
    wait = true,
  ): Promise<T> {
    this.ensureOpen();
    if (wait) {
      await this.waitStarting();
      this.ensureOpen();
    }
    const deadline = Date.now() + this.timeoutMs;
    for (let attempt = 1; ; attempt++) {
      try {
        return await fn({ deadline });
      } catch (e) {
        if (this.closed) throw storeError('the store was closed');
        if (kind === 'write' || attempt >= 2 || !transient(e) || Date.now() >= deadline) {
          throw this.fromEtcd(e);
        }
      }
    }
  }

  private fromEtcd(e: unknown): IpferryError {
    if (e instanceof IpferryError) return e;
    const where = `etcd at ${this.endpoints.join(',')}`;
    if (e instanceof EtcdLeaseInvalidError) return leaseGone();
    if (e instanceof GRPCDeadlineExceededError || /deadline exceeded/i.test(message(e))) {
      return storeError(`${where} did not answer within ${this.timeoutMs} ms`);
    }
    if (e instanceof GRPCUnavailableError) {
      return storeError(`${where} is unreachable: ${message(e)}`);
    }
    return storeError(`${where}: ${message(e)}`);
  }

  private async listPages(from: Buffer, end: Buffer): Promise<ListResult> {
    const kvs: KeyValue[] = [];
    let start = from;
    let revision: number | undefined;
    for (;;) {
      const pinned = revision;
      const res = await this.call('read', (o) =>
        this.client.kv.range(
          { key: start, range_end: end, limit: this.pageSize, revision: pinned ?? 0 },
          o,
        ),
      );
      // Later pages read at the first page's revision: the list is one consistent snapshot.
      revision ??= Number(res.header.revision);
      for (const kv of res.kvs) kvs.push(this.toKv(kv));
      const last = res.kvs[res.kvs.length - 1];
      if (!res.more || !last) return { kvs, revision };
      start = Buffer.concat([last.key, Buffer.from([0])]);
    }
  }

  private keepAliveOnce(lease: string, deadline: number): Promise<number> {
    return new Promise<number>((resolve, reject) => {
      this.client.leaseClient.leaseKeepAlive({ deadline }).then(
        (stream) => {
          let settled = false;
          const settle = (error: Error | undefined, ttl?: number): void => {
            if (settled) return;
            settled = true;
            hangUp(stream);
            if (error !== undefined) reject(error);
            else resolve(ttl ?? 0);
          };
          stream.on('data', (res) => settle(undefined, Number(res.TTL)));
          stream.on('error', (error) => settle(error));
          stream.on('end', () => settle(storeError('etcd ended the keep-alive stream')));
          stream.write({ ID: lease });
        },
        (error: unknown) => reject(error instanceof Error ? error : new Error(String(error))),
      );
    });
  }

  private key(key: string): Buffer {
    return Buffer.concat([this.ns, Buffer.from(key)]);
  }

  private unkey(key: Buffer): string {
    return key.subarray(this.ns.length).toString('utf8');
  }

  private toKv(kv: IKeyValue): KeyValue {
    const out = {
      key: this.unkey(kv.key),
      value: kv.value.toString('utf8'),
      createRevision: Number(kv.create_revision),
      modRevision: Number(kv.mod_revision),
      version: Number(kv.version),
    };
    return kv.lease && kv.lease !== '0' ? { ...out, lease: kv.lease } : out;
  }

  private toCompare(c: Compare): ICompare {
    const base = {
      key: this.key(c.key),
      result: COMPARE_RESULT[c.op],
      target: COMPARE_TARGET[c.target],
    };
    switch (c.target) {
      case 'value':
        return { ...base, value: Buffer.from(c.value) };
      case 'create':
        return { ...base, create_revision: integer(c.value) };
      case 'mod':
        return { ...base, mod_revision: integer(c.value) };
      case 'version':
        return { ...base, version: integer(c.value) };
    }
  }

  private toRequestOp(o: Op): IRequestOp {
    switch (o.type) {
      case 'put':
        if (o.lease !== undefined && !isLeaseId(o.lease)) throw leaseGone(o.lease);
        return {
          request_put: {
            key: this.key(o.key),
            value: Buffer.from(o.value),
            // No lease detaches the key from any lease it had, as in every store.
            lease: o.lease ?? 0,
          },
        };
      case 'delete':
        return { request_delete_range: { key: this.key(o.key) } };
      case 'deletePrefix': {
        const key = this.key(o.prefix);
        return { request_delete_range: { key, range_end: rangeEnd(key) } };
      }
    }
  }
}

/**
 * Ends a stream we are done with. Half-closing first matters: etcd3 takes a cancelled stream
 * that is still writable for a failed member and closes every channel to it.
 */
function hangUp(stream: {
  end(): void;
  cancel(): void;
  on(event: 'error', fn: () => void): unknown;
}): void {
  stream.on('error', () => undefined); // the cancellation itself arrives as an error
  try {
    stream.end();
  } catch {
    // Already ended by the other side.
  }
  stream.cancel();
}

function integer(value: number): number {
  if (!Number.isSafeInteger(value)) throw storeError(`a compare needs an integer, not ${value}`);
  return value;
}

function positive(name: string, value: number): number {
  if (!Number.isSafeInteger(value) || value < 1) {
    throw storeError(`${name} must be a positive integer, not ${value}`);
  }
  return value;
}

// ---------------------------------------------------------------------------------------------
// Watches

type WatchStream = Awaited<ReturnType<EtcdStore['openWatchStream']>>;

/**
 * One watch on its own gRPC stream. `next` is the first revision not yet delivered: every
 * (re)connection asks etcd for exactly that revision on, and anything below it that arrives
 * anyway is dropped, so a reconnect can neither lose nor repeat an event.
 */
class EtcdWatch implements Watch {
  private next: number | undefined;
  private stopped = false;
  private stream: WatchStream | undefined;
  private timer: NodeJS.Timeout | undefined;
  private retryMs = RETRY_MIN_MS;
  readonly started: Promise<void>;
  private markStarted: () => void = () => undefined;

  constructor(
    private readonly store: EtcdStore,
    private readonly range: { readonly key: Buffer; readonly end: Buffer },
    private readonly options: WatchOptions,
  ) {
    // Revisions start at 1: anything lower means "from the oldest", which may be compacted.
    this.next = options.fromRevision === undefined ? undefined : Math.max(1, options.fromRevision);
    this.started = new Promise((resolve) => {
      this.markStarted = resolve;
    });
    if (this.next !== undefined) this.markStarted();
  }

  close(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.markStarted();
    clearTimeout(this.timer);
    const stream = this.stream;
    this.stream = undefined;
    if (stream) hangUp(stream);
    this.store.detach(this);
  }

  /**
   * Stops the watch and reports why. A listener's own exception with no onError to take it is
   * rethrown on a clean stack (as the other stores do): a bug must not vanish.
   */
  fail(error: Error, fromListener: boolean): void {
    if (this.stopped) return;
    this.close();
    const onError = this.options.onError;
    if (onError) onError(error);
    else if (fromListener) {
      setImmediate(() => {
        throw error;
      });
    }
  }

  /** Opens a stream from `next` (learning it first when the watch started without one). */
  connect(): void {
    void this.open();
  }

  private async open(): Promise<void> {
    if (this.stopped) return;
    if (this.next === undefined) {
      try {
        this.next = (await this.store.readRevision(false)) + 1;
      } catch {
        // etcd unreachable: calls must not wait for it; the start is fixed once it answers.
        this.markStarted();
        this.retryLater();
        return;
      }
      this.markStarted();
    }
    let stream: WatchStream;
    try {
      stream = await this.store.openWatchStream();
    } catch {
      if (this.store.isClosed) this.fail(storeError('the store was closed'), false);
      else this.retryLater();
      return;
    }
    if (this.stopped) {
      hangUp(stream);
      return;
    }
    this.stream = stream;
    stream.on('data', (res: IWatchResponse) => this.onResponse(stream, res));
    stream.on('error', () => this.onStreamEnd(stream));
    stream.on('end', () => this.onStreamEnd(stream));
    stream.write({
      create_request: {
        key: this.range.key,
        range_end: this.range.end,
        start_revision: this.next,
        prev_kv: true,
      },
    });
  }

  private retryLater(): void {
    if (this.stopped) return;
    const delay = this.retryMs * (0.5 + Math.random() / 2);
    this.retryMs = Math.min(this.store.retryMaxMs, this.retryMs * 2);
    this.timer = setTimeout(() => this.connect(), delay);
    // A watch waiting to reconnect must not keep the process alive by itself.
    this.timer.unref();
  }

  private onStreamEnd(stream: WatchStream): void {
    if (this.stopped || stream !== this.stream) return;
    this.stream = undefined;
    hangUp(stream);
    this.retryLater();
  }

  private onResponse(stream: WatchStream, res: IWatchResponse): void {
    if (this.stopped || stream !== this.stream) return;
    if (res.canceled) {
      const compacted = Number(res.compact_revision);
      this.fail(
        compacted > 0
          ? new IpferryError('IPF_E_STORE_COMPACTED', {
              revision: this.next ?? 0,
              oldest: compacted,
            })
          : storeError(`etcd cancelled the watch: ${res.cancel_reason || 'no reason given'}`),
        false,
      );
      return;
    }
    if (res.created) {
      this.retryMs = RETRY_MIN_MS;
      return;
    }
    // Events come in revision order; one revision is never split across responses.
    let batch: WatchEvent[] = [];
    let batchRevision = 0;
    const flush = (): boolean => {
      if (batch.length === 0) return true;
      const events = batch;
      batch = [];
      if (this.next !== undefined && batchRevision < this.next) return true; // delivered before
      this.next = batchRevision + 1;
      try {
        this.options.onEvents(events, batchRevision);
      } catch (e) {
        this.fail(e instanceof Error ? e : new Error(String(e)), true);
        return false;
      }
      return !this.stopped;
    };
    for (const ev of res.events) {
      const revision = Number(ev.kv.mod_revision);
      if (revision !== batchRevision && !flush()) return;
      batchRevision = revision;
      batch.push(this.store.toEvent(ev));
    }
    flush();
  }
}

/** Opens the etcd store on `endpoints` (`host:port` targets). Contacts nothing yet. */
export function openEtcdStore(
  endpoints: readonly string[],
  options: EtcdStoreOptions = {},
): Promise<EtcdStore> {
  try {
    return Promise.resolve(new EtcdStore(endpoints, options));
  } catch (e) {
    return Promise.reject(e instanceof IpferryError ? e : storeError(message(e)));
  }
}
