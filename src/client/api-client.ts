/**
 * Typed client of the agent's HTTP API (api/contract.ts): one method per route, for every program
 * that talks to an agent (the CLI, the lab, tests and benchmarks). Error bodies come
 * back as `IpferryError`s (a `RemoteError` keeping the server's own message, hint and code), and
 * a failed connection as `IPF_E_UNREACHABLE`, so callers handle one kind of error.
 *
 * The token is sent only as an `Authorization` header; it never appears in a URL, an error or a
 * log line.
 */
import { Agent, request } from 'undici';
import type { Dispatcher } from 'undici';
import {
  ROUTES,
  type AddForwardRequest,
  type AllocateRequest,
  type AllocateResponse,
  type ArpResponse,
  type AssociateRequest,
  type CreateJoinTokenRequest,
  type CreatePoolRequest,
  type FipView,
  type ForwardView,
  type IppoolEntryView,
  type JoinTokenResponse,
  type MeshAudit,
  type MeshAuditRequest,
  type MeshConfirmRequest,
  type MeshConfirmResponse,
  type MeshPolicyResponse,
  type MeshView,
  type MoveRequest,
  type NodeListView,
  type PoolView,
  type ReleaseResponse,
  type RemoveNodeResponse,
  type SetMeshPolicyRequest,
  type PlanResponse,
  type StatusResponse,
  type UpdatePoolRequest,
  type VersionResponse,
} from '../api/contract.js';
import {
  ERRORS,
  IpferryError,
  type ErrorBody,
  type ErrorCode,
  type Problem,
} from '../core/errors.js';

export const DEFAULT_TIMEOUT_MS = 30_000;

// Response shapes the route table of contract.ts names inline but does not export.
export interface HealthResponse {
  readonly ok: boolean;
}
export interface DeletePoolResponse {
  readonly name: string;
  readonly deleted: boolean;
}
export interface RemoveForwardResponse {
  readonly address: string;
  readonly id: string;
  readonly removed: boolean;
}

export function isErrorCode(code: string): code is ErrorCode {
  return Object.prototype.hasOwnProperty.call(ERRORS, code);
}

/**
 * An error the server reported. Its `code` is the registry's when the server's code is known here
 * (else IPF_E_INTERNAL), but message, hint, status and the original code are the server's: a newer
 * agent may know codes and wordings this CLI does not.
 */
export class RemoteError extends IpferryError {
  override readonly hint: string;
  override readonly status: number;
  /** The code exactly as the server sent it. */
  readonly remoteCode: string;

  constructor(status: number, body: ErrorBody['error']) {
    const code: ErrorCode = isErrorCode(body.code) ? body.code : 'IPF_E_INTERNAL';
    super(code, {}, body.problems ?? []);
    this.name = 'RemoteError';
    this.message = body.message;
    this.hint = body.hint;
    this.status = status;
    this.remoteCode = body.code;
  }

  override toJSON(): ErrorBody {
    return {
      error: {
        code: this.remoteCode,
        message: this.message,
        hint: this.hint,
        ...(this.problems.length > 0 ? { problems: this.problems } : {}),
      },
    };
  }
}

export interface ClientOptions {
  /** Base URL of the agent, e.g. `https://gw1.example.net:7447`. */
  readonly server: string;
  readonly token?: string;
  /** PEM CA certificate(s) that must have signed the agent's TLS certificate. */
  readonly ca?: string;
  readonly timeoutMs?: number;
  readonly userAgent?: string;
}

/**
 * Parse `--server`: a URL with scheme http or https; a bare `host:port` means http. Throws
 * IPF_E_USAGE for anything else.
 */
export function parseServer(input: string): URL {
  const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(input) ? input : `http://${input}`;
  let url: URL;
  try {
    url = new URL(withScheme);
  } catch {
    throw new IpferryError('IPF_E_USAGE', { summary: `--server ${input} is not a URL` });
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new IpferryError('IPF_E_USAGE', {
      summary: `--server ${input}: the scheme must be http or https`,
    });
  }
  url.username = '';
  url.password = '';
  url.search = '';
  url.hash = '';
  return url;
}

export class ApiClient {
  /** Base URL without a trailing slash; routes are appended to it. */
  readonly server: string;
  private readonly token: string | undefined;
  private readonly timeoutMs: number;
  private readonly userAgent: string;
  private readonly dispatcher: Agent;

  constructor(options: ClientOptions) {
    this.server = parseServer(options.server).href.replace(/\/+$/, '');
    this.token = options.token;
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.userAgent = options.userAgent ?? 'ipferry-cli';
    this.dispatcher = new Agent({
      connect: { timeout: this.timeoutMs, ...(options.ca !== undefined ? { ca: options.ca } : {}) },
      headersTimeout: this.timeoutMs,
      bodyTimeout: this.timeoutMs,
    });
  }

