import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseAddress } from '../src/core/address.js';
import {
  type CompileState,
  compareElements,
  compile,
  diffFor,
  diffIntent,
  diffOwners,
  elementId,
  type HostIntent,
  type IntentElement,
  isEmptyDiff,
} from '../src/core/intent.js';
import { addForward, associate, move, newFloatingIp } from '../src/core/lifecycle.js';
import type { FloatingIp, Pool } from '../src/core/model.js';
import {
  type AssociateInput,
  type ForwardInput,
  validateAllocate,
  validateAssociate,
  validateForward,
} from '../src/core/validate.js';

const T0 = '2024-01-01T00:00:00.000Z';
const T1 = '2024-01-02T00:00:00.000Z';

function mkPool(name: string, gateway: string, extra: Partial<Pool> & Pick<Pool, 'entries'>): Pool {
  return { name, gateway, delivery: 'routed', tags: [], createdAt: T0, ...extra };
}

const ROUTED = mkPool('edge', 'gw1', {
  entries: [
    { kind: 'cidr', cidr: '203.0.113.0/28' },
    { kind: 'address', address: '192.0.2.1', shared: true },
  ],
});
const ONLINK = mkPool('lan', 'gw1', {
  delivery: 'onlink',
  uplink: 'eth0',
  entries: [
    { kind: 'cidr', cidr: '198.51.100.0/24' },
    { kind: 'cidr', cidr: '2001:db8::/64' },
    { kind: 'address', address: '198.51.100.0', shared: true },
  ],
});
const ELSEWHERE = mkPool('far', 'gw2', { entries: [{ kind: 'cidr', cidr: '100.64.0.0/28' }] });

function allocated(pool: Pool, address: string): FloatingIp {
  return newFloatingIp(pool, parseAddress(address), validateAllocate({}), T0);
}

function associated(pool: Pool, address: string, input: AssociateInput): FloatingIp {
  return associate(allocated(pool, address), validateAssociate(input), T1);
}

function forwarded(pool: Pool, address: string, ...inputs: ForwardInput[]): FloatingIp {
  return inputs.reduce(
    (fip, input) => addForward(fip, validateForward(input, fip.family), [], T1).fip,
    allocated(pool, address),
  );
}

/** A small fleet: two pools on gw1 (one routed, one on-link), one on gw2. */
function state(): CompileState {
  const fips: FloatingIp[] = [
    associated(ROUTED, '203.0.113.5', { target: '10.0.0.5' }),
    associated(ROUTED, '203.0.113.6', { target: '10.0.0.6', masquerade: true }),
    associated(ROUTED, '203.0.113.7', { target: '10.0.0.7', mode: 'routed', node: 'n1' }),
    associated(ROUTED, '203.0.113.10', { target: '10.0.0.10' }),
    forwarded(
      ROUTED,
      '192.0.2.1',
      { protocol: 'tcp', port: 80, targetPort: 8080, target: '10.0.0.8' },
      { protocol: 'tcp', port: '8000-8010', targetPort: 9000, target: '10.0.0.8' },
      { protocol: 'udp', port: 53, target: '10.0.0.9', node: 'n2' },
    ),
    associated(ONLINK, '198.51.100.10', { target: '10.0.1.10' }),
    allocated(ONLINK, '198.51.100.9'), // allocated, not associated
    forwarded(ONLINK, '2001:db8::10', { protocol: 'tcp', port: 443, target: '2001:db8:1::5' }),
    forwarded(ONLINK, '198.51.100.0', { protocol: 'tcp', port: 25, target: '10.0.1.25' }), // shared
    associated(ELSEWHERE, '100.64.0.5', { target: '10.9.0.5' }),
    { ...associated(ROUTED, '203.0.113.8', { target: '10.0.0.80' }), pool: 'deleted-pool' },
  ];
  return {
    pools: [ROUTED, ONLINK, ELSEWHERE],
    fips: fips.map((fip, i) => ({ fip, revision: 100 + i })),
  };
}

