/**
 * Claims (`claim` elements): on-link FIPs this host answers for on an uplink, held as an IPv4
 * address carrying ipferry's label or as a proxy neighbour entry (IPv4 proxy ARP, IPv6 proxy
 * NDP). Added in the add phase and released in the delete phase, each as one `ip -batch`, so a
 * FIP that switches between the two forms gets its new claim before it loses the old one and is
 * never briefly unanswered.
 */
import { tryParseAddress } from '../../core/address.js';
import { claimLabel } from '../../core/names.js';
import type { IntentDiff } from '../../intent/diff.js';
import {
  decode,
  observedElement,
  type IntentElement,
  isKind,
  kindsOf,
  type Payloads,
} from '../../intent/elements.js';
import { parseProxyEntries } from '../iproute/neighbours.js';
import { forElement, ip, ipLine } from './args.js';
import { ipBatch, ipBatchForce } from './ip-batch.js';
import type { Exec, Manager, Phase } from './manager.js';

/**
 * Claims to add, or to release, each with its `ip -batch` line and the line that takes it back,
 * rendered when the change is planned.
 */
interface ClaimChange {
  readonly claims: readonly { readonly line: string; readonly undo: string }[];
}

interface IpAddressLink {
  ifname: string;
  addr_info?: { local?: string; label?: string }[];
}

export class ClaimsManager implements Manager<ClaimChange> {
  readonly name = 'claims';
  readonly kinds = kindsOf('claim');

  constructor(private readonly exec: Exec) {}

  /**
   * IPv4 addresses carrying ipferry's label, and proxy neighbour entries whose address is a
   * wanted claim or lies inside a pool this host is gateway of (the ranges of `wanted`'s drop
   * elements), on whatever interface (one left on an uplink a pool no longer names is ipferry's
   * to remove). Proxy entries for other addresses belong to someone else.
   */
  async observe(wanted: readonly IntentElement[]): Promise<IntentElement[]> {
    const claim = (fip: string, uplink: string, proxy: boolean): IntentElement[] =>
      observedElement('claim', { fip, uplink, proxy }, fip);
    const [addresses, neighbours] = await Promise.all([
      this.exec('ip', ['-j', 'address', 'show']),
      this.exec('ip', ['-j', 'neigh', 'show', 'proxy']),
    ]);
    const links = JSON.parse(addresses.stdout || '[]') as IpAddressLink[];
    const local = links.flatMap((l) =>
      (l.addr_info ?? [])
        .filter((a) => a.label === claimLabel(l.ifname) && a.local)
        .flatMap((a) => claim(canonical(a.local ?? ''), l.ifname, false)),
    );
    const pools = wanted.flatMap((e) => (isKind(e, 'drop') ? [decode(e)] : []));
    const want = new Map(wanted.filter((e) => e.kind === 'claim').map((e) => [e.key, e.value]));
    const ours = (dst: string) =>
      want.has(dst) || pools.some(({ first, last }) => inRange(dst, first, last));
    const proxies = parseProxyEntries(neighbours.stdout)
      .filter((p) => ours(p.address))
      .flatMap((p) => claim(p.address, p.interface, true));
    return oneClaimPerFip([...local, ...proxies], want);
  }

  plan(diff: IntentDiff, phase: Phase): ClaimChange | undefined {
    const claims = (
      phase === 'add'
        ? [...diff.add, ...diff.replace.map((r) => r.to)]
        : [...diff.replace.map((r) => r.from), ...diff.remove]
    ).filter((e) => e.kind === 'claim');
    if (claims.length === 0) return undefined;
    const [op, back] = phase === 'add' ? (['add', 'del'] as const) : (['del', 'add'] as const);
    return { claims: claims.map((c) => ({ line: claimLine(op, c), undo: claimLine(back, c) })) };
  }

  /** One batch; when `ip` stops at a line, the claims before it are changed back. */
  async apply(change: ClaimChange): Promise<ClaimChange> {
    const result = await ipBatch(
      this.exec,
      [],
      change.claims.map((c) => c.line),
    );
    if (result.ok) return change;
    await this.undo({ claims: change.claims.slice(0, result.done) }).catch(() => undefined);
    throw result.error;
  }

  async undo(done: ClaimChange): Promise<void> {
    const back = [...done.claims].reverse().map((c) => c.undo);
    await ipBatchForce(this.exec, [], back);
  }
}

/** One `ip -batch` line of claimArgs. */
function claimLine(op: 'add' | 'del', c: IntentElement): string {
  return ipLine(c, claimArgs(op, c));
}

/**
 * `ip` arguments that add or delete a claim: a labelled /32, or a proxy entry (IPv4 proxy ARP,
 * IPv6 proxy NDP). Adding a proxy entry that exists already succeeds; adding an address does not.
 * Each value is parsed again (./args.ts): a claim that does not parse is refused.
 */
export function claimArgs(op: 'add' | 'del', c: IntentElement): string[] {
  return forElement(c, () => {
    const { fip, uplink, proxy } = claimOf(c);
    const dev = ip.ifname(uplink);
    if (proxy) return ['neigh', op, 'proxy', ip.address(fip).text, 'dev', dev];
    const label = op === 'add' ? ['label', ip.label(claimLabel(dev), dev)] : [];
    return ['address', op, `${ip.address(fip, 4).text}/32`, 'dev', dev, ...label];
  });
}

function claimOf(c: IntentElement): Payloads['claim'] {
  if (!isKind(c, 'claim')) throw new Error(`not a claim: ${c.kind}`);
  return decode(c);
}

/**
 * One claim per FIP, as the diff expects. The kernel can hold two for a while: the agent adds a
 * FIP's new claim before it deletes the old one (a switch between nat and routed swaps the local
 * address and the proxy entry), and may be killed in between. The one reported is the one the
 * next diff should replace: the wanted local address when it is there (adding it again would
 * fail; a proxy entry left next to it is never used, the local address answers first), else a
 * local address (it would swallow a routed FIP), else an unwanted proxy entry (adding the wanted
 * one again is harmless). The others are found by a later read once the first is gone.
 */
function oneClaimPerFip(
  claims: readonly IntentElement[],
  want: ReadonlyMap<string, string>,
): IntentElement[] {
  const rank = (c: IntentElement): number => {
    const local = !claimOf(c).proxy;
    const wanted = want.get(c.key) === c.value;
    return local ? (wanted ? 0 : 1) : wanted ? 3 : 2;
  };
  const byFip = new Map<string, IntentElement>();
  for (const c of claims) {
    const seen = byFip.get(c.key);
    if (!seen || rank(c) < rank(seen)) byFip.set(c.key, c);
  }
  return [...byFip.values()];
}

function canonical(address: string): string {
  return tryParseAddress(address)?.text ?? address;
}

function inRange(address: string, first: string | undefined, last: string | undefined): boolean {
  const a = tryParseAddress(address);
  const lo = tryParseAddress(first ?? '');
  const hi = tryParseAddress(last ?? '');
  return (
    !!a && !!lo && !!hi && a.family === lo.family && a.value >= lo.value && a.value <= hi.value
  );
}
