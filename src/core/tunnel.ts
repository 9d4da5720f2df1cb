/**
 * Tunnels as intent. A tunnel is one interface (`ipf…`) with inner addresses, a UDP listen port
 * and a set of peers; this module says what such a tunnel should look like and what has to
 * change to get there, and knows nothing of the kernel (the drivers in src/dataplane/tunnel/
 * translate it to `ip` and `wg` calls).
 *
 * Packet walk (WireGuard): a packet routed into the tunnel interface is matched against the
 * peers' allowed IPs (the longest prefix wins) and encrypted to that peer: it travels inside
 * one UDP datagram to the peer's endpoint over the underlay, costing 60 bytes over IPv4 (IP 20,
 * UDP 8, WireGuard 32) and 80 over IPv6 (IP 40). The receiver decrypts it, accepts it only when
 * its inner source is one of the sender's allowed IPs, learns the sender's current outer
 * address (roaming), and hands it to its own stack. So the tunnel MTU is the underlay MTU minus
 * that overhead, and TCP MSS is clamped to the tunnel MTU minus the TCP/IP headers, because
 * outer fragments are often lost on the way (see LAB.md on MTU black holes).
 */
import { type Family, tryParseAddress, tryParsePrefix } from './address.js';
import { type ErrorCode, IpferryError, type Problem, validationError } from './errors.js';

/** Every tunnel interface ipferry creates starts with this; it touches no other interface. */
export const TUNNEL_IFNAME_PREFIX = 'ipf';

/** Outer IP + UDP + WireGuard header and authentication tag, per underlay family. */
export const WIREGUARD_OVERHEAD: Readonly<Record<Family, number>> = { 4: 60, 6: 80 };

/**
 * tinc 1.0 in switch mode sends Ethernet frames in UDP: outer IP + UDP (28/48), then the
 * sequence number (4) and the frame (its Ethernet header 14 + the packet) encrypted with
 * blowfish-CBC, padded to the next multiple of 8 (always at least one byte), then a 4-byte MAC.
 * The padding makes the overhead depend on the underlay's MTU modulo 8: over a 1500-byte IPv4
 * path the packet may have 1445 bytes (the figure found by hand in the migration this
 * replaces), over IPv6 1429.
 */
function tincOverhead(family: Family, underlayMtu: number): number {
  const outer = family === 4 ? 28 : 48;
  const encrypted = Math.floor((underlayMtu - outer - 4) / 8) * 8;
  return underlayMtu - (encrypted - 1 - 4 - 14);
}

/** The tunnel implementations ipferry drives. */
export type TunnelDriverKind = 'wireguard' | 'tinc';
export const TUNNEL_DRIVERS: readonly TunnelDriverKind[] = ['wireguard', 'tinc'];

/** Bytes a tunnel adds to each packet over an underlay of `family` and MTU `underlayMtu`. */
export function tunnelOverhead(
  driver: TunnelDriverKind,
  family: Family,
  underlayMtu: number,
): number {
  return driver === 'tinc' ? tincOverhead(family, underlayMtu) : WIREGUARD_OVERHEAD[family];
}

/** IPv6 needs every link to carry 1280-byte packets (RFC 8200). */
export const MIN_IPV6_MTU = 1280;
/** The smallest MTU Linux accepts on an interface carrying IPv4. */
export const MIN_IPV4_MTU = 68;
export const MAX_MTU = 65535;

/** TCP + IP header bytes per inner family, for MSS clamping. */
const TCP_IP_HEADERS: Readonly<Record<Family, number>> = { 4: 40, 6: 60 };

export interface TunnelPeer {
  /**
   * The peer's public key: WireGuard's base64 of 32 bytes, or tinc's RSA public key in PEM
   * (PKCS#1, as tinc 1.0 writes it into host files).
   */
  readonly publicKey: string;
  /** The peer node's name (tinc names its host files after it; WireGuard does not need it). */
  readonly node?: string;
  /** `host:port` or `[v6]:port`; absent when the peer calls in (its address is learned). */
  readonly endpoint?: string;
  /** Inner prefixes routed to this peer and accepted from it (network form, host bits zero). */
  readonly allowedIps: readonly string[];
  /** Keepalive interval for peers behind NAT; absent means off. */
  readonly keepaliveSeconds?: number;
}

