/**
 * IP Floater's model over ipferry's floating IPs, as pure functions: its "endpoints" (a
 * redirection `public_ip:public_port -> private_ip:private_port`, port 0 meaning the whole
 * address) read from FIP records, its three indexes (by id, by public IP, by private IP), its
 * availability rules and its choice of a public IP and port when the caller leaves them open.
 *
 * How the two models meet (docs/migration.md, "IP Floater's own APIs"):
 * - a whole-address redirection (0 -> 0) is a FIP associated `nat` with the private IP;
 * - a port redirection is a single-port TCP forward of a FIP (its association becomes `ports`);
 * - IP Floater's public IPs are the IPv4 addresses of the pools the adapter serves: free ones
 *   show as `{}`, as IP Floater showed an address without redirections.
 * What a FIP carries that IP Floater cannot express (routed mode, UDP, port ranges) hides
 * nothing: its redirections are shown where they fit, and the address is never chosen for a
 * new one.
 */
import { createHash } from 'node:crypto';
import { tryParseAddress, tryParseMac } from './address.js';
import type { FloatingIp, Pool } from './model.js';
import { freeAddresses, macPins } from './pool.js';

/** The tag a FIP the adapter allocated carries: removing its last redirection releases it. */
export const IPFLOATER_TAG = 'ipfloater';

/** IP Floater's version, reported by its `get_version`: the last it released. */
export const IPFLOATER_VERSION = '0.12';

/** At most this many addresses of the served pools are listed as public IPs (IPv4, in order). */
export const MAX_PUBLIC_IPS = 4096;

/** An endpoint as IP Floater's JSON has it. */
export interface Endpoint {
  readonly id: string;
  readonly public_ip: string;
  readonly public_port: number;
  readonly private_ip: string;
  readonly private_port: number;
  /** Seconds since the epoch, as Python's time.time(). */
  readonly timestamp: number;
}

/** An endpoint and what it is in ipferry: a nat association, or a forward (by its id). */
export interface Redirection {
  readonly endpoint: Endpoint;
  readonly via: { readonly kind: 'nat' } | { readonly kind: 'forward'; readonly id: string };
}

/** One public IP as the adapter sees it. */
export interface PublicIp {
  readonly address: string;
  /** The FIP at it, when allocated. */
  readonly fip?: FloatingIp;
  readonly redirections: readonly Redirection[];
  /** Carries what IP Floater cannot express (routed, UDP, port ranges): never chosen, never extended. */
  readonly foreign: boolean;
  /** Allocated by the adapter (tagged): released when its last redirection goes. */
  readonly ours: boolean;
}

export interface FloaterState {
  /** Every public IP, in address order. */
  readonly publics: readonly PublicIp[];
}

/** Pools the adapter serves: the named ones (all when none is named). */
export function servedPools(pools: readonly Pool[], names: readonly string[]): Pool[] {
  return names.length === 0 ? [...pools] : pools.filter((p) => names.includes(p.name));
}

/**
 * The state over the served pools and the FIPs of the store: every IPv4 address of the pools
 * that is not the gateway's own (shared), up to MAX_PUBLIC_IPS, with what its FIP carries.
 */
export function floaterState(pools: readonly Pool[], fips: readonly FloatingIp[]): FloaterState {
  const names = new Set(pools.map((p) => p.name));
  const held = fips.filter((f) => names.has(f.pool) && f.family === 4 && !f.shared);
  const byAddress = new Map(held.map((f) => [f.address, f]));
  const addresses = new Set<string>();
  for (const pool of pools) {
    for (const a of freeAddresses(pool, new Set(), MAX_PUBLIC_IPS - addresses.size, 4)) {
      addresses.add(a.text);
    }
  }
  for (const f of held) addresses.add(f.address);
  const publics = [...addresses]
    .map((address) => publicIp(address, byAddress.get(address)))
    .sort((a, b) => ipv4Value(a.address) - ipv4Value(b.address));
  return { publics };
}

