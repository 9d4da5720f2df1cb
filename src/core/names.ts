/**
 * Every name and number ipferry owns in a host's kernel, in one place (and in
 * docs/kernel-contract.md). Other software keeps its own tables, marks and ids; ipferry only
 * ever changes what carries these.
 */

/** The one nftables table (family inet: IPv4 and IPv6 in one place, NAT included). */
export const NFT_FAMILY = 'inet';
export const NFT_TABLE = 'ipferry';

/**
 * Version of the table's fixed part (chains, rules, map declarations). When the kernel holds
 * another version — an upgrade, or a rule deleted by hand — the table is rebuilt in one
 * transaction; otherwise only map elements change.
 */
export const NFT_SKELETON_VERSION = '8';

/**
 * Packet mark bit for hairpin connections (a LAN client reaching a FIP whose target is on its
 * own LAN): set in the forward chain, masqueraded in postrouting. One bit, masked, so marks of
 * other software (kube-proxy 0x4000/0x8000, WireGuard fwmarks) pass untouched.
 */
export const HAIRPIN_MARK = 0x20000000;

/**
 * Routes and rules ipferry adds carry this route protocol number (`ip route … proto 241`), so it
 * can find and delete exactly its own; the routing table for answers sent back into a tunnel and
 * the priority of the `from FIP` rules that choose it (below main's 32766, with gaps around).
 */
export const ROUTE_PROTO = 241;
export const ROUTE_TABLE = 7447;
export const RULE_PRIORITY = 10100;

/**
 * Connections through a tunnel to a nat/ports target carry this mark bit: on the gateway,
 * `fwmark … lookup FORWARD_TABLE` sends what it DNATed to such a target into the tunnel; on the
 * target's node, the connection mark of what came in through the tunnel becomes the packet mark
 * of its answers, and `fwmark … lookup ROUTE_TABLE` sends them back the same way.
 */
export const TUNNEL_MARK = 0x40000000;
export const FORWARD_TABLE = 7448;
export const FORWARD_RULE_PRIORITY = 10200;
export const REPLY_RULE_PRIORITY = 10300;

/**
 * A node sending its traffic out through its gateway (egress) keeps what leaves from its own
 * address on its own routes: `from OWN lookup main suppress_prefixlength 1` at this priority,
 * then `from OWN lookup EGRESS_TABLE` (its own default route) just after; both after reply-to.
 */
export const EGRESS_TABLE = 7449;
export const EGRESS_RULE_PRIORITY = 10400;

/** Kernel sysctls the gateway needs; set only when different, recorded in the kernel contract. */
export const SYSCTL_IPV4_FORWARD = 'net.ipv4.ip_forward';
export const SYSCTL_IPV6_FORWARD = 'net.ipv6.conf.all.forwarding';

/**
 * Linux delays proxied ARP answers by a random 0–0.8 s (proxy_delay, meant for routers that
 * should let the real owner answer first). A routed on-link FIP has no other owner: answer now.
 */
export function proxyArpDelaySysctl(uplink: string): string {
  return `net.ipv4.neigh.${uplink}.proxy_delay`;
}

export function proxyNdpSysctl(uplink: string): string {
  return `net.ipv6.conf.${uplink}.proxy_ndp`;
}

/**
 * Label of an on-link IPv4 FIP held on an uplink: how ipferry recognises its own addresses
 * (the kernel wants labels to start with the interface name, 15 characters at most).
 */
export function claimLabel(uplink: string): string {
  return `${uplink}:ipf`;
}

/** What a route says besides its prefix, table and device. */
export interface RouteVia {
  /** Next hop: an address of the route's family, or `inet6 fe80::…` for an IPv4 route. */
  readonly via?: string;
  /** Preferred source address for packets the host itself sends by this route. */
  readonly src?: string;
  /** Route MTU: what a path through a tunnel found to pass, below the interface's MTU. */
  readonly mtu?: number;
}