/** The path the tunnel's own packets travel; the tunnel MTU must fit into it. */
export interface Underlay {
  readonly mtu: number;
  readonly family: Family;
}

export interface TunnelIntent {
  /** Interface name: `ipf…`, at most 15 characters, unique on the machine (see tunnelName). */
  readonly name: string;
  /** Absent means WireGuard. */
  readonly driver?: TunnelDriverKind;
  readonly listenPort: number;
  readonly mtu: number;
  /** Inner addresses with prefix length (`10.200.0.1/30`), canonical and sorted. */
  readonly addresses: readonly string[];
  /** Sorted by public key. */
  readonly peers: readonly TunnelPeer[];
  readonly underlay?: Underlay;
}

/** What a driver reads back from the kernel: an intent plus the facts only the kernel knows. */
export interface ObservedTunnel {
  readonly name: string;
  readonly kind: 'kernel' | 'userspace';
  /** Public key of the private key the interface holds (the private key itself is never read out). */
  readonly publicKey: string | undefined;
  readonly listenPort: number;
  readonly mtu: number;
  readonly up: boolean;
  readonly addresses: readonly string[];
  /** Endpoints are the current ones, which may be learned rather than configured. */
  readonly peers: readonly TunnelPeer[];
  /**
   * Userspace drivers whose device outlives its daemon (tinc's persistent tap): false when no
   * daemon holds the device — it crashed or was killed, and the device, with its addresses and
   * the routes through it, waits for a new one. Absent where device and daemon go together.
   */
  readonly served?: boolean;
}

export interface PeerStatus {
  readonly publicKey: string;
  readonly endpoint: string | undefined;
  /** Seconds since the latest handshake; undefined when there was none. */
  readonly handshakeAgeSeconds: number | undefined;
  /** Whether the daemon reaches the peer, from drivers that know it without handshakes (tinc). */
  readonly reachable?: boolean;
  /** 0 from a driver without per-peer counters (TunnelStatus.peerCounters false). */
  readonly rxBytes: number;
  readonly txBytes: number;
}

export interface TunnelStatus {
  readonly name: string;
  /** The driver that reports it; absent: WireGuard. */
  readonly driver?: TunnelDriverKind;
  /** false: the driver counts no bytes per peer (tinc 1.0), its peers' counters mean nothing. */
  readonly peerCounters?: boolean;
  /** The interface's own counters, all peers together, from a driver without per-peer ones. */
  readonly device?: { readonly rxBytes: number; readonly txBytes: number };
  readonly peers: readonly PeerStatus[];
}

export type PeerField = 'endpoint' | 'allowed-ips' | 'keepalive';

/** One step from the observed tunnel to the intended one, in the order drivers apply them. */
export type TunnelChange =
  | { readonly kind: 'create' }
  /** The device is there but no daemon holds it: start one (ObservedTunnel.served). */
  | { readonly kind: 'daemon-start' }
  | { readonly kind: 'private-key' }
  | { readonly kind: 'listen-port'; readonly port: number }
  | { readonly kind: 'peer-add'; readonly peer: TunnelPeer }
  | { readonly kind: 'peer-update'; readonly peer: TunnelPeer; readonly fields: PeerField[] }
  | { readonly kind: 'peer-remove'; readonly publicKey: string }
  | { readonly kind: 'mtu'; readonly mtu: number }
  | { readonly kind: 'address-add'; readonly address: string }
  | { readonly kind: 'address-del'; readonly address: string }
  | { readonly kind: 'up' };

// ---------------------------------------------------------------------------------------------
// MTU and MSS

function overheadProblem(
  underlayMtu: number,
  family: Family,
  mtu: number | undefined,
  innerIpv6: boolean,
  driver: TunnelDriverKind = 'wireguard',
): string | { mtu: number } {
  if (!Number.isInteger(underlayMtu) || underlayMtu < MIN_IPV4_MTU || underlayMtu > MAX_MTU) {
    return `underlay MTU ${String(underlayMtu)} is not an integer from ${MIN_IPV4_MTU} to ${MAX_MTU}`;
  }
  const overhead = tunnelOverhead(driver, family, underlayMtu);
  const most = underlayMtu - overhead;
  const chosen = mtu ?? most;
  if (chosen > most) {
    return `MTU ${chosen} does not fit an IPv${family} underlay of MTU ${underlayMtu}: at most ${most} (${driver === 'tinc' ? 'tinc' : 'WireGuard'} adds ${overhead} bytes)`;
  }
  if (innerIpv6 && chosen < MIN_IPV6_MTU) {
    return `MTU ${chosen} is below ${MIN_IPV6_MTU}, the least a link carrying IPv6 must have${mtu === undefined ? ` (an IPv${family} underlay of MTU ${underlayMtu} leaves ${most})` : ''}`;
  }
  if (chosen < MIN_IPV4_MTU) return `MTU ${chosen} is below ${MIN_IPV4_MTU}`;
  return { mtu: chosen };
}

