/**
 * The Linux dataplane: nftables (one `inet ipferry` table of maps and sets), sysctls and
 * connection tracking, driven by `nft`, `ip`, `sysctl` and `conntrack` through execFile.
 *
 * - observe: `nft -j list table inet ipferry` back into intent elements, plus wanted sysctls.
 * - apply: one `nft -f -` transaction per diff — element adds and deletes only, unless the
 *   table is missing or damaged, in which case the whole table is replaced in that one
 *   transaction (conntrack keeps established connections through it). Then, for every FIP whose
 *   target changed or that went away, the conntrack entries that still point at the old target
 *   are deleted, so no new packet of a stale connection reaches it.
 * - Everything runs inside `netns` when given (the lab, tests); never a shell.
 */
import { spawn } from 'node:child_process';
import { IpferryError } from '../core/errors.js';
import type { DefaultRoute, HostFacts } from '../intent/facts.js';
import {
  decode,
  decodeElement,
  element,
  HOST_OWNER,
  type IntentElement,
  isKind,
  type Payloads,
} from '../intent/elements.js';
import { elementId as id, type IntentDiff } from '../intent/diff.js';
import { tryParseAddress } from '../core/address.js';
import { claimLabel, NFT_FAMILY, NFT_TABLE, ROUTE_PROTO } from '../core/names.js';
import { DEFAULT_STATE_DIR } from '../core/defaults.js';
import type { TunnelHealth } from '../core/model.js';
import type { TunnelCheck } from '../core/tunnelhealth.js';
import type { FipCounter, PathProbeRequest } from './dataplane.js';
import { TUNNEL_IFNAME_PREFIX, type TunnelIntent } from '../core/tunnel.js';
import { parseProxyEntries } from './iproute/neighbours.js';
import { observeRouting, ROUTING_KINDS, routingBatches } from './iproute/routing.js';
import { WireGuardDriver } from './tunnel/wireguard.js';
import { TincDriver } from './tunnel/tinc.js';
import type { TunnelDriver, TunnelLogger } from './tunnel/driver.js';
import type { TunnelDriverKind } from '../core/tunnel.js';
import type { Dataplane } from './dataplane.js';
import { type ExecResult, run, type RunOptions } from './exec.js';
import {
  NFT_KINDS,
  parseCounters,
  parseTable,
  renderElements,
  renderTable,
} from './nft/ruleset.js';

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
}

/** The tools the dataplane needs, with the Debian package that provides each. */
export const REQUIRED_TOOLS: readonly { tool: string; args: string[]; pkg: string }[] = [
  { tool: 'nft', args: ['--version'], pkg: 'nftables' },
  { tool: 'ip', args: ['-V'], pkg: 'iproute2' },
  { tool: 'conntrack', args: ['--version'], pkg: 'conntrack' },
  { tool: 'sysctl', args: ['--version'], pkg: 'procps' },
];

/** `conntrack -D` runs at once; more only queue on the kernel's conntrack lock. */
const CONNTRACK_PARALLEL = 4;

/** Address changes come in bursts (a link going down takes all its addresses with it). */
const ADDRESS_DEBOUNCE_MS = 100;
/** Routes toward peers' endpoints change rarely: each is read again after this long. */
const ROUTE_MTU_TTL_MS = 30_000;

/** The path probes through tunnels (src/agent/paths.ts). */
const PING = { tool: 'ping', args: ['-V'], pkg: 'iputils-ping' };

const NOTHING_DELETED = (stderr: string): boolean =>
  /0 flow entries have been deleted/.test(stderr);
const ALREADY_GONE = (stderr: string): boolean =>
  /No such process|Cannot find device|No such device|Cannot assign requested address|does not exist/.test(
    stderr,
  );

export class LinuxDataplane implements Dataplane {
  readonly kind = 'linux';

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
        .filter((n) => n !== 'lo')
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

