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
  const part = new TunnelsPart(pools, nodes, node, withUnderlay(given, nodes, node, facts));
  for (const { fip } of fips) part.routed(fip);
  for (const { fip } of fips) part.remoteTargets(fip);
  part.hostRules();
  return part.finish(facts);
}

/** One node's tunnels part while compile() builds it: routedPart's steps share this state. */
class TunnelsPart {
  readonly elements: IntentElement[] = [];
  readonly refused: { address: string; reason: string }[] = [];
  readonly pending: { address: string; reason: string }[] = [];
  readonly carriers = new Set<string>();
  /** FIPs delivered elsewhere: the gateway must not drop them. */
  readonly passing = new Set<string>();
  /** Per peer node, the prefixes it is allowed to send (and is routed to). */
  readonly peers = new Map<string, Set<string>>();
  /** FIPs this node holds: addresses of its tunnel interface, managed with the tunnel. */
  readonly holds: string[] = [];
  /** Per gateway-side target behind a tunnel: its MSS is known once the tunnel's MTU is. */
  readonly tunTargets: { target: string; peer: string; family: 4 | 6; owner: string }[] = [];
  /** What this node, serving for its gateway, needs per family: routed FIPs, nat/ports answers. */
  readonly holdsAny: Record<4 | 6, boolean> = { 4: false, 6: false };
  readonly repliesBy: Record<4 | 6, boolean> = { 4: false, 6: false };
  /** What the gateway needs per family: nat/ports targets behind a tunnel. */
  readonly forwardsTo: Record<4 | 6, boolean> = { 4: false, 6: false };
  /** The one gateway this node answers for (its answers leave by one default route). */
  fromGateway: string | undefined;
  readonly tun: string;
  private readonly gatewayOf: ReadonlyMap<string, string>;
  private readonly nodeByName: ReadonlyMap<string, NodeRecord>;

  constructor(
    private readonly pools: readonly Pool[],
    private readonly nodes: readonly NodeRecord[],
    private readonly node: string,
    private readonly options: TunnelOptions,
  ) {
    this.gatewayOf = new Map(pools.map((p) => [p.name, p.gateway]));
    this.nodeByName = new Map(nodes.map((n) => [n.name, n]));
    this.tun = tunnelName(node, node, options.salt ?? '');
  }

  /** A routed FIP: the gateway routes it into the tunnel, its node holds it and answers. */
  routed(fip: FloatingIp): void {
    const a = fip.association;
    const gateway = this.gatewayOf.get(fip.pool);
    if (a?.mode !== 'routed' || !a.node || !gateway) return;
    if (this.node !== gateway && this.node !== a.node) return;
    if (a.node === gateway) {
      this.refuse(
        fip,
        `routed to its own gateway ${gateway}: use nat or ports for a target on the gateway's LAN`,
      );
      return;
    }
    // An on-link IPv4 FIP routed here is answered by proxy ARP, not held as a local address
    // (its claim, gateway.ts: claimElement), so the route below carries it into the tunnel.
    const peerName = this.node === gateway ? a.node : gateway;
    if (!this.through(fip, peerName, gateway)) return;
    const host = hostPrefix(fip.address, fip.family);
    if (this.node === gateway) {
      this.passing.add(fip.address);
      this.addPeer(peerName, [host]);
      this.elements.push(this.toward(host, peerName, fip.family, fip.address));
      return;
    }
    if (!this.answersFor(gateway, fip, 'serves routed FIPs of')) return;
    this.addPeer(peerName, ['0.0.0.0/0', '::/0']);
    this.holdsAny[fip.family] = true;
    this.holds.push(host);
    const selector = { from: fip.address };
    this.elements.push(
      element('rule', { selector, table: ROUTE_TABLE, priority: RULE_PRIORITY }, fip.address),
    );
  }

  /**
   * nat and ports targets on another node: the gateway marks what it DNATs to them and routes
   * it into the tunnel; the node marks what arrives from the tunnel and sends the answers back
   * the same way (Linux's reply-to), keeping its own default route for the rest.
   */
  remoteTargets(fip: FloatingIp): void {
    const gateway = this.gatewayOf.get(fip.pool);
    if (!gateway || !fip.association || fip.association.mode === 'routed') return;
    for (const { target, at } of remoteTargets(fip, gateway)) {
      if (this.node !== gateway && this.node !== at) continue;
      const peerName = this.node === gateway ? at : gateway;
      if (!this.through(fip, peerName, gateway)) continue;
      if (this.node === gateway) {
        const prefix = hostPrefix(target, fip.family);
        this.addPeer(peerName, [prefix]);
        this.forwardsTo[fip.family] = true;
        this.tunTargets.push({ target, peer: peerName, family: fip.family, owner: fip.address });
        this.elements.push(this.toward(prefix, peerName, fip.family, fip.address, FORWARD_TABLE));
        continue;
      }
      if (!this.answersFor(gateway, fip, 'answers for')) continue;
      this.addPeer(peerName, ['0.0.0.0/0', '::/0']);
      this.repliesBy[fip.family] = true;
    }
  }

