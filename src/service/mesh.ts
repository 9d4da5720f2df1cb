/**
 * The fleet mesh's side of the control plane: the policy (with its optional trial and
 * deadline), confirmations, overlay addresses, removing a node for good, and the audit. Each
 * operation is one optimistic transaction on the store, like the rest of the control plane;
 * the decisions are in src/core/mesh.ts.
 */
import { IpferryError } from '../core/errors.js';
import { keys } from '../core/keys.js';
import { stringifyStored } from '../core/json.js';
import {
  auditMesh,
  chooseOverlayAddress,
  inOverlay,
  type MeshAudit,
  type MeshConfirmation,
  type MeshPolicy,
  type MeshPolicyRecord,
  type MeshRollback,
  parseInventory,
  policyInForce,
  standingRollback,
  validateMeshPolicy,
} from '../core/mesh.js';
import { type MeshHold } from '../core/model.js';
import type { FloatingIp, NodeHealth, NodeLiveness, NodeRecord, Pool } from '../core/model.js';
import { Problems } from '../core/validate.js';
import type { Compare, Op, Store } from '../store/store.js';
import { absent, getRecord, listRecords, optimistic, RETRY, unchanged } from './records.js';

/** What `GET /v1/mesh` shows: the record, whether its trial ran out, and the latest confirmation. */
export interface MeshView {
  readonly record?: MeshPolicyRecord;
  /** The policy in force now (the previous one when a trial ran out unconfirmed). */
  readonly inForce?: MeshPolicy;
  /** The last change was a trial that ran out unconfirmed: from its deadline until a policy is set. */
  readonly rolledBack: boolean;
  /** That change, while rolledBack: when its deadline passed, when it was set, what it set. */
  readonly rollback?: MeshRollback;
  readonly confirmation?: MeshConfirmation;
  /** The store revision of the policy record (0 without one). */
  readonly revision: number;
}

/** What `POST /v1/mesh/confirm` did. */
export interface MeshConfirmResult {
  /** True when a running trial was confirmed; false when there was none, or with holdsOnly. */
  readonly confirmedTrial: boolean;
  /** With holdsOnly: the deadline of the trial that goes on running, unconfirmed. */
  readonly trialDeadline?: string;
  readonly confirmation: MeshConfirmation;
  /**
   * The holds the confirmation releases, as the live nodes last reported them (a hold that
   * began before the confirmation but was not reported yet is released too).
   */
  readonly released: readonly { readonly node: string; readonly hold: MeshHold }[];
}

interface OverlayLock {
  readonly name: string;
}

/** The longest a trial may run: a forgotten one should not linger for weeks. */
const MAX_TRIAL_SECONDS = 7 * 24 * 3600;

/**
 * Nodes given an overlay address per transaction by setPolicy: two compares and two puts each,
 * well under etcd's default limit of 128 operations per transaction.
 */
const OVERLAY_BATCH = 50;

/**
 * A node's liveness as readers show it: its membership record (`alive/NODE`) with its health
 * report (keys.nodeHealth) merged in. Undefined when the node is not alive. An agent of an
 * older version has no health record and keeps its health in the membership record instead.
 */
export function withHealth(
  alive: NodeLiveness | undefined,
  health: NodeHealth | undefined,
): NodeLiveness | undefined {
  if (!alive) return undefined;
  if (!health) return alive;
  const { tunnel: _tunnel, mesh: _mesh, ...membership } = alive;
  return {
    ...membership,
    ...(health.tunnel ? { tunnel: health.tunnel } : {}),
    ...(health.mesh ? { mesh: health.mesh } : {}),
  };
}

/** Every live node's liveness with its health, by name. */
export function livenessByNode(
  alive: readonly NodeLiveness[],
  health: readonly NodeHealth[],
): Map<string, NodeLiveness> {
  const healthOf = new Map(health.map((h) => [h.name, h]));
  const out = new Map<string, NodeLiveness>();
  for (const a of alive) {
    const merged = withHealth(a, healthOf.get(a.name));
    if (merged) out.set(a.name, merged);
  }
  return out;
}

