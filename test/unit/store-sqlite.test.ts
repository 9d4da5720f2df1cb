import assert from 'node:assert/strict';
import { chmod, mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import Database from 'better-sqlite3';
import { IpferryError } from '../../src/core/errors.js';
import { openStore } from '../../src/store/open.js';
import { openSqliteStore, prefixEnd, SqliteStore } from '../../src/store/sqlite.js';
import type { SqliteStoreOptions } from '../../src/store/sqlite.js';
import type { Op, WatchEvent } from '../../src/store/store.js';
import { storeConformance } from '../support/store-conformance.js';

async function tempDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), 'ipferry-store-'));
}

storeConformance(
  'sqlite',
  async () => {
    const dir = await tempDir();
    const store = await openSqliteStore(join(dir, 'state.db'));
    return {
      store,
      cleanup: async () => {
        await store.close();
        await rm(dir, { recursive: true, force: true });
      },
    };
  },
  {
    compact: (store, revision) => {
      assert.ok(store instanceof SqliteStore);
      return store.compact(revision);
    },
  },
);

const put = (key: string, value: string, lease?: string): Op =>
  lease === undefined ? { type: 'put', key, value } : { type: 'put', key, value, lease };

function isError(code: string, params?: Record<string, string | number>): (e: unknown) => boolean {
  return (e) => {
    assert.ok(e instanceof IpferryError, `expected an IpferryError, got ${String(e)}`);
    assert.equal(e.code, code);
    if (params) for (const [k, v] of Object.entries(params)) assert.equal(e.params[k], v, k);
    return true;
  };
}

