/**
 * oldNew: an old server hands its public address over to a new server in another datacenter
 * (datacenter B's public addresses are the benchmarking range).
 */
import { startEchoServer } from '../probe.js';
import type { Lab, LabSpec } from '../topology.js';
import { build, NO_RP_FILTER, readCounters } from './common.js';
import {
  cable,
  CLIENT,
  CUSTOMER_SERVER,
  CUSTOMERS,
  defaults,
  internet,
  POOL,
  POOL_HOST_UPLINK,
  sourceValidation,
  TO_CUSTOMERS,
  UP_TO_CLIENT,
  UP_TO_POOL_HOST,
} from './internet.js';

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
