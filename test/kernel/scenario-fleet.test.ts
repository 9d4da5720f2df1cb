/**
 * The fleet lab on the real kernel, without agents: two sites of nodes (a1..a3, b1..b3) behind
 * one router, each node with a private and a public address on its site's LAN. Same-site nodes
 * reach each other directly by either address; nodes of different sites only by public
 * addresses, from their own public address, because the router drops private prefixes (and
 * counts them). A host that is not a member (`outsider`) and the operators' host (`admin`)
 * reach the nodes' public addresses. The root namespace is only read; every lab is destroyed.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { listNamespaces, randomPrefix } from '../../src/lab/netns.js';
import { echoProbe, ping, startEchoServer } from '../../src/lab/probe.js';
import {
  FLEET as F,
  fleet,
  fleetCounters,
  fleetNodes,
  fleetRuleset,
  fleetSpec,
  type FleetNode,
} from '../../src/lab/scenarios.js';
import type { Lab } from '../../src/lab/topology.js';

const TCP = 7000;
/** A failed probe waits this long: short, since several run at once and all of them fail. */
const FAIL_MS = 1000;

const nodes = fleetNodes();
const prefix = randomPrefix();
let lab: Lab | undefined;

function theLab(): Lab {
  if (!lab) throw new Error('the fleet lab was not built');
  return lab;
}

async function labNamespaces(labPrefix: string): Promise<string[]> {
  return (await listNamespaces()).filter((name) => name.startsWith(labPrefix)).sort();
}

interface RouteGet {
  gateway?: string;
  prefsrc?: string;
  dev?: string;
}

/** The route `host` would use to `address`: its gateway (none when on-link) and source. */
async function routeTo(host: string, address: string): Promise<RouteGet> {
  const { stdout } = await theLab().exec(host, ['ip', '-j', 'route', 'get', address]);
  const [route] = JSON.parse(stdout) as RouteGet[];
  assert.ok(route, `no route from ${host} to ${address}`);
  return route;
}

function pairs(filter: (from: FleetNode, to: FleetNode) => boolean): [FleetNode, FleetNode][] {
  return nodes.flatMap((from) =>
    nodes
      .filter((to) => to !== from && filter(from, to))
      .map((to): [FleetNode, FleetNode] => [from, to]),
  );
}

function ipInPrefix(address: string, cidr: string): boolean {
  const toInt = (a: string): number =>
    a.split('.').reduce((n, octet) => n * 256 + Number(octet), 0);
  const [base = '', length = '32'] = cidr.split('/');
  const shift = 32 - Number(length);
  return Math.floor(toInt(address) / 2 ** shift) === Math.floor(toInt(base) / 2 ** shift);
}

describe('fleet lab (spec only)', () => {
  it('lists two sites of three nodes by default, each with a private and a public address', () => {
    assert.deepEqual(
      nodes.map((n) => `${n.name} ${n.site} ${n.private} ${n.public}`),
      [
        'a1 a 10.1.0.11 198.51.100.11',
        'a2 a 10.1.0.12 198.51.100.12',
        'a3 a 10.1.0.13 198.51.100.13',
        'b1 b 10.2.0.11 203.0.113.11',
        'b2 b 10.2.0.12 203.0.113.12',
        'b3 b 10.2.0.13 203.0.113.13',
      ],
    );
    assert.deepEqual(
      fleetSpec({ prefix: 'ipft-x-' }).hosts.map((h) => h.name),
      ['router', 'outsider', 'admin', 'a1', 'a2', 'a3', 'b1', 'b2', 'b3'],
    );
  });

  it('scales to 50 per site with valid interface names, and refuses more or less', () => {
    const big = fleetNodes({ perSite: F.maxPerSite });
    assert.equal(big.length, 2 * F.maxPerSite);
    assert.equal(big.at(-1)?.public, '203.0.113.60');
    const ifnames = fleetSpec({ perSite: F.maxPerSite }).links.map((l) => l.a.ifname);
    assert.ok(ifnames.every((name) => name.length <= 15));
    assert.equal(new Set(ifnames).size, ifnames.length);
    for (const perSite of [0, F.maxPerSite + 1, 2.5]) {
      assert.throws(() => fleetNodes({ perSite }), { code: 'IPF_E_DATAPLANE' });
    }
  });

  it('keeps the overlay free and the outsider outside the SSH allow-list', () => {
    const addresses = [
      ...nodes.flatMap((n) => [n.private, n.public]),
      F.outsider.v4,
      F.admin.v4,
      ...Object.values(F.sites).flatMap((s) => [s.private.router, s.public.router]),
    ];
    for (const address of addresses) assert.ok(!ipInPrefix(address, F.overlay), address);
    assert.ok(ipInPrefix(F.admin.v4, F.admin.sshAllow));
    assert.ok(!ipInPrefix(F.outsider.v4, F.admin.sshAllow));
    assert.match(fleetRuleset(), /elements = \{ 10\.1\.0\.0\/24, 10\.2\.0\.0\/24 \}/);
  });
});

