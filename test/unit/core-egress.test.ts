import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseAddress } from '../../src/core/address.js';
import { EGRESS_NOTE, egressSource, masqueradeClash } from '../../src/core/compile/egress.js';
import { type CompileState, compile, type HostIntent } from '../../src/core/compile/index.js';
import { type DefaultRoute, type HostFacts, NO_FACTS } from '../../src/intent/facts.js';
import { diffIntent } from '../../src/intent/diff.js';
import { HOST_OWNER, type IntentElement } from '../../src/intent/elements.js';
import { addForward, associate, newFloatingIp } from '../../src/core/lifecycle.js';
import type { EgressMode, FloatingIp, NodeRecord, Pool } from '../../src/core/model.js';
import { EGRESS_RULE_PRIORITY, EGRESS_TABLE } from '../../src/core/names.js';
import { type TunnelOptions, tunnelLinkAddress } from '../../src/core/compile/tunnel-path.js';
import { DEFAULT_TUNNEL_PORT } from '../../src/core/defaults.js';
import { tunnelName, tunnelProbeAddress } from '../../src/core/tunnel.js';
import { validateAllocate, validateAssociate, validateForward } from '../../src/core/validate.js';
import { observeRouting, routingBatches } from '../../src/dataplane/iproute/routing.js';
import { resolveConfig } from '../../src/agent/config.js';
import { IpferryError } from '../../src/core/errors.js';

const T0 = '2024-01-01T00:00:00.000Z';
const key = (seed: number): string => Buffer.alloc(32, seed).toString('base64');

function node(name: string, seed: number, more: Partial<NodeRecord> = {}): NodeRecord {
  return {
    name,
    publicKey: key(seed),
    addresses: [],
    reservedPorts: [],
    registeredAt: T0,
    ...more,
  };
}

const GW = node('gw', 1, { endpoint: '192.0.2.2:51820' });
/** A home server behind its ISP: no endpoint, it calls its gateway. */
const home = (egress?: Exclude<EgressMode, 'own'>): NodeRecord =>
  node('home', 2, egress ? { egress } : {});

const EDGE: Pool = {
  name: 'edge',
  gateway: 'gw',
  delivery: 'routed',
  tags: [],
  createdAt: T0,
  entries: [
    { kind: 'cidr', cidr: '203.0.113.0/28' },
    { kind: 'cidr', cidr: '2001:db8:f::/64' },
  ],
};

const FIP4 = '203.0.113.10';
const FIP6 = '2001:db8:f::10';
const HOME_V4 = '198.18.0.10';
const HOME_V6 = '2001:db8:3::10';

function routed(address: string, to: string): FloatingIp {
  const fip = newFloatingIp(EDGE, parseAddress(address), validateAllocate({}), T0);
  return associate(fip, validateAssociate({ target: address, mode: 'routed', node: to }), T0);
}

/** A port forward on a FIP to a node's own address: the node serves its gateway, with no FIP. */
function forwardTo(address: string, target: string, to: string): FloatingIp {
  const fip = newFloatingIp(EDGE, parseAddress(address), validateAllocate({}), T0);
  return addForward(fip, validateForward({ protocol: 'tcp', port: 25, target, node: to }), [], T0)
    .fip;
}

function state(fips: readonly FloatingIp[], nodes: readonly NodeRecord[]): CompileState {
  return { pools: [EDGE], fips: fips.map((fip, i) => ({ fip, revision: 10 + i })), nodes };
}

const ROUTES: Record<'v4' | 'v6', DefaultRoute> = {
  v4: { family: 4, dev: 'eth0', via: '198.18.0.1', src: HOME_V4 },
  v6: { family: 6, dev: 'eth0', via: 'fe80::1', src: HOME_V6 },
};
const HOME_FACTS: HostFacts = {
  interfaces: ['eth0'],
  addresses: [HOME_V4, HOME_V6],
  defaultRoutes: [ROUTES.v4, ROUTES.v6],
};

const options = (egress?: EgressMode, more: Partial<TunnelOptions> = {}): TunnelOptions => ({
  listenPort: DEFAULT_TUNNEL_PORT,
  ...(egress ? { egress } : {}),
  ...more,
});

const HOME_TUN = tunnelName('home', 'home');
const GW_TUN = tunnelName('gw', 'gw');
const LINK = egressSource('home');

