/**
 * The fleet mesh (Neti's job, done with sets and maps): every node reaches every other by an
 * overlay address that does not change while hosts move between sites, and each node's
 * firewall lets in exactly the fleet, a few open ports and, always, SSH from a failsafe list.
 *
 * - Policy is layered: fleet, then site, then node. Lists (open ports, SSH ranges) add up;
 *   `rejectAll` and each `natOverrides` entry take the most specific layer's value. `rejectAll`
 *   is switched per node so a rollout can be staged host by host.
 * - Each member node gets an overlay address from `overlay`, unique and sticky (kept in its node
 *   record until the node is removed for good). On every member, compile maps each member's
 *   overlay address to the address it should be reached at from there: its private address
 *   within the same site, its public address from another site, or a `natOverrides` entry.
 * - Members are the registered nodes that hold an overlay address and whose agent is alive.
 *   A membership change that would drop more than `maxChange` members at once is held (the old
 *   members stay allowed and mapped) until an operator confirms it: a lost quorum or a store
 *   hiccup must not cut a fleet off from itself.
 * - A policy change may carry a deadline: unless confirmed by then, every node goes back to the
 *   previous policy by itself, even when nobody can reach the store any more.
 *
 * All of it is pure: the agent, the API and the CLI call these functions with what they read.
 */
import {
  addressFromValue,
  compareAddressText,
  type Family,
  type Prefix,
  prefixRange,
  rangeContains,
  rangeOverlap,
  tryParseAddress,
  tryParsePrefix,
} from './address.js';
import { type ErrorParams, IpferryError, type Problem } from './errors.js';
import type { HostFacts } from '../intent/facts.js';
import type { IntentElement } from '../intent/elements.js';
import type { MeshHold, MeshNodeReport, NodeLiveness, NodeRecord, Protocol } from './model.js';
import { element, HOST_OWNER, KINDS, type PortRange } from '../intent/elements.js';
import { fnv1a } from './tunnel.js';
import { checkName, parsePortRange, Problems } from './validate.js';

// ---------------------------------------------------------------------------------------------
// Model

/** One layer of mesh policy (fleet, a site or a node). */
export interface MeshLayer {
  /** `tcp/443`, `udp/53`, `tcp/8000-8010`: open to anyone (subject to the host's other rules). */
  readonly openPorts?: readonly string[];
  /** Prefixes always let in to TCP port 22, ahead of any drop. */
  readonly sshAllow?: readonly string[];
  /** Drop what is neither fleet, nor an open port, nor failsafe SSH. */
  readonly rejectAll?: boolean;
  /** Overlay address → address to reach it at, instead of the member's own. */
  readonly natOverrides?: Readonly<Record<string, string>>;
}

export interface MeshSite extends MeshLayer {
  /** The site's private prefixes: an overlay that overlaps one would shadow real hosts. */
  readonly lans?: readonly string[];
}

export interface MeshPolicy {
  /** IPv4 prefix the overlay addresses come from (Neti used 192.168.0.0/18). */
  readonly overlay: string;
  /** The most members one change may drop before it is held for confirmation. */
  readonly maxChange?: number;
  readonly fleet: MeshLayer;
  readonly sites: Readonly<Record<string, MeshSite>>;
  readonly nodes: Readonly<Record<string, MeshLayer>>;
}

/** What the store keeps under `mesh/policy`. */
export interface MeshPolicyRecord {
  readonly policy: MeshPolicy;
  /** Present while a change is on trial: without a confirmation, `previous` is back at `deadline`. */
  readonly trial?: {
    /** The policy before this change; null when there was none (the mesh goes away). */
    readonly previous: MeshPolicy | null;
    readonly deadline: string;
  };
  readonly updatedAt: string;
}

/**
 * A trial that ran out unconfirmed, as the store remembers it (`mesh/rollback`) from the write of
 * the rollback until the next policy is set: so that `mesh show` still says the change rolled
 * back, and a confirmation that comes too late is refused rather than taken for one of holds.
 */
export interface MeshRollback {
  /** The trial's deadline: when every node went back, by its own clock. */
  readonly at: string;
  /** The change that was not confirmed: when it was set, and the policy it set. */
  readonly changedAt: string;
  readonly policy: MeshPolicy;
}

/**
 * The rollback that stands at `now`: the one the store remembers, or, before any agent wrote it,
 * the record's own trial once its deadline has passed.
 */
export function standingRollback(
  record: MeshPolicyRecord | undefined,
  remembered: MeshRollback | undefined,
  now: Date,
): MeshRollback | undefined {
  const trial = record?.trial;
  if (record && trial && now.getTime() >= new Date(trial.deadline).getTime()) {
    return { at: trial.deadline, changedAt: record.updatedAt, policy: record.policy };
  }
  // A trial still running, or a policy set since without one, ends what was remembered.
  return trial ? undefined : remembered;
}

/** What `ipferry mesh confirm` writes: holds detected up to this revision are released. */
export interface MeshConfirmation {
  readonly revision: number;
  readonly at: string;
}

// ---------------------------------------------------------------------------------------------
// Validation

/**
 * Where an overlay may lie: address space that no host on the internet holds, so that mapping
 * overlay addresses in every member's kernel never takes over a real address (a 0.0.0.0/0
 * overlay once gave a node 147.195.239.225). RFC 1918's private blocks, RFC 6598's shared
 * address space (carrier-grade NAT, which Tailscale uses for the same purpose) and RFC 2544's
 * benchmarking block; the whole overlay inside one of them. IPv4 only: the overlay maps IPv4
 * addresses (meshnat4), and IPv6 overlays, ULA (fd00::/8) included, are not supported yet.
 */
const OVERLAY_SPACES = [
  '10.0.0.0/8',
  '172.16.0.0/12',
  '192.168.0.0/16',
  '100.64.0.0/10',
  '198.18.0.0/15',
].map((text) => ({ text, range: prefixRange(tryParsePrefix(text)!) }));

