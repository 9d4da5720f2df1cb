/**
 * A strict in-memory tunnel driver. Each FakeTunnelDriver is one host; a FakeTunnelNetwork is
 * the machine and the wire they share. Like the kernel and wireguard-go, the fake refuses a
 * name already serving a userspace socket on the machine, a listen port already bound on the
 * host, and anything validation refuses, creating nothing then; it models WireGuard's
 * cryptokey routing well enough for the conformance suite: a packet reaches the far end only
 * when the sending peer allows its destination, the receiving peer allows its source, and a
 * handshake is possible (an endpoint pointing at the other's underlay address and port, in at
 * least one direction). `dump()` prints a host's whole state for comparisons.
 *
 * With `driver: 'tinc'` it plays the tinc driver instead (src/dataplane/tunnel/tinc.ts): RSA
 * keys in PEM, intents must say `driver: 'tinc'`, always userspace with no machine-wide socket,
 * switch mode (allowed IPs recorded, not enforced), observe() reporting configured endpoints
 * and peers' node names, and status() reporting reachability as handshake age 0 with no byte
 * counters.
 */
import { generateKeyPairSync } from 'node:crypto';
import { IpferryError, validationError } from '../../core/errors.js';
import { prefixRange, rangeContains, tryParseAddress, tryParsePrefix } from '../../core/address.js';
import {
  diffTunnel,
  isTunnelName,
  type ObservedTunnel,
  type PeerStatus,
  type TunnelChange,
  type TunnelDriverKind,
  type TunnelIntent,
  type TunnelPeer,
  type TunnelStatus,
  validateTunnelIntent,
} from '../../core/tunnel.js';
import type { TunnelDriver, WireGuardImplementation } from './driver.js';
import { generateKeyPair } from './keys.js';

interface FakePeer {
  peer: TunnelPeer;
  /** The endpoint in use: configured, or learned from the peer's handshake. */
  endpoint: string | undefined;
  handshakeAt: number | undefined;
  rxBytes: number;
  txBytes: number;
}

interface FakeTunnel {
  name: string;
  kind: WireGuardImplementation;
  publicKey: string | undefined;
  listenPort: number;
  mtu: number;
  up: boolean;
  addresses: string[];
  peers: Map<string, FakePeer>;
  /** Fake pid of its wireguard-go (userspace only). */
  pid: number | undefined;
}

/** What WireGuard adds to each packet and what a handshake costs, for plausible counters. */
const PACKET_OVERHEAD = 32;
const HANDSHAKE_BYTES = 148 + 92;
/** A fresh interface's MTU (WireGuard's default). */
const DEFAULT_MTU = 1420;

function refuse(reason: string): IpferryError {
  return new IpferryError('IPF_E_DATAPLANE', { reason });
}

function refuseForeign(name: string): void {
  if (!isTunnelName(name)) {
    throw validationError([
      { path: 'name', message: `${JSON.stringify(name)} is not an ipferry tunnel (ipf…) name` },
    ]);
  }
}

/** The machine (shared socket directory, process table) and the underlay between hosts. */
export class FakeTunnelNetwork {
  readonly hosts = new Set<FakeTunnelDriver>();
  /** userspace control sockets: name → pid of the daemon serving it. */
  readonly sockets = new Map<string, number>();
  /** Live fake wireguard-go processes: pid → interface name. */
  readonly processes = new Map<number, string>();
  #nextPid = 1000;
  clock = 1_700_000_000;

  /** A daemon for tunnel `name`; WireGuard's also takes the machine-wide socket, tinc's not. */
  spawn(name: string, socket = true): number {
    const pid = this.#nextPid++;
    this.processes.set(pid, name);
    if (socket) this.sockets.set(name, pid);
    return pid;
  }

  kill(pid: number): void {
    const name = this.processes.get(pid);
    this.processes.delete(pid);
    if (name !== undefined && this.sockets.get(name) === pid) this.sockets.delete(name);
  }

  /** The host holding underlay address `address`. */
  hostAt(address: string): FakeTunnelDriver | undefined {
    return [...this.hosts].find((h) => h.underlay.includes(address));
  }
}

export interface FakeTunnelDriverOptions {
  readonly network: FakeTunnelNetwork;
  /** Name of the host, for dumps and errors. */
  readonly host: string;
  /** The host's underlay addresses (where other hosts' endpoints point). */
  readonly underlay: readonly string[];
  readonly implementation?: WireGuardImplementation;
  /** Which driver the fake plays (default WireGuard). */
  readonly driver?: TunnelDriverKind;
}

