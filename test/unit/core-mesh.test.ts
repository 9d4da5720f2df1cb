import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { IpferryError } from '../../src/core/errors.js';
import {
  auditMesh,
  chooseOverlayAddress,
  classifyAddresses,
  compileMesh,
  effectiveLayer,
  holdMeshRemovals,
  mergePortSpecs,
  MESH_SETTLE_MS,
  type MeshPolicy,
  type MeshPolicyRecord,
  outermostPrefixes,
  parseInventory,
  policyInForce,
  standingRollback,
  unusableOverlay,
  validateMeshPolicy,
} from '../../src/core/mesh.js';
import { compareElements } from '../../src/intent/diff.js';
import { type IntentElement } from '../../src/intent/elements.js';
import type { NodeRecord } from '../../src/core/model.js';

const T = '2026-01-01T00:00:00.000Z';

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    return e instanceof IpferryError ? e.code : 'not an IpferryError';
  }
  return undefined;
}

function node(name: string, site: string, addresses: string[], overlayIp?: string): NodeRecord {
  return {
    name,
    site,
    addresses,
    reservedPorts: [],
    registeredAt: T,
    ...(overlayIp ? { overlayIp } : {}),
  };
}

const POLICY: MeshPolicy = validateMeshPolicy({
  overlay: '192.168.0.0/18',
  maxChange: 2,
  fleet: { openPorts: ['tcp/443'], sshAllow: ['192.0.2.0/24'] },
  sites: { a: { lans: ['10.1.0.0/24'], openPorts: ['udp/53'] }, b: { lans: ['10.2.0.0/24'] } },
  nodes: { a1: { rejectAll: true, openPorts: ['tcp/8000-8010'] } },
});

const NODES = [
  node('a1', 'a', ['10.1.0.11', '198.51.100.11', '2001:db8:a::11'], '192.168.0.11'),
  node('a2', 'a', ['10.1.0.12', '198.51.100.12'], '192.168.0.12'),
  node('b1', 'b', ['10.2.0.21', '203.0.113.21'], '192.168.0.21'),
  node('b2', 'b', ['10.2.0.22', '203.0.113.22'], '192.168.0.22'),
];
const RECORD: MeshPolicyRecord = { policy: POLICY, updatedAt: T };
const ALL_ALIVE = new Set(NODES.map((n) => n.name));

const keysOf = (elements: readonly IntentElement[], kind: string): string[] =>
  elements.filter((e) => e.kind === kind).map((e) => (e.value ? `${e.key}=${e.value}` : e.key));

describe('validateMeshPolicy', () => {
  it('returns the policy in canonical form, with empty layers filled in', () => {
    assert.equal(POLICY.overlay, '192.168.0.0/18');
    assert.deepEqual(POLICY.fleet.openPorts, ['tcp/443']);
    assert.deepEqual(validateMeshPolicy({ overlay: '10.200.0.0/16' }), {
      overlay: '10.200.0.0/16',
      fleet: {},
      sites: {},
      nodes: {},
    });
  });

  it('refuses an overlay that overlaps a site’s LAN, with its own code', () => {
    const code = codeOf(() =>
      validateMeshPolicy({ overlay: '10.1.0.0/16', sites: { a: { lans: ['10.1.0.0/24'] } } }),
    );
    assert.equal(code, 'IPF_E_MESH_OVERLAP');
  });

  it('reports an overlap with the other problems in one error, not in a later round', () => {
    try {
      validateMeshPolicy({
        overlay: '10.1.0.0/16',
        extra: true,
        fleet: 'open',
        sites: { a: { lans: ['192.0.2.0/24', '10.1.0.0/24'], openPorts: ['tcp/0'] }, b: null },
        nodes: { n1: { lans: ['10.9.0.0/24'] }, n2: [] },
      });
      assert.fail('accepted');
    } catch (e) {
      assert.ok(e instanceof IpferryError);
      assert.equal(e.code, 'IPF_E_VALIDATION');
      assert.deepEqual(
        e.problems.map((p) => `${p.path}: ${p.message}`),
        [
          'extra: is not known',
          'fleet: must be an object',
          'sites.a.openPorts[0]: 0 is not a port number (1–65535)',
          'sites.b: must be an object',
          'nodes.n1.lans: belongs to a site',
          'nodes.n2: must be an object',
          'sites.a.lans[1]: 10.1.0.0/24 overlaps the overlay 10.1.0.0/16 (first shared address 10.1.0.0)',
        ],
      );
    }
  });

  it('lists every problem at once: a nat override that is no address pair, ports out of range…', () => {
    try {
      validateMeshPolicy({
        overlay: '192.168.0.0/33',
        maxChange: -1,
        fleet: {
          openPorts: ['tcp/70000', 'icmp/1', 'udp/9-3'],
          sshAllow: ['192.0.2.1/24'],
          natOverrides: { '192.168.0.5': 'not-an-address', x: '10.0.0.1' },
          rejectAll: 'yes',
        },
        nodes: { 'Bad Name': {} },
        extra: 1,
      });
      assert.fail('accepted');
    } catch (e) {
      assert.ok(e instanceof IpferryError);
      assert.equal(e.code, 'IPF_E_VALIDATION');
      const paths = e.problems.map((p) => p.path);
      for (const path of [
        'overlay',
        'maxChange',
        'fleet.openPorts[0]',
        'fleet.openPorts[1]',
        'fleet.openPorts[2]',
        'fleet.sshAllow[0]',
        'fleet.natOverrides.192.168.0.5',
        'fleet.natOverrides.x',
        'fleet.rejectAll',
        'nodes.Bad Name',
        'extra',
      ])
        assert.ok(paths.includes(path), `${path} in ${paths.join(', ')}`);
      assert.match(
        e.problems.find((p) => p.path === 'fleet.sshAllow[0]')?.message ?? '',
        /did you mean 192\.0\.2\.0\/24/,
      );
    }
  });
});

