/**
 * The tunnel watch: every probe interval, and at once when the kernel reports a change of one
 * of ipferry's tunnel links, it asks the dataplane whether this node's tunnel is still as the
 * last apply left it (src/core/tunnelhealth.ts: the device there with the same ifindex, up,
 * with carrier, its addresses and MAC; the same daemon). A tunnel daemon that crashed,
 * re-executed itself or lost its device is so found within milliseconds, rather than after
 * rounds of dead path probes or at the next resync, and restored at once: in place when only
 * the daemon was lost (tinc's tap outlives tincd, so a fresh tincd on it is the whole repair),
 * otherwise by a pass that reads the kernel again: the routes through a lost device went with
 * it, and the loop would otherwise take them to be there until its next resync.
 *
 * Meanwhile the tunnel's peers count as dead, so the FIPs behind them are UNREACHABLE: from
 * when the loss is noticed until a probe through the restored tunnel is answered (a restored
 * device is not yet a path: the peer's daemon may take a while to reconnect). The latest loss,
 * when it was noticed, restored and answered again, goes into the node's tunnel health.
 *
 * A device made anew by an apply (tincd restarted for a new listen port) is no loss, but the
 * routes through it are gone all the same: the next round asks for such a pass too.
 */
import { SMALL_PROBE_PAYLOAD } from '../core/pathmtu.js';
import type { TunnelRestore } from '../core/model.js';
import { type TunnelIntent, tunnelProbeAddress } from '../core/tunnel.js';
import type { TunnelCheck } from '../core/tunnelhealth.js';
import type { Dataplane } from '../dataplane/dataplane.js';
import type { Logger } from './log.js';

export interface TunnelWatchOptions {
  readonly dataplane: Pick<
    Dataplane,
    'checkTunnel' | 'restoreTunnel' | 'probePath' | 'watchTunnelLinks'
  >;
  readonly log: Logger;
  /** The probe interval: how often the tunnel is checked. */
  readonly intervalMs: number;
  /** A pass that reads the kernel again before it diffs; resolves once it has run. */
  readonly resync: () => Promise<void>;
  /** The dead peers changed: FIP states must be reported again. */
  readonly onChange: () => void;
  /** Milliseconds since the epoch (tests). */
  readonly now?: () => number;
}

/** A repair that left the tunnel lost is asked for again after this, doubling up to the max. */
const MAX_REPAIR_BACKOFF_MS = 5000;

interface Incident {
  readonly tunnel: string;
  faults: string[];
  readonly noticedAt: number;
  restoredAt?: number;
  answeredAt?: number;
  repair?: 'daemon' | 'pass';
}

export class TunnelWatch {
  private timer?: NodeJS.Timeout;
  private round?: Promise<void>;
  private stopped = true;
  /** The interface's index at the latest round, when it had one. */
  private ifindex?: number;
  private incident?: Incident;
  /** Peers behind a lost tunnel that have not answered through the restored one yet. */
  private readonly dead = new Set<string>();
  /**
   * Dead peers nobody has asked deadPeers() about yet: kept dead until then, however soon they
   * answer, so that a loss mended within milliseconds still shows as UNREACHABLE once.
   */
  private readonly unreported = new Set<string>();
  private repairing?: Promise<void>;
  /** No repair before this (after one that did not help), and the next wait. */
  private notBefore = 0;
  private backoffMs: number;
  private clearing?: Promise<void>;
  /** This watch asked for the repair of the current loss (its pass then reports it repaired). */
  private asked = false;
  private unwatchLinks?: () => void;
  /** A link event came during a round: one more round after it. */
  private again = false;
  /** How often the tunnel was found lost, and restored, since the start (/metrics). */
  private readonly counts = { lost: 0, restored: 0 };

  constructor(private readonly o: TunnelWatchOptions) {
    this.backoffMs = o.intervalMs;
  }

  start(): void {
    if (!this.o.dataplane.checkTunnel) return;
    this.stopped = false;
    this.timer = setInterval(() => this.kick(), this.o.intervalMs);
    this.timer.unref();
    // A crashed daemon's device goes at once: check then, not at the next tick.
    this.unwatchLinks = this.o.dataplane.watchTunnelLinks?.(() => this.kickSoon());
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.unwatchLinks?.();
    await this.round;
    await this.clearing;
  }

