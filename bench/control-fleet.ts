/**
 * Fleet propagation: one change applied by every agent of a fleet on etcd (a real single-member
 * etcd on loopback). Every node of the fleet runs a real `startAgent`, each with its own etcd
 * connection, watch, liveness lease, reconcile loop and API on 127.0.0.1, on the strict fake
 * dataplane. After the mesh has a policy and every agent applied it, one policy change at a
 * time (a port opened on every member) is timed from the setPolicy call until the last agent's
 * dataplane applied it.
 *
 * In a real fleet each agent has a host of its own; here all of them share 2 cores with etcd,
 * spread over WORKERS Node processes (fleet-worker.ts) so that no one event loop and heap holds
 * hundreds of agents. What lets 500 fit at all: a liveness beat is a lease keep-alive, not a
 * write under the tree the agents watch (health reports live outside it, written only when
 * they change); each agent keeps that tree in memory, fed by its watch, instead of listing it on
 * every pass; and the part of a node's mesh that grows with the fleet is compiled again only
 * when a node record or the live set changed, so a policy change costs each agent its few
 * elements and a merge diff.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { keys, ROOT } from '../src/core/keys.js';
import { type EtcdCluster, startEtcd } from '../src/lab/etcd.js';
import { ControlPlane } from '../src/service/control.js';
import { openStore } from '../src/store/open.js';
import type { Store } from '../src/store/store.js';
import { round } from './control-first-packet.js';
import { clockMs, type FromWorker, type Member, type ToWorker } from './fleet-worker.js';
import { median, percentile } from './stats.js';
import type { BenchModule, BenchOptions, BenchResult } from './types.js';

const OVERLAY = '192.168.0.0/18';
const BASE_PORTS = ['tcp/443'];
/** How long one change may take to reach every agent before it counts as missed. */
const CHANGE_TIMEOUT_MS = 30_000;
/** An agent's liveness beat (src/agent/run.ts: a third of its 15 s lease). */
const BEAT_MS = 5_000;
/**
 * Processes the agents are spread over (2 cores, shared with etcd and this process). Fewer
 * means larger heaps whose major collections stall more agents at once: with 2 processes of 250
 * agents, about one change in 30 took 0.8–1.2 s (a worker's old generation was collected while
 * it applied the change); with 4 of 125, none of 60 took more than 400 ms.
 */
const WORKERS = 4;
/**
 * Each worker's young generation (MB per semi-space): it holds 125 agents, each of which would
 * have a young generation of its own (the agent runs with 2 MB, bin/ipferry); with the 16 MB
 * default, a change's garbage from 125 passes is promoted and collected as old.
 */
const SEMI_SPACE_MB = 64;
/** How long a worker may take to answer anything but a start. */
const ANSWER_MS = 120_000;

/** Node i: site a or b, a private address in its site's LAN and a public one (198.18.0.0/15). */
function member(i: number): Member {
  const site = i % 2 === 0 ? 'a' : 'b';
  const hi = Math.floor(i / 250);
  const lo = (i % 250) + 2;
  return {
    name: `n${i}`,
    site,
    addresses: [`10.${site === 'a' ? 1 : 2}.${hi}.${lo}`, `198.18.${hi}.${lo}`],
  };
}

function policy(extraPort?: number) {
  return {
    overlay: OVERLAY,
    fleet: { openPorts: [...BASE_PORTS, ...(extraPort ? [`tcp/${extraPort}`] : [])] },
    sites: { a: { lans: ['10.1.0.0/16'] }, b: { lans: ['10.2.0.0/16'] } },
  };
}

/** One fleet-worker process, and the messages it sent that nobody has taken yet. */
class Worker {
  private readonly inbox: FromWorker[] = [];
  private wake?: () => void;
  private exited = false;

  constructor(
    readonly proc: ChildProcess,
    readonly agents: number,
  ) {
    proc.on('message', (m: FromWorker) => {
      this.inbox.push(m);
      this.wake?.();
    });
    proc.on('exit', () => {
      this.exited = true;
      this.wake?.();
    });
  }

