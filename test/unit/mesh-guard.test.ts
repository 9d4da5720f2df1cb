/**
 * The mesh guard's transitions on a fake clock, without a store or an agent: a hold beyond
 * maxChange and the confirmation that releases it, departures that settle together, a trial
 * rolled back at its deadline, and a node asking for its overlay address. The loop around it is
 * played here as the reconcile loop plays it: compile, wanted(), "apply", afterPass().
 * The same through a real agent: test/agent-mesh.test.ts.
 */
import assert from 'node:assert/strict';
import { beforeEach, describe, it } from 'node:test';
import { MeshGuard, type MeshGuardOptions, type Schedule } from '../../src/agent/mesh-guard.js';
import {
  compileMesh,
  MESH_SETTLE_MS,
  type MeshPolicy,
  type MeshPolicyRecord,
  validateMeshPolicy,
} from '../../src/core/mesh.js';
import type { NodeRecord } from '../../src/core/model.js';
import { type IntentElement } from '../../src/intent/elements.js';

const T0 = Date.parse('2026-01-01T00:00:00.000Z');

/** A clock that moves only when told to, and the timers that run as it passes them. */
class FakeClock {
  at = T0;
  private timers: { due: number; run: () => void }[] = [];
  readonly now = (): Date => new Date(this.at);
  readonly schedule: Schedule = (run, ms) => {
    const timer = { due: this.at + ms, run };
    this.timers.push(timer);
    return () => {
      this.timers = this.timers.filter((t) => t !== timer);
    };
  };
  /** How long until each pending timer runs. */
  pending(): number[] {
    return this.timers.map((t) => t.due - this.at).sort((a, b) => a - b);
  }
  advance(ms: number): void {
    const until = this.at + ms;
    for (;;) {
      const next = this.timers.filter((t) => t.due <= until).sort((a, b) => a.due - b.due)[0];
      if (!next) break;
      this.timers = this.timers.filter((t) => t !== next);
      this.at = next.due;
      next.run();
    }
    this.at = until;
  }
}

function node(name: string, site: string, addresses: string[], overlayIp?: string): NodeRecord {
  return {
    name,
    site,
    addresses,
    reservedPorts: [],
    registeredAt: new Date(T0).toISOString(),
    ...(overlayIp ? { overlayIp } : {}),
  };
}

const POLICY: MeshPolicy = validateMeshPolicy({
  overlay: '192.168.0.0/18',
  maxChange: 2,
  sites: { a: { lans: ['10.1.0.0/24'] }, b: { lans: ['10.2.0.0/24'] } },
  nodes: { a2: { rejectAll: true } },
});
const NODES = [
  node('a1', 'a', ['10.1.0.11', '198.51.100.11'], '192.168.0.11'),
  node('a2', 'a', ['10.1.0.12', '198.51.100.12'], '192.168.0.12'),
  node('b1', 'b', ['10.2.0.21', '203.0.113.21'], '192.168.0.21'),
  node('b2', 'b', ['10.2.0.22', '203.0.113.22'], '192.168.0.22'),
];
const EVERYONE = NODES.map((n) => n.name);

const meshnats = (elements: readonly IntentElement[]): string[] =>
  elements.filter((e) => e.kind === 'meshnat').map((e) => e.key);

/** One agent's guard (node a2) with the loop around it, a fake clock and a fake control plane. */
class Loop {
  readonly clock = new FakeClock();
  readonly guard: MeshGuard;
  /** What the kernel holds: what the last pass applied. */
  kernel: readonly IntentElement[] = [];
  wakes = 0;
  readonly rollBacks: number[] = [];
  readonly overlayAsks: string[] = [];
  readonly warnings: string[] = [];
  readonly infos: string[] = [];
  record: MeshPolicyRecord = { policy: POLICY, updatedAt: new Date(T0).toISOString() };
  nodes: readonly NodeRecord[] = NODES;
  revision = 10;
  confirmedAt?: number;

