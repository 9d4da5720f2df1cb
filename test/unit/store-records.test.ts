/**
 * Store records an agent cannot use are skipped with a reason, and never stop the rest from
 * converging (issue 12, finding 2; finding 3's records too). The decoders on their own, then an
 * agent (fake dataplane, SQLite store) given records through the store's own HTTP route with
 * its admin token, as anyone who can write to the store could: a node record with
 * `"addresses": 5, "reservedPorts": null`, and a FIP whose forward target would have closed the
 * nftables element list. The agent skips both, says why in its log, keeps answering /v1/plan,
 * and a FIP associated afterwards is ACTIVE within seconds.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { resolveConfig } from '../../src/agent/config.js';
import { DesiredState } from '../../src/agent/desired.js';
import { type RunningAgent, startAgent } from '../../src/agent/run.js';
import { IpferryError } from '../../src/core/errors.js';
import { clientTokenDigest, keys } from '../../src/core/keys.js';
import { MAX_POOL_ENTRIES } from '../../src/core/pool.js';
import type { PlanResponse, StatusResponse } from '../../src/api/contract.js';
import { printStatus } from '../../src/cli/status.js';
import { decodeFloatingIp, decodeNodeRecord, decodePool } from '../../src/core/records.js';
import { FakeDataplane } from '../../src/dataplane/fake.js';
import { openHttpStore } from '../../src/store/http.js';
import { tempDir, waitFor } from '../support/helpers.js';

const NODE = { name: 'zzz', addresses: ['192.0.2.7'], reservedPorts: [], registeredAt: '' };
const POOL = {
  name: 'edge',
  gateway: 'gw',
  delivery: 'routed',
  entries: [{ kind: 'cidr', cidr: '203.0.113.0/28' }],
  tags: [],
  createdAt: '',
};
const HOSTILE_FIP = {
  address: '203.0.113.5',
  family: 4,
  pool: 'edge',
  shared: false,
  tags: [],
  allocatedAt: '',
  association: { mode: 'ports', target: '10.0.0.6', associatedAt: '' },
  forwards: [
    {
      id: 'f1',
      protocol: 'tcp',
      port: 443,
      portEnd: 443,
      targetPort: 443,
      target: '10.0.0.6 }; delete table inet canary; add table inet pwned {',
    },
  ],
};

const problems = (decode: () => unknown): string[] => {
  try {
    decode();
    return [];
  } catch (e) {
    assert.ok(e instanceof IpferryError && e.code === 'IPF_E_VALIDATION', String(e));
    return e.problems.map((p) => p.path);
  }
};

describe('store records: decoded before compile sees them', () => {
  it('accepts what the API writes and names every field that is not', () => {
    assert.deepEqual(
      problems(() => decodeNodeRecord(NODE)),
      [],
    );
    assert.deepEqual(
      problems(() => decodePool(POOL)),
      [],
    );
    assert.deepEqual(
      problems(() => decodeNodeRecord({ ...NODE, addresses: 5, reservedPorts: null })),
      ['addresses'],
    );
    assert.deepEqual(
      problems(() => decodeFloatingIp(HOSTILE_FIP)),
      ['forwards[0].target'],
    );
    assert.deepEqual(
      problems(() => decodePool({ ...POOL, delivery: 'onlink', uplink: 'eth0\nlink set lo down' })),
      ['uplink'],
    );
    assert.deepEqual(
      problems(() => decodeNodeRecord('x')),
      ['', 'name', 'addresses'],
    );
  });

  it("holds a pool to the API's entry limit and a client token digest to its form", () => {
    const addresses = (n: number) =>
      Array.from({ length: n }, (_, i) => ({
        kind: 'address',
        address: `10.1.${i >> 8}.${i & 255}`,
      }));
    assert.deepEqual(
      problems(() => decodePool({ ...POOL, entries: addresses(MAX_POOL_ENTRIES) })),
      [],
    );
    assert.deepEqual(
      problems(() => decodePool({ ...POOL, entries: addresses(MAX_POOL_ENTRIES + 1) })),
      ['entries'],
    );
    const fip = { ...HOSTILE_FIP, forwards: [] };
    assert.deepEqual(
      problems(() => decodeFloatingIp({ ...fip, clientTokenSha256: clientTokenDigest('web-1') })),
      [],
    );
    for (const digest of [
      clientTokenDigest('web-1').toUpperCase(),
      clientTokenDigest('web-1').slice(1),
      `${clientTokenDigest('web-1')}0`,
      '../../node-credentials/hub',
      '',
      5,
      null,
    ]) {
      assert.deepEqual(
        problems(() => decodeFloatingIp({ ...fip, clientTokenSha256: digest })),
        ['clientTokenSha256'],
        String(digest),
      );
    }
  });

  it('skips a record that does not decode, with the reason, and keeps the others', () => {
    const kv = (key: string, value: unknown, modRevision = 1) => ({
      key,
      value: typeof value === 'string' ? value : JSON.stringify(value),
      modRevision,
      createRevision: 1,
      version: 1,
    });
    const snapshot = DesiredState.of(
      [
        kv(keys.node('good'), { ...NODE, name: 'good' }),
        kv(keys.node('zzz'), { ...NODE, addresses: 5, reservedPorts: null }),
        kv(keys.node('broken'), '{not json'),
        kv(keys.pool('edge'), POOL),
        kv(keys.fip('203.0.113.5'), HOSTILE_FIP),
      ],
      7,
    );
    assert.deepEqual(
      snapshot.nodes.map((n) => n.name),
      ['good'],
    );
    assert.equal(snapshot.pools.length, 1);
    assert.equal(snapshot.fips.length, 0);
    assert.deepEqual([...snapshot.rejected.keys()].sort(), [
      keys.fip('203.0.113.5'),
      keys.node('broken'),
      keys.node('zzz'),
    ]);
    assert.match(snapshot.rejected.get(keys.node('zzz')) ?? '', /^addresses must be a list/);
    assert.match(snapshot.rejected.get(keys.node('broken')) ?? '', /not valid JSON/);
  });

  it('skips a record whose key names another record than its content does', () => {
    const kv = (key: string, value: unknown) => ({
      key,
      value: JSON.stringify(value),
      modRevision: 3,
      createRevision: 1,
      version: 1,
    });
    const fip = { ...HOSTILE_FIP, forwards: [] };
    const status = { address: '203.0.113.5', state: 'ACTIVE', node: 'gw', revision: 3 };
    const snapshot = DesiredState.of(
      [
        kv(keys.node('good'), { ...NODE, name: 'good' }),
        kv(keys.node('zzz'), { ...NODE, name: 'hub' }),
        kv(keys.pool('edge'), POOL),
        kv(keys.pool('other'), POOL),
        kv(keys.fip('203.0.113.5'), fip),
        kv(keys.fip('203.0.113.6'), fip),
        kv(keys.status('203.0.113.5'), status),
        kv(keys.status('203.0.113.6'), status),
        kv(keys.status('203.0.113.7'), { ...status, address: '203.0.113.8' }),
      ],
      7,
    );
    assert.deepEqual(
      snapshot.nodes.map((n) => n.name),
      ['good'],
    );
    assert.deepEqual(
      snapshot.pools.map((p) => p.name),
      ['edge'],
    );
    assert.deepEqual(
      snapshot.fips.map((f) => f.fip.address),
      ['203.0.113.5'],
    );
    assert.deepEqual([...snapshot.statuses.keys()], ['203.0.113.5']);
    assert.deepEqual([...snapshot.rejected.keys()].sort(), [
      keys.fip('203.0.113.6'),
      keys.node('zzz'),
      keys.pool('other'),
      keys.status('203.0.113.6'),
      keys.status('203.0.113.7'),
    ]);
    assert.equal(
      snapshot.rejected.get(keys.node('zzz')),
      `name hub does not match the record's key ${keys.node('zzz')}`,
    );
    assert.equal(
      snapshot.rejected.get(keys.status('203.0.113.7')),
      `address 203.0.113.8 does not match the record's key ${keys.status('203.0.113.7')}`,
    );
    // The FIP under the other key is reported ERROR by its pool's gateway, as any unusable one.
    assert.deepEqual(
      snapshot.unusableFips.map((u) => [u.address, u.pool]),
      [['203.0.113.6', 'edge']],
    );
    // The key's own record comes back when it is rewritten right; a wrong one drops it again.
    const state = new DesiredState();
    state.reset([kv(keys.node('zzz'), { ...NODE, name: 'zzz' })]);
    state.apply([{ type: 'put', kv: kv(keys.node('zzz'), { ...NODE, name: 'hub' }) }]);
    assert.deepEqual(state.snapshot(8).nodes, []);
    state.apply([{ type: 'put', kv: kv(keys.node('zzz'), { ...NODE, name: 'zzz' }) }]);
    assert.deepEqual(
      state.snapshot(9).nodes.map((n) => n.name),
      ['zzz'],
    );
    assert.equal(state.snapshot(9).rejected.size, 0);
  });

  it('gives an overlay address to the node its lock names only (finding 1)', () => {
    const kv = (key: string, value: unknown) => ({
      key,
      value: JSON.stringify(value),
      modRevision: 1,
      createRevision: 1,
      version: 1,
    });
    const snapshot = DesiredState.of(
      [
        kv(keys.node('hub'), { ...NODE, name: 'hub', overlayIp: '10.99.0.1' }),
        // A liar claims the hub's address, and one more no lock names.
        kv(keys.node('zzz'), { ...NODE, name: 'zzz', overlayIp: '10.99.0.1' }),
        kv(keys.node('yyy'), { ...NODE, name: 'yyy', overlayIp: '10.99.0.3' }),
        kv(keys.node('old'), { ...NODE, name: 'old', overlayIp: '10.99.0.4' }),
        kv(keys.overlay('10.99.0.1'), { name: 'hub' }),
        kv(keys.overlay('10.99.0.3'), { name: 'someone-else' }),
        // A policy that does not decode is skipped like any record.
        kv(keys.meshPolicy, { policy: { overlay: 5 }, updatedAt: 'now' }),
      ],
      9,
    );
    const overlayOf = new Map(snapshot.nodes.map((n) => [n.name, n.overlayIp]));
    assert.equal(overlayOf.get('hub'), '10.99.0.1');
    assert.equal(overlayOf.get('zzz'), undefined);
    assert.equal(overlayOf.get('yyy'), undefined);
    // A single claim without a lock (written before locks existed) stands.
    assert.equal(overlayOf.get('old'), '10.99.0.4');
    assert.match(snapshot.rejected.get(keys.node('zzz')) ?? '', /locked by node hub/);
    assert.match(snapshot.rejected.get(keys.node('yyy')) ?? '', /locked by node someone-else/);
    assert.equal(snapshot.meshPolicy, undefined);
    assert.match(snapshot.rejected.get(keys.meshPolicy) ?? '', /overlay/);
  });
});

describe('an agent given records it cannot use (fake dataplane, SQLite)', () => {
  let tmp: { dir: string; remove: () => Promise<void> };
  let agent: RunningAgent | undefined;
  const dataplane = new FakeDataplane();

  before(async () => {
    tmp = await tempDir('store-records');
    const config = resolveConfig(
      {},
      {
        node: 'gw',
        store: `sqlite:${join(tmp.dir, 'state.db')}`,
        listen: '127.0.0.1:0',
        tokenFile: join(tmp.dir, 'token'),
        logLevel: 'silent',
      },
      'test',
    );
    agent = await startAgent(config, { dataplane });
    await agent.control.createPool({ name: 'edge', gateway: 'gw', entries: ['203.0.113.0/28'] });
  });

  after(async () => {
    await agent?.stop();
    await tmp?.remove();
  });

  it('skips them, answers its plan, and realises a FIP associated afterwards', async () => {
    const token = (await readFile(join(tmp.dir, 'token'), 'utf8')).trim().split('\n')[0]!;
    const store = await openHttpStore(agent!.url, { credential: token.split(/\s+/).pop()! });
    try {
      await store.txn({
        compare: [],
        success: [
          {
            type: 'put',
            key: keys.node('zzz'),
            value: JSON.stringify({ ...NODE, addresses: 5, reservedPorts: null }),
          },
          { type: 'put', key: keys.fip('203.0.113.5'), value: JSON.stringify(HOSTILE_FIP) },
        ],
      });
    } finally {
      await store.close();
    }
    const c = agent!.control;
    await c.allocate({ address: '203.0.113.10' });
    await c.associate('203.0.113.10', { target: '10.0.0.11', mode: 'nat' });
    await waitFor(
      '203.0.113.10 ACTIVE',
      async () => (await c.getFip('203.0.113.10')).status?.state === 'ACTIVE',
      10_000,
    );
    const plan = await agent!.app.inject({
      method: 'GET',
      url: '/v1/plan',
      headers: { authorization: `Bearer ${token.split(/\s+/).pop()!}` },
    });
    assert.equal(plan.statusCode, 200, plan.body);
    // Both are named where an operator looks: the plan, the status, and the FIP's own state.
    const skipped = plan.json<PlanResponse>().skipped.map((r) => r.key);
    assert.deepEqual(skipped, [keys.fip('203.0.113.5'), keys.node('zzz')]);
    const status = await agent!.app.inject({
      method: 'GET',
      url: '/v1/status',
      headers: { authorization: `Bearer ${token.split(/\s+/).pop()!}` },
    });
    const text = printStatus(status.json<StatusResponse>());
    assert.match(text, /skipped 2 store record\(s\) it cannot use:/);
    assert.match(text, /\/ipferry\/v1\/nodes\/zzz: addresses must be a list/);
    // The FIP's own status says why (its record cannot be shown: `fip show` answers
    // IPF_E_RECORD_UNUSABLE, and `fip list` leaves it out).
    const admin = await openHttpStore(agent!.url, { credential: token.split(/\s+/).pop()! });
    try {
      const statusOf = async () =>
        JSON.parse((await admin.get(keys.status('203.0.113.5')))?.value ?? '{}') as {
          state?: string;
          message?: string;
        };
      await waitFor('203.0.113.5 ERROR', async () => (await statusOf()).state === 'ERROR', 10_000);
      assert.match(
        (await statusOf()).message ?? '',
        /^the stored record cannot be used: forwards\[0\]\.target/,
      );
    } finally {
      await admin.close();
    }
    await assert.rejects(c.getFip('203.0.113.5'), (e) => {
      assert.equal((e as { code?: string }).code, 'IPF_E_RECORD_UNUSABLE');
      return true;
    });
    assert.ok(!(await c.listFips()).some((f) => f.address === '203.0.113.5'));
    assert.equal((await c.summary()).fips.ERROR, 1);
    // Nothing of the hostile forward reached the dataplane.
    assert.doesNotMatch(dataplane.dump(), /10\.0\.0\.6|pwned|canary/);
    assert.match(dataplane.dump(), /dnat 203\.0\.113\.10 -> 10\.0\.0\.11/);
  });
});
