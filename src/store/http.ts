/**
 * The `http` store: the Store of another agent (the hub), reached through its API under
 * /v1/store (wire form in wire.ts) with this node's credential as bearer token. A remote agent
 * uses it to follow desired state and report its own, with no etcd and no store of its own.
 *
 * - TLS: verified against `ca` (or the system's CAs); with `fingerprint` the hub's certificate
 *   is pinned instead: the handshake accepts any certificate, then the connection is dropped
 *   unless the certificate's SHA-256 is the pinned one, before a byte of HTTP (or the
 *   credential) is sent. Fail closed: a pin on a plain-http URL is refused at open.
 * - Watches are one long NDJSON response each. The client remembers the next revision it has
 *   not delivered; when the stream ends or goes silent for three heartbeats (hub restart,
 *   network cut), it reconnects from there, so nothing is lost and nothing is delivered twice.
 *   Only a refusal that retrying cannot fix ends a watch with onError: a compacted revision
 *   (IPF_E_STORE_COMPACTED) or the hub refusing the credential or the prefix.
 * - A watch without fromRevision starts at the revision the hub fixes on its first heartbeat;
 *   calls made through this store after watch() wait for that, so a write issued right after
 *   watch() is always seen by it, as with the local stores.
 * - Failures below HTTP are IPF_E_STORE (503) naming the hub and the cause.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Dispatcher } from 'undici';
import { ERRORS, IpferryError, type ErrorBody, type ErrorCode } from '../core/errors.js';
import { normalizeFingerprint } from '../core/join.js';
import {
  errorOf,
  errorText,
  HttpClient,
  openDispatcher,
  parseJson,
  type HttpMethod,
} from './http-transport.js';
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
import {
  HEARTBEAT_DEFAULT_MS,
  JOIN_ROUTE,
  STORE_ROUTES,
  type GetResponse,
  type GrantLeaseRequest,
  type JoinRequest,
  type JoinResponse,
  type LeaseResponse,
  type ListResponse,
  type TxnRequest,
  type TxnResponse,
} from './wire.js';

export interface HttpStoreOptions {
  /** This node's credential (or an admin token): sent only as the bearer header. */
  readonly credential: string;
  /** PEM CA certificate(s) the hub's certificate must chain to. */
  readonly ca?: string | Buffer;
  /** SHA-256 of the hub's certificate (hex, or `AB:CD:…`): pins it instead of a CA. */
  readonly fingerprint?: string;
  /** Per request (not per watch), default 15 s. */
  readonly timeoutMs?: number;
  /** Heartbeat interval asked of the hub for watches, default 5 s; silence for 3 is a cut. */
  readonly heartbeatMs?: number;
  /** Longest wait between reconnect attempts of a watch, default 5 s. */
  readonly retryMaxMs?: number;
}

const DEFAULT_TIMEOUT_MS = 15_000;
const DEFAULT_RETRY_MAX_MS = 5_000;
const RETRY_MIN_MS = 50;

function storeError(reason: string): IpferryError {
  return new IpferryError('IPF_E_STORE', { reason });
}

function configError(summary: string): IpferryError {
  return new IpferryError('IPF_E_CONFIG', { source: '--store', summary });
}

/** Codes the hub's answers keep; any other refusal reaches callers as IPF_E_STORE. */
const PASSED_THROUGH = new Set<string>([
  'IPF_E_STORE',
  'IPF_E_STORE_COMPACTED',
  'IPF_E_FORBIDDEN',
  'IPF_E_JOIN_REFUSED',
  'IPF_E_LEASE_NOT_FOUND',
]);

/** An error the hub answered, with its message and hint. */
export class HubError extends IpferryError {
  override readonly hint: string;
  override readonly status: number;