/**
 * The tunnel MTU over an underlay: underlay minus WireGuard's overhead, or `configured` when
 * that fits. Refuses (IPF_E_TUNNEL_MTU) a configured MTU the underlay cannot carry, and an MTU
 * below 1280 when the tunnel carries IPv6 (the default: say `innerIpv6: false` for an
 * IPv4-only tunnel).
 */
export function tunnelMtu(
  underlayMtu: number,
  underlayFamily: Family,
  options: { configured?: number; innerIpv6?: boolean; driver?: TunnelDriverKind } = {},
): number {
  const result = overheadProblem(
    underlayMtu,
    underlayFamily,
    options.configured,
    options.innerIpv6 ?? true,
    options.driver,
  );
  if (typeof result === 'string') throw new IpferryError('IPF_E_TUNNEL_MTU', { summary: result });
  return result.mtu;
}

/** The TCP MSS to clamp to for packets of `family` through a tunnel of MTU `mtu`. */
export function mssFor(mtu: number, family: Family): number {
  return mtu - TCP_IP_HEADERS[family];
}

// ---------------------------------------------------------------------------------------------
// Endpoints

export interface Endpoint {
  /** IP literal in canonical form (no brackets), or a lower-case DNS name. */
  readonly host: string;
  readonly port: number;
  /** The family of an IP literal; undefined for a name. */
  readonly family: Family | undefined;
  /** Canonical `host:port` / `[v6]:port`. */
  readonly text: string;
}

const DNS_LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;
const PORT = /^[1-9]\d{0,4}$/;

function endpointOrProblem(input: unknown): Endpoint | string {
  if (typeof input !== 'string') return 'must be a string host:port or [IPv6]:port';
  const quoted = JSON.stringify(input);
  const bracketed = /^\[([^\]]*)\]:([^:]*)$/.exec(input);
  const plain = /^([^:[\]]*):([^:]*)$/.exec(input);
  const [, hostText = '', portText = ''] = bracketed ?? plain ?? [];
  if (!bracketed && !plain) {
    return input.split(':').length > 2
      ? `${quoted} is not host:port (write an IPv6 endpoint as [address]:port)`
      : `${quoted} is not host:port`;
  }
  const port = PORT.test(portText) ? Number(portText) : 0;
  if (port < 1 || port > 65535) return `${quoted} has no port from 1 to 65535`;
  if (bracketed) {
    const address = tryParseAddress(hostText);
    if (address?.family !== 6) return `${quoted}: [${hostText}] is not an IPv6 address`;
    return { host: address.text, port, family: 6, text: `[${address.text}]:${port}` };
  }
  const address = tryParseAddress(hostText);
  if (address) return { host: address.text, port, family: 4, text: `${address.text}:${port}` };
  const name = hostText.toLowerCase().replace(/\.$/, '');
  const labels = name.split('.');
  // An all-digit last label is a mistyped IPv4 address (300.1.1.1, 10.1.1), not a name.
  if (
    name.length === 0 ||
    name.length > 253 ||
    !labels.every((l) => DNS_LABEL.test(l)) ||
    /^\d+$/.test(labels[labels.length - 1] ?? '')
  ) {
    return `${quoted}: "${hostText}" is neither an IPv4 address nor a host name`;
  }
  return { host: name, port, family: undefined, text: `${name}:${port}` };
}

/** Parses `host:port` or `[v6]:port` strictly; IPF_E_TUNNEL_ENDPOINT for anything else. */
export function parseEndpoint(input: string): Endpoint {
  const result = endpointOrProblem(input);
  if (typeof result === 'string') {
    throw new IpferryError('IPF_E_TUNNEL_ENDPOINT', { summary: result });
  }
  return result;
}

