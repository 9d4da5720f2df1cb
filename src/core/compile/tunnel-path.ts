/**
 * What every part that routes through this node's tunnel shares: the tunnel's options (port,
 * MTU, driver, what the path probes measured), the underlay MTU worked out from this host's
 * routes toward its peers, how a route names its next hop through the tunnel, and the tunnel's
 * own link address. The tunnels part and the egress part both build on it.
 */
import type { EgressMode, NodeRecord } from '../model.js';
import type { RouteVia } from '../names.js';
import {
  parseEndpoint,
  type TunnelDriverKind,
  tunnelOverhead,
  tunnelProbeAddress,
} from '../tunnel.js';
import type { HostFacts } from '../../intent/facts.js';

export interface TunnelOptions {
  /** UDP port this node's tunnel listens on. */
  readonly listenPort: number;
  /** Separates interface names of labs sharing one machine (the namespace name there). */
  readonly salt?: string;
  readonly underlayMtu?: number;
  /** A tunnel MTU chosen by the operator (checked against the underlay's). */
  readonly mtu?: number;
  /** The tunnel implementation this node runs (default WireGuard); its peers must run it too. */
  readonly driver?: TunnelDriverKind;
  /**
   * Per peer node, the largest packet the path through the tunnel was found to carry when it
   * is less than the tunnel's MTU (see src/agent/health.ts): routes toward that peer carry it
   * as their MTU, and the MSS clamp follows the route.
   */
  readonly peerMtu?: ReadonlyMap<string, number>;
  /**
   * Peer nodes whose path through the tunnel has been measured (src/agent/path-monitor.ts). When
   * given, a gateway routes FIPs only toward these: toward any other — a new peer included —
   * a path narrower than the tunnel believes, losing fragments and ICMP, would swallow the
   * first large packets, so it reports those FIPs DOWN with the reason instead. The peer is in
   * the tunnel meanwhile, and among the carriers, so that the probes go to it at once.
   * Absent: no probes run, everything is routed at once.
   */
  readonly measured?: ReadonlySet<string>;
  /**
   * The MTU of this host's route toward a peer's endpoint host (`ip route get`), as the agent
   * read it. Without an operator's `underlayMtu`, the tunnel's MTU follows the largest of these
   * (as wg-quick does), else the default route's, and a peer behind a narrower route starts at
   * what that route carries until its path is measured.
   */
  readonly endpointMtus?: ReadonlyMap<string, number>;
  /** Where this node's own traffic leaves (agent option `egress`; absent: `own`). See egress.ts. */
  readonly egress?: EgressMode;
}

/** More peers' endpoints than this and the default route's MTU stands for all of them. */
const MAX_ENDPOINT_ROUTES = 64;

/**
 * The hosts of other nodes' endpoints (IP literals), whose routes give the tunnel's underlay
 * MTU (see withUnderlay); none beyond MAX_ENDPOINT_ROUTES, so that a large fleet does not cost
 * a route lookup per member.
 */
export function endpointHosts(nodes: readonly NodeRecord[], self: string): string[] {
  const hosts = new Set<string>();
  for (const n of nodes) {
    if (n.name === self || !n.endpoint) continue;
    const endpoint = tryEndpoint(n.endpoint);
    if (endpoint?.family !== undefined) hosts.add(endpoint.host);
  }
  return hosts.size > MAX_ENDPOINT_ROUTES ? [] : [...hosts].sort();
}

function tryEndpoint(text: string): ReturnType<typeof parseEndpoint> | undefined {
  try {
    return parseEndpoint(text);
  } catch {
    return undefined;
  }
}

/**
 * The options with the tunnel's underlay worked out from this host's routes when the operator
 * gave no `underlayMtu`: the largest MTU of the routes toward peers' endpoints (wg-quick's rule),
 * else the default route's; and each peer whose endpoint lies behind a narrower route starts at
 * what that route carries (a measured path MTU, when lower, wins).
 */
export function withUnderlay(
  options: TunnelOptions,
  nodes: readonly NodeRecord[],
  self: string,
  facts: HostFacts | undefined,
): TunnelOptions {
  // An operator's tunnel MTU was checked against a 1500-byte underlay (or the one they gave).
  if (options.underlayMtu !== undefined || options.mtu !== undefined) return options;
  const routes: { peer: string; family: 4 | 6; mtu: number }[] = [];
  for (const n of nodes) {
    if (n.name === self || !n.endpoint) continue;
    const endpoint = tryEndpoint(n.endpoint);
    const mtu = endpoint && options.endpointMtus?.get(endpoint.host);
    if (endpoint && mtu !== undefined)
      routes.push({ peer: n.name, family: endpoint.family ?? 4, mtu });
  }
  const underlay =
    routes.length > 0
      ? Math.max(...routes.map((r) => r.mtu))
      : (facts?.defaultRoutes?.find((r) => r.mtu !== undefined)?.mtu ?? 1500);
  const peerMtu = new Map(options.peerMtu ?? []);
  for (const r of routes) {
    if (r.mtu >= underlay) continue;
    const start = r.mtu - tunnelOverhead(options.driver ?? 'wireguard', r.family, r.mtu);
    peerMtu.set(r.peer, Math.min(start, peerMtu.get(r.peer) ?? start));
  }
  return { ...options, underlayMtu: underlay, peerMtu };
}

/**
 * How a route reaches `peer` through the tunnel. WireGuard picks the peer by allowed IPs, so
 * the device is enough; tinc in switch mode is an Ethernet segment, so the route names the
 * peer's link-local address as next hop (IPv4 routes too: `via inet6`, resolved by neighbour
 * discovery), which keeps IPv4 tunnel addresses out of the picture entirely.
 */
export function nextHop(peer: string, family: 4 | 6, options: TunnelOptions): RouteVia {
  const mtu = options.peerMtu?.get(peer);
  const via =
    options.driver === 'tinc'
      ? { via: `${family === 4 ? 'inet6 ' : ''}${tunnelProbeAddress(peer)}` }
      : {};
  return { ...via, ...(mtu !== undefined ? { mtu: Math.max(mtu, family === 6 ? 1280 : 68) } : {}) };
}

/** Moved to ../tunnel.ts, where renderers outside compile read it too. */
export { tunnelLinkAddress } from '../tunnel.js';
