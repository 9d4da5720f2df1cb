import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { IpferryError } from '../../src/core/errors.js';
import {
  describeChange,
  diffTunnel,
  isTunnelName,
  mssFor,
  type ObservedTunnel,
  parseEndpoint,
  type TunnelIntent,
  tunnelMtu,
  tunnelName,
  tunnelProbeAddress,
  validateTunnelIntent,
} from '../../src/core/tunnel.js';

const KEY_A = '6aEaCvVEBo9tCynd6OPu4SYeUgnwID+9quu9L1FC60I=';
const KEY_B = 'YmMRpY5pZyhqA6oK/m22Ft4VX7me52e0vD91bGquAwg=';
const KEY_C = '2oVgNUQ4gnalww1lCbo1gOTrJkzMq/GXeVm0pIKEM2U=';

function code(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof IpferryError, `not an IpferryError: ${String(e)}`);
    return e.code;
  }
  assert.fail('did not throw');
}

function caught(fn: () => unknown): IpferryError {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof IpferryError);
    return e;
  }
  assert.fail('did not throw');
}

const intent: TunnelIntent = {
  name: 'ipftest0',
  listenPort: 51820,
  mtu: 1440,
  addresses: ['10.200.0.1/30'],
  peers: [{ publicKey: KEY_B, endpoint: '100.64.0.2:51821', allowedIps: ['10.200.0.2/32'] }],
};

function observed(over: Partial<ObservedTunnel> = {}): ObservedTunnel {
  return {
    name: intent.name,
    kind: 'userspace',
    publicKey: KEY_A,
    listenPort: intent.listenPort,
    mtu: intent.mtu,
    up: true,
    addresses: [...intent.addresses],
    peers: intent.peers,
    ...over,
  };
}

describe('tunnelMtu and mssFor', () => {
  it('subtracts 60 bytes over IPv4 and 80 over IPv6', () => {
    assert.equal(tunnelMtu(1500, 4), 1440);
    assert.equal(tunnelMtu(1500, 6), 1420);
    assert.equal(tunnelMtu(9000, 4), 8940);
  });

  it('keeps a configured MTU the underlay carries and refuses a larger one', () => {
    assert.equal(tunnelMtu(1500, 4, { configured: 1420 }), 1420);
    assert.equal(tunnelMtu(1500, 4, { configured: 1440 }), 1440);
    assert.equal(
      code(() => tunnelMtu(1500, 4, { configured: 1441 })),
      'IPF_E_TUNNEL_MTU',
    );
    assert.equal(
      code(() => tunnelMtu(1500, 6, { configured: 1440 })),
      'IPF_E_TUNNEL_MTU',
    );
  });

  it('refuses less than 1280 when the tunnel carries IPv6, unless it carries IPv4 only', () => {
    const e = caught(() => tunnelMtu(1340, 6));
    assert.equal(e.code, 'IPF_E_TUNNEL_MTU');
    assert.match(e.message, /1260 is below 1280/);
    assert.equal(tunnelMtu(1340, 6, { innerIpv6: false }), 1260);
    assert.equal(tunnelMtu(1340, 4), 1280);
    assert.equal(
      code(() => tunnelMtu(1500, 4, { configured: 1279 })),
      'IPF_E_TUNNEL_MTU',
    );
  });

  it('refuses a nonsensical underlay', () => {
    assert.equal(
      code(() => tunnelMtu(0, 4)),
      'IPF_E_TUNNEL_MTU',
    );
    assert.equal(
      code(() => tunnelMtu(1500.5, 4)),
      'IPF_E_TUNNEL_MTU',
    );
  });

  it('clamps MSS to the MTU minus TCP/IP headers', () => {
    assert.equal(mssFor(1440, 4), 1400);
    assert.equal(mssFor(1420, 6), 1360);
  });
});

describe('parseEndpoint', () => {
  it('reads IPv4, bracketed IPv6 and names, in canonical form', () => {
    assert.deepEqual(parseEndpoint('192.0.2.1:51820'), {
      host: '192.0.2.1',
      port: 51820,
      family: 4,
      text: '192.0.2.1:51820',
    });
    assert.deepEqual(parseEndpoint('[2001:DB8:0::1]:1'), {
      host: '2001:db8::1',
      port: 1,
      family: 6,
      text: '[2001:db8::1]:1',
    });
    assert.deepEqual(parseEndpoint('GW.Example.net.:65535'), {
      host: 'gw.example.net',
      port: 65535,
      family: undefined,
      text: 'gw.example.net:65535',
    });
  });

  for (const bad of [
    '2001:db8::1:51820',
    '192.0.2.1',
    '192.0.2.1:',
    '192.0.2.1:0',
    '192.0.2.1:65536',
    '192.0.2.1:051820',
    '192.0.2.1:port',
    ':51820',
    '[192.0.2.1]:51820',
    '[2001:db8::1]',
    '300.1.1.1:51820',
    '10.1.1:51820',
    'under_score.example:1',
    ' 192.0.2.1:51820',
    '',
  ]) {
    it(`refuses ${JSON.stringify(bad)} with IPF_E_TUNNEL_ENDPOINT`, () => {
      assert.equal(
        code(() => parseEndpoint(bad)),
        'IPF_E_TUNNEL_ENDPOINT',
      );
    });
  }
});

