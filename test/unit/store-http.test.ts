/**
 * The `http` store against a real in-process hub (buildApi listening on 127.0.0.1 with an
 * in-memory SQLite store): the shared conformance suite, watches across hub restarts and silent
 * network cuts, the scope of node credentials, the join flow end to end with a real agent, TLS
 * pinning, and `ipferry node join-token create`.
 */
import assert from 'node:assert/strict';
import { randomBytes, X509Certificate } from 'node:crypto';
import { readFile, rm, stat, writeFile } from 'node:fs/promises';
import net, { type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, afterEach, before, beforeEach, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { FastifyInstance } from 'fastify';
import { resolveConfig } from '../../src/agent/config.js';
import { type RunningAgent, startAgent } from '../../src/agent/run.js';
import { buildApi } from '../../src/api/app.js';
import { TokenSet } from '../../src/api/auth.js';
import { ApiClient } from '../../src/client/api-client.js';
import { main } from '../../src/cli/main.js';
import { IpferryError } from '../../src/core/errors.js';
import { decodeJoinToken, encodeJoinToken } from '../../src/core/join.js';
import { EVENTS_ROOT, keys, PRIVATE_PREFIXES, ROOT } from '../../src/core/keys.js';
import { FakeDataplane } from '../../src/dataplane/fake.js';
import { ControlPlane } from '../../src/service/control.js';
import { type HttpStore, joinHub, openHttpStore } from '../../src/store/http.js';
import { openStore } from '../../src/store/open.js';
import { openSqliteStore, type SqliteStore } from '../../src/store/sqlite.js';
import type { Compare, Op, Store, WatchEvent } from '../../src/store/store.js';
import { selfSignedCertificate } from '../../src/lab/certs.js';
import { tempDir, TOKEN_FILE_TEXT, TOKEN_RO, TOKEN_RW, waitFor } from '../support/helpers.js';
import { storeConformance } from '../support/store-conformance.js';

// --- a hub ----------------------------------------------------------------------------------

interface Hub {
  readonly app: FastifyInstance;
  readonly store: SqliteStore;
  readonly control: ControlPlane;
  readonly url: string;
  readonly port: number;
  /** Requests that reached the hub's HTTP layer. */
  readonly requests: { count: number };
  close(): Promise<void>;
}

interface HubOptions {
  readonly store?: SqliteStore;
  readonly port?: number;
  readonly https?: { readonly cert: string; readonly key: string };
  /** Collects the hub's log lines (info level) here. */
  readonly logs?: string[];
}

async function startHub(options: HubOptions = {}): Promise<Hub> {
  const store = options.store ?? (await openSqliteStore(':memory:'));
  const control = new ControlPlane(store);
  const app = await buildApi({
    control,
    tokens: TokenSet.parse(TOKEN_FILE_TEXT, 'test'),
    ...(options.https ? { https: options.https } : {}),
    ...(options.logs
      ? {
          logger: {
            level: 'info',
            redact: ['req.headers.authorization'],
            stream: { write: (line: string) => options.logs?.push(line) },
          },
        }
      : {}),
    agent: {
      node: 'gw1',
      version: 'test',
      dataplane: () => ({ kind: 'fake' }),
      plan: () => Promise.reject(new Error('no plan here')),
      neighbours: () => Promise.resolve([]),
    },
  });
  const requests = { count: 0 };
  app.addHook('onRequest', (_request, _reply, done) => {
    requests.count++;
    done();
  });
  await app.listen({ host: '127.0.0.1', port: options.port ?? 0 });
  const { port } = app.server.address() as AddressInfo;
  const scheme = options.https ? 'https' : 'http';
  return {
    app,
    store,
    control,
    url: `${scheme}://127.0.0.1:${port}`,
    port,
    requests,
    close: () => app.close(),
  };
}

/**
 * Everything in the store but the audit trail, with revisions: equal snapshots mean nothing was
 * written (the trail records every write request, refused ones too).
 */
async function snapshot(store: Store): Promise<string> {
  const { kvs } = await store.list('');
  return JSON.stringify(kvs.filter((kv) => !kv.key.startsWith(EVENTS_ROOT)));
}

function isCode(code: string, pattern?: RegExp): (e: unknown) => boolean {
  return (e) => {
    assert.ok(e instanceof IpferryError, `expected an IpferryError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    if (pattern) assert.match(e.message, pattern);
    return true;
  };
}

async function createJoinToken(
  hub: Hub,
  body: { ttlSeconds?: number; node?: string; allowAddresses?: string[] } = {},
): Promise<string> {
  const api = new ApiClient({ server: hub.url, token: TOKEN_RW, ca: CERT.pem || undefined });
  try {
    return (await api.createJoinToken(body)).token;
  } finally {
    await api.close();
  }
}

const put = (key: string, value: string, lease?: string): Op =>
  lease === undefined ? { type: 'put', key, value } : { type: 'put', key, value, lease };

interface Recorder {
  readonly revisions: number[];
  readonly events: WatchEvent[][];
  readonly errors: Error[];
  close(): void;
}

function record(store: Store, prefix: string, fromRevision?: number): Recorder {
  const revisions: number[] = [];
  const events: WatchEvent[][] = [];
  const errors: Error[] = [];
  const watch = store.watch(prefix, {
    ...(fromRevision !== undefined ? { fromRevision } : {}),
    onEvents: (batch, revision) => {
      revisions.push(revision);
      events.push([...batch]);
    },
    onError: (e) => errors.push(e),
  });
  return { revisions, events, errors, close: () => watch.close() };
}

/** A self-signed certificate for 127.0.0.1, made by openssl (TLS tests skip without it). */
const CERT: { dir?: string; pem: string; key: string; fingerprint: string; skip: string | false } =
  { pem: '', key: '', fingerprint: '', skip: false };

before(async () => {
  const tmp = await tempDir('http-store-tls');
  CERT.dir = tmp.dir;
  try {
    const made = await selfSignedCertificate(tmp.dir, { ip: '127.0.0.1' });
    CERT.pem = await readFile(made.cert, 'utf8');
    CERT.key = await readFile(made.key, 'utf8');
    CERT.fingerprint = new X509Certificate(CERT.pem).fingerprint256;
  } catch {
    CERT.skip = 'openssl is not available';
  }
});

after(async () => {
  if (CERT.dir) await rm(CERT.dir, { recursive: true, force: true });
});

// --- the conformance suite ------------------------------------------------------------------

const hubOf = new Map<Store, SqliteStore>();

storeConformance(
  'http (admin token, through a hub)',
  async () => {
    const hub = await startHub();
    const store = await openHttpStore(hub.url, { credential: TOKEN_RW });
    hubOf.set(store, hub.store);
    return {
      store,
      cleanup: async () => {
        hubOf.delete(store);
        await store.close();
        await hub.close();
        await hub.store.close();
      },
    };
  },
  {
    compact: (store, revision) => {
      const hubStore = hubOf.get(store);
      assert.ok(hubStore);
      return hubStore.compact(revision);
    },
  },
);

// --- watches across outages -----------------------------------------------------------------

/** A TCP proxy whose live connections can be frozen: open, but silent from then on. */
async function startProxy(targetPort: number): Promise<{
  port: number;
  readonly connections: { count: number };
  freeze(): void;
  close(): Promise<void>;
}> {
  const live = new Set<{ client: net.Socket; upstream: net.Socket }>();
  const all = new Set<net.Socket>();
  const connections = { count: 0 };
  const server = net.createServer((client) => {
    connections.count++;
    const upstream = net.connect(targetPort, '127.0.0.1');
    const pair = { client, upstream };
    live.add(pair);
    all.add(client).add(upstream);
    client.pipe(upstream);
    upstream.pipe(client);
    const end = (): void => {
      live.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    for (const s of [client, upstream]) {
      s.on('error', end);
      s.on('close', end);
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    connections,
    freeze: () => {
      for (const { client, upstream } of live) {
        upstream.unpipe(client);
        client.unpipe(upstream);
        upstream.pause();
      }
      live.clear();
    },
    close: async () => {
      for (const s of all) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

void describe('http store: watches survive outages', () => {
  let store: SqliteStore;
  let hub: Hub | undefined;
  let client: HttpStore | undefined;

  beforeEach(async () => {
    store = await openSqliteStore(':memory:');
  });
  afterEach(async () => {
    await client?.close();
    await hub?.close();
    await store.close();
    client = undefined;
    hub = undefined;
  });

  void it('a hub restart on the same port and store: events of the gap arrive exactly once', async () => {
    hub = await startHub({ store });
    const port = hub.port;
    client = await openHttpStore(hub.url, {
      credential: TOKEN_RW,
      heartbeatMs: 100,
      retryMaxMs: 100,
    });
    const rec = record(client, 'w/');
    const r1 = (await client.txn({ compare: [], success: [put('w/a', '1')] })).revision;
    await waitFor('r1', () => Promise.resolve(rec.revisions.length === 1));

    await hub.close();
    hub = undefined;
    // While the hub is down: calls fail with IPF_E_STORE naming the hub; the store moves on.
    await assert.rejects(
      client.get('w/a'),
      isCode('IPF_E_STORE', /cannot reach the hub at http:\/\/127\.0\.0\.1:\d+: .*ECONNREFUSED/),
    );
    const r2 = (await store.txn({ compare: [], success: [put('w/b', '2')] })).revision;
    await store.txn({ compare: [], success: [put('other/x', 'x')] });
    const r3 = (await store.txn({ compare: [], success: [put('w/a', '3')] })).revision;
    await sleep(300); // several failed reconnects

    hub = await startHub({ store, port });
    await waitFor('the gap', () => Promise.resolve(rec.revisions.length === 3));
    const r4 = (await client.txn({ compare: [], success: [put('w/c', '4')] })).revision;
    await waitFor('r4', () => Promise.resolve(rec.revisions.length === 4));
    await sleep(300);
    assert.deepEqual(rec.revisions, [r1, r2, r3, r4]);
    assert.deepEqual(
      rec.events.map((batch) => batch.map((e) => `${e.type}:${e.kv.key}=${e.kv.value}`)),
      [['put:w/a=1'], ['put:w/b=2'], ['put:w/a=3'], ['put:w/c=4']],
    );
    assert.equal(rec.events[2]![0]!.prevKv?.value, '1');
    assert.deepEqual(rec.errors, []);
    rec.close();
  });

  void it('a silent cut is noticed by the missing heartbeats; the watch resumes without loss', async () => {
    hub = await startHub({ store });
    const proxy = await startProxy(hub.port);
    try {
      client = await openHttpStore(`http://127.0.0.1:${proxy.port}`, {
        credential: TOKEN_RW,
        heartbeatMs: 100,
        retryMaxMs: 100,
      });
      const rec = record(client, 'w/');
      const r1 = (await client.txn({ compare: [], success: [put('w/a', '1')] })).revision;
      await waitFor('r1', () => Promise.resolve(rec.revisions.length === 1));
      const before = proxy.connections.count;
      proxy.freeze();
      const r2 = (await store.txn({ compare: [], success: [put('w/a', '2')] })).revision;
      const r3 = (await store.txn({ compare: [], success: [put('w/b', '3')] })).revision;
      await waitFor('the events after the cut', () => Promise.resolve(rec.revisions.length === 3));
      await sleep(400);
      assert.ok(proxy.connections.count > before, 'the watch reconnected');
      assert.deepEqual(rec.revisions, [r1, r2, r3]);
      assert.deepEqual(rec.errors, []);
      rec.close();
    } finally {
      await client?.close();
      client = undefined;
      await proxy.close();
    }
  });

  void it('a compacted revision ends the watch with onError; the hub closing does not', async () => {
    hub = await startHub({ store });
    client = await openHttpStore(hub.url, {
      credential: TOKEN_RW,
      heartbeatMs: 100,
      retryMaxMs: 50,
    });
    for (let i = 0; i < 3; i++) await client.txn({ compare: [], success: [put('w/a', `${i}`)] });
    await store.compact(2);
    const compacted = record(client, 'w/', 1);
    await waitFor('the error', () => Promise.resolve(compacted.errors.length === 1));
    assert.ok(isCode('IPF_E_STORE_COMPACTED')(compacted.errors[0]));
    assert.deepEqual(compacted.revisions, []);
  });

  void it('a watch refused by the hub (bad credential) ends with onError at once', async () => {
    hub = await startHub({ store });
    client = await openHttpStore(hub.url, { credential: 'not-a-valid-token-at-all' });
    const rec = record(client, 'w/');
    await waitFor('the error', () => Promise.resolve(rec.errors.length === 1));
    assert.ok(isCode('IPF_E_STORE', /HTTP 401/)(rec.errors[0]));
    assert.match((rec.errors[0] as IpferryError).hint, /join again/);
    await assert.rejects(client.get('w/a'), isCode('IPF_E_STORE', /HTTP 401/));
  });
});

