/**
 * The embedded store: the `Store` interface on one SQLite file (better-sqlite3).
 *
 * One process only: the agent is the only writer of the file (the CLI and other agents go through
 * its API). Watches are fed from inside this process — a write made by another process would
 * not wake them — and lease timers run here, so a second writer would silently break watches and
 * leases even though SQLite itself would keep the file consistent.
 *
 * Layout:
 * - `kv` holds the current value of every key with etcd's create/mod revision and version.
 * - `events` is the change history (one row per key change, grouped by revision) that watches
 *   replay from; it keeps the last `historyLimit` revisions, older ones are "compacted".
 * - `meta` holds the current and the compacted revision.
 * - `leases` holds leases and when they expire; keys point at their lease.
 *
 * better-sqlite3 is synchronous: each method runs its SQL to completion on the calling tick, so
 * operations of this process never interleave and a transaction needs no locking of its own.
 * The methods still return promises because the other stores (etcd, http) are remote.
 */
import Database from 'better-sqlite3';
import { randomBytes } from 'node:crypto';
import { chmodSync, closeSync, constants, openSync, statSync } from 'node:fs';
import { IpferryError } from '../core/errors.js';
import { checkText, checkTxn, storeError } from './checks.js';
import type {
  Compare,
  KeyValue,
  ListResult,
  Op,
  Store,
  Txn,
  TxnResult,
  Watch,
  WatchEvent,
  WatchOptions,
} from './store.js';

export interface SqliteStoreOptions {
  /** How many revisions of history watches can replay (default 10000). */
  readonly historyLimit?: number;
  /** How often expired leases are collected, in ms (default 500). */
  readonly leaseCheckIntervalMs?: number;
  /** Clock in ms since the epoch (default Date.now); tests inject their own. */
  readonly now?: () => number;
  /**
   * Told when a store file was readable by others and was made 0600 (default: a process
   * warning, which the agent's stderr shows).
   */
  readonly warn?: (message: string) => void;
}

const DEFAULT_HISTORY_LIMIT = 10_000;
const DEFAULT_LEASE_CHECK_MS = 500;
/** Revisions a watch replays per event-loop turn, so a long replay does not starve writers. */
const REPLAY_WINDOW = 1_000;
/** Expired leases collected per query; the loop repeats until none is left. */
const EXPIRY_BATCH = 100;

// ---------------------------------------------------------------------------------------------
// Schema

export interface Migration {
  readonly version: number;
  readonly sql: string;
}

/**
 * Numbered schema steps; `PRAGMA user_version` records the last one applied. Never edit a step
 * that has shipped: append a new one, so every existing file can be brought forward.
 */
export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    sql: `
      CREATE TABLE meta (
        id        INTEGER PRIMARY KEY CHECK (id = 1),
        revision  INTEGER NOT NULL,
        compacted INTEGER NOT NULL
      ) STRICT;
      INSERT INTO meta (id, revision, compacted) VALUES (1, 0, 0);

      CREATE TABLE leases (
        id         TEXT PRIMARY KEY,
        ttl_ms     INTEGER NOT NULL,
        expires_at INTEGER NOT NULL
      ) STRICT, WITHOUT ROWID;
      CREATE INDEX leases_by_expiry ON leases (expires_at);

      CREATE TABLE kv (
        key        TEXT PRIMARY KEY,
        value      TEXT NOT NULL,
        create_rev INTEGER NOT NULL,
        mod_rev    INTEGER NOT NULL,
        version    INTEGER NOT NULL,
        lease      TEXT REFERENCES leases (id)
      ) STRICT, WITHOUT ROWID;
      CREATE INDEX kv_by_lease ON kv (lease) WHERE lease IS NOT NULL;

      CREATE TABLE events (
        revision        INTEGER NOT NULL,
        seq             INTEGER NOT NULL,
        type            TEXT NOT NULL CHECK (type IN ('put', 'delete')),
        key             TEXT NOT NULL,
        value           TEXT NOT NULL,
        create_rev      INTEGER NOT NULL,
        version         INTEGER NOT NULL,
        lease           TEXT,
        prev_value      TEXT,
        prev_create_rev INTEGER,
        prev_mod_rev    INTEGER,
        prev_version    INTEGER,
        prev_lease      TEXT,
        PRIMARY KEY (revision, seq)
      ) STRICT, WITHOUT ROWID;
    `,
  },
];

