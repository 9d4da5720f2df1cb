import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { isIpferryError } from '../../src/core/errors.js';
import { ControlPlane } from '../../src/service/control.js';
import { openStore } from '../../src/store/open.js';
import { controlPlane, tempDir } from '../support/helpers.js';

async function allocateMany(
  control: ControlPlane,
  count: number,
  pool: string,
): Promise<{ addresses: string[]; exhausted: number; other: unknown[] }> {
  const results = await Promise.allSettled(
    Array.from({ length: count }, () => control.allocate({ pool })),
  );
  const addresses: string[] = [];
  let exhausted = 0;
  const other: unknown[] = [];
  for (const r of results) {
    if (r.status === 'fulfilled') addresses.push(r.value.address);
    else if (isIpferryError(r.reason) && r.reason.code === 'IPF_E_POOL_EXHAUSTED') exhausted++;
    else other.push(r.reason);
  }
  return { addresses, exhausted, other };
}

describe('race-free allocation', () => {
  it('gives 200 concurrent allocations 200 distinct addresses', async () => {
    const { control, close } = await controlPlane();
    try {
      await control.createPool({
        name: 'big',
        gateway: 'gw1',
        entries: ['203.0.113.0/24', '198.51.100.0/26'],
      });
      const { addresses, exhausted, other } = await allocateMany(control, 200, 'big');
      assert.deepEqual(other, []);
      assert.equal(exhausted, 0);
      assert.equal(addresses.length, 200);
      assert.equal(new Set(addresses).size, 200, 'no address may be handed out twice');
      assert.equal((await control.listFips()).length, 200);
    } finally {
      await close();
    }
  });

  it('gives exactly the free addresses and a clean "pool exhausted" to the rest', async () => {
    const { control, close } = await controlPlane();
    try {
      await control.createPool({
        name: 'small',
        gateway: 'gw1',
        entries: ['192.0.2.0/26', '192.0.2.64-192.0.2.99'],
      });
      const { addresses, exhausted, other } = await allocateMany(control, 200, 'small');
      assert.deepEqual(other, []);
      assert.equal(addresses.length, 100);
      assert.equal(new Set(addresses).size, 100);
      assert.equal(exhausted, 100);
    } finally {
      await close();
    }
  });

  it('lets only one of many concurrent requests for the same address win', async () => {
    const { control, close } = await controlPlane();
    try {
      await control.createPool({ name: 'p', gateway: 'gw1', entries: ['192.0.2.0/28'] });
      const results = await Promise.allSettled(
        Array.from({ length: 20 }, () => control.allocate({ address: '192.0.2.3' })),
      );
      assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1);
      const reasons = results.flatMap((r) =>
        r.status === 'rejected' ? [(r.reason as { code?: string }).code] : [],
      );
      assert.deepEqual([...new Set(reasons)], ['IPF_E_FIP_IN_USE']);
    } finally {
      await close();
    }
  });

  it('keeps every allocation across a close and reopen of the store file', async () => {
    const tmp = await tempDir('alloc');
    try {
      const spec = `sqlite:${join(tmp.dir, 'state.db')}`;
      let store = await openStore(spec);
      let control = new ControlPlane(store);
      await control.registerNode({ name: 'gw1', addresses: [], reservedPorts: [] });
      await control.createPool({ name: 'p', gateway: 'gw1', entries: ['2001:db8::/120'] });
      const { addresses } = await allocateMany(control, 50, 'p');
      await control.associate(addresses[0]!, { target: '2001:db8:1::5' });
      await store.close();
      store = await openStore(spec);
      control = new ControlPlane(store);
      const listed = (await control.listFips()).map((f) => f.address);
      assert.deepEqual(listed.slice().sort(), addresses.slice().sort());
      assert.equal((await control.getFip(addresses[0]!)).association?.target, '2001:db8:1::5');
      await store.close();
    } finally {
      await tmp.remove();
    }
  });
});