function publicIp(address: string, fip: FloatingIp | undefined): PublicIp {
  if (!fip) return { address, redirections: [], foreign: false, ours: false };
  const a = fip.association;
  const ours = fip.tags.includes(IPFLOATER_TAG);
  if (!a) return { address, fip, redirections: [], foreign: false, ours };
  const timestamp = Date.parse(a.associatedAt) / 1000;
  if (a.mode === 'nat') {
    const endpoint: Endpoint = {
      id: endpointId(address, 'nat', a.associatedAt),
      public_ip: address,
      public_port: 0,
      private_ip: a.target,
      private_port: 0,
      timestamp,
    };
    return {
      address,
      fip,
      redirections: [{ endpoint, via: { kind: 'nat' } }],
      foreign: false,
      ours,
    };
  }
  if (a.mode === 'routed') return { address, fip, redirections: [], foreign: true, ours };
  const expressible = fip.forwards.filter(
    (f) => f.protocol === 'tcp' && f.port === f.portEnd && f.port !== 0 && f.targetPort !== 0,
  );
  const redirections = expressible.map((f) => ({
    endpoint: {
      id: endpointId(address, f.id, a.associatedAt),
      public_ip: address,
      public_port: f.port,
      private_ip: f.target,
      private_port: f.targetPort,
      timestamp,
    },
    via: { kind: 'forward' as const, id: f.id },
  }));
  return {
    address,
    fip,
    redirections,
    foreign: expressible.length !== fip.forwards.length,
    ours,
  };
}

/**
 * A short id, stable while the redirection exists. Forward ids are unique only within their
 * FIP, and `GET /` is a map by id across all of them, so the id digests the FIP's address, the
 * forward (or `nat`) and when the association began.
 */
function endpointId(address: string, what: string, since: string): string {
  return createHash('sha256').update(`${address} ${what} ${since}`).digest('hex').slice(0, 8);
}

function ipv4Value(text: string): number {
  return text.split('.').reduce((v, octet) => v * 256 + Number(octet), 0);
}

// Indexes --------------------------------------------------------------------------------------

export function allRedirections(state: FloaterState): Redirection[] {
  return state.publics.flatMap((p) => p.redirections);
}

/** `GET /`: every endpoint by id. */
export function endpointsById(state: FloaterState): Record<string, Endpoint> {
  return Object.fromEntries(allRedirections(state).map((r) => [r.endpoint.id, r.endpoint]));
}

/** `GET /public`: every public IP, with its endpoints by public port (`{}` when it has none). */
export function endpointsByPublic(state: FloaterState): Record<string, Record<string, Endpoint>> {
  return Object.fromEntries(
    state.publics.map((p) => [
      p.address,
      Object.fromEntries(p.redirections.map((r) => [r.endpoint.public_port, r.endpoint])),
    ]),
  );
}

/** `GET /private`: every private IP that has a redirection, with them by private port. */
export function endpointsByPrivate(state: FloaterState): Record<string, Record<string, Endpoint>> {
  const out: Record<string, Record<string, Endpoint>> = {};
  for (const { endpoint } of allRedirections(state)) {
    (out[endpoint.private_ip] ??= {})[endpoint.private_port] = endpoint;
  }
  return out;
}

export function redirectionFrom(
  state: FloaterState,
  publicIp: string,
  publicPort: number,
): Redirection | undefined {
  return publicOf(state, publicIp)?.redirections.find((r) => r.endpoint.public_port === publicPort);
}

export function redirectionTo(
  state: FloaterState,
  privateIp: string,
  privatePort: number,
): Redirection | undefined {
  return allRedirections(state).find(
    (r) => r.endpoint.private_ip === privateIp && r.endpoint.private_port === privatePort,
  );
}

export function redirectionsTo(state: FloaterState, privateIp: string): Redirection[] {
  return allRedirections(state).filter((r) => r.endpoint.private_ip === privateIp);
}

export function publicOf(state: FloaterState, address: string): PublicIp | undefined {
  const canonical = tryParseAddress(address)?.text ?? address;
  return state.publics.find((p) => p.address === canonical);
}

/** `arp MAC`: the address a served pool pins to the MAC, if any. */
export function arpLookup(pools: readonly Pool[], macText: string): string | undefined {
  const mac = tryParseMac(macText);
  if (!mac) return undefined;
  for (const pool of pools) {
    const pin = macPins(pool).find((m) => m.mac === mac);
    if (pin) return pin.address;
  }
  return undefined;
}

// Text forms -----------------------------------------------------------------------------------

