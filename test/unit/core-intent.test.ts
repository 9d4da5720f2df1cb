import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseAddress, tryParseAddress } from '../../src/core/address.js';
import {
  type CompileState,
  compile,
  ipv4Value,
  type HostIntent,
} from '../../src/core/compile/index.js';
import { claimElement, parseClaim } from '../../src/core/compile/gateway.js';
import {
  compareElements,
  diffFor,
  applyDiff,
  applyById,
  diffById,
  diffIntent,
  diffOwners,
  elementId,
  type IntentDiff,
  isEmptyDiff,
} from '../../src/intent/diff.js';
import { type ElementKind, HOST_OWNER, type IntentElement } from '../../src/intent/elements.js';
import { type HostFacts, NO_FACTS } from '../../src/intent/facts.js';
import { addForward, associate, move, newFloatingIp } from '../../src/core/lifecycle.js';
import type { FloatingIp, NodeRecord, Pool } from '../../src/core/model.js';
import {
  NFT_SKELETON_VERSION,
  SYSCTL_IPV4_FORWARD,
  SYSCTL_IPV6_FORWARD,
} from '../../src/core/names.js';
import { tunnelName } from '../../src/core/tunnel.js';
import {
  type AssociateInput,
  type ForwardInput,
  validateAllocate,
  validateAssociate,
  validateForward,
} from '../../src/core/validate.js';

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
    { kind: 'cidr', cidr: '198.51.100.0/28' },
    { kind: 'cidr', cidr: '2001:db8::/64' },
    { kind: 'address', address: '198.51.100.100', shared: true },
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

/** One FIP alone in its pool's state, for focused tests. */
function only(pool: Pool, fip: FloatingIp): CompileState {
  return { pools: [pool], fips: [{ fip, revision: 1 }] };
}

/** What gw1 itself has: two interfaces, the shared addresses, and one address inside a pool. */
const FACTS: HostFacts = {
  interfaces: ['wg0', 'eth0'],
  addresses: ['192.0.2.1', '198.51.100.100', '198.51.100.3', 'fe80::1', '10.0.0.1'],
};

/** A small fleet: two pools on gw1 (one routed, one on-link), one on gw2. */
function state(): CompileState {
  const fips: FloatingIp[] = [
    associated(ROUTED, '203.0.113.5', { target: '10.0.0.5' }),
    associated(ROUTED, '203.0.113.6', { target: '10.0.0.6', masquerade: true }),
    associated(ROUTED, '203.0.113.7', { target: '10.0.0.7', mode: 'routed', node: 'n1' }),
    associated(ROUTED, '203.0.113.10', { target: '10.0.0.10' }),
    forwarded(
      ROUTED,
      '192.0.2.1', // shared
      { protocol: 'tcp', port: 80, targetPort: 8080, target: '10.0.0.8' },
      { protocol: 'tcp', port: '8000-8002', targetPort: 9000, target: '10.0.0.8' },
      { protocol: 'udp', port: 53, target: '10.0.0.9' },
      { protocol: 'tcp', port: '6000-6001', target: '10.0.0.8' },
    ),
    associated(ONLINK, '198.51.100.10', { target: '10.0.1.10' }),
    allocated(ONLINK, '198.51.100.9'), // allocated, not associated
    forwarded(ONLINK, '2001:db8::10', { protocol: 'tcp', port: 443, target: '2001:db8:1::5' }),
    forwarded(ONLINK, '198.51.100.100', { protocol: 'tcp', port: 25, target: '10.0.1.25' }), // shared
    associated(ONLINK, '198.51.100.3', { target: '10.0.1.3' }), // the gateway's own: refused
    associated(ELSEWHERE, '100.64.0.5', { target: '10.9.0.5' }),
    { ...associated(ROUTED, '203.0.113.8', { target: '10.0.0.80' }), pool: 'deleted-pool' },
  ];
  return {
    pools: [ROUTED, ONLINK, ELSEWHERE],
    fips: fips.map((fip, i) => ({ fip, revision: 100 + i })),
  };
}

/** Element builders: `by(owner)(kind, key, value)`. */
const by =
  (owner: string) =>
  (kind: ElementKind, key: string, value = ''): IntentElement => ({ kind, key, value, owner });
const host = by(HOST_OWNER);
const edge = by('pool:edge');
const lan = by('pool:lan');
/** An element owned by the FIP that is its key (counter, claim, dnat, route). */
const own = (kind: ElementKind, key: string, value = ''): IntentElement =>
  by(key)(kind, key, value);

const REFUSED_REASON = (address: string): string =>
  `${address} is an address of the gateway itself: only port forwards may use it`;
const NO_KEY_REASON = (node: string): string =>
  `node ${node} has no tunnel key: is its agent running with the Linux dataplane?`;

/** A registered node with a tunnel key (32 bytes of `seed`, base64), as routed mode needs. */
function keyed(name: string, seed: number): NodeRecord {
  return {
    name,
    publicKey: Buffer.alloc(32, seed).toString('base64'),
    addresses: [],
    reservedPorts: [],
    registeredAt: T0,
  };
}
const KEYED_NODES: readonly NodeRecord[] = [keyed('gw1', 1), keyed('gw2', 2), keyed('n1', 3)];

