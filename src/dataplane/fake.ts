/**
 * A strict in-memory dataplane. It keeps state like a kernel, refuses what a kernel would
 * refuse (removing what is not there, adding what already is, overlapping port intervals or
 * mesh SSH prefixes, a mesh element nftables cannot parse or has no set for, a claim — local
 * address or proxy ARP/NDP entry — on an interface the host does not have),
 * applies a diff all-or-nothing, records the conntrack flushes a move or release causes, and
 * prints its state with `dump()` so tests can compare whole states. Tests can also make it
 * refuse an element the way a kernel would refuse a rule, to exercise ERROR paths.
 */
import { randomBytes } from 'node:crypto';
import { prefixRange, tryParseAddress, tryParsePrefix } from '../core/address.js';
import { IpferryError } from '../core/errors.js';
import type { HostFacts } from '../intent/facts.js';
import { compareElements, elementId, type IntentDiff } from '../intent/diff.js';
import {
  decode,
  decodeElement,
  type IntentElement,
  isKind,
  type PortRange,
} from '../intent/elements.js';
import type { Dataplane, FipCounter } from './dataplane.js';
import type { TunnelIntent } from '../core/tunnel.js';
import type { TunnelHealth } from '../core/model.js';
import type { TunnelCheck } from '../core/tunnelhealth.js';
import type { PathProbeRequest } from './dataplane.js';

export class FakeDataplane implements Dataplane {
  /**
   * A well-formed WireGuard public key (32 random bytes, base64), one per dataplane as every real
   * host has its own: a hub refuses a node that registers another node's key.
   */
  private readonly fakePublicKey = randomBytes(32).toString('base64');

  readonly kind = 'fake';
  private elements = new Map<string, IntentElement>();
  private refusals: { match: (e: IntentElement) => boolean; reason: string }[] = [];
  /** Connection-tracking flushes the driver did, as `FIP -> old target` (what a move clears). */
  readonly conntrackFlushes: string[] = [];
  hostFacts: HostFacts = { interfaces: [], addresses: [] };
  /** Number of successful apply() calls and elements they touched (for tests and benchmarks). */
  applies = 0;
  lastApplySize = 0;

  /** Traffic counted per FIP (countPacket) while it has its counter element. */
  private traffic = new Map<string, FipCounter>();

  /** The tunnel last applied, as a driver would hold it. */
  tunnel: TunnelIntent | undefined;
  /** The tunnel's device: lost (loseTunnel) until applyTunnel makes a new one. */
  private tunnelLost = false;
  private tunnelIfindex = 1;

  /**
   * The simulated path to each probe address: `dead`, or the largest packet it carries whole
   * (larger ones and their fragments are lost, as in an MTU black hole). Absent: a perfect path.
   * Route MTUs the fake holds (a `route` element for the address with `mtu N`) apply as on Linux.
   */
  readonly paths = new Map<string, 'dead' | number>();
  /** Every probe sent, for tests. */
  readonly probes: PathProbeRequest[] = [];

  async probePath(request: PathProbeRequest): Promise<number | undefined> {
    await Promise.resolve();
    this.probes.push(request);
    if (this.tunnelLost) return undefined;
    const path = this.paths.get(request.address);
    if (path === 'dead') return undefined;
    const packet = request.payload + 48;
    const route = [...this.elements.values()]
      .flatMap((e) => (isKind(e, 'route') ? [decode(e)] : []))
      .find((r) => r.table === undefined && r.prefix === `${request.address}/128`);
    const routeMtu = route?.mtu ?? this.tunnel?.mtu ?? 1420;
    if (!request.fragment && packet > routeMtu) return undefined; // EMSGSIZE, locally
    const piece = request.fragment ? Math.min(packet, routeMtu) : packet;
    return path === undefined || piece <= path ? 1 : undefined;
  }

  async applyTunnel(tunnel: TunnelIntent | undefined): Promise<void> {
    await Promise.resolve();
    this.tunnel = tunnel;
    if (this.tunnelLost && tunnel) {
      this.tunnelLost = false;
      this.tunnelIfindex++;
    }
  }

  /**
   * A tunnel daemon that crashed, as Linux shows it: the device is gone, and every route
   * through it went with it; applyTunnel makes a new one (another ifindex).
   */
  loseTunnel(): void {
    const name = this.tunnel?.name;
    if (name === undefined) throw new Error('the fake has no tunnel to lose');
    for (const [id, e] of this.elements) {
      if (isKind(e, 'route') && decode(e).dev === name) this.elements.delete(id);
    }
    this.tunnelLost = true;
  }

  async checkTunnel(): Promise<TunnelCheck | undefined> {
    await Promise.resolve();
    const name = this.tunnel?.name;
    if (name === undefined) return undefined;
    const applied = this.tunnel;
    return this.tunnelLost
      ? { name, faults: [{ kind: 'device-gone', detail: `${name} is gone` }], applied }
      : { name, ifindex: this.tunnelIfindex, faults: [], applied };
  }

