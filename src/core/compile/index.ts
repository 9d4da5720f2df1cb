/**
 * compile(state, node, facts) → HostIntent: what one host's kernel must hold for the desired
 * state. Pure and deterministic: the same input always gives the same, sorted intent, so the
 * agent can diff it against what the kernel reports and apply only the difference.
 *
 * An intent is a set of keyed elements (src/intent/elements.ts), each one kernel object the
 * drivers create, compare and delete one by one (nftables map and set elements, counters,
 * sysctls, addresses, routes, rules). The parts: gateway.ts (a gateway's own FIPs and host
 * elements), tunnels.ts (tunnels and what routes through them), egress.ts (a node's own traffic
 * out through its gateway), and the mesh (../mesh.ts). Each element belongs
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
 *           `claimElement`.
 * - `route`, `rule`: routed delivery through the tunnel to the FIP's node (tunnels.ts); the node
 *           holds the FIP as an address of its tunnel.
 * - `sysctl`, `table`: forwarding on; the table's fixed part at its version.
 */
import { compareAddresses, tryParseAddress } from '../address.js';
import type { FloatingIp, NodeRecord, Pool } from '../model.js';
import type { TunnelIntent } from '../tunnel.js';
import { compileMesh, type MeshIntent, type MeshState } from '../mesh.js';
import type { IntentElement } from '../../intent/elements.js';
import { knownSorted, sortUnique } from '../../intent/diff.js';
import { type HostFacts, NO_FACTS } from '../../intent/facts.js';
import { fipElements, hostElements, refusal, tableElement } from './gateway.js';
import { DEFAULT_TUNNEL_PORT } from '../defaults.js';
import type { TunnelOptions } from './tunnel-path.js';
import { routedPart } from './tunnels.js';

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
  const twice = claimedTwice(state.fips);
  for (const { fip, revision } of state.fips) {
    const pool = poolByName.get(fip.pool);
    if (!pool) continue;
    if (twice.has(fip.address)) {
      // Which one the operator meant cannot be known here: neither is realised.
      if (fips.some((f) => f.address === fip.address)) continue;
      fips.push({ address: fip.address, revision });
      refused.push({
        address: fip.address,
        reason: `more than one store record holds ${fip.address}`,
      });
      continue;
    }
    fips.push({ address: fip.address, revision });
    const reason = refusal(fip, own, pool);
    if (reason) refused.push({ address: fip.address, reason });
    else for (const e of fipElements(fip, pool)) elements.push(e);
  }
  // A FIP refused above gets no tunnel either (no route, no allowed IP, not kept from the drop).
  const refusedHere = new Set([...refused.map((r) => r.address), ...twice]);
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
 * FIP addresses held by more than one record: the store keeps a FIP under its address, but a
 * record written around the API may name another's. Two of them would put two values under one
 * key of a map (or overlapping intervals of one), which nftables refuses whole.
 */
function claimedTwice(fips: CompileState['fips']): Set<string> {
  const seen = new Set<string>();
  const twice = new Set<string>();
  for (const { fip } of fips) {
    if (seen.has(fip.address)) twice.add(fip.address);
    seen.add(fip.address);
  }
  return twice;
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
