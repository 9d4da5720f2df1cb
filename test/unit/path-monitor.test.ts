/**
 * Path probes through the tunnel: the search (src/core/pathmtu.ts), the monitor that sends the
 * probes (src/agent/path-monitor.ts) against the strict fake's simulated paths, and an agent that turns
 * a dead path into UNREACHABLE and a narrow one into routes with a lower MTU. The same behaviour
 * on a real kernel, through a real MTU black hole, is in test/cloudhome-migration.test.ts.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { resolveConfig } from '../../src/agent/config.js';
import { PathMonitor } from '../../src/agent/path-monitor.js';
import { type RunningAgent, startAgent } from '../../src/agent/run.js';
import {
  LARGE_PROBE_PAYLOAD,
  largestPassing,
  MIN_PATH_MTU,
  searchOutcome,
} from '../../src/core/pathmtu.js';
import { compile } from '../../src/core/compile/index.js';
import { type TunnelIntent, tunnelProbeAddress } from '../../src/core/tunnel.js';
import { FakeDataplane } from '../../src/dataplane/fake.js';
import { tempDir, waitFor } from '../support/helpers.js';

const silent = { info: () => undefined, warn: () => undefined, error: () => undefined };
const HOME_KEY = Buffer.alloc(32, 2).toString('base64');

describe('largestPassing', () => {
  it('finds the threshold of a monotone predicate in three rounds of eight sizes at once', async () => {
    for (const threshold of [1280, 1281, 1312, 1419, 1420, 1439, 1440]) {
      const rounds: number[][] = [];
      let inFlight = 0;
      const found = await largestPassing(1280, 1440, async (size) => {
        if (inFlight === 0) rounds.push([]);
        inFlight++;
        rounds.at(-1)?.push(size);
        await new Promise((r) => setTimeout(r, 1));
        inFlight--;
        return size <= threshold;
      });
      assert.equal(found, threshold);
      assert.ok(rounds.length <= 3, `${rounds.length} rounds for ${threshold}`);
      assert.ok(rounds.every((r) => r.length <= 8));
    }
  });

  it('does not let a lost probe below a failing size make a larger one look good', async () => {
    // 1300 is lost once (a dropped echo), 1320 and below pass otherwise, above fails.
    let lost = false;
    const found = await largestPassing(1280, 1440, async (size) => {
      await Promise.resolve();
      if (size === 1303 && !lost) {
        lost = true;
        return false;
      }
      return size <= 1320;
    });
    assert.ok(found !== undefined && found <= 1320, String(found));
  });

  it('is undefined when even the smallest size fails, and hi when everything passes', async () => {
    assert.equal(await largestPassing(1280, 1420, async () => Promise.resolve(false)), undefined);
    assert.equal(await largestPassing(1280, 1420, async () => Promise.resolve(true)), 1420);
    assert.equal(await largestPassing(1300, 1280, async () => Promise.resolve(true)), undefined);
  });
});

describe('searchOutcome', () => {
  it('lowers the MTU only below the tunnel’s, and says what it did', () => {
    const lowered = searchOutcome(1312, 1440);
    assert.equal(lowered.pathMtu, 1312);
    assert.match(lowered.note, /1,?900-byte probe did not pass at MTU 1440.*1312 bytes.*MSS 1272/);
    assert.equal(searchOutcome(1440, 1440).pathMtu, undefined);
    assert.match(searchOutcome(1440, 1440).note, /fragments are lost/);
    assert.equal(searchOutcome(undefined, 1440).pathMtu, undefined);
    assert.match(searchOutcome(undefined, 1440).note, new RegExp(`${MIN_PATH_MTU}`));
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
    ],
  };
}

describe('PathMonitor (fake dataplane)', () => {
  it('finds the largest packet a black hole lets through and offers it as the peer’s MTU', async () => {
    const dataplane = new FakeDataplane();
    const home = tunnelProbeAddress('home');
    // WireGuard over a 1,380-byte path: inner packets up to 1312 bytes (padded to 16) pass.
    dataplane.paths.set(home, 1312);
    let changes = 0;
    const monitor = new PathMonitor({
      dataplane,
      log: silent,
      intervalMs: 60_000,
      onChange: () => changes++,
    });
    monitor.start();
    monitor.track(gwTunnel());
    await waitFor('a search', async () => Promise.resolve(monitor.peerMtu().get('home') === 1312));
    await monitor.stop();
    assert.equal(changes, 1);
    const probe = monitor.probes().get(HOME_KEY);
    assert.equal(probe?.alive, true);
    assert.equal(probe?.largePasses, false);
    assert.equal(probe?.pathMtu, 1312);
    assert.equal(probe?.tunnelMtu, 1440);
    assert.match(probe?.note ?? '', /largest packet that does is 1312 bytes/);
    // Every probe went to home's link-local address on the tunnel; the first was the large one
    // after a small one, the rest forbade fragmenting.
    const sent = dataplane.probes;
    assert.ok(sent.every((p) => p.address === home && p.ifname === 'ipfgwtest'));
    assert.deepEqual(
      sent.slice(0, 2).map((p) => [p.payload, p.fragment]),
      [
        [56, false],
        [LARGE_PROBE_PAYLOAD, true],
      ],
    );
    assert.ok(sent.slice(2).every((p) => !p.fragment));
  });

  it('declares a peer dead only after two silent rounds, and alive again at the first answer', async () => {
    const dataplane = new FakeDataplane();
    dataplane.paths.set(tunnelProbeAddress('home'), 'dead');
    const monitor = new PathMonitor({
      dataplane,
      log: silent,
      intervalMs: 60_000,
      onChange: () => undefined,
    });
    monitor.start();
    monitor.track(gwTunnel());
    await waitFor('first round', async () => Promise.resolve(dataplane.probes.length === 1));
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(monitor.deadPeers().size, 0, 'one silent round is not a dead path');
    monitor.kick();
    await waitFor('dead', async () => Promise.resolve(monitor.deadPeers().has('home')));
    assert.match(monitor.probes().get(HOME_KEY)?.note ?? '', /no answer through the tunnel/);
    dataplane.paths.delete(tunnelProbeAddress('home'));
    monitor.kick();
    await waitFor('alive', async () => Promise.resolve(monitor.deadPeers().size === 0));
    assert.equal(monitor.probes().get(HOME_KEY)?.largePasses, true);
    // A peer that leaves the tunnel is forgotten.
    monitor.track(undefined);
    assert.equal(monitor.probes().size, 0);
    await monitor.stop();
  });

  it('does not probe a peer known only so that its first handshake is accepted', async () => {
    const dataplane = new FakeDataplane();
    const monitor = new PathMonitor({
      dataplane,
      log: silent,
      intervalMs: 60_000,
      onChange: () => undefined,
    });
    monitor.start();
    const idle = gwTunnel();
    monitor.track({
      ...idle,
      peers: [
        { publicKey: HOME_KEY, node: 'home', allowedIps: [`${tunnelProbeAddress('home')}/128`] },
      ],
    });
    await new Promise((r) => setTimeout(r, 50));
    await monitor.stop();
    assert.equal(dataplane.probes.length, 0);
  });

  it('keeps a lowered MTU across a restart through its state file', async () => {
    const tmp = await tempDir('paths');
    try {
      const stateFile = join(tmp.dir, 'path-mtu.json');
      const dataplane = new FakeDataplane();
      dataplane.paths.set(tunnelProbeAddress('home'), 1312);
      const first = new PathMonitor({
        dataplane,
        log: silent,
        intervalMs: 60_000,
        onChange: () => undefined,
        stateFile,
      });
      first.start();
      first.track(gwTunnel());
      await waitFor('search', async () => Promise.resolve(first.peerMtu().get('home') === 1312));
      await first.stop();
      await waitFor('saved', async () =>
        (await readFile(stateFile, 'utf8').catch(() => '')).includes('1312'),
      );
      const second = new PathMonitor({
        dataplane: new FakeDataplane(),
        log: silent,
        intervalMs: 60_000,
        onChange: () => undefined,
        stateFile,
      });
      await second.load();
      assert.equal(second.peerMtu().get('home'), 1312, 'used before the first probe');
    } finally {
      await tmp.remove();
    }
  });
});

describe('compile with a lowered peer MTU', () => {
  it('gives the routes toward that peer the MTU, and a host route for its probe address', () => {
    const state = {
      pools: [
        {
          name: 'edge',
          gateway: 'gw',
          delivery: 'routed' as const,
          tags: [],
          createdAt: 't',
          entries: [{ kind: 'cidr' as const, cidr: '203.0.113.0/28' }],
        },
      ],
      fips: [
        {
          revision: 1,
          fip: {
            address: '203.0.113.10',
            family: 4 as const,
            pool: 'edge',
            allocatedAt: 't',
            forwards: [],
            nextForwardId: 1,
            association: {
              mode: 'routed' as const,
              target: '203.0.113.10',
              node: 'home',
              associatedAt: 't',
            },
          },
        },
      ],
      nodes: [
        {
          name: 'gw',
          publicKey: Buffer.alloc(32, 1).toString('base64'),
          addresses: [],
          reservedPorts: [],
          registeredAt: 't',
        },
        { name: 'home', publicKey: HOME_KEY, addresses: [], reservedPorts: [], registeredAt: 't' },
      ],
    };
    const options = { listenPort: 51820, peerMtu: new Map([['home', 1312]]) };
    const gw = compile(state as never, 'gw', undefined, options);
    const routes = gw.elements.filter((e) => e.kind === 'route').map((e) => `${e.key} ${e.value}`);
    const tun = gw.tunnel?.name ?? '';
    assert.deepEqual(routes.sort(), [
      `203.0.113.10/32 dev ${tun} mtu 1312`,
      `${tunnelProbeAddress('home')}/128 dev ${tun} mtu 1312`,
    ]);
    const home = compile(state as never, 'home', undefined, {
      listenPort: 51820,
      peerMtu: new Map([['gw', 1312]]),
    });
    assert.ok(
      home.elements.some(
        (e) =>
          e.kind === 'route' && e.key === '0.0.0.0/0 table 7447' && e.value.endsWith(' mtu 1312'),
      ),
    );
  });
});

describe('an agent with a dead or narrow tunnel path (fake dataplane)', () => {
  let tmp: { dir: string; remove: () => Promise<void> };
  let agent: RunningAgent | undefined;
  const dataplane = new FakeDataplane();
  const home = tunnelProbeAddress('home');

  before(async () => {
    tmp = await tempDir('paths-agent');
    const config = resolveConfig(
      {},
      {
        node: 'gw',
        store: `sqlite:${join(tmp.dir, 'state.db')}`,
        listen: '127.0.0.1:0',
        tokenFile: join(tmp.dir, 'token'),
        resyncSeconds: 1,
        probeSeconds: 1,
        logLevel: 'silent',
      },
      'test',
    );
    agent = await startAgent(config, { dataplane });
    const c = agent.control;
    await c.registerNode({ name: 'home', publicKey: HOME_KEY, addresses: [], reservedPorts: [] });
    await c.createPool({ name: 'edge', gateway: 'gw', entries: ['203.0.113.0/28'] });
    await c.allocate({ address: '203.0.113.10' });
    await c.associate('203.0.113.10', { target: '203.0.113.10', mode: 'routed', node: 'home' });
  });

  after(async () => {
    await agent?.stop();
    await tmp.remove();
  });

  const status = async () => (await agent!.control.getFip('203.0.113.10')).status;

  it('is ACTIVE while the path answers, UNREACHABLE when it goes dead, ACTIVE again after', async () => {
    await waitFor('ACTIVE', async () => (await status()).state === 'ACTIVE');
    dataplane.paths.set(home, 'dead');
    await waitFor('UNREACHABLE', async () => (await status()).state === 'UNREACHABLE', 15_000);
    assert.match((await status()).message ?? '', /no answer through the tunnel to home/);
    dataplane.paths.delete(home);
    await waitFor('ACTIVE again', async () => (await status()).state === 'ACTIVE', 15_000);
  });

  it('lowers the route MTU to what passes and says so in the node’s tunnel health', async () => {
    dataplane.paths.set(home, 1312);
    await waitFor(
      'route with MTU 1312',
      async () =>
        Promise.resolve(/^route 203\.0\.113\.10\/32 -> dev \S+ mtu 1312$/m.test(dataplane.dump())),
      15_000,
    );
    await waitFor(
      'health says so',
      async () => {
        const gw = await agent!.control.getNode('gw');
        return gw.tunnel?.peers.some((p) => p.probe?.pathMtu === 1312) ?? false;
      },
      15_000,
    );
    assert.equal((await status()).state, 'ACTIVE');
  });
});
