/**
 * A TCP port on 127.0.0.1 that is free right now (for agents, etcd and other servers started by
 * tests, labs and the demo).
 *
 * The port comes from below the kernel's ephemeral range (read from ip_local_port_range): a port
 * the kernel handed out for `listen(0)` or as a connection's source port could be taken again by
 * any other socket between this check and the server's own bind — with many test files running
 * at once that happened (etcd: "address already in use"). Below the range only an explicit bind
 * of the same number can take it, so each process remembers what it gave out and starts at a
 * random point to keep concurrent test processes apart.
 */
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';

const handedOut = new Set<number>();
const FIRST = 20_000;

function ephemeralStart(): number {
  try {
    const [low] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8')
      .trim()
      .split(/\s+/);
    const n = Number(low);
    return Number.isInteger(n) && n > FIRST + 1000 ? n : 32_768;
  } catch {
    return 32_768;
  }
}

const LIMIT = ephemeralStart();

function bindable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen({ port, host: '127.0.0.1', exclusive: true }, () =>
      server.close(() => resolve(true)),
    );
  });
}

export async function freePort(): Promise<number> {
  const span = LIMIT - FIRST;
  const start = Math.floor(Math.random() * span);
  for (let i = 0; i < span; i++) {
    const port = FIRST + ((start + i) % span);
    if (handedOut.has(port)) continue;
    if (await bindable(port)) {
      handedOut.add(port);
      return port;
    }
  }
  throw new Error(`no free TCP port on 127.0.0.1 between ${FIRST} and ${LIMIT - 1}`);
}
