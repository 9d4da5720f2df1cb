/**
 * The reconcile loop, level-triggered: store events only mark it dirty; one pass reads a
 * consistent snapshot, compiles this node's intent, diffs it against what the dataplane holds
 * and applies only the difference. The snapshot is read from memory: the desired state under
 * ROOT is listed once and then kept current by the store's watch (PrefixCache, DesiredState),
 * listed again only when the watch cannot go on (compacted, lost). Its revision is the
 * revision the pass realised, and what status reports are fenced on. It never flushes: on
 * start it reads the kernel and changes what differs, so traffic keeps flowing through an
 * agent restart. A periodic pass repairs
 * drift (an element deleted by hand). When a whole diff is refused, each FIP's part is retried
 * alone, so one bad association is ERROR with the kernel's reason while the others go ACTIVE.
 */
import type { PassReport } from '../core/applied.js';
import { ROOT, keys } from '../core/keys.js';
import { diffFor, diffIntent, diffOwners, type IntentDiff, isEmptyDiff } from '../intent/diff.js';
import { compile, type HostIntent } from '../core/compile/index.js';
import { type IntentElement } from '../intent/elements.js';
import type { FipState, FipStatus } from '../core/model.js';
import type { TunnelOptions } from '../core/compile/tunnel-path.js';
import type { Dataplane } from '../dataplane/dataplane.js';
import type { ControlPlane } from '../service/control.js';
import { PrefixCache } from '../store/cache.js';
import type { Store, WatchEvent } from '../store/store.js';
import { DesiredState, type Snapshot } from './desired.js';
import type { PathView } from './path-monitor.js';
import { endpointHosts } from '../core/compile/tunnel-path.js';
import { remoteNodesOf } from '../core/compile/tunnels.js';
import { type MeshNodeReport } from '../core/model.js';
import type { PlanResponse, SkippedRecord } from '../service/views.js';
import { appliedSummary, type Logger } from './log.js';
import { MeshGuard } from './mesh-guard.js';
import type { AgentMetrics, RevisionView } from './metrics.js';

export interface ReconcilerOptions {
  readonly node: string;
  readonly store: Store;
  readonly control: ControlPlane;
  readonly dataplane: Dataplane;
  readonly resyncMs: number;
  readonly log: Logger;
  readonly tunnel?: TunnelOptions;
  /** Active probes through the tunnel: lowered MTUs for compile, dead paths for the states. */
  readonly paths?: PathView;
  /** Peers behind a tunnel found lost and not answering since (src/agent/tunnelwatch.ts). */
  readonly tunnelWatch?: { deadPeers(): ReadonlySet<string> };
  /** The clock a mesh trial's deadline is judged by (tests). */
  readonly now?: () => Date;
  /** Ports the mesh firewall never closes on this node (its tunnel, a reachable API). */
  readonly alwaysOpen?: readonly string[];
  /**
   * Whether this agent writes a mesh trial's rollback to the store (default true). A remote
   * agent's node credential may not write the policy: its hub's agent does.
   */
  readonly writesMeshRollback?: boolean;
  /** Where pass and apply durations, errors and watch restarts are recorded (/metrics). */
  readonly metrics?: ReconcileMetrics;
  /** Called after every pass, so the health report tells waiting writes at once (lastPass). */
  readonly onPass?: () => void;
}

export type ReconcileMetrics = Pick<
  AgentMetrics,
  | 'passDuration'
  | 'applyDuration'
  | 'passFailures'
  | 'applyErrors'
  | 'appliedElements'
  | 'watchRestarts'
>;

export interface PassResult {
  readonly revision: number;
  readonly applied: number;
  readonly errors: ReadonlyMap<string, string>;
}

/** Changes under these prefixes are the agent's own reports: they must not wake it up. */
const SELF_WRITTEN = [keys.statuses];

/**
 * A liveness record is written once per lease (health goes elsewhere, keys.nodeHealth): its
 * creation (a node coming alive) or deletion (its lease gone) changes the mesh's membership. A
 * rewrite (an older agent still refreshing it) changes nothing.
 */
function wakes(e: WatchEvent): boolean {
  if (SELF_WRITTEN.some((p) => e.kv.key.startsWith(p))) return false;
  if (e.kv.key.startsWith(keys.alive)) return e.type === 'delete' || e.kv.version === 1;
  return true;
}
const MAX_BACKOFF_MS = 5000;

