/**
 * The lab's HTTPS server: what a browser and curl talk to through the floating IPs, so that the
 * lab carries what real clients send (a browser's ~1,900-byte TLS ClientHello, an upload of many
 * segments), not only small echo probes.
 *
 *   web-server --name NAME --port PORT --cert FILE --key FILE
 *
 * `GET /` answers an HTML page of about 64 KiB naming the server and the client's address, so a
 * download spans many segments too; `POST /upload` reads the whole body and answers JSON
 * `{ name, client, bytes, sha256 }`. Listens on `::` (dual stack: every address the host holds,
 * floating IPs included). Prints `ready` once it listens.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:https';
import { parseArgs } from 'node:util';

/** `::ffff:10.0.0.1` → `10.0.0.1`: what a dual-stack socket reports for an IPv4 peer. */
function plainAddress(address: string | undefined): string {
  if (address === undefined) return '?';
  return /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address)?.[1] ?? address;
}

/** About 64 KiB of page, with a marker a test finds in the browser's DOM. */
function pageHtml(name: string, client: string): string {
  const filler = Array.from({ length: 1024 }, (_, i) => `<p>line ${i} ${'x'.repeat(48)}</p>`);
  return `<!doctype html><html><head><title>${name}</title></head><body><h1 id="served">served by ${name} to ${client}</h1>${filler.join('')}</body></html>`;
}

function main(): void {
  const { values } = parseArgs({
    options: {
      name: { type: 'string' },
      port: { type: 'string' },
      cert: { type: 'string' },
      key: { type: 'string' },
    },
  });
  const port = Number(values.port);
  if (!values.name || !values.cert || !values.key || !Number.isInteger(port)) {
    throw new Error('usage: web-server --name NAME --port PORT --cert FILE --key FILE');
  }
  const name = values.name;
  const server = createServer(
    { cert: readFileSync(values.cert), key: readFileSync(values.key) },
    (req, res) => {
      const client = plainAddress(req.socket.remoteAddress);
      if (req.method === 'POST' && req.url === '/upload') {
        const hash = createHash('sha256');
        let bytes = 0;
        req.on('data', (chunk: Buffer) => {
          bytes += chunk.length;
          hash.update(chunk);
        });
        req.on('end', () => {
          res.setHeader('content-type', 'application/json');
          res.end(JSON.stringify({ name, client, bytes, sha256: hash.digest('hex') }) + '\n');
        });
        return;
      }
      res.setHeader('content-type', 'text/html; charset=utf-8');
      res.end(pageHtml(name, client));
    },
  );
  server.on('clientError', (_e, socket) => socket.destroy());
  server.listen({ host: '::', port }, () => {
    process.stdout.write('ready\n');
  });
  const stop = (): void => {
    server.close();
    server.closeAllConnections();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main();
