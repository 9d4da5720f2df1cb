/**
 * Topologies as code: a `Lab` is a set of network namespaces ("hosts") joined by veth cables
 * and bridges, built from a declarative `LabSpec`. Tests create one in `before()` and destroy
 * it in `after()`; demos and benchmarks reuse the same specs.
 *
 * Cleanup is layered so that nothing survives a run:
 * - `create` destroys what it built when any step fails, then rethrows;
 * - `destroy()` stops the lab's processes by pid and deletes its namespaces (idempotent);
 * - a process 'exit' / SIGINT / SIGTERM handler deletes the namespaces of labs still alive;
 * - `cleanupLabs(prefix)` sweeps what a SIGKILLed run left behind.
 */
import { spawn as spawnChild, type ChildProcess } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ExecResult } from '../dataplane/exec.js';
import { IpferryError } from '../core/errors.js';
import {
  addAddress,
  addBridge,
  addNamespace,
  addRoute,
  addVeth,
  assertIfname,
  deleteNamespace,
  deleteNamespaceSync,
  linkUp,
  nsExec,
  randomPrefix,
  type RouteSpec,
  setMaster,
  setSysctl,
  waitLinksReady,
} from './netns.js';
import { ExitCleanup } from './exit-cleanup.js';

export type { RouteSpec } from './netns.js';

export interface BridgeSpec {
  readonly name: string;
  readonly addresses?: readonly string[];
  /**
   * Whether bridged frames traverse the host's IP netfilter hooks (br_netfilter). The kernel
   * default in a new namespace is on when br_netfilter is present; a lab bridge plays a plain
   * switch, so the default here is off.
   */
  readonly netfilter?: boolean;
}

export interface HostSpec {
  readonly name: string;
  /** Forwarding for IPv4 and IPv6; set explicitly either way (IPv4 settings can be inherited). */
  readonly router?: boolean;
  readonly bridges?: readonly BridgeSpec[];
  readonly routes?: readonly RouteSpec[];
  /** Extra sysctls, applied before any interface exists. */
  readonly sysctls?: Readonly<Record<string, string | number>>;
}

export interface LinkEnd {
  readonly host: string;
  readonly ifname: string;
  readonly addresses?: readonly string[];
  /** Enslave this end to a bridge of its host instead of addressing it. */
  readonly bridge?: string;
}

export interface LinkSpec {
  readonly a: LinkEnd;
  readonly b: LinkEnd;
}

export interface LabSpec {
  /** Namespace name prefix; default a fresh `ipft-xxxxxx-`. */
  readonly prefix?: string;
  readonly hosts: readonly HostSpec[];
  readonly links: readonly LinkSpec[];
}

export interface SpawnOptions {
  /** Resolve only once stdout matches this (e.g. 'ready'); otherwise as soon as it started. */
  readonly ready?: string | RegExp;
  /** How long to wait for `ready` (default 10 s); the process is killed when it is late. */
  readonly timeoutMs?: number;
  readonly env?: NodeJS.ProcessEnv;
}

