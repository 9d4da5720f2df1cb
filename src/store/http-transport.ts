/**
 * The one HTTP client layer of ipferry: how its two clients of an agent's API — the API client
 * (client/api-client.ts: the CLI, the lab, tests) and the `http` store (store/http.ts: a remote
 * agent following its hub) — reach it. It builds requests (JSON bodies, the bearer header),
 * holds the connection pool with its timeouts and TLS trust (a CA, or a pinned certificate), and
 * decodes the agent's error bodies. Each client turns what comes back into its own errors: the
 * API client keeps the agent's code and wording (RemoteError), the store speaks IPF_E_STORE.
 *
 * It lives in src/store because the store layer may import nothing above it (eslint.config.js),
 * and src/client may import the store layer.
 *
 * The bearer token travels only in the Authorization header: never in a URL, an error or a log.
 */
import type { X509Certificate } from 'node:crypto';
import type { TLSSocket } from 'node:tls';
import { Agent, buildConnector, request, type Dispatcher } from 'undici';
import type { ErrorBody, Problem } from '../core/errors.js';
import { normalizeFingerprint } from '../core/join.js';

export type HttpMethod = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

export interface ConnectionOptions {
  /** Connect, headers and body timeout of each request. */
  readonly timeoutMs: number;
  /** PEM CA certificate(s) the server's certificate must chain to. */
  readonly ca?: string | Buffer;
  /**
   * SHA-256 of the server's certificate, lower-case hex without colons: pins it instead of a CA.
   * The handshake accepts any certificate, then the connection is dropped unless it is the pinned
   * one, before a byte of HTTP (or the bearer token) is sent. The caller checks the URL is https.
   */
  readonly pin?: string;
  /** What the server is called in a pin refusal (`the hub's TLS certificate …`). */
  readonly peer?: string;
}

/** A connection that showed another certificate than the pinned one. */
export class PinMismatch extends Error {
  readonly code = 'IPF_PIN_MISMATCH';
}

/** The connection pool for one server, pinning its certificate when asked to. */
export function openDispatcher(options: ConnectionOptions): Agent {
  const timeouts = { headersTimeout: options.timeoutMs, bodyTimeout: options.timeoutMs };
  const ca = options.ca !== undefined ? { ca: options.ca } : {};
  if (options.pin === undefined) {
    return new Agent({ connect: { timeout: options.timeoutMs, ...ca }, ...timeouts });
  }
  const pinned = options.pin;
  const peer = options.peer ?? 'server';
  const base = buildConnector({
    timeout: options.timeoutMs,
    ...ca,
    // The chain is not what is trusted here, the pinned certificate is (checked below). With a
    // CA as well, both must hold. No session resumption: every connection shows its certificate.
    rejectUnauthorized: options.ca !== undefined,
    maxCachedSessions: 0,
  });
  const connect: buildConnector.connector = (opts, callback) => {
    base(opts, (error, socket) => {
      if (error || !socket) {
        callback(error ?? new Error('connection failed'), null);
        return;
      }
      const seen = peerFingerprint(socket as TLSSocket);
      if (seen !== pinned) {
        socket.destroy();
        callback(
          new PinMismatch(
            `the ${peer}'s TLS certificate (SHA-256 ${seen ?? 'none'}) is not the pinned one (${pinned})`,
          ),
          null,
        );
        return;
      }
      callback(null, socket);
    });
  };
  return new Agent({ connect, ...timeouts });
}

function peerFingerprint(socket: TLSSocket): string | undefined {
  if (typeof socket.getPeerX509Certificate !== 'function') return undefined;
  const cert: X509Certificate | undefined = socket.getPeerX509Certificate();
  return cert ? normalizeFingerprint(cert.fingerprint256) : undefined;
}

export interface HttpClientOptions {
  /** Base URL without a trailing slash; paths are appended to it. */
  readonly base: string;
  readonly dispatcher: Agent;
  readonly timeoutMs: number;
  /** Sent as `Authorization: Bearer …` when given. */
  readonly token?: string;
  readonly userAgent?: string;
}

export interface HttpAnswer {
  readonly status: number;
  readonly text: string;
  /** The answer's headers, lower-case names (a write's `ipferry-revision`). */
  readonly headers?: Readonly<Record<string, string | string[] | undefined>>;
}

/**
 * Requests to one server. A failure below HTTP (no connection, TLS, timeout) is thrown as the
 * transport's own error, for the caller to put in its words (see errorText).
 */