function lastVersion(steps: readonly Migration[]): number {
  return steps.reduce((max, m) => Math.max(max, m.version), 0);
}

/** The schema this ipferry writes; a file of an older one is migrated when it is opened. */
export const SCHEMA_VERSION = lastVersion(MIGRATIONS);

function readUserVersion(db: Database.Database): number {
  const version = db.pragma('user_version', { simple: true });
  if (typeof version !== 'number') throw storeError('cannot read the schema version');
  return version;
}

/**
 * Brings the file to the last version of `steps` (MIGRATIONS; tests pass a longer list to run
 * a step a later version would add); all pending steps commit together or not at all.
 */
export function migrate(db: Database.Database, steps: readonly Migration[] = MIGRATIONS): void {
  const target = lastVersion(steps);
  db.transaction(() => {
    // Read inside the (immediate, i.e. write-locked) transaction so two openers cannot both
    // apply the same step.
    const current = readUserVersion(db);
    if (current > target) {
      throw storeError(
        `${db.name} has schema version ${current}, newer than this ipferry knows (${target}); upgrade ipferry`,
      );
    }
    for (const step of steps) {
      if (step.version <= current) continue;
      db.exec(step.sql);
      db.pragma(`user_version = ${step.version}`);
    }
  }).immediate();
}

/**
 * The store's files are the agent's alone: they name every address, node and forward, and
 * hold the hashes of join tokens and node credentials. SQLite creates the database with the
 * process umask (0644 under the usual 022) and gives the WAL and shared-memory files beside it
 * the database's mode, so the database is created 0600 before SQLite opens it, and every file
 * that exists already is made 0600 (whatever the umask) and named in a warning.
 */
const FILE_MODE = 0o600;

/** The files SQLite keeps beside the database: the WAL, its index, a rollback journal. */
const SIDE_FILES = ['-wal', '-shm', '-journal'] as const;

/** Whether `path` names a file (not SQLite's private in-memory or temporary database). */
function onDisk(path: string): boolean {
  return path !== '' && path !== ':memory:' && !path.startsWith('file:');
}

/** Creates the database file 0600 if it is missing; makes an existing one 0600. */
function createPrivately(path: string): string[] {
  try {
    closeSync(openSync(path, constants.O_RDWR | constants.O_CREAT | constants.O_EXCL, FILE_MODE));
    // The umask may have taken more than group and others: the agent must read and write it.
    chmodSync(path, FILE_MODE);
    return [];
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
  }
  return tighten([path]);
}

/** Makes each existing file of `paths` that others may read or write 0600; returns those. */
function tighten(paths: readonly string[]): string[] {
  const tightened: string[] = [];
  for (const path of paths) {
    let stat;
    try {
      stat = statSync(path);
    } catch {
      continue; // not there (yet): SQLite creates it with the database's mode
    }
    const mode = stat.mode;
    // Not a file (a directory by mistake): SQLite refuses it, nothing to make private.
    if (!stat.isFile() || (mode & 0o077) === 0) continue;
    chmodSync(path, FILE_MODE);
    tightened.push(`${path} (was ${(mode & 0o777).toString(8).padStart(4, '0')})`);
  }
  return tightened;
}

function defaultWarn(message: string): void {
  process.emitWarning(message, { code: 'IPFERRY_STORE_FILE_MODE' });
}

/** Opens the file with the settings the store relies on. */
function openDatabase(path: string, warn: (message: string) => void): Database.Database {
  const tightened = onDisk(path) ? createPrivately(path) : [];
  const db = new Database(path);
  try {
    // WAL: readers never block the writer and a commit is one append to the log.
    const mode = db.pragma('journal_mode = WAL', { simple: true });
    if (mode !== 'wal' && !db.memory) {
      throw storeError(
        `${path}: SQLite refused WAL mode (got ${String(mode)}); use a local file system`,
      );
    }
    // FULL rather than NORMAL: in WAL mode NORMAL can lose the last commits on power loss. The
    // store records allocations the API has already acknowledged and the write rate is low
    // (control-plane changes and lease keep-alives), so an fsync per commit is cheap insurance.
    db.pragma('synchronous = FULL');
    // Wait for a lock instead of failing at once if a backup or sqlite3 shell holds it briefly.
    db.pragma('busy_timeout = 5000');
    db.pragma('foreign_keys = ON');
    migrate(db);
    // The WAL and its index exist now; ones left by an older ipferry kept their old mode.
    if (onDisk(path)) tightened.push(...tighten(SIDE_FILES.map((suffix) => `${path}${suffix}`)));
    if (tightened.length > 0) {
      warn(
        `the store's files were readable by others and are now ${FILE_MODE.toString(8).padStart(4, '0')}: ${tightened.join(', ')}`,
      );
    }
    return db;
  } catch (e) {
    db.close();
    throw e;
  }
}

