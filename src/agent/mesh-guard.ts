/**
 * The fleet mesh's guard beside the reconcile loop: what compile decides (src/core/mesh.ts) is
 * pure; what needs memory across passes and a clock lives here. Members that leave are kept
 * until their departure has settled (MESH_SETTLE_MS), a change that drops more members than the
 * policy's maxChange is held until confirmed, a trial's deadline wakes the loop (every node goes
 * back by itself, store or not), and a node without an overlay address asks for one.
 *
 * The loop calls it once per pass: wanted() for what to apply, afterPass() once it applied,
 * report() for the liveness record. The guard wakes the loop itself (`wake`) when a departure
 * has settled or a deadline passed; its timers never keep the process alive and end on stop().
 */
import { holdMeshRemovals, type MeshIntent } from '../core/mesh.js';
import type { MeshHold, MeshNodeReport } from '../core/model.js';
import { compareElements } from '../intent/diff.js';
import type { IntentElement } from '../intent/elements.js';
import type { MeshControl } from '../service/mesh.js';
import type { Snapshot } from './desired.js';
import type { Logger } from './log.js';

/** Runs `run` in `ms` milliseconds without keeping the process alive; returns its cancel. */
export type Schedule = (run: () => void, ms: number) => () => void;

const unrefTimer: Schedule = (run, ms) => {
  const timer = setTimeout(run, ms);
  timer.unref();
  return () => clearTimeout(timer);
};

/**
 * How long a member without an overlay address waits before asking for one, at least (up to
 * twice as long, at random). Setting a policy gives every node its address at once (in
 * batches), so usually there is nothing left to ask; and when a policy reaches a whole fleet,
 * its agents must not all list every node record at the same moment.
 */
const OVERLAY_ASK_MS = 2000;
/** A timer wakes the loop a little after the moment it waits for, so the pass finds it passed. */
const AFTER_MS = 20;
/** setTimeout's longest delay; a deadline further out is looked at again then. */
const LONGEST_TIMER_MS = 2 ** 31 - 1;

export interface MeshGuardOptions {
  readonly node: string;
  readonly control: Pick<MeshControl, 'rollBack' | 'ensureOverlay'>;
  readonly log: Logger;
  /** Asks the reconcile loop for a pass. */
  readonly wake: () => void;
  /**
   * Whether this agent writes a trial's rollback to the store (default true). A remote agent's
   * node credential may not write the policy: its hub's agent does.
   */
  readonly writesRollback?: boolean;
  /** The clock a trial's deadline and a departure's settling are judged by (tests). */
  readonly now?: () => Date;
  /** How it sets its timers (tests: a fake clock's); unref'd setTimeout by default. */
  readonly schedule?: Schedule;
}

/** What the guard reads of a snapshot of the desired state. */
export type MeshSnapshot = Pick<Snapshot, 'revision' | 'meshPolicy' | 'meshConfirm'>;

/** One pending wake-up of the loop: setting it again replaces the one before. */
class Alarm {
  private cancel?: () => void;
  constructor(
    private readonly schedule: Schedule,
    private readonly ring: () => void,
  ) {}
  set(ms: number): void {
    this.clear();
    this.cancel = this.schedule(this.ring, ms);
  }
  clear(): void {
    this.cancel?.();
    this.cancel = undefined;
  }
}

export class MeshGuard {
  private hold?: MeshHold;
  /** When each member now leaving was first seen leaving (departures settle first). */
  private leavingSince: ReadonlyMap<string, number> = new Map();
  /** The mesh of the last pass: what the node runs, and whether it rolled back. */
  private last?: MeshIntent;
  /** Wakes the loop when the departures have settled: then they are dropped, or held. */
  private readonly settled: Alarm;
  /** Wakes the loop at a trial's deadline. */
  private readonly deadline: Alarm;
  private readonly schedule: Schedule;
  private cancelOverlayAsk?: () => void;
  private stopped = false;

  constructor(private readonly o: MeshGuardOptions) {
    this.schedule = o.schedule ?? unrefTimer;
    const wake = (): void => {
      if (!this.stopped) o.wake();
    };
    this.settled = new Alarm(this.schedule, wake);
    this.deadline = new Alarm(this.schedule, wake);
  }