export class Reconciler {
  lastApply?: string;
  lastError?: string;
  realisedRevision?: number;
  /** The latest pass's revision and what the dataplane refused in it: writes wait on it. */
  lastPass?: PassReport;
  /** The desired state under ROOT, and the watch that keeps it current. */
  private readonly desired = new DesiredState();
  private readonly cache: PrefixCache;
  private timer?: NodeJS.Timeout;
  private running?: Promise<void>;
  private dirty = false;
  /** Kernel state as last read or as left by this agent's own successful apply. */
  private known?: readonly IntentElement[];
  private readDue = true;
  /** The mesh's holds, settling departures, trial deadlines and overlay address requests. */
  private readonly mesh: MeshGuard;
  private unwatchAddresses?: () => void;
  /** The latest state read from the store: a trial's deadline may need it while it is gone. */
  private lastSnapshot?: Snapshot;
  private stopped = true;
  private failures = 0;
  /** The FIP statuses this agent wrote last, by address (see report()). */
  private readonly reported = new Map<string, FipStatus>();
  /** The latest revision with a change that wakes this agent (see wakes()). */
  private wantedRevision = 0;

  constructor(private readonly o: ReconcilerOptions) {
    this.mesh = new MeshGuard({
      node: o.node,
      control: o.control.mesh,
      log: o.log,
      wake: () => this.kick(),
      ...(o.writesMeshRollback !== undefined ? { writesRollback: o.writesMeshRollback } : {}),
      ...(o.now ? { now: o.now } : {}),
    });
    this.cache = new PrefixCache(o.store, ROOT, this.desired, {
      onEvents: (events, at) => {
        if (!events.some(wakes)) return;
        this.wantedRevision = Math.max(this.wantedRevision, at);
        this.kick();
      },
      onLost: (error) => {
        this.o.metrics?.watchRestarts.inc();
        // Compacted or lost: the next pass lists everything again and follows on from there.
        this.o.log.warn({ err: error.message }, 'watch ended; resyncing');
        setTimeout(() => this.kick(), 200).unref();
      },
    });
  }

