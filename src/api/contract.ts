/**
 * The HTTP contract between the agent's API and its clients (the CLI, the lab, tests), written
 * once: `API` names every route of the agent's API with its method, path, who may call it, and
 * the schemas of its params, query, body and answers (schemas.ts). app.ts registers the routes
 * from it (Fastify checks requests and writes answers by these schemas), @fastify/swagger serves
 * it as the OpenAPI document (/docs, /docs/json), and the client (client/api-client.ts) builds
 * its requests and takes its types from it. A change of shape breaks the build, not users.
 *
 * Not here: /v1/store/… and /v1/join, the wire of the `http` store, which sits below the API:
 * its TypeBox schemas and the types derived from them are in store/wire.ts, which store/http.ts
 * calls by and store-routes.ts and join.ts serve by (and OpenAPI shows, under `store`).
 *
 * Every route but /healthz needs `Authorization: Bearer <token>`: `read` routes take a read-only
 * token too, `write` routes a read-write one. Errors are `ErrorBody` (core/errors.ts) with the
 * registry's HTTP status.
 */
import type { Static, TSchema } from '@sinclair/typebox';
import * as s from './schemas.js';
import { fillPath, type Method, ROUTE_PATHS, type RouteName } from './paths.js';

export { API_PREFIX, type Method, type RouteName } from './paths.js';
export const DEFAULT_PORT = 7447;

/** Who may call a route: anyone, any admin token, or a read-write admin token. */
export type Auth = 'public' | 'read' | 'write';

export interface RouteSpec {
  readonly method: Method;
  /** Fastify's form: `:name` for a path parameter. */
  readonly url: string;
  readonly auth: Auth;
  readonly tags?: readonly string[];
  readonly summary?: string;
  /** Left out of the OpenAPI document. */
  readonly hide?: boolean;
  readonly params?: TSchema;
  readonly querystring?: TSchema;
  readonly body?: TSchema;
  /** The body may be left out altogether: it is taken as `{}`. */
  readonly bodyOptional?: boolean;
  /** The answer's schema by success status; the lowest is the default status. */
  readonly response: { readonly [status: number]: TSchema };
}

function route<const R extends RouteSpec>(spec: R): R {
  return spec;
}

