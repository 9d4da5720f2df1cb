/**
 * What the far end of an unmanaged node's tunnel needs, worked out from the store's records
 * (src/core/farend.ts registers such a node): the gateway it peers with, the routed FIPs it holds
 * and the addresses and ports the gateway forwards to it. Every value the renderers write comes
 * from here and is parsed first — names, keys, endpoints, addresses, ports — so a record written
 * around the API cannot put a word of its own into a configuration file or a shell line.
 *
 * It mirrors what an agent on that node would compile (src/core/compile/tunnels.ts): the gateway
 * peer carries everything (answers go to any client), the node's tunnel holds its routed FIPs,
 * its link-local IPv4 address (for the reverse-path filter) and its probe address (the
 * gateway's path probes ping it), and answers leave through the tunnel by policy routing.
 */
import { tryParseAddress } from '../address.js';
import { validationError } from '../errors.js';
import type { FloatingIp, NodeRecord, Pool, Protocol } from '../model.js';
import {
  isWireGuardKey,
  parseEndpoint,
  tunnelLinkAddress,
  tunnelMtu,
  tunnelName,
  tunnelProbeAddress,
} from '../tunnel.js';
import { checkName, Problems } from '../validate.js';

export type FarEndOs = 'linux' | 'freebsd';
export const FAR_END_OSES: readonly FarEndOs[] = ['linux', 'freebsd'];

/** How often the far end refreshes its path through NATs toward the gateway (as an agent). */
export const FAR_END_KEEPALIVE_SECONDS = 25;

/** A service the gateway sends to the far end's own address: one port range, or every port. */
export interface FarEndService {
  readonly target: string;
  readonly family: 4 | 6;
  /** Absent: every protocol and port (a `nat` association). */
  readonly protocol?: Protocol;
  readonly port?: number;
  readonly portEnd?: number;
}

export interface FarEndSpec {
  readonly os: FarEndOs;
  readonly node: string;
  readonly gateway: {
    readonly name: string;
    readonly publicKey: string;
    /** Canonical host:port; absent when the gateway only answers (the node has an endpoint). */
    readonly endpoint?: string;
  };
  /** The tunnel's interface on the far host. */
  readonly iface: string;
  /** The far end's WireGuard private key file (made there; never leaves it). */
  readonly keyFile: string;
  /** From the node's own endpoint; absent: a random port (it calls the gateway). */
  readonly listenPort?: number;
  readonly keepaliveSeconds?: number;
  readonly mtu: number;
  /** The tunnel's link-local IPv4 address (no prefix length). */
  readonly linkAddress: string;
  /** The tunnel's IPv6 probe address (fe80::…, a /64). */
  readonly probeAddress: string;
  /** Routed FIPs the node holds, IPv4 first, each in canonical form. */
  readonly routed: readonly { readonly address: string; readonly family: 4 | 6 }[];
  /** nat targets and port forwards to the node's own addresses. */
  readonly services: readonly FarEndService[];
}

/** The records render reads (as the API lists them). */
export interface FarEndState {
  readonly nodes: readonly NodeRecord[];
  readonly pools: readonly Pick<Pool, 'name' | 'gateway'>[];
  readonly fips: readonly FloatingIp[];
}

export interface FarEndOptions {
  readonly os: FarEndOs;
  /** The tunnel's interface name there (default: as an agent would name it). */
  readonly iface?: string;
  readonly keyFile?: string;
  /** The gateway, when the node serves no FIP yet (else it must be the one it serves). */
  readonly gateway?: string;
  /** The far host's underlay MTU (default 1500). */
  readonly underlayMtu?: number;
}

/** wg-quick takes the interface name from the file name: letters, digits, `_`, `-` here. */
const LINUX_IFACE = /^[A-Za-z0-9_-]{1,15}$/;
/** FreeBSD names a cloned WireGuard interface wgN. */
const FREEBSD_IFACE = /^wg[0-9]{1,4}$/;
/** An absolute path of plain characters: it is written into shell lines. */
const KEY_FILE = /^\/(?:[A-Za-z0-9_.-]+\/)*[A-Za-z0-9_.-]+$/;