/**
 * The widest and narrowest overlay a new policy may set. Every member routes the whole overlay
 * to itself and drops what no member holds (overlayRoute), so a wider overlay cuts the fleet off
 * from that much private address space: a /16 still numbers 65,534 members, far more than a
 * fleet has. A /29 has 6 addresses, the fewest that leave room for a node that replaces one
 * still holding its sticky address (a /30 has two).
 */
export const OVERLAY_WIDEST = 16;
export const OVERLAY_NARROWEST = 29;

/**
 * Why a stored policy's overlay cannot be used, or undefined: it must be an IPv4 prefix inside
 * the private spaces. Only that is asked of a policy already in the store, which an older
 * version may have accepted at any size: a size out of bounds maps nobody else's address.
 */
export function unusableOverlay(overlay: unknown): string | undefined {
  const prefix = typeof overlay === 'string' ? tryParsePrefix(overlay) : undefined;
  if (!prefix) return `${JSON.stringify(overlay)} is not an IPv4 prefix`;
  if (prefix.family !== 4)
    return `${prefix.text} is IPv6: the overlay is IPv4 only (IPv6 overlays, ULA fd00::/8 too, are not supported)`;
  const range = prefixRange(prefix);
  const space = OVERLAY_SPACES.find(
    (s) => rangeContains(s.range, range.first) && rangeContains(s.range, range.last),
  );
  if (!space)
    return `${prefix.text} is not private address space: an overlay lies inside 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16 (RFC 1918), 100.64.0.0/10 (RFC 6598) or 198.18.0.0/15, so that no member maps an address a host on the internet holds`;
  return undefined;
}

/**
 * The overlay of a policy: usable (unusableOverlay), and, when it is being set rather than read
 * back from the store (`stored`), of a sane size.
 */
function checkOverlay(p: Problems, value: unknown, stored: boolean): Prefix | undefined {
  const loose = typeof value === 'string' ? tryParsePrefix(value, false) : undefined;
  const prefix = typeof value === 'string' ? tryParsePrefix(value) : undefined;
  if (!prefix) {
    p.add(
      'overlay',
      loose
        ? `${JSON.stringify(value)} has host bits set: did you mean ${loose.text}?`
        : `must be an IPv4 prefix in private address space, /${OVERLAY_WIDEST} to /${OVERLAY_NARROWEST} (Neti used 192.168.0.0/18)`,
    );
    return undefined;
  }
  const unusable = unusableOverlay(prefix.text);
  if (unusable) p.add('overlay', unusable);
  else if (stored) return prefix;
  else if (prefix.length < OVERLAY_WIDEST)
    p.add(
      'overlay',
      `${prefix.text} is wider than /${OVERLAY_WIDEST}: every member routes the whole overlay to itself, so it would cut the fleet off from that much private address space (a /${OVERLAY_WIDEST} numbers 65,534 members)`,
    );
  else if (prefix.length > OVERLAY_NARROWEST)
    p.add(
      'overlay',
      `${prefix.text} is narrower than /${OVERLAY_NARROWEST}: too few addresses to number the members and replace one`,
    );
  return prefix;
}

/** What an object-valued part of the policy holds; undefined (with a problem) for anything else. */
function objectAt(p: Problems, path: string, value: unknown, what: string): object | undefined {
  if (value === undefined) return undefined;
  if (typeof value === 'object' && value !== null && !Array.isArray(value)) return value;
  p.add(path, what);
  return undefined;
}

function checkPrefixList(p: Problems, path: string, value: unknown, v4only = false): string[] {
  if (value === undefined) return [];
  if (!Array.isArray(value)) {
    p.add(path, 'must be a list of prefixes');
    return [];
  }
  const out: string[] = [];
  value.forEach((item, i) => {
    const prefix = typeof item === 'string' ? tryParsePrefix(item) : undefined;
    const loose = typeof item === 'string' ? tryParsePrefix(item, false) : undefined;
    if (!prefix) {
      p.add(
        `${path}[${i}]`,
        loose
          ? `${JSON.stringify(item)} has host bits set: did you mean ${loose.text}?`
          : `${JSON.stringify(item)} is not a prefix (192.0.2.0/24, 2001:db8::/32)`,
      );
    } else if (v4only && prefix.family !== 4) {
      p.add(`${path}[${i}]`, `${prefix.text}: only IPv4 here`);
    } else out.push(prefix.text);
  });
  return [...new Set(out)];
}

/** `tcp/443`, `udp/53-54`: the canonical text, or undefined with a problem recorded. */
function checkPortSpec(p: Problems, path: string, value: unknown): string | undefined {
  const m = typeof value === 'string' ? /^(tcp|udp)\/(.+)$/.exec(value) : null;
  if (!m) {
    p.add(path, `${JSON.stringify(value)} is not PROTOCOL/PORT[-PORT] (tcp/443, udp/8000-8010)`);
    return undefined;
  }
  const range = parsePortRange(p, path, m[2]);
  if (!range) return undefined;
  const ports = range.port === range.portEnd ? `${range.port}` : `${range.port}-${range.portEnd}`;
  return `${m[1]}/${ports}`;
}

/** The keys a layer may hold; `lans` only where `withLans` (a site). */
const LAYER_KEYS = ['openPorts', 'sshAllow', 'rejectAll', 'natOverrides'];

