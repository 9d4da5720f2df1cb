/**
 * `ipferry state export|import` with real etcd (Debian's etcd-server): an export is one range at
 * one revision, leased keys (liveness, join tokens) are left out, an import onto another empty
 * cluster is one transaction, or parts under a marker when it is larger than etcd takes in one
 * (a part that fails takes the others back), a cluster that holds keys is refused without a
 * write, and an export of etcd restores onto SQLite as well (and the other way round).
 *
 * Throwaway single-member clusters on 127.0.0.1 (src/lab/etcd.ts), stopped by pid and removed
 * also when a test fails.
 */
import assert from 'node:assert/strict';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { main } from '../../src/cli/main.js';
import { keys, RESTORE_KEY, ROOT } from '../../src/core/keys.js';
import { startEtcd, type EtcdCluster } from '../../src/lab/etcd.js';
import { openStore } from '../../src/store/open.js';
import { importState } from '../../src/service/restore.js';
import { parseStateDocument } from '../../src/service/state.js';
import type { Store, Txn } from '../../src/store/store.js';
import { tempDir } from '../support/helpers.js';
import { EXPORT_FIXTURE, writeGatewayState } from '../support/state-fixture.js';

let source: EtcdCluster | undefined;
let target: EtcdCluster | undefined;
let tmp: { dir: string; remove: () => Promise<void> } | undefined;

const spec = (cluster: EtcdCluster | undefined) => `etcd:${cluster!.endpoints.join(',')}`;

async function cli(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await main(
    ['node', 'ipferry', ...args],
    { out: (s) => void (out += s), err: (s) => void (err += s) },
    {},
  );
  return { code, out, err };
}

async function withStore<T>(where: string, body: (store: Store) => Promise<T>): Promise<T> {
  const store = await openStore(where);
  try {
    return await body(store);
  } finally {
    await store.close();
  }
}

const recordsOf = (where: string) =>
  withStore(where, async (store) => {
    const { kvs, revision } = await store.list(ROOT);
    return { revision, values: new Map(kvs.map((kv) => [kv.key, kv.value])) };
  });

/** The fixture's records and `extra` client-token records: more than one etcd transaction takes. */
async function largeExport(extra: number): Promise<{ records: unknown[] }> {
  const document = JSON.parse(await readFile(EXPORT_FIXTURE, 'utf8')) as { records: unknown[] };
  for (let i = 0; i < extra; i++) {
    document.records.push({
      key: keys.clientTokenByDigest(i.toString(16).padStart(64, '0')),
      value: { address: '203.0.113.9', fingerprint: `retry-${i}` },
    });
  }
  return document;
}

before(async () => {
  // One after the other: a cluster that started is kept where after() finds it even when the
  // next one fails to.
  source = await startEtcd();
  target = await startEtcd();
  tmp = await tempDir('state-etcd');
});
after(async () => {
  await Promise.all([source?.stop(), target?.stop()]);
  await tmp?.remove();
});