export const API = {
  health: route({
    ...ROUTE_PATHS.health,
    auth: 'public',
    hide: true,
    response: { 200: s.healthResponse },
  }),
  version: route({
    ...ROUTE_PATHS.version,
    auth: 'read',
    tags: ['agent'],
    response: { 200: s.versionResponse },
  }),
  status: route({
    ...ROUTE_PATHS.status,
    auth: 'read',
    tags: ['agent'],
    response: { 200: s.statusResponse },
  }),
  plan: route({
    ...ROUTE_PATHS.plan,
    auth: 'read',
    tags: ['agent'],
    summary: 'What the agent would change in this host’s kernel now (changes nothing)',
    response: { 200: s.planResponse },
  }),

  listPools: route({
    ...ROUTE_PATHS.listPools,
    auth: 'read',
    tags: ['pools'],
    response: { 200: s.poolsResponse },
  }),
  createPool: route({
    ...ROUTE_PATHS.createPool,
    auth: 'write',
    tags: ['pools'],
    summary: 'Create a pool of floating IPs homed on a gateway node',
    body: s.createPoolBody,
    response: { 201: s.poolResponse },
  }),
  getPool: route({
    ...ROUTE_PATHS.getPool,
    auth: 'read',
    tags: ['pools'],
    params: s.nameParams,
    response: { 200: s.poolResponse },
  }),
  updatePool: route({
    ...ROUTE_PATHS.updatePool,
    auth: 'write',
    tags: ['pools'],
    summary:
      'Add entries (shared addresses too), remove single addresses, set the description or tags',
    params: s.nameParams,
    body: s.updatePoolBody,
    response: { 200: s.poolResponse },
  }),
  deletePool: route({
    ...ROUTE_PATHS.deletePool,
    auth: 'write',
    tags: ['pools'],
    params: s.nameParams,
    response: { 200: s.deletePoolResponse },
  }),

  listFips: route({
    ...ROUTE_PATHS.listFips,
    auth: 'read',
    tags: ['floating ips'],
    querystring: s.listFipsQuery,
    response: { 200: s.fipsResponse },
  }),
  allocate: route({
    ...ROUTE_PATHS.allocate,
    auth: 'write',
    tags: ['floating ips'],
    summary: 'Allocate a floating IP (any free one, or a requested address)',
    body: s.allocateBody,
    // 200 when a client token returns an earlier allocation.
    response: { 200: s.allocateResponse, 201: s.allocateResponse },
  }),
  getFip: route({
    ...ROUTE_PATHS.getFip,
    auth: 'read',
    tags: ['floating ips'],
    params: s.addressParams,
    response: { 200: s.fipResponse },
  }),
  release: route({
    ...ROUTE_PATHS.release,
    auth: 'write',
    tags: ['floating ips'],
    summary: 'Release a floating IP (refused while associated unless force=true)',
    params: s.addressParams,
    querystring: s.releaseQuery,
    response: { 200: s.releaseResponse },
  }),
  associate: route({
    ...ROUTE_PATHS.associate,
    auth: 'write',
    tags: ['floating ips'],
    summary: 'Associate a floating IP with a target',
    params: s.addressParams,
    body: s.associateBody,
    response: { 200: s.fipResponse },
  }),
  move: route({
    ...ROUTE_PATHS.move,
    auth: 'write',
    tags: ['floating ips'],
    summary: 'Re-associate a floating IP to a new target in one step',
    params: s.addressParams,
    body: s.moveBody,
    response: { 200: s.fipResponse },
  }),
  disassociate: route({
    ...ROUTE_PATHS.disassociate,
    auth: 'write',
    tags: ['floating ips'],
    params: s.addressParams,
    response: { 200: s.fipResponse },
  }),

  listForwards: route({
    ...ROUTE_PATHS.listForwards,
    auth: 'read',
    tags: ['port forwards'],
    params: s.addressParams,
    response: { 200: s.forwardsResponse },
  }),
  addForward: route({
    ...ROUTE_PATHS.addForward,
    auth: 'write',
    tags: ['port forwards'],
    summary: 'Forward a protocol and port (or range) of a floating IP',
    params: s.addressParams,
    body: s.addForwardBody,
    response: { 201: s.forwardResponse },
  }),
  removeForward: route({
    ...ROUTE_PATHS.removeForward,
    auth: 'write',
    tags: ['port forwards'],
    params: s.forwardParams,
    response: { 200: s.removeForwardResponse },
  }),

  listNodes: route({
    ...ROUTE_PATHS.listNodes,
    auth: 'read',
    tags: ['nodes'],
    response: { 200: s.nodesResponse },
  }),
  addNode: route({
    ...ROUTE_PATHS.addNode,
    auth: 'write',
    tags: ['nodes'],
    summary:
      'Register an unmanaged node: a host that runs no agent, reached by WireGuard with the public key given (configure it from `ipferry node render`)',
    body: s.addNodeBody,
    response: { 201: s.nodeResponse },
  }),
  getNode: route({
    ...ROUTE_PATHS.getNode,
    auth: 'read',
    tags: ['nodes'],
    params: s.nameParams,
    response: { 200: s.nodeResponse },
  }),
  removeNode: route({
    ...ROUTE_PATHS.removeNode,
    auth: 'write',
    tags: ['nodes'],
    summary:
      'Remove a node for good: its record, liveness and overlay address (refused while a pool or a floating IP uses it)',
    params: s.nameParams,
    response: { 200: s.removeNodeResponse },
  }),
  createJoinToken: route({
    ...ROUTE_PATHS.createJoinToken,
    auth: 'write',
    tags: ['nodes'],
    summary: 'Create a single-use token that lets a remote agent join this hub',
    body: s.createJoinTokenBody,
    response: { 201: s.joinTokenResponse },
  }),

  mesh: route({
    ...ROUTE_PATHS.mesh,
    auth: 'read',
    tags: ['mesh'],
    summary:
      'The mesh policy, its trial and deadline, whether it rolled back, the latest confirmation',
    response: { 200: s.meshResponse },
  }),
  setMeshPolicy: route({
    ...ROUTE_PATHS.setMeshPolicy,
    auth: 'write',
    tags: ['mesh'],
    summary: 'Set the mesh policy, optionally as a trial that rolls back unless confirmed in time',
    body: s.setMeshPolicyBody,
    response: { 200: s.meshPolicyResponse },
  }),
  confirmMesh: route({
    ...ROUTE_PATHS.confirmMesh,
    auth: 'write',
    tags: ['mesh'],
    summary:
      'Confirm the running trial (refused after its deadline) and release membership changes held back by maxChange',
    body: s.confirmMeshBody,
    // A bare POST confirms the trial and the holds, as before the body existed.
    bodyOptional: true,
    response: { 200: s.meshConfirmResponse },
  }),
  auditMesh: route({
    ...ROUTE_PATHS.auditMesh,
    // It changes nothing, and an audit is what a monitoring job with a read-only token runs; it
    // is a POST only because an inventory is too large for a query string.
    auth: 'read',
    tags: ['mesh'],
    summary:
      'Audit the mesh (changes nothing): unregistered and unlisted hosts, lagging nodes, reject_all, holds, overlay usage',
    body: s.auditMeshBody,
    // Without an inventory there is nothing to send: a bare POST is an audit without one.
    bodyOptional: true,
    response: { 200: s.meshAuditResponse },
  }),

  applied: route({
    ...ROUTE_PATHS.applied,
    auth: 'read',
    tags: ['floating ips'],
    summary:
      'Whether a write (its revision) is applied by every agent it concerns; waits up to `wait` for a final answer',
    querystring: s.appliedQuery,
    response: { 200: s.appliedResponse },
  }),
  events: route({
    ...ROUTE_PATHS.events,
    auth: 'read',
    tags: ['audit'],
    summary:
      'The audit trail: every write and refused write, oldest first (the latest 10,000 are kept); a long poll with `wait`',
    querystring: s.eventsQuery,
    response: { 200: s.eventsResponse },
  }),
  ippool: route({
    ...ROUTE_PATHS.ippool,
    auth: 'read',
    tags: ['ip floater'],
    response: { 200: s.ippoolResponse },
  }),
  arp: route({
    ...ROUTE_PATHS.arp,
    auth: 'read',
    tags: ['ip floater'],
    summary: 'MAC → address, from pool pins and the gateway neighbour table',
    params: s.macParams,
    response: { 200: s.arpResponse },
  }),
} as const satisfies Record<string, RouteSpec>;