describe('effective policy', () => {
  it('adds up lists from fleet, site and node; the node decides rejectAll', () => {
    const a1 = effectiveLayer(POLICY, 'a1', 'a');
    assert.deepEqual(a1.openPorts, ['tcp/443', 'udp/53', 'tcp/8000-8010']);
    assert.equal(a1.rejectAll, true);
    assert.equal(effectiveLayer(POLICY, 'b1', 'b').rejectAll, false);
    assert.deepEqual(effectiveLayer(POLICY, 'b1', 'b').openPorts, ['tcp/443']);
  });

  it('goes back to the previous policy when a trial runs out unconfirmed', () => {
    const previous = validateMeshPolicy({ overlay: '192.168.0.0/18' });
    const trial: MeshPolicyRecord = {
      policy: POLICY,
      trial: { previous, deadline: '2026-01-01T00:01:00.000Z' },
      updatedAt: T,
    };
    const before = policyInForce(trial, new Date('2026-01-01T00:00:30.000Z'));
    assert.equal(before.policy, POLICY);
    assert.equal(before.rolledBack, false);
    assert.equal(before.deadline?.toISOString(), '2026-01-01T00:01:00.000Z');
    const after = policyInForce(trial, new Date('2026-01-01T00:01:00.000Z'));
    assert.equal(after.policy, previous);
    assert.equal(after.rolledBack, true);
    const none = policyInForce({ ...trial, trial: { previous: null, deadline: T } }, new Date(T));
    assert.equal(none.policy, undefined);
  });

  it('tells the rollback that stands: from the deadline, before and after it is written down', () => {
    const previous = validateMeshPolicy({ overlay: '192.168.0.0/18' });
    const deadline = '2026-01-01T00:01:00.000Z';
    const trial: MeshPolicyRecord = { policy: POLICY, trial: { previous, deadline }, updatedAt: T };
    const story = { at: deadline, changedAt: T, policy: POLICY };
    assert.equal(
      standingRollback(trial, undefined, new Date('2026-01-01T00:00:59.000Z')),
      undefined,
    );
    assert.deepEqual(standingRollback(trial, undefined, new Date(deadline)), story);
    // Written down: the record holds the previous policy, the store remembers the change.
    const written: MeshPolicyRecord = { policy: previous, updatedAt: deadline };
    assert.deepEqual(standingRollback(written, story, new Date('2026-01-02T00:00:00.000Z')), story);
    assert.deepEqual(
      standingRollback(undefined, story, new Date(deadline)),
      story,
      'no policy left',
    );
    // A trial set since ends the story (setting a policy also deletes what was remembered).
    const next: MeshPolicyRecord = {
      ...trial,
      trial: { previous, deadline: '2026-01-03T00:00:00.000Z' },
    };
    assert.equal(standingRollback(next, story, new Date('2026-01-02T00:00:00.000Z')), undefined);
  });
});

