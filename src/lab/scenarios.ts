/**
 * Ready-made lab topologies. Addresses are documentation ranges for the "public" side
 * (198.51.100.0/24, 192.0.2.0/24, 203.0.113.0/24, 2001:db8::/32), private ranges on the LAN,
 * and in cloudHome the CGNAT range (100.64.0.0/10) between routers and the benchmarking range
 * (198.18.0.0/15, never routed on the internet) as a home ISP's "public" customer range.
 * oldNew uses the benchmarking range as datacenter B's public addresses.
 *
 * gatewayLan, cloudHome and oldNew stand in the same internet (`internet()` below): a client,
 * the router `up` and the host the floating pool is routed to; each scenario adds only what is
 * its own. fleet is a topology of its own.
 */
import { IpferryError } from '../core/errors.js';
import { startEchoServer } from './probe.js';
import { type BridgeSpec, type HostSpec, Lab, type LabSpec, type LinkSpec } from './topology.js';

// ---------------------------------------------------------------------------------------------
// The internet: what gatewayLan, cloudHome and oldNew share.

/** An address of each family (without prefix length), and the interface holding them. */
interface End {
  readonly v4: string;
  readonly v6: string;
  readonly ifname: string;
}

/** A pair of prefixes, IPv4 and IPv6. */
interface Prefixes {
  readonly v4: string;
  readonly v6: string;
}

/** The client on the internet, and `up`'s end of its cable. */
const CLIENT = { v4: '198.51.100.9', v6: '2001:db8:c::9', ifname: 'to-up' } as const;
const UP_TO_CLIENT = { v4: '198.51.100.1', v6: '2001:db8:c::1', ifname: 'to-client' } as const;
/** `up`'s end of the cable to the host the pool is routed to (its ifname names that host). */
const UP_TO_POOL_HOST = { v4: '192.0.2.1', v6: '2001:db8:1::1' } as const;
/** That host's end: its provider routes the floating pool to `wan0`. */
const POOL_HOST_UPLINK = { v4: '192.0.2.2', v6: '2001:db8:1::2', ifname: 'wan0' } as const;
/** The floating-IP pool. */
const POOL = { v4: '203.0.113.0/24', v6: '2001:db8:f::/48' } as const;
/**
 * A second provider (cloudHome's home ISP, oldNew's datacenter B) in the benchmarking range:
 * the only sources its router accepts from its customers (BCP 38), its router's end of the
 * customer link, and the first server on it.
 */
const CUSTOMERS = { v4: '198.18.0.0/24', v6: '2001:db8:3::/48' } as const;
const TO_CUSTOMERS = { v4: '198.18.0.1', v6: '2001:db8:3::1' } as const;
const CUSTOMER_SERVER = { v4: '198.18.0.10', v6: '2001:db8:3::10', ifname: 'eth0' } as const;

/**
 * Reverse-path filtering off, explicitly (new namespaces may inherit the machine's setting), so
 * a lab's own nftables rules are its only source checks.
 */
const NO_RP_FILTER = {
  'net.ipv4.conf.all.rp_filter': 0,
  'net.ipv4.conf.default.rp_filter': 0,
};

function cidrs(end: Prefixes): string[] {
  return [`${end.v4}/24`, `${end.v6}/64`];
}

function defaults(via: Prefixes) {
  return [
    { to: 'default', via: via.v4 },
    { to: 'default', via: via.v6 },
  ];
}

function withPrefix(prefix: string | undefined): { prefix?: string } {
  return prefix === undefined ? {} : { prefix };
}

/** A cable between two hosts, each end addressed (/24 and /64). */
function cable(a: string, aEnd: End, b: string, bEnd: End): LinkSpec {
  return {
    a: { host: a, ifname: aEnd.ifname, addresses: cidrs(aEnd) },
    b: { host: b, ifname: bEnd.ifname, addresses: cidrs(bEnd) },
  };
}

/** A router cabled to `up`: the host the pool is routed to, or another provider's router. */
interface Site {
  readonly name: string;
  /** `up`'s end of the cable, and the site's. */
  readonly up: End;
  readonly end: End;
  /** What `up` routes to the site. */
  readonly routes: readonly Prefixes[];
  readonly bridges?: readonly BridgeSpec[];
}

interface InternetSpec {
  readonly prefix?: string | undefined;
  /** Sysctls of every host of the internet (client, up, the sites). */
  readonly sysctls?: Readonly<Record<string, number>>;
  readonly sites: readonly Site[];
  /** The hosts behind the sites (LAN hosts, servers) and their cables. */
  readonly hosts: readonly HostSpec[];
  readonly links: readonly LinkSpec[];
}

/**
 * client — up ─┬─ site (each router of `sites`, cabled to up; its default routes via up)
 *              └─ …
 *
 * `up` routes to each site what the site says, in order; the client's default routes go via up.
 * Then the scenario's own hosts and cables.
 */
function internet(spec: InternetSpec): LabSpec {
  const sysctls = spec.sysctls === undefined ? {} : { sysctls: spec.sysctls };
  const upRoutes = spec.sites.flatMap((site) =>
    site.routes.flatMap((to) => [
      { to: to.v4, via: site.end.v4 },
      { to: to.v6, via: site.end.v6 },
    ]),
  );
  const sites = spec.sites.map((site) => ({
    name: site.name,
    router: true,
    ...sysctls,
    routes: defaults(site.up),
    ...(site.bridges === undefined ? {} : { bridges: site.bridges }),
  }));
  return {
    ...withPrefix(spec.prefix),
    hosts: [
      { name: 'client', ...sysctls, routes: defaults(UP_TO_CLIENT) },
      { name: 'up', router: true, ...sysctls, routes: upRoutes },
      ...sites,
      ...spec.hosts,
    ],
    links: [
      cable('client', CLIENT, 'up', UP_TO_CLIENT),
      ...spec.sites.map((site) => cable('up', site.up, site.name, site.end)),
      ...spec.links,
    ],
  };
}