export class MeshControl {
  constructor(
    private readonly store: Store,
    private readonly now: () => Date,
  ) {}

  async view(): Promise<MeshView> {
    const [record, confirm, remembered] = await Promise.all([
      getRecord<MeshPolicyRecord>(this.store, keys.meshPolicy),
      getRecord<MeshConfirmation>(this.store, keys.meshConfirm),
      getRecord<MeshRollback>(this.store, keys.meshRollback),
    ]);
    // The policy's own revision: stable while it does not change (the store's moves on with
    // every status and liveness write).
    const revision = record?.kv.modRevision ?? 0;
    const now = this.now();
    const { policy } = policyInForce(record?.value, now);
    const rollback = standingRollback(record?.value, remembered?.value, now);
    return {
      ...(record ? { record: record.value } : {}),
      ...(policy ? { inForce: policy } : {}),
      rolledBack: rollback !== undefined,
      ...(rollback ? { rollback } : {}),
      ...(confirm ? { confirmation: confirm.value } : {}),
      revision,
    };
  }

  /**
   * Sets the policy. With `confirmWithinSeconds`, the change is a trial: unless `confirm()` is
   * called in time, every node goes back to the policy before it (the last confirmed one, also
   * when trials follow one another). Then gives every registered node its overlay address.
   */
  async setPolicy(
    input: unknown,
    options: { confirmWithinSeconds?: number } = {},
  ): Promise<MeshPolicyRecord> {
    const within = options.confirmWithinSeconds;
    // The trial's length is checked with the policy: every problem of the request in one error.
    const problems = new Problems();
    if (
      within !== undefined &&
      (!Number.isInteger(within) || within < 1 || within > MAX_TRIAL_SECONDS)
    ) {
      problems.add(
        'confirmWithinSeconds',
        `must be a whole number of seconds from 1 to ${MAX_TRIAL_SECONDS}`,
      );
    }
    // An overlay already in force keeps working at the size an older version allowed: refusing
    // it would force every node onto new overlay addresses for an unrelated change.
    const stored = await getRecord<MeshPolicyRecord>(this.store, keys.meshPolicy);
    const inForceOverlay = policyInForce(stored?.value, this.now()).policy?.overlay;
    const overlay = (input as { overlay?: unknown } | null)?.overlay;
    const policy = validateMeshPolicy(input, problems, {
      stored: inForceOverlay !== undefined && overlay === inForceOverlay,
    });
    const record = await optimistic('set mesh policy', async () => {
      const old = await getRecord<MeshPolicyRecord>(this.store, keys.meshPolicy);
      const now = this.now();
      const { policy: inForce } = policyInForce(old?.value, now);
      // A trial still running keeps its own "previous" (the last confirmed policy).
      const previous =
        old?.value.trial && now < new Date(old.value.trial.deadline)
          ? old.value.trial.previous
          : (inForce ?? null);
      const next: MeshPolicyRecord = {
        policy,
        ...(within !== undefined
          ? {
              trial: {
                previous,
                deadline: new Date(now.getTime() + within * 1000).toISOString(),
              },
            }
          : {}),
        updatedAt: now.toISOString(),
      };
      const r = await this.store.txn({
        compare: [unchanged(keys.meshPolicy, old)],
        success: [
          { type: 'put', key: keys.meshPolicy, value: stringifyStored(next) },
          // A new policy ends the story of the last rollback (the key is written only with the
          // policy, so the compare above covers it).
          { type: 'delete', key: keys.meshRollback },
        ],
      });
      return r.succeeded ? next : RETRY;
    });
    await this.ensureOverlays();
    return record;
  }