function checkLayer(p: Problems, path: string, value: unknown, withLans = false): MeshLayer {
  const object = objectAt(p, path, value, 'must be an object');
  if (!object) return {};
  const v = object as Record<string, unknown>;
  for (const key of Object.keys(v)) {
    if (LAYER_KEYS.includes(key) || (withLans && key === 'lans')) continue;
    p.add(`${path}.${key}`, key === 'lans' ? 'belongs to a site' : 'is not known');
  }
  const layer: {
    openPorts?: string[];
    sshAllow?: string[];
    rejectAll?: boolean;
    natOverrides?: Record<string, string>;
  } = {};
  if (v.openPorts !== undefined) {
    if (!Array.isArray(v.openPorts)) p.add(`${path}.openPorts`, 'must be a list');
    else {
      const ports = v.openPorts
        .map((item, i) => checkPortSpec(p, `${path}.openPorts[${i}]`, item))
        .filter((x): x is string => x !== undefined);
      layer.openPorts = [...new Set(ports)];
    }
  }
  if (v.sshAllow !== undefined) layer.sshAllow = checkPrefixList(p, `${path}.sshAllow`, v.sshAllow);
  if (v.rejectAll !== undefined) {
    if (typeof v.rejectAll !== 'boolean') p.add(`${path}.rejectAll`, 'must be true or false');
    else layer.rejectAll = v.rejectAll;
  }
  const overrides = objectAt(
    p,
    `${path}.natOverrides`,
    v.natOverrides,
    'must map overlay addresses to addresses',
  );
  if (overrides) {
    const out: Record<string, string> = {};
    for (const [from, to] of Object.entries(overrides as Record<string, unknown>)) {
      const a = tryParseAddress(from);
      const b = typeof to === 'string' ? tryParseAddress(to) : undefined;
      if (a?.family !== 4 || b?.family !== 4) {
        p.add(
          `${path}.natOverrides.${from}`,
          `${JSON.stringify(from)} → ${JSON.stringify(to)} is not a pair of IPv4 addresses (overlay address → address)`,
        );
      } else out[a.text] = b.text;
    }
    layer.natOverrides = out;
  }
  return layer;
}

/**
 * Every problem of a mesh policy at once: unknown keys, bad values and overlaps of the overlay
 * with a site's LAN, in one error, so that a policy is fixed in one round. When overlaps are all
 * there is, the error is IPF_E_MESH_OVERLAP (naming the first; `problems` lists each), otherwise
 * IPF_E_VALIDATION with the overlaps among the problems. `p` may already hold problems the
 * caller found in the rest of its request (a trial's duration): they come out in the same error.
 * The policy in canonical form when there is none. The overlay must be private address space of
 * /16 to /29; a policy read back from the store (`stored`) is held to the address space only,
 * since an older version accepted other sizes.
 */
export function validateMeshPolicy(
  input: unknown,
  p = new Problems(),
  options: { readonly stored?: boolean } = {},
): MeshPolicy {
  const v = (objectAt(
    p,
    '',
    input ?? null,
    'must be an object with overlay, and optionally maxChange, fleet, sites, nodes',
  ) ?? {}) as Record<string, unknown>;
  const known = new Set(['overlay', 'maxChange', 'fleet', 'sites', 'nodes']);
  for (const key of Object.keys(v)) if (!known.has(key)) p.add(key, 'is not known');
  const overlay = checkOverlay(p, v.overlay, options.stored === true);
  // Overlaps with LANs are found for any IPv4 overlay, also one refused for its size or place:
  // the operator then fixes all of it in one round.
  const overlayOk = overlay !== undefined && overlay.family === 4;
  let maxChange: number | undefined;
  if (v.maxChange !== undefined) {
    if (typeof v.maxChange === 'number' && Number.isInteger(v.maxChange) && v.maxChange >= 0)
      maxChange = v.maxChange;
    else p.add('maxChange', 'must be a whole number of members, 0 or more');
  }
  const fleet = checkLayer(p, 'fleet', v.fleet);
  const sites: Record<string, MeshSite> = {};
  const overlaps: (Problem & { readonly params: ErrorParams })[] = [];
  for (const [name, raw] of Object.entries(recordOf(p, 'sites', v.sites))) {
    checkName(p, `sites.${name}`, name);
    const layer = checkLayer(p, `sites.${name}`, raw, true);
    const rawLans = (raw as { lans?: unknown } | null)?.lans;
    const lans = typeof raw === 'object' ? checkPrefixList(p, `sites.${name}.lans`, rawLans) : [];
    sites[name] = { ...layer, ...(lans.length > 0 ? { lans } : {}) };
    if (!overlayOk || !Array.isArray(rawLans)) continue;
    // By position in the list as given, so the path names the item the operator wrote.
    rawLans.forEach((item, i) => {
      const lan = typeof item === 'string' ? tryParsePrefix(item) : undefined;
      const at = lan ? rangeOverlap(prefixRange(overlay), prefixRange(lan)) : undefined;
      if (!lan || !at) return;
      overlaps.push({
        path: `sites.${name}.lans[${i}]`,
        message: `${lan.text} overlaps the overlay ${overlay.text} (first shared address ${at.text})`,
        params: { overlay: overlay.text, site: name, lan: lan.text, address: at.text },
      });
    });
  }
  const nodes: Record<string, MeshLayer> = {};
  for (const [name, raw] of Object.entries(recordOf(p, 'nodes', v.nodes))) {
    checkName(p, `nodes.${name}`, name);
    nodes[name] = checkLayer(p, `nodes.${name}`, raw);
  }
  const first = overlaps[0];
  const asProblems = overlaps.map(({ path, message }) => ({ path, message }));
  if (p.ok && first) throw new IpferryError('IPF_E_MESH_OVERLAP', first.params, asProblems);
  for (const o of asProblems) p.add(o.path, o.message);
  p.done();
  return {
    overlay: overlay!.text,
    ...(maxChange !== undefined ? { maxChange } : {}),
    fleet,
    sites,
    nodes,
  };
}

function recordOf(p: Problems, path: string, value: unknown): Record<string, unknown> {
  if (value === undefined) return {};
  if (typeof value === 'object' && value !== null && !Array.isArray(value))
    return value as Record<string, unknown>;
  p.add(path, 'must be an object keyed by name');
  return {};
}

// ---------------------------------------------------------------------------------------------
// Effective policy