/** Creates the lab and installs what its spec cannot express; on failure destroys it, rethrows. */
async function build(spec: LabSpec, apply: (lab: Lab) => Promise<void>): Promise<Lab> {
  const lab = await Lab.create(spec);
  try {
    await apply(lab);
    return lab;
  } catch (error) {
    await lab.destroy();
    throw error;
  }
}

/**
 * BCP 38 on a provider's router: the forward-chain rules that drop (and count, in counters
 * `spoofed_v4` and `spoofed_v6`) what comes in on `ifname` from outside the customer range.
 */
function sourceValidation(ifname: string): string[] {
  const from = `iifname "${ifname}"`;
  return [
    `    ${from} ip saddr != ${CUSTOMERS.v4} counter name "spoofed_v4" drop`,
    `    ${from} ip6 saddr != ${CUSTOMERS.v6} counter name "spoofed_v6" drop`,
  ];
}

// ---------------------------------------------------------------------------------------------
// gatewayLan: a gateway with floating IPs in front of a LAN.

/** Addresses and interface names of `gatewayLan()`, so tests do not repeat literals. */
export const GATEWAY_LAN = {
  client: CLIENT,
  up: { toClient: UP_TO_CLIENT, toGw: { ...UP_TO_POOL_HOST, ifname: 'to-gw' } },
  gw: {
    uplink: POOL_HOST_UPLINK,
    lan: { v4: '10.0.0.1', v6: 'fd00:10::1', ifname: 'lan0' },
  },
  be1: { v4: '10.0.0.11', v6: 'fd00:10::11', ifname: 'lan' },
  be2: { v4: '10.0.0.12', v6: 'fd00:10::12', ifname: 'lan' },
  lanc: { v4: '10.0.0.50', v6: 'fd00:10::50', ifname: 'lan' },
  /** The floating-IP pool the provider routes to the gateway. */
  pool: POOL,
  lanPrefix: { v4: '10.0.0.0/24', v6: 'fd00:10::/64' },
} as const;

export interface GatewayLanOptions {
  /** Namespace prefix (default: a fresh random one). */
  readonly prefix?: string;
  /**
   * Whether `up` also routes the gateway's private LAN back to it (default true). With it,
   * traffic from the LAN reaches the client even without NAT and the client sees the private
   * source, which is the baseline the NAT tests compare against. Turn it off for a strict
   * provider where un-NATed private sources get no answer.
   */
  readonly lanRoutes?: boolean;
}

const N = GATEWAY_LAN;
const LAN_HOSTS = ['be1', 'be2', 'lanc'] as const;

/**
 * client — up — gw — lan0 bridge — be1, be2, lanc.
 *
 * `up` is the provider's router: it routes the floating pool (203.0.113.0/24,
 * 2001:db8:f::/48) to the gateway's uplink. `gw` forwards but has no nftables at all: the
 * ipferry dataplane under test adds them.
 */
export function gatewayLan(options: GatewayLanOptions = {}): LabSpec {
  const gw: Site = {
    name: 'gw',
    up: N.up.toGw,
    end: N.gw.uplink,
    routes: options.lanRoutes === false ? [N.pool] : [N.pool, N.lanPrefix],
    bridges: [{ name: N.gw.lan.ifname, addresses: cidrs(N.gw.lan) }],
  };
  return internet({
    prefix: options.prefix,
    sites: [gw],
    // Each LAN host: a cable to a port of the gateway's bridge, default routes via the gateway.
    hosts: LAN_HOSTS.map((name) => ({ name, routes: defaults(N.gw.lan) })),
    links: LAN_HOSTS.map((name) => ({
      a: { host: 'gw', ifname: `p-${name}`, bridge: N.gw.lan.ifname },
      b: { host: name, ifname: N[name].ifname, addresses: cidrs(N[name]) },
    })),
  });
}

// ---------------------------------------------------------------------------------------------
// cloudHome: a small cloud VM as the public router of a home server.

/** Addresses, interface names and nftables objects of `cloudHome()`. */
export const CLOUD_HOME = {
  client: CLIENT,
  up: {
    toClient: UP_TO_CLIENT,
    toGw: { ...UP_TO_POOL_HOST, ifname: 'to-gw' },
    toIsp: { v4: '100.64.0.1', v6: '2001:db8:2::1', ifname: 'to-isp' },
  },
  /** The cloud VM: its provider routes the floating pool to `wan0`. */
  gw: { uplink: POOL_HOST_UPLINK },
  /** The home server's ISP router. */
  isp: {
    toUp: { v4: '100.64.0.2', v6: '2001:db8:2::2', ifname: 'to-up' },
    /** A veth to home; with `homes: 2` a bridge of that name, home and home2 on its ports. */
    toHome: { ...TO_CUSTOMERS, ifname: 'to-home' },
    /** The bridge ports of `to-home` with `homes: 2`, one cable to each home server. */
    homePorts: { home: 'p-home', home2: 'p-home2' },
  },
  /** The home server, with its own public address from its ISP. */
  home: CUSTOMER_SERVER,
  /** A second home server behind the same ISP and on the same link (only with `homes: 2`). */
  home2: { v4: '198.18.0.20', v6: '2001:db8:3::20', ifname: 'eth0' },
  /** The floating-IP pool the cloud provider routes to gw. */
  pool: POOL,
  /** The ISP's customer range: the only sources isp accepts from home (BCP 38). */
  ispCustomers: CUSTOMERS,
  /** The isp↔home link's prefixes (home2 shares the link with `homes: 2`). */
  homeLink: { v4: '198.18.0.0/24', v6: '2001:db8:3::/64' },
  /** nftables objects the lab installs (never named `ipferry`: that is the dataplane's). */
  nft: {
    /** `inet` table on isp: source-address validation, and the ICMP drops of the black hole. */
    ispTable: 'lab_isp',
    /** `inet` table on up (only with blackholeMtu): the ICMP drops of a router on the way. */
    upTable: 'lab_up',
    /** `netdev` table on isp's to-home (only with blackholeMtu): drops packets above the MTU. */
    ispWireTable: 'lab_isp_wire',
    /** `netdev` table on home (only with blackholeMtu): drops IPv4/IPv6 fragments on eth0. */
    homeTable: 'lab_home',
  },
} as const;

