/**
 * `ipferry state export|import` on SQLite files: a round trip carries the desired state and
 * leaves runtime records out; an import refuses a non-empty store, a bad record and an unknown
 * format version with nothing written; the export file is 0600. The committed fixtures were
 * written by this version (test/support/state-fixture.ts --write): a later version must still
 * open and import them.
 */
import assert from 'node:assert/strict';
import { copyFile, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { main } from '../../src/cli/main.js';
import { keys, ROOT } from '../../src/core/keys.js';
import { openStore } from '../../src/store/open.js';
import type { KeyValue, Store } from '../../src/store/store.js';
import { dumpStore, tempDir } from '../support/helpers.js';
import { CREDENTIAL_SHA256, EXPORT_FIXTURE, writeGatewayState } from '../support/state-fixture.js';

interface Run {
  code: number;
  out: string;
  err: string;
}

async function cli(...args: string[]): Promise<Run> {
  let out = '';
  let err = '';
  const code = await main(
    ['node', 'ipferry', ...args],
    { out: (s) => void (out += s), err: (s) => void (err += s) },
    {},
  );
  return { code, out, err };
}

/** Key → value of every record under ROOT: what a restore must give back. */
async function records(store: Store): Promise<Map<string, string>> {
  const { kvs } = await store.list(ROOT);
  return new Map(kvs.map((kv: KeyValue) => [kv.key, kv.value]));
}

async function withStore<T>(path: string, body: (store: Store) => Promise<T>): Promise<T> {
  const store = await openStore(`sqlite:${path}`);
  try {
    return await body(store);
  } finally {
    await store.close();
  }
}

describe('state export and import (SQLite)', () => {
  let dir: string;
  let remove: () => Promise<void>;
  let source: string;
  let original: Map<string, string>;

  before(async () => {
    ({ dir, remove } = await tempDir('state'));
    source = join(dir, 'source.db');
    original = await withStore(source, async (store) => {
      await writeGatewayState(store);
      return records(store);
    });
  });
  after(() => remove());

  it('exports the desired state to a 0600 file and restores it onto an empty store', async () => {
    const file = join(dir, 'backup.json');
    const exported = await cli('state', 'export', '--store', `sqlite:${source}`, '--output', file);
    assert.equal(exported.code, 0, exported.err);
    assert.match(exported.out, /^exported 11 record\(s\) \(.*\) from sqlite at revision \d+ to /);
    assert.match(exported.out, /left out 3 runtime record\(s\)/);
    assert.equal((await stat(file)).mode & 0o777, 0o600);

    const document = JSON.parse(await readFile(file, 'utf8'));
    assert.equal(document.format, 'ipferry-state');
    assert.equal(document.formatVersion, 1);
    const exportedKeys = document.records.map((r: { key: string }) => r.key);
    assert.ok(exportedKeys.includes(keys.nodeCredential('home')), 'credential hashes are carried');
    for (const runtime of [keys.alive, keys.statuses, keys.joinTokens]) {
      assert.ok(!exportedKeys.some((k: string) => k.startsWith(runtime)), `${runtime} is left out`);
    }

    const target = join(dir, 'restored.db');
    const imported = await cli('state', 'import', file, '--store', `sqlite:${target}`);
    assert.equal(imported.code, 0, imported.err);
    assert.match(imported.out, /^imported 11 record\(s\) .* into sqlite at revision 1\n$/);
    const restored = await withStore(target, records);
    const expected = new Map([...original].filter(([k]) => exportedKeys.includes(k)));
    assert.deepEqual(restored, expected);
    assert.equal(JSON.parse(restored.get(keys.nodeCredential('home'))!).sha256, CREDENTIAL_SHA256);
  });

  it('exports to stdout while the store is open, without writing to it', async () => {
    await withStore(source, async (store) => {
      const before = await dumpStore(store);
      const run = await cli('state', 'export', '--store', `sqlite:${source}`);
      assert.equal(run.code, 0, run.err);
      assert.equal(JSON.parse(run.out).records.length, 11);
      assert.match(run.err, /^exported 11 record/);
      assert.equal(await dumpStore(store), before);
    });
  });

  it('refuses a store that is not empty, changing nothing', async () => {
    const target = join(dir, 'busy.db');
    await withStore(target, (store) =>
      store.txn({ compare: [], success: [{ type: 'put', key: keys.pool('other'), value: '{}' }] }),
    );
    const before = await withStore(target, dumpStore);
    const run = await cli('state', 'import', EXPORT_FIXTURE, '--store', `sqlite:${target}`);
    assert.equal(run.code, 1);
    assert.match(run.err, /IPF_E_STORE_NOT_EMPTY/);
    assert.match(run.err, /1 key\(s\), such as \/ipferry\/v1\/pools\/other/);
    assert.equal(await withStore(target, dumpStore), before);
  });

  it('refuses a file with a bad record, naming its key and why, before anything is written', async () => {
    const document = JSON.parse(await readFile(EXPORT_FIXTURE, 'utf8'));
    const pool = document.records.find((r: { key: string }) => r.key === keys.pool('nat'));
    pool.value.entries = [{ kind: 'cidr', cidr: '203.0.113.9/30' }];
    const fip = document.records.find((r: { key: string }) => r.key === keys.fip('203.0.113.9'));
    fip.value.address = '203.0.113.11';
    const file = join(dir, 'bad.json');
    await writeFile(file, JSON.stringify(document));
    const target = join(dir, 'untouched.db');
    const run = await cli('--json', 'state', 'import', file, '--store', `sqlite:${target}`);
    assert.equal(run.code, 1);
    const { error } = JSON.parse(run.err);
    assert.equal(error.code, 'IPF_E_VALIDATION');
    assert.deepEqual(
      error.problems.map((p: { path: string }) => p.path),
      [keys.fip('203.0.113.9'), keys.pool('nat')],
    );
    assert.match(
      error.problems[1].message,
      /entries\[0\]\.cidr must be a prefix in canonical form/,
    );
    await assert.rejects(stat(target), /ENOENT/, 'the store was not even opened');
  });

  it('leaves out a record the agents skip, and names it; refuses such a record on import', async () => {
    const path = join(dir, 'odd.db');
    const odd = keys.pool('odd');
    await withStore(path, async (store) => {
      await writeGatewayState(store);
      await store.txn({
        compare: [],
        success: [{ type: 'put', key: odd, value: JSON.stringify({ name: 'other' }) }],
      });
    });
    const run = await cli('state', 'export', '--store', `sqlite:${path}`);
    assert.equal(run.code, 0, run.err);
    assert.equal(JSON.parse(run.out).records.length, 11);
    assert.match(
      run.err,
      /left out \/ipferry\/v1\/pools\/odd: pool that does not decode: .*gateway/,
    );

    const document = JSON.parse(run.out);
    document.records.push(
      { key: odd, value: { name: 'other' } },
      { key: keys.status('203.0.113.9'), value: {} },
    );
    const file = join(dir, 'odd.json');
    await writeFile(file, JSON.stringify(document));
    const refused = await cli(
      '--json',
      'state',
      'import',
      file,
      '--store',
      `sqlite:${join(dir, 'odd-target.db')}`,
    );
    assert.equal(refused.code, 1);
    const { error } = JSON.parse(refused.err);
    assert.deepEqual(
      error.problems.map((p: { path: string }) => p.path),
      [odd, keys.status('203.0.113.9')],
    );
    assert.match(error.problems[1].message, /is not restored: runtime/);
  });

  it('refuses an export of a newer format, or no export at all, clearly', async () => {
    const document = JSON.parse(await readFile(EXPORT_FIXTURE, 'utf8'));
    const target = join(dir, 'never.db');
    for (const [change, pattern] of [
      [{ formatVersion: 2 }, /formatVersion: is 2, newer than this ipferry reads \(1\)/],
      [{ formatVersion: 0 }, /formatVersion: must be a whole number from 1/],
      [{ format: 'etcd-snapshot' }, /format: must be "ipferry-state"/],
    ] as const) {
      const file = join(dir, 'format.json');
      await writeFile(file, JSON.stringify({ ...document, ...change }));
      const run = await cli('state', 'import', file, '--store', `sqlite:${target}`);
      assert.equal(run.code, 1);
      assert.match(run.err, pattern);
    }
    await assert.rejects(stat(target), /ENOENT/);
  });

  it('imports the format-1 export committed by the version that introduced it', async () => {
    const target = join(dir, 'from-fixture.db');
    const run = await cli('state', 'import', EXPORT_FIXTURE, '--store', `sqlite:${target}`);
    assert.equal(run.code, 0, run.err);
    const restored = await withStore(target, records);
    assert.equal(restored.size, 11);
    assert.ok(restored.has(keys.fip('198.51.100.17')));
  });

  it('refuses to read a store through another agent, and a file that is not there', async () => {
    const http = await cli('state', 'export', '--store', 'https://hub.example:7447');
    assert.equal(http.code, 1);
    assert.match(http.err, /another agent's store/);
    const missing = await cli('state', 'export', '--store', `sqlite:${join(dir, 'none.db')}`);
    assert.equal(missing.code, 1);
    assert.match(missing.err, /IPF_E_STORE/);
    await assert.rejects(stat(join(dir, 'none.db')), /ENOENT/, 'an export creates no store');
  });

  it('writes the export over an older one whole, still 0600', async () => {
    const file = join(dir, 'again.json');
    await writeFile(file, 'old', { mode: 0o644 });
    const run = await cli('state', 'export', '--store', `sqlite:${source}`, '--output', file);
    assert.equal(run.code, 0, run.err);
    assert.equal((await stat(file)).mode & 0o777, 0o600);
    assert.equal(JSON.parse(await readFile(file, 'utf8')).records.length, 11);
  });

  it('copies of the fixture store export what the fixture export holds', async () => {
    const { STORE_FIXTURE } = await import('../support/state-fixture.js');
    const copy = join(dir, 'fixture-copy.db');
    await copyFile(STORE_FIXTURE, copy);
    const run = await cli('state', 'export', '--store', `sqlite:${copy}`);
    assert.equal(run.code, 0, run.err);
    const fixture = JSON.parse(await readFile(EXPORT_FIXTURE, 'utf8'));
    assert.deepEqual(JSON.parse(run.out).records, fixture.records);
  });
});