/** The layers that apply to `node` (in site `site`), merged. */
export function effectiveLayer(policy: MeshPolicy, node: string, site?: string): MeshLayer {
  const layers = [policy.fleet, site ? policy.sites[site] : undefined, policy.nodes[node]].filter(
    (l): l is MeshLayer => l !== undefined,
  );
  const union = (pick: (l: MeshLayer) => readonly string[] | undefined): string[] => [
    ...new Set(layers.flatMap((l) => pick(l) ?? [])),
  ];
  let rejectAll = false;
  for (const l of layers) if (l.rejectAll !== undefined) rejectAll = l.rejectAll;
  return {
    openPorts: union((l) => l.openPorts),
    sshAllow: union((l) => l.sshAllow),
    rejectAll,
    natOverrides: Object.assign({}, ...layers.map((l) => l.natOverrides ?? {})) as Record<
      string,
      string
    >,
  };
}

/**
 * The policy in force at `now`: the record's, or its previous one when a trial ran out
 * unconfirmed (undefined: no mesh).
 */
export function policyInForce(
  record: MeshPolicyRecord | undefined,
  now: Date,
): { policy: MeshPolicy | undefined; rolledBack: boolean; deadline?: Date; skipped?: string } {
  const found = storedPolicyInForce(record, now);
  // A policy whose overlay is not private address space (written around the API, or by a
  // version that accepted 0.0.0.0/0) is no mesh: handing out or mapping addresses from it would
  // take over hosts on the internet. Skipped with the reason, for `plan` and the audit.
  const unusable = found.policy ? unusableOverlay(found.policy.overlay) : undefined;
  if (!unusable) return found;
  const { policy: _skipped, ...rest } = found;
  return { ...rest, policy: undefined, skipped: `the mesh policy is skipped: overlay ${unusable}` };
}

function storedPolicyInForce(
  record: MeshPolicyRecord | undefined,
  now: Date,
): { policy: MeshPolicy | undefined; rolledBack: boolean; deadline?: Date } {
  if (!record) return { policy: undefined, rolledBack: false };
  if (!record.trial) return { policy: record.policy, rolledBack: false };
  const deadline = new Date(record.trial.deadline);
  if (now.getTime() < deadline.getTime())
    return { policy: record.policy, rolledBack: false, deadline };
  return { policy: record.trial.previous ?? undefined, rolledBack: true };
}

// ---------------------------------------------------------------------------------------------
// Addresses and overlay allocation

const PRIVATE = ['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', '100.64.0.0/10', 'fc00::/7'].map(
  (p) => prefixRange(tryParsePrefix(p)!),
);
const NEVER = ['127.0.0.0/8', '169.254.0.0/16', '::1/128', 'fe80::/10'].map((p) =>
  prefixRange(tryParsePrefix(p)!),
);

/** A node's own addresses, split into private and public (loopback and link-local left out). */
export function classifyAddresses(addresses: readonly string[]): {
  private: string[];
  public: string[];
} {
  const out = { private: [] as string[], public: [] as string[] };
  for (const text of addresses) {
    const a = tryParseAddress(text.split('/')[0] ?? '');
    if (!a || NEVER.some((r) => rangeContains(r, a))) continue;
    (PRIVATE.some((r) => rangeContains(r, a)) ? out.private : out.public).push(a.text);
  }
  out.private.sort(compareAddressText);
  out.public.sort(compareAddressText);
  return out;
}

function firstOf(addresses: readonly string[], family: Family): string | undefined {
  return addresses.find((a) => tryParseAddress(a)?.family === family);
}

/**
 * A free overlay address for `node`: starting at a point its name hashes to, the first one not
 * in `taken` (network and broadcast addresses skipped). Starting from a hash keeps many nodes
 * registering at once from all racing for the same lowest address. Undefined when full.
 */
export function chooseOverlayAddress(
  overlay: string,
  node: string,
  taken: ReadonlySet<string>,
): string | undefined {
  const range = prefixRange(tryParsePrefix(overlay)!);
  const first = range.first.value + 1n;
  const size = range.last.value - range.first.value - 1n;
  if (size <= 0n) return undefined;
  const start = BigInt(fnv1a(node)) % size;
  for (let i = 0n; i < size; i++) {
    const candidate = addressFromValue(4, first + ((start + i) % size)).text;
    if (!taken.has(candidate)) return candidate;
  }
  return undefined;
}

export function overlaySize(overlay: string): number {
  const range = prefixRange(tryParsePrefix(overlay)!);
  return Number(range.last.value - range.first.value - 1n);
}

export function inOverlay(overlay: string, address: string): boolean {
  const a = tryParseAddress(address);
  const range = prefixRange(tryParsePrefix(overlay)!);
  return (
    a !== undefined &&
    rangeContains(range, a) &&
    a.value !== range.first.value &&
    a.value !== range.last.value
  );
}

// ---------------------------------------------------------------------------------------------
// Compile

export interface MeshState {
  readonly record?: MeshPolicyRecord;
  readonly nodes: readonly NodeRecord[];
  /** Nodes whose agent holds a live lease. */
  readonly alive: ReadonlySet<string>;
  /**
   * Ports this node must keep open whatever the policy says (`udp/51820`, `tcp/7447`): its
   * tunnel's outer packets come from peers that may not be members, and agents that join a
   * hub are no members before they joined.
   */
  readonly alwaysOpen?: readonly string[];
}

export interface MeshIntent {
  readonly elements: IntentElement[];
  readonly layer?: MeshLayer;
  readonly members: number;
  readonly rolledBack: boolean;
  /** When the policy's trial ends (the agent re-evaluates then). */
  readonly deadline?: Date;
  readonly maxChange?: number;
  /**
   * This node is registered but has no address in the policy's overlay yet: its agent asks for
   * one (a note says so too, for people).
   */
  readonly waitingForOverlay?: true;
  readonly notes: string[];
}

const meshnat = (overlay: string, address: string): IntentElement =>
  element('meshnat', { overlay, address }, HOST_OWNER);

