/**
 * Floating IPs served by another node, through the tunnel between it and the gateway.
 *
 * Every node that takes part has one WireGuard interface (`tunnelName(node, node, salt)`) with
 * one peer per node it exchanges FIPs with:
 * - on the gateway G, the peer N gets, as allowed IPs, the routed FIPs it serves; G routes each
 *   of them into the tunnel (`route FIP/32 dev TUN`, ipferry's route protocol) and no longer
 *   drops it;
 * - on the node N, the gateway peer carries everything (0.0.0.0/0, ::/0: the answers go to any
 *   client). N holds each FIP as an address of its tunnel (the tunnel driver owns it) and answers from it by source policy
 *   routing: `ip rule from FIP lookup TABLE` with a default route into the tunnel there. N's
 *   other traffic keeps its own default route, so its own address keeps working during the
 *   migration. rp_filter is loose on the tunnel: clients arrive there although N's route back to
 *   them would be its own uplink.
 * A FIP routed to a node without a registered tunnel key is refused (ERROR with the reason).
 */
import { tryParseAddress } from './address.js';
import type { IntentElement } from './intent.js';
import type { FloatingIp, NodeRecord, Pool } from './model.js';
import { ROUTE_TABLE, RULE_PRIORITY } from './names.js';
import { type TunnelIntent, type TunnelPeer, tunnelMtu, tunnelName } from './tunnel.js';

export interface TunnelOptions {
  /** UDP port this node's tunnel listens on. */
  readonly listenPort: number;
  /** Separates interface names of labs sharing one machine (the namespace name there). */
  readonly salt?: string;
  readonly underlayMtu?: number;
}

export const DEFAULT_TUNNEL_PORT = 51820;
const KEEPALIVE_SECONDS = 25;

interface RoutedPart {
  readonly elements: IntentElement[];
  readonly tunnel?: TunnelIntent;
  readonly refused: { address: string; reason: string }[];
  /** FIPs delivered elsewhere: the gateway must not drop them. */
  readonly passing: Set<string>;
}