export interface ExitStatus {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

/** A long-running process inside a lab host, tracked by the lab and stopped by pid. */
export interface LabProcess {
  readonly host: string;
  readonly pid: number;
  readonly argv: readonly string[];
  /** Everything written to stdout so far (the last 1 MiB). */
  stdout(): string;
  stderr(): string;
  /** Settles when the process has exited. */
  readonly exited: Promise<ExitStatus>;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves once it has exited. */
  stop(graceMs?: number): Promise<void>;
}

const OUTPUT_CAP = 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Labs still alive in this process, for the synchronous exit / signal cleanup.

/** Destroyed on exit and signals while tracked (see exit-cleanup.ts). */
const live = new ExitCleanup<Lab>();

// ---------------------------------------------------------------------------------------------

function specError(reason: string): IpferryError {
  return new IpferryError('IPF_E_DATAPLANE', { reason: `lab spec: ${reason}` });
}

/**
 * Runs steps concurrently but waits for all of them before failing, so `destroy` never races a
 * step that is still creating something.
 */
async function allOrThrow(steps: Promise<unknown>[]): Promise<void> {
  const results = await Promise.allSettled(steps);
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
}

function validate(spec: LabSpec): void {
  const hosts = new Map<string, HostSpec>();
  for (const host of spec.hosts) {
    if (hosts.has(host.name)) throw specError(`host "${host.name}" appears twice`);
    hosts.set(host.name, host);
    for (const bridge of host.bridges ?? []) assertIfname(bridge.name);
  }
  const used = new Set<string>();
  for (const end of spec.links.flatMap((l) => [l.a, l.b])) {
    const host = hosts.get(end.host);
    if (!host) throw specError(`link end on unknown host "${end.host}"`);
    assertIfname(end.ifname);
    const key = `${end.host}/${end.ifname}`;
    if (used.has(key)) throw specError(`interface ${key} appears twice`);
    used.add(key);
    if (end.bridge !== undefined && !host.bridges?.some((b) => b.name === end.bridge)) {
      throw specError(`${key} joins unknown bridge "${end.bridge}"`);
    }
  }
}

class TrackedProcess implements LabProcess {
  readonly exited: Promise<ExitStatus>;
  #stdout = '';
  #stderr = '';
  #status: ExitStatus | undefined;

  constructor(
    readonly host: string,
    readonly argv: readonly string[],
    readonly child: ChildProcess,
  ) {
    this.exited = new Promise((resolve) => {
      const settle = (code: number | null, signal: NodeJS.Signals | null): void => {
        this.#status ??= { code, signal };
        resolve(this.#status);
      };
      child.on('exit', settle);
      // A process that could not be started emits 'error' and may never emit 'exit'.
      child.on('error', () => settle(null, null));
    });
    child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
      this.#stdout = (this.#stdout + chunk).slice(-OUTPUT_CAP);
    });
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
      this.#stderr = (this.#stderr + chunk).slice(-OUTPUT_CAP);
    });
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  get running(): boolean {
    return this.#status === undefined && this.child.pid !== undefined;
  }

  stdout(): string {
    return this.#stdout;
  }

  stderr(): string {
    return this.#stderr;
  }

  async stop(graceMs = 2000): Promise<void> {
    if (!this.running) return;
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(timer);
  }

  killSync(): void {
    if (this.running) this.child.kill('SIGKILL');
  }
}

export class Lab {
  readonly prefix: string;
  readonly spec: LabSpec;
  /** Namespaces that exist (or may exist): filled as they are created, emptied by destroy. */
  readonly #namespaces = new Set<string>();
  readonly #processes = new Set<TrackedProcess>();
  #destroying: Promise<void> | undefined;

  private constructor(spec: LabSpec) {
    this.spec = spec;
    this.prefix = spec.prefix ?? randomPrefix();
  }

  /** Builds the lab; on failure removes whatever it had built and rethrows. */
  static async create(spec: LabSpec): Promise<Lab> {
    validate(spec);
    const lab = new Lab(spec);
    live.track(lab);
    try {
      await lab.#build();
      return lab;
    } catch (error) {
      await lab.destroy();
      throw error;
    }
  }

  /**
   * A handle on a lab that exists already, built by another process (`ipferry lab up`): for
   * exec, spawn and the probes. It is not tracked for the exit cleanup and owns no namespace,
   * so neither this process's exit nor its destroy() deletes anything of the lab.
   */
  static attach(spec: LabSpec & { readonly prefix: string }): Lab {
    validate(spec);
    return new Lab(spec);
  }

  /**
   * Lets the lab outlive this process (`ipferry lab up`): it leaves the exit and signal cleanup
   * and forgets its namespaces, so destroy() no longer deletes them. Processes started with
   * spawn() stay tracked (they hold this process's pipes): start long-lived ones detached.
   */
  detach(): void {
    this.#namespaces.clear();
    live.untrack(this);
  }