  /**
   * Gives every registered node without one an overlay address: the node records and the
   * locks are read once, the addresses chosen as ensureOverlay would, and written in batches of
   * OVERLAY_BATCH nodes per transaction with the same compares. A batch that loses a race (a
   * node re-registered, another writer took an address) is done node by node by ensureOverlay.
   */
  private async ensureOverlays(): Promise<void> {
    const [policyRec, nodes, locks] = await Promise.all([
      getRecord<MeshPolicyRecord>(this.store, keys.meshPolicy),
      listRecords<NodeRecord>(this.store, keys.nodes),
      listRecords<OverlayLock>(this.store, keys.overlays),
    ]);
    const { policy } = policyInForce(policyRec?.value, this.now());
    if (!policy) return;
    const missing = nodes.items.filter(
      (n) => !n.value.overlayIp || !inOverlay(policy.overlay, n.value.overlayIp),
    );
    if (missing.length === 0) return;
    const claimed = new Set(
      nodes.items.flatMap((n) =>
        n.value.overlayIp && inOverlay(policy.overlay, n.value.overlayIp)
          ? [n.value.overlayIp]
          : [],
      ),
    );
    const lockOf = new Map(locks.items.map((l) => [l.kv.key, l]));
    const failed: string[] = [];
    for (let i = 0; i < missing.length; i += OVERLAY_BATCH) {
      const compare: Compare[] = [];
      const success: Op[] = [];
      const batch: string[] = [];
      for (const n of missing.slice(i, i + OVERLAY_BATCH)) {
        const address = chooseOverlayAddress(policy.overlay, n.value.name, claimed);
        if (!address) {
          failed.push(n.value.name); // ensureOverlay reports the exhausted overlay
          continue;
        }
        claimed.add(address);
        batch.push(n.value.name);
        const lock = lockOf.get(keys.overlay(address));
        compare.push(
          unchanged(keys.node(n.value.name), n),
          lock ? unchanged(keys.overlay(address), lock) : absent(keys.overlay(address)),
        );
        success.push(
          {
            type: 'put',
            key: keys.node(n.value.name),
            value: stringifyStored({ ...n.value, overlayIp: address }),
          },
          {
            type: 'put',
            key: keys.overlay(address),
            value: stringifyStored({ name: n.value.name }),
          },
        );
      }
      if (batch.length === 0) continue;
      const r = await this.store.txn({ compare, success });
      if (!r.succeeded) failed.push(...batch);
    }
    for (const name of failed) await this.ensureOverlay(name);
  }

  /**
   * Confirms: ends a running trial (its policy stays) and releases membership changes the
   * agents hold back (maxChange). After a trial ran out it is refused (IPF_E_MESH_NO_TRIAL), and
   * the rollback is written if no agent did yet: confirming then would surprise the nodes that
   * went back. That lasts until the next policy is set; `holdsOnly` releases holds whatever the
   * trial's state, and leaves a running trial running.
   */
  async confirm(options: { holdsOnly?: boolean } = {}): Promise<MeshConfirmResult> {
    const trial = await optimistic<{ confirmed: boolean; deadline?: string }>(
      'confirm mesh',
      async () => {
        const [old, remembered] = await Promise.all([
          getRecord<MeshPolicyRecord>(this.store, keys.meshPolicy),
          getRecord<MeshRollback>(this.store, keys.meshRollback),
        ]);
        const now = this.now();
        const rollback = standingRollback(old?.value, remembered?.value, now);
        if (options.holdsOnly) {
          const deadline = rollback ? undefined : old?.value.trial?.deadline;
          return { confirmed: false, ...(deadline ? { deadline } : {}) };
        }
        if (rollback) {
          await this.rollBack();
          throw new IpferryError('IPF_E_MESH_NO_TRIAL', {
            changedAt: rollback.changedAt,
            deadline: rollback.at,
          });
        }
        if (!old?.value.trial) return { confirmed: false };
        const next: MeshPolicyRecord = { policy: old.value.policy, updatedAt: now.toISOString() };
        const r = await this.store.txn({
          compare: [unchanged(keys.meshPolicy, old)],
          success: [{ type: 'put', key: keys.meshPolicy, value: stringifyStored(next) }],
        });
        return r.succeeded ? { confirmed: true } : RETRY;
      },
    );
    const { revision } = await this.store.list(keys.meshConfirm);
    const confirmation: MeshConfirmation = { revision, at: this.now().toISOString() };
    await this.store.txn({
      compare: [],
      success: [{ type: 'put', key: keys.meshConfirm, value: stringifyStored(confirmation) }],
    });
    return {
      confirmedTrial: trial.confirmed,
      ...(trial.deadline ? { trialDeadline: trial.deadline } : {}),
      confirmation,
      released: await this.holdsUpTo(revision),
    };
  }