// ---------------------------------------------------------------------------------------------
// Rows and statements

interface KvRow {
  key: string;
  value: string;
  create_rev: number;
  mod_rev: number;
  version: number;
  lease: string | null;
}

interface EventRow {
  revision: number;
  seq: number;
  type: 'put' | 'delete';
  key: string;
  value: string;
  create_rev: number;
  version: number;
  lease: string | null;
  prev_value: string | null;
  prev_create_rev: number | null;
  prev_mod_rev: number | null;
  prev_version: number | null;
  prev_lease: string | null;
}

interface MetaRow {
  revision: number;
  compacted: number;
}

interface LeaseRow {
  id: string;
  ttl_ms: number;
  expires_at: number;
}

/** A key range [from, to); `to` undefined means "to the end". */
interface KeyRange {
  readonly from: string;
  readonly to: string | undefined;
}

const KV_COLUMNS = 'key, value, create_rev, mod_rev, version, lease';

/** Every statement, prepared once per connection. */
function prepareStatements(db: Database.Database) {
  return {
    meta: db.prepare<[], MetaRow>('SELECT revision, compacted FROM meta WHERE id = 1'),
    setRevision: db.prepare<[number]>('UPDATE meta SET revision = ? WHERE id = 1'),
    setCompacted: db.prepare<[number]>('UPDATE meta SET compacted = ? WHERE id = 1'),

    getKv: db.prepare<[string], KvRow>(`SELECT ${KV_COLUMNS} FROM kv WHERE key = ?`),
    // Two range statements instead of "(? IS NULL OR key < ?)" so both use the primary key.
    kvRange: db.prepare<[string, string], KvRow>(
      `SELECT ${KV_COLUMNS} FROM kv WHERE key >= ? AND key < ? ORDER BY key`,
    ),
    kvFrom: db.prepare<[string], KvRow>(`SELECT ${KV_COLUMNS} FROM kv WHERE key >= ? ORDER BY key`),
    kvOfLease: db.prepare<[string], KvRow>(
      `SELECT ${KV_COLUMNS} FROM kv WHERE lease = ? ORDER BY key`,
    ),
    upsertKv: db.prepare<KvRow>(
      `INSERT INTO kv (${KV_COLUMNS}) VALUES (@key, @value, @create_rev, @mod_rev, @version, @lease)
       ON CONFLICT (key) DO UPDATE SET value = excluded.value, mod_rev = excluded.mod_rev,
         version = excluded.version, lease = excluded.lease`,
    ),
    deleteKv: db.prepare<[string]>('DELETE FROM kv WHERE key = ?'),

    insertEvent: db.prepare<EventRow>(
      `INSERT INTO events VALUES (@revision, @seq, @type, @key, @value, @create_rev, @version,
         @lease, @prev_value, @prev_create_rev, @prev_mod_rev, @prev_version, @prev_lease)`,
    ),
    eventsRange: db.prepare<[number, number, string, string], EventRow>(
      `SELECT * FROM events WHERE revision BETWEEN ? AND ? AND key >= ? AND key < ?
       ORDER BY revision, seq`,
    ),
    eventsFrom: db.prepare<[number, number, string], EventRow>(
      `SELECT * FROM events WHERE revision BETWEEN ? AND ? AND key >= ? ORDER BY revision, seq`,
    ),
    dropEvents: db.prepare<[number]>('DELETE FROM events WHERE revision <= ?'),

    getLease: db.prepare<[string], LeaseRow>(
      'SELECT id, ttl_ms, expires_at FROM leases WHERE id = ?',
    ),
    insertLease: db.prepare<[string, number, number]>(
      'INSERT OR IGNORE INTO leases (id, ttl_ms, expires_at) VALUES (?, ?, ?)',
    ),
    touchLease: db.prepare<[number, string]>(
      'UPDATE leases SET expires_at = ? + ttl_ms WHERE id = ?',
    ),
    deleteLease: db.prepare<[string]>('DELETE FROM leases WHERE id = ?'),
    dueLeases: db
      .prepare<[number, number], string>(
        'SELECT id FROM leases WHERE expires_at <= ? ORDER BY expires_at LIMIT ?',
      )
      .pluck(),
    // Like etcd's lessor on promotion: a restart gives every lease a full TTL again, so keys are
    // not dropped just because their owners could not reach a stopped agent.
    extendLeases: db.prepare<[number]>(
      'UPDATE leases SET expires_at = max(expires_at, ? + ttl_ms)',
    ),
  };
}

