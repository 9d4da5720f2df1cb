/**
 * The etcd store against real etcd (Debian's etcd-server, 3.4): the conformance suite on one
 * member and on a three-member cluster, then what only etcd has — outages and restarts of
 * members, compaction behind a disconnected watch, a member lost while the cluster keeps
 * writing — and an agent that keeps its kernel state while etcd is down and converges after.
 *
 * Every etcd here is a throwaway cluster on 127.0.0.1 with free ports and a temporary data
 * directory (src/lab/etcd.ts), stopped by pid and removed also when a test fails. etcd over TLS
 * with client certificates and a login: store-etcd-tls.test.ts.
 */
import assert from 'node:assert/strict';
import { chmod, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { resolveConfig } from '../../src/agent/config.js';
import { startAgent, type RunningAgent } from '../../src/agent/run.js';
import { ROUTES } from '../../src/api/contract.js';
import { IpferryError } from '../../src/core/errors.js';
import { FakeDataplane } from '../../src/dataplane/fake.js';
import { startEtcd, type EtcdCluster } from '../../src/lab/etcd.js';
import {
  EtcdStore,
  openEtcdStore,
  parseEtcdEndpoints,
  parseEtcdLocation,
} from '../../src/store/etcd.js';
import { openStore } from '../../src/store/open.js';
import type { Op, Store, WatchEvent } from '../../src/store/store.js';
import { TOKEN_RW, tempDir, waitFor } from '../support/helpers.js';
import { storeConformance } from '../support/store-conformance.js';

let single: EtcdCluster | undefined;
let trio: EtcdCluster | undefined;
let namespaces = 0;
const opened = new Set<Store>();

before(async () => {
  single = await startEtcd();
});
after(async () => {
  for (const store of opened) await store.close();
  await Promise.all([single?.stop(), trio?.stop()]);
});

async function threeMembers(): Promise<EtcdCluster> {
  trio ??= await startEtcd({ members: 3 });
  return trio;
}

/** A store of its own namespace on `cluster`: tests never see each other's keys. */
async function storeOn(cluster: EtcdCluster, timeoutMs?: number): Promise<EtcdStore> {
  const store = await openEtcdStore(parseEtcdEndpoints(cluster.endpoints.join(',')), {
    namespace: `/ipferry-test/${process.pid}/${++namespaces}/`,
    ...(timeoutMs !== undefined ? { timeoutMs } : {}),
  });
  opened.add(store);
  return store;
}

const compact = (store: Store, revision: number): Promise<void> => {
  assert.ok(store instanceof EtcdStore);
  return store.compact(revision);
};

storeConformance(
  'etcd (one member)',
  async () => {
    const store = await storeOn(single!);
    return { store, cleanup: () => store.close() };
  },
  // etcd grants at least ~2 s for a 1 s lease and collects expired leases every 500 ms.
  { compact, leaseExpiryWaitMs: 8000 },
);

storeConformance(
  'etcd (three members)',
  async () => {
    const store = await storeOn(await threeMembers());
    return { store, cleanup: () => store.close() };
  },
  { compact, leaseExpiryWaitMs: 8000, testTimeoutMs: 40_000 },
);

// --- helpers ---------------------------------------------------------------------------------

const put = (key: string, value: string): Op => ({ type: 'put', key, value });

async function write(store: Store, ...ops: Op[]): Promise<number> {
  return (await store.txn({ compare: [], success: ops })).revision;
}

/**
 * Creates `key` (which must not exist yet), retrying while the cluster has no quorum or leader
 * (bounded). Exactly once: a retry after an attempt that did land finds the key created.
 */
async function createEventually(store: Store, key: string, value: string): Promise<number> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    try {
      const result = await store.txn({
        compare: [{ key, target: 'create', op: '=', value: 0 }],
        success: [put(key, value)],
      });
      if (result.succeeded) return result.revision;
      const landed = await store.get(key);
      assert.equal(landed?.value, value, `${key} existed before`);
      return landed.modRevision;
    } catch (e) {
      if (Date.now() > deadline) throw e;
      await sleep(100);
    }
  }
}