export interface CloudHomeOptions {
  /** Namespace prefix (default: a fresh random one). */
  readonly prefix?: string;
  /**
   * Makes the isp↔home path an MTU black hole of this size (e.g. 1380): larger packets die
   * silently in both directions, no "fragmentation needed" / "packet too big" comes back and
   * fragments never arrive. See `cloudHomeRulesets` for how.
   */
  readonly blackholeMtu?: number;
  /**
   * Where the black hole's narrow link is: `path` (default), on isp toward home, which neither
   * end can see (both keep MTU 1500: a router in between); or `uplink`, home's own cable to
   * its ISP, both ends of which carry only `blackholeMtu` (a PPPoE or DSL line: home sees it in
   * its own routes). Either way fragments and ICMP "too big" are lost on the way.
   */
  readonly bottleneck?: 'path' | 'uplink';
  /**
   * How many home servers sit behind isp (default 1). With 2, isp's `to-home` is a bridge with
   * one port per home server, and `home2` (198.18.0.20, 2001:db8:3::20) shares home's link and
   * ISP customer range: a second remote node to move floating IPs to. Not with `blackholeMtu`.
   */
  readonly homes?: 1 | 2;
}

/** What isp's and home's nftables counters saw (packets); see `cloudHomeCounters`. */
export interface CloudHomeCounters {
  /** Forwarded from home with an IPv4 source outside 198.18.0.0/24: dropped. */
  readonly spoofedV4: number;
  /** Forwarded from home with an IPv6 source outside 2001:db8:3::/48: dropped. */
  readonly spoofedV6: number;
  /** "Fragmentation needed" / "packet too big" dropped on isp (black hole only, else 0). */
  readonly tooBig: number;
  /** Packets from home above the MTU, dropped on isp's to-home (black hole only, else 0). */
  readonly oversize: number;
  /** IPv4/IPv6 fragments dropped on home's eth0 (black hole only, else 0). */
  readonly fragments: number;
}

const H = CLOUD_HOME;

function checkMtu(mtu: number | undefined): void {
  // 1280 is IPv6's minimum link MTU; a black hole at or above 1500 would hide nothing.
  if (mtu !== undefined && !(Number.isInteger(mtu) && mtu >= 1280 && mtu < 1500)) {
    throw new IpferryError('IPF_E_DATAPLANE', {
      reason: `cloudHome: blackholeMtu ${String(mtu)} is not an integer in 1280–1499`,
    });
  }
}

/** The number of home servers, checked: 1 or 2, and a black hole only in front of one. */
function checkHomes(options: Pick<CloudHomeOptions, 'blackholeMtu' | 'homes'>): 1 | 2 {
  const homes: unknown = options.homes ?? 1;
  if (homes !== 1 && homes !== 2) {
    throw new IpferryError('IPF_E_DATAPLANE', {
      reason: `cloudHome: homes ${String(homes)} is not 1 or 2`,
    });
  }
  // The black hole's filters sit on home's own cable; a bridged link would need them per port.
  if (homes === 2 && options.blackholeMtu !== undefined) {
    throw new IpferryError('IPF_E_DATAPLANE', {
      reason: 'cloudHome: blackholeMtu works with one home server only, not with homes 2',
    });
  }
  return homes;
}

/**
 * The topology of `cloudHome()` only: namespaces, cables, addresses, routes, sysctls. It lacks
 * what a LabSpec cannot express — isp's source-address validation and the MTU black hole — so
 * `Lab.create(cloudHomeSpec())` alone gives an ISP that forwards spoofed packets. Use
 * `cloudHome()`, or `applyCloudHome(lab)` after `Lab.create`.
 *
 *   client — up ─┬─ gw (cloud VM, wan0)
 *                └─ isp — home (eth0)
 *
 * With `homes: 2`, isp's `to-home` is a bridge and home2 hangs on it next to home:
 *
 *                └─ isp [to-home] ─┬─ home (eth0)
 *                                  └─ home2 (eth0)
 *
 * Reverse-path filtering is off everywhere (explicitly: new namespaces may inherit the machine's
 * setting), so the only source check in the lab is isp's nftables rule.
 */
export function cloudHomeSpec(options: CloudHomeOptions = {}): LabSpec {
  checkMtu(options.blackholeMtu);
  const homes = checkHomes(options);
  const sysctls = NO_RP_FILTER;
  const gw: Site = { name: 'gw', up: H.up.toGw, end: H.gw.uplink, routes: [H.pool] };
  const isp: Site = {
    name: 'isp',
    up: H.up.toIsp,
    end: H.isp.toUp,
    routes: [H.ispCustomers],
    // Two homes: isp's addresses on a bridge, each home on a port of it.
    ...(homes === 1
      ? {}
      : { bridges: [{ name: H.isp.toHome.ifname, addresses: cidrs(H.isp.toHome) }] }),
  };
  const home = { name: 'home', sysctls, routes: defaults(H.isp.toHome) };
  const homeLinks =
    homes === 1
      ? [cable('isp', H.isp.toHome, 'home', H.home)]
      : (['home', 'home2'] as const).map((name) => ({
          a: { host: 'isp', ifname: H.isp.homePorts[name], bridge: H.isp.toHome.ifname },
          b: { host: name, ifname: H[name].ifname, addresses: cidrs(H[name]) },
        }));
  return internet({
    prefix: options.prefix,
    sysctls,
    sites: [gw, isp],
    hosts: homes === 1 ? [home] : [home, { ...home, name: 'home2' }],
    links: homeLinks,
  });
}

