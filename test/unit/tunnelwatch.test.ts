/**
 * The tunnel watch (src/agent/tunnelwatch.ts) and the comparison it acts on
 * (src/core/tunnelhealth.ts): what counts as a lost tunnel, one repair at a time, peers dead
 * until they answer again; and an agent on the strict fake whose tunnel device is lost under a
 * 100 ms probe interval: the next check finds it, the device and the routes through it come
 * back (the next resync is an hour away), and its FIP is UNREACHABLE until the peer answers.
 * Real tincds and wireguard-gos crashing under real agents: test/tunnel-crash-lab.test.ts.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { resolveConfig } from '../../src/agent/config.js';
import { type RunningAgent, startAgent } from '../../src/agent/run.js';
import { TunnelWatch } from '../../src/agent/tunnelwatch.js';
import { type TunnelIntent, tunnelProbeAddress } from '../../src/core/tunnel.js';
import {
  type TunnelCheck,
  tunnelFaults,
  type TunnelSnapshot,
} from '../../src/core/tunnelhealth.js';
import { FakeDataplane } from '../../src/dataplane/fake.js';
import { tempDir, waitFor } from '../support/helpers.js';

const HOME_KEY = Buffer.alloc(32, 2).toString('base64');

describe('tunnelFaults', () => {
  const left: TunnelSnapshot = {
    link: {
      ifindex: 7,
      up: true,
      mac: '02:00:00:00:00:01',
      addresses: ['10.0.0.1/30', 'fe80::1/64'],
    },
    daemon: { program: 'tincd', pid: 100 },
  };

  it('finds nothing wrong with the tunnel as left, or with more than was left', () => {
    assert.deepEqual(tunnelFaults('ipft', left, left), []);
    const more: TunnelSnapshot = {
      ...left,
      link: { ...left.link!, addresses: [...left.link!.addresses, '10.9.9.9/32'] },
    };
    assert.deepEqual(tunnelFaults('ipft', left, more), []);
  });

  it('tells a crashed tincd waiting to re-execute (alive, no tap) from one that is gone', () => {
    const waiting = tunnelFaults('ipft', left, { daemon: left.daemon });
    assert.deepEqual(
      waiting.map((f) => f.kind),
      ['device-gone'],
    );
    assert.deepEqual(
      tunnelFaults('ipft', left, {}).map((f) => f.kind),
      ['device-gone', 'daemon-gone'],
    );
    assert.match(tunnelFaults('ipft', left, {})[1]?.detail ?? '', /tincd \(pid 100\) is gone/);
  });

  it('tells a crashed tincd that let go of its persistent tap by the carrier', () => {
    const held: TunnelSnapshot = { ...left, link: { ...left.link!, carrier: true } };
    const letGo: TunnelSnapshot = { ...left, link: { ...left.link!, carrier: false } };
    assert.deepEqual(
      tunnelFaults('ipft', held, letGo).map((f) => f.kind),
      ['carrier-lost'],
    );
    // A link that is down says nothing of its carrier: that is a link-down alone.
    const down: TunnelSnapshot = { ...left, link: { ...left.link!, up: false } };
    assert.deepEqual(
      tunnelFaults('ipft', held, down).map((f) => f.kind),
      ['link-down'],
    );
  });

  it('names everything a re-executed tincd changed', () => {
    const reexecuted: TunnelSnapshot = {
      link: { ifindex: 9, up: false, mac: '9a:00:00:00:00:02', addresses: [] },
      daemon: { program: 'tincd', pid: 200 },
    };
    const faults = tunnelFaults('ipft', left, reexecuted);
    assert.deepEqual(
      faults.map((f) => f.kind),
      ['device-replaced', 'link-down', 'addresses-gone', 'mac-changed', 'daemon-replaced'],
    );
    assert.match(faults[0]?.detail ?? '', /ifindex 7 → 9/);
    assert.match(faults[2]?.detail ?? '', /lost 10\.0\.0\.1\/30, fe80::1\/64/);
    assert.match(faults[4]?.detail ?? '', /pid 100 → 200/);
  });

  it('compares no MAC and no daemon where there are none (the kernel’s WireGuard)', () => {
    const wg: TunnelSnapshot = { link: { ifindex: 3, up: true, addresses: ['10.0.0.1/30'] } };
    assert.deepEqual(tunnelFaults('ipfw', wg, wg), []);
    assert.deepEqual(
      tunnelFaults('ipfw', wg, { link: { ...wg.link!, up: false } }).map((f) => f.kind),
      ['link-down'],
    );
  });
});

/** gw's tunnel toward node home, which serves 203.0.113.10. */
function gwTunnel(): TunnelIntent {
  return {
    name: 'ipfgwtest',
    listenPort: 51820,
    mtu: 1440,
    addresses: [`${tunnelProbeAddress('gw')}/64`],
    peers: [
      {
        publicKey: HOME_KEY,
        node: 'home',
        allowedIps: ['203.0.113.10/32', `${tunnelProbeAddress('home')}/128`],
      },
      // Known only so that its first handshake is accepted: no FIP goes there.
      {
        publicKey: Buffer.alloc(32, 3).toString('base64'),
        node: 'idle',
        allowedIps: [`${tunnelProbeAddress('idle')}/128`],
      },
    ],
  };
}

