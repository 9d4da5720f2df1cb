/**
 * The desired state an agent compiles from, kept in memory: fed by a PrefixCache on ROOT (a full
 * list, then each revision's events), decoded once per change rather than once per pass.
 *
 * A snapshot hands out the same arrays, sets and maps pass after pass until something of their
 * kind changes: node records and the live set in particular, so compileMesh can reuse the part
 * of a node's mesh that grows with the fleet (see memberPart in src/core/mesh.ts) when a pass
 * was woken by anything else. Snapshots are never mutated afterwards: a change builds a new one.
 */
import { IpferryError, validationError } from '../core/errors.js';
import { tryParseAddress } from '../core/address.js';
import { keys } from '../core/keys.js';
import { parseStored } from '../core/json.js';
import {
  decodeFipStatus,
  decodeFloatingIp,
  decodeNodeRecord,
  decodePool,
} from '../core/records.js';
import { validateMeshPolicy, type MeshConfirmation, type MeshPolicyRecord } from '../core/mesh.js';
import { Problems } from '../core/validate.js';
import type { FipStatus, FloatingIp, NodeRecord, Pool } from '../core/model.js';
import type { CacheSink } from '../store/cache.js';
import type { KeyValue, WatchEvent } from '../store/store.js';

export interface Snapshot {
  readonly revision: number;
  readonly nodes: readonly NodeRecord[];
  readonly pools: readonly Pool[];
  readonly fips: readonly { readonly fip: FloatingIp; readonly revision: number }[];
  readonly statuses: ReadonlyMap<string, FipStatus>;
  readonly meshPolicy?: MeshPolicyRecord;
  readonly meshConfirm?: MeshConfirmation;
  /** Nodes whose agent holds a live lease. */
  readonly alive: ReadonlySet<string>;
  /** Records skipped because they do not decode, by key, with the reason. */
  readonly rejected: ReadonlyMap<string, string>;
  /**
   * FIP records skipped, with what can still be told of them: the gateway of their pool
   * reports them ERROR, so `fip list` says why rather than showing a FIP that never comes up.
   */
  readonly unusableFips: readonly UnusableFip[];
}

export interface UnusableFip {
  readonly address: string;
  /** The record's mod revision: the status is fenced on it like any other. */
  readonly revision: number;
  /** The pool the record names, when it names one. */
  readonly pool?: string;
  readonly reason: string;
}

type Kind = 'nodes' | 'pools' | 'fips' | 'statuses' | 'alive';

/** Map keys compare as the store sorts its keys (byte order; keys here are ASCII). */
function byKey<T>(map: ReadonlyMap<string, T>): T[] {
  return [...map.keys()].sort().map((k) => map.get(k)!);
}

export class DesiredState implements CacheSink {
  private nodes = new Map<string, NodeRecord>();
  private pools = new Map<string, Pool>();
  private fips = new Map<string, { fip: FloatingIp; revision: number }>();
  private statuses = new Map<string, FipStatus>();
  private alive = new Set<string>();
  private meshPolicy?: MeshPolicyRecord;
  private meshConfirm?: MeshConfirmation;
  private rejected = new Map<string, string>();
  private unusable = new Map<string, UnusableFip>();
  /** Overlay address → the node its lock names (keys.overlay). */
  private locks = new Map<string, string>();
  /** What the last snapshot handed out, per kind; dropped when that kind changes. */
  private views: {
    nodes?: readonly NodeRecord[];
    pools?: readonly Pool[];
    fips?: Snapshot['fips'];
    statuses?: ReadonlyMap<string, FipStatus>;
    alive?: ReadonlySet<string>;
  } = {};

  /** The state of a whole list (`ipferry plan` reads the store afresh). */
  static of(kvs: readonly KeyValue[], revision: number): Snapshot {
    const state = new DesiredState();
    state.reset(kvs);
    return state.snapshot(revision);
  }

  reset(kvs: readonly KeyValue[]): void {
    // Decoded into a new state first: a record that does not parse leaves this one as it was.
    const next = new DesiredState();
    for (const kv of kvs) next.put(kv);
    this.nodes = next.nodes;
    this.pools = next.pools;
    this.fips = next.fips;
    this.statuses = next.statuses;
    this.alive = next.alive;
    this.meshPolicy = next.meshPolicy;
    this.meshConfirm = next.meshConfirm;
    this.rejected = next.rejected;
    this.locks = next.locks;
    this.unusable = next.unusable;
    this.views = {};
  }