/** IP Floater's `str(ep)`: `pub -> priv` for a whole address, `pub:port -> priv:port` otherwise. */
export function endpointText(e: Omit<Endpoint, 'id' | 'timestamp'>): string {
  return e.public_port === 0
    ? `${e.public_ip} -> ${e.private_ip}`
    : `${e.public_ip}:${e.public_port} -> ${e.private_ip}:${e.private_port}`;
}

/** `get_redirections`: one line per endpoint, each ending in a newline. */
export function redirectionsText(state: FloaterState): string {
  return allRedirections(state)
    .map((r) => `${endpointText(r.endpoint)}\n`)
    .join('');
}

// Requests -------------------------------------------------------------------------------------

/** A redirection request as IP Floater takes it; undefined public IP or port: let it choose. */
export interface RedirectRequest {
  readonly publicIp?: string;
  readonly publicPort?: number;
  readonly privateIp: string;
  readonly privatePort: number;
}

/** What to create: the endpoint, on a public IP that is free or already carries redirections. */
export interface RedirectPlan {
  readonly publicIp: string;
  readonly publicPort: number;
  readonly privateIp: string;
  readonly privatePort: number;
  /** The public IP's FIP when allocated (else the adapter allocates it). */
  readonly fip?: FloatingIp;
}

export type Decision<T> =
  { readonly ok: true; readonly value: T } | { readonly ok: false; readonly reason: string };

const refuse = (reason: string): { ok: false; reason: string } => ({ ok: false, reason });

/** A port as IP Floater reads it: an integer 0 to 65535 (a string of digits from a URL). */
export function parsePort(value: unknown): number | undefined {
  const n = typeof value === 'string' && /^\d{1,5}$/.test(value) ? Number(value) : value;
  return typeof n === 'number' && Number.isInteger(n) && n >= 0 && n <= 65535 ? n : undefined;
}

/** A private or public IP as IP Floater takes it: IPv4, canonical. */
export function parseIpv4(value: unknown): string | undefined {
  const a = typeof value === 'string' ? tryParseAddress(value) : undefined;
  return a?.family === 4 ? a.text : undefined;
}

/**
 * IP Floater's request_endpoint, as its docs meant it: the private side must be free (a whole
 * address taken excludes its every port, and the other way round); only all-to-all (0 -> 0) or
 * one-to-one port redirections; a public IP left open is one already serving this private IP
 * (fewest redirections first), then any other, skipping addresses allocated outside IP Floater;
 * a public port left open is the private port when free there, else a free one chosen by
 * `randomPort` (1025 to 65535).
 */
export function planRedirection(
  state: FloaterState,
  request: RedirectRequest,
  randomPort: () => number,
): Decision<RedirectPlan> {
  const { privateIp, privatePort } = request;
  if (!privateSideFree(state, privateIp, privatePort)) {
    return refuse(`${privateIp}:${privatePort} already has a redirection`);
  }
  const publicPort = request.publicPort ?? (privatePort === 0 ? 0 : undefined);
  if ((privatePort === 0) !== (publicPort === 0) && publicPort !== undefined) {
    return refuse('only all-to-all (port 0 to port 0) or one-to-one port redirections are allowed');
  }
  const plan = (p: PublicIp, port: number): Decision<RedirectPlan> => ({
    ok: true,
    value: {
      publicIp: p.address,
      publicPort: port,
      privateIp,
      privatePort,
      ...(p.fip ? { fip: p.fip } : {}),
    },
  });
  if (request.publicIp !== undefined) {
    const p = publicOf(state, request.publicIp);
    if (!p) return refuse(`${request.publicIp} is not a public IP of ipfloater`);
    if (p.foreign) return refuse(`${p.address} carries redirections ipfloater cannot express`);
    if (publicPort === undefined) {
      const port = assignPort(p, privatePort, randomPort);
      return port === undefined ? refuse(`${p.address} has no free port`) : plan(p, port);
    }
    return publicSideFree(p, publicPort)
      ? plan(p, publicPort)
      : refuse(`${p.address}:${publicPort} is occupied`);
  }
  const candidates = candidateOrder(state, privateIp);
  const wanted = publicPort ?? privatePort;
  const exact = candidates.find((p) => publicSideFree(p, wanted));
  if (exact) return plan(exact, wanted);
  if (publicPort === undefined) {
    for (const p of candidates) {
      const port = assignPort(p, privatePort, randomPort);
      if (port !== undefined) return plan(p, port);
    }
    return refuse('could not find any free ip or port');
  }
  return refuse(
    publicPort === 0 ? 'could not find any free ip' : 'could not find any free ip for that port',
  );
}

