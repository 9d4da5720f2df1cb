/**
 * cloudHome: a small cloud VM as the public router of a home server, which keeps its own public
 * address from a home ISP (the CGNAT range 100.64.0.0/10 between the routers), optionally behind
 * an MTU black hole, optionally with a second home server.
 */
import { IpferryError } from '../../core/errors.js';
import type { Lab, LabSpec } from '../topology.js';
import { build, NO_RP_FILTER, readCounters } from './common.js';
import {
  cable,
  cidrs,
  CLIENT,
  CUSTOMER_SERVER,
  CUSTOMERS,
  defaults,
  internet,
  POOL,
  POOL_HOST_UPLINK,
  type Site,
  sourceValidation,
  TO_CUSTOMERS,
  UP_TO_CLIENT,
  UP_TO_POOL_HOST,
} from './internet.js';

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
