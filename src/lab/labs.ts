/**
 * Named labs for `ipferry lab`: labs that outlive the command that built them, so a person can
 * try ipferry by hand between `lab up` and `lab down`.
 *
 * A lab NAME is the namespaces `<base><NAME>-<host>` (base `ipfl-`, never the tests' `ipft-`)
 * plus a state file `<dir>/<NAME>.json` (dir `/run/ipferry-lab`, a tmpfs that, like the
 * namespaces, does not survive a reboot) and a directory `<dir>/<NAME>/` with the logs and the
 * agents' files. The state file records every process started for the lab — echo servers,
 * agents, etcd — by pid and start time (so a recycled pid is never killed), and is written
 * before anything exists, and again after each process is started, so a `lab up` killed at any
 * point leaves enough behind for `lab down` to remove it all. What even a lost state file cannot
 * hide is found by name: namespaces by the lab's prefix, agents and etcd by the lab namespace or
 * directory in their command line, WireGuard sockets by the names derived from the namespaces.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { IpferryError } from '../core/errors.js';
import { tunnelName } from '../core/tunnel.js';
import { cleanupLabs, LAB_PREFIX, listNamespaces } from './netns.js';
import { type Protocol, serviceProbe } from './probe.js';
import { killQuietly, startTimeOf } from './procs.js';
import { Lab } from './topology.js';
import { removeWireguardSockets, WIREGUARD_SOCKETS } from './wireguard.js';

/** Where state files live unless `--state-dir` or IPFERRY_LAB_DIR says otherwise. */
export const DEFAULT_LAB_DIR = '/run/ipferry-lab';
/** The namespace prefix of every `ipferry lab` lab (IPFERRY_LAB_PREFIX changes it, for tests). */
export const LAB_NAMESPACE_BASE = 'ipfl-';
/** A lab name: no `-`, so `<base><NAME>-` never is the prefix of another lab's namespaces. */
export const LAB_NAME = /^[a-z][a-z0-9]{0,15}$/;
const BASE = /^[a-z][a-z0-9]{3,15}-$/;

export const SCENARIOS = ['lan', 'cloud-home', 'old-new', 'fleet'] as const;
export type ScenarioName = (typeof SCENARIOS)[number];
export type TunnelDriver = 'wireguard' | 'tinc';

/** The ports every echo server of a lab answers on. */
export const ECHO_PORTS = { tcp: 80, udp: 5353 } as const;

/** Where the labs of this command live: the state directory and the namespace prefix base. */
export interface LabPlace {
  readonly dir: string;
  readonly base: string;
}

export interface LabHost {
  readonly name: string;
  readonly namespace: string;
  /** What the host plays in the scenario, in a few words. */
  readonly role: string;
  /** Its addresses, without prefix length, IPv4 first. */
  readonly addresses: readonly string[];
  /** The address `lab probe … HOST` goes to (the one its echo server answers on). */
  readonly probe?: string;
}

export type LabProcessKind = 'builder' | 'echo' | 'agent' | 'etcd';

/** A process started for the lab; `startTime` (from /proc) tells it from a recycled pid. */
export interface LabProcessRecord {
  readonly kind: LabProcessKind;
  /** The host (echo), node (agent) or `etcd`. */
  readonly name: string;
  readonly pid: number;
  readonly startTime?: string;
  readonly log?: string;
}

export interface LabAgentRecord {
  readonly node: string;
  readonly host: string;
  readonly url: string;
  readonly tokenFile: string;
  readonly store: string;
  readonly log: string;
}

export interface LabState {
  readonly version: 1;
  readonly name: string;
  readonly scenario: ScenarioName;
  readonly title: string;
  readonly options: {
    readonly agents: boolean;
    readonly tunnel?: TunnelDriver;
    readonly perSite?: number;
  };
  /** Namespace prefix: `<base><name>-`. */
  readonly prefix: string;
  /** The lab's own directory: logs, agent files. */
  readonly dir: string;
  readonly createdAt: string;
  status: 'building' | 'ready';
  hosts: LabHost[];
  /** What the scenario's provider routes to its gateway. */
  pool?: { readonly v4: string; readonly v6?: string; readonly routedTo: string };
  /** The pool `lab up --agents` created on the gateway: part of `pool`, and a shared address. */
  agentPool?: {
    readonly name: string;
    readonly gateway: string;
    readonly entries: readonly string[];
    readonly shared: readonly string[];
  };
  echo: { readonly tcp: number; readonly udp: number; hosts: string[] };
  processes: LabProcessRecord[];
  agents: LabAgentRecord[];
  etcd?: { readonly url: string; readonly dataDir: string };
  /** WireGuard interface names whose control sockets `lab down` removes. */
  tunnels: string[];
  /** What to try next, as commands. */
  next: string[];
}

