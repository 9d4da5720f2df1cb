/**
 * The far end's whole configuration on FreeBSD (13 and later: if_wg in the base system,
 * wireguard-tools from packages for wg(8)), as five files, each after a `# ==> PATH <==` line:
 *
 * - `/etc/rc.conf` lines: the cloned interface, its addresses and MTU (rc.conf(5): the network
 *   script creates `cloned_interfaces`, then runs `ifconfig_IF`, `ifconfig_IF_ipv6` and
 *   `ifconfig_IF_aliasN`), and pf at boot;
 * - `/etc/start_if.IF`: run by the network script for the interface before its addresses
 *   (rc.conf(5), network.subr `ifscript_up`): `wg setconf` and the private key from its file;
 * - `/usr/local/etc/wireguard/IF.conf`: the wg(8) configuration (`setconf` reads only
 *   [Interface]/[Peer] keys: no Address or MTU there, and no private key);
 * - `/etc/pf.conf` lines: the anchor and where it is loaded from;
 * - `/etc/pf.anchors/ipferry`: `pass in … reply-to (IF)` for what the gateway sends through the
 *   tunnel, so that the answers of those connections leave through the tunnel while the host's
 *   own default route stays as it is — pf's form of what an agent does with policy routing.
 *
 * docs/far-ends.md gives the reason for each line, from pf.conf(5), wg(8) and rc.conf(5).
 */
import type { FarEndService, FarEndSpec } from './farend.js';
import { revisionHeader } from './revision.js';

export const PF_ANCHOR = 'ipferry';
export const PF_ANCHOR_FILE = '/etc/pf.anchors/ipferry';
const WG = '/usr/local/bin/wg';

export function renderFreebsd(spec: FarEndSpec, storeRevision?: number): string {
  const header = revisionHeader(spec, storeRevision);
  const wgConf = `/usr/local/etc/wireguard/${spec.iface}.conf`;
  const files: [string, string[]][] = [
    ['/etc/rc.conf', rcConf(spec)],
    [`/etc/start_if.${spec.iface}`, startIf(spec, wgConf)],
    [wgConf, wgSetconf(spec)],
    ['/etc/pf.conf', pfConf()],
    [PF_ANCHOR_FILE, pfAnchor(spec)],
  ];
  const intro = [
    `# ipferry: the far end of node ${spec.node}'s tunnel to gateway ${spec.gateway.name} (FreeBSD: rc.conf, wg(8), pf)`,
    `# Five files follow, each after its "==> PATH <==" line: add the rc.conf and pf.conf lines to`,
    `# those files, write the others whole. Its private key stays on this host:`,
    `#   (umask 077; wg genkey > ${spec.keyFile})`,
    `# and \`wg pubkey < ${spec.keyFile}\` is the key registered with ipferry node add --unmanaged.`,
    `# Then: service netif restart ${spec.iface} && service pf reload (or reboot).`,
    `# After a change, render again; --check FILE says whether a file is current.`,
  ];
  const parts = files.map(([path, body]) => [`# ==> ${path} <==`, ...header, ...body].join('\n'));
  return `${[intro.join('\n'), ...parts].join('\n\n')}\n`;
}

function rcConf(spec: FarEndSpec): string[] {
  const i = spec.iface;
  const aliases = [
    `inet6 ${spec.probeAddress}%${i} prefixlen 64`,
    ...spec.routed.map((r) =>
      r.family === 4 ? `inet ${r.address}/32` : `inet6 ${r.address} prefixlen 128`,
    ),
  ];
  return [
    `cloned_interfaces="\${cloned_interfaces} ${i}"`,
    `ifconfig_${i}="inet ${spec.linkAddress}/32 mtu ${spec.mtu} up"`,
    `ifconfig_${i}_ipv6="inet6 -ifdisabled -auto_linklocal"`,
    ...aliases.map((a, n) => `ifconfig_${i}_alias${n}="${a}"`),
    'pf_enable="YES"',
  ];
}

function startIf(spec: FarEndSpec, wgConf: string): string[] {
  return [
    `${WG} setconf ${spec.iface} ${wgConf}`,
    `${WG} set ${spec.iface} private-key ${spec.keyFile}`,
  ];
}

function wgSetconf(spec: FarEndSpec): string[] {
  return [
    '[Interface]',
    `# PrivateKey: none here; /etc/start_if.${spec.iface} sets it from ${spec.keyFile}`,
    ...(spec.listenPort !== undefined ? [`ListenPort = ${spec.listenPort}`] : []),
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
}

function pfConf(): string[] {
  return [
    '# in the filter rules, where what the tunnel delivers is to be let in:',
    `anchor "${PF_ANCHOR}"`,
    `load anchor "${PF_ANCHOR}" from "${PF_ANCHOR_FILE}"`,
  ];
}

function pfAnchor(spec: FarEndSpec): string[] {
  const i = spec.iface;
  return [
    `# the gateway's path probes: ping6 to this end's link-local address (no address here: pf`,
    '# and the kernel write link-local addresses with their scope, which a rule would not match)',
    `pass in quick on ${i} inet6 proto icmp6 icmp6-type echoreq keep state`,
    ...(spec.routed.length > 0 ? ['# routed FIPs, delivered unchanged: every protocol'] : []),
    ...spec.routed.map(
      (r) =>
        `pass in quick on ${i} reply-to (${i}) inet${r.family === 6 ? '6' : ''} from any to ${r.address} keep state`,
    ),
    ...(spec.services.length > 0
      ? ["# what the gateway forwards to this host's own addresses"]
      : []),
    ...spec.services.map((s) => serviceRule(i, s)),
  ];
}

function serviceRule(i: string, s: FarEndService): string {
  const family = s.family === 6 ? 'inet6' : 'inet';
  if (!s.protocol)
    return `pass in quick on ${i} reply-to (${i}) ${family} from any to ${s.target} keep state`;
  const port = s.port === s.portEnd ? `${s.port}` : `${s.port}:${s.portEnd}`;
  return `pass in quick on ${i} reply-to (${i}) ${family} proto ${s.protocol} from any to ${s.target} port ${port} keep state`;
}
