/**
 * The seam between the agent and a host's tunnels. A driver makes one tunnel interface look
 * like a TunnelIntent (src/core/tunnel.ts) and reads it back; the WireGuard and tinc drivers and
 * the strict fake implement it alike and are held to one conformance suite
 * (test/support/tunnel-conformance.ts).
 */
import type {
  ObservedTunnel,
  TunnelChange,
  TunnelIntent,
  TunnelStatus,
} from '../../core/tunnel.js';
import type { TunnelCheck } from '../../core/tunnelhealth.js';

/** Kernel module, or a userspace daemon (wireguard-go where the module is missing; tincd always). */
export type WireGuardImplementation = 'kernel' | 'userspace';

/** Structurally the agent's logger (pino-style), so the agent can pass its own. */
export interface TunnelLogger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
}

export interface TunnelDriver {
  /** `wireguard`, `tinc`, `fake`… for logs and status. */
  readonly kind: string;
  /** Which implementation new tunnels get; decided once and cached. */
  detect(): Promise<WireGuardImplementation>;
  /** This node's public key of the driver's kind; the key pair is made on first use. */
  publicKey(): Promise<string>;
  /** The tunnel as the kernel holds it now, or undefined when there is no such interface. */
  observe(name: string): Promise<ObservedTunnel | undefined>;
  /**
   * Makes the tunnel look like `intent`, changing only what differs, and returns the changes
   * made (none when it already matched). An invalid intent is refused before anything is
   * created; a tunnel created by this call is removed again when a later step fails.
   */
  apply(intent: TunnelIntent): Promise<readonly TunnelChange[]>;
  /** Deletes the interface and everything that belongs to it; false when there was nothing. */
  remove(name: string): Promise<boolean>;
  /** Per peer: handshake age, bytes, current endpoint; undefined when there is no such tunnel. */
  status(name: string): Promise<TunnelStatus | undefined>;
  /**
   * Whether tunnel `name` is still as this driver's last apply() left it (src/core/
   * tunnelhealth.ts): its device there with the same ifindex, up, its addresses and MAC, its
   * daemon the same process. Cheap enough for every probe interval, and taken in turn with
   * apply() and remove(), so a tunnel is never judged halfway through one. Undefined when this
   * driver has not applied it (or removed it since). Optional: the agent's tunnel watch uses it.
   */
  check?(name: string): Promise<TunnelCheck | undefined>;
  /**
   * Mends tunnel `name` in place when only its daemon was lost (the device, kept by the driver,
   * still as the last apply left it): a fresh daemon on the same device, nothing else read or
   * written, so it is back within milliseconds. True when the tunnel is whole; false when it
   * needs a whole apply. Optional: drivers whose device goes with its daemon leave it out.
   */
  restore?(name: string): Promise<boolean>;
}
