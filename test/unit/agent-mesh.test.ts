/**
 * The fleet mesh through a real agent (SQLite store, the strict fake dataplane): overlay
 * addresses for every node, the maps and sets compile gives, reject_all per node, a trial that
 * rolls back by itself at its deadline, a mass departure held by maxChange until confirmed,
 * and many nodes registering at once. The same on a real kernel and etcd: test/mesh-lab.test.ts.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { resolveConfig } from '../../src/agent/config.js';
import { type RunningAgent, startAgent } from '../../src/agent/run.js';
import { keys } from '../../src/core/keys.js';
import { stringifyStored } from '../../src/core/json.js';
import type { NodeLiveness } from '../../src/core/model.js';
import { FakeDataplane } from '../../src/dataplane/fake.js';
import { tempDir, waitFor } from '../support/helpers.js';

let tmp: { dir: string; remove: () => Promise<void> };
let agent: RunningAgent;
const dataplane = new FakeDataplane();
const leases = new Map<string, string>();

const OTHERS = [
  { name: 'a2', site: 'a', addresses: ['10.1.0.12', '198.51.100.12'] },
  { name: 'b1', site: 'b', addresses: ['10.2.0.21', '203.0.113.21'] },
  { name: 'b2', site: 'b', addresses: ['10.2.0.22', '203.0.113.22'] },
  { name: 'b3', site: 'b', addresses: ['10.2.0.23', '203.0.113.23'] },
];

const POLICY = {
  overlay: '192.168.0.0/18',
  maxChange: 2,
  fleet: { openPorts: ['tcp/443'], sshAllow: ['192.0.2.0/24'] },
  sites: { a: { lans: ['10.1.0.0/24'] }, b: { lans: ['10.2.0.0/24'] } },
};

/** Another node's agent, as far as the store can tell: its record and a live lease. */
async function bringUp(name: string): Promise<void> {
  const node = OTHERS.find((n) => n.name === name)!;
  await agent.control.registerNode({ ...node, reservedPorts: [] });
  const lease = await agent.control.store.grantLease(60);
  leases.set(name, lease);
  const liveness: NodeLiveness = { name, since: new Date().toISOString() };
  await agent.control.store.txn({
    compare: [],
    success: [{ type: 'put', key: keys.nodeAlive(name), value: stringifyStored(liveness), lease }],
  });
}

async function bringDown(name: string): Promise<void> {
  await agent.control.store.revokeLease(leases.get(name)!);
}

const lines = (kind: string): string[] =>
  dataplane
    .dump()
    .split('\n')
    .filter((l) => l.startsWith(`${kind} `));

async function overlayOf(name: string): Promise<string> {
  return (await agent.control.getNode(name)).overlayIp ?? '';
}

before(async () => {
  tmp = await tempDir('agent-mesh');
  dataplane.hostFacts = { interfaces: ['eth0'], addresses: ['10.1.0.11', '198.51.100.11'] };
  agent = await startAgent(
    resolveConfig(
      {},
      {
        node: 'a1',
        site: 'a',
        store: `sqlite:${join(tmp.dir, 'state.db')}`,
        listen: '127.0.0.1:0',
        tokenFile: join(tmp.dir, 'token'),
        resyncSeconds: 1,
        logLevel: 'silent',
      },
      'test',
    ),
    { dataplane },
  );
  for (const n of OTHERS) await bringUp(n.name);
});

after(async () => {
  await agent.stop();
  await tmp.remove();
});