  constructor(options: Partial<MeshGuardOptions> = {}) {
    this.guard = new MeshGuard({
      node: 'a2',
      control: {
        rollBack: () => {
          this.rollBacks.push(this.clock.at);
          return Promise.resolve(true);
        },
        ensureOverlay: (name) => {
          this.overlayAsks.push(name);
          return Promise.resolve(undefined);
        },
      },
      log: {
        info: (_, msg) => this.infos.push(msg ?? ''),
        warn: (_, msg) => this.warnings.push(msg ?? ''),
        error: () => {},
      },
      wake: () => this.wakes++,
      now: this.clock.now,
      schedule: this.clock.schedule,
      ...options,
    });
  }

  snapshot(): {
    revision: number;
    meshPolicy: MeshPolicyRecord;
    meshConfirm?: { revision: number; at: string };
  } {
    return {
      revision: this.revision,
      meshPolicy: this.record,
      ...(this.confirmedAt !== undefined
        ? { meshConfirm: { revision: this.confirmedAt, at: this.clock.now().toISOString() } }
        : {}),
    };
  }

  /** One pass with `alive` holding a lease: compile, hold back, apply, after the pass. */
  async pass(alive: readonly string[] = EVERYONE): Promise<void> {
    const mesh = compileMesh(
      { record: this.record, nodes: this.nodes, alive: new Set(alive) },
      'a2',
      this.clock.now(),
    );
    const snapshot = this.snapshot();
    this.kernel = this.guard.wanted({ elements: mesh.elements, mesh }, this.kernel, snapshot);
    await this.guard.afterPass(mesh, snapshot);
    this.revision++;
  }
}

