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
  compareAddressText,
  parseAddress,
  tryParseAddress,
} from './address.js';
import type { FloatingIp, NodeRecord, Pool } from './model.js';
import { DEFAULT_TUNNEL_PORT, routedPart, type TunnelOptions } from './routed.js';
import type { TunnelIntent } from './tunnel.js';
import { compileMesh, type MeshIntent, type MeshState } from './mesh.js';
import {
  NFT_FAMILY,
  NFT_SKELETON_VERSION,
  NFT_TABLE,
  SYSCTL_IPV4_FORWARD,
  SYSCTL_IPV6_FORWARD,
  proxyArpDelaySysctl,
  proxyNdpSysctl,
} from './names.js';
import { poolRanges } from './pool.js';

export type ElementKind =
  | 'table'
  | 'sysctl'
  | 'hairpin'
  | 'drop'
  | 'claim'
  | 'counter'
  | 'dnat'
  | 'snat'
  | 'masq'
  | 'fwd'
  | 'fwdport'
  | 'tuntarget'
  | 'route'
  | 'rule'
  // The fleet mesh (mesh.ts): overlay address → real address, the source to use toward a
  // same-site member's private address, member addresses, failsafe SSH prefixes, open ports
  // (`tcp . 443`, `udp . 8000-8010`) and the reject_all switch per family.
  | 'meshnat'
  | 'meshsnat'
  | 'meshmember'
  | 'meshssh'
  | 'meshport'
  | 'meshreject';

export interface IntentElement {
  readonly kind: ElementKind;
  readonly key: string;
  readonly value: string;
  /** The FIP this element realises, `pool:NAME` or `host`. */
  readonly owner: string;
}

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

const KIND_ORDER: Record<ElementKind, number> = {
  table: 0,
  sysctl: 1,
  hairpin: 2,
  drop: 3,
  claim: 4,
  counter: 5,
  dnat: 6,
  snat: 7,
  masq: 8,
  fwd: 9,
  fwdport: 10,
  tuntarget: 11,
  route: 12,
  rule: 13,
  meshnat: 14,
  meshsnat: 15,
  meshmember: 16,
  meshssh: 17,
  meshport: 18,
  meshreject: 19,
};