const GOLDEN_GW1: HostIntent = {
  node: 'gw1',
  elements: [
    host('table', 'inet ipferry', NFT_SKELETON_VERSION),
    host('sysctl', 'net.ipv4.ip_forward', '1'),
    // Proxied ARP answers (routed on-link FIPs) go out at once.
    host('sysctl', 'net.ipv4.neigh.eth0.proxy_delay', '0'),
    host('sysctl', 'net.ipv6.conf.all.forwarding', '1'),
    // The on-link pool has IPv6 addresses: proxy NDP on its uplink.
    host('sysctl', 'net.ipv6.conf.eth0.proxy_ndp', '1'),
    host('hairpin', 'eth0', 'eth0'),
    host('hairpin', 'wg0', 'wg0'),
    lan('drop', '198.51.100.1-198.51.100.2'),
    lan('drop', '198.51.100.4-198.51.100.14'),
    lan('drop', '2001:db8::-2001:db8::ffff:ffff:ffff:ffff'),
    edge('drop', '203.0.113.0-203.0.113.15'),
    own('claim', '198.51.100.10', 'eth0'),
    own('claim', '2001:db8::10', 'eth0'),
    own('counter', '192.0.2.1'),
    own('counter', '198.51.100.10'),
    own('counter', '198.51.100.100'),
    own('counter', '2001:db8::10'),
    own('counter', '203.0.113.10'),
    own('counter', '203.0.113.5'),
    own('counter', '203.0.113.6'),
    // 203.0.113.7 is routed to n1, which has no node record (so no tunnel key): refused, not
    // counted, and still dropped like an unassociated FIP.
    own('dnat', '198.51.100.10', '10.0.1.10'),
    own('dnat', '203.0.113.10', '10.0.0.10'),
    own('dnat', '203.0.113.5', '10.0.0.5'),
    own('dnat', '203.0.113.6', '10.0.0.6'),
    by('203.0.113.10')('snat', '10.0.0.10', '203.0.113.10'),
    by('203.0.113.5')('snat', '10.0.0.5', '203.0.113.5'),
    by('203.0.113.6')('snat', '10.0.0.6', '203.0.113.6'),
    by('198.51.100.10')('snat', '10.0.1.10', '198.51.100.10'),
    by('203.0.113.6')('masq', '10.0.0.6'),
    by('192.0.2.1')('fwd', '192.0.2.1 . tcp . 6000-6001', '10.0.0.8'),
    by('192.0.2.1')('fwd', '192.0.2.1 . udp . 53', '10.0.0.9'),
    by('198.51.100.100')('fwd', '198.51.100.100 . tcp . 25', '10.0.1.25'),
    by('2001:db8::10')('fwd', '2001:db8::10 . tcp . 443', '2001:db8:1::5'),
    by('192.0.2.1')('fwdport', '192.0.2.1 . tcp . 80', '10.0.0.8 . 8080'),
    by('192.0.2.1')('fwdport', '192.0.2.1 . tcp . 8000', '10.0.0.8 . 9000'),
    by('192.0.2.1')('fwdport', '192.0.2.1 . tcp . 8001', '10.0.0.8 . 9001'),
    by('192.0.2.1')('fwdport', '192.0.2.1 . tcp . 8002', '10.0.0.8 . 9002'),
  ],
  fips: [
    { address: '192.0.2.1', revision: 104 },
    { address: '198.51.100.3', revision: 109 },
    { address: '198.51.100.9', revision: 106 },
    { address: '198.51.100.10', revision: 105 },
    { address: '198.51.100.100', revision: 108 },
    { address: '203.0.113.5', revision: 100 },
    { address: '203.0.113.6', revision: 101 },
    { address: '203.0.113.7', revision: 102 },
    { address: '203.0.113.10', revision: 103 },
    { address: '2001:db8::10', revision: 107 },
  ],
  refused: [
    { address: '198.51.100.3', reason: REFUSED_REASON('198.51.100.3') },
    { address: '203.0.113.7', reason: NO_KEY_REASON('n1') },
  ],
};

const KINDS: readonly ElementKind[] = [
  'table',
  'sysctl',
  'hairpin',
  'drop',
  'claim',
  'counter',
  'dnat',
  'snat',
  'masq',
  'fwd',
  'fwdport',
  'route',
  'rule',
];

/**
 * The small fleet with tunnel keys, and one more FIP, of gw2's pool, routed to gw1: gw1 then
 * routes 203.0.113.7 to n1 and itself serves 100.64.0.6, so its intent has every kind.
 */
function tunnelled(): CompileState {
  const base = state();
  const served = associated(ELSEWHERE, '100.64.0.6', {
    target: '10.9.0.6',
    mode: 'routed',
    node: 'gw1',
  });
  return { ...base, fips: [...base.fips, { fip: served, revision: 120 }], nodes: KEYED_NODES };
}

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

function ofKind(intent: HostIntent, ...kinds: ElementKind[]): IntentElement[] {
  return intent.elements.filter((e) => kinds.includes(e.kind));
}

function ownedBy(intent: HostIntent, owner: string): IntentElement[] {
  return intent.elements.filter((e) => e.owner === owner);
}