describe('MeshGuard', () => {
  let loop: Loop;
  beforeEach(async () => {
    loop = new Loop();
    await loop.pass();
  });

  it('holds a departure of more than maxChange members, keeping them all, and reports it', async () => {
    assert.equal(meshnats(loop.kernel).length, 4);
    const since = loop.revision;
    await loop.pass(['a2']);
    assert.equal(meshnats(loop.kernel).length, 4, 'nobody dropped');
    assert.deepEqual(loop.guard.report(since)?.hold, {
      keeping: ['192.168.0.11', '192.168.0.21', '192.168.0.22'],
      maxChange: 2,
      sinceRevision: since,
    });
    assert.equal(loop.warnings.length, 1);
    // A hold does not settle away: time passes, passes run, it stays, begun where it began.
    loop.clock.advance(10 * MESH_SETTLE_MS);
    await loop.pass(['a2']);
    assert.equal(meshnats(loop.kernel).length, 4);
    assert.equal(loop.guard.report(undefined)?.hold?.sinceRevision, since);
    assert.equal(loop.warnings.length, 1, 'warned once');
  });

  it('releases a hold on a confirmation at or after the revision it began at', async () => {
    const since = loop.revision;
    await loop.pass(['a2']);
    loop.confirmedAt = since - 1; // older than the hold: it covers an earlier one
    await loop.pass(['a2']);
    assert.equal(meshnats(loop.kernel).length, 4);
    loop.confirmedAt = since;
    await loop.pass(['a2']);
    assert.deepEqual(meshnats(loop.kernel), ['192.168.0.12']);
    assert.equal(loop.guard.report(undefined)?.hold, undefined);
    assert.deepEqual(loop.infos, ['mesh membership change no longer held']);
  });

  it('keeps departures until they settle, counting those close together as one change', async () => {
    await loop.pass(['a1', 'a2', 'b1']); // b2 leaves
    assert.equal(meshnats(loop.kernel).length, 4, 'kept while it settles');
    assert.deepEqual(loop.clock.pending(), [MESH_SETTLE_MS + 20]);
    loop.clock.advance(2000);
    await loop.pass(['a1', 'a2']); // b1 too, 2 s later: the settling starts again
    assert.deepEqual(loop.clock.pending(), [MESH_SETTLE_MS + 20], 'one timer, moved on');
    loop.clock.advance(MESH_SETTLE_MS);
    assert.equal(loop.wakes, 0);
    loop.clock.advance(20);
    assert.equal(loop.wakes, 1, 'the loop is woken once they settled');
    await loop.pass(['a1', 'a2']);
    assert.deepEqual(meshnats(loop.kernel), ['192.168.0.11', '192.168.0.12'], 'two go: maxChange');
    assert.equal(loop.guard.report(undefined)?.hold, undefined);
  });

  it('holds departures that trickle in within the settling time once they exceed maxChange', async () => {
    await loop.pass(['a1', 'a2', 'b1']);
    loop.clock.advance(2000);
    await loop.pass(['a1', 'a2']);
    loop.clock.advance(2000);
    await loop.pass(['a2']); // each step within maxChange, together three
    assert.equal(meshnats(loop.kernel).length, 4);
    assert.equal(loop.guard.report(undefined)?.hold?.keeping.length, 3);
    loop.clock.advance(MESH_SETTLE_MS);
    await loop.pass(['a2']);
    assert.equal(meshnats(loop.kernel).length, 4, 'still held once settled');
  });

  it('rolls a trial back at its deadline and writes the rollback once', async () => {
    const deadline = T0 + 60_000;
    const previous = validateMeshPolicy({ overlay: '192.168.0.0/18' });
    loop.record = {
      policy: POLICY,
      trial: { previous, deadline: new Date(deadline).toISOString() },
      updatedAt: new Date(T0).toISOString(),
    };
    await loop.pass();
    assert.equal(loop.guard.report(undefined)?.rejectAll, true, 'the trial policy runs');
    assert.deepEqual(loop.clock.pending(), [60_000 + 20]);
    assert.equal(loop.guard.mayRollBackOffline(loop.snapshot()), true);
    loop.clock.advance(60_000 + 20);
    assert.equal(loop.wakes, 1, 'the deadline wakes the loop');
    await loop.pass();
    assert.deepEqual(loop.rollBacks, [deadline + 20]);
    const report = loop.guard.report(7);
    assert.equal(report?.rolledBack, true);
    assert.equal(report?.rejectAll, false, 'the previous policy runs');
    assert.equal(report?.appliedRevision, 7);
    assert.deepEqual(loop.clock.pending(), [], 'no deadline left to wait for');
    assert.equal(loop.guard.mayRollBackOffline(loop.snapshot()), false);
  });

  it('leaves writing the rollback to the hub when it may not write the policy', async () => {
    const remote = new Loop({ writesRollback: false });
    remote.record = {
      policy: POLICY,
      trial: { previous: null, deadline: new Date(T0).toISOString() },
      updatedAt: new Date(T0).toISOString(),
    };
    await remote.pass();
    assert.equal(remote.guard.report(undefined)?.rolledBack, true);
    assert.deepEqual(remote.rollBacks, []);
  });

  it('asks for its overlay address once, a while after, while it has none', async () => {
    const bare = new Loop();
    bare.nodes = NODES.map((n) => (n.name === 'a2' ? { ...n, overlayIp: undefined } : n));
    await bare.pass();
    await bare.pass();
    assert.deepEqual(bare.overlayAsks, []);
    assert.equal(bare.clock.pending().length, 1, 'one request pending');
    bare.clock.advance(4000);
    await Promise.resolve();
    assert.deepEqual(bare.overlayAsks, ['a2']);
  });

  it('stops its timers on stop, and starts none after', async () => {
    await loop.pass(['a1', 'a2', 'b1']);
    assert.equal(loop.clock.pending().length, 1);
    loop.guard.stop();
    assert.deepEqual(loop.clock.pending(), []);
    loop.clock.advance(2000);
    await loop.pass(['a1', 'a2']);
    assert.deepEqual(loop.clock.pending(), []);
    assert.equal(loop.wakes, 0);
  });
});

describe('compileMesh: waiting for an overlay address', () => {
  const record: MeshPolicyRecord = { policy: POLICY, updatedAt: new Date(T0).toISOString() };
  const now = new Date(T0);

  it('says so with a typed field, and with a note for people', () => {
    const bare = NODES.map((n) => (n.name === 'a2' ? { ...n, overlayIp: undefined } : n));
    const waiting = compileMesh({ record, nodes: bare, alive: new Set(EVERYONE) }, 'a2', now);
    assert.equal(waiting.waitingForOverlay, true);
    assert.match(waiting.notes[0] ?? '', /no overlay address/);
    const member = compileMesh({ record, nodes: NODES, alive: new Set(EVERYONE) }, 'a2', now);
    assert.equal(member.waitingForOverlay, undefined);
    // A node not registered (yet) has nothing to ask for.
    const stranger = compileMesh({ record, nodes: NODES, alive: new Set(EVERYONE) }, 'zz', now);
    assert.equal(stranger.waitingForOverlay, undefined);
  });
});
