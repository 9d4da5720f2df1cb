/**
 * The Linux dataplane: nftables (one `inet ipferry` table of maps and sets), routes and rules,
 * claims on uplinks, sysctls and connection tracking, driven by `nft`, `ip`, `sysctl` and
 * `conntrack` through execFile; tunnels by their drivers (./tunnel).
 *
 * - observe: each manager (./linux) reads its share of the kernel, all at once.
 * - apply: the managers' steps in order — sysctls, claims added, routes and rules added, the
 *   nftables transaction, routes and rules deleted, claims released, conntrack entries of moved
 *   or released FIPs deleted — additions before deletions, so nothing is ever briefly missing.
 *   When a step fails, the steps done before it are undone, last first, and its error thrown:
 *   the kernel is left as the apply found it.
 * - Everything runs inside `netns` when given (the lab, tests); never a shell.
 */
import { spawn } from 'node:child_process';
import { IpferryError } from '../core/errors.js';
import { type DefaultRoute, type HostFacts, isHandledInterfaceName } from '../intent/facts.js';
import type { IntentElement } from '../intent/elements.js';
import type { IntentDiff } from '../intent/diff.js';
import { tryParseAddress } from '../core/address.js';
import { claimLabel, NFT_FAMILY, NFT_TABLE, ROUTE_PROTO } from '../core/names.js';
import { DEFAULT_STATE_DIR } from '../core/defaults.js';
import type { TunnelHealth } from '../core/model.js';
import type { TunnelCheck } from '../core/tunnelhealth.js';
import type { FipCounter, PathProbeRequest } from './dataplane.js';
import { TUNNEL_IFNAME_PREFIX, type TunnelIntent } from '../core/tunnel.js';
import { WireGuardDriver } from './tunnel/wireguard.js';
import { TincDriver } from './tunnel/tinc.js';
import type { TunnelDriver, TunnelLogger } from './tunnel/driver.js';
import type { TunnelDriverKind } from '../core/tunnel.js';
import type { Dataplane } from './dataplane.js';
import { type ExecResult, run, type RunOptions } from './exec.js';
import { parseCounters, renderTable } from './nft/ruleset.js';
import { ClaimsManager } from './linux/claims.js';
import { ConntrackManager } from './linux/conntrack.js';
import { applySteps, type BeforeStep, type Exec, stepOf } from './linux/manager.js';
import { nftCommand, NftManager } from './linux/nft.js';
import { RoutingManager } from './linux/routing.js';
import { SysctlManager } from './linux/sysctl.js';

export interface LinuxDataplaneOptions {
  /** Network namespace to act in (`ip netns exec`); the current one when absent. */
  readonly netns?: string;
  /** Where the tunnel driver keeps this node's tunnel key and daemon files. */
  readonly stateDir?: string;
  /** Which tunnel this node runs (default WireGuard). */
  readonly tunnelDriver?: TunnelDriverKind;
  /** This node's name (tinc names its configuration after it). */
  readonly node?: string;
  /** Where the tunnel drivers say what they did (a daemon started, restarted, killed). */
  readonly log?: TunnelLogger;
  /** Called before each step of an apply, by its name: tests make a step fail here. */
  readonly beforeStep?: BeforeStep;
}

/** The tools the dataplane needs, with the Debian package that provides each. */
export const REQUIRED_TOOLS: readonly { tool: string; args: string[]; pkg: string }[] = [
  { tool: 'nft', args: ['--version'], pkg: 'nftables' },
  { tool: 'ip', args: ['-V'], pkg: 'iproute2' },
  { tool: 'conntrack', args: ['--version'], pkg: 'conntrack' },
  { tool: 'sysctl', args: ['--version'], pkg: 'procps' },
];

/** Address changes come in bursts (a link going down takes all its addresses with it). */
const ADDRESS_DEBOUNCE_MS = 100;
/** Routes toward peers' endpoints change rarely: each is read again after this long. */
const ROUTE_MTU_TTL_MS = 30_000;