/** The nftables scripts of `applyCloudHome`, one per table; the black-hole ones are optional. */
export interface CloudHomeRulesets {
  /** isp, `inet` table: source-address validation; with a black hole, the ICMP drops. */
  readonly isp: string;
  /** isp, `netdev` table on `to-home` (black hole only): drops packets above the MTU. */
  readonly ispWire?: string;
  /** home, `netdev` table on `eth0` (black hole only): drops IPv4 and IPv6 fragments. */
  readonly home?: string;
}

/**
 * What `applyCloudHome` installs.
 *
 * BCP 38 on isp: a forward rule drops what comes in from home with a source outside the ISP's
 * customer range (from home2 too with `homes: 2`: what isp routes from the bridge's ports comes
 * in on the bridge, `to-home`). A home server answering a floating IP's traffic through its own
 * default route instead of the tunnel loses that answer here, as it would behind a real ISP.
 *
 * The black hole (blackholeMtu). Both ends of the isp↔home cable keep MTU 1500, so home does
 * not know the path is narrower (its TCP MSS stays 1460, like a server behind a PPPoE or
 * DS-Lite line); the narrow link is emulated on isp:
 * - toward home, isp's route to home carries the lower MTU (the forwarding path honours it), so
 *   isp answers a large packet with DF by "fragmentation needed" / "packet too big" — dropped by
 *   isp's output chain (forwarded ones by its forward chain) — and fragments a large packet
 *   without DF, whose fragments home's ingress hook drops before anything reassembles them;
 * - from home, isp's ingress hook on `to-home` drops packets above the MTU. Lowering the link
 *   MTU instead would not be silent: the sending veth end drops the frame and home's sendmsg()
 *   fails with ENOBUFS. home's eth0 sends unsegmented packets only (gso_max_segs 1), so the
 *   check sees wire-sized packets, not 64 KiB offload aggregates.
 */
export function cloudHomeRulesets(
  options: Pick<CloudHomeOptions, 'blackholeMtu' | 'homes'> = {},
): CloudHomeRulesets & { readonly up?: string } {
  checkMtu(options.blackholeMtu);
  checkHomes(options);
  const mtu = options.blackholeMtu;
  const tooBig = [
    'icmp type destination-unreachable icmp code frag-needed counter name "too_big" drop',
    'icmpv6 type packet-too-big counter name "too_big" drop',
  ].map((rule) => `    ${rule}`);
  const isp = [
    `table inet ${H.nft.ispTable} {`,
    '  counter spoofed_v4 { }',
    '  counter spoofed_v6 { }',
    '  counter too_big { }',
    '  chain forward {',
    '    type filter hook forward priority filter; policy accept;',
    ...sourceValidation(H.isp.toHome.ifname),
    ...(mtu === undefined ? [] : tooBig),
    '  }',
    ...(mtu === undefined
      ? []
      : ['  chain output {', '    type filter hook output priority filter; policy accept;']),
    ...(mtu === undefined ? [] : [...tooBig, '  }']),
    '}',
    '',
  ].join('\n');
  if (mtu === undefined) return { isp };
  const ispWire = [
    `table netdev ${H.nft.ispWireTable} {`,
    '  counter oversize { }',
    '  chain ingress {',
    `    type filter hook ingress device "${H.isp.toHome.ifname}" priority filter; policy accept;`,
    `    meta length > ${mtu} counter name "oversize" drop`,
    '  }',
    '}',
    '',
  ].join('\n');
  // A router on the way that eats ICMP "too big" (in both directions): a client is never told
  // that a segment it sent was too large for the tunnel, so only a right MSS gets it through.
  const up = [
    `table inet ${H.nft.upTable} {`,
    '  counter too_big { }',
    '  chain forward {',
    '    type filter hook forward priority filter; policy accept;',
    ...tooBig,
    '  }',
    '}',
    '',
  ].join('\n');
  const home = [
    `table netdev ${H.nft.homeTable} {`,
    '  counter fragments { }',
    '  chain ingress {',
    `    type filter hook ingress device "${H.home.ifname}" priority filter; policy accept;`,
    '    ip frag-off & 0x3fff != 0 counter name "fragments" drop',
    '    exthdr frag exists counter name "fragments" drop',
    '  }',
    '}',
    '',
  ].join('\n');
  return { isp, ispWire, home, up };
}

/** Installs on a built `cloudHomeSpec()` lab what its LabSpec cannot express (see there). */
export async function applyCloudHome(
  lab: Lab,
  options: Pick<CloudHomeOptions, 'blackholeMtu' | 'homes' | 'bottleneck'> = {},
): Promise<void> {
  const rulesets = cloudHomeRulesets(options);
  await lab.exec('isp', ['nft', '-f', '-'], { input: rulesets.isp });
  const mtu = options.blackholeMtu;
  if (mtu === undefined || rulesets.ispWire === undefined || rulesets.home === undefined) return;
  if (rulesets.up !== undefined) await lab.exec('up', ['nft', '-f', '-'], { input: rulesets.up });
  if (options.bottleneck === 'uplink') {
    // Both ends of home's cable carry the lower MTU: home's routes say what its uplink carries.
    await lab.exec('isp', ['ip', 'link', 'set', 'dev', H.isp.toHome.ifname, 'mtu', String(mtu)]);
    await lab.exec('home', ['ip', 'link', 'set', 'dev', H.home.ifname, 'mtu', String(mtu)]);
  }
  await narrowIspRoutes(lab, mtu);
  await lab.exec('isp', ['nft', '-f', '-'], { input: rulesets.ispWire });
  await lab.exec('home', ['ip', 'link', 'set', 'dev', H.home.ifname, 'gso_max_segs', '1']);
  await lab.exec('home', ['nft', '-f', '-'], { input: rulesets.home });
}

/** isp's connected routes toward home, with the MTU added (same key: prefix, metric, protocol). */
async function narrowIspRoutes(lab: Lab, mtu: number): Promise<void> {
  const dev = ['dev', H.isp.toHome.ifname, 'proto', 'kernel', 'scope', 'link'];
  const withMtu = ['mtu', String(mtu)];
  const v4 = [H.homeLink.v4, ...dev, 'src', H.isp.toHome.v4, ...withMtu];
  const v6 = [H.homeLink.v6, ...dev, 'metric', '256', ...withMtu];
  await lab.exec('isp', ['ip', '-4', 'route', 'replace', ...v4]);
  await lab.exec('isp', ['ip', '-6', 'route', 'replace', ...v6]);
}

