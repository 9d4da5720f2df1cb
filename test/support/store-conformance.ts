/**
 * The behaviour every Store must have, written once and run against each implementation
 * (SQLite, the HTTP hub, etcd). Call storeConformance() from a *.test.ts file.
 *
 * `open` must return a store that nobody else writes to while a test runs (tests compare
 * revisions relative to the first one they see) and that starts empty under the keys used here
 * (c/…). Each test opens its own store and cleans it up.
 */
import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { IpferryError } from '../../src/core/errors.js';
import { type CacheSink, PrefixCache } from '../../src/store/cache.js';
import type {
  KeyValue,
  Op,
  Store,
  Watch,
  WatchEvent,
  WatchOptions,
} from '../../src/store/store.js';

export interface ConformanceOptions {
  /**
   * Drops history up to and including `revision`, if the store can be compacted on demand.
   * Afterwards a watch from any revision <= `revision` must fail with IPF_E_STORE_COMPACTED.
   * Tests needing it are skipped when absent.
   */
  readonly compact?: (store: Store, revision: number) => Promise<void>;
  /** How long a 1 s lease may take to be collected (default 3000 ms). */
  readonly leaseExpiryWaitMs?: number;
  /** Per-test timeout (default 20000 ms). */
  readonly testTimeoutMs?: number;
}

export interface OpenedStore {
  readonly store: Store;
  readonly cleanup: () => Promise<void>;
}

// --- helpers -----------------------------------------------------------------------------

const put = (key: string, value: string, lease?: string): Op =>
  lease === undefined ? { type: 'put', key, value } : { type: 'put', key, value, lease };
const del = (key: string): Op => ({ type: 'delete', key });
const delPrefix = (prefix: string): Op => ({ type: 'deletePrefix', prefix });

async function write(store: Store, ...ops: Op[]): Promise<number> {
  const result = await store.txn({ compare: [], success: ops });
  assert.equal(result.succeeded, true);
  return result.revision;
}

async function currentRevision(store: Store): Promise<number> {
  return (await store.list('c/no-such-prefix/')).revision;
}

/** The comparable part of a KeyValue (implementations may add or omit optional fields). */
function kvShape(kv: KeyValue | undefined): object | undefined {
  if (kv === undefined) return undefined;
  return {
    key: kv.key,
    value: kv.value,
    create: kv.createRevision,
    mod: kv.modRevision,
    version: kv.version,
  };
}

function eventShape(e: WatchEvent): object {
  return { type: e.type, kv: kvShape(e.kv), prev: kvShape(e.prevKv) };
}

interface Batch {
  readonly revision: number;
  readonly events: readonly WatchEvent[];
}

interface Recorder {
  readonly batches: Batch[];
  readonly errors: Error[];
  readonly watch: Watch;
  revisions(): number[];
  keys(): string[][];
}

function record(store: Store, prefix: string, fromRevision?: number): Recorder {
  const batches: Batch[] = [];
  const errors: Error[] = [];
  const watch = store.watch(prefix, {
    ...(fromRevision === undefined ? {} : { fromRevision }),
    onEvents: (events, revision) => batches.push({ revision, events }),
    onError: (error) => errors.push(error),
  });
  return {
    batches,
    errors,
    watch,
    revisions: () => batches.map((b) => b.revision),
    keys: () => batches.map((b) => b.events.map((e) => `${e.type}:${e.kv.key}`)),
  };
}

/** Polls until `condition` holds; fails after `ms` so a broken store cannot hang the suite. */
async function until(what: string, condition: () => boolean, ms = 3000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) assert.fail(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(10);
  }
}

function isStoreError(code: string): (e: unknown) => boolean {
  return (e) => {
    assert.ok(e instanceof IpferryError, `expected an IpferryError, got ${String(e)}`);
    assert.equal(e.code, code);
    return true;
  };
}

// --- the suite ---------------------------------------------------------------------------

