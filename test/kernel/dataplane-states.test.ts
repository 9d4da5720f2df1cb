/**
 * The Linux dataplane cycled through states in a random order: whatever the way there, the
 * kernel ends where a fresh apply of the last state puts it (the router-states test Tailscale
 * keeps for its Linux router, here on a real kernel). In a network namespace made here, states
 * compiled as the agent compiles them (nat and ports FIPs in both families, moves, releases, a
 * masquerade, on-link claims on the uplink, a fleet mesh, routes and policy rules) are applied
 * one after the other in an order drawn from a seed (printed; STATES_SEED=N replays one), each
 * converging in one apply. Then a second, fresh namespace gets only the last state, and the two
 * kernels' dumps — ipferry's table (chains, rules, every set and map with its elements), its
 * routes and rules, the addresses and proxy entries on the uplink, the sysctls the state sets —
 * must be equal. Sysctls a state no longer needs are left as they were (ipferry never resets
 * one), so only those of the last state are compared. Both namespaces are deleted in `after`.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { compile } from '../../src/core/compile/index.js';
import type { FloatingIp, Pool } from '../../src/core/model.js';
import { NFT_FAMILY, NFT_TABLE, ROUTE_PROTO } from '../../src/core/names.js';
import { run } from '../../src/dataplane/exec.js';
import { LinuxDataplane } from '../../src/dataplane/linux.js';
import { diffIntent, isEmptyDiff } from '../../src/intent/diff.js';
import {
  decode,
  element,
  HOST_OWNER,
  type IntentElement,
  isKind,
} from '../../src/intent/elements.js';

const POOLS: Pool[] = [
  {
    name: 'routed',
    gateway: 'gw',
    delivery: 'routed',
    entries: [
      { kind: 'cidr', cidr: '203.0.113.0/24' },
      { kind: 'address', address: '192.0.2.2', shared: true },
      { kind: 'cidr', cidr: '2001:db8:f::/64' },
    ],
    tags: [],
    createdAt: '',
  },
  {
    name: 'onlink',
    gateway: 'gw',
    delivery: 'onlink',
    uplink: 'eth0',
    entries: [{ kind: 'cidr', cidr: '192.0.2.64/28' }],
    tags: [],
    createdAt: '',
  },
];

type Fip = { fip: FloatingIp; revision: number };

function fip(address: string, a?: FloatingIp['association'], fw: FloatingIp['forwards'] = []): Fip {
  const pool =
    address.startsWith('192.0.2.6') || address.startsWith('192.0.2.7') ? 'onlink' : 'routed';
  return {
    fip: {
      address,
      family: address.includes(':') ? 6 : 4,
      pool,
      shared: address === '192.0.2.2',
      tags: [],
      forwards: fw,
      allocatedAt: '',
      ...(a ? { association: a } : {}),
    },
    revision: 1,
  };
}

const nat = (target: string, masquerade = false): FloatingIp['association'] => ({
  mode: 'nat',
  target,
  associatedAt: '',
  ...(masquerade ? { masquerade } : {}),
});
const ports = (target: string): FloatingIp['association'] => ({
  mode: 'ports',
  target,
  associatedAt: '',
});
const forward = (id: string, port: number, portEnd: number, targetPort: number) => ({
  id,
  protocol: 'tcp' as const,
  port,
  portEnd,
  targetPort,
  target: '10.0.0.20',
});

/** Routes, rules and a mesh, as the tunnels, egress and mesh parts of compile give them. */
const EXTRA: IntentElement[] = [
  element('route', { prefix: '198.51.100.0/24', dev: 'lan0', via: '10.0.0.9' }, HOST_OWNER),
  element('route', { prefix: '198.51.100.128/25', table: 7450, dev: 'lan0' }, HOST_OWNER),
  element(
    'rule',
    { selector: { from: '203.0.113.40' }, table: 7450, priority: 10100 },
    '203.0.113.40',
  ),
  element('meshnat', { overlay: '100.80.0.2', address: '10.0.0.12' }, HOST_OWNER),
  element('meshmember', { address: '10.0.0.12' }, HOST_OWNER),
  element('meshssh', { prefix: '198.51.100.0/24' }, HOST_OWNER),
  element('meshport', { protocol: 'tcp', ports: { first: 443, last: 443 } }, HOST_OWNER),
  element('meshreject', { family: 'ipv4' }, HOST_OWNER),
];