type Statements = ReturnType<typeof prepareStatements>;

// ---------------------------------------------------------------------------------------------
// Helpers

/** SQLite and other unexpected errors become IPF_E_STORE; our own errors pass through. */
function asStoreError(e: unknown): IpferryError {
  if (e instanceof IpferryError) return e;
  return storeError(`SQLite: ${e instanceof Error ? e.message : String(e)}`);
}

/**
 * The smallest string greater than every string starting with `prefix` (in code point order), so
 * a prefix is the range [prefix, end) — no LIKE, whose % and _ would be wildcards in keys.
 * Undefined when no such string exists (empty prefix, or only U+10FFFF): the range is open.
 */
export function prefixEnd(prefix: string): string | undefined {
  const points = Array.from(prefix);
  while (points.length > 0) {
    const last = (points.pop() ?? '').codePointAt(0) ?? 0x10ffff;
    if (last < 0x10ffff) {
      // Surrogate code points never occur in valid keys: skip over them.
      const next = last + 1 === 0xd800 ? 0xe000 : last + 1;
      return points.join('') + String.fromCodePoint(next);
    }
  }
  return undefined;
}

function keyRange(prefix: string): KeyRange {
  return { from: prefix, to: prefixEnd(prefix) };
}

function toKeyValue(
  key: string,
  value: string,
  createRevision: number,
  modRevision: number,
  version: number,
  lease: string | null,
): KeyValue {
  const kv = { key, value, createRevision, modRevision, version };
  return lease === null ? kv : { ...kv, lease };
}

function rowToKv(row: KvRow): KeyValue {
  return toKeyValue(row.key, row.value, row.create_rev, row.mod_rev, row.version, row.lease);
}

function rowToEvent(row: EventRow): WatchEvent {
  const kv = toKeyValue(row.key, row.value, row.create_rev, row.revision, row.version, row.lease);
  if (row.prev_mod_rev === null) return { type: row.type, kv };
  const prevKv = toKeyValue(
    row.key,
    row.prev_value ?? '',
    row.prev_create_rev ?? 0,
    row.prev_mod_rev,
    row.prev_version ?? 0,
    row.prev_lease,
  );
  return { type: row.type, kv, prevKv };
}

/** etcd semantics: a missing key has create = mod = version = 0 and no value at all. */
function holds(compare: Compare, row: KvRow | undefined): boolean {
  if (compare.target === 'value') {
    // As in etcd, a value compare on a missing key fails whatever the operator ('=' and '!='),
    // since a missing value is not the empty string.
    if (row === undefined) return false;
    return compare.op === '=' ? row.value === compare.value : row.value !== compare.value;
  }
  const actual =
    row === undefined
      ? 0
      : compare.target === 'create'
        ? row.create_rev
        : compare.target === 'mod'
          ? row.mod_rev
          : row.version;
  switch (compare.op) {
    case '=':
      return actual === compare.value;
    case '!=':
      return actual !== compare.value;
    case '<':
      return actual < compare.value;
    case '>':
      return actual > compare.value;
  }
}

function groupByRevision(events: readonly EventRow[]): Map<number, WatchEvent[]> {
  const groups = new Map<number, WatchEvent[]>();
  for (const row of events) {
    const group = groups.get(row.revision);
    if (group) group.push(rowToEvent(row));
    else groups.set(row.revision, [rowToEvent(row)]);
  }
  return groups;
}

// ---------------------------------------------------------------------------------------------
// Writing one revision

/**
 * Applies the changes of one write transaction. Every change gets the same revision and is
 * recorded in `events` for watches; the caller commits the revision only if something changed.
 */
class RevisionWriter {
  changes = 0;

  constructor(
    private readonly sql: Statements,
    readonly revision: number,
    private readonly now: number,
  ) {}