  /** The holds live nodes report that began at or before `revision` (a confirmation's). */
  private async holdsUpTo(
    revision: number,
  ): Promise<{ readonly node: string; readonly hold: MeshHold }[]> {
    const [alive, health] = await Promise.all([
      listRecords<NodeLiveness>(this.store, keys.alive),
      listRecords<NodeHealth>(this.store, keys.health),
    ]);
    const live = livenessByNode(
      alive.items.map((a) => a.value),
      health.items.map((h) => h.value),
    );
    return [...live.values()].flatMap((l) =>
      l.mesh?.hold && l.mesh.hold.sinceRevision <= revision
        ? [{ node: l.name, hold: l.mesh.hold }]
        : [],
    );
  }

  /**
   * Writes a trial that ran out back as its previous policy (or removes the policy when there
   * was none), and remembers the change that rolled back (keys.meshRollback) until the next
   * policy is set. Agents roll back by themselves at the deadline; this only makes the store
   * say so. Any number of callers may race: one wins, the others find nothing to do.
   */
  async rollBack(): Promise<boolean> {
    return optimistic('roll back mesh policy', async () => {
      const old = await getRecord<MeshPolicyRecord>(this.store, keys.meshPolicy);
      const now = this.now();
      const rollback = standingRollback(old?.value, undefined, now);
      if (!old?.value.trial || !rollback) return false;
      const previous = old.value.trial.previous;
      const op: Op = previous
        ? {
            type: 'put',
            key: keys.meshPolicy,
            value: stringifyStored({ policy: previous, updatedAt: now.toISOString() }),
          }
        : { type: 'delete', key: keys.meshPolicy };
      const r = await this.store.txn({
        compare: [unchanged(keys.meshPolicy, old)],
        success: [op, { type: 'put', key: keys.meshRollback, value: stringifyStored(rollback) }],
      });
      return r.succeeded ? true : RETRY;
    });
  }

  /**
   * Gives `node` an overlay address when the mesh has a policy and the node has none in its
   * overlay: a free address (the node records' own claims decide what is free), locked by
   * keys.overlay(address) in the same transaction as the node record, so two nodes never get
   * one address. Sticky: a node keeps its address through restarts and re-registrations.
   */
  async ensureOverlay(node: string): Promise<string | undefined> {
    return optimistic('allocate overlay address', async () => {
      const [policyRec, self] = await Promise.all([
        getRecord<MeshPolicyRecord>(this.store, keys.meshPolicy),
        getRecord<NodeRecord>(this.store, keys.node(node)),
      ]);
      const { policy } = policyInForce(policyRec?.value, this.now());
      if (!policy || !self) return undefined;
      if (self.value.overlayIp && inOverlay(policy.overlay, self.value.overlayIp))
        return self.value.overlayIp;
      const [nodes, locks] = await Promise.all([
        listRecords<NodeRecord>(this.store, keys.nodes),
        listRecords<OverlayLock>(this.store, keys.overlays),
      ]);
      const claimed = new Set(
        nodes.items.flatMap((n) => (n.value.overlayIp ? [n.value.overlayIp] : [])),
      );
      const address = chooseOverlayAddress(policy.overlay, node, claimed);
      if (!address)
        throw new IpferryError('IPF_E_OVERLAY_EXHAUSTED', { overlay: policy.overlay, node });
      // A lock left by a node that no longer claims its address (removed, or moved to a new
      // overlay) may be taken over, but only as it was read.
      const lock = locks.items.find((l) => l.kv.key === keys.overlay(address));
      const compare: Compare[] = [
        unchanged(keys.node(node), self),
        lock ? unchanged(keys.overlay(address), lock) : absent(keys.overlay(address)),
      ];
      const next: NodeRecord = { ...self.value, overlayIp: address };
      const r = await this.store.txn({
        compare,
        success: [
          { type: 'put', key: keys.node(node), value: stringifyStored(next) },
          { type: 'put', key: keys.overlay(address), value: stringifyStored({ name: node }) },
        ],
      });
      return r.succeeded ? address : RETRY;
    });
  }