/** The states, by name: the FIPs compiled, and whether the extra routing and mesh come too. */
const STATES: Record<string, { fips: Fip[]; extra?: boolean }> = {
  empty: { fips: [] },
  nat: {
    fips: [
      fip('203.0.113.10', nat('10.0.0.11')),
      fip('2001:db8:f::10', nat('fd00:10::11')),
      fip('203.0.113.12', nat('10.0.0.12', true)),
    ],
  },
  moved: {
    fips: [
      fip('203.0.113.10', nat('10.0.0.31')),
      fip('2001:db8:f::10', nat('fd00:10::12')),
      fip('203.0.113.13'),
    ],
  },
  forwards: {
    fips: [
      fip('192.0.2.2', ports('10.0.0.20'), [
        forward('f1', 25, 25, 25),
        forward('f2', 8000, 8010, 8000),
        forward('f3', 6000, 6002, 7000),
      ]),
      fip('203.0.113.10', nat('10.0.0.11')),
    ],
  },
  onlink: {
    fips: [fip('192.0.2.65', nat('10.0.0.65')), fip('192.0.2.66', nat('10.0.0.66'))],
    extra: true,
  },
  mixed: {
    fips: [
      fip('192.0.2.66', nat('10.0.0.67')),
      fip('192.0.2.2', ports('10.0.0.20'), [forward('f2', 8000, 8005, 8000)]),
      fip('2001:db8:f::10', nat('fd00:10::11')),
    ],
    extra: true,
  },
};