export class HttpClient {
  readonly base: string;
  private readonly dispatcher: Agent;
  private readonly timeoutMs: number;
  private readonly headers: Readonly<Record<string, string>>;

  constructor(options: HttpClientOptions) {
    this.base = options.base;
    this.dispatcher = options.dispatcher;
    this.timeoutMs = options.timeoutMs;
    this.headers = {
      ...(options.userAgent !== undefined ? { 'user-agent': options.userAgent } : {}),
      ...(options.token !== undefined ? { authorization: `Bearer ${options.token}` } : {}),
    };
  }

  /** One JSON request; the answer's status and body, whatever the status. */
  async send(method: HttpMethod, path: string, body?: unknown): Promise<HttpAnswer> {
    const headers: Record<string, string> = { accept: 'application/json', ...this.headers };
    if (body !== undefined) headers['content-type'] = 'application/json';
    const res = await request(this.base + path, {
      method,
      headers,
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      dispatcher: this.dispatcher,
      signal: AbortSignal.timeout(this.timeoutMs),
    });
    return { status: res.statusCode, text: await res.body.text(), headers: res.headers };
  }

  /** A long GET whose body the caller reads (or destroys): an NDJSON stream. */
  stream(
    path: string,
    options: { readonly signal: AbortSignal; readonly bodyTimeoutMs: number },
  ): Promise<Dispatcher.ResponseData> {
    return request(this.base + path, {
      method: 'GET',
      headers: { accept: 'application/x-ndjson', ...this.headers },
      dispatcher: this.dispatcher,
      signal: options.signal,
      headersTimeout: this.timeoutMs,
      bodyTimeout: options.bodyTimeoutMs,
    });
  }

  close(): Promise<void> {
    return this.dispatcher.close();
  }

  /** Drops open requests and streams too. */
  destroy(): Promise<void> {
    return this.dispatcher.destroy().catch(() => undefined);
  }
}

// Answers ------------------------------------------------------------------------------------

/** A body as JSON; an empty body is `undefined`. */
export function parseJson(text: string): { ok: true; value: unknown } | { ok: false } {
  if (text === '') return { ok: true, value: undefined };
  try {
    return { ok: true, value: JSON.parse(text) as unknown };
  } catch {
    return { ok: false };
  }
}

/** An agent's error (ErrorBody) as far as it is well-formed; its hint may be missing. */
export interface DecodedError {
  readonly code: string;
  readonly message: string;
  readonly hint?: string;
  readonly problems: Problem[];
}

/** The error of an ErrorBody, or undefined when `value` is none. */
export function errorOf(value: unknown): DecodedError | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  const error = (value as { error?: unknown }).error;
  if (typeof error !== 'object' || error === null) return undefined;
  const e = error as Partial<Record<keyof ErrorBody['error'], unknown>>;
  if (typeof e.code !== 'string' || typeof e.message !== 'string') return undefined;
  return {
    code: e.code,
    message: e.message,
    ...(typeof e.hint === 'string' ? { hint: e.hint } : {}),
    problems: problemsOf(e.problems),
  };
}

function problemsOf(value: unknown): Problem[] {
  if (!Array.isArray(value)) return [];
  return value.flatMap((p: unknown) => {
    if (typeof p !== 'object' || p === null) return [];
    const { path, message } = p as Record<string, unknown>;
    return typeof message === 'string'
      ? [{ path: typeof path === 'string' ? path : '', message }]
      : [];
  });
}

// Failures below HTTP ------------------------------------------------------------------------

/**
 * A transport error's words: its message (the messages of all attempts when happy eyeballs
 * failed every address, which leaves the error itself without one) and its code, if any.
 * `fetch failed` says nothing: the cause does.
 */
export function errorText(e: Error): {
  readonly name: string;
  readonly message: string;
  readonly code?: string;
} {
  const cause = (e as { cause?: unknown }).cause;
  const inner = e.message === 'fetch failed' && cause instanceof Error ? cause : e;
  const code = (inner as { code?: unknown }).code;
  const message =
    inner.message !== ''
      ? inner.message
      : inner instanceof AggregateError
        ? inner.errors.map((x) => (x instanceof Error ? x.message : String(x))).join('; ')
        : '';
  return { name: inner.name, message, ...(typeof code === 'string' ? { code } : {}) };
}