describe('state export and import with etcd', () => {
  const file = () => join(tmp!.dir, 'etcd.json');

  it('exports the desired state at one revision, leaving leased and runtime keys out', async () => {
    await withStore(spec(source), writeGatewayState);
    const run = await cli('state', 'export', '--store', spec(source), '--output', file());
    assert.equal(run.code, 0, run.err);
    assert.match(run.out, /^exported 11 record\(s\) .* from etcd at revision \d+ to /);
    assert.match(run.out, /left out 3 runtime record\(s\)/);
    assert.equal((await stat(file())).mode & 0o777, 0o600);
    const document = JSON.parse(await readFile(file(), 'utf8'));
    const { revision } = await recordsOf(spec(source));
    assert.equal(document.source.revision, revision);
    // The same records as the SQLite fixture holds, written the same way.
    const fixture = JSON.parse(await readFile(EXPORT_FIXTURE, 'utf8'));
    assert.deepEqual(
      document.records.map((r: { key: string }) => r.key),
      fixture.records.map((r: { key: string }) => r.key),
    );
  });

  it("restores more records than etcd's --max-txn-ops takes in one transaction, in parts", async () => {
    const large = join(tmp!.dir, 'large.json');
    const document = await largeExport(300);
    await writeFile(large, JSON.stringify(document));
    const spare = await startEtcd();
    try {
      const run = await cli('state', 'import', large, '--store', spec(spare));
      assert.equal(run.code, 0, run.err);
      assert.match(run.out, /^imported 311 record\(s\) .* at revision \d+ \(3 transactions\)\n$/);
      const restored = await recordsOf(spec(spare));
      assert.equal(restored.values.size, 311);
      for (const r of document.records as { key: string; value: unknown }[]) {
        assert.deepEqual(JSON.parse(restored.values.get(r.key)!), r.value, r.key);
      }
      await withStore(spec(spare), async (store) => {
        assert.equal(await store.get(RESTORE_KEY), undefined, 'the marker is gone');
      });
      const again = await cli('state', 'import', large, '--store', spec(spare));
      assert.equal(again.code, 1);
      assert.match(again.err, /IPF_E_STORE_NOT_EMPTY/);
    } finally {
      await spare.stop();
    }
  });

  it('a part that fails takes back what the earlier parts wrote: all or nothing', async () => {
    const records = parseStateDocument(JSON.stringify(await largeExport(300)));
    const spare = await startEtcd();
    try {
      await withStore(spec(spare), async (store) => {
        // Another writer takes a key of the third part between the second and the third.
        const clash = records[260]!.key;
        let calls = 0;
        const racing: Store = Object.assign(Object.create(store) as Store, {
          txn: async (txn: Txn) => {
            if (++calls === 3) {
              await store.txn({ compare: [], success: [{ type: 'put', key: clash, value: '{}' }] });
            }
            return store.txn(txn);
          },
        });
        await assert.rejects(importState(racing, records), /IPF_E_CONFLICT|written during/);
        const left = await store.list('/ipferry/');
        assert.deepEqual(
          left.kvs.map((kv) => kv.key),
          [clash],
          'only the other writer’s key is left: no record of the import, no marker',
        );
      });
    } finally {
      await spare.stop();
    }
  });

  it('imports onto an empty cluster in one revision, with every record as it was', async () => {
    const run = await cli('state', 'import', file(), '--store', spec(target));
    assert.equal(run.code, 0, run.err);
    const [from, to] = await Promise.all([recordsOf(spec(source)), recordsOf(spec(target))]);
    const exported = JSON.parse(await readFile(file(), 'utf8')).records.map(
      (r: { key: string }) => r.key,
    );
    assert.deepEqual(to.values, new Map([...from.values].filter(([k]) => exported.includes(k))));
    assert.match(run.out, new RegExp(`into etcd at revision ${to.revision}\\n$`));
    await withStore(spec(target), async (store) => {
      const revisions = new Set((await store.list(ROOT)).kvs.map((kv) => kv.modRevision));
      assert.deepEqual([...revisions], [to.revision], 'one transaction');
    });
  });

  it('refuses a cluster that holds keys, writing nothing', async () => {
    const before = await recordsOf(spec(target));
    const run = await cli('state', 'import', EXPORT_FIXTURE, '--store', spec(target));
    assert.equal(run.code, 1);
    assert.match(run.err, /IPF_E_STORE_NOT_EMPTY/);
    assert.deepEqual(await recordsOf(spec(target)), before);
  });

  it('restores an etcd export onto SQLite', async () => {
    const sqlite = `sqlite:${join(tmp!.dir, 'from-etcd.db')}`;
    const run = await cli('state', 'import', file(), '--store', sqlite);
    assert.equal(run.code, 0, run.err);
    const [etcd, restored] = await Promise.all([recordsOf(spec(target)), recordsOf(sqlite)]);
    assert.deepEqual(restored.values, etcd.values);
    assert.ok(restored.values.has(keys.nodeCredential('home')));
  });
});