// ---------------------------------------------------------------------------------------------
// Names and places

function usage(summary: string): IpferryError {
  return new IpferryError('IPF_E_USAGE', { summary });
}

/**
 * The state directory (`--state-dir`, else IPFERRY_LAB_DIR, else /run/ipferry-lab) and the
 * namespace base (IPFERRY_LAB_PREFIX, else `ipfl-`). A base must not be the tests' `ipft-`: a
 * `lab down --all` would then sweep the labs of running tests.
 */
export function labPlace(
  env: Readonly<Record<string, string | undefined>>,
  stateDir?: string,
): LabPlace {
  const dir = stateDir ?? (env['IPFERRY_LAB_DIR'] || DEFAULT_LAB_DIR);
  const base = env['IPFERRY_LAB_PREFIX'] || LAB_NAMESPACE_BASE;
  if (!BASE.test(base) || base === LAB_PREFIX) {
    throw usage(
      `IPFERRY_LAB_PREFIX "${base}" must be 4–16 of [a-z0-9] starting with a letter, then "-", and not "${LAB_PREFIX}"`,
    );
  }
  return { dir, base };
}

export function checkLabName(name: string): string {
  if (!LAB_NAME.test(name)) {
    throw usage(
      `lab name "${name}" must be 1–16 lowercase letters and digits, starting with a letter`,
    );
  }
  return name;
}

export function labPrefix(place: LabPlace, name: string): string {
  return `${place.base}${name}-`;
}

export function labDir(place: LabPlace, name: string): string {
  return join(place.dir, name);
}

export function stateFile(place: LabPlace, name: string): string {
  return join(place.dir, `${name}.json`);
}

/** `ipfl-lan-gw` → `lan` for base `ipfl-`; undefined for a namespace of no lab. */
export function labOfNamespace(place: LabPlace, namespace: string): string | undefined {
  if (!namespace.startsWith(place.base)) return undefined;
  const rest = namespace.slice(place.base.length);
  const dash = rest.indexOf('-');
  const name = dash > 0 ? rest.slice(0, dash) : '';
  return LAB_NAME.test(name) ? name : undefined;
}

/** Refuses to go on without root: every lab command but `list` enters namespaces. */
export function requireRoot(): void {
  if (process.getuid?.() !== 0) {
    throw new IpferryError('IPF_E_KERNEL', {
      reason:
        '`ipferry lab` creates and enters network namespaces, which needs root: run it as root (sudo ipferry lab …)',
    });
  }
}

// ---------------------------------------------------------------------------------------------
// The state file

export function readState(place: LabPlace, name: string): LabState | undefined {
  let text: string;
  try {
    text = readFileSync(stateFile(place, name), 'utf8');
  } catch {
    return undefined;
  }
  try {
    const state = JSON.parse(text) as LabState;
    return state.version === 1 && state.name === name ? state : undefined;
  } catch {
    // A file cut short by a crash while it was written: the lab is found by its namespaces.
    return undefined;
  }
}