describe('compileMesh', () => {
  const now = new Date(T);

  it('routes the overlay prefix via lo, from the source the host would use', () => {
    const state = { record: RECORD, nodes: NODES, alive: ALL_ALIVE };
    const route = (facts?: Parameters<typeof compileMesh>[3]): string[] =>
      keysOf(compileMesh(state, 'a1', now, facts).elements, 'route');
    // The host's own default route decides, as it did before the mesh routed the overlay.
    const viaDefault = { family: 4 as const, dev: 'eth0', via: '198.51.100.1', src: '10.1.0.11' };
    assert.deepEqual(
      route({ addresses: ['10.1.0.11', '198.51.100.11'], defaultRoutes: [viaDefault] }),
      ['192.168.0.0/18=dev lo src 10.1.0.11'],
    );
    // No default route: the public address, held by the host; else the private one; else none.
    assert.deepEqual(route({ addresses: ['10.1.0.11', '198.51.100.11'], defaultRoutes: [] }), [
      '192.168.0.0/18=dev lo src 198.51.100.11',
    ]);
    assert.deepEqual(route({ addresses: ['10.1.0.11'], defaultRoutes: [] }), [
      '192.168.0.0/18=dev lo src 10.1.0.11',
    ]);
    assert.deepEqual(route({ addresses: ['10.9.9.9'] }), ['192.168.0.0/18=dev lo']);
    // Without facts (a fake dataplane that knows none), the node record's.
    assert.deepEqual(route(), ['192.168.0.0/18=dev lo src 198.51.100.11']);
    // Compile sorts kinds: the route before every mesh kind.
    assert.equal(compileMesh(state, 'a1', now).elements[0]?.kind, 'route');
    // No mesh, or no overlay address yet: no route.
    assert.deepEqual(
      keysOf(compileMesh({ ...state, record: undefined }, 'a1', now).elements, 'route'),
      [],
    );
    const bare = NODES.map((n) => (n.name === 'a1' ? { ...n, overlayIp: undefined } : n));
    assert.deepEqual(
      keysOf(compileMesh({ ...state, nodes: bare }, 'a1', now).elements, 'route'),
      [],
    );
  });

  it('maps same-site members to their private address and other sites to their public one', () => {
    const a2 = compileMesh({ record: RECORD, nodes: NODES, alive: ALL_ALIVE }, 'a2', now);
    assert.deepEqual(keysOf(a2.elements, 'meshnat').sort(), [
      '192.168.0.11=10.1.0.11',
      '192.168.0.12=10.1.0.12',
      '192.168.0.21=203.0.113.21',
      '192.168.0.22=203.0.113.22',
    ]);
    // Every other member's addresses are let in; its own are not listed. Sorted by key, as
    // compile() sorts every element.
    assert.deepEqual(keysOf(a2.elements, 'meshmember'), [
      '10.1.0.11',
      '10.2.0.21',
      '10.2.0.22',
      '198.51.100.11',
      '2001:db8:a::11',
      '203.0.113.21',
      '203.0.113.22',
    ]);
    // Toward a same-site member's private address, a2 leaves from its own private address.
    assert.deepEqual(keysOf(a2.elements, 'meshsnat'), ['10.1.0.11=10.1.0.12']);
    assert.deepEqual(keysOf(a2.elements, 'meshport'), ['tcp . 443', 'udp . 53']);
    assert.deepEqual(keysOf(a2.elements, 'meshssh'), ['192.0.2.0/24']);
    assert.deepEqual(keysOf(a2.elements, 'meshreject'), []);
    assert.equal(a2.members, 4);
  });

  it('switches reject_all per node, per family it has', () => {
    const a1 = compileMesh({ record: RECORD, nodes: NODES, alive: ALL_ALIVE }, 'a1', now);
    assert.deepEqual(keysOf(a1.elements, 'meshreject'), ['ipv4', 'ipv6']);
    assert.deepEqual(keysOf(a1.elements, 'meshport'), ['tcp . 443', 'tcp . 8000-8010', 'udp . 53']);
  });

  it('leaves out members whose agent is not alive, and applies nat overrides', () => {
    const record: MeshPolicyRecord = {
      policy: validateMeshPolicy({
        ...POLICY,
        nodes: { a2: { natOverrides: { '192.168.0.21': '10.9.9.9', '192.168.1.1': '10.9.9.1' } } },
      }),
      updatedAt: T,
    };
    const a2 = compileMesh({ record, nodes: NODES, alive: new Set(['a2', 'b1']) }, 'a2', now);
    assert.deepEqual(keysOf(a2.elements, 'meshnat').sort(), [
      '192.168.0.12=10.1.0.12',
      '192.168.0.21=10.9.9.9',
      '192.168.1.1=10.9.9.1',
    ]);
    assert.equal(a2.members, 2);
  });

  it('gives a node without an overlay address, or without a policy, nothing', () => {
    const fresh = [...NODES, node('c1', 'a', ['10.1.0.31'])];
    const c1 = compileMesh({ record: RECORD, nodes: fresh, alive: ALL_ALIVE }, 'c1', now);
    assert.deepEqual(c1.elements, []);
    assert.match(c1.notes[0] ?? '', /no overlay address/);
    assert.deepEqual(compileMesh({ nodes: NODES, alive: ALL_ALIVE }, 'a1', now).elements, []);
  });
});

