/**
 * Throwaway etcd clusters for tests, the lab and benchmarks: one member or N, all on 127.0.0.1
 * with free ports and their own temporary data directory, so parallel runs never collide and
 * nothing of the machine's own etcd (Debian's etcd.service on 2379) is touched. etcd binds
 * loopback only: it needs no network namespace.
 *
 * Cleanup is layered like the namespace lab's (topology.ts):
 * - `start` stops what it started and removes the data directory when any step fails;
 * - `stop()` ends every member by pid (SIGTERM, then SIGKILL) and removes the data directory;
 * - a process 'exit' / SIGINT / SIGTERM handler SIGKILLs the members of clusters still alive and
 *   removes their directories, so a failed or interrupted test leaves nothing running.
 *
 * `kill(member)` and `restart(member)` make outages; `compact()` drops history so watches from
 * before it fail. Talks to etcd only through its HTTP/JSON gateway (`/health`, `/v3/kv/…`), so
 * this module needs no client library.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, openSync, readFileSync, rmSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort } from './ports.js';
import { ExitCleanup } from './exit-cleanup.js';

export interface EtcdClusterOptions {
  /** How many members (default 1). */
  readonly members?: number;
  /** The etcd binary (default `etcd` from PATH: Debian's etcd-server). */
  readonly binary?: string;
  /** How long start and restart wait for the members to be healthy (default 30 s). */
  readonly startTimeoutMs?: number;
  /** More etcd flags for every member (e.g. `--auto-compaction-retention`). */
  readonly extraArgs?: readonly string[];
}

export interface EtcdMember {
  readonly name: string;
  /** `http://127.0.0.1:PORT`: where clients connect. */
  readonly clientUrl: string;
  readonly peerUrl: string;
  readonly dataDir: string;
  /** The member's log (stdout and stderr, appended across restarts). */
  readonly logFile: string;
  /** Pid of the running process, undefined while the member is down. */
  readonly pid: number | undefined;
  readonly running: boolean;
}

const DEFAULT_START_TIMEOUT_MS = 30_000;
const STOP_GRACE_MS = 3_000;
const POLL_MS = 100;
const REQUEST_TIMEOUT_MS = 2_000;

interface MemberState {
  readonly name: string;
  readonly clientUrl: string;
  readonly peerUrl: string;
  readonly dataDir: string;
  readonly logFile: string;
  proc: ChildProcess | undefined;
  exited: Promise<void>;
  /** Why the last spawn failed (no such binary), if it did. */
  spawnError: Error | undefined;
}

// ---------------------------------------------------------------------------------------------
// Clusters still alive in this process, for the synchronous exit / signal cleanup.

/** One member of a new cluster, as the labs and tests start it. */
export interface NewMember {
  readonly name: string;
  readonly dataDir: string;
  readonly clientUrl: string;
  readonly peerUrl: string;
  /** `name=peerUrl,…` of every member. */
  readonly initialCluster: string;
  readonly clusterToken?: string;
}

/** etcd's flags for `member` of a new cluster, logging warnings only (without the binary). */
export function etcdMemberArgs(member: NewMember): string[] {
  return [
    '--name',
    member.name,
    '--data-dir',
    member.dataDir,
    '--listen-client-urls',
    member.clientUrl,
    '--advertise-client-urls',
    member.clientUrl,
    '--listen-peer-urls',
    member.peerUrl,
    '--initial-advertise-peer-urls',
    member.peerUrl,
    '--initial-cluster',
    member.initialCluster,
    ...(member.clusterToken !== undefined ? ['--initial-cluster-token', member.clusterToken] : []),
    '--initial-cluster-state',
    'new',
    '--logger',
    'zap',
    '--log-level',
    'warn',
  ];
}

/** Destroyed on exit and signals while tracked (see exit-cleanup.ts). */
const live = new ExitCleanup<EtcdCluster>();

function running(proc: ChildProcess | undefined): boolean {
  return proc !== undefined && proc.exitCode === null && proc.signalCode === null;
}

/** The environment without ETCD_* variables: etcd reads them as flags and would mix them in. */
export function cleanEnv(): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('ETCD_')));
}

