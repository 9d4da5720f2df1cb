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
import { tryParseAddress } from '../address.js';
import { egressPart } from './egress.js';
import type { IntentElement } from '../../intent/elements.js';
import type { HostFacts } from '../../intent/facts.js';
import type { FloatingIp, NodeRecord, Pool } from '../model.js';
import {
  FORWARD_RULE_PRIORITY,
  FORWARD_TABLE,
  NFT_SKELETON_VERSION,
  REPLY_RULE_PRIORITY,
  ROUTE_TABLE,
  RULE_PRIORITY,
  TUNNEL_MARK,
} from '../names.js';
import {
  mssFor,
  parseEndpoint,
  type TunnelIntent,
  type TunnelPeer,
  tunnelMtu,
  tunnelName,
  tunnelProbeAddress,
} from '../tunnel.js';
import { element, HOST_OWNER } from '../../intent/elements.js';
import { nextHop, type TunnelOptions, tunnelLinkAddress, withUnderlay } from './tunnel-path.js';

const KEEPALIVE_SECONDS = 25;

interface RoutedPart {
  readonly elements: IntentElement[];
  readonly tunnel?: TunnelIntent;
  readonly refused: { address: string; reason: string }[];
  /** FIPs not routed yet: the path toward their node is being measured (reported DOWN). */
  readonly pending: { address: string; reason: string }[];
  /** Peer nodes that carry FIPs' traffic or are about to: the ones the path probes watch. */
  readonly carriers: ReadonlySet<string>;
  /** FIPs delivered elsewhere: the gateway must not drop them. */
  readonly passing: Set<string>;
}

