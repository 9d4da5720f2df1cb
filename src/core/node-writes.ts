/**
 * What a joined node may write through its hub, decided without I/O. A node's credential is an
 * outsider's: whatever its agent (or someone holding its credential) sends is checked here in
 * two steps, so the hub reads the store only for what a request touches.
 *
 * 1. `planNodeTxn` looks at the transaction alone: which keys, how big, which leases, whether
 *    every write is fenced by the compare that makes it safe. It answers what the hub must read.
 * 2. `checkNodeTxn` judges the writes against what the hub read (`HubView`).
 *
 * The rules (docs/api.md, "What a node may write"):
 * - its own registration (`nodes/SELF`): a record the agent could decode, named itself, with at
 *   most MAX_NODE_ADDRESSES addresses, none of which the operator gave to something else: not
 *   in a pool unless the node is that pool's gateway or the address is a FIP associated to it
 *   (a routed FIP sits on its node's interface), not in the mesh overlay, and inside the
 *   prefixes its join token allowed when it named some; no tunnel key another node
 *   registered. Its overlay address only as the control plane gave it: unchanged, or one
 *   whose lock it holds or takes in the same transaction.
 * - an overlay lock (`mesh/overlay/A`): only `{name: SELF}`, for an address inside the mesh's
 *   overlay, together with its record naming A, pinned by a compare on the lock's revision, and
 *   only when the lock is free, its own, or stale (its holder's record names another address).
 * - its liveness (`alive/SELF`): only under a lease (its own: the hub checks the owner), so it
 *   goes when the node does.
 * - its health report: named itself, bounded.
 * - FIP statuses: for FIPs of pools whose gateway it is, fenced on the FIP's revision.
 * Deletes only of its own registration, liveness and health; never by prefix.
 */
import { tryParseAddress, tryParsePrefix, prefixRange, rangeContains } from './address.js';
import type { AddressRange } from './address.js';
import { keys } from './keys.js';
import type { FipStatus, NodeRecord } from './model.js';
import { decodeFipStatus, decodeNodeRecord } from './records.js';

/** A node's record lists its host's addresses: a few per interface. */
export const MAX_NODE_ADDRESSES = 64;
/** The most operations one transaction of a node may carry (a status batch is 100 FIPs). */
export const MAX_NODE_OPS = 256;
/** Leases a node may hold at once (one for its liveness; a few while one replaces another). */
export const MAX_NODE_LEASES = 8;
/** A node's liveness lease is 15 s; no node needs one that outlives it by hours. */
export const MAX_NODE_LEASE_TTL_SECONDS = 300;

/** The largest value a node may write, by kind of key. */
const MAX_BYTES = {
  node: 64 * 1024,
  alive: 4 * 1024,
  health: 256 * 1024,
  overlay: 1024,
  // An agent's own report of a refused apply carries the tool's whole stderr (records.ts).
  status: (1 << 20) + 16 * 1024,
} as const;

type Kind = keyof typeof MAX_BYTES;

export type NodeOp =
  | { readonly type: 'put'; readonly key: string; readonly value: string; readonly lease?: string }
  | { readonly type: 'delete'; readonly key: string }
  | { readonly type: 'deletePrefix'; readonly prefix: string };

export interface NodeCompare {
  readonly key: string;
  readonly target: 'value' | 'create' | 'mod' | 'version';
  readonly op: string;
  readonly value: string | number;
}

export interface NodeTxn {
  readonly compare: readonly NodeCompare[];
  readonly success: readonly NodeOp[];
  readonly failure?: readonly NodeOp[];
}

/** Why a node's write is refused; the hub answers it as IPF_E_FORBIDDEN. */
export class NodeWriteRefused extends Error {
  constructor(readonly reason: string) {
    super(reason);
  }
}

const refuse = (reason: string): never => {
  throw new NodeWriteRefused(reason);
};

/** What the hub must read to judge a transaction, and what the transaction puts. */
export interface NodeTxnPlan {
  readonly self: string;
  /** The node record it puts (decoded), if any. */
  readonly record?: NodeRecord;
  /** Overlay addresses whose lock it puts. */
  readonly locks: readonly string[];
  /** Statuses it puts. */
  readonly statuses: readonly FipStatus[];
  /** Leases its puts attach to (the hub checks they are this node's). */
  readonly leases: readonly string[];
}