/**
 * What `node` needs in its kernel for the mesh in force at `now`. Its elements come sorted as
 * compile() sorts them (kind, then key), so that sort finds them in order. `facts` (the host's
 * addresses and default routes) choose the source of the overlay route (overlayRoute).
 *
 * Called on every reconcile pass, by every agent of the fleet: the part that grows with the
 * fleet (each member's NAT, SNAT and addresses) is remembered per `state.nodes` array (see
 * memberPart), so a pass whose node records and live set are the very objects of the last pass
 * — a policy change, a FIP change — pays only for the policy's few elements.
 */
export function compileMesh(
  state: MeshState,
  node: string,
  now: Date,
  facts?: Pick<HostFacts, 'addresses' | 'defaultRoutes'>,
): MeshIntent {
  const { policy, rolledBack, deadline, skipped } = policyInForce(state.record, now);
  const self = state.nodes.find((n) => n.name === node);
  const empty = { elements: [], members: 0, rolledBack, notes: [] as string[] };
  if (!policy) return skipped ? { ...empty, notes: [skipped] } : empty;
  if (!self?.overlayIp || !inOverlay(policy.overlay, self.overlayIp)) {
    return {
      ...empty,
      ...(self ? { waitingForOverlay: true as const } : {}),
      notes: [`${node} has no overlay address in ${policy.overlay} yet`],
    };
  }
  const layer = effectiveLayer(policy, node, self.site);
  const part = memberPart(state, self, policy.overlay, layer.natOverrides ?? {});
  // The policy's own elements, few; none shares a kind and key with a member's.
  const tail: IntentElement[] = [];
  // Overrides for overlay addresses that belong to no member (pinned special mappings).
  for (const [from, to] of Object.entries(layer.natOverrides ?? {}))
    if (!part.overlays.has(from)) tail.push(meshnat(from, to));
  // Sets with intervals refuse overlapping elements: layers add up, so merge what they give.
  for (const prefix of outermostPrefixes(layer.sshAllow ?? []))
    tail.push(element('meshssh', { prefix }, HOST_OWNER));
  for (const open of mergePortRanges([...(layer.openPorts ?? []), ...(state.alwaysOpen ?? [])]))
    tail.push(element('meshport', open, HOST_OWNER));
  if (layer.rejectAll) {
    // Only the families this node has: an IPv6-less host needs no IPv6 drop, and dropping
    // what it does not have would hide nothing.
    tail.push(element('meshreject', { family: 'ipv4' }, HOST_OWNER));
    if (classified(self).v6) tail.push(element('meshreject', { family: 'ipv6' }, HOST_OWNER));
  }
  sortMesh(tail);
  // A pinned meshnat sorts among the members' ones; everything else of the tail after them. The
  // route sorts before every mesh kind, as compile() sorts kinds.
  const elements = [...part.elements, ...tail];
  return {
    elements: [
      overlayRoute(policy.overlay, self, facts),
      ...(tail[0]?.kind === 'meshnat' ? sortMesh(elements) : elements),
    ],
    layer,
    members: part.members,
    rolledBack,
    ...(deadline ? { deadline } : {}),
    ...(policy.maxChange !== undefined ? { maxChange: policy.maxChange } : {}),
    notes: [...part.notes],
  };
}

/**
 * The route this node holds for the overlay prefix (main table, ipferry's route protocol). A
 * connection to an overlay address is routed before the output hook DNATs it to the member:
 * without a route that covers the overlay, connect() fails with ENETUNREACH on a host that has no
 * default route (a private subnet reaching only its LAN). Any unicast route lets the lookup
 * succeed, and the DNAT then routes the packet again by its real destination; blackhole,
 * unreachable and prohibit routes fail connect() themselves. Via `lo`: it needs no uplink, and a
 * packet to an overlay address no member holds (no DNAT) is dropped here rather than sent to a
 * router or ARPed for on a LAN. The route picks the connection's source, so it carries the one the
 * host's own default route gives (unchanged where there is one); without it, the node's public
 * IPv4 address, else its private one (meshsnat then gives same-site peers the private one). An
 * address the host does not hold cannot be a source: then none, and the kernel picks.
 */
function overlayRoute(
  overlay: string,
  self: NodeRecord,
  facts: Pick<HostFacts, 'addresses' | 'defaultRoutes'> | undefined,
): IntentElement {
  const own = classified(self);
  const held = (a: string | undefined): a is string =>
    a !== undefined && (!facts?.addresses.length || facts.addresses.includes(a));
  const viaDefault = facts?.defaultRoutes?.find((r) => r.family === 4)?.src;
  const src = [viaDefault, own.public4, own.private4].find(held);
  return element(
    'route',
    { prefix: overlay, dev: 'lo', ...(src !== undefined ? { src } : {}) },
    HOST_OWNER,
  );
}

/** The members' share of a node's mesh: what grows with the fleet. */
interface MemberPart {
  /** meshnat, meshsnat and meshmember elements, deduplicated and sorted. */
  readonly elements: readonly IntentElement[];
  readonly members: number;
  /** The members' overlay addresses. */
  readonly overlays: ReadonlySet<string>;
  readonly notes: readonly string[];
}

/**
 * The last member part computed from a `nodes` array, with what else it depended on. Keyed by
 * the array itself: an agent hands the same array to every pass until a node record changes
 * (src/agent/desired.ts), and a new array drops the old entry with it.
 */
const memberParts = new WeakMap<
  readonly NodeRecord[],
  {
    readonly alive: ReadonlySet<string>;
    readonly self: NodeRecord;
    readonly overlay: string;
    readonly overrides: string;
    readonly part: MemberPart;
  }
>();

function memberPart(
  state: MeshState,
  self: NodeRecord,
  overlay: string,
  natOverrides: Readonly<Record<string, string>>,
): MemberPart {
  const overrides = JSON.stringify(natOverrides);
  const hit = memberParts.get(state.nodes);
  if (
    hit &&
    hit.alive === state.alive &&
    hit.self === self &&
    hit.overlay === overlay &&
    hit.overrides === overrides
  )
    return hit.part;
  const part = computeMemberPart(state, self, overlay, natOverrides);
  memberParts.set(state.nodes, { alive: state.alive, self, overlay, overrides, part });
  return part;
}