/** Checks the node and options and works out the spec; IPF_E_VALIDATION with every problem. */
export function farEndSpec(state: FarEndState, nodeName: string, o: FarEndOptions): FarEndSpec {
  const p = new Problems();
  const name = checkName(p, 'node', nodeName);
  p.done();
  const node = state.nodes.find((n) => n.name === name);
  // The API answered IPF_E_NODE_NOT_FOUND before; a list read later may have lost it.
  if (!node) throw validationError([{ path: 'node', message: `node ${name} is not registered` }]);
  if (node.unmanaged !== true) {
    p.add(
      'node',
      `${name} runs an agent, which builds its own tunnel and return path: render is for nodes added with --unmanaged`,
    );
  }
  if ((node.tunnelDriver ?? 'wireguard') !== 'wireguard') {
    p.add(
      'node',
      `${name} is registered with ${node.tunnelDriver} tunnels: render writes WireGuard only`,
    );
  }
  p.done();
  const served = servedBy(state, name!);
  const gatewayName = chooseGateway(p, name!, served.gateways, o.gateway);
  p.done();
  const gateway = state.nodes.find((n) => n.name === gatewayName);
  const gatewayKey = gateway?.publicKey;
  if (!gateway) p.add('gateway', `gateway ${gatewayName} is not registered`);
  else if (
    !gatewayKey ||
    !isWireGuardKey(gatewayKey) ||
    (gateway.tunnelDriver ?? 'wireguard') !== 'wireguard'
  )
    p.add(
      'gateway',
      `gateway ${gatewayName} has no WireGuard key: is its agent running with --tunnel-driver wireguard?`,
    );
  const gatewayEndpoint = endpointOf(p, 'gateway endpoint', gateway?.endpoint);
  const ownEndpoint = endpointOf(p, 'node endpoint', node.endpoint);
  if (gateway && !gatewayEndpoint && !ownEndpoint)
    p.add(
      'endpoint',
      `neither ${name} nor its gateway ${gatewayName} has an endpoint: one must reach the other`,
    );
  const iface = o.iface ?? defaultInterface(o.os, name!, gatewayName!);
  if (!(o.os === 'freebsd' ? FREEBSD_IFACE : LINUX_IFACE).test(iface))
    p.add(
      'interface',
      o.os === 'freebsd'
        ? 'must be wgN on FreeBSD (wg0, wg1, …)'
        : 'must be 1 to 15 letters, digits, _ or -',
    );
  const keyFile = o.keyFile ?? defaultKeyFile(o.os, iface);
  if (!KEY_FILE.test(keyFile) || keyFile.split('/').some((s) => s === '.' || s === '..'))
    p.add('keyFile', 'must be an absolute path of letters, digits, _ . - and /');
  const underlay = o.underlayMtu ?? 1500;
  if (!Number.isInteger(underlay) || underlay < 1280 || underlay > 65535)
    p.add('underlayMtu', 'must be an integer from 1280 to 65535');
  p.done();
  const v6Underlay = gatewayEndpoint?.family === 6 || ownEndpoint?.family === 6;
  return {
    os: o.os,
    node: name!,
    gateway: {
      name: gatewayName!,
      publicKey: gatewayKey!,
      ...(gatewayEndpoint ? { endpoint: gatewayEndpoint.text } : {}),
    },
    iface,
    keyFile,
    ...(ownEndpoint ? { listenPort: ownEndpoint.port } : {}),
    ...(gatewayEndpoint ? { keepaliveSeconds: FAR_END_KEEPALIVE_SECONDS } : {}),
    mtu: tunnelMtu(underlay, v6Underlay ? 6 : 4, { driver: 'wireguard' }),
    linkAddress: tunnelLinkAddress(name!).replace(/\/32$/, ''),
    probeAddress: tunnelProbeAddress(name!),
    routed: served.routed,
    services: served.services,
  };
}

function defaultInterface(os: FarEndOs, node: string, gateway: string): string {
  return os === 'freebsd' ? 'wg0' : tunnelName(node, gateway);
}

function defaultKeyFile(os: FarEndOs, iface: string): string {
  return os === 'freebsd' ? `/usr/local/etc/wireguard/${iface}.key` : `/etc/wireguard/${iface}.key`;
}

function endpointOf(p: Problems, what: string, value: string | undefined) {
  if (value === undefined) return undefined;
  try {
    return parseEndpoint(value);
  } catch (e) {
    p.add(what, (e as Error).message);
    return undefined;
  }
}

function chooseGateway(
  p: Problems,
  node: string,
  gateways: ReadonlySet<string>,
  asked: string | undefined,
): string | undefined {
  if (asked !== undefined && !checkName(p, 'gateway', asked)) return undefined;
  if (gateways.size > 1) {
    p.add(
      'node',
      `${node} serves FIPs of gateways ${[...gateways].sort().join(', ')}: one node answers for one gateway`,
    );
    return undefined;
  }
  const [serving] = gateways;
  if (serving !== undefined && asked !== undefined && asked !== serving) {
    p.add('gateway', `${node} serves FIPs of gateway ${serving}, not ${asked}`);
    return undefined;
  }
  if (serving === undefined && asked === undefined) {
    p.add(
      'gateway',
      `${node} serves no FIP yet: associate one (or add a forward) to it, or name its gateway with --gateway`,
    );
    return undefined;
  }
  return serving ?? asked;
}