/** What the hub read for a plan. */
export interface HubView {
  /** The node's record as the store holds it now. */
  readonly current?: NodeRecord;
  /** Other registered nodes (valid records only). */
  readonly others: readonly NodeRecord[];
  /** The overlay prefix of the mesh policy in force, if there is one. */
  readonly overlay?: string;
  /** Each lock of `plan.locks` and of the record's overlay address: who holds it now. */
  readonly lockHolders: ReadonlyMap<string, string | undefined>;
  /** Pools' address ranges with their gateway. */
  readonly poolRanges: readonly { readonly range: AddressRange; readonly gateway: string }[];
  /** The prefixes the node's join token allowed its addresses in; undefined: no such limit. */
  readonly allowed?: readonly AddressRange[];
  /** FIP address → the nodes it is associated or forwarded to (a routed FIP sits on its node). */
  readonly fipNodes: ReadonlyMap<string, readonly string[]>;
  /** For each status address: the gateway of the FIP's pool (undefined: no such FIP or pool). */
  readonly fipGateways: ReadonlyMap<string, string | undefined>;
}

function kindOf(self: string, key: string): Kind | 'other' {
  if (key === keys.node(self)) return 'node';
  if (key === keys.nodeAlive(self)) return 'alive';
  if (key === keys.nodeHealth(self)) return 'health';
  if (key.startsWith(keys.overlays)) return 'overlay';
  if (key.startsWith(keys.statuses)) return 'status';
  return 'other';
}

function parseJson(key: string, value: string): unknown {
  try {
    return JSON.parse(value) as unknown;
  } catch {
    return refuse(`write ${key} with a value that is not JSON`);
  }
}

function decodeOr<T>(key: string, decode: (v: unknown) => T, value: unknown): T {
  try {
    return decode(value);
  } catch (e) {
    const problems = (e as { problems?: readonly { path: string; message: string }[] }).problems;
    const first = problems?.[0];
    return refuse(
      `write ${key} with a record the agents cannot use${first ? ` (${first.path || 'record'} ${first.message})` : ''}`,
    );
  }
}

function isObjectNamed(value: unknown, self: string, only = false): boolean {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const o = value as Record<string, unknown>;
  return o['name'] === self && (!only || Object.keys(o).length === 1);
}

/** Whether some compare of `txn` pins `key` to the revision the hub reads (create or mod). */
function pinned(txn: NodeTxn, key: string): boolean {
  return txn.compare.some(
    (c) => c.key === key && c.op === '=' && (c.target === 'mod' || c.target === 'create'),
  );
}

/** Step 1: the transaction alone. Throws NodeWriteRefused; returns what to read. */
export function planNodeTxn(self: string, txn: NodeTxn): NodeTxnPlan {
  const ops = [...txn.success, ...(txn.failure ?? [])];
  if (ops.length > MAX_NODE_OPS) refuse(`write more than ${MAX_NODE_OPS} keys in one transaction`);
  let record: NodeRecord | undefined;
  const locks: string[] = [];
  const statuses: FipStatus[] = [];
  const leases = new Set<string>();
  for (const o of ops) {
    if (o.type === 'deletePrefix') refuse('delete by prefix');
    else if (o.type === 'delete') {
      const kind = kindOf(self, o.key);
      if (kind !== 'node' && kind !== 'alive' && kind !== 'health') refuse(`delete ${o.key}`);
    } else {
      const kind = kindOf(self, o.key);
      if (kind === 'other') refuse(`write ${o.key}`);
      const k = kind as Kind;
      if (Buffer.byteLength(o.value) > MAX_BYTES[k]) {
        refuse(`write ${o.key} with a value over ${MAX_BYTES[k]} bytes`);
      }
      if (o.lease) leases.add(o.lease);
      const value = parseJson(o.key, o.value);
      if (k === 'node') {
        record = decodeOr(o.key, decodeNodeRecord, value);
        if (record.name !== self) refuse(`write ${o.key} with a value whose name is not ${self}`);
        if (record.addresses.length > MAX_NODE_ADDRESSES) {
          refuse(`register more than ${MAX_NODE_ADDRESSES} addresses`);
        }
      } else if (k === 'alive' || k === 'health') {
        if (!isObjectNamed(value, self)) {
          refuse(`write ${o.key} with a value whose name is not ${self}`);
        }
        if (k === 'alive' && !o.lease) refuse(`write ${o.key} without a lease`);
      } else if (k === 'overlay') {
        const address = o.key.slice(keys.overlays.length);
        if (!isObjectNamed(value, self, true)) {
          refuse(`lock ${o.key} for another node than ${self}`);
        }
        if (!pinned(txn, o.key)) {
          refuse(`lock ${o.key} without a compare on its revision (compare-and-create)`);
        }
        locks.push(address);
      } else {
        const address = o.key.slice(keys.statuses.length);
        const status = decodeOr(o.key, decodeFipStatus, value);
        if (status.node !== self || status.address !== address) {
          refuse(
            `write ${o.key} with a status that is not its own (node ${self}, address ${address})`,
          );
        }
        const fenced = txn.compare.some(
          (c) =>
            c.key === keys.fip(address) &&
            c.target === 'mod' &&
            c.op === '=' &&
            c.value === status.revision,
        );
        if (!fenced) refuse(`write ${o.key} without fencing it on the FIP's revision`);
        statuses.push(status);
      }
    }
  }
  return { self, ...(record ? { record } : {}), locks, statuses, leases: [...leases] };
}