describe('the fleet mesh on an agent (fake dataplane)', () => {
  it('gives every node an overlay address once a policy is set, and maps them by site', async () => {
    assert.equal(await overlayOf('a1'), '', 'no policy, no overlay address');
    await agent.control.mesh.setPolicy(POLICY);
    const overlays = await Promise.all(['a1', ...OTHERS.map((n) => n.name)].map(overlayOf));
    assert.equal(new Set(overlays).size, 5);
    for (const o of overlays) assert.match(o, /^192\.168\.\d+\.\d+$/);
    await waitFor('five overlay mappings', async () =>
      Promise.resolve(lines('meshnat').length === 5),
    );
    const a2 = await overlayOf('a2');
    const b1 = await overlayOf('b1');
    // Same site: the private address; the other site: the public one.
    assert.ok(lines('meshnat').includes(`meshnat ${a2} -> 10.1.0.12`), lines('meshnat').join('\n'));
    assert.ok(lines('meshnat').includes(`meshnat ${b1} -> 203.0.113.21`));
    assert.equal(lines('meshmember').length, 8, 'both addresses of the four others');
    // The policy's open port, and the tunnel's port, which no policy closes.
    assert.deepEqual(lines('meshport'), ['meshport tcp . 443 -> ', 'meshport udp . 51820 -> ']);
    assert.deepEqual(lines('meshssh'), ['meshssh 192.0.2.0/24 -> ']);
    assert.deepEqual(lines('meshreject'), []);
  });

  it('keeps overlay addresses across re-registration', async () => {
    const before_ = await overlayOf('b2');
    await agent.control.registerNode({ ...OTHERS[2]!, reservedPorts: [] });
    assert.equal(await overlayOf('b2'), before_);
  });

  it('switches reject_all on this node only, and reports it', async () => {
    await agent.control.mesh.setPolicy({ ...POLICY, nodes: { a1: { rejectAll: true } } });
    const rejecting = (): boolean => lines('meshreject').includes('meshreject ipv4 -> ');
    await waitFor('reject_all on', async () => Promise.resolve(rejecting()));
    await waitFor('reported', async () => {
      return (await agent.control.getNode('a1')).mesh?.rejectAll === true;
    });
  });

  it('rolls an unconfirmed trial back by itself at its deadline', async () => {
    await agent.control.mesh.setPolicy(
      { ...POLICY, nodes: { a1: { rejectAll: false } } },
      { confirmWithinSeconds: 1 },
    );
    await waitFor('trial applied', async () => Promise.resolve(lines('meshreject').length === 0));
    // Nobody confirms: at the deadline the previous policy (reject_all on) is back.
    await waitFor(
      'rolled back',
      async () => Promise.resolve(lines('meshreject').includes('meshreject ipv4 -> ')),
      10_000,
    );
    await waitFor('the store says so too', async () => {
      const view = await agent.control.mesh.view();
      return view.record?.trial === undefined && view.record?.policy.nodes.a1?.rejectAll === true;
    });
    // Written down by the agent, the rollback is still what `mesh show` tells, and a late
    // confirmation is refused rather than taken for a confirmation of nothing.
    const view = await agent.control.mesh.view();
    assert.equal(view.rolledBack, true);
    assert.equal(view.rollback?.policy.nodes.a1?.rejectAll, false, 'the change that went back');
    await assert.rejects(agent.control.mesh.confirm(), { code: 'IPF_E_MESH_NO_TRIAL' });
  });

  it('a confirmed trial stays', async () => {
    await agent.control.mesh.setPolicy(
      { ...POLICY, nodes: { a1: { rejectAll: false } } },
      { confirmWithinSeconds: 2 },
    );
    assert.equal((await agent.control.mesh.confirm()).confirmedTrial, true);
    await new Promise((r) => setTimeout(r, 2500));
    assert.deepEqual(lines('meshreject'), []);
    assert.equal((await agent.control.mesh.view()).rolledBack, false);
  });

  it('holds a departure of more than maxChange members, and applies it when confirmed', async () => {
    await Promise.all(['a2', 'b1', 'b2'].map(bringDown));
    await waitFor('hold reported', async () => {
      return (await agent.control.getNode('a1')).mesh?.hold !== undefined;
    });
    assert.equal(lines('meshnat').length, 5, 'nobody dropped');
    const audit = await agent.control.mesh.audit();
    assert.deepEqual(
      audit.holds.map((h) => [h.node, h.hold.keeping.length]),
      [['a1', 3]],
    );
    const confirmed = await agent.control.mesh.confirm();
    assert.deepEqual(
      confirmed.released.map((r) => [r.node, r.hold.keeping.length]),
      [['a1', 3]],
      'the confirmation says which hold it released',
    );
    await waitFor('released', async () => Promise.resolve(lines('meshnat').length === 2));
    assert.equal(lines('meshmember').length, 2, 'b3 only');
  });

  it('lets up to maxChange members go without a hold, once the departure settled', async () => {
    await bringUp('a2');
    await waitFor('a2 back', async () => Promise.resolve(lines('meshnat').length === 3));
    await bringDown('a2');
    // A departure is applied once it has settled (MESH_SETTLE_MS).
    await waitFor('a2 gone', async () => Promise.resolve(lines('meshnat').length === 2), 15_000);
  });

  it('removes a node for good and frees its overlay address', async () => {
    const b3 = await overlayOf('b3');
    const removed = await agent.control.mesh.removeNode('b3');
    assert.equal(removed.overlayIp, b3);
    await waitFor('b3 dropped', async () => Promise.resolve(lines('meshnat').length === 1), 15_000);
    assert.equal((await agent.control.store.get(keys.overlay(b3)))?.value, undefined);
  });
});

describe('many nodes registering at once', () => {
  it('200 concurrent registrations get 200 distinct overlay addresses, none lost', async () => {
    const names = Array.from({ length: 200 }, (_, i) => `n${i}`);
    await Promise.all(
      names.map((name, i) =>
        agent.control.registerNode({
          name,
          site: 'b',
          addresses: [`10.2.${Math.floor(i / 200)}.${(i % 200) + 30}`],
          reservedPorts: [],
        }),
      ),
    );
    const nodes = await agent.control.listNodes();
    const overlays = nodes.filter((n) => names.includes(n.name)).map((n) => n.overlayIp);
    assert.equal(overlays.length, 200);
    assert.equal(overlays.filter((o) => o !== undefined).length, 200);
    assert.equal(new Set(overlays).size, 200);
    const locks = await agent.control.store.list(keys.overlays);
    const lockOf = new Map(
      locks.kvs.map((kv) => [kv.key, (JSON.parse(kv.value) as { name: string }).name]),
    );
    for (const n of nodes.filter((x) => names.includes(x.name)))
      assert.equal(lockOf.get(keys.overlay(n.overlayIp!)), n.name);
  });
});
