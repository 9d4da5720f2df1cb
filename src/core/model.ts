/**
 * The desired-state model: what an operator asks for, as stored (JSON) under the keys of
 * `keys.ts`. Everything here is plain data; validation lives in `validate.ts`, decisions in
 * `lifecycle.ts`, and the kernel's view of it in `compile.ts`.
 */
import type { Family } from './address.js';
import type { TunnelDriverKind } from './tunnel.js';

export type AssociationMode = 'nat' | 'routed' | 'ports';
export const ASSOCIATION_MODES: readonly AssociationMode[] = ['nat', 'routed', 'ports'];

export type Protocol = 'tcp' | 'udp';
export const PROTOCOLS: readonly Protocol[] = ['tcp', 'udp'];

/**
 * How the upstream delivers a pool's addresses to its gateway:
 * - `routed`: the provider routes them to the gateway's address (nothing to answer ARP/NDP for);
 * - `onlink`: they sit on the uplink's segment, so the gateway must answer ARP/NDP for them on
 *   the `uplink` interface.
 */
export type PoolDelivery = 'routed' | 'onlink';

/** One line of a pool, in canonical form. */
export type PoolEntry =
  | { readonly kind: 'cidr'; readonly cidr: string }
  | { readonly kind: 'range'; readonly first: string; readonly last: string }
  | {
      readonly kind: 'address';
      readonly address: string;
      /** A MAC pinned to this address (IP Floater's `arp MAC`). */
      readonly mac?: string;
      /**
       * The gateway's own address, shared with it: usable only for port forwards, never of the
       * ports the gateway itself listens on. The common case of a small VPS with one address.
       */
      readonly shared?: boolean;
    };

export interface Pool {
  readonly name: string;
  readonly gateway: string;
  readonly delivery: PoolDelivery;
  readonly uplink?: string;
  readonly entries: readonly PoolEntry[];
  /**
   * Where the pool's FIPs may send traffic (IP Floater's PRIVATE_IP_RANGES): canonical CIDRs. A
   * target outside every one of them is refused; absent, any target is allowed.
   */
  readonly targetRanges?: readonly string[];
  readonly description?: string;
  readonly tags: readonly string[];
  readonly createdAt: string;
}

export interface Association {
  readonly mode: AssociationMode;
  /** Address the FIP is forwarded to (nat), delivered to (routed), or ports default to. */
  readonly target: string;
  /** Node that holds the target; required for `routed`, optional on the gateway's LAN. */
  readonly node?: string;
  /** Opt-in SNAT toward the target, for targets that cannot route replies back (loses the client address). */
  readonly masquerade?: boolean;
  readonly associatedAt: string;
}

export interface PortForward {
  /** Short stable id, unique within its FIP. */
  readonly id: string;
  readonly protocol: Protocol;
  /** External port range, inclusive; a single port has `port === portEnd`. */
  readonly port: number;
  readonly portEnd: number;
  /** First target port; the range maps onto `targetPort … targetPort + (portEnd - port)`. */
  readonly targetPort: number;
  readonly target: string;
  readonly node?: string;
  readonly description?: string;
}

export interface FloatingIp {
  readonly address: string;
  readonly family: Family;
  readonly pool: string;
  /** True when the address is the gateway's own (shared): ports mode only. */
  readonly shared: boolean;
  readonly description?: string;
  readonly tags: readonly string[];
  /**
   * SHA-256 (hex) of the idempotency token of the allocate call that created it. Only the digest:
   * nodes and read-only tokens read FIP records, and a token shown there could be replayed.
   */
  readonly clientTokenSha256?: string;
  /**
   * The token itself, as versions before the digest stored it. Still compared on a retry; the
   * FIP's next write replaces it with `clientTokenSha256` (service/control.ts).
   */
  readonly clientToken?: string;
  readonly association?: Association;
  readonly forwards: readonly PortForward[];
  /** Last forward id number handed out (ids are never reused). */
  readonly forwardSerial?: number;
  readonly allocatedAt: string;
}

/**
 * DOWN: not associated (or not realised yet). ACTIVE: realised, and where it goes through a
 * tunnel the path answers probes. UNREACHABLE: realised, but the tunnel to the node serving it
 * does not answer. ERROR: the dataplane refused or could not realise it.
 */
