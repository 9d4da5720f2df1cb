/**
 * Egress through the gateway: a node that serves FIPs of a gateway sends all its own traffic out
 * through the tunnel to it, the state a home server ends in once its move is done (its ISP may
 * filter or block what it sends, or its address may be the one to leave behind).
 *
 * On the node (agent option `egress` other than `own`, and a gateway it answers for):
 * - `0.0.0.0/1` and `128.0.0.0/1` `dev TUN src SOURCE` in the main table: more specific than the
 *   node's own default route, which stays as it is and takes over again by itself when these
 *   routes go. IPv6 the same way (`::/1`, `8000::/1`), but only as a routed IPv6 FIP: IPv6 is
 *   never NATed silently, so without one it keeps the node's own route.
 * - SOURCE is a routed FIP of the family the node holds (`fip`), so its connections leave as
 *   that FIP; or (`masquerade`, and `fip` without an IPv4 FIP) the node's link-local tunnel
 *   address (`tunnelLinkAddress`), which the gateway masquerades behind its own address. That
 *   address is derived from the node's name, so both ends know it without asking each other,
 *   and it never clashes with a LAN the gateway or the node sits on, as an underlay address could.
 * - a host route to the gateway's tunnel endpoint by the node's own default route (`via HOP dev
 *   UPLINK`), so the tunnel's own packets (and the hub's API, when it is there too) stay outside.
 * - `from OWN lookup main suppress_prefixlength 1`, then `from OWN lookup EGRESS_TABLE` with the
 *   node's own default route in that table: what leaves from the node's own address (answers to
 *   an SSH session that came in through its ISP) keeps the main table's specific routes and
 *   then the node's own default route, never the halves into the tunnel (the gateway would drop
 *   that source). Their priorities come after the reply-to rule, so answers to forwards through
 *   the tunnel to that address keep going back through the tunnel.
 *
 * On the gateway, for every node it serves whose record says `egress`: the node's link-local
 * address becomes one of its peer's allowed IPs, is routed into the tunnel, and is a `masq`
 * element: what arrives from a tunnel with that source is masqueraded (the table's postrouting
 * chain), and the answers come back to it through the tunnel.
 *
 * Anything that prevents egress (no gateway, no endpoint address, no default route) leaves the
 * node on its own default route and says why in one note, shown by `ipferry plan`.
 */
import { compareAddressText, tryParseAddress } from '../address.js';
import {
  element,
  HOST_OWNER as HOST,
  type IntentElement,
  type RoutingTable,
} from '../../intent/elements.js';
import type { DefaultRoute, HostFacts } from '../../intent/facts.js';
import type { NodeRecord } from '../model.js';
import { EGRESS_RULE_PRIORITY, EGRESS_TABLE, type RouteVia } from '../names.js';
import { parseEndpoint } from '../tunnel.js';
// A cycle (routed.ts calls egressPart), harmless: only functions cross it, called after loading.
import { nextHop, type TunnelOptions, tunnelLinkAddress } from './tunnel-path.js';

/** The key of egress notes among a host's refusals (`ipferry plan` shows `! egress: …`). */
export const EGRESS_NOTE = 'egress';

/**
 * Link-local addresses cloud providers serve on (metadata, DNS, time): a gateway must never route
 * one of them into a tunnel, whatever a node's name hashes to.
 */
const CLOUD_SERVICE_ADDRESSES = new Set([
  '169.254.169.254',
  '169.254.169.253',
  '169.254.169.123',
  '169.254.170.2',
  '169.254.170.23',
]);

const HALVES: Record<4 | 6, readonly string[]> = {
  4: ['0.0.0.0/1', '128.0.0.0/1'],
  6: ['::/1', '8000::/1'],
};

