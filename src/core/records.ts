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
import { tryParseAddress, tryParsePrefix } from './address.js';
import type { FipStatus, FloatingIp, NodeRecord, Pool } from './model.js';
import { checkAddress, checkDescription, checkName, checkTags, Problems } from './validate.js';
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

function listOf(p: Problems, path: string, value: unknown): unknown[] {
  if (Array.isArray(value) && value.length <= MAX_LIST) return value;
  p.add(path, Array.isArray(value) ? `must hold at most ${MAX_LIST} items` : 'must be a list');
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
function canonical(p: Problems, path: string, value: unknown, optional = false): void {
  if (value === undefined && optional) return;
  const parsed = typeof value === 'string' ? tryParseAddress(value) : undefined;
  if (!parsed || parsed.text !== value) p.add(path, 'must be an IP address in canonical form');
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
  if (r.association !== undefined) {
    const a = objectOf(p, r.association);
    oneOf(p, 'association.mode', a.mode, ['nat', 'routed', 'ports']);
    checkAddress(p, 'association.target', a.target, address ? { family: address.family } : {});
    if (a.node !== undefined) checkName(p, 'association.node', a.node);
    if (a.masquerade !== undefined && typeof a.masquerade !== 'boolean') {
      p.add('association.masquerade', 'must be true or false');
    }
  }
  listOf(p, 'forwards', r.forwards ?? []).forEach((f, i) => forward(p, `forwards[${i}]`, f));
  return done<FloatingIp>(p, { ...r, forwards: r.forwards ?? [], tags: r.tags ?? [] });
}

function forward(p: Problems, path: string, value: unknown): void {
  const f = objectOf(p, value);
  text(p, `${path}.id`, f.id);
  protocol(p, `${path}.protocol`, f.protocol);
  const first = port(p, `${path}.port`, f.port);
  const last = port(p, `${path}.portEnd`, f.portEnd);
  if (last < first) p.add(`${path}.portEnd`, 'must not be below port');
  const to = port(p, `${path}.targetPort`, f.targetPort);
  if (to + (last - first) > 65535) p.add(`${path}.targetPort`, 'maps beyond port 65535');
  checkAddress(p, `${path}.target`, f.target);
  if (f.node !== undefined) checkName(p, `${path}.node`, f.node);
}

export function decodePool(value: unknown): Pool {
  const p = new Problems();
  const r = objectOf(p, value);
  checkName(p, 'name', r.name);
  checkName(p, 'gateway', r.gateway);
  oneOf(p, 'delivery', r.delivery, ['routed', 'onlink']);
  if (
    r.uplink !== undefined &&
    !(typeof r.uplink === 'string' && isHandledInterfaceName(r.uplink))
  ) {
    p.add('uplink', 'must be an interface name (letters, digits, _.@+-, at most 15)');
  }
  checkDescription(p, 'description', r.description);
  checkTags(p, 'tags', r.tags);
  listOf(p, 'entries', r.entries).forEach((e, i) => poolEntry(p, `entries[${i}]`, e));
  return done<Pool>(p, { ...r, tags: r.tags ?? [] });
}

function poolEntry(p: Problems, path: string, value: unknown): void {
  const e = objectOf(p, value);
  if (e.kind === 'cidr') {
    const prefix = typeof e.cidr === 'string' ? tryParsePrefix(e.cidr) : undefined;
    if (!prefix) p.add(`${path}.cidr`, 'must be a prefix');
  } else if (e.kind === 'range') {
    canonical(p, `${path}.first`, e.first);
    canonical(p, `${path}.last`, e.last);
  } else if (e.kind === 'address') {
    canonical(p, `${path}.address`, e.address);
    if (e.shared !== undefined && typeof e.shared !== 'boolean') {
      p.add(`${path}.shared`, 'must be true or false');
    }
    if (
      e.mac !== undefined &&
      !(typeof e.mac === 'string' && /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/.test(e.mac))
    ) {
      p.add(`${path}.mac`, 'must be a MAC address');
    }
  } else p.add(`${path}.kind`, 'must be cidr, range or address');
}

export function decodeNodeRecord(value: unknown): NodeRecord {
  const p = new Problems();
  const r = objectOf(p, value);
  checkName(p, 'name', r.name);
  if (r.site !== undefined) checkName(p, 'site', r.site);
  text(p, 'endpoint', r.endpoint, true);
  text(p, 'publicKey', r.publicKey, true);
  canonical(p, 'overlayIp', r.overlayIp, true);
  if (r.tunnelDriver !== undefined) oneOf(p, 'tunnelDriver', r.tunnelDriver, ['wireguard', 'tinc']);
  if (r.egress !== undefined) oneOf(p, 'egress', r.egress, ['fip', 'masquerade']);
  listOf(p, 'addresses', r.addresses).forEach((a, i) => canonical(p, `addresses[${i}]`, a));
  listOf(p, 'reservedPorts', r.reservedPorts ?? []).forEach((x, i) =>
    reservedPort(p, `reservedPorts[${i}]`, x),
  );
  return done<NodeRecord>(p, { ...r, reservedPorts: r.reservedPorts ?? [] });
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