  /**
   * What the kernel should hold of this pass's intent, given what it holds (`observed`):
   * members that leave are kept until their departure has settled, and a change that drops more
   * members than the policy's maxChange is held (see holdMeshRemovals) until `ipferry mesh
   * confirm` writes a confirmation at or after the revision at which the hold began.
   */
  wanted(
    intent: { readonly elements: readonly IntentElement[]; readonly mesh?: MeshIntent },
    observed: readonly IntentElement[],
    snapshot: MeshSnapshot,
  ): readonly IntentElement[] {
    const since = this.hold?.sinceRevision ?? snapshot.revision;
    const released = (snapshot.meshConfirm?.revision ?? 0) >= since;
    const maxChange = intent.mesh?.maxChange;
    const held = holdMeshRemovals(
      intent.elements,
      observed,
      maxChange,
      released,
      this.leavingSince,
      this.now(),
    );
    this.leavingSince = held.leavingSince;
    if (held.wakeInMs !== undefined && !this.stopped) this.settled.set(held.wakeInMs + AFTER_MS);
    if (held.keeping.length === 0) {
      if (this.hold) this.o.log.info({ released }, 'mesh membership change no longer held');
      this.hold = undefined;
      return held.wakeInMs === undefined
        ? intent.elements
        : [...held.elements].sort(compareElements);
    }
    if (!this.hold)
      this.o.log.warn(
        { keeping: held.keeping, maxChange },
        'mesh membership change held: more members would go than maxChange allows; confirm with `ipferry mesh confirm`',
      );
    this.hold = { keeping: held.keeping, maxChange: maxChange ?? 0, sinceRevision: since };
    return [...held.elements].sort(compareElements);
  }

  /**
   * After a pass: a trial's deadline wakes the loop; one that ran out is written back to the
   * store; a member without an overlay address asks for one, a little later (OVERLAY_ASK_MS).
   */
  async afterPass(mesh: MeshIntent | undefined, snapshot: MeshSnapshot): Promise<void> {
    this.last = mesh;
    this.deadline.clear();
    if (mesh?.deadline && !this.stopped) {
      const wait = Math.max(0, mesh.deadline.getTime() - this.now());
      this.deadline.set(Math.min(wait + AFTER_MS, LONGEST_TIMER_MS));
    }
    if (mesh?.rolledBack && snapshot.meshPolicy?.trial && this.o.writesRollback !== false) {
      await this.o.control.rollBack().catch((e: unknown) => {
        this.o.log.warn({ err: (e as Error).message }, 'could not write the mesh rollback back');
      });
    }
    if (mesh?.waitingForOverlay) this.askOverlaySoon();
  }

  /**
   * Whether a trial in the last state read may have run out while this node still runs it: with
   * the store out of reach, the loop compiles that state again and applies a rollback itself.
   */
  mayRollBackOffline(snapshot: MeshSnapshot): boolean {
    return snapshot.meshPolicy?.trial !== undefined && !this.last?.rolledBack;
  }

  /** The loop applied a rollback from the last state read while the store is out of reach. */
  rolledBackOffline(mesh: MeshIntent, snapshot: MeshSnapshot): void {
    this.last = mesh;
    this.o.log.warn(
      { deadline: snapshot.meshPolicy?.trial?.deadline },
      'mesh trial ran out unconfirmed while the store is unreachable: rolled back from the last state read',
    );
  }

  /** What the liveness record says about this node's mesh, at the revision the loop realised. */
  report(appliedRevision: number | undefined): MeshNodeReport | undefined {
    const m = this.last;
    if (!m && appliedRevision === undefined) return undefined;
    return {
      ...(appliedRevision !== undefined ? { appliedRevision } : {}),
      ...(m?.layer ? { rejectAll: m.layer.rejectAll ?? false, members: m.members } : {}),
      ...(this.hold ? { hold: this.hold } : {}),
      ...(m?.rolledBack ? { rolledBack: true } : {}),
    };
  }

  /** For good: clears its timers and sets none again. */
  stop(): void {
    this.stopped = true;
    this.settled.clear();
    this.deadline.clear();
    this.cancelOverlayAsk?.();
  }

  private now(): number {
    return (this.o.now?.() ?? new Date()).getTime();
  }

  /** Asks for an overlay address after a while (its record's change wakes the loop). */
  private askOverlaySoon(): void {
    if (this.cancelOverlayAsk || this.stopped) return;
    this.cancelOverlayAsk = this.schedule(
      () => {
        if (this.stopped) return;
        // ensureOverlay reads the node record first: given one meanwhile, it changes nothing.
        void this.o.control
          .ensureOverlay(this.o.node)
          .catch((e: unknown) => {
            this.o.log.warn({ err: (e as Error).message }, 'could not get an overlay address');
          })
          .finally(() => {
            this.cancelOverlayAsk = undefined;
          });
      },
      OVERLAY_ASK_MS * (1 + Math.random()),
    );
  }
}