void describe('core/intent: compile', () => {
  void it('compiles a small state to the expected intent (golden)', () => {
    assert.deepEqual(compile(state(), 'gw1', FACTS), GOLDEN_GW1);
  });

  void it('is deterministic whatever the input order', () => {
    const base = state();
    const expected = JSON.stringify(compile(base, 'gw1', FACTS));
    for (let seed = 1; seed <= 25; seed++) {
      const s: CompileState = {
        pools: shuffled(base.pools, seed),
        fips: shuffled(base.fips, seed * 7 + 3),
      };
      const facts: HostFacts = {
        interfaces: shuffled(FACTS.interfaces, seed * 3 + 1),
        addresses: shuffled(FACTS.addresses, seed * 5 + 2),
      };
      assert.equal(JSON.stringify(compile(s, 'gw1', facts)), expected, `seed ${seed}`);
    }
  });

  void it('sorts elements by kind order, then key', () => {
    const sorted = (elements: readonly IntentElement[]): void => {
      for (let i = 1; i < elements.length; i++) {
        const a = elements[i - 1]!;
        const b = elements[i]!;
        const ka = KINDS.indexOf(a.kind);
        const kb = KINDS.indexOf(b.kind);
        assert.ok(
          ka < kb || (ka === kb && a.key < b.key),
          `${elementId(a)} before ${elementId(b)}`,
        );
        assert.ok(compareElements(a, b) < 0);
      }
      assert.deepEqual([...elements].sort(compareElements), elements);
    };
    const golden = compile(state(), 'gw1', FACTS).elements;
    sorted(golden);
    // The golden state has every kind but the routed ones (its routed FIP is refused)…
    const routing: ElementKind[] = ['route', 'rule'];
    assert.deepEqual(
      [...new Set(golden.map((e) => e.kind))],
      KINDS.filter((k) => !routing.includes(k)),
    );
    // …and with tunnel keys every kind occurs, so the order is checked for all of them.
    const all = compile(tunnelled(), 'gw1', FACTS).elements;
    sorted(all);
    assert.deepEqual([...new Set(all.map((e) => e.kind))], KINDS);
  });

  void it('never holds two elements with one id', () => {
    const { elements } = compile(state(), 'gw1', FACTS);
    const ids = elements.map(elementId);
    assert.equal(new Set(ids).size, ids.length);
  });

  void it('only includes pools whose gateway is the node', () => {
    const gw2 = compile(state(), 'gw2', FACTS);
    assert.deepEqual(gw2, {
      node: 'gw2',
      elements: [
        host('table', 'inet ipferry', NFT_SKELETON_VERSION),
        host('sysctl', SYSCTL_IPV4_FORWARD, '1'),
        host('hairpin', 'eth0', 'eth0'),
        host('hairpin', 'wg0', 'wg0'),
        by('pool:far')('drop', '100.64.0.0-100.64.0.15'),
        own('counter', '100.64.0.5'),
        own('dnat', '100.64.0.5', '10.9.0.5'),
        by('100.64.0.5')('snat', '10.9.0.5', '100.64.0.5'),
      ],
      fips: [{ address: '100.64.0.5', revision: 110 }],
      refused: [],
    });
    // A node that only holds targets (n1) gets nothing, not even host elements; nor does an
    // unknown node.
    const empty = (node: string): HostIntent => ({ node, elements: [], fips: [], refused: [] });
    // n1 is the node of the routed 203.0.113.7, but its gateway gw1 has no tunnel key: n1
    // refuses it too (it lists no FIPs, so the refusal is not reported from there).
    assert.deepEqual(compile(state(), 'n1', FACTS), {
      ...empty('n1'),
      refused: [{ address: '203.0.113.7', reason: NO_KEY_REASON('gw1') }],
    });
    assert.deepEqual(compile(state(), 'nobody', FACTS), empty('nobody'));
    // A FIP whose pool is gone is not realised anywhere.
    for (const node of ['gw1', 'gw2']) {
      const intent = compile(state(), node, FACTS);
      assert.equal(
        intent.fips.some((f) => f.address === '203.0.113.8'),
        false,
      );
      assert.deepEqual(ownedBy(intent, '203.0.113.8'), []);
    }
  });

  void it('defaults to no host facts', () => {
    const intent = compile(state(), 'gw1');
    assert.deepEqual(intent, compile(state(), 'gw1', NO_FACTS));
    assert.deepEqual(ofKind(intent, 'hairpin'), []);
    // Only the routed FIP without a tunnel key is refused.
    assert.deepEqual(intent.refused, [{ address: '203.0.113.7', reason: NO_KEY_REASON('n1') }]);
    // Without host addresses nothing is cut out of the drops, and 198.51.100.3 is realised.
    assert.deepEqual(
      ofKind(intent, 'drop').map((e) => e.key),
      [
        '198.51.100.1-198.51.100.14',
        '2001:db8::-2001:db8::ffff:ffff:ffff:ffff',
        '203.0.113.0-203.0.113.15',
      ],
    );
    assert.ok(intent.elements.some((e) => e.kind === 'dnat' && e.key === '198.51.100.3'));
  });

  void it('returns fresh arrays and does not change its input', () => {
    const s = state();
    const copy = structuredClone(s);
    const f = structuredClone(FACTS);
    const a = compile(s, 'gw1', f);
    assert.deepEqual(s, copy);
    assert.deepEqual(f, FACTS);
    const b = compile(s, 'gw1', f);
    assert.notEqual(a.elements, b.elements);
    assert.deepEqual(a, b);
  });
});