export function routedPart(
  pools: readonly Pool[],
  fips: readonly { fip: FloatingIp }[],
  nodes: readonly NodeRecord[],
  node: string,
  options: TunnelOptions,
): RoutedPart {
  const gatewayOf = new Map(pools.map((p) => [p.name, p.gateway]));
  const nodeByName = new Map(nodes.map((n) => [n.name, n]));
  const tun = tunnelName(node, node, options.salt ?? '');
  const elements: IntentElement[] = [];
  const refused: { address: string; reason: string }[] = [];
  const passing = new Set<string>();
  /** FIPs this node holds: addresses of its tunnel interface, managed with the tunnel. */
  const holds: string[] = [];
  const peers = new Map<string, Set<string>>();
  const addPeer = (name: string, prefixes: string[]): void => {
    const set = peers.get(name) ?? new Set<string>();
    for (const p of prefixes) set.add(p);
    peers.set(name, set);
  };
  const holdsAny: Record<4 | 6, boolean> = { 4: false, 6: false };
  let fromGateway: string | undefined;
  const poolByName = new Map(pools.map((p) => [p.name, p]));
  for (const { fip } of fips) {
    const a = fip.association;
    const gateway = gatewayOf.get(fip.pool);
    if (a?.mode !== 'routed' || !a.node || !gateway) continue;
    if (node !== gateway && node !== a.node) continue;
    if (a.node === gateway) {
      refused.push({
        address: fip.address,
        reason: `routed to its own gateway ${gateway}: use nat or ports for a target on the gateway's LAN`,
      });
      continue;
    }
    const pool = poolByName.get(fip.pool);
    if (pool?.delivery === 'onlink' && fip.family === 4) {
      // The gateway holds on-link IPv4 FIPs as local addresses, which would swallow them.
      refused.push({
        address: fip.address,
        reason:
          'routed mode on an on-link IPv4 pool needs proxy ARP, which this version does not do yet: route the pool to the gateway',
      });
      continue;
    }
    const peerName = node === gateway ? a.node : gateway;
    const peer = nodeByName.get(peerName);
    if (!peer?.publicKey) {
      refused.push({
        address: fip.address,
        reason: `node ${peerName} has no tunnel key: is its agent running with the Linux dataplane?`,
      });
      continue;
    }
    const host = `${fip.address}/${fip.family === 4 ? 32 : 128}`;
    if (node === gateway) {
      passing.add(fip.address);
      addPeer(peerName, [host]);
      elements.push({ kind: 'route', key: host, value: `dev ${tun}`, owner: fip.address });
    } else {
      // Answers leave by one gateway: the tunnel's default route and 0.0.0.0/0 can go one way.
      fromGateway ??= gateway;
      if (gateway !== fromGateway) {
        refused.push({
          address: fip.address,
          reason: `${node} already serves routed FIPs of gateway ${fromGateway}; one node answers for one gateway`,
        });
        continue;
      }
      addPeer(peerName, ['0.0.0.0/0', '::/0']);
      holdsAny[fip.family] = true;
      holds.push(host);
      elements.push({
        kind: 'rule',
        key: `from ${fip.address} lookup ${ROUTE_TABLE}`,
        value: String(RULE_PRIORITY),
        owner: fip.address,
      });
    }
  }
  const host = (kind: IntentElement['kind'], key: string, value: string): IntentElement => ({
    kind,
    key,
    value,
    owner: 'host',
  });
  if (holdsAny[4]) elements.push(host('route', `0.0.0.0/0 table ${ROUTE_TABLE}`, `dev ${tun}`));
  if (holdsAny[6]) elements.push(host('route', `::/0 table ${ROUTE_TABLE}`, `dev ${tun}`));
  if (holdsAny[4]) elements.push(host('sysctl', `net.ipv4.conf.${tun}.rp_filter`, '2'));
  // A gateway that has routed FIPs knows every node that could serve one, before it does: a
  // node's first handshake would otherwise come from a key the gateway does not know yet and be
  // dropped, and WireGuard retries only 5 s later.
  if (peers.size > 0 && pools.some((p) => p.gateway === node)) {
    for (const n of nodes)
      if (n.name !== node && n.publicKey && !peers.has(n.name)) addPeer(n.name, []);
  }
  if (peers.size === 0) return { elements, refused, passing };
  return {
    elements,
    refused,
    passing,
    tunnel: tunnelIntent(tun, peers, holds, nodeByName, options),
  };
}

function tunnelIntent(
  name: string,
  peers: Map<string, Set<string>>,
  holds: readonly string[],
  nodes: Map<string, NodeRecord>,
  options: TunnelOptions,
): TunnelIntent {
  const list: TunnelPeer[] = [...peers].map(([peerName, prefixes]) => {
    const peer = nodes.get(peerName);
    const everything = prefixes.has('0.0.0.0/0');
    return {
      publicKey: peer?.publicKey ?? '',
      ...(peer?.endpoint ? { endpoint: peer.endpoint } : {}),
      allowedIps: [...prefixes].sort(comparePrefix),
      // A node calls its gateway and keeps the path open through NATs; the gateway only answers.
      ...(everything && peer?.endpoint ? { keepaliveSeconds: KEEPALIVE_SECONDS } : {}),
    };
  });
  list.sort((a, b) => (a.publicKey < b.publicKey ? -1 : a.publicKey > b.publicKey ? 1 : 0));
  return {
    name,
    listenPort: options.listenPort,
    mtu: tunnelMtu(options.underlayMtu ?? 1500, 4),
    addresses: [...holds].sort(comparePrefix),
    peers: list,
  };
}

function comparePrefix(a: string, b: string): number {
  const pa = tryParseAddress(a.split('/')[0] ?? '');
  const pb = tryParseAddress(b.split('/')[0] ?? '');
  if (!pa || !pb) return a < b ? -1 : 1;
  return pa.family - pb.family || (pa.value < pb.value ? -1 : pa.value > pb.value ? 1 : 0);
}