const GOLDEN_GW1: HostIntent = {
  node: 'gw1',
  elements: [
    { kind: 'claim', key: '198.51.100.10', value: 'eth0', owner: '198.51.100.10' },
    { kind: 'claim', key: '2001:db8::10', value: 'eth0', owner: '2001:db8::10' },
    { kind: 'nat', key: '198.51.100.10', value: '10.0.1.10', owner: '198.51.100.10' },
    { kind: 'nat', key: '203.0.113.10', value: '10.0.0.10', owner: '203.0.113.10' },
    { kind: 'nat', key: '203.0.113.5', value: '10.0.0.5', owner: '203.0.113.5' },
    { kind: 'nat', key: '203.0.113.6', value: '10.0.0.6 masquerade', owner: '203.0.113.6' },
    { kind: 'route', key: '203.0.113.7', value: 'n1', owner: '203.0.113.7' },
    { kind: 'forward', key: '192.0.2.1/tcp/80', value: '10.0.0.8:8080', owner: '192.0.2.1' },
    {
      kind: 'forward',
      key: '192.0.2.1/tcp/8000-8010',
      value: '10.0.0.8:9000-9010',
      owner: '192.0.2.1',
    },
    { kind: 'forward', key: '192.0.2.1/udp/53', value: '10.0.0.9:53', owner: '192.0.2.1' },
    { kind: 'forward', key: '198.51.100.0/tcp/25', value: '10.0.1.25:25', owner: '198.51.100.0' },
    {
      kind: 'forward',
      key: '2001:db8::10/tcp/443',
      value: '[2001:db8:1::5]:443',
      owner: '2001:db8::10',
    },
  ],
  fips: [
    { address: '192.0.2.1', revision: 104 },
    { address: '198.51.100.0', revision: 108 },
    { address: '198.51.100.9', revision: 106 },
    { address: '198.51.100.10', revision: 105 },
    { address: '203.0.113.5', revision: 100 },
    { address: '203.0.113.6', revision: 101 },
    { address: '203.0.113.7', revision: 102 },
    { address: '203.0.113.10', revision: 103 },
    { address: '2001:db8::10', revision: 107 },
  ],
};