async function until(what: string, condition: () => boolean, ms = 3000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

void describe('sqlite store', () => {
  let dir: string;
  let file: string;
  const opened: SqliteStore[] = [];
  /** A manual clock for lease tests (ms). */
  let clock = 1_000_000;
  const now = (): number => clock;

  const open = async (options: SqliteStoreOptions = {}): Promise<SqliteStore> => {
    const store = await openSqliteStore(file, options);
    opened.push(store);
    return store;
  };
  const write = async (store: SqliteStore, ...ops: Op[]): Promise<number> =>
    (await store.txn({ compare: [], success: ops })).revision;

  beforeEach(async () => {
    dir = await tempDir();
    file = join(dir, 'state.db');
    clock = 1_000_000;
  });
  afterEach(async () => {
    for (const store of opened.splice(0)) await store.close();
    await rm(dir, { recursive: true, force: true });
  });

  void it('a new store starts at revision 0 and the first write is revision 1', async () => {
    const store = await open();
    assert.equal(store.kind, 'sqlite');
    assert.deepEqual(await store.list(''), { kvs: [], revision: 0 });
    assert.equal(await write(store, put('a', '1')), 1);
    assert.deepEqual(await store.revisions(), { revision: 1, compacted: 0 });
  });

  void it('state survives close and reopen: revision, keys, create revisions, leases, history', async () => {
    const first = await open({ now });
    const lease = await first.grantLease(60);
    await write(first, put('k/a', '1'), put('k/b', '1'));
    await write(first, put('k/a', '2'), put('k/l', 'l', lease));
    await write(first, { type: 'delete', key: 'k/b' });
    const before = await first.list('');
    await first.close();

    const second = await open({ now });
    assert.deepEqual(await second.list(''), before);
    assert.deepEqual(await second.get('k/a'), {
      key: 'k/a',
      value: '2',
      createRevision: 1,
      modRevision: 2,
      version: 2,
    });
    assert.equal((await second.get('k/l'))?.lease, lease);
    const replay: number[] = [];
    const watch = second.watch('k/', {
      fromRevision: 1,
      onEvents: (_e, revision) => replay.push(revision),
    });
    await until('replay', () => replay.length === 3);
    watch.close();
    assert.deepEqual(replay, [1, 2, 3]);
    assert.equal(await write(second, put('k/c', '1')), 4);
    await second.revokeLease(lease);
    assert.equal(await second.get('k/l'), undefined);
  });

  void it('migrations are tracked in user_version and idempotent on reopen', async () => {
    await (await open()).close();
    const tablesOf = (): unknown[] => {
      const db = new Database(file, { readonly: true });
      try {
        assert.equal(db.pragma('user_version', { simple: true }), 1);
        assert.equal(db.pragma('journal_mode', { simple: true }), 'wal');
        return db.prepare('SELECT type, name FROM sqlite_schema ORDER BY name').all();
      } finally {
        db.close();
      }
    };
    const tables = tablesOf();
    const store = await open();
    await write(store, put('a', '1'));
    await store.close();
    assert.deepEqual(tablesOf(), tables);
    assert.equal((await open()).kind, 'sqlite');
  });

  void it('refuses a file written by a newer schema', async () => {
    await (await open()).close();
    const db = new Database(file);
    db.pragma('user_version = 99');
    db.close();
    await assert.rejects(openSqliteStore(file), isError('IPF_E_STORE'));
  });

  void it('history is trimmed to historyLimit revisions, which sets the compacted revision', async () => {
    const store = await open({ historyLimit: 5 });
    for (let i = 1; i <= 10; i++) await write(store, put('h/k', String(i)));
    assert.deepEqual(await store.revisions(), { revision: 10, compacted: 5 });

    const errors: Error[] = [];
    store.watch('h/', {
      fromRevision: 5,
      onEvents: () => assert.fail('no events expected'),
      onError: (e) => errors.push(e),
    });
    await until('compacted error', () => errors.length === 1);
    assert.ok(isError('IPF_E_STORE_COMPACTED', { revision: 5, oldest: 6 })(errors[0]));

    const seen: number[] = [];
    const watch = store.watch('h/', {
      fromRevision: 6,
      onEvents: (_e, revision) => seen.push(revision),
    });
    await until('replay', () => seen.length === 5);
    assert.deepEqual(seen, [6, 7, 8, 9, 10]);
    watch.close();
  });

  void it('compact drops history on demand and refuses future revisions', async () => {
    const store = await open();
    for (let i = 1; i <= 3; i++) await write(store, put('h/k', String(i)));
    await assert.rejects(store.compact(4), isError('IPF_E_STORE'));
    await store.compact(2);
    await store.compact(1); // older than what is already compacted: nothing to do
    assert.deepEqual(await store.revisions(), { revision: 3, compacted: 2 });
  });

  void it('leases expire lazily by the injected clock; keepAlive restarts the TTL from now', async () => {
    const store = await open({ now, leaseCheckIntervalMs: 3_600_000 });
    const lease = await store.grantLease(10);
    const r = await write(store, put('l/a', 'a', lease));
    clock += 9_999;
    await store.keepAlive(lease);
    clock += 9_999;
    assert.equal((await store.get('l/a'))?.value, 'a');
    clock += 1;
    assert.equal(await store.get('l/a'), undefined);
    assert.equal((await store.list('')).revision, r + 1);
    await assert.rejects(store.keepAlive(lease), isError('IPF_E_LEASE_NOT_FOUND'));
    await assert.rejects(
      store.txn({ compare: [], success: [put('l/b', 'b', lease)] }),
      isError('IPF_E_LEASE_NOT_FOUND'),
    );
  });

  void it('the timer collects expired leases, one revision per lease', async () => {
    const store = await open({ now, leaseCheckIntervalMs: 10 });
    const a = await store.grantLease(5);
    const b = await store.grantLease(5);
    const r = await write(store, put('l/a1', '1', a), put('l/a2', '2', a), put('l/b', '3', b));
    const batches: string[][] = [];
    store.watch('l/', { onEvents: (events) => batches.push(events.map((e) => e.kv.key)) });
    clock += 5_000;
    // No store call here: only the timer can notice.
    await until('both expiries', () => batches.length === 2);
    assert.deepEqual(batches.flat().sort(), ['l/a1', 'l/a2', 'l/b']);
    assert.ok(batches.some((keys) => keys.length === 2));
    assert.deepEqual(await store.revisions(), { revision: r + 2, compacted: 0 });
  });

  void it('leases get a full TTL again after a restart (as etcd does on leader change)', async () => {
    const first = await open({ now });
    const lease = await first.grantLease(10);
    await write(first, put('l/a', 'a', lease));
    await first.close();
    clock += 60_000; // the agent was down for a minute
    const second = await open({ now });
    assert.equal((await second.get('l/a'))?.value, 'a');
    await second.keepAlive(lease);
    clock += 10_000;
    assert.equal(await second.get('l/a'), undefined);
  });

  void it('close delivers committed events, then fails open watches; later calls fail', async () => {
    const store = await open();
    const seen: number[] = [];
    const errors: Error[] = [];
    store.watch('', {
      onEvents: (_e, revision) => seen.push(revision),
      onError: (e) => errors.push(e),
    });
    await write(store, put('a', '1'));
    await store.close();
    assert.deepEqual(seen, [1]);
    assert.equal(errors.length, 1);
    assert.ok(isError('IPF_E_STORE')(errors[0]));

    await assert.rejects(store.get('a'), isError('IPF_E_STORE'));
    await assert.rejects(store.list(''), isError('IPF_E_STORE'));
    await assert.rejects(store.txn({ compare: [], success: [] }), isError('IPF_E_STORE'));
    await assert.rejects(store.grantLease(1), isError('IPF_E_STORE'));
    await assert.rejects(store.keepAlive('x'), isError('IPF_E_STORE'));
    await assert.rejects(store.revokeLease('x'), isError('IPF_E_STORE'));
    assert.throws(() => store.watch('', { onEvents: () => {} }), isError('IPF_E_STORE'));
    await store.close(); // idempotent
  });

  void it('listeners run outside the writer; a throwing listener does not fail the write', async () => {
    const store = await open();
    let writing = false;
    const calledWhileWriting: boolean[] = [];
    const errors: Error[] = [];
    store.watch('', {
      onEvents: () => {
        calledWhileWriting.push(writing);
        throw new Error('listener bug');
      },
      onError: (e) => errors.push(e),
    });
    const healthy: WatchEvent[][] = [];
    store.watch('', { onEvents: (events) => healthy.push([...events]) });

    writing = true;
    const pending = store.txn({ compare: [], success: [put('a', '1')] });
    writing = false;
    assert.deepEqual(await pending, { succeeded: true, revision: 1 });
    await write(store, put('a', '2'));
    await until('delivery', () => healthy.length === 2);
    assert.deepEqual(calledWhileWriting, [false]);
    assert.equal(errors.length, 1);
    assert.equal(errors[0]!.message, 'listener bug');
    assert.equal((await store.get('a'))?.value, '2');
  });

  void it('refuses empty keys and keys that cannot be stored exactly', async () => {
    const store = await open();
    await assert.rejects(store.get(''), isError('IPF_E_STORE'));
    await assert.rejects(
      store.txn({ compare: [], success: [put('', 'x')] }),
      isError('IPF_E_STORE'),
    );
    await assert.rejects(
      store.txn({ compare: [], success: [put('a\0b', 'x')] }),
      isError('IPF_E_STORE'),
    );
    await assert.rejects(
      store.txn({ compare: [], success: [put('a\uD800', 'x')] }),
      isError('IPF_E_STORE'),
    );
    await assert.rejects(store.grantLease(0), isError('IPF_E_STORE'));
    assert.equal((await store.list('')).revision, 0);
  });

  void it('prefix ranges follow code point order, also beyond the BMP', async () => {
    assert.equal(prefixEnd(''), undefined);
    assert.equal(prefixEnd('a/'), 'a0');
    assert.equal(prefixEnd('a\u{10FFFF}'), 'b');
    assert.equal(prefixEnd('\u{10FFFF}'), undefined);
    assert.equal(prefixEnd('x\uD7FF'), 'x\uE000');
    assert.equal(prefixEnd('x\uFFFF'), 'x\u{10000}');

    const store = await open();
    const keys = [
      'u/\u{10FFFF}a',
      'u/\uFFFFz',
      'u/é',
      'u/\u{10000}',
      'u/\uFFFF',
      'u/\u{10FFFF}',
      'v',
    ];
    await write(store, ...keys.map((k) => put(k, k)));
    const listed = async (prefix: string): Promise<string[]> =>
      (await store.list(prefix)).kvs.map((kv) => kv.key);
    assert.deepEqual(await listed('u/'), [
      'u/é',
      'u/\uFFFF',
      'u/\uFFFFz',
      'u/\u{10000}',
      'u/\u{10FFFF}',
      'u/\u{10FFFF}a',
    ]);
    assert.deepEqual(await listed('u/\uFFFF'), ['u/\uFFFF', 'u/\uFFFFz']);
    assert.deepEqual(await listed('u/\u{10FFFF}'), ['u/\u{10FFFF}', 'u/\u{10FFFF}a']);
  });
});

void describe('openStore', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await tempDir();
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  void it('opens sqlite:PATH, creating the parent directory with mode 0700', async () => {
    const store = await openStore(`sqlite:${join(dir, 'a', 'b', 'state.db')}`);
    try {
      assert.equal(store.kind, 'sqlite');
      assert.equal((await stat(join(dir, 'a', 'b'))).mode & 0o777, 0o700);
      assert.equal((await stat(join(dir, 'a'))).mode & 0o777, 0o700);
    } finally {
      await store.close();
    }
  });

  void it('rejects bad specs with IPF_E_CONFIG for --store', async () => {
    for (const spec of ['sqlite:', 'nope:x', 'state.db', '', ':x']) {
      await assert.rejects(openStore(spec), isError('IPF_E_CONFIG', { source: '--store' }), spec);
    }
    for (const spec of ['etcd://127.0.0.1:2379', 'etcds://127.0.0.1:2379']) {
      await assert.rejects(openStore(spec), (e) => {
        assert.ok(isError('IPF_E_CONFIG', { source: '--store' })(e));
        assert.match((e as Error).message, /etcd:https?:\/\//);
        return true;
      });
    }
    // The http store (test/store-http.test.ts) needs a credential and a proper URL.
    for (const spec of ['http://agent:8080', 'https://agent']) {
      await assert.rejects(openStore(spec), (e) => {
        assert.ok(isError('IPF_E_CONFIG', { source: '--store' })(e));
        assert.match((e as Error).message, /credential/);
        return true;
      });
    }
    for (const spec of ['https://user:pw@agent', 'https://agent/?x=1', 'http://']) {
      await assert.rejects(
        openStore(spec, { credential: 'c' }),
        isError('IPF_E_CONFIG', { source: '--store' }),
        spec,
      );
    }
  });
});

void describe('sqlite store files are the agent alone', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await tempDir();
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const modeOf = async (path: string): Promise<number> => (await stat(path)).mode & 0o777;

  void it('creates state.db, its WAL and its shared memory 0600 whatever the umask', async () => {
    const path = join(dir, 'state.db');
    const warnings: string[] = [];
    // The umask that would make them world-writable: the modes must not depend on it.
    const umask = process.umask(0);
    let store: SqliteStore;
    try {
      store = await openSqliteStore(path, { warn: (m) => warnings.push(m) });
    } finally {
      process.umask(umask);
    }
    try {
      await store.txn({ compare: [], success: [put('/ipferry/v1/k', 'v')] });
      for (const file of [path, `${path}-wal`, `${path}-shm`]) {
        assert.equal(await modeOf(file), 0o600, file);
      }
      assert.deepEqual(warnings, [], 'nothing was wider: nothing to say');
    } finally {
      await store.close();
    }
    // Opened through --store the same way (openStore passes no options: a process warning).
    const again = await openStore(`sqlite:${path}`);
    try {
      await again.txn({ compare: [], success: [put('/ipferry/v1/k', 'w')] });
      for (const file of [path, `${path}-wal`, `${path}-shm`]) {
        assert.equal(await modeOf(file), 0o600, file);
      }
    } finally {
      await again.close();
    }
  });

  void it('makes files an older ipferry left readable 0600, and says which', async () => {
    const path = join(dir, 'state.db');
    const first = await openSqliteStore(path);
    await first.txn({ compare: [], success: [put('/ipferry/v1/k', 'v')] });
    await first.close();
    // Another connection keeps the WAL and its index there, as a crashed agent leaves them.
    const other = new Database(path);
    other.pragma('journal_mode = WAL');
    other.prepare('SELECT count(*) FROM kv').get();
    try {
      for (const file of [path, `${path}-wal`, `${path}-shm`]) await chmod(file, 0o644);
      const warnings: string[] = [];
      const store = await openSqliteStore(path, { warn: (m) => warnings.push(m) });
      try {
        await store.txn({ compare: [], success: [put('/ipferry/v1/k', 'w')] });
        for (const file of [path, `${path}-wal`, `${path}-shm`]) {
          assert.equal(await modeOf(file), 0o600, file);
        }
        assert.equal(warnings.length, 1, warnings.join('\n'));
        assert.match(warnings[0] ?? '', /readable by others and are now 0600/);
        // The WAL is empty here, and SQLite itself gives an empty one the database's new mode.
        for (const file of [path, `${path}-shm`]) {
          assert.ok(warnings[0]?.includes(`${file} (was 0644)`), warnings[0]);
        }
        assert.equal((await store.get('/ipferry/v1/k'))?.value, 'w');
      } finally {
        await store.close();
      }
    } finally {
      other.close();
    }
  });

  void it('leaves a file that is private already, and an in-memory store, alone', async () => {
    const path = join(dir, 'state.db');
    await (await openSqliteStore(path)).close();
    await chmod(path, 0o400 | 0o200);
    const warnings: string[] = [];
    const store = await openSqliteStore(path, { warn: (m) => warnings.push(m) });
    await store.close();
    const memory = await openSqliteStore(':memory:', { warn: (m) => warnings.push(m) });
    await memory.close();
    assert.deepEqual(warnings, []);
  });
});