/** A public key of the driver's kind (the fake never needs the private half). */
function fakeKey(driver: TunnelDriverKind): string {
  if (driver === 'wireguard') return generateKeyPair().publicKey;
  const { publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return publicKey.export({ type: 'pkcs1', format: 'pem' }).toString();
}

export class FakeTunnelDriver implements TunnelDriver {
  readonly kind = 'fake';
  readonly host: string;
  readonly underlay: readonly string[];
  readonly #network: FakeTunnelNetwork;
  readonly #implementation: WireGuardImplementation;
  readonly #driver: TunnelDriverKind;
  readonly #keys: { readonly publicKey: string };
  #tunnels = new Map<string, FakeTunnel>();

  constructor(options: FakeTunnelDriverOptions) {
    this.host = options.host;
    this.underlay = options.underlay;
    this.#network = options.network;
    this.#driver = options.driver ?? 'wireguard';
    this.#keys = { publicKey: fakeKey(this.#driver) };
    // tinc is a userspace daemon, always.
    this.#implementation =
      this.#driver === 'tinc' ? 'userspace' : (options.implementation ?? 'userspace');
    this.#network.hosts.add(this);
  }

  get #tinc(): boolean {
    return this.#driver === 'tinc';
  }

  async detect(): Promise<WireGuardImplementation> {
    await Promise.resolve();
    return this.#implementation;
  }

  async publicKey(): Promise<string> {
    await Promise.resolve();
    return this.#keys.publicKey;
  }

  async observe(name: string): Promise<ObservedTunnel | undefined> {
    await Promise.resolve();
    refuseForeign(name);
    const t = this.#tunnels.get(name);
    return t ? snapshot(t, this.#driver) : undefined;
  }

  async apply(input: TunnelIntent): Promise<readonly TunnelChange[]> {
    await Promise.resolve();
    const intent = validateTunnelIntent(input);
    if ((intent.driver ?? 'wireguard') !== this.#driver) {
      throw validationError([
        { path: 'driver', message: `must be "${this.#driver}" for the ${this.#driver} driver` },
      ]);
    }
    const current = this.#tunnels.get(intent.name);
    const changes = diffTunnel(
      intent,
      current && snapshot(current, this.#driver),
      this.#keys.publicKey,
    );
    if (changes.length === 0) return changes;
    const clash = [...this.#tunnels.values()].find(
      (t) => t.name !== intent.name && t.listenPort === intent.listenPort,
    );
    if (clash) {
      throw refuse(
        this.#tinc
          ? `tincd for ${intent.name}: Can't bind to 0.0.0.0 port ${intent.listenPort}/tcp: Address already in use (${clash.name})`
          : `wg set ${intent.name} listen-port ${intent.listenPort}: Address already in use (${clash.name})`,
      );
    }
    if (
      !current &&
      !this.#tinc &&
      this.#implementation === 'userspace' &&
      this.#network.sockets.has(intent.name)
    ) {
      throw refuse(`wireguard-go ${intent.name}: UAPI listen error: unix socket in use`);
    }
    const next: FakeTunnel = current
      ? { ...current, addresses: [...current.addresses], peers: new Map(current.peers) }
      : {
          name: intent.name,
          kind: this.#implementation,
          publicKey: undefined,
          listenPort: 0,
          mtu: DEFAULT_MTU,
          up: false,
          addresses: [],
          peers: new Map(),
          pid: undefined,
        };
    for (const change of changes) this.#change(next, change);
    if (!current && next.kind === 'userspace') {
      next.pid = this.#network.spawn(next.name, !this.#tinc);
    }
    this.#tunnels.set(next.name, next);
    return changes;
  }

  #change(t: FakeTunnel, change: TunnelChange): void {
    switch (change.kind) {
      case 'create':
        return;
      case 'private-key':
        t.publicKey = this.#keys.publicKey;
        return;
      case 'listen-port':
        t.listenPort = change.port;
        return;
      case 'peer-add':
        t.peers.set(change.peer.publicKey, {
          peer: change.peer,
          endpoint: change.peer.endpoint,
          handshakeAt: undefined,
          rxBytes: 0,
          txBytes: 0,
        });
        return;
      case 'peer-update': {
        const old = t.peers.get(change.peer.publicKey);
        if (!old) throw refuse(`peer ${change.peer.publicKey} is not on ${t.name}`);
        // Like `wg set`, only the named fields change; the session and counters stay.
        t.peers.set(change.peer.publicKey, {
          ...old,
          peer: change.peer,
          endpoint: change.fields.includes('endpoint') ? change.peer.endpoint : old.endpoint,
        });
        return;
      }
      case 'peer-remove':
        if (!t.peers.delete(change.publicKey)) {
          throw refuse(`peer ${change.publicKey} is not on ${t.name}`);
        }
        return;
      case 'mtu':
        t.mtu = change.mtu;
        return;
      case 'address-add':
        if (t.addresses.includes(change.address)) {
          throw refuse(`ip address add ${change.address} dev ${t.name}: File exists`);
        }
        t.addresses = [...t.addresses, change.address].sort();
        return;
      case 'address-del':
        if (!t.addresses.includes(change.address)) {
          throw refuse(`ip address del ${change.address} dev ${t.name}: Cannot assign`);
        }
        t.addresses = t.addresses.filter((a) => a !== change.address);
        return;
      case 'up':
        t.up = true;
        return;
    }
  }

  async remove(name: string): Promise<boolean> {
    await Promise.resolve();
    refuseForeign(name);
    const t = this.#tunnels.get(name);
    if (!t) return false;
    if (t.pid !== undefined) this.#network.kill(t.pid);
    this.#tunnels.delete(name);
    return true;
  }

  async status(name: string): Promise<TunnelStatus | undefined> {
    await Promise.resolve();
    refuseForeign(name);
    const t = this.#tunnels.get(name);
    if (!t) return undefined;
    // Persistent keepalives keep handshaking without traffic.
    for (const p of t.peers.values()) {
      if (p.peer.keepaliveSeconds !== undefined) this.#handshake(t, p);
    }
    const now = this.#network.clock;
    const peers: PeerStatus[] = [...t.peers.values()]
      .sort((a, b) => (a.peer.publicKey < b.peer.publicKey ? -1 : 1))
      .map((p) =>
        this.#tinc
          ? {
              // tinc: reachable or not, no handshake times, no counters.
              publicKey: p.peer.publicKey,
              endpoint: p.endpoint,
              handshakeAgeSeconds: this.#far(t, p) && p.handshakeAt !== undefined ? 0 : undefined,
              rxBytes: 0,
              txBytes: 0,
            }
          : {
              publicKey: p.peer.publicKey,
              endpoint: p.endpoint,
              handshakeAgeSeconds: p.handshakeAt === undefined ? undefined : now - p.handshakeAt,
              rxBytes: p.rxBytes,
              txBytes: p.txBytes,
            },
      );
    return { name, peers };
  }

  // -------------------------------------------------------------------------------------------
  // The wire: what the conformance suite's probes ask of the fake.

  /** The tunnel and peer that would carry a packet from here to inner `address`. */
  #route(address: string): { t: FakeTunnel; p: FakePeer; source: string } | undefined {
    for (const t of this.#tunnels.values()) {
      if (!t.up) continue;
      // The connected route of one of the tunnel's addresses reaches `address`.
      const source = t.addresses.find((a) => contains(a, address));
      if (source === undefined) continue;
      const p = this.#tinc
        ? // Switch mode: the frame goes to whichever peer holds the address (ARP finds it).
          [...t.peers.values()].find((peer) =>
            this.#far(t, peer)?.t.addresses.some((a) => a.startsWith(`${address}/`)),
          )
        : [...t.peers.values()]
            .map((peer) => ({ peer, match: longestMatch(peer.peer.allowedIps, address) }))
            .filter((m) => m.match >= 0)
            .sort((a, b) => b.match - a.match)[0]?.peer;
      if (p) return { t, p, source: source.slice(0, source.indexOf('/')) };
    }
    return undefined;
  }

  /** The far end of peer `p` of tunnel `t`: its host, tunnel and our peer entry there. */
  #far(
    t: FakeTunnel,
    p: FakePeer,
  ): { host: FakeTunnelDriver; t: FakeTunnel; p: FakePeer } | undefined {
    for (const host of this.#network.hosts) {
      if (host === this) continue;
      for (const other of host.#tunnels.values()) {
        if (other.publicKey !== p.peer.publicKey) continue;
        const back = other.peers.get(this.#keys.publicKey);
        if (!back || t.publicKey !== this.#keys.publicKey) continue;
        const outward = p.endpoint !== undefined && host.#serves(other, p.endpoint);
        const inward = back.endpoint !== undefined && this.#serves(t, back.endpoint);
        if (outward || inward) return { host, t: other, p: back };
      }
    }
    return undefined;
  }

  #serves(t: FakeTunnel, endpoint: string): boolean {
    const colon = endpoint.lastIndexOf(':');
    const host = endpoint.slice(0, colon).replace(/^\[|\]$/g, '');
    return this.underlay.includes(host) && Number(endpoint.slice(colon + 1)) === t.listenPort;
  }

  #handshake(t: FakeTunnel, p: FakePeer): boolean {
    const far = this.#far(t, p);
    if (!far) return false;
    const now = this.#network.clock;
    if (p.handshakeAt === undefined || far.p.handshakeAt === undefined) {
      p.txBytes += HANDSHAKE_BYTES / 2;
      far.p.rxBytes += HANDSHAKE_BYTES / 2;
    }
    p.handshakeAt = now;
    far.p.handshakeAt = now;
    // Each side learns where the other's packets come from.
    p.endpoint ??= `${far.host.underlay[0] ?? ''}:${far.t.listenPort}`;
    far.p.endpoint = `${this.underlay[0] ?? ''}:${t.listenPort}`;
    return true;
  }

  /**
   * Sends `bytes` from this host to inner `address` and the answer back; true when both
   * arrive (cryptokey routing both ways). The source is this host's tunnel address.
   */
  exchange(address: string, bytes = 84): { source: string } | undefined {
    const out = this.#route(address);
    if (!out || !this.#handshake(out.t, out.p)) return undefined;
    const far = this.#far(out.t, out.p);
    if (!far?.t.up || !far.t.addresses.some((a) => a.startsWith(`${address}/`))) return undefined;
    if (!this.#tinc && longestMatch(far.p.peer.allowedIps, out.source) < 0) return undefined;
    const back = far.host.#route(out.source);
    if (back?.p !== far.p) return undefined;
    out.p.txBytes += bytes + PACKET_OVERHEAD;
    far.p.rxBytes += bytes + PACKET_OVERHEAD;
    far.p.txBytes += bytes + PACKET_OVERHEAD;
    out.p.rxBytes += bytes + PACKET_OVERHEAD;
    return { source: out.source };
  }

  /** Changes a tunnel behind the driver's back, like an administrator with `ip link` would. */
  tamper(name: string, change: { mtu?: number; up?: boolean }): void {
    const t = this.#tunnels.get(name);
    if (!t) throw refuse(`no tunnel ${name} on ${this.host}`);
    if (change.mtu !== undefined) t.mtu = change.mtu;
    if (change.up !== undefined) t.up = change.up;
  }

  /** Every tunnel of this host, one block each, stable order. */
  dump(): string {
    return [...this.#tunnels.values()]
      .sort((a, b) => (a.name < b.name ? -1 : 1))
      .map((t) =>
        [
          `${t.name} ${t.kind}${t.pid === undefined ? '' : ` pid ${t.pid}`} port ${t.listenPort} mtu ${t.mtu} ${t.up ? 'up' : 'down'}`,
          `  key ${t.publicKey ?? '(none)'}`,
          ...t.addresses.map((a) => `  address ${a}`),
          ...[...t.peers.values()].map(
            (p) =>
              `  peer ${p.peer.publicKey} endpoint ${p.endpoint ?? '(none)'} allowed ${p.peer.allowedIps.join(',') || '(none)'} keepalive ${p.peer.keepaliveSeconds ?? 'off'}`,
          ),
        ].join('\n'),
      )
      .join('\n');
  }
}

/**
 * The tunnel as its driver reads it back. WireGuard reports current (maybe learned) endpoints
 * and knows no node names; tinc reads its files: configured endpoints and node names.
 */
function snapshot(t: FakeTunnel, driver: TunnelDriverKind): ObservedTunnel {
  return {
    name: t.name,
    kind: t.kind,
    publicKey: t.publicKey,
    listenPort: t.listenPort,
    mtu: t.mtu,
    up: t.up,
    addresses: [...t.addresses],
    peers: [...t.peers.values()]
      .map(({ peer: { endpoint: configured, node, ...rest }, endpoint }) => {
        if (driver === 'tinc') {
          return {
            ...rest,
            ...(node === undefined ? {} : { node }),
            ...(configured === undefined ? {} : { endpoint: configured }),
          };
        }
        return endpoint === undefined ? rest : { ...rest, endpoint };
      })
      .sort((a, b) => (a.publicKey < b.publicKey ? -1 : 1)),
  };
}

/** Whether the prefix of `cidr` (host bits allowed, like an interface address) holds `address`. */
function contains(cidr: string, address: string): boolean {
  const prefix = tryParsePrefix(cidr, false);
  const target = tryParseAddress(address);
  return !!prefix && !!target && rangeContains(prefixRange(prefix), target);
}

/** Length of the longest prefix of `prefixes` containing `address`, or -1. */
function longestMatch(prefixes: readonly string[], address: string): number {
  return Math.max(
    -1,
    ...prefixes.map((p) => (contains(p, address) ? Number(p.split('/')[1]) : -1)),
  );
}