/** The path probes through tunnels (src/agent/path-monitor.ts). */
const PING = { tool: 'ping', args: ['-V'], pkg: 'iputils-ping' };

export class LinuxDataplane implements Dataplane {
  readonly kind = 'linux';

  /** How the managers reach the kernel: the tools, inside `netns` when given. */
  private readonly kernel: Exec = (file, args, options) => this.exec(file, args, options);
  private readonly sysctls = new SysctlManager(this.kernel);
  private readonly claims = new ClaimsManager(this.kernel);
  private readonly routing = new RoutingManager(this.kernel);
  private readonly nft = new NftManager(nftCommand(this.kernel));
  private readonly conntrack = new ConntrackManager(this.kernel);

  constructor(private readonly o: LinuxDataplaneOptions = {}) {}

  /**
   * Refuses to start without the tools or the kernel features: each missing tool is named with
   * its Debian package, and the table is test-loaded in check mode (`nft -c`), which asks the
   * kernel to validate every chain, map type and expression without changing anything.
   */
  async check(): Promise<void> {
    const missing: string[] = [];
    // Tools are the host's binaries: look for them directly, not inside the namespace.
    const tunnelTools =
      this.o.tunnelDriver === 'tinc'
        ? [{ tool: 'tincd', args: ['--version'], pkg: 'tinc' }]
        : [{ tool: 'wg', args: ['--version'], pkg: 'wireguard-tools' }];
    for (const { tool, args, pkg } of [...REQUIRED_TOOLS, ...tunnelTools, PING]) {
      await run(tool, args).catch(() => missing.push(`${tool} (Debian package ${pkg})`));
    }
    if (missing.length > 0) {
      throw new IpferryError('IPF_E_KERNEL', { reason: `missing ${missing.join(', ')}` });
    }
    await this.exec('nft', ['-c', '-f', '-'], { input: renderTable([], false) }).catch(
      (e: unknown) => {
        throw new IpferryError('IPF_E_KERNEL', {
          reason: `the kernel refused ipferry's nftables table (inet nat, maps, concatenations): ${(e as Error).message}`,
        });
      },
    );
  }

  /** The host's interfaces and addresses, leaving out the FIPs ipferry itself holds (claims). */
  async facts(): Promise<HostFacts> {
    const links = await this.links();
    // Claimed FIPs (labelled) and FIPs held on tunnels are ipferry's, not the host's own.
    const own = (l: IpLink) =>
      l.ifname.startsWith(TUNNEL_IFNAME_PREFIX)
        ? []
        : (l.addr_info ?? []).filter((a) => a.label !== claimLabel(l.ifname));
    return {
      interfaces: links
        .map((l) => l.ifname)
        .filter((n) => n !== 'lo' && this.handled(n))
        .sort(),
      addresses: links.flatMap((l) => own(l).flatMap((a) => a.local ?? [])).sort(),
      defaultRoutes: await this.defaultRoutes(
        (dev, family) =>
          links
            .filter((l) => l.ifname === dev)
            .flatMap((l) => own(l).flatMap((a) => a.local ?? []))
            .find((a) => tryParseAddress(a)?.family === family && !a.startsWith('fe80')),
        (dev) => links.find((l) => l.ifname === dev)?.mtu,
      ),
    };
  }

  /** Names of host interfaces left out of the facts, each said once in the log. */
  private readonly unhandled = new Set<string>();

  private handled(ifname: string): boolean {
    if (isHandledInterfaceName(ifname)) return true;
    if (!this.unhandled.has(ifname)) {
      this.unhandled.add(ifname);
      this.o.log?.warn(
        { interface: ifname },
        'an interface whose name no kernel command of ipferry can carry is left out (no hairpin for it)',
      );
    }
    return false;
  }