function computeMemberPart(
  state: MeshState,
  self: NodeRecord,
  overlay: string,
  natOverrides: Readonly<Record<string, string>>,
): MemberPart {
  const node = self.name;
  const members = state.nodes.filter(
    (n) =>
      n.overlayIp !== undefined &&
      inOverlay(overlay, n.overlayIp) &&
      (n.name === node || state.alive.has(n.name)),
  );
  const elements: IntentElement[] = [];
  const notes: string[] = [];
  // The source of a connection is chosen by the route to the overlay address (the default
  // route: the public address) before the DNAT: toward a same-site member's private address,
  // leave from this node's own private address, as a same-site peer expects.
  const ownPrivate = classified(self).private4;
  for (const m of members) {
    const own = classified(m);
    const sameSite = m.name === node || (m.site !== undefined && m.site === self.site);
    const reach = sameSite ? (own.private4 ?? own.public4) : (own.public4 ?? own.private4);
    const target = natOverrides[m.overlayIp!] ?? reach;
    if (target) elements.push(meshnat(m.overlayIp!, target));
    else notes.push(`member ${m.name} has no IPv4 address to reach its overlay address at`);
    if (
      sameSite &&
      m.name !== node &&
      target === reach &&
      ownPrivate &&
      own.private.includes(target ?? '')
    )
      elements.push(element('meshsnat', { target: target!, source: ownPrivate }, HOST_OWNER));
    if (m.name === node) continue;
    for (const address of own.all) elements.push(element('meshmember', { address }, HOST_OWNER));
  }
  return {
    elements: sortMesh(dedupe(elements)),
    members: members.length,
    overlays: new Set(members.map((m) => m.overlayIp!)),
    notes,
  };
}

interface Classified {
  readonly private: readonly string[];
  readonly public: readonly string[];
  /** Private, then public. */
  readonly all: readonly string[];
  readonly private4?: string;
  readonly public4?: string;
  /** Whether the node has an IPv6 address (other than loopback and link-local). */
  readonly v6: boolean;
}

/** A node record's addresses, classified once per record object (records are never mutated). */
const classifiedRecords = new WeakMap<NodeRecord, Classified>();

function classified(record: NodeRecord): Classified {
  let c = classifiedRecords.get(record);
  if (!c) {
    const split = classifyAddresses(record.addresses);
    const private4 = firstOf(split.private, 4);
    const public4 = firstOf(split.public, 4);
    c = {
      private: split.private,
      public: split.public,
      all: [...split.private, ...split.public],
      ...(private4 ? { private4 } : {}),
      ...(public4 ? { public4 } : {}),
      v6: [...split.private, ...split.public].some((a) => a.includes(':')),
    };
    classifiedRecords.set(record, c);
  }
  return c;
}

/** Sorted as compile() sorts: by kind (KINDS order), then key. */
function sortMesh(elements: IntentElement[]): IntentElement[] {
  return elements.sort(
    (a, b) =>
      KINDS[a.kind].order - KINDS[b.kind].order || (a.key < b.key ? -1 : a.key > b.key ? 1 : 0),
  );
}

/** The prefixes not inside another of the list (an interval set takes no overlaps). */
export function outermostPrefixes(prefixes: readonly string[]): string[] {
  const parsed = [...new Set(prefixes)].map((p) => ({
    text: p,
    range: prefixRange(tryParsePrefix(p)!),
  }));
  return parsed
    .filter(
      (p) =>
        !parsed.some(
          (q) =>
            q !== p &&
            q.range.first.family === p.range.first.family &&
            q.range.first.value <= p.range.first.value &&
            q.range.last.value >= p.range.last.value &&
            (q.range.first.value !== p.range.first.value ||
              q.range.last.value !== p.range.last.value ||
              q.text < p.text),
        ),
    )
    .map((p) => p.text);
}

/**
 * `tcp/443`-style specs as disjoint port ranges per protocol: overlapping and adjacent ranges of
 * one protocol merged.
 */
export function mergePortRanges(
  specs: readonly string[],
): { readonly protocol: Protocol; readonly ports: PortRange }[] {
  const out: { protocol: Protocol; ports: PortRange }[] = [];
  for (const protocol of ['tcp', 'udp'] as Protocol[]) {
    const ranges = specs
      .filter((s) => s.startsWith(`${protocol}/`))
      .map((s) => {
        const [from = '0', to = from] = (s.split('/')[1] ?? '').split('-');
        return [Number(from), Number(to)] as [number, number];
      })
      .sort((a, b) => a[0] - b[0]);
    const merged: [number, number][] = [];
    for (const r of ranges) {
      const last = merged[merged.length - 1];
      if (last && r[0] <= last[1] + 1) last[1] = Math.max(last[1], r[1]);
      else merged.push([r[0], r[1]]);
    }
    for (const [first, last] of merged) out.push({ protocol, ports: { first, last } });
  }
  return out;
}

/** mergePortRanges as the keys of the `meshport` elements they become. */
export function mergePortSpecs(specs: readonly string[]): string[] {
  return mergePortRanges(specs).map((open) => KINDS.meshport.encode(open).key);
}

function dedupe(elements: IntentElement[]): IntentElement[] {
  const seen = new Map<string, IntentElement>();
  for (const e of elements) seen.set(`${e.kind}\0${e.key}`, e);
  return [...seen.values()];
}

/**
 * How long members that leave are kept before they are dropped, so that departures close in
 * time are counted together against maxChange: agents that die together lose their leases
 * within one liveness beat (5 s) of each other, not in the same instant.
 */
export const MESH_SETTLE_MS = 6000;