export type Api = typeof API;

/** Every route of ROUTE_PATHS has its row here (and every row is built on one of them). */
const EVERY_ROUTE: Readonly<Record<RouteName, RouteSpec>> = API;
void EVERY_ROUTE;

// What each route takes and answers, as TypeScript types -------------------------------------

type StaticOf<R, K extends string, Else> = R extends { readonly [P in K]: infer S extends TSchema }
  ? Static<S>
  : Else;

export type ParamsOf<R extends RouteSpec> = StaticOf<R, 'params', Record<string, never>>;
export type QueryOf<R extends RouteSpec> = StaticOf<R, 'querystring', Record<string, never>>;
export type BodyOf<R extends RouteSpec> = StaticOf<R, 'body', undefined>;
export type ResponseOf<R extends RouteSpec> = R['response'][keyof R['response'] &
  number] extends infer S extends TSchema
  ? Static<S>
  : never;

/** The path of `route` with its parameters filled in (URL-encoded). */
export function pathOf<R extends RouteSpec>(route: R, params?: ParamsOf<R>): string {
  return fillPath(route.url, params);
}

/** Path builders for requests made by hand (tests); programs use the client. */
export const ROUTES = {
  healthz: API.health.url,
  version: API.version.url,
  status: API.status.url,
  plan: API.plan.url,
  pools: API.listPools.url,
  pool: (name: string) => pathOf(API.getPool, { name }),
  fips: API.listFips.url,
  fip: (address: string) => pathOf(API.getFip, { address }),
  fipAction: (address: string, action: 'associate' | 'move' | 'disassociate') =>
    pathOf(API[action], { address }),
  forwards: (address: string) => pathOf(API.listForwards, { address }),
  forward: (address: string, id: string) => pathOf(API.removeForward, { address, id }),
  nodes: API.listNodes.url,
  node: (name: string) => pathOf(API.getNode, { name }),
  joinTokens: API.createJoinToken.url,
  ippool: API.ippool.url,
  arp: (mac: string) => pathOf(API.arp, { mac }),
  mesh: API.mesh.url,
  meshPolicy: API.setMeshPolicy.url,
  meshConfirm: API.confirmMesh.url,
  meshAudit: API.auditMesh.url,
} as const;