/**
 * The ISP changes its line: the black hole of a lab built with `blackholeMtu` and the `path`
 * bottleneck narrows (or widens) to `mtu`, at once and as silently as before.
 */
export async function setCloudHomeBlackhole(lab: Lab, mtu: number): Promise<void> {
  const rulesets = cloudHomeRulesets({ blackholeMtu: mtu });
  await narrowIspRoutes(lab, mtu);
  await lab.exec('isp', ['nft', 'delete', 'table', 'netdev', H.nft.ispWireTable]);
  await lab.exec('isp', ['nft', '-f', '-'], { input: rulesets.ispWire ?? '' });
}

/**
 * client — up — gw (the cloud VM) and up — isp — home (the home server): the "small cloud VM
 * as public router for a home server" migration, built and ready.
 *
 * `up` is the internet: it routes the floating pool (203.0.113.0/24, 2001:db8:f::/48) to the
 * VM and the ISP's customer range (198.18.0.0/24, 2001:db8:3::/48) to isp. gw forwards and has
 * no nftables: the ipferry dataplane under test brings its own. home keeps its own public
 * address and default route through its ISP, which validates sources (BCP 38), so anything
 * home sends with a floating-IP source must go through the tunnel to gw. Optionally the
 * isp↔home path is an MTU black hole (`blackholeMtu`), or a second home server `home2` shares
 * home's link and ISP (`homes: 2`).
 *
 * On failure the half-built lab is destroyed and the error rethrown.
 */
export async function cloudHome(options: CloudHomeOptions = {}): Promise<Lab> {
  return await build(cloudHomeSpec(options), (lab) => applyCloudHome(lab, options));
}

interface NftCounterList {
  nftables?: { counter?: { name?: string; packets?: number } }[];
}

/** Packets per named counter of a table; empty when the table does not exist. */
async function readCounters(
  lab: Lab,
  host: string,
  family: string,
  table: string,
): Promise<Map<string, number>> {
  const counters = new Map<string, number>();
  const { stdout: tables } = await lab.exec(host, ['nft', 'list', 'tables']);
  if (!tables.split('\n').includes(`table ${family} ${table}`)) return counters;
  const { stdout } = await lab.exec(host, [
    'nft',
    '-j',
    'list',
    'counters',
    'table',
    family,
    table,
  ]);
  for (const item of (JSON.parse(stdout) as NftCounterList).nftables ?? []) {
    const name = item.counter?.name;
    if (name !== undefined) counters.set(name, item.counter?.packets ?? 0);
  }
  return counters;
}

/** Packets the lab's own filters dropped so far: shows *where* a probe died. */
export async function cloudHomeCounters(lab: Lab): Promise<CloudHomeCounters> {
  const [isp, ispWire, home] = await Promise.all([
    readCounters(lab, 'isp', 'inet', H.nft.ispTable),
    readCounters(lab, 'isp', 'netdev', H.nft.ispWireTable),
    readCounters(lab, 'home', 'netdev', H.nft.homeTable),
  ]);
  return {
    spoofedV4: isp.get('spoofed_v4') ?? 0,
    spoofedV6: isp.get('spoofed_v6') ?? 0,
    tooBig: isp.get('too_big') ?? 0,
    oversize: ispWire.get('oversize') ?? 0,
    fragments: home.get('fragments') ?? 0,
  };
}

// ---------------------------------------------------------------------------------------------
// oldNew: an old server hands its public address over to a new server in another datacenter.

/** Addresses, interface names, the old server's service and nftables objects of `oldNew()`. */
export const OLD_NEW = {
  client: CLIENT,
  up: {
    toClient: UP_TO_CLIENT,
    toOld: { ...UP_TO_POOL_HOST, ifname: 'to-old' },
    toDcb: { v4: '198.19.0.1', v6: '2001:db8:2::1', ifname: 'to-dcb' },
  },
  /** The old server in datacenter A: its provider routes the pool to `wan0`. */
  old: { uplink: POOL_HOST_UPLINK },
  /** Datacenter B's router: the new server's provider. */
  dcb: {
    toUp: { v4: '198.19.0.2', v6: '2001:db8:2::2', ifname: 'to-up' },
    toNew: { ...TO_CUSTOMERS, ifname: 'to-new' },
  },
  /** The new server in datacenter B, with its own public address from its provider. */
  new: CUSTOMER_SERVER,
  /**
   * The public address the old server answers on before the move (on its `lo`, out of the
   * pool): the address that moves. `oldNew()` runs an echo server there named `old`.
   */
  service: {
    v4: '203.0.113.10',
    v6: '2001:db8:f::10',
    ifname: 'lo',
    name: 'old',
    tcp: 80,
    udp: 5353,
  },
  /** The pool datacenter A's provider routes to the old server. */
  pool: POOL,
  /** Datacenter B's customer range: the only sources dcb accepts from the new server (BCP 38). */
  dcbCustomers: CUSTOMERS,
  /** nftables objects the lab installs (never named `ipferry`: that is the dataplane's). */
  nft: {
    /** `inet` table on dcb: source-address validation. */
    dcbTable: 'lab_dcb',
    /** `inet` table on client: every source address that reached it (see oldNewSeen). */
    clientTable: 'lab_client',
  },
} as const;

export interface OldNewOptions {
  /** Namespace prefix (default: a fresh random one). */
  readonly prefix?: string;
  /** Whether `oldNew()` starts the old server's echo server on its address (default true). */
  readonly service?: boolean;
}