void describe('core/intent: FIP elements', () => {
  void it('compiles a nat association to counter, dnat and snat', () => {
    const fip = associated(ROUTED, '203.0.113.5', { target: '10.0.0.5' });
    const intent = compile(only(ROUTED, fip), 'gw1');
    assert.deepEqual(ownedBy(intent, '203.0.113.5'), [
      own('counter', '203.0.113.5'),
      own('dnat', '203.0.113.5', '10.0.0.5'),
      by('203.0.113.5')('snat', '10.0.0.5', '203.0.113.5'),
    ]);
    assert.deepEqual(intent.fips, [{ address: '203.0.113.5', revision: 1 }]);
  });

  void it('adds masq on the target for a masqueraded nat association', () => {
    const fip = associated(ROUTED, '203.0.113.6', { target: '10.0.0.6', masquerade: true });
    assert.deepEqual(ownedBy(compile(only(ROUTED, fip), 'gw1'), '203.0.113.6'), [
      own('counter', '203.0.113.6'),
      own('dnat', '203.0.113.6', '10.0.0.6'),
      by('203.0.113.6')('snat', '10.0.0.6', '203.0.113.6'),
      by('203.0.113.6')('masq', '10.0.0.6', ''),
    ]);
  });

  void it('compiles an IPv6 nat association the same way', () => {
    const fip = associated(ONLINK, '2001:db8::7', { target: '2001:db8:1::7' });
    assert.deepEqual(ownedBy(compile(only(ONLINK, fip), 'gw1'), '2001:db8::7'), [
      own('claim', '2001:db8::7', 'eth0'),
      own('counter', '2001:db8::7'),
      own('dnat', '2001:db8::7', '2001:db8:1::7'),
      by('2001:db8::7')('snat', '2001:db8:1::7', '2001:db8::7'),
    ]);
  });

  void it('compiles a routed association to counter and a route into the tunnel', () => {
    const fip = associated(ROUTED, '203.0.113.7', {
      target: '10.0.0.7',
      mode: 'routed',
      node: 'n1',
    });
    const intent = compile({ ...only(ROUTED, fip), nodes: KEYED_NODES }, 'gw1');
    assert.deepEqual(ownedBy(intent, '203.0.113.7'), [
      own('counter', '203.0.113.7'),
      by('203.0.113.7')('route', '203.0.113.7/32', `dev ${tunnelName('gw1', 'gw1')}`),
    ]);
    assert.deepEqual(intent.refused, []);
    // Delivered, so not dropped.
    assert.deepEqual(ofKind(intent, 'drop'), [
      edge('drop', '203.0.113.0-203.0.113.6'),
      edge('drop', '203.0.113.8-203.0.113.15'),
    ]);
  });

  void it('refuses a routed association whose node has no tunnel key, and drops it', () => {
    const fip = associated(ROUTED, '203.0.113.7', {
      target: '10.0.0.7',
      mode: 'routed',
      node: 'n1',
    });
    const keyless: NodeRecord = { ...keyed('n1', 3), publicKey: undefined };
    for (const nodes of [undefined, [], [keyed('gw1', 1)], [keyed('gw1', 1), keyless]]) {
      const intent = compile({ ...only(ROUTED, fip), ...(nodes ? { nodes } : {}) }, 'gw1');
      assert.deepEqual(intent.refused, [{ address: '203.0.113.7', reason: NO_KEY_REASON('n1') }]);
      assert.deepEqual(intent.fips, [{ address: '203.0.113.7', revision: 1 }]);
      // Not realised at all: no counter, no route, no tunnel; dropped like an unassociated FIP.
      assert.deepEqual(ownedBy(intent, '203.0.113.7'), []);
      assert.equal(intent.tunnel, undefined);
      assert.deepEqual(ofKind(intent, 'drop'), [edge('drop', '203.0.113.0-203.0.113.15')]);
    }
  });

  void it('forwards ports kept as one fwd element, single port or range', () => {
    const fip = forwarded(
      ROUTED,
      '203.0.113.9',
      { protocol: 'tcp', port: 443, target: '10.0.0.9' },
      { protocol: 'udp', port: '6000-6010', targetPort: 6000, target: '10.0.0.19' },
    );
    assert.deepEqual(ownedBy(compile(only(ROUTED, fip), 'gw1'), '203.0.113.9'), [
      own('counter', '203.0.113.9'),
      by('203.0.113.9')('fwd', '203.0.113.9 . tcp . 443', '10.0.0.9'),
      by('203.0.113.9')('fwd', '203.0.113.9 . udp . 6000-6010', '10.0.0.19'),
    ]);
  });

  void it('expands ports mapped to other ports into one fwdport element per port', () => {
    const fip = forwarded(
      ROUTED,
      '203.0.113.9',
      { protocol: 'tcp', port: '6000-6002', targetPort: 7000, target: '10.0.0.9' },
      { protocol: 'udp', port: 22, targetPort: 2222, target: '10.0.0.9' },
    );
    const f = by('203.0.113.9');
    assert.deepEqual(ownedBy(compile(only(ROUTED, fip), 'gw1'), '203.0.113.9'), [
      own('counter', '203.0.113.9'),
      f('fwdport', '203.0.113.9 . tcp . 6000', '10.0.0.9 . 7000'),
      f('fwdport', '203.0.113.9 . tcp . 6001', '10.0.0.9 . 7001'),
      f('fwdport', '203.0.113.9 . tcp . 6002', '10.0.0.9 . 7002'),
      f('fwdport', '203.0.113.9 . udp . 22', '10.0.0.9 . 2222'),
    ]);
  });

  void it('renders IPv6 forwards without brackets', () => {
    const fip = forwarded(
      ONLINK,
      '2001:db8::20',
      { protocol: 'udp', port: '60000-60001', targetPort: 50000, target: '2001:db8:1::6' },
      { protocol: 'tcp', port: 22, target: '2001:db8:1::6' },
    );
    const f = by('2001:db8::20');
    assert.deepEqual(ownedBy(compile(only(ONLINK, fip), 'gw1'), '2001:db8::20'), [
      own('claim', '2001:db8::20', 'eth0'),
      own('counter', '2001:db8::20'),
      f('fwd', '2001:db8::20 . tcp . 22', '2001:db8:1::6'),
      f('fwdport', '2001:db8::20 . udp . 60000', '2001:db8:1::6 . 50000'),
      f('fwdport', '2001:db8::20 . udp . 60001', '2001:db8:1::6 . 50001'),
    ]);
  });

  void it('lists unassociated FIPs with their revision but gives them no elements', () => {
    const intent = compile(
      { pools: [ROUTED], fips: [{ fip: allocated(ROUTED, '203.0.113.4'), revision: 42 }] },
      'gw1',
    );
    assert.deepEqual(intent.fips, [{ address: '203.0.113.4', revision: 42 }]);
    assert.deepEqual(ownedBy(intent, '203.0.113.4'), []);
    assert.deepEqual(intent.refused, []);
    // Its address is still dropped: it gets no answer.
    assert.deepEqual(ofKind(intent, 'drop'), [edge('drop', '203.0.113.0-203.0.113.15')]);
  });
});

void describe('core/intent: claims', () => {
  void it('claims on-link FIPs on the uplink, but not shared or unassociated ones', () => {
    const claims = ofKind(compile(state(), 'gw1', FACTS), 'claim');
    assert.deepEqual(claims, [
      own('claim', '198.51.100.10', 'eth0'),
      own('claim', '2001:db8::10', 'eth0'),
    ]);
  });

  void it('does not claim FIPs of routed pools', () => {
    const fip = associated(ROUTED, '203.0.113.5', { target: '10.0.0.5' });
    assert.deepEqual(ofKind(compile(only(ROUTED, fip), 'gw1'), 'claim'), []);
  });

  void it('claims ports-mode FIPs of on-link pools with an address, routed IPv4 ones by proxy ARP', () => {
    const routed = associated(ONLINK, '198.51.100.5', {
      target: '10.0.1.5',
      mode: 'routed',
      node: 'n1',
    });
    const ports = forwarded(ONLINK, '198.51.100.6', {
      protocol: 'tcp',
      port: 80,
      target: '10.0.1.6',
    });
    const intent = compile(
      {
        pools: [ONLINK],
        fips: [
          { fip: routed, revision: 1 },
          { fip: ports, revision: 2 },
        ],
        nodes: KEYED_NODES,
      },
      'gw1',
    );
    // A local address would swallow a FIP that must go on into the tunnel: the gateway answers
    // ARP for it by a proxy entry instead, and the route leads it into the tunnel.
    assert.deepEqual(ofKind(intent, 'claim'), [
      own('claim', '198.51.100.5', 'proxy eth0'),
      own('claim', '198.51.100.6', 'eth0'),
    ]);
    assert.deepEqual(intent.refused, []);
    assert.deepEqual(
      ofKind(intent, 'route').map((e) => e.key),
      ['198.51.100.5/32'],
    );
  });

  void it('spells claims as parseClaim reads them', () => {
    assert.equal(claimElement('192.0.2.5', 4, 'eth0', false).value, 'eth0');
    assert.equal(claimElement('192.0.2.5', 4, 'eth0', true).value, 'proxy eth0');
    // IPv6 claims are proxy NDP entries in any mode.
    assert.equal(claimElement('2001:db8::5', 6, 'eth0', true).value, 'eth0');
    assert.equal(claimElement('2001:db8::5', 6, 'eth0', false).value, 'eth0');
    assert.deepEqual(parseClaim({ key: '192.0.2.5', value: 'eth0' }), {
      uplink: 'eth0',
      proxy: false,
    });
    assert.deepEqual(parseClaim({ key: '192.0.2.5', value: 'proxy eth0' }), {
      uplink: 'eth0',
      proxy: true,
    });
    assert.deepEqual(parseClaim({ key: '2001:db8::5', value: 'eth0' }), {
      uplink: 'eth0',
      proxy: true,
    });
  });
});