  /**
   * Peer nodes behind a lost tunnel that have not answered through it since (the reconcile
   * loop's report asks, to mark the FIPs behind them UNREACHABLE).
   */
  deadPeers(): ReadonlySet<string> {
    if (this.unreported.size > 0) {
      this.unreported.clear();
      // Those that answered already may be cleared now: look again at once.
      setImmediate(() => this.kick());
    }
    return new Set(this.dead);
  }

  /** How often the tunnel was found lost, and restored, since the watch started. */
  incidents(): { readonly lost: number; readonly restored: number } {
    return { ...this.counts };
  }

  /** The latest loss of the tunnel and its restoring, for the node's tunnel health. */
  restore(): TunnelRestore | undefined {
    const i = this.incident;
    if (!i) return undefined;
    const iso = (ms: number): string => new Date(ms).toISOString();
    return {
      faults: i.faults,
      noticedAt: iso(i.noticedAt),
      ...(i.restoredAt !== undefined ? { restoredAt: iso(i.restoredAt) } : {}),
      ...(i.repair !== undefined ? { repair: i.repair } : {}),
      ...(i.answeredAt !== undefined ? { answeredAt: iso(i.answeredAt) } : {}),
    };
  }

  /**
   * A round now, or right after the one running (which may have looked before the change):
   * link events come in bursts, and this asks for one round more at most.
   */
  private kickSoon(): void {
    if (!this.round) return this.kick();
    if (this.again) return;
    this.again = true;
    void this.round.finally(() => {
      this.again = false;
      this.kick();
    });
  }

  /** Starts a round unless one is running (a slow `ip` must not pile rounds up). */
  kick(): void {
    if (this.stopped || this.round) return;
    this.round = this.check().finally(() => {
      this.round = undefined;
    });
  }

  /** One round: check the tunnel, ask for a repair, or see whether its peers answer again. */
  async check(): Promise<void> {
    let found: TunnelCheck | undefined;
    try {
      found = await this.o.dataplane.checkTunnel?.();
    } catch (e) {
      this.o.log.warn({ err: (e as Error).message }, 'tunnel check failed');
      return;
    }
    if (!found) return; // no tunnel applied (or none since a failed apply): nothing to judge
    const now = this.now();
    const peers = carriers(found.applied);
    // Peers that left the tunnel no longer hold a FIP back.
    let changed = false;
    for (const node of this.dead) {
      if (peers.includes(node)) continue;
      this.dead.delete(node);
      this.unreported.delete(node);
      changed = true;
    }
    // Lost now, or lost and already repaired by a pass that came before this check.
    const lost = found.faults.length > 0 ? found.faults : (found.repaired?.faults ?? []);
    if (lost.length > 0 && (!this.incident || this.incident.restoredAt !== undefined)) {
      const faults = lost.map((f) => f.detail);
      this.incident = {
        tunnel: found.name,
        faults,
        noticedAt: found.repaired?.at ?? now,
        ...(found.repaired ? { repair: 'pass' as const } : {}),
      };
      this.counts.lost++;
      this.o.log.warn({ tunnel: found.name, faults }, 'tunnel lost: restoring it');
      for (const node of peers) {
        if (this.dead.has(node)) continue;
        this.dead.add(node);
        this.unreported.add(node);
        changed = true;
      }
      this.backoffMs = this.o.intervalMs;
      this.notBefore = 0;
    }
    if (found.faults.length > 0) {
      // Judged against the device as it is now: the repair makes another one.
      this.ifindex = found.ifindex;
      if (changed) this.o.onChange();
      this.asked = true;
      this.repair(now);
      return;
    }
    const replaced =
      this.ifindex !== undefined && found.ifindex !== undefined && found.ifindex !== this.ifindex;
    this.ifindex = found.ifindex;
    // The backoff is for repairs that did not help; this one did.
    this.backoffMs = this.o.intervalMs;
    this.notBefore = 0;
    const i = this.incident;
    if (i && i.restoredAt === undefined) this.restored(i, now);
    // Repaired by a pass that did not read the kernel again (its routes are still to come
    // back), or made anew by an apply (a restart): no loss, but the routes through the old
    // device went with it.
    if ((found.repaired && !this.asked) || replaced) this.repair(now);
    this.asked = false;
    if (changed) this.o.onChange();
    // Not before the repair's pass has run: a peer answers through the restored device before
    // the routes through it are back, and the FIP would never show UNREACHABLE at all.
    if (this.dead.size > 0 && !this.repairing) this.clearing ??= this.clear(found.name);
  }