export interface MeshRemovals {
  /** What the kernel should hold: `wanted` itself when nothing is kept back. */
  readonly elements: readonly IntentElement[];
  /** Overlay addresses held because too many would go at once (reported, released by confirm). */
  readonly keeping: string[];
  /** When each leaving overlay address was first seen leaving: pass it back next time. */
  readonly leavingSince: ReadonlyMap<string, number>;
  /** Departures are still settling: look again in this many milliseconds. */
  readonly wakeInMs?: number;
}

/**
 * Decides what to do with members that leave (compared with what the kernel holds, `observed`,
 * so an agent restart decides the same): departures that arrive within MESH_SETTLE_MS of each
 * other are one change; when that change drops more than `maxChange` members and no
 * confirmation covers it, they are all kept (a hold); otherwise they are dropped once the change
 * has settled. Additions always pass at once. Without maxChange, departures apply at once.
 */
export function holdMeshRemovals(
  wanted: readonly IntentElement[],
  observed: readonly IntentElement[],
  maxChange: number | undefined,
  released: boolean,
  leavingSince: ReadonlyMap<string, number> = new Map(),
  now = 0,
): MeshRemovals {
  const apply = { elements: wanted, keeping: [], leavingSince: new Map<string, number>() };
  // Every pass of every agent comes here: without maxChange, nothing to count.
  if (maxChange === undefined) return apply;
  const wantedNats = new Set(wanted.flatMap((e) => (e.kind === 'meshnat' ? [e.key] : [])));
  const leaving = observed
    .filter((e) => e.kind === 'meshnat' && !wantedNats.has(e.key))
    .map((e) => e.key)
    .sort(compareAddressText);
  if (leaving.length === 0) return apply;
  const since = new Map(leaving.map((key) => [key, leavingSince.get(key) ?? now]));
  const wantedKeys = new Set(wanted.map((e) => `${e.kind}\0${e.key}`));
  const kept = [
    ...wanted,
    ...observed.filter(
      (e) =>
        (e.kind === 'meshnat' || e.kind === 'meshmember') && !wantedKeys.has(`${e.kind}\0${e.key}`),
    ),
  ];
  if (leaving.length > maxChange && !released) {
    return { elements: kept, keeping: leaving, leavingSince: since };
  }
  const newest = Math.max(...since.values());
  if (!released && now - newest < MESH_SETTLE_MS) {
    return {
      elements: kept,
      keeping: [],
      leavingSince: since,
      wakeInMs: newest + MESH_SETTLE_MS - now,
    };
  }
  return apply;
}

// ---------------------------------------------------------------------------------------------
// Audit

export interface InventoryHost {
  readonly name: string;
  readonly addresses: readonly string[];
  readonly site?: string;
  readonly line: number;
}

/** How an inventory is written: ipferry's own lines, or the host table Neti's neti_util.py prints. */
export type InventoryFormat = 'ipferry' | 'neti';

/** The columns of neti_util.py's table (PrettyTable, plain columns, left-aligned), in order. */
const NETI_COLUMNS = ['Name', 'Public IP', 'Private IP', 'Overlay IP', 'Neti Version', 'VPC?'];

/** neti_util.py's closing line, after the table: `N total instances, M instances in Neti (P%)`. */
const NETI_TOTALS = /^\d+ total instances, \d+ instances in Neti\b/;

function isNetiHeader(line: string): boolean {
  let from = 0;
  for (const column of NETI_COLUMNS) {
    const at = line.indexOf(column, from);
    if (at < 0) return false;
    from = at + column.length;
  }
  return line.trimStart().startsWith('Name');
}

/**
 * Which format an inventory is in: Neti's when its first line that holds anything is
 * neti_util.py's header. No ipferry inventory starts so: `Name` is no host name (upper case).
 */
export function inventoryFormat(text: string): InventoryFormat {
  const first = text.split('\n').find((line) => line.trim() !== '');
  return first !== undefined && isNetiHeader(first) ? 'neti' : 'ipferry';
}

/**
 * Parses an inventory, in the format given or the one it is in (inventoryFormat). The first line
 * that does not parse fails the whole file (IPF_E_INVENTORY), naming the line: half an audit
 * would read as a clean one.
 */
export function parseInventory(
  text: string,
  source = 'inventory',
  format: InventoryFormat = inventoryFormat(text),
): InventoryHost[] {
  return format === 'neti' ? parseNetiInventory(text, source) : parseIpferryInventory(text, source);
}

function inventoryFailure(source: string, line: number, reason: string): IpferryError {
  return new IpferryError('IPF_E_INVENTORY', { source, line: String(line), reason });
}

/** The host name rules and a name listed once. */
function checkInventoryName(
  name: string,
  names: Set<string>,
  fail: (reason: string) => never,
): void {
  const p = new Problems();
  checkName(p, 'name', name);
  if (!p.ok) fail(`"${name}" is not a host name (lower-case letters, digits, ".", "_", "-")`);
  if (names.has(name)) fail(`${name} is listed twice`);
  names.add(name);
}

/**
 * ipferry's inventory: one host per line, `NAME ADDRESS[,ADDRESS…] [site=SITE]`; blank lines and
 * `#` comments are skipped.
 */
