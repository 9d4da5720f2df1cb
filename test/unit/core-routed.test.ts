import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseAddress } from '../../src/core/address.js';
import { type CompileState, compile, type HostIntent } from '../../src/core/compile/index.js';
import { diffIntent } from '../../src/intent/diff.js';
import { type ElementKind, HOST_OWNER, type IntentElement } from '../../src/intent/elements.js';
import { NO_FACTS } from '../../src/intent/facts.js';
import { addForward, associate, move, newFloatingIp } from '../../src/core/lifecycle.js';
import type { FloatingIp, NodeRecord, Pool } from '../../src/core/model.js';
import {
  FORWARD_RULE_PRIORITY,
  FORWARD_TABLE,
  NFT_SKELETON_VERSION,
  REPLY_RULE_PRIORITY,
  ROUTE_TABLE,
  RULE_PRIORITY,
  TUNNEL_MARK,
} from '../../src/core/names.js';
import { type TunnelOptions, tunnelLinkAddress } from '../../src/core/compile/tunnel-path.js';
import { DEFAULT_TUNNEL_PORT } from '../../src/core/defaults.js';
import {
  tunnelProbeAddress,
  diffTunnel,
  isTunnelName,
  type ObservedTunnel,
  type TunnelIntent,
  type TunnelPeer,
  tunnelMtu,
  tunnelName,
  validateTunnelIntent,
} from '../../src/core/tunnel.js';
import {
  type AssociateInput,
  validateAllocate,
  validateAssociate,
  validateForward,
} from '../../src/core/validate.js';

const T0 = '2024-01-01T00:00:00.000Z';

/** A node's probe address as an interface address / as a peer's allowed IP. */
const probeNet = (n: string): string => `${tunnelProbeAddress(n)}/64`;
const probeHost = (n: string): string => `${tunnelProbeAddress(n)}/128`;
const T1 = '2024-01-02T00:00:00.000Z';

/** A tunnel key: any 32 bytes in base64 will do for the core. */
const key = (seed: number): string => Buffer.alloc(32, seed).toString('base64');

function node(name: string, seed: number, endpoint?: string): NodeRecord {
  return {
    name,
    publicKey: key(seed),
    ...(endpoint ? { endpoint } : {}),
    addresses: [],
    reservedPorts: [],
    registeredAt: T0,
  };
}

/** gw routes the pool; n1 (reachable) and n2 (behind NAT: no endpoint) serve FIPs; n3 none. */
const GW = node('gw', 1, '192.0.2.2:51820');
const N1 = node('n1', 2, '198.18.0.10:51820');
const N2 = node('n2', 3);
const N3 = node('n3', 4, '198.18.0.30:51820');
const NODES: readonly NodeRecord[] = [GW, N1, N2, N3];

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

function associated(address: string, input: AssociateInput): FloatingIp {
  const fip = newFloatingIp(EDGE, parseAddress(address), validateAllocate({}), T0);
  return associate(fip, validateAssociate(input), T1);
}

const routed = (address: string, to: string): FloatingIp =>
  associated(address, {
    target: address.includes(':') ? '2001:db8:1::1' : '10.0.0.1',
    mode: 'routed',
    node: to,
  });

/**
 * n1 serves two IPv4 FIPs (listed out of order, .10 before .9 to catch a text sort) and an
 * IPv6 one; n2 one IPv4 FIP; 203.0.113.4 is a plain nat FIP, which no tunnel carries.
 */
function state(nodes: readonly NodeRecord[] = NODES): CompileState {
  const fips = [
    routed('203.0.113.10', 'n1'),
    routed('2001:db8:f::5', 'n1'),
    routed('203.0.113.9', 'n1'),
    routed('203.0.113.3', 'n2'),
    associated('203.0.113.4', { target: '10.0.0.4' }),
  ];
  return { pools: [EDGE], fips: fips.map((fip, i) => ({ fip, revision: 10 + i })), nodes };
}

const el = (kind: ElementKind, key: string, value: string, owner: string): IntentElement => ({
  kind,
  key,
  value,
  owner,
});
const host = (kind: ElementKind, key: string, value: string): IntentElement =>
  el(kind, key, value, HOST_OWNER);

const GW_TUN = tunnelName('gw', 'gw');
const N1_TUN = tunnelName('n1', 'n1');
const N2_TUN = tunnelName('n2', 'n2');