const host = (kind: IntentElement['kind'], k: string, value: string): IntentElement => ({
  kind,
  key: k,
  value,
  owner: HOST_OWNER,
});

/** What egress adds to an intent compiled without it; it must neither replace nor remove. */
function added(withEgress: HostIntent, without: HostIntent): IntentElement[] {
  const diff = diffIntent(withEgress.elements, without.elements);
  assert.deepEqual(diff.replace, [], 'egress changed an element');
  assert.deepEqual(diff.remove, [], 'egress removed an element');
  return diff.add.map((e) => ({ ...e }));
}

const note = (intent: HostIntent): string | undefined =>
  intent.refused.find((r) => r.address === EGRESS_NOTE)?.reason;

/** The rules and table that keep what leaves from the node's own address on its own routes. */
function ownAddressKept(route: DefaultRoute): IntentElement[] {
  const any = route.family === 4 ? '0.0.0.0/0' : '::/0';
  return [
    host('route', `${any} table ${EGRESS_TABLE}`, `dev ${route.dev} via ${route.via ?? ''}`),
    host(
      'rule',
      `from ${route.src ?? ''} lookup main suppress_prefixlength 1`,
      String(EGRESS_RULE_PRIORITY),
    ),
    host(
      'rule',
      `from ${route.src ?? ''} lookup ${EGRESS_TABLE}`,
      String(EGRESS_RULE_PRIORITY + 1),
    ),
  ];
}

const sorted = (list: IntentElement[]): IntentElement[] =>
  [...list].sort((a, b) =>
    a.kind === b.kind ? (a.key < b.key ? -1 : a.key > b.key ? 1 : 0) : a.kind < b.kind ? -1 : 1,
  );

