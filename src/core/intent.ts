/**
 * compile(state, node, facts) → HostIntent: what one host's kernel must hold for the desired
 * state. Pure and deterministic: the same input always gives the same, sorted intent, so the
 * agent can diff it against what the kernel reports and apply only the difference.
 *
 * An intent is a set of keyed elements, each one kernel object the drivers create, compare and
 * delete one by one (nftables map and set elements, counters, sysctls, addresses). Each belongs
 * to an owner — a FIP, `pool:NAME` or `host` — which is how a failure is pinned on the FIP that
 * caused it. A FIP that moves changes the value of its elements, which the drivers replace in
 * one transaction, so the old mapping never disappears before the new one exists.
 *
 * The packet walk on a gateway (table `inet ipferry`, see docs/kernel-contract.md):
 * - `dnat`  FIP → target: prerouting and output DNAT, so clients outside and the gateway itself
 *           reach the target; the client's address is kept (no SNAT toward the target).
 * - `snat`  target → FIP: the target's own new connections leave with the FIP as source.
 * - `masq`  target: the opt-in masquerade toward a target that cannot route replies back.
 * - `fwd`   FIP . proto . ports → target, ports kept (single ports and ranges);
 *   `fwdport` FIP . proto . port → target . port, a port mapped to another (ranges onto ranges
 *           are expanded port by port: nftables cannot add an offset).
 * - `drop`  pool ranges homed here, minus the gateway's own and shared addresses: whatever was
 *           not DNATed to a target is dropped, so an unassociated FIP or an unforwarded port
 *           gets no answer, neither from the gateway nor from a routing loop.
 * - `hairpin` interface: connections that leave by the interface they came in on after DNAT
 *           (a LAN client reaching a LAN target's FIP) are masqueraded, so replies come back.
 * - `counter` FIP: packets and bytes to the FIP.
 * - `claim` FIP → uplink: an on-link FIP the gateway answers ARP/NDP for on its uplink (IPv4:
 *           the address on the uplink, labelled as ipferry's, or `proxy UPLINK`, a proxy ARP
 *           entry, for a FIP routed on into a tunnel; IPv6: always a proxy NDP entry). See
 *           `claimValue`.
 * - `route`, `rule`: routed delivery through the tunnel to the FIP's node (routed.ts); the node
 *           holds the FIP as an address of its tunnel.
 * - `sysctl`, `table`: forwarding on; the table's fixed part at its version.
 */
import {
  type Address,
  addressFromValue,
  type Family,
  compareAddresses,
  parseAddress,
  tryParseAddress,
} from './address.js';
import type { FloatingIp, NodeRecord, Pool } from './model.js';
import { DEFAULT_TUNNEL_PORT, routedPart, type TunnelOptions } from './routed.js';
import type { TunnelIntent } from './tunnel.js';
import { compileMesh, type MeshIntent, type MeshState } from './mesh.js';
import { element, HOST_OWNER, type IntentElement, KINDS } from '../intent/elements.js';
import { knownSorted, sortUnique } from '../intent/diff.js';
import {
  NFT_SKELETON_VERSION,
  SYSCTL_IPV4_FORWARD,
  SYSCTL_IPV6_FORWARD,
  proxyArpDelaySysctl,
  proxyNdpSysctl,
} from './names.js';
import { poolRanges } from './pool.js';

// The element types and the diff moved to src/intent/; importers still reading them here are
// being moved too.
export type { ElementKind, IntentElement } from '../intent/elements.js';
export { HOST_OWNER } from '../intent/elements.js';
export {
  applyById,
  applyDiff,
  compareElements,
  diffById,
  diffFor,
  diffIntent,
  diffOwners,
  elementId,
  type IntentDiff,
  isEmptyDiff,
} from '../intent/diff.js';

export interface HostIntent {
  readonly node: string;
  /** Sorted by kind, then key. */
  readonly elements: readonly IntentElement[];
  /** FIPs this node realises, with the revision of the record compiled. */
  readonly fips: readonly { readonly address: string; readonly revision: number }[];
  /** FIPs this node refuses to realise, with the reason (reported as ERROR). */
  readonly refused: readonly { readonly address: string; readonly reason: string }[];
  /** FIPs not realised yet, with the reason (reported as DOWN): see TunnelOptions.measured. */
  readonly pending?: readonly { readonly address: string; readonly reason: string }[];
  /** Tunnel peers that carry FIPs' traffic or are about to: the path probes watch these. */
  readonly carriers?: readonly string[];
  /** This node's tunnel, when it exchanges FIPs with other nodes. */
  readonly tunnel?: TunnelIntent;
  /** This node's part of the fleet mesh, when there is a mesh policy. */
  readonly mesh?: MeshIntent;
}