describe('compileMesh on every pass', () => {
  const now = new Date(T);
  /** compileMesh from scratch: a copy of the node array shares nothing remembered. */
  const fresh = (state: Parameters<typeof compileMesh>[0], name: string) =>
    compileMesh({ ...state, nodes: [...state.nodes] }, name, now);

  it("gives its elements in compile()'s order", () => {
    const a2 = compileMesh({ record: RECORD, nodes: NODES, alive: ALL_ALIVE }, 'a2', now);
    assert.deepEqual(a2.elements, [...a2.elements].sort(compareElements));
    const pinned = compileMesh(
      {
        record: {
          policy: validateMeshPolicy({
            ...POLICY,
            nodes: { a2: { natOverrides: { '192.168.0.1': '10.9.9.1' } } },
          }),
          updatedAt: T,
        },
        nodes: NODES,
        alive: ALL_ALIVE,
      },
      'a2',
      now,
    );
    assert.deepEqual(pinned.elements, [...pinned.elements].sort(compareElements));
    assert.deepEqual(keysOf(pinned.elements, 'meshnat')[0], '192.168.0.1=10.9.9.1');
  });

  it('reuses nothing that changed: the same node array with another policy, live set or node', () => {
    const nodes = [...NODES];
    const base = { record: RECORD, nodes, alive: ALL_ALIVE };
    const first = compileMesh(base, 'a2', now);
    // Another policy: a port opened, a NAT override for a member.
    const next: MeshPolicyRecord = {
      policy: validateMeshPolicy({
        ...POLICY,
        fleet: { ...POLICY.fleet, openPorts: ['tcp/443', 'tcp/9000'] },
        nodes: { a2: { natOverrides: { '192.168.0.21': '10.9.9.9' } } },
      }),
      updatedAt: T,
    };
    const changed = compileMesh({ ...base, record: next }, 'a2', now);
    assert.deepEqual(changed.elements, fresh({ ...base, record: next }, 'a2').elements);
    assert.ok(keysOf(changed.elements, 'meshport').includes('tcp . 9000'));
    assert.ok(keysOf(changed.elements, 'meshnat').includes('192.168.0.21=10.9.9.9'));
    // Another live set, another node, then back: each as if compiled afresh.
    const fewer = new Set(['a2', 'b1']);
    assert.deepEqual(
      compileMesh({ ...base, alive: fewer }, 'a2', now).elements,
      fresh({ ...base, alive: fewer }, 'a2').elements,
    );
    assert.deepEqual(compileMesh(base, 'b1', now).elements, fresh(base, 'b1').elements);
    assert.deepEqual(compileMesh(base, 'a2', now).elements, first.elements);
    assert.equal(compileMesh(base, 'a2', now).members, 4);
  });
});