/** Deterministic Fisher–Yates with a small LCG, so a failure can be reproduced. */
function shuffled<T>(list: readonly T[], seed: number): T[] {
  const out = [...list];
  let s = seed;
  for (let i = out.length - 1; i > 0; i--) {
    s = (s * 1103515245 + 12345) % 2147483648;
    const j = s % (i + 1);
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

const el = (
  kind: IntentElement['kind'],
  key: string,
  value: string,
  owner = key,
): IntentElement => ({
  kind,
  key,
  value,
  owner,
});

void describe('core/intent: compile', () => {
  void it('compiles a small state to the expected intent (golden)', () => {
    assert.deepEqual(compile(state(), 'gw1'), GOLDEN_GW1);
  });

  void it('is deterministic whatever the input order', () => {
    const base = state();
    const expected = JSON.stringify(compile(base, 'gw1'));
    for (let seed = 1; seed <= 25; seed++) {
      const s: CompileState = {
        pools: shuffled(base.pools, seed),
        fips: shuffled(base.fips, seed * 7 + 3),
      };
      assert.equal(JSON.stringify(compile(s, 'gw1')), expected, `seed ${seed}`);
    }
  });

  void it('sorts elements by kind (claim, nat, route, forward) then key', () => {
    const { elements } = compile(state(), 'gw1');
    const order = ['claim', 'nat', 'route', 'forward'];
    for (let i = 1; i < elements.length; i++) {
      const a = elements[i - 1]!;
      const b = elements[i]!;
      const ka = order.indexOf(a.kind);
      const kb = order.indexOf(b.kind);
      assert.ok(ka < kb || (ka === kb && a.key < b.key), `${elementId(a)} before ${elementId(b)}`);
      assert.ok(compareElements(a, b) < 0);
    }
    assert.deepEqual([...elements].sort(compareElements), elements);
  });

  void it('only includes FIPs of pools whose gateway is the node', () => {
    const gw2 = compile(state(), 'gw2');
    assert.deepEqual(gw2, {
      node: 'gw2',
      elements: [{ kind: 'nat', key: '100.64.0.5', value: '10.9.0.5', owner: '100.64.0.5' }],
      fips: [{ address: '100.64.0.5', revision: 109 }],
    });
    // A node that only holds targets (n1) gets nothing; nor does an unknown node.
    assert.deepEqual(compile(state(), 'n1'), { node: 'n1', elements: [], fips: [] });
    assert.deepEqual(compile(state(), 'nobody'), { node: 'nobody', elements: [], fips: [] });
    // A FIP whose pool is gone is not realised anywhere.
    for (const node of ['gw1', 'gw2']) {
      assert.equal(
        compile(state(), node).fips.some((f) => f.address === '203.0.113.8'),
        false,
      );
    }
  });

  void it('claims on-link FIPs on the uplink, but not shared or unassociated ones', () => {
    const claims = compile(state(), 'gw1').elements.filter((e) => e.kind === 'claim');
    assert.deepEqual(
      claims.map((e) => e.key),
      ['198.51.100.10', '2001:db8::10'],
    );
    assert.ok(claims.every((e) => e.value === 'eth0'));
  });

  void it('does not claim FIPs of routed pools', () => {
    const s: CompileState = {
      pools: [ROUTED],
      fips: [{ fip: associated(ROUTED, '203.0.113.5', { target: '10.0.0.5' }), revision: 1 }],
    };
    assert.deepEqual(compile(s, 'gw1').elements, [el('nat', '203.0.113.5', '10.0.0.5')]);
  });

  void it('renders port ranges and IPv6 targets', () => {
    const fip = forwarded(
      ONLINK,
      '2001:db8::20',
      { protocol: 'udp', port: '60000-60010', targetPort: 50000, target: '2001:db8:1::6' },
      { protocol: 'tcp', port: 22, targetPort: 2222, target: '2001:db8:1::6' },
    );
    const { elements } = compile({ pools: [ONLINK], fips: [{ fip, revision: 1 }] }, 'gw1');
    assert.deepEqual(elements, [
      el('claim', '2001:db8::20', 'eth0'),
      el('forward', '2001:db8::20/tcp/22', '[2001:db8:1::6]:2222', '2001:db8::20'),
      el('forward', '2001:db8::20/udp/60000-60010', '[2001:db8:1::6]:50000-50010', '2001:db8::20'),
    ]);
  });

  void it('uses the target as route value when a routed association lacks a node', () => {
    const fip: FloatingIp = {
      ...allocated(ROUTED, '203.0.113.9'),
      association: { mode: 'routed', target: '10.0.0.9', associatedAt: T1 },
    };
    assert.deepEqual(compile({ pools: [ROUTED], fips: [{ fip, revision: 1 }] }, 'gw1').elements, [
      el('route', '203.0.113.9', '10.0.0.9'),
    ]);
  });

  void it('returns fresh arrays and does not change its input', () => {
    const s = state();
    const copy = structuredClone(s);
    compile(s, 'gw1');
    assert.deepEqual(s, copy);
  });
});

void describe('core/intent: diffIntent', () => {
  void it('finds elements to add, replace and remove', () => {
    const desired = [
      el('nat', '203.0.113.5', '10.0.0.5'),
      el('nat', '203.0.113.6', '10.0.0.66'),
      el('claim', '198.51.100.10', 'eth0'),
    ];
    const observed = [
      el('nat', '203.0.113.6', '10.0.0.6'),
      el('nat', '203.0.113.7', '10.0.0.7'),
      el('claim', '198.51.100.10', 'eth0'),
      // Same key but another kind is a different element.
      el('route', '203.0.113.5', 'n1'),
    ];
    assert.deepEqual(diffIntent(desired, observed), {
      add: [el('nat', '203.0.113.5', '10.0.0.5')],
      replace: [
        { from: el('nat', '203.0.113.6', '10.0.0.6'), to: el('nat', '203.0.113.6', '10.0.0.66') },
      ],
      remove: [el('nat', '203.0.113.7', '10.0.0.7'), el('route', '203.0.113.5', 'n1')],
    });
  });

  void it('is empty when the kernel already holds the intent', () => {
    const { elements } = compile(state(), 'gw1');
    const d = diffIntent(elements, [...elements].reverse());
    assert.ok(isEmptyDiff(d));
    assert.deepEqual(d, { add: [], replace: [], remove: [] });
  });

  void it('adds everything on an empty kernel and removes everything for an empty intent', () => {
    const { elements } = compile(state(), 'gw1');
    const up = diffIntent(elements, []);
    assert.deepEqual(up.add, elements);
    assert.equal(isEmptyDiff(up), false);
    const down = diffIntent([], elements);
    assert.deepEqual(down.remove, elements);
    assert.deepEqual(down.add, []);
  });

  void it('replaces in place when a FIP moves', () => {
    const before = state();
    const observed = compile(before, 'gw1').elements;
    const fips = before.fips.map((r) =>
      r.fip.address === '203.0.113.5'
        ? { fip: move(r.fip, parseAddress('10.0.0.55'), undefined, T1), revision: r.revision + 1 }
        : r,
    );
    const desired = compile({ ...before, fips }, 'gw1').elements;
    const d = diffIntent(desired, observed);
    assert.deepEqual(d, {
      add: [],
      replace: [
        { from: el('nat', '203.0.113.5', '10.0.0.5'), to: el('nat', '203.0.113.5', '10.0.0.55') },
      ],
      remove: [],
    });
    assert.deepEqual(diffOwners(d), ['203.0.113.5']);
  });
});

void describe('core/intent: diffFor and diffOwners', () => {
  const d = diffIntent(
    [
      el('nat', '203.0.113.10', '10.0.0.10'),
      el('forward', '192.0.2.1/tcp/80', '10.0.0.8:80', '192.0.2.1'),
      el('nat', '203.0.113.9', '10.0.0.99'),
    ],
    [
      el('nat', '203.0.113.9', '10.0.0.9'),
      el('forward', '192.0.2.1/tcp/81', '10.0.0.8:81', '192.0.2.1'),
      el('claim', '2001:db8::1', 'eth0'),
    ],
  );

  void it('restricts a diff to one FIP', () => {
    assert.deepEqual(diffFor(d, '192.0.2.1'), {
      add: [el('forward', '192.0.2.1/tcp/80', '10.0.0.8:80', '192.0.2.1')],
      replace: [],
      remove: [el('forward', '192.0.2.1/tcp/81', '10.0.0.8:81', '192.0.2.1')],
    });
    assert.deepEqual(diffFor(d, '203.0.113.9'), {
      add: [],
      replace: [
        { from: el('nat', '203.0.113.9', '10.0.0.9'), to: el('nat', '203.0.113.9', '10.0.0.99') },
      ],
      remove: [],
    });
    assert.ok(isEmptyDiff(diffFor(d, '198.51.100.1')));
  });

  void it('keeps a replace whose old or new element belongs to the FIP', () => {
    const handover = {
      add: [],
      replace: [{ from: el('nat', 'k', 'a', '192.0.2.10'), to: el('nat', 'k', 'b', '192.0.2.11') }],
      remove: [],
    };
    assert.equal(diffFor(handover, '192.0.2.10').replace.length, 1);
    assert.equal(diffFor(handover, '192.0.2.11').replace.length, 1);
    assert.equal(diffFor(handover, '192.0.2.12').replace.length, 0);
  });

  void it('lists the owners of a diff in address order', () => {
    assert.deepEqual(diffOwners(d), ['192.0.2.1', '203.0.113.9', '203.0.113.10', '2001:db8::1']);
    assert.deepEqual(diffOwners({ add: [], replace: [], remove: [] }), []);
  });
});
