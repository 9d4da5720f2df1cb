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
 * - Access: `https://` endpoints speak TLS, verified against the CA given (else the system's),
 *   optionally with a client certificate (etcd's --client-cert-auth); a user and password log in
 *   to etcd's authentication (etcd3 exchanges them for a token and renews it when etcd says it
 *   is no longer valid). The password lives only in the client's options: never in a message.
 *   A failure that says the access is wrong (an untrusted server certificate, a client
 *   certificate etcd refuses, a wrong password, a role that may not touch the namespace) is
 *   IPF_E_STORE_ACCESS naming what to fix, not an outage: check() finds it at open.
 */
import {
  Etcd3,
  EtcdAuthenticationFailedError,
  EtcdLeaseInvalidError,
  EtcdPermissionDeniedError,
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
  /** Speak TLS to every endpoint (https://); the members' certificates are checked against `ca`. */
  readonly tls?: EtcdTls;
  /** Log in to etcd's authentication as this user. */
  readonly auth?: EtcdAuth;
}

export interface EtcdTls {
  /** PEM CA certificate(s) that signed the members' certificates; default: the system's CAs. */
  readonly ca?: Buffer;
  /** PEM client certificate (chain) and its key, for a cluster with --client-cert-auth. */
  readonly cert?: Buffer;
  readonly key?: Buffer;
}

export interface EtcdAuth {
  readonly user: string;
  readonly password: string;
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

/** What the location of `etcd:URL[,URL…]` names. */
export interface EtcdLocation {
  /** gRPC target (`host:port`) of each member given. */
  readonly endpoints: string[];
  /** Whether they are https:// (all of them) rather than http://. */
  readonly tls: boolean;
  /** Whether every one is on this host (localhost, 127.0.0.0/8, ::1). */
  readonly loopback: boolean;
}

/**
 * Parses the location of `etcd:URL[,URL…]`. Each URL is http(s)://HOST[:PORT] (port 2379 by
 * default) with nothing after the authority; one cluster is reached over one scheme, so http://
 * and https:// are not mixed.
 */
export function parseEtcdLocation(location: string): EtcdLocation {
  const example = 'etcd:https://10.0.0.1:2379[,https://…] (or http://)';
  const parts = location.split(',').map((p) => p.trim());
  if (location.trim() === '' || parts.some((p) => p === '')) {
    throw configError(`etcd: needs one or more comma-separated endpoint URLs, e.g. ${example}`);
  }
  const endpoints: string[] = [];
  const schemes = new Set<string>();
  let loopback = true;
  for (const part of parts) {
    let url: URL;
    try {
      url = new URL(part);
    } catch {
      throw configError(`etcd endpoint ${JSON.stringify(part)} is not a URL; write ${example}`);
    }
    if ((url.protocol !== 'http:' && url.protocol !== 'https:') || url.hostname === '') {
      throw configError(
        `etcd endpoint ${JSON.stringify(part)} must be https://HOST:PORT or http://HOST:PORT`,
      );
    }
    if (url.username || url.password || url.search || url.hash || url.pathname !== '/') {
      throw configError(
        `etcd endpoint ${JSON.stringify(part)} may not carry a user, a password, a path, a query or a fragment (the user and password are --etcd-user and --etcd-password-file)`,
      );
    }
    schemes.add(url.protocol);
    const host = url.hostname;
    if (!(host === 'localhost' || host === '[::1]' || /^127\.\d+\.\d+\.\d+$/.test(host))) {
      loopback = false;
    }
    const target = `${host}:${url.port || '2379'}`;
    if (endpoints.includes(target)) throw configError(`etcd endpoint ${target} is given twice`);
    endpoints.push(target);
  }
  if (schemes.size > 1) {
    throw configError(
      `etcd endpoints mix http:// and https://: reach every member of one cluster the same way (${location})`,
    );
  }
  return { endpoints, tls: schemes.has('https:'), loopback };
}

/** The gRPC targets (`host:port`) of the location of `etcd:URL[,URL…]`: see parseEtcdLocation. */
export function parseEtcdEndpoints(location: string): string[] {
  return parseEtcdLocation(location).endpoints;
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

/**
 * etcd's own bounds on one request, and the member flag that sets each: a transaction larger
 * than them (a restore writes every record in one: docs/backup.md) fails whatever is retried.
 */
const LIMITS: readonly (readonly [RegExp, string])[] = [
  [/too many operations in txn request/, "(more than the members' --max-txn-ops, 128 by default)"],
  [/request is too large/, "(larger than the members' --max-request-bytes, 1.5 MiB by default)"],
];

/** Whether `lease` is an etcd lease id: a positive int64 in decimal. */
function isLeaseId(lease: string): boolean {
  return (
    typeof lease === 'string' && /^[1-9][0-9]{0,18}$/.test(lease) && BigInt(lease) <= INT64_MAX
  );
}

/** Errors that say "no such lease" (revokeLease tolerates exactly those). */
const noSuchLease = new WeakSet<IpferryError>();

function leaseGone(lease?: string): IpferryError {
  const error = new IpferryError('IPF_E_LEASE_NOT_FOUND', { lease: lease ?? '(of this request)' });
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
 * The cause gRPC reports, without its wrapping ("14 UNAVAILABLE: No connection established.
 * Last error: …. Resolution note: ") and with OpenSSL's alerts in words.
 */
function cause(e: unknown): string {
  const text = message(e)
    .replace(/^\d+ [A-Z_]+: /, '')
    .replace(/^No connection established\. Last error: (Error: )?/, '')
    .replace(/\s*\(\d{4}-\d\d-\d\dT[^)]*\)/, '')
    .replace(/\.?\s*Resolution note:[\s\S]*$/, '')
    .trim();
  const alert = /alert ([a-z ]+?):[\s\S]*SSL alert number (\d+)/.exec(text);
  if (alert) return `TLS alert ${alert[2]}, ${alert[1]}`;
  // grpc-js loses the reason on a channel's first attempt (etcd3 logs in on fresh channels).
  return text === 'null' || text === '' ? 'no connection could be made' : text;
}

/** The member's certificate did not pass this client's checks. */
const UNTRUSTED =
  /unable to verify|self[- ]signed|certificate has expired|not yet valid|unable to get (local )?issuer|does not match certificate|altnames|ERR_TLS_CERT/i;
/** The member refused this client's certificate (or its lack of one) with a TLS alert. */
const REFUSED =
  /alert (bad certificate|certificate required|unknown ca|certificate expired|certificate revoked|certificate unknown|unsupported certificate|access denied)/i;

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
  /** etcd's default `--max-txn-ops`: a cluster started with more still takes these. */
  readonly maxTxnOps = 128;
  /** The members' gRPC targets (`host:port`), for logs and errors. */
  readonly endpoints: readonly string[];
  readonly namespace: string;
  readonly retryMaxMs: number;
  private readonly ns: Buffer;
  private readonly client: Etcd3;
  private readonly timeoutMs: number;
  private readonly pageSize: number;
  /** etcd user logged in as, for messages (the password is never kept outside the client). */
  private readonly user: string | undefined;
  private readonly clientCert: boolean;
  private readonly secure: boolean;
  /** The client's options without the login, for check(). */
  private readonly transportOptions: IOptions;
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
    const { tls, auth } = options;
    if (tls && (tls.cert === undefined) !== (tls.key === undefined)) {
      throw configError('an etcd client certificate needs its key, and a key its certificate');
    }
    if (auth && (auth.user === '' || auth.password === '')) {
      throw configError('etcd authentication needs a user name and a password');
    }
    this.secure = tls !== undefined;
    this.clientCert = tls?.cert !== undefined;
    this.user = auth?.user;
    const timeoutMs = this.timeoutMs;
    this.transportOptions = {
      hosts: this.endpoints.map((e) => `${this.secure ? 'https' : 'http'}://${e}`),
      // Without a CA of our own and a client certificate, etcd3 checks https hosts against the
      // system's CAs by itself. grpc-js takes a missing root certificate as "the system's" too,
      // although etcd3's type wants one.
      ...(tls && (tls.ca !== undefined || tls.cert !== undefined)
        ? {
            credentials: {
              rootCertificate: tls.ca ?? (null as unknown as Buffer),
              ...(tls.cert !== undefined ? { certChain: tls.cert, privateKey: tls.key } : {}),
            },
          }
        : {}),
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
    };
    this.client = new Etcd3({
      ...this.transportOptions,
      ...(auth
        ? {
            auth: {
              username: auth.user,
              password: auth.password,
              // The login is a call of its own: without a deadline it could wait forever.
              callOptions: () => ({ deadline: Date.now() + timeoutMs }),
            },
          }
        : {}),
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

  /**
   * One read, so that a store that cannot work fails when it is opened rather than at its first
   * write: IPF_E_STORE_ACCESS when etcd cannot be used with this access, IPF_E_STORE when no
   * member answers.
   */
  async check(): Promise<void> {
    if (this.user !== undefined) await this.checkTransport();
    await this.readRevision(true);
  }

  /**
   * Reaches a member without logging in: etcd3 logs in on a fresh channel of its own, where
   * grpc-js loses why a TLS handshake failed, so a wrong CA or client certificate would read as
   * "unreachable". Any answer of etcd's, even a refusal, shows the connection itself works.
   */
  private async checkTransport(): Promise<void> {
    const probe = new Etcd3(this.transportOptions);
    try {
      await probe.maintenance.status({ deadline: Date.now() + this.timeoutMs });
    } catch (e) {
      if (e instanceof GRPCUnavailableError || e instanceof GRPCDeadlineExceededError) {
        throw this.fromEtcd(e);
      }
    } finally {
      probe.close();
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

  /** @internal Whether calls carry an etcd login (whose token a watch stream must find valid). */
  get authenticates(): boolean {
    return this.user !== undefined;
  }

  /** @internal An error of etcd's or etcd3's as the IpferryError the Store reports. */
  toError(e: unknown): IpferryError {
    return this.fromEtcd(e);
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
    const access = this.accessProblem(e);
    if (access !== undefined) {
      return new IpferryError('IPF_E_STORE_ACCESS', {
        endpoints: this.endpoints.join(','),
        reason: access,
      });
    }
    if (e instanceof GRPCDeadlineExceededError || /deadline exceeded/i.test(message(e))) {
      return storeError(`${where} did not answer within ${this.timeoutMs} ms`);
    }
    if (e instanceof GRPCUnavailableError) {
      const why = cause(e);
      // What a scheme that does not match the member's listener looks like: a TLS member
      // hangs up on plain HTTP/2, a plain one resets a TLS handshake. An outage can look alike,
      // so this is said as a possibility.
      const scheme =
        !this.secure && why === 'Failed to connect'
          ? ' (it hung up before speaking plain gRPC: if it serves TLS there, write https:// and give --etcd-ca)'
          : this.secure &&
              /ECONNRESET|wrong version number|packet length too long|before secure TLS/.test(why)
            ? ' (if it serves plain http:// there, not TLS, write http://)'
            : '';
      return storeError(`${where} is unreachable: ${why}${scheme}`);
    }
    const limit = LIMITS.find(([pattern]) => pattern.test(message(e)));
    if (limit) return storeError(`${where} refused the transaction: ${cause(e)} ${limit[1]}`);
    return storeError(`${where}: ${cause(e)}`);
  }

  /** Why etcd cannot be used with this access, when `e` says so; undefined for anything else. */
  private accessProblem(e: unknown): string | undefined {
    const text = message(e);
    const user = this.user === undefined ? undefined : JSON.stringify(this.user);
    if (e instanceof EtcdAuthenticationFailedError) {
      return `it refused the login of user ${user}: wrong user name or password (--etcd-user, --etcd-password-file)`;
    }
    if (/authentication is not enabled/.test(text)) {
      return `--etcd-user ${user} is given, but etcd's authentication is not enabled, so anyone who reaches it may write: enable it (etcdctl auth enable), or leave --etcd-user out`;
    }
    if (/user name is empty/.test(text)) {
      return 'it requires a login: give --etcd-user and --etcd-password-file (or a client certificate whose common name is an etcd user)';
    }
    if (e instanceof EtcdPermissionDeniedError || /permission denied/.test(text)) {
      const who =
        user !== undefined
          ? `user ${user}`
          : this.clientCert
            ? 'the user named by the common name of the client certificate'
            : 'this client';
      return `${who} may not read and write the keys under ${this.namespace}: grant its role readwrite on that prefix (etcdctl role grant-permission ROLE --prefix=true readwrite ${this.namespace})`;
    }
    if (!(e instanceof GRPCUnavailableError)) return undefined;
    if (UNTRUSTED.test(text)) {
      return `its server certificate is not trusted (${cause(e)}): --etcd-ca must hold the CA that signed the members' --cert-file, and that certificate must name the host of each endpoint`;
    }
    if (REFUSED.test(text)) {
      return this.clientCert
        ? `it refused the client certificate (${cause(e)}): --etcd-cert must be signed by the CA of etcd's --trusted-ca-file, be valid now and allow client authentication`
        : `it requires a client certificate (${cause(e)}): give --etcd-cert and --etcd-key, signed by the CA of etcd's --trusted-ca-file`;
    }
    return undefined;
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
      } catch (e) {
        // etcd unreachable: calls must not wait for it; the start is fixed once it answers.
        this.markStarted();
        this.retryOrFail(e);
        return;
      }
      this.markStarted();
    } else if (this.store.authenticates) {
      // etcd checks the login token when a watch is created and cancels the watch when the
      // token expired (simple tokens do after 5 idle minutes, --auth-token-ttl). etcd3 renews
      // it for a unary call, not for a stream: a read first has it renewed when it must.
      try {
        await this.store.readRevision(false);
      } catch (e) {
        this.retryOrFail(e);
        return;
      }
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

  /** Access that is wrong stays wrong: the watch ends; anything else may pass, so it retries. */
  private retryOrFail(e: unknown): void {
    if (e instanceof IpferryError && e.code === 'IPF_E_STORE_ACCESS') this.fail(e, false);
    else this.retryLater();
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
    if (res.canceled && /invalid auth token/.test(res.cancel_reason)) {
      // Expired between the read and the watch: the next connection renews it.
      this.onStreamEnd(stream);
      return;
    }
    if (res.canceled) {
      const compacted = Number(res.compact_revision);
      this.fail(
        compacted > 0
          ? new IpferryError('IPF_E_STORE_COMPACTED', {
              revision: this.next ?? 0,
              oldest: compacted,
            })
          : /permission denied/.test(res.cancel_reason)
            ? this.store.toError(new Error(res.cancel_reason))
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