describe('fleet lab on the kernel', () => {
  before(async () => {
    lab = await fleet({ prefix });
    const built = lab;
    // One echo server per node, also named after it, so every probe says who answered.
    await Promise.all(nodes.map((n) => startEchoServer(built, n.name, { tcp: [TCP] })));
  });

  after(async () => {
    await lab?.destroy();
  });

  it('has every node, the router, the outsider and admin, each node with both addresses', async () => {
    const expected = ['router', 'outsider', 'admin', ...nodes.map((n) => n.name)];
    assert.deepEqual(await labNamespaces(prefix), expected.map((h) => `${prefix}${h}`).sort());
    for (const node of nodes) {
      const argv = ['ip', '-4', '-o', 'address', 'show', 'dev', node.ifname];
      const { stdout } = await theLab().exec(node.name, argv);
      const held = [...stdout.matchAll(/inet (\S+)/g)].map((m) => m[1]);
      assert.deepEqual(held, [`${node.private}/24`, `${node.public}/24`], node.name);
    }
  });

  it('same-site nodes reach each other directly, by private and by public address', async () => {
    const before = await fleetCounters(theLab());
    for (const [from, to] of pairs((a, b) => a.site === b.site)) {
      for (const [address, source] of [
        [to.private, from.private],
        [to.public, from.public],
      ] as const) {
        const route = await routeTo(from.name, address);
        assert.equal(route.gateway, undefined, `${from.name} → ${address} is not on-link`);
        assert.deepEqual(
          await echoProbe(theLab(), from.name, 'tcp', address, TCP),
          { name: to.name, address: source },
          `${from.name} → ${to.name} at ${address}`,
        );
      }
    }
    assert.deepEqual(await fleetCounters(theLab()), before);
  });

  it('other-site nodes reach each other through the router, from their public address', async () => {
    for (const [from, to] of pairs((a, b) => a.site !== b.site)) {
      const route = await routeTo(from.name, to.public);
      assert.equal(route.gateway, F.sites[from.site].public.router);
      assert.equal(route.prefsrc, from.public);
      assert.deepEqual(
        await echoProbe(theLab(), from.name, 'tcp', to.public, TCP),
        { name: to.name, address: from.public },
        `${from.name} → ${to.name} at ${to.public}`,
      );
    }
  });

  it('no private address crosses the router: it drops them and counts them', async () => {
    const before = await fleetCounters(theLab());
    // By a private destination: every cross-site pair fails (probes at once, they all wait).
    const crossing = pairs((a, b) => a.site !== b.site);
    const replies = await Promise.all(
      crossing.map(([from, to]) => echoProbe(theLab(), from.name, 'tcp', to.private, TCP, FAIL_MS)),
    );
    assert.deepEqual(
      replies,
      crossing.map(() => undefined),
    );
    const [a1, b1] = [nodes[0]!, nodes[3]!];
    // From a private source to a public destination: dropped too.
    const argv = ['ping', '-n', '-q', '-c', '1', '-W', '1', '-I', a1.private, b1.public];
    await assert.rejects(theLab().exec(a1.name, argv), /exit 1\)/);
    const after = await fleetCounters(theLab());
    assert.ok(
      after.privateDestination >= before.privateDestination + crossing.length,
      `${JSON.stringify(before)} → ${JSON.stringify(after)}`,
    );
    assert.ok(after.privateSource > before.privateSource, 'no private source dropped');
    // And the public path between the same two still works.
    assert.ok(await ping(theLab(), a1.name, b1.public));
  });

  it('the outsider reaches every node’s public address, none of the private ones', async () => {
    for (const node of nodes) {
      assert.deepEqual(await echoProbe(theLab(), 'outsider', 'tcp', node.public, TCP), {
        name: node.name,
        address: F.outsider.v4,
      });
    }
    const replies = await Promise.all(
      nodes.map((n) => echoProbe(theLab(), 'outsider', 'tcp', n.private, TCP, FAIL_MS)),
    );
    assert.ok(
      replies.every((r) => r === undefined),
      JSON.stringify(replies),
    );
  });

  it('admin reaches every node’s public address from inside the SSH allow-list', async () => {
    for (const node of nodes) {
      assert.deepEqual(await echoProbe(theLab(), 'admin', 'tcp', node.public, TCP), {
        name: node.name,
        address: F.admin.v4,
      });
    }
  });

  it('destroy removes every namespace', async () => {
    await theLab().destroy();
    assert.deepEqual(await labNamespaces(prefix), []);
  });
});

describe('a larger fleet', () => {
  it('builds 25 nodes per site in bounded time, and the farthest nodes meet', async (t) => {
    const bigPrefix = randomPrefix();
    const started = Date.now();
    const big = await fleet({ prefix: bigPrefix, perSite: 25 });
    try {
      const took = Date.now() - started;
      t.diagnostic(`fleet({ perSite: 25 }) built in ${took} ms`);
      // Generous: about 2 s on an idle 2-core machine; others run tests at the same time.
      assert.ok(took < 60_000, `${took} ms`);
      const all = fleetNodes({ perSite: 25 });
      assert.deepEqual((await labNamespaces(bigPrefix)).length, all.length + 3);
      const [a25, b25] = [all[24]!, all[49]!];
      assert.ok(await ping(big, a25.name, b25.public));
      assert.ok(await ping(big, b25.name, all[0]!.public));
      assert.ok(!(await ping(big, a25.name, b25.private, FAIL_MS)));
    } finally {
      await big.destroy();
    }
    assert.deepEqual(await labNamespaces(bigPrefix), []);
  });
});
