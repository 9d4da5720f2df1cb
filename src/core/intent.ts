/**
 * compile(state, node) → HostIntent: what one host's kernel must hold for the desired state.
 * Pure and deterministic: the same state and node always give the same, sorted intent, so
 * the agent can diff it against what the kernel reports and apply only the difference.
 *
 * An intent is a set of keyed elements. Each element belongs to one FIP (`owner`), which is how
 * a failure is pinned on the FIP that caused it. Elements of a kind are unique by key; an
 * element whose value changes (a FIP moved to another target) is replaced in place, which the
 * drivers do add-before-delete so the old mapping never disappears before the new one exists.
 *
 * Element kinds (the real nftables/iproute2 drivers render them; see docs/kernel-contract.md):
 * - `nat`:     key = FIP, value = target — 1:1 DNAT in, SNAT of the target's own traffic out.
 * - `route`:   key = FIP, value = target node — routed delivery toward a node (tunnels come later).
 * - `forward`: key = FIP/proto/port-range, value = target:port — a port forward.
 * - `claim`:   key = FIP, value = uplink — an on-link FIP the gateway answers ARP/NDP for.
 */
import { compareAddressText } from './address.js';
import type { FloatingIp, Pool } from './model.js';

export type ElementKind = 'nat' | 'route' | 'forward' | 'claim';

export interface IntentElement {
  readonly kind: ElementKind;
  readonly key: string;
  readonly value: string;
  /** The FIP this element realises. */
  readonly owner: string;
}

export interface HostIntent {
  readonly node: string;
  /** Sorted by kind, then key. */
  readonly elements: readonly IntentElement[];
  /** FIPs this node realises, with the revision of the record compiled. */
  readonly fips: readonly { readonly address: string; readonly revision: number }[];
}

export interface CompileState {
  readonly pools: readonly Pool[];
  readonly fips: readonly { readonly fip: FloatingIp; readonly revision: number }[];
}

const KIND_ORDER: Record<ElementKind, number> = { claim: 0, nat: 1, route: 2, forward: 3 };

export function compile(state: CompileState, node: string): HostIntent {
  const gatewayOf = new Map(state.pools.map((p) => [p.name, p]));
  const elements: IntentElement[] = [];
  const fips: { address: string; revision: number }[] = [];
  for (const { fip, revision } of state.fips) {
    const pool = gatewayOf.get(fip.pool);
    if (!pool || pool.gateway !== node) continue;
    fips.push({ address: fip.address, revision });
    elements.push(...fipElements(fip, pool));
  }
  elements.sort(compareElements);
  fips.sort((a, b) => compareAddressText(a.address, b.address));
  return { node, elements, fips };
}

function fipElements(fip: FloatingIp, pool: Pool): IntentElement[] {
  const a = fip.association;
  if (!a) return [];
  const owner = fip.address;
  const out: IntentElement[] = [];
  // A shared address is the gateway's own: it already holds it, so nothing to claim.
  if (pool.delivery === 'onlink' && pool.uplink && !fip.shared) {
    out.push({ kind: 'claim', key: fip.address, value: pool.uplink, owner });
  }
  if (a.mode === 'nat') {
    out.push({
      kind: 'nat',
      key: fip.address,
      value: a.masquerade ? `${a.target} masquerade` : a.target,
      owner,
    });
  } else if (a.mode === 'routed') {
    out.push({ kind: 'route', key: fip.address, value: a.node ?? a.target, owner });
  } else {
    for (const f of fip.forwards) {
      const ports = f.port === f.portEnd ? `${f.port}` : `${f.port}-${f.portEnd}`;
      const targetEnd = f.targetPort + (f.portEnd - f.port);
      const targetPorts =
        f.targetPort === targetEnd ? `${f.targetPort}` : `${f.targetPort}-${targetEnd}`;
      out.push({
        kind: 'forward',
        key: `${fip.address}/${f.protocol}/${ports}`,
        value: `${hostPort(f.target)}:${targetPorts}`,
        owner,
      });
    }
  }
  return out;
}

function hostPort(address: string): string {
  return address.includes(':') ? `[${address}]` : address;
}

export function compareElements(a: IntentElement, b: IntentElement): number {
  return KIND_ORDER[a.kind] - KIND_ORDER[b.kind] || (a.key < b.key ? -1 : a.key > b.key ? 1 : 0);
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

export function diffOwners(d: IntentDiff): string[] {
  const owners = new Set([
    ...d.add.map((e) => e.owner),
    ...d.replace.map((r) => r.to.owner),
    ...d.remove.map((e) => e.owner),
  ]);
  return [...owners].sort(compareAddressText);
}