/** What dcb's nftables counters dropped so far (packets); see `oldNewCounters`. */
export interface OldNewCounters {
  /** Forwarded from the new server with an IPv4 source outside 198.18.0.0/24: dropped. */
  readonly spoofedV4: number;
  /** Forwarded from the new server with an IPv6 source outside 2001:db8:3::/48: dropped. */
  readonly spoofedV6: number;
}

/** Every source address that reached the client so far (see oldNewRulesets), sorted. */
export interface OldNewSeen {
  readonly v4: readonly string[];
  readonly v6: readonly string[];
}

const O = OLD_NEW;

/**
 * The topology of `oldNew()` only: namespaces, cables, addresses, routes, sysctls. It lacks
 * what a LabSpec cannot express — the old server's service address, dcb's source validation,
 * the client's record of sources — so use `oldNew()`, or `applyOldNew(lab)` after `Lab.create`.
 *
 *   client — up ─┬─ old (datacenter A, wan0; the pool is routed to it)
 *                └─ dcb (datacenter B's router) — new (eth0)
 *
 * Datacenter A is 192.0.2.0/24 and 2001:db8:1::/64; datacenter B is the benchmarking range
 * (198.19.0.0/24 to up, 198.18.0.0/24 to new) and 2001:db8:2::/64, 2001:db8:3::/64. Reverse-path
 * filtering is off everywhere, so dcb's nftables rule is the only source check in the lab.
 */
export function oldNewSpec(options: Pick<OldNewOptions, 'prefix'> = {}): LabSpec {
  return internet({
    prefix: options.prefix,
    sysctls: NO_RP_FILTER,
    sites: [
      { name: 'old', up: O.up.toOld, end: O.old.uplink, routes: [O.pool] },
      { name: 'dcb', up: O.up.toDcb, end: O.dcb.toUp, routes: [O.dcbCustomers] },
    ],
    hosts: [{ name: 'new', sysctls: NO_RP_FILTER, routes: defaults(O.dcb.toNew) }],
    links: [cable('dcb', O.dcb.toNew, 'new', O.new)],
  });
}

/** The nftables scripts of `applyOldNew`, one per table. */
export interface OldNewRulesets {
  /** dcb, `inet` table: source-address validation. */
  readonly dcb: string;
  /** client, `inet` table: records the source of every packet that reaches it. */
  readonly client: string;
}

/**
 * What `applyOldNew` installs.
 *
 * BCP 38 on dcb: a forward rule drops what comes in from the new server with a source outside
 * datacenter B's customer range, so the new server cannot answer from the moved address through
 * its own provider: without the tunnel back to the old server its answers die here, as they
 * would in a real datacenter.
 *
 * On the client, dynamic sets collect the source of every packet arriving from outside (ICMP
 * errors included): a capture without tcpdump, to show which addresses the client ever saw.
 */
export function oldNewRulesets(): OldNewRulesets {
  const dcb = [
    `table inet ${O.nft.dcbTable} {`,
    '  counter spoofed_v4 { }',
    '  counter spoofed_v6 { }',
    '  chain forward {',
    '    type filter hook forward priority filter; policy accept;',
    ...sourceValidation(O.dcb.toNew.ifname),
    '  }',
    '}',
    '',
  ].join('\n');
  const client = [
    `table inet ${O.nft.clientTable} {`,
    '  set seen4 { type ipv4_addr; flags dynamic; }',
    '  set seen6 { type ipv6_addr; flags dynamic; }',
    '  chain prerouting {',
    '    type filter hook prerouting priority raw; policy accept;',
    '    iifname "lo" accept',
    '    meta nfproto ipv4 update @seen4 { ip saddr }',
    '    meta nfproto ipv6 update @seen6 { ip6 saddr }',
    '  }',
    '}',
    '',
  ].join('\n');
  return { dcb, client };
}

/** Installs on a built `oldNewSpec()` lab what its LabSpec cannot express (see there). */
export async function applyOldNew(lab: Lab): Promise<void> {
  const rulesets = oldNewRulesets();
  await lab.exec('dcb', ['nft', '-f', '-'], { input: rulesets.dcb });
  await lab.exec('client', ['nft', '-f', '-'], { input: rulesets.client });
  for (const cidr of [`${O.service.v4}/32`, `${O.service.v6}/128`]) {
    await lab.exec('old', ['ip', 'address', 'add', cidr, 'dev', O.service.ifname]);
  }
}

/**
 * client — up — old (the old server, datacenter A) and up — dcb — new (the new server,
 * datacenter B): the "old server keeps the IP, new server serves it" migration, built and ready.
 *
 * `up` is the internet: it routes the pool (203.0.113.0/24, 2001:db8:f::/48) to the old server
 * and datacenter B's customer range (198.18.0.0/24, 2001:db8:3::/48) to dcb. The old server
 * holds its public address (203.0.113.10, 2001:db8:f::10, from the pool) on `lo` and, unless
 * `service: false`, answers there with an echo server named `old` (TCP 80, UDP 5353). It forwards
 * and has no nftables of its own: the ipferry dataplane under test brings its own. The new server
 * has its own address and default route through dcb, which validates sources (BCP 38).
 *
 * On failure the half-built lab is destroyed and the error rethrown.
 */
export async function oldNew(options: OldNewOptions = {}): Promise<Lab> {
  return await build(oldNewSpec(options), async (lab) => {
    await applyOldNew(lab);
    if (options.service === false) return;
    await startEchoServer(lab, 'old', {
      name: O.service.name,
      tcp: [O.service.tcp],
      udp: [O.service.udp],
      // Bound to the service address: a UDP answer must leave from the address it was asked on.
      bind: [O.service.v4, O.service.v6],
    });
  });
}

/** Packets dcb's source validation dropped so far. */
export async function oldNewCounters(lab: Lab): Promise<OldNewCounters> {
  const dcb = await readCounters(lab, 'dcb', 'inet', O.nft.dcbTable);
  return { spoofedV4: dcb.get('spoofed_v4') ?? 0, spoofedV6: dcb.get('spoofed_v6') ?? 0 };
}