  /** The fake has no wire: a tunnel it holds reports peers that never shook hands. */
  async tunnelHealth(): Promise<TunnelHealth | undefined> {
    await Promise.resolve();
    const t = this.tunnel;
    if (!t) return undefined;
    return {
      name: t.name,
      checkedAt: new Date().toISOString(),
      peers: t.peers.map((p) => ({
        publicKey: p.publicKey,
        ...(p.endpoint ? { endpoint: p.endpoint } : {}),
        rxBytes: 0,
        txBytes: 0,
      })),
    };
  }

  async tunnelPublicKey(): Promise<string> {
    await Promise.resolve();
    return this.fakePublicKey;
  }

  async facts(): Promise<HostFacts> {
    await Promise.resolve();
    return this.hostFacts;
  }

  async observe(wanted: readonly IntentElement[] = []): Promise<IntentElement[]> {
    await Promise.resolve();
    // Like a kernel, every sysctl has a value (forwarding starts off); only wanted ones are read.
    const sysctls = wanted
      .filter((e) => e.kind === 'sysctl')
      .map((e) => this.elements.get(elementId(e)) ?? { ...e, value: '0' });
    return [...[...this.elements.values()].filter((e) => e.kind !== 'sysctl'), ...sysctls].sort(
      compareElements,
    );
  }

  async apply(diff: IntentDiff): Promise<void> {
    await Promise.resolve();
    const next = new Map(this.elements);
    // Like the real drivers, a sysctl is never reset: removing one leaves it as it is.
    for (const e of diff.remove) if (e.kind !== 'sysctl') this.take(next, e, 'remove');
    for (const { from, to } of diff.replace) {
      if (from.kind !== 'sysctl') this.take(next, from, 'replace');
      this.put(next, to);
    }
    for (const e of diff.add) {
      if (next.has(elementId(e))) this.refuse(e, 'it already exists');
      this.put(next, e);
    }
    this.checkForwardsDisjoint(next);
    this.checkMeshIntervals(next);
    this.elements = next;
    // A counter goes with its element: a FIP associated again counts from zero, as in nftables.
    for (const e of diff.remove) if (isKind(e, 'counter')) this.traffic.delete(decode(e).fip);
    for (const e of [...diff.remove, ...diff.replace.map((r) => r.from)]) {
      const t = decodeElement(e);
      if (t.kind === 'dnat' || t.kind === 'fwd' || t.kind === 'fwdport') {
        this.conntrackFlushes.push(`${t.data.fip} -> ${e.value}`);
      }
    }
    this.applies++;
    this.lastApplySize = diff.add.length + diff.replace.length + diff.remove.length;
  }

  /** Every FIP with a counter element, with what countPacket counted for it. */
  async fipCounters(): Promise<Map<string, FipCounter>> {
    await Promise.resolve();
    const out = new Map<string, FipCounter>();
    for (const e of this.elements.values()) {
      if (!isKind(e, 'counter')) continue;
      const { fip } = decode(e);
      out.set(fip, this.traffic.get(fip) ?? { packets: 0, bytes: 0 });
    }
    return out;
  }

  /**
   * A packet of `bytes` arriving for `fip`, for tests: counted as the kernel's lookup in the
   * counter set would, only while the FIP has its counter element.
   */
  countPacket(fip: string, bytes: number): void {
    if (!this.elements.has(elementId({ kind: 'counter', key: fip }))) return;
    const c = this.traffic.get(fip) ?? { packets: 0, bytes: 0 };
    this.traffic.set(fip, { packets: c.packets + 1, bytes: c.bytes + bytes });
  }

  async close(): Promise<void> {
    await Promise.resolve();
  }

  /** Makes the next applies refuse matching elements with `reason`, like a kernel error. */
  refuseWhen(match: (e: IntentElement) => boolean, reason: string): void {
    this.refusals.push({ match, reason });
  }

  clearRefusals(): void {
    this.refusals = [];
  }

  /** Deletes one element behind the agent's back, as an operator with `nft delete element` would. */
  tamperRemove(kind: IntentElement['kind'], key: string): boolean {
    return this.elements.delete(elementId({ kind, key }));
  }

  dump(): string {
    return [...this.elements.values()]
      .sort(compareElements)
      .map((e) => `${e.kind} ${e.key} -> ${e.value}`)
      .join('\n');
  }

  private take(state: Map<string, IntentElement>, e: IntentElement, op: string): void {
    const id = elementId(e);
    const have = state.get(id);
    if (!have || have.value !== e.value) this.refuse(e, `cannot ${op}: no such element`);
    state.delete(id);
  }

