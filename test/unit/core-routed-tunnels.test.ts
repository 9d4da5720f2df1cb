/**
 * compile/tunnels.ts per tunnel driver and underlay: tinc's next hops (switch mode is an Ethernet
 * segment), refusing peers that run another driver, and the MTU of an IPv6 underlay.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { describe, it } from 'node:test';
import { type CompileState, compile } from '../../src/core/compile/index.js';
import type { FloatingIp, NodeRecord } from '../../src/core/model.js';
import { ROUTE_TABLE } from '../../src/core/names.js';
import { tunnelMtu, tunnelProbeAddress, validateTunnelIntent } from '../../src/core/tunnel.js';

const T = '2024-01-01T00:00:00.000Z';
const tincKey = (): string =>
  generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey.export({
    type: 'pkcs1',
    format: 'pem',
  }) as string;
const wgKey = (seed: number): string => Buffer.alloc(32, seed).toString('base64');

function node(name: string, extra: Partial<NodeRecord>): NodeRecord {
  return { name, addresses: [], reservedPorts: [], registeredAt: T, ...extra };
}

function routedTo(address: string, to: string): { fip: FloatingIp; revision: number } {
  return {
    revision: 1,
    fip: {
      address,
      family: address.includes(':') ? 6 : 4,
      pool: 'edge',
      allocatedAt: T,
      forwards: [],
      nextForwardId: 1,
      shared: false,
      tags: [],
      association: { mode: 'routed', target: address, node: to, associatedAt: T },
    } as unknown as FloatingIp,
  };
}

function state(nodes: NodeRecord[]): CompileState {
  return {
    pools: [
      {
        name: 'edge',
        gateway: 'old',
        delivery: 'routed',
        tags: [],
        createdAt: T,
        entries: [
          { kind: 'cidr', cidr: '203.0.113.0/28' },
          { kind: 'cidr', cidr: '2001:db8:f::/64' },
        ],
      },
    ],
    fips: [routedTo('203.0.113.10', 'new'), routedTo('2001:db8:f::10', 'new')],
    nodes,
  };
}

describe('routed over tinc (switch mode)', () => {
  const tinc = { listenPort: 655, driver: 'tinc' as const };
  const nodes = [
    node('old', { publicKey: tincKey(), tunnelDriver: 'tinc', endpoint: '192.0.2.2:655' }),
    node('new', { publicKey: tincKey(), tunnelDriver: 'tinc' }),
  ];

  it('routes the FIPs to the new server’s link-local address, never to an IPv4 tunnel address', () => {
    const old = compile(state(nodes), 'old', undefined, tinc);
    const tun = old.tunnel?.name ?? '';
    const routes = old.elements.filter((e) => e.kind === 'route').map((e) => [e.key, e.value]);
    assert.deepEqual(routes, [
      ['2001:db8:f::10/128', `dev ${tun} via ${tunnelProbeAddress('new')}`],
      ['203.0.113.10/32', `dev ${tun} via inet6 ${tunnelProbeAddress('new')}`],
    ]);
    assert.equal(old.tunnel?.driver, 'tinc');
    assert.equal(old.tunnel?.mtu, tunnelMtu(1500, 4, { driver: 'tinc' }));
    // Switch mode has no allowed IPs to probe by: the peer is named, its prefixes recorded.
    assert.deepEqual(old.tunnel?.peers[0]?.node, 'new');
    assert.deepEqual(old.tunnel?.peers[0]?.allowedIps, ['203.0.113.10/32', '2001:db8:f::10/128']);
    assert.equal(validateTunnelIntent(old.tunnel).driver, 'tinc');
  });

  it('answers from the FIPs through the old server’s link-local address', () => {
    const fresh = compile(state(nodes), 'new', undefined, tinc);
    const tun = fresh.tunnel?.name ?? '';
    const defaults = fresh.elements.filter((e) => e.kind === 'route').map((e) => [e.key, e.value]);
    assert.deepEqual(defaults, [
      [`0.0.0.0/0 table ${ROUTE_TABLE}`, `dev ${tun} via inet6 ${tunnelProbeAddress('old')}`],
      [`::/0 table ${ROUTE_TABLE}`, `dev ${tun} via ${tunnelProbeAddress('old')}`],
    ]);
    assert.ok(fresh.tunnel?.addresses.includes(`${tunnelProbeAddress('new')}/64`));
  });

  it('refuses a peer that runs the other driver, on both ends', () => {
    const mixed = [nodes[0]!, node('new', { publicKey: wgKey(3) })];
    const old = compile(state(mixed), 'old', undefined, tinc);
    assert.equal(old.refused.length, 2);
    assert.match(old.refused[0]?.reason ?? '', /new runs wireguard tunnels and this node tinc/);
    assert.equal(old.elements.filter((e) => e.kind === 'route').length, 0);
    const fresh = compile(state(mixed), 'new', undefined, { listenPort: 51820 });
    assert.match(fresh.refused[0]?.reason ?? '', /old runs tinc tunnels and this node wireguard/);
    assert.equal(fresh.tunnel, undefined);
  });
});

describe('tinc’s MTU', () => {
  it('leaves 1445 bytes over a 1500-byte IPv4 path (as found by hand), 1429 over IPv6', () => {
    assert.equal(tunnelMtu(1500, 4, { driver: 'tinc' }), 1445);
    assert.equal(tunnelMtu(1500, 6, { driver: 'tinc' }), 1429);
    // Blowfish pads to 8 bytes: a few bytes less of path can cost eight of packet.
    assert.equal(tunnelMtu(1499, 4, { driver: 'tinc' }), 1445);
    assert.equal(tunnelMtu(1495, 4, { driver: 'tinc' }), 1437);
  });
});

describe('WireGuard over an IPv6 underlay', () => {
  it('takes 80 bytes of overhead instead of 60 when the peer is reached over IPv6', () => {
    const nodes = [
      node('old', { publicKey: wgKey(1), endpoint: '[2001:db8:1::2]:51820' }),
      node('new', { publicKey: wgKey(2) }),
    ];
    const fresh = compile(state(nodes), 'new', undefined, { listenPort: 51820 });
    assert.equal(fresh.tunnel?.mtu, 1420);
    assert.equal(fresh.tunnel?.peers[0]?.endpoint, '[2001:db8:1::2]:51820');
    // The gateway's peer calls in without an endpoint: its own endpoint tells the family.
    assert.equal(compile(state(nodes), 'old', undefined, { listenPort: 51820 }).tunnel?.mtu, 1420);
    const v4 = compile(
      state([node('old', { publicKey: wgKey(1), endpoint: '192.0.2.2:51820' }), nodes[1]!]),
      'new',
      undefined,
      { listenPort: 51820 },
    );
    assert.equal(v4.tunnel?.mtu, 1440);
  });
});