interface Recorded {
  readonly batches: { revision: number; events: readonly WatchEvent[] }[];
  readonly errors: Error[];
  close(): void;
}

function record(store: Store, prefix: string, fromRevision?: number): Recorded {
  const batches: Recorded['batches'] = [];
  const errors: Error[] = [];
  const watch = store.watch(prefix, {
    ...(fromRevision !== undefined ? { fromRevision } : {}),
    onEvents: (events, revision) => batches.push({ revision, events }),
    onError: (error) => errors.push(error),
  });
  return { batches, errors, close: () => watch.close() };
}

async function until(what: string, condition: () => boolean, ms = 15_000): Promise<void> {
  await waitFor(what, () => Promise.resolve(condition()), ms);
}

function isCode(code: string): (e: unknown) => boolean {
  return (e) => {
    assert.ok(e instanceof IpferryError, `expected an IpferryError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    return true;
  };
}

// --- the --store spec ------------------------------------------------------------------------

void describe('etcd: --store etcd:URL[,URL…]', () => {
  void it('opens the endpoints given, and refuses malformed ones', async () => {
    assert.deepEqual(parseEtcdEndpoints('http://127.0.0.1:2379,http://10.0.0.2'), [
      '127.0.0.1:2379',
      '10.0.0.2:2379',
    ]);
    assert.deepEqual(parseEtcdLocation('https://10.0.0.1,https://[::1]:2381'), {
      endpoints: ['10.0.0.1:2379', '[::1]:2381'],
      tls: true,
      loopback: false,
    });
    const store = await openStore(single!.storeSpec);
    opened.add(store);
    assert.equal(store.kind, 'etcd');
    assert.ok(Number.isSafeInteger((await store.list('/ipferry/v1/')).revision));
    for (const spec of [
      'etcd:',
      'etcd:127.0.0.1:2379',
      'etcd://127.0.0.1:2379',
      'etcd:http://a:2379,,http://b:2379',
      'etcd:http://a:2379,http://a:2379',
      'etcd:http://a:2379/path',
      'etcd:http://user:pw@a:2379',
      'etcd:ftp://a:2379',
      'etcd:http://a:2379,https://b:2379',
      'etcds://a:2379',
    ]) {
      await assert.rejects(openStore(spec), isCode('IPF_E_CONFIG'), spec);
    }
    // TLS to etcd is store-etcd-tls.test.ts's; a plain member does not speak it.
    await assert.rejects(
      openStore(single!.storeSpec.replace('http://', 'https://')),
      (e) =>
        isCode('IPF_E_STORE')(e) && /if it serves plain http:\/\/ there/.test((e as Error).message),
    );
  });

  void it('keeps every key inside its namespace', async () => {
    const a = await storeOn(single!);
    const b = await storeOn(single!);
    await write(a, put('k', 'a'), put('/ipferry/v1/x', 'a'));
    await write(b, put('k', 'b'));
    assert.deepEqual(
      (await a.list('')).kvs.map((kv) => `${kv.key}=${kv.value}`),
      ['/ipferry/v1/x=a', 'k=a'],
    );
    await b.txn({ compare: [], success: [{ type: 'deletePrefix', prefix: '' }] });
    assert.equal((await a.get('k'))?.value, 'a');
    assert.equal(await b.get('k'), undefined);
  });
});

// --- outages, restarts, compaction -----------------------------------------------------------

void describe('etcd: outages (one member)', () => {
  void it('a watch survives a restart of etcd: nothing lost, nothing twice', async () => {
    const s = await storeOn(single!);
    const rec = record(s, 'w/');
    const written: number[] = [];
    for (let i = 0; i < 3; i++) written.push(await write(s, put(`w/b${i}`, `before-${i}`)));
    await single!.kill();
    await single!.restart();
    for (let i = 0; i < 3; i++) written.push(await createEventually(s, `w/a${i}`, `after-${i}`));
    await until('six batches', () => rec.batches.length >= 6);
    await sleep(200);
    assert.deepEqual(
      rec.batches.map((b) => b.revision),
      written,
    );
    assert.deepEqual(
      rec.batches.map((b) => b.events.map((e) => e.kv.value).join()),
      ['before-0', 'before-1', 'before-2', 'after-0', 'after-1', 'after-2'],
    );
    assert.deepEqual(rec.errors, []);
    rec.close();
  });

  void it('calls fail fast with IPF_E_STORE while etcd is down, and work again after', async () => {
    const s = await storeOn(single!);
    const lease = await s.grantLease(30);
    await write(s, put('o/a', '1'));
    await single!.kill();
    try {
      const calls: [string, () => Promise<unknown>][] = [
        ['get', () => s.get('o/a')],
        ['list', () => s.list('o/')],
        ['txn', () => write(s, put('o/a', '2'))],
        ['grantLease', () => s.grantLease(5)],
        ['keepAlive', () => s.keepAlive(lease)],
        ['revokeLease', () => s.revokeLease(lease)],
      ];
      for (const [name, call] of calls) {
        const started = Date.now();
        await assert.rejects(call(), (e) => {
          assert.ok(isCode('IPF_E_STORE')(e));
          assert.match((e as Error).message, /etcd at 127\.0\.0\.1:\d+/);
          return true;
        });
        // Generous: "fast" means it does not wait for the deadline of 5 s, let alone hang.
        assert.ok(Date.now() - started < 4000, `${name} took ${Date.now() - started} ms`);
      }
    } finally {
      await single!.restart();
    }
    assert.equal((await s.get('o/a'))?.value, '1');
    await write(s, put('o/a', '2'));
    assert.equal((await s.get('o/a'))?.value, '2');
    await s.keepAlive(lease); // etcd gave the lease a fresh TTL when it came back
    await s.revokeLease(lease);
  });

  void it('a watch whose revision is compacted while it is cut off ends with IPF_E_STORE_COMPACTED', async () => {
    const s = await storeOn(single!);
    const quiet = record(s, 'quiet/');
    // One event delivered: the watch is connected and will resume after its revision.
    const first = await write(s, put('quiet/a', '1'));
    await until('the first event', () => quiet.batches.length === 1);
    assert.equal(quiet.batches[0]?.revision, first);
    // History moves on elsewhere and is compacted; the connected watch is past it and stays.
    for (let i = 0; i < 5; i++) await write(s, put(`busy/${i}`, String(i)));
    await single!.compact();
    await sleep(200);
    assert.deepEqual(quiet.errors, []);
    // Cut: on reconnecting it asks for `first + 1` again, which etcd no longer has.
    await single!.kill();
    await single!.restart();
    await until('compacted error', () => quiet.errors.length === 1);
    const error: unknown = quiet.errors[0];
    assert.ok(isCode('IPF_E_STORE_COMPACTED')(error) && error instanceof IpferryError);
    assert.equal(error.params['revision'], first + 1);
    assert.equal(quiet.batches.length, 1);
  });
});

void describe('etcd: three members', () => {
  void it('keeps serving writes and watches while one member is down, and each is killed in turn', async () => {
    const cluster = await threeMembers();
    const s = await storeOn(cluster);
    const rec = record(s, 'm/');
    const written: number[] = [];
    for (let member = 0; member < 3; member++) {
      await cluster.kill(member);
      // The others elect a leader if they must, then accept every write.
      written.push(await createEventually(s, `m/${member}`, 'during'));
      for (let i = 0; i < 3; i++) written.push(await write(s, put(`m/${member}`, `more-${i}`)));
      assert.equal((await s.get(`m/${member}`))?.value, 'more-2');
      await cluster.restart(member);
    }
    await until('every batch', () => rec.batches.length >= written.length);
    await sleep(200);
    assert.deepEqual(
      rec.batches.map((b) => b.revision),
      written,
    );
    assert.deepEqual(rec.errors, []);
    rec.close();
  });
});

// --- an agent on etcd ------------------------------------------------------------------------

void describe('etcd: an agent with --store etcd:…', () => {
  let tmp: { dir: string; remove: () => Promise<void> } | undefined;
  let agent: RunningAgent | undefined;
  const dataplane = new FakeDataplane();

  before(async () => {
    tmp = await tempDir('etcd-agent');
    const tokenFile = join(tmp.dir, 'token');
    await writeFile(tokenFile, `${TOKEN_RW}\n`, { mode: 0o600 });
    await chmod(tokenFile, 0o600);
    const config = resolveConfig(
      {},
      {
        node: 'gw1',
        store: single!.storeSpec,
        listen: '127.0.0.1:0',
        tokenFile,
        // Long: convergence after the outage must come from the watch, not the periodic pass.
        resyncSeconds: 3600,
        logLevel: 'silent',
      },
      'test',
    );
    agent = await startAgent(config, { dataplane });
  });

  after(async () => {
    await agent?.stop();
    await tmp?.remove();
  });

  const api = async (method: string, path: string, body?: unknown) => {
    const res = await fetch(`${agent!.url}${path}`, {
      method,
      headers: {
        authorization: `Bearer ${TOKEN_RW}`,
        ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
      },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      signal: AbortSignal.timeout(15_000),
    });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  };
  const state = async (address: string) => (await agent!.control.getFip(address)).status;

  void it('registers its node and realises a FIP', async () => {
    const c = agent!.control;
    assert.equal((await c.getNode('gw1')).alive, true);
    await c.createPool({ name: 'public', gateway: 'gw1', entries: ['203.0.113.0/28'] });
    await c.allocate({ address: '203.0.113.10' });
    const fip = await c.associate('203.0.113.10', { target: '10.0.0.11' });
    await waitFor('ACTIVE', async () => (await state('203.0.113.10')).revision === fip.revision);
    assert.equal((await state('203.0.113.10')).state, 'ACTIVE');
    assert.match(dataplane.dump(), /^dnat 203\.0\.113\.10 -> 10\.0\.0\.11$/m);
    // The FIP's revision fences status reports: a stale one never overwrites a newer decision.
    const stamp = { state: 'ERROR' as const, node: 'gw1', updatedAt: new Date().toISOString() };
    assert.equal(
      await c.reportStatuses([{ ...stamp, address: '203.0.113.10', revision: fip.revision - 1 }]),
      0,
    );
    assert.equal((await state('203.0.113.10')).state, 'ACTIVE');
  });

  void it('answers 503 IPF_E_STORE while etcd is down, keeps its kernel state, and converges after', async () => {
    const before = dataplane.dump();
    await single!.kill();
    try {
      const moved = await api('POST', ROUTES.fipAction('203.0.113.10', 'move'), {
        target: '10.0.0.12',
      });
      assert.equal(moved.status, 503);
      assert.equal((moved.body['error'] as { code?: string }).code, 'IPF_E_STORE');
      const read = await api('GET', ROUTES.fip('203.0.113.10'));
      assert.equal(read.status, 503);
      await sleep(500);
      assert.equal(dataplane.dump(), before, 'fail-static: the dataplane is left as it was');
    } finally {
      await single!.restart();
    }
    const moved = await waitFor('a move accepted', async () => {
      const res = await api('POST', ROUTES.fipAction('203.0.113.10', 'move'), {
        target: '10.0.0.12',
      });
      return res.status === 200 ? res : undefined;
    });
    const revision = moved.body['revision'] as number;
    await waitFor(
      'the move realised',
      async () => (await state('203.0.113.10')).revision === revision,
      15_000,
    );
    assert.equal((await state('203.0.113.10')).state, 'ACTIVE');
    assert.match(dataplane.dump(), /^dnat 203\.0\.113\.10 -> 10\.0\.0\.12$/m);
    assert.equal((await agent!.control.getNode('gw1')).alive, true);
  });
});
