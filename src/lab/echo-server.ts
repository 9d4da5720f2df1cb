/**
 * The lab's echo server: tells every client which address it came from.
 *
 *   echo-server --name NAME [--tcp PORT[,PORT…]] [--udp PORT[,PORT…]] [--bind ADDR[,ADDR…]]
 *
 * TCP: on each connection writes `NAME <remote address>\n` and closes. UDP: answers each
 * datagram with the same line. Binds to `::` (dual stack) by default; IPv4 peers are reported
 * as plain IPv4 (not `::ffff:a.b.c.d`). Prints `ready` once every port listens.
 *
 * A UDP socket bound to a wildcard answers from whatever source address routing picks; on a
 * host holding several addresses (a floating IP next to its LAN address) bind the one under
 * test with --bind, or a connected UDP client will ignore the answer.
 */
import { createSocket, type Socket } from 'node:dgram';
import { createServer, type Server } from 'node:net';
import { parseArgs } from 'node:util';

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

function listenUdp(name: string, bind: string, port: number): Promise<Socket> {
  const socket = createSocket({ type: bind.includes(':') ? 'udp6' : 'udp4', ipv6Only: false });
  socket.on('message', (_msg, peer) => {
    socket.send(`${name} ${plainAddress(peer.address)}\n`, peer.port, peer.address);
  });
  return new Promise((resolve, reject) => {
    socket.once('error', reject);
    socket.bind(port, bind, () => resolve(socket));
  });
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      name: { type: 'string' },
      tcp: { type: 'string' },
      udp: { type: 'string' },
      bind: { type: 'string', default: '::' },
    },
  });
  const name = values.name;
  if (name === undefined || name === '') throw new Error('--name is required');
  const binds = (values.bind ?? '::').split(',');
  const listening: Promise<unknown>[] = [];
  for (const bind of binds) {
    for (const port of ports(values.tcp)) listening.push(listenTcp(name, bind, port));
    for (const port of ports(values.udp)) listening.push(listenUdp(name, bind, port));
  }
  await Promise.all(listening);
  process.stdout.write('ready\n');
}

main().catch((error: unknown) => {
  process.stderr.write(`echo-server: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
});
