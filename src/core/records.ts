/**
 * Records as an agent reads them from the store, checked before compile sees them. The store is
 * outside the agent: a record may come from another version, from a node that wrote its own key,
 * or from anyone who can write to etcd. Each decoder takes the parsed JSON and returns the
 * record with the shape the model says, or throws IPF_E_VALIDATION with every problem found; the
 * agent then skips that record with the reason (src/agent/desired.ts) and converges the rest.
 *
 * The checks are the API's own (validate.ts: names, addresses, tags, descriptions) where the API
 * checks the same field, so the store never holds to the agent what the API would refuse; a
 * record may also carry fields of a newer version, which are left alone.
 */
import {
  type Address,
  type AddressRange,
  prefixRange,
  tryParseAddress,
  tryParsePrefix,
} from './address.js';
import { IpferryError } from './errors.js';
import type { FipStatus, FloatingIp, NodeRecord, Pool } from './model.js';
import { MAX_POOL_ENTRIES } from './pool.js';
import { isTincKey, isWireGuardKey, parseEndpoint } from './tunnel.js';
import {
  checkAddress,
  checkDescription,
  checkName,
  checkTags,
  checkTargetRanges,
  MAX_TARGET_RANGES,
  Problems,
} from './validate.js';
import { isHandledInterfaceName } from '../intent/facts.js';

/** No store record needs more: one beyond it is refused before it is walked. */
const MAX_LIST = 65_536;

function objectOf(p: Problems, value: unknown): Record<string, unknown> {
  if (typeof value === 'object' && value !== null && !Array.isArray(value)) {
    return value as Record<string, unknown>;
  }
  p.add('', 'must be an object');
  return {};
}

function listOf(p: Problems, path: string, value: unknown, longest = MAX_LIST): unknown[] {
  if (Array.isArray(value) && value.length <= longest) return value;
  p.add(path, Array.isArray(value) ? `must hold at most ${longest} items` : 'must be a list');
  return [];
}

function text(p: Problems, path: string, value: unknown, optional = false, longest = 4096): void {
  if (value === undefined && optional) return;
  if (typeof value !== 'string' || value.length > longest) {
    p.add(path, `must be text of at most ${longest} characters`);
  }
}

function port(p: Problems, path: string, value: unknown, lowest = 1): number {
  if (Number.isInteger(value) && (value as number) >= lowest && (value as number) <= 65535) {
    return value as number;
  }
  p.add(path, `must be a port from ${lowest} to 65535`);
  return 0;
}

function protocol(p: Problems, path: string, value: unknown): void {
  if (value !== 'tcp' && value !== 'udp') p.add(path, 'must be tcp or udp');
}

function oneOf(p: Problems, path: string, value: unknown, allowed: readonly string[]): void {
  if (!allowed.includes(value as string)) p.add(path, `must be one of ${allowed.join(', ')}`);
}

/** An address written as the model writes it: canonical (any address, not only FIP-worthy). */
function canonical(
  p: Problems,
  path: string,
  value: unknown,
  optional = false,
): Address | undefined {
  if (value === undefined && optional) return undefined;
  const parsed = typeof value === 'string' ? tryParseAddress(value) : undefined;
  if (!parsed || parsed.text !== value) {
    p.add(path, 'must be an IP address in canonical form');
    return undefined;
  }
  return parsed;
}

/**
 * An address a FIP forwards to, as the API writes it: usable (checkAddress), canonical (the nft
 * renderer takes no other text) and of the FIP's family (an IPv4 map holds no IPv6 target).
 */
function target(p: Problems, path: string, value: unknown, family: 4 | 6 | undefined): void {
  const address = checkAddress(p, path, value, family ? { family } : {});
  if (address && address.text !== value) p.add(path, 'must be in canonical form');
}

function done<T>(p: Problems, value: unknown): T {
  p.done();
  return value as T;
}

export function decodeFloatingIp(value: unknown): FloatingIp {
  const p = new Problems();
  const r = objectOf(p, value);
  const address = checkAddress(p, 'address', r.address);
  if (address && address.text !== r.address) p.add('address', 'must be in canonical form');
  if (address && r.family !== address.family) p.add('family', 'must be the address’s family');
  checkName(p, 'pool', r.pool);
  if (typeof r.shared !== 'boolean') p.add('shared', 'must be true or false');
  checkDescription(p, 'description', r.description);
  checkTags(p, 'tags', r.tags);
  // Compared with a digest computed as hex, and a key (keys.clientTokenByDigest) made of it.
  if (
    r.clientTokenSha256 !== undefined &&
    !(typeof r.clientTokenSha256 === 'string' && /^[0-9a-f]{64}$/.test(r.clientTokenSha256))
  ) {
    p.add('clientTokenSha256', 'must be a SHA-256 digest: 64 lowercase hex digits');
  }
  const family = address?.family;
  if (r.association !== undefined) {
    const a = objectOf(p, r.association);
    oneOf(p, 'association.mode', a.mode, ['nat', 'routed', 'ports']);
    target(p, 'association.target', a.target, family);
    if (a.node !== undefined) checkName(p, 'association.node', a.node);
    if (a.masquerade !== undefined && typeof a.masquerade !== 'boolean') {
      p.add('association.masquerade', 'must be true or false');
    }
  }
  const ports = listOf(p, 'forwards', r.forwards ?? []).map((f, i) =>
    forward(p, `forwards[${i}]`, f, family),
  );
  disjointForwards(p, ports);
  return done<FloatingIp>(p, { ...r, forwards: r.forwards ?? [], tags: r.tags ?? [] });
}