describe('TunnelWatch', () => {
  it('asks for one repair per loss, marks the carrying peers dead until they answer', async () => {
    const applied = gwTunnel();
    let check: TunnelCheck = { name: applied.name, ifindex: 4, faults: [], applied };
    let answers = false;
    const repairs: number[] = [];
    let release: (() => void) | undefined;
    const changes: string[] = [];
    const watch = new TunnelWatch({
      dataplane: {
        checkTunnel: () => Promise.resolve(check),
        probePath: () => Promise.resolve(answers ? 1 : undefined),
      },
      log: { info: () => undefined, warn: () => undefined, error: () => undefined },
      intervalMs: 60_000,
      resync: () => {
        repairs.push(repairs.length);
        return new Promise<void>((resolve) => (release = resolve));
      },
      onChange: () => changes.push([...watch.deadPeers()].join(',')),
    });
    await watch.check();
    assert.equal(repairs.length, 0);
    check = {
      name: applied.name,
      faults: [{ kind: 'device-gone', detail: 'ipfgwtest is gone' }],
      applied,
    };
    await watch.check();
    await watch.check(); // still lost, the repair still running: not asked twice
    assert.equal(repairs.length, 1);
    assert.deepEqual([...watch.deadPeers()], ['home']);
    assert.deepEqual(watch.restore()?.faults, ['ipfgwtest is gone']);
    assert.equal(watch.restore()?.restoredAt, undefined);
    release?.();
    await new Promise((r) => setImmediate(r));
    // Restored (a new device), but home does not answer yet: still dead.
    check = { name: applied.name, ifindex: 5, faults: [], applied };
    await watch.check();
    await waitFor('a probe round', () => Promise.resolve(watch.restore()?.restoredAt));
    assert.deepEqual([...watch.deadPeers()], ['home']);
    assert.equal(repairs.length, 1, 'a device made anew by the repair needs no second pass');
    answers = true;
    await watch.check();
    await waitFor('home answering', () => Promise.resolve(watch.deadPeers().size === 0));
    assert.ok(watch.restore()?.answeredAt);
    assert.deepEqual(changes, ['home', '']);
    // A device made anew by an apply (a restart) is no loss, but its routes went: one pass.
    check = { ...check, ifindex: 6 };
    await watch.check();
    await new Promise((r) => setImmediate(r));
    assert.equal(repairs.length, 2);
    assert.equal(watch.deadPeers().size, 0);
    release?.();
    await watch.stop();
  });
});

describe('TunnelWatch with a driver that mends in place', () => {
  it('restores the daemon without a pass, and reports the loss before the peers count as back', async () => {
    const applied = gwTunnel();
    let check: TunnelCheck = { name: applied.name, ifindex: 4, faults: [], applied };
    let restores = 0;
    let resyncs = 0;
    const watch = new TunnelWatch({
      dataplane: {
        checkTunnel: () => Promise.resolve(check),
        restoreTunnel: () => {
          restores += 1;
          check = { name: applied.name, ifindex: 4, faults: [], applied };
          return Promise.resolve(true);
        },
        // The peer answers at once: the loss is mended before anyone reported it.
        probePath: () => Promise.resolve(1),
      },
      log: { info: () => undefined, warn: () => undefined, error: () => undefined },
      intervalMs: 60_000,
      resync: () => {
        resyncs += 1;
        return Promise.resolve();
      },
      onChange: () => undefined,
    });
    await watch.check();
    check = {
      name: applied.name,
      ifindex: 4,
      faults: [{ kind: 'carrier-lost', detail: 'no daemon holds ipfgwtest (no carrier)' }],
      applied,
    };
    await watch.check();
    // Not started: this test runs the rounds a started watch would run on its own.
    await waitFor('the restore', () => Promise.resolve(restores === 1));
    await watch.check();
    assert.ok(watch.restore()?.restoredAt);
    assert.deepEqual([restores, resyncs], [1, 0]);
    assert.equal(watch.restore()?.repair, 'daemon');
    // However soon home answers, it stays dead until the reconcile loop has read it once…
    await watch.check();
    await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual([...watch.deadPeers()], ['home']);
    // …and is cleared by the next round after that.
    await watch.check();
    await waitFor('home answering', () => Promise.resolve(watch.deadPeers().size === 0));
    assert.ok(watch.restore()?.answeredAt);
    await watch.stop();
  });
});