export type FipState = 'DOWN' | 'ACTIVE' | 'UNREACHABLE' | 'ERROR';

/** What an agent reports after realising (or failing to realise) a FIP. */
export interface FipStatus {
  readonly address: string;
  readonly state: FipState;
  /** Node whose agent wrote this status. */
  readonly node: string;
  /** Store revision of the FIP record that this status describes. */
  readonly revision: number;
  readonly message?: string;
  readonly updatedAt: string;
}

export interface NodeRecord {
  readonly name: string;
  readonly site?: string;
  /** Underlay endpoint (host:port) other nodes reach it at. */
  readonly endpoint?: string;
  /** Public key of the node's tunnel, in the form its driver uses (see tunnelDriver). */
  readonly publicKey?: string;
  /** The node's fleet-mesh address (mesh.ts): unique, kept until the node is removed. */
  readonly overlayIp?: string;
  /** Which tunnel the node runs; absent means WireGuard. Peers must run the same one. */
  readonly tunnelDriver?: TunnelDriverKind;
  readonly addresses: readonly string[];
  /** TCP/UDP ports the node itself listens on (API, SSH, tunnel): never forwarded away. */
  readonly reservedPorts: readonly ReservedPort[];
  readonly agentVersion?: string;
  /** How the node's own traffic leaves when not by its own default route (see core/compile/egress.ts). */
  readonly egress?: Exclude<EgressMode, 'own'>;
  /**
   * Registered by the operator for a host that runs no agent (`ipferry node add --unmanaged`):
   * its gateway's agent peers with it as with any node; the host is configured from
   * `ipferry node render` (docs/far-ends.md). It never has a liveness record.
   */
  readonly unmanaged?: true;
  readonly registeredAt: string;
}

/**
 * Where a node's own outbound traffic leaves: `own` by its own default route; `fip` through the
 * tunnel to its gateway, as its routed FIP; `masquerade` through the tunnel, behind the gateway.
 */
export type EgressMode = 'own' | 'fip' | 'masquerade';

export interface ReservedPort {
  readonly protocol: Protocol;
  readonly port: number;
}

/**
 * Liveness of a node, kept under a lease by its agent. The store keeps it in two records (see
 * keys.ts): membership (`alive/NODE`: name, since, pid; written once per lease) and the health
 * report (NodeHealth: tunnel, mesh; rewritten when it changes, outside what agents watch). Readers
 * see them merged.
 */
export interface NodeLiveness {
  readonly name: string;
  readonly since: string;
  readonly pid?: number;
  /** The node's tunnel as its agent last saw it. */
  readonly tunnel?: TunnelHealth;
  /** The node's mesh as its agent last applied it. */
  readonly mesh?: MeshNodeReport;
}

/**
 * What an agent reports about its node's health (keys.nodeHealth). Not under its liveness lease:
 * readers show it only while the node is alive, and it stays as the last word of a dead node.
 */
export interface NodeHealth {
  readonly name: string;
  readonly tunnel?: TunnelHealth;
  readonly mesh?: MeshNodeReport;
  /** The agent's latest reconcile pass: what writes wait for (core/applied.ts). */
  readonly pass?: PassReport;
  /** When the report last changed. */
  readonly updatedAt: string;
}

/** What an agent reports about its latest reconcile pass (in its health record). */
export interface PassReport {
  /** Store revision the pass realised (with or without errors). */
  readonly revision: number;
  /** What the dataplane refused in that pass, in words; absent when nothing was refused. */
  readonly errors?: readonly string[];
}

