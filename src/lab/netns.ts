/**
 * Network-namespace primitives for the lab: thin wrappers over `ip` and `sysctl`, run with
 * execFile (never a shell) through the dataplane's `run`, so a failure is an
 * IpferryError('IPF_E_DATAPLANE') carrying argv and stderr.
 *
 * Nothing here touches the root network namespace: links are created directly inside their
 * namespaces (`ip link add … netns A … peer … netns B`), addresses, routes and sysctls are set
 * with `ip -n NS` / `ip netns exec NS`. Every namespace name starts with a lab prefix so that a
 * crashed run can be swept with `cleanupLabs(prefix)`.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { run, type ExecResult } from '../dataplane/exec.js';
import { IpferryError } from '../core/errors.js';
import { killQuietly } from './procs.js';

/** The prefix every lab namespace starts with unless a lab chooses its own. */
export const LAB_PREFIX = 'ipft-';

// Interface names: IFNAMSIZ is 16 bytes including the NUL; `/` and whitespace are rejected by
// the kernel, and we stay with a conservative set so names are safe in argv and nft rules.
const IFNAME = /^[A-Za-z0-9_.-]{1,15}$/;
// Namespace names become files under /run/netns: keep them short and path-safe.
const NSNAME = /^[A-Za-z0-9_.-]{1,64}$/;

function invalid(reason: string): IpferryError {
  return new IpferryError('IPF_E_DATAPLANE', { reason });
}

export function assertIfname(name: string): void {
  if (!IFNAME.test(name)) throw invalid(`interface name "${name}" is not 1–15 of [A-Za-z0-9_.-]`);
}

export function assertNsName(name: string): void {
  if (!NSNAME.test(name)) throw invalid(`namespace name "${name}" is not 1–64 of [A-Za-z0-9_.-]`);
}

/** A fresh prefix such as `ipft-k3x9qa-`: unique per lab, so parallel test files never collide. */
export function randomPrefix(base: string = LAB_PREFIX): string {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789';
  const suffix = [...randomBytes(6)].map((b) => alphabet[b % alphabet.length]).join('');
  return `${base}${suffix}-`;
}

/** `ip -6` when the arguments are IPv6, so `default via 2001:db8::1` is not read as IPv4. */
function family(...addresses: (string | undefined)[]): string[] {
  return addresses.some((a) => a?.includes(':')) ? ['-6'] : [];
}

/**
 * Creates a namespace and brings its loopback up (a fresh namespace has `lo` down). All or
 * nothing: when `lo` cannot be brought up the namespace is deleted again, so a caller that
 * registers the name only after success never leaks it. It fails when the name exists, so it
 * never adopts (and later deletes) someone else's namespace.
 */