describe('disjoint set elements', () => {
  it('merges overlapping SSH prefixes and port ranges from the layers, and keeps ports always open', () => {
    assert.deepEqual(
      outermostPrefixes([
        '10.0.0.0/8',
        '10.1.0.0/16',
        '192.0.2.0/24',
        '192.0.2.0/24',
        '2001:db8::/32',
        '2001:db8:1::/48',
      ]),
      ['10.0.0.0/8', '192.0.2.0/24', '2001:db8::/32'],
    );
    assert.deepEqual(
      mergePortSpecs(['tcp/8000-8010', 'tcp/8005', 'tcp/8011', 'udp/53', 'tcp/22', 'udp/53-54']),
      ['tcp . 22', 'tcp . 8000-8011', 'udp . 53-54'],
    );
    const record: MeshPolicyRecord = {
      policy: validateMeshPolicy({
        overlay: '192.168.0.0/18',
        fleet: { sshAllow: ['10.0.0.0/8'], openPorts: ['udp/51000-52000'] },
        nodes: { a2: { sshAllow: ['10.1.0.0/16'] } },
      }),
      updatedAt: T,
    };
    const a2 = compileMesh(
      { record, nodes: NODES, alive: ALL_ALIVE, alwaysOpen: ['udp/51820', 'tcp/7447'] },
      'a2',
      new Date(T),
    );
    assert.deepEqual(keysOf(a2.elements, 'meshssh'), ['10.0.0.0/8']);
    assert.deepEqual(keysOf(a2.elements, 'meshport'), ['tcp . 7447', 'udp . 51000-52000']);
  });
});

describe('holdMeshRemovals', () => {
  const now = new Date(T);
  const full = compileMesh({ record: RECORD, nodes: NODES, alive: ALL_ALIVE }, 'a2', now).elements;

  it('holds a change that drops more than maxChange members, keeping them', () => {
    const fewer = compileMesh({ record: RECORD, nodes: NODES, alive: new Set(['a2']) }, 'a2', now);
    const held = holdMeshRemovals(fewer.elements, full, 2, false);
    assert.deepEqual(held.keeping, ['192.168.0.11', '192.168.0.21', '192.168.0.22']);
    assert.deepEqual(
      keysOf(held.elements, 'meshnat').sort(),
      keysOf(full, 'meshnat').sort(),
      'every member kept',
    );
    // Confirmed: the change goes through.
    assert.deepEqual(holdMeshRemovals(fewer.elements, full, 2, true).keeping, []);
  });

  it('lets up to maxChange members go once the departure has settled; additions pass at once', () => {
    const two = compileMesh(
      { record: RECORD, nodes: NODES, alive: new Set(['a2', 'a1']) },
      'a2',
      now,
    );
    const meshnats = (r: { elements: readonly IntentElement[] }) =>
      keysOf(r.elements, 'meshnat').length;
    // Two leave at t=0: kept while it settles, with a time to look again.
    const first = holdMeshRemovals(two.elements, full, 2, false, new Map(), 0);
    assert.deepEqual(first.keeping, []);
    assert.equal(meshnats(first), 4);
    assert.equal(first.wakeInMs, MESH_SETTLE_MS);
    // Settled: dropped.
    const later = holdMeshRemovals(
      two.elements,
      full,
      2,
      false,
      first.leavingSince,
      MESH_SETTLE_MS,
    );
    assert.equal(meshnats(later), 2);
    assert.equal(later.wakeInMs, undefined);
    // Additions pass at once, and without maxChange departures too.
    assert.equal(meshnats(holdMeshRemovals(full, two.elements, 2, false)), 4);
    assert.equal(meshnats(holdMeshRemovals(two.elements, full, undefined, false)), 2);
  });

  it('counts departures that trickle in within the settling time as one change', () => {
    const fleet = compileMesh({ record: RECORD, nodes: NODES, alive: ALL_ALIVE }, 'a2', now);
    const alive = (names: string[]) =>
      compileMesh({ record: RECORD, nodes: NODES, alive: new Set(names) }, 'a2', now).elements;
    // b2 goes at t=0, b1 at t=2 s, a1 at t=4 s: each step alone is within maxChange 2…
    const t0 = holdMeshRemovals(alive(['a2', 'a1', 'b1']), fleet.elements, 2, false, new Map(), 0);
    const t2 = holdMeshRemovals(
      alive(['a2', 'a1']),
      fleet.elements,
      2,
      false,
      t0.leavingSince,
      2000,
    );
    assert.deepEqual(t2.keeping, []);
    const t4 = holdMeshRemovals(alive(['a2']), fleet.elements, 2, false, t2.leavingSince, 4000);
    // …but together they are three: held, nobody dropped.
    assert.equal(t4.keeping.length, 3);
    assert.equal(keysOf(t4.elements, 'meshnat').length, 4);
  });
});