async function getJson(url: string, body?: unknown): Promise<unknown> {
  const res = await fetch(url, {
    method: body === undefined ? 'GET' : 'POST',
    ...(body === undefined
      ? {}
      : { body: JSON.stringify(body), headers: { 'content-type': 'application/json' } }),
    signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${url} answered HTTP ${res.status}: ${text.slice(0, 300)}`);
  return JSON.parse(text) as unknown;
}

export class EtcdCluster {
  readonly #members: MemberState[];
  readonly #binary: string;
  readonly #args: readonly string[];
  readonly #startTimeoutMs: number;
  readonly #initialCluster: string;
  readonly #token: string;
  #stopping: Promise<void> | undefined;

  private constructor(
    readonly dir: string,
    members: MemberState[],
    options: EtcdClusterOptions,
  ) {
    this.#members = members;
    this.#binary = options.binary ?? 'etcd';
    this.#args = options.extraArgs ?? [];
    this.#startTimeoutMs = options.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS;
    this.#initialCluster = members.map((m) => `${m.name}=${m.peerUrl}`).join(',');
    // A cluster token unique to this run: members of another test's cluster that happened to
    // get a recycled port can never join this one.
    this.#token = `ipferry-${randomBytes(6).toString('hex')}`;
  }

  /** Starts the members and waits until every one is healthy (a leader is elected). */
  static async start(options: EtcdClusterOptions = {}): Promise<EtcdCluster> {
    const count = options.members ?? 1;
    if (!Number.isInteger(count) || count < 1 || count > 9) {
      throw new Error(`an etcd cluster has 1 to 9 members, not ${count}`);
    }
    const dir = await mkdtemp(join(tmpdir(), 'ipferry-etcd-'));
    const members: MemberState[] = [];
    const ports = new Set<number>();
    const port = async (): Promise<number> => {
      // freePort can hand out the same port twice in a row once it is released again.
      for (;;) {
        const p = await freePort();
        if (!ports.has(p)) {
          ports.add(p);
          return p;
        }
      }
    };
    for (let i = 0; i < count; i++) {
      const name = `m${i}`;
      members.push({
        name,
        clientUrl: `http://127.0.0.1:${await port()}`,
        peerUrl: `http://127.0.0.1:${await port()}`,
        dataDir: join(dir, name),
        logFile: join(dir, `${name}.log`),
        proc: undefined,
        exited: Promise.resolve(),
        spawnError: undefined,
      });
    }
    const cluster = new EtcdCluster(dir, members, options);
    live.track(cluster);
    try {
      for (const member of members) cluster.#spawn(member);
      await Promise.all(members.map((m) => cluster.#waitHealthy(m)));
      return cluster;
    } catch (error) {
      await cluster.stop();
      throw error;
    }
  }

  /** Client URLs of every member, running or not, in member order. */
  get endpoints(): string[] {
    return this.#members.map((m) => m.clientUrl);
  }

  /** The `--store` spec that reaches this cluster: `etcd:URL[,URL…]`. */
  get storeSpec(): string {
    return `etcd:${this.endpoints.join(',')}`;
  }

  get members(): EtcdMember[] {
    return this.#members.map((m) => ({
      name: m.name,
      clientUrl: m.clientUrl,
      peerUrl: m.peerUrl,
      dataDir: m.dataDir,
      logFile: m.logFile,
      pid: running(m.proc) ? m.proc?.pid : undefined,
      running: running(m.proc),
    }));
  }

  /** SIGKILLs one member by pid (an outage, not a clean stop) and waits until it has exited. */
  async kill(member: number | string = 0): Promise<void> {
    const m = this.#member(member);
    if (running(m.proc)) m.proc?.kill('SIGKILL');
    await m.exited;
  }

  /** Stops one member cleanly: SIGTERM, SIGKILL after a grace period. */
  async stopMember(member: number | string = 0): Promise<void> {
    const m = this.#member(member);
    await this.#terminate(m);
  }

  /** Starts a stopped member again with its data and ports, and waits until it is healthy. */
  async restart(member: number | string = 0): Promise<void> {
    const m = this.#member(member);
    if (this.#stopping) throw new Error('the etcd cluster is stopped');
    if (running(m.proc)) await this.#terminate(m);
    this.#spawn(m);
    await this.#waitHealthy(m);
  }

  /** The current revision, read from the first running member. */
  async revision(): Promise<number> {
    const answer = (await getJson(`${this.#anyRunning().clientUrl}/v3/kv/range`, {
      key: Buffer.from('\0').toString('base64'),
      limit: 1,
    })) as { header?: { revision?: string } };
    const revision = Number(answer.header?.revision);
    if (!Number.isSafeInteger(revision)) throw new Error('etcd answered no revision');
    return revision;
  }

  /**
   * Compacts the history at `revision` (default: the current one): afterwards a watch from
   * below it fails as compacted. Physical: returns once the members have dropped it.
   */
  async compact(revision?: number): Promise<number> {
    const at = revision ?? (await this.revision());
    await getJson(`${this.#anyRunning().clientUrl}/v3/kv/compaction`, {
      revision: String(at),
      physical: true,
    });
    return at;
  }

  /** Waits until every running member answers healthy (it has a leader). */
  async waitHealthy(): Promise<void> {
    await Promise.all(
      this.#members.filter((m) => running(m.proc)).map((m) => this.#waitHealthy(m)),
    );
  }

  /** The last `bytes` of a member's log, for a failing test's message. */
  logTail(member: number | string = 0, bytes = 4000): string {
    try {
      return readFileSync(this.#member(member).logFile, 'utf8').slice(-bytes);
    } catch {
      return '';
    }
  }

  /** Stops every member (SIGTERM, then SIGKILL) and removes the data directory. Idempotent. */
  stop(): Promise<void> {
    this.#stopping ??= (async () => {
      try {
        await Promise.all(this.#members.map((m) => this.#terminate(m)));
      } finally {
        await rm(this.dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 50 });
        live.untrack(this);
      }
    })();
    return this.#stopping;
  }

  /** The synchronous twin of stop(), for process 'exit' and signal handlers. */
  destroySync(): void {
    for (const m of this.#members) {
      if (running(m.proc)) {
        try {
          m.proc?.kill('SIGKILL');
        } catch {
          // Already gone.
        }
      }
    }
    try {
      // Retries: a member just sent SIGKILL may still be writing for a moment.
      rmSync(this.dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 50 });
    } catch {
      // Nothing more can be done while the process exits.
    }
    live.untrack(this);
  }

  // --- internals -----------------------------------------------------------------------------

  #member(member: number | string): MemberState {
    const m =
      typeof member === 'number'
        ? this.#members[member]
        : this.#members.find((x) => x.name === member);
    if (!m) throw new Error(`no etcd member ${String(member)}`);
    return m;
  }

  #anyRunning(): MemberState {
    const m = this.#members.find((x) => running(x.proc));
    if (!m) throw new Error('no etcd member is running');
    return m;
  }

  #spawn(m: MemberState): void {
    const args = [
      ...etcdMemberArgs({
        name: m.name,
        dataDir: m.dataDir,
        clientUrl: m.clientUrl,
        peerUrl: m.peerUrl,
        initialCluster: this.#initialCluster,
        clusterToken: this.#token,
      }),
      ...this.#args,
    ];
    const fd = openSync(m.logFile, 'a');
    let proc: ChildProcess;
    try {
      proc = spawn(this.#binary, args, { stdio: ['ignore', fd, fd], env: cleanEnv() });
    } finally {
      closeSync(fd); // the child has its own copy
    }
    m.proc = proc;
    m.spawnError = undefined;
    m.exited = new Promise((resolve) => {
      proc.once('exit', () => resolve());
      // A binary that cannot be started emits 'error' and never 'exit'.
      proc.once('error', (error) => {
        m.spawnError = error;
        resolve();
      });
    });
  }

  async #terminate(m: MemberState): Promise<void> {
    const proc = m.proc;
    if (proc && running(proc)) {
      proc.kill('SIGTERM');
      const timer = setTimeout(() => {
        if (running(proc)) proc.kill('SIGKILL');
      }, STOP_GRACE_MS);
      await m.exited;
      clearTimeout(timer);
    }
    await m.exited;
  }

  async #waitHealthy(m: MemberState): Promise<void> {
    const deadline = Date.now() + this.#startTimeoutMs;
    for (;;) {
      if (m.spawnError) {
        throw new Error(
          `etcd member ${m.name} did not start (is etcd-server installed?): ${m.spawnError.message}`,
        );
      }
      if (!running(m.proc)) {
        const proc = m.proc;
        const code = proc?.exitCode ?? null;
        const how = code !== null ? `with ${code}` : `by ${proc?.signalCode ?? 'a signal'}`;
        throw new Error(
          `etcd member ${m.name} exited ${how} before it was healthy (is etcd-server installed?):\n${this.logTail(m.name)}`,
        );
      }
      const health = (await getJson(`${m.clientUrl}/health`).catch(() => undefined)) as
        { health?: string } | undefined;
      if (health?.health === 'true') return;
      if (Date.now() > deadline) {
        throw new Error(
          `etcd member ${m.name} at ${m.clientUrl} was not healthy within ${this.#startTimeoutMs} ms:\n${this.logTail(m.name)}`,
        );
      }
      await sleep(POLL_MS);
    }
  }
}

/** Starts a throwaway etcd cluster (one member by default); see EtcdCluster. */
export function startEtcd(options: EtcdClusterOptions = {}): Promise<EtcdCluster> {
  return EtcdCluster.start(options);
}
