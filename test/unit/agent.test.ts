import assert from 'node:assert/strict';
import { chmodSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { resolveConfig } from '../../src/agent/config.js';
import { type RunningAgent, startAgent } from '../../src/agent/run.js';
import { keys, ROOT } from '../../src/core/keys.js';
import type { NodeHealth } from '../../src/core/model.js';
import { FakeDataplane } from '../../src/dataplane/fake.js';
import { openStore } from '../../src/store/open.js';
import { printPlan } from '../../src/cli/plan.js';
import { selfSignedCertificate } from '../../src/lab/certs.js';
import { tempDir, waitFor } from '../support/helpers.js';

let tmp: { dir: string; remove: () => Promise<void> };
let agent: RunningAgent | undefined;
const dataplane = new FakeDataplane();

function config() {
  return resolveConfig(
    {},
    {
      node: 'gw1',
      store: `sqlite:${join(tmp.dir, 'state.db')}`,
      listen: '127.0.0.1:0',
      tokenFile: join(tmp.dir, 'token'),
      resyncSeconds: 1,
      logLevel: 'silent',
    },
    'test',
  );
}

async function stateOf(address: string): Promise<string | undefined> {
  return (await agent!.control.getFip(address)).status.state;
}

before(async () => {
  tmp = await tempDir('agent');
  agent = await startAgent(config(), { dataplane });
  const c = agent.control;
  await c.createPool({
    name: 'public',
    gateway: 'gw1',
    entries: ['203.0.113.0/28'],
    shared: ['192.0.2.2'],
  });
  await c.createPool({
    name: 'lan',
    gateway: 'gw1',
    delivery: 'onlink',
    uplink: 'eth0',
    entries: ['198.51.100.0/29'],
  });
});

after(async () => {
  await agent?.stop();
  await tmp.remove();
});

describe('agent reconcile loop (fake dataplane)', () => {
  it('registers its node as alive', async () => {
    const node = await agent!.control.getNode('gw1');
    assert.equal(node.alive, true);
    assert.ok(node.reservedPorts.some((p) => p.protocol === 'tcp' && p.port === 22));
  });

  it('realises an association and reports ACTIVE at the FIP revision', async () => {
    const c = agent!.control;
    await c.allocate({ address: '203.0.113.10' });
    const fip = await c.associate('203.0.113.10', { target: '10.0.0.11' });
    await waitFor('ACTIVE', async () => (await stateOf('203.0.113.10')) === 'ACTIVE');
    const view = await c.getFip('203.0.113.10');
    assert.equal(view.status.node, 'gw1');
    assert.equal(view.status.revision, fip.revision);
    assert.equal(view.status.stale, undefined);
    assert.match(dataplane.dump(), /^dnat 203\.0\.113\.10 -> 10\.0\.0\.11$/m);
    assert.match(dataplane.dump(), /^snat 10\.0\.0\.11 -> 203\.0\.113\.10$/m);
    assert.match(dataplane.dump(), /^counter 203\.0\.113\.10 -> $/m);
  });

  it('claims on-link FIPs on the uplink and forwards ports', async () => {
    const c = agent!.control;
    await c.allocate({ address: '198.51.100.3' });
    await c.associate('198.51.100.3', { target: '10.0.0.12' });
    await c.allocate({ address: '192.0.2.2' });
    await c.addForward('192.0.2.2', {
      protocol: 'tcp',
      port: '8000-8010',
      targetPort: 9000,
      target: '10.0.0.20',
    });
    await waitFor('forward applied', async () => (await stateOf('192.0.2.2')) === 'ACTIVE');
    await waitFor('claim applied', async () => (await stateOf('198.51.100.3')) === 'ACTIVE');
    const dump = dataplane.dump();
    assert.match(dump, /^claim 198\.51\.100\.3 -> eth0$/m);
    // A range mapped onto another range is one element per port (nftables cannot add offsets).
    const ports = dump.split('\n').filter((l) => l.startsWith('fwdport 192.0.2.2 . tcp . '));
    assert.equal(ports.length, 11);
    assert.ok(ports.includes('fwdport 192.0.2.2 . tcp . 8010 -> 10.0.0.20 . 9010'));
    assert.doesNotMatch(dump, /claim 192\.0\.2\.2/);
  });

  it('moves a FIP by replacing one element', async () => {
    const c = agent!.control;
    const moved = await c.move('203.0.113.10', { target: '10.0.0.12' }).catch((e: unknown) => e);
    // 10.0.0.12 is already the nat target of 198.51.100.3: refused by the control plane.
    assert.equal((moved as { code?: string }).code, 'IPF_E_TARGET_IN_USE');
    const ok = await c.move('203.0.113.10', { target: '10.0.0.13' });
    await waitFor(
      'moved',
      async () => (await c.getFip('203.0.113.10')).status.revision === ok.revision,
    );
    // dnat replaced in place; the snat element is keyed by target, so one out and one in.
    assert.equal(dataplane.lastApplySize, 3);
    assert.match(dataplane.dump(), /^dnat 203\.0\.113\.10 -> 10\.0\.0\.13$/m);
    assert.doesNotMatch(dataplane.dump(), /10\.0\.0\.11\b/);
    assert.ok(dataplane.conntrackFlushes.includes('203.0.113.10 -> 10.0.0.11'));
  });

  it('keeps the previous kernel state and reports ERROR with the reason when the dataplane refuses', async () => {
    const c = agent!.control;
    dataplane.refuseWhen((e) => e.value === '10.0.0.66', 'Operation not permitted');
    await c.allocate({ address: '203.0.113.11' });
    await c.associate('203.0.113.11', { target: '10.0.0.14' });
    const bad = await c.move('203.0.113.10', { target: '10.0.0.66' });
    await waitFor(
      'ERROR',
      async () => (await c.getFip('203.0.113.10')).status.revision === bad.revision,
    );
    const view = await c.getFip('203.0.113.10');
    assert.equal(view.status.state, 'ERROR');
    assert.match(view.status.message ?? '', /Operation not permitted/);
    // The refused move left the old mapping in place, and the other FIP went ACTIVE anyway.
    assert.match(dataplane.dump(), /^dnat 203\.0\.113\.10 -> 10\.0\.0\.13$/m);
    assert.match(dataplane.dump(), /^snat 10\.0\.0\.13 -> 203\.0\.113\.10$/m);
    assert.doesNotMatch(
      dataplane.dump(),
      /10\.0\.0\.66/,
      'nothing of the refused move was applied',
    );
    await waitFor('other ACTIVE', async () => (await stateOf('203.0.113.11')) === 'ACTIVE');
    assert.match(dataplane.dump(), /^dnat 203\.0\.113\.11 -> 10\.0\.0\.14$/m);
    dataplane.clearRefusals();
    await c.move('203.0.113.10', { target: '10.0.0.13' });
    await waitFor('ACTIVE again', async () => (await stateOf('203.0.113.10')) === 'ACTIVE');
  });

  it('repairs drift within its resync period', async () => {
    assert.ok(dataplane.tamperRemove('dnat', '203.0.113.10'));
    assert.doesNotMatch(dataplane.dump(), /dnat 203\.0\.113\.10 /);
    await waitFor(
      'drift repaired',
      () => Promise.resolve(/dnat 203\.0\.113\.10 -> 10\.0\.0\.13/.test(dataplane.dump())),
      4000,
    );
  });

  it('refuses a stale status report (fencing on the FIP revision)', async () => {
    const c = agent!.control;
    const view = await c.getFip('203.0.113.10');
    const other = await c.getFip('203.0.113.11');
    const stamp = { state: 'ACTIVE' as const, node: 'gw1', updatedAt: new Date().toISOString() };
    const landed = await c.reportStatuses([
      { ...stamp, address: view.address, revision: view.revision - 1 },
      { ...stamp, address: other.address, revision: other.revision },
    ]);
    assert.equal(landed, 1, 'the stale report is dropped, the current one in its batch lands');
    assert.equal((await c.getFip(view.address)).status.revision, view.status.revision);
  });

  it('restarts without flushing or re-applying anything, and state survives', async () => {
    const before = dataplane.dump();
    await agent!.stop();
    assert.equal(dataplane.dump(), before, 'stopping the agent leaves the dataplane as it was');
    // Its membership went with its lease; its last health report stays, for the mesh audit to
    // tell what a node that is gone last applied.
    const stopped = await openStore(`sqlite:${join(tmp.dir, 'state.db')}`);
    try {
      assert.equal(await stopped.get(keys.nodeAlive('gw1')), undefined);
      assert.ok(await stopped.get(keys.nodeHealth('gw1')), 'the last health report outlives it');
    } finally {
      await stopped.close();
    }
    const applies = dataplane.applies;
    agent = await startAgent(config(), { dataplane });
    await agent.reconciler.settled();
    assert.equal(dataplane.applies, applies, 'nothing to apply after a restart');
    assert.equal(dataplane.dump(), before);
    assert.equal((await agent.control.listFips()).length, 4);
  });

  it('removes the elements of a released FIP', async () => {
    const c = agent!.control;
    await c.release('203.0.113.11', true);
    await waitFor('released', () => Promise.resolve(!/203\.0\.113\.11/.test(dataplane.dump())));
  });

  it('beats without writing under the root, and rewrites its health report only when it changed', async () => {
    const store = agent!.control.store;
    await waitFor(
      'a health report',
      async () => (await store.get(keys.nodeHealth('gw1'))) ?? false,
    );
    const report = (value: string): string => {
      const { updatedAt: _at, ...rest } = JSON.parse(value) as NodeHealth;
      return JSON.stringify(rest);
    };
    const reports = [report((await store.get(keys.nodeHealth('gw1')))!.value)];
    const aliveEvents: string[] = [];
    const root = store.watch(ROOT, {
      onEvents: (events) => {
        for (const e of events) if (e.kv.key.startsWith(keys.alive)) aliveEvents.push(e.kv.key);
      },
    });
    const health = store.watch(keys.health, {
      onEvents: (events) => {
        for (const e of events) if (e.type === 'put') reports.push(report(e.kv.value));
      },
    });
    try {
      // Two liveness beats (every 5 s), with passes every second (resyncSeconds: 1).
      await new Promise((resolve) => setTimeout(resolve, 11_000));
    } finally {
      root.close();
      health.close();
    }
    assert.deepEqual(aliveEvents, [], 'a beat is a lease keep-alive');
    assert.equal((await store.get(keys.nodeAlive('gw1')))?.version, 1, 'written once per lease');
    for (let i = 1; i < reports.length; i++)
      assert.notEqual(
        reports[i],
        reports[i - 1],
        'a health report is rewritten only when it changed',
      );
    // What it reports is still what the node view shows.
    const node = await agent!.control.getNode('gw1');
    assert.equal(node.alive, true);
    assert.equal(
      JSON.stringify(node.mesh),
      JSON.stringify((JSON.parse(reports.at(-1)!) as NodeHealth).mesh),
    );
  });
});

describe('agent configuration errors', () => {
  it('name each option as the operator wrote it, and where it came from', () => {
    const flagsOnly = () =>
      resolveConfig({}, { node: 'gw1', resyncSeconds: 0, egress: 'gateway' }, undefined);
    assert.throws(flagsOnly, {
      code: 'IPF_E_CONFIG',
      message:
        /^Configuration on the command line is invalid: --resync-seconds: must be a number from .*; --egress: must be one of own, fip, masquerade$/,
    });
    assert.throws(
      () => resolveConfig({ node: 'gw1', resyncSeconds: 0 }, { egress: 'gateway' }, 'agent.yaml'),
      {
        message:
          /^Configuration in agent\.yaml and on the command line is invalid: resyncSeconds: must be .*; --egress: must be one of own, fip, masquerade$/,
      },
    );
    assert.throws(() => resolveConfig({}, {}, undefined), {
      message: /^Configuration of the agent is invalid: node: is required/,
    });
  });
});

describe('plan', () => {
  it('shows what a pass would change, and changes nothing', async () => {
    await agent!.reconciler.stop();
    assert.ok(dataplane.tamperRemove('dnat', '203.0.113.10'));
    const before = dataplane.dump();
    const plan = await agent!.reconciler.plan();
    assert.deepEqual(
      plan.add.map((e) => `${e.kind} ${e.key} -> ${e.value}`),
      ['dnat 203.0.113.10 -> 10.0.0.13'],
    );
    assert.deepEqual([plan.replace.length, plan.remove.length], [0, 0]);
    assert.equal(dataplane.dump(), before);
    assert.match(printPlan(plan), /^ {2}\+ dnat 203\.0\.113\.10 -> 10\.0\.0\.13$/m);
    assert.match(printPlan(plan), /1 to add, 0 to change, 0 to remove/);
  });
});

describe('agent TLS key file', () => {
  it('is refused, before anything starts, when others can read it (like the token file)', async () => {
    const dir = await tempDir('agent-tls');
    try {
      const { cert, key } = await selfSignedCertificate(dir.dir);
      chmodSync(key, 0o644);
      const cfg = resolveConfig(
        {},
        {
          node: 'gw9',
          store: `sqlite:${join(dir.dir, 'state.db')}`,
          listen: '127.0.0.1:0',
          tokenFile: join(dir.dir, 'token'),
          tlsCert: cert,
          tlsKey: key,
          logLevel: 'silent',
        },
        'test',
      );
      await assert.rejects(startAgent(cfg, { dataplane: new FakeDataplane() }), (e) => {
        assert.equal((e as { code?: string }).code, 'IPF_E_SECRET_FILE');
        assert.match((e as Error).message, /mode 0644; it must be 0600/);
        return true;
      });
    } finally {
      await dir.remove();
    }
  });
});