export function routedPart(
  pools: readonly Pool[],
  fips: readonly { fip: FloatingIp }[],
  nodes: readonly NodeRecord[],
  node: string,
  given: TunnelOptions,
  facts?: HostFacts,
): RoutedPart {
  const gatewayOf = new Map(pools.map((p) => [p.name, p.gateway]));
  const nodeByName = new Map(nodes.map((n) => [n.name, n]));
  const options = withUnderlay(given, nodes, node, facts);
  const tun = tunnelName(node, node, options.salt ?? '');
  const elements: IntentElement[] = [];
  const refused: { address: string; reason: string }[] = [];
  const pending: { address: string; reason: string }[] = [];
  const carriers = new Set<string>();
  const measuring = (peerName: string, address: string): boolean => {
    if (options.measured === undefined || options.measured.has(peerName)) return false;
    pending.push({
      address,
      reason: `waiting for the path through the tunnel to ${peerName} to be measured before routing into it`,
    });
    addPeer(peerName, []);
    carriers.add(peerName);
    return true;
  };
  /** Per gateway-side target behind a tunnel: its MSS is known once the tunnel's MTU is. */
  const tunTargets: { target: string; peer: string; family: 4 | 6; owner: string }[] = [];
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
  /** The route to `prefix` (in `table`, else main) into the tunnel toward `peerName`. */
  const toward = (
    prefix: string,
    peerName: string,
    family: 4 | 6,
    owner: string,
    table?: number,
  ): IntentElement =>
    element(
      'route',
      {
        prefix,
        ...(table !== undefined ? { table } : {}),
        dev: tun,
        ...nextHop(peerName, family, options),
      },
      owner,
    );
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
    // An on-link IPv4 FIP routed here is answered by proxy ARP, not held as a local address
    // (its claim, intent.ts: claimValue), so the route below carries it into the tunnel.
    const peerName = node === gateway ? a.node : gateway;
    const unusable = unusablePeer(nodeByName.get(peerName), peerName, options);
    if (unusable) {
      refused.push({ address: fip.address, reason: unusable });
      continue;
    }
    const host = `${fip.address}/${fip.family === 4 ? 32 : 128}`;
    if (node === gateway && measuring(peerName, fip.address)) continue;
    carriers.add(peerName);
    if (node === gateway) {
      passing.add(fip.address);
      addPeer(peerName, [host]);
      elements.push(toward(host, peerName, fip.family, fip.address));
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
      const selector = { from: fip.address };
      elements.push(
        element('rule', { selector, table: ROUTE_TABLE, priority: RULE_PRIORITY }, fip.address),
      );
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
      const unusable = unusablePeer(nodeByName.get(peerName), peerName, options);
      if (unusable) {
        refused.push({ address: fip.address, reason: unusable });
        continue;
      }
      const prefix = `${target}/${fip.family === 4 ? 32 : 128}`;
      if (node === gateway && measuring(peerName, fip.address)) continue;
      carriers.add(peerName);
      if (node === gateway) {
        addPeer(peerName, [prefix]);
        forwardsTo[fip.family] = true;
        tunTargets.push({ target, peer: peerName, family: fip.family, owner: fip.address });
        elements.push(toward(prefix, peerName, fip.family, fip.address, FORWARD_TABLE));
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
  const mark = `0x${TUNNEL_MARK.toString(16)}`;
  const marked = (family: 4 | 6, table: number, priority: number): IntentElement =>
    element(
      'rule',
      { selector: { fwmark: mark, mask: mark, family }, table, priority },
      HOST_OWNER,
    );
  for (const family of [4, 6] as const) {
    const any = family === 4 ? '0.0.0.0/0' : '::/0';
    if ((holdsAny[family] || repliesBy[family]) && fromGateway)
      elements.push(toward(any, fromGateway, family, HOST_OWNER, ROUTE_TABLE));
    if (repliesBy[family]) elements.push(marked(family, ROUTE_TABLE, REPLY_RULE_PRIORITY));
    if (forwardsTo[family]) elements.push(marked(family, FORWARD_TABLE, FORWARD_RULE_PRIORITY));
  }
  if (holdsAny[4] || repliesBy[4] || forwardsTo[4]) {
    const path = `net.ipv4.conf.${tun}.rp_filter`;
    elements.push(element('sysctl', { path, value: '2' }, HOST_OWNER));
  }
  // The reply path's marks live in ipferry's nftables table, also on a node that is no gateway.
  if (repliesBy[4] || repliesBy[6]) {
    elements.push(element('table', { version: NFT_SKELETON_VERSION }, HOST_OWNER));
  }
  const egress = egressPart({ node, tun, peers, holds, facts, options, fromGateway, nodeByName });
  elements.push(...egress.elements);
  refused.push(...egress.notes);
  for (const [peerName, prefixes] of egress.allow) addPeer(peerName, prefixes);
  // A gateway that has routed FIPs knows every node that could serve one, before it does: a
  // node's first handshake would otherwise come from a key the gateway does not know yet and be
  // dropped, and WireGuard retries only 5 s later.
  if (peers.size > 0 && pools.some((p) => p.gateway === node)) {
    for (const n of nodes)
      if (n.name !== node && n.publicKey && !peers.has(n.name)) addPeer(n.name, []);
  }
  if (peers.size === 0) return { elements, refused, pending, carriers, passing };
  // Each peer answers probes at its link-local address; a peer whose path carries less than the
  // tunnel's MTU gets a host route saying so, which the probes of that size then take too.
  for (const peerName of peers.keys()) {
    const everything = peers.get(peerName)?.has('::/0') ?? false;
    if (options.driver !== 'tinc' && !everything)
      addPeer(peerName, [`${tunnelProbeAddress(peerName)}/128`]);
    const mtu = options.peerMtu?.get(peerName);
    if (mtu !== undefined)
      elements.push(
        element(
          'route',
          { prefix: `${tunnelProbeAddress(peerName)}/128`, dev: tun, mtu },
          HOST_OWNER,
        ),
      );
  }
  const addresses = [...holds, tunnelLinkAddress(node), `${tunnelProbeAddress(node)}/64`];
  const tunnel = tunnelIntent(tun, peers, addresses, nodeByName, options, nodeByName.get(node));
  // What a target behind the tunnel announces as its MSS was chosen by its own routes; the
  // gateway lowers it in the SYN-ACK to what the tunnel path toward that target carries.
  for (const t of tunTargets) {
    const mtu = Math.min(tunnel.mtu, options.peerMtu?.get(t.peer) ?? tunnel.mtu);
    elements.push(element('tuntarget', { target: t.target, mss: mssFor(mtu, t.family) }, t.owner));
  }
  for (const e of egress.allow.keys()) carriers.add(e);
  return { elements, refused, pending, carriers, passing, tunnel };
}

/** Why a FIP cannot go through a tunnel to `peer`, or undefined when it can. */
function unusablePeer(
  peer: NodeRecord | undefined,
  name: string,
  options: TunnelOptions,
): string | undefined {
  if (!peer?.publicKey)
    return `node ${name} has no tunnel key: is its agent running with the Linux dataplane?`;
  const ours = options.driver ?? 'wireguard';
  const theirs = peer.tunnelDriver ?? 'wireguard';
  if (ours !== theirs)
    return `node ${name} runs ${theirs} tunnels and this node ${ours}: both ends need the same --tunnel-driver`;
  return undefined;
}

function tunnelIntent(
  name: string,
  peers: Map<string, Set<string>>,
  holds: readonly string[],
  nodes: Map<string, NodeRecord>,
  options: TunnelOptions,
  self: NodeRecord | undefined,
): TunnelIntent {
  const list: TunnelPeer[] = [...peers].map(([peerName, prefixes]) => {
    const peer = nodes.get(peerName);
    const everything = prefixes.has('0.0.0.0/0');
    return {
      publicKey: peer?.publicKey ?? '',
      node: peerName,
      ...(peer?.endpoint ? { endpoint: peer.endpoint } : {}),
      allowedIps: [...prefixes].sort(comparePrefix),
      // A node calls its gateway and keeps the path open through NATs; the gateway only answers.
      ...(everything && peer?.endpoint ? { keepaliveSeconds: KEEPALIVE_SECONDS } : {}),
    };
  });
  list.sort((a, b) => (a.publicKey < b.publicKey ? -1 : a.publicKey > b.publicKey ? 1 : 0));
  const driver = options.driver ?? 'wireguard';
  // The tunnel's packets travel over IPv6 when this node or a peer is reached at an IPv6
  // endpoint (a gateway's peers that call in have none: its own endpoint says it).
  const endpoints = [self?.endpoint, ...list.map((p) => p.endpoint)];
  const underlayFamily = endpoints.some((e) => e && parseEndpoint(e).family === 6) ? 6 : 4;
  return {
    name,
    ...(driver === 'tinc' ? { driver } : {}),
    listenPort: options.listenPort,
    mtu: tunnelMtu(options.underlayMtu ?? 1500, underlayFamily, {
      driver,
      ...(options.mtu ? { configured: options.mtu } : {}),
    }),
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

/**
 * The nodes other than `gateway` a FIP's traffic goes to through the tunnel: the node of a
 * routed association, and the nodes of nat and ports targets away from the gateway.
 */
export function remoteNodesOf(fip: FloatingIp, gateway?: string): string[] {
  const a = fip.association;
  if (!a) return [];
  const nodes = new Set<string>();
  if (a.mode === 'routed' && a.node && a.node !== gateway) nodes.add(a.node);
  if (gateway !== undefined) for (const { at } of remoteTargets(fip, gateway)) nodes.add(at);
  return [...nodes].sort();
}

/** Targets of a nat or ports FIP that sit on another node than its gateway, with that node. */
function remoteTargets(fip: FloatingIp, gateway: string): { target: string; at: string }[] {
  const a = fip.association;
  // Most FIPs have no target on another node: no map for them (compile runs per change).
  if (!a || (!a.node && !fip.forwards.some((f) => f.node))) return [];
  const found = new Map<string, string>();
  if (a.mode === 'nat' && a.node && a.node !== gateway) found.set(a.target, a.node);
  for (const f of fip.forwards) {
    const at = f.node ?? a.node;
    if (at && at !== gateway) found.set(f.target, at);
  }
  return [...found].map(([target, at]) => ({ target, at }));
}
