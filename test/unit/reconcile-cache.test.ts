/**
 * The reconcile loop reads its desired state from memory: one list of the root, then the
 * watch's events (src/store/cache.ts, src/agent/desired.ts); a list again only when the watch
 * cannot go on. And liveness beats and health reports do not wake it.
 */
import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Reconciler } from '../../src/agent/reconcile.js';
import type { HostFacts } from '../../src/intent/facts.js';
import { stringifyStored } from '../../src/core/json.js';
import { keys, ROOT } from '../../src/core/keys.js';
import { FakeDataplane } from '../../src/dataplane/fake.js';
import { ControlPlane } from '../../src/service/control.js';
import { openSqliteStore, type SqliteStore } from '../../src/store/sqlite.js';
import type { Store } from '../../src/store/store.js';
import { waitFor } from '../support/helpers.js';

/** A fake dataplane that counts the reconcile passes (each reads the host's facts once). */
class CountingDataplane extends FakeDataplane {
  passes = 0;
  override async facts(): Promise<HostFacts> {
    this.passes++;
    return super.facts();
  }
}

const silent = { info: () => undefined, warn: () => undefined, error: () => undefined };

let store: SqliteStore;
let control: ControlPlane;
let dataplane: CountingDataplane;
let reconciler: Reconciler;
/** Lists of the root the reconciler made. */
let lists: number;

beforeEach(async () => {
  store = await openSqliteStore(':memory:');
  control = new ControlPlane(store);
  dataplane = new CountingDataplane();
  lists = 0;
  const counted: Store = Object.assign(Object.create(store) as Store, {
    list: (prefix: string) => {
      if (prefix === ROOT) lists++;
      return store.list(prefix);
    },
  });
  await control.registerNode({ name: 'gw1', addresses: [], reservedPorts: [] });
  await control.createPool({ name: 'public', gateway: 'gw1', entries: ['203.0.113.0/28'] });
  reconciler = new Reconciler({
    node: 'gw1',
    store: counted,
    control,
    dataplane,
    resyncMs: 3_600_000,
    log: silent,
  });
  await reconciler.start();
});

afterEach(async () => {
  await reconciler.stop();
  await store.close();
});

const holds = (line: string): boolean => dataplane.dump().split('\n').includes(line);

describe('reconcile loop: desired state in memory', () => {
  it('lists the root once, then follows puts and deletes from its watch', async () => {
    await control.allocate({ address: '203.0.113.5' });
    await control.associate('203.0.113.5', { target: '10.0.0.5' });
    await waitFor('dnat', () => Promise.resolve(holds('dnat 203.0.113.5 -> 10.0.0.5')));
    await control.move('203.0.113.5', { target: '10.0.0.6' });
    await waitFor('moved', () => Promise.resolve(holds('dnat 203.0.113.5 -> 10.0.0.6')));
    // Its status report is fenced on the FIP revision its copy holds: it lands, and is current.
    await waitFor('ACTIVE at the move', async () => {
      const view = await control.getFip('203.0.113.5');
      return view.status.state === 'ACTIVE' && view.status.stale === undefined;
    });
    await control.disassociate('203.0.113.5');
    await control.release('203.0.113.5', false);
    await waitFor('gone', () => Promise.resolve(!dataplane.dump().includes('203.0.113.5 ->')));
    await reconciler.settled();
    assert.equal(lists, 1);
    assert.equal(reconciler.lastError, undefined);
  });

  it('lists again when its watch revision was compacted, and misses nothing', async () => {
    await control.allocate({ address: '203.0.113.6' });
    await control.allocate({ address: '203.0.113.7' });
    await reconciler.settled();
    assert.equal(lists, 1);
    // Two writes and a compaction in one turn of the event loop: SQLite's watches deliver on a
    // later turn, so the reconciler's watch finds its next revision compacted.
    const { revision } = await store.revisions();
    const fip6 = stringifyStored({
      ...(await control.getFip('203.0.113.6')),
      association: { mode: 'nat', target: '10.0.0.7', masquerade: false },
    });
    void store.txn({
      compare: [],
      success: [{ type: 'put', key: keys.fip('203.0.113.6'), value: fip6 }],
    });
    void store.txn({ compare: [], success: [{ type: 'delete', key: keys.fip('203.0.113.7') }] });
    await store.compact(revision + 2);
    await waitFor('listed again', () => Promise.resolve(lists === 2), 5000);
    await waitFor('the write the lost watch never delivered', () =>
      Promise.resolve(holds('dnat 203.0.113.6 -> 10.0.0.7')),
    );
    // And it follows on from the new list.
    await control.move('203.0.113.6', { target: '10.0.0.8' });
    await waitFor('followed', () => Promise.resolve(holds('dnat 203.0.113.6 -> 10.0.0.8')));
    assert.equal(lists, 2);
  });

  it('is not woken by liveness beats or health reports, only by membership', async () => {
    const lease = await store.grantLease(60);
    const alive = stringifyStored({ name: 'b1', since: 'now' });
    await store.txn({
      compare: [],
      success: [
        {
          type: 'put',
          key: keys.node('b1'),
          value: stringifyStored({
            name: 'b1',
            addresses: [],
            reservedPorts: [],
            registeredAt: 'now',
          }),
        },
      ],
    });
    await store.txn({
      compare: [],
      success: [{ type: 'put', key: keys.nodeAlive('b1'), value: alive, lease }],
    });
    await reconciler.settled();
    await sleep(100);
    const before = dataplane.passes;
    const revisionBefore = reconciler.realisedRevision;
    for (let i = 0; i < 20; i++) {
      await store.keepAlive(lease);
      const health = { name: 'b1', mesh: { appliedRevision: i }, updatedAt: `${i}` };
      await store.txn({
        compare: [],
        success: [
          { type: 'put', key: keys.nodeHealth('b1'), value: stringifyStored(health), lease },
        ],
      });
    }
    // An agent of an older version rewrites its membership record on every beat.
    await store.txn({
      compare: [],
      success: [{ type: 'put', key: keys.nodeAlive('b1'), value: alive, lease }],
    });
    await sleep(300);
    await reconciler.settled();
    assert.equal(dataplane.passes, before, 'no pass for beats and health reports');
    assert.equal(reconciler.realisedRevision, revisionBefore);
    // The lease running out (here: revoked) is a membership change: it wakes the loop.
    await store.revokeLease(lease);
    await waitFor('a pass', () => Promise.resolve(dataplane.passes > before));
  });
});