  private put(state: Map<string, IntentElement>, e: IntentElement): void {
    const refusal = this.refusals.find((r) => r.match(e));
    if (refusal) this.refuse(e, refusal.reason);
    if (e.kind === 'claim') this.checkClaim(e);
    const bad = meshProblem(e);
    if (bad) this.refuse(e, bad);
    state.set(elementId(e), e);
  }

  /**
   * A claim — a local address or a proxy entry (ARP or NDP) — needs its uplink, as
   * `ip address add`/`ip neigh add proxy … dev X` do ("Cannot find device"). A fake whose
   * hostFacts list no interfaces takes any uplink.
   */
  private checkClaim(e: IntentElement): void {
    if (!isKind(e, 'claim')) return;
    const { uplink } = decode(e);
    const known = this.hostFacts.interfaces;
    if (known.length > 0 && !known.includes(uplink)) {
      this.refuse(e, `Cannot find device "${uplink}"`);
    }
  }

  /** nftables refuses overlapping intervals in one map: so does the fake. */
  private checkForwardsDisjoint(state: Map<string, IntentElement>): void {
    const seen = new Map<string, { lo: number; hi: number; e: IntentElement }[]>();
    for (const e of state.values()) {
      const t = decodeElement(e);
      if (t.kind !== 'fwd' && t.kind !== 'fwdport') continue;
      const { lo, hi } =
        t.kind === 'fwd'
          ? { lo: t.data.ports.first, hi: t.data.ports.last }
          : { lo: t.data.port, hi: t.data.port };
      const group = `${t.data.fip} ${t.data.protocol}`;
      const others = seen.get(group) ?? [];
      const clash = others.find((o) => o.lo <= hi && lo <= o.hi);
      if (clash) this.refuse(e, `conflicting intervals with ${clash.e.kind} ${clash.e.key}`);
      seen.set(group, [...others, { lo, hi, e }]);
    }
  }

  /**
   * nftables refuses overlapping elements in an interval set, checked against the set as it is
   * after the whole transaction (a prefix may give way to one inside it in one apply): SSH
   * prefixes per family, open ports per protocol.
   */
  private checkMeshIntervals(state: Map<string, IntentElement>): void {
    const seen = new Map<string, { lo: bigint; hi: bigint; e: IntentElement }[]>();
    for (const e of state.values()) {
      const span = meshSpan(e);
      if (!span) continue;
      const others = seen.get(span.group) ?? [];
      const clash = others.find((o) => o.lo <= span.hi && span.lo <= o.hi);
      if (clash) this.refuse(e, `interval overlaps with ${clash.e.kind} ${clash.e.key}`);
      seen.set(span.group, [...others, { ...span, e }]);
    }
  }

  private refuse(e: IntentElement, reason: string): never {
    throw new IpferryError('IPF_E_DATAPLANE', {
      reason: `${e.kind} ${e.key} -> ${e.value}: ${reason}`,
    });
  }
}

/** What nftables would refuse in a mesh element, as the kernel's table declares its sets. */
function meshProblem(e: IntentElement): string | undefined {
  const family = (text: string): number | undefined => tryParseAddress(text)?.family;
  const t = decodeElement(e);
  switch (t.kind) {
    case 'meshnat':
    case 'meshsnat': {
      const [from, to] =
        t.kind === 'meshnat' ? [t.data.overlay, t.data.address] : [t.data.target, t.data.source];
      return family(from) === 4 && family(to) === 4
        ? undefined
        : `No such file or directory (${e.kind}4 maps an IPv4 address to an IPv4 address)`;
    }
    case 'meshmember':
      return family(t.data.address) ? undefined : 'not an address';
    case 'meshssh':
      return tryParsePrefix(t.data.prefix) ? undefined : 'not a prefix';
    case 'meshport':
      return ['tcp', 'udp'].includes(t.data.protocol) && validPorts(t.data.ports)
        ? undefined
        : 'not PROTO . PORT[-PORT]';
    case 'meshreject':
      // The whole key: decode reads anything but `ipv6` as ipv4.
      return e.key === 'ipv4' || e.key === 'ipv6' ? undefined : 'not ipv4 or ipv6';
    default:
      return undefined;
  }
}

function validPorts({ first, last }: PortRange): boolean {
  return (
    Number.isInteger(first) &&
    Number.isInteger(last) &&
    0 <= first &&
    first <= last &&
    last <= 65535
  );
}

/** The interval a mesh SSH prefix or open port covers, and the set part it must not overlap in. */
function meshSpan(e: IntentElement): { group: string; lo: bigint; hi: bigint } | undefined {
  const t = decodeElement(e);
  if (t.kind === 'meshssh') {
    const range = prefixRange(tryParsePrefix(t.data.prefix)!);
    return { group: `ssh${range.family}`, lo: range.first.value, hi: range.last.value };
  }
  if (t.kind === 'meshport') {
    const { protocol, ports } = t.data;
    return { group: `port ${protocol}`, lo: BigInt(ports.first), hi: BigInt(ports.last) };
  }
  return undefined;
}