interface NftSetList {
  nftables?: { set?: { name?: string; elem?: unknown[] } }[];
}

/** Every source address the client received a packet from (its `lo` aside). */
export async function oldNewSeen(lab: Lab): Promise<OldNewSeen> {
  const read = async (set: string): Promise<string[]> => {
    const argv = ['nft', '-j', 'list', 'set', 'inet', O.nft.clientTable, set];
    const { stdout } = await lab.exec('client', argv);
    const found = (JSON.parse(stdout) as NftSetList).nftables?.find((i) => i.set)?.set?.elem;
    return (found ?? []).filter((e): e is string => typeof e === 'string').sort();
  };
  return { v4: await read('seen4'), v6: await read('seen6') };
}

/** Forgets the sources the client has seen, so a test can look at one phase alone. */
export async function oldNewForgetSeen(lab: Lab): Promise<void> {
  for (const set of ['seen4', 'seen6']) {
    await lab.exec('client', ['nft', 'flush', 'set', 'inet', O.nft.clientTable, set]);
  }
}

// ---------------------------------------------------------------------------------------------
// fleet: hosts in two sites (Neti's EC2-classic and VPC), each with a private and a public address.

/** Addresses, interface names and nftables objects of `fleet()`; node addresses: `fleetNodes`. */
export const FLEET = {
  /**
   * The two sites. A site is one LAN (a bridge on `router`) carrying two prefixes: the private
   * one, routed nowhere else, and the public one, routed between sites. Node `<site><i>` holds
   * `<prefix>.<hostBase + i>` of both on its `eth0`; the router holds `.1` of both.
   */
  sites: {
    a: {
      bridge: 'lan-a',
      private: { prefix: '10.1.0.0/24', router: '10.1.0.1', base: '10.1.0.' },
      public: { prefix: '198.51.100.0/24', router: '198.51.100.1', base: '198.51.100.' },
    },
    b: {
      bridge: 'lan-b',
      private: { prefix: '10.2.0.0/24', router: '10.2.0.1', base: '10.2.0.' },
      public: { prefix: '203.0.113.0/24', router: '203.0.113.1', base: '203.0.113.' },
    },
  },
  /** Node i (1-based) gets host part hostBase + i: a1 is 10.1.0.11 and 198.51.100.11. */
  hostBase: 10,
  /** Default and largest `perSite`. */
  defaultPerSite: 3,
  maxPerSite: 50,
  /** A node's one interface, a port of its site's bridge on `router`. */
  nodeIfname: 'eth0',
  /** A host on the internet that is not a fleet member (198.18.0.0/15: benchmarking range). */
  outsider: {
    v4: '198.18.0.10',
    ifname: 'eth0',
    router: { v4: '198.18.0.1', ifname: 'to-outsider' },
  },
  /** The operators' host: inside `sshAllow`, the range a fleet firewall still lets SSH from. */
  admin: {
    v4: '192.0.2.10',
    ifname: 'eth0',
    router: { v4: '192.0.2.1', ifname: 'to-admin' },
    sshAllow: '192.0.2.0/24',
  },
  /** Neti's overlay range: no lab address falls in it, so an agent may use it freely. */
  overlay: '192.168.0.0/18',
  /** nftables objects the lab installs (never named `ipferry`: that is the dataplane's). */
  nft: {
    /** `inet` table on router: drops forwarded traffic from or to a site's private prefix. */
    routerTable: 'lab_router',
  },
} as const;

export type FleetSite = keyof typeof FLEET.sites;

export interface FleetOptions {
  /** Namespace prefix (default: a fresh random one). */
  readonly prefix?: string;
  /** Nodes per site, 1–50 (default 3): a1..aN and b1..bN. */
  readonly perSite?: number;
}

/** One fleet member of `fleet()`: its host name, site and addresses (without prefix length). */
export interface FleetNode {
  readonly name: string;
  readonly site: FleetSite;
  /** 1-based index within its site. */
  readonly index: number;
  readonly private: string;
  readonly public: string;
  /** The interface holding both addresses. */
  readonly ifname: string;
}

/** Packets the router's `lab_router` table dropped so far; see `fleetCounters`. */
export interface FleetCounters {
  /** Forwarded with a site's private address as source. */
  readonly privateSource: number;
  /** Forwarded with a site's private address as destination. */
  readonly privateDestination: number;
}

const F = FLEET;
const FLEET_SITES = Object.keys(F.sites) as FleetSite[];

function checkPerSite(perSite: unknown): number {
  if (typeof perSite !== 'number' || !Number.isInteger(perSite)) {
    throw new IpferryError('IPF_E_DATAPLANE', {
      reason: `fleet: perSite ${String(perSite)} is not an integer in 1–${F.maxPerSite}`,
    });
  }
  if (perSite < 1 || perSite > F.maxPerSite) {
    throw new IpferryError('IPF_E_DATAPLANE', {
      reason: `fleet: perSite ${perSite} is not an integer in 1–${F.maxPerSite}`,
    });
  }
  return perSite;
}

/** Every fleet member of `fleet(options)`, site a first, each site in index order. */
export function fleetNodes(options: Pick<FleetOptions, 'perSite'> = {}): FleetNode[] {
  const perSite = checkPerSite(options.perSite ?? F.defaultPerSite);
  return FLEET_SITES.flatMap((site) =>
    Array.from({ length: perSite }, (_, i): FleetNode => {
      const host = String(F.hostBase + i + 1);
      return {
        name: `${site}${i + 1}`,
        site,
        index: i + 1,
        private: `${F.sites[site].private.base}${host}`,
        public: `${F.sites[site].public.base}${host}`,
        ifname: F.nodeIfname,
      };
    }),
  );
}

/** `10.1.0.0/24` → `/24`: node and router addresses take their site prefix's length. */
function prefixLength(cidr: string): string {
  return cidr.slice(cidr.indexOf('/'));
}