  constructor(status: number, body: ErrorBody['error']) {
    const passed = PASSED_THROUGH.has(body.code) && Object.hasOwn(ERRORS, body.code);
    super(passed ? (body.code as ErrorCode) : 'IPF_E_STORE', {}, body.problems ?? []);
    this.name = 'HubError';
    this.message = passed
      ? body.message
      : ERRORS.IPF_E_STORE.message.replace(
          '{reason}',
          `the hub refused the request (HTTP ${status}, ${body.code}: ${body.message})`,
        );
    this.hint =
      body.code === 'IPF_E_UNAUTHORIZED'
        ? "The hub does not accept this node's credential: join again with a new join token (--join-token-file) after deleting the credential file."
        : passed
          ? body.hint
          : ERRORS.IPF_E_STORE.hint;
    this.status = passed ? status : ERRORS.IPF_E_STORE.status;
  }
}

/** Parses a store URL: http or https, no user info, query or fragment; no trailing slash. */
function parseHubUrl(spec: string): URL {
  let url: URL;
  try {
    url = new URL(spec);
  } catch {
    throw configError(`${JSON.stringify(spec)} is not a URL`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw configError(`the http store needs an http:// or https:// URL, not ${url.protocol}`);
  }
  if (url.username || url.password || url.search || url.hash) {
    throw configError('the hub URL may not carry a user, a password, a query or a fragment');
  }
  return url;
}

interface TransportOptions {
  readonly ca?: string | Buffer;
  readonly fingerprint?: string;
  readonly timeoutMs: number;
}

/** The HTTP client of one hub, pinning its certificate when asked to. */
function hubClient(url: URL, options: TransportOptions, credential?: string): HttpClient {
  return new HttpClient({
    base: url.href.replace(/\/+$/, ''),
    dispatcher: openDispatcher({
      timeoutMs: options.timeoutMs,
      ...(options.ca !== undefined ? { ca: options.ca } : {}),
      ...(options.fingerprint !== undefined ? { pin: checkedPin(url, options.fingerprint) } : {}),
      peer: 'hub',
    }),
    timeoutMs: options.timeoutMs,
    ...(credential !== undefined ? { token: credential } : {}),
  });
}

/** Fail closed: a pin must be a SHA-256, and only an https:// hub can show a certificate. */
function checkedPin(url: URL, fingerprint: string): string {
  const pinned = normalizeFingerprint(fingerprint);
  if (pinned === undefined)
    throw configError('the pinned fingerprint is not a SHA-256 (64 hex digits)');
  if (url.protocol !== 'https:') {
    throw configError(`a pinned certificate needs an https:// hub URL, not ${url.protocol}`);
  }
  return pinned;
}

/** Why a request failed below HTTP, in words; never includes request headers. */
function transportReason(e: unknown): string {
  if (!(e instanceof Error)) return String(e);
  if (e.name === 'TimeoutError' || e.name === 'AbortError') return 'no answer in time';
  const { name, message, code } = errorText(e);
  if (code !== undefined && !message.includes(code)) return `${message} (${code})`;
  return message || name;
}

function hubErrorFrom(status: number, text: string, origin: string): IpferryError {
  const parsed = parseJson(text);
  const error = parsed.ok ? errorOf(parsed.value) : undefined;
  if (error) return new HubError(status, { ...error, hint: error.hint ?? '' });
  return storeError(
    status >= 500
      ? `${origin} answered HTTP ${status} (the hub may be restarting or overloaded)`
      : `${origin} answered HTTP ${status} without an ipferry error; is it an ipferry agent?`,
  );
}

/**
 * Keys and prefixes must be strings that survive JSON and URLs exactly; the hub's store checks
 * the rest (NUL, empty keys) and answers IPF_E_STORE as the local stores do.
 */
function checkText(what: string, text: string): void {
  if (typeof text !== 'string' || /\p{Cs}/u.test(text)) {
    throw storeError(`${what} must be a string without unpaired surrogates`);
  }
}

function cleanOp(o: Op): Op {
  switch (o.type) {
    case 'put':
      return o.lease === undefined
        ? { type: 'put', key: o.key, value: o.value }
        : { type: 'put', key: o.key, value: o.value, lease: o.lease };
    case 'delete':
      return { type: 'delete', key: o.key };
    case 'deletePrefix':
      return { type: 'deletePrefix', prefix: o.prefix };
  }
}

function cleanCompare(c: Compare): Compare {
  return c.target === 'value'
    ? { key: c.key, target: c.target, op: c.op, value: c.value }
    : { key: c.key, target: c.target, op: c.op, value: c.value };
}

export class HttpStore implements Store {
  readonly kind = 'http';
  /** The hub's base URL without a trailing slash, for logs (it carries no secret). */
  readonly url: string;
  private readonly origin: string;
  private readonly http: HttpClient;
  readonly heartbeatMs: number;
  readonly retryMaxMs: number;
  private readonly watches = new Set<HttpWatch>();
  /** Watches still learning their start revision; calls wait for them (see the preamble). */
  private readonly starting = new Set<Promise<void>>();
  private closed = false;

  /** Use openHttpStore. */
  constructor(url: URL, options: HttpStoreOptions) {
    this.url = url.href.replace(/\/+$/, '');
    this.origin = url.origin;
    this.heartbeatMs = options.heartbeatMs ?? HEARTBEAT_DEFAULT_MS;
    this.retryMaxMs = options.retryMaxMs ?? DEFAULT_RETRY_MAX_MS;
    this.http = hubClient(
      url,
      {
        timeoutMs: options.timeoutMs ?? DEFAULT_TIMEOUT_MS,
        ...(options.ca !== undefined ? { ca: options.ca } : {}),
        ...(options.fingerprint !== undefined ? { fingerprint: options.fingerprint } : {}),
      },
      options.credential,
    );
  }

  async get(key: string): Promise<KeyValue | undefined> {
    checkText('key', key);
    const answer = await this.call<GetResponse>(
      'GET',
      `${STORE_ROUTES.get}?key=${encodeURIComponent(key)}`,
    );
    return answer.kv ?? undefined;
  }

  async list(prefix: string): Promise<ListResult> {
    checkText('prefix', prefix);
    return this.call<ListResponse>(
      'GET',
      `${STORE_ROUTES.list}?prefix=${encodeURIComponent(prefix)}`,
    );
  }

  async txn(txn: Txn): Promise<TxnResult> {
    const body: TxnRequest = {
      compare: txn.compare.map(cleanCompare),
      success: txn.success.map(cleanOp),
      ...(txn.failure !== undefined ? { failure: txn.failure.map(cleanOp) } : {}),
    };
    return this.call<TxnResponse>('POST', STORE_ROUTES.txn, body);
  }

  watch(prefix: string, options: WatchOptions): Watch {
    this.ensureOpen();
    checkText('prefix', prefix);
    if (options.fromRevision !== undefined && !Number.isSafeInteger(options.fromRevision)) {
      throw storeError(`fromRevision must be an integer, not ${options.fromRevision}`);
    }
    const watch = new HttpWatch(this, prefix, options);
    this.watches.add(watch);
    if (options.fromRevision === undefined) {
      const started = watch.started;
      this.starting.add(started);
      void started.then(() => this.starting.delete(started));
    }
    watch.start();
    return watch;
  }

  async grantLease(ttlSeconds: number): Promise<string> {
    const request: GrantLeaseRequest = { ttlSeconds };
    return (await this.call<LeaseResponse>('POST', STORE_ROUTES.leases, request)).lease;
  }

  async keepAlive(lease: string): Promise<void> {
    await this.call<LeaseResponse>('POST', STORE_ROUTES.keepAlive(lease), {});
  }

  async revokeLease(lease: string): Promise<void> {
    await this.call<LeaseResponse>('DELETE', STORE_ROUTES.lease(lease));
  }

  /** Idempotent. Open watches get onError(IPF_E_STORE); later calls fail. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const error = storeError('the store was closed');
    for (const watch of [...this.watches]) watch.fail(error, false);
    await this.http.destroy();
  }

  // --- for watches ---------------------------------------------------------------------------

  detach(watch: HttpWatch): void {
    this.watches.delete(watch);
  }

  /** Opens a watch stream; the caller reads (or destroys) the body. */
  openStream(path: string, signal: AbortSignal): Promise<Dispatcher.ResponseData> {
    // Three heartbeats of silence: the connection is dead even if TCP has not noticed.
    return this.http.stream(path, { signal, bodyTimeoutMs: this.heartbeatMs * 3 });
  }

  errorFrom(status: number, text: string): IpferryError {
    return hubErrorFrom(status, text, this.origin);
  }

  unreachable(e: unknown): IpferryError {
    return storeError(`cannot reach the hub at ${this.origin}: ${transportReason(e)}`);
  }

  // --- internals -----------------------------------------------------------------------------

  private ensureOpen(): void {
    if (this.closed) throw storeError('the store is closed');
  }

  private async call<T>(method: HttpMethod, path: string, body?: unknown): Promise<T> {
    this.ensureOpen();
    if (this.starting.size > 0) await Promise.all([...this.starting]);
    this.ensureOpen();
    let answer: { status: number; text: string };
    try {
      answer = await this.http.send(method, path, body);
    } catch (e) {
      if (this.closed) throw storeError('the store was closed');
      throw this.unreachable(e);
    }
    const { status, text } = answer;
    if (status >= 200 && status < 300) {
      try {
        return JSON.parse(text) as T;
      } catch {
        throw storeError(
          `${this.origin} answered ${method} ${path.split('?')[0] ?? ''} with a body that is not JSON`,
        );
      }
    }
    throw this.errorFrom(status, text);
  }
}

/** HTTP statuses a reconnect cannot fix: the watch ends with onError. */
function isPermanent(status: number): boolean {
  return status >= 400 && status < 500 && status !== 408 && status !== 429;
}

type Outcome = 'retry' | 'stop';

class HttpWatch implements Watch {
  /** First revision not yet delivered; undefined until the hub fixes it (no fromRevision). */
  private next: number | undefined;
  private stopped = false;
  private retryMs = RETRY_MIN_MS;
  private readonly abort = new AbortController();
  readonly started: Promise<void>;
  private markStarted: () => void = () => undefined;

  constructor(
    private readonly store: HttpStore,
    private readonly prefix: string,
    private readonly options: WatchOptions,
  ) {
    this.next = options.fromRevision;
    this.started = new Promise((resolve) => {
      this.markStarted = resolve;
    });
    if (this.next !== undefined) this.markStarted();
  }

  start(): void {
    void this.loop();
  }

  close(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.markStarted();
    this.abort.abort();
    this.store.detach(this);
  }

  /**
   * Stops the watch and reports why. A listener's own exception with no onError to take it is
   * rethrown on a clean stack (as the local stores do): a bug must not vanish.
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

  private async loop(): Promise<void> {
    while (!this.stopped) {
      const outcome = await this.connectOnce();
      // The first attempt settles the start either way: calls must not wait on a dead hub.
      this.markStarted();
      if (outcome === 'stop' || this.stopped) return;
      const delay = this.retryMs * (0.5 + Math.random() / 2);
      this.retryMs = Math.min(this.store.retryMaxMs, this.retryMs * 2);
      try {
        await sleep(delay, undefined, { signal: this.abort.signal, ref: false });
      } catch {
        return; // closed while waiting
      }
    }
  }

  private url(): string {
    const query = [
      `prefix=${encodeURIComponent(this.prefix)}`,
      ...(this.next !== undefined ? [`fromRevision=${this.next}`] : []),
      `heartbeatMs=${this.store.heartbeatMs}`,
    ];
    return `${STORE_ROUTES.watch}?${query.join('&')}`;
  }

  /** One connection: reads lines until it ends; says whether to reconnect. */
  private async connectOnce(): Promise<Outcome> {
    let res: Dispatcher.ResponseData;
    try {
      res = await this.store.openStream(this.url(), this.abort.signal);
    } catch {
      return this.stopped ? 'stop' : 'retry';
    }
    if (res.statusCode !== 200) {
      let text = '';
      try {
        text = await res.body.text();
      } catch {
        return 'retry';
      }
      if (!isPermanent(res.statusCode)) return 'retry';
      this.fail(this.store.errorFrom(res.statusCode, text), false);
      return 'stop';
    }
    res.body.setEncoding('utf8');
    let buffer = '';
    try {
      for await (const chunk of res.body as AsyncIterable<string>) {
        buffer += chunk;
        for (let nl = buffer.indexOf('\n'); nl >= 0; nl = buffer.indexOf('\n')) {
          const line = buffer.slice(0, nl);
          buffer = buffer.slice(nl + 1);
          const outcome = this.handle(line);
          if (outcome !== undefined) {
            res.body.destroy();
            return outcome;
          }
        }
      }
    } catch {
      // Cut, silent for too long, or closed: reconnect (or stop) below.
    }
    return this.stopped ? 'stop' : 'retry';
  }

  /** Handles one line; returns an outcome when the stream must be left. */
  private handle(line: string): Outcome | undefined {
    if (this.stopped) return 'stop';
    if (line.trim() === '') return undefined;
    let message: Record<string, unknown>;
    try {
      message = JSON.parse(line) as Record<string, unknown>;
    } catch {
      return 'retry';
    }
    const revision = message['revision'];
    if (Array.isArray(message['events']) && typeof revision === 'number') {
      this.retryMs = RETRY_MIN_MS;
      // Never twice: a revision below `next` was delivered on an earlier connection.
      if (this.next !== undefined && revision < this.next) return undefined;
      this.next = revision + 1;
      try {
        this.options.onEvents(message['events'] as WatchEvent[], revision);
      } catch (e) {
        this.fail(e instanceof Error ? e : new Error(String(e)), true);
        return 'stop';
      }
      return this.stopped ? 'stop' : undefined;
    }
    if (message['heartbeat'] === true && typeof revision === 'number') {
      this.retryMs = RETRY_MIN_MS;
      this.next = Math.max(this.next ?? 0, revision + 1);
      this.markStarted();
      return undefined;
    }
    const error = errorOf(message);
    if (error) {
      if (error.code === 'IPF_E_STORE_COMPACTED') {
        this.fail(new HubError(410, { ...error, hint: error.hint ?? '' }), false);
        return 'stop';
      }
      return 'retry';
    }
    return 'retry';
  }
}

/** Opens the store of the hub at `url` (http:// or https://). Contacts nothing yet. */
export function openHttpStore(url: string, options: HttpStoreOptions): Promise<HttpStore> {
  try {
    if (!options.credential) throw configError('the http store needs a credential');
    return Promise.resolve(new HttpStore(parseHubUrl(url), options));
  } catch (e) {
    return Promise.reject(e instanceof IpferryError ? e : storeError(String(e)));
  }
}

export interface JoinHubOptions {
  readonly token: string;
  readonly node: string;
  readonly ca?: string | Buffer;
  readonly fingerprint?: string;
  readonly timeoutMs?: number;
}

/**
 * Presents a join token to the hub at `url` (pinned by `fingerprint` when given) and returns the
 * node credential it answers. Refusals are IPF_E_JOIN_REFUSED; failures to connect IPF_E_STORE.
 */
export async function joinHub(url: string, options: JoinHubOptions): Promise<string> {
  const hub = parseHubUrl(url);
  const http = hubClient(hub, {
    timeoutMs: options.timeoutMs ?? DEFAULT_TIMEOUT_MS,
    ...(options.ca !== undefined ? { ca: options.ca } : {}),
    ...(options.fingerprint !== undefined ? { fingerprint: options.fingerprint } : {}),
  });
  const request: JoinRequest = { token: options.token, node: options.node };
  try {
    let status: number;
    let text: string;
    try {
      ({ status, text } = await http.send('POST', JOIN_ROUTE, request));
    } catch (e) {
      throw storeError(`cannot reach the hub at ${hub.origin} to join: ${transportReason(e)}`);
    }
    if (status !== 200) throw hubErrorFrom(status, text, hub.origin);
    let answer: Partial<JoinResponse>;
    try {
      answer = JSON.parse(text) as Partial<JoinResponse>;
    } catch {
      answer = {};
    }
    if (typeof answer.credential !== 'string' || answer.node !== options.node) {
      throw storeError(`${hub.origin} answered the join without a credential for ${options.node}`);
    }
    return answer.credential;
  } finally {
    await http.destroy();
  }
}