  apply(op: Op): void {
    switch (op.type) {
      case 'put':
        return this.put(op.key, op.value, op.lease);
      case 'delete':
        return this.delete(op.key);
      case 'deletePrefix':
        return this.deleteRange(keyRange(op.prefix));
    }
  }

  put(key: string, value: string, lease: string | undefined): void {
    // Throwing rolls the whole transaction back: nothing of the txn is written.
    if (lease !== undefined) this.requireLiveLease(lease);
    const prev = this.sql.getKv.get(key);
    const next: KvRow = {
      key,
      value,
      create_rev: prev ? prev.create_rev : this.revision,
      mod_rev: this.revision,
      version: prev ? prev.version + 1 : 1,
      // As in etcd, a put without a lease detaches the key from any lease it had.
      lease: lease ?? null,
    };
    this.sql.upsertKv.run(next);
    this.record('put', next, prev);
  }

  /** Deleting an absent key is not a change: no event, no new revision. */
  delete(key: string): void {
    const prev = this.sql.getKv.get(key);
    if (!prev) return;
    this.sql.deleteKv.run(key);
    // etcd's tombstone: empty value, zero create revision and version, the deleting revision.
    const tombstone: KvRow = {
      key,
      value: '',
      create_rev: 0,
      mod_rev: this.revision,
      version: 0,
      lease: null,
    };
    this.record('delete', tombstone, prev);
  }

  deleteRange(range: KeyRange): void {
    // .all() before deleting: better-sqlite3 cannot write while a statement is being iterated.
    const rows =
      range.to === undefined
        ? this.sql.kvFrom.all(range.from)
        : this.sql.kvRange.all(range.from, range.to);
    for (const row of rows) this.delete(row.key);
  }

  private requireLiveLease(lease: string): void {
    const row = this.sql.getLease.get(lease);
    if (!row || row.expires_at <= this.now) {
      throw new IpferryError('IPF_E_LEASE_NOT_FOUND', { lease });
    }
  }

  private record(type: 'put' | 'delete', kv: KvRow, prev: KvRow | undefined): void {
    this.sql.insertEvent.run({
      revision: this.revision,
      seq: this.changes++,
      type,
      key: kv.key,
      value: kv.value,
      create_rev: kv.create_rev,
      version: kv.version,
      lease: kv.lease,
      prev_value: prev?.value ?? null,
      prev_create_rev: prev?.create_rev ?? null,
      prev_mod_rev: prev?.mod_rev ?? null,
      prev_version: prev?.version ?? null,
      prev_lease: prev?.lease ?? null,
    });
  }
}

// ---------------------------------------------------------------------------------------------
// Watches

type HistoryPage =
  | { readonly kind: 'compacted'; readonly oldest: number }
  | {
      readonly kind: 'events';
      readonly events: readonly EventRow[];
      /** Last revision this page covers (events or not). */
      readonly through: number;
      readonly current: number;
    };

interface WatchSource {
  readHistory(range: KeyRange, from: number, maxRevisions: number): HistoryPage;
  detach(watch: SqliteWatch): void;
}

/**
 * One watch. It keeps only `next`, the first revision not yet delivered, and reads everything
 * from the `events` table: history replay and live delivery are the same code path, so events
 * can be neither duplicated nor skipped, whatever is written while a replay runs.
 */
class SqliteWatch implements Watch {
  private next: number;
  private scheduled = false;
  private stopped = false;

  constructor(
    private readonly source: WatchSource,
    private readonly range: KeyRange,
    fromRevision: number,
    private readonly options: WatchOptions,
  ) {
    this.next = fromRevision;
  }