export interface CompileState {
  readonly pools: readonly Pool[];
  readonly fips: readonly { readonly fip: FloatingIp; readonly revision: number }[];
  /** Node records, for the tunnels of FIPs served by another node. */
  readonly nodes?: readonly NodeRecord[];
  /** The fleet mesh's policy and members, and the time to judge a trial's deadline by. */
  readonly mesh?: MeshState & { readonly now: Date };
}

/** What the host itself has, read by the dataplane: needed to keep ipferry off its own feet. */
export interface HostFacts {
  /** Interface names (hairpin detection per interface). */
  readonly interfaces: readonly string[];
  /** The host's own addresses: never a nat/routed FIP, never dropped. */
  readonly addresses: readonly string[];
  /**
   * The host's own default routes (main table, not ipferry's), best first per family: egress
   * through a gateway keeps the tunnel's own packets on them (see egress.ts). Absent: none known.
   */
  readonly defaultRoutes?: readonly DefaultRoute[];
}

export interface DefaultRoute {
  readonly family: 4 | 6;
  readonly dev: string;
  /** Next hop; absent on a point-to-point uplink. */
  readonly via?: string;
  /** The source address the host uses by this route (its preferred source, else the uplink's first). */
  readonly src?: string;
  /** What the route carries: its own `mtu` metric, else its device's MTU. */
  readonly mtu?: number;
}

export const NO_FACTS: HostFacts = { interfaces: [], addresses: [] };

export function compile(
  state: CompileState,
  node: string,
  facts: HostFacts = NO_FACTS,
  tunnel: TunnelOptions = { listenPort: DEFAULT_TUNNEL_PORT },
): HostIntent {
  const pools = state.pools.filter((p) => p.gateway === node);
  const poolByName = new Map(pools.map((p) => [p.name, p]));
  const own = new Set(facts.addresses.flatMap((a) => tryParseAddress(a)?.text ?? []));
  const elements: IntentElement[] = [];
  const fips: { address: string; revision: number }[] = [];
  const refused: { address: string; reason: string }[] = [];
  for (const { fip, revision } of state.fips) {
    const pool = poolByName.get(fip.pool);
    if (!pool) continue;
    fips.push({ address: fip.address, revision });
    const reason = refusal(fip, own);
    if (reason) refused.push({ address: fip.address, reason });
    else for (const e of fipElements(fip, pool)) elements.push(e);
  }
  // A FIP refused above gets no tunnel either (no route, no allowed IP, not kept from the drop).
  const refusedHere = new Set(refused.map((r) => r.address));
  const routable = state.fips.filter(({ fip }) => !refusedHere.has(fip.address));
  const routed = routedPart(state.pools, routable, state.nodes ?? [], node, tunnel, facts);
  elements.push(...routed.elements);
  refused.push(...routed.refused);
  // A routed FIP refused there (no tunnel key, its own gateway) is not realised at all either:
  // no counter, no claim.
  const unrouted = new Set([...routed.refused, ...routed.pending].map((r) => r.address));
  const realised = unrouted.size > 0 ? elements.filter((e) => !unrouted.has(e.owner)) : elements;
  // Routed FIPs leave the gateway unchanged: they must not be dropped as unassociated.
  const keep = new Set([...own, ...routed.passing]);
  if (pools.length > 0) realised.push(...hostElements(pools, facts, keep));
  // The fleet mesh: its sets and maps live in the same table, also on a node that is no gateway.
  const mesh = state.mesh ? compileMesh(state.mesh, node, state.mesh.now, facts) : undefined;
  if (mesh && mesh.elements.length > 0) {
    realised.push(...mesh.elements, tableElement());
  }
  // One refusal per FIP.
  const refusals = [...new Map(refused.map((r) => [r.address, r])).values()];
  return {
    node,
    // One element per id: a node may need one host element for two reasons.
    elements: knownSorted(sortUnique(realised)),
    fips: byAddress(fips),
    refused: byAddress(refusals),
    ...(routed.pending.length > 0
      ? { pending: byAddress([...new Map(routed.pending.map((r) => [r.address, r])).values()]) }
      : {}),
    ...(routed.carriers.size > 0 ? { carriers: [...routed.carriers].sort() } : {}),
    ...(routed.tunnel ? { tunnel: routed.tunnel } : {}),
    ...(mesh && (mesh.layer || mesh.notes.length > 0) ? { mesh } : {}),
  };
}