  /**
   * Mends the tunnel in place when the driver can (only its daemon was lost), else asks for a
   * pass that re-reads the kernel; one at a time, backing off while it fails.
   */
  private repair(now: number): void {
    if (this.repairing || now < this.notBefore) return;
    this.repairing = this.restoreInPlace()
      .then((whole) => {
        const i = this.incident;
        if (i && i.restoredAt === undefined) {
          i.repair = whole ? 'daemon' : 'pass';
          // The driver saw it whole: no need to wait for the next check to say so.
          if (whole) this.restored(i, this.now());
        }
        return whole ? undefined : this.o.resync();
      })
      .catch((e: unknown) => {
        this.o.log.warn({ err: (e as Error).message }, 'tunnel repair pass failed');
      })
      .finally(() => {
        this.repairing = undefined;
        // If it did not help, the next repair waits longer.
        this.notBefore = this.now() + this.backoffMs;
        this.backoffMs = Math.min(MAX_REPAIR_BACKOFF_MS, this.backoffMs * 2);
        // Whether it did shows at once: no need to wait for the next tick to know.
        this.kick();
      });
  }

  private restored(i: Incident, at: number): void {
    i.restoredAt = at;
    this.counts.restored++;
    this.o.log.info(
      { tunnel: i.tunnel, faults: i.faults, restoredMs: at - i.noticedAt, repair: i.repair },
      'tunnel restored',
    );
  }

  private async restoreInPlace(): Promise<boolean> {
    try {
      return (await this.o.dataplane.restoreTunnel?.()) ?? false;
    } catch (e) {
      this.o.log.warn({ err: (e as Error).message }, 'tunnel restore in place failed');
      return false;
    }
  }

  /** Probes each dead peer through the restored tunnel; those that answer are alive again. */
  private async clear(ifname: string): Promise<void> {
    try {
      const answered = await Promise.all(
        [...this.dead]
          .filter((node) => !this.unreported.has(node))
          .map(async (node) => {
            const rtt = await this.o.dataplane.probePath({
              ifname,
              address: tunnelProbeAddress(node),
              payload: SMALL_PROBE_PAYLOAD,
              fragment: false,
            });
            return rtt === undefined ? undefined : node;
          }),
      );
      const back = answered.filter((n): n is string => n !== undefined && this.dead.delete(n));
      if (back.length === 0) return;
      const i = this.incident;
      if (this.dead.size === 0 && i && i.answeredAt === undefined) {
        i.answeredAt = this.now();
        this.o.log.info(
          { tunnel: i.tunnel, answeredMs: i.answeredAt - i.noticedAt },
          'tunnel answers again',
        );
      }
      this.o.onChange();
    } finally {
      this.clearing = undefined;
    }
  }

  private now(): number {
    return this.o.now?.() ?? Date.now();
  }
}

/**
 * The peers traffic goes to through `tunnel` (as the path probes choose them): every tinc
 * peer; a WireGuard peer unless it is known only so that its first handshake is accepted
 * (allowed nothing but its probe address).
 */
function carriers(tunnel: TunnelIntent | undefined): string[] {
  return (tunnel?.peers ?? []).flatMap((p) => {
    if (!p.node) return [];
    const probe = `${tunnelProbeAddress(p.node)}/128`;
    return tunnel?.driver === 'tinc' || p.allowedIps.some((a) => a !== probe) ? [p.node] : [];
  });
}
