/**
 * Typed client of the agent's HTTP API (api/contract.ts): one method per route, for every program
 * that talks to an agent (the CLI, the lab, tests and benchmarks). Error bodies come
 * back as `IpferryError`s (a `RemoteError` keeping the server's own message, hint and code), and
 * a failed connection as `IPF_E_UNREACHABLE`, so callers handle one kind of error.
 *
 * The token is sent only as an `Authorization` header; it never appears in a URL, an error or a
 * log line.
 */
import { fillPath, REVISION_HEADER, ROUTE_PATHS, type RouteName } from '../api/paths.js';
import type {
  Api,
  AddForwardRequest,
  AllocateRequest,
  AllocateResponse,
  AppliedRequest,
  AppliedResponse,
  EventsRequest,
  EventsResponse,
  ArpResponse,
  AssociateRequest,
  BodyOf,
  CreateJoinTokenRequest,
  AddNodeRequest,
  CreatePoolRequest,
  DeletePoolResponse,
  FipView,
  ForwardView,
  HealthResponse,
  IppoolEntryView,
  JoinTokenResponse,
  MeshAudit,
  MeshAuditRequest,
  MeshConfirmRequest,
  MeshConfirmResponse,
  MeshPolicyResponse,
  MeshView,
  MoveRequest,
  NodeListView,
  ParamsOf,
  PlanResponse,
  PoolView,
  QueryOf,
  ReleaseResponse,
  RemoveForwardResponse,
  RemoveNodeResponse,
  ResponseOf,
  RouteSpec,
  SetMeshPolicyRequest,
  StatusResponse,
  UpdatePoolRequest,
  VersionResponse,
} from '../api/contract.js';
import { ERRORS, IpferryError, type ErrorBody, type ErrorCode } from '../core/errors.js';
import {
  errorOf,
  errorText,
  HttpClient,
  type HttpAnswer,
  openDispatcher,
  parseJson,
} from '../store/http-transport.js';

export const DEFAULT_TIMEOUT_MS = 30_000;

export type { DeletePoolResponse, HealthResponse, RemoveForwardResponse };

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

/** What a request of one route carries besides its method and path. */
interface RouteInput<R extends RouteSpec> {
  readonly params?: ParamsOf<R>;
  readonly query?: Partial<QueryOf<R>>;
  /** A route without a body schema takes an empty object (the client has always sent one). */
  readonly body?: R extends { readonly body: unknown } ? BodyOf<R> : Record<string, never>;
}

export class ApiClient {
  /** Base URL without a trailing slash; routes are appended to it. */
  readonly server: string;
  private readonly timeoutMs: number;
  private readonly http: HttpClient;
  /** The store revision of the latest write answered (its `ipferry-revision` header). */
  lastWriteRevision?: number;

  constructor(options: ClientOptions) {
    this.server = parseServer(options.server).href.replace(/\/+$/, '');
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.http = new HttpClient({
      base: this.server,
      dispatcher: openDispatcher({
        timeoutMs: this.timeoutMs,
        ...(options.ca !== undefined ? { ca: options.ca } : {}),
      }),
      timeoutMs: this.timeoutMs,
      userAgent: options.userAgent ?? 'ipferry-cli',
      ...(options.token !== undefined ? { token: options.token } : {}),
    });
  }

  async close(): Promise<void> {
    await this.http.close();
  }

  health(): Promise<HealthResponse> {
    return this.call('health');
  }
  version(): Promise<VersionResponse> {
    return this.call('version');
  }
  plan(): Promise<PlanResponse> {
    return this.call('plan');
  }
  status(): Promise<StatusResponse> {
    return this.call('status');
  }

  listPools(): Promise<PoolView[]> {
    return this.call('listPools');
  }
  createPool(body: CreatePoolRequest): Promise<PoolView> {
    return this.call('createPool', { body });
  }
  getPool(name: string): Promise<PoolView> {
    return this.call('getPool', { params: { name } });
  }
  updatePool(name: string, body: UpdatePoolRequest): Promise<PoolView> {
    return this.call('updatePool', { params: { name }, body });
  }
  deletePool(name: string): Promise<DeletePoolResponse> {
    return this.call('deletePool', { params: { name } });
  }

  listFips(pool?: string): Promise<FipView[]> {
    return this.call('listFips', { query: { pool } });
  }
  allocate(body: AllocateRequest): Promise<AllocateResponse> {
    return this.call('allocate', { body });
  }
  getFip(address: string): Promise<FipView> {
    return this.call('getFip', { params: { address } });
  }
  release(address: string, force = false): Promise<ReleaseResponse> {
    return this.call('release', { params: { address }, query: force ? { force: 'true' } : {} });
  }
  associate(address: string, body: AssociateRequest): Promise<FipView> {
    return this.call('associate', { params: { address }, body });
  }
  move(address: string, body: MoveRequest): Promise<FipView> {
    return this.call('move', { params: { address }, body });
  }
  disassociate(address: string): Promise<FipView> {
    return this.call('disassociate', { params: { address }, body: {} });
  }