/** The addresses of a record the mesh and firewalls would use (canonical, unicast). */
function addressList(record: NodeRecord): string[] {
  return record.addresses.flatMap((a) => {
    const parsed = tryParseAddress(a);
    return parsed ? [parsed.text] : [];
  });
}

function checkRecord(plan: NodeTxnPlan, record: NodeRecord, view: HubView): void {
  const self = plan.self;
  const overlay = view.overlay ? tryParsePrefix(view.overlay) : undefined;
  const overlayRange = overlay ? prefixRange(overlay) : undefined;
  const keyOf = new Map<string, string>();
  for (const other of view.others) {
    if (other.name !== self && other.publicKey) keyOf.set(other.publicKey, other.name);
  }
  for (const text of addressList(record)) {
    const a = tryParseAddress(text)!;
    const pool = view.poolRanges.find((p) => rangeContains(p.range, a));
    if (pool && pool.gateway !== self && !view.fipNodes.get(text)?.includes(self)) {
      refuse(
        `register ${text}: it is in a pool of gateway ${pool.gateway} and no FIP of it is this node's`,
      );
    }
    if (overlayRange && rangeContains(overlayRange, a)) {
      refuse(`register ${text}: it is in the mesh overlay ${view.overlay}`);
    }
    if (view.allowed && !view.allowed.some((r) => rangeContains(r, a))) {
      refuse(`register ${text}: its join token allowed addresses in other prefixes only`);
    }
  }
  if (record.publicKey) {
    const owner = keyOf.get(record.publicKey);
    if (owner) refuse(`register the tunnel key of node ${owner}`);
  }
  const wanted = record.overlayIp;
  if (wanted !== undefined && wanted !== view.current?.overlayIp) {
    const taking = plan.locks.includes(wanted);
    const holding = view.lockHolders.get(wanted) === self;
    if (!taking && !holding) {
      refuse(`claim overlay address ${wanted} without its lock (the control plane assigns it)`);
    }
  }
}

function checkLock(plan: NodeTxnPlan, address: string, view: HubView, others: NodeRecord[]): void {
  const parsed = tryParseAddress(address);
  const overlay = view.overlay ? tryParsePrefix(view.overlay) : undefined;
  if (
    !parsed ||
    parsed.text !== address ||
    !overlay ||
    !rangeContains(prefixRange(overlay), parsed)
  ) {
    refuse(
      `lock ${address}: not an address of the mesh overlay${view.overlay ? ` ${view.overlay}` : ''}`,
    );
  }
  const recordNames = (plan.record ?? view.current)?.overlayIp === address;
  if (!recordNames) refuse(`lock ${address} without its record naming that address`);
  const holder = view.lockHolders.get(address);
  if (holder === undefined || holder === plan.self) return;
  // A lock left by a node that no longer claims the address may be taken over (ensureOverlay).
  const holderRecord = others.find((n) => n.name === holder);
  if (holderRecord?.overlayIp === address) {
    refuse(`lock ${address}: node ${holder} holds it`);
  }
}

/** Step 2: the plan against what the hub read. Throws NodeWriteRefused. */
export function checkNodeTxn(plan: NodeTxnPlan, view: HubView): void {
  if (plan.record) checkRecord(plan, plan.record, view);
  const others = [...view.others];
  for (const address of plan.locks) checkLock(plan, address, view, others);
  for (const status of plan.statuses) {
    const gateway = view.fipGateways.get(status.address);
    if (gateway !== plan.self) {
      refuse(
        `report the status of ${status.address}: ${gateway ? `gateway ${gateway} serves it` : 'no such FIP'}`,
      );
    }
  }
}