  apply(events: readonly WatchEvent[]): void {
    for (const e of events) {
      if (e.type === 'put') this.put(e.kv);
      else this.delete(e.kv.key);
    }
  }

  snapshot(revision: number): Snapshot {
    const v = this.views;
    v.nodes ??= this.lockedOverlays(byKey(this.nodes));
    v.pools ??= byKey(this.pools);
    v.fips ??= byKey(this.fips);
    v.statuses ??= new Map(this.statuses);
    v.alive ??= new Set(this.alive);
    return {
      revision,
      nodes: v.nodes,
      pools: v.pools,
      fips: v.fips,
      statuses: v.statuses,
      alive: v.alive,
      rejected: new Map([...this.rejected, ...this.overlayRejections]),
      unusableFips: [...this.unusable.values()],
      ...(this.meshPolicy ? { meshPolicy: this.meshPolicy } : {}),
      ...(this.meshConfirm ? { meshConfirm: this.meshConfirm } : {}),
    };
  }

  /** Node records whose overlay address was not theirs to use, by key, with the reason. */
  private overlayRejections = new Map<string, string>();

  /**
   * Each overlay address counts for one node only: the one its lock names, or, with no lock,
   * the one node that claims it. Another node's claim (a node that lied, or a record written
   * around the hub) loses its overlay address here, so no kernel maps that address to it.
   */
  private lockedOverlays(nodes: NodeRecord[]): NodeRecord[] {
    const claimants = new Map<string, number>();
    for (const n of nodes) {
      if (n.overlayIp) claimants.set(n.overlayIp, (claimants.get(n.overlayIp) ?? 0) + 1);
    }
    this.overlayRejections = new Map();
    return nodes.map((n) => {
      if (!n.overlayIp) return n;
      const holder = this.locks.get(n.overlayIp);
      const ok = holder === undefined ? claimants.get(n.overlayIp) === 1 : holder === n.name;
      if (ok) return n;
      this.overlayRejections.set(
        keys.node(n.name),
        `overlayIp ${n.overlayIp} is ${holder ? `locked by node ${holder}` : 'claimed by more than one node and locked by none'}; the node is left out of the mesh`,
      );
      const { overlayIp: _dropped, ...rest } = n;
      return rest;
    });
  }

  private changed(kind: Kind): void {
    this.views[kind] = undefined;
  }

  /**
   * Takes in one record. One that does not decode (not JSON, or not the shape its kind must
   * have) is skipped with the reason, and whatever the key held before goes with it: the agent
   * converges everything else, and never compiles what the API would have refused.
   */
  private put(kv: KeyValue): void {
    try {
      this.take(kv);
      this.rejected.delete(kv.key);
      this.unusable.delete(kv.key);
    } catch (e) {
      if (!(e instanceof IpferryError)) throw e;
      this.delete(kv.key);
      const reason = rejection(e);
      this.rejected.set(kv.key, reason);
      const unusable = kv.key.startsWith(keys.fips) ? unusableFip(kv, reason) : undefined;
      if (unusable) this.unusable.set(kv.key, unusable);
    }
  }

  private take(kv: KeyValue): void {
    const k = kv.key;
    const json = (): unknown => parseStored<unknown>(k, kv.value);
    if (k === keys.meshPolicy) this.meshPolicy = decodeMeshPolicyRecord(json());
    else if (k === keys.meshConfirm) this.meshConfirm = decodeMeshConfirmation(json());
    else if (k.startsWith(keys.overlays)) {
      const holder = (json() as { name?: unknown } | null)?.name;
      if (typeof holder !== 'string') throw invalidRecord('name', 'must be a node name');
      this.locks.set(k.slice(keys.overlays.length), holder);
      this.changed('nodes');
    } else if (k.startsWith(keys.alive)) {
      // Membership only: a rewrite of a live node's key changes nothing here.
      const name = k.slice(keys.alive.length);
      if (!this.alive.has(name)) {
        this.alive.add(name);
        this.changed('alive');
      }
    } else if (k.startsWith(keys.nodes)) {
      this.nodes.set(k, underOwnKey(k, decodeNodeRecord(json()), 'name', keys.node));
      this.changed('nodes');
    } else if (k.startsWith(keys.pools)) {
      this.pools.set(k, underOwnKey(k, decodePool(json()), 'name', keys.pool));
      this.changed('pools');
    } else if (k.startsWith(keys.fips)) {
      const fip = underOwnKey(k, decodeFloatingIp(json()), 'address', keys.fip);
      this.fips.set(k, { fip, revision: kv.modRevision });
      this.changed('fips');
    } else if (k.startsWith(keys.statuses)) {
      const status = underOwnKey(k, decodeFipStatus(json()), 'address', keys.status);
      this.statuses.set(status.address, status);
      this.changed('statuses');
    }
  }