/** Writes the state file atomically (a reader sees the old or the new one, never half). */
export function writeState(place: LabPlace, state: LabState): void {
  mkdirSync(place.dir, { recursive: true, mode: 0o755 });
  const file = stateFile(place, state.name);
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(state, null, 2)}\n`);
  renameSync(tmp, file);
}

/** Names of the labs that have a state file (a valid one or not). */
function stateNames(place: LabPlace): string[] {
  let entries: string[];
  try {
    entries = readdirSync(place.dir);
  } catch {
    return [];
  }
  return entries
    .filter((f) => f.endsWith('.json'))
    .map((f) => f.slice(0, -'.json'.length))
    .filter((name) => LAB_NAME.test(name));
}

// ---------------------------------------------------------------------------------------------
// Processes

/** Whether the recorded process still runs (the same one: its start time matches). */
export function isRunning(record: Pick<LabProcessRecord, 'pid' | 'startTime'>): boolean {
  const now = startTimeOf(record.pid);
  return now !== undefined && now === record.startTime;
}

/**
 * Stops the recorded processes that still run: SIGTERM (an agent or wireguard-go cleans up
 * after itself), SIGKILL for what is left after `graceMs`. Resolves with how many it stopped.
 */
export async function stopProcesses(
  records: readonly LabProcessRecord[],
  graceMs = 3000,
): Promise<number> {
  const running = records.filter(isRunning);
  for (const r of running) killQuietly(r.pid, 'SIGTERM');
  const deadline = Date.now() + graceMs;
  while (running.some(isRunning) && Date.now() < deadline) await sleep(25);
  for (const r of running.filter(isRunning)) killQuietly(r.pid);
  for (let i = 0; i < 80 && running.some(isRunning); i++) await sleep(25);
  return running.length;
}

/** The synchronous SIGKILL of stopProcesses, for signal handlers. */
export function killProcessesSync(records: readonly LabProcessRecord[]): void {
  for (const r of records.filter(isRunning)) killQuietly(r.pid);
}

/**
 * Processes of the lab that no state file names (a `lab up` killed between starting one and
 * recording it, or a deleted state file): agents by `--netns <a lab namespace>`, agents and etcd
 * by a `--state-dir` / `--data-dir` inside the lab's directory. Processes inside the namespaces
 * need no search: deleting a namespace kills them.
 */
export function strayProcesses(prefix: string, dir: string): LabProcessRecord[] {
  const found: LabProcessRecord[] = [];
  const inDir = (arg: string | undefined): boolean => arg?.startsWith(`${dir}/`) === true;
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    let args: string[];
    try {
      args = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
    } catch {
      continue;
    }
    const ours = args.some((arg, i) => {
      const value = args[i + 1];
      if (arg === '--netns') return value?.startsWith(prefix) === true;
      return (arg === '--state-dir' || arg === '--data-dir') && inDir(value);
    });
    const startTime = startTimeOf(Number(entry));
    if (ours && startTime !== undefined) {
      found.push({ kind: 'agent', name: args[0] ?? '?', pid: Number(entry), startTime });
    }
  }
  return found;
}

/**
 * Starts a process detached from this one (own session, output to `log`, not waited for), so it
 * runs on after `lab up` exits and no terminal hang-up reaches it.
 */
export async function spawnDetached(
  argv: readonly string[],
  log: string,
  env: NodeJS.ProcessEnv = process.env,
): Promise<ChildProcess> {
  const [file, ...args] = argv;
  if (file === undefined) throw new Error('spawnDetached needs a command');
  const fd = openSync(log, 'a');
  let child: ChildProcess;
  try {
    child = spawn(file, args, { detached: true, stdio: ['ignore', fd, fd], env });
  } finally {
    closeSync(fd); // the child has its own copy
  }
  await new Promise<void>((resolve, reject) => {
    child.once('spawn', resolve);
    child.once('error', reject);
  });
  child.unref();
  return child;
}

/** The last `bytes` of a log, for an error message. */
export function logTail(log: string | undefined, bytes = 1500): string {
  if (log === undefined) return '';
  try {
    return readFileSync(log, 'utf8').slice(-bytes).trim();
  } catch {
    return '';
  }
}

// ---------------------------------------------------------------------------------------------
// lab list

export type LabCondition = 'up' | 'broken' | 'building' | 'crashed' | 'orphan';

export interface LabSummary {
  readonly name: string;
  readonly scenario?: ScenarioName;
  /**
   * up: built, every namespace and process there; broken: built, something gone; building: its
   * `lab up` still runs; crashed: its `lab up` died while building; orphan: namespaces without
   * a state file. Every one but `up` and `building` is for `lab down`.
   */
  readonly condition: LabCondition;
  readonly prefix: string;
  readonly namespaces: {
    readonly present: number;
    readonly expected?: number;
    readonly missing: readonly string[];
  };
  readonly processes?: { readonly running: number; readonly expected: number };
  readonly agents: number;
  readonly createdAt?: string;
  readonly stateFile?: string;
}

function condition(
  state: LabState | undefined,
  missing: number,
  stopped: number,
): LabSummary['condition'] {
  if (state === undefined) return 'orphan';
  if (state.status === 'building') {
    const builder = state.processes.find((p) => p.kind === 'builder');
    return builder !== undefined && isRunning(builder) ? 'building' : 'crashed';
  }
  return missing === 0 && stopped === 0 ? 'up' : 'broken';
}

/** Every lab that has a state file or namespaces, sorted by name. */
export async function listLabs(place: LabPlace): Promise<LabSummary[]> {
  const namespaces = await listNamespaces();
  const byLab = new Map<string, string[]>();
  for (const ns of namespaces) {
    const name = labOfNamespace(place, ns);
    if (name !== undefined) byLab.set(name, [...(byLab.get(name) ?? []), ns]);
  }
  const names = [...new Set([...stateNames(place), ...byLab.keys()])].sort();
  return names.map((name) => {
    const state = readState(place, name);
    const present = byLab.get(name) ?? [];
    const expected = state?.hosts.map((h) => h.namespace);
    const missing = (expected ?? []).filter((ns) => !present.includes(ns));
    const services = (state?.processes ?? []).filter((p) => p.kind !== 'builder');
    const running = services.filter(isRunning).length;
    return {
      name,
      ...(state === undefined ? {} : { scenario: state.scenario, createdAt: state.createdAt }),
      condition: condition(state, missing.length, services.length - running),
      prefix: labPrefix(place, name),
      namespaces: {
        present: present.length,
        ...(expected === undefined ? {} : { expected: expected.length }),
        missing,
      },
      ...(state === undefined ? {} : { processes: { running, expected: services.length } }),
      agents: state?.agents.length ?? 0,
      ...(existsSync(stateFile(place, name)) ? { stateFile: stateFile(place, name) } : {}),
    };
  });
}

// ---------------------------------------------------------------------------------------------
// lab down

export interface DownReport {
  readonly name: string;
  /** Processes stopped by pid: recorded ones and strays found by their command line. */
  readonly processes: number;
  readonly namespaces: readonly string[];
  readonly sockets: number;
  readonly hadState: boolean;
}

/** WireGuard sockets the lab's agents may have left: recorded, or derived from a namespace. */
function socketNames(place: LabPlace, state: LabState | undefined, namespaces: string[]): string[] {
  const names = new Set(state?.tunnels ?? []);
  for (const ns of namespaces) {
    // An agent names its tunnel after its node (the lab host) salted with its namespace.
    const host = ns.slice(ns.indexOf('-', place.base.length) + 1);
    names.add(tunnelName(host, host, ns));
  }
  return [...names];
}

function existingSockets(names: readonly string[]): number {
  let present: Set<string>;
  try {
    present = new Set(readdirSync(WIREGUARD_SOCKETS));
  } catch {
    return 0;
  }
  return names.filter((n) => present.has(`${n}.sock`)).length;
}

/**
 * Removes lab `name` whatever state it is in: its `lab up` if that still runs, every process
 * recorded or found by name, its namespaces (and with them what ran inside: echo servers,
 * wireguard-go, tincd), the WireGuard sockets, its directory and state file.
 */
export async function labDown(place: LabPlace, name: string): Promise<DownReport> {
  const prefix = labPrefix(place, name);
  const dir = labDir(place, name);
  const state = readState(place, name);
  const before = (await listNamespaces()).filter((ns) => ns.startsWith(prefix));
  const known = state !== undefined || before.length > 0 || existsSync(dir);
  if (!known && !existsSync(stateFile(place, name))) {
    throw new IpferryError('IPF_E_LAB_NOT_FOUND', { name });
  }
  const recorded = state?.processes ?? [];
  // A `lab up` still building would go on creating what we remove: it goes first, at once.
  // (Not this process: a failed `lab up` removes its own lab with this function.)
  const builders = recorded.filter(
    (p) => p.kind === 'builder' && p.pid !== process.pid && isRunning(p),
  );
  killProcessesSync(builders);
  // Agents next, before their namespaces go: they would otherwise rebuild what is removed.
  let stopped =
    builders.length + (await stopProcesses(recorded.filter((p) => p.kind !== 'builder')));
  stopped += await stopProcesses(strayProcesses(prefix, dir));
  const namespaces = await cleanupLabs(prefix);
  const sockets = socketNames(place, state, [...before, ...namespaces]);
  const removable = existingSockets(sockets);
  await removeWireguardSockets(sockets);
  rmSync(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 50 });
  rmSync(stateFile(place, name), { force: true });
  return {
    name,
    processes: stopped,
    namespaces: [...new Set([...before, ...namespaces])].sort(),
    sockets: removable,
    hadState: state !== undefined,
  };
}

/** `lab down --all`: every lab listLabs finds. */
export async function labDownAll(place: LabPlace): Promise<DownReport[]> {
  const reports: DownReport[] = [];
  for (const lab of await listLabs(place)) reports.push(await labDown(place, lab.name));
  return reports;
}

// ---------------------------------------------------------------------------------------------
// lab probe

export interface ProbeRequest {
  readonly from: string;
  /** A host of the lab (its probe address) or an IP address. */
  readonly to: string;
  readonly protocol: Protocol;
  readonly port?: number;
  readonly count?: number;
  readonly timeoutMs?: number;
}

export interface ProbeAttempt {
  /** Which echo server answered and which source address it saw. */
  readonly answeredBy?: string;
  readonly sawAddress?: string;
  /** Another service answered (no echo server): the first line it sent. */
  readonly reply?: string;
  /** TCP: the connection was accepted, but nothing came back (no echo server). */
  readonly connected?: boolean;
  readonly ms: number;
}

export interface ProbeResult {
  readonly lab: string;
  readonly from: string;
  readonly to: string;
  readonly address: string;
  readonly protocol: Protocol;
  readonly port: number;
  readonly attempts: readonly ProbeAttempt[];
  /** Attempts that something answered: an echo server, or another service. */
  readonly answered: number;
}

/** The state of a lab that must exist, for probe and show. */
export function requireState(place: LabPlace, name: string): LabState {
  const state = readState(place, name);
  if (state === undefined) throw new IpferryError('IPF_E_LAB_NOT_FOUND', { name });
  return state;
}

function resolveTarget(state: LabState, to: string): string {
  const host = state.hosts.find((h) => h.name === to);
  if (host !== undefined) {
    const address = host.probe ?? host.addresses[0];
    if (address === undefined) throw usage(`host ${to} of lab ${state.name} has no address`);
    return address;
  }
  if (isIP(to) === 0) {
    throw usage(
      `"${to}" is neither a host of lab ${state.name} (${state.hosts.map((h) => h.name).join(', ')}) nor an IP address`,
    );
  }
  return to;
}

/**
 * Asks an echo server from a host of the lab: which server answered and which source address
 * it saw, `count` times, one after the other.
 */
export async function labProbe(
  place: LabPlace,
  name: string,
  request: ProbeRequest,
): Promise<ProbeResult> {
  const state = requireState(place, name);
  if (!state.hosts.some((h) => h.name === request.from)) {
    throw usage(
      `lab ${name} has no host "${request.from}" (its hosts: ${state.hosts.map((h) => h.name).join(', ')})`,
    );
  }
  const address = resolveTarget(state, request.to);
  const port = request.port ?? (request.protocol === 'tcp' ? state.echo.tcp : state.echo.udp);
  const lab = Lab.attach({
    prefix: state.prefix,
    hosts: state.hosts.map((h) => ({ name: h.name })),
    links: [],
  });
  const attempts: ProbeAttempt[] = [];
  for (let i = 0; i < (request.count ?? 1); i++) {
    const start = performance.now();
    const reply = await serviceProbe(
      lab,
      request.from,
      request.protocol,
      address,
      port,
      request.timeoutMs ?? 2000,
    );
    const ms = Math.round((performance.now() - start) * 10) / 10;
    attempts.push(
      reply?.kind === 'echo'
        ? { answeredBy: reply.echo.name, sawAddress: reply.echo.address, ms }
        : reply?.kind === 'other'
          ? { reply: reply.text, ms }
          : reply?.kind === 'silent'
            ? { connected: true, ms }
            : { ms },
    );
  }
  return {
    lab: name,
    from: request.from,
    to: request.to,
    address,
    protocol: request.protocol,
    port,
    attempts,
    answered: attempts.filter(
      (a) => a.answeredBy !== undefined || a.reply !== undefined || a.connected === true,
    ).length,
  };
}
