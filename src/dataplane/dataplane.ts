/**
 * The seam between the reconcile loop and a host's kernel. The agent diffs the compiled intent
 * against `observe()` and hands the difference to `apply()`, which must be all-or-nothing: on
 * failure the host keeps exactly its previous state, so a refused FIP never leaves half a
 * mapping behind. Real drivers (nftables, iproute2, conntrack) and the strict fake implement it
 * alike and are held to one conformance suite.
 */
import type { HostFacts } from '../intent/facts.js';
import type { IntentDiff } from '../intent/diff.js';
import type { IntentElement } from '../intent/elements.js';
import type { TunnelIntent } from '../core/tunnel.js';
import type { TunnelHealth } from '../core/model.js';
import type { TunnelCheck } from '../core/tunnelhealth.js';

/** One active probe through the tunnel to a peer's link-local probe address. */
export interface PathProbeRequest {
  readonly ifname: string;
  /** The peer's probe address (tunnelProbeAddress). */
  readonly address: string;
  /** ICMPv6 echo payload bytes; the packet is 48 bytes more. */
  readonly payload: number;
  /**
   * true: the packet may be cut into fragments that fit the route (the way a large first packet
   * of a connection travels); false: it must pass whole or not at all (the path MTU search).
   */
  readonly fragment: boolean;
  /** Seconds to wait for an answer; absent: the liveness probe's own pace (see pingArgs). */
  readonly waitSeconds?: number;
}

/** Packets and bytes sent to one FIP since its counter element was added (its association). */
export interface FipCounter {
  readonly packets: number;
  readonly bytes: number;
}

export interface Dataplane {
  /** `fake`, `linux`… for logs and status. */
  readonly kind: string;
  /**
   * The elements this host holds now (only those ipferry owns). `wanted` is the intent about to
   * be applied: host settings ipferry does not own outright (sysctls) are read only when wanted,
   * so one that is no longer wanted is left as it is rather than reset.
   */
  observe(wanted: readonly IntentElement[]): Promise<IntentElement[]>;
  /** The host's own interfaces and addresses, which compile needs to stay off them. */
  facts(): Promise<HostFacts>;
  /**
   * The MTU of this host's route toward each of `hosts` (IP literals; its `mtu` metric, else
   * its device's), for the tunnel's underlay. Optional: without it, the default route's.
   */
  routeMtus?(hosts: readonly string[]): Promise<ReadonlyMap<string, number>>;
  /** Creates, updates or (undefined) removes this node's tunnel; idempotent. */
  applyTunnel(tunnel: TunnelIntent | undefined): Promise<void>;
  /** Handshakes and traffic of this node's tunnel, per peer; undefined without a tunnel. */
  tunnelHealth(): Promise<TunnelHealth | undefined>;
  /**
   * Whether the tunnel last applied is still as that apply left it (its device, link,
   * addresses, MAC, daemon: src/core/tunnelhealth.ts); undefined without one. Cheap: the
   * agent asks every probe interval. Optional: without it, a lost tunnel waits for a resync.
   */
  checkTunnel?(): Promise<TunnelCheck | undefined>;
  /**
   * Mends the tunnel last applied in place when only its daemon was lost (a fresh daemon on
   * the same device, whose routes are still there): true when it is whole, false when it needs
   * a pass that reads the kernel again. Optional: without it, that pass is the only repair.
   */
  restoreTunnel?(): Promise<boolean>;
  /**
   * Sends a few echo requests through the tunnel; resolves to the round trip in milliseconds of
   * the first answer, or undefined when none came back in time. Never throws for a lost probe.
   */
  probePath(request: PathProbeRequest): Promise<number | undefined>;
  /** This node's tunnel public key, published in its node record. */
  tunnelPublicKey(): Promise<string | undefined>;
  /**
   * The per-FIP counters (`counter` elements), by FIP. Optional: a dataplane without counters
   * leaves it out.
   */
  fipCounters?(): Promise<Map<string, FipCounter>>;
  /**
   * Applies a diff all-or-nothing: on failure it takes back what it had done and throws
   * IpferryError('IPF_E_DATAPLANE') (Linux: connections already forgotten stay forgotten, and
   * a damaged table comes back sound rather than as it was; docs/kernel-contract.md).
   */
  apply(diff: IntentDiff): Promise<void>;
  close(): Promise<void>;
  /**
   * Calls `onChange` (debounced) whenever the host's addresses change, so that compile sees new
   * facts at once — say, the old server giving up the address a routed FIP now carries — instead
   * of at the next resync. Returns how to stop watching. Optional: without it, the resync does.
   */
  watchAddresses?(onChange: () => void): () => void;
  /**
   * Calls `onChange` at once whenever a link of ipferry's tunnels changes (created, deleted,
   * up or down): a tunnel daemon that crashed and took its device along is then checked within
   * milliseconds, not at the next probe interval. Returns how to stop watching. Optional:
   * without it, the tunnel watch's interval does.
   */
  watchTunnelLinks?(onChange: () => void): () => void;
}