  /**
   * The host's own default routes in the main table (not ipferry's), lowest metric first per
   * family, each with the source the host sends from by it: the route's preferred source, else
   * the uplink's first address of the family.
   */
  private async defaultRoutes(
    firstAddress: (dev: string, family: 4 | 6) => string | undefined,
    linkMtu: (dev: string) => number | undefined,
  ): Promise<DefaultRoute[]> {
    const out: DefaultRoute[] = [];
    const families = [4, 6] as const;
    const listed = await Promise.all(
      families.map((family) => this.exec('ip', [`-${family}`, '-j', 'route', 'show', 'default'])),
    );
    for (const [i, family] of families.entries()) {
      const stdout = listed[i]?.stdout ?? '';
      const routes = (JSON.parse(stdout || '[]') as IpDefaultRoute[])
        .filter((r) => (r.type ?? 'unicast') === 'unicast' && r.protocol !== String(ROUTE_PROTO))
        .sort((a, b) => (a.metric ?? 0) - (b.metric ?? 0));
      for (const r of routes) {
        // A multipath default route: its first next hop stands for it.
        const hop = r.nexthops?.[0] ?? r;
        if (!hop.dev) continue;
        const src = r.prefsrc ?? firstAddress(hop.dev, family);
        const mtu = routeMtu(r) ?? linkMtu(hop.dev);
        out.push({
          family,
          dev: hop.dev,
          ...(hop.gateway ? { via: canonical(hop.gateway) } : {}),
          ...(src ? { src: canonical(src) } : {}),
          ...(mtu !== undefined ? { mtu } : {}),
        });
      }
    }
    return out;
  }

  private async links(): Promise<IpLink[]> {
    const { stdout } = await this.exec('ip', ['-j', 'address', 'show']);
    return JSON.parse(stdout || '[]') as IpLink[];
  }

  async observe(wanted: readonly IntentElement[]): Promise<IntentElement[]> {
    // Independent reads, all at once: a pass that repairs a lost tunnel waits for the slowest
    // of them, not for their sum.
    const read = await Promise.all([
      this.nft.observe(),
      this.claims.observe(wanted),
      this.routing.observe(),
      this.sysctls.observe(wanted),
    ]);
    return read.flat();
  }

  /** Reads the two counter sets only, not the whole table; none without the table. */
  async fipCounters(): Promise<Map<string, FipCounter>> {
    const out = new Map<string, FipCounter>();
    for (const set of ['counters4', 'counters6']) {
      const { stdout } = await this.exec('nft', ['-j', 'list', 'set', NFT_FAMILY, NFT_TABLE, set], {
        tolerate: (stderr) => /No such file or directory/.test(stderr),
      });
      if (stdout.trim()) for (const [fip, c] of parseCounters(stdout)) out.set(fip, c);
    }
    return out;
  }

  /**
   * Additions before deletions, so nothing is ever briefly missing: sysctls, claims, routes and
   * rules (a rule never points at an empty table), then the nftables transaction (its deletions
   * inside it), then routes and rules deleted, claims released; conntrack last, as its deletions
   * cannot be undone. A failing step undoes the ones before it (see ./linux/manager.ts).
   */
  async apply(diff: IntentDiff): Promise<void> {
    await applySteps(
      [
        ...stepOf(this.sysctls, diff, 'add'),
        ...stepOf(this.claims, diff, 'add'),
        ...stepOf(this.routing, diff, 'add'),
        ...stepOf(this.nft, diff, 'add'),
        ...stepOf(this.routing, diff, 'delete'),
        ...stepOf(this.claims, diff, 'delete'),
        ...stepOf(this.conntrack, diff, 'delete'),
      ],
      this.o.beforeStep,
    );
  }

  /** Creates, updates or (when `tunnel` is undefined) removes this node's tunnel. */
  async applyTunnel(tunnel: TunnelIntent | undefined): Promise<void> {
    const driver = this.tunnels();
    const existing = (await this.facts()).interfaces.filter((n) =>
      n.startsWith(TUNNEL_IFNAME_PREFIX),
    );
    if (tunnel) await driver.apply(tunnel);
    this.appliedTunnel = tunnel;
    for (const name of existing) if (name !== tunnel?.name) await driver.remove(name);
  }

  /** The tunnel applyTunnel last made, for checkTunnel (its device may be gone by then). */
  private appliedTunnel?: TunnelIntent;