void describe('core/intent: host elements', () => {
  void it('has the table, forwarding and one hairpin per interface, owned by the host', () => {
    const intent = compile(state(), 'gw1', { interfaces: ['eth1', 'br0'], addresses: [] });
    assert.deepEqual(ofKind(intent, 'table', 'sysctl', 'hairpin'), [
      host('table', 'inet ipferry', NFT_SKELETON_VERSION),
      host('sysctl', SYSCTL_IPV4_FORWARD, '1'),
      host('sysctl', 'net.ipv4.neigh.eth0.proxy_delay', '0'),
      host('sysctl', SYSCTL_IPV6_FORWARD, '1'),
      host('sysctl', 'net.ipv6.conf.eth0.proxy_ndp', '1'),
      host('hairpin', 'br0', 'br0'),
      host('hairpin', 'eth1', 'eth1'),
    ]);
    assert.deepEqual(ownedBy(intent, HOST_OWNER), ofKind(intent, 'table', 'sysctl', 'hairpin'));
  });

  void it('has host elements on a gateway even without any FIP', () => {
    const intent = compile({ pools: [ROUTED], fips: [] }, 'gw1', FACTS);
    assert.deepEqual(intent, {
      node: 'gw1',
      elements: [
        host('table', 'inet ipferry', NFT_SKELETON_VERSION),
        host('sysctl', SYSCTL_IPV4_FORWARD, '1'),
        host('hairpin', 'eth0', 'eth0'),
        host('hairpin', 'wg0', 'wg0'),
        edge('drop', '203.0.113.0-203.0.113.15'),
      ],
      fips: [],
      refused: [],
    });
  });

  void it('has no host elements where the node is no gateway', () => {
    const intent = compile({ pools: [ELSEWHERE], fips: [] }, 'gw1', FACTS);
    assert.deepEqual(intent.elements, []);
  });

  void it('turns IPv6 forwarding on only when one of its pools has IPv6 addresses', () => {
    const v6 = (pools: Pool[], node = 'gw1'): boolean =>
      compile({ pools, fips: [] }, node).elements.some(
        (e) => e.kind === 'sysctl' && e.key === SYSCTL_IPV6_FORWARD,
      );
    assert.equal(v6([ROUTED]), false);
    assert.equal(v6([ROUTED, ONLINK]), true);
    // An IPv6 pool of another gateway does not count.
    assert.equal(v6([ROUTED, { ...ONLINK, gateway: 'gw2' }]), false);
    // A single IPv6 address counts, shared or not.
    const shared6 = mkPool('s6', 'gw1', {
      entries: [{ kind: 'address', address: '2001:db8::1', shared: true }],
    });
    assert.equal(v6([shared6]), true);
    // IPv4 forwarding is always on.
    const { elements } = compile({ pools: [shared6], fips: [] }, 'gw1');
    assert.ok(elements.some((e) => e.kind === 'sysctl' && e.key === SYSCTL_IPV4_FORWARD));
  });
});

void describe('core/intent: drops', () => {
  const drops = (pool: Pool, addresses: string[] = []): string[] =>
    ofKind(
      compile({ pools: [pool], fips: [] }, pool.gateway, { interfaces: [], addresses }),
      'drop',
    ).map((e) => e.key);

  void it('drops every pool range, owned by its pool, shared addresses excepted', () => {
    const intent = compile(state(), 'gw1');
    assert.deepEqual(ofKind(intent, 'drop'), [
      lan('drop', '198.51.100.1-198.51.100.14'),
      lan('drop', '2001:db8::-2001:db8::ffff:ffff:ffff:ffff'),
      edge('drop', '203.0.113.0-203.0.113.15'),
    ]);
  });

  void it('keys a single address as A-A and a range entry by its ends', () => {
    const pool = mkPool('p', 'gw1', {
      entries: [
        { kind: 'address', address: '192.0.2.9' },
        { kind: 'range', first: '192.0.2.20', last: '192.0.2.30' },
        { kind: 'address', address: '2001:db8::5' },
      ],
    });
    assert.deepEqual(drops(pool), [
      '192.0.2.20-192.0.2.30',
      '192.0.2.9-192.0.2.9',
      '2001:db8::5-2001:db8::5',
    ]);
  });

  void it("cuts the host's own addresses out of the ranges", () => {
    const pool = mkPool('p', 'gw1', { entries: [{ kind: 'cidr', cidr: '192.0.2.0/29' }] });
    assert.deepEqual(drops(pool, ['192.0.2.2']), ['192.0.2.0-192.0.2.1', '192.0.2.3-192.0.2.7']);
    // At the ends, next to each other, and outside the pool.
    assert.deepEqual(drops(pool, ['192.0.2.0', '192.0.2.7', '10.0.0.1', '2001:db8::1']), [
      '192.0.2.1-192.0.2.6',
    ]);
    assert.deepEqual(drops(pool, ['192.0.2.3', '192.0.2.4']), [
      '192.0.2.0-192.0.2.2',
      '192.0.2.5-192.0.2.7',
    ]);
    // A single address that is the host's own is not dropped at all.
    const single = mkPool('s', 'gw1', { entries: [{ kind: 'address', address: '192.0.2.9' }] });
    assert.deepEqual(drops(single, ['192.0.2.9']), []);
  });

  void it('cuts IPv6 host addresses and reads them in any spelling', () => {
    const pool = mkPool('p', 'gw1', { entries: [{ kind: 'cidr', cidr: '2001:db8::/126' }] });
    assert.deepEqual(drops(pool, ['2001:DB8:0::2']), [
      '2001:db8::-2001:db8::1',
      '2001:db8::3-2001:db8::3',
    ]);
    // Something that is no address (a prefix, garbage) is ignored rather than fatal.
    assert.deepEqual(drops(pool, ['2001:db8::2/64', 'nonsense']), ['2001:db8::-2001:db8::3']);
  });

  void it('leaves out network and broadcast of on-link IPv4 prefixes', () => {
    const onlink = (cidr: string): Pool =>
      mkPool('o', 'gw1', { delivery: 'onlink', uplink: 'eth0', entries: [{ kind: 'cidr', cidr }] });
    assert.deepEqual(drops(onlink('192.0.2.0/29')), ['192.0.2.1-192.0.2.6']);
    assert.deepEqual(drops(onlink('192.0.2.0/29'), ['192.0.2.1']), ['192.0.2.2-192.0.2.6']);
    assert.deepEqual(drops(onlink('192.0.2.0/31')), ['192.0.2.0-192.0.2.1']);
    assert.deepEqual(drops(onlink('2001:db8::/127')), ['2001:db8::-2001:db8::1']);
  });
});

