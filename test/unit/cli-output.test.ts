/**
 * The CLI against an in-process fake agent: for each command, the exact request it sends, what it
 * prints, and its exit code. The fake records requests and answers from a per-test script.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, beforeEach, describe, it } from 'node:test';
import type {
  FipView,
  MeshAudit,
  MeshView,
  PoolView,
  StatusResponse,
} from '../../src/api/contract.js';
import type { MeshPolicy, MeshPolicyRecord } from '../../src/core/mesh.js';
import type { NodeView, PortForward } from '../../src/core/model.js';
import { RemoteError } from '../../src/client/api-client.js';
import { CliContext, parseTokenFile } from '../../src/cli/context.js';
import { details, table } from '../../src/cli/format.js';
import { buildProgram, main } from '../../src/cli/main.js';

const TOKEN = 's3cr3t-token-5b1f0c';

interface Recorded {
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
class FakeAgent {
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

interface RunResult {
  code: number;
  out: string;
  err: string;
}

const fake = new FakeAgent();

/** Run the CLI against the fake with the token in IPFERRY_TOKEN unless `env` says otherwise. */
async function run(
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

function only(): Recorded {
  assert.equal(
    fake.requests.length,
    1,
    `one request expected, got ${fake.requests.map((r) => `${r.method} ${r.url}`).join(', ')}`,
  );
  return fake.requests[0]!;
}

function sent(): { method: string; url: string; body: unknown }[] {
  return fake.requests.map(({ method, url, body }) => ({ method, url, body }));
}

// Fixtures -------------------------------------------------------------------------------------

function fipView(over: Partial<FipView> = {}): FipView {
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

function poolView(over: Partial<PoolView> = {}): PoolView {
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

const forward: PortForward = {
  id: 'f1',
  protocol: 'tcp',
  port: 8000,
  portEnd: 8010,
  targetPort: 9000,
  target: '2001:db8:1::5',
};

const V6 = '2001:db8::10';
const V6_PATH = encodeURIComponent(V6); // 2001%3Adb8%3A%3A10

// Tests ----------------------------------------------------------------------------------------

describe('ipferry CLI', () => {
  before(async () => {
    await fake.start();
  });
  after(async () => {
    await fake.stop();
  });
  beforeEach(() => {
    fake.reset();
  });

  describe('pool', () => {
    it('create sends the entries in the order given, with shared, onlink, description and tags', async () => {
      fake.reply('POST /v1/pools', 201, poolView());
      const r = await run([
        'pool',
        'create',
        'public',
        '--gateway',
        'gw1',
        '--cidr',
        '192.0.2.0/28',
        '--address',
        '198.51.100.7=52:54:00:12:34:56',
        '--range',
        '2001:db8::10-2001:db8::1f',
        '--cidr',
        '2001:db8:ff::/64',
        '--shared',
        '203.0.113.1',
        '--shared',
        '2001:db8::1',
        '--onlink',
        'eth0',
        '--description',
        'main uplink',
        '--tag',
        'prod',
        '--tag',
        'eu',
      ]);
      assert.equal(r.code, 0, r.err);
      const req = only();
      assert.equal(req.method, 'POST');
      assert.equal(req.url, '/v1/pools');
      assert.equal(req.authorization, `Bearer ${TOKEN}`);
      assert.equal(req.contentType, 'application/json');
      assert.deepEqual(req.body, {
        name: 'public',
        gateway: 'gw1',
        delivery: 'onlink',
        uplink: 'eth0',
        entries: [
          '192.0.2.0/28',
          '198.51.100.7=52:54:00:12:34:56',
          '2001:db8::10-2001:db8::1f',
          '2001:db8:ff::/64',
        ],
        shared: ['203.0.113.1', '2001:db8::1'],
        description: 'main uplink',
        tags: ['prod', 'eu'],
      });
      assert.match(r.out, /^name: +public$/m);
      assert.match(
        r.out,
        /^entries: +192\.0\.2\.0\/28\n +2001:db8::10-2001:db8::1f\n +198\.51\.100\.7=52:54:00:12:34:56$/m,
      );
    });

    it('create with only the required flags sends no optional fields', async () => {
      fake.reply('POST /v1/pools', 201, poolView());
      const r = await run(['pool', 'create', 'p2', '--gateway', 'gw1', '--cidr', '192.0.2.0/30']);
      assert.equal(r.code, 0, r.err);
      assert.deepEqual(only().body, { name: 'p2', gateway: 'gw1', entries: ['192.0.2.0/30'] });
    });

    it('create without --gateway is a usage error and sends nothing', async () => {
      const r = await run(['pool', 'create', 'p2', '--cidr', '192.0.2.0/30']);
      assert.equal(r.code, 2);
      assert.equal(fake.requests.length, 0);
      assert.match(r.err, /^error IPF_E_USAGE: required option '--gateway <node>' not specified$/m);
      assert.match(r.err, /^hint: Run `ipferry pool create --help` for usage\.$/m);
    });

    it('list prints a table', async () => {
      fake.reply('GET /v1/pools', 200, [
        poolView(),
        poolView({
          name: 'lan',
          delivery: 'onlink',
          uplink: 'eth1',
          entries: [],
          tags: [],
          size: '0',
          allocated: 0,
          description: 'home',
        }),
      ]);
      const r = await run(['pool', 'list']);
      assert.equal(r.code, 0, r.err);
      assert.deepEqual(sent(), [{ method: 'GET', url: '/v1/pools', body: undefined }]);
      assert.equal(
        r.out,
        [
          'NAME    GATEWAY  DELIVERY     SIZE  ALLOCATED  ENTRIES                                                                DESCRIPTION',
          'public  gw1      routed       33    2          192.0.2.0/28,2001:db8::10-2001:db8::1f,198.51.100.7=52:54:00:12:34:56  -',
          'lan     gw1      onlink:eth1  0     0          -                                                                      home',
          '',
        ].join('\n'),
      );
    });

    it('list and show write an IPv6-sized pool as powers of two; --json keeps the exact count', async () => {
      const size = (2n ** 64n + 16n).toString();
      fake.reply('GET /v1/pools', 200, [poolView({ size })]);
      fake.reply('GET /v1/pools/public', 200, poolView({ size }));
      const list = await run(['pool', 'list']);
      assert.match(list.out, /^public +gw1 +routed +2\^64 \+ 16 +2 +/m);
      assert.match((await run(['pool', 'show', 'public'])).out, /^size: +2\^64 \+ 16$/m);
      const asJson = await run(['pool', 'list', '--json']);
      assert.equal((JSON.parse(asJson.out) as PoolView[])[0]?.size, '18446744073709551632');
    });

    it('update sends only what changes: entries to add in order, shared, removals, description, tags', async () => {
      fake.reply('PATCH /v1/pools/public', 200, poolView());
      const r = await run([
        'pool',
        'update',
        'public',
        '--shared',
        '203.0.113.1',
        '--cidr',
        '192.0.2.64/28',
        '--address',
        '198.51.100.8=52:54:00:12:34:57',
        '--remove',
        '198.51.100.7',
        '--description',
        '',
        '--tag',
        'eu',
      ]);
      assert.equal(r.code, 0, r.err);
      assert.deepEqual(sent(), [
        {
          method: 'PATCH',
          url: '/v1/pools/public',
          body: {
            addEntries: ['192.0.2.64/28', '198.51.100.8=52:54:00:12:34:57'],
            addShared: ['203.0.113.1'],
            removeAddresses: ['198.51.100.7'],
            description: '',
            tags: ['eu'],
          },
        },
      ]);
      assert.match(r.out, /^name: +public$/m);
      fake.reset();
      fake.reply('PATCH /v1/pools/public', 200, poolView());
      assert.equal((await run(['pool', 'update', 'public', '--clear-tags'])).code, 0);
      assert.deepEqual(only().body, { tags: [] });
    });

    it('update with nothing to change, or with --tag and --clear-tags, is a usage error', async () => {
      const none = await run(['pool', 'update', 'public']);
      assert.equal(none.code, 2);
      assert.match(none.err, /^error IPF_E_USAGE: nothing to change: give --cidr, /m);
      assert.match(none.err, /^hint: Run `ipferry pool update --help` for usage\.$/m);
      const both = await run(['pool', 'update', 'public', '--tag', 'a', '--clear-tags']);
      assert.equal(both.code, 2);
      assert.equal(fake.requests.length, 0);
    });

    it('update reports the agent’s refusal, exit 1', async () => {
      fake.reply('PATCH /v1/pools/public', 409, {
        error: {
          code: 'IPF_E_ADDRESS_ALLOCATED',
          message: 'Address 192.0.2.9 of pool public is allocated as a floating IP.',
          hint: 'Release it first (`ipferry fip release 192.0.2.9`), then remove it from the pool.',
        },
      });
      const r = await run(['pool', 'update', 'public', '--remove', '192.0.2.9']);
      assert.equal(r.code, 1);
      assert.match(r.err, /^error IPF_E_ADDRESS_ALLOCATED: /m);
    });

    it('show and delete use the pool path', async () => {
      fake.reply('GET /v1/pools/my%20pool', 200, poolView({ name: 'my pool' }));
      fake.reply('DELETE /v1/pools/public', 200, { name: 'public', deleted: true });
      assert.equal((await run(['pool', 'show', 'my pool'])).code, 0);
      const del = await run(['pool', 'delete', 'public']);
      assert.equal(del.code, 0, del.err);
      assert.equal(del.out, 'deleted pool public\n');
      assert.deepEqual(sent(), [
        { method: 'GET', url: '/v1/pools/my%20pool', body: undefined },
        { method: 'DELETE', url: '/v1/pools/public', body: undefined },
      ]);
    });
  });

  describe('fip', () => {
    it('allocate sends only the flags given', async () => {
      fake.reply('POST /v1/fips', 201, { ...fipView(), created: true });
      const r = await run([
        'fip',
        'allocate',
        '--pool',
        'public',
        '--address',
        V6,
        '--client-token',
        'ct-1',
        '--description',
        'web',
        '--tag',
        'a',
        '--tag',
        'b',
      ]);
      assert.equal(r.code, 0, r.err);
      assert.deepEqual(only().body, {
        pool: 'public',
        address: V6,
        clientToken: 'ct-1',
        description: 'web',
        tags: ['a', 'b'],
      });
      fake.reset();
      fake.reply('POST /v1/fips', 200, { ...fipView(), created: false });
      const again = await run(['fip', 'allocate']);
      assert.deepEqual(only().body, {});
      assert.match(again.out, /earlier allocation/);
    });

    it('associate encodes an IPv6 FIP in the path and sends mode, node and switches', async () => {
      fake.reply(`POST /v1/fips/${V6_PATH}/associate`, 200, fipView({ address: V6, family: 6 }));
      const r = await run([
        'fip',
        'associate',
        V6,
        '--target',
        '2001:db8:1::5',
        '--node',
        'home',
        '--mode',
        'routed',
        '--masquerade',
        '--allow-reassociation',
      ]);
      assert.equal(r.code, 0, r.err);
      const req = only();
      assert.equal(req.method, 'POST');
      assert.equal(req.url, '/v1/fips/2001%3Adb8%3A%3A10/associate');
      assert.deepEqual(req.body, {
        target: '2001:db8:1::5',
        node: 'home',
        mode: 'routed',
        masquerade: true,
        allowReassociation: true,
      });
    });

    it('associate without options sends just the target (the server defaults to nat)', async () => {
      fake.reply('POST /v1/fips/192.0.2.10/associate', 200, fipView());
      const r = await run(['fip', 'associate', '192.0.2.10', '--target', '10.0.0.5']);
      assert.equal(r.code, 0, r.err);
      assert.deepEqual(only().body, { target: '10.0.0.5' });
    });

    it('associate in routed mode may leave out --target (it is the FIP); nat may not', async () => {
      fake.reply('POST /v1/fips/192.0.2.10/associate', 200, fipView());
      const routed = await run([
        'fip',
        'associate',
        '192.0.2.10',
        '--mode',
        'routed',
        '--node',
        'b1',
      ]);
      assert.equal(routed.code, 0, routed.err);
      assert.deepEqual(only().body, { mode: 'routed', node: 'b1' });
      fake.reset();
      const nat = await run(['fip', 'associate', '192.0.2.10', '--node', 'b1']);
      assert.equal(nat.code, 2);
      assert.match(
        nat.err,
        /^error IPF_E_USAGE: required option '--target <ip>' not specified \(only --mode routed may omit it\)$/m,
      );
      assert.equal(fake.requests.length, 0);
      fake.reply('POST /v1/fips/192.0.2.10/move', 200, fipView());
      assert.equal((await run(['fip', 'move', '192.0.2.10', '--node', 'b2'])).code, 0);
      assert.deepEqual(only().body, { node: 'b2' });
    });

    it('rejects an unknown --mode before sending anything', async () => {
      const r = await run([
        'fip',
        'associate',
        '192.0.2.10',
        '--target',
        '10.0.0.5',
        '--mode',
        'foo',
      ]);
      assert.equal(r.code, 2);
      assert.equal(fake.requests.length, 0);
      assert.match(
        r.err,
        /^error IPF_E_USAGE: option '--mode <mode>' argument 'foo' is invalid\. Allowed choices are nat, routed, ports\.$/m,
      );
    });

    it('move, disassociate, release, list and show', async () => {
      fake.reply('POST /v1/fips/192.0.2.10/move', 200, fipView());
      fake.reply('POST /v1/fips/192.0.2.10/disassociate', 200, fipView());
      fake.reply('DELETE /v1/fips/192.0.2.10?force=true', 200, {
        address: '192.0.2.10',
        released: true,
      });
      fake.reply(`DELETE /v1/fips/${V6_PATH}`, 200, { address: V6, released: true });
      fake.reply('GET /v1/fips?pool=public', 200, []);
      fake.reply(`GET /v1/fips/${V6_PATH}`, 200, fipView({ address: V6 }));
      const results = [
        await run(['fip', 'move', '192.0.2.10', '--target', '10.0.0.6', '--node', 'n2']),
        await run(['fip', 'disassociate', '192.0.2.10']),
        await run(['fip', 'release', '192.0.2.10', '--force']),
        await run(['fip', 'release', V6]),
        await run(['fip', 'list', '--pool', 'public']),
        await run(['fip', 'show', V6]),
      ];
      for (const r of results) assert.equal(r.code, 0, r.err);
      assert.deepEqual(sent(), [
        {
          method: 'POST',
          url: '/v1/fips/192.0.2.10/move',
          body: { target: '10.0.0.6', node: 'n2' },
        },
        { method: 'POST', url: '/v1/fips/192.0.2.10/disassociate', body: {} },
        { method: 'DELETE', url: '/v1/fips/192.0.2.10?force=true', body: undefined },
        { method: 'DELETE', url: `/v1/fips/${V6_PATH}`, body: undefined },
        { method: 'GET', url: '/v1/fips?pool=public', body: undefined },
        { method: 'GET', url: `/v1/fips/${V6_PATH}`, body: undefined },
      ]);
      assert.equal(results[2]!.out, 'released 192.0.2.10\n');
      assert.equal(results[4]!.out, 'ADDRESS  POOL  MODE  TARGET  NODE  STATE  DESCRIPTION\n');
    });

    it('list prints ADDRESS POOL MODE TARGET NODE STATE DESCRIPTION, marking stale status', async () => {
      fake.reply('GET /v1/fips', 200, [
        fipView({
          association: { mode: 'nat', target: '10.0.0.5', associatedAt: 't' },
          status: { state: 'ACTIVE', node: 'gw1', revision: 7 },
          description: 'web',
        }),
        fipView({
          address: V6,
          family: 6,
          association: { mode: 'routed', target: '2001:db8:1::5', node: 'home', associatedAt: 't' },
          status: { state: 'ACTIVE', node: 'gw1', revision: 6, stale: true },
        }),
        fipView({ address: '192.0.2.11', status: { state: 'ERROR', message: 'nft failed' } }),
      ]);
      const r = await run(['fip', 'list']);
      assert.equal(r.code, 0, r.err);
      assert.equal(only().url, '/v1/fips');
      assert.equal(
        r.out,
        [
          'ADDRESS       POOL    MODE    TARGET         NODE  STATE           DESCRIPTION',
          '192.0.2.10    public  nat     10.0.0.5       -     ACTIVE          web',
          '2001:db8::10  public  routed  2001:db8:1::5  home  ACTIVE (stale)  -',
          '192.0.2.11    public  -       -              -     ERROR           -',
          '',
        ].join('\n'),
      );
    });

    it('show prints details with forwards', async () => {
      fake.reply(
        'GET /v1/fips/192.0.2.10',
        200,
        fipView({
          association: { mode: 'ports', target: '2001:db8:1::5', associatedAt: 't' },
          forwards: [
            forward,
            {
              ...forward,
              id: 'f2',
              protocol: 'udp',
              port: 53,
              portEnd: 53,
              targetPort: 53,
              target: '10.0.0.9',
              node: 'home',
            },
          ],
          status: { state: 'ERROR', node: 'gw1', message: 'nft: no such table' },
          tags: ['x', 'y'],
        }),
      );
      const r = await run(['fip', 'show', '192.0.2.10']);
      assert.equal(r.code, 0, r.err);
      assert.equal(
        r.out,
        [
          'address:      192.0.2.10',
          'pool:         public',
          'state:        ERROR on gw1: nft: no such table',
          'mode:         ports',
          'target:       2001:db8:1::5',
          'node:         -',
          'masquerade:   no',
          'forwards:     tcp 8000-8010 -> [2001:db8:1::5]:9000-9010 [f1]',
          '              udp 53 -> 10.0.0.9:53 on home [f2]',
          'description:  -',
          'tags:         x, y',
          'allocated:    2025-01-01T00:00:00.000Z',
          'revision:     7',
          '',
        ].join('\n'),
      );
    });

    it('--json prints the returned data, before or after the command', async () => {
      const data = [fipView()];
      fake.reply('GET /v1/fips', 200, data);
      const before = await run(['--json', 'fip', 'list']);
      const afterwards = await run(['fip', 'list', '--json']);
      assert.deepEqual(JSON.parse(before.out), data);
      assert.equal(afterwards.out, before.out);
    });
  });

  describe('forward', () => {
    it('add, list and remove', async () => {
      fake.reply(`POST /v1/fips/${V6_PATH}/forwards`, 201, forward);
      fake.reply('GET /v1/fips/192.0.2.10/forwards', 200, [
        forward,
        {
          ...forward,
          id: 'f2',
          protocol: 'udp',
          port: 53,
          portEnd: 53,
          targetPort: 5353,
          target: '10.0.0.9',
          node: 'home',
          description: 'dns',
        },
      ]);
      fake.reply('DELETE /v1/fips/192.0.2.10/forwards/f1', 200, {
        address: '192.0.2.10',
        id: 'f1',
        removed: true,
      });
      const add = await run([
        'forward',
        'add',
        V6,
        '--proto',
        'tcp',
        '--port',
        '8000-8010',
        '--target-port',
        '9000',
        '--target',
        '2001:db8:1::5',
        '--node',
        'home',
        '--description',
        'web',
      ]);
      const minimal = await run([
        'forward',
        'add',
        V6,
        '--proto',
        'udp',
        '--port',
        '53',
        '--target',
        '10.0.0.9',
      ]);
      const list = await run(['forward', 'list', '192.0.2.10']);
      const remove = await run(['forward', 'remove', '192.0.2.10', 'f1']);
      for (const r of [add, minimal, list, remove]) assert.equal(r.code, 0, r.err);
      assert.deepEqual(sent(), [
        {
          method: 'POST',
          url: `/v1/fips/${V6_PATH}/forwards`,
          body: {
            protocol: 'tcp',
            port: '8000-8010',
            targetPort: 9000,
            target: '2001:db8:1::5',
            node: 'home',
            description: 'web',
          },
        },
        {
          method: 'POST',
          url: `/v1/fips/${V6_PATH}/forwards`,
          body: { protocol: 'udp', port: '53', target: '10.0.0.9' },
        },
        { method: 'GET', url: '/v1/fips/192.0.2.10/forwards', body: undefined },
        { method: 'DELETE', url: '/v1/fips/192.0.2.10/forwards/f1', body: undefined },
      ]);
      assert.equal(
        list.out,
        [
          'ID  PROTO  PORT       TARGET         TARGET-PORT  NODE  DESCRIPTION',
          'f1  tcp    8000-8010  2001:db8:1::5  9000-9010    -     -',
          'f2  udp    53         10.0.0.9       5353         home  dns',
          '',
        ].join('\n'),
      );
      assert.equal(remove.out, 'removed forward f1 from 192.0.2.10\n');
    });

    it('rejects a bad --proto, a malformed --port and a missing --target', async () => {
      for (const args of [
        ['--proto', 'icmp', '--port', '80', '--target', '10.0.0.5'],
        ['--proto', 'tcp', '--port', 'http', '--target', '10.0.0.5'],
        ['--proto', 'tcp', '--port', '80', '--target-port', '99999', '--target', '10.0.0.5'],
        ['--proto', 'tcp', '--port', '80'],
      ]) {
        const r = await run(['forward', 'add', '192.0.2.10', ...args]);
        assert.equal(r.code, 2, args.join(' '));
        assert.match(r.err, /^error IPF_E_USAGE: /);
      }
      assert.equal(fake.requests.length, 0);
    });
  });

  describe('node, status and version', () => {
    const node: NodeView = {
      name: 'gw1',
      site: 'fra',
      endpoint: '203.0.113.1:51820',
      addresses: ['203.0.113.1', '2001:db8::1'],
      reservedPorts: [{ protocol: 'tcp', port: 22 }],
      agentVersion: '0.1.0',
      registeredAt: 't',
      overlayIp: '192.168.0.10',
      alive: true,
    };

    it('node list and show', async () => {
      fake.reply('GET /v1/nodes', 200, [
        node,
        {
          ...node,
          name: 'home',
          site: undefined,
          overlayIp: undefined,
          endpoint: undefined,
          addresses: [],
          alive: false,
        },
      ]);
      fake.reply('GET /v1/nodes/gw1', 200, node);
      const list = await run(['node', 'list']);
      const show = await run(['node', 'show', 'gw1']);
      assert.equal(list.code, 0, list.err);
      assert.equal(show.code, 0, show.err);
      assert.equal(
        list.out,
        [
          'NAME  ALIVE  SITE  OVERLAY       ENDPOINT           ADDRESSES                VERSION',
          'gw1   yes    fra   192.168.0.10  203.0.113.1:51820  203.0.113.1,2001:db8::1  0.1.0',
          'home  no     -     -             -                  -                        0.1.0',
          '',
        ].join('\n'),
      );
      assert.match(show.out, /^reserved ports: +tcp\/22$/m);
      assert.match(show.out, /^overlay: +192\.168\.0\.10$/m);
      assert.match(show.out, /^mesh: +-$/m);
      assert.deepEqual(
        sent().map((s) => s.url),
        ['/v1/nodes', '/v1/nodes/gw1'],
      );
    });

    it('status', async () => {
      const status: StatusResponse = {
        node: 'gw1',
        version: '0.1.0',
        store: { kind: 'sqlite', revision: 42 },
        dataplane: { kind: 'fake', lastApply: 't', realisedRevision: 41, lastError: 'boom' },
        fips: { ACTIVE: 2, DOWN: 1, UNREACHABLE: 0, ERROR: 0 },
        nodes: { total: 2, alive: 1 },
      };
      fake.reply('GET /v1/status', 200, status);
      const r = await run(['status']);
      assert.equal(r.code, 0, r.err);
      assert.equal(
        r.out,
        [
          'node:       gw1',
          'version:    0.1.0',
          'store:      sqlite (revision 42)',
          'dataplane:  fake, last apply t, realised revision 41',
          '            last error: boom',
          'fips:       ACTIVE 2, DOWN 1, UNREACHABLE 0, ERROR 0',
          'nodes:      1 alive of 2',
          'tunnel:     -',
          '',
        ].join('\n'),
      );
    });

    it('version prints the CLI version and the agent’s, or why the agent did not answer', async () => {
      fake.reply('GET /v1/version', 200, { version: '9.9.9', node: 'gw1' });
      const ok = await run(['version']);
      assert.equal(ok.code, 0, ok.err);
      assert.match(ok.out, /^cli: +\d+\.\d+\.\d+/m);
      assert.match(ok.out, /^agent: +9\.9\.9 \(node gw1\)$/m);

      const down = await run(['version'], { IPFERRY_TOKEN: TOKEN }, await closedPort());
      assert.equal(down.code, 0, down.err);
      assert.match(down.out, /^agent: +unknown \(IPF_E_UNREACHABLE: /m);
      const asJson = await run(['version', '--json'], { IPFERRY_TOKEN: TOKEN }, await closedPort());
      const parsed = JSON.parse(asJson.out) as { cli: string; agentError: { code: string } };
      assert.equal(parsed.agentError.code, 'IPF_E_UNREACHABLE');
    });
  });

  describe('mesh', () => {
    let dir = '';
    before(() => {
      dir = mkdtempSync(join(tmpdir(), 'ipferry-mesh-'));
    });
    after(() => {
      rmSync(dir, { recursive: true, force: true });
    });

    const policy: MeshPolicy = {
      overlay: '192.168.0.0/18',
      maxChange: 2,
      fleet: { openPorts: ['tcp/443'], sshAllow: ['192.0.2.0/24'] },
      sites: {
        fra: { lans: ['10.1.0.0/16'] },
        ams: { lans: ['10.2.0.0/16'], openPorts: ['udp/53'], rejectAll: true },
      },
      nodes: {
        web1: { rejectAll: true, natOverrides: { '192.168.0.9': '198.51.100.9' } },
      },
    };
    const previous: MeshPolicy = { ...policy, nodes: {} };
    const onTrial: MeshView = {
      record: {
        policy,
        trial: { previous, deadline: '2026-03-01T12:05:00.000Z' },
        updatedAt: '2026-03-01T12:00:00.000Z',
      },
      inForce: policy,
      rolledBack: false,
      confirmation: { revision: 40, at: '2026-02-28T09:00:00.000Z' },
      revision: 57,
    };
    const MESH_LINES = [
      'overlay:       192.168.0.0/18',
      'max change:    2',
      'fleet:         open tcp/443; ssh 192.0.2.0/24',
      'site ams:      lans 10.2.0.0/16; open udp/53; reject_all on',
      'site fra:      lans 10.1.0.0/16',
    ];

    it('show prints the policy in force, its trial and deadline, and the latest confirmation', async () => {
      fake.reply('GET /v1/mesh', 200, onTrial);
      const r = await run(['mesh', 'show']);
      assert.equal(r.code, 0, r.err);
      assert.equal(
        r.out,
        [
          'policy:        set 2026-03-01T12:00:00.000Z',
          'trial:         until 2026-03-01T12:05:00.000Z: `ipferry mesh confirm` keeps it, else every node goes back to the previous policy',
          'rolled back:   no',
          'last confirm:  2026-02-28T09:00:00.000Z: released holds up to revision 40',
          'revision:      57',
          ...MESH_LINES,
          'node web1:     reject_all on; nat 192.168.0.9->198.51.100.9',
          '',
        ].join('\n'),
      );
      assert.deepEqual(sent(), [{ method: 'GET', url: '/v1/mesh', body: undefined }]);
    });

    it('show says when a trial ran out and shows the previous policy, or that there is none', async () => {
      const rollback = {
        at: '2026-03-01T12:05:00.000Z',
        changedAt: '2026-03-01T12:00:00.000Z',
        policy,
      };
      const ranOut = [
        'trial:         ran out unconfirmed at 2026-03-01T12:05:00.000Z: `ipferry mesh confirm` is refused',
        'rolled back:   yes, at 2026-03-01T12:05:00.000Z: every node went back; `ipferry mesh set` applies the change again',
        'last confirm:  2026-02-28T09:00:00.000Z: released holds up to revision 40',
      ];
      // Before an agent wrote the rollback (the record still holds the trial), and after (the
      // record holds the previous policy): the same story.
      for (const view of [
        { ...onTrial, inForce: previous, rolledBack: true, rollback },
        {
          ...onTrial,
          record: { policy: previous, updatedAt: '2026-03-01T12:05:01.000Z' },
          inForce: previous,
          rolledBack: true,
          rollback,
          revision: 58,
        },
      ]) {
        fake.reset();
        fake.reply('GET /v1/mesh', 200, view);
        const back = await run(['mesh', 'show']);
        assert.equal(back.code, 0, back.err);
        assert.equal(
          back.out,
          [
            'policy:        the one before the change of 2026-03-01T12:00:00.000Z (below)',
            ...ranOut,
            `revision:      ${view.revision}`,
            ...MESH_LINES,
            '',
          ].join('\n'),
        );
      }
      // A first policy that ran out: no policy at all now.
      fake.reset();
      fake.reply('GET /v1/mesh', 200, {
        rolledBack: true,
        rollback,
        confirmation: onTrial.confirmation,
        revision: 0,
      });
      const gone = await run(['mesh', 'show']);
      assert.equal(
        gone.out,
        [
          'policy:        none in force: the change of 2026-03-01T12:00:00.000Z was the first policy',
          ...ranOut,
          'revision:      0',
          '',
        ].join('\n'),
      );
      fake.reset();
      fake.reply('GET /v1/mesh', 200, { rolledBack: false, revision: 3 });
      const none = await run(['mesh', 'show']);
      assert.equal(
        none.out,
        [
          'policy:        none: set one with `ipferry mesh set --file POLICY.yaml`',
          'last confirm:  -',
          'revision:      3',
          '',
        ].join('\n'),
      );
      const asJson = await run(['mesh', 'show', '--json']);
      assert.deepEqual(JSON.parse(asJson.out), { rolledBack: false, revision: 3 });
    });

    it('set reads a YAML or JSON policy file and sends it, with --confirm-within in seconds', async () => {
      const yamlFile = join(dir, 'mesh.yaml');
      writeFileSync(
        yamlFile,
        [
          'overlay: 192.168.0.0/18',
          'maxChange: 2',
          'fleet:',
          '  openPorts: [tcp/443]',
          '  sshAllow: [192.0.2.0/24]',
          'sites:',
          '  fra: { lans: [10.1.0.0/16] }',
          'nodes:',
          '  web1: { rejectAll: true }',
          '',
        ].join('\n'),
      );
      const expected = {
        overlay: '192.168.0.0/18',
        maxChange: 2,
        fleet: { openPorts: ['tcp/443'], sshAllow: ['192.0.2.0/24'] },
        sites: { fra: { lans: ['10.1.0.0/16'] } },
        nodes: { web1: { rejectAll: true } },
      };
      const record: MeshPolicyRecord = {
        policy: expected,
        trial: { previous: null, deadline: '2026-03-01T12:05:00.000Z' },
        updatedAt: '2026-03-01T12:00:00.000Z',
      };
      fake.reply('PUT /v1/mesh/policy', 200, record);
      const r = await run(['mesh', 'set', '--file', yamlFile, '--confirm-within', '5m']);
      assert.equal(r.code, 0, r.err);
      assert.deepEqual(sent(), [
        {
          method: 'PUT',
          url: '/v1/mesh/policy',
          body: { policy: expected, confirmWithinSeconds: 300 },
        },
      ]);
      assert.equal(
        r.out,
        [
          'policy:  set 2026-03-01T12:00:00.000Z: overlay 192.168.0.0/18, 1 site(s), 1 node layer(s)',
          'trial:   until 2026-03-01T12:05:00.000Z: `ipferry mesh confirm` keeps it, else the mesh goes away (there was no policy before)',
          '',
        ].join('\n'),
      );

      fake.reset();
      const jsonFile = join(dir, 'mesh.json');
      writeFileSync(jsonFile, JSON.stringify(expected));
      fake.reply('PUT /v1/mesh/policy', 200, { policy: expected, updatedAt: 't' });
      const plain = await run(['mesh', 'set', '--file', jsonFile]);
      assert.equal(plain.code, 0, plain.err);
      assert.deepEqual(only().body, { policy: expected }, 'no trial without --confirm-within');
      assert.match(plain.out, /^trial: +none \(confirmed\)$/m);
    });

    it('set refuses an unreadable or broken file and a bad duration without sending anything', async () => {
      const broken = join(dir, 'broken.yaml');
      writeFileSync(broken, 'overlay: 192.168.0.0/18\nfleet: [unclosed\n');
      let r = await run(['mesh', 'set', '--file', broken]);
      assert.equal(r.code, 1);
      assert.match(
        r.err,
        /^error IPF_E_CONFIG: Configuration --file .*broken\.yaml is invalid: is not valid YAML or JSON at line \d+$/m,
      );
      assert.match(r.err, /^hint: /m);
      r = await run(['mesh', 'set', '--file', join(dir, 'missing.yaml')]);
      assert.equal(r.code, 1);
      assert.match(r.err, /IPF_E_CONFIG.*cannot be read \(ENOENT\)/);
      r = await run(['mesh', 'set', '--file', broken, '--confirm-within', '5x']);
      assert.equal(r.code, 2);
      assert.match(r.err, /IPF_E_USAGE.*duration such as 90s/);
      r = await run(['mesh', 'set']);
      assert.equal(r.code, 2);
      assert.match(r.err, /--file/);
      assert.equal(fake.requests.length, 0);
    });

    it('set reports the agent’s validation problems, exit 1', async () => {
      const file = join(dir, 'bad-ports.yaml');
      writeFileSync(file, 'overlay: 192.168.0.0/18\nfleet: { openPorts: [tcp/70000] }\n');
      fake.reply('PUT /v1/mesh/policy', 400, {
        error: {
          code: 'IPF_E_VALIDATION',
          message: 'The request is invalid: fleet.openPorts[0]: must be a port 1–65535',
          hint: 'Fix every problem listed in "problems" and try again.',
          problems: [{ path: 'fleet.openPorts[0]', message: 'must be a port 1–65535' }],
        },
      });
      const r = await run(['mesh', 'set', '--file', file]);
      assert.equal(r.code, 1);
      assert.equal(r.out, '');
      assert.match(r.err, /^error IPF_E_VALIDATION: .*fleet\.openPorts\[0\]/m);
    });

    it('reject-all switches one node in the policy in force and sets it, as a trial', async () => {
      fake.reply('GET /v1/nodes/web2', 200, { name: 'web2' });
      // The last trial ran out: the previous policy is what the nodes run and what changes.
      fake.reply('GET /v1/mesh', 200, { ...onTrial, inForce: previous, rolledBack: true });
      const next = { ...previous, nodes: { web2: { rejectAll: true } } };
      fake.reply('PUT /v1/mesh/policy', 200, {
        policy: next,
        trial: { previous, deadline: '2026-03-01T13:01:30.000Z' },
        updatedAt: '2026-03-01T13:00:00.000Z',
      });
      const r = await run(['mesh', 'reject-all', 'web2', 'on', '--confirm-within', '90s']);
      assert.equal(r.code, 0, r.err);
      assert.deepEqual(
        sent().map((s) => `${s.method} ${s.url}`),
        ['GET /v1/nodes/web2', 'GET /v1/mesh', 'PUT /v1/mesh/policy'],
      );
      assert.deepEqual(sent()[2]?.body, { policy: next, confirmWithinSeconds: 90 });
      assert.equal(
        r.out,
        [
          'reject_all:  on for node web2',
          'trial:       until 2026-03-01T13:01:30.000Z: `ipferry mesh confirm` keeps it, else every node goes back to the previous policy',
          '',
        ].join('\n'),
      );

      fake.reset();
      fake.reply('GET /v1/nodes/web1', 200, { name: 'web1' });
      fake.reply('GET /v1/mesh', 200, { ...onTrial, record: { policy, updatedAt: 't' } });
      fake.reply('PUT /v1/mesh/policy', 200, { policy, updatedAt: 't' });
      const off = await run(['mesh', 'reject-all', 'web1', 'off']);
      assert.equal(off.code, 0, off.err);
      assert.deepEqual(sent()[2]?.body, {
        policy: {
          ...policy,
          nodes: {
            web1: { rejectAll: false, natOverrides: { '192.168.0.9': '198.51.100.9' } },
          },
        },
      });
    });

    it('reject-all refuses a bad state, an unknown node and a mesh without policy', async () => {
      let r = await run(['mesh', 'reject-all', 'web1', 'maybe']);
      assert.equal(r.code, 2);
      assert.match(r.err, /IPF_E_USAGE.*Allowed choices are on, off/);
      assert.equal(fake.requests.length, 0);

      fake.reply('GET /v1/nodes/web9', 404, {
        error: {
          code: 'IPF_E_NODE_NOT_FOUND',
          message: 'Node web9 is not known.',
          hint: 'Check `ipferry node list`.',
        },
      });
      r = await run(['mesh', 'reject-all', 'web9', 'on']);
      assert.equal(r.code, 1);
      assert.match(r.err, /IPF_E_NODE_NOT_FOUND/);
      assert.deepEqual(
        sent().map((s) => s.url),
        ['/v1/nodes/web9'],
      );

      fake.reset();
      fake.reply('GET /v1/nodes/web1', 200, { name: 'web1' });
      fake.reply('GET /v1/mesh', 200, { rolledBack: false, revision: 3 });
      r = await run(['mesh', 'reject-all', 'web1', 'on']);
      assert.equal(r.code, 1);
      assert.match(r.err, /^error IPF_E_MESH_NOT_CONFIGURED: No mesh policy is set\.$/m);
      assert.ok(!sent().some((s) => s.method === 'PUT'), 'nothing set');
    });

    it('confirm posts and says what it kept and released', async () => {
      fake.reply('POST /v1/mesh/confirm', 200, {
        confirmedTrial: true,
        confirmation: { revision: 61, at: 't' },
        released: [],
      });
      const r = await run(['mesh', 'confirm']);
      assert.equal(r.code, 0, r.err);
      assert.deepEqual(only(), {
        method: 'POST',
        url: '/v1/mesh/confirm',
        authorization: `Bearer ${TOKEN}`,
        contentType: 'application/json',
        body: {},
      });
      assert.equal(
        r.out,
        [
          'confirmed:  the policy on trial: it stays',
          'released:   nothing: no node reported a membership change held back (revision 61)',
          '',
        ].join('\n'),
      );
      // Only what it did: no trial, the holds it released.
      fake.reset();
      fake.reply('POST /v1/mesh/confirm', 200, {
        confirmedTrial: false,
        confirmation: { revision: 70, at: 't' },
        released: [
          {
            node: 'web1',
            hold: { keeping: ['192.168.0.3', '192.168.0.4'], maxChange: 1, sinceRevision: 66 },
          },
          { node: 'web2', hold: { keeping: ['192.168.0.3'], maxChange: 0, sinceRevision: 67 } },
        ],
      });
      const holds = await run(['mesh', 'confirm']);
      assert.equal(
        holds.out,
        [
          'confirmed:  nothing: no policy change was on trial',
          'released:   web1: 2 departed member(s) (192.168.0.3, 192.168.0.4), dropped now',
          '            web2: 1 departed member(s) (192.168.0.3), dropped now',
          '',
        ].join('\n'),
      );
      fake.reset();
      fake.reply('POST /v1/mesh/confirm', 200, {
        confirmedTrial: false,
        trialDeadline: '2026-03-01T12:05:00.000Z',
        confirmation: { revision: 71, at: 't' },
        released: [],
      });
      const holdsOnly = await run(['mesh', 'confirm', '--holds-only']);
      assert.deepEqual(sent()[0]?.body, { holdsOnly: true });
      assert.match(
        holdsOnly.out,
        /^confirmed: +nothing \(--holds-only\): the policy on trial still rolls back at 2026-03-01T12:05:00\.000Z unless confirmed$/m,
      );
      fake.reset();
      fake.reply('POST /v1/mesh/confirm', 409, {
        error: {
          code: 'IPF_E_MESH_NO_TRIAL',
          message: 'The mesh policy change of a was not confirmed by its deadline, b: …',
          hint: 'To apply it after all, set it again.',
        },
      });
      const late = await run(['mesh', 'confirm']);
      assert.equal(late.code, 1);
      assert.equal(late.out, '');
      assert.match(late.err, /^error IPF_E_MESH_NO_TRIAL: /m);
    });

    const audit: MeshAudit = {
      revision: 88,
      overlay: { prefix: '192.168.0.0/18', used: 4, size: 16382 },
      unregistered: [
        { name: 'db-main', addresses: ['10.2.0.50', '203.0.113.50'], site: 'ams', line: 3 },
        { name: 'mail', addresses: ['10.1.0.25'], line: 7 },
      ],
      unlisted: ['gw1'],
      lagging: [
        { node: 'web2', appliedRevision: 80, alive: true },
        { node: 'web3', alive: false },
        { node: 'web4', appliedRevision: 77, alive: false },
      ],
      rejectAll: { on: ['web1'], off: ['gw1', 'web2', 'web3'] },
      holds: [
        {
          node: 'web1',
          hold: { keeping: ['192.168.0.4', '192.168.0.5'], maxChange: 1, sinceRevision: 85 },
        },
      ],
      rolledBack: [],
    };

    it('audit sends the inventory file with its name and prints one section per finding', async () => {
      const inventory = join(dir, 'hosts.txt');
      const text = 'web1 10.1.0.11\ndb-main 10.2.0.50,203.0.113.50 site=ams\n';
      writeFileSync(inventory, text);
      fake.reply('POST /v1/mesh/audit', 200, audit);
      const r = await run(['mesh', 'audit', '--inventory', inventory]);
      assert.equal(r.code, 0, r.err);
      assert.deepEqual(only().body, { inventory: text, source: inventory });
      assert.equal(
        r.out,
        [
          'revision: 88',
          'overlay:  4 of 16382 addresses used (192.168.0.0/18)',
          '',
          'unregistered hosts (2):',
          '  db-main  10.2.0.50,203.0.113.50  site=ams  (line 3)',
          '  mail  10.1.0.25  (line 7)',
          'unlisted nodes (1):',
          '  gw1',
          'lagging nodes (3):',
          '  web2  applied revision 80',
          '  web3  not alive; no applied revision known',
          '  web4  not alive; last applied revision 77',
          'reject_all on (1):',
          '  web1',
          'reject_all off (3):',
          '  gw1',
          '  web2',
          '  web3',
          'holds (1):',
          '  web1  keeping 2 departed member(s) (192.168.0.4, 192.168.0.5), max change 1, since revision 85: `ipferry mesh confirm` releases it',
          'rolled back (0):',
          '  none',
          '',
        ].join('\n'),
      );
      const asJson = await run(['mesh', 'audit', '--inventory', inventory, '--json']);
      assert.deepEqual(JSON.parse(asJson.out), audit);
    });

    it('audit without an inventory sends an empty body and says which sections need one', async () => {
      fake.reply('POST /v1/mesh/audit', 200, { ...audit, unregistered: [], unlisted: [] });
      const r = await run(['mesh', 'audit']);
      assert.equal(r.code, 0, r.err);
      assert.deepEqual(only().body, {});
      assert.match(
        r.out,
        /^unregistered hosts:\n {2}\(no inventory given\)\nunlisted nodes:\n {2}\(no inventory given\)$/m,
      );
    });

    it('audit reports an inventory line that does not parse (exit 1) and an unreadable file', async () => {
      const inventory = join(dir, 'bad-hosts.txt');
      writeFileSync(inventory, 'web1 10.1.0.11\nweb2 10.2.0.300\n');
      fake.reply('POST /v1/mesh/audit', 400, {
        error: {
          code: 'IPF_E_INVENTORY',
          message: `${inventory} line 2: "10.2.0.300" is not an IP address`,
          hint: 'Write one host per line: NAME ADDRESS[,ADDRESS…] [site=SITE]; "#" starts a comment.',
        },
      });
      let r = await run(['mesh', 'audit', '--inventory', inventory]);
      assert.equal(r.code, 1);
      assert.equal(r.out, '');
      assert.equal(
        r.err,
        [
          `error IPF_E_INVENTORY: ${inventory} line 2: "10.2.0.300" is not an IP address`,
          'hint: Write one host per line: NAME ADDRESS[,ADDRESS…] [site=SITE]; "#" starts a comment.',
          '',
        ].join('\n'),
      );
      fake.reset();
      r = await run(['mesh', 'audit', '--inventory', join(dir, 'nope.txt')]);
      assert.equal(r.code, 1);
      assert.match(
        r.err,
        /IPF_E_CONFIG: Configuration --inventory .*nope\.txt is invalid: cannot be read/,
      );
      assert.equal(fake.requests.length, 0);
    });

    const meshNode = (over: Partial<NodeView>): NodeView => ({
      name: 'web1',
      site: 'fra',
      addresses: ['10.1.0.11'],
      reservedPorts: [],
      registeredAt: 't',
      alive: true,
      ...over,
    });

    it('status prints one row per node from its agent’s mesh report', async () => {
      fake.reply('GET /v1/nodes', 200, [
        meshNode({
          name: 'gw1',
          overlayIp: '192.168.0.1',
          mesh: { appliedRevision: 88, rejectAll: false, members: 3 },
        }),
        meshNode({
          overlayIp: '192.168.0.11',
          mesh: {
            appliedRevision: 85,
            rejectAll: true,
            members: 3,
            hold: { keeping: ['192.168.0.4', '192.168.0.5'], maxChange: 1, sinceRevision: 85 },
            rolledBack: true,
          },
        }),
        meshNode({ name: 'new1', site: undefined, alive: false }),
      ]);
      const r = await run(['mesh', 'status']);
      assert.equal(r.code, 0, r.err);
      assert.equal(
        r.out,
        [
          'NAME  SITE  OVERLAY       ALIVE  APPLIED  REJECT_ALL  MEMBERS  HOLD  ROLLED_BACK',
          'gw1   fra   192.168.0.1   yes    88       off         3        -     no',
          'web1  fra   192.168.0.11  yes    85       on          3        2     yes',
          'new1  -     -             no     -        -           -        -     -',
          '',
        ].join('\n'),
      );
    });

    it('node show prints the mesh report with its hold', async () => {
      fake.reply(
        'GET /v1/nodes/web1',
        200,
        meshNode({
          overlayIp: '192.168.0.11',
          mesh: {
            appliedRevision: 85,
            rejectAll: true,
            members: 3,
            hold: { keeping: ['192.168.0.4'], maxChange: 0, sinceRevision: 85 },
          },
        }),
      );
      const r = await run(['node', 'show', 'web1']);
      assert.equal(r.code, 0, r.err);
      assert.match(r.out, /^overlay: +192\.168\.0\.11$/m);
      assert.match(
        r.out,
        /^mesh: +applied revision 85, reject_all on, 3 member\(s\)\n +hold: keeping 1 departed member\(s\) \(192\.168\.0\.4\), max change 0, since revision 85$/m,
      );
    });

    it('node remove deletes the node and says its overlay address is free; in use is exit 1', async () => {
      fake.reply('DELETE /v1/nodes/old1', 200, {
        name: 'old1',
        removed: true,
        overlayIp: '192.168.0.7',
      });
      const r = await run(['node', 'remove', 'old1']);
      assert.equal(r.code, 0, r.err);
      assert.deepEqual(sent(), [{ method: 'DELETE', url: '/v1/nodes/old1', body: undefined }]);
      assert.equal(r.out, 'removed node old1 (overlay address 192.168.0.7 is free again)\n');
      fake.reset();
      fake.reply('DELETE /v1/nodes/gw1', 409, {
        error: {
          code: 'IPF_E_NODE_IN_USE',
          message: 'Node gw1 is still in use: pool public.',
          hint: 'Move its floating IPs elsewhere and give its pools another gateway first.',
        },
      });
      const used = await run(['node', 'remove', 'gw1']);
      assert.equal(used.code, 1);
      assert.match(used.err, /^error IPF_E_NODE_IN_USE: Node gw1 is still in use: pool public\.$/m);
    });
  });

  describe("IP Floater's verbs", () => {
    it('getip allocates any free FIP, associates it in nat mode and prints it', async () => {
      fake.reply('POST /v1/fips', 201, { ...fipView(), created: true });
      fake.reply(
        'POST /v1/fips/192.0.2.10/associate',
        200,
        fipView({ association: { mode: 'nat', target: '10.0.0.5', associatedAt: 't' } }),
      );
      const r = await run(['getip', '10.0.0.5', '--pool', 'public']);
      assert.equal(r.code, 0, r.err);
      assert.equal(r.out, '192.0.2.10\n');
      assert.deepEqual(sent(), [
        { method: 'POST', url: '/v1/fips', body: { pool: 'public', family: 4 } },
        {
          method: 'POST',
          url: '/v1/fips/192.0.2.10/associate',
          body: { target: '10.0.0.5', mode: 'nat' },
        },
      ]);
    });

    it('getip releases the FIP again when the association fails', async () => {
      fake.reply('POST /v1/fips', 201, { ...fipView({ address: V6, family: 6 }), created: true });
      fake.reply(`POST /v1/fips/${V6_PATH}/associate`, 409, {
        error: {
          code: 'IPF_E_TARGET_IN_USE',
          message: 'Target 2001:db8:1::5 already has floating IP 2001:db8::11 in nat mode.',
          hint: 'Move it first.',
        },
      });
      fake.reply(`DELETE /v1/fips/${V6_PATH}?force=true`, 200, { address: V6, released: true });
      const r = await run(['getip', '2001:db8:1::5']);
      assert.equal(r.code, 1);
      assert.equal(r.out, '');
      assert.deepEqual(sent(), [
        { method: 'POST', url: '/v1/fips', body: { family: 6 } },
        {
          method: 'POST',
          url: `/v1/fips/${V6_PATH}/associate`,
          body: { target: '2001:db8:1::5', mode: 'nat' },
        },
        { method: 'DELETE', url: `/v1/fips/${V6_PATH}?force=true`, body: undefined },
      ]);
      assert.equal(
        r.err,
        'error IPF_E_TARGET_IN_USE: Target 2001:db8:1::5 already has floating IP 2001:db8::11 in nat mode.\nhint: Move it first.\n',
      );
    });

    it('getip says so when the rollback fails too', async () => {
      fake.reply('POST /v1/fips', 201, { ...fipView(), created: true });
      fake.reply('POST /v1/fips/192.0.2.10/associate', 400, {
        error: {
          code: 'IPF_E_BAD_ADDRESS',
          message: 'Not a valid IP address: 10.0.0.300',
          hint: 'h',
        },
      });
      fake.reply('DELETE /v1/fips/192.0.2.10?force=true', 503, {
        error: { code: 'IPF_E_STORE', message: 'The store is unavailable: locked', hint: 'h' },
      });
      const r = await run(['getip', '10.0.0.300']);
      assert.equal(r.code, 1);
      assert.match(r.err, /^error IPF_E_BAD_ADDRESS: Not a valid IP address: 10\.0\.0\.300$/m);
      assert.match(
        r.err,
        /^ {2}- rollback: 192\.0\.2\.10 is still allocated: releasing it failed: The store is unavailable: locked$/m,
      );
    });

    it('redirect takes an already allocated address over (409 FIP_IN_USE is fine)', async () => {
      fake.reply('POST /v1/fips', 409, {
        error: {
          code: 'IPF_E_FIP_IN_USE',
          message: 'Floating IP 192.0.2.10 is already allocated.',
          hint: 'h',
        },
      });
      fake.reply(
        'POST /v1/fips/192.0.2.10/associate',
        200,
        fipView({ association: { mode: 'nat', target: '10.0.0.7', associatedAt: 't' } }),
      );
      const r = await run(['redirect', '192.0.2.10', '10.0.0.7']);
      assert.equal(r.code, 0, r.err);
      assert.equal(r.out, '192.0.2.10 -> 10.0.0.7\n');
      assert.deepEqual(sent(), [
        { method: 'POST', url: '/v1/fips', body: { address: '192.0.2.10' } },
        {
          method: 'POST',
          url: '/v1/fips/192.0.2.10/associate',
          body: { target: '10.0.0.7', mode: 'nat', allowReassociation: true },
        },
      ]);
    });

    it('redirect releases an address it allocated itself when the association fails, and keeps an older one', async () => {
      fake.reply('POST /v1/fips', 201, { ...fipView({ address: V6, family: 6 }), created: true });
      fake.reply(`POST /v1/fips/${V6_PATH}/associate`, 409, {
        error: { code: 'IPF_E_CONFLICT', message: 'm', hint: 'h' },
      });
      fake.reply(`DELETE /v1/fips/${V6_PATH}?force=true`, 200, { address: V6, released: true });
      const fresh = await run(['redirect', V6, '2001:db8:1::5']);
      assert.equal(fresh.code, 1);
      assert.deepEqual(
        sent().map((s) => `${s.method} ${s.url}`),
        [
          'POST /v1/fips',
          `POST /v1/fips/${V6_PATH}/associate`,
          `DELETE /v1/fips/${V6_PATH}?force=true`,
        ],
      );

      fake.reset();
      fake.reply('POST /v1/fips', 409, {
        error: { code: 'IPF_E_FIP_IN_USE', message: 'm', hint: 'h' },
      });
      fake.reply(`POST /v1/fips/${V6_PATH}/associate`, 409, {
        error: { code: 'IPF_E_CONFLICT', message: 'm', hint: 'h' },
      });
      const existing = await run(['redirect', V6, '2001:db8:1::5']);
      assert.equal(existing.code, 1);
      assert.deepEqual(
        sent().map((s) => s.method),
        ['POST', 'POST'],
      );
    });

    it('redirect stops at other allocation errors', async () => {
      fake.reply('POST /v1/fips', 400, {
        error: {
          code: 'IPF_E_ADDRESS_NOT_IN_POOL',
          message: 'Address 8.8.8.8 is not in any pool.',
          hint: 'h',
        },
      });
      const r = await run(['redirect', '8.8.8.8', '10.0.0.7']);
      assert.equal(r.code, 1);
      assert.equal(fake.requests.length, 1);
      assert.match(r.err, /^error IPF_E_ADDRESS_NOT_IN_POOL: /);
    });

    it('releaseip releases with force', async () => {
      fake.reply(`DELETE /v1/fips/${V6_PATH}?force=true`, 200, { address: V6, released: true });
      const r = await run(['releaseip', V6]);
      assert.equal(r.code, 0, r.err);
      assert.equal(r.out, `released ${V6}\n`);
      assert.equal(only().url, `/v1/fips/${V6_PATH}?force=true`);
    });

    it('ippool lists pools and allocations', async () => {
      fake.reply('GET /v1/ippool', 200, [
        {
          pool: 'public',
          gateway: 'gw1',
          entries: ['192.0.2.0/28'],
          size: '16',
          allocated: [
            { address: '192.0.2.10', target: '10.0.0.5', mode: 'nat' },
            { address: '192.0.2.11' },
          ],
        },
      ]);
      const r = await run(['ippool']);
      assert.equal(r.code, 0, r.err);
      assert.equal(only().url, '/v1/ippool');
      assert.equal(
        r.out,
        [
          'POOL    GATEWAY  SIZE  ALLOCATED  ENTRIES',
          'public  gw1      16    2          192.0.2.0/28',
          '',
          'ADDRESS     POOL    MODE  TARGET',
          '192.0.2.10  public  nat   10.0.0.5',
          '192.0.2.11  public  -     -',
          '',
        ].join('\n'),
      );
    });

    it('arp prints the address of a MAC', async () => {
      fake.reply('GET /v1/arp/52%3A54%3A00%3A12%3A34%3A56', 200, {
        mac: '52:54:00:12:34:56',
        address: '198.51.100.7',
        source: 'pool',
        pool: 'public',
      });
      const r = await run(['arp', '52:54:00:12:34:56']);
      assert.equal(r.code, 0, r.err);
      assert.equal(r.out, '198.51.100.7\n');
      assert.equal(only().url, '/v1/arp/52%3A54%3A00%3A12%3A34%3A56');
    });
  });

  describe('errors and exit codes', () => {
    const validation = {
      error: {
        code: 'IPF_E_VALIDATION',
        message: 'The request is invalid: 2 problems',
        hint: 'Fix every problem listed in "problems" and try again.',
        problems: [
          { path: 'entries[0]', message: 'not a CIDR' },
          { path: 'gateway', message: 'unknown node' },
        ],
      },
    };

    it('prints the error, its problems and its hint; exit 1', async () => {
      fake.reply('POST /v1/pools', 400, validation);
      const r = await run(['pool', 'create', 'p', '--gateway', 'nope', '--cidr', 'x']);
      assert.equal(r.code, 1);
      assert.equal(r.out, '');
      assert.equal(
        r.err,
        [
          'error IPF_E_VALIDATION: The request is invalid: 2 problems',
          '  - entries[0]: not a CIDR',
          '  - gateway: unknown node',
          'hint: Fix every problem listed in "problems" and try again.',
          '',
        ].join('\n'),
      );
    });

    it('--json prints the ErrorBody on stderr', async () => {
      fake.reply('POST /v1/pools', 400, validation);
      const r = await run(['--json', 'pool', 'create', 'p', '--gateway', 'nope', '--cidr', 'x']);
      assert.equal(r.code, 1);
      assert.equal(r.out, '');
      assert.deepEqual(JSON.parse(r.err), validation);
    });

    it('keeps the code, message and hint of an error this CLI does not know', async () => {
      const body = {
        error: {
          code: 'IPF_E_FROM_THE_FUTURE',
          message: 'Something new.',
          hint: 'Upgrade the CLI.',
        },
      };
      fake.reply('GET /v1/status', 418, body);
      const human = await run(['status']);
      assert.equal(human.code, 1);
      assert.equal(
        human.err,
        'error IPF_E_FROM_THE_FUTURE: Something new.\nhint: Upgrade the CLI.\n',
      );
      const asJson = await run(['status', '--json']);
      assert.deepEqual(JSON.parse(asJson.err), body);
    });

    it('reconstructs a known error as that IpferryError code', () => {
      const e = new RemoteError(404, {
        code: 'IPF_E_POOL_NOT_FOUND',
        message: 'Pool x does not exist.',
        hint: 'List pools.',
      });
      assert.equal(e.code, 'IPF_E_POOL_NOT_FOUND');
      assert.equal(e.status, 404);
      assert.equal(e.message, 'Pool x does not exist.');
      assert.equal(e.hint, 'List pools.');
      const unknown = new RemoteError(500, { code: 'IPF_E_NEW', message: 'm', hint: 'h' });
      assert.equal(unknown.code, 'IPF_E_INTERNAL');
      assert.equal(unknown.remoteCode, 'IPF_E_NEW');
    });

    it('reports an answer that is not an ipferry error', async () => {
      fake.replyRaw('GET /v1/status', 502, '<html>Bad Gateway</html>');
      const r = await run(['status']);
      assert.equal(r.code, 1);
      assert.match(
        r.err,
        /^error IPF_E_INTERNAL: The server answered GET \/v1\/status with HTTP 502 but no ipferry error: <html>Bad Gateway<\/html>$/m,
      );
    });

    it('exit 3 when the agent cannot be reached', async () => {
      const server = await closedPort();
      const r = await run(['fip', 'list'], { IPFERRY_TOKEN: TOKEN }, server);
      assert.equal(r.code, 3);
      assert.match(
        r.err,
        new RegExp(
          `^error IPF_E_UNREACHABLE: Cannot reach the agent at ${server.replace(/\./g, '\\.')}: .*ECONNREFUSED`,
          'm',
        ),
      );
      assert.match(r.err, /^hint: /m);
    });

    it('exit 2 for usage errors: unknown command, unknown option, extra argument, bad --server', async () => {
      const cases: [string[], RegExp][] = [
        [['bogus'], /^error IPF_E_USAGE: unknown command 'bogus'$/m],
        [['fip', 'list', '--bogus'], /^error IPF_E_USAGE: unknown option '--bogus'$/m],
        [
          ['fip', 'show', '192.0.2.1', 'extra'],
          /^error IPF_E_USAGE: too many arguments for 'show'/m,
        ],
        [['fip', 'show'], /^error IPF_E_USAGE: missing required argument 'fip'$/m],
      ];
      for (const [args, pattern] of cases) {
        const r = await run(args);
        assert.equal(r.code, 2, args.join(' '));
        assert.match(r.err, pattern);
      }
      const badServer = await run(['fip', 'list'], { IPFERRY_TOKEN: TOKEN }, 'ftp://example.net');
      assert.equal(badServer.code, 2);
      assert.match(
        badServer.err,
        /^error IPF_E_USAGE: --server ftp:\/\/example\.net: the scheme must be http or https$/m,
      );
      const jsonUsage = await run([
        '--json',
        'fip',
        'associate',
        '192.0.2.1',
        '--target',
        'x',
        '--mode',
        'foo',
      ]);
      assert.equal(jsonUsage.code, 2);
      assert.equal(
        (JSON.parse(jsonUsage.err) as { error: { code: string } }).error.code,
        'IPF_E_USAGE',
      );
      assert.equal(fake.requests.length, 0);
    });

    it('reports a mistyped flag as unknown, with the flag meant, before any required one it hides', async () => {
      const typo = await run([
        'forward',
        'add',
        '192.0.2.2',
        '--proto',
        'tcp',
        '--port',
        '25',
        '--traget',
        '10.0.0.5',
      ]);
      assert.equal(typo.code, 2);
      assert.match(
        typo.err,
        /^error IPF_E_USAGE: unknown option '--traget' \(did you mean --target\?\)$/m,
      );
      const gateway = await run([
        'pool',
        'create',
        'p',
        '--gatway',
        'gw1',
        '--cidr',
        '192.0.2.0/30',
      ]);
      assert.match(gateway.err, /unknown option '--gatway' \(did you mean --gateway\?\)$/m);
      const command = await run(['fip', 'lsit']);
      assert.match(
        command.err,
        /^error IPF_E_USAGE: unknown command 'lsit' \(did you mean list\?\)$/m,
      );
      // Without a typo, a missing required flag is still named.
      const missing = await run(['forward', 'add', '192.0.2.2', '--proto', 'tcp', '--port', '25']);
      assert.equal(missing.code, 2);
      assert.match(
        missing.err,
        /^error IPF_E_USAGE: required option '--target <ip>' not specified$/m,
      );
      assert.match(missing.err, /^hint: Run `ipferry forward add --help` for usage\.$/m);
      assert.equal(fake.requests.length, 0);
    });

    it('names --confirm-within, not the API field, for a trial longer than the agent allows', async () => {
      const r = await run(['mesh', 'set', '--file', '/nonexistent.yaml', '--confirm-within', '8d']);
      assert.equal(r.code, 2);
      assert.match(
        r.err,
        /^error IPF_E_USAGE: option '--confirm-within <duration>' argument '8d' is invalid\. At most 604800 seconds \(7 days\)\.$/m,
      );
      assert.doesNotMatch(r.err, /confirmWithinSeconds/);
      assert.equal(fake.requests.length, 0);
    });

    it('https:// against an agent that serves plain HTTP says so, exit 3', async () => {
      const r = await run(
        ['fip', 'list'],
        { IPFERRY_TOKEN: TOKEN },
        fake.url.replace('http:', 'https:'),
      );
      assert.equal(r.code, 3);
      assert.match(
        r.err,
        /^error IPF_E_NOT_TLS: The agent at https:\/\/127\.0\.0\.1:\d+ does not speak TLS\.$/m,
      );
      assert.match(r.err, /^hint: Use http:\/\/ in --server .*--tls-cert and --tls-key\.$/m);
      assert.doesNotMatch(r.err, /SSL routines|openssl/i);
    });

    it('help is exit 0 on stdout; a group without a subcommand prints help on stderr, exit 2', async () => {
      const help = await run(['fip', '--help']);
      assert.equal(help.code, 0);
      assert.match(help.out, /^Usage: ipferry fip \[options\] \[command\]/);
      assert.match(help.out, /associate \[options\] <fip>/);
      const top = await run(['--help']);
      assert.equal(top.code, 0);
      assert.match(top.out, /getip \[options\] <private-ip>/);
      const group = await run(['fip']);
      assert.equal(group.code, 2);
      assert.equal(group.out, '');
      assert.match(group.err, /^Usage: ipferry fip/);
    });
  });

  describe('token', () => {
    let dir: string;
    before(() => {
      dir = mkdtempSync(join(tmpdir(), 'ipferry-cli-'));
    });
    after(() => {
      rmSync(dir, { recursive: true, force: true });
    });

    it('--token-file takes the first word of the first non-comment line and wins over IPFERRY_TOKEN', async () => {
      const file = join(dir, 'token');
      writeFileSync(file, `# API token\n\n  ${TOKEN} ro\nother-token\n`, { mode: 0o600 });
      fake.reply('GET /v1/fips', 200, []);
      const r = await run(['--token-file', file, 'fip', 'list'], { IPFERRY_TOKEN: 'from-env' });
      assert.equal(r.code, 0, r.err);
      assert.equal(only().authorization, `Bearer ${TOKEN}`);
    });

    it('the default token file is used when nothing else is given', async () => {
      const file = join(dir, 'default-token');
      writeFileSync(file, `${TOKEN}\n`, { mode: 0o600 });
      fake.reply('GET /v1/fips', 200, []);
      let err = '';
      const code = await main(
        ['node', 'ipferry', '--server', fake.url, 'fip', 'list'],
        { out: () => undefined, err: (s) => (err += s) },
        {},
        { defaultTokenFile: file },
      );
      assert.equal(code, 0, err);
      assert.equal(only().authorization, `Bearer ${TOKEN}`);
    });

    it('without any token no Authorization header is sent, and the 401 is reported', async () => {
      fake.reply('GET /v1/fips', 401, {
        error: {
          code: 'IPF_E_UNAUTHORIZED',
          message: 'Missing or invalid API token.',
          hint: 'Pass a token with --token-file or IPFERRY_TOKEN.',
        },
      });
      const r = await run(['fip', 'list'], {});
      assert.equal(r.code, 1);
      assert.equal(only().authorization, undefined);
      assert.match(r.err, /^error IPF_E_UNAUTHORIZED: /);
    });

    it('an unreadable or empty --token-file is an error, without a request', async () => {
      const empty = join(dir, 'empty');
      writeFileSync(empty, '# nothing here\n');
      const missing = await run(['--token-file', join(dir, 'missing'), 'fip', 'list']);
      assert.equal(missing.code, 1);
      assert.match(
        missing.err,
        /^error IPF_E_TOKEN_FILE: Token file .*missing cannot be read \(ENOENT\)\.$/m,
      );
      // Where a client gets a token, not how an agent keeps its secret files.
      assert.match(missing.err, /^hint: .*\/var\/lib\/ipferry\/api-token.*IPFERRY_TOKEN\.$/m);
      assert.doesNotMatch(missing.err, /chmod/);
      const none = await run(['fip', 'list', '--token-file', empty]);
      assert.equal(none.code, 1);
      assert.match(none.err, /contains no token/);
      assert.equal(fake.requests.length, 0);
    });

    it('parseTokenFile', () => {
      assert.equal(parseTokenFile('abc'), 'abc');
      assert.equal(parseTokenFile('\r\n# c\r\nabc rw\r\n'), 'abc');
      assert.equal(parseTokenFile('# only\n\n'), undefined);
    });
  });

  describe('TLS with --ca-file', () => {
    const tlsFake = new FakeAgent();
    let dir: string;
    let caFile: string;
    let skip: string | false = false;

    before(async () => {
      dir = mkdtempSync(join(tmpdir(), 'ipferry-tls-'));
      const key = join(dir, 'key.pem');
      caFile = join(dir, 'cert.pem');
      try {
        execFileSync(
          'openssl',
          [
            'req',
            '-x509',
            '-newkey',
            'ec',
            '-pkeyopt',
            'ec_paramgen_curve:prime256v1',
            '-nodes',
            '-keyout',
            key,
            '-out',
            caFile,
            '-days',
            '1',
            '-subj',
            '/CN=127.0.0.1',
            '-addext',
            'subjectAltName=IP:127.0.0.1',
          ],
          { stdio: 'ignore' },
        );
      } catch {
        skip = 'openssl is not available';
        return;
      }
      const { readFileSync } = await import('node:fs');
      await tlsFake.start({ key: readFileSync(key, 'utf8'), cert: readFileSync(caFile, 'utf8') });
    });
    after(async () => {
      await tlsFake.stop();
      rmSync(dir, { recursive: true, force: true });
    });

    it('an untrusted certificate is unreachable (exit 3) with a hint at --ca-file; with it the call succeeds', async (t) => {
      if (skip) return t.skip(skip);
      tlsFake.reply('GET /v1/nodes', 200, []);
      const untrusted = await run(['node', 'list'], { IPFERRY_TOKEN: TOKEN }, tlsFake.url);
      assert.equal(untrusted.code, 3);
      assert.match(untrusted.err, /not trusted .*--ca-file/);
      assert.equal(tlsFake.requests.length, 0);

      const trusted = await run(
        ['--ca-file', caFile, 'node', 'list'],
        { IPFERRY_TOKEN: TOKEN },
        tlsFake.url,
      );
      assert.equal(trusted.code, 0, trusted.err);
      const viaEnv = await run(
        ['node', 'list'],
        { IPFERRY_TOKEN: TOKEN, IPFERRY_CA_FILE: caFile },
        tlsFake.url,
      );
      assert.equal(viaEnv.code, 0, viaEnv.err);
      assert.equal(tlsFake.requests.length, 2);
      assert.equal(tlsFake.requests[0]!.authorization, `Bearer ${TOKEN}`);
    });

    it('an unreadable --ca-file is an error', async () => {
      const r = await run(['--ca-file', join(dir, 'nope.pem'), 'node', 'list']);
      assert.equal(r.code, 1);
      assert.match(
        r.err,
        /^error IPF_E_CONFIG: Configuration --ca-file .*nope\.pem is invalid: cannot be read \(ENOENT\)$/m,
      );
    });
  });

  describe('program', () => {
    it('`agent --token-file` reaches the agent’s own option, not the client’s', async () => {
      const ctx = new CliContext({
        io: { out: () => undefined, err: () => undefined },
        env: {},
        flags: () => ({}),
        version: '0',
      });
      const program = buildProgram(ctx, '0');
      const agent = program.commands.find((c) => c.name() === 'agent')!;
      let seen: Record<string, unknown> = {};
      agent.action((flags: Record<string, unknown>) => {
        seen = flags;
      });
      await program.parseAsync(['node', 'ipferry', 'agent', '--token-file', '/etc/ipferry/tokens']);
      assert.equal(seen['tokenFile'], '/etc/ipferry/tokens');
      assert.equal(program.opts()['tokenFile'], undefined);
    });
  });

  describe('printers', () => {
    it('table aligns columns, capitalises headers and trims trailing spaces', () => {
      assert.equal(
        table(
          ['a', 'long header'],
          [
            ['xxxx', ''],
            ['y', 'z'],
          ],
        ),
        'A     LONG HEADER\nxxxx\ny     z\n',
      );
      assert.equal(table(['only'], []), 'ONLY\n');
    });

    it('details aligns values and continues lists under the first item', () => {
      assert.equal(
        details([
          ['a', '1'],
          ['longer', ['x', 'y']],
          ['empty', []],
        ]),
        'a:       1\nlonger:  x\n         y\nempty:   -\n',
      );
    });
  });
});

/** A URL on which nothing listens. */
async function closedPort(): Promise<string> {
  const server = http.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return `http://127.0.0.1:${port}`;
}