  async checkTunnel(): Promise<TunnelCheck | undefined> {
    const applied = this.appliedTunnel;
    if (!applied) return undefined;
    const check = await this.tunnels().check?.(applied.name);
    return check && { ...check, applied };
  }

  async restoreTunnel(): Promise<boolean> {
    const applied = this.appliedTunnel;
    return applied ? ((await this.tunnels().restore?.(applied.name)) ?? false) : false;
  }

  async tunnelHealth(): Promise<TunnelHealth | undefined> {
    const name = (await this.facts()).interfaces.find((n) => n.startsWith(TUNNEL_IFNAME_PREFIX));
    const status = name ? await this.tunnels().status(name) : undefined;
    if (!status) return undefined;
    // A driver that knows reachability but no handshakes (tinc) reports that, not a stand-in
    // handshake age; one without per-peer counters reports the interface's instead of zeros.
    const perPeer = status.peerCounters !== false;
    return {
      name: status.name,
      checkedAt: new Date().toISOString(),
      ...(status.driver ? { driver: status.driver } : {}),
      ...(status.device ? status.device : {}),
      peers: status.peers.map((p) => ({
        publicKey: p.publicKey,
        ...(p.endpoint ? { endpoint: p.endpoint } : {}),
        ...(p.reachable !== undefined
          ? { reachable: p.reachable }
          : p.handshakeAgeSeconds !== undefined
            ? { handshakeAgeSeconds: p.handshakeAgeSeconds }
            : {}),
        ...(perPeer ? { rxBytes: p.rxBytes, txBytes: p.txBytes } : {}),
      })),
    };
  }

  async routeMtus(hosts: readonly string[]): Promise<ReadonlyMap<string, number>> {
    const out = new Map<string, number>();
    const now = Date.now();
    for (const host of hosts) {
      const cached = this.routeMtuCache.get(host);
      if (cached && now - cached.at < ROUTE_MTU_TTL_MS) {
        out.set(host, cached.mtu);
        continue;
      }
      const mtu = await this.routeMtu(host).catch(() => undefined);
      if (mtu === undefined) continue;
      this.routeMtuCache.set(host, { mtu, at: now });
      out.set(host, mtu);
    }
    return out;
  }

  private readonly routeMtuCache = new Map<string, { mtu: number; at: number }>();

  private async routeMtu(host: string): Promise<number | undefined> {
    const { stdout } = await this.exec('ip', ['-j', 'route', 'get', host]);
    const [route] = JSON.parse(stdout || '[]') as IpDefaultRoute[];
    if (!route?.dev) return undefined;
    const own = routeMtu(route);
    if (own !== undefined) return own;
    const link = await this.exec('ip', ['-j', 'link', 'show', 'dev', route.dev]);
    return (JSON.parse(link.stdout || '[]') as IpLink[])[0]?.mtu;
  }

  async probePath(request: PathProbeRequest): Promise<number | undefined> {
    try {
      const { stdout } = await this.exec('ping', pingArgs(request), { timeoutMs: 5000 });
      return firstRtt(stdout);
    } catch {
      return undefined; // no answer (exit 1), or the packet cannot leave whole (EMSGSIZE)
    }
  }

  /** This node's WireGuard public key (the key pair is made on first use). */
  async tunnelPublicKey(): Promise<string> {
    return this.tunnels().publicKey();
  }

  private tunnelDriver?: TunnelDriver;

  private tunnels(): TunnelDriver {
    if (this.o.tunnelDriver === 'tinc') {
      this.tunnelDriver ??= new TincDriver({
        ...(this.o.netns ? { netns: this.o.netns } : {}),
        stateDir: this.o.stateDir ?? DEFAULT_STATE_DIR,
        node: this.o.node ?? 'node',
        ...(this.o.log ? { log: this.o.log } : {}),
      });
      return this.tunnelDriver;
    }
    this.tunnelDriver ??= new WireGuardDriver({
      ...(this.o.netns ? { netns: this.o.netns } : {}),
      stateDir: this.o.stateDir ?? DEFAULT_STATE_DIR,
      ...(this.o.log ? { log: this.o.log } : {}),
    });
    return this.tunnelDriver;
  }