// ---------------------------------------------------------------------------------------------
// Names and keys

const IFNAME = /^ipf[A-Za-z0-9_.-]{1,12}$/;
/** Base64 of exactly 32 bytes: 43 characters, the last carrying 4 bits, then one `=`. */
const KEY = /^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$/;

export function isTunnelName(name: string): boolean {
  return IFNAME.test(name);
}

export function isWireGuardKey(key: string): boolean {
  return KEY.test(key);
}

const TINC_KEY =
  /^-----BEGIN RSA PUBLIC KEY-----\n(?:[A-Za-z0-9+/=]{1,76}\n){2,40}-----END RSA PUBLIC KEY-----\n?$/;

/** tinc 1.0's public key: an RSA key in PKCS#1 PEM, as in its host files. */
export function isTincKey(key: string): boolean {
  return TINC_KEY.test(key);
}

export function isTunnelKey(driver: TunnelDriverKind, key: string): boolean {
  return driver === 'tinc' ? isTincKey(key) : isWireGuardKey(key);
}

/** FNV-1a, 32 bits: a stable short hash without a crypto dependency in the pure core. */
export function fnv1a(text: string): number {
  let hash = 0x811c9dc5;
  for (const byte of new TextEncoder().encode(text)) {
    hash = Math.imul(hash ^ byte, 0x01000193) >>> 0;
  }
  return hash;
}

/**
 * The interface name of the tunnel from node `local` to node `remote`: `ipf`, up to five
 * characters of the remote's name, and a 7-character hash of (salt, local, remote). WireGuard's
 * userspace sockets live in one directory for the whole machine, so the two ends of a tunnel
 * get different names even when they share a machine (a lab); `salt` separates labs.
 */
export function tunnelName(local: string, remote: string, salt = ''): string {
  const slug = remote
    .toLowerCase()
    .replace(/[^a-z0-9]/g, '')
    .slice(0, 5);
  const hash = fnv1a(`${salt}\0${local}\0${remote}`).toString(36).padStart(7, '0');
  return `${TUNNEL_IFNAME_PREFIX}${slug}${hash}`;
}

/**
 * The IPv6 link-local address a node's tunnel interface carries, derived from its name: the
 * peers probe each other there (health, path MTU search) and tinc's routes point at it as next
 * hop. Link-local addresses never leave the link, so they never show up as a hop or a source
 * to anyone outside the tunnel; 64 bits of hash make a clash between two nodes negligible.
 */
export function tunnelProbeAddress(node: string): string {
  const high = fnv1a(`probe\0${node}`);
  const low = fnv1a(`${node}\0probe`);
  const groups = [high >>> 16, high & 0xffff, low >>> 16, low & 0xffff].map((g) => g.toString(16));
  return `fe80::${groups.join(':')}`;
}

/**
 * A link-local IPv4 address for the node's tunnel interface. Linux's reverse-path filter drops
 * packets that arrive on an interface without any IPv4 address when their source is routed
 * elsewhere (a client's answer through the tunnel to the node's own address, or that address's
 * answers arriving at the gateway), even in loose mode; any address lifts that. It is never
 * routed anywhere, so it may be the same on two nodes.
 */
export function tunnelLinkAddress(node: string): string {
  const h = fnv1a(node);
  return `169.254.${((h >>> 8) % 254) + 1}.${(h % 254) + 1}/32`;
}

// ---------------------------------------------------------------------------------------------
// Validation

/** A problem and the error code it stands for (a lone kind of problem keeps its own code). */
export interface CodedProblem extends Problem {
  readonly code: ErrorCode;
}