  static start(agents: number): Worker {
    const file = fileURLToPath(new URL('./fleet-worker.ts', import.meta.url));
    const proc = fork(file, [], {
      execArgv: ['--import', import.meta.resolve('tsx'), `--max-semi-space-size=${SEMI_SPACE_MB}`],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    return new Worker(proc, agents);
  }

  send(m: ToWorker): void {
    this.proc.send(m);
  }

  /** The next message of `type`; a `failed` one, an exit or the deadline throws. */
  async next<T extends FromWorker['type']>(
    type: T,
    timeoutMs = ANSWER_MS,
  ): Promise<Extract<FromWorker, { type: T }>> {
    const deadline = clockMs() + timeoutMs;
    for (;;) {
      const i = this.inbox.findIndex((m) => m.type === type || m.type === 'failed');
      if (i >= 0) {
        const m = this.inbox.splice(i, 1)[0]!;
        if (m.type === 'failed') throw new Error(`fleet worker: ${m.error}`);
        return m as Extract<FromWorker, { type: T }>;
      }
      if (this.exited) throw new Error(`fleet worker ${this.proc.pid} exited`);
      const left = deadline - clockMs();
      if (left <= 0)
        throw new Error(`fleet worker ${this.proc.pid}: no ${type} in ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wake = undefined;
    }
  }

  /** Asks the worker to stop its agents, then ends it (by its pid, whatever it answered). */
  async stop(): Promise<void> {
    if (this.exited) return;
    try {
      this.send({ type: 'stop' });
      await this.next('stopped', 60_000);
    } catch {
      // ended below all the same
    }
    if (!this.exited) this.proc.kill('SIGTERM');
  }
}

/**
 * The revision of the latest write an agent must have applied: status reports do not wake an
 * agent, so they do not count; a node coming alive does (src/agent/reconcile.ts, `wakes`).
 */
async function latestChange(store: Store): Promise<number> {
  const { kvs } = await store.list(ROOT);
  let latest = 0;
  for (const kv of kvs) {
    if (kv.key.startsWith(keys.statuses)) continue;
    latest = Math.max(latest, kv.key.startsWith(keys.alive) ? kv.createRevision : kv.modRevision);
  }
  return latest;
}

/** Waits until every agent's last pass read the store at `revision` or later. */
async function allRealised(workers: readonly Worker[], revision: number, timeoutMs: number) {
  const deadline = clockMs() + timeoutMs;
  for (;;) {
    const answers = await Promise.all(
      workers.map((w) => {
        w.send({ type: 'realised' });
        return w.next('realised');
      }),
    );
    if (answers.every((a) => a.lowest >= revision)) return;
    if (clockMs() > deadline) {
      const errors = [...new Set(answers.flatMap((a) => a.errors))];
      throw new Error(
        `agents had not applied revision ${revision} after ${timeoutMs} ms (errors: ${errors.slice(0, 3).join('; ') || 'none'})`,
      );
    }
    await sleep(200);
  }
}

interface Change {
  /** setPolicy call start to the last agent's apply (ms). */
  readonly all: number;
  /** To the median agent's apply. */
  readonly typical: number;
  /** How long the setPolicy call took (it also checks every node's overlay address). */
  readonly call: number;
}

/** One policy change, timed from the call until every agent's dataplane holds it. */
async function timeChange(
  control: ControlPlane,
  workers: readonly Worker[],
  port: number,
): Promise<Change | undefined> {
  for (const w of workers) w.send({ type: 'await', port });
  for (const w of workers) await w.next('armed');
  const start = clockMs();
  await control.mesh.setPolicy(policy(port));
  const call = clockMs() - start;
  const times: number[] = [];
  try {
    for (const w of workers) {
      const left = start + CHANGE_TIMEOUT_MS - clockMs();
      times.push(...(await w.next('applied', Math.max(1, left))).times.map((t) => t - start));
    }
  } catch {
    return undefined;
  }
  return { all: Math.max(...times), typical: median(times), call };
}

/** Events a watch of the whole root delivers over `ms`, per second: what each agent hears. */
async function rootEvents(store: Store, ms: number): Promise<number> {
  let events = 0;
  const watch = store.watch(ROOT, { onEvents: (e) => (events += e.length) });
  await sleep(ms);
  watch.close();
  return (events * 1000) / ms;
}

interface FleetRun {
  readonly nodes: number;
  readonly workers: number;
  readonly changes: readonly (Change | undefined)[];
  /** The first change after the start, not counted. */
  readonly warmUp: Change | undefined;
  readonly startSeconds: number;
  /** Event-loop delay while idle (liveness keep-alives and health writes alone), p99 ms. */
  readonly idleLag: number;
  /** One agent's pass run alone, median ms. */
  readonly pass: number;
  /** What each agent keeps in memory: keys and bytes under the root. */
  readonly keyspace: { readonly keys: number; readonly bytes: number };
  /** Events a watch of the root delivered while the fleet was idle, per second. */
  readonly idleEvents: number;
  /** Resident memory of the worker processes together, MB. */
  readonly rssMb: number;
}

/** A fleet of `nodes` nodes, each with its real agent; `changes` changes timed. */
async function fleet(o: BenchOptions, nodes: number, changes: number): Promise<FleetRun> {
  const dir = await mkdtemp(join(tmpdir(), 'ipferry-bench-fleet-'));
  let etcd: EtcdCluster | undefined;
  let store: Store | undefined;
  const all = Array.from({ length: nodes }, (_, i) => member(i));
  const workers: Worker[] = [];
  try {
    const t0 = clockMs();
    etcd = await startEtcd();
    store = await openStore(etcd.storeSpec);
    const control = new ControlPlane(store);
    for (let w = 0; w < WORKERS; w++) {
      const share = all.filter((_, i) => i % WORKERS === w);
      const worker = Worker.start(share.length);
      workers.push(worker);
      worker.send({
        type: 'start',
        storeSpec: etcd.storeSpec,
        dir: join(dir, `w${w}`),
        members: share,
      });
    }
    for (const w of workers) await w.next('started', 600_000);
    o.log(`fleet: ${nodes} agents started in ${WORKERS} processes`);
    // The policy last: while nodes join, the agents' passes have no mesh to compile.
    await control.mesh.setPolicy(policy());
    await allRealised(workers, await latestChange(store), 240_000);
    const startSeconds = (clockMs() - t0) / 1000;
    const { kvs } = await store.list(ROOT);
    const keyspace = {
      keys: kvs.length,
      bytes: kvs.reduce((s, kv) => s + kv.key.length + kv.value.length, 0),
    };
    o.log(`fleet: ${nodes} agents up and converged (${startSeconds.toFixed(1)} s)`);
    let port = 20000;
    // One change not counted: right after the start, the agents' first health reports are
    // still being written.
    const warmUp = await timeChange(control, workers, ++port);
    o.log(`fleet: warm-up change ${warmUp ? `${round(warmUp.all)} ms` : 'not applied by all'}`);
    // Idle: longer than a liveness beat, so every agent's keep-alive (and the health write
    // after the warm-up) is in it.
    for (const w of workers) w.send({ type: 'idle', ms: BEAT_MS + 1000 });
    const idleEvents = await rootEvents(store, BEAT_MS + 1000);
    const idle = [];
    for (const w of workers) idle.push(await w.next('idle'));
    const results: (Change | undefined)[] = [];
    for (let i = 0; i < changes; i++) {
      await sleep(300);
      const change = await timeChange(control, workers, ++port);
      results.push(change);
      o.log(
        `fleet: change ${i + 1}/${changes} applied by all ${nodes} agents in ${change ? `${round(change.all)} ms (the median agent ${round(change.typical)} ms, the call ${round(change.call)} ms)` : `more than ${CHANGE_TIMEOUT_MS} ms`}`,
      );
    }
    // Every agent must hold the last change: the fake's state, not only its timing.
    let missing = 0;
    for (const w of workers) {
      w.send({ type: 'holds', port });
      missing += (await w.next('holds')).missing;
    }
    if (missing > 0) throw new Error(`${missing} agents do not hold meshport tcp . ${port}`);
    workers[0]!.send({ type: 'passes', count: 10 });
    const passes = (await workers[0]!.next('passes')).ms;
    return {
      nodes,
      workers: workers.length,
      changes: results,
      warmUp,
      startSeconds,
      idleLag: Math.max(...idle.map((i) => i.lagP99)),
      idleEvents,
      rssMb: idle.reduce((s, i) => s + i.rssMb, 0),
      keyspace,
      pass: median(passes),
    };
  } finally {
    await Promise.all(workers.map((w) => w.stop()));
    await store?.close().catch(() => undefined);
    await etcd?.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

const GROUP = 'Fleet propagation';

function figures(run: FleetRun): BenchResult[] {
  const alls = run.changes.map((c) => c?.all ?? CHANGE_TIMEOUT_MS);
  const missed = run.changes.filter((c) => c === undefined).length;
  const typical = run.changes.flatMap((c) => (c ? [c.typical] : []));
  const calls = run.changes.flatMap((c) => (c ? [c.call] : []));
  const p99 = percentile(alls, 99);
  const kb = Math.round(run.keyspace.bytes / 1024);
  const note = [
    `${run.changes.length} changes (a mesh policy change opening one more port on every member), each timed from the setPolicy call until the last of all ${run.nodes} agents had it in its dataplane`,
    missed > 0
      ? `${missed} not applied by all within ${CHANGE_TIMEOUT_MS} ms (counted as ${CHANGE_TIMEOUT_MS} ms)`
      : '',
    `the median agent had it after ${round(median(typical))} ms; the setPolicy call took ${round(median(calls))} ms (it also reads every node's overlay address, in one list)`,
    `one warm-up change before them, not counted, took ${run.warmUp ? `${round(run.warmUp.all)} ms` : `more than ${CHANGE_TIMEOUT_MS} ms`}`,
    `each agent keeps the ${run.keyspace.keys} keys under the root (${kb} KB) in memory, fed by its watch, and reads them from there on each pass`,
    `while the fleet was idle a watch of the root got ${round(run.idleEvents)} events a second (liveness beats are lease keep-alives; health reports live outside the root)`,
    `all ${run.nodes} agents run in ${run.workers} Node processes (${Math.round(run.rssMb)} MB resident together; event-loop p99 delay ${round(run.idleLag)} ms while idle) sharing 2 cores with etcd, where each would have a host of its own: start and convergence took ${round(run.startSeconds)} s`,
  ]
    .filter((x) => x !== '')
    .join('; ');
  const label = `one change applied by all ${run.nodes} agents`;
  return [
    {
      group: GROUP,
      name: `fleet.pass.nodes=${run.nodes}`,
      label: `one agent's reconcile pass in a fleet of ${run.nodes} nodes: median`,
      value: round(run.pass),
      unit: 'ms',
      better: 'lower',
      note: `a pass of one agent run by hand while the fleet is idle (read its in-memory copy of the root: ${run.keyspace.keys} keys, ${kb} KB; compile the mesh; diff; report), median of 10: what a change costs each agent on a host of its own, after its watch delivered the change`,
      series: { name: 'one agent pass', x: run.nodes },
    },
    {
      group: GROUP,
      name: `fleet.propagation.nodes=${run.nodes}.median`,
      label: `${label}: median`,
      value: round(median(alls)),
      unit: 'ms',
      better: 'lower',
      note,
      series: { name: 'fleet propagation, median', x: run.nodes },
    },
    {
      group: GROUP,
      name: `fleet.propagation.nodes=${run.nodes}.p99`,
      label: `${label}: p99`,
      value: round(p99),
      unit: 'ms',
      better: 'lower',
      ...(run.nodes >= 500
        ? { target: { text: 'p99 < 1 s with 500 agents', met: p99 < 1000 } }
        : {}),
      note: `nearest rank over ${alls.length} changes (the slowest)`,
      series: { name: 'fleet propagation, p99', x: run.nodes },
    },
  ];
}

export const controlFleet: BenchModule = {
  title: 'Fleet: one change propagated to N agents',
  budgetSeconds: 240,
  async run(o: BenchOptions): Promise<BenchResult[]> {
    const runs = o.quick
      ? [
          { nodes: 20, changes: 3 },
          { nodes: 60, changes: 3 },
        ]
      : [
          { nodes: 100, changes: 20 },
          { nodes: 500, changes: 20 },
        ];
    const out: BenchResult[] = [];
    for (const r of runs) {
      o.log(`fleet: etcd, ${r.nodes} nodes, each with its agent (fake dataplane)`);
      out.push(...figures(await fleet(o, r.nodes, r.changes)));
    }
    return out;
  },
};