function parseIpferryInventory(text: string, source: string): InventoryHost[] {
  const hosts: InventoryHost[] = [];
  const names = new Set<string>();
  text.split('\n').forEach((raw, i) => {
    const line = i + 1;
    const content = raw.replace(/#.*$/, '').trim();
    if (content === '') return;
    const fail = (reason: string): never => {
      throw inventoryFailure(source, line, reason);
    };
    const [name = '', list = '', ...rest] = content.split(/\s+/);
    checkInventoryName(name, names, fail);
    if (list === '') fail(`${name} has no address`);
    const addresses = list.split(',').map((a) => {
      const parsed = tryParseAddress(a);
      return parsed ? parsed.text : fail(`"${a}" is not an IP address`);
    });
    let site: string | undefined;
    for (const field of rest) {
      const m = /^site=(.+)$/.exec(field);
      if (!m) fail(`"${field}" is not site=NAME`);
      site = m?.[1];
    }
    hosts.push({ name, addresses, ...(site ? { site } : {}), line });
  });
  return hosts;
}

/**
 * The host table Neti's `scripts/neti_util.py` prints: the instances of the account, in Neti or
 * not, one per row under a header, cells at the header's column offsets (a Name tag may hold
 * spaces). A host is its Name tag in lower case (an untagged instance, `None`, is named by its
 * first address), its public and private addresses (`None` left out; the overlay address is
 * Neti's, not the host's) and its side as the site: `VPC?` True is `vpc`, False `ec2`, the sites
 * `ipferry import neti` makes. The closing totals line is skipped.
 */
function parseNetiInventory(text: string, source: string): InventoryHost[] {
  const lines = text.split('\n');
  const headerAt = lines.findIndex((l) => l.trim() !== '');
  const header = lines[headerAt] ?? '';
  if (headerAt < 0 || !isNetiHeader(header))
    throw inventoryFailure(
      source,
      headerAt + 1,
      `is not neti_util.py's table: its first line is the header ${NETI_COLUMNS.join('  ')}`,
    );
  let from = 0;
  const offsets = NETI_COLUMNS.map((column) => (from = header.indexOf(column, from)));
  const hosts: InventoryHost[] = [];
  const names = new Set<string>();
  lines.forEach((raw, i) => {
    const line = i + 1;
    if (i <= headerAt || raw.trim() === '' || NETI_TOTALS.test(raw.trim())) return;
    const fail = (reason: string): never => {
      throw inventoryFailure(source, line, reason);
    };
    const cells = offsets.map((start, c) => {
      const cell = raw.slice(start, offsets[c + 1] ?? raw.length).trim();
      return cell === 'None' ? '' : cell;
    });
    const [tag = '', publicIp = '', privateIp = '', , , vpc = ''] = cells;
    const addresses = [publicIp, privateIp]
      .filter((a) => a !== '')
      .map((a) => tryParseAddress(a)?.text ?? fail(`"${a}" is not an IP address`));
    if (addresses.length === 0) fail(`${tag || 'the instance'} has no address`);
    const name = tag === '' ? addresses[0]! : tag.toLowerCase();
    checkInventoryName(name, names, fail);
    if (vpc !== 'True' && vpc !== 'False') fail(`"${vpc}" in column VPC? is not True or False`);
    hosts.push({ name, addresses, site: vpc === 'True' ? 'vpc' : 'ec2', line });
  });
  return hosts;
}

export interface MeshAudit {
  readonly revision: number;
  readonly overlay?: { readonly prefix: string; readonly used: number; readonly size: number };
  /** Inventory hosts no registered node matches (by name or by an address). */
  readonly unregistered: readonly InventoryHost[];
  /** Registered nodes the inventory does not list. */
  readonly unlisted: readonly string[];
  /**
   * Members whose agent applied an older revision than the store's, or is not alive: the
   * revision it last reported applying (for a dead node, its last report before it died; absent
   * when it never reported one, or died before reports outlived their agent).
   */
  readonly lagging: readonly { node: string; appliedRevision?: number; alive: boolean }[];
  readonly rejectAll: { readonly on: readonly string[]; readonly off: readonly string[] };
  readonly holds: readonly { node: string; hold: MeshHold }[];
  readonly rolledBack: readonly string[];
}

export interface NodeWithReport {
  readonly record: NodeRecord;
  /** Present while the node is alive. */
  readonly liveness?: NodeLiveness;
  /** The mesh report its agent last wrote, alive or not (the health record outlives the agent). */
  readonly lastReport?: MeshNodeReport;
}

export function auditMesh(input: {
  readonly revision: number;
  readonly record?: MeshPolicyRecord;
  readonly nodes: readonly NodeWithReport[];
  readonly inventory?: readonly InventoryHost[];
  readonly now: Date;
}): MeshAudit {
  const { policy } = policyInForce(input.record, input.now);
  const byAddress = new Map<string, string>();
  for (const { record } of input.nodes)
    for (const a of record.addresses) byAddress.set(a, record.name);
  const names = new Set(input.nodes.map((n) => n.record.name));
  const matched = new Set<string>();
  const unregistered = (input.inventory ?? []).filter((h) => {
    const node = names.has(h.name)
      ? h.name
      : h.addresses.map((a) => byAddress.get(a)).find((n) => n !== undefined);
    if (node) matched.add(node);
    return node === undefined;
  });
  const members = input.nodes.filter((n) => n.record.overlayIp !== undefined);
  const on: string[] = [];
  const off: string[] = [];
  for (const { record } of members) {
    const layer = policy ? effectiveLayer(policy, record.name, record.site) : {};
    (layer.rejectAll ? on : off).push(record.name);
  }
  return {
    revision: input.revision,
    ...(policy
      ? {
          overlay: {
            prefix: policy.overlay,
            used: members.filter((n) => inOverlay(policy.overlay, n.record.overlayIp ?? '')).length,
            size: overlaySize(policy.overlay),
          },
        }
      : {}),
    unregistered,
    unlisted: input.inventory
      ? input.nodes.map((n) => n.record.name).filter((n) => !matched.has(n))
      : [],
    lagging: members
      .filter((n) => !n.liveness || (n.liveness.mesh?.appliedRevision ?? 0) < input.revision)
      .map((n) => {
        const applied = (n.liveness?.mesh ?? n.lastReport)?.appliedRevision;
        return {
          node: n.record.name,
          ...(applied !== undefined ? { appliedRevision: applied } : {}),
          alive: n.liveness !== undefined,
        };
      }),
    rejectAll: { on, off },
    holds: members.flatMap((n) =>
      n.liveness?.mesh?.hold ? [{ node: n.record.name, hold: n.liveness.mesh.hold }] : [],
    ),
    rolledBack: members.filter((n) => n.liveness?.mesh?.rolledBack).map((n) => n.record.name),
  };
}