  async start(): Promise<void> {
    this.stopped = false;
    await this.passOrBackoff();
    this.unwatchAddresses = this.o.dataplane.watchAddresses?.(() => this.kick());
    this.timer = setInterval(() => {
      this.readDue = true;
      this.kick();
    }, this.o.resyncMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.cache.close();
    if (this.timer) clearInterval(this.timer);
    this.mesh.stop();
    this.unwatchAddresses?.();
    await this.running;
  }

  /** Marks the state dirty; a pass runs now or right after the current one. */
  kick(): void {
    if (this.stopped) return;
    this.dirty = true;
    this.running ??= this.drain().finally(() => {
      this.running = undefined;
    });
  }

  /** Waits until no pass is running or pending (for tests and the demo). */
  async settled(): Promise<void> {
    while (this.running) await this.running;
  }

  /**
   * A pass that reads the kernel again before it diffs, as the periodic resync does; resolves
   * once no pass is pending. The tunnel watch asks for it: a tunnel device that was lost or
   * made anew took the routes through it along, which the last apply's state still lists.
   */
  async resync(): Promise<void> {
    this.readDue = true;
    this.kick();
    await this.settled();
  }

  /** What a pass would change in the kernel now, without changing anything (`ipferry plan`). */
  async plan(): Promise<PlanResponse> {
    const { snapshot, intent, diff } = await this.compare(true);
    return {
      node: this.o.node,
      dataplane: this.o.dataplane.kind,
      revision: snapshot.revision,
      ...diff,
      refused: intent.refused,
      skipped: skippedOf(snapshot.rejected),
    };
  }

  /**
   * Compiles the intent and diffs it against the kernel. Reading a large table back costs
   * more than changing one element, so between resyncs the kernel state is taken to be what
   * the last successful apply left; a resync, an error or a refused apply reads it again
   * (which is also how drift made by hand is found). `fresh` (a plan) lists the store itself
   * and changes nothing the passes keep.
   */
  private async compare(fresh = false): Promise<{
    snapshot: Snapshot;
    intent: HostIntent;
    /** What the kernel holds once the diff is applied (sorted). */
    wanted: readonly IntentElement[];
    diff: IntentDiff;
  }> {
    const snapshot = fresh ? await this.listed() : await this.snapshot();
    if (!fresh) this.lastSnapshot = snapshot;
    const intent = await this.compileSnapshot(snapshot);
    // A tunnel comes first (routes, holds and its sysctls need the interface); one no longer
    // wanted goes last, after what used it (see pass()).
    if (!fresh && intent.tunnel) await this.o.dataplane.applyTunnel(intent.tunnel);
    let observed = fresh || this.readDue ? undefined : this.known;
    if (!observed) {
      observed = await this.o.dataplane.observe(intent.elements);
      if (!fresh) {
        this.known = observed;
        this.readDue = false;
      }
    }
    const wanted = this.mesh.wanted(intent, observed, snapshot);
    return { snapshot, intent, wanted, diff: diffIntent(wanted, observed) };
  }

  private async compileSnapshot(snapshot: Snapshot): Promise<HostIntent> {
    return compile(
      {
        ...snapshot,
        mesh: {
          ...(snapshot.meshPolicy ? { record: snapshot.meshPolicy } : {}),
          nodes: snapshot.nodes,
          alive: snapshot.alive,
          ...(this.o.alwaysOpen ? { alwaysOpen: this.o.alwaysOpen } : {}),
          now: this.o.now?.() ?? new Date(),
        },
      },
      this.o.node,
      await this.o.dataplane.facts(),
      await this.tunnelOptions(snapshot),
    );
  }

  /**
   * The tunnel options with what only this host knows: the MTUs its path probes found, the
   * peers still being measured, and (unless the operator set the underlay's MTU) the MTU of its
   * routes toward the peers' endpoints.
   */
  private async tunnelOptions(snapshot: Snapshot): Promise<TunnelOptions | undefined> {
    const tunnel = this.o.tunnel;
    if (!tunnel) return undefined;
    const endpointMtus =
      tunnel.underlayMtu === undefined && this.o.dataplane.routeMtus
        ? await this.o.dataplane.routeMtus(endpointHosts(snapshot.nodes, this.o.node))
        : undefined;
    return {
      ...tunnel,
      ...(this.o.paths
        ? { peerMtu: this.o.paths.peerMtu(), measured: this.o.paths.measured() }
        : {}),
      ...(endpointMtus && endpointMtus.size > 0 ? { endpointMtus } : {}),
    };
  }

  /**
   * The store is out of reach (the pass failed) while a mesh trial's deadline passed: go back
   * to the previous policy anyway, from the last state read. Everything else stays as it was
   * applied (fail-static); only the clock moved.
   */
  private async rollBackOffline(): Promise<void> {
    const snapshot = this.lastSnapshot;
    if (!snapshot || !this.mesh.mayRollBackOffline(snapshot)) return;
    const intent = await this.compileSnapshot(snapshot);
    if (!intent.mesh?.rolledBack) return;
    const observed = await this.o.dataplane.observe(intent.elements);
    const diff = diffIntent(this.mesh.wanted(intent, observed, snapshot), observed);
    if (!isEmptyDiff(diff)) await this.o.dataplane.apply(diff);
    this.mesh.rolledBackOffline(intent.mesh, snapshot);
  }

  /** What the liveness record says about this node's mesh. */
  meshReport(): MeshNodeReport | undefined {
    return this.mesh.report(this.realisedRevision);
  }

  /** The state this agent last reported for each FIP it realises. */
  fipStates(): ReadonlyMap<string, FipState> {
    return new Map([...this.reported].map(([address, s]) => [address, s.state]));
  }

  /** The store's revision as followed, the one realised, and the latest one meant for this node. */
  revisions(): RevisionView {
    return {
      store: this.cache.revision,
      ...(this.realisedRevision !== undefined ? { applied: this.realisedRevision } : {}),
      wanted: this.wantedRevision,
    };
  }

  /** Tunnel public key → node name, from the latest state read. */
  peerNodes(): ReadonlyMap<string, string> {
    const out = new Map<string, string>();
    for (const n of this.lastSnapshot?.nodes ?? []) if (n.publicKey) out.set(n.publicKey, n.name);
    return out;
  }

  /** One pass: snapshot, compile, diff, apply, report. */
  async pass(): Promise<PassResult> {
    const { snapshot, intent, wanted, diff } = await this.compare();
    const started = performance.now();
    const errors = isEmptyDiff(diff) ? new Map<string, string>() : await this.apply(diff);
    const applyMs = performance.now() - started;
    // Applied whole, the diff leaves the kernel holding exactly what was wanted.
    if (errors.size === 0) this.known = wanted;
    else this.readDue = true;
    if (!intent.tunnel) await this.o.dataplane.applyTunnel(undefined);
    this.o.paths?.track(intent.tunnel, intent.carriers);
    await this.report(intent, snapshot, errors);
    await this.mesh.afterPass(intent.mesh, snapshot);
    if (errors.size === 0) this.realisedRevision = snapshot.revision;
    this.lastPass = {
      revision: snapshot.revision,
      ...(errors.size > 0 ? { errors: [...errors].map(([what, why]) => `${what}: ${why}`) } : {}),
    };
    this.o.onPass?.();
    const applied = diff.add.length + diff.replace.length + diff.remove.length;
    if (applied > 0) {
      this.lastApply = new Date().toISOString();
      this.recordApply(diff, errors, applyMs);
      this.o.log.info(
        {
          revision: snapshot.revision,
          add: diff.add.length,
          replace: diff.replace.length,
          remove: diff.remove.length,
          errors: errors.size,
          ms: Math.round(applyMs),
        },
        appliedSummary(diff, new Map(snapshot.fips.map((f) => [f.fip.address, f.fip])), applyMs),
      );
    }
    return { revision: snapshot.revision, applied, errors };
  }

  private recordApply(diff: IntentDiff, errors: ReadonlyMap<string, string>, ms: number): void {
    const m = this.o.metrics;
    if (!m) return;
    m.applyDuration.observe(ms / 1000);
    m.applyErrors.inc(errors.size);
    m.appliedElements.inc({ change: 'add' }, diff.add.length);
    m.appliedElements.inc({ change: 'replace' }, diff.replace.length);
    m.appliedElements.inc({ change: 'remove' }, diff.remove.length);
  }

  private async drain(): Promise<void> {
    while (this.dirty && !this.stopped) {
      this.dirty = false;
      await this.passOrBackoff();
    }
  }

  private async passOrBackoff(): Promise<PassResult | undefined> {
    const timer = this.o.metrics?.passDuration.startTimer();
    try {
      const result = await this.pass();
      timer?.();
      this.failures = 0;
      this.lastError = result.errors.size > 0 ? [...result.errors.values()].join('; ') : undefined;
      return result;
    } catch (e) {
      timer?.();
      this.o.metrics?.passFailures.inc();
      this.failures++;
      this.readDue = true;
      this.lastError = (e as Error).message;
      this.o.log.error(
        { err: this.lastError, failures: this.failures },
        'reconcile pass failed; retrying',
      );
      const delay = Math.min(MAX_BACKOFF_MS, 100 * 2 ** (this.failures - 1));
      setTimeout(() => this.kick(), delay).unref();
      await this.rollBackOffline().catch((err: unknown) => {
        this.o.log.error({ err: (err as Error).message }, 'offline mesh rollback failed');
      });
      return undefined;
    }
  }

  /** The desired state as the cache holds it, listed first when it is not following. */
  private async snapshot(): Promise<Snapshot> {
    await this.cache.sync();
    const snapshot = this.desired.snapshot(this.cache.revision);
    this.reportRejected(snapshot.rejected);
    return snapshot;
  }

  /** Store records skipped since they do not decode, each said once (again when it changes). */
  private readonly rejectedSaid = new Map<string, string>();

  /** The store records the last pass left out, and why (`ipferry status`). */
  get skipped(): SkippedRecord[] {
    return skippedOf(this.rejectedSaid);
  }

  private reportRejected(rejected: ReadonlyMap<string, string>): void {
    for (const [key, reason] of rejected) {
      if (this.rejectedSaid.get(key) === reason) continue;
      this.rejectedSaid.set(key, reason);
      this.o.log.warn({ key, reason }, 'skipped a store record that does not decode');
    }
    for (const key of this.rejectedSaid.keys())
      if (!rejected.has(key)) this.rejectedSaid.delete(key);
  }

  /** The desired state listed from the store now. */
  private async listed(): Promise<Snapshot> {
    const { kvs, revision } = await this.o.store.list(ROOT);
    return DesiredState.of(kvs, revision);
  }

  private async apply(diff: IntentDiff): Promise<Map<string, string>> {
    const errors = new Map<string, string>();
    try {
      await this.o.dataplane.apply(diff);
      return errors;
    } catch (whole) {
      this.o.log.warn(
        { err: (whole as Error).message },
        'apply refused; isolating the failing floating IPs',
      );
    }
    for (const owner of diffOwners(diff)) {
      try {
        await this.o.dataplane.apply(diffFor(diff, owner));
      } catch (e) {
        errors.set(owner, (e as Error).message);
      }
    }
    return errors;
  }

  private async report(
    intent: HostIntent,
    snapshot: Snapshot,
    errors: ReadonlyMap<string, string>,
  ): Promise<void> {
    const byAddress = new Map(snapshot.fips.map((f) => [f.fip.address, f.fip]));
    const refused = new Map(intent.refused.map((r) => [r.address, r.reason]));
    const pending = new Map((intent.pending ?? []).map((r) => [r.address, r.reason]));
    const dead = new Set([
      ...(this.o.paths?.deadPeers() ?? []),
      ...(this.o.tunnelWatch?.deadPeers() ?? []),
    ]);
    const changed: FipStatus[] = [];
    for (const { address, revision } of intent.fips) {
      const fip = byAddress.get(address);
      const unreachable = fip ? remoteNodesOf(fip, this.o.node).filter((n) => dead.has(n)) : [];
      const error =
        refused.get(address) ??
        errors.get(address) ??
        pending.get(address) ??
        (unreachable.length > 0
          ? `no answer through the tunnel to ${unreachable.join(', ')}: its data path is dead`
          : undefined);
      const state: FipState =
        refused.has(address) || errors.has(address)
          ? 'ERROR'
          : pending.has(address)
            ? 'DOWN'
            : unreachable.length > 0
              ? 'UNREACHABLE'
              : fip?.association
                ? 'ACTIVE'
                : 'DOWN';
      this.queueStatus(changed, snapshot, address, revision, state, error);
    }
    // A FIP record of this node's pools that it cannot use is ERROR, with the reason.
    const mine = new Set(
      snapshot.pools.filter((p) => p.gateway === this.o.node).map((p) => p.name),
    );
    const unusable = snapshot.unusableFips.filter((f) => f.pool !== undefined && mine.has(f.pool));
    for (const f of unusable) {
      this.queueStatus(
        changed,
        snapshot,
        f.address,
        f.revision,
        'ERROR',
        `the stored record cannot be used: ${f.reason}`,
      );
    }
    await this.o.control.reportStatuses(changed);
    for (const s of changed) this.reported.set(s.address, s);
    const fips = new Set([...intent.fips, ...unusable].map((f) => f.address));
    for (const address of this.reported.keys())
      if (!fips.has(address)) this.reported.delete(address);
  }

  /** Adds a status to `changed` unless the store already holds it as this agent would write it. */
  private queueStatus(
    changed: FipStatus[],
    snapshot: Snapshot,
    address: string,
    revision: number,
    state: FipState,
    error: string | undefined,
  ): void {
    // What this agent wrote last, rather than the snapshot: its own writes reach the
    // snapshot a moment later, and a pass right after one (a lost tunnel's peer answering
    // again) would otherwise take the old state for the new one and never write it.
    const mine = this.reported.get(address);
    const current = mine?.revision === revision ? mine : snapshot.statuses.get(address);
    if (
      current &&
      current.state === state &&
      current.revision === revision &&
      current.message === error &&
      current.node === this.o.node
    )
      return;
    changed.push({
      address,
      state,
      node: this.o.node,
      revision,
      ...(error ? { message: error } : {}),
      updatedAt: new Date().toISOString(),
    });
  }
}

function skippedOf(rejected: ReadonlyMap<string, string>): SkippedRecord[] {
  return [...rejected]
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([key, reason]) => ({ key, reason }));
}