  /**
   * On-link FIPs this host answers for: IPv4 addresses carrying ipferry's label, and proxy
   * neighbour entries — IPv4 proxy ARP, IPv6 proxy NDP — whose address is a wanted claim or lies
   * inside a pool this host is gateway of (the ranges of `wanted`'s drop elements), on whatever
   * interface (one left on an uplink a pool no longer names is ipferry's to remove). Proxy
   * entries for other addresses belong to someone else.
   */
  private async claims(wanted: readonly IntentElement[]): Promise<IntentElement[]> {
    const claim = (fip: string, uplink: string, proxy: boolean): IntentElement =>
      element('claim', { fip, uplink, proxy }, fip);
    const [links, { stdout }] = await Promise.all([
      this.links(),
      this.exec('ip', ['-j', 'neigh', 'show', 'proxy']),
    ]);
    const local = links.flatMap((l) =>
      (l.addr_info ?? [])
        .filter((a) => a.label === claimLabel(l.ifname) && a.local)
        .map((a) => claim(canonical(a.local ?? ''), l.ifname, false)),
    );
    const pools = wanted.flatMap((e) => (isKind(e, 'drop') ? [decode(e)] : []));
    const want = new Map(wanted.filter((e) => e.kind === 'claim').map((e) => [e.key, e.value]));
    const ours = (dst: string) =>
      want.has(dst) || pools.some(({ first, last }) => inRange(dst, first, last));
    const proxies = parseProxyEntries(stdout)
      .filter((p) => ours(p.address))
      .map((p) => claim(p.address, p.interface, true));
    return oneClaimPerFip([...local, ...proxies], want);
  }

