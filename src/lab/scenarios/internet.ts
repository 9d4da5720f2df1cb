/**
 * The internet gatewayLan, cloudHome and oldNew stand in: a client, the router `up`, the host the
 * floating pool is routed to, and what each scenario cables to `up` (its sites). Addresses are
 * documentation ranges (198.51.100.0/24, 192.0.2.0/24, 203.0.113.0/24, 2001:db8::/32); a second
 * provider (cloudHome's home ISP, oldNew's datacenter B) gets the benchmarking range
 * (198.18.0.0/15, never routed on the internet) as its customers' "public" range.
 */
import type { BridgeSpec, HostSpec, LabSpec, LinkSpec } from '../topology.js';
import { withPrefix } from './common.js';

/** An address of each family (without prefix length), and the interface holding them. */
export interface End {
  readonly v4: string;
  readonly v6: string;
  readonly ifname: string;
}

/** A pair of prefixes, IPv4 and IPv6. */
export interface Prefixes {
  readonly v4: string;
  readonly v6: string;
}

/** The client on the internet, and `up`'s end of its cable. */
export const CLIENT = { v4: '198.51.100.9', v6: '2001:db8:c::9', ifname: 'to-up' } as const;
export const UP_TO_CLIENT = {
  v4: '198.51.100.1',
  v6: '2001:db8:c::1',
  ifname: 'to-client',
} as const;
/** `up`'s end of the cable to the host the pool is routed to (its ifname names that host). */
export const UP_TO_POOL_HOST = { v4: '192.0.2.1', v6: '2001:db8:1::1' } as const;
/** That host's end: its provider routes the floating pool to `wan0`. */
export const POOL_HOST_UPLINK = { v4: '192.0.2.2', v6: '2001:db8:1::2', ifname: 'wan0' } as const;
/** The floating-IP pool. */
export const POOL = { v4: '203.0.113.0/24', v6: '2001:db8:f::/48' } as const;
/**
 * A second provider (cloudHome's home ISP, oldNew's datacenter B) in the benchmarking range:
 * the only sources its router accepts from its customers (BCP 38), its router's end of the
 * customer link, and the first server on it.
 */
export const CUSTOMERS = { v4: '198.18.0.0/24', v6: '2001:db8:3::/48' } as const;
export const TO_CUSTOMERS = { v4: '198.18.0.1', v6: '2001:db8:3::1' } as const;
export const CUSTOMER_SERVER = { v4: '198.18.0.10', v6: '2001:db8:3::10', ifname: 'eth0' } as const;

export function cidrs(end: Prefixes): string[] {
  return [`${end.v4}/24`, `${end.v6}/64`];
}

export function defaults(via: Prefixes) {
  return [
    { to: 'default', via: via.v4 },
    { to: 'default', via: via.v6 },
  ];
}

/** A cable between two hosts, each end addressed (/24 and /64). */
export function cable(a: string, aEnd: End, b: string, bEnd: End): LinkSpec {
  return {
    a: { host: a, ifname: aEnd.ifname, addresses: cidrs(aEnd) },
    b: { host: b, ifname: bEnd.ifname, addresses: cidrs(bEnd) },
  };
}

/** A router cabled to `up`: the host the pool is routed to, or another provider's router. */
export interface Site {
  readonly name: string;
  /** `up`'s end of the cable, and the site's. */
  readonly up: End;
  readonly end: End;
  /** What `up` routes to the site. */
  readonly routes: readonly Prefixes[];
  readonly bridges?: readonly BridgeSpec[];
}

export interface InternetSpec {
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
export function internet(spec: InternetSpec): LabSpec {
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

/**
 * BCP 38 on a provider's router: the forward-chain rules that drop (and count, in counters
 * `spoofed_v4` and `spoofed_v6`) what comes in on `ifname` from outside the customer range.
 */
export function sourceValidation(ifname: string): string[] {
  const from = `iifname "${ifname}"`;
  return [
    `    ${from} ip saddr != ${CUSTOMERS.v4} counter name "spoofed_v4" drop`,
    `    ${from} ip6 saddr != ${CUSTOMERS.v6} counter name "spoofed_v6" drop`,
  ];
}
