/**
 * What the host itself has, as the dataplane reads it: compile needs it to keep ipferry off the
 * host's own feet (its addresses, interfaces, default routes).
 */

export interface HostFacts {
  /** Interface names (hairpin detection per interface). */
  readonly interfaces: readonly string[];
  /** The host's own addresses: never a nat/routed FIP, never dropped. */
  readonly addresses: readonly string[];
  /**
   * The host's own default routes (main table, not ipferry's), best first per family: egress
   * through a gateway keeps the tunnel's own packets on them (see egress.ts). Absent: none known.
   */
  readonly defaultRoutes?: readonly DefaultRoute[];
}

export interface DefaultRoute {
  readonly family: 4 | 6;
  readonly dev: string;
  /** Next hop; absent on a point-to-point uplink. */
  readonly via?: string;
  /** The source address the host uses by this route (its preferred source, else the uplink's first). */
  readonly src?: string;
  /** What the route carries: its own `mtu` metric, else its device's MTU. */
  readonly mtu?: number;
}

export const NO_FACTS: HostFacts = { interfaces: [], addresses: [] };

/**
 * Interface names ipferry writes into a kernel command: letters, digits and `_.@+-`, at most 15
 * (Linux's limit). Linux allows more (quotes, `#`); a host interface named otherwise is left out
 * of the host's facts, so it can break no command, rather than breaking every apply.
 */
export function isHandledInterfaceName(name: string): boolean {
  return /^[A-Za-z0-9_.@+-]{1,15}$/.test(name);
}