  listForwards(address: string): Promise<ForwardView[]> {
    return this.call('listForwards', { params: { address } });
  }
  addForward(address: string, body: AddForwardRequest): Promise<ForwardView> {
    return this.call('addForward', { params: { address }, body });
  }
  removeForward(address: string, id: string): Promise<RemoveForwardResponse> {
    return this.call('removeForward', { params: { address, id } });
  }

  listNodes(): Promise<NodeListView[]> {
    return this.call('listNodes');
  }
  addNode(body: AddNodeRequest): Promise<NodeListView> {
    return this.call('addNode', { body });
  }
  getNode(name: string): Promise<NodeListView> {
    return this.call('getNode', { params: { name } });
  }
  createJoinToken(body: CreateJoinTokenRequest): Promise<JoinTokenResponse> {
    return this.call('createJoinToken', { body });
  }
  removeNode(name: string): Promise<RemoveNodeResponse> {
    return this.call('removeNode', { params: { name } });
  }

  mesh(): Promise<MeshView> {
    return this.call('mesh');
  }
  setMeshPolicy(body: SetMeshPolicyRequest): Promise<MeshPolicyResponse> {
    return this.call('setMeshPolicy', { body });
  }
  confirmMesh(body: MeshConfirmRequest = {}): Promise<MeshConfirmResponse> {
    return this.call('confirmMesh', { body });
  }
  auditMesh(body: MeshAuditRequest): Promise<MeshAudit> {
    return this.call('auditMesh', { body });
  }

  /**
   * Whether the write at `revision` is applied by the agents it concerns; the agent answers
   * once it is final or after `wait` (at most 25 s).
   */
  applied(query: AppliedRequest): Promise<AppliedResponse> {
    return this.call('applied', { query });
  }

  /** The audit trail (GET /v1/events): after a sequence number, the latest N, or a long poll. */
  events(query: EventsRequest = {}): Promise<EventsResponse> {
    return this.call('events', { query });
  }

  ippool(): Promise<IppoolEntryView[]> {
    return this.call('ippool');
  }
  arp(mac: string): Promise<ArpResponse> {
    return this.call('arp', { params: { mac } });
  }

  /** One request of route `name`: its method and path at run time, its types from the table. */
  private async call<N extends RouteName>(
    name: N,
    input: RouteInput<Api[N]> = {},
  ): Promise<ResponseOf<Api[N]>> {
    const { method, url } = ROUTE_PATHS[name];
    const params = input.params as Readonly<Record<string, string | undefined>> | undefined;
    const path = fillPath(url, params) + queryString(input.query);
    let status: number;
    let text: string;
    let headers: HttpAnswer['headers'];
    try {
      ({ status, text, headers } = await this.http.send(method, path, input.body));
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
    const revision = Number(headers?.[REVISION_HEADER]);
    if (status >= 200 && status < 300 && Number.isSafeInteger(revision) && revision > 0) {
      this.lastWriteRevision = revision;
    }
    if (status >= 200 && status < 300) {
      if (parsed.ok) return parsed.value as ResponseOf<Api[N]>;
      throw new RemoteError(status, {
        code: 'IPF_E_INTERNAL',
        message: `The agent answered ${method} ${path} with HTTP ${status} and a body that is not JSON.`,
        hint: 'Check that --server points at an ipferry agent of a compatible version.',
      });
    }
    const error = parsed.ok ? errorOf(parsed.value) : undefined;
    if (error) {
      const hint = error.hint ?? (isErrorCode(error.code) ? ERRORS[error.code].hint : '');
      throw new RemoteError(status, { ...error, hint });
    }
    throw new RemoteError(status, {
      code: 'IPF_E_INTERNAL',
      message: `The server answered ${method} ${path} with HTTP ${status} but no ipferry error: ${snippet(text)}`,
      hint: 'Check that --server points at an ipferry agent and not at a proxy or another service.',
    });
  }
}

/** `?k=v&…` of the values given, URL-encoded; nothing without any. */
function queryString(query: object | undefined): string {
  const pairs = Object.entries(query ?? {}).filter(([, value]) => value !== undefined);
  if (pairs.length === 0) return '';
  return `?${pairs.map(([k, value]) => `${encodeURIComponent(k)}=${encodeURIComponent(String(value))}`).join('&')}`;
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
  const { name, message, code: codeText } = errorText(e);
  if (e.name === 'TimeoutError' || (codeText !== undefined && TIMEOUT_CODES.has(codeText))) {
    return `no answer within ${timeoutMs / 1000} s`;
  }
  if (codeText !== undefined && TLS_CODES.has(codeText)) {
    return `the TLS certificate is not trusted (${message}); pass the agent's CA with --ca-file`;
  }
  if (message === '') return codeText ?? name;
  const text =
    codeText !== undefined && !message.includes(codeText) ? `${message} (${codeText})` : message;
  return plain && codeText === 'UND_ERR_SOCKET'
    ? `${text}; if the agent serves TLS, use https://`
    : text;
}
