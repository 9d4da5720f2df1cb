/**
 * The audit trail's ring on real etcd (Debian's etcd-server): writers racing for the next
 * sequence number each get their own, the ring keeps its bound in the transaction that writes,
 * and a long poll is answered by etcd's watch when the next event is recorded.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { keys } from '../../src/core/keys.js';
import { startEtcd, type EtcdCluster } from '../../src/lab/etcd.js';
import { listEvents, recordEvent, waitEvents } from '../../src/service/events.js';
import { openStore } from '../../src/store/open.js';
import type { Store } from '../../src/store/store.js';

let etcd: EtcdCluster;
let store: Store;

const event = (path: string) => ({
  at: new Date().toISOString(),
  who: 'alice',
  method: 'POST',
  path,
  status: 200,
});

before(async () => {
  etcd = await startEtcd();
  store = await openStore(etcd.storeSpec);
});

after(async () => {
  await store?.close();
  await etcd?.stop();
});

describe('the audit trail on etcd', () => {
  it('gives racing writers distinct sequence numbers and keeps the ring bounded', async () => {
    const recorded = await Promise.all(
      Array.from({ length: 12 }, (_, i) => recordEvent(store, event(`/v1/x/${i}`), 5)),
    );
    assert.deepEqual(
      recorded.map((e) => e.seq).sort((a, b) => a - b),
      Array.from({ length: 12 }, (_, i) => i + 1),
    );
    const kept = await listEvents(store);
    assert.deepEqual(
      kept.map((e) => e.seq),
      [8, 9, 10, 11, 12],
    );
    assert.equal((await store.list(keys.events)).kvs.length, 5);
  });

  it('answers a long poll with the next event, from the watch', async () => {
    const next = waitEvents(store, { after: 12 }, 10_000);
    await recordEvent(store, event('/v1/next'), 5);
    const got = await next;
    assert.deepEqual(
      got.map((e) => [e.seq, e.path]),
      [[13, '/v1/next']],
    );
  });
});