export interface EgressInput {
  readonly node: string;
  /** This node's tunnel interface. */
  readonly tun: string;
  /** The tunnel's peers with their allowed IPs so far. */
  readonly peers: ReadonlyMap<string, ReadonlySet<string>>;
  /** FIPs this node holds on its tunnel (`FIP/32`, `FIP/128`). */
  readonly holds: readonly string[];
  readonly facts?: HostFacts | undefined;
  /** Its `egress` option (absent: `own`), and how routes reach a peer through the tunnel. */
  readonly options: TunnelOptions;
  /** The gateway this node answers for, when it serves FIPs or targets of one. */
  readonly fromGateway?: string | undefined;
  /** Node records by name. */
  readonly nodeByName: ReadonlyMap<string, NodeRecord>;
}

export interface EgressPart {
  readonly elements: IntentElement[];
  /** Allowed IPs to add to peers of the tunnel. */
  readonly allow: Map<string, string[]>;
  /** At most one note (`address` EGRESS_NOTE) saying what egress does not do and why. */
  readonly notes: { address: string; reason: string }[];
}

export function egressPart(input: EgressInput): EgressPart {
  const gatewaySide = forServedNodes(input);
  const nodeSide = forThisNode(input);
  return {
    elements: [...gatewaySide.elements, ...nodeSide.elements],
    allow: gatewaySide.allow,
    notes:
      nodeSide.notes.length > 0
        ? [{ address: EGRESS_NOTE, reason: nodeSide.notes.join('; ') }]
        : [],
  };
}

/** The address a node's masqueraded egress comes from: its link-local tunnel address. */
export function egressSource(node: string): string {
  return tunnelLinkAddress(node).split('/')[0] ?? '';
}

/**
 * Why `node` cannot masquerade behind `gateway`, or undefined. Both ends decide with this same
 * function from the same records, so they agree without talking: the gateway holds its own
 * link-local address, two peers cannot share an allowed IP, and cloud service addresses must
 * stay reachable on the gateway.
 */
export function masqueradeClash(
  node: string,
  gateway: string,
  nodes: ReadonlyMap<string, NodeRecord>,
): string | undefined {
  const source = egressSource(node);
  if (CLOUD_SERVICE_ADDRESSES.has(source))
    return `its link-local tunnel address ${source} is a cloud provider's service address`;
  if (egressSource(gateway) === source)
    return `its link-local tunnel address ${source} is also gateway ${gateway}'s`;
  const earlier = [...nodes.values()].find(
    (n) => n.egress && n.name < node && n.name !== gateway && egressSource(n.name) === source,
  );
  if (earlier) return `node ${earlier.name} masquerades from the same address ${source}`;
  return undefined;
}

/** On a gateway: the nodes it serves that send their traffic out through it. */
function forServedNodes(input: EgressInput): Pick<EgressPart, 'elements' | 'allow'> {
  const elements: IntentElement[] = [];
  const allow = new Map<string, string[]>();
  for (const [name, prefixes] of input.peers) {
    // A peer allowed everything is this node's own gateway; one allowed nothing serves nothing.
    if (prefixes.size === 0 || prefixes.has('0.0.0.0/0')) continue;
    if (!input.nodeByName.get(name)?.egress) continue;
    if (masqueradeClash(name, input.node, input.nodeByName)) continue;
    const source = egressSource(name);
    allow.set(name, [`${source}/32`]);
    elements.push(
      route(`${source}/32`, input.tun, nextHop(name, 4, input.options)),
      element('masq', { target: source }, HOST),
    );
  }
  return { elements, allow };
}

