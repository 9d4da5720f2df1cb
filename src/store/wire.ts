/**
 * The wire form of the `http` store: the routes under /v1/store through which an agent exposes
 * its Store (api/store-routes.ts serves them, store/http.ts calls them), and the join exchange.
 * Both sides import this module, so a change of shape breaks the build, not remote agents.
 *
 *   GET    /v1/store/get?key=K                          → GetResponse
 *   GET    /v1/store/list?prefix=P                      → ListResult
 *   POST   /v1/store/txn                Txn             → TxnResult
 *   GET    /v1/store/watch?prefix=P[&fromRevision=N][&heartbeatMs=MS]
 *                                                      → NDJSON stream of WatchLine
 *   POST   /v1/store/leases             {ttlSeconds}    → LeaseResponse
 *   POST   /v1/store/leases/:id/keepalive               → LeaseResponse
 *   DELETE /v1/store/leases/:id                         → LeaseResponse
 *   POST   /v1/join                     JoinRequest     → JoinResponse   (no bearer token)
 *
 * The watch stream starts with a heartbeat line and sends one every `heartbeatMs`; a heartbeat's
 * revision says that every event up to it has been sent, so a client that reconnects resumes
 * with `fromRevision = revision + 1` and neither loses nor repeats an event. An error line
 * (IPF_E_STORE_COMPACTED, or IPF_E_STORE when the hub's store closes) ends the stream.
 */
import type { ErrorBody } from '../core/errors.js';
import type { KeyValue, WatchEvent } from './store.js';

export const STORE_ROUTES = {
  prefix: '/v1/store/',
  get: '/v1/store/get',
  list: '/v1/store/list',
  txn: '/v1/store/txn',
  watch: '/v1/store/watch',
  leases: '/v1/store/leases',
  lease: (id: string) => `/v1/store/leases/${encodeURIComponent(id)}`,
  keepAlive: (id: string) => `/v1/store/leases/${encodeURIComponent(id)}/keepalive`,
} as const;

export const JOIN_ROUTE = '/v1/join';

/** Default and bounds of the watch heartbeat interval (ms). */
/** The longest key or prefix the hub takes (its own keys are far shorter). */
export const MAX_KEY_LENGTH = 1024;
/** The longest lease the hub grants: a week (a node credential may take far less: node-writes.ts). */
export const LEASE_TTL_MAX_SECONDS = 7 * 24 * 3600;
export const HEARTBEAT_DEFAULT_MS = 5_000;
export const HEARTBEAT_MIN_MS = 20;
export const HEARTBEAT_MAX_MS = 60_000;

export interface GetResponse {
  readonly kv: KeyValue | null;
}

export interface GrantLeaseRequest {
  readonly ttlSeconds: number;
}

export interface LeaseResponse {
  readonly lease: string;
}

export type WatchLine =
  | { readonly events: readonly WatchEvent[]; readonly revision: number }
  | { readonly heartbeat: true; readonly revision: number }
  | { readonly error: ErrorBody['error'] };

export interface JoinRequest {
  /** The join token exactly as `ipferry node join-token create` printed it. */
  readonly token: string;
  /** The name the joining agent runs as (`--node`). */
  readonly node: string;
}

export interface JoinResponse {
  readonly node: string;
  /** The node's credential: its bearer token for /v1/store from now on. Shown only here. */
  readonly credential: string;
}