  /**
   * Schedules delivery on a later turn of the event loop: listeners never run inside a writer's
   * call stack, so a slow or throwing listener cannot fail or delay a write.
   */
  wake(): void {
    if (this.stopped || this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      if (this.step()) this.wake();
    });
  }

  close(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.source.detach(this);
  }

  /** On store close: deliver what is already committed, then report the error. */
  shutdown(error: Error): void {
    while (this.step());
    this.fail(error, false);
  }

  /** Delivers up to REPLAY_WINDOW revisions; true when more are waiting. */
  private step(): boolean {
    if (this.stopped) return false;
    let page: HistoryPage;
    try {
      page = this.source.readHistory(this.range, this.next, REPLAY_WINDOW);
    } catch (e) {
      this.fail(asStoreError(e), false);
      return false;
    }
    if (page.kind === 'compacted') {
      this.fail(
        new IpferryError('IPF_E_STORE_COMPACTED', { revision: this.next, oldest: page.oldest }),
        false,
      );
      return false;
    }
    for (const [revision, events] of groupByRevision(page.events)) {
      if (this.stopped) return false;
      this.next = revision + 1;
      try {
        this.options.onEvents(events, revision);
      } catch (e) {
        this.fail(e instanceof Error ? e : new Error(String(e)), true);
        return false;
      }
    }
    this.next = Math.max(this.next, page.through + 1);
    return !this.stopped && page.through < page.current;
  }

  /**
   * Stops the watch and reports why. A listener's own exception with no onError to take it is
   * rethrown on a clean stack (like an 'error' event nobody listens to): a bug must not vanish.
   */
  private fail(error: Error, fromListener: boolean): void {
    if (this.stopped) return;
    this.close();
    const onError = this.options.onError;
    if (onError) onError(error);
    else if (fromListener) {
      setImmediate(() => {
        throw error;
      });
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The store

export class SqliteStore implements Store {
  readonly kind = 'sqlite';
  private readonly sql: Statements;
  private readonly historyLimit: number;
  private readonly now: () => number;
  private readonly watches = new Set<SqliteWatch>();
  private readonly leaseTimer: NodeJS.Timeout;
  private closed = false;
  /** What watches may call back into (kept off the public surface). */
  private readonly watchSource: WatchSource = {
    readHistory: (range, from, maxRevisions) => this.readHistory(range, from, maxRevisions),
    detach: (watch) => {
      this.watches.delete(watch);
    },
  };

  /** Use openSqliteStore. */
  constructor(
    private readonly db: Database.Database,
    options: SqliteStoreOptions = {},
  ) {
    this.historyLimit = positiveInteger(
      'historyLimit',
      options.historyLimit ?? DEFAULT_HISTORY_LIMIT,
    );
    const interval = positiveInteger(
      'leaseCheckIntervalMs',
      options.leaseCheckIntervalMs ?? DEFAULT_LEASE_CHECK_MS,
    );
    this.now = options.now ?? Date.now;
    this.sql = prepareStatements(db);
    this.sql.extendLeases.run(this.now());
    // unref: a pending lease check must not keep the process alive on its own.
    this.leaseTimer = setInterval(() => this.sweepLeases(), interval);
    this.leaseTimer.unref();
  }

  /** The file name, for logs. */
  get path(): string {
    return this.db.name;
  }

  get(key: string): Promise<KeyValue | undefined> {
    return this.run(() => {
      checkText('key', key, false);
      this.expireDueLeases();
      const row = this.sql.getKv.get(key);
      return row ? rowToKv(row) : undefined;
    });
  }

  list(prefix: string): Promise<ListResult> {
    return this.run(() => {
      checkText('prefix', prefix, true);
      this.expireDueLeases();
      const range = keyRange(prefix);
      // One read transaction: the keys and the revision come from the same snapshot.
      return this.db.transaction((): ListResult => {
        const rows =
          range.to === undefined
            ? this.sql.kvFrom.all(range.from)
            : this.sql.kvRange.all(range.from, range.to);
        return { kvs: rows.map(rowToKv), revision: this.readMeta().revision };
      })();
    });
  }

  txn(txn: Txn): Promise<TxnResult> {
    return this.run(() => {
      checkTxn(txn);
      this.expireDueLeases();
      const { result, revision } = this.write((writer) => {
        const succeeded = txn.compare.every((c) => holds(c, this.sql.getKv.get(c.key)));
        for (const op of succeeded ? txn.success : (txn.failure ?? [])) writer.apply(op);
        return succeeded;
      });
      return { succeeded: result, revision };
    });
  }

  watch(prefix: string, options: WatchOptions): Watch {
    this.ensureOpen();
    checkText('prefix', prefix, true);
    const from = options.fromRevision ?? this.readMeta().revision + 1;
    if (!Number.isSafeInteger(from))
      throw storeError(`fromRevision must be an integer, not ${from}`);
    // Revisions start at 1: anything lower means "from the oldest", which may be compacted.
    const watch = new SqliteWatch(this.watchSource, keyRange(prefix), Math.max(1, from), options);
    this.watches.add(watch);
    watch.wake();
    return watch;
  }

  grantLease(ttlSeconds: number): Promise<string> {
    return this.run(() => {
      const ttlMs = Math.ceil(ttlSeconds * 1000);
      if (!(ttlSeconds > 0) || !Number.isSafeInteger(ttlMs)) {
        throw storeError(`a lease TTL must be a positive number of seconds, not ${ttlSeconds}`);
      }
      // 64 random bits in hex, like etcd's lease ids; retry on the (improbable) collision.
      for (;;) {
        const id = randomBytes(8).toString('hex');
        if (this.sql.insertLease.run(id, ttlMs, this.now() + ttlMs).changes === 1) return id;
      }
    });
  }

  keepAlive(lease: string): Promise<void> {
    return this.run(() => {
      // Collect first: a lease past its expiry is gone even if the timer has not run yet.
      this.expireDueLeases();
      if (this.sql.touchLease.run(this.now(), lease).changes === 0) {
        throw new IpferryError('IPF_E_LEASE_NOT_FOUND', { lease });
      }
    });
  }

  revokeLease(lease: string): Promise<void> {
    return this.run(() => {
      this.revoke(lease);
    });
  }

  /**
   * Drops the history of every revision up to `revision` (like etcd's compaction): watches from
   * there fail with IPF_E_STORE_COMPACTED. History is also trimmed automatically to historyLimit.
   */
  compact(revision: number): Promise<void> {
    return this.run(() => {
      this.db
        .transaction(() => {
          const meta = this.readMeta();
          if (!Number.isSafeInteger(revision) || revision > meta.revision) {
            throw storeError(
              `cannot compact at revision ${revision}: the current revision is ${meta.revision}`,
            );
          }
          if (revision > meta.compacted) this.dropHistory(revision);
        })
        .immediate();
      // Lagging watches learn about it on their next step.
      for (const watch of this.watches) watch.wake();
    });
  }

  /** The current and the compacted revision (nothing at or below `compacted` can be watched). */
  revisions(): Promise<{ revision: number; compacted: number }> {
    return this.run(() => {
      const { revision, compacted } = this.readMeta();
      return { revision, compacted };
    });
  }

  /** Idempotent: closing a closed store does nothing. Open watches get onError(IPF_E_STORE). */
  close(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.closed = true;
    clearInterval(this.leaseTimer);
    const error = storeError('the store was closed');
    for (const watch of [...this.watches]) {
      try {
        watch.shutdown(error);
      } catch {
        // A listener throwing while we shut down must not keep the file open.
      }
    }
    try {
      this.db.close();
      return Promise.resolve();
    } catch (e) {
      return Promise.reject(asStoreError(e));
    }
  }

  // --- watch support -------------------------------------------------------------------------

  private readHistory(range: KeyRange, from: number, maxRevisions: number): HistoryPage {
    return this.db.transaction((): HistoryPage => {
      const meta = this.readMeta();
      if (from <= meta.compacted) return { kind: 'compacted', oldest: meta.compacted + 1 };
      const through = Math.min(meta.revision, from + maxRevisions - 1);
      if (through < from) return { kind: 'events', events: [], through, current: meta.revision };
      const events =
        range.to === undefined
          ? this.sql.eventsFrom.all(from, through, range.from)
          : this.sql.eventsRange.all(from, through, range.from, range.to);
      return { kind: 'events', events, through, current: meta.revision };
    })();
  }

  // --- internals -----------------------------------------------------------------------------

  /** Runs a synchronous operation as a promise, with store errors as IPF_E_STORE rejections. */
  private run<T>(operation: () => T): Promise<T> {
    try {
      this.ensureOpen();
      return Promise.resolve(operation());
    } catch (e) {
      return Promise.reject(asStoreError(e));
    }
  }

  private ensureOpen(): void {
    if (this.closed) throw storeError('the store is closed');
  }

  private readMeta(): MetaRow {
    const meta = this.sql.meta.get();
    if (!meta) throw storeError('the meta row is missing; the file is damaged');
    return meta;
  }

  /**
   * One write transaction = at most one revision. BEGIN IMMEDIATE takes the write lock up front
   * (no lock upgrade that could fail half-way); the revision is bumped only if `body` changed a
   * key, so failed compares and deletes of absent keys leave it alone.
   */
  private write<T>(body: (writer: RevisionWriter) => T): { result: T; revision: number } {
    type Outcome = { result: T; revision: number; changed: boolean };
    const outcome = this.db
      .transaction((): Outcome => {
        const meta = this.readMeta();
        const writer = new RevisionWriter(this.sql, meta.revision + 1, this.now());
        const result = body(writer);
        if (writer.changes === 0) return { result, revision: meta.revision, changed: false };
        this.sql.setRevision.run(writer.revision);
        const floor = writer.revision - this.historyLimit;
        if (floor > meta.compacted) this.dropHistory(floor);
        return { result, revision: writer.revision, changed: true };
      })
      .immediate();
    // Only after COMMIT: watches must never see a revision that could still roll back.
    if (outcome.changed) for (const watch of this.watches) watch.wake();
    return { result: outcome.result, revision: outcome.revision };
  }

  private dropHistory(through: number): void {
    this.sql.dropEvents.run(through);
    this.sql.setCompacted.run(through);
  }

  /** Deletes a lease and its keys in one revision (none if it had no keys). */
  private revoke(lease: string): void {
    this.write((writer) => {
      for (const row of this.sql.kvOfLease.all(lease)) writer.delete(row.key);
      this.sql.deleteLease.run(lease);
    });
  }

  /** Revokes every lease past its expiry, one revision each. */
  private expireDueLeases(): void {
    for (;;) {
      const due = this.sql.dueLeases.all(this.now(), EXPIRY_BATCH);
      if (due.length === 0) return;
      for (const lease of due) this.revoke(lease);
    }
  }

  private sweepLeases(): void {
    if (this.closed) return;
    try {
      this.expireDueLeases();
    } catch {
      // Nobody to tell from a timer; the next sweep retries, and every operation collects due
      // leases itself first, so callers see the error there.
    }
  }
}

function positiveInteger(name: string, value: number): number {
  if (!Number.isSafeInteger(value) || value < 1) {
    throw storeError(`${name} must be a positive integer, not ${value}`);
  }
  return value;
}

/**
 * Opens (creating if needed) the store file at `path`. The parent directory must exist
 * (openStore creates it). Only one process may have the file open for writing: see above.
 */
export function openSqliteStore(
  path: string,
  options: SqliteStoreOptions = {},
): Promise<SqliteStore> {
  let db: Database.Database | undefined;
  try {
    db = openDatabase(path, options.warn ?? defaultWarn);
    return Promise.resolve(new SqliteStore(db, options));
  } catch (e) {
    db?.close();
    const reason = e instanceof Error ? e.message : String(e);
    return Promise.reject(
      e instanceof IpferryError ? e : storeError(`cannot open ${path}: ${reason}`),
    );
  }
}

/**
 * Every key under `prefix` with the revision they are consistent with, read from the file
 * without writing to it: safe while an agent runs on the file (WAL lets a reader see one
 * committed snapshot while the agent writes). Opening the file as a store instead would renew
 * its leases and collect expired ones, writes the running agent's watches would never see.
 *
 * The file must exist and be of this ipferry's schema: an older one is migrated by the agent
 * that opens it (read-only, it cannot be here), a newer one is refused.
 */
export function readSqliteSnapshot(path: string, prefix: string): Promise<ListResult> {
  let db: Database.Database | undefined;
  try {
    checkText('prefix', prefix, true);
    db = new Database(path, { readonly: true, fileMustExist: true });
    db.pragma('busy_timeout = 5000');
    const version = readUserVersion(db);
    if (version !== SCHEMA_VERSION) {
      throw storeError(
        version > SCHEMA_VERSION
          ? `${path} has schema version ${version}, newer than this ipferry knows (${SCHEMA_VERSION}); upgrade ipferry`
          : `${path} has schema version ${version}, older than this ipferry's (${SCHEMA_VERSION}): start this version's agent on it once (it migrates the file), or export it with the ipferry that wrote it`,
      );
    }
    // Only the reads run: on this read-only connection a write would fail SQLITE_READONLY.
    const sql = prepareStatements(db);
    const range = keyRange(prefix);
    const snapshot = db.transaction((): ListResult => {
      const rows =
        range.to === undefined ? sql.kvFrom.all(range.from) : sql.kvRange.all(range.from, range.to);
      const meta = sql.meta.get();
      if (!meta) throw storeError('the meta row is missing; the file is damaged');
      return { kvs: rows.map(rowToKv), revision: meta.revision };
    })();
    return Promise.resolve(snapshot);
  } catch (e) {
    const reason = e instanceof Error ? e.message : String(e);
    return Promise.reject(
      e instanceof IpferryError ? e : storeError(`cannot read ${path}: ${reason}`),
    );
  } finally {
    db?.close();
  }
}
