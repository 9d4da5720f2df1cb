/**
 * The gateway's own part of a host's intent: per FIP its counter, on-link claim, and NAT or
 * forward elements (a FIP's elements depend on its record and its pool alone, and are reused
 * between compiles), and per host the table, the forwarding sysctls, the hairpin interfaces and
 * the drops of pool ranges nobody answers for.
 */
import { type Address, addressFromValue, type Family, parseAddress } from '../address.js';
import type { FloatingIp, Pool } from '../model.js';
import {
  NFT_SKELETON_VERSION,
  proxyArpDelaySysctl,
  proxyNdpSysctl,
  SYSCTL_IPV4_FORWARD,
  SYSCTL_IPV6_FORWARD,
} from '../names.js';
import { poolRanges } from '../pool.js';
import { withinTargetRanges } from '../validate.js';
import { element, HOST_OWNER, type IntentElement, KINDS } from '../../intent/elements.js';
import type { HostFacts } from '../../intent/facts.js';

/**
 * FIPs this host must not realise: a 1:1 FIP equal to one of the gateway's own addresses would
 * take the gateway's traffic; a routed FIP without a node has nowhere to go.
 */
export function refusal(
  fip: FloatingIp,
  own: ReadonlySet<string>,
  pool?: Pick<Pool, 'name' | 'targetRanges'>,
): string | undefined {
  const outside = pool && targetOutside(fip, pool);
  if (outside) {
    return `${fip.address} goes to ${outside}, outside the target ranges of pool ${pool.name} (${(pool.targetRanges ?? []).join(', ')})`;
  }
  const mode = fip.association?.mode;
  if (mode === 'routed' && !fip.association?.node) {
    return `${fip.address} is routed but names no node to deliver it to`;
  }
  if ((mode === 'nat' || mode === 'routed') && own.has(fip.address)) {
    return `${fip.address} is an address of the gateway itself: only port forwards may use it`;
  }
  return undefined;
}

/** A target of the FIP's (a routed FIP's is itself) outside its pool's target ranges. */
function targetOutside(fip: FloatingIp, pool: Pick<Pool, 'targetRanges'>): string | undefined {
  const a = fip.association;
  const targets = [
    ...(a && a.mode !== 'routed' ? [a.target] : []),
    ...fip.forwards.map((f) => f.target),
  ];
  return targets.find((t) => !withinTargetRanges(t, pool.targetRanges));
}

export function hostElements(
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
  const drops: { first: Address; last: Address; owner: string }[] = [];
  // Parsed on the first range that needs them: a pool of shared addresses alone needs none.
  let holes: Holes | undefined;
  for (const pool of pools) {
    for (const { entry, range } of poolRanges(pool)) {
      if (entry.kind === 'address' && entry.shared) continue;
      holes ??= new Holes(own);
      for (const [first, last] of holes.subtract(range.first, range.last)) {
        drops.push({ first, last, owner: `pool:${pool.name}` });
      }
    }
  }
  for (const d of disjoint(drops)) {
    out.push(element('drop', { first: d.first.text, last: d.last.text }, d.owner));
  }
  return out;
}

/**
 * The drop ranges with overlapping ones joined (into the first one's owner): the drop sets are
 * nftables interval sets, which refuse a transaction with overlapping elements whole. The API
 * keeps pools apart, but two stored pools may still overlap (one written around it, or by an
 * older version), and a shared address's own pool may cover it as well; the gateway drops each
 * address once either way. Ranges that only touch stay apart, as each entry's own element.
 */
function disjoint<T extends { first: Address; last: Address }>(ranges: readonly T[]): T[] {
  const sorted = [...ranges].sort((a, b) =>
    a.first.family !== b.first.family
      ? a.first.family - b.first.family
      : a.first.value < b.first.value
        ? -1
        : a.first.value > b.first.value
          ? 1
          : 0,
  );
  const out: T[] = [];
  for (const r of sorted) {
    const last = out[out.length - 1];
    if (last && last.first.family === r.first.family && r.first.value <= last.last.value) {
      if (r.last.value > last.last.value) out[out.length - 1] = { ...last, last: r.last };
    } else out.push(r);
  }
  return out;
}

/**
 * Addresses the drop ranges leave out (the host's own and the routed FIPs passing through),
 * parsed and sorted once per compile. A pool may hold 4,096 entries and a host a thousand such
 * addresses: parsing and sorting all of them again for every entry made one pass take seconds,
 * where a binary search per entry finds just the few inside it.
 */
export class Holes {
  /** Per family, the values in ascending order (a repeated one cuts nothing more). */
  private readonly values: Record<Family, bigint[]> = { 4: [], 6: [] };

  constructor(holes: Iterable<string>) {
    for (const h of holes) {
      const a = parseAddress(h);
      this.values[a.family].push(a.value);
    }
    for (const family of [4, 6] as const) {
      this.values[family].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    }
  }

  /** The range first–last without the holes, as sub-ranges in order. */
  subtract(first: Address, last: Address): [Address, Address][] {
    const values = this.values[first.family];
    const out: [Address, Address][] = [];
    let start = first.value;
    for (let i = lowerBound(values, first.value); i < values.length; i++) {
      const cut = values[i]!;
      if (cut > last.value) break;
      if (cut > start)
        out.push([addressFromValue(first.family, start), addressFromValue(first.family, cut - 1n)]);
      start = cut + 1n;
    }
    if (start <= last.value) out.push([addressFromValue(first.family, start), last]);
    return out;
  }
}

/** The first position in ascending `values` holding `value` or more. */
function lowerBound(values: readonly bigint[], value: bigint): number {
  let lo = 0;
  let hi = values.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (values[mid]! < value) lo = mid + 1;
    else hi = mid;
  }
  return lo;
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

export function fipElements(fip: FloatingIp, pool: Pool): readonly IntentElement[] {
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
    // Delivered through the tunnel to its node: see tunnels.ts.
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