  async close(): Promise<void> {
    await this.dispatcher.close();
  }

  health(): Promise<HealthResponse> {
    return this.call('GET', ROUTES.healthz);
  }
  version(): Promise<VersionResponse> {
    return this.call('GET', ROUTES.version);
  }
  plan(): Promise<PlanResponse> {
    return this.call('GET', ROUTES.plan);
  }
  status(): Promise<StatusResponse> {
    return this.call('GET', ROUTES.status);
  }

  listPools(): Promise<PoolView[]> {
    return this.call('GET', ROUTES.pools);
  }
  createPool(body: CreatePoolRequest): Promise<PoolView> {
    return this.call('POST', ROUTES.pools, body);
  }
  getPool(name: string): Promise<PoolView> {
    return this.call('GET', ROUTES.pool(name));
  }
  updatePool(name: string, body: UpdatePoolRequest): Promise<PoolView> {
    return this.call('PATCH', ROUTES.pool(name), body);
  }
  deletePool(name: string): Promise<DeletePoolResponse> {
    return this.call('DELETE', ROUTES.pool(name));
  }

  listFips(pool?: string): Promise<FipView[]> {
    const query = pool !== undefined ? `?pool=${encodeURIComponent(pool)}` : '';
    return this.call('GET', ROUTES.fips + query);
  }
  allocate(body: AllocateRequest): Promise<AllocateResponse> {
    return this.call('POST', ROUTES.fips, body);
  }
  getFip(address: string): Promise<FipView> {
    return this.call('GET', ROUTES.fip(address));
  }
  release(address: string, force = false): Promise<ReleaseResponse> {
    return this.call('DELETE', ROUTES.fip(address) + (force ? '?force=true' : ''));
  }
  associate(address: string, body: AssociateRequest): Promise<FipView> {
    return this.call('POST', ROUTES.fipAction(address, 'associate'), body);
  }
  move(address: string, body: MoveRequest): Promise<FipView> {
    return this.call('POST', ROUTES.fipAction(address, 'move'), body);
  }
  disassociate(address: string): Promise<FipView> {
    return this.call('POST', ROUTES.fipAction(address, 'disassociate'), {});
  }

  listForwards(address: string): Promise<ForwardView[]> {
    return this.call('GET', ROUTES.forwards(address));
  }
  addForward(address: string, body: AddForwardRequest): Promise<ForwardView> {
    return this.call('POST', ROUTES.forwards(address), body);
  }
  removeForward(address: string, id: string): Promise<RemoveForwardResponse> {
    return this.call('DELETE', ROUTES.forward(address, id));
  }

  listNodes(): Promise<NodeListView[]> {
    return this.call('GET', ROUTES.nodes);
  }
  getNode(name: string): Promise<NodeListView> {
    return this.call('GET', ROUTES.node(name));
  }
  createJoinToken(body: CreateJoinTokenRequest): Promise<JoinTokenResponse> {
    return this.call('POST', ROUTES.joinTokens, body);
  }
  removeNode(name: string): Promise<RemoveNodeResponse> {
    return this.call('DELETE', ROUTES.node(name));
  }

  mesh(): Promise<MeshView> {
    return this.call('GET', ROUTES.mesh);
  }
  setMeshPolicy(body: SetMeshPolicyRequest): Promise<MeshPolicyResponse> {
    return this.call('PUT', ROUTES.meshPolicy, body);
  }
  confirmMesh(body: MeshConfirmRequest = {}): Promise<MeshConfirmResponse> {
    return this.call('POST', ROUTES.meshConfirm, body);
  }
  auditMesh(body: MeshAuditRequest): Promise<MeshAudit> {
    return this.call('POST', ROUTES.meshAudit, body);
  }

  ippool(): Promise<IppoolEntryView[]> {
    return this.call('GET', ROUTES.ippool);
  }
  arp(mac: string): Promise<ArpResponse> {
    return this.call('GET', ROUTES.arp(mac));
  }