void describe('core/intent: refusals', () => {
  const facts = (...addresses: string[]): HostFacts => ({ interfaces: [], addresses });

  void it('refuses a nat FIP on one of the host addresses', () => {
    const fip = associated(ROUTED, '203.0.113.2', { target: '10.0.0.2' });
    const intent = compile(only(ROUTED, fip), 'gw1', facts('203.0.113.2'));
    assert.deepEqual(intent.refused, [
      { address: '203.0.113.2', reason: REFUSED_REASON('203.0.113.2') },
    ]);
    assert.deepEqual(ownedBy(intent, '203.0.113.2'), []);
    // Still listed, so its status can be reported.
    assert.deepEqual(intent.fips, [{ address: '203.0.113.2', revision: 1 }]);
    // The host keeps its address: it is cut out of the drop.
    assert.deepEqual(ofKind(intent, 'drop'), [
      edge('drop', '203.0.113.0-203.0.113.1'),
      edge('drop', '203.0.113.3-203.0.113.15'),
    ]);
  });

  void it('refuses a routed FIP on one of the host addresses, in any spelling', () => {
    const fip = associated(ONLINK, '2001:db8::2', {
      target: '2001:db8:1::2',
      mode: 'routed',
      node: 'n1',
    });
    // Its node has a tunnel key, so only the host address stands in the way.
    const state = { ...only(ONLINK, fip), nodes: KEYED_NODES };
    const intent = compile(state, 'gw1', facts('2001:DB8::0:2'));
    assert.deepEqual(intent.refused, [
      { address: '2001:db8::2', reason: REFUSED_REASON('2001:db8::2') },
    ]);
    // Neither counted, routed nor claimed, and no tunnel carries it.
    assert.deepEqual(ownedBy(intent, '2001:db8::2'), []);
    assert.equal(intent.tunnel, undefined);
  });

  void it('lets a ports FIP use a host address', () => {
    const fip = forwarded(ROUTED, '203.0.113.2', { protocol: 'tcp', port: 80, target: '10.0.0.2' });
    const intent = compile(only(ROUTED, fip), 'gw1', facts('203.0.113.2'));
    assert.deepEqual(intent.refused, []);
    assert.deepEqual(ownedBy(intent, '203.0.113.2'), [
      own('counter', '203.0.113.2'),
      by('203.0.113.2')('fwd', '203.0.113.2 . tcp . 80', '10.0.0.2'),
    ]);
  });

  void it('does not refuse FIPs on addresses the host does not have', () => {
    const fip = associated(ROUTED, '203.0.113.2', { target: '10.0.0.2' });
    const intent = compile(only(ROUTED, fip), 'gw1', facts('203.0.113.3', '10.0.0.2'));
    assert.deepEqual(intent.refused, []);
    assert.equal(ownedBy(intent, '203.0.113.2').length, 3);
  });

  void it('sorts refusals by address', () => {
    const fips = ['203.0.113.10', '2001:db8::3', '203.0.113.9', '198.51.100.4'].map((a, i) => ({
      fip: associated(a.startsWith('203.') ? ROUTED : ONLINK, a, {
        target: a.includes(':') ? '2001:db8:1::1' : '10.0.0.1',
      }),
      revision: i,
    }));
    const intent = compile(
      { pools: [ROUTED, ONLINK], fips },
      'gw1',
      facts('2001:db8::3', '203.0.113.10', '198.51.100.4', '203.0.113.9'),
    );
    assert.deepEqual(
      intent.refused.map((r) => r.address),
      ['198.51.100.4', '203.0.113.9', '203.0.113.10', '2001:db8::3'],
    );
  });
});

void describe('core/intent: diffIntent', () => {
  void it('finds elements to add, replace and remove', () => {
    const desired = [
      own('dnat', '203.0.113.5', '10.0.0.5'),
      own('dnat', '203.0.113.6', '10.0.0.66'),
      own('claim', '198.51.100.10', 'eth0'),
    ];
    const observed = [
      own('dnat', '203.0.113.6', '10.0.0.6'),
      own('dnat', '203.0.113.7', '10.0.0.7'),
      own('claim', '198.51.100.10', 'eth0'),
      // Same key but another kind is a different element.
      own('route', '203.0.113.5', 'n1'),
    ];
    assert.deepEqual(diffIntent(desired, observed), {
      add: [own('dnat', '203.0.113.5', '10.0.0.5')],
      replace: [
        {
          from: own('dnat', '203.0.113.6', '10.0.0.6'),
          to: own('dnat', '203.0.113.6', '10.0.0.66'),
        },
      ],
      remove: [own('dnat', '203.0.113.7', '10.0.0.7'), own('route', '203.0.113.5', 'n1')],
    });
  });

  void it('is empty when the kernel already holds the intent', () => {
    const { elements } = compile(state(), 'gw1', FACTS);
    const d = diffIntent(elements, [...elements].reverse());
    assert.ok(isEmptyDiff(d));
    assert.deepEqual(d, { add: [], replace: [], remove: [] });
  });

  void it('adds everything on an empty kernel and removes everything for an empty intent', () => {
    const { elements } = compile(state(), 'gw1', FACTS);
    const up = diffIntent(elements, []);
    assert.deepEqual(up, { add: elements, replace: [], remove: [] });
    assert.equal(isEmptyDiff(up), false);
    const down = diffIntent([], elements);
    assert.deepEqual(down, { add: [], replace: [], remove: elements });
  });

  void it('replaces the dnat in place and swaps the snat when a nat FIP moves', () => {
    const before = state();
    const observed = compile(before, 'gw1', FACTS).elements;
    const fips = before.fips.map((r) =>
      r.fip.address === '203.0.113.5'
        ? { fip: move(r.fip, parseAddress('10.0.0.55'), undefined, T1), revision: r.revision + 1 }
        : r,
    );
    const desired = compile({ ...before, fips }, 'gw1', FACTS).elements;
    const d = diffIntent(desired, observed);
    const f = by('203.0.113.5');
    assert.deepEqual(d, {
      add: [f('snat', '10.0.0.55', '203.0.113.5')],
      replace: [
        {
          from: own('dnat', '203.0.113.5', '10.0.0.5'),
          to: own('dnat', '203.0.113.5', '10.0.0.55'),
        },
      ],
      remove: [f('snat', '10.0.0.5', '203.0.113.5')],
    });
    assert.deepEqual(diffOwners(d), ['203.0.113.5']);
  });

  void it('replaces forwards in place when a ports FIP moves', () => {
    const before = state();
    const observed = compile(before, 'gw1', FACTS).elements;
    const fips = before.fips.map((r) =>
      r.fip.address === '2001:db8::10'
        ? { fip: move(r.fip, parseAddress('2001:db8:1::6'), undefined, T1), revision: 200 }
        : r,
    );
    const d = diffIntent(compile({ ...before, fips }, 'gw1', FACTS).elements, observed);
    const f = by('2001:db8::10');
    assert.deepEqual(d, {
      add: [],
      replace: [
        {
          from: f('fwd', '2001:db8::10 . tcp . 443', '2001:db8:1::5'),
          to: f('fwd', '2001:db8::10 . tcp . 443', '2001:db8:1::6'),
        },
      ],
      remove: [],
    });
  });

  void it('changes only host elements when an interface appears', () => {
    const observed = compile(state(), 'gw1', FACTS).elements;
    const facts = { ...FACTS, interfaces: [...FACTS.interfaces, 'br0'] };
    const d = diffIntent(compile(state(), 'gw1', facts).elements, observed);
    assert.deepEqual(d, { add: [host('hairpin', 'br0', 'br0')], replace: [], remove: [] });
    assert.deepEqual(diffOwners(d), [HOST_OWNER]);
  });
});

