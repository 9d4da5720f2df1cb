/**
 * Is a tunnel still the one the agent left? Pure comparison of two snapshots of a tunnel's
 * device and daemon, no I/O: the drivers take the snapshots (src/dataplane/tunnel/), the
 * agent's tunnel watch (src/agent/tunnelwatch.ts) acts on the faults.
 *
 * Why a snapshot and not the intent's diff: a tunnel daemon that crashes can come back by
 * itself in a state the diff does not see. tincd 1.0 catches a fatal signal, closes its tap,
 * sleeps 5 s and re-executes itself with another pid. A tap tincd made itself goes with the
 * close (and every route through it), and the re-executed tincd makes a new one: another
 * ifindex, down, bare, with a MAC of the kernel's choosing. The tinc driver therefore makes
 * the tap itself, persistent: it outlives the crash with its ifindex, MAC, addresses and
 * routes, and only its carrier tells that no daemon holds it. Comparing carrier, ifindex, MAC
 * and pid with what apply left tells either story at once, where the reconcile loop, which
 * takes the kernel to hold what its last apply left, would look only at its next resync.
 */
import type { TunnelIntent } from './tunnel.js';

/** A tunnel's device and daemon as a driver saw them. */
export interface TunnelSnapshot {
  /** The interface; absent when there is none. */
  readonly link?: {
    readonly ifindex: number;
    readonly up: boolean;
    /** tinc's tap only; WireGuard interfaces have no MAC. */
    readonly mac?: string;
    /**
     * Whether a daemon holds the device (tinc's persistent tap: the kernel's LOWER_UP). Absent
     * where the device goes with its daemon.
     */
    readonly carrier?: boolean;
    /** `ADDRESS/LEN`, canonical and sorted (as observe() reports them). */
    readonly addresses: readonly string[];
  };
  /** The daemon serving it (tincd, wireguard-go); absent when none runs or none is needed. */
  readonly daemon?: { readonly program: string; readonly pid: number };
}

export type TunnelFaultKind =
  | 'device-gone'
  | 'device-replaced'
  | 'link-down'
  | 'addresses-gone'
  | 'mac-changed'
  | 'carrier-lost'
  | 'daemon-gone'
  | 'daemon-replaced';

export interface TunnelFault {
  readonly kind: TunnelFaultKind;
  /** In words, for logs and `node show`. */
  readonly detail: string;
}

/** What a driver's check found: the tunnel's name and device now, and what is wrong with it. */
export interface TunnelCheck {
  readonly name: string;
  /** The interface's index now: another one than before means routes through it are gone. */
  readonly ifindex?: number;
  /** Empty when the tunnel is as the last apply left it. */
  readonly faults: readonly TunnelFault[];
  /**
   * A loss an apply() found and repaired since the last check (a reconcile pass came before the
   * check): the tunnel is whole again, but what went with the old device (its routes) is not
   * back, and its peers have not been heard through it yet. `at`: milliseconds since the epoch.
   */
  readonly repaired?: { readonly faults: readonly TunnelFault[]; readonly at: number };
  /** The intent last applied (the dataplane, which applied it, fills it in): its peers. */
  readonly applied?: TunnelIntent;
}

/**
 * How `now` falls short of `left` (the snapshot taken when apply had made the tunnel right).
 * Only losses count: an address or a daemon that appears is drift for the next apply, not a
 * lost tunnel.
 */
export function tunnelFaults(
  name: string,
  left: TunnelSnapshot,
  now: TunnelSnapshot,
): TunnelFault[] {
  const faults: TunnelFault[] = [];
  const was = left.link;
  const is = now.link;
  if (was && !is) faults.push({ kind: 'device-gone', detail: `${name} is gone` });
  if (was && is) {
    if (is.ifindex !== was.ifindex) {
      faults.push({
        kind: 'device-replaced',
        detail: `${name} was made anew (ifindex ${was.ifindex} → ${is.ifindex})`,
      });
    }
    if (was.up && !is.up) faults.push({ kind: 'link-down', detail: `${name} is down` });
    const missing = was.addresses.filter((a) => !is.addresses.includes(a));
    if (missing.length > 0) {
      faults.push({
        kind: 'addresses-gone',
        detail: `${name} lost ${missing.join(', ')}`,
      });
    }
    if (was.carrier === true && is.carrier === false) {
      faults.push({
        kind: 'carrier-lost',
        detail: `no daemon holds ${name} (no carrier)`,
      });
    }
    if (was.mac !== undefined && is.mac !== was.mac) {
      faults.push({
        kind: 'mac-changed',
        detail: `${name}'s MAC is ${is.mac ?? 'none'}, not ${was.mac}`,
      });
    }
  }
  const before = left.daemon;
  const after = now.daemon;
  if (before && !after) {
    faults.push({ kind: 'daemon-gone', detail: `${before.program} (pid ${before.pid}) is gone` });
  } else if (before && after && after.pid !== before.pid) {
    faults.push({
      kind: 'daemon-replaced',
      detail: `${before.program} pid ${before.pid} → ${after.pid} (crashed and re-executed, or restarted)`,
    });
  }
  return faults;
}
