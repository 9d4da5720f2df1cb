/**
 * The hub's side of core/node-writes.ts: reads what a node's transaction touches and lets the
 * pure rules judge it. Records the hub reads are decoded like the agent decodes them; one that
 * does not decode counts as absent (it cannot be what protects another node's claim).
 */
import { prefixRange, tryParsePrefix, type AddressRange } from '../core/address.js';
import { IpferryError } from '../core/errors.js';
import { keys } from '../core/keys.js';
import { policyInForce, type MeshPolicyRecord } from '../core/mesh.js';
import type { FloatingIp, NodeRecord } from '../core/model.js';
import {
  checkNodeTxn,
  MAX_NODE_LEASES,
  NodeWriteRefused,
  planNodeTxn,
  type HubView,
  type NodeTxnPlan,
} from '../core/node-writes.js';
import { poolRanges } from '../core/pool.js';
import { decodeFloatingIp, decodeNodeRecord, decodePool } from '../core/records.js';
import type { Store, Txn } from '../store/store.js';

export function forbidden(node: string, what: string): IpferryError {
  return new IpferryError('IPF_E_FORBIDDEN', {
    reason: `the credential of node ${node} may not ${what}`,
  });
}

function decoded<T>(decode: (v: unknown) => T, value: string | undefined): T | undefined {
  if (value === undefined) return undefined;
  try {
    return decode(JSON.parse(value));
  } catch {
    return undefined;
  }
}

async function listDecoded<T>(
  store: Store,
  prefix: string,
  decode: (v: unknown) => T,
): Promise<T[]> {
  const { kvs } = await store.list(prefix);
  return kvs.flatMap((kv) => {
    const v = decoded(decode, kv.value);
    return v === undefined ? [] : [v];
  });
}

async function overlayInForce(store: Store, now: Date): Promise<string | undefined> {
  const kv = await store.get(keys.meshPolicy);
  const record = decoded((v) => v as MeshPolicyRecord, kv?.value);
  return policyInForce(record, now).policy?.overlay;
}

async function lockHolder(store: Store, address: string): Promise<string | undefined> {
  const kv = await store.get(keys.overlay(address));
  const holder = decoded((v) => (v as { name?: unknown }).name, kv?.value);
  return typeof holder === 'string' ? holder : undefined;
}

/**
 * The gateway of the pool of FIP `address`, if the FIP and its pool are there. Only the pool's
 * name is read from the FIP record: its gateway reports a record it cannot use as ERROR.
 */
async function gatewayOf(store: Store, address: string): Promise<string | undefined> {
  const pool = decoded(
    (v) => (v as { pool?: unknown } | null)?.pool,
    (await store.get(keys.fip(address)))?.value,
  );
  if (typeof pool !== 'string') return undefined;
  return decoded(decodePool, (await store.get(keys.pool(pool)))?.value)?.gateway;
}

function nodesOf(fip: FloatingIp): string[] {
  return [
    ...(fip.association?.node ? [fip.association.node] : []),
    ...fip.forwards.flatMap((f) => (f.node ? [f.node] : [])),
  ];
}

/** The prefixes the node's join token allowed its addresses in (api/join.ts), if it named any. */
async function allowedRanges(store: Store, node: string): Promise<AddressRange[] | undefined> {
  const credential = decoded(
    (v) => v as { allowAddresses?: unknown },
    (await store.get(keys.nodeCredential(node)))?.value,
  );
  const list = credential?.allowAddresses;
  if (!Array.isArray(list)) return undefined;
  return list.flatMap((text) => {
    const prefix = typeof text === 'string' ? tryParsePrefix(text, false) : undefined;
    return prefix ? [prefixRange(prefix)] : [];
  });
}

/** Reads what `plan` touches, and nothing else. */
async function readView(store: Store, plan: NodeTxnPlan, now: Date): Promise<HubView> {
  const record = plan.record;
  const needsNodes = record !== undefined || plan.locks.length > 0;
  const [currentKv, others, overlay] = await Promise.all([
    store.get(keys.node(plan.self)),
    needsNodes ? listDecoded(store, keys.nodes, decodeNodeRecord) : [],
    needsNodes ? overlayInForce(store, now) : undefined,
  ]);
  const current = decoded(decodeNodeRecord, currentKv?.value);
  const allowed = record ? await allowedRanges(store, plan.self) : undefined;
  const lockAddresses = [
    ...new Set([...plan.locks, ...(record?.overlayIp ? [record.overlayIp] : [])]),
  ];
  const [holders, pools, fips, gateways] = await Promise.all([
    Promise.all(lockAddresses.map(async (a) => [a, await lockHolder(store, a)] as const)),
    record ? listDecoded(store, keys.pools, decodePool) : [],
    record ? listDecoded(store, keys.fips, decodeFloatingIp) : [],
    Promise.all(
      plan.statuses.map(async (s) => [s.address, await gatewayOf(store, s.address)] as const),
    ),
  ]);
  return {
    ...(current ? { current } : {}),
    others: others.filter((n: NodeRecord) => n.name !== plan.self),
    ...(overlay ? { overlay } : {}),
    ...(allowed ? { allowed } : {}),
    lockHolders: new Map(holders),
    poolRanges: pools.flatMap((pool) =>
      poolRanges(pool).map(({ range }) => ({ range, gateway: pool.gateway })),
    ),
    fipNodes: new Map(fips.map((f) => [f.address, nodesOf(f)])),
    fipGateways: new Map(gateways),
  };
}

/** Throws unless `lease` was granted through this hub by `node`. */
export async function requireOwnLease(store: Store, node: string, lease: string): Promise<void> {
  const owner = await store.get(keys.leaseOwner(lease));
  // Gone, or never granted through this hub by a node: as far as the node can tell, no lease.
  if (!owner) throw new IpferryError('IPF_E_LEASE_NOT_FOUND', { lease });
  if (owner.value !== node) throw forbidden(node, `use lease ${lease} of another node`);
}

/**
 * Throws IPF_E_FORBIDDEN unless node `self` may run `txn` (core/node-writes.ts says what it
 * may), before the store is touched: a refused transaction writes nothing.
 */
export async function checkNodeWrite(
  store: Store,
  self: string,
  txn: Txn,
  now: Date,
): Promise<void> {
  try {
    const plan = planNodeTxn(self, txn);
    checkNodeTxn(plan, await readView(store, plan, now));
    for (const lease of plan.leases) await requireOwnLease(store, self, lease);
  } catch (e) {
    if (e instanceof NodeWriteRefused) throw forbidden(self, e.reason);
    throw e;
  }
}

/** Throws unless node `self` may take one more lease. */
export async function checkNodeLeaseCount(store: Store, self: string): Promise<void> {
  const { kvs } = await store.list(keys.leaseOwners);
  const held = kvs.filter((kv) => kv.value === self).length;
  if (held >= MAX_NODE_LEASES) {
    throw forbidden(self, `hold more than ${MAX_NODE_LEASES} leases at once (it holds ${held})`);
  }
}