export const HOST_OWNER = 'host';

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
    realised.push(...mesh.elements, {
      kind: 'table',
      key: `${NFT_FAMILY} ${NFT_TABLE}`,
      value: NFT_SKELETON_VERSION,
      owner: HOST_OWNER,
    });
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
  const host = (kind: ElementKind, key: string, value: string): IntentElement => ({
    kind,
    key,
    value,
    owner: HOST_OWNER,
  });
  const out = [
    host('table', `${NFT_FAMILY} ${NFT_TABLE}`, NFT_SKELETON_VERSION),
    host('sysctl', SYSCTL_IPV4_FORWARD, '1'),
    ...facts.interfaces.map((name) => host('hairpin', name, name)),
  ];
  // IPv6 forwarding makes Linux ignore router advertisements (accept_ra=1): only turn it on
  // where there is IPv6 to forward.
  if (pools.some((p) => poolRanges(p).some((r) => r.range.family === 6))) {
    out.push(host('sysctl', SYSCTL_IPV6_FORWARD, '1'));
  }
  // On-link IPv6 FIPs are answered by proxy NDP on the uplink.
  const ndpUplinks = pools.filter(
    (p) => p.delivery === 'onlink' && p.uplink && poolRanges(p).some((r) => r.range.family === 6),
  );
  for (const uplink of new Set(ndpUplinks.map((p) => p.uplink ?? ''))) {
    out.push(host('sysctl', proxyNdpSysctl(uplink), '1'));
  }
  // On-link IPv4 FIPs routed on into a tunnel are answered by proxy ARP (see claimValue).
  const arpUplinks = pools.filter(
    (p) => p.delivery === 'onlink' && p.uplink && poolRanges(p).some((r) => r.range.family === 4),
  );
  for (const uplink of new Set(arpUplinks.map((p) => p.uplink ?? ''))) {
    out.push(host('sysctl', proxyArpDelaySysctl(uplink), '0'));
  }
  for (const pool of pools) {
    for (const { entry, range } of poolRanges(pool)) {
      if (entry.kind === 'address' && entry.shared) continue;
      for (const [first, last] of subtract(range.first, range.last, own)) {
        const key = `${first.text}-${last.text}`;
        out.push({ kind: 'drop', key, value: '', owner: `pool:${pool.name}` });
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
  const el = (kind: ElementKind, key: string, value: string): IntentElement => ({
    kind,
    key,
    value,
    owner,
  });
  const out: IntentElement[] = [el('counter', fip.address, '')];
  // A shared address is the gateway's own: it already holds it, so nothing to claim.
  if (pool.delivery === 'onlink' && pool.uplink && !fip.shared) {
    out.push(el('claim', fip.address, claimValue(fip.family, pool.uplink, a.mode === 'routed')));
  }
  if (a.mode === 'nat') {
    out.push(el('dnat', fip.address, a.target), el('snat', a.target, fip.address));
    if (a.masquerade) out.push(el('masq', a.target, ''));
  } else if (a.mode === 'routed') {
    // Delivered through the tunnel to its node: see routed.ts.
  } else {
    for (const f of fip.forwards) {
      if (f.targetPort === f.port) {
        const ports = f.port === f.portEnd ? `${f.port}` : `${f.port}-${f.portEnd}`;
        out.push(el('fwd', `${fip.address} . ${f.protocol} . ${ports}`, f.target));
        continue;
      }
      for (let port = f.port; port <= f.portEnd; port++) {
        const to = f.targetPort + (port - f.port);
        out.push(el('fwdport', `${fip.address} . ${f.protocol} . ${port}`, `${f.target} . ${to}`));
      }
    }
  }
  return out;
}

/** Marks an IPv4 claim answered by a proxy ARP entry instead of a local address. */
const PROXY_CLAIM = 'proxy ';

/**
 * The value of an on-link FIP's `claim`. An IPv4 FIP is normally held as a local address on
 * the uplink (value: the uplink), which answers ARP and lets nftables DNAT it. A FIP routed on
 * into a tunnel must not be local (the gateway would swallow it): the gateway answers ARP for it
 * by a proxy neighbour entry instead (value `proxy UPLINK`), which Linux honours only while the
 * route to the FIP leaves by another interface than the uplink — the tunnel. Both are one
 * element, so a move between nat and routed replaces one by the other in one apply. IPv6 claims
 * are always proxy NDP entries and carry the uplink alone.
 */
export function claimValue(family: Family, uplink: string, routed: boolean): string {
  return family === 4 && routed ? proxyArpClaim(uplink) : uplink;
}

/** The value of an IPv4 claim answered by a proxy ARP entry on `uplink`. */
export function proxyArpClaim(uplink: string): string {
  return `${PROXY_CLAIM}${uplink}`;
}

/** What a claim element holds: its uplink, and whether it is a proxy entry (ARP or NDP). */
export function parseClaim(e: Pick<IntentElement, 'key' | 'value'>): {
  readonly uplink: string;
  readonly proxy: boolean;
} {
  if (e.key.includes(':')) return { uplink: e.value, proxy: true };
  const proxy = e.value.startsWith(PROXY_CLAIM);
  return { uplink: proxy ? e.value.slice(PROXY_CLAIM.length) : e.value, proxy };
}

/**
 * The elements sorted by compareElements, one per id (the last given, as a map would keep it).
 * Kinds first by a stable bucket pass, then each kind by key: a one-FIP change among 100,000
 * FIPs recompiles 300,000 elements, and a map keyed by id strings cost more than all the rest.
 */
function sortUnique(elements: readonly IntentElement[]): IntentElement[] {
  const buckets: IntentElement[][] = Object.keys(KIND_ORDER).map(() => []);
  for (const e of elements) buckets[KIND_ORDER[e.kind]]!.push(e);
  const out: IntentElement[] = [];
  for (const bucket of buckets) {
    bucket.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    for (let i = 0; i < bucket.length; i++) {
      // Array.prototype.sort is stable: the last of equal keys is the last given.
      if (i + 1 < bucket.length && bucket[i]!.key === bucket[i + 1]!.key) continue;
      out.push(bucket[i]!);
    }
  }
  return out;
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

export function compareElements(a: IntentElement, b: IntentElement): number {
  // Neighbours mostly share their kind: skip the table lookup then (sorting 300,000 elements).
  if (a.kind !== b.kind) return KIND_ORDER[a.kind] - KIND_ORDER[b.kind];
  return a.key < b.key ? -1 : a.key > b.key ? 1 : 0;
}

export function elementId(e: Pick<IntentElement, 'kind' | 'key'>): string {
  return `${e.kind} ${e.key}`;
}

/** The minimal change from `observed` to `desired`: elements to add, to replace, to remove. */
export interface IntentDiff {
  readonly add: readonly IntentElement[];
  readonly replace: readonly { readonly from: IntentElement; readonly to: IntentElement }[];
  readonly remove: readonly IntentElement[];
}

export function diffIntent(
  desired: readonly IntentElement[],
  observed: readonly IntentElement[],
): IntentDiff {
  // Both sides are usually sorted already (compile's output, and what the last apply left):
  // then one merge walk finds the difference without building an id string and a map entry
  // per element, which is what a one-FIP change among 100,000 spent most of its time on.
  if (strictlySorted(desired) && strictlySorted(observed)) return mergeDiff(desired, observed);
  return diffById(desired, observed);
}

/**
 * The general diff, for lists in any order (duplicates: the last of an id counts): maps of
 * element ids. diffIntent's merge walk must always agree with it (test/core-intent.test.ts).
 */
export function diffById(
  desired: readonly IntentElement[],
  observed: readonly IntentElement[],
): IntentDiff {
  const have = new Map(observed.map((e) => [elementId(e), e]));
  const want = new Map(desired.map((e) => [elementId(e), e]));
  const add: IntentElement[] = [];
  const replace: { from: IntentElement; to: IntentElement }[] = [];
  for (const [id, e] of want) {
    const old = have.get(id);
    if (!old) add.push(e);
    else if (old.value !== e.value) replace.push({ from: old, to: e });
  }
  const remove = [...have].filter(([id]) => !want.has(id)).map(([, e]) => e);
  return { add, replace, remove };
}

/**
 * Lists known to be sorted by compareElements with one element per id: compile's own output,
 * which nobody changes in place (HostIntent.elements is readonly), so diffIntent need not walk
 * it to find out.
 */
const SORTED = new WeakSet<readonly IntentElement[]>();

function knownSorted(elements: IntentElement[]): readonly IntentElement[] {
  SORTED.add(elements);
  return elements;
}

/** Sorted by compareElements, one element per id. */
function strictlySorted(xs: readonly IntentElement[]): boolean {
  if (SORTED.has(xs)) return true;
  for (let i = 1; i < xs.length; i++) if (compareElements(xs[i - 1]!, xs[i]!) >= 0) return false;
  return true;
}

/**
 * diffIntent of two strictly sorted lists, with the same result as the map-based walk. An
 * element both lists hold (compile reuses a FIP's unchanged elements) is equal without
 * comparing its text.
 */
function mergeDiff(
  desired: readonly IntentElement[],
  observed: readonly IntentElement[],
): IntentDiff {
  const add: IntentElement[] = [];
  const replace: { from: IntentElement; to: IntentElement }[] = [];
  const remove: IntentElement[] = [];
  let i = 0;
  let j = 0;
  while (i < desired.length && j < observed.length) {
    const to = desired[i]!;
    const from = observed[j]!;
    const order = to === from ? 0 : compareElements(to, from);
    if (order < 0) {
      add.push(to);
      i++;
    } else if (order > 0) {
      remove.push(from);
      j++;
    } else {
      if (from.value !== to.value) replace.push({ from, to });
      i++;
      j++;
    }
  }
  while (i < desired.length) add.push(desired[i++]!);
  while (j < observed.length) remove.push(observed[j++]!);
  return { add, replace, remove };
}

/** What a dataplane holds after `diff` was applied to `observed`. */
export function applyDiff(observed: readonly IntentElement[], diff: IntentDiff): IntentElement[] {
  const gone = [...diff.remove, ...diff.replace.map((r) => r.from)];
  const put = [...diff.add, ...diff.replace.map((r) => r.to)];
  // The usual case, a small diff to a sorted list: two merge walks rather than a map of ids.
  if (strictlySorted(observed))
    return mergePut(mergeGone(observed, sortUnique(gone)), sortUnique(put));
  return applyById(observed, diff);
}

/** applyDiff for a list in any order, by a map of element ids; its merge walks must agree. */
export function applyById(observed: readonly IntentElement[], diff: IntentDiff): IntentElement[] {
  const state = new Map(observed.map((e) => [elementId(e), e]));
  for (const e of [...diff.remove, ...diff.replace.map((r) => r.from)]) state.delete(elementId(e));
  for (const e of [...diff.add, ...diff.replace.map((r) => r.to)]) state.set(elementId(e), e);
  return [...state.values()].sort(compareElements);
}

/** The strictly sorted `xs` without the ids of the strictly sorted `gone`. */
function mergeGone(xs: readonly IntentElement[], gone: readonly IntentElement[]): IntentElement[] {
  const out: IntentElement[] = [];
  let j = 0;
  for (const x of xs) {
    while (j < gone.length && compareElements(gone[j]!, x) < 0) j++;
    if (j < gone.length && compareElements(gone[j]!, x) === 0) continue;
    out.push(x);
  }
  return out;
}

/** Two strictly sorted lists in one; on equal ids `put`'s element wins. */
function mergePut(xs: readonly IntentElement[], put: readonly IntentElement[]): IntentElement[] {
  const out: IntentElement[] = [];
  let j = 0;
  for (const x of xs) {
    while (j < put.length && compareElements(put[j]!, x) < 0) out.push(put[j++]!);
    if (j < put.length && compareElements(put[j]!, x) === 0) continue;
    out.push(x);
  }
  while (j < put.length) out.push(put[j++]!);
  return out;
}

export function isEmptyDiff(d: IntentDiff): boolean {
  return d.add.length === 0 && d.replace.length === 0 && d.remove.length === 0;
}

/** Restricts a diff to the elements of one FIP (to isolate a failing FIP). */
export function diffFor(d: IntentDiff, owner: string): IntentDiff {
  return {
    add: d.add.filter((e) => e.owner === owner),
    replace: d.replace.filter((r) => r.to.owner === owner || r.from.owner === owner),
    remove: d.remove.filter((e) => e.owner === owner),
  };
}

/** Owners in the order their parts must be applied: the host's, the pools', then each FIP's. */
export function diffOwners(d: IntentDiff): string[] {
  const owners = new Set([
    ...d.add.map((e) => e.owner),
    ...d.replace.map((r) => r.to.owner),
    ...d.remove.map((e) => e.owner),
  ]);
  const rank = (o: string): number => (o === HOST_OWNER ? 0 : o.startsWith('pool:') ? 1 : 2);
  return [...owners].sort((a, b) => rank(a) - rank(b) || compareAddressText(a, b));
}