describe('overlay addresses', () => {
  it('starts from a point the name hashes to and skips taken, network and broadcast addresses', () => {
    const a = chooseOverlayAddress('192.168.0.0/30', 'x', new Set());
    assert.ok(a === '192.168.0.1' || a === '192.168.0.2');
    const other = a === '192.168.0.1' ? '192.168.0.2' : '192.168.0.1';
    assert.equal(chooseOverlayAddress('192.168.0.0/30', 'x', new Set([a])), other);
    assert.equal(chooseOverlayAddress('192.168.0.0/30', 'x', new Set([a, other])), undefined);
    const spread = new Set(
      Array.from({ length: 200 }, (_, i) =>
        chooseOverlayAddress('192.168.0.0/18', `n${i}`, new Set()),
      ),
    );
    assert.ok(spread.size > 180, `200 names start at ${spread.size} different addresses`);
  });

  it('classifies addresses as private or public, leaving out loopback and link-local', () => {
    assert.deepEqual(
      classifyAddresses([
        '10.1.0.1',
        '198.51.100.1',
        '127.0.0.1',
        '169.254.1.1',
        'fe80::1',
        'fd00::1',
        '2001:db8::1',
        '100.64.0.1',
      ]),
      { private: ['10.1.0.1', '100.64.0.1', 'fd00::1'], public: ['198.51.100.1', '2001:db8::1'] },
    );
  });
});

describe('inventory and audit', () => {
  it('parses hosts, and fails naming the first bad line', () => {
    const hosts = parseInventory('# fleet\na1 10.1.0.11,198.51.100.11 site=a\n\nzz 10.9.0.1\n');
    assert.deepEqual(
      hosts.map((h) => [h.name, h.addresses.join(','), h.site ?? '-', h.line]),
      [
        ['a1', '10.1.0.11,198.51.100.11', 'a', 2],
        ['zz', '10.9.0.1', '-', 4],
      ],
    );
    for (const bad of [
      'a1',
      'a1 10.1.0.300',
      'A1 10.0.0.1',
      'a1 10.0.0.1 rack=3',
      'a1 10.0.0.1\na1 10.0.0.2',
    ]) {
      assert.throws(
        () => parseInventory(bad, 'hosts.txt'),
        (e: unknown) =>
          e instanceof IpferryError &&
          e.code === 'IPF_E_INVENTORY' &&
          /hosts\.txt line \d/.test(e.message),
        bad,
      );
    }
  });

  it('finds unregistered hosts, lagging nodes, reject_all per node and overlay usage', () => {
    const audit = auditMesh({
      revision: 50,
      record: RECORD,
      nodes: NODES.map((record) => ({
        record,
        ...(record.name === 'b2'
          ? // Dead, its last report kept: what it applied before it died.
            { lastReport: { appliedRevision: 45 } }
          : {
              liveness: {
                name: record.name,
                since: T,
                mesh: { appliedRevision: record.name === 'b1' ? 40 : 50 },
              },
            }),
      })),
      inventory: parseInventory('a1 10.1.0.11\nbee 203.0.113.21\nzz 10.9.0.1\n'),
      now: new Date(T),
    });
    assert.deepEqual(
      audit.unregistered.map((h) => h.name),
      ['zz'],
    );
    assert.deepEqual(audit.unlisted, ['a2', 'b2']);
    assert.deepEqual(audit.lagging, [
      { node: 'b1', appliedRevision: 40, alive: true },
      { node: 'b2', appliedRevision: 45, alive: false },
    ]);
    assert.deepEqual(audit.rejectAll, { on: ['a1'], off: ['a2', 'b1', 'b2'] });
    assert.deepEqual(audit.overlay, { prefix: '192.168.0.0/18', used: 4, size: 16382 });
  });
});

