/**
 * First-packet latency: opens COUNT new TCP connections one after the other and times each from
 * connect() to the SYN/ACK (the 'connect' event). Every connection is new to conntrack, so its
 * SYN walks the gateway's NAT rules — where per-IP rules cost, and where kube-proxy's
 * "first-packet latency" was measured. Each is then reset (no TIME_WAIT pile-up).
 *
 *   connect-probe ADDRESS PORT COUNT
 *
 * Runs inside the client's namespace; prints {"samplesUs":[…]} (microseconds).
 */
import { connect } from 'node:net';

function once(address: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const started = process.hrtime.bigint();
    const socket = connect({ host: address, port, noDelay: true });
    socket.setTimeout(3000, () => {
      socket.destroy();
      reject(new Error(`no answer from ${address}:${port} in 3 s`));
    });
    socket.once('error', reject);
    socket.once('connect', () => {
      const us = Number(process.hrtime.bigint() - started) / 1000;
      socket.removeListener('error', reject);
      socket.on('error', () => undefined);
      socket.resetAndDestroy();
      resolve(us);
    });
  });
}

async function main(): Promise<void> {
  const [address, port, count] = process.argv.slice(2);
  const n = Number(count);
  if (!address || !Number.isInteger(Number(port)) || !Number.isInteger(n) || n < 1) {
    throw new Error('usage: connect-probe ADDRESS PORT COUNT');
  }
  const samplesUs: number[] = [];
  for (let i = 0; i < n; i++) samplesUs.push(await once(address, Number(port)));
  process.stdout.write(JSON.stringify({ samplesUs }) + '\n');
}

main().catch((error: unknown) => {
  process.stderr.write(
    `connect-probe: ${error instanceof Error ? error.message : String(error)}\n`,
  );
  process.exit(1);
});