/** A small seeded generator (mulberry32): the order is replayed from the printed seed. */
function generator(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A gateway namespace with an uplink (eth0) and a LAN (lan0), as the conformance suite has. */
async function gateway(name: string): Promise<LinuxDataplane> {
  const peer = `${name}-x`;
  const ip = (...args: string[]) => run('ip', ['-n', name, ...args]);
  await run('ip', ['netns', 'add', name]);
  await run('ip', ['netns', 'add', peer]);
  await ip('link', 'set', 'lo', 'up');
  await ip('link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'up0', 'netns', peer);
  await ip('link', 'add', 'lan0', 'type', 'veth', 'peer', 'name', 'down0', 'netns', peer);
  await ip('address', 'add', '192.0.2.2/24', 'dev', 'eth0');
  await ip('address', 'add', '10.0.0.1/24', 'dev', 'lan0');
  for (const dev of ['eth0', 'lan0']) await ip('link', 'set', dev, 'up');
  const dataplane = new LinuxDataplane({ netns: name });
  await dataplane.check();
  return dataplane;
}

async function wanted(dp: LinuxDataplane, state: string): Promise<readonly IntentElement[]> {
  const { fips, extra } = STATES[state]!;
  const intent = compile({ pools: POOLS, fips }, 'gw', await dp.facts());
  if (!extra) return intent.elements;
  // The extras need the table too, also where no pool FIP does.
  return [...intent.elements, ...EXTRA];
}

/** Applies `state` in one diff and checks that nothing is left to do. */
async function converge(dp: LinuxDataplane, state: string): Promise<readonly IntentElement[]> {
  const want = await wanted(dp, state);
  await dp.apply(diffIntent(want, await dp.observe(want)));
  const left = diffIntent(want, await dp.observe(want));
  assert.ok(isEmptyDiff(left), `${state} needs more than one apply: ${JSON.stringify(left)}`);
  return want;
}

/** JSON with object keys in order and the handles nft numbers objects by left out. */
function canonical(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(canonical);
  if (value === null || typeof value !== 'object') return value;
  const entries = Object.entries(value)
    .filter(([k]) => k !== 'handle')
    .sort(([a], [b]) => (a < b ? -1 : 1));
  return Object.fromEntries(entries.map(([k, v]) => [k, canonical(v)]));
}

/** What ipferry may have touched in namespace `ns`, independent of how it got there. */
async function dump(ns: string, want: readonly IntentElement[]): Promise<string[]> {
  const inNs = (...args: string[]) => run('ip', ['-n', ns, ...args], { tolerate: () => true });
  const table = await run(
    'ip',
    ['netns', 'exec', ns, 'nft', '-j', 'list', 'table', NFT_FAMILY, NFT_TABLE],
    {
      tolerate: () => true,
    },
  );
  const nft = (JSON.parse(table.stdout || '{"nftables":[]}') as { nftables: unknown[] }).nftables
    .filter((o) => !('metainfo' in (o as object)))
    .map((o) => {
      const c = canonical(o) as Record<string, { elem?: unknown[] }>;
      // Elements of a set or map in whatever order the kernel keeps them: sorted.
      for (const kind of ['set', 'map']) {
        const elems = c[kind]?.elem;
        if (elems) c[kind]!.elem = elems.map((e) => JSON.stringify(e)).sort();
      }
      return `nft ${JSON.stringify(c)}`;
    })
    .sort();
  const lines = async (args: string[], tag: string) =>
    (await inNs(...args)).stdout
      .split('\n')
      .filter((l) => l.trim() !== '')
      .map((l) => `${tag} ${l.trim()}`)
      .sort();
  const sysctls = await Promise.all(
    want
      .flatMap((e) => (isKind(e, 'sysctl') ? [decode(e).path] : []))
      .map(async (path) => {
        const read = await run('ip', ['netns', 'exec', ns, 'sysctl', '-n', path], {
          tolerate: () => true,
        });
        return `sysctl ${path}=${read.stdout.trim()}`;
      }),
  );
  return [
    ...nft,
    ...(await lines(
      ['-4', 'route', 'show', 'table', 'all', 'proto', String(ROUTE_PROTO)],
      'route4',
    )),
    ...(await lines(
      ['-6', 'route', 'show', 'table', 'all', 'proto', String(ROUTE_PROTO)],
      'route6',
    )),
    ...(await lines(['-4', 'rule', 'show'], 'rule4')),
    ...(await lines(['-6', 'rule', 'show'], 'rule6')),
    ...(await lines(['-o', 'address', 'show', 'dev', 'eth0'], 'address')),
    ...(await lines(['neigh', 'show', 'proxy'], 'proxy')),
    ...sysctls.sort(),
  ];
}

describe('linux dataplane: states in a random order end where a fresh apply of the last one does', () => {
  const id = randomBytes(3).toString('hex');
  const cycled = `ipft-st-${id}`;
  const fresh = `ipft-sf-${id}`;
  const seed = Number(process.env.STATES_SEED ?? randomBytes(4).readUInt32BE());
  let dp: LinuxDataplane;

  before(async () => {
    dp = await gateway(cycled);
  });

  after(async () => {
    for (const ns of [cycled, `${cycled}-x`, fresh, `${fresh}-x`])
      await run('ip', ['netns', 'del', ns]).catch(() => undefined);
  });

  it(`cycles through the states (seed ${seed}) and matches a fresh apply of the last`, async () => {
    const random = generator(seed);
    const names = Object.keys(STATES);
    // Every state at least once, then as many more drawn at random, each differing from the last.
    const order = [...names].sort(() => random() - 0.5);
    while (order.length < names.length * 2) {
      const next = names[Math.floor(random() * names.length)]!;
      if (next !== order.at(-1)) order.push(next);
    }
    console.log(`states (seed ${seed}): ${order.join(' → ')}`);
    let want: readonly IntentElement[] = [];
    for (const state of order) want = await converge(dp, state);
    const last = order.at(-1)!;
    const other = await gateway(fresh);
    const freshWant = await converge(other, last);
    assert.deepEqual(
      [...freshWant].map((e) => `${e.kind} ${e.key} -> ${e.value}`),
      [...want].map((e) => `${e.kind} ${e.key} -> ${e.value}`),
      'both hosts compiled the same intent',
    );
    assert.deepEqual(await dump(cycled, want), await dump(fresh, want));
  });
});
