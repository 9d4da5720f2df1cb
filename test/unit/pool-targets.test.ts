/**
 * A pool's target ranges (IP Floater's PRIVATE_IP_RANGES): their validation, the API's refusals
 * of targets outside them (with the store unchanged), a change of them refused while a FIP goes
 * outside, a stored FIP outside them refused by the gateway's compile, and the CLI's flags.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { compile } from '../../src/core/compile/index.js';
import type { FloatingIp, Pool } from '../../src/core/model.js';
import { decodePool } from '../../src/core/records.js';
import { validatePool, validatePoolUpdate, withinTargetRanges } from '../../src/core/validate.js';
import type { Store } from '../../src/store/store.js';
import { controlPlane, dumpStore, TOKEN_RW, testApi } from '../support/helpers.js';
import { fake, only, poolView, run, useFakeAgent } from '../support/cli-harness.js';

const T0 = '2024-01-01T00:00:00.000Z';

describe('target ranges: validation', () => {
  const base = { name: 'p', gateway: 'gw1', entries: ['203.0.113.0/28'] };

  it('takes canonical CIDRs of both families, drops repeats, keeps the order', () => {
    const pool = validatePool({
      ...base,
      targetRanges: ['192.168.1.0/24', '2001:db8:1::/48', '10.0.0.0/8', '192.168.1.0/24'],
    });
    assert.deepEqual(pool.targetRanges, ['192.168.1.0/24', '2001:db8:1::/48', '10.0.0.0/8']);
  });

  it('leaves them out when none are given, or an empty list', () => {
    assert.equal('targetRanges' in validatePool(base), false);
    assert.equal('targetRanges' in validatePool({ ...base, targetRanges: [] }), false);
  });

  it('refuses host bits (naming the network), non-prefixes and non-lists, all at once', () => {
    assert.throws(
      () => validatePool({ ...base, targetRanges: ['192.168.1.1/24', 'lan', 7] }),
      (e: any) => {
        assert.equal(e.code, 'IPF_E_VALIDATION');
        assert.deepEqual(
          e.problems.map((p: { path: string }) => p.path),
          ['targetRanges[2]', 'targetRanges[0]', 'targetRanges[1]'],
        );
        assert.match(e.problems[1].message, /host bits set: write the network, 192\.168\.1\.0\/24/);
        return true;
      },
    );
    assert.throws(() => validatePool({ ...base, targetRanges: '10.0.0.0/8' }), /targetRanges/);
  });

  it('an update may replace them or clear them, and that alone is a change', () => {
    assert.deepEqual(validatePoolUpdate({ targetRanges: ['10.0.0.0/8'] }).targetRanges, [
      '10.0.0.0/8',
    ]);
    assert.deepEqual(validatePoolUpdate({ targetRanges: [] }).targetRanges, []);
  });

  it('an address is within when every given list holds it; no list or an empty one holds all', () => {
    assert.equal(withinTargetRanges('192.168.1.9', ['192.168.1.0/24']), true);
    assert.equal(withinTargetRanges('192.168.2.9', ['192.168.1.0/24']), false);
    assert.equal(withinTargetRanges('2001:db8::1', ['192.168.1.0/24']), false);
    assert.equal(withinTargetRanges('2001:db8::1', undefined, []), true);
    assert.equal(withinTargetRanges('10.1.1.1', ['10.0.0.0/8'], ['10.1.0.0/16']), true);
    assert.equal(withinTargetRanges('10.2.1.1', ['10.0.0.0/8'], ['10.1.0.0/16']), false);
  });

  it('a stored pool decodes with them, without them, and not with them malformed', () => {
    const stored = {
      name: 'p',
      gateway: 'gw1',
      delivery: 'routed',
      entries: [{ kind: 'cidr', cidr: '203.0.113.0/28' }],
      tags: [],
      createdAt: T0,
    };
    assert.equal(decodePool(stored).targetRanges, undefined);
    assert.deepEqual(decodePool({ ...stored, targetRanges: ['10.0.0.0/8'] }).targetRanges, [
      '10.0.0.0/8',
    ]);
    for (const bad of [['10.0.0.1/8'], ['10.0.0.0/8', '10.0.0.0/8'], 'x', [5]])
      assert.throws(
        () => decodePool({ ...stored, targetRanges: bad }),
        (e: { problems: { path: string }[] }) =>
          e.problems.every((p) => p.path.startsWith('targetRanges')),
      );
  });
});

describe('target ranges: the gateway refuses a stored FIP outside them', () => {
  const pool: Pool = {
    name: 'p',
    gateway: 'gw1',
    delivery: 'routed',
    entries: [{ kind: 'cidr', cidr: '203.0.113.0/28' }],
    targetRanges: ['192.168.1.0/24'],
    tags: [],
    createdAt: T0,
  };
  const fip = (target: string): FloatingIp => ({
    address: '203.0.113.1',
    family: 4,
    pool: 'p',
    shared: false,
    tags: [],
    association: { mode: 'nat', target, associatedAt: T0 },
    forwards: [],
    allocatedAt: T0,
  });

  it('realises one within and refuses one outside with the reason', () => {
    const inside = compile(
      { pools: [pool], fips: [{ fip: fip('192.168.1.5'), revision: 1 }] },
      'gw1',
    );
    assert.deepEqual(inside.refused, []);
    const outside = compile(
      { pools: [pool], fips: [{ fip: fip('10.9.9.9'), revision: 1 }] },
      'gw1',
    );
    assert.equal(outside.refused.length, 1);
    assert.match(outside.refused[0]!.reason, /10\.9\.9\.9, outside the target ranges of pool p/);
    assert.ok(!outside.elements.some((e) => e.owner === '203.0.113.1'));
  });
});

describe('target ranges: the API', () => {
  let app: FastifyInstance;
  let store: Store;
  let close: () => Promise<void>;

  async function call(
    method: string,
    url: string,
    payload?: object,
  ): Promise<{ status: number; body: any }> {
    const res = await app.inject({
      method: method as 'GET',
      url,
      ...(payload ? { payload } : {}),
      headers: { authorization: `Bearer ${TOKEN_RW}` },
    });
    return { status: res.statusCode, body: JSON.parse(res.body) };
  }
  async function ok(method: string, url: string, payload?: object): Promise<any> {
    const r = await call(method, url, payload);
    assert.ok(r.status < 300, JSON.stringify(r.body));
    return r.body;
  }
  async function refused(method: string, url: string, payload: object, pattern: RegExp) {
    const before = await dumpStore(store);
    const r = await call(method, url, payload);
    assert.equal(r.status, 400, JSON.stringify(r.body));
    assert.equal(r.body.error.code, 'IPF_E_VALIDATION');
    assert.match(JSON.stringify(r.body.error.problems), pattern);
    assert.equal(await dumpStore(store), before, 'a refused request must not change the store');
  }

  before(async () => {
    let control;
    ({ control, store, close } = await controlPlane(['gw1']));
    app = await testApi(control);
    const created = await ok('POST', '/v1/pools', {
      name: 'lan',
      gateway: 'gw1',
      entries: ['203.0.113.0/28'],
      targetRanges: ['192.168.1.0/24', '2001:db8:1::/48'],
    });
    assert.deepEqual(created.targetRanges, ['192.168.1.0/24', '2001:db8:1::/48']);
    await ok('POST', '/v1/fips', { pool: 'lan', address: '203.0.113.1' });
    await ok('POST', '/v1/fips', { pool: 'lan', address: '203.0.113.2' });
    await ok('POST', '/v1/fips', { pool: 'lan', address: '203.0.113.3' });
  });
  after(async () => {
    await app.close();
    await close();
  });

  it('shows them on the pool', async () => {
    const pool = await ok('GET', '/v1/pools/lan');
    assert.deepEqual(pool.targetRanges, ['192.168.1.0/24', '2001:db8:1::/48']);
  });

  it('refuses a create with a bad range', async () => {
    await refused(
      'POST',
      '/v1/pools',
      { name: 'x', gateway: 'gw1', entries: ['198.51.100.0/28'], targetRanges: ['10.0.0.1/8'] },
      /host bits set/,
    );
  });

  it('refuses an associate, a forward and a move outside them, and takes those within', async () => {
    await refused(
      'POST',
      '/v1/fips/203.0.113.1/associate',
      { target: '10.0.0.5' },
      /10\.0\.0\.5 is outside the target ranges of pool lan \(192\.168\.1\.0\/24, 2001:db8:1::\/48\)/,
    );
    await refused(
      'POST',
      '/v1/fips/203.0.113.2/forwards',
      { protocol: 'tcp', port: 80, target: '172.16.0.1' },
      /172\.16\.0\.1 is outside/,
    );
    await ok('POST', '/v1/fips/203.0.113.1/associate', { target: '192.168.1.10' });
    await refused('POST', '/v1/fips/203.0.113.1/move', { target: '192.168.2.10' }, /outside/);
    await ok('POST', '/v1/fips/203.0.113.1/move', { target: '192.168.1.11' });
    await ok('POST', '/v1/fips/203.0.113.2/forwards', {
      protocol: 'tcp',
      port: 80,
      target: '192.168.1.20',
    });
    await refused(
      'POST',
      '/v1/fips/203.0.113.2/forwards',
      { protocol: 'tcp', port: 81, target: '192.168.9.20' },
      /192\.168\.9\.20 is outside/,
    );
  });

  it('refuses ranges that leave an association outside, naming the FIP; takes ranges that keep them', async () => {
    await refused(
      'PATCH',
      '/v1/pools/lan',
      { targetRanges: ['192.168.1.0/28'], description: 'narrower' },
      /floating IP 203\.0\.113\.2 goes to 192\.168\.1\.20, outside 192\.168\.1\.0\/28/,
    );
    const wider = await ok('PATCH', '/v1/pools/lan', {
      targetRanges: ['192.168.0.0/16'],
      description: 'wider',
    });
    assert.deepEqual(wider.targetRanges, ['192.168.0.0/16']);
    assert.equal(wider.description, 'wider');
    assert.equal('pendingTargetRanges' in wider, false);
    // The same ranges again: nothing to check, the rest of the update still lands.
    const same = await ok('PATCH', '/v1/pools/lan', {
      targetRanges: ['192.168.0.0/16'],
      description: 'same',
    });
    assert.equal(same.description, 'same');
    const cleared = await ok('PATCH', '/v1/pools/lan', { targetRanges: [] });
    assert.equal('targetRanges' in cleared, false);
    await ok('POST', '/v1/fips/203.0.113.3/associate', { target: '10.0.0.5' });
    await refused('PATCH', '/v1/pools/lan', { targetRanges: ['192.168.0.0/16'] }, /203\.0\.113\.3/);
  });

  it('a change of ranges and associations at once never leaves a target outside', async () => {
    await ok('POST', '/v1/fips/203.0.113.3/disassociate', {});
    await ok('PATCH', '/v1/pools/lan', { targetRanges: ['192.168.0.0/16', '10.0.0.0/8'] });
    for (let round = 0; round < 10; round++) {
      const target = `10.0.${round}.5`;
      await Promise.all([
        call('PATCH', '/v1/pools/lan', { targetRanges: ['192.168.0.0/16'] }),
        call('POST', '/v1/fips/203.0.113.3/associate', { target, allowReassociation: true }),
      ]);
      const pool = await ok('GET', '/v1/pools/lan');
      const fip = await ok('GET', '/v1/fips/203.0.113.3');
      const ranges: string[] = pool.targetRanges ?? [];
      if (fip.association)
        assert.ok(
          withinTargetRanges(fip.association.target, ranges),
          `${fip.association.target} outside ${ranges.join(',')}`,
        );
      await ok('POST', '/v1/fips/203.0.113.3/disassociate', {});
      await ok('PATCH', '/v1/pools/lan', { targetRanges: ['192.168.0.0/16', '10.0.0.0/8'] });
    }
  });
});

describe('target ranges: the CLI', () => {
  useFakeAgent();

  it('pool create --targets sends them as one list', async () => {
    fake.reply('POST /v1/pools', 201, poolView({ targetRanges: ['192.168.1.0/24', '10.0.0.0/8'] }));
    const r = await run([
      'pool',
      'create',
      'lan',
      '--gateway',
      'gw1',
      '--cidr',
      '203.0.113.0/28',
      '--targets',
      '192.168.1.0/24, 10.0.0.0/8',
    ]);
    assert.equal(r.code, 0, r.err);
    assert.deepEqual(only().body, {
      name: 'lan',
      gateway: 'gw1',
      entries: ['203.0.113.0/28'],
      targetRanges: ['192.168.1.0/24', '10.0.0.0/8'],
    });
    assert.match(r.out, /^targets: +192\.168\.1\.0\/24\n +10\.0\.0\.0\/8$/m);
  });

  it('pool update --targets replaces them, --clear-targets removes them, both at once is a usage error', async () => {
    fake.reply('PATCH /v1/pools/lan', 200, poolView());
    const set = await run([
      'pool',
      'update',
      'lan',
      '--targets',
      '10.0.0.0/8',
      '--targets',
      'fd00::/8',
    ]);
    assert.equal(set.code, 0, set.err);
    assert.deepEqual(only().body, { targetRanges: ['10.0.0.0/8', 'fd00::/8'] });
    assert.match(set.out, /^targets: +any$/m);
    fake.reset();
    fake.reply('PATCH /v1/pools/lan', 200, poolView());
    const clear = await run(['pool', 'update', 'lan', '--clear-targets']);
    assert.equal(clear.code, 0, clear.err);
    assert.deepEqual(only().body, { targetRanges: [] });
    fake.reset();
    const both = await run(['pool', 'update', 'lan', '--targets', '10.0.0.0/8', '--clear-targets']);
    assert.equal(both.code, 2);
    assert.equal(fake.requests.length, 0);
  });
});