void describe('core/egress: the node', () => {
  const fips = [routed(FIP4, 'home'), routed(FIP6, 'home')];

  void it('fip: sends everything through the tunnel from its FIPs, keeping the tunnel and its own address outside', () => {
    const nodes = [GW, home('fip')];
    const on = compile(state(fips, nodes), 'home', HOME_FACTS, options('fip'));
    const off = compile(state(fips, nodes), 'home', HOME_FACTS, options());
    assert.deepEqual(
      sorted(added(on, off)),
      sorted([
        // Halves of each family, more specific than the node's own default route, which stays.
        host('route', '0.0.0.0/1', `dev ${HOME_TUN} src ${FIP4}`),
        host('route', '128.0.0.0/1', `dev ${HOME_TUN} src ${FIP4}`),
        host('route', '::/1', `dev ${HOME_TUN} src ${FIP6}`),
        host('route', '8000::/1', `dev ${HOME_TUN} src ${FIP6}`),
        // The tunnel's own packets to the gateway's endpoint keep the node's own way out.
        host('route', '192.0.2.2/32', 'dev eth0 via 198.18.0.1'),
        ...ownAddressKept(ROUTES.v4),
        ...ownAddressKept(ROUTES.v6),
      ]),
    );
    // Never a default route of its own in the main table: the node's stays untouched.
    assert.ok(!on.elements.some((e) => e.key === '0.0.0.0/0' || e.key === '::/0'));
    assert.deepEqual(on.tunnel, off.tunnel, 'the tunnel is the same');
    assert.equal(note(on), undefined);
    assert.equal(note(off), undefined);
  });

  void it('masquerade: IPv4 leaves from its link-local tunnel address; IPv6 keeps its own route, and says so', () => {
    const nodes = [GW, home('masquerade')];
    const on = compile(state(fips, nodes), 'home', HOME_FACTS, options('masquerade'));
    const off = compile(state(fips, nodes), 'home', HOME_FACTS, options());
    assert.equal(`${LINK}/32`, tunnelLinkAddress('home'));
    assert.ok(on.tunnel?.addresses.includes(`${LINK}/32`), 'the source is on the tunnel');
    assert.deepEqual(
      sorted(added(on, off)),
      sorted([
        host('route', '0.0.0.0/1', `dev ${HOME_TUN} src ${LINK}`),
        host('route', '128.0.0.0/1', `dev ${HOME_TUN} src ${LINK}`),
        host('route', '192.0.2.2/32', 'dev eth0 via 198.18.0.1'),
        ...ownAddressKept(ROUTES.v4),
      ]),
    );
    assert.match(note(on) ?? '', /IPv6 keeps the node's own route/);
  });

  void it('fip without an IPv4 FIP (it serves a forward only) falls back to masquerade for IPv4', () => {
    const nodes = [GW, home('fip')];
    const only = [forwardTo('203.0.113.12', HOME_V4, 'home')];
    const facts = { ...HOME_FACTS, defaultRoutes: [ROUTES.v4] };
    const on = compile(state(only, nodes), 'home', facts, options('fip'));
    const off = compile(state(only, nodes), 'home', facts, options());
    assert.deepEqual(
      sorted(added(on, off)),
      sorted([
        host('route', '0.0.0.0/1', `dev ${HOME_TUN} src ${LINK}`),
        host('route', '128.0.0.0/1', `dev ${HOME_TUN} src ${LINK}`),
        host('route', '192.0.2.2/32', 'dev eth0 via 198.18.0.1'),
        ...ownAddressKept(ROUTES.v4),
      ]),
    );
    assert.match(
      note(on) ?? '',
      /no routed IPv4 FIP here: IPv4 leaves masqueraded behind gateway gw/,
    );
  });

  void it('own (the default) adds nothing and says nothing', () => {
    const nodes = [GW, home()];
    const own = compile(state(fips, nodes), 'home', HOME_FACTS, options('own'));
    const none = compile(state(fips, nodes), 'home', HOME_FACTS, options());
    assert.deepEqual(own, none);
    assert.ok(!own.elements.some((e) => e.key.endsWith('/1')));
  });

  void it('stays on its own route, with the reason, when it cannot send through a gateway', () => {
    const cases: { why: RegExp; nodes: NodeRecord[]; fips: FloatingIp[]; facts: HostFacts }[] = [
      {
        why: /serves no routed FIP and no forward/,
        nodes: [GW, home('fip')],
        fips: [],
        facts: HOME_FACTS,
      },
      {
        why: /publishes no tunnel endpoint/,
        nodes: [node('gw', 1), home('fip')],
        fips,
        facts: HOME_FACTS,
      },
      {
        why: /is a DNS name.*--endpoint ADDRESS:PORT/,
        nodes: [node('gw', 1, { endpoint: 'gw.example.net:51820' }), home('fip')],
        fips,
        facts: HOME_FACTS,
      },
      {
        why: /no IPv4 default route of its own to keep the tunnel's packets to 192\.0\.2\.2 on/,
        nodes: [GW, home('fip')],
        fips,
        facts: { ...HOME_FACTS, defaultRoutes: [ROUTES.v6] },
      },
      { why: /no IPv4 default route/, nodes: [GW, home('fip')], fips, facts: NO_FACTS },
    ];
    for (const c of cases) {
      const on = compile(state(c.fips, c.nodes), 'home', c.facts, options('fip'));
      const off = compile(state(c.fips, c.nodes), 'home', c.facts, options());
      assert.deepEqual(on.elements, off.elements, String(c.why));
      assert.deepEqual(on.tunnel, off.tunnel, String(c.why));
      assert.match(note(on) ?? '', /^egress fip is not in effect/, String(c.why));
      assert.match(note(on) ?? '', c.why);
    }
  });

  void it('ignores default routes through ipferry tunnels; takes a point-to-point uplink as it is', () => {
    const nodes = [GW, home('masquerade')];
    const facts: HostFacts = {
      ...HOME_FACTS,
      defaultRoutes: [
        { family: 4, dev: 'ipfsomething1', via: '10.9.9.9' },
        { family: 4, dev: 'ppp0', src: '198.51.100.77' },
      ],
    };
    const on = compile(state(fips, nodes), 'home', facts, options('masquerade'));
    const keys = on.elements.filter((e) => e.owner === HOST_OWNER && e.kind !== 'sysctl');
    assert.ok(keys.some((e) => e.key === '192.0.2.2/32' && e.value === 'dev ppp0'));
    assert.ok(
      keys.some((e) => e.key === `0.0.0.0/0 table ${EGRESS_TABLE}` && e.value === 'dev ppp0'),
    );
    assert.ok(!on.elements.some((e) => e.value.includes('ipfsomething1')));
  });

  void it('with tinc, the halves name the gateway’s link-local address as next hop', () => {
    const tinc = (n: NodeRecord): NodeRecord => ({ ...n, tunnelDriver: 'tinc' });
    const nodes = [tinc(GW), tinc(home('masquerade'))];
    const on = compile(
      state(fips, nodes),
      'home',
      HOME_FACTS,
      options('masquerade', { driver: 'tinc' }),
    );
    const half = on.elements.find((e) => e.key === '0.0.0.0/1');
    assert.equal(half?.value, `dev ${HOME_TUN} via inet6 ${tunnelProbeAddress('gw')} src ${LINK}`);
  });

  void it('switching back to own removes exactly what egress added', () => {
    const nodes = [GW, home('fip')];
    const on = compile(state(fips, nodes), 'home', HOME_FACTS, options('fip'));
    const off = compile(state(fips, nodes), 'home', HOME_FACTS, options('own'));
    const back = diffIntent(off.elements, on.elements);
    assert.deepEqual(back.add, []);
    assert.deepEqual(back.replace, []);
    assert.deepEqual(sorted([...back.remove]), sorted(added(on, off)));
  });
});

void describe('core/egress: the gateway', () => {
  const fips = [routed(FIP4, 'home')];

  void it('masquerades a node that says egress: its link-local address is allowed, routed into the tunnel and in @masq4', () => {
    for (const mode of ['fip', 'masquerade'] as const) {
      const on = compile(state(fips, [GW, home(mode)]), 'gw', NO_FACTS, options());
      const off = compile(state(fips, [GW, home()]), 'gw', NO_FACTS, options());
      assert.deepEqual(sorted(added(on, off)), [
        host('masq', LINK, ''),
        host('route', `${LINK}/32`, `dev ${GW_TUN}`),
      ]);
      const peer = (i: HostIntent) => i.tunnel?.peers.find((p) => p.node === 'home');
      assert.deepEqual(
        peer(on)?.allowedIps.filter((a) => !peer(off)?.allowedIps.includes(a)),
        [`${LINK}/32`],
      );
    }
  });

  void it('a gateway’s own egress option changes nothing for the nodes it serves', () => {
    const a = compile(state(fips, [GW, home()]), 'gw', NO_FACTS, options('masquerade'));
    const b = compile(state(fips, [GW, home()]), 'gw', NO_FACTS, options());
    assert.deepEqual(a.elements, b.elements);
    assert.deepEqual(a.tunnel, b.tunnel);
    assert.match(note(a) ?? '', /no tunnel to send through/);
  });
});

/** Two node names whose link-local tunnel addresses are the same (found by search). */
function clashingNames(): [string, string] {
  const seen = new Map<string, string>();
  for (let i = 0; i < 100_000; i++) {
    const name = `n${i}`;
    const other = seen.get(egressSource(name));
    if (other) return [other, name];
    seen.set(egressSource(name), name);
  }
  assert.fail('no clash found');
}

void describe('core/egress: clashes both ends agree on', () => {
  void it('two nodes with one link-local address: the first by name masquerades, the other keeps its route', () => {
    const [first, second] = clashingNames();
    assert.ok(first < second);
    const nodes = [
      GW,
      node(first, 3, { egress: 'masquerade' }),
      node(second, 4, { egress: 'masquerade' }),
    ];
    const byName = new Map(nodes.map((n) => [n.name, n]));
    assert.equal(masqueradeClash(first, 'gw', byName), undefined);
    assert.match(
      masqueradeClash(second, 'gw', byName) ?? '',
      new RegExp(`node ${first} masquerades`),
    );
    const fips = [routed('203.0.113.1', first), routed('203.0.113.2', second)];
    const gw = compile(state(fips, nodes), 'gw', NO_FACTS, options());
    assert.deepEqual(
      gw.elements.filter((e) => e.kind === 'masq').map((e) => e.key),
      [egressSource(first)],
    );
    const facts = { ...HOME_FACTS, defaultRoutes: [ROUTES.v4] };
    const loser = compile(state(fips, nodes), second, facts, options('masquerade'));
    assert.ok(!loser.elements.some((e) => e.key === '0.0.0.0/1'));
    assert.match(note(loser) ?? '', /IPv4 keeps the node's own route: node .* masquerades/);
    const winner = compile(state(fips, nodes), first, facts, options('masquerade'));
    assert.ok(winner.elements.some((e) => e.key === '0.0.0.0/1'));
  });

  void it('never routes a cloud metadata address into a tunnel', () => {
    let name: string | undefined;
    for (let i = 0; i < 2_000_000 && !name; i++)
      if (egressSource(`m${i}`) === '169.254.169.254') name = `m${i}`;
    assert.ok(name, 'no name hashes to 169.254.169.254');
    const nodes = [GW, node(name, 3, { egress: 'masquerade' })];
    assert.match(
      masqueradeClash(name, 'gw', new Map(nodes.map((n) => [n.name, n]))) ?? '',
      /cloud provider/,
    );
    const gw = compile(state([routed(FIP4, name)], nodes), 'gw', NO_FACTS, options());
    assert.ok(!gw.elements.some((e) => e.key.startsWith('169.254.169.254')));
  });
});

void describe('core/egress: its routes and rules as ip commands, and read back', () => {
  const elements = [
    host('route', '0.0.0.0/1', `dev ${HOME_TUN} src ${LINK}`),
    host('route', '192.0.2.2/32', 'dev eth0 via 198.18.0.1'),
    host('route', `0.0.0.0/0 table ${EGRESS_TABLE}`, 'dev eth0 via 198.18.0.1'),
    host('rule', `from ${HOME_V4} lookup main suppress_prefixlength 1`, '10400'),
    host('rule', `from ${HOME_V4} lookup ${EGRESS_TABLE}`, '10401'),
  ];

  void it('writes them as ip batch lines, suppress_prefixlength included', () => {
    assert.deepEqual(routingBatches('add', elements)[4], [
      `route replace 0.0.0.0/1 dev ${HOME_TUN} src ${LINK} proto 241`,
      'route replace 192.0.2.2/32 dev eth0 via 198.18.0.1 proto 241',
      `route replace 0.0.0.0/0 table ${EGRESS_TABLE} dev eth0 via 198.18.0.1 proto 241`,
      `rule add from ${HOME_V4} lookup main suppress_prefixlength 1 priority 10400 protocol 241`,
      `rule add from ${HOME_V4} lookup ${EGRESS_TABLE} priority 10401 protocol 241`,
    ]);
  });

  void it('reads back what `ip -j` prints for them as the same elements', async () => {
    // As iproute2 6.1 prints them (captured in a namespace).
    const listings: Record<string, unknown[]> = {
      '-4 route': [
        { dst: '0.0.0.0/1', dev: HOME_TUN, scope: 'link', prefsrc: LINK, flags: [] },
        { dst: '192.0.2.2', gateway: '198.18.0.1', dev: 'eth0', flags: [] },
        {
          dst: 'default',
          table: String(EGRESS_TABLE),
          gateway: '198.18.0.1',
          dev: 'eth0',
          flags: [],
        },
      ],
      '-4 rule': [
        { priority: 0, src: 'all', table: 'local' },
        {
          priority: 10400,
          src: HOME_V4,
          table: 'main',
          suppress_prefixlen: 1,
          protocol: '241',
        },
        { priority: 10401, src: HOME_V4, table: String(EGRESS_TABLE), protocol: '241' },
        { priority: 32766, src: 'all', table: 'main' },
      ],
    };
    const exec = (_file: string, args: readonly string[]) =>
      Promise.resolve({
        stdout: JSON.stringify(listings[`${args[0]} ${args[2]}`] ?? []),
        stderr: '',
      });
    const read = await observeRouting(exec);
    const ids = (list: readonly IntentElement[]) =>
      list.map((e) => `${e.kind} ${e.key} -> ${e.value}`).sort();
    assert.deepEqual(ids(read), ids(elements));
  });
});

void describe('agent option egress', () => {
  void it('is own by default, takes fip and masquerade, and refuses anything else', () => {
    assert.equal(resolveConfig({}, { node: 'home' }, 'flags').egress, 'own');
    assert.equal(resolveConfig({ node: 'home', egress: 'fip' }, {}, 'f').egress, 'fip');
    // Flags win over the file.
    assert.equal(
      resolveConfig({ node: 'home', egress: 'fip' }, { egress: 'masquerade' }, 'f').egress,
      'masquerade',
    );
    assert.throws(
      () => resolveConfig({ node: 'home', egress: 'gateway' }, {}, 'agent.yaml'),
      (e: unknown) =>
        e instanceof IpferryError &&
        e.code === 'IPF_E_CONFIG' &&
        /egress: must be one of own, fip, masquerade/.test(e.message),
    );
  });
});