/** The policy rule a node answers from `address` with. */
const rule = (address: string): IntentElement =>
  el('rule', `from ${address} lookup ${ROUTE_TABLE}`, String(RULE_PRIORITY), address);

const ofKind = (intent: HostIntent, ...kinds: ElementKind[]): IntentElement[] =>
  intent.elements.filter((e) => kinds.includes(e.kind));

const ownedBy = (intent: HostIntent, owner: string): IntentElement[] =>
  intent.elements.filter((e) => e.owner === owner);

const peerOf = (intent: HostIntent, record: NodeRecord): TunnelPeer | undefined =>
  intent.tunnel?.peers.find((p) => p.publicKey === record.publicKey);

/** The tunnel of an intent that must have one. */
function tunnelOf(intent: HostIntent): TunnelIntent {
  if (!intent.tunnel) assert.fail(`${intent.node} has no tunnel`);
  return intent.tunnel;
}

/** What a driver would read back after applying `intent` (for diffTunnel). */
function applied(intent: TunnelIntent): ObservedTunnel {
  return { ...intent, kind: 'kernel', publicKey: key(9), up: true };
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

/** `state()` with one FIP moved to another node. */
function moved(base: CompileState, address: string, to: string): CompileState {
  const fips = base.fips.map((r) =>
    r.fip.address === address
      ? { fip: move(r.fip, parseAddress(address), to, T1), revision: r.revision + 1 }
      : r,
  );
  return { ...base, fips };
}

void describe('core/routed: the gateway', () => {
  const intent = compile(state(), 'gw');

  void it('routes each routed FIP into its tunnel, owned by the FIP', () => {
    assert.deepEqual(ofKind(intent, 'route'), [
      el('route', '2001:db8:f::5/128', `dev ${GW_TUN}`, '2001:db8:f::5'),
      el('route', '203.0.113.10/32', `dev ${GW_TUN}`, '203.0.113.10'),
      el('route', '203.0.113.3/32', `dev ${GW_TUN}`, '203.0.113.3'),
      el('route', '203.0.113.9/32', `dev ${GW_TUN}`, '203.0.113.9'),
    ]);
    // Counted like any FIP, delivered unchanged (no DNAT), and no rule: that is the node's part.
    assert.deepEqual(ownedBy(intent, '203.0.113.9'), [
      el('counter', '203.0.113.9', '', '203.0.113.9'),
      el('route', '203.0.113.9/32', `dev ${GW_TUN}`, '203.0.113.9'),
    ]);
    assert.deepEqual(ofKind(intent, 'rule', 'dnat', 'snat'), [
      el('dnat', '203.0.113.4', '10.0.0.4', '203.0.113.4'),
      el('snat', '10.0.0.4', '203.0.113.4', '203.0.113.4'),
    ]);
    assert.deepEqual(intent.refused, []);
    assert.deepEqual(
      intent.fips.map((f) => f.address),
      ['203.0.113.3', '203.0.113.4', '203.0.113.9', '203.0.113.10', '2001:db8:f::5'],
    );
  });

  void it('leaves routed FIPs out of the drop ranges, and drops the rest', () => {
    // The nat FIP 203.0.113.4 stays in the drop ranges: its DNAT happens before the drop.
    assert.deepEqual(
      ofKind(intent, 'drop').map((e) => e.key),
      [
        '2001:db8:f::-2001:db8:f::4',
        '2001:db8:f::6-2001:db8:f:0:ffff:ffff:ffff:ffff',
        '203.0.113.0-203.0.113.2',
        '203.0.113.11-203.0.113.15',
        '203.0.113.4-203.0.113.8',
      ],
    );
  });

  void it('has one peer per serving node, with exactly its FIPs as allowed IPs', () => {
    assert.deepEqual(intent.tunnel, {
      name: GW_TUN,
      listenPort: DEFAULT_TUNNEL_PORT,
      mtu: tunnelMtu(1500, 4),
      // The gateway holds no FIP itself.
      addresses: [tunnelLinkAddress('gw'), probeNet('gw')],
      // Sorted by public key: n1's key (2…) before n2's (3…).
      peers: [
        {
          publicKey: N1.publicKey,
          node: 'n1',
          endpoint: N1.endpoint,
          // IPv4 before IPv6, by value (.9 before .10); no keepalive on the gateway's side. The
          // node's link-local probe address too: the gateway probes the path there.
          allowedIps: ['203.0.113.9/32', '203.0.113.10/32', '2001:db8:f::5/128', probeHost('n1')],
        },
        // n2 has no endpoint: it calls in and the gateway learns its address.
        { publicKey: N2.publicKey, node: 'n2', allowedIps: ['203.0.113.3/32', probeHost('n2')] },
        // n3 serves nothing yet but is known, so its first handshake after a move is accepted.
        {
          publicKey: N3.publicKey,
          node: 'n3',
          endpoint: N3.endpoint,
          allowedIps: [probeHost('n3')],
        },
      ],
    });
    // The gateway is not its own peer.
    assert.equal(peerOf(intent, GW), undefined);
  });

  void it('compiles a tunnel intent the tunnel validation accepts', () => {
    const tunnel = tunnelOf(intent);
    assert.equal(isTunnelName(tunnel.name), true);
    const canonical = validateTunnelIntent(tunnel);
    // Same content; validation sorts allowed IPs as text, compile by family and value.
    const bySet = (t: TunnelIntent) =>
      t.peers.map((p) => ({ ...p, allowedIps: [...p.allowedIps].sort() }));
    assert.deepEqual(bySet(canonical), bySet(tunnel));
    assert.deepEqual(diffTunnel(canonical, applied(tunnel), key(9)), []);
  });
});

void describe('core/routed: the serving node', () => {
  void it('holds its FIPs on its tunnel and answers from them through the tunnel', () => {
    const intent = compile(state(), 'n1');
    assert.deepEqual(intent, {
      node: 'n1',
      carriers: ['gw'],
      elements: [
        // Loose reverse-path filtering on the tunnel: clients arrive there although n1's own
        // route back to them is its uplink.
        host('sysctl', `net.ipv4.conf.${N1_TUN}.rp_filter`, '2'),
        // One default route per family it holds, in ipferry's table…
        host('route', `0.0.0.0/0 table ${ROUTE_TABLE}`, `dev ${N1_TUN}`),
        host('route', `::/0 table ${ROUTE_TABLE}`, `dev ${N1_TUN}`),
        // …chosen for answers from each FIP.
        rule('2001:db8:f::5'),
        rule('203.0.113.10'),
        rule('203.0.113.9'),
      ],
      // n1 is no gateway: it reports no FIP status and gets no nftables table or drops.
      fips: [],
      refused: [],
      tunnel: {
        name: N1_TUN,
        listenPort: DEFAULT_TUNNEL_PORT,
        mtu: tunnelMtu(1500, 4),
        // The FIPs are addresses of the tunnel interface.
        addresses: [
          tunnelLinkAddress('n1'),
          '203.0.113.9/32',
          '203.0.113.10/32',
          '2001:db8:f::5/128',
          probeNet('n1'),
        ],
        peers: [
          {
            publicKey: GW.publicKey,
            node: 'gw',
            endpoint: GW.endpoint,
            // Answers go to any client, so the gateway carries everything…
            allowedIps: ['0.0.0.0/0', '::/0'],
            // …and n1 keeps the path open through NATs, since it knows where the gateway is.
            keepaliveSeconds: 25,
          },
        ],
      },
    });
    assert.equal(RULE_PRIORITY, 10100);
    assert.equal(validateTunnelIntent(tunnelOf(intent)).name, N1_TUN);
  });

  void it('adds the IPv6 default route only for a node holding an IPv6 FIP', () => {
    const n2 = compile(state(), 'n2');
    assert.deepEqual(n2.elements, [
      host('sysctl', `net.ipv4.conf.${N2_TUN}.rp_filter`, '2'),
      host('route', `0.0.0.0/0 table ${ROUTE_TABLE}`, `dev ${N2_TUN}`),
      rule('203.0.113.3'),
    ]);
    assert.deepEqual(tunnelOf(n2).addresses, [
      tunnelLinkAddress('n2'),
      '203.0.113.3/32',
      probeNet('n2'),
    ]);
    // The gateway peer still carries both families.
    assert.deepEqual(peerOf(n2, GW)?.allowedIps, ['0.0.0.0/0', '::/0']);
    // IPv6 only: the IPv6 default route, and no IPv4 rp_filter to loosen.
    const v6: CompileState = {
      ...state(),
      fips: [{ fip: routed('2001:db8:f::7', 'n3'), revision: 1 }],
    };
    const tun = tunnelName('n3', 'n3');
    assert.deepEqual(compile(v6, 'n3').elements, [
      host('route', `::/0 table ${ROUTE_TABLE}`, `dev ${tun}`),
      rule('2001:db8:f::7'),
    ]);
  });

  void it('sends no keepalive when the gateway has no endpoint to call', () => {
    const quiet: NodeRecord = { ...GW, endpoint: undefined };
    const intent = compile(state([quiet, N1, N2]), 'n1');
    assert.deepEqual(tunnelOf(intent).peers, [
      { publicKey: GW.publicKey, node: 'gw', allowedIps: ['0.0.0.0/0', '::/0'] },
    ]);
  });

  void it('gives a node that is neither gateway nor serving node nothing', () => {
    for (const name of ['n3', 'nobody']) {
      assert.deepEqual(compile(state(), name), { node: name, elements: [], fips: [], refused: [] });
    }
  });
});

void describe('core/routed: refusals', () => {
  void it('refuses a FIP routed to its own gateway', () => {
    const s: CompileState = {
      pools: [EDGE],
      fips: [{ fip: routed('203.0.113.7', 'gw'), revision: 1 }],
      nodes: NODES,
    };
    const intent = compile(s, 'gw');
    assert.equal(intent.refused.length, 1);
    assert.equal(intent.refused[0]?.address, '203.0.113.7');
    assert.match(intent.refused[0]?.reason ?? '', /routed to its own gateway gw/);
    assert.deepEqual(intent.fips, [{ address: '203.0.113.7', revision: 1 }]);
    // Not realised (not even counted), no tunnel, and still dropped.
    assert.deepEqual(ownedBy(intent, '203.0.113.7'), []);
    assert.equal(intent.tunnel, undefined);
    assert.deepEqual(
      ofKind(intent, 'drop').map((e) => e.key),
      ['2001:db8:f::-2001:db8:f:0:ffff:ffff:ffff:ffff', '203.0.113.0-203.0.113.15'],
    );
  });

  void it('refuses on the gateway when the node has no key, on the node when the gateway has none', () => {
    const keyless = (r: NodeRecord): NodeRecord => ({ ...r, publicKey: undefined });
    const noN2 = compile(state([GW, N1, keyless(N2)]), 'gw');
    assert.deepEqual(noN2.refused, [
      {
        address: '203.0.113.3',
        reason: 'node n2 has no tunnel key: is its agent running with the Linux dataplane?',
      },
    ]);
    assert.deepEqual(ownedBy(noN2, '203.0.113.3'), []);
    assert.equal(peerOf(noN2, N2), undefined);
    assert.equal(
      ofKind(noN2, 'drop').some((e) => e.key === '203.0.113.0-203.0.113.8'),
      true,
      '203.0.113.3 is dropped again',
    );
    // n1's FIPs are not affected.
    assert.equal(peerOf(noN2, N1)?.allowedIps.length, 4);
    // A node without a record at all is refused the same way.
    assert.deepEqual(compile(state([GW, N1]), 'gw').refused, noN2.refused);

    const noGw = compile(state([keyless(GW), N1, N2]), 'n1');
    assert.deepEqual(
      noGw.refused.map((r) => r.address),
      ['203.0.113.9', '203.0.113.10', '2001:db8:f::5'],
    );
    assert.match(noGw.refused[0]?.reason ?? '', /node gw has no tunnel key/);
    assert.deepEqual(noGw.elements, []);
    assert.equal(noGw.tunnel, undefined);
  });
});

void describe('core/routed: moves, order and names', () => {
  void it('moves the allowed IP between peers and the node side from n1 to n2', () => {
    const before = state();
    const after = moved(before, '203.0.113.9', 'n2');
    const fip = after.fips.find((r) => r.fip.address === '203.0.113.9')?.fip;
    assert.equal(fip?.association?.node, 'n2');

    // The gateway: the route and its other elements stay as they are; only the peers change.
    const gwBefore = compile(before, 'gw');
    const gwAfter = compile(after, 'gw');
    assert.deepEqual(gwAfter.elements, gwBefore.elements);
    assert.deepEqual(peerOf(gwAfter, N1)?.allowedIps, [
      '203.0.113.10/32',
      '2001:db8:f::5/128',
      probeHost('n1'),
    ]);
    assert.deepEqual(peerOf(gwAfter, N2)?.allowedIps, [
      '203.0.113.3/32',
      '203.0.113.9/32',
      probeHost('n2'),
    ]);
    const changes = diffTunnel(tunnelOf(gwAfter), applied(tunnelOf(gwBefore)), key(9));
    assert.deepEqual(
      changes.map((c) => (c.kind === 'peer-update' ? [c.peer.publicKey, c.fields] : c.kind)),
      [
        [N1.publicKey, ['allowed-ips']],
        [N2.publicKey, ['allowed-ips']],
      ],
    );

    // The nodes: n1 lets go of the rule and the address, n2 takes them.
    const [n1Before, n1After] = [compile(before, 'n1'), compile(after, 'n1')];
    const [n2Before, n2After] = [compile(before, 'n2'), compile(after, 'n2')];
    assert.deepEqual(diffIntent(n1After.elements, n1Before.elements), {
      add: [],
      replace: [],
      remove: [rule('203.0.113.9')],
    });
    assert.deepEqual(diffIntent(n2After.elements, n2Before.elements), {
      add: [rule('203.0.113.9')],
      replace: [],
      remove: [],
    });
    assert.deepEqual(tunnelOf(n1After).addresses, [
      tunnelLinkAddress('n1'),
      '203.0.113.10/32',
      '2001:db8:f::5/128',
      probeNet('n1'),
    ]);
    assert.deepEqual(tunnelOf(n2After).addresses, [
      tunnelLinkAddress('n2'),
      '203.0.113.3/32',
      '203.0.113.9/32',
      probeNet('n2'),
    ]);
    // The gateway peer carries everything either way.
    assert.deepEqual(tunnelOf(n1After).peers, tunnelOf(n1Before).peers);
    assert.deepEqual(tunnelOf(n2After).peers, tunnelOf(n2Before).peers);
  });

  void it("drops a node's tunnel when it serves nothing any more; the gateway keeps knowing its key", () => {
    const before = state();
    const after = moved(before, '203.0.113.3', 'n1');
    assert.notEqual(compile(before, 'n2').tunnel, undefined);
    assert.deepEqual(compile(after, 'n2'), { node: 'n2', elements: [], fips: [], refused: [] });
    const gw = compile(after, 'gw');
    // The gateway keeps the peer, with nothing allowed, so a later move back handshakes at once.
    assert.deepEqual(peerOf(gw, N2)?.allowedIps, [probeHost('n2')]);
    const changes = diffTunnel(tunnelOf(gw), applied(tunnelOf(compile(before, 'gw'))), key(9));
    assert.deepEqual(
      changes.map((c) => c.kind),
      ['peer-update', 'peer-update'],
    );
  });

  void it('is deterministic whatever the input order', () => {
    const base = state();
    for (const name of ['gw', 'n1', 'n2', 'n3']) {
      const expected = JSON.stringify(compile(base, name));
      for (let seed = 1; seed <= 20; seed++) {
        const s: CompileState = {
          pools: shuffled(base.pools, seed),
          fips: shuffled(base.fips, seed * 7 + 3),
          nodes: shuffled(NODES, seed * 5 + 1),
        };
        assert.equal(JSON.stringify(compile(s, name, NO_FACTS)), expected, `${name} seed ${seed}`);
      }
    }
  });

  void it('names the tunnel from the salt, and takes port and underlay MTU from the options', () => {
    const options = (salt?: string): TunnelOptions => ({
      listenPort: 51999,
      underlayMtu: 1420,
      ...(salt === undefined ? {} : { salt }),
    });
    const names = [undefined, 'labA', 'labB'].map(
      (salt) => compile(state(), 'gw', NO_FACTS, options(salt)).tunnel?.name,
    );
    assert.deepEqual(names, [
      tunnelName('gw', 'gw'),
      tunnelName('gw', 'gw', 'labA'),
      tunnelName('gw', 'gw', 'labB'),
    ]);
    assert.equal(new Set(names).size, 3);
    // The gateway's routes and the node's routes and sysctl follow the salted name.
    const gw = compile(state(), 'gw', NO_FACTS, options('labA'));
    const tun = tunnelName('gw', 'gw', 'labA');
    assert.deepEqual([...new Set(ofKind(gw, 'route').map((e) => e.value))], [`dev ${tun}`]);
    assert.equal(tunnelOf(gw).listenPort, 51999);
    assert.equal(tunnelOf(gw).mtu, 1360);
    const n1 = compile(state(), 'n1', NO_FACTS, options('labA'));
    const n1Tun = tunnelName('n1', 'n1', 'labA');
    assert.equal(tunnelOf(n1).name, n1Tun);
    assert.deepEqual(
      n1.elements.filter((e) => e.kind !== 'rule').map((e) => `${e.key} ${e.value}`),
      [
        `net.ipv4.conf.${n1Tun}.rp_filter 2`,
        `0.0.0.0/0 table ${ROUTE_TABLE} dev ${n1Tun}`,
        `::/0 table ${ROUTE_TABLE} dev ${n1Tun}`,
      ],
    );
  });
});

void describe('core/routed: one gateway per serving node', () => {
  void it('refuses routed FIPs of a second gateway on a node that already answers for one', () => {
    const other: Pool = {
      ...EDGE,
      name: 'other',
      gateway: 'gw2',
      entries: [{ kind: 'cidr', cidr: '198.51.100.0/28' }],
    };
    const second = associate(
      newFloatingIp(other, parseAddress('198.51.100.5'), validateAllocate({}), T0),
      validateAssociate({ target: '198.51.100.5', mode: 'routed', node: 'n1' }),
      T1,
    );
    const intent = compile(
      {
        pools: [EDGE, other],
        fips: [
          { fip: routed('203.0.113.10', 'n1'), revision: 1 },
          { fip: second, revision: 2 },
        ],
        nodes: [...NODES, node('gw2', 9, '192.0.2.99:51820')],
      },
      'n1',
    );
    assert.deepEqual(
      intent.tunnel?.peers.map((p) => p.publicKey),
      [GW.publicKey],
    );
    assert.match(
      intent.refused.find((r) => r.address === '198.51.100.5')?.reason ?? '',
      /one node answers for one gateway/,
    );
    assert.deepEqual(intent.tunnel?.addresses, [
      tunnelLinkAddress('n1'),
      '203.0.113.10/32',
      probeNet('n1'),
    ]);
  });
});

void describe('core/routed: nat and ports targets behind a tunnel (reply-to)', () => {
  const forwarded = (): FloatingIp => {
    const fip = newFloatingIp(EDGE, parseAddress('203.0.113.12'), validateAllocate({}), T0);
    return addForward(
      fip,
      validateForward({
        protocol: 'tcp',
        port: 8080,
        targetPort: 80,
        target: '198.18.0.10',
        node: 'n1',
      }),
      [],
      T1,
    ).fip;
  };
  const compiled = (name: string) =>
    compile({ pools: [EDGE], fips: [{ fip: forwarded(), revision: 1 }], nodes: NODES }, name);

  void it('on the gateway: marks what it DNATs to the target and routes it into the tunnel', () => {
    const gw = compiled('gw');
    const mark = `0x${TUNNEL_MARK.toString(16)}/0x${TUNNEL_MARK.toString(16)}`;
    assert.deepEqual(ofKind(gw, 'tuntarget', 'route', 'rule'), [
      // The MSS of the tunnel's path (1440 over a 1500-byte underlay, minus 40).
      el('tuntarget', '198.18.0.10', '1400', '203.0.113.12'),
      el('route', `198.18.0.10/32 table ${FORWARD_TABLE}`, `dev ${GW_TUN}`, '203.0.113.12'),
      host('rule', `fwmark ${mark} lookup ${FORWARD_TABLE} ipv4`, String(FORWARD_RULE_PRIORITY)),
    ]);
    assert.deepEqual(peerOf(gw, N1)?.allowedIps, ['198.18.0.10/32', probeHost('n1')]);
    assert.ok(
      gw.elements.some((e) => e.kind === 'fwd' && e.key === '203.0.113.12 . tcp . 8080') === false,
      'a shifted port is a fwdport element',
    );
    assert.ok(
      gw.elements.some((e) => e.kind === 'fwdport' && e.value === '198.18.0.10 . 80'),
      'the DNAT itself is as for a LAN target',
    );
  });

  void it('gives the target the MSS of a narrower path, once measured; nothing before', () => {
    const measured = compile(
      { pools: [EDGE], fips: [{ fip: forwarded(), revision: 1 }], nodes: NODES },
      'gw',
      NO_FACTS,
      { listenPort: 51820, peerMtu: new Map([['n1', 1320]]) },
    );
    assert.deepEqual(ofKind(measured, 'tuntarget'), [
      el('tuntarget', '198.18.0.10', '1280', '203.0.113.12'),
    ]);
    assert.deepEqual(measured.carriers, ['n1']);
    // Until n1's path is measured: n1 is in the tunnel (so the probes pass) and probed, but
    // no DNAT, mark or route sends anything toward it, and the FIP is pending, not refused.
    const waiting = compile(
      { pools: [EDGE], fips: [{ fip: forwarded(), revision: 1 }], nodes: NODES },
      'gw',
      NO_FACTS,
      { listenPort: 51820, measured: new Set(['n3']) },
    );
    assert.deepEqual(ofKind(waiting, 'tuntarget', 'route', 'rule', 'fwd', 'fwdport', 'dnat'), []);
    assert.deepEqual(waiting.refused, []);
    assert.deepEqual(
      waiting.pending?.map((p) => p.address),
      ['203.0.113.12'],
    );
    assert.match(waiting.pending?.[0]?.reason ?? '', /path through the tunnel to n1/);
    assert.deepEqual(waiting.carriers, ['n1']);
    assert.deepEqual(peerOf(waiting, N1)?.allowedIps, [probeHost('n1')]);
  });

  void it('starts from the MTU of the route toward a peer endpoint when no underlay is set', () => {
    const facts = { ...NO_FACTS, defaultRoutes: [{ family: 4 as const, dev: 'eth0', mtu: 1500 }] };
    // n1's side: its gateway's endpoint lies behind a 1,380-byte uplink.
    const n1 = compile(
      { pools: [EDGE], fips: [{ fip: forwarded(), revision: 1 }], nodes: NODES },
      'n1',
      { ...facts, defaultRoutes: [{ family: 4, dev: 'eth0', mtu: 1380 }] },
      { listenPort: 51820, endpointMtus: new Map([['192.0.2.2', 1380]]) },
    );
    assert.equal(n1.tunnel?.mtu, 1320);
    // The gateway's peers call in: its default route's MTU.
    assert.equal(compiled('gw').tunnel?.mtu, 1440);
    const gw = compile(
      { pools: [EDGE], fips: [{ fip: forwarded(), revision: 1 }], nodes: NODES },
      'gw',
      { ...facts, defaultRoutes: [{ family: 4, dev: 'eth0', mtu: 9000 }] },
      { listenPort: 51820 },
    );
    assert.equal(gw.tunnel?.mtu, 8940);
    // An operator's underlay wins.
    const fixed = compile(
      { pools: [EDGE], fips: [{ fip: forwarded(), revision: 1 }], nodes: NODES },
      'n1',
      facts,
      { listenPort: 51820, underlayMtu: 1500, endpointMtus: new Map([['192.0.2.2', 1380]]) },
    );
    assert.equal(fixed.tunnel?.mtu, 1440);
  });

  void it('on the node: answers to what came through the tunnel go back through it', () => {
    const n1 = compiled('n1');
    const mark = `0x${TUNNEL_MARK.toString(16)}/0x${TUNNEL_MARK.toString(16)}`;
    assert.deepEqual(ofKind(n1, 'table', 'route', 'rule'), [
      host('table', 'inet ipferry', NFT_SKELETON_VERSION),
      host('route', `0.0.0.0/0 table ${ROUTE_TABLE}`, `dev ${N1_TUN}`),
      host('rule', `fwmark ${mark} lookup ${ROUTE_TABLE} ipv4`, String(REPLY_RULE_PRIORITY)),
    ]);
    assert.deepEqual(peerOf(n1, GW)?.allowedIps, ['0.0.0.0/0', '::/0']);
    // It holds no FIP: only the tunnel's link address.
    assert.deepEqual(tunnelOf(n1).addresses, [tunnelLinkAddress('n1'), probeNet('n1')]);
  });
});

void describe('core/routed: on-link pools (proxy ARP)', () => {
  // The provider's router reaches these FIPs by ARP/NDP on the gateway's uplink segment.
  const LINK: Pool = {
    ...EDGE,
    name: 'link',
    delivery: 'onlink',
    uplink: 'eth0',
    entries: [
      { kind: 'cidr', cidr: '192.0.2.64/28' },
      { kind: 'cidr', cidr: '2001:db8:1::/64' },
    ],
  };
  const onLink = (address: string, input: AssociateInput): FloatingIp =>
    associate(
      newFloatingIp(LINK, parseAddress(address), validateAllocate({}), T0),
      validateAssociate(input),
      T1,
    );
  const routedTo = (address: string, to = 'n1'): FloatingIp =>
    onLink(address, { target: address, mode: 'routed', node: to });
  const natTo = (address: string): FloatingIp => onLink(address, { target: '10.0.0.70' });
  const stateOf = (fips: FloatingIp[], nodes: readonly NodeRecord[] = NODES): CompileState => ({
    pools: [LINK],
    fips: fips.map((fip, i) => ({ fip, revision: i + 1 })),
    nodes,
  });
  const FIP = '192.0.2.70';
  const FIP6 = '2001:db8:1::70';
  const own = (kind: ElementKind, key: string, value = ''): IntentElement =>
    el(kind, key, value, key.split(' ')[0]!.split('/')[0]!);

  void it('answers ARP for a routed IPv4 FIP by a proxy entry, not a local address, and routes it into the tunnel', () => {
    const intent = compile(stateOf([routedTo(FIP), routedTo(FIP6)]), 'gw');
    assert.deepEqual(intent.refused, []);
    assert.deepEqual(ownedBy(intent, FIP), [
      own('claim', FIP, 'proxy eth0'),
      own('counter', FIP),
      own('route', `${FIP}/32`, `dev ${GW_TUN}`),
    ]);
    // IPv6 on-link FIPs are proxy NDP entries whatever their mode: nothing changes for them.
    assert.deepEqual(ownedBy(intent, FIP6), [
      own('claim', FIP6, 'eth0'),
      own('counter', FIP6),
      own('route', `${FIP6}/128`, `dev ${GW_TUN}`),
    ]);
    assert.deepEqual(peerOf(intent, N1)?.allowedIps, [`${FIP}/32`, `${FIP6}/128`, probeHost('n1')]);
    // Delivered, so not dropped.
    const drops = ofKind(intent, 'drop').map((e) => e.key);
    assert.ok(drops.includes('192.0.2.65-192.0.2.69') && drops.includes('192.0.2.71-192.0.2.78'));
  });

  void it('swaps the local address and the proxy entry in one diff when a FIP moves between nat and routed', () => {
    const asNat = compile(stateOf([natTo(FIP)]), 'gw').elements;
    const asRouted = compile(stateOf([routedTo(FIP)]), 'gw').elements;
    assert.deepEqual(
      asNat.filter((e) => e.kind === 'claim'),
      [own('claim', FIP, 'eth0')],
    );
    const toRouted = diffIntent(asRouted, asNat);
    assert.deepEqual(toRouted.replace, [
      { from: own('claim', FIP, 'eth0'), to: own('claim', FIP, 'proxy eth0') },
    ]);
    // Besides the FIP's own elements, only the pool's drop ranges change: they now skip it.
    const ofFip = (list: readonly IntentElement[]): string[] =>
      list.filter((e) => e.owner === FIP).map((e) => `${e.kind} ${e.key}`);
    assert.deepEqual(ofFip(toRouted.add), [`route ${FIP}/32`]);
    assert.deepEqual(ofFip(toRouted.remove), [`dnat ${FIP}`, 'snat 10.0.0.70']);
    assert.deepEqual(
      [...toRouted.add, ...toRouted.remove].filter((e) => e.owner !== FIP).map((e) => e.kind),
      ['drop', 'drop', 'drop'],
    );
    const toNat = diffIntent(asNat, asRouted);
    assert.deepEqual(toNat.replace, [
      { from: own('claim', FIP, 'proxy eth0'), to: own('claim', FIP, 'eth0') },
    ]);
    assert.deepEqual(ofFip(toNat.remove), [`route ${FIP}/32`]);
    assert.deepEqual(ofFip(toNat.add), [`dnat ${FIP}`, 'snat 10.0.0.70']);
  });

  void it('claims nothing on the serving node, nor for a routed FIP the gateway refuses', () => {
    const n1 = compile(stateOf([routedTo(FIP)]), 'n1');
    assert.deepEqual(ofKind(n1, 'claim'), []);
    assert.ok(tunnelOf(n1).addresses.includes(`${FIP}/32`), 'n1 holds the FIP on its tunnel');
    // Refused (no key, its own gateway): neither a proxy entry nor a local address.
    const keyless = compile(stateOf([routedTo(FIP)], [GW, { ...N1, publicKey: undefined }]), 'gw');
    assert.match(keyless.refused[0]?.reason ?? '', /node n1 has no tunnel key/);
    assert.deepEqual(ownedBy(keyless, FIP), []);
    const ownGateway = compile(stateOf([routedTo(FIP, 'gw')]), 'gw');
    assert.match(ownGateway.refused[0]?.reason ?? '', /routed to its own gateway/);
    assert.deepEqual(ownedBy(ownGateway, FIP), []);
  });
});