/**
 * FIPs this host must not realise: a 1:1 FIP equal to one of the gateway's own addresses would
 * take the gateway's traffic; a routed FIP without a node has nowhere to go.
 */
function refusal(fip: FloatingIp, own: ReadonlySet<string>): string | undefined {
  const mode = fip.association?.mode;
  if (mode === 'routed' && !fip.association?.node) {
    return `${fip.address} is routed but names no node to deliver it to`;
  }
  if ((mode === 'nat' || mode === 'routed') && own.has(fip.address)) {
    return `${fip.address} is an address of the gateway itself: only port forwards may use it`;
  }
  return undefined;
}

function hostElements(
  pools: readonly Pool[],
  facts: HostFacts,
  own: ReadonlySet<string>,
): IntentElement[] {
  const sysctl = (path: string, value: string): IntentElement =>
    element('sysctl', { path, value }, HOST_OWNER);
  const out: IntentElement[] = [
    tableElement(),
    sysctl(SYSCTL_IPV4_FORWARD, '1'),
    ...facts.interfaces.map((ifname) => element('hairpin', { ifname }, HOST_OWNER)),
  ];
  // IPv6 forwarding makes Linux ignore router advertisements (accept_ra=1): only turn it on
  // where there is IPv6 to forward.
  if (pools.some((p) => poolRanges(p).some((r) => r.range.family === 6))) {
    out.push(sysctl(SYSCTL_IPV6_FORWARD, '1'));
  }
  // On-link IPv6 FIPs are answered by proxy NDP on the uplink.
  const ndpUplinks = pools.filter(
    (p) => p.delivery === 'onlink' && p.uplink && poolRanges(p).some((r) => r.range.family === 6),
  );
  for (const uplink of new Set(ndpUplinks.map((p) => p.uplink ?? ''))) {
    out.push(sysctl(proxyNdpSysctl(uplink), '1'));
  }
  // On-link IPv4 FIPs routed on into a tunnel are answered by proxy ARP (see claimValue).
  const arpUplinks = pools.filter(
    (p) => p.delivery === 'onlink' && p.uplink && poolRanges(p).some((r) => r.range.family === 4),
  );
  for (const uplink of new Set(arpUplinks.map((p) => p.uplink ?? ''))) {
    out.push(sysctl(proxyArpDelaySysctl(uplink), '0'));
  }
  for (const pool of pools) {
    for (const { entry, range } of poolRanges(pool)) {
      if (entry.kind === 'address' && entry.shared) continue;
      for (const [first, last] of subtract(range.first, range.last, own)) {
        out.push(element('drop', { first: first.text, last: last.text }, `pool:${pool.name}`));
      }
    }
  }
  return out;
}

/** The range first–last without the given addresses, as sub-ranges in order. */
function subtract(first: Address, last: Address, holes: ReadonlySet<string>): [Address, Address][] {
  const cuts = [...holes]
    .map((h) => parseAddress(h))
    .filter((h) => h.family === first.family && h.value >= first.value && h.value <= last.value)
    .sort((a, b) => (a.value < b.value ? -1 : 1));
  const out: [Address, Address][] = [];
  let start = first.value;
  for (const cut of cuts) {
    if (cut.value > start)
      out.push([
        addressFromValue(first.family, start),
        addressFromValue(first.family, cut.value - 1n),
      ]);
    start = cut.value + 1n;
  }
  if (start <= last.value) out.push([addressFromValue(first.family, start), last]);
  return out;
}

/**
 * A FIP's elements depend on its record and on its pool's delivery and uplink alone. Records
 * are immutable (a change is a new object), so they are remembered per record: a caller that
 * keeps the unchanged records between two compiles gets them back instead of building those of
 * 100,000 FIPs again for one that moved. Weak: a record no longer held takes its entry along.
 */
const FIP_ELEMENTS = new WeakMap<
  FloatingIp,
  { delivery: Pool['delivery']; uplink: string | undefined; elements: readonly IntentElement[] }
>();

function fipElements(fip: FloatingIp, pool: Pool): readonly IntentElement[] {
  const known = FIP_ELEMENTS.get(fip);
  if (known && known.delivery === pool.delivery && known.uplink === pool.uplink) {
    return known.elements;
  }
  const elements = buildFipElements(fip, pool);
  FIP_ELEMENTS.set(fip, { delivery: pool.delivery, uplink: pool.uplink, elements });
  return elements;
}