  /** Logical host names, in spec order. */
  get hosts(): readonly string[] {
    return this.spec.hosts.map((h) => h.name);
  }

  get links(): readonly LinkSpec[] {
    return this.spec.links;
  }

  /** The namespace of a host: `<prefix><host>`. Throws for a host the lab does not have. */
  ns(host: string): string {
    if (!this.spec.hosts.some((h) => h.name === host)) {
      throw new IpferryError('IPF_E_DATAPLANE', { reason: `lab has no host "${host}"` });
    }
    return `${this.prefix}${host}`;
  }

  /** Every interface name the lab creates (bridges and veth ends), deduplicated. */
  interfaceNames(): string[] {
    const names = [
      ...this.spec.hosts.flatMap((h) => (h.bridges ?? []).map((b) => b.name)),
      ...this.spec.links.flatMap((l) => [l.a.ifname, l.b.ifname]),
    ];
    return [...new Set(names)];
  }

  /** Runs a short command inside a host; throws IPF_E_DATAPLANE on a non-zero exit. */
  exec(
    host: string,
    argv: readonly string[],
    options: { input?: string; timeoutMs?: number } = {},
  ): Promise<ExecResult> {
    return nsExec(this.ns(host), argv, options);
  }

  /**
   * Starts a long-running process inside a host. `ip netns exec` execs the command in place,
   * so the pid we hold is the program's own and stop() reaches it directly.
   */
  async spawn(
    host: string,
    argv: readonly string[],
    options: SpawnOptions = {},
  ): Promise<LabProcess> {
    if (this.#destroying) throw new IpferryError('IPF_E_DATAPLANE', { reason: 'lab is destroyed' });
    const child = spawnChild('ip', ['netns', 'exec', this.ns(host), ...argv], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: options.env ?? process.env,
    });
    const proc = new TrackedProcess(host, argv, child);
    this.#processes.add(proc);
    void proc.exited.then(() => this.#processes.delete(proc));
    await started(child);
    if (options.ready !== undefined)
      await waitReady(proc, options.ready, options.timeoutMs ?? 10_000);
    return proc;
  }

  /** Stops tracked processes, deletes the namespaces. Idempotent; safe after a failed create. */
  destroy(): Promise<void> {
    this.#destroying ??= this.#teardown();
    return this.#destroying;
  }

  /** Synchronous destroy for exit and signal handlers; prefer destroy(). */
  destroySync(): void {
    for (const proc of this.#processes) proc.killSync();
    for (const ns of this.#namespaces) deleteNamespaceSync(ns);
    this.#namespaces.clear();
    live.untrack(this);
  }

  async #teardown(): Promise<void> {
    await Promise.all([...this.#processes].map((p) => p.stop()));
    // deleteNamespace also kills whatever else still runs inside (children of our processes).
    await allOrThrow([...this.#namespaces].map((ns) => deleteNamespace(ns)));
    this.#namespaces.clear();
    live.untrack(this);
  }

  // Build phases, in the order the kernel needs them: namespaces and their sysctls before any
  // interface (so `default` sysctls apply to new interfaces), interfaces before addresses,
  // links up before routes (a gateway must be reachable on an up link).
  async #build(): Promise<void> {
    await allOrThrow(this.spec.hosts.map((h) => this.#addHost(h)));
    await allOrThrow(this.spec.hosts.map((h) => this.#addBridges(h)));
    // One `ip link add` at a time: veth creation takes the RTNL lock anyway.
    for (const link of this.spec.links) await this.#addLink(link);
    await allOrThrow(
      this.spec.links.flatMap((l) => [this.#configureEnd(l.a), this.#configureEnd(l.b)]),
    );
    await allOrThrow(this.spec.hosts.map((h) => this.#waitLinks(h)));
    await allOrThrow(this.spec.hosts.map((h) => this.#addRoutes(h)));
  }

  async #addHost(host: HostSpec): Promise<void> {
    const ns = this.ns(host.name);
    await addNamespace(ns);
    this.#namespaces.add(ns);
    for (const [key, value] of Object.entries(hostSysctls(host))) await setSysctl(ns, key, value);
  }

  async #addBridges(host: HostSpec): Promise<void> {
    const ns = this.ns(host.name);
    for (const bridge of host.bridges ?? []) {
      await addBridge(ns, bridge.name);
      await this.#bridgeNetfilter(ns, bridge.netfilter ?? false);
      for (const cidr of bridge.addresses ?? []) await addAddress(ns, bridge.name, cidr);
      await linkUp(ns, bridge.name);
    }
  }

  async #bridgeNetfilter(ns: string, on: boolean): Promise<void> {
    const value = on ? 1 : 0;
    for (const proto of ['iptables', 'ip6tables', 'arptables']) {
      await setSysctl(ns, `net.bridge.bridge-nf-call-${proto}`, value, true);
    }
  }

  async #addLink(link: LinkSpec): Promise<void> {
    await addVeth(
      { ns: this.ns(link.a.host), ifname: link.a.ifname },
      { ns: this.ns(link.b.host), ifname: link.b.ifname },
    );
  }

  async #configureEnd(end: LinkEnd): Promise<void> {
    const ns = this.ns(end.host);
    if (end.bridge !== undefined) await setMaster(ns, end.ifname, end.bridge);
    for (const cidr of end.addresses ?? []) await addAddress(ns, end.ifname, cidr);
    await linkUp(ns, end.ifname);
  }

  /** See waitLinksReady: a lab is ready only when its cables and bridges carry packets. */
  async #waitLinks(host: HostSpec): Promise<void> {
    const ends = this.spec.links.flatMap((l) => [l.a, l.b]).filter((e) => e.host === host.name);
    // A bridge without ports never gets a carrier: wait only for bridges that have some.
    const bridges = (host.bridges ?? []).filter((b) => ends.some((e) => e.bridge === b.name));
    const names = [...ends.map((e) => e.ifname), ...bridges.map((b) => b.name)];
    await waitLinksReady(this.ns(host.name), names);
  }

  async #addRoutes(host: HostSpec): Promise<void> {
    for (const route of host.routes ?? []) await addRoute(this.ns(host.name), route);
  }
}

/**
 * Sysctls every host gets: forwarding set explicitly (a new namespace may inherit IPv4 settings
 * from the root one), and no duplicate address detection, so link-local addresses are usable
 * immediately like the `nodad` global ones.
 */
function hostSysctls(host: HostSpec): Record<string, string | number> {
  const forwarding = host.router ? 1 : 0;
  return {
    'net.ipv6.conf.all.accept_dad': 0,
    'net.ipv6.conf.default.accept_dad': 0,
    'net.ipv4.ip_forward': forwarding,
    'net.ipv6.conf.all.forwarding': forwarding,
    ...host.sysctls,
  };
}

function started(child: ChildProcess): Promise<void> {
  return new Promise((resolve, reject) => {
    child.once('spawn', () => resolve());
    child.once('error', (error) =>
      reject(new IpferryError('IPF_E_DATAPLANE', { reason: `cannot start ip: ${error.message}` })),
    );
  });
}

/** Polls the process's stdout for `ready`; fails (and kills it) on exit or timeout. */
async function waitReady(
  proc: TrackedProcess,
  ready: string | RegExp,
  timeoutMs: number,
): Promise<void> {
  const matches = (): boolean =>
    typeof ready === 'string' ? proc.stdout().includes(ready) : ready.test(proc.stdout());
  const deadline = Date.now() + timeoutMs;
  while (!matches()) {
    const why = !proc.running
      ? 'exited'
      : Date.now() > deadline
        ? `not ready after ${timeoutMs} ms`
        : '';
    if (why !== '') {
      await proc.stop(0);
      const detail = `${proc.argv.join(' ')} on ${proc.host} ${why}: ${proc.stderr().trim()}`;
      throw new IpferryError('IPF_E_DATAPLANE', { reason: detail });
    }
    await sleep(20);
  }
}
