/**
 * Ready-made lab topologies. Addresses are documentation ranges for the "public" side
 * (198.51.100.0/24, 192.0.2.0/24, 203.0.113.0/24, 2001:db8::/32) and private ranges on the LAN.
 */
import type { LabSpec } from './topology.js';

/** Addresses and interface names of `gatewayLan()`, so tests do not repeat literals. */
export const GATEWAY_LAN = {
  client: { v4: '198.51.100.9', v6: '2001:db8:c::9', ifname: 'to-up' },
  up: {
    toClient: { v4: '198.51.100.1', v6: '2001:db8:c::1', ifname: 'to-client' },
    toGw: { v4: '192.0.2.1', v6: '2001:db8:1::1', ifname: 'to-gw' },
  },
  gw: {
    uplink: { v4: '192.0.2.2', v6: '2001:db8:1::2', ifname: 'wan0' },
    lan: { v4: '10.0.0.1', v6: 'fd00:10::1', ifname: 'lan0' },
  },
  be1: { v4: '10.0.0.11', v6: 'fd00:10::11', ifname: 'lan' },
  be2: { v4: '10.0.0.12', v6: 'fd00:10::12', ifname: 'lan' },
  lanc: { v4: '10.0.0.50', v6: 'fd00:10::50', ifname: 'lan' },
  /** The floating-IP pool the provider routes to the gateway. */
  pool: { v4: '203.0.113.0/24', v6: '2001:db8:f::/48' },
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

/** A LAN host: one cable to a port of the gateway's bridge, default routes via the gateway. */
function lanHost(name: 'be1' | 'be2' | 'lanc') {
  const host = N[name];
  return {
    host: {
      name,
      routes: [
        { to: 'default', via: N.gw.lan.v4 },
        { to: 'default', via: N.gw.lan.v6 },
      ],
    },
    link: {
      a: { host: 'gw', ifname: `p-${name}`, bridge: N.gw.lan.ifname },
      b: { host: name, ifname: host.ifname, addresses: [`${host.v4}/24`, `${host.v6}/64`] },
    },
  };
}

/**
 * client — up — gw — lan0 bridge — be1, be2, lanc.
 *
 * `up` is the provider's router: it routes the floating pool (203.0.113.0/24,
 * 2001:db8:f::/48) to the gateway's uplink. `gw` forwards but has no nftables at all: the
 * ipferry dataplane under test adds them.
 */
export function gatewayLan(options: GatewayLanOptions = {}): LabSpec {
  const lanHosts = (['be1', 'be2', 'lanc'] as const).map(lanHost);
  const lanRoutes =
    options.lanRoutes === false
      ? []
      : [
          { to: N.lanPrefix.v4, via: N.gw.uplink.v4 },
          { to: N.lanPrefix.v6, via: N.gw.uplink.v6 },
        ];
  return {
    ...(options.prefix === undefined ? {} : { prefix: options.prefix }),
    hosts: [
      {
        name: 'client',
        routes: [
          { to: 'default', via: N.up.toClient.v4 },
          { to: 'default', via: N.up.toClient.v6 },
        ],
      },
      {
        name: 'up',
        router: true,
        routes: [
          { to: N.pool.v4, via: N.gw.uplink.v4 },
          { to: N.pool.v6, via: N.gw.uplink.v6 },
          ...lanRoutes,
        ],
      },
      {
        name: 'gw',
        router: true,
        bridges: [{ name: N.gw.lan.ifname, addresses: [`${N.gw.lan.v4}/24`, `${N.gw.lan.v6}/64`] }],
        routes: [
          { to: 'default', via: N.up.toGw.v4 },
          { to: 'default', via: N.up.toGw.v6 },
        ],
      },
      ...lanHosts.map((h) => h.host),
    ],
    links: [
      {
        a: {
          host: 'client',
          ifname: N.client.ifname,
          addresses: [`${N.client.v4}/24`, `${N.client.v6}/64`],
        },
        b: {
          host: 'up',
          ifname: N.up.toClient.ifname,
          addresses: [`${N.up.toClient.v4}/24`, `${N.up.toClient.v6}/64`],
        },
      },
      {
        a: {
          host: 'up',
          ifname: N.up.toGw.ifname,
          addresses: [`${N.up.toGw.v4}/24`, `${N.up.toGw.v6}/64`],
        },
        b: {
          host: 'gw',
          ifname: N.gw.uplink.ifname,
          addresses: [`${N.gw.uplink.v4}/24`, `${N.gw.uplink.v6}/64`],
        },
      },
      ...lanHosts.map((h) => h.link),
    ],
  };
}