export interface TunnelHealth {
  readonly name: string;
  readonly checkedAt: string;
  /** The tunnel's driver; absent: WireGuard. */
  readonly driver?: TunnelDriverKind;
  /**
   * The interface's own byte counters, all peers together: reported by a driver that counts
   * nothing per peer (tinc 1.0), whose peers then have no rxBytes/txBytes.
   */
  readonly rxBytes?: number;
  readonly txBytes?: number;
  /** The latest time the agent found the tunnel's device or daemon lost, and restored it. */
  readonly restore?: TunnelRestore;
  readonly peers: readonly {
    readonly publicKey: string;
    /** The peer node, when a node with that key is registered (filled in by the API). */
    readonly node?: string;
    readonly endpoint?: string;
    /** Seconds since the latest handshake; absent when there was none, or the driver has none. */
    readonly handshakeAgeSeconds?: number;
    /** Whether the tunnel daemon reaches the peer: from a driver without handshakes (tinc). */
    readonly reachable?: boolean;
    /** Bytes from and to the peer; absent from a driver that counts none per peer (tinc). */
    readonly rxBytes?: number;
    readonly txBytes?: number;
    /** The latest active probe through the tunnel to the peer (see PathProbe). */
    readonly probe?: PathProbe;
  }[];
}

/**
 * A tunnel found not as the agent left it (its device gone or made anew, down, without its
 * addresses or MAC, its daemon dead or another one: src/core/tunnelhealth.ts) and restored.
 */
export interface TunnelRestore {
  /** What was wrong, in words. */
  readonly faults: readonly string[];
  /** When the agent's tunnel watch found it (at most one probe interval after it happened). */
  readonly noticedAt: string;
  /** When the tunnel was as applied again; absent while it is not. */
  readonly restoredAt?: string;
  /**
   * How: `daemon`, a new daemon on the device the driver kept (its routes never went);
   * `pass`, a reconcile pass that read the kernel again and rebuilt what went with the device.
   */
  readonly repair?: 'daemon' | 'pass';
  /** When every peer answered a probe through it again; absent while one does not. */
  readonly answeredAt?: string;
}

/** What an agent's probes through the tunnel found about the path to one peer. */
export interface PathProbe {
  /** Whether small probes are answered (false after consecutive rounds without an answer). */
  readonly alive: boolean;
  readonly checkedAt: string;
  /** Round trip of the latest answered small probe. */
  readonly rttMs?: number;
  /** Whether a probe with a 1,900-byte payload (fragmented inside the tunnel) came back. */
  readonly largePasses?: boolean;
  /** The largest packet found to pass, when less than the tunnel's MTU: routes use it. */
  readonly pathMtu?: number;
  /** The tunnel's own MTU, for comparison. */
  readonly tunnelMtu?: number;
  /** What was found and done, in words. */
  readonly note?: string;
}

/** A node as the API shows it: its record plus whether its agent is alive. */
export interface NodeView extends NodeRecord {
  readonly alive: boolean;
  readonly aliveSince?: string;
  readonly tunnel?: TunnelHealth;
  /** The node's mesh as its agent last applied it (its liveness record's report). */
  readonly mesh?: MeshNodeReport;
  /**
   * An unmanaged node (no agent, no tunnel report of its own): its tunnel as the live nodes
   * that peer with it see it (handshake, bytes, path probes), one entry per such node.
   */
  readonly seenBy?: readonly PeerSighting[];
}

/** A tunnel peer as another node's agent last reported it. */
export interface PeerSighting {
  /** The node whose agent saw it (its gateway). */
  readonly node: string;
  /** That node's tunnel interface. */
  readonly tunnel: string;
  readonly checkedAt: string;
  readonly peer: TunnelHealth['peers'][number];
}

/**
 * One entry of a host's neighbour (ARP/NDP) table, for `ipferry arp MAC`: the dataplane reads
 * them, the control plane and the API answer with them.
 */
export interface Neighbour {
  readonly address: string;
  readonly mac: string;
  readonly interface: string;
}

/** A membership change an agent holds back (more than maxChange members would go at once). */
export interface MeshHold {
  /** Overlay addresses of the members it keeps although they left. */
  readonly keeping: readonly string[];
  readonly maxChange: number;
  /** The store revision at which the hold began: a confirmation at or after it releases it. */
  readonly sinceRevision: number;
}

/** What a node's agent reports about its mesh in its liveness record. */
export interface MeshNodeReport {
  /** Store revision of the state the agent last applied. */
  readonly appliedRevision?: number;
  readonly rejectAll?: boolean;
  readonly members?: number;
  readonly hold?: MeshHold;
  /** The policy's trial ran out unconfirmed: this node runs the previous one. */
  readonly rolledBack?: boolean;
}
