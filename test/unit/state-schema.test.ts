/**
 * The SQLite store's schema version (`PRAGMA user_version`) and its migration runner, on a store
 * file written by this version and committed (test/support/fixtures/state-v1.db; remake it with
 * `node --import tsx test/support/state-fixture.ts --write`). Schema 1 is the only one so far, so
 * "the next version" is played by the runner with one more step, as a later ipferry would
 * append it: the fixture is brought forward with its records intact, all steps or none, and
 * this version refuses a file of a schema newer than its own instead of misreading it.
 */
import assert from 'node:assert/strict';
import { copyFile, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { keys, ROOT } from '../../src/core/keys.js';
import {
  migrate,
  MIGRATIONS,
  openSqliteStore,
  readSqliteSnapshot,
  SCHEMA_VERSION,
} from '../../src/store/sqlite.js';
import type { WatchEvent } from '../../src/store/store.js';
import { tempDir } from '../support/helpers.js';
import { EXPORT_FIXTURE, STORE_FIXTURE } from '../support/state-fixture.js';

const NEXT_STEP = {
  version: SCHEMA_VERSION + 1,
  sql: `ALTER TABLE kv ADD COLUMN note TEXT NOT NULL DEFAULT '';
        CREATE INDEX kv_by_note ON kv (note);`,
};

function userVersion(path: string): number {
  const db = new Database(path, { readonly: true });
  try {
    return db.pragma('user_version', { simple: true }) as number;
  } finally {
    db.close();
  }
}

describe('store schema versions and migrations', () => {
  let dir: string;
  let remove: () => Promise<void>;
  let fixtureKeys: string[];
  let copies = 0;

  /** A private copy of the fixture: opening may migrate it. */
  async function fixtureCopy(): Promise<string> {
    const path = join(dir, `state-${++copies}.db`);
    await copyFile(STORE_FIXTURE, path);
    return path;
  }

  before(async () => {
    ({ dir, remove } = await tempDir('schema'));
    const exported = JSON.parse(await readFile(EXPORT_FIXTURE, 'utf8'));
    fixtureKeys = exported.records.map((r: { key: string }) => r.key);
  });
  after(() => remove());

  it('records the schema version in the file: the fixture is schema 1, the current one', async () => {
    assert.equal(SCHEMA_VERSION, 1);
    // A copy: even a read-only connection leaves SQLite's WAL files beside the file it reads.
    assert.equal(userVersion(await fixtureCopy()), 1);
  });

  it('opens the fixture with its records, revisions and watch history', async () => {
    const path = await fixtureCopy();
    const store = await openSqliteStore(path, { warn: () => {} });
    try {
      const { kvs, revision } = await store.list(ROOT);
      assert.equal(revision, 14);
      for (const key of fixtureKeys)
        assert.ok(
          kvs.some((kv) => kv.key === key),
          key,
        );
      // History from the first revision replays: the events table came through too.
      const first = await new Promise<readonly WatchEvent[]>((resolve, reject) => {
        const watch = store.watch(keys.nodes, {
          fromRevision: 1,
          onEvents: (events) => {
            watch.close();
            resolve(events);
          },
          onError: reject,
        });
      });
      assert.equal(first[0]?.kv.key, keys.node('gw'));
      const next = await store.txn({
        compare: [],
        success: [{ type: 'put', key: keys.pool('later'), value: '{}' }],
      });
      assert.equal(next.revision, 15);
    } finally {
      await store.close();
    }
    assert.equal(userVersion(path), 1);
  });

  it('migrates the fixture with a later step, keeping every record', async () => {
    const path = await fixtureCopy();
    const db = new Database(path);
    try {
      migrate(db, [...MIGRATIONS, NEXT_STEP]);
      assert.equal(db.pragma('user_version', { simple: true }), 2);
      const rows = db.prepare('SELECT key, note FROM kv ORDER BY key').all() as {
        key: string;
        note: string;
      }[];
      for (const key of fixtureKeys)
        assert.ok(
          rows.some((r) => r.key === key),
          key,
        );
      assert.ok(rows.every((r) => r.note === ''));
      // Running it again finds nothing to do.
      migrate(db, [...MIGRATIONS, NEXT_STEP]);
      assert.equal(db.pragma('user_version', { simple: true }), 2);
    } finally {
      db.close();
    }
    // This version meets a file of the next schema: refused, never misread.
    await assert.rejects(
      openSqliteStore(path, { warn: () => {} }),
      /schema version 2, newer than this ipferry knows \(1\); upgrade ipferry/,
    );
    await assert.rejects(readSqliteSnapshot(path, ROOT), /schema version 2, newer than/);
  });

  it('applies all pending steps or none', async () => {
    const path = await fixtureCopy();
    const db = new Database(path);
    try {
      const broken = { version: 3, sql: 'ALTER TABLE nowhere ADD COLUMN x TEXT;' };
      assert.throws(() => migrate(db, [...MIGRATIONS, NEXT_STEP, broken]), /no such table/);
      assert.equal(db.pragma('user_version', { simple: true }), 1);
      const columns = db.prepare("SELECT name FROM pragma_table_info('kv')").all() as {
        name: string;
      }[];
      assert.ok(!columns.some((c) => c.name === 'note'), 'step 2 was rolled back with step 3');
    } finally {
      db.close();
    }
  });

  it('brings a file without a schema (version 0) to the current one when it opens', async () => {
    const path = join(dir, 'empty.db');
    new Database(path).close();
    assert.equal(userVersion(path), 0);
    await assert.rejects(readSqliteSnapshot(path, ROOT), /schema version 0, older than/);
    const store = await openSqliteStore(path, { warn: () => {} });
    await store.close();
    assert.equal(userVersion(path), SCHEMA_VERSION);
  });
});