void describe('core/intent: diffFor and diffOwners', () => {
  const d = diffIntent(
    [
      own('dnat', '203.0.113.10', '10.0.0.10'),
      by('192.0.2.1')('fwd', '192.0.2.1 . tcp . 80', '10.0.0.8'),
      own('dnat', '203.0.113.9', '10.0.0.99'),
      edge('drop', '203.0.113.0-203.0.113.15'),
      host('hairpin', 'eth0', 'eth0'),
    ],
    [
      own('dnat', '203.0.113.9', '10.0.0.9'),
      by('192.0.2.1')('fwd', '192.0.2.1 . tcp . 81', '10.0.0.8'),
      own('claim', '2001:db8::1', 'eth0'),
      lan('drop', '198.51.100.1-198.51.100.14'),
      host('sysctl', SYSCTL_IPV6_FORWARD, '1'),
    ],
  );

  void it('restricts a diff to one owner', () => {
    assert.deepEqual(diffFor(d, '192.0.2.1'), {
      add: [by('192.0.2.1')('fwd', '192.0.2.1 . tcp . 80', '10.0.0.8')],
      replace: [],
      remove: [by('192.0.2.1')('fwd', '192.0.2.1 . tcp . 81', '10.0.0.8')],
    });
    assert.deepEqual(diffFor(d, '203.0.113.9'), {
      add: [],
      replace: [
        {
          from: own('dnat', '203.0.113.9', '10.0.0.9'),
          to: own('dnat', '203.0.113.9', '10.0.0.99'),
        },
      ],
      remove: [],
    });
    assert.deepEqual(diffFor(d, HOST_OWNER), {
      add: [host('hairpin', 'eth0', 'eth0')],
      replace: [],
      remove: [host('sysctl', SYSCTL_IPV6_FORWARD, '1')],
    });
    assert.deepEqual(diffFor(d, 'pool:lan'), {
      add: [],
      replace: [],
      remove: [lan('drop', '198.51.100.1-198.51.100.14')],
    });
    assert.ok(isEmptyDiff(diffFor(d, '198.51.100.1')));
  });

  void it('keeps a replace whose old or new element belongs to the owner', () => {
    const handover: IntentDiff = {
      add: [],
      replace: [
        { from: by('192.0.2.10')('dnat', 'k', 'a'), to: by('192.0.2.11')('dnat', 'k', 'b') },
      ],
      remove: [],
    };
    assert.equal(diffFor(handover, '192.0.2.10').replace.length, 1);
    assert.equal(diffFor(handover, '192.0.2.11').replace.length, 1);
    assert.equal(diffFor(handover, '192.0.2.12').replace.length, 0);
  });

  void it('lists the host first, then pools, then FIPs in address order', () => {
    assert.deepEqual(diffOwners(d), [
      HOST_OWNER,
      'pool:edge',
      'pool:lan',
      '192.0.2.1',
      '203.0.113.9',
      '203.0.113.10',
      '2001:db8::1',
    ]);
    assert.deepEqual(diffOwners({ add: [], replace: [], remove: [] }), []);
  });

  void it('orders the owners of a whole intent the same way', () => {
    const { elements } = compile(state(), 'gw1', FACTS);
    assert.deepEqual(diffOwners(diffIntent(elements, [])), [
      HOST_OWNER,
      'pool:edge',
      'pool:lan',
      '192.0.2.1',
      '198.51.100.10',
      '198.51.100.100',
      '203.0.113.5',
      '203.0.113.6',
      '203.0.113.10',
      '2001:db8::10',
    ]);
  });
});

void describe('core/intent: applyDiff', () => {
  void it('gives the state a dataplane holds after a diff, sorted', () => {
    const a = {
      kind: 'dnat' as const,
      key: '203.0.113.1',
      value: '10.0.0.1',
      owner: '203.0.113.1',
    };
    const b = {
      kind: 'dnat' as const,
      key: '203.0.113.2',
      value: '10.0.0.2',
      owner: '203.0.113.2',
    };
    const c = { kind: 'counter' as const, key: '203.0.113.3', value: '', owner: '203.0.113.3' };
    const moved = { ...a, value: '10.0.0.9' };
    const after = applyDiff([b, a], { add: [c], replace: [{ from: a, to: moved }], remove: [b] });
    assert.deepEqual(after, [c, moved]);
    assert.deepEqual(diffIntent(after, after), { add: [], replace: [], remove: [] });
  });
});

/** A small deterministic generator, so a failure repeats. */
function random(seed: number): () => number {
  let s = seed;
  return () => {
    s = (s * 1103515245 + 12345) % 2 ** 31;
    return s / 2 ** 31;
  };
}

