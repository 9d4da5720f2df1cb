/**
 * Active probes through this node's tunnel, one peer at a time: is the path alive, does a
 * packet of a large TLS ClientHello's size come through, and if not, what is the largest that
 * does. The findings feed back into compile (routes toward a peer carry the MTU found, and the
 * MSS clamp follows the route), into the FIP states the agent reports (a FIP whose path is dead
 * is UNREACHABLE, not ACTIVE) and into the tunnel health in `node show` and `status`. The
 * decisions are in src/core/pathmtu.ts; this module only sends probes and keeps the results.
 *
 * A lowered MTU is kept (and saved in the state directory, so a restart does not open the
 * black hole again while it searches anew) until the peer leaves the tunnel. It is not raised
 * by itself: probing above it would need the routes back at the full MTU for a moment.
 */
import { readFile, rename, writeFile } from 'node:fs/promises';
import type { PathProbe } from '../core/model.js';
import {
  DEAD_AFTER_ROUNDS,
  LARGE_PROBE_PAYLOAD,
  largestPassing,
  MIN_PATH_MTU,
  PROBE_HEADERS,
  SMALL_PROBE_PAYLOAD,
  searchOutcome,
} from '../core/pathmtu.js';
import { type TunnelIntent, tunnelProbeAddress } from '../core/tunnel.js';
import type { Dataplane } from '../dataplane/dataplane.js';
import type { Logger } from './log.js';

/** What the reconcile loop asks of the path monitor. */
export interface PathView {
  /** Peer node → MTU of the routes toward it, for peers whose path carries less than the tunnel. */
  peerMtu(): ReadonlyMap<string, number>;
  /** Peer nodes whose tunnel path does not answer. */
  deadPeers(): ReadonlySet<string>;
  /**
   * Peer nodes whose path has been measured (by this run, or kept from the previous one):
   * FIPs are routed only toward these (TunnelOptions.measured).
   */
  measured(): ReadonlySet<string>;
  /**
   * The tunnel as the latest pass compiled it, and the peers that carry traffic through it or
   * wait for their path to be measured: those are probed.
   */
  track(tunnel: TunnelIntent | undefined, carriers?: readonly string[]): void;
}

export interface PathMonitorOptions {
  readonly dataplane: Pick<Dataplane, 'probePath'>;
  readonly log: Logger;
  /** Pause between rounds of probes. */
  readonly intervalMs: number;
  /** Something changed that compile or the FIP states depend on. */
  readonly onChange: () => void;
  /** Where lowered MTUs survive a restart (JSON); none: kept in memory only. */
  readonly stateFile?: string;
}

interface Peer {
  readonly node: string;
  readonly publicKey: string;
  readonly address: string;
}

interface PeerState {
  alive: boolean;
  /** A whole round passed: the path's MTU is known (the tunnel's, or the one found). */
  measured: boolean;
  failedRounds: number;
  checkedAt?: string;
  rttMs?: number;
  largePasses?: boolean;
  pathMtu?: number;
  note?: string;
}

/** How soon a round is repeated while a peer's path is still to be measured. */
const MEASURE_AGAIN_MS = 100;

/**
 * How long the large probe and each probe of the search wait for an answer after their last
 * request: three round trips of the small probe that just answered, at least 0.25 s (an answer
 * from a busy peer) and at most 2 s.
 */
export function searchWaitSeconds(rttMs: number): number {
  return Math.min(2, Math.max(0.25, Math.round((rttMs * 3) / 10) / 100));
}

export class PathMonitor implements PathView {
  private readonly peers = new Map<string, Peer>();
  private readonly states = new Map<string, PeerState>();
  private ifname?: string;
  private tunnelMtu = 0;
  private timer?: NodeJS.Timeout;
  private round?: Promise<void>;
  private stopped = true;
  /** Peers measured by a previous run, with the MTU found when it was lower than the tunnel's. */
  private loaded: Record<string, { pathMtu?: number }> = {};
  private soon?: NodeJS.Timeout;

  constructor(private readonly o: PathMonitorOptions) {}

