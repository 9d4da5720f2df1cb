/**
 * gatewayLan: a gateway with floating IPs in front of a LAN (IP Floater's setting).
 */
import type { LabSpec } from '../topology.js';
import {
  cidrs,
  CLIENT,
  defaults,
  internet,
  POOL,
  POOL_HOST_UPLINK,
  type Site,
  UP_TO_CLIENT,
  UP_TO_POOL_HOST,
} from './internet.js';

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