function candidateOrder(state: FloaterState, privateIp: string): PublicIp[] {
  const usable = state.publics.filter((p) => !p.foreign && (!p.fip || p.ours));
  const count = (p: PublicIp): number =>
    p.redirections.filter((r) => r.endpoint.private_ip === privateIp).length;
  const serving = usable.filter((p) => count(p) > 0).sort((a, b) => count(a) - count(b));
  return [...serving, ...usable.filter((p) => count(p) === 0)];
}

/** Whether `p` takes port redirections: no whole-address one, nothing foreign, no other mode. */
function portsOpen(p: PublicIp): boolean {
  if (p.foreign) return false;
  if (p.fip?.association && p.fip.association.mode !== 'ports') return false;
  return !p.redirections.some((r) => r.endpoint.public_port === 0);
}

/**
 * Whether public_ip:port can take a new redirection: for the whole address, nothing on it at
 * all; for a port, the address open to ports and that port free.
 */
function publicSideFree(p: PublicIp, port: number): boolean {
  if (port === 0) return !p.foreign && !p.fip?.association && p.redirections.length === 0;
  return portsOpen(p) && !p.redirections.some((r) => r.endpoint.public_port === port);
}

function privateSideFree(state: FloaterState, ip: string, port: number): boolean {
  const ports = redirectionsTo(state, ip).map((r) => r.endpoint.private_port);
  if (ports.length === 0) return true;
  if (port === 0 || ports.includes(0)) return false;
  return !ports.includes(port);
}

const FIRST_RANDOM_PORT = 1025;
const RANDOM_PORTS = 65535 - FIRST_RANDOM_PORT + 1;

/**
 * The wanted port when free on `p`, else one of 1025 to 65535 that is free, starting from where
 * `randomPort` (any integer) points, so concurrent callers rarely pick the same.
 */
function assignPort(p: PublicIp, wanted: number, randomPort: () => number): number | undefined {
  if (wanted === 0) return publicSideFree(p, 0) ? 0 : undefined;
  if (publicSideFree(p, wanted)) return wanted;
  if (!portsOpen(p)) return undefined;
  const used = new Set(p.redirections.map((r) => r.endpoint.public_port));
  const start = Math.abs(Math.trunc(randomPort())) % RANDOM_PORTS;
  for (let i = 0; i < RANDOM_PORTS; i++) {
    const port = FIRST_RANDOM_PORT + ((start + i) % RANDOM_PORTS);
    if (!used.has(port)) return port;
  }
  return undefined;
}

/** The raw arguments of a redirection request, as a URL or an XML-RPC call gives them. */
export interface RawRedirect {
  readonly publicIp?: unknown;
  readonly publicPort?: unknown;
  readonly privateIp: unknown;
  readonly privatePort: unknown;
}

/** Parses a request; undefined public IP or port: let ipfloater choose. */
export function parseRedirect(raw: RawRedirect): Decision<RedirectRequest> {
  const privateIp = parseIpv4(raw.privateIp);
  if (privateIp === undefined) return refuse(`bad private IP format (${shown(raw.privateIp)})`);
  let publicIp: string | undefined;
  if (raw.publicIp !== undefined) {
    publicIp = parseIpv4(raw.publicIp);
    if (publicIp === undefined) return refuse(`bad public IP format (${shown(raw.publicIp)})`);
  }
  const privatePort = parsePort(raw.privatePort);
  const publicPort = raw.publicPort === undefined ? undefined : parsePort(raw.publicPort);
  if (privatePort === undefined || (raw.publicPort !== undefined && publicPort === undefined)) {
    return refuse('incorrect port format (it must be an integer from 0 to 65535)');
  }
  return {
    ok: true,
    value: {
      ...(publicIp !== undefined ? { publicIp } : {}),
      ...(publicPort !== undefined ? { publicPort } : {}),
      privateIp,
      privatePort,
    },
  };
}

/** An argument as it reaches a message: its text when a string or number, at most 100 characters. */
export function shown(v: unknown): string {
  return (typeof v === 'string' || typeof v === 'number' ? String(v) : typeof v).slice(0, 100);
}