export function storeConformance(
  name: string,
  open: () => Promise<OpenedStore>,
  opts: ConformanceOptions = {},
): void {
  const timeout = opts.testTimeoutMs ?? 20_000;
  const leaseWait = opts.leaseExpiryWaitMs ?? 3_000;

  void describe(`store conformance: ${name}`, () => {
    let opened: OpenedStore | undefined;
    let s: Store;

    beforeEach(async () => {
      opened = await open();
      s = opened.store;
    });
    afterEach(async () => {
      await opened?.cleanup();
      opened = undefined;
    });

    void describe('keys and revisions', () => {
      void it('get of a missing key is undefined', { timeout }, async () => {
        assert.equal(await s.get('c/missing'), undefined);
      });

      void it(
        'put sets create = mod = revision, version 1; updates bump mod and version',
        { timeout },
        async () => {
          const r1 = await write(s, put('c/k', 'one'));
          assert.deepEqual(kvShape(await s.get('c/k')), {
            key: 'c/k',
            value: 'one',
            create: r1,
            mod: r1,
            version: 1,
          });
          const r2 = await write(s, put('c/k', 'two'));
          assert.equal(r2, r1 + 1);
          assert.deepEqual(kvShape(await s.get('c/k')), {
            key: 'c/k',
            value: 'two',
            create: r1,
            mod: r2,
            version: 2,
          });
          // Rewriting the same value is still a write.
          const r3 = await write(s, put('c/k', 'two'));
          assert.equal(r3, r2 + 1);
          assert.equal((await s.get('c/k'))?.version, 3);
          // After a delete the key starts over.
          const r4 = await write(s, del('c/k'));
          assert.equal(await s.get('c/k'), undefined);
          const r5 = await write(s, put('c/k', 'again'));
          assert.equal(r5, r4 + 1);
          assert.deepEqual(kvShape(await s.get('c/k')), {
            key: 'c/k',
            value: 'again',
            create: r5,
            mod: r5,
            version: 1,
          });
        },
      );

      void it('a multi-op txn takes exactly one revision', { timeout }, async () => {
        const before = await currentRevision(s);
        await write(s, put('c/x', '1'));
        const r = await write(s, put('c/a', '1'), put('c/b', '2'), del('c/x'), put('c/c', '3'));
        assert.equal(r, before + 2);
        for (const key of ['c/a', 'c/b', 'c/c']) {
          const kv = await s.get(key);
          assert.equal(kv?.modRevision, r, key);
          assert.equal(kv?.createRevision, r, key);
        }
        assert.equal(await currentRevision(s), r);
      });

      void it(
        'reads, failed compares and no-op writes do not take a revision',
        { timeout },
        async () => {
          const r = await write(s, put('c/a', '1'));
          await s.get('c/a');
          await s.list('c/');
          assert.deepEqual(await s.txn({ compare: [], success: [] }), {
            succeeded: true,
            revision: r,
          });
          // Deleting absent keys changes nothing.
          assert.deepEqual(
            await s.txn({ compare: [], success: [del('c/nope'), delPrefix('c/none/')] }),
            {
              succeeded: true,
              revision: r,
            },
          );
          // A failed compare without a failure branch writes nothing.
          const failed = await s.txn({
            compare: [{ key: 'c/a', target: 'value', op: '=', value: 'other' }],
            success: [put('c/a', '2')],
          });
          assert.deepEqual(failed, { succeeded: false, revision: r });
          assert.equal((await s.get('c/a'))?.value, '1');
          assert.equal(await currentRevision(s), r);
        },
      );

      void it(
        'list is sorted by key, bounded by the prefix, and consistent with its revision',
        { timeout },
        async () => {
          const keys = ['c/a0', 'c/a/bc', 'c/a/b/c', 'c/a', 'c/a/', 'c/a/b', 'c/b', 'c/a/b/'];
          const r = await write(s, ...keys.map((k) => put(k, k)));
          const listed = async (prefix: string): Promise<string[]> => {
            const result = await s.list(prefix);
            assert.equal(result.revision, r);
            for (const kv of result.kvs) assert.equal(kv.value, kv.key);
            return result.kvs.map((kv) => kv.key);
          };
          assert.deepEqual(await listed('c/a/b'), ['c/a/b', 'c/a/b/', 'c/a/b/c', 'c/a/bc']);
          assert.deepEqual(await listed('c/a/b/'), ['c/a/b/', 'c/a/b/c']);
          assert.deepEqual(await listed('c/a/'), ['c/a/', 'c/a/b', 'c/a/b/', 'c/a/b/c', 'c/a/bc']);
          assert.deepEqual(await listed('c/a'), [
            'c/a',
            'c/a/',
            'c/a/b',
            'c/a/b/',
            'c/a/b/c',
            'c/a/bc',
            'c/a0',
          ]);
          assert.deepEqual(await listed('c/'), [
            'c/a',
            'c/a/',
            'c/a/b',
            'c/a/b/',
            'c/a/b/c',
            'c/a/bc',
            'c/a0',
            'c/b',
          ]);
          assert.deepEqual(await listed('c/a/b/c/'), []);
          assert.deepEqual(await listed('c/zzz'), []);
        },
      );

      void it('prefixes are literal: % and _ are not wildcards', { timeout }, async () => {
        await write(s, put('c/p%x', '1'), put('c/p_x', '2'), put('c/pax', '3'), put('c/p\\x', '4'));
        assert.deepEqual(
          (await s.list('c/p%')).kvs.map((kv) => kv.key),
          ['c/p%x'],
        );
        assert.deepEqual(
          (await s.list('c/p_')).kvs.map((kv) => kv.key),
          ['c/p_x'],
        );
        await write(s, delPrefix('c/p_'));
        assert.deepEqual(
          (await s.list('c/p')).kvs.map((kv) => kv.key),
          ['c/p%x', 'c/p\\x', 'c/pax'],
        );
      });

      void it(
        'deletePrefix deletes exactly the keys starting with the prefix, in one revision',
        { timeout },
        async () => {
          await write(
            s,
            put('c/a', '0'),
            put('c/a/1', '1'),
            put('c/a/2', '2'),
            put('c/a/2/x', '3'),
            put('c/ab', '4'),
          );
          const r = await write(s, delPrefix('c/a/'));
          assert.deepEqual(
            (await s.list('c/')).kvs.map((kv) => kv.key),
            ['c/a', 'c/ab'],
          );
          assert.equal(await currentRevision(s), r);
        },
      );
    });

    void describe('transactions', () => {
      void it(
        'a missing key compares as create = mod = version = 0; value compares on it fail',
        { timeout },
        async () => {
          const check = async (
            compare: Parameters<Store['txn']>[0]['compare'][number],
          ): Promise<boolean> => (await s.txn({ compare: [compare], success: [] })).succeeded;
          for (const target of ['create', 'mod', 'version'] as const) {
            assert.equal(await check({ key: 'c/none', target, op: '=', value: 0 }), true, target);
            assert.equal(await check({ key: 'c/none', target, op: '<', value: 1 }), true, target);
            assert.equal(await check({ key: 'c/none', target, op: '>', value: 0 }), false, target);
            assert.equal(await check({ key: 'c/none', target, op: '!=', value: 0 }), false, target);
          }
          // etcd: a value compare on a missing key is false for '=' and for '!=' alike.
          assert.equal(await check({ key: 'c/none', target: 'value', op: '=', value: '' }), false);
          assert.equal(await check({ key: 'c/none', target: 'value', op: '!=', value: '' }), false);
          assert.equal(
            await check({ key: 'c/none', target: 'value', op: '!=', value: 'x' }),
            false,
          );
        },
      );

      void it(
        'compares on value, mod, create and version with every operator',
        { timeout },
        async () => {
          const rc = await write(s, put('c/k', 'v1'));
          const rm = await write(s, put('c/other', 'x'), put('c/k', 'v2'));
          // c/k: create rc, mod rm, version 2, value v2
          const cases: [Parameters<Store['txn']>[0]['compare'][number], boolean][] = [
            [{ key: 'c/k', target: 'value', op: '=', value: 'v2' }, true],
            [{ key: 'c/k', target: 'value', op: '=', value: 'v1' }, false],
            [{ key: 'c/k', target: 'value', op: '!=', value: 'v1' }, true],
            [{ key: 'c/k', target: 'value', op: '!=', value: 'v2' }, false],
            [{ key: 'c/k', target: 'value', op: '=', value: '' }, false],
          ];
          const numeric = { create: rc, mod: rm, version: 2 } as const;
          for (const [target, n] of Object.entries(numeric) as [
            'create' | 'mod' | 'version',
            number,
          ][]) {
            cases.push(
              [{ key: 'c/k', target, op: '=', value: n }, true],
              [{ key: 'c/k', target, op: '=', value: n + 1 }, false],
              [{ key: 'c/k', target, op: '!=', value: n }, false],
              [{ key: 'c/k', target, op: '!=', value: n - 1 }, true],
              [{ key: 'c/k', target, op: '<', value: n + 1 }, true],
              [{ key: 'c/k', target, op: '<', value: n }, false],
              [{ key: 'c/k', target, op: '>', value: n - 1 }, true],
              [{ key: 'c/k', target, op: '>', value: n }, false],
            );
          }
          for (const [compare, expected] of cases) {
            const before = await currentRevision(s);
            const result = await s.txn({
              compare: [compare],
              success: [put('c/ok', JSON.stringify(compare))],
              failure: [put('c/failed', JSON.stringify(compare))],
            });
            assert.equal(result.succeeded, expected, JSON.stringify(compare));
            assert.equal(result.revision, before + 1);
            assert.equal(
              (await s.get(expected ? 'c/ok' : 'c/failed'))?.value,
              JSON.stringify(compare),
            );
            assert.equal((await s.get('c/k'))?.value, 'v2');
          }
        },
      );

      void it(
        'every compare must hold; otherwise only the failure branch runs',
        { timeout },
        async () => {
          const r = await write(s, put('c/a', '1'), put('c/b', '2'));
          const result = await s.txn({
            compare: [
              { key: 'c/a', target: 'value', op: '=', value: '1' },
              { key: 'c/b', target: 'mod', op: '=', value: r - 1 },
            ],
            success: [put('c/a', 'success'), del('c/b')],
            failure: [put('c/a', 'failure'), put('c/f', 'f')],
          });
          assert.deepEqual(result, { succeeded: false, revision: r + 1 });
          assert.equal((await s.get('c/a'))?.value, 'failure');
          assert.equal((await s.get('c/b'))?.value, '2');
          assert.equal((await s.get('c/f'))?.value, 'f');

          const ok = await s.txn({
            compare: [
              { key: 'c/a', target: 'value', op: '=', value: 'failure' },
              { key: 'c/b', target: 'mod', op: '=', value: r },
              { key: 'c/none', target: 'create', op: '=', value: 0 },
            ],
            success: [put('c/a', 'success'), del('c/b')],
            failure: [put('c/a', 'failure2')],
          });
          assert.deepEqual(ok, { succeeded: true, revision: r + 2 });
          assert.equal((await s.get('c/a'))?.value, 'success');
          assert.equal(await s.get('c/b'), undefined);
        },
      );

      void it(
        'a txn putting one key twice, or putting a key it deletes, is rejected',
        { timeout },
        async () => {
          const r = await write(s, put('c/a', '0'));
          for (const success of [
            [put('c/a', '1'), put('c/a', '2')],
            [put('c/a', '1'), del('c/a')],
            [delPrefix('c/'), put('c/a', '1')],
          ]) {
            await assert.rejects(s.txn({ compare: [], success }), isStoreError('IPF_E_STORE'));
          }
          assert.equal((await s.get('c/a'))?.value, '0');
          assert.equal(await currentRevision(s), r);
        },
      );
    });

    void describe('watch', () => {
      void it(
        'from the next revision: live events grouped per revision, in op order, with prevKv',
        { timeout },
        async () => {
          const r0 = await write(s, put('c/w/a', 'old'), put('c/out', 'x'));
          const rec = record(s, 'c/w/');
          const r1 = await write(s, put('c/w/a', 'new'), put('c/out', 'y'), put('c/w/b', 'b1'));
          await write(s, put('c/out', 'z')); // outside the prefix: no batch
          const r3 = await write(s, put('c/w/b', 'b2'));
          await until('two batches', () => rec.batches.length >= 2);
          await sleep(50);
          assert.deepEqual(rec.revisions(), [r1, r3]);
          assert.deepEqual(rec.batches[0]!.events.map(eventShape), [
            {
              type: 'put',
              kv: { key: 'c/w/a', value: 'new', create: r0, mod: r1, version: 2 },
              prev: { key: 'c/w/a', value: 'old', create: r0, mod: r0, version: 1 },
            },
            {
              type: 'put',
              kv: { key: 'c/w/b', value: 'b1', create: r1, mod: r1, version: 1 },
              prev: undefined,
            },
          ]);
          assert.deepEqual(rec.errors, []);
          rec.watch.close();
        },
      );

      void it('delivers deletes with the deleting revision and prevKv', { timeout }, async () => {
        const r0 = await write(s, put('c/w/a', 'a'), put('c/w/b', 'b'), put('c/w/b/c', 'c'));
        const rec = record(s, 'c/w/');
        const r1 = await write(s, del('c/w/a'), del('c/w/absent'));
        const r2 = await write(s, delPrefix('c/w/b'));
        await until('two batches', () => rec.batches.length >= 2);
        assert.deepEqual(rec.revisions(), [r1, r2]);
        assert.deepEqual(rec.batches[0]!.events.map(eventShape), [
          {
            type: 'delete',
            kv: { key: 'c/w/a', value: '', create: 0, mod: r1, version: 0 },
            prev: { key: 'c/w/a', value: 'a', create: r0, mod: r0, version: 1 },
          },
        ]);
        assert.deepEqual(rec.keys()[1], ['delete:c/w/b', 'delete:c/w/b/c']);
        assert.equal(rec.batches[1]!.events[1]!.prevKv?.value, 'c');
        rec.watch.close();
      });

      void it(
        'from an old revision: replays history, then goes on live, without gaps or duplicates',
        { timeout },
        async () => {
          const r1 = await write(s, put('c/w/1', 'a'));
          const r2 = await write(s, put('c/x', 'outside'));
          const r3 = await write(s, put('c/w/2', 'b'), put('c/w/1', 'a2'));
          const r4 = await write(s, del('c/w/1'));
          const rec = record(s, 'c/w/', r1);
          // Written before the replay can have run: must come after it, once.
          const r5 = await write(s, put('c/w/3', 'c'));
          await until('replay and first live batch', () => rec.batches.length >= 4);
          const r6 = await write(s, put('c/w/3', 'c2'));
          await until('second live batch', () => rec.batches.length >= 5);
          await sleep(50);
          assert.equal(r2, r1 + 1);
          assert.deepEqual(rec.revisions(), [r1, r3, r4, r5, r6]);
          assert.deepEqual(rec.keys(), [
            ['put:c/w/1'],
            ['put:c/w/2', 'put:c/w/1'],
            ['delete:c/w/1'],
            ['put:c/w/3'],
            ['put:c/w/3'],
          ]);
          assert.equal(rec.batches[1]!.events[1]!.prevKv?.value, 'a');
          assert.equal(rec.batches[2]!.events[0]!.prevKv?.value, 'a2');
          assert.deepEqual(rec.errors, []);

          // A second watch from the middle sees the same tail.
          const mid = record(s, 'c/w/', r4);
          await until('mid replay', () => mid.batches.length >= 3);
          assert.deepEqual(mid.revisions(), [r4, r5, r6]);
          rec.watch.close();
          mid.watch.close();
        },
      );

      void it('many writes while watching arrive complete and in order', { timeout }, async () => {
        const rec = record(s, 'c/w/');
        const revisions: number[] = [];
        for (let i = 0; i < 100; i++)
          revisions.push(await write(s, put(`c/w/${i % 7}`, String(i))));
        await until('100 batches', () => rec.batches.length >= 100);
        await sleep(50);
        assert.deepEqual(rec.revisions(), revisions);
        assert.deepEqual(
          rec.batches.map((b) => b.events[0]!.kv.value),
          revisions.map((_, i) => String(i)),
        );
      });

      void it(
        'close stops delivery, also when called from inside onEvents',
        { timeout },
        async () => {
          const rec = record(s, 'c/w/');
          const r1 = await write(s, put('c/w/a', '1'));
          await until('first batch', () => rec.batches.length === 1);
          rec.watch.close();
          rec.watch.close(); // idempotent
          await write(s, put('c/w/a', '2'));

          const seen: number[] = [];
          const self: { watch?: Watch } = {};
          self.watch = s.watch('c/w/', {
            fromRevision: r1,
            onEvents: (_events, revision) => {
              seen.push(revision);
              self.watch?.close();
            },
          });
          await write(s, put('c/w/a', '3'));
          await sleep(200);
          assert.deepEqual(rec.revisions(), [r1]);
          assert.deepEqual(seen, [r1]);
        },
      );

      void it(
        'a watch from a compacted revision fails with IPF_E_STORE_COMPACTED',
        { timeout, skip: opts.compact ? false : 'store cannot compact on demand' },
        async () => {
          const compact = opts.compact!;
          const r1 = await write(s, put('c/w/a', '1'));
          const r2 = await write(s, put('c/w/a', '2'));
          const r3 = await write(s, put('c/w/a', '3'));
          await compact(s, r2);
          for (const from of [r1, r2]) {
            const rec = record(s, 'c/w/', from);
            await until(`error for revision ${from}`, () => rec.errors.length === 1);
            assert.ok(rec.errors[0] instanceof IpferryError);
            assert.equal(rec.errors[0].code, 'IPF_E_STORE_COMPACTED');
            assert.deepEqual(rec.batches, []);
            rec.watch.close();
          }
          const ok = record(s, 'c/w/', r3);
          await until('replay of the kept revision', () => ok.batches.length === 1);
          assert.deepEqual(ok.revisions(), [r3]);
          assert.deepEqual(ok.errors, []);
          ok.watch.close();
        },
      );
    });

    void describe('prefix cache (src/store/cache.ts)', () => {
      /** A sink that keeps the copy as a map of key → value and mod revision. */
      function mirror() {
        const copy = new Map<string, string>();
        const resets: number[] = [];
        const sink: CacheSink = {
          reset: (kvs, revision) => {
            resets.push(revision);
            copy.clear();
            for (const kv of kvs) copy.set(kv.key, `${kv.value}@${kv.modRevision}`);
          },
          apply: (events) => {
            for (const e of events) {
              if (e.type === 'put') copy.set(e.kv.key, `${e.kv.value}@${e.kv.modRevision}`);
              else copy.delete(e.kv.key);
            }
          },
        };
        return { copy, resets, sink };
      }
      async function listed(store: Store, prefix: string): Promise<Map<string, string>> {
        const { kvs } = await store.list(prefix);
        return new Map(kvs.map((kv) => [kv.key, `${kv.value}@${kv.modRevision}`]));
      }

      void it(
        'lists once, then follows puts, deletes, prefix deletes and revoked leases',
        { timeout },
        async () => {
          await write(s, put('c/p/a', '1'), put('c/p/b', '1'), put('c/q/x', 'outside'));
          const m = mirror();
          const seen: number[] = [];
          const cache = new PrefixCache(s, 'c/p/', m.sink, { onEvents: (_, r) => seen.push(r) });
          await cache.sync();
          assert.deepEqual(m.copy, await listed(s, 'c/p/'));
          assert.equal(cache.revision, await currentRevision(s));
          const lease = await s.grantLease(30);
          await write(s, put('c/p/c', '1'), put('c/p/l', 'leased', lease));
          await write(s, del('c/p/a'), put('c/p/b', '2'));
          await write(s, put('c/q/y', 'outside'));
          await write(s, put('c/p/d/1', '1'), put('c/p/d/2', '1'));
          await write(s, delPrefix('c/p/d/'));
          await s.revokeLease(lease);
          const last = await write(s, put('c/p/e', '1'));
          await until('the cache at the last write', () => cache.revision >= last);
          assert.deepEqual(m.copy, await listed(s, 'c/p/'));
          assert.deepEqual([...m.copy.keys()].sort(), ['c/p/b', 'c/p/c', 'c/p/e']);
          assert.equal(cache.revision, last);
          assert.equal(cache.synced, true);
          assert.equal(m.resets.length, 1, 'listed once');
          // One call per revision under the prefix, none for the write outside it.
          assert.equal(seen.length, 6);
          await cache.sync(); // already following: no second list
          assert.equal(m.resets.length, 1);
          cache.close();
        },
      );

      void it(
        'lists again when its watch revision was compacted, and follows on from there',
        { timeout, skip: opts.compact ? false : 'store cannot compact on demand' },
        async () => {
          const compact = opts.compact!;
          await write(s, put('c/p/a', '1'), put('c/p/b', '1'));
          // The cache's watch starts only when released: meanwhile its revision is compacted.
          let release: () => void = () => undefined;
          const released = new Promise<void>((resolve) => (release = resolve));
          const held: Store = Object.assign(Object.create(s) as Store, {
            watch: (prefix: string, options: WatchOptions): Watch => {
              let watch: Watch | undefined;
              let closed = false;
              void released.then(() => {
                if (!closed) watch = s.watch(prefix, options);
              });
              return {
                close: () => {
                  closed = true;
                  watch?.close();
                },
              };
            },
          });
          const m = mirror();
          const lost: Error[] = [];
          const cache = new PrefixCache(held, 'c/p/', m.sink, { onLost: (e) => lost.push(e) });
          await cache.sync();
          await write(s, del('c/p/a'));
          const r = await write(s, put('c/p/b', '2'), put('c/p/c', '1'));
          await compact(s, r);
          release();
          await until('the watch lost', () => lost.length === 1);
          assert.ok(lost[0] instanceof IpferryError);
          assert.equal(lost[0].code, 'IPF_E_STORE_COMPACTED');
          assert.equal(cache.synced, false);
          await cache.sync();
          assert.equal(m.resets.length, 2, 'listed again');
          assert.deepEqual(m.copy, await listed(s, 'c/p/'));
          const last = await write(s, put('c/p/d', '1'));
          await until('following again', () => cache.revision >= last);
          assert.deepEqual(m.copy, await listed(s, 'c/p/'));
          cache.close();
        },
      );
    });

    void describe('leases', () => {
      void it(
        'revoke deletes the attached keys in one revision, with delete events',
        { timeout },
        async () => {
          const lease = await s.grantLease(60);
          const other = await s.grantLease(60);
          await write(
            s,
            put('c/l/a', 'a', lease),
            put('c/l/b', 'b', lease),
            put('c/l/c', 'c', other),
            put('c/l/d', 'd'),
          );
          assert.equal((await s.get('c/l/a'))?.lease, lease);
          const rec = record(s, 'c/l/');
          const before = await currentRevision(s);
          await s.revokeLease(lease);
          assert.equal(await currentRevision(s), before + 1);
          assert.deepEqual(
            (await s.list('c/l/')).kvs.map((kv) => kv.key),
            ['c/l/c', 'c/l/d'],
          );
          await until('delete events', () => rec.batches.length === 1);
          assert.deepEqual(rec.revisions(), [before + 1]);
          assert.deepEqual(rec.keys(), [['delete:c/l/a', 'delete:c/l/b']]);
          rec.watch.close();
          await assert.rejects(s.keepAlive(lease), isStoreError('IPF_E_LEASE_NOT_FOUND'));
          await s.revokeLease(other);
        },
      );

      void it('revoking an unknown or already revoked lease is fine', { timeout }, async () => {
        const lease = await s.grantLease(60);
        await s.revokeLease(lease);
        await s.revokeLease(lease);
      });

      void it(
        'an expired lease deletes its keys; keepAlive of it then fails',
        { timeout },
        async () => {
          const lease = await s.grantLease(1);
          await write(s, put('c/l/a', 'a', lease), put('c/l/keep', 'k'));
          const rec = record(s, 'c/l/');
          const started = Date.now();
          await until('lease expiry', () => rec.batches.length === 1, leaseWait);
          assert.ok(Date.now() - started >= 500, 'expired too early');
          assert.deepEqual(rec.keys(), [['delete:c/l/a']]);
          assert.equal(await s.get('c/l/a'), undefined);
          assert.equal((await s.get('c/l/keep'))?.value, 'k');
          await assert.rejects(s.keepAlive(lease), isStoreError('IPF_E_LEASE_NOT_FOUND'));
          rec.watch.close();
        },
      );

      void it('keepAlive keeps a lease alive past its TTL', { timeout }, async () => {
        const lease = await s.grantLease(1);
        await write(s, put('c/l/a', 'a', lease));
        for (let i = 0; i < 6; i++) {
          await sleep(300);
          await s.keepAlive(lease);
        }
        assert.equal((await s.get('c/l/a'))?.value, 'a');
        await s.revokeLease(lease);
        assert.equal(await s.get('c/l/a'), undefined);
      });

      void it('put with an unknown lease fails and writes nothing', { timeout }, async () => {
        const gone = await s.grantLease(60);
        await s.revokeLease(gone);
        const r = await write(s, put('c/l/x', 'x'));
        await assert.rejects(
          s.txn({
            compare: [],
            success: [put('c/l/a', 'a'), put('c/l/b', 'b', gone), del('c/l/x')],
          }),
          isStoreError('IPF_E_LEASE_NOT_FOUND'),
        );
        assert.equal(await s.get('c/l/a'), undefined);
        assert.equal(await s.get('c/l/b'), undefined);
        assert.equal((await s.get('c/l/x'))?.value, 'x');
        assert.equal(await currentRevision(s), r);
      });

      void it('a put without a lease detaches the key from its lease', { timeout }, async () => {
        const lease = await s.grantLease(60);
        await write(s, put('c/l/a', 'a', lease));
        await write(s, put('c/l/a', 'b'));
        assert.equal((await s.get('c/l/a'))?.lease, undefined);
        await s.revokeLease(lease);
        assert.equal((await s.get('c/l/a'))?.value, 'b');
      });
    });

    void describe('concurrency', () => {
      void it(
        '200 concurrent create-if-absent txns on 50 keys: exactly 50 succeed',
        { timeout },
        async () => {
          const results = await Promise.all(
            Array.from({ length: 200 }, (_, i) =>
              s.txn({
                compare: [{ key: `c/once/${i % 50}`, target: 'create', op: '=', value: 0 }],
                success: [put(`c/once/${i % 50}`, `writer-${i}`)],
              }),
            ),
          );
          const winners = results.flatMap((r, i) => (r.succeeded ? [i] : []));
          assert.equal(winners.length, 50);
          assert.deepEqual(new Set(winners.map((i) => i % 50)).size, 50);
          const { kvs } = await s.list('c/once/');
          assert.equal(kvs.length, 50);
          for (const kv of kvs) {
            assert.equal(kv.version, 1);
            assert.ok(winners.includes(Number(kv.value.slice('writer-'.length))));
          }
        },
      );

      void it(
        '200 concurrent allocators using a mod-revision compare get 200 distinct slots',
        { timeout },
        async () => {
          const allocate = async (id: string): Promise<number> => {
            for (let attempt = 0; attempt < 5_000; attempt++) {
              const counter = await s.get('c/alloc/next');
              const slot = counter ? Number(counter.value) : 0;
              const result = await s.txn({
                compare: [
                  { key: 'c/alloc/next', target: 'mod', op: '=', value: counter?.modRevision ?? 0 },
                ],
                success: [
                  put('c/alloc/next', String(slot + 1)),
                  put(`c/alloc/slot/${String(slot).padStart(3, '0')}`, id),
                ],
              });
              if (result.succeeded) return slot;
              await sleep(Math.random() * 5); // back off so contenders spread out
            }
            throw new Error(`${id} gave up`);
          };
          const slots = await Promise.all(
            Array.from({ length: 200 }, (_, i) => allocate(`allocator-${i}`)),
          );
          assert.deepEqual(
            [...slots].sort((a, b) => a - b),
            Array.from({ length: 200 }, (_, i) => i),
          );
          assert.equal((await s.get('c/alloc/next'))?.value, '200');
          const { kvs } = await s.list('c/alloc/slot/');
          assert.equal(kvs.length, 200);
          assert.equal(new Set(kvs.map((kv) => kv.value)).size, 200);
          for (const kv of kvs) assert.equal(kv.version, 1, `${kv.key} was claimed twice`);
        },
      );
    });
  });
}