describe('tunnelName', () => {
  it('is ipf…, at most 15 characters, stable, and differs per direction and salt', () => {
    const ab = tunnelName('gw', 'home-server-1');
    assert.ok(isTunnelName(ab), ab);
    assert.ok(ab.length <= 15);
    assert.match(ab, /^ipfhomes[0-9a-z]{7}$/);
    assert.equal(tunnelName('gw', 'home-server-1'), ab);
    assert.notEqual(tunnelName('home-server-1', 'gw'), ab);
    assert.notEqual(tunnelName('gw', 'home-server-1', 'lab2'), ab);
    assert.ok(isTunnelName(tunnelName('', '')));
    assert.ok(isTunnelName(tunnelName('ä', 'Ω-ü')));
  });

  it('accepts only ipf-prefixed interface names', () => {
    assert.ok(isTunnelName('ipf0'));
    assert.ok(!isTunnelName('ipf'));
    assert.ok(!isTunnelName('eth0'));
    assert.ok(!isTunnelName('ipf0123456789abc'));
    assert.ok(!isTunnelName('ipf0/1'));
  });
});

describe('validateTunnelIntent', () => {
  it('returns the intent in canonical form', () => {
    const got = validateTunnelIntent({
      name: 'ipftest0',
      listenPort: 51820,
      mtu: 1420,
      addresses: ['2001:DB8::1/64', '10.200.0.1/30', '10.200.0.1/30'],
      peers: [
        { publicKey: KEY_C, allowedIps: ['10.9.0.0/24', '10.200.0.3/32'], keepaliveSeconds: 25 },
        { publicKey: KEY_B, endpoint: '[2001:db8:0::2]:51820', allowedIps: [] },
      ],
      underlay: { mtu: 1500, family: 6 },
    });
    assert.deepEqual(got, {
      name: 'ipftest0',
      listenPort: 51820,
      mtu: 1420,
      addresses: ['10.200.0.1/30', '2001:db8::1/64'],
      peers: [
        { publicKey: KEY_B, endpoint: '[2001:db8::2]:51820', allowedIps: [] },
        { publicKey: KEY_C, allowedIps: ['10.200.0.3/32', '10.9.0.0/24'], keepaliveSeconds: 25 },
      ].sort((a, b) => (a.publicKey < b.publicKey ? -1 : 1)),
      underlay: { mtu: 1500, family: 6 },
    });
  });

  it('lists every problem at once', () => {
    const e = caught(() =>
      validateTunnelIntent({
        name: 'wg0',
        listenPort: 0,
        mtu: 'big',
        addresses: ['10.200.0.1', 'fe80::1/128'],
        peers: [
          { publicKey: 'nope', allowedIps: ['10.200.0.1/30'] },
          { publicKey: KEY_B, allowedIps: ['10.9.0.0/24'], keepaliveSeconds: 0 },
          { publicKey: KEY_B, allowedIps: ['10.9.0.0/24'] },
        ],
      }),
    );
    assert.equal(e.code, 'IPF_E_VALIDATION');
    assert.deepEqual(
      e.problems.map((p) => p.path),
      [
        'name',
        'listenPort',
        'mtu',
        'addresses[0]',
        'addresses[1]',
        'peers[0].publicKey',
        'peers[0].allowedIps[0]',
        'peers[1].keepaliveSeconds',
        'peers[2].publicKey',
        'peers[2].allowedIps',
      ],
    );
    assert.match(e.problems[6]?.message ?? '', /did you mean 10\.200\.0\.0\/30/);
  });

  it('keeps the endpoint code when bad endpoints are the only problem', () => {
    const e = caught(() =>
      validateTunnelIntent({
        ...intent,
        peers: [{ publicKey: KEY_B, endpoint: '2001:db8::2:51820', allowedIps: [] }],
      }),
    );
    assert.equal(e.code, 'IPF_E_TUNNEL_ENDPOINT');
    assert.equal(e.problems[0]?.path, 'peers[0].endpoint');
    assert.match(e.message, /write an IPv6 endpoint as \[address\]:port/);
  });

  it('keeps the MTU code when the underlay cannot carry the MTU', () => {
    const e = caught(() =>
      validateTunnelIntent({ ...intent, mtu: 1460, underlay: { mtu: 1500, family: 4 } }),
    );
    assert.equal(e.code, 'IPF_E_TUNNEL_MTU');
    assert.match(e.message, /at most 1440/);
    assert.equal(
      code(() => validateTunnelIntent({ ...intent, mtu: 1200, addresses: ['2001:db8::1/64'] })),
      'IPF_E_TUNNEL_MTU',
    );
    assert.ok(validateTunnelIntent({ ...intent, mtu: 1200 }));
  });

  it('lists endpoint and MTU problems together under IPF_E_VALIDATION', () => {
    const e = caught(() =>
      validateTunnelIntent({
        ...intent,
        mtu: 1460,
        underlay: { mtu: 1500, family: 4 },
        peers: [{ publicKey: KEY_B, endpoint: 'x', allowedIps: [] }],
      }),
    );
    assert.equal(e.code, 'IPF_E_VALIDATION');
    assert.deepEqual(e.problems.map((p) => p.path).sort(), ['mtu', 'peers[0].endpoint']);
  });

  it('refuses what is not an object', () => {
    assert.equal(
      code(() => validateTunnelIntent(null)),
      'IPF_E_VALIDATION',
    );
    assert.equal(
      code(() => validateTunnelIntent({ ...intent, peers: 'x' })),
      'IPF_E_VALIDATION',
    );
  });
});