  async close(): Promise<void> {
    await Promise.resolve();
  }

  watchAddresses(onChange: () => void): () => void {
    const netns = this.o.netns ? ['-n', this.o.netns] : [];
    // `ip monitor` prints a line per change; if the agent dies, its next write ends it.
    const child = spawn('ip', [...netns, '-o', 'monitor', 'address'], {
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    let timer: NodeJS.Timeout | undefined;
    child.stdout.on('data', () => {
      if (timer) return;
      timer = setTimeout(() => {
        timer = undefined;
        onChange();
      }, ADDRESS_DEBOUNCE_MS);
      timer.unref();
    });
    child.on('error', () => undefined);
    return () => {
      if (timer) clearTimeout(timer);
      child.kill();
    };
  }

  watchTunnelLinks(onChange: () => void): () => void {
    const netns = this.o.netns ? ['-n', this.o.netns] : [];
    // One line per change (`-o`); `12: ipf…:` or `Deleted 12: ipf…:`. No debounce: the tunnel
    // watch runs one check at a time and a burst of events asks for one more at most.
    const child = spawn('ip', [...netns, '-o', 'monitor', 'link'], {
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    const ours = new RegExp(`^(?:Deleted )?\\d+: ${TUNNEL_IFNAME_PREFIX}`, 'm');
    child.stdout.on('data', (chunk: Buffer) => {
      if (ours.test(chunk.toString())) onChange();
    });
    child.on('error', () => undefined);
    return () => {
      child.kill();
    };
  }

  private exec(
    file: string,
    args: readonly string[],
    options: RunOptions = {},
  ): Promise<ExecResult> {
    return this.o.netns
      ? run('ip', ['netns', 'exec', this.o.netns, file, ...args], options)
      : run(file, args, options);
  }
}

/**
 * `ping` through the tunnel to a link-local address. `-M do` forbids fragmenting (the MTU
 * search), `-M want` fragments to the route's MTU as a large first packet of a connection would
 * be. The liveness probe sends one request every 0.2 s until one answer comes back or 2 s are
 * over: a lost packet costs 0.2 s, not a failed probe. A probe with `waitSeconds` (the large
 * probe and the search, asked right after a small one answered) sends three requests 50 ms
 * apart and waits that long after the last: three chances against loss, and a size that does
 * not pass costs a fraction of a second instead of a whole one.
 */
export function pingArgs(r: PathProbeRequest): string[] {
  const timing =
    r.waitSeconds === undefined
      ? ['-c', '1', '-i', '0.2', '-w', '2']
      : ['-c', '3', '-i', '0.05', '-W', String(r.waitSeconds)];
  return [
    '-6',
    '-n',
    ...timing,
    '-s',
    String(r.payload),
    '-M',
    r.fragment ? 'want' : 'do',
    '-I',
    r.ifname,
    r.address,
  ];
}

function firstRtt(stdout: string): number | undefined {
  const match = /time=([\d.]+) ms/.exec(stdout);
  return match ? Number(match[1]) : undefined;
}

interface IpDefaultRoute {
  type?: string;
  dev?: string;
  gateway?: string;
  prefsrc?: string;
  metric?: number;
  protocol?: string;
  nexthops?: { dev?: string; gateway?: string }[];
  /** `ip -j` lists a route's metrics as objects: `[{ "mtu": 1380 }]`. */
  metrics?: { mtu?: number }[];
}

function routeMtu(r: Pick<IpDefaultRoute, 'metrics'>): number | undefined {
  return r.metrics?.find((m) => typeof m.mtu === 'number')?.mtu;
}

interface IpLink {
  ifname: string;
  mtu?: number;
  addr_info?: { local?: string; label?: string; prefixlen?: number }[];
}

function canonical(address: string): string {
  return tryParseAddress(address)?.text ?? address;
}