// --- node credentials -------------------------------------------------------------------------

void describe('http store: what a node credential may do', () => {
  let hub: Hub;
  let node: HttpStore;
  let credential: string;

  before(async () => {
    hub = await startHub();
    await hub.control.registerNode({ name: 'gw1', addresses: [], reservedPorts: [] });
    await hub.control.createPool({ name: 'public', gateway: 'gw1', entries: ['192.0.2.0/28'] });
    await hub.control.allocate({ address: '192.0.2.1', clientToken: 'client-token-1' });
    await hub.store.txn({ compare: [], success: [put('outside/x', 'x')] });
    await createJoinToken(hub, { node: 'unused' });
    credential = await joinHub(hub.url, { token: await createJoinToken(hub), node: 'b1' });
    node = await openHttpStore(hub.url, { credential, heartbeatMs: 100 });
  });
  after(async () => {
    await node.close();
    await hub.close();
    await hub.store.close();
  });

  /** The call must fail with IPF_E_FORBIDDEN (403) and leave the hub's store as it was. */
  async function refused(call: () => Promise<unknown>, pattern?: RegExp): Promise<void> {
    const before = await snapshot(hub.store);
    await assert.rejects(call(), (e) => {
      assert.ok(isCode('IPF_E_FORBIDDEN', pattern)(e));
      assert.equal((e as IpferryError).status, 403);
      assert.ok(!(e as Error).message.includes(credential));
      return true;
    });
    assert.equal(await snapshot(hub.store), before, 'a refused call must write nothing');
  }

  void it('reads desired state under the root, but never secrets or anything outside', async () => {
    const listed = await node.list(ROOT);
    const listedKeys = listed.kvs.map((kv) => kv.key);
    assert.ok(listedKeys.includes(keys.pool('public')));
    assert.ok(listedKeys.includes(keys.fip('192.0.2.1')));
    assert.ok(listedKeys.includes(keys.node('gw1')));
    const everything = (await hub.store.list('')).kvs.map((kv) => kv.key);
    for (const prefix of PRIVATE_PREFIXES) {
      assert.ok(
        everything.some((k) => k.startsWith(prefix)) || prefix === keys.leaseOwners,
        prefix,
      );
      assert.ok(!listedKeys.some((k) => k.startsWith(prefix)), `${prefix} must not be listed`);
    }
    // A list of everything is cut down to the root without secrets (and the health reports,
    // of which there are none here).
    assert.deepEqual(
      (await node.list('')).kvs.map((kv) => kv.key),
      listedKeys,
    );
    assert.equal((await node.get(keys.pool('public')))?.key, keys.pool('public'));

    await refused(() => node.get(keys.nodeCredential('b1')));
    await refused(() => node.get(keys.clientToken('client-token-1')));
    await refused(() => node.get('outside/x'));
    await refused(() => node.list(keys.joinTokens));
    await refused(() => node.list(keys.nodeCredentials));
    await refused(() => node.list('outside/'));
  });

  void it('its watches leave secrets out', async () => {
    const rec = record(node, ROOT);
    await createJoinToken(hub);
    const r = (
      await hub.store.txn({ compare: [], success: [put(keys.pool('marker'), '{"name":"marker"}')] })
    ).revision;
    await waitFor('the pool event', () => Promise.resolve(rec.revisions.includes(r)));
    await sleep(100);
    assert.deepEqual(rec.revisions, [r]);
    const secretWatch = record(node, keys.nodeCredentials);
    await waitFor('refusal', () => Promise.resolve(secretWatch.errors.length === 1));
    assert.ok(isCode('IPF_E_FORBIDDEN')(secretWatch.errors[0]));
    rec.close();
    await hub.store.txn({ compare: [], success: [{ type: 'delete', key: keys.pool('marker') }] });
  });

  void it('writes its own registration, liveness and health (under its own lease) and statuses', async () => {
    const control = new ControlPlane(node);
    await control.registerNode({ name: 'b1', addresses: ['10.0.0.2'], reservedPorts: [] });
    const lease = await node.grantLease(15);
    const health = { name: 'b1', mesh: { appliedRevision: 7 }, updatedAt: 'now' };
    await node.txn({
      compare: [],
      success: [
        put(keys.nodeAlive('b1'), JSON.stringify({ name: 'b1', since: 'now' }), lease),
        put(keys.nodeHealth('b1'), JSON.stringify(health), lease),
      ],
    });
    await node.keepAlive(lease);
    // Health reports are outside the root, and every node may read them (`node show`).
    assert.equal((await hub.control.getNode('b1')).mesh?.appliedRevision, 7);
    assert.equal((await control.getNode('b1')).mesh?.appliedRevision, 7);
    assert.deepEqual(
      (await node.list(keys.health)).kvs.map((kv) => kv.key),
      [keys.nodeHealth('b1')],
    );
    // Statuses only of FIPs it serves: those of the pools it is the gateway of.
    await hub.control.createPool({ name: 'home', gateway: 'b1', entries: ['198.51.100.0/29'] });
    await hub.control.allocate({ address: '198.51.100.1' });
    const theirs = await hub.store.get(keys.fip('192.0.2.1'));
    await assert.rejects(
      control.reportStatuses([
        {
          address: '192.0.2.1',
          state: 'DOWN',
          node: 'b1',
          revision: theirs!.modRevision,
          updatedAt: 'now',
        },
      ]),
      isCode('IPF_E_FORBIDDEN', /gateway gw1 serves it/),
    );
    const fip = await hub.store.get(keys.fip('198.51.100.1'));
    assert.equal(
      await control.reportStatuses([
        {
          address: '198.51.100.1',
          state: 'DOWN',
          node: 'b1',
          revision: fip!.modRevision,
          updatedAt: 'now',
        },
      ]),
      1,
    );
    assert.equal((await hub.control.getNode('b1')).alive, true);
    assert.equal((await hub.control.getFip('198.51.100.1')).status.node, 'b1');
    await node.revokeLease(lease);
    assert.equal((await hub.control.getNode('b1')).alive, false);
    assert.equal(await hub.store.get(keys.nodeHealth('b1')), undefined, 'gone with the lease');
  });

  void it("refuses every other write, other nodes' keys and leases, with nothing written", async () => {
    const adminLease = await hub.store.grantLease(60);
    const other = await joinHub(hub.url, { token: await createJoinToken(hub), node: 'b2' });
    const b2 = await openHttpStore(hub.url, { credential: other });
    const b2Lease = await b2.grantLease(60);
    const status = (node: string, address = '192.0.2.1'): string =>
      JSON.stringify({ address, state: 'ACTIVE', node, revision: 1, updatedAt: 'now' });
    const txn =
      (...success: Op[]) =>
      () =>
        node.txn({ compare: [], success });
    try {
      await refused(txn(put(keys.node('gw1'), JSON.stringify({ name: 'gw1' }))), /write/);
      const asGw1 = { name: 'gw1', addresses: [], reservedPorts: [], registeredAt: 'now' };
      await refused(txn(put(keys.node('b1'), JSON.stringify(asGw1))), /name is not b1/);
      await refused(txn(put(keys.nodeAlive('b2'), JSON.stringify({ name: 'b2' }))));
      await refused(txn(put(keys.nodeHealth('b2'), JSON.stringify({ name: 'b2' }))));
      await refused(
        txn(put(keys.nodeHealth('b1'), JSON.stringify({ name: 'b2' }))),
        /name is not b1/,
      );
      await refused(txn(put('/ipferry/health/elsewhere', JSON.stringify({ name: 'b1' }))));
      await refused(txn(put(keys.status('192.0.2.1'), status('gw1'))), /not its own/);
      await refused(txn(put(keys.status('192.0.2.1'), status('b1', '192.0.2.2'))), /not its own/);
      await refused(txn(put(keys.status('192.0.2.1'), 'not json')));
      await refused(txn(put(keys.pool('evil'), '{}')));
      await refused(txn(put(keys.nodeCredential('b1'), '{}')));
      await refused(txn({ type: 'delete', key: keys.node('gw1') }));
      await refused(txn({ type: 'deletePrefix', prefix: keys.node('b1') }));
      // One forbidden op refuses the whole transaction, also in the failure branch.
      await refused(
        txn(put(keys.node('b1'), JSON.stringify({ name: 'b1' })), put(keys.pool('evil'), '{}')),
      );
      await refused(() =>
        node.txn({
          compare: [{ key: keys.node('b1'), target: 'version', op: '=', value: -1 }],
          success: [],
          failure: [put(keys.pool('evil'), '{}')],
        }),
      );
      // Compares may not probe secrets.
      await refused(() =>
        node.txn({
          compare: [{ key: keys.nodeCredential('b2'), target: 'value', op: '=', value: 'x' }],
          success: [],
        }),
      );
      // Another node's lease: neither keep it alive, nor revoke it, nor attach keys to it.
      await refused(() => node.keepAlive(b2Lease), /another node/);
      await refused(() => node.revokeLease(b2Lease), /another node/);
      await refused(txn(put(keys.nodeAlive('b1'), JSON.stringify({ name: 'b1' }), b2Lease)));
      // An admin's lease is not the node's to use either (it looks like no lease at all).
      const before = await snapshot(hub.store);
      await assert.rejects(node.keepAlive(adminLease), isCode('IPF_E_LEASE_NOT_FOUND'));
      await assert.rejects(
        node.txn({
          compare: [],
          success: [put(keys.nodeAlive('b1'), JSON.stringify({ name: 'b1' }), adminLease)],
        }),
        isCode('IPF_E_LEASE_NOT_FOUND'),
      );
      await node.revokeLease(adminLease); // not its own: nothing to revoke for it
      assert.equal(await snapshot(hub.store), before);
    } finally {
      await b2.close();
    }
  });

  void it('is no API token: other routes refuse it, a wrong one is unauthorized', async () => {
    const api = new ApiClient({ server: hub.url, token: credential });
    try {
      await assert.rejects(api.listFips(), (e) => {
        assert.ok(e instanceof IpferryError);
        assert.equal(e.status, 403);
        assert.match(e.message, /only for \/v1\/store\//);
        return true;
      });
    } finally {
      await api.close();
    }
    const forged = `${credential.slice(0, -4)}AAAA`;
    const wrong = await openHttpStore(hub.url, { credential: forged });
    try {
      await assert.rejects(wrong.get(keys.pool('public')), isCode('IPF_E_STORE', /HTTP 401/));
    } finally {
      await wrong.close();
    }
  });

  void it('read-only admin tokens read everything and write nothing', async () => {
    const ro = await openHttpStore(hub.url, { credential: TOKEN_RO });
    try {
      assert.ok((await ro.get(keys.nodeCredential('b1')))?.value.includes('sha256'));
      await assert.rejects(
        ro.txn({ compare: [], success: [put('outside/y', 'y')] }),
        isCode('IPF_E_FORBIDDEN', /may only read/),
      );
      await assert.rejects(ro.grantLease(5), isCode('IPF_E_FORBIDDEN'));
    } finally {
      await ro.close();
    }
  });

  void it('refuses malformed bodies and unknown fields with nothing written', async () => {
    const before = await snapshot(hub.store);
    for (const payload of [
      { compare: [], success: [{ type: 'put', key: 'k', value: 'v', extra: 1 }] },
      { compare: [], success: [], surprise: true },
      { compare: [{ key: 'k', target: 'mod', op: '=', value: 'one' }], success: [] },
      { success: [] },
    ]) {
      const res = await hub.app.inject({
        method: 'POST',
        url: '/v1/store/txn',
        payload,
        headers: { authorization: `Bearer ${TOKEN_RW}` },
      });
      assert.equal(res.statusCode, 400, JSON.stringify(payload));
      assert.equal(
        (JSON.parse(res.body) as { error: { code: string } }).error.code,
        'IPF_E_VALIDATION',
      );
    }
    const res = await hub.app.inject({
      method: 'GET',
      url: '/v1/store/get?key=a&other=b',
      headers: { authorization: `Bearer ${TOKEN_RW}` },
    });
    assert.equal(res.statusCode, 400);
    assert.equal(await snapshot(hub.store), before);
  });
});

// --- joining ----------------------------------------------------------------------------------

void describe('joining a hub', () => {
  let hub: Hub;
  let tmp: { dir: string; remove: () => Promise<void> };
  const agents: RunningAgent[] = [];

  beforeEach(async () => {
    hub = await startHub();
    await hub.control.registerNode({ name: 'gw1', addresses: [], reservedPorts: [] });
    tmp = await tempDir('join');
  });
  afterEach(async () => {
    for (const agent of agents.splice(0)) await agent.stop();
    await hub.close();
    await hub.store.close();
    await tmp.remove();
  });

  async function tokenFile(token: string, name = 'join-token'): Promise<string> {
    const path = join(tmp.dir, name);
    await writeFile(path, `${token}\n`, { mode: 0o600 });
    return path;
  }

  function agentConfig(over: { node?: string; store?: string; joinTokenFile?: string } = {}) {
    return resolveConfig(
      {},
      {
        node: over.node ?? 'b1',
        store: over.store ?? hub.url,
        listen: '127.0.0.1:0',
        tokenFile: join(tmp.dir, 'api-token'),
        credentialFile: join(tmp.dir, 'state', 'node-credential'),
        ...(over.joinTokenFile !== undefined ? { joinTokenFile: over.joinTokenFile } : {}),
        dataplane: 'fake',
        resyncSeconds: 1,
        logLevel: 'silent',
      },
      'test',
    );
  }

  async function start(config: ReturnType<typeof agentConfig>): Promise<RunningAgent> {
    const agent = await startAgent(config, {
      dataplane: new FakeDataplane(),
      neighbours: () => Promise.resolve([]),
    });
    agents.push(agent);
    return agent;
  }

  async function exists(path: string): Promise<boolean> {
    return stat(path).then(
      () => true,
      () => false,
    );
  }

  void it('a remote agent joins once, keeps its credential (0600) and later needs no token', async () => {
    const token = await createJoinToken(hub, { ttlSeconds: 600 });
    const config = agentConfig({ joinTokenFile: await tokenFile(token) });
    const agent = await start(config);
    assert.equal(agent.control.store.kind, 'http');
    assert.equal((await hub.control.getNode('b1')).alive, true);

    const file = config.credentialFile;
    assert.equal((await stat(file)).mode & 0o777, 0o600);
    assert.equal((await stat(join(tmp.dir, 'state'))).mode & 0o777, 0o700);
    const saved = JSON.parse(await readFile(file, 'utf8')) as { node: string; credential: string };
    assert.equal(saved.node, 'b1');
    assert.match(saved.credential, /^ipfnode1\.b1\./);
    // The hub keeps only a digest of it, and the token is gone.
    const stored = await hub.store.get(keys.nodeCredential('b1'));
    assert.ok(stored && !stored.value.includes(saved.credential.split('.').at(-1)!));
    assert.deepEqual((await hub.store.list(keys.joinTokens)).kvs, []);

    await agent.stop();
    agents.pop();
    assert.equal((await hub.control.getNode('b1')).alive, false);
    const again = await start(agentConfig());
    assert.equal((await hub.control.getNode('b1')).alive, true);
    assert.ok(again.url.startsWith('http://127.0.0.1:'));
  });

  void it('a used, expired, wrong or misdirected token is refused and nothing is written', async () => {
    const used = await createJoinToken(hub);
    await joinHub(hub.url, { token: used, node: 'b9' });
    const expired = await createJoinToken(hub, { ttlSeconds: 1 });
    const forB2 = await createJoinToken(hub, { node: 'b2' });
    const unbound = await createJoinToken(hub);
    await sleep(1200);
    const wrong = encodeJoinToken({
      urls: [hub.url],
      secret: randomBytes(32).toString('base64url'),
    });

    const unknown = /unknown, expired or already used/;
    const cases: [string, string, string, string, RegExp][] = [
      ['used', used, 'b1', 'IPF_E_JOIN_REFUSED', unknown],
      ['expired', expired, 'b1', 'IPF_E_JOIN_REFUSED', unknown],
      ['wrong', wrong, 'b1', 'IPF_E_JOIN_REFUSED', unknown],
      ['for another node', forB2, 'b1', 'IPF_E_JOIN_REFUSED', /another node/],
      [
        'an existing node',
        unbound,
        'gw1',
        'IPF_E_JOIN_REFUSED',
        /gw1 is already registered.*--node gw1/,
      ],
      // Not even sent: the agent sees it is no join token.
      ['garbage', 'ipfjoin1.garbage', 'b1', 'IPF_E_SECRET_FILE', /does not hold a join token/],
    ];
    for (const [what, token, node, code, reason] of cases) {
      const before = await snapshot(hub.store);
      await assert.rejects(
        start(agentConfig({ node, joinTokenFile: await tokenFile(token, `token-${node}`) })),
        (e) => {
          assert.ok(isCode(code, reason)(e), what);
          if (code === 'IPF_E_JOIN_REFUSED') assert.equal((e as IpferryError).status, 401);
          assert.ok(!(e as Error).message.includes(token), 'no secret in the message');
          return true;
        },
        what,
      );
      assert.equal(await snapshot(hub.store), before, `${what}: the hub wrote nothing`);
      assert.equal(await exists(join(tmp.dir, 'state', 'node-credential')), false, what);
      assert.equal(await exists(join(tmp.dir, 'state', 'node-credential.joining')), false, what);
    }
    // Refusals consumed nothing: the right node still joins with its token.
    await joinHub(hub.url, { token: forB2, node: 'b2' });
    // Re-joining an existing node needs a token for it, and replaces its credential.
    const first = await joinHub(hub.url, { token: await createJoinToken(hub), node: 'b3' });
    const second = await joinHub(hub.url, {
      token: await createJoinToken(hub, { node: 'b3' }),
      node: 'b3',
    });
    const old = await openHttpStore(hub.url, { credential: first });
    const current = await openHttpStore(hub.url, { credential: second });
    try {
      await assert.rejects(old.get(keys.pool('x')), isCode('IPF_E_STORE', /HTTP 401/));
      assert.equal(await current.get(keys.pool('x')), undefined);
    } finally {
      await old.close();
      await current.close();
    }
  });

  void it('without a credential or a join token an https store is a configuration error', async () => {
    await assert.rejects(start(agentConfig()), isCode('IPF_E_CONFIG', /--join-token-file/));
    assert.throws(
      () =>
        resolveConfig({}, { node: 'b1', store: 'sqlite::memory:', joinTokenFile: '/x' }, 'test'),
      isCode('IPF_E_CONFIG', /--join-token-file: joins a hub/),
    );
    await assert.rejects(openStore(hub.url), isCode('IPF_E_CONFIG', /credential/));
  });

  void it('the join body is validated (unknown fields refused) and needs no bearer token', async () => {
    const res = await hub.app.inject({
      method: 'POST',
      url: '/v1/join',
      payload: { token: 'x', node: 'b1', extra: true },
    });
    assert.equal(res.statusCode, 400);
    const bad = await hub.app.inject({
      method: 'POST',
      url: '/v1/join',
      payload: { token: 'x', node: 'Not A Name' },
    });
    assert.equal(bad.statusCode, 400);
    const refused = await hub.app.inject({
      method: 'POST',
      url: '/v1/join',
      payload: { token: 'x', node: 'b1' },
    });
    assert.equal(refused.statusCode, 401);
    assert.equal(
      (JSON.parse(refused.body) as { error: { code: string } }).error.code,
      'IPF_E_JOIN_REFUSED',
    );
  });
});

void describe('secrets stay out of the hub log', () => {
  void it('join tokens, credentials and client tokens are never logged', async () => {
    const logs: string[] = [];
    const hub = await startHub({ logs });
    try {
      await hub.control.registerNode({ name: 'gw1', addresses: [], reservedPorts: [] });
      await hub.control.createPool({ name: 'public', gateway: 'gw1', entries: ['192.0.2.0/28'] });
      await hub.control.allocate({ address: '192.0.2.1', clientToken: 'secret-client-token' });
      const token = await createJoinToken(hub);
      const credential = await joinHub(hub.url, { token, node: 'b1' });
      const node = await openHttpStore(hub.url, { credential });
      const admin = await openHttpStore(hub.url, { credential: TOKEN_RW });
      try {
        await assert.rejects(node.get(keys.clientToken('secret-client-token')));
        assert.ok(await admin.get(keys.clientToken('secret-client-token')));
        await node.list(ROOT);
        await joinHub(hub.url, { token, node: 'b1' }).catch(() => undefined);
      } finally {
        await node.close();
        await admin.close();
      }
      const text = logs.join('');
      assert.match(text, /"url":"\/v1\/store\/get"/);
      assert.match(text, /node joined/);
      for (const secret of [
        token,
        decodeJoinToken(token)!.secret,
        credential,
        credential.split('.').at(-1)!,
        'secret-client-token',
        TOKEN_RW,
      ]) {
        assert.ok(!text.includes(secret), 'a secret reached the log');
      }
    } finally {
      await hub.close();
      await hub.store.close();
    }
  });
});

// --- TLS pinning ----------------------------------------------------------------------------

void describe('http store over TLS', () => {
  let hub: Hub;
  let tmp: { dir: string; remove: () => Promise<void> };

  beforeEach(async () => {
    tmp = await tempDir('tls');
    if (CERT.skip) return;
    hub = await startHub({ https: { cert: CERT.pem, key: CERT.key } });
  });
  afterEach(async () => {
    if (!CERT.skip) {
      await hub.close();
      await hub.store.close();
    }
    await tmp.remove();
  });

  void it('the right fingerprint works (both spellings); a wrong one fails closed', async (t) => {
    if (CERT.skip) return t.skip(CERT.skip);
    for (const fingerprint of [
      CERT.fingerprint,
      CERT.fingerprint.replaceAll(':', '').toLowerCase(),
    ]) {
      const store = await openHttpStore(hub.url, { credential: TOKEN_RW, fingerprint });
      try {
        const rec = record(store, 'p/');
        const r = (await store.txn({ compare: [], success: [put('p/a', fingerprint)] })).revision;
        assert.equal((await store.get('p/a'))?.value, fingerprint);
        await waitFor('event', () => Promise.resolve(rec.revisions.includes(r)));
        rec.close();
      } finally {
        await store.close();
      }
    }

    const before = await snapshot(hub.store);
    const seen = hub.requests.count;
    const wrong = await openHttpStore(hub.url, {
      credential: TOKEN_RW,
      fingerprint: 'ab'.repeat(32),
    });
    try {
      await assert.rejects(wrong.get('p/a'), isCode('IPF_E_STORE', /is not the pinned one/));
      await assert.rejects(
        wrong.txn({ compare: [], success: [put('p/b', 'x')] }),
        isCode('IPF_E_STORE', /is not the pinned one/),
      );
    } finally {
      await wrong.close();
    }
    assert.equal(hub.requests.count, seen, 'with a wrong pin no request may reach the hub');
    assert.equal(await snapshot(hub.store), before);

    // Without a pin or a CA the self-signed certificate is not trusted; with it as CA it is.
    const unpinned = await openHttpStore(hub.url, { credential: TOKEN_RW });
    const withCa = await openHttpStore(hub.url, { credential: TOKEN_RW, ca: CERT.pem });
    try {
      await assert.rejects(unpinned.get('p/a'), isCode('IPF_E_STORE', /self-signed|SELF_SIGNED/i));
      assert.ok(await withCa.get('p/a'));
    } finally {
      await unpinned.close();
      await withCa.close();
    }
    // A pin on plain http would protect nothing: refused.
    await assert.rejects(
      openHttpStore(hub.url.replace('https:', 'http:'), {
        credential: TOKEN_RW,
        fingerprint: CERT.fingerprint,
      }),
      isCode('IPF_E_CONFIG', /https/),
    );
  });

  void it('a join token pins the hub: the agent joins over TLS without a CA and stays pinned', async (t) => {
    if (CERT.skip) return t.skip(CERT.skip);
    const token = await createJoinToken(hub, { node: 'b1' });
    const decoded = decodeJoinToken(token);
    assert.equal(decoded?.fingerprint, CERT.fingerprint.replaceAll(':', '').toLowerCase());
    assert.deepEqual(decoded?.urls, [hub.url]);

    const credentialFile = join(tmp.dir, 'node-credential');
    const config = (joinTokenFile?: string) =>
      resolveConfig(
        {},
        {
          node: 'b1',
          store: hub.url,
          listen: '127.0.0.1:0',
          tokenFile: join(tmp.dir, 'api-token'),
          credentialFile,
          ...(joinTokenFile ? { joinTokenFile } : {}),
          dataplane: 'fake',
          logLevel: 'silent',
        },
        'test',
      );

    // A token whose pin is not the hub's certificate (someone in the middle): fails closed.
    const mitm = encodeJoinToken({ ...decoded, fingerprint: 'cd'.repeat(32) });
    const mitmFile = join(tmp.dir, 'mitm-token');
    await writeFile(mitmFile, mitm, { mode: 0o600 });
    const before = await snapshot(hub.store);
    const seen = hub.requests.count;
    await assert.rejects(
      startAgent(config(mitmFile), { dataplane: new FakeDataplane() }),
      isCode('IPF_E_STORE', /is not the pinned one/),
    );
    assert.equal(hub.requests.count, seen);
    assert.equal(await snapshot(hub.store), before);
    await assert.rejects(stat(credentialFile));

    const tokenPath = join(tmp.dir, 'join-token');
    await writeFile(tokenPath, token, { mode: 0o600 });
    const agent = await startAgent(config(tokenPath), { dataplane: new FakeDataplane() });
    try {
      assert.equal((await hub.control.getNode('b1')).alive, true);
      const saved = JSON.parse(await readFile(credentialFile, 'utf8')) as { fingerprint?: string };
      assert.equal(saved.fingerprint, decoded?.fingerprint);
    } finally {
      await agent.stop();
    }
    const restarted = await startAgent(config(), { dataplane: new FakeDataplane() });
    try {
      assert.equal((await hub.control.getNode('b1')).alive, true);
    } finally {
      await restarted.stop();
    }
  });
});

// --- the CLI --------------------------------------------------------------------------------

void describe('ipferry node join-token create', () => {
  let hub: Hub;

  before(async () => {
    hub = await startHub();
  });
  after(async () => {
    await hub.close();
    await hub.store.close();
  });

  async function run(
    args: string[],
    token = TOKEN_RW,
  ): Promise<{ code: number; out: string; err: string }> {
    let out = '';
    let err = '';
    const code = await main(
      ['node', 'ipferry', '--server', hub.url, ...args],
      { out: (s) => (out += s), err: (s) => (err += s) },
      { IPFERRY_TOKEN: token },
      { defaultTokenFile: '/nonexistent/ipferry-api-token', timeoutMs: 5000 },
    );
    return { code, out, err };
  }

  void it('prints one token line (and how to use it on stderr); the token joins once', async () => {
    const started = Date.now();
    const r = await run(['node', 'join-token', 'create', '--ttl', '10m', '--node', 'b7']);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /^ipfjoin1\.[A-Za-z0-9_-]+\n$/);
    const token = r.out.trim();
    const decoded = decodeJoinToken(token);
    assert.deepEqual(decoded?.urls, [hub.url]);
    assert.equal(decoded?.fingerprint, undefined);
    assert.match(r.err, /^Join token for node b7, valid until \S+, usable once\.$/m);
    assert.match(
      r.err,
      new RegExp(`^  ipferry agent --node b7 --store ${hub.url} --join-token-file FILE$`, 'm'),
    );
    assert.ok(!r.err.includes(decoded.secret));
    const record = (await hub.store.list(keys.joinTokens)).kvs;
    assert.equal(record.length, 1);
    const stored = JSON.parse(record[0]!.value) as { node: string; expiresAt: string };
    assert.equal(stored.node, 'b7');
    const ttl = Date.parse(stored.expiresAt) - started;
    assert.ok(ttl > 590_000 && ttl < 610_000, `expires in ${ttl} ms`);
    assert.ok(!record[0]!.value.includes(decoded.secret), 'the hub keeps only a digest');

    assert.match(await joinHub(hub.url, { token, node: 'b7' }), /^ipfnode1\.b7\./);
  });

  void it('--json prints the answer; --url sets the URLs; a bad --ttl is a usage error', async () => {
    const r = await run([
      '--json',
      'node',
      'join-token',
      'create',
      '--url',
      'https://gw.example.net:7447',
      '--url',
      'https://192.0.2.1:7447',
    ]);
    assert.equal(r.code, 0, r.err);
    const answer = JSON.parse(r.out) as { token: string; urls: string[]; expiresAt: string };
    assert.deepEqual(answer.urls, ['https://gw.example.net:7447', 'https://192.0.2.1:7447']);
    assert.deepEqual(decodeJoinToken(answer.token)?.urls, answer.urls);
    assert.equal(r.err, '');

    const bad = await run(['node', 'join-token', 'create', '--ttl', 'soon']);
    assert.equal(bad.code, 2);
    assert.match(bad.err, /Expected a duration/);
  });

  void it('a read-only token may not create join tokens', async () => {
    const before = await snapshot(hub.store);
    const r = await run(['node', 'join-token', 'create'], TOKEN_RO);
    assert.equal(r.code, 1);
    assert.match(r.err, /^error IPF_E_FORBIDDEN: .*may only read/m);
    assert.equal(await snapshot(hub.store), before);
  });
});

