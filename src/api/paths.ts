/**
 * Every route of the agent's API by name: its method and path. The route table
 * (src/api/contract.ts) adds who may call each and its schemas; this part carries no schema, so
 * a program that only sends requests (the CLI, through src/client) does not load the schema
 * library at every start. The table is built on it, so the two cannot disagree.
 */
export const API_PREFIX = '/v1';

/** The answer header of a write: the store revision it made (wait for it: GET /v1/applied). */
export const REVISION_HEADER = 'ipferry-revision';

export type Method = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

export const ROUTE_PATHS = {
  health: { method: 'GET', url: '/healthz' },
  version: { method: 'GET', url: `${API_PREFIX}/version` },
  status: { method: 'GET', url: `${API_PREFIX}/status` },
  plan: { method: 'GET', url: `${API_PREFIX}/plan` },
  listPools: { method: 'GET', url: `${API_PREFIX}/pools` },
  createPool: { method: 'POST', url: `${API_PREFIX}/pools` },
  getPool: { method: 'GET', url: `${API_PREFIX}/pools/:name` },
  updatePool: { method: 'PATCH', url: `${API_PREFIX}/pools/:name` },
  deletePool: { method: 'DELETE', url: `${API_PREFIX}/pools/:name` },
  listFips: { method: 'GET', url: `${API_PREFIX}/fips` },
  allocate: { method: 'POST', url: `${API_PREFIX}/fips` },
  getFip: { method: 'GET', url: `${API_PREFIX}/fips/:address` },
  release: { method: 'DELETE', url: `${API_PREFIX}/fips/:address` },
  associate: { method: 'POST', url: `${API_PREFIX}/fips/:address/associate` },
  move: { method: 'POST', url: `${API_PREFIX}/fips/:address/move` },
  disassociate: { method: 'POST', url: `${API_PREFIX}/fips/:address/disassociate` },
  listForwards: { method: 'GET', url: `${API_PREFIX}/fips/:address/forwards` },
  addForward: { method: 'POST', url: `${API_PREFIX}/fips/:address/forwards` },
  removeForward: { method: 'DELETE', url: `${API_PREFIX}/fips/:address/forwards/:id` },
  listNodes: { method: 'GET', url: `${API_PREFIX}/nodes` },
  addNode: { method: 'POST', url: `${API_PREFIX}/nodes` },
  getNode: { method: 'GET', url: `${API_PREFIX}/nodes/:name` },
  removeNode: { method: 'DELETE', url: `${API_PREFIX}/nodes/:name` },
  createJoinToken: { method: 'POST', url: `${API_PREFIX}/nodes/join-tokens` },
  mesh: { method: 'GET', url: `${API_PREFIX}/mesh` },
  setMeshPolicy: { method: 'PUT', url: `${API_PREFIX}/mesh/policy` },
  confirmMesh: { method: 'POST', url: `${API_PREFIX}/mesh/confirm` },
  auditMesh: { method: 'POST', url: `${API_PREFIX}/mesh/audit` },
  applied: { method: 'GET', url: `${API_PREFIX}/applied` },
  events: { method: 'GET', url: `${API_PREFIX}/events` },
  ippool: { method: 'GET', url: `${API_PREFIX}/ippool` },
  arp: { method: 'GET', url: `${API_PREFIX}/arp/:mac` },
} as const satisfies Readonly<Record<string, { readonly method: Method; readonly url: string }>>;

export type RouteName = keyof typeof ROUTE_PATHS;

/** `url` (Fastify's form, `:name` for a parameter) with its parameters filled in, URL-encoded. */
export function fillPath(
  url: string,
  params?: Readonly<Record<string, string | undefined>>,
): string {
  const values = params ?? {};
  return url.replace(/:([A-Za-z]+)/g, (_, name: string) => encodeURIComponent(values[name] ?? ''));
}