class TunnelProblems {
  readonly list: CodedProblem[] = [];
  add(path: string, message: string, code: ErrorCode = 'IPF_E_VALIDATION'): void {
    this.list.push({ path, message, code });
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function checkInteger(
  p: TunnelProblems,
  path: string,
  value: unknown,
  min: number,
  max: number,
): number | undefined {
  if (typeof value === 'number' && Number.isInteger(value) && value >= min && value <= max) {
    return value;
  }
  p.add(path, `must be an integer from ${min} to ${max}`);
  return undefined;
}

function checkList(p: TunnelProblems, path: string, value: unknown): unknown[] {
  if (Array.isArray(value)) return value;
  p.add(path, 'must be a list');
  return [];
}

function checkInterfaceAddress(p: TunnelProblems, path: string, value: unknown): string | null {
  const slash = typeof value === 'string' ? value.indexOf('/') : -1;
  const address = typeof value === 'string' ? tryParseAddress(value.slice(0, slash)) : undefined;
  const prefix = typeof value === 'string' ? tryParsePrefix(value, false) : undefined;
  if (!address || !prefix) {
    p.add(path, `${JSON.stringify(value)} is not an address with prefix length (10.200.0.1/30)`);
    return null;
  }
  if (address.family === 6 && address.value >> 118n === 0x3fan && prefix.length !== 64) {
    p.add(path, `${address.text} is link-local: give it prefix length 64`);
    return null;
  }
  return `${address.text}/${prefix.length}`;
}

function checkAllowedIp(p: TunnelProblems, path: string, value: unknown): string | null {
  const prefix = typeof value === 'string' ? tryParsePrefix(value) : undefined;
  if (prefix) return prefix.text;
  const loose = typeof value === 'string' ? tryParsePrefix(value, false) : undefined;
  p.add(
    path,
    loose
      ? `${JSON.stringify(value)} has host bits set: did you mean ${loose.text}?`
      : `${JSON.stringify(value)} is not a prefix (10.200.0.2/32, 2001:db8::/64)`,
  );
  return null;
}

const NODE_NAME = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

function checkPeer(
  p: TunnelProblems,
  path: string,
  value: unknown,
  driver: TunnelDriverKind,
): TunnelPeer | null {
  if (!isRecord(value)) {
    p.add(path, 'must be an object with publicKey and allowedIps');
    return null;
  }
  const publicKey = value.publicKey;
  if (typeof publicKey !== 'string' || !isTunnelKey(driver, publicKey)) {
    p.add(
      `${path}.publicKey`,
      driver === 'tinc'
        ? 'must be a tinc RSA public key (PKCS#1 PEM)'
        : 'must be a WireGuard public key (base64 of 32 bytes)',
    );
  }
  const node = value.node;
  if (node !== undefined && (typeof node !== 'string' || !NODE_NAME.test(node))) {
    p.add(`${path}.node`, 'must be a node name');
  } else if (driver === 'tinc' && node === undefined) {
    p.add(`${path}.node`, 'is needed by tinc (its host files are named after the node)');
  }
  let endpoint: string | undefined;
  if (value.endpoint !== undefined) {
    const parsed = endpointOrProblem(value.endpoint);
    if (typeof parsed === 'string') p.add(`${path}.endpoint`, parsed, 'IPF_E_TUNNEL_ENDPOINT');
    else endpoint = parsed.text;
  }
  const allowedIps = checkList(p, `${path}.allowedIps`, value.allowedIps).map((a, i) =>
    checkAllowedIp(p, `${path}.allowedIps[${i}]`, a),
  );
  const keepalive =
    value.keepaliveSeconds === undefined
      ? undefined
      : checkInteger(p, `${path}.keepaliveSeconds`, value.keepaliveSeconds, 1, 65535);
  if (typeof publicKey !== 'string' || allowedIps.includes(null)) return null;
  return {
    publicKey,
    ...(typeof node === 'string' ? { node } : {}),
    ...(endpoint === undefined ? {} : { endpoint }),
    allowedIps: [...new Set(allowedIps as string[])].sort(),
    ...(keepalive === undefined ? {} : { keepaliveSeconds: keepalive }),
  };
}

function checkUnderlay(p: TunnelProblems, value: unknown): Underlay | undefined {
  if (value === undefined) return undefined;
  if (!isRecord(value) || (value.family !== 4 && value.family !== 6)) {
    p.add('underlay', 'must be {mtu, family: 4 | 6}');
    return undefined;
  }
  const mtu = checkInteger(p, 'underlay.mtu', value.mtu, MIN_IPV4_MTU, MAX_MTU);
  return mtu === undefined ? undefined : { mtu, family: value.family };
}

/**
 * Every problem of a tunnel intent, and the intent in canonical form (sorted, canonical
 * addresses) when there are none.
 */
export function tunnelProblems(input: unknown): {
  intent: TunnelIntent | undefined;
  problems: readonly CodedProblem[];
} {
  const p = new TunnelProblems();
  if (!isRecord(input)) {
    p.add('', 'must be an object');
    return { intent: undefined, problems: p.list };
  }
  const name = input.name;
  if (typeof name !== 'string' || !isTunnelName(name)) {
    p.add(
      'name',
      `must be "${TUNNEL_IFNAME_PREFIX}" and 1–12 of [A-Za-z0-9_.-] (an interface name of at most 15 characters)`,
    );
  }
  const driver = input.driver ?? 'wireguard';
  if (driver !== 'wireguard' && driver !== 'tinc') {
    p.add('driver', `must be one of ${TUNNEL_DRIVERS.join(', ')}`);
  }
  const kind: TunnelDriverKind = driver === 'tinc' ? 'tinc' : 'wireguard';
  const listenPort = checkInteger(p, 'listenPort', input.listenPort, 1, 65535);
  const mtu = checkInteger(p, 'mtu', input.mtu, MIN_IPV4_MTU, MAX_MTU);
  const addresses = checkList(p, 'addresses', input.addresses).map((a, i) =>
    checkInterfaceAddress(p, `addresses[${i}]`, a),
  );
  const peers = checkList(p, 'peers', input.peers).map((peer, i) =>
    checkPeer(p, `peers[${i}]`, peer, kind),
  );
  const underlay = checkUnderlay(p, input.underlay);

  const seenKeys = new Map<string, number>();
  const seenPrefixes = new Map<string, number>();
  peers.forEach((peer, i) => {
    if (!peer) return;
    const other = seenKeys.get(peer.publicKey);
    if (other !== undefined) p.add(`peers[${i}].publicKey`, `is also peers[${other}]'s key`);
    seenKeys.set(peer.publicKey, i);
    for (const prefix of peer.allowedIps) {
      // WireGuard would silently move the prefix to whichever peer was set last.
      const owner = seenPrefixes.get(prefix);
      if (owner !== undefined && owner !== i) {
        p.add(`peers[${i}].allowedIps`, `${prefix} is also allowed for peers[${owner}]`);
      }
      seenPrefixes.set(prefix, i);
    }
  });
  const innerIpv6 = [...addresses, ...peers.flatMap((peer) => peer?.allowedIps ?? [])].some(
    (a) => a?.includes(':') ?? false,
  );
  if (mtu !== undefined) {
    const fit = underlay
      ? overheadProblem(underlay.mtu, underlay.family, mtu, innerIpv6, kind)
      : innerIpv6 && mtu < MIN_IPV6_MTU
        ? `MTU ${mtu} is below ${MIN_IPV6_MTU}, the least a link carrying IPv6 must have`
        : { mtu };
    if (typeof fit === 'string') p.add('mtu', fit, 'IPF_E_TUNNEL_MTU');
  }
  if (
    p.list.length > 0 ||
    typeof name !== 'string' ||
    listenPort === undefined ||
    mtu === undefined
  ) {
    return { intent: undefined, problems: p.list };
  }
  const uniqueAddresses = [...new Set(addresses as string[])].sort();
  return {
    intent: {
      name,
      ...(input.driver === undefined ? {} : { driver: kind }),
      listenPort,
      mtu,
      addresses: uniqueAddresses,
      peers: (peers as TunnelPeer[]).sort((a, b) => compareText(a.publicKey, b.publicKey)),
      ...(underlay ? { underlay } : {}),
    },
    problems: [],
  };
}

/**
 * Validates a tunnel intent and returns it in canonical form. Throws every problem at once:
 * under IPF_E_TUNNEL_ENDPOINT or IPF_E_TUNNEL_MTU when all of them are of that one kind,
 * otherwise under IPF_E_VALIDATION.
 */
export function validateTunnelIntent(input: unknown): TunnelIntent {
  const { intent, problems } = tunnelProblems(input);
  if (intent) return intent;
  const plain: Problem[] = problems.map(({ path, message }) => ({ path, message }));
  const codes = new Set(problems.map((problem) => problem.code));
  const [only] = codes;
  if (codes.size !== 1 || only === undefined || only === 'IPF_E_VALIDATION') {
    throw validationError(plain);
  }
  const first = plain[0];
  const summary =
    plain.length === 1 && first ? `${first.path}: ${first.message}` : `${plain.length} problems`;
  throw new IpferryError(only, { summary }, plain);
}

function compareText(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

// ---------------------------------------------------------------------------------------------
// Diff

function sameSet(a: readonly string[], b: readonly string[]): boolean {
  const sorted = [...b].sort();
  return a.length === b.length && [...a].sort().every((x, i) => x === sorted[i]);
}

function hostOf(cidr: string): string {
  return cidr.slice(0, cidr.indexOf('/'));
}

/**
 * The steps from `have` (undefined: no such interface) to `want`, in apply order: the
 * interface, its key and port, peers (removals last), the MTU, addresses (added before the
 * ones they replace are deleted, so the tunnel is never without one), and finally link up.
 * `publicKey` is the public key of the private key the interface should hold. Only differences
 * produce steps, so an applied intent diffs to nothing. Endpoints are compared only when the
 * intent names one: a peer that calls in has its endpoint learned, not configured.
 */
export function diffTunnel(
  want: TunnelIntent,
  have: ObservedTunnel | undefined,
  publicKey: string,
): TunnelChange[] {
  const changes: TunnelChange[] = [];
  if (!have) changes.push({ kind: 'create' });
  if (have?.served === false) changes.push({ kind: 'daemon-start' });
  if (have?.publicKey !== publicKey) changes.push({ kind: 'private-key' });
  if (have?.listenPort !== want.listenPort) {
    changes.push({ kind: 'listen-port', port: want.listenPort });
  }
  const current = new Map((have?.peers ?? []).map((peer) => [peer.publicKey, peer]));
  for (const peer of want.peers) {
    const old = current.get(peer.publicKey);
    if (!old) {
      changes.push({ kind: 'peer-add', peer });
      continue;
    }
    const fields: PeerField[] = [];
    if (peer.endpoint !== undefined && peer.endpoint !== old.endpoint) fields.push('endpoint');
    if (!sameSet(peer.allowedIps, old.allowedIps)) fields.push('allowed-ips');
    if ((peer.keepaliveSeconds ?? 0) !== (old.keepaliveSeconds ?? 0)) fields.push('keepalive');
    if (fields.length > 0) changes.push({ kind: 'peer-update', peer, fields });
  }
  const wanted = new Set(want.peers.map((peer) => peer.publicKey));
  for (const peer of have?.peers ?? []) {
    if (!wanted.has(peer.publicKey))
      changes.push({ kind: 'peer-remove', publicKey: peer.publicKey });
  }
  if (have?.mtu !== want.mtu) changes.push({ kind: 'mtu', mtu: want.mtu });
  const present = new Set(have?.addresses ?? []);
  const adds = want.addresses.filter((a) => !present.has(a));
  const dels = [...present].filter((a) => !want.addresses.includes(a)).sort();
  // The kernel keys IPv6 addresses by address alone: a new prefix length for one that is there
  // needs the old one gone first. IPv4 keeps both for the moment in between.
  const clashes = (a: string): boolean =>
    a.includes(':') && adds.some((b) => b !== a && hostOf(b) === hostOf(a));
  for (const address of dels.filter(clashes)) changes.push({ kind: 'address-del', address });
  for (const address of adds) changes.push({ kind: 'address-add', address });
  for (const address of dels.filter((a) => !clashes(a))) {
    changes.push({ kind: 'address-del', address });
  }
  if (!have?.up) changes.push({ kind: 'up' });
  return changes;
}

/** One line per change for logs; public keys are fine to show, private ones never appear. */
export function describeChange(change: TunnelChange): string {
  switch (change.kind) {
    case 'create':
    case 'daemon-start':
    case 'private-key':
    case 'up':
      return change.kind;
    case 'listen-port':
      return `listen-port ${change.port}`;
    case 'peer-add':
      return `peer-add ${change.peer.publicKey}`;
    case 'peer-update':
      return `peer-update ${change.peer.publicKey} ${change.fields.join(',')}`;
    case 'peer-remove':
      return `peer-remove ${change.publicKey}`;
    case 'mtu':
      return `mtu ${change.mtu}`;
    case 'address-add':
      return `address-add ${change.address}`;
    case 'address-del':
      return `address-del ${change.address}`;
  }
}