  async observe(wanted: readonly IntentElement[]): Promise<IntentElement[]> {
    // Independent reads, all at once: a pass that repairs a lost tunnel waits for the slowest
    // of them, not for their sum.
    const sysctl = async (path: string): Promise<IntentElement> => {
      // A per-interface sysctl of a tunnel not created yet reads as missing.
      const { stdout } = await this.exec('sysctl', ['-n', path], { tolerate: () => true });
      return element('sysctl', { path, value: stdout.trim() || 'missing' }, HOST_OWNER);
    };
    const [table, claims, routing, sysctls] = await Promise.all([
      this.exec('nft', ['-j', 'list', 'table', NFT_FAMILY, NFT_TABLE], {
        tolerate: (stderr) => /No such file or directory/.test(stderr),
      }),
      this.claims(wanted),
      observeRouting((file, args, options) => this.exec(file, args, options)),
      Promise.all(wanted.flatMap((e) => (isKind(e, 'sysctl') ? [sysctl(decode(e).path)] : []))),
    ]);
    const elements = table.stdout.trim() ? parseTable(table.stdout) : [];
    return [...elements, ...claims, ...routing, ...sysctls];
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

  async apply(diff: IntentDiff): Promise<void> {
    for (const e of [...diff.add, ...diff.replace.map((r) => r.to)]) {
      if (!isKind(e, 'sysctl')) continue;
      const { path, value } = decode(e);
      await this.exec('sysctl', ['-qw', `${path}=${value}`]);
    }
    // Claims first, added before deleted, so an address is never briefly unanswered; if the
    // nftables transaction then fails, the claims added here are taken back.
    const added = [...diff.add, ...diff.replace.map((r) => r.to)].filter((e) => e.kind === 'claim');
    const removed = [...diff.replace.map((r) => r.from), ...diff.remove].filter(
      (e) => e.kind === 'claim',
    );
    await this.claimAll(added);
    try {
      await this.applyRouting('add', [...diff.add, ...diff.replace.map((r) => r.to)]);
      await this.applyNft(diff);
    } catch (e) {
      await this.releaseAll(added).catch(() => undefined);
      throw e;
    }
    // A changed route was replaced in place; changed rules and holds go out after the new ones.
    const gone = [
      ...diff.remove,
      ...diff.replace.map((r) => r.from).filter((e) => e.kind !== 'route'),
    ];
    await this.applyRouting('del', gone);
    await this.releaseAll(removed);
    await this.forgetStaleConnections(diff);
  }

  /**
   * Additions go in one batch per family. Deletions tolerate what is already gone: routes and
   * addresses of a deleted tunnel interface disappear with it.
   */
  private async applyRouting(op: 'add' | 'del', elements: readonly IntentElement[]): Promise<void> {
    const batches = routingBatches(
      op,
      elements.filter((e) => ROUTING_KINDS.has(e.kind)),
    );
    for (const family of [4, 6] as const) {
      const lines = batches[family];
      if (lines.length === 0) continue;
      if (op === 'add') {
        await this.exec('ip', [`-${family}`, '-batch', '-'], { input: lines.join('\n') + '\n' });
        continue;
      }
      for (const line of lines) {
        await this.exec('ip', [`-${family}`, ...line.split(' ')], { tolerate: ALREADY_GONE });
      }
    }
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

  /**
   * One `ip -batch` for all claims. `ip` stops at the first failing line, so on failure the
   * claims of this batch are taken back one by one (those never added fail harmlessly).
   */
  private async claimAll(claims: readonly IntentElement[]): Promise<void> {
    if (claims.length === 0) return;
    try {
      await this.ipBatch(claims.map((c) => claimArgs('add', c)));
    } catch (e) {
      for (const c of claims) await this.exec('ip', claimArgs('del', c)).catch(() => undefined);
      throw e;
    }
  }

  private async releaseAll(claims: readonly IntentElement[]): Promise<void> {
    if (claims.length > 0) await this.ipBatch(claims.map((c) => claimArgs('del', c)));
  }

  private async ipBatch(lines: readonly string[][]): Promise<void> {
    await this.exec('ip', ['-batch', '-'], {
      input: lines.map((l) => l.join(' ')).join('\n') + '\n',
    });
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

  private async applyNft(diff: IntentDiff): Promise<void> {
    const nft = (e: IntentElement): boolean => NFT_KINDS.has(e.kind);
    const tableChange = [...diff.add, ...diff.replace.map((r) => r.to)].find(
      (e) => e.kind === 'table',
    );
    let script: string;
    if (tableChange) {
      // The fixed part is missing or damaged: rebuild everything the table should hold.
      const gone = new Set([...diff.remove, ...diff.replace.map((r) => r.from)].map(id));
      const kept = (await this.observe([])).filter(
        (e) => nft(e) && e.kind !== 'table' && !gone.has(id(e)),
      );
      const next = [...kept, ...diff.add.filter(nft), ...diff.replace.map((r) => r.to).filter(nft)];
      const exists = diff.replace.some((r) => r.to.kind === 'table');
      script = renderTable(
        next.filter((e) => e.kind !== 'table'),
        exists,
      );
    } else {
      const lines = [
        ...renderElements(
          'delete',
          [...diff.remove, ...diff.replace.map((r) => r.from)].filter(nft),
        ),
        ...renderElements('add', [...diff.add, ...diff.replace.map((r) => r.to)].filter(nft)),
      ];
      if (lines.length === 0) return;
      script = lines.join('\n') + '\n';
    }
    await this.exec('nft', ['-f', '-'], { input: script });
  }

  /**
   * A moved or released FIP must not keep feeding established (or, for UDP, merely recent)
   * flows to its old target: delete the conntrack entries whose original destination is the FIP
   * and whose reply comes from the old target, and the old target's own SNATed flows.
   */
  private async forgetStaleConnections(diff: IntentDiff): Promise<void> {
    const gone = [...diff.remove, ...diff.replace.map((r) => r.from)];
    const filters = gone
      .map(staleConnectionFilter)
      .filter((args): args is string[] => args !== undefined);
    // Each `conntrack -D` walks the whole table (~15 ms): a move needs two (DNAT and SNAT),
    // a mass release thousands. They are independent, so a few run at once.
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < filters.length) {
        const args = filters[next++] ?? [];
        await this.exec('conntrack', ['-D', ...args], { tolerate: NOTHING_DELETED });
      }
    };
    await Promise.all(Array.from({ length: Math.min(CONNTRACK_PARALLEL, filters.length) }, worker));
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

/** `conntrack -D` arguments for the flows an old element was carrying, if it carried any. */
export function staleConnectionFilter(e: IntentElement): string[] | undefined {
  const family = (a: string): string[] => (a.includes(':') ? ['-f', 'ipv6'] : []);
  const t = decodeElement(e);
  switch (t.kind) {
    case 'dnat':
      return [...family(t.data.fip), '-d', t.data.fip, '-r', t.data.target];
    case 'snat':
      return [...family(t.data.target), '-s', t.data.target, '-q', t.data.fip];
    case 'fwd': {
      const { fip, protocol, ports, target } = t.data;
      const single = ports.first === ports.last ? ['--dport', String(ports.first)] : [];
      return [...family(fip), '-d', fip, '-r', target, '-p', protocol, ...single];
    }
    case 'fwdport': {
      const { fip, protocol, port, target } = t.data;
      return [...family(fip), '-d', fip, '-r', target, '-p', protocol, '--dport', String(port)];
    }
    default:
      return undefined;
  }
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

/**
 * `ip` arguments that add or delete a claim: a labelled /32, or a proxy entry (IPv4 proxy ARP,
 * IPv6 proxy NDP). Adding a proxy entry that exists already succeeds; adding an address does not.
 */
export function claimArgs(op: 'add' | 'del', c: IntentElement): string[] {
  const { fip, uplink, proxy } = claimOf(c);
  if (proxy) return ['neigh', op, 'proxy', fip, 'dev', uplink];
  const label = op === 'add' ? ['label', claimLabel(uplink)] : [];
  return ['address', op, `${fip}/32`, 'dev', uplink, ...label];
}

function claimOf(c: IntentElement): Payloads['claim'] {
  if (!isKind(c, 'claim')) throw new Error(`not a claim: ${c.kind}`);
  return decode(c);
}

/**
 * One claim per FIP, as the diff expects. The kernel can hold two for a while: the agent adds a
 * FIP's new claim before it deletes the old one (a switch between nat and routed swaps the local
 * address and the proxy entry), and may be killed in between. The one reported is the one the
 * next diff should replace: the wanted local address when it is there (adding it again would
 * fail; a proxy entry left next to it is never used, the local address answers first), else a
 * local address (it would swallow a routed FIP), else an unwanted proxy entry (adding the wanted
 * one again is harmless). The others are found by a later read once the first is gone.
 */
function oneClaimPerFip(
  claims: readonly IntentElement[],
  want: ReadonlyMap<string, string>,
): IntentElement[] {
  const rank = (c: IntentElement): number => {
    const local = !claimOf(c).proxy;
    const wanted = want.get(c.key) === c.value;
    return local ? (wanted ? 0 : 1) : wanted ? 3 : 2;
  };
  const byFip = new Map<string, IntentElement>();
  for (const c of claims) {
    const seen = byFip.get(c.key);
    if (!seen || rank(c) < rank(seen)) byFip.set(c.key, c);
  }
  return [...byFip.values()];
}

function canonical(address: string): string {
  return tryParseAddress(address)?.text ?? address;
}

function inRange(address: string, first: string | undefined, last: string | undefined): boolean {
  const a = tryParseAddress(address);
  const lo = tryParseAddress(first ?? '');
  const hi = tryParseAddress(last ?? '');
  return (
    !!a && !!lo && !!hi && a.family === lo.family && a.value >= lo.value && a.value <= hi.value
  );
}
