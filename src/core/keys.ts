/**
 * Where each piece of desired and observed state lives in the store. One module, so that every
 * store implementation, the agent and the API agree, and a later schema version can move keys
 * in one place. Addresses in keys are canonical (see address.ts); names are validated to a
 * safe alphabet, and free-form tokens are URI-encoded so that no key can escape its prefix.
 */
import { createHash } from 'node:crypto';

export const ROOT = '/ipferry/v1/';

/** A client token's SHA-256, in hex: what the store keeps of it. */
export function clientTokenDigest(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

/**
 * What agents report about themselves again and again (each node's health: its tunnel, its mesh),
 * kept outside ROOT on purpose: every agent watches ROOT, and one node's refresh must not wake
 * every agent of the fleet. Beside ROOT, not under it, so a list or watch of ROOT never sees it.
 */
export const HEALTH_ROOT = '/ipferry/health/v1/';

/**
 * The newest store revision a waiting write (GET /v1/applied) wants agents' pass reports for:
 * an agent writes its latest pass into its health record when it has passed this revision and
 * has not reported it yet. Written by the hub only when someone waits, so an idle fleet writes
 * nothing per pass: a report after every pass would be one store write per agent per change
 * anywhere in the fleet (at 500 agents on etcd, a backlog that stalled every change).
 */
export const PASS_WANTED_KEY = '/ipferry/health/wanted';

/**
 * The audit trail (core/events.ts): beside ROOT, not under it, so that recording a write wakes
 * no agent; a ring of EVENTS_CAPACITY slots and the sequence number of the latest event.
 */
export const EVENTS_ROOT = '/ipferry/events/v1/';
/**
 * Present while a restore too large for one transaction is written (service/state.ts): later
 * parts are written only while it is the restore's own, and another restore cannot start.
 */
export const RESTORE_KEY = '/ipferry/restore';

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
  /**
   * Membership: written once per liveness lease, so a node arriving or its lease running out
   * are the only events it makes under ROOT.
   */
  alive: `${ROOT}alive/`,
  nodeAlive: (name: string) => `${ROOT}alive/${name}`,
  /**
   * The node's health report, rewritten when it changes. Not under the lease: a dead node's last
   * report tells the mesh audit what it last applied (readers show it only while it is alive).
   */
  health: HEALTH_ROOT,
  nodeHealth: (name: string) => `${HEALTH_ROOT}${name}`,
  clientTokens: `${ROOT}client-tokens/`,
  /**
   * Where an allocate's client token is remembered: under its SHA-256 (clientTokenDigest), so
   * that neither the key nor the FIP record (`clientTokenSha256`), which nodes and read-only
   * tokens read, holds the token. `sha256-` + 64 hex digits is longer than any token (64), so
   * it never meets a key of the older form below.
   */
  clientToken: (token: string) => keys.clientTokenByDigest(clientTokenDigest(token)),
  clientTokenByDigest: (digestHex: string) => `${ROOT}client-tokens/sha256-${digestHex}`,
  /** Where versions before the digest kept a client token: under its own text. */
  legacyClientToken: (token: string) => `${ROOT}client-tokens/${encodeURIComponent(token)}`,
  /** SHA-256 of a remote node's credential (issued when it joined; see api/join.ts). */
  nodeCredentials: `${ROOT}node-credentials/`,
  nodeCredential: (name: string) => `${ROOT}node-credentials/${name}`,
  /** SHA-256 of an unused join token, under a lease that ends with the token's validity. */
  joinTokens: `${ROOT}join-tokens/`,
  joinToken: (digestHex: string) => `${ROOT}join-tokens/${digestHex}`,
  /** Which node granted a lease through the hub, attached to that lease. */
  leaseOwners: `${ROOT}lease-owners/`,
  leaseOwner: (lease: string) => `${ROOT}lease-owners/${encodeURIComponent(lease)}`,
  /** The fleet mesh's policy (mesh.ts: MeshPolicyRecord) and the latest confirmation. */
  meshPolicy: `${ROOT}mesh/policy`,
  meshConfirm: `${ROOT}mesh/confirm`,
  /** The trial that last ran out unconfirmed (mesh.ts: MeshRollback), until a policy is set. */
  meshRollback: `${ROOT}mesh/rollback`,
  /** Which node holds an overlay address: the lock that keeps two nodes off one address. */
  overlays: `${ROOT}mesh/overlay/`,
  overlay: (address: string) => `${ROOT}mesh/overlay/${address}`,
  events: `${EVENTS_ROOT}e/`,
  /** Slot `n` of the ring, zero-padded so that a list comes back in slot order. */
  event: (slot: number) => `${EVENTS_ROOT}e/${String(slot).padStart(6, '0')}`,
  eventsSeq: `${EVENTS_ROOT}seq`,
  /** One 1:1 NAT target maps to one FIP per gateway: SNAT must know which FIP to use. */
  natTarget: (gateway: string, target: string) => `${ROOT}nat-targets/${gateway}/${target}`,
} as const;

/**
 * Keys a node credential can never read through the hub (secrets and the hub's bookkeeping):
 * its gets of them are refused, and its lists and watches leave them out.
 */
export const PRIVATE_PREFIXES: readonly string[] = [
  keys.clientTokens,
  keys.nodeCredentials,
  keys.joinTokens,
  keys.leaseOwners,
  // Who wrote what: token names and requests are the operators' business, not a node's.
  EVENTS_ROOT,
];
