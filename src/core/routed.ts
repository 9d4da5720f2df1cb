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
import {
  FORWARD_RULE_PRIORITY,
  FORWARD_TABLE,
  NFT_FAMILY,
  NFT_SKELETON_VERSION,
  NFT_TABLE,
  REPLY_RULE_PRIORITY,
  ROUTE_TABLE,
  RULE_PRIORITY,
  TUNNEL_MARK,
} from './names.js';
import { fnv1a, type TunnelIntent, type TunnelPeer, tunnelMtu, tunnelName } from './tunnel.js';

export interface TunnelOptions {
  /** UDP port this node's tunnel listens on. */
  readonly listenPort: number;
  /** Separates interface names of labs sharing one machine (the namespace name there). */
  readonly salt?: string;
  readonly underlayMtu?: number;
  /** A tunnel MTU chosen by the operator (checked against the underlay's). */
  readonly mtu?: number;
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
  // nat and ports targets on another node: the gateway marks what it DNATs to them and routes
  // it into the tunnel; the node marks what arrives from the tunnel and sends the answers back
  // the same way (Linux's reply-to), keeping its own default route for the rest.
  const forwardsTo = { 4: false, 6: false };
  const repliesBy = { 4: false, 6: false };
  for (const { fip } of fips) {
    const gateway = gatewayOf.get(fip.pool);
    if (!gateway || !fip.association || fip.association.mode === 'routed') continue;
    for (const { target, at } of remoteTargets(fip, gateway)) {
      if (node !== gateway && node !== at) continue;
      const peerName = node === gateway ? at : gateway;
      if (!nodeByName.get(peerName)?.publicKey) {
        refused.push({
          address: fip.address,
          reason: `node ${peerName} has no tunnel key: is its agent running with the Linux dataplane?`,
        });
        continue;
      }
      const prefix = `${target}/${fip.family === 4 ? 32 : 128}`;
      if (node === gateway) {
        addPeer(peerName, [prefix]);
        forwardsTo[fip.family] = true;
        elements.push(
          { kind: 'tuntarget', key: target, value: '', owner: fip.address },
          {
            kind: 'route',
            key: `${prefix} table ${FORWARD_TABLE}`,
            value: `dev ${tun}`,
            owner: fip.address,
          },
        );
      } else {
        fromGateway ??= gateway;
        if (gateway !== fromGateway) {
          refused.push({
            address: fip.address,
            reason: `${node} already answers for gateway ${fromGateway}; one node answers for one gateway`,
          });
          continue;
        }
        addPeer(peerName, ['0.0.0.0/0', '::/0']);
        repliesBy[fip.family] = true;
      }
    }
  }
  const host = (kind: IntentElement['kind'], key: string, value: string): IntentElement => ({
    kind,
    key,
    value,
    owner: 'host',
  });
  const mark = `0x${TUNNEL_MARK.toString(16)}/0x${TUNNEL_MARK.toString(16)}`;
  for (const family of [4, 6] as const) {
    const any = family === 4 ? '0.0.0.0/0' : '::/0';
    const name = family === 4 ? 'ipv4' : 'ipv6';
    if (holdsAny[family] || repliesBy[family])
      elements.push(host('route', `${any} table ${ROUTE_TABLE}`, `dev ${tun}`));
    if (repliesBy[family])
      elements.push(
        host('rule', `fwmark ${mark} lookup ${ROUTE_TABLE} ${name}`, String(REPLY_RULE_PRIORITY)),
      );
    if (forwardsTo[family])
      elements.push(
        host(
          'rule',
          `fwmark ${mark} lookup ${FORWARD_TABLE} ${name}`,
          String(FORWARD_RULE_PRIORITY),
        ),
      );
  }
  if (holdsAny[4] || repliesBy[4] || forwardsTo[4])
    elements.push(host('sysctl', `net.ipv4.conf.${tun}.rp_filter`, '2'));
  // The reply path's marks live in ipferry's nftables table, also on a node that is no gateway.
  if (repliesBy[4] || repliesBy[6])
    elements.push(host('table', `${NFT_FAMILY} ${NFT_TABLE}`, NFT_SKELETON_VERSION));
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
    tunnel: tunnelIntent(tun, peers, [...holds, tunnelLinkAddress(node)], nodeByName, options),
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
    mtu: tunnelMtu(options.underlayMtu ?? 1500, 4, options.mtu ? { configured: options.mtu } : {}),
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

/** Targets of a nat or ports FIP that sit on another node than its gateway, with that node. */
function remoteTargets(fip: FloatingIp, gateway: string): { target: string; at: string }[] {
  const a = fip.association;
  if (!a) return [];
  const found = new Map<string, string>();
  if (a.mode === 'nat' && a.node && a.node !== gateway) found.set(a.target, a.node);
  for (const f of fip.forwards) {
    const at = f.node ?? a.node;
    if (at && at !== gateway) found.set(f.target, at);
  }
  return [...found].map(([target, at]) => ({ target, at }));
}

/**
 * A link-local IPv4 address for the node's tunnel interface. Linux's reverse-path filter drops
 * packets that arrive on an interface without any IPv4 address when their source is routed
 * elsewhere (a client's answer through the tunnel to the node's own address, or that address's
 * answers arriving at the gateway), even in loose mode; any address lifts that. It is never
 * routed anywhere, so it may be the same on two nodes.
 */
export function tunnelLinkAddress(node: string): string {
  const h = fnv1a(node);
  return `169.254.${((h >>> 8) % 254) + 1}.${(h % 254) + 1}/32`;
}