  private delete(k: string): void {
    if (k === keys.meshPolicy) this.meshPolicy = undefined;
    else if (k === keys.meshConfirm) this.meshConfirm = undefined;
    else if (k.startsWith(keys.overlays)) {
      if (this.locks.delete(k.slice(keys.overlays.length))) this.changed('nodes');
    } else if (k.startsWith(keys.alive)) {
      if (this.alive.delete(k.slice(keys.alive.length))) this.changed('alive');
    } else if (k.startsWith(keys.nodes)) {
      if (this.nodes.delete(k)) this.changed('nodes');
    } else if (k.startsWith(keys.pools)) {
      if (this.pools.delete(k)) this.changed('pools');
    } else if (k.startsWith(keys.fips)) {
      this.unusable.delete(k);
      if (this.fips.delete(k)) this.changed('fips');
    } else if (k.startsWith(keys.statuses)) {
      // Keyed by the status's address, which is the key's last part (keys.status).
      if (this.statuses.delete(k.slice(keys.statuses.length))) this.changed('statuses');
    }
  }
}

/** Why a record was skipped, in one line: the error and each problem with its field. */
function rejection(e: IpferryError): string {
  const problems = e.problems?.map((p) => (p.path ? `${p.path} ${p.message}` : p.message));
  return problems && problems.length > 0 ? problems.join('; ') : e.message;
}

/**
 * A record that names what its key names. The store's permissions and the API's uniqueness go
 * by the key (a node may write only `nodes/<itself>`, one FIP record per address), so one stored
 * under another's key would stand in for a record it is not: a second record for one FIP, pool
 * or node, or a status for a FIP the writer does not serve.
 */
function underOwnKey<R, F extends keyof R & string>(
  k: string,
  record: R,
  field: F,
  keyOf: (id: string) => string,
): R {
  const id = String(record[field]);
  if (keyOf(id) !== k) throw invalidRecord(field, `${id} does not match the record's key ${k}`);
  return record;
}

function invalidRecord(path: string, message: string): IpferryError {
  return validationError([{ path, message }]);
}

/** The mesh policy record, its policy (and a trial's previous one) checked as the API checks it. */
function decodeMeshPolicyRecord(value: unknown): MeshPolicyRecord {
  const r = (typeof value === 'object' && value !== null ? value : {}) as Record<string, unknown>;
  const p = new Problems();
  // Held to the address space only: a size an older version allowed stays usable.
  const policy = validateMeshPolicy(r.policy, p, { stored: true });
  if (r.trial !== undefined) {
    const t = (typeof r.trial === 'object' && r.trial !== null ? r.trial : {}) as Record<
      string,
      unknown
    >;
    if (t.previous !== null) validateMeshPolicy(t.previous, p, { stored: true });
    if (typeof t.deadline !== 'string' || Number.isNaN(Date.parse(t.deadline))) {
      p.add('trial.deadline', 'must be a time');
    }
  }
  if (typeof r.updatedAt !== 'string') p.add('updatedAt', 'must be a time');
  p.done();
  return { ...(r as unknown as MeshPolicyRecord), policy };
}

function decodeMeshConfirmation(value: unknown): MeshConfirmation {
  const r = (typeof value === 'object' && value !== null ? value : {}) as Record<string, unknown>;
  if (!Number.isInteger(r.revision)) throw invalidRecord('revision', 'must be a whole number');
  return r as unknown as MeshConfirmation;
}

/** What can be told of a FIP record that does not decode; undefined when its key is no address. */
function unusableFip(kv: KeyValue, reason: string): UnusableFip | undefined {
  const address = kv.key.slice(keys.fips.length);
  if (tryParseAddress(address)?.text !== address) return undefined;
  let pool: unknown;
  try {
    pool = (JSON.parse(kv.value) as { pool?: unknown } | null)?.pool;
  } catch {
    pool = undefined;
  }
  return {
    address,
    revision: kv.modRevision,
    ...(typeof pool === 'string' ? { pool } : {}),
    reason,
  };
}
