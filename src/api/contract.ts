/**
 * The HTTP contract between the agent's API and its clients (the CLI, the `http` store, the
 * dashboard). Both sides import these types, so a change of shape breaks the build, not users.
 *
 * Every route except /healthz needs `Authorization: Bearer <token>`. Errors are `ErrorBody`
 * (core/errors.ts) with the registry's HTTP status.
 */
import type { MeshAudit, MeshPolicy, MeshPolicyRecord } from '../core/mesh.js';
import type { MeshConfirmResult, MeshView } from '../service/mesh.js';
import type { TunnelHealth } from '../core/model.js';
import type { AssociationMode, FipState, NodeView, PortForward, Protocol } from '../core/model.js';
import type {
  ArpResponse,
  FipStatusView,
  FipView,
  IppoolEntryView,
  PlanResponse,
  PoolView,
} from '../service/views.js';

export const API_PREFIX = '/v1';
export const DEFAULT_PORT = 7447;

// Requests ------------------------------------------------------------------------------------

export interface CreatePoolRequest {
  name: string;
  gateway: string;
  delivery?: 'routed' | 'onlink';
  uplink?: string;
  /** Each `CIDR`, `FIRST-LAST`, `IP` or `IP=MAC`. */
  entries?: string[];
  /** The gateway's own addresses, usable for port forwards only. */
  shared?: string[];
  description?: string;
  tags?: string[];
}

/**
 * `PATCH /v1/pools/:name`: what is given changes, the rest stays. Gateway, delivery and the
 * ranges already in the pool cannot change (delete and re-create the pool for that).
 */
export interface UpdatePoolRequest {
  /** Entries to add: each `CIDR`, `FIRST-LAST`, `IP` or `IP=MAC`. */
  addEntries?: string[];
  /** The gateway's own addresses to add, usable for port forwards only. */
  addShared?: string[];
  /** Single-address entries (shared or not) to remove; refused while a FIP holds one. */
  removeAddresses?: string[];
  /** The new description; `""` removes it. */
  description?: string;
  /** The new tags, replacing the old ones. */
  tags?: string[];
}

export interface AllocateRequest {
  pool?: string;
  address?: string;
  /** Take only an address of this IP version (e.g. to match the target of `getip`). */
  family?: 4 | 6;
  clientToken?: string;
  description?: string;
  tags?: string[];
}

export interface AssociateRequest {
  /** Required, except in routed mode, where the target is the FIP itself (and nothing else). */
  target?: string;
  node?: string;
  /** Default `nat`. */
  mode?: AssociationMode;
  masquerade?: boolean;
  allowReassociation?: boolean;
}

export interface MoveRequest {
  /** Required, except for a routed FIP, whose target is the FIP itself. */
  target?: string;
  node?: string;
}

export interface AddForwardRequest {
  protocol: Protocol;
  /** `P` or `P-Q` (or a number). */
  port: string | number;
  targetPort?: number;
  target: string;
  node?: string;
  description?: string;
}

export interface CreateJoinTokenRequest {
  /** How long the token stays valid (default 3600, at most 30 days). */
  ttlSeconds?: number;
  /** Only this node may join with it; needed to join a node that is already registered. */
  node?: string;
  /** Where remote agents reach this hub (default: the API's listen address or addresses). */
  urls?: string[];
}

/** `PUT /v1/mesh/policy`. */
export interface SetMeshPolicyRequest {
  /** The whole policy (docs/mesh.md); it replaces the one in the store. */
  policy: MeshPolicy;
  /**
   * Apply it as a trial: unless `POST /v1/mesh/confirm` comes within this many seconds, every
   * node goes back to the policy before it by itself.
   */
  confirmWithinSeconds?: number;
}

/** `POST /v1/mesh/confirm` (or no body: a confirmation of the trial and the holds). */
export interface MeshConfirmRequest {
  /** Release held membership changes only: confirm no trial, and refuse none that ran out. */
  holdsOnly?: boolean;
}

/** `POST /v1/mesh/audit`. */
export interface MeshAuditRequest {
  /** An inventory: one host per line, `NAME ADDRESS[,ADDRESS…] [site=SITE]`, `#` comments. */
  inventory?: string;
  /** What to call the inventory in an error (`hosts.txt line 3: …`); default `inventory`. */
  source?: string;
}

// Responses -----------------------------------------------------------------------------------

export interface JoinTokenResponse {
  /** The one string to copy to the remote host (`ipfjoin1.…`); the hub keeps only its hash. */
  readonly token: string;
  readonly expiresAt: string;
  readonly urls: readonly string[];
  readonly node?: string;
  /** SHA-256 of the hub's TLS certificate (hex), pinned by the token. */
  readonly fingerprint?: string;
}

export interface AllocateResponse extends FipView {
  /** False when a client token returned an earlier allocation. */
  readonly created: boolean;
}

export interface ReleaseResponse {
  readonly address: string;
  readonly released: boolean;
}

export interface StatusResponse {
  readonly node: string;
  readonly version: string;
  readonly store: { readonly kind: string; readonly revision: number };
  readonly dataplane: {
    readonly kind: string;
    readonly lastApply?: string;
    readonly lastError?: string;
    readonly realisedRevision?: number;
  };
  readonly fips: Record<FipState, number>;
  readonly nodes: { readonly total: number; readonly alive: number };
  /** This node's tunnel, as its agent last saw it. */
  readonly tunnel?: TunnelHealth;
}

