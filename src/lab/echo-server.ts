/**
 * The lab's echo server: tells every client which address it came from.
 *
 *   echo-server --name NAME [--tcp PORT[,PORT…]] [--udp PORT[,PORT…]] [--bind ADDR[,ADDR…]]
 *               [--udp-each-address]
 *
 * TCP: on each connection writes `NAME <remote address>\n` and closes. UDP: answers each
 * datagram with the same line. Binds to `::` (dual stack) by default; IPv4 peers are reported
 * as plain IPv4 (not `::ffff:a.b.c.d`). Prints `ready` once every port listens.
 *
 * A UDP socket bound to a wildcard answers from whatever source address routing picks; on a
 * host holding several addresses (a floating IP next to its LAN address) bind the one under
 * test with --bind, or a connected UDP client will ignore the answer. An address that arrives
 * later (a routed floating IP its agent puts on the tunnel) cannot be named up front:
 * --udp-each-address also binds the UDP ports to every address the host holds, as addresses
 * come and go, so each datagram is answered from the address it was sent to — what
 * docs/migration.md tells a UDP service on a node to do.
 */
import { createSocket, type Socket } from 'node:dgram';
import { createServer, type Server } from 'node:net';
import { networkInterfaces } from 'node:os';
import { parseArgs } from 'node:util';

/** How often --udp-each-address looks at the host's addresses. */
const ADDRESS_POLL_MS = 500;

/** `::ffff:10.0.0.1` → `10.0.0.1`: what a dual-stack socket reports for an IPv4 peer. */
function plainAddress(address: string | undefined): string {
  if (address === undefined) return '?';
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  return mapped?.[1] ?? address;
}

function ports(list: string | undefined): number[] {
  if (list === undefined || list === '') return [];
  return list.split(',').map((p) => {
    const port = Number(p);
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`bad port "${p}"`);
    return port;
  });
}

function listenTcp(name: string, bind: string, port: number): Promise<Server> {
  const server = createServer((socket) => {
    socket.on('error', () => undefined); // a reset client must not kill the server
    socket.end(`${name} ${plainAddress(socket.remoteAddress)}\n`);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: bind, port, ipv6Only: false }, () => resolve(server));
  });
}

/**
 * `reuseAddr`: a socket on a wildcard and one on an address of the host share a UDP port only
 * when both set SO_REUSEADDR; the kernel then gives a datagram to the one bound to its address.
 */
function listenUdp(name: string, bind: string, port: number, reuseAddr = false): Promise<Socket> {
  const socket = createSocket({
    type: bind.includes(':') ? 'udp6' : 'udp4',
    ipv6Only: false,
    reuseAddr,
  });
  socket.on('message', (_msg, peer) => {
    socket.send(`${name} ${plainAddress(peer.address)}\n`, peer.port, peer.address);
  });
  return new Promise((resolve, reject) => {
    socket.once('error', reject);
    socket.bind(port, bind, () => resolve(socket));
  });
}

/** The host's own addresses a datagram can be sent to (loopback and link-local left out). */
function hostAddresses(): Set<string> {
  return new Set(
    Object.values(networkInterfaces())
      .flat()
      .filter((i) => i !== undefined && !i.internal && !/^fe80:/i.test(i.address))
      .map((i) => i!.address),
  );
}

/**
 * Binds every UDP port to each address the host holds, now and as addresses come (a bind that
 * fails, as for an IPv6 address still in duplicate address detection, is tried again at the next
 * look) and go (its sockets are closed).
 */
async function followAddresses(name: string, udpPorts: readonly number[]): Promise<void> {
  const bound = new Map<string, Socket[]>();
  const look = async (): Promise<void> => {
    const now = hostAddresses();
    for (const [address, sockets] of bound) {
      if (now.has(address)) continue;
      for (const socket of sockets) socket.close();
      bound.delete(address);
    }
    for (const address of now) {
      if (bound.has(address)) continue;
      const sockets = await Promise.allSettled(
        udpPorts.map((port) => listenUdp(name, address, port, true)),
      );
      const ok = sockets.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
      if (ok.length === udpPorts.length) bound.set(address, ok);
      else for (const socket of ok) socket.close();
    }
  };
  await look();
  const timer = setInterval(() => void look(), ADDRESS_POLL_MS);
  timer.unref();
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      name: { type: 'string' },
      tcp: { type: 'string' },
      udp: { type: 'string' },
      bind: { type: 'string', default: '::' },
      'udp-each-address': { type: 'boolean', default: false },
    },
  });
  const name = values.name;
  if (name === undefined || name === '') throw new Error('--name is required');
  const binds = (values.bind ?? '::').split(',');
  const each = values['udp-each-address'] === true;
  const udpPorts = ports(values.udp);
  const listening: Promise<unknown>[] = [];
  for (const bind of binds) {
    for (const port of ports(values.tcp)) listening.push(listenTcp(name, bind, port));
    for (const port of udpPorts) listening.push(listenUdp(name, bind, port, each));
  }
  await Promise.all(listening);
  if (each) await followAddresses(name, udpPorts);
  process.stdout.write('ready\n');
}

main().catch((error: unknown) => {
  process.stderr.write(`echo-server: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
});