// The attacks of a security review (issue 12), replayed by a joined node against its hub: each
// is refused, writes nothing, and the records the agents compile stay as the operator left them.
const GW1_KEY = `${'A'.repeat(42)}E=`;

void describe('http store: a joined node that lies', () => {
  let hub: Hub;
  let node: HttpStore;
  let credential: string;
  let hubOverlay: string;

  before(async () => {
    hub = await startHub();
    await hub.control.registerNode({ name: 'gw1', addresses: ['203.0.113.1'], reservedPorts: [] });
    await hub.control.createPool({ name: 'public', gateway: 'gw1', entries: ['192.0.2.0/28'] });
    await hub.control.allocate({ address: '192.0.2.1' });
    await hub.control.mesh.setPolicy({ overlay: '10.99.0.0/24', fleet: {} });
    hubOverlay = (await hub.control.getNode('gw1')).overlayIp!;
    credential = await joinHub(hub.url, { token: await createJoinToken(hub), node: 'zzz' });
    node = await openHttpStore(hub.url, { credential, heartbeatMs: 100 });
    // The honest path: it registers and takes a free overlay address by compare-and-create.
    await new ControlPlane(node).registerNode({
      name: 'zzz',
      addresses: ['198.51.100.9', '10.1.0.9'],
      reservedPorts: [],
    });
  });
  after(async () => {
    await node.close();
    await hub.close();
    await hub.store.close();
  });

  async function refusedAs(code: string, call: () => Promise<unknown>, pattern?: RegExp) {
    const before = await snapshot(hub.store);
    await assert.rejects(call(), (e) => {
      assert.ok(e instanceof IpferryError, String(e));
      assert.ok(e.code === code || e.message.includes(code), `${code}: ${e.message}`);
      if (pattern) assert.match(e.message, pattern);
      return true;
    });
    assert.equal(await snapshot(hub.store), before, 'a refused call must write nothing');
  }
  const refused = (call: () => Promise<unknown>, pattern?: RegExp) =>
    refusedAs('IPF_E_FORBIDDEN', call, pattern);

  async function own(): Promise<Record<string, unknown>> {
    return JSON.parse((await hub.store.get(keys.node('zzz')))!.value) as Record<string, unknown>;
  }

  void it('got its own overlay address by compare-and-create', async () => {
    const mine = (await own()).overlayIp as string;
    assert.match(mine, /^10\.99\.0\./);
    assert.notEqual(mine, hubOverlay);
    assert.equal(JSON.parse((await hub.store.get(keys.overlay(mine)))!.value).name, 'zzz');
  });

  void it("cannot take over another node's overlay address (finding 1)", async () => {
    const self = await own();
    const current = await hub.store.get(keys.node('zzz'));
    const lock = await hub.store.get(keys.overlay(hubOverlay));
    const lease = await node.grantLease(15);
    const takeover = { ...self, overlayIp: hubOverlay };
    const attack = (compare: Compare[]) => () =>
      node.txn({
        compare,
        success: [
          put(keys.node('zzz'), JSON.stringify(takeover)),
          put(keys.nodeAlive('zzz'), JSON.stringify({ name: 'zzz', since: 'now' }), lease),
          put(keys.overlay(hubOverlay), JSON.stringify({ name: 'zzz' })),
        ],
      });
    // As the review sent it (no compare), and as a careful attacker would (pinned on the lock).
    await refused(attack([]), /compare/);
    await refused(
      attack([
        { key: keys.node('zzz'), target: 'mod', op: '=', value: current!.modRevision },
        { key: keys.overlay(hubOverlay), target: 'mod', op: '=', value: lock!.modRevision },
      ]),
      /node gw1 holds it/,
    );
    // Nor by naming the address in its record without the lock.
    await refused(
      () => node.txn({ compare: [], success: [put(keys.node('zzz'), JSON.stringify(takeover))] }),
      /without its lock/,
    );
    // Nor a lock for an address outside the overlay, nor a lock for someone else.
    await refused(
      () =>
        node.txn({
          compare: [{ key: keys.overlay('8.8.8.8'), target: 'create', op: '=', value: 0 }],
          success: [
            put(keys.node('zzz'), JSON.stringify({ ...self, overlayIp: '8.8.8.8' })),
            put(keys.overlay('8.8.8.8'), JSON.stringify({ name: 'zzz' })),
          ],
        }),
      /not an address of the mesh overlay/,
    );
    await node.revokeLease(lease);
    // What the agents compile from: the hub still holds its address, zzz its own.
    assert.equal(JSON.parse((await hub.store.get(keys.overlay(hubOverlay)))!.value).name, 'gw1');
    assert.equal((await hub.control.getNode('gw1')).overlayIp, hubOverlay);
    assert.notEqual((await own()).overlayIp, hubOverlay);
  });

  void it('cannot register addresses that widen the fleet’s firewalls', async () => {
    const self = await own();
    const claim = (addresses: string[]) => () =>
      node.txn({
        compare: [],
        success: [put(keys.node('zzz'), JSON.stringify({ ...self, addresses }))],
      });
    // A public address another node has is no widening (it is a member's already), and two
    // nodes may hold one while a server moves: not refused.
    await node.txn({
      compare: [],
      success: [put(keys.node('zzz'), JSON.stringify({ ...self, addresses: ['203.0.113.1'] }))],
    });
    await refused(claim(['192.0.2.5']), /in a pool of gateway gw1/);
    await refused(claim([hubOverlay]), /mesh overlay/);
    await refused(
      claim(Array.from({ length: 65 }, (_, i) => `10.2.0.${i + 1}`)),
      /more than 64 addresses/,
    );
    const gw1 = JSON.parse((await hub.store.get(keys.node('gw1')))!.value) as object;
    await hub.store.txn({
      compare: [],
      success: [put(keys.node('gw1'), JSON.stringify({ ...gw1, publicKey: GW1_KEY }))],
    });
    await refused(
      () =>
        node.txn({
          compare: [],
          success: [put(keys.node('zzz'), JSON.stringify({ ...self, publicKey: GW1_KEY }))],
        }),
      /tunnel key of node gw1/,
    );
  });

  void it('registers only addresses inside the prefixes its join token allowed', async () => {
    const token = await createJoinToken(hub, {
      allowAddresses: ['198.51.100.0/24', '10.1.0.7'],
    });
    const yyy = await openHttpStore(hub.url, {
      credential: await joinHub(hub.url, { token, node: 'yyy' }),
    });
    try {
      const control = new ControlPlane(yyy);
      await control.registerNode({
        name: 'yyy',
        addresses: ['198.51.100.20', '10.1.0.7'],
        reservedPorts: [],
      });
      await refused(
        () =>
          control.registerNode({
            name: 'yyy',
            addresses: ['198.51.100.20', '192.0.2.99'],
            reservedPorts: [],
          }),
        /register 192\.0\.2\.99: its join token allowed addresses in other prefixes only/,
      );
    } finally {
      await yyy.close();
    }
    await assert.rejects(
      createJoinToken(hub, { allowAddresses: ['not-a-prefix'] }),
      (e) => (e as { code?: string }).code === 'IPF_E_VALIDATION',
    );
  });

  void it('cannot write a record the agents cannot use (finding 2)', async () => {
    const self = await own();
    await refused(
      () =>
        node.txn({
          compare: [],
          success: [
            put(keys.node('zzz'), JSON.stringify({ ...self, addresses: 5, reservedPorts: null })),
          ],
        }),
      /cannot use \(addresses must be a list\)/,
    );
    await refused(() =>
      node.txn({ compare: [], success: [put(keys.node('zzz'), '{"name":"zzz"')] }),
    );
  });

  void it('cannot fill the store: size, leases, alive without a lease (finding 6)', async () => {
    const self = await own();
    const big = { ...self, description: 'x'.repeat(5 * 1024 * 1024) };
    await refused(
      () => node.txn({ compare: [], success: [put(keys.node('zzz'), JSON.stringify(big))] }),
      /over 65536 bytes/,
    );
    await refused(
      () =>
        node.txn({
          compare: [],
          success: [put(keys.nodeAlive('zzz'), JSON.stringify({ name: 'zzz', since: 'now' }))],
        }),
      /without a lease/,
    );
    await refusedAs('IPF_E_VALIDATION', () => node.grantLease(9e12));
    await refused(() => node.grantLease(3600), /more than 300 s/);
    const leases: string[] = [];
    try {
      for (let i = 0; i < 8; i++) leases.push(await node.grantLease(15));
      await refused(() => node.grantLease(15), /more than 8 leases/);
    } finally {
      for (const lease of leases) await node.revokeLease(lease);
    }
    const fake = Array.from({ length: 200 }, (_, i) => `192.0.2.${i}`).map((address) =>
      put(
        keys.status(address),
        JSON.stringify({ address, state: 'ACTIVE', node: 'zzz', revision: 1, updatedAt: 'now' }),
      ),
    );
    await refused(() => node.txn({ compare: [], success: fake }));
  });

  void it('cannot report the status of a FIP it does not serve (finding 7)', async () => {
    const fip = await hub.store.get(keys.fip('192.0.2.1'));
    const status = {
      address: '192.0.2.1',
      state: 'ACTIVE',
      node: 'zzz',
      revision: fip!.modRevision,
      updatedAt: 'now',
    };
    const write = (compare: Compare[]) => () =>
      node.txn({ compare, success: [put(keys.status('192.0.2.1'), JSON.stringify(status))] });
    await refused(write([]), /fencing/);
    await refused(
      write([{ key: keys.fip('192.0.2.1'), target: 'mod', op: '=', value: fip!.modRevision }]),
      /gateway gw1 serves it/,
    );
    assert.equal((await hub.control.getFip('192.0.2.1')).status.node, undefined);
  });

  void it('answers malformed store requests 400 with an IPF code (finding 8)', async () => {
    const call = async (method: string, path: string, body?: unknown) => {
      const res = await fetch(`${hub.url}${path}`, {
        method,
        headers: {
          authorization: `Bearer ${TOKEN_RW}`,
          ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
        },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      });
      return { status: res.status, body: (await res.json()) as { error?: { code?: string } } };
    };
    const before = await snapshot(hub.store);
    for (const [method, path, body] of [
      ['GET', '/v1/store/get?key='],
      ['GET', '/v1/store/get?key=%2Fipferry%00x'],
      ['POST', '/v1/store/txn', { compare: [], success: [{ type: 'put', key: '', value: 'x' }] }],
      ['POST', '/v1/store/txn', { compare: [], success: [{ type: 'deletePrefix', prefix: '' }] }],
      ['POST', '/v1/store/leases/..%2F..%2Fx/keepalive'],
      ['DELETE', '/v1/store/leases/..%2F..%2Fx'],
      ['POST', '/v1/store/leases', { ttlSeconds: 1e300 }],
    ] as const) {
      const r = await call(method, path, body);
      assert.equal(r.status, 400, `${method} ${path}: ${JSON.stringify(r.body)}`);
      assert.equal(r.body.error?.code, 'IPF_E_VALIDATION', `${method} ${path}`);
    }
    assert.equal(await snapshot(hub.store), before);
  });
});