interface ForwardPorts {
  readonly path: string;
  readonly protocol: unknown;
  readonly first: number;
  readonly last: number;
}

function forward(
  p: Problems,
  path: string,
  value: unknown,
  family: 4 | 6 | undefined,
): ForwardPorts {
  const f = objectOf(p, value);
  text(p, `${path}.id`, f.id);
  protocol(p, `${path}.protocol`, f.protocol);
  const first = port(p, `${path}.port`, f.port);
  const last = port(p, `${path}.portEnd`, f.portEnd);
  if (last < first) p.add(`${path}.portEnd`, 'must not be below port');
  const to = port(p, `${path}.targetPort`, f.targetPort);
  if (to + (last - first) > 65535) p.add(`${path}.targetPort`, 'maps beyond port 65535');
  target(p, `${path}.target`, f.target, family);
  if (f.node !== undefined) checkName(p, `${path}.node`, f.node);
  return { path, protocol: f.protocol, first, last };
}

/**
 * Each external port of a FIP goes to one target (the API's IPF_E_FORWARD_CONFLICT): two
 * forwards over the same ports would be overlapping intervals of one nftables map, which the
 * kernel refuses whole. Sorted once, so a record with many forwards costs n log n.
 */
function disjointForwards(p: Problems, forwards: readonly ForwardPorts[]): void {
  const sorted = forwards
    .filter((f) => f.first > 0 && f.last >= f.first && typeof f.protocol === 'string')
    .sort((a, b) =>
      a.protocol === b.protocol
        ? a.first - b.first
        : String(a.protocol) < String(b.protocol)
          ? -1
          : 1,
    );
  for (let i = 1; i < sorted.length; i++) {
    const [a, b] = [sorted[i - 1]!, sorted[i]!];
    if (a.protocol === b.protocol && b.first <= a.last) {
      p.add(
        b.path,
        `overlaps ${a.path} (${String(a.protocol)} ${b.first}-${Math.min(a.last, b.last)})`,
      );
    }
  }
}

export function decodePool(value: unknown): Pool {
  const p = new Problems();
  const r = objectOf(p, value);
  checkName(p, 'name', r.name);
  checkName(p, 'gateway', r.gateway);
  oneOf(p, 'delivery', r.delivery, ['routed', 'onlink']);
  if (
    r.uplink !== undefined &&
    !(typeof r.uplink === 'string' && isHandledInterfaceName(r.uplink) && !/^\.\.?$/.test(r.uplink))
  ) {
    p.add('uplink', 'must be an interface name (letters, digits, _.@+-, at most 15)');
  }
  checkDescription(p, 'description', r.description);
  checkTags(p, 'tags', r.tags);
  // The API's own bound: a pool written around it would cost every agent its decode and compile.
  const ranges = listOf(p, 'entries', r.entries, MAX_POOL_ENTRIES).flatMap((e, i) =>
    poolEntry(p, `entries[${i}]`, e),
  );
  disjointEntries(p, ranges);
  // As the API writes them (validate.ts): compile checks every target against them.
  if (r.targetRanges !== undefined) {
    const given = listOf(p, 'targetRanges', r.targetRanges, MAX_TARGET_RANGES);
    const canonical = p.ok ? checkTargetRanges(p, 'targetRanges', given) : undefined;
    if (
      canonical &&
      (canonical.length !== given.length || canonical.some((c, i) => c !== given[i]))
    )
      p.add('targetRanges', 'must be CIDRs in canonical form, each once');
  }
  return done<Pool>(p, { ...r, tags: r.tags ?? [] });
}

/** An entry's addresses, for the overlap check: undefined when the entry is invalid. */
function poolEntry(
  p: Problems,
  path: string,
  value: unknown,
): { path: string; range: AddressRange }[] {
  const e = objectOf(p, value);
  const one = (range: AddressRange): { path: string; range: AddressRange }[] => [{ path, range }];
  if (e.kind === 'cidr') {
    const prefix = typeof e.cidr === 'string' ? tryParsePrefix(e.cidr) : undefined;
    if (!prefix || prefix.text !== e.cidr)
      p.add(`${path}.cidr`, 'must be a prefix in canonical form');
    else return one(prefixRange(prefix));
  } else if (e.kind === 'range') {
    const first = canonical(p, `${path}.first`, e.first);
    const last = canonical(p, `${path}.last`, e.last);
    if (first && last && first.family !== last.family) {
      p.add(`${path}.last`, 'must be of the same family as first');
    } else if (first && last && last.value < first.value) {
      p.add(`${path}.last`, 'must not be below first');
    } else if (first && last) return one({ family: first.family, first, last });
  } else if (e.kind === 'address') {
    const address = canonical(p, `${path}.address`, e.address);
    if (e.shared !== undefined && typeof e.shared !== 'boolean') {
      p.add(`${path}.shared`, 'must be true or false');
    }
    if (
      e.mac !== undefined &&
      !(typeof e.mac === 'string' && /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/.test(e.mac))
    ) {
      p.add(`${path}.mac`, 'must be a MAC address');
    }
    if (address) return one({ family: address.family, first: address, last: address });
  } else p.add(`${path}.kind`, 'must be cidr, range or address');
  return [];
}