  private async call<T>(method: Dispatcher.HttpMethod, path: string, body?: unknown): Promise<T> {
    const headers: Record<string, string> = {
      accept: 'application/json',
      'user-agent': this.userAgent,
    };
    if (this.token !== undefined) headers['authorization'] = `Bearer ${this.token}`;
    let payload: string | undefined;
    if (body !== undefined) {
      payload = JSON.stringify(body);
      headers['content-type'] = 'application/json';
    }

    let status: number;
    let text: string;
    try {
      const res = await request(this.server + path, {
        method,
        headers,
        body: payload,
        dispatcher: this.dispatcher,
        signal: AbortSignal.timeout(this.timeoutMs),
      });
      status = res.statusCode;
      text = await res.body.text();
    } catch (e) {
      if (this.server.startsWith('https:') && speaksNoTls(e)) {
        throw new IpferryError('IPF_E_NOT_TLS', { server: this.server });
      }
      throw new IpferryError('IPF_E_UNREACHABLE', {
        server: this.server,
        reason: transportReason(e, this.timeoutMs, this.server.startsWith('http:')),
      });
    }

    const parsed = parseJson(text);
    if (status >= 200 && status < 300) {
      if (parsed.ok) return parsed.value as T;
      throw new RemoteError(status, {
        code: 'IPF_E_INTERNAL',
        message: `The agent answered ${method} ${path} with HTTP ${status} and a body that is not JSON.`,
        hint: 'Check that --server points at an ipferry agent of a compatible version.',
      });
    }
    if (parsed.ok && isErrorBody(parsed.value)) {
      const e = parsed.value.error;
      const hint = e.hint ?? (isErrorCode(e.code) ? ERRORS[e.code].hint : '');
      throw new RemoteError(status, { ...e, hint, problems: problemsOf(e.problems) });
    }
    throw new RemoteError(status, {
      code: 'IPF_E_INTERNAL',
      message: `The server answered ${method} ${path} with HTTP ${status} but no ipferry error: ${snippet(text)}`,
      hint: 'Check that --server points at an ipferry agent and not at a proxy or another service.',
    });
  }
}

function parseJson(text: string): { ok: true; value: unknown } | { ok: false } {
  if (text === '') return { ok: true, value: undefined };
  try {
    return { ok: true, value: JSON.parse(text) as unknown };
  } catch {
    return { ok: false };
  }
}

interface LooseErrorBody {
  error: { code: string; message: string; hint?: string; problems?: unknown };
}

function isErrorBody(value: unknown): value is LooseErrorBody {
  if (typeof value !== 'object' || value === null) return false;
  const error = (value as { error?: unknown }).error;
  if (typeof error !== 'object' || error === null) return false;
  const e = error as Record<string, unknown>;
  return (
    typeof e['code'] === 'string' &&
    typeof e['message'] === 'string' &&
    (e['hint'] === undefined || typeof e['hint'] === 'string')
  );
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

function snippet(text: string): string {
  const flat = text.replace(/\s+/g, ' ').trim();
  if (flat === '') return '(empty body)';
  return flat.length > 120 ? `${flat.slice(0, 117)}...` : flat;
}

const TLS_CODES = new Set([
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

/**
 * What OpenSSL says when the first bytes back are no TLS record: a plain-HTTP server answered
 * the ClientHello (its "400 Bad Request" read as a record header).
 */
const NOT_TLS_CODES = new Set(['ERR_SSL_WRONG_VERSION_NUMBER', 'ERR_SSL_PACKET_LENGTH_TOO_LONG']);

function speaksNoTls(e: unknown): boolean {
  const code = (e as { code?: unknown }).code;
  if (typeof code === 'string' && NOT_TLS_CODES.has(code)) return true;
  return e instanceof Error && /wrong version number|packet length too long/i.test(e.message);
}

const TIMEOUT_CODES = new Set([
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
  'ETIMEDOUT',
]);

/**
 * Why a request failed below HTTP, in words; never includes request headers. `plain`: the
 * request was plain HTTP, which a TLS server drops without a word, so a closed connection says so.
 */
export function transportReason(e: unknown, timeoutMs: number, plain = false): string {
  if (!(e instanceof Error)) return String(e);
  const code = (e as { code?: unknown }).code;
  const codeText = typeof code === 'string' ? code : undefined;
  if (e.name === 'TimeoutError' || (codeText !== undefined && TIMEOUT_CODES.has(codeText))) {
    return `no answer within ${timeoutMs / 1000} s`;
  }
  // Happy eyeballs (localhost → ::1 and 127.0.0.1) fails with an AggregateError without message.
  const message =
    e.message !== ''
      ? e.message
      : e instanceof AggregateError
        ? e.errors.map((x) => (x instanceof Error ? x.message : String(x))).join('; ')
        : '';
  if (codeText !== undefined && TLS_CODES.has(codeText)) {
    return `the TLS certificate is not trusted (${message}); pass the agent's CA with --ca-file`;
  }
  if (message === '') return codeText ?? e.name;
  const text =
    codeText !== undefined && !message.includes(codeText) ? `${message} (${codeText})` : message;
  return plain && codeText === 'UND_ERR_SOCKET'
    ? `${text}; if the agent serves TLS, use https://`
    : text;
}