interface Served {
  readonly gateways: Set<string>;
  readonly routed: { address: string; family: 4 | 6 }[];
  readonly services: FarEndService[];
}

/** The FIPs routed to `node` and the targets forwarded to it, each value parsed again. */
function servedBy(state: FarEndState, node: string): Served {
  const gatewayOf = new Map(state.pools.map((pool) => [pool.name, pool.gateway]));
  const p = new Problems();
  const out: Served = { gateways: new Set(), routed: [], services: [] };
  for (const fip of state.fips) {
    const a = fip.association;
    const gateway = gatewayOf.get(fip.pool);
    if (!a || !gateway || gateway === node) continue;
    const at = `fip ${fip.address}`;
    if (a.mode === 'routed' && a.node === node) {
      const address = canonical(p, at, fip.address);
      if (address) out.routed.push(address);
      out.gateways.add(gateway);
    }
    if (a.mode === 'nat' && a.node === node) {
      const target = canonical(p, `${at} target`, a.target);
      if (target) out.services.push({ target: target.address, family: target.family });
      out.gateways.add(gateway);
    }
    if (a.mode === 'routed') continue;
    for (const f of fip.forwards) {
      if ((f.node ?? a.node) !== node) continue;
      const target = canonical(p, `${at} forward ${f.id} target`, f.target);
      const ports = portRange(p, `${at} forward ${f.id}`, f);
      if (target && ports)
        out.services.push({ target: target.address, family: target.family, ...ports });
      out.gateways.add(gateway);
    }
  }
  p.done();
  if (out.gateways.size > 0) for (const g of out.gateways) checkName(p, 'gateway', g);
  p.done();
  out.routed.sort((x, y) => compareAddress(x.address, y.address));
  out.services.sort(compareService);
  return { ...out, services: uniqueServices(out.services) };
}

function canonical(p: Problems, path: string, value: unknown) {
  const parsed = typeof value === 'string' ? tryParseAddress(value) : undefined;
  if (!parsed) {
    p.add(path, 'is not an IP address');
    return undefined;
  }
  return { address: parsed.text, family: parsed.family };
}

function portRange(
  p: Problems,
  path: string,
  f: { protocol: unknown; port: unknown; portEnd: unknown; targetPort: unknown },
): { protocol: Protocol; port: number; portEnd: number } | undefined {
  const isPort = (x: unknown): x is number =>
    Number.isInteger(x) && (x as number) >= 1 && (x as number) <= 65535;
  if (f.protocol !== 'tcp' && f.protocol !== 'udp')
    p.add(path, 'has a protocol other than tcp or udp');
  else if (!isPort(f.port) || !isPort(f.portEnd) || !isPort(f.targetPort) || f.portEnd < f.port)
    p.add(path, 'has ports outside 1 to 65535');
  else {
    const end = f.targetPort + (f.portEnd - f.port);
    if (end > 65535) p.add(path, 'maps beyond port 65535');
    else return { protocol: f.protocol, port: f.targetPort, portEnd: end };
  }
  return undefined;
}

function compareAddress(a: string, b: string): number {
  const x = tryParseAddress(a)!;
  const y = tryParseAddress(b)!;
  return x.family - y.family || (x.value < y.value ? -1 : x.value > y.value ? 1 : 0);
}

function compareService(a: FarEndService, b: FarEndService): number {
  return (
    compareAddress(a.target, b.target) ||
    (a.protocol ?? '').localeCompare(b.protocol ?? '') ||
    (a.port ?? 0) - (b.port ?? 0) ||
    (a.portEnd ?? 0) - (b.portEnd ?? 0)
  );
}

function uniqueServices(list: readonly FarEndService[]): FarEndService[] {
  const seen = new Set<string>();
  return list.filter((s) => {
    const key = serviceText(s);
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

/** `tcp 198.18.0.10 25` / `udp … 5000-5010` / `all 198.18.0.10`: a service in one line. */
export function serviceText(s: FarEndService): string {
  if (!s.protocol) return `all ${s.target}`;
  return `${s.protocol} ${s.target} ${s.port === s.portEnd ? s.port : `${s.port}-${s.portEnd}`}`;
}