/**
 * A pool's entries hold each address once (as the API checks): overlapping entries would be
 * overlapping intervals of the gateway's drop set, which nftables refuses whole. Sorted once:
 * n log n for the largest pool a record may hold.
 */
function disjointEntries(
  p: Problems,
  entries: readonly { path: string; range: AddressRange }[],
): void {
  const sorted = [...entries].sort((a, b) =>
    a.range.family !== b.range.family
      ? a.range.family - b.range.family
      : a.range.first.value < b.range.first.value
        ? -1
        : a.range.first.value > b.range.first.value
          ? 1
          : 0,
  );
  let widest = sorted[0];
  for (const e of sorted.slice(1)) {
    if (!widest) break;
    if (e.range.family === widest.range.family && e.range.first.value <= widest.range.last.value) {
      p.add(e.path, `overlaps ${widest.path} at ${e.range.first.text}`);
    }
    if (e.range.family !== widest.range.family || e.range.last.value > widest.range.last.value) {
      widest = e;
    }
  }
}

export function decodeNodeRecord(value: unknown): NodeRecord {
  const p = new Problems();
  const r = objectOf(p, value);
  checkName(p, 'name', r.name);
  if (r.site !== undefined) checkName(p, 'site', r.site);
  if (r.endpoint !== undefined) endpoint(p, 'endpoint', r.endpoint);
  if (r.tunnelDriver !== undefined) oneOf(p, 'tunnelDriver', r.tunnelDriver, ['wireguard', 'tinc']);
  if (r.publicKey !== undefined) publicKey(p, 'publicKey', r.publicKey, r.tunnelDriver);
  canonical(p, 'overlayIp', r.overlayIp, true);
  if (r.egress !== undefined) oneOf(p, 'egress', r.egress, ['fip', 'masquerade']);
  if (r.unmanaged !== undefined && r.unmanaged !== true) p.add('unmanaged', 'must be true');
  listOf(p, 'addresses', r.addresses).forEach((a, i) => canonical(p, `addresses[${i}]`, a));
  listOf(p, 'reservedPorts', r.reservedPorts ?? []).forEach((x, i) =>
    reservedPort(p, `reservedPorts[${i}]`, x),
  );
  return done<NodeRecord>(p, { ...r, reservedPorts: r.reservedPorts ?? [] });
}

/**
 * Where other nodes reach this one (host:port, [IPv6]:port): compile works out the tunnel's
 * underlay from it, so one that does not parse would fail every peer's pass, and tinc writes
 * it into a host file.
 */
function endpoint(p: Problems, path: string, value: unknown): void {
  if (typeof value !== 'string' || value.length > 300) {
    p.add(path, 'must be host:port or [IPv6]:port');
    return;
  }
  try {
    parseEndpoint(value);
  } catch (e) {
    if (!(e instanceof IpferryError)) throw e;
    p.add(path, e.message);
  }
}

/**
 * The node's tunnel key in its driver's form: a WireGuard key (44 characters of base64), or
 * tinc's RSA key in PEM. Peers write it into `wg` and into tinc's host files: anything else
 * would fail their tunnel for every peer, or add lines to a host file.
 */
function publicKey(p: Problems, path: string, value: unknown, driver: unknown): void {
  const ok =
    typeof value === 'string' && (driver === 'tinc' ? isTincKey(value) : isWireGuardKey(value));
  if (!ok) {
    p.add(
      path,
      driver === 'tinc'
        ? 'must be an RSA public key in PEM (tinc)'
        : 'must be a WireGuard public key (44 characters of base64)',
    );
  }
}

function reservedPort(p: Problems, path: string, value: unknown): void {
  const x = objectOf(p, value);
  protocol(p, `${path}.protocol`, x.protocol);
  // An agent listening on port 0 (the system picks one) registers it as it was given.
  port(p, `${path}.port`, x.port, 0);
}

export function decodeFipStatus(value: unknown): FipStatus {
  const p = new Problems();
  const r = objectOf(p, value);
  canonical(p, 'address', r.address);
  oneOf(p, 'state', r.state, ['DOWN', 'ACTIVE', 'UNREACHABLE', 'ERROR']);
  checkName(p, 'node', r.node);
  if (!Number.isInteger(r.revision)) p.add('revision', 'must be a whole number');
  // An agent's own report of a refused apply carries the tool's whole stderr.
  text(p, 'message', r.message, true, 1 << 20);
  return done<FipStatus>(p, r);
}
