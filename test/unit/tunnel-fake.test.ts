/** The tunnel conformance suite on the strict fake, plus what only the fake can be asked. */
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { describe, it } from 'node:test';
import { IpferryError } from '../../src/core/errors.js';
import { type TunnelDriverKind, tunnelName } from '../../src/core/tunnel.js';
import { FakeTunnelDriver, FakeTunnelNetwork } from '../../src/dataplane/tunnel/fake.js';
import { generateKeyPair } from '../../src/dataplane/tunnel/keys.js';
import { type TunnelFixture, tunnelConformance } from '../support/tunnel-conformance.js';

/** The fake playing `driver`, with what that driver can report. */
async function fakeFixture(driver: TunnelDriverKind): Promise<TunnelFixture> {
  await Promise.resolve();
  const network = new FakeTunnelNetwork();
  const drivers = {
    a: new FakeTunnelDriver({ network, host: 'a', underlay: ['100.64.0.1'], driver }),
    b: new FakeTunnelDriver({ network, host: 'b', underlay: ['100.64.0.2'], driver }),
  };
  const tinc = driver === 'tinc';
  return {
    kind: driver,
    can: { handshakes: true, counters: !tinc, learnedEndpoints: true, peerNodes: tinc },
    peerKey: () =>
      Promise.resolve(
        tinc
          ? generateKeyPairSync('rsa', { modulusLength: 2048 })
              .publicKey.export({ type: 'pkcs1', format: 'pem' })
              .toString()
          : generateKeyPair().publicKey,
      ),
    drivers,
    underlay: { a: '100.64.0.1', b: '100.64.0.2' },
    salt: 'fake',
    ping: async (from, address) => {
      await Promise.resolve();
      return drivers[from].exchange(address) !== undefined;
    },
    tcpEcho: async (from, address) => {
      await Promise.resolve();
      const reply = drivers[from].exchange(address, 60);
      return reply && { name: from === 'a' ? 'b' : 'a', address: reply.source };
    },
    drift: async (side, name) => {
      await Promise.resolve();
      drivers[side].tamper(name, { mtu: 1300, up: false });
    },
    leftovers: async (side, name) => [
      ...((await drivers[side].observe(name)) ? [`link ${name}`] : []),
      ...(network.sockets.has(name) ? [`socket ${name}`] : []),
      ...[...network.processes]
        .filter(([, n]) => n === name)
        .map(([pid]) => `${tinc ? 'tincd' : 'wireguard-go'} ${pid}`),
    ],
    cleanup: () => Promise.resolve(),
  };
}

tunnelConformance('fake', () => fakeFixture('wireguard'));
tunnelConformance('fake (tinc)', () => fakeFixture('tinc'));

describe('fake tunnel driver: machine-wide strictness', () => {
  const KEY = 'YmMRpY5pZyhqA6oK/m22Ft4VX7me52e0vD91bGquAwg=';
  const intent = (name: string, listenPort: number) => ({
    name,
    listenPort,
    mtu: 1420,
    addresses: ['10.200.0.1/30'],
    peers: [{ publicKey: KEY, allowedIps: ['10.200.0.2/32'] }],
  });

  it('refuses a userspace name another host on the machine already serves', async () => {
    const network = new FakeTunnelNetwork();
    const one = new FakeTunnelDriver({ network, host: 'one', underlay: ['100.64.0.1'] });
    const two = new FakeTunnelDriver({ network, host: 'two', underlay: ['100.64.0.2'] });
    const name = tunnelName('one', 'two');
    await one.apply(intent(name, 51820));
    await assert.rejects(two.apply(intent(name, 51820)), (e: unknown) => {
      return e instanceof IpferryError && /unix socket in use/.test(e.message);
    });
    assert.equal(two.dump(), '');
    // Kernel interfaces are per namespace: the same name on another host is fine.
    const k1 = new FakeTunnelDriver({
      network,
      host: 'k1',
      underlay: [],
      implementation: 'kernel',
    });
    const k2 = new FakeTunnelDriver({
      network,
      host: 'k2',
      underlay: [],
      implementation: 'kernel',
    });
    await k1.apply(intent('ipfkernel0', 51820));
    await k2.apply(intent('ipfkernel0', 51820));
  });

  it('refuses a listen port already bound on the host, creating nothing', async () => {
    const network = new FakeTunnelNetwork();
    const host = new FakeTunnelDriver({ network, host: 'h', underlay: ['100.64.0.1'] });
    await host.apply(intent('ipfone0', 51820));
    const before = host.dump();
    await assert.rejects(host.apply(intent('ipftwo0', 51820)), /Address already in use/);
    assert.equal(host.dump(), before);
    assert.deepEqual([...network.sockets.keys()], ['ipfone0']);
  });

  it('refuses an intent for the other driver, creating nothing', async () => {
    const network = new FakeTunnelNetwork();
    const wg = new FakeTunnelDriver({ network, host: 'w', underlay: ['100.64.0.1'] });
    const tinc = new FakeTunnelDriver({
      network,
      host: 't',
      underlay: ['100.64.0.2'],
      driver: 'tinc',
    });
    const tincKey = await tinc.publicKey();
    const forTinc = {
      ...intent('ipfone0', 51820),
      driver: 'tinc' as const,
      peers: [{ publicKey: tincKey, node: 'x', allowedIps: [] }],
    };
    await assert.rejects(wg.apply(forTinc), /driver/);
    await assert.rejects(tinc.apply(intent('ipfone0', 51820)), /driver/);
    assert.equal(await tinc.detect(), 'userspace');
    assert.equal(wg.dump() + tinc.dump(), '');
  });

  it('dumps its state', async () => {
    const network = new FakeTunnelNetwork();
    const host = new FakeTunnelDriver({ network, host: 'h', underlay: ['100.64.0.1'] });
    await host.apply(intent('ipfone0', 51820));
    const key = await host.publicKey();
    assert.equal(
      host.dump(),
      [
        'ipfone0 userspace pid 1000 port 51820 mtu 1420 up',
        `  key ${key}`,
        '  address 10.200.0.1/30',
        `  peer ${KEY} endpoint (none) allowed 10.200.0.2/32 keepalive off`,
      ].join('\n'),
    );
  });
});