// Named types of requests and answers, for the client's callers --------------------------------

export type CreatePoolRequest = BodyOf<Api['createPool']>;
/** `PATCH /v1/pools/:name`: what is given changes, the rest stays. */
export type UpdatePoolRequest = BodyOf<Api['updatePool']>;
export type AllocateRequest = BodyOf<Api['allocate']>;
/** `target` is required, except in routed mode, where the target is the FIP itself. */
export type AssociateRequest = BodyOf<Api['associate']>;
/** `target` is required, except for a routed FIP, whose target is the FIP itself. */
export type MoveRequest = BodyOf<Api['move']>;
export type AddForwardRequest = BodyOf<Api['addForward']>;
export type CreateJoinTokenRequest = BodyOf<Api['createJoinToken']>;
export type AddNodeRequest = BodyOf<Api['addNode']>;
export type SetMeshPolicyRequest = BodyOf<Api['setMeshPolicy']>;
export type MeshConfirmRequest = BodyOf<Api['confirmMesh']>;
export type MeshAuditRequest = BodyOf<Api['auditMesh']>;

export type HealthResponse = ResponseOf<Api['health']>;
export type VersionResponse = ResponseOf<Api['version']>;
export type StatusResponse = ResponseOf<Api['status']>;
export type DeletePoolResponse = ResponseOf<Api['deletePool']>;
export type AllocateResponse = ResponseOf<Api['allocate']>;
export type ReleaseResponse = ResponseOf<Api['release']>;
export type AppliedResponse = ResponseOf<Api['applied']>;
export type AppliedRequest = QueryOf<Api['applied']>;
export type EventsRequest = QueryOf<Api['events']>;
export type EventsResponse = ResponseOf<Api['events']>;
export type RemoveForwardResponse = ResponseOf<Api['removeForward']>;
export type RemoveNodeResponse = ResponseOf<Api['removeNode']>;
/**
 * A join token and where it leads. `warning` is there when a URL is not https: the token, the
 * credential the node gets for it and all of the node's store traffic would cross the network
 * in clear text. (The answer is written by JSON.stringify: the field arrives whether or not the
 * response schema names it.)
 */
export type JoinTokenResponse = ResponseOf<Api['createJoinToken']> & {
  readonly warning?: JoinTokenWarning;
};

/** What is unsafe about a join token, and what to do about it. */
export interface JoinTokenWarning {
  readonly message: string;
  readonly hint: string;
  /** The URLs of the token that are not https. */
  readonly urls: readonly string[];
}
export type MeshPolicyResponse = ResponseOf<Api['setMeshPolicy']>;
/** Whether a trial was confirmed, and which reported holds it released. */
export type MeshConfirmResponse = ResponseOf<Api['confirmMesh']>;

// Built by the control plane and the agent, served as they are.
export type { MeshAudit } from '../core/mesh.js';
export type { MeshView } from '../service/mesh.js';
export type {
  ArpResponse,
  FipStatusView,
  FipView,
  IppoolEntryView,
  PlanResponse,
  PoolView,
} from '../service/views.js';
export type { PortForward as ForwardView, NodeView as NodeListView } from '../core/model.js';