  /**
   * Removes a node for good: its record, liveness, hub credential and overlay address (which
   * becomes free).
   * Refused while a pool names it as gateway or a FIP is associated with it.
   */
  async removeNode(name: string): Promise<{ name: string; removed: true; overlayIp?: string }> {
    return optimistic('remove node', async () => {
      const self = await getRecord<NodeRecord>(this.store, keys.node(name));
      if (!self) throw new IpferryError('IPF_E_NODE_NOT_FOUND', { node: name });
      const [pools, fips] = await Promise.all([
        listRecords<Pool>(this.store, keys.pools),
        listRecords<FloatingIp>(this.store, keys.fips),
      ]);
      const uses = [
        ...pools.items.filter((p) => p.value.gateway === name).map((p) => `pool ${p.value.name}`),
        ...fips.items
          .filter(
            (f) =>
              f.value.association?.node === name || f.value.forwards.some((fw) => fw.node === name),
          )
          .map((f) => `floating IP ${f.value.address}`),
      ];
      if (uses.length > 0) {
        throw new IpferryError('IPF_E_NODE_IN_USE', { node: name, uses: uses.join(', ') });
      }
      const overlayIp = self.value.overlayIp;
      const r = await this.store.txn({
        compare: [unchanged(keys.node(name), self)],
        success: [
          { type: 'delete', key: keys.node(name) },
          { type: 'delete', key: keys.nodeAlive(name) },
          { type: 'delete', key: keys.nodeHealth(name) },
          // A joined node's credential goes too: its agent, if still running, cannot register
          // it again (it would come back with a new overlay address).
          { type: 'delete', key: keys.nodeCredential(name) },
          ...(overlayIp ? [{ type: 'delete' as const, key: keys.overlay(overlayIp) }] : []),
        ],
      });
      return r.succeeded
        ? { name, removed: true as const, ...(overlayIp ? { overlayIp } : {}) }
        : RETRY;
    });
  }

  /**
   * The audit: against an inventory when given (its text, parsed strictly), the hosts that are
   * not registered, nodes behind the mesh's latest change, reject_all per node, overlay usage.
   */
  async audit(inventoryText?: string, source = 'inventory'): Promise<MeshAudit> {
    const inventory =
      inventoryText === undefined ? undefined : parseInventory(inventoryText, source);
    const [policy, nodes, alive, health] = await Promise.all([
      getRecord<MeshPolicyRecord>(this.store, keys.meshPolicy),
      listRecords<NodeRecord>(this.store, keys.nodes),
      listRecords<NodeLiveness>(this.store, keys.alive),
      listRecords<NodeHealth>(this.store, keys.health),
    ]);
    const livenessOf = livenessByNode(
      alive.items.map((a) => a.value),
      health.items.map((h) => h.value),
    );
    // The latest change a mesh member must have applied: the policy, a node record, a member
    // coming alive. (Only an alive key's creation changes membership: an agent of an older
    // version still rewrites it on every beat.)
    const revision = Math.max(
      policy?.kv.modRevision ?? 0,
      ...nodes.items.map((n) => n.kv.modRevision),
      ...alive.items.map((a) => a.kv.createRevision),
    );
    // A dead node's health record is its agent's last word: what it applied before it died.
    const lastReportOf = new Map(health.items.map((h) => [h.value.name, h.value.mesh]));
    return auditMesh({
      revision,
      ...(policy ? { record: policy.value } : {}),
      nodes: nodes.items.map((n) => {
        const liveness = livenessOf.get(n.value.name);
        const lastReport = lastReportOf.get(n.value.name);
        return {
          record: n.value,
          ...(liveness ? { liveness } : {}),
          ...(lastReport ? { lastReport } : {}),
        };
      }),
      ...(inventory ? { inventory } : {}),
      now: this.now(),
    });
  }
}