  /**
   * Reads what a previous run measured, so that compile uses it from the first pass: a restart
   * neither opens a black hole again nor holds back FIPs whose path was measured already.
   * The file is `{"peers": {NODE: {"pathMtu"?: N}}}`; an older one maps NODE → lowered MTU.
   */
  async load(): Promise<void> {
    if (!this.o.stateFile) return;
    try {
      const parsed = JSON.parse(await readFile(this.o.stateFile, 'utf8')) as unknown;
      if (typeof parsed !== 'object' || parsed === null) return;
      const peers = (parsed as { peers?: unknown }).peers ?? parsed;
      if (typeof peers !== 'object' || peers === null) return;
      for (const [node, entry] of Object.entries(peers)) {
        const mtu = typeof entry === 'number' ? entry : (entry as { pathMtu?: unknown }).pathMtu;
        if (typeof mtu === 'number' && Number.isInteger(mtu) && mtu >= MIN_PATH_MTU)
          this.loaded[node] = { pathMtu: mtu };
        else if (typeof entry === 'object' && entry !== null && mtu === undefined)
          this.loaded[node] = {};
      }
    } catch {
      // No file yet, or an unreadable one: measure again.
    }
  }

  start(): void {
    this.stopped = false;
    this.timer = setInterval(() => this.kick(), this.o.intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    if (this.soon) clearTimeout(this.soon);
    await this.round;
  }

  peerMtu(): ReadonlyMap<string, number> {
    const out = new Map<string, number>();
    for (const [node, { pathMtu }] of Object.entries(this.loaded))
      if (pathMtu !== undefined) out.set(node, pathMtu);
    for (const [node, s] of this.states) if (s.pathMtu !== undefined) out.set(node, s.pathMtu);
    return out;
  }

  measured(): ReadonlySet<string> {
    const out = new Set(Object.keys(this.loaded));
    for (const [node, s] of this.states) if (s.measured) out.add(node);
    return out;
  }

  /** Tracked peers whose path is still to be measured. */
  private measuring(): ReadonlySet<string> {
    return new Set(
      [...this.peers.keys()].filter(
        (node) => !this.states.get(node)?.measured && this.loaded[node] === undefined,
      ),
    );
  }

  deadPeers(): ReadonlySet<string> {
    return new Set([...this.states].filter(([, s]) => !s.alive).map(([node]) => node));
  }

  /** Per peer public key, what the probes found (for the tunnel health in the liveness record). */
  probes(): ReadonlyMap<string, PathProbe> {
    const out = new Map<string, PathProbe>();
    for (const [node, s] of this.states) {
      const peer = this.peers.get(node);
      if (!peer || s.checkedAt === undefined) continue;
      out.set(peer.publicKey, {
        alive: s.alive,
        checkedAt: s.checkedAt,
        ...(s.rttMs !== undefined ? { rttMs: s.rttMs } : {}),
        ...(s.largePasses !== undefined ? { largePasses: s.largePasses } : {}),
        ...(s.pathMtu !== undefined ? { pathMtu: s.pathMtu } : {}),
        tunnelMtu: this.tunnelMtu,
        ...(s.note !== undefined ? { note: s.note } : {}),
      });
    }
    return out;
  }

  /**
   * Probes the peers that carry traffic: on a gateway the nodes serving its FIPs, on a node its
   * gateway. A peer known only so that its first handshake is accepted is not probed.
   */
  track(tunnel: TunnelIntent | undefined, carriers?: readonly string[]): void {
    const wanted = new Map<string, Peer>();
    const carrying = new Set(carriers ?? []);
    for (const p of tunnel?.peers ?? []) {
      if (!p.node) continue;
      const address = tunnelProbeAddress(p.node);
      const carries = carrying.has(p.node) || p.allowedIps.some((a) => a !== `${address}/128`);
      if (carries || tunnel?.driver === 'tinc')
        wanted.set(p.node, { node: p.node, publicKey: p.publicKey, address });
    }
    this.ifname = tunnel?.name;
    this.tunnelMtu = tunnel?.mtu ?? 0;
    let changed = false;
    for (const node of this.peers.keys()) {
      if (wanted.has(node)) continue;
      this.peers.delete(node);
      delete this.loaded[node];
      const had = this.states.get(node);
      this.states.delete(node);
      if (had && (had.pathMtu !== undefined || !had.alive)) changed = true;
    }
    let fresh = false;
    for (const [node, peer] of wanted) {
      if (!this.peers.has(node)) fresh = true;
      this.peers.set(node, peer);
    }
    if (changed) this.changed();
    if (fresh) this.kick();
  }

  /** Starts a round of probes unless one is running. */
  kick(): void {
    if (this.stopped || this.round) return;
    this.round = this.probeAll().finally(() => {
      this.round = undefined;
    });
  }

  private async probeAll(): Promise<void> {
    const ifname = this.ifname;
    if (!ifname) return;
    const results = await Promise.all(
      [...this.peers.values()].map((peer) =>
        this.probePeer(ifname, peer).catch((e: unknown) => {
          this.o.log.warn({ peer: peer.node, err: (e as Error).message }, 'path probe failed');
          return false;
        }),
      ),
    );
    if (results.some(Boolean)) this.changed();
    // FIPs wait for a path to be measured: ask again at once (each probe has its own timeout)
    // rather than at the next tick, e.g. while a new tunnel makes its first handshake.
    if (this.measuring().size > 0 && !this.stopped) {
      if (this.soon) clearTimeout(this.soon);
      this.soon = setTimeout(() => this.kick(), Math.min(MEASURE_AGAIN_MS, this.o.intervalMs));
      this.soon.unref();
    }
  }

  /** One round for one peer; true when something compile or the FIP states use changed. */
  private async probePeer(ifname: string, peer: Peer): Promise<boolean> {
    const s: PeerState = this.states.get(peer.node) ?? {
      alive: true,
      measured: false,
      failedRounds: 0,
    };
    const kept = this.loaded[peer.node];
    if (!s.measured && kept !== undefined) {
      s.measured = true;
      if (s.pathMtu === undefined && kept.pathMtu !== undefined) {
        s.pathMtu = kept.pathMtu;
        s.note = `MTU ${s.pathMtu} kept from the previous run`;
      }
    }
    this.states.set(peer.node, s);
    const probe = (
      payload: number,
      fragment: boolean,
      waitSeconds?: number,
    ): Promise<number | undefined> =>
      this.o.dataplane.probePath({
        ifname,
        address: peer.address,
        payload,
        fragment,
        ...(waitSeconds !== undefined ? { waitSeconds } : {}),
      });
    const before = { alive: s.alive, pathMtu: s.pathMtu, measured: s.measured };
    const rtt = await probe(SMALL_PROBE_PAYLOAD, false);
    s.checkedAt = new Date().toISOString();
    if (rtt === undefined) {
      s.failedRounds++;
      if (s.failedRounds >= DEAD_AFTER_ROUNDS) {
        s.alive = false;
        s.note = `no answer through the tunnel for ${s.failedRounds} rounds of probes`;
      }
      return this.report(peer, s, before);
    }
    s.failedRounds = 0;
    s.alive = true;
    s.rttMs = rtt;
    // The answer to a small probe came back: the large one and the search wait about one
    // round trip plus a margin, so that a whole round fits well inside a probe interval.
    const wait = searchWaitSeconds(rtt);
    s.largePasses = (await probe(LARGE_PROBE_PAYLOAD, true, wait)) !== undefined;
    if (!s.largePasses) {
      const found = await largestPassing(
        MIN_PATH_MTU,
        this.tunnelMtu,
        async (size) => (await probe(size - PROBE_HEADERS, false, wait)) !== undefined,
      );
      const outcome = searchOutcome(found, s.pathMtu ?? this.tunnelMtu);
      if (outcome.pathMtu !== undefined) s.pathMtu = outcome.pathMtu;
      s.note = outcome.note;
    } else {
      s.note =
        s.pathMtu === undefined
          ? `a ${LARGE_PROBE_PAYLOAD}-byte probe passes at the tunnel's MTU ${this.tunnelMtu}`
          : `a ${LARGE_PROBE_PAYLOAD}-byte probe passes at MTU ${s.pathMtu}, the largest packet the path carried whole when the search ran (the tunnel's is ${this.tunnelMtu})`;
    }
    s.measured = true;
    return this.report(peer, s, before);
  }

  private report(
    peer: Peer,
    s: PeerState,
    before: { alive: boolean; pathMtu: number | undefined; measured: boolean },
  ): boolean {
    if (s.alive === before.alive && s.pathMtu === before.pathMtu && s.measured === before.measured)
      return false;
    const fields = { peer: peer.node, alive: s.alive, pathMtu: s.pathMtu, note: s.note };
    if (s.alive) this.o.log.info(fields, 'tunnel path changed');
    else this.o.log.warn(fields, 'tunnel path dead');
    return true;
  }

  private changed(): void {
    void this.save();
    this.o.onChange();
  }

  private async save(): Promise<void> {
    if (!this.o.stateFile) return;
    const mtus = this.peerMtu();
    const peers: Record<string, { pathMtu?: number }> = {};
    for (const [node, s] of this.states) {
      if (!s.measured) continue;
      const pathMtu = mtus.get(node);
      peers[node] = pathMtu !== undefined ? { pathMtu } : {};
    }
    this.loaded = { ...peers };
    const tmp = `${this.o.stateFile}.tmp`;
    try {
      await writeFile(tmp, JSON.stringify({ peers }) + '\n', { mode: 0o600 });
      await rename(tmp, this.o.stateFile);
    } catch (e) {
      this.o.log.warn({ err: (e as Error).message }, 'could not save path MTUs');
    }
  }
}
