/**
 * Real clients in the lab: Debian's chromium (headless) loading a page and curl uploading a
 * file, both over HTTPS to the lab's web server (web-server.ts). They send what echo probes do
 * not: chromium's TLS ClientHello carries a post-quantum key share (about 1,900 bytes, more than
 * one segment on any path), and an upload is many full-sized segments from the client. A path
 * whose MTU or MSS is wrong shows here while small probes still pass.
 *
 * Each call is one attempt, bounded in time: a test asks once and judges that answer.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { selfSignedCertificate, type Certificate } from './certs.js';
import { hostPort } from './probe.js';
import type { LabProcess } from './topology.js';
import type { Lab } from './topology.js';

/** How long one page load or upload may take before it counts as hung. */
const CLIENT_TIMEOUT_MS = 15_000;

/** A throwaway self-signed certificate (P-256, one day) in `dir` for the lab's web server. */
export function makeCertificate(dir: string): Promise<Certificate> {
  return selfSignedCertificate(dir, { name: 'web', cn: 'ipferry-lab' });
}

function webServerCommand(): string[] {
  if (import.meta.url.endsWith('.ts')) {
    const server = fileURLToPath(new URL('./web-server.ts', import.meta.url));
    return [process.execPath, '--import', import.meta.resolve('tsx'), server];
  }
  return [process.execPath, fileURLToPath(new URL('./web-server.js', import.meta.url))];
}

export interface WebServer {
  readonly process: LabProcess;
  stop(): Promise<void>;
}

/** Starts the HTTPS server on `host`, listening on every address it holds at `port`. */
export async function startWebServer(
  lab: Lab,
  host: string,
  options: { readonly name: string; readonly port: number; readonly certificate: Certificate },
): Promise<WebServer> {
  const argv = [
    ...webServerCommand(),
    '--name',
    options.name,
    '--port',
    String(options.port),
    '--cert',
    options.certificate.cert,
    '--key',
    options.certificate.key,
  ];
  const proc = await lab.spawn(host, argv, { ready: /^ready$/m, timeoutMs: 15_000 });
  return { process: proc, stop: () => proc.stop() };
}

/** `https://ADDRESS:PORT/PATH`, IPv6 literals in brackets. */
export function httpsUrl(address: string, port: number, path = '/'): string {
  return `https://${hostPort(address, port)}${path}`;
}

export interface BrowserLoad {
  readonly ok: boolean;
  /** The rendered page (chromium's --dump-dom), or what went wrong. */
  readonly output: string;
  readonly ms: number;
}

/**
 * One page load by headless chromium from `host`, with a fresh profile (no connection, session
 * or cache reused between loads) and QUIC off (the lab forwards TCP). `ok` when the page's
 * marker came back.
 */
export async function browserLoad(lab: Lab, host: string, url: string): Promise<BrowserLoad> {
  const profile = await mkdtemp(join(tmpdir(), 'ipferry-chromium-'));
  const started = Date.now();
  try {
    const { stdout } = await lab.exec(
      host,
      [
        'chromium',
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        `--user-data-dir=${profile}`,
        '--ignore-certificate-errors',
        '--virtual-time-budget=5000',
        '--dump-dom',
        url,
      ],
      { timeoutMs: CLIENT_TIMEOUT_MS },
    );
    return { ok: stdout.includes('id="served"'), output: stdout, ms: Date.now() - started };
  } catch (e) {
    return { ok: false, output: (e as Error).message, ms: Date.now() - started };
  } finally {
    await rm(profile, { recursive: true, force: true });
  }
}

export interface Upload {
  /** What the server said it received (undefined: no answer). */
  readonly received?: { name: string; client: string; bytes: number; sha256: string };
  readonly sent: { bytes: number; sha256: string };
  readonly error?: string;
  readonly ms: number;
}

/** One upload of `bytes` random bytes by curl from `host` (POST, one request). */
export async function curlUpload(
  lab: Lab,
  host: string,
  url: string,
  bytes: number,
): Promise<Upload> {
  const dir = await mkdtemp(join(tmpdir(), 'ipferry-upload-'));
  const body = randomBytes(bytes);
  const sent = { bytes, sha256: createHash('sha256').update(body).digest('hex') };
  const file = join(dir, 'body');
  const started = Date.now();
  try {
    await writeFile(file, body);
    const { stdout } = await lab.exec(
      host,
      [
        'curl',
        '--silent',
        '--show-error',
        '--insecure',
        '--max-time',
        String(CLIENT_TIMEOUT_MS / 1000),
        '--header',
        'content-type: application/octet-stream',
        '--data-binary',
        `@${file}`,
        url,
      ],
      { timeoutMs: CLIENT_TIMEOUT_MS + 5000 },
    );
    return {
      received: JSON.parse(stdout) as NonNullable<Upload['received']>,
      sent,
      ms: Date.now() - started,
    };
  } catch (e) {
    return { sent, error: (e as Error).message, ms: Date.now() - started };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