describe('an agent whose tunnel device is lost (fake dataplane, 100 ms probe interval)', () => {
  let tmp: { dir: string; remove: () => Promise<void> };
  let agent: RunningAgent | undefined;
  const dataplane = new FakeDataplane();
  const FIP = '203.0.113.10';

  before(async () => {
    tmp = await tempDir('tunnelwatch-agent');
    const config = resolveConfig(
      {},
      {
        node: 'gw',
        store: `sqlite:${join(tmp.dir, 'state.db')}`,
        listen: '127.0.0.1:0',
        tokenFile: join(tmp.dir, 'token'),
        // Far off: what repairs the loss here is the watch, not the periodic resync.
        resyncSeconds: 3600,
        probeSeconds: 0.1,
        logLevel: 'silent',
      },
      'test',
    );
    agent = await startAgent(config, { dataplane });
    const c = agent.control;
    await c.registerNode({ name: 'home', publicKey: HOME_KEY, addresses: [], reservedPorts: [] });
    await c.createPool({ name: 'edge', gateway: 'gw', entries: ['203.0.113.0/28'] });
    await c.allocate({ address: FIP });
    await c.associate(FIP, { target: FIP, mode: 'routed', node: 'home' });
  });

  after(async () => {
    await agent?.stop();
    await tmp.remove();
  });

  /** What each check of the agent's tunnel watch returned, in order. */
  const checks: (TunnelCheck | undefined)[] = [];
  const checkTunnel = dataplane.checkTunnel.bind(dataplane);
  dataplane.checkTunnel = async () => {
    const found = await checkTunnel();
    checks.push(found);
    return found;
  };
  const state = async (): Promise<string> => (await agent!.control.getFip(FIP)).status.state;
  const routed = (): boolean => /^route 203\.0\.113\.10\/32 -> dev ipf/m.test(dataplane.dump());

  it('finds the loss at its next check, restores the device and its routes, reports the FIP UNREACHABLE until the peer answers', async () => {
    await waitFor('ACTIVE', async () => (await state()) === 'ACTIVE', 15_000);
    assert.ok(routed());
    const home = tunnelProbeAddress('home');
    // The peer does not answer through the restored tunnel until the test says so.
    dataplane.paths.set(home, 'dead');
    const lostAt = Date.now();
    const before = checks.length;
    dataplane.loseTunnel();
    assert.ok(!routed(), 'the routes through the lost device went with it');
    let back: number | undefined;
    await waitFor(
      'the route back',
      () => {
        back = Date.now();
        return Promise.resolve(routed());
      },
      5000,
    );
    await waitFor('UNREACHABLE', async () => (await state()) === 'UNREACHABLE', 5000);
    dataplane.paths.delete(home);
    await waitFor('ACTIVE again', async () => (await state()) === 'ACTIVE', 5000);
    console.log(
      `fake tunnel lost: its route back after ${back! - lostAt} ms (probe interval 100 ms)`,
    );
    // The first check after the loss found it (the next resync is an hour away, and the path
    // probes put no route back), and the pass it asked for restored the device and the route.
    assert.deepEqual(
      checks[before]?.faults.map((f) => f.kind),
      ['device-gone'],
    );
    // The node's tunnel health says what was lost and when it came back.
    const restore = await waitFor(
      'the restore in the node’s health',
      async () => (await agent!.control.getNode('gw')).tunnel?.restore,
      10_000,
    );
    assert.equal(restore.faults.length, 1);
    assert.match(restore.faults[0] ?? '', /^ipf\w+ is gone$/);
    assert.ok(restore.restoredAt && restore.answeredAt, JSON.stringify(restore));
    assert.ok(Date.parse(restore.noticedAt) >= lostAt, JSON.stringify(restore));
  });
});
