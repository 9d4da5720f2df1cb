/**
 * fleet: hosts in two sites (Neti's EC2-classic and VPC), each with a private and a public
 * address, behind one router. A topology of its own, not the internet the other scenarios share.
 */
import { IpferryError } from '../../core/errors.js';
import type { Lab, LabSpec } from '../topology.js';
import { build, NO_RP_FILTER, readCounters, withPrefix } from './common.js';

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
