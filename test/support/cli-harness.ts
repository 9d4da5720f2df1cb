/**
 * The CLI's tests against an in-process fake agent (test/unit/cli-*.test.ts): the fake records
 * every request and answers from a per-test script; `run` calls the CLI's `main` against it and
 * checks that the token is never printed.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { after, before, beforeEach } from 'node:test';
import type { FipView, PoolView } from '../../src/api/contract.js';
import type { PortForward } from '../../src/core/model.js';
import { main } from '../../src/cli/main.js';

export const TOKEN = 's3cr3t-token-5b1f0c';

export interface Recorded {
  method: string;
  url: string;
  authorization: string | undefined;
  contentType: string | undefined;
  body: unknown;
}

interface Reply {
  status: number;
  body?: unknown;
  raw?: string;
}

/** A fake agent: replies are scripted per `METHOD url`, in order; anything else is a 404. */
export class FakeAgent {
  readonly requests: Recorded[] = [];
  private readonly replies = new Map<string, Reply[]>();
  private server: http.Server | https.Server | undefined;
  url = '';

  reply(route: string, status: number, body?: unknown): this {
    const queue = this.replies.get(route) ?? [];
    queue.push({ status, body });
    this.replies.set(route, queue);
    return this;
  }

  replyRaw(route: string, status: number, raw: string): this {
    this.replies.set(route, [{ status, raw }]);
    return this;
  }

  reset(): void {
    this.requests.length = 0;
    this.replies.clear();
  }

  async start(tls?: { key: string; cert: string }): Promise<void> {
    const handler: http.RequestListener = (req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        const route = `${req.method} ${req.url}`;
        this.requests.push({
          method: req.method ?? '',
          url: req.url ?? '',
          authorization: req.headers.authorization,
          contentType: req.headers['content-type'],
          body: text === '' ? undefined : JSON.parse(text),
        });
        const queue = this.replies.get(route);
        const reply: Reply = (queue && queue.length > 1 ? queue.shift() : queue?.[0]) ?? {
          status: 404,
          body: {
            error: {
              code: 'IPF_E_NOT_FOUND',
              message: `No such route: ${route}`,
              hint: 'See /docs.',
            },
          },
        };
        res.statusCode = reply.status;
        if (reply.raw !== undefined) {
          res.setHeader('content-type', 'text/html');
          res.end(reply.raw);
        } else {
          res.setHeader('content-type', 'application/json');
          res.end(reply.body === undefined ? '' : JSON.stringify(reply.body));
        }
      });
    };
    this.server = tls ? https.createServer(tls, handler) : http.createServer(handler);
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    const { port } = this.server.address() as AddressInfo;
    this.url = `${tls ? 'https' : 'http'}://127.0.0.1:${port}`;
  }

  async stop(): Promise<void> {
    const server = this.server;
    if (!server) return;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

export interface RunResult {
  code: number;
  out: string;
  err: string;
}

export const fake = new FakeAgent();

/** Run the CLI against the fake with the token in IPFERRY_TOKEN unless `env` says otherwise. */
export async function run(
  args: string[],
  env: Record<string, string | undefined> = { IPFERRY_TOKEN: TOKEN },
  server: string | undefined = fake.url,
): Promise<RunResult> {
  let out = '';
  let err = '';
  const argv = ['node', 'ipferry', ...(server !== undefined ? ['--server', server] : []), ...args];
  const code = await main(argv, { out: (s) => (out += s), err: (s) => (err += s) }, env, {
    defaultTokenFile: '/nonexistent/ipferry-api-token',
    timeoutMs: 5000,
  });
  assert.ok(!out.includes(TOKEN), 'the token must never be printed (stdout)');
  assert.ok(!err.includes(TOKEN), 'the token must never be printed (stderr)');
  return { code, out, err };
}

export function only(): Recorded {
  assert.equal(
    fake.requests.length,
    1,
    `one request expected, got ${fake.requests.map((r) => `${r.method} ${r.url}`).join(', ')}`,
  );
  return fake.requests[0]!;
}

export function sent(): { method: string; url: string; body: unknown }[] {
  return fake.requests.map(({ method, url, body }) => ({ method, url, body }));
}

// Fixtures -------------------------------------------------------------------------------------

export function fipView(over: Partial<FipView> = {}): FipView {
  return {
    address: '192.0.2.10',
    family: 4,
    pool: 'public',
    shared: false,
    tags: [],
    forwards: [],
    allocatedAt: '2025-01-01T00:00:00.000Z',
    revision: 7,
    status: { state: 'DOWN' },
    ...over,
  };
}

export function poolView(over: Partial<PoolView> = {}): PoolView {
  return {
    name: 'public',
    gateway: 'gw1',
    delivery: 'routed',
    entries: [
      { kind: 'cidr', cidr: '192.0.2.0/28' },
      { kind: 'range', first: '2001:db8::10', last: '2001:db8::1f' },
      { kind: 'address', address: '198.51.100.7', mac: '52:54:00:12:34:56' },
    ],
    tags: ['prod'],
    createdAt: '2025-01-01T00:00:00.000Z',
    revision: 3,
    size: '33',
    allocated: 2,
    ...over,
  };
}

export const forward: PortForward = {
  id: 'f1',
  protocol: 'tcp',
  port: 8000,
  portEnd: 8010,
  targetPort: 9000,
  target: '2001:db8:1::5',
};

export const V6 = '2001:db8::10';
export const V6_PATH = encodeURIComponent(V6); // 2001%3Adb8%3A%3A10

/** Starts the shared fake for the suite it is called in, and clears its script before each test. */
export function useFakeAgent(): void {
  before(async () => {
    await fake.start();
  });
  after(async () => {
    await fake.stop();
  });
  beforeEach(() => {
    fake.reset();
  });
}

/** A URL on which nothing listens. */
export async function closedPort(): Promise<string> {
  const server = http.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return `http://127.0.0.1:${port}`;
}