describe('diffTunnel', () => {
  it('builds a new tunnel step by step', () => {
    assert.deepEqual(diffTunnel(intent, undefined, KEY_A).map(describeChange), [
      'create',
      'private-key',
      'listen-port 51820',
      `peer-add ${KEY_B}`,
      'mtu 1440',
      'address-add 10.200.0.1/30',
      'up',
    ]);
  });

  it('finds nothing to do when the tunnel matches', () => {
    assert.deepEqual(diffTunnel(intent, observed(), KEY_A), []);
  });

  it('ignores a learned endpoint of a peer that has none configured', () => {
    const want = { ...intent, peers: [{ publicKey: KEY_B, allowedIps: ['10.200.0.2/32'] }] };
    assert.deepEqual(diffTunnel(want, observed(), KEY_A), []);
  });

  it('changes only what differs, removing peers no longer wanted', () => {
    const want: TunnelIntent = {
      ...intent,
      peers: [
        {
          publicKey: KEY_B,
          endpoint: '100.64.0.6:51821',
          allowedIps: ['10.200.0.2/32', '10.9.0.0/24'],
          keepaliveSeconds: 25,
        },
      ],
    };
    const have = observed({
      publicKey: KEY_C,
      up: false,
      peers: [...intent.peers, { publicKey: KEY_C, allowedIps: [] }],
    });
    assert.deepEqual(diffTunnel(want, have, KEY_A).map(describeChange), [
      'private-key',
      `peer-update ${KEY_B} endpoint,allowed-ips,keepalive`,
      `peer-remove ${KEY_C}`,
      'up',
    ]);
  });

  it('adds addresses before deleting the ones they replace', () => {
    const want = { ...intent, addresses: ['10.200.0.5/30'] };
    assert.deepEqual(diffTunnel(want, observed(), KEY_A).map(describeChange), [
      'address-add 10.200.0.5/30',
      'address-del 10.200.0.1/30',
    ]);
  });

  it('deletes first when an IPv6 address only changes its prefix length', () => {
    const want = { ...intent, addresses: ['10.200.0.1/29', '2001:db8::1/64'] };
    const have = observed({ addresses: ['10.200.0.1/30', '2001:db8::1/112'] });
    assert.deepEqual(diffTunnel(want, have, KEY_A).map(describeChange), [
      'address-del 2001:db8::1/112',
      'address-add 10.200.0.1/29',
      'address-add 2001:db8::1/64',
      'address-del 10.200.0.1/30',
    ]);
  });
});

describe('tunnelProbeAddress', () => {
  it('is a stable link-local address per node, different between nodes', () => {
    const a = tunnelProbeAddress('gw');
    assert.equal(a, tunnelProbeAddress('gw'));
    assert.notEqual(a, tunnelProbeAddress('home'));
    assert.match(a, /^fe80::[0-9a-f]{1,4}(:[0-9a-f]{1,4}){3}$/);
    assert.deepEqual(
      validateTunnelIntent({
        name: 'ipfx',
        listenPort: 1,
        mtu: 1420,
        addresses: [`${a}/64`],
        peers: [],
      }).addresses,
      [`${a}/64`],
    );
  });
});