export interface VersionResponse {
  readonly version: string;
  readonly node: string;
}

export type { MeshAudit, MeshView };
// Built by the control plane and the agent (service/views.ts), served as they are.
export type { ArpResponse, FipStatusView, FipView, IppoolEntryView, PlanResponse, PoolView };
export type MeshPolicyResponse = MeshPolicyRecord;

/** `POST /v1/mesh/confirm`: whether a trial was confirmed, and which reported holds it released. */
export type MeshConfirmResponse = MeshConfirmResult;

/** `DELETE /v1/nodes/:name`. */
export interface RemoveNodeResponse {
  readonly name: string;
  readonly removed: true;
  /** The overlay address the node held, free again. */
  readonly overlayIp?: string;
}

export type ForwardView = PortForward;
export type NodeListView = NodeView;

/**
 * Route table (method, path → request, response):
 *
 *   GET    /healthz                                   → { ok: true }                (no auth)
 *   GET    /v1/version                                → VersionResponse
 *   GET    /v1/status                                 → StatusResponse
 *   GET    /v1/plan                                   → PlanResponse (changes nothing)
 *   GET    /v1/pools                                  → PoolView[]
 *   POST   /v1/pools              CreatePoolRequest   → PoolView                    201
 *   GET    /v1/pools/:name                            → PoolView
 *   PATCH  /v1/pools/:name        UpdatePoolRequest  → PoolView
 *   DELETE /v1/pools/:name                            → { name, deleted: true }
 *   GET    /v1/fips[?pool=P]                          → FipView[]
 *   POST   /v1/fips               AllocateRequest     → AllocateResponse            201 (200 when replayed by client token)
 *   GET    /v1/fips/:address                          → FipView
 *   DELETE /v1/fips/:address[?force=true]             → ReleaseResponse
 *   POST   /v1/fips/:address/associate   AssociateRequest → FipView
 *   POST   /v1/fips/:address/move        MoveRequest      → FipView
 *   POST   /v1/fips/:address/disassociate                 → FipView
 *   GET    /v1/fips/:address/forwards                 → ForwardView[]
 *   POST   /v1/fips/:address/forwards    AddForwardRequest → ForwardView            201
 *   DELETE /v1/fips/:address/forwards/:id             → { address, id, removed: true }
 *   GET    /v1/nodes                                  → NodeView[]
 *   GET    /v1/nodes/:name                            → NodeView
 *   DELETE /v1/nodes/:name                            → RemoveNodeResponse (refused while in use)
 *   POST   /v1/nodes/join-tokens  CreateJoinTokenRequest → JoinTokenResponse      201 (admin rw only)
 *   POST   /v1/join               JoinRequest        → JoinResponse                (no bearer token)
 *   *      /v1/store/…                               → the http store (store/wire.ts); admin
 *                                                      tokens and node credentials
 *   GET    /v1/ippool                                 → IppoolEntryView[]
 *   GET    /v1/arp/:mac                               → ArpResponse
 *   GET    /v1/mesh                                   → MeshView
 *   PUT    /v1/mesh/policy        SetMeshPolicyRequest → MeshPolicyResponse
 *   POST   /v1/mesh/confirm       MeshConfirmRequest? → MeshConfirmResponse
 *   POST   /v1/mesh/audit         MeshAuditRequest    → MeshAudit (changes nothing; read-only
 *                                                      tokens may call it)
 *   GET    /docs                                      → OpenAPI UI; /docs/json the document
 */
export const ROUTES = {
  healthz: '/healthz',
  version: `${API_PREFIX}/version`,
  status: `${API_PREFIX}/status`,
  plan: `${API_PREFIX}/plan`,
  pools: `${API_PREFIX}/pools`,
  pool: (name: string) => `${API_PREFIX}/pools/${encodeURIComponent(name)}`,
  fips: `${API_PREFIX}/fips`,
  fip: (address: string) => `${API_PREFIX}/fips/${encodeURIComponent(address)}`,
  fipAction: (address: string, action: 'associate' | 'move' | 'disassociate') =>
    `${API_PREFIX}/fips/${encodeURIComponent(address)}/${action}`,
  forwards: (address: string) => `${API_PREFIX}/fips/${encodeURIComponent(address)}/forwards`,
  forward: (address: string, id: string) =>
    `${API_PREFIX}/fips/${encodeURIComponent(address)}/forwards/${encodeURIComponent(id)}`,
  nodes: `${API_PREFIX}/nodes`,
  node: (name: string) => `${API_PREFIX}/nodes/${encodeURIComponent(name)}`,
  joinTokens: `${API_PREFIX}/nodes/join-tokens`,
  ippool: `${API_PREFIX}/ippool`,
  arp: (mac: string) => `${API_PREFIX}/arp/${encodeURIComponent(mac)}`,
  mesh: `${API_PREFIX}/mesh`,
  meshPolicy: `${API_PREFIX}/mesh/policy`,
  meshConfirm: `${API_PREFIX}/mesh/confirm`,
  meshAudit: `${API_PREFIX}/mesh/audit`,
} as const;