describe('the overlay: private address space of a sane size (issue 12, finding 5)', () => {
  const problemOf = (overlay: unknown, stored = false): string | undefined => {
    try {
      validateMeshPolicy({ overlay }, undefined, { stored });
      return undefined;
    } catch (e) {
      assert.ok(e instanceof IpferryError);
      assert.equal(e.code, 'IPF_E_VALIDATION');
      assert.deepEqual(
        e.problems.map((p) => p.path),
        ['overlay'],
      );
      return e.problems[0]!.message;
    }
  };

  it('accepts a prefix inside RFC 1918, RFC 6598 or 198.18/15, from /16 to /29', () => {
    for (const overlay of [
      '192.168.0.0/18',
      '10.200.0.0/16',
      '172.31.255.248/29',
      '100.64.0.0/16',
      '100.127.0.0/24',
      '198.19.0.0/16',
    ]) {
      assert.equal(problemOf(overlay), undefined, overlay);
    }
  });

  it('refuses the whole internet, public space and prefixes that stick out of a private block', () => {
    for (const overlay of ['0.0.0.0/0', '147.195.0.0/16', '172.15.0.0/16', '100.128.0.0/16']) {
      assert.match(problemOf(overlay) ?? '', /is not private address space/, overlay);
    }
    // 198.18.0.0/15 reaches 198.19.255.255, no further.
    assert.match(problemOf('198.20.0.0/16') ?? '', /not private/);
    assert.match(problemOf('192.168.0.0/15') ?? '', /not private/);
  });

  it('refuses sizes out of bounds, IPv6 and what is no prefix, saying why', () => {
    assert.match(problemOf('10.0.0.0/8') ?? '', /wider than \/16/);
    assert.match(problemOf('100.64.0.0/10') ?? '', /wider than \/16/);
    assert.match(problemOf('192.168.0.0/30') ?? '', /narrower than \/29/);
    assert.match(problemOf('fd00::/64') ?? '', /IPv4 only \(IPv6 overlays, ULA fd00::\/8 too/);
    assert.match(problemOf('192.168.0.1/18') ?? '', /did you mean 192\.168\.0\.0\/18/);
    assert.match(problemOf(5) ?? '', /must be an IPv4 prefix in private address space/);
  });

  it('holds a stored policy to the address space only: older versions accepted other sizes', () => {
    assert.equal(problemOf('10.0.0.0/12', true), undefined);
    assert.equal(problemOf('192.168.0.0/30', true), undefined);
    assert.match(problemOf('0.0.0.0/0', true) ?? '', /not private/);
    assert.equal(unusableOverlay('10.0.0.0/8'), undefined);
    assert.match(unusableOverlay({}) ?? '', /is not an IPv4 prefix/);
  });

  it('skips a stored policy whose overlay is public: no member gets or maps such an address', () => {
    const now = new Date(T);
    // As the review found it: written around the API, with a node holding a public address.
    const bad: MeshPolicyRecord = {
      policy: { ...POLICY, overlay: '0.0.0.0/0' },
      updatedAt: T,
    };
    const nodes = [...NODES, node('zz', 'a', ['10.1.0.99'], '147.195.239.225')];
    const inForce = policyInForce(bad, now);
    assert.equal(inForce.policy, undefined);
    assert.match(
      inForce.skipped ?? '',
      /^the mesh policy is skipped: overlay 0\.0\.0\.0\/0 is not private/,
    );
    const mesh = compileMesh({ record: bad, nodes, alive: ALL_ALIVE }, 'a1', now);
    assert.deepEqual(mesh.elements, []);
    assert.equal(mesh.waitingForOverlay, undefined);
    assert.deepEqual(mesh.notes, [inForce.skipped]);
    // Garbage where the overlay should be is skipped the same way, never thrown.
    const garbage = { ...bad, policy: { ...POLICY, overlay: 5 } } as unknown as MeshPolicyRecord;
    assert.match(
      compileMesh({ record: garbage, nodes, alive: ALL_ALIVE }, 'a1', now).notes[0] ?? '',
      /"?5"? is not an IPv4 prefix/,
    );
    // A trial that runs out goes back to its previous policy only if that one is usable.
    const trial: MeshPolicyRecord = {
      policy: POLICY,
      trial: { previous: bad.policy, deadline: '2026-01-01T00:01:00.000Z' },
      updatedAt: T,
    };
    assert.equal(policyInForce(trial, now).policy, POLICY);
    const after = policyInForce(trial, new Date('2026-01-01T00:02:00.000Z'));
    assert.equal(after.policy, undefined);
    assert.equal(after.rolledBack, true);
    assert.match(after.skipped ?? '', /skipped/);
    // The audit shows no overlay to use.
    assert.equal(auditMesh({ record: bad, nodes: [], now, revision: 1 }).overlay, undefined);
  });
});