  /** The marks' rules, the default routes of the reply table, loose rp_filter, the table. */
  hostRules(): void {
    const mark = `0x${TUNNEL_MARK.toString(16)}`;
    const marked = (family: 4 | 6, table: number, priority: number): IntentElement =>
      element(
        'rule',
        { selector: { fwmark: mark, mask: mark, family }, table, priority },
        HOST_OWNER,
      );
    for (const family of [4, 6] as const) {
      const any = family === 4 ? '0.0.0.0/0' : '::/0';
      if ((this.holdsAny[family] || this.repliesBy[family]) && this.fromGateway)
        this.elements.push(this.toward(any, this.fromGateway, family, HOST_OWNER, ROUTE_TABLE));
      if (this.repliesBy[family])
        this.elements.push(marked(family, ROUTE_TABLE, REPLY_RULE_PRIORITY));
      if (this.forwardsTo[family])
        this.elements.push(marked(family, FORWARD_TABLE, FORWARD_RULE_PRIORITY));
    }
    if (this.holdsAny[4] || this.repliesBy[4] || this.forwardsTo[4]) {
      const path = `net.ipv4.conf.${this.tun}.rp_filter`;
      this.elements.push(element('sysctl', { path, value: '2' }, HOST_OWNER));
    }
    // The reply path's marks live in ipferry's nftables table, also on a node that is no gateway.
    if (this.repliesBy[4] || this.repliesBy[6]) {
      this.elements.push(element('table', { version: NFT_SKELETON_VERSION }, HOST_OWNER));
    }
  }

  /** Egress, the peers every gateway knows in advance, the probe routes, the tunnel itself. */
  finish(facts: HostFacts | undefined): RoutedPart {
    const { node, tun, peers, holds, options, fromGateway, nodeByName } = this;
    const egress = egressPart({ node, tun, peers, holds, facts, options, fromGateway, nodeByName });
    this.elements.push(...egress.elements);
    this.refused.push(...egress.notes);
    for (const [peerName, prefixes] of egress.allow) this.addPeer(peerName, prefixes);
    // A gateway that has routed FIPs knows every node that could serve one, before it does: a
    // node's first handshake would otherwise come from a key the gateway does not know yet and
    // be dropped, and WireGuard retries only 5 s later.
    if (peers.size > 0 && this.pools.some((p) => p.gateway === node)) {
      for (const n of this.nodes)
        if (n.name !== node && n.publicKey && !peers.has(n.name)) this.addPeer(n.name, []);
    }
    const { elements, refused, pending, carriers, passing } = this;
    if (peers.size === 0) return { elements, refused, pending, carriers, passing };
    this.probeRoutes();
    const addresses = [...holds, tunnelLinkAddress(node), `${tunnelProbeAddress(node)}/64`];
    const tunnel = tunnelIntent(tun, peers, addresses, nodeByName, options, nodeByName.get(node));
    // What a target behind the tunnel announces as its MSS was chosen by its own routes; the
    // gateway lowers it in the SYN-ACK to what the tunnel path toward that target carries.
    for (const t of this.tunTargets) {
      const mtu = Math.min(tunnel.mtu, options.peerMtu?.get(t.peer) ?? tunnel.mtu);
      const mss = mssFor(mtu, t.family);
      elements.push(element('tuntarget', { target: t.target, mss }, t.owner));
    }
    for (const e of egress.allow.keys()) carriers.add(e);
    return { elements, refused, pending, carriers, passing, tunnel };
  }

  /**
   * Each peer answers probes at its link-local address; a peer whose path carries less than the
   * tunnel's MTU gets a host route saying so, which the probes of that size then take too.
   */
  private probeRoutes(): void {
    for (const [peerName, prefixes] of this.peers) {
      const probe = `${tunnelProbeAddress(peerName)}/128`;
      if (this.options.driver !== 'tinc' && !prefixes.has('::/0')) this.addPeer(peerName, [probe]);
      const mtu = this.options.peerMtu?.get(peerName);
      if (mtu !== undefined)
        this.elements.push(element('route', { prefix: probe, dev: this.tun, mtu }, HOST_OWNER));
    }
  }

  /**
   * Whether `fip`'s traffic may go through the tunnel to `peerName` now: not when the peer
   * cannot carry it (refused), nor, on the gateway, while the path to it is being measured
   * (pending). The peer carries the FIP's traffic in either of the last two cases.
   */
  private through(fip: FloatingIp, peerName: string, gateway: string): boolean {
    const unusable = unusablePeer(this.nodeByName.get(peerName), peerName, this.options);
    if (unusable) {
      this.refuse(fip, unusable);
      return false;
    }
    if (this.node === gateway && this.measuring(peerName, fip.address)) return false;
    this.carriers.add(peerName);
    return true;
  }

  /** A node answers for one gateway only: its answers leave by the tunnel's default route. */
  private answersFor(gateway: string, fip: FloatingIp, what: string): boolean {
    this.fromGateway ??= gateway;
    if (gateway === this.fromGateway) return true;
    this.refuse(
      fip,
      `${this.node} already ${what} gateway ${this.fromGateway}; one node answers for one gateway`,
    );
    return false;
  }

  private measuring(peerName: string, address: string): boolean {
    if (this.options.measured === undefined || this.options.measured.has(peerName)) return false;
    this.pending.push({
      address,
      reason: `waiting for the path through the tunnel to ${peerName} to be measured before routing into it`,
    });
    this.addPeer(peerName, []);
    this.carriers.add(peerName);
    return true;
  }

  private refuse(fip: FloatingIp, reason: string): void {
    this.refused.push({ address: fip.address, reason });
  }

  private addPeer(name: string, prefixes: readonly string[]): void {
    const set = this.peers.get(name) ?? new Set<string>();
    for (const p of prefixes) set.add(p);
    this.peers.set(name, set);
  }

  /** The route to `prefix` (in `table`, else main) into the tunnel toward `peerName`. */
  private toward(
    prefix: string,
    peerName: string,
    family: 4 | 6,
    owner: string,
    table?: number,
  ): IntentElement {
    const via = nextHop(peerName, family, this.options);
    const inTable = table !== undefined ? { table } : {};
    return element('route', { prefix, ...inTable, dev: this.tun, ...via }, owner);
  }
}

function hostPrefix(address: string, family: 4 | 6): string {
  return `${address}/${family === 4 ? 32 : 128}`;
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
  nodes: ReadonlyMap<string, NodeRecord>,
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
