/**
 * The far end's whole configuration on Linux, as one wg-quick(8) file: the tunnel ([Interface],
 * the gateway as its one [Peer]) and, in PreUp/PostUp/PostDown hooks, the return path an agent
 * would build (docs/kernel-contract.md, "Routes and rules"): answers from a routed FIP leave
 * through the tunnel by `ip rule from FIP lookup 7447`; connections that arrived through the
 * tunnel to the host's own address are marked (conntrack) and their answers follow the mark
 * into the same table; the host's own default route stays as it is (`Table = off`: wg-quick adds
 * no route for the peer's 0.0.0.0/0). The private key never appears: wg reads it from its file.
 *
 * wg-quick cuts every line at `#`, and runs each hook through bash with `%i` as the interface:
 * no hook here holds a `#`, and every value in one comes parsed from the spec.
 */
import type { FarEndSpec } from './farend.js';
import { revisionHeader } from './revision.js';
import { REPLY_RULE_PRIORITY, ROUTE_TABLE, RULE_PRIORITY, TUNNEL_MARK } from '../names.js';

/** The far end's own nftables table: apart from the host's rules and from an agent's. */
export const FAR_END_NFT_TABLE = 'ipferry_farend';

export function renderLinux(spec: FarEndSpec, storeRevision?: number): string {
  const path = `/etc/wireguard/${spec.iface}.conf`;
  const lines = [
    `# ipferry: the far end of node ${spec.node}'s tunnel to gateway ${spec.gateway.name} (Linux, wg-quick)`,
    `# Save as ${path} (mode 0600), then: wg-quick up ${spec.iface}`,
    `# Its private key stays on this host: (umask 077; wg genkey > ${spec.keyFile})`,
    `# and \`wg pubkey < ${spec.keyFile}\` is the key registered with ipferry node add --unmanaged.`,
    `# After a change, render again; --check FILE says whether this file is current.`,
    ...revisionHeader(spec, storeRevision),
    '',
    '[Interface]',
    ...(spec.listenPort !== undefined ? [`ListenPort = ${spec.listenPort}`] : []),
    `Address = ${spec.linkAddress}/32, ${spec.probeAddress}/64`,
    ...spec.routed.map((r) => `Address = ${r.address}/${r.family === 4 ? 32 : 128}`),
    `MTU = ${spec.mtu}`,
    'Table = off',
    ...hooks(spec),
    '',
    '[Peer]',
    `# gateway ${spec.gateway.name}`,
    `PublicKey = ${spec.gateway.publicKey}`,
    ...(spec.gateway.endpoint ? [`Endpoint = ${spec.gateway.endpoint}`] : []),
    'AllowedIPs = 0.0.0.0/0, ::/0',
    ...(spec.keepaliveSeconds !== undefined
      ? [`PersistentKeepalive = ${spec.keepaliveSeconds}`]
      : []),
  ];
  return `${lines.join('\n')}\n`;
}

/** The families whose answers go back through the tunnel: they need the table's default. */
function families(spec: FarEndSpec): (4 | 6)[] {
  const used = new Set<4 | 6>([
    ...spec.routed.map((r) => r.family),
    ...spec.services.map((s) => s.family),
  ]);
  return ([4, 6] as const).filter((f) => used.has(f));
}

function hooks(spec: FarEndSpec): string[] {
  const mark = `0x${TUNNEL_MARK.toString(16)}`;
  const rules: { family: 4 | 6; selector: string; priority: number }[] = [
    ...spec.routed.map((r) => ({
      family: r.family,
      selector: `from ${r.address}`,
      priority: RULE_PRIORITY,
    })),
    ...families(spec)
      .filter((f) => spec.services.some((s) => s.family === f))
      .map((family) => ({
        family,
        selector: `fwmark ${mark}/${mark}`,
        priority: REPLY_RULE_PRIORITY,
      })),
  ];
  const rule = (verb: 'add' | 'del', r: (typeof rules)[number]): string =>
    `ip -${r.family} rule ${verb} ${r.selector} lookup ${ROUTE_TABLE} priority ${r.priority}`;
  const out = [
    // What a run that ended without PostDown (a crash, a reboot keeps none) may have left.
    ...rules.map((r) => `PreUp = ${rule('del', r)} 2>/dev/null || true`),
    `PostUp = wg set %i private-key ${spec.keyFile}`,
  ];
  // Clients arrive on the tunnel although the route back to them is the host's uplink: loose
  // reverse-path filtering there (the link address gives the filter an IPv4 address to use).
  if (families(spec).includes(4)) out.push('PostUp = sysctl -q -w net.ipv4.conf.%i.rp_filter=2');
  for (const f of families(spec))
    out.push(`PostUp = ip -${f} route replace default dev %i table ${ROUTE_TABLE}`);
  out.push(...rules.map((r) => `PostUp = ${rule('add', r)}`));
  if (spec.services.length > 0) out.push(`PostUp = nft '${replyMarks(mark)}'`);
  out.push(...rules.map((r) => `PostDown = ${rule('del', r)}`));
  if (spec.services.length > 0) out.push(`PostDown = nft delete table inet ${FAR_END_NFT_TABLE}`);
  return out;
}

/**
 * New connections that arrive on the tunnel get the connection mark; their packets leaving this
 * host carry it as packet mark (a route hook, so the stack routes them again by it); and SYNs
 * into the tunnel announce an MSS that fits it (the stack chose it from the uplink's route,
 * before the mark rerouted the answer). In one nft transaction: add, delete and add the table
 * again, so a table left by an earlier run is replaced rather than doubled.
 */
function replyMarks(mark: string): string {
  const t = `inet ${FAR_END_NFT_TABLE}`;
  return [
    `add table ${t}`,
    `delete table ${t}`,
    `add table ${t}`,
    `add chain ${t} replymark { type filter hook prerouting priority mangle; policy accept; }`,
    `add rule ${t} replymark iifname "%i" ct state new ct mark set ct mark | ${mark}`,
    `add chain ${t} replyroute { type route hook output priority mangle; policy accept; }`,
    `add rule ${t} replyroute ct mark & ${mark} == ${mark} meta mark set meta mark | ${mark}`,
    `add chain ${t} tunclamp { type filter hook postrouting priority mangle; policy accept; }`,
    `add rule ${t} tunclamp oifname "%i" tcp flags syn / syn,rst tcp option maxseg size set rt mtu`,
  ].join('; ');
}
