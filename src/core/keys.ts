/**
 * Where each piece of desired and observed state lives in the store. One module, so that every
 * store implementation, the agent and the API agree, and a later schema version can move keys
 * in one place. Addresses in keys are canonical (see address.ts); names are validated to a
 * safe alphabet, and free-form tokens are URI-encoded so that no key can escape its prefix.
 */
export const ROOT = '/ipferry/v1/';

export const keys = {
  pools: `${ROOT}pools/`,
  pool: (name: string) => `${ROOT}pools/${name}`,
  /** Bumped by every pool create/delete, so overlap checks compare one revision. */
  poolsGuard: `${ROOT}guards/pools`,
  fips: `${ROOT}fips/`,
  fip: (address: string) => `${ROOT}fips/${address}`,
  statuses: `${ROOT}status/`,
  status: (address: string) => `${ROOT}status/${address}`,
  nodes: `${ROOT}nodes/`,
  node: (name: string) => `${ROOT}nodes/${name}`,
  alive: `${ROOT}alive/`,
  nodeAlive: (name: string) => `${ROOT}alive/${name}`,
  clientToken: (token: string) => `${ROOT}client-tokens/${encodeURIComponent(token)}`,
  /** One 1:1 NAT target maps to one FIP per gateway: SNAT must know which FIP to use. */
  natTarget: (gateway: string, target: string) => `${ROOT}nat-targets/${gateway}/${target}`,
} as const;