void describe('core/intent: diffs of large sorted intents', () => {
  const kinds: ElementKind[] = ['counter', 'dnat', 'snat', 'hairpin', 'meshmember'];
  const randomElements = (next: () => number, n: number): IntentElement[] =>
    Array.from({ length: n }, () => {
      const key = `203.0.113.${Math.floor(next() * 40)}`;
      return {
        kind: kinds[Math.floor(next() * kinds.length)]!,
        key,
        value: `10.0.0.${Math.floor(next() * 3)}`,
        owner: key,
      };
    });

  void it('gives what the map-based walk gives, sorted or not, with or without duplicates', () => {
    const next = random(7);
    for (let round = 0; round < 300; round++) {
      const a = randomElements(next, Math.floor(next() * 30));
      const b = randomElements(next, Math.floor(next() * 30));
      // Sorted and unique (the fast path), sorted with duplicates, and as generated.
      const unique = (xs: IntentElement[]) => applyById(xs, { add: [], replace: [], remove: [] });
      const cases: [IntentElement[], IntentElement[]][] = [
        [unique(a), unique(b)],
        [[...a].sort(compareElements), [...b].sort(compareElements)],
        [a, b],
        [unique(a), b],
      ];
      for (const [desired, observed] of cases) {
        assert.deepEqual(diffIntent(desired, observed), diffById(desired, observed));
        const diff = diffIntent(desired, observed);
        assert.deepEqual(applyDiff(observed, diff), applyById(observed, diff));
        // Applying the diff reaches the desired state.
        assert.deepEqual(applyDiff(observed, diff), unique(desired));
      }
    }
  });

  void it('finds one move among 10,000 FIPs, and the next intent from the last apply', () => {
    const pool = mkPool('big', 'gw1', { entries: [{ kind: 'cidr', cidr: '198.18.0.0/15' }] });
    const fips = Array.from({ length: 10_000 }, (_, i) => ({
      fip: associated(pool, `198.18.${i >> 8}.${i & 255}`, {
        mode: 'nat',
        target: `10.${i >> 16}.${(i >> 8) & 255}.${i & 255}`,
      }),
      revision: 1,
    }));
    const first = compile({ pools: [pool], fips }, 'gw1', FACTS);
    const last = fips.length - 1;
    const movedFips = fips.map((f, i) =>
      i === last ? { fip: move(f.fip, parseAddress('10.250.0.1'), undefined, T1), revision: 2 } : f,
    );
    const second = compile({ pools: [pool], fips: movedFips }, 'gw1', FACTS);
    const diff = diffIntent(second.elements, first.elements);
    assert.deepEqual(diff, diffById(second.elements, first.elements));
    assert.deepEqual(
      diff.replace.map((r) => `${r.to.kind} ${r.to.key} ${r.from.value} => ${r.to.value}`),
      ['dnat 198.18.39.15 10.0.39.15 => 10.250.0.1'],
    );
    assert.deepEqual(diff.add.map(elementId), ['snat 10.250.0.1']);
    assert.deepEqual(diff.remove.map(elementId), ['snat 10.0.39.15']);
    assert.deepEqual(applyDiff(first.elements, diff), second.elements);
  });
});

void describe('core/intent: compile again', () => {
  void it('reuses an unchanged record’s elements and rebuilds a changed one’s', () => {
    const fip = associated(ROUTED, '203.0.113.5', { mode: 'nat', target: '10.0.0.5' });
    const a = compile(only(ROUTED, fip), 'gw1', FACTS);
    const b = compile(only(ROUTED, fip), 'gw1', FACTS);
    assert.deepEqual(b, a);
    const dnat = (i: HostIntent) => i.elements.find((e) => e.kind === 'dnat');
    assert.equal(dnat(b), dnat(a), 'the same element object');
    const movedFip = move(fip, parseAddress('10.0.0.6'), undefined, T1);
    assert.equal(dnat(compile(only(ROUTED, movedFip), 'gw1', FACTS))?.value, '10.0.0.6');
    assert.equal(dnat(compile(only(ROUTED, fip), 'gw1', FACTS))?.value, '10.0.0.5');
  });

  void it('rebuilds a record’s elements when its pool becomes on-link', () => {
    const fip = associated(ROUTED, '203.0.113.5', { mode: 'nat', target: '10.0.0.5' });
    const claims = (pool: Pool) =>
      compile(only(pool, fip), 'gw1', FACTS).elements.filter((e) => e.kind === 'claim');
    assert.deepEqual(claims(ROUTED), []);
    const onlink: Pool = { ...ROUTED, delivery: 'onlink', uplink: 'eth0' };
    assert.deepEqual(claims(onlink).map(elementId), ['claim 203.0.113.5']);
    assert.equal(claims({ ...onlink, uplink: 'eth1' })[0]?.value, 'eth1');
    assert.deepEqual(claims(ROUTED), []);
  });

  void it('sorts FIPs by address as compareAddressText does: IPv4 by number, then IPv6', () => {
    const addresses = [
      '203.0.113.10',
      '2001:db8::10',
      '198.51.100.10',
      '203.0.113.9',
      '203.0.113.100',
    ];
    const state: CompileState = {
      pools: [ROUTED, ONLINK],
      fips: addresses.map((a) => ({
        fip: allocated(a.startsWith('203') ? ROUTED : ONLINK, a),
        revision: 1,
      })),
    };
    assert.deepEqual(
      compile(state, 'gw1', FACTS).fips.map((f) => f.address),
      ['198.51.100.10', '203.0.113.9', '203.0.113.10', '203.0.113.100', '2001:db8::10'],
    );
  });

  void it('reads a dotted quad as tryParseAddress does', () => {
    const texts = [
      '0.0.0.0',
      '255.255.255.255',
      '10.0.0.1',
      '1.2.3',
      '1.2.3.4.5',
      '01.2.3.4',
      '1.2.3.04',
      '1.2.3.256',
      '1..2.3',
      '.1.2.3',
      '1.2.3.',
      ' 1.2.3.4',
      '1.2.3.4 ',
      '1000.1.1.1',
      '',
      '::1',
      '1.2.3.0',
      'a.b.c.d',
    ];
    for (const text of texts) {
      const parsed = tryParseAddress(text);
      const want = parsed?.family === 4 ? Number(parsed.value) : -1;
      assert.equal(ipv4Value(text), want, text);
    }
  });
});