export async function addNamespace(name: string): Promise<void> {
  assertNsName(name);
  await run('ip', ['netns', 'add', name]);
  try {
    await run('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
  } catch (error) {
    await deleteNamespace(name);
    throw error;
  }
}

/** Names of all namespaces known to `ip netns` (ids stripped). */
export async function listNamespaces(): Promise<string[]> {
  const { stdout } = await run('ip', ['netns', 'list']);
  return parseNetnsList(stdout);
}

export function parseNetnsList(stdout: string): string[] {
  // Lines look like `name` or `name (id: 3)`.
  return stdout
    .split('\n')
    .map((line) => line.trim().split(/\s+/)[0] ?? '')
    .filter((name) => name !== '');
}

/** Pids of processes whose network namespace is `name` (empty when it does not exist). */
export async function namespacePids(name: string): Promise<number[]> {
  try {
    const { stdout } = await run('ip', ['netns', 'pids', name]);
    return parsePids(stdout);
  } catch {
    return [];
  }
}

/** The synchronous twin of namespacePids, for process 'exit' and signal handlers. */
export function namespacePidsSync(name: string): number[] {
  try {
    const out = execFileSync('ip', ['netns', 'pids', name], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    return parsePids(out);
  } catch {
    return []; // The namespace is gone.
  }
}

function parsePids(stdout: string): number[] {
  return stdout
    .split(/\s+/)
    .filter((s) => /^\d+$/.test(s))
    .map(Number);
}

/**
 * Kills every process left inside the namespace, then deletes it. Killing first matters: a
 * process keeps a deleted namespace alive (with its veths and sockets) until it exits.
 * Missing namespaces are not an error, so this is safe to repeat.
 */
export async function deleteNamespace(name: string): Promise<void> {
  // SIGTERM first: daemons such as wireguard-go remove their control sockets (which live in one
  // directory for the whole machine) only when asked to stop; what is left gets SIGKILL.
  const pids = await namespacePids(name);
  for (const pid of pids) killQuietly(pid, 'SIGTERM');
  for (let i = 0; i < 20 && (await namespacePids(name)).length > 0; i++) await sleep(25);
  for (const pid of await namespacePids(name)) killQuietly(pid);
  try {
    await run('ip', ['netns', 'del', name]);
  } catch (error) {
    if ((await listNamespaces()).includes(name)) throw error;
  }
}

/** The synchronous twin of deleteNamespace, for process 'exit' and signal handlers. */
export function deleteNamespaceSync(name: string): void {
  for (const pid of namespacePidsSync(name)) killQuietly(pid);
  try {
    execFileSync('ip', ['netns', 'del', name], { stdio: 'ignore' });
  } catch {
    // Namespace already gone.
  }
}

/**
 * Deletes every namespace whose name starts with `prefix` (and kills its processes): the sweep
 * for runs that crashed before destroying their labs. Returns the names it deleted.
 * Note the default sweeps every lab on the machine, including ones of concurrently running
 * tests: tests pass their own lab's prefix.
 */
export async function cleanupLabs(prefix: string = LAB_PREFIX): Promise<string[]> {
  if (prefix.length < 3) throw invalid(`refusing to clean up by the too-short prefix "${prefix}"`);
  const names = (await listNamespaces()).filter((name) => name.startsWith(prefix));
  for (const name of names) await deleteNamespace(name);
  return names;
}

/** Runs argv inside the namespace (`ip netns exec`); throws on a non-zero exit. */
export async function nsExec(
  ns: string,
  argv: readonly string[],
  options: { input?: string; timeoutMs?: number } = {},
): Promise<ExecResult> {
  const [file, ...args] = argv;
  if (file === undefined) throw invalid('nsExec needs a command');
  return run('ip', ['netns', 'exec', ns, file, ...args], options);
}

/** Sets a sysctl inside the namespace; `optional` ignores keys this kernel does not have. */
export async function setSysctl(
  ns: string,
  key: string,
  value: string | number,
  optional = false,
): Promise<void> {
  // `-e` makes sysctl ignore unknown keys (e.g. net.bridge.* without br_netfilter).
  const flags = optional ? '-qew' : '-qw';
  await nsExec(ns, ['sysctl', flags, `${key}=${String(value)}`]);
}

export interface VethEnd {
  readonly ns: string;
  readonly ifname: string;
}

/**
 * One cable between two namespaces, created directly in both (never in the root namespace,
 * not even briefly). `name` is spelled out: a bare `ip link add br …` would parse `br` as
 * the abbreviation of `broadcast`.
 */
export async function addVeth(a: VethEnd, b: VethEnd): Promise<void> {
  assertIfname(a.ifname);
  assertIfname(b.ifname);
  await run('ip', [
    'link',
    'add',
    'name',
    a.ifname,
    'netns',
    a.ns,
    'type',
    'veth',
    'peer',
    'name',
    b.ifname,
    'netns',
    b.ns,
  ]);
}

/** A Linux bridge inside the namespace, without STP so ports forward as soon as they are up. */
export async function addBridge(ns: string, ifname: string): Promise<void> {
  assertIfname(ifname);
  await run('ip', [
    '-n',
    ns,
    'link',
    'add',
    'name',
    ifname,
    'type',
    'bridge',
    'stp_state',
    '0',
    'forward_delay',
    '0',
  ]);
}

export async function setMaster(ns: string, ifname: string, bridge: string): Promise<void> {
  await run('ip', ['-n', ns, 'link', 'set', 'dev', ifname, 'master', bridge]);
}

export async function linkUp(ns: string, ifname: string): Promise<void> {
  await run('ip', ['-n', ns, 'link', 'set', 'dev', ifname, 'up']);
}

/** Adds `cidr` (v4 or v6); IPv6 gets `nodad` so it is usable at once instead of after ~1 s. */
export async function addAddress(ns: string, ifname: string, cidr: string): Promise<void> {
  const nodad = cidr.includes(':') ? ['nodad'] : [];
  await run('ip', ['-n', ns, 'address', 'add', cidr, 'dev', ifname, ...nodad]);
}

interface IpLink {
  ifname?: string;
  operstate?: string;
  addr_info?: { family?: string }[];
}

interface IpRoute {
  type?: string;
  dst?: string;
  dev?: string;
}

/**
 * Interfaces of `ifnames` that do not carry packets yet: not operationally UP, or with IPv6
 * on but not configured by the kernel yet — the sign is the `multicast ff00::/8` route in the
 * local table, without which incoming neighbour solicitations are dropped.
 */
export async function linksNotReady(ns: string, ifnames: readonly string[]): Promise<string[]> {
  const [links, routes] = await Promise.all([
    run('ip', ['-j', '-n', ns, 'address', 'show']),
    run('ip', ['-j', '-n', ns, '-6', 'route', 'show', 'table', 'local']),
  ]);
  const multicast = new Set(
    (JSON.parse(routes.stdout) as IpRoute[])
      .filter((r) => r.type === 'multicast' && r.dst === 'ff00::/8')
      .map((r) => r.dev),
  );
  const ready = (JSON.parse(links.stdout) as IpLink[]).filter((link) => {
    const v6 = (link.addr_info ?? []).some((a) => a.family === 'inet6');
    return link.operstate === 'UP' && (!v6 || multicast.has(link.ifname));
  });
  const names = new Set(ready.map((l) => l.ifname));
  return ifnames.filter((name) => !names.has(name));
}

/**
 * Waits until the interfaces carry packets. Right after `ip link set up` a veth end may stay
 * unready for up to a second: the kernel's linkwatch treats the carrier change as non-urgent
 * when the device's ifindex equals its peer's (common across namespaces, where indexes restart
 * at 2), and IPv6 configures the interface only when linkwatch gets to it. Until then incoming
 * neighbour solicitations are dropped, so the first IPv6 connection takes an extra second.
 */
export async function waitLinksReady(
  ns: string,
  ifnames: readonly string[],
  timeoutMs = 3000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const pending = await linksNotReady(ns, ifnames);
    if (pending.length === 0) return;
    if (Date.now() > deadline) {
      throw invalid(`${ns}: ${pending.join(', ')} not ready after ${timeoutMs} ms`);
    }
    await sleep(25);
  }
}

export interface RouteSpec {
  /** Destination prefix or `default`. */
  readonly to: string;
  readonly via?: string;
  readonly dev?: string;
}

export async function addRoute(ns: string, route: RouteSpec): Promise<void> {
  const via = route.via === undefined ? [] : ['via', route.via];
  const dev = route.dev === undefined ? [] : ['dev', route.dev];
  await run('ip', [
    '-n',
    ns,
    ...family(route.to, route.via),
    'route',
    'add',
    route.to,
    ...via,
    ...dev,
  ]);
}