/**
 * The topology of `fleet()` only: namespaces, cables, addresses, routes, sysctls. It lacks the
 * router's filter of private prefixes and the nodes' explicit source hints, so
 * `Lab.create(fleetSpec())` alone gives a router that forwards private addresses between
 * sites. Use `fleet()`, or `applyFleet(lab)` after `Lab.create`.
 *
 *   a1 ─┐                              ┌─ b1
 *   a2 ─┼─ [lan-a] router [lan-b] ─────┼─ b2
 *   a3 ─┘     │      │                 └─ b3
 *        outsider  admin
 *
 * A site is one LAN with two prefixes (private and public); same-site nodes talk directly over
 * it by either, other sites are reached through the router by their public addresses only.
 * IPv4 only: the overlay is IPv4, like Neti's. Reverse-path filtering is off everywhere, so the
 * router's nftables table is the only filter in the lab.
 */
export function fleetSpec(options: FleetOptions = {}): LabSpec {
  const nodes = fleetNodes(options);
  const sysctls = NO_RP_FILTER;
  const bridges = FLEET_SITES.map((site) => {
    const s = F.sites[site];
    return {
      name: s.bridge,
      addresses: [
        `${s.private.router}${prefixLength(s.private.prefix)}`,
        `${s.public.router}${prefixLength(s.public.prefix)}`,
      ],
    };
  });
  const nodeHosts = nodes.map((node) => ({
    name: node.name,
    sysctls,
    routes: [{ to: 'default', via: F.sites[node.site].public.router }],
  }));
  const nodeLinks = nodes.map((node) => {
    const s = F.sites[node.site];
    return {
      a: { host: 'router', ifname: `p-${node.name}`, bridge: s.bridge },
      b: {
        host: node.name,
        ifname: node.ifname,
        addresses: [
          `${node.private}${prefixLength(s.private.prefix)}`,
          `${node.public}${prefixLength(s.public.prefix)}`,
        ],
      },
    };
  });
  return {
    ...withPrefix(options.prefix),
    hosts: [
      { name: 'router', router: true, sysctls, bridges },
      { name: 'outsider', sysctls, routes: [{ to: 'default', via: F.outsider.router.v4 }] },
      { name: 'admin', sysctls, routes: [{ to: 'default', via: F.admin.router.v4 }] },
      ...nodeHosts,
    ],
    links: [
      {
        a: {
          host: 'router',
          ifname: F.outsider.router.ifname,
          addresses: [`${F.outsider.router.v4}/24`],
        },
        b: { host: 'outsider', ifname: F.outsider.ifname, addresses: [`${F.outsider.v4}/24`] },
      },
      {
        a: {
          host: 'router',
          ifname: F.admin.router.ifname,
          addresses: [`${F.admin.router.v4}/24`],
        },
        b: { host: 'admin', ifname: F.admin.ifname, addresses: [`${F.admin.v4}/24`] },
      },
      ...nodeLinks,
    ],
  };
}

/**
 * What `applyFleet` installs on the router: an `inet` table whose forward chain drops (and
 * counts) every packet with a site's private address as source or destination. Same-site
 * traffic never crosses the router (it is on-link), so this drops exactly what would leak a
 * private prefix to another site or to the internet — as between two VPCs, or EC2-classic and a
 * VPC, where private addresses are not routed.
 */
export function fleetRuleset(): string {
  const privates = FLEET_SITES.map((site) => F.sites[site].private.prefix).join(', ');
  return [
    `table inet ${F.nft.routerTable} {`,
    '  counter private_source { }',
    '  counter private_destination { }',
    '  set private {',
    '    type ipv4_addr; flags interval;',
    `    elements = { ${privates} }`,
    '  }',
    '  chain forward {',
    '    type filter hook forward priority filter; policy accept;',
    '    ip saddr @private counter name "private_source" drop',
    '    ip daddr @private counter name "private_destination" drop',
    '  }',
    '}',
    '',
  ].join('\n');
}

/**
 * Installs on a built `fleetSpec()` lab what its LabSpec cannot express: the router's filter
 * and, on every node, `src` on the default route. The kernel would pick the public address by
 * itself (the one in the gateway's subnet), but pinned it cannot change when an agent adds
 * addresses (an overlay IP) to `eth0`: a node reaches other sites from its public address.
 */
export async function applyFleet(
  lab: Lab,
  options: Pick<FleetOptions, 'perSite'> = {},
): Promise<void> {
  await lab.exec('router', ['nft', '-f', '-'], { input: fleetRuleset() });
  await Promise.all(
    fleetNodes(options).map((node) => {
      const via = F.sites[node.site].public.router;
      const argv = ['ip', 'route', 'replace', 'default', 'via', via, 'dev', node.ifname];
      return lab.exec(node.name, [...argv, 'src', node.public]);
    }),
  );
}

/**
 * Two sites of fleet members behind one router: site a (a1..aN: 10.1.0.0/24 private,
 * 198.51.100.0/24 public) and site b (b1..bN: 10.2.0.0/24, 203.0.113.0/24), plus `outsider`
 * (198.18.0.10, on the internet, not a member) and `admin` (192.0.2.10, inside the SSH
 * allow-list range 192.0.2.0/24), both cabled to the router. Every node holds both its
 * addresses on `eth0`; its default route goes via its site's public router address from its own
 * public address. Private prefixes never cross the router (nftables table `lab_router`,
 * counters in `fleetCounters`), so members of different sites reach each other by public
 * addresses only, and each sees the other's public address. No agent runs: tests bring theirs.
 *
 * On failure the half-built lab is destroyed and the error rethrown.
 */
export async function fleet(options: FleetOptions = {}): Promise<Lab> {
  return await build(fleetSpec(options), (lab) => applyFleet(lab, options));
}

/** Packets the router dropped so far for carrying a private address between sites. */
export async function fleetCounters(lab: Lab): Promise<FleetCounters> {
  const router = await readCounters(lab, 'router', 'inet', F.nft.routerTable);
  return {
    privateSource: router.get('private_source') ?? 0,
    privateDestination: router.get('private_destination') ?? 0,
  };
}