function buildFipElements(fip: FloatingIp, pool: Pool): IntentElement[] {
  const a = fip.association;
  if (!a) return [];
  const owner = fip.address;
  const out: IntentElement[] = [element('counter', { fip: fip.address }, owner)];
  // A shared address is the gateway's own: it already holds it, so nothing to claim.
  if (pool.delivery === 'onlink' && pool.uplink && !fip.shared) {
    out.push(claimElement(fip.address, fip.family, pool.uplink, a.mode === 'routed', owner));
  }
  if (a.mode === 'nat') {
    out.push(
      element('dnat', { fip: fip.address, target: a.target }, owner),
      element('snat', { target: a.target, fip: fip.address }, owner),
    );
    if (a.masquerade) out.push(element('masq', { target: a.target }, owner));
  } else if (a.mode === 'routed') {
    // Delivered through the tunnel to its node: see routed.ts.
  } else {
    for (const f of fip.forwards) {
      const { protocol, target } = f;
      if (f.targetPort === f.port) {
        const ports = { first: f.port, last: f.portEnd };
        out.push(element('fwd', { fip: fip.address, protocol, ports, target }, owner));
        continue;
      }
      for (let port = f.port; port <= f.portEnd; port++) {
        const targetPort = f.targetPort + (port - f.port);
        out.push(
          element('fwdport', { fip: fip.address, protocol, port, target, targetPort }, owner),
        );
      }
    }
  }
  return out;
}

/** The `table` element: the nftables table's fixed part at this version. */
export function tableElement(): IntentElement {
  return element('table', { version: NFT_SKELETON_VERSION }, HOST_OWNER);
}

/**
 * An on-link FIP's `claim`. An IPv4 FIP is normally held as a local address on the uplink,
 * which answers ARP and lets nftables DNAT it. A FIP routed on into a tunnel must not be local
 * (the gateway would swallow it): the gateway answers ARP for it by a proxy neighbour entry
 * instead, which Linux honours only while the route to the FIP leaves by another interface than
 * the uplink — the tunnel. Both are one element (the key is the FIP), so a move between nat and
 * routed replaces one by the other in one apply. IPv6 claims are always proxy NDP entries.
 */
export function claimElement(
  fip: string,
  family: Family,
  uplink: string,
  routed: boolean,
  owner: string = fip,
): IntentElement {
  return element('claim', { fip, uplink, proxy: family === 6 || routed }, owner);
}

/** What a claim element holds: its uplink, and whether it is a proxy entry (ARP or NDP). */
export function parseClaim(e: Pick<IntentElement, 'key' | 'value'>): {
  readonly uplink: string;
  readonly proxy: boolean;
} {
  const { uplink, proxy } = KINDS.claim.decode(e.key, e.value);
  return { uplink, proxy };
}

/**
 * Sorted as compareAddressText sorts, parsing each address once rather than twice per
 * comparison (3.4 million parses for 100,000 FIPs), and comparing IPv4 addresses as numbers
 * rather than bigints.
 */
function byAddress<T extends { readonly address: string }>(items: readonly T[]): T[] {
  const keyed = items.map((item) => {
    const v4 = ipv4Value(item.address);
    const parsed = v4 < 0 ? tryParseAddress(item.address) : undefined;
    // IPv4 before IPv6; an address that does not parse compares by its text (family 0).
    const family = v4 >= 0 ? 4 : (parsed?.family ?? 0);
    return { item, family, v4, parsed };
  });
  keyed.sort((a, b) => {
    if (a.family === 0 || b.family === 0) {
      const x = a.item.address;
      const y = b.item.address;
      return x < y ? -1 : x > y ? 1 : 0;
    }
    if (a.family !== b.family) return a.family - b.family;
    if (a.family === 4) return a.v4 - b.v4;
    return compareAddresses(a.parsed!, b.parsed!);
  });
  return keyed.map((k) => k.item);
}

/**
 * A canonical dotted quad (what tryParseAddress takes for IPv4: no leading zeros) as a number,
 * else -1; without the regular expression and the bigint, which cost most of a 100,000-FIP sort.
 */
export function ipv4Value(text: string): number {
  let value = 0;
  let part = 0;
  let digits = 0;
  let dots = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 46) {
      if (digits === 0 || dots === 3) return -1;
      value = value * 256 + part;
      part = 0;
      digits = 0;
      dots++;
    } else if (c >= 48 && c <= 57) {
      if (digits > 0 && part === 0) return -1; // a leading zero
      part = part * 10 + (c - 48);
      if (++digits > 3 || part > 255) return -1;
    } else return -1;
  }
  return digits === 0 || dots !== 3 ? -1 : value * 256 + part;
}