/** On a node that answers for a gateway: its own traffic out through the tunnel. */
function forThisNode(input: EgressInput): { elements: IntentElement[]; notes: string[] } {
  const mode = input.options.egress;
  const gateway = input.fromGateway;
  const none = (why: string) => ({
    elements: [],
    notes: [`egress ${mode ?? 'own'} is not in effect, traffic keeps the node's own route: ${why}`],
  });
  if (mode === undefined || mode === 'own') return { elements: [], notes: [] };
  if (!gateway || !input.peers.get(gateway)?.has('0.0.0.0/0'))
    return none(
      'it serves no routed FIP and no forward of a gateway, so it has no tunnel to send through',
    );
  const endpoint = gatewayEndpoint(gateway, input.nodeByName.get(gateway));
  if (typeof endpoint === 'string') return none(endpoint);
  const notes: string[] = [];
  const routes = (input.facts?.defaultRoutes ?? []).filter((r) => !r.dev.startsWith('ipf'));
  const own = (family: 4 | 6): DefaultRoute | undefined => routes.find((r) => r.family === family);
  const sources = new Map<4 | 6, string>();
  const fip = (family: 4 | 6): string | undefined =>
    input.holds
      .map((h) => h.split('/')[0] ?? '')
      .filter((a) => tryParseAddress(a)?.family === family)
      .sort(compareAddressText)[0];
  const fip4 = mode === 'fip' ? fip(4) : undefined;
  if (fip4) sources.set(4, fip4);
  else {
    const clash = masqueradeClash(input.node, gateway, input.nodeByName);
    if (clash) notes.push(`IPv4 keeps the node's own route: ${clash}`);
    else {
      sources.set(4, egressSource(input.node));
      if (mode === 'fip')
        notes.push(`no routed IPv4 FIP here: IPv4 leaves masqueraded behind gateway ${gateway}`);
    }
  }
  const fip6 = mode === 'fip' ? fip(6) : undefined;
  if (fip6) sources.set(6, fip6);
  else if (own(6))
    notes.push(
      "IPv6 keeps the node's own route: it goes through the gateway only as a routed IPv6 FIP with egress fip (IPv6 is not NATed)",
    );
  if (sources.has(endpoint.family)) {
    if (!own(endpoint.family))
      return none(
        `no IPv${endpoint.family} default route of its own to keep the tunnel's packets to ${endpoint.address} on`,
      );
  }
  const elements: IntentElement[] = [];
  for (const [family, src] of sources) {
    for (const half of HALVES[family])
      elements.push(route(half, input.tun, { ...nextHop(gateway, family, input.options), src }));
    const uplink = own(family);
    if (!uplink) continue;
    const hop = { ...(uplink.via !== undefined ? { via: uplink.via } : {}) };
    if (family === endpoint.family)
      elements.push(route(`${endpoint.address}/${family === 4 ? 32 : 128}`, uplink.dev, hop));
    if (uplink.src !== undefined) {
      const any = family === 4 ? '0.0.0.0/0' : '::/0';
      // Its own address keeps the main table's specific routes (LAN, containers), then the
      // node's own default route instead of the halves into the tunnel.
      elements.push(
        route(any, uplink.dev, hop, EGRESS_TABLE),
        fromRule(uplink.src, 'main', EGRESS_RULE_PRIORITY, 1),
        fromRule(uplink.src, EGRESS_TABLE, EGRESS_RULE_PRIORITY + 1),
      );
    }
  }
  return { elements, notes };
}

/** The gateway's tunnel endpoint as an address, or why there is none to route around. */
function gatewayEndpoint(
  gateway: string,
  record: NodeRecord | undefined,
): { address: string; family: 4 | 6 } | string {
  if (!record?.endpoint)
    return `gateway ${gateway} publishes no tunnel endpoint (its agent runs without --endpoint)`;
  let parsed;
  try {
    parsed = parseEndpoint(record.endpoint);
  } catch {
    return `gateway ${gateway}'s endpoint ${record.endpoint} is not host:port`;
  }
  if (parsed.family === undefined)
    return `gateway ${gateway}'s endpoint ${record.endpoint} is a DNS name, and a host route keeping the tunnel outside itself needs an address: give that agent --endpoint ADDRESS:PORT`;
  return { address: parsed.host, family: parsed.family };
}

function route(prefix: string, dev: string, via: RouteVia, table?: number): IntentElement {
  return element('route', { prefix, ...(table !== undefined ? { table } : {}), dev, ...via }, HOST);
}

function fromRule(
  source: string,
  table: RoutingTable,
  priority: number,
  suppressPrefixLength?: number,
): IntentElement {
  const selector = { from: source };
  const suppress = suppressPrefixLength === undefined ? {} : { suppressPrefixLength };
  return element('rule', { selector, table, ...suppress, priority }, HOST);
}
