/**
 * One behaviour for every tunnel driver: the strict fake and WireGuard on a real kernel (two
 * network namespaces joined by a veth) must agree on refusals that create nothing, on what
 * observe() reports after apply(), on traffic and handshakes through the tunnel, on applying
 * nothing the second time, on incremental peer and address changes, on repairing drift, and on
 * remove() leaving nothing behind.
 *
 * Topology: host a (underlay 100.64.0.1/30, tunnel 10.200.0.1/30, port 51820) has b as peer
 * with an endpoint; host b (100.64.0.2/30, 10.200.0.2/30, port 51821) has a as peer without
 * one and learns a's address from its handshake.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { IpferryError } from '../src/core/errors.js';
import {
  describeChange,
  isWireGuardKey,
  type ObservedTunnel,
  type TunnelIntent,
  tunnelMtu,
  tunnelName,
} from '../src/core/tunnel.js';
import type { TunnelDriver } from '../src/dataplane/tunnel/driver.js';
import { generateKeyPair } from '../src/dataplane/tunnel/keys.js';
import { waitFor } from './helpers.js';

export type Side = 'a' | 'b';

export interface TunnelFixture {
  readonly drivers: Readonly<Record<Side, TunnelDriver>>;
  /** Each host's underlay address. */
  readonly underlay: Readonly<Record<Side, string>>;
  /** Separates this run's interface names from any other run's on the machine. */
  readonly salt: string;
  /** One ping from a host to `address`; true when it was answered. */
  ping(from: Side, address: string): Promise<boolean>;
  /** Asks the far host's TCP echo server who it is and which source address it saw. */
  tcpEcho(from: Side, address: string): Promise<{ name: string; address: string } | undefined>;
  /** Changes the tunnel behind the driver's back: MTU 1300 and link down. */
  drift(side: Side, name: string): Promise<void>;
  /** What is left of tunnel `name` on the machine: links, processes, sockets, state files. */
  leftovers(side: Side, name: string): Promise<string[]>;
  cleanup(): Promise<void>;
}

const UNDERLAY_MTU = 1500;
const PORT_A = 51820;
const PORT_B = 51821;

async function rejectsWith(promise: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(promise, (e: unknown) => {
    assert.ok(e instanceof IpferryError, `not an IpferryError: ${String(e)}`);
    assert.equal(e.code, code, e.message);
    return true;
  });
}

/** The observed state minus what traffic changes on its own (learned endpoints). */
function settings(t: ObservedTunnel | undefined): unknown {
  if (!t) return undefined;
  return { ...t, peers: t.peers.map(({ endpoint: _learned, ...peer }) => peer) };
}

export function tunnelConformance(label: string, setup: () => Promise<TunnelFixture>): void {
  describe(`tunnel conformance: ${label}`, () => {
    let fx: TunnelFixture;
    let keyA = '';
    let keyB = '';
    let nameA = '';
    let nameB = '';

    const intentA = (over: Partial<TunnelIntent> = {}): TunnelIntent => ({
      name: nameA,
      listenPort: PORT_A,
      mtu: tunnelMtu(UNDERLAY_MTU, 4),
      addresses: ['10.200.0.1/30'],
      peers: [
        { publicKey: keyB, endpoint: `${fx.underlay.b}:${PORT_B}`, allowedIps: ['10.200.0.2/32'] },
      ],
      underlay: { mtu: UNDERLAY_MTU, family: 4 },
      ...over,
    });
    const intentB = (): TunnelIntent => ({
      name: nameB,
      listenPort: PORT_B,
      mtu: tunnelMtu(UNDERLAY_MTU, 4),
      addresses: ['10.200.0.2/30'],
      peers: [{ publicKey: keyA, allowedIps: ['10.200.0.1/32'] }],
      underlay: { mtu: UNDERLAY_MTU, family: 4 },
    });
    const a = (): TunnelDriver => fx.drivers.a;
    const b = (): TunnelDriver => fx.drivers.b;
    const pingable = (from: Side, address: string): Promise<boolean> =>
      waitFor(`ping ${from} → ${address}`, () => fx.ping(from, address), 8000);
    const changes = async (driver: TunnelDriver, intent: TunnelIntent): Promise<string[]> =>
      (await driver.apply(intent)).map(describeChange);

    before(async () => {
      fx = await setup();
      nameA = tunnelName('a', 'b', fx.salt);
      nameB = tunnelName('b', 'a', fx.salt);
    });

    after(async () => {
      // Also when a test failed half-way: remove is idempotent.
      if (!fx) return;
      for (const [driver, name] of [
        [fx.drivers.a, nameA],
        [fx.drivers.b, nameB],
      ] as const) {
        await driver.remove(name).catch(() => undefined);
      }
      await fx.cleanup();
    });

    it('detects an implementation once and has a key pair per node', async () => {
      const found = await a().detect();
      assert.ok(found === 'kernel' || found === 'userspace', found);
      assert.equal(await a().detect(), found);
      keyA = await a().publicKey();
      keyB = await b().publicKey();
      assert.ok(isWireGuardKey(keyA) && isWireGuardKey(keyB));
      assert.notEqual(keyA, keyB);
      assert.equal(await a().publicKey(), keyA);
    });

    it('refuses an endpoint that does not parse, creating nothing', async () => {
      const bad = intentA({
        peers: [{ publicKey: keyB, endpoint: `2001:db8::2:${PORT_B}`, allowedIps: [] }],
      });
      await rejectsWith(a().apply(bad), 'IPF_E_TUNNEL_ENDPOINT');
      assert.equal(await a().observe(nameA), undefined);
      assert.deepEqual(await fx.leftovers('a', nameA), []);
    });

    it('refuses an MTU the underlay cannot carry, creating nothing', async () => {
      await rejectsWith(a().apply(intentA({ mtu: UNDERLAY_MTU - 40 })), 'IPF_E_TUNNEL_MTU');
      assert.equal(await a().observe(nameA), undefined);
      assert.deepEqual(await fx.leftovers('a', nameA), []);
    });

    it('touches no interface without the ipf prefix', async () => {
      await rejectsWith(a().apply(intentA({ name: 'wg0' })), 'IPF_E_VALIDATION');
      await rejectsWith(a().observe('lo'), 'IPF_E_VALIDATION');
      await rejectsWith(a().remove('lo'), 'IPF_E_VALIDATION');
      await rejectsWith(a().status('eth0'), 'IPF_E_VALIDATION');
    });

    it('creates both ends as intended', async () => {
      assert.equal(await a().status(nameA), undefined);
      const made = await changes(a(), intentA());
      assert.equal(made[0], 'create');
      assert.ok(made.includes('private-key') && made.includes('up'), made.join('; '));
      await b().apply(intentB());
      const seen = await a().observe(nameA);
      assert.deepEqual(seen, {
        name: nameA,
        kind: await a().detect(),
        publicKey: keyA,
        listenPort: PORT_A,
        mtu: 1440,
        up: true,
        addresses: ['10.200.0.1/30'],
        peers: [
          {
            publicKey: keyB,
            endpoint: `${fx.underlay.b}:${PORT_B}`,
            allowedIps: ['10.200.0.2/32'],
          },
        ],
      });
      assert.equal(seen.mtu, UNDERLAY_MTU - 60);
      assert.deepEqual(settings(await b().observe(nameB)), {
        name: nameB,
        kind: await b().detect(),
        publicKey: keyB,
        listenPort: PORT_B,
        mtu: 1440,
        up: true,
        addresses: ['10.200.0.2/30'],
        peers: [{ publicKey: keyA, allowedIps: ['10.200.0.1/32'] }],
      });
    });

    it('carries ping both ways and TCP through the tunnel', async () => {
      assert.ok(await pingable('a', '10.200.0.2'));
      assert.ok(await pingable('b', '10.200.0.1'));
      assert.deepEqual(await fx.tcpEcho('a', '10.200.0.2'), { name: 'b', address: '10.200.0.1' });
      assert.deepEqual(await fx.tcpEcho('b', '10.200.0.1'), { name: 'a', address: '10.200.0.2' });
    });

    it('shows the handshake, traffic and endpoints in status', async () => {
      const sa = await a().status(nameA);
      const sb = await b().status(nameB);
      assert.equal(sa?.name, nameA);
      assert.equal(sa?.peers.length, 1);
      const [peerB] = sa?.peers ?? [];
      const [peerA] = sb?.peers ?? [];
      assert.equal(peerB?.publicKey, keyB);
      assert.equal(peerA?.publicKey, keyA);
      for (const peer of [peerB, peerA]) {
        assert.ok(peer?.handshakeAgeSeconds !== undefined, 'no handshake');
        assert.ok(peer.handshakeAgeSeconds >= 0 && peer.handshakeAgeSeconds < 60);
        assert.ok(peer.rxBytes > 0 && peer.txBytes > 0, JSON.stringify(peer));
      }
      assert.equal(peerB?.endpoint, `${fx.underlay.b}:${PORT_B}`);
      // b was given no endpoint: it learned a's from the handshake.
      assert.equal(peerA?.endpoint, `${fx.underlay.a}:${PORT_A}`);
    });

    it('changes nothing when the same intent is applied again', async () => {
      const before = [await a().observe(nameA), await b().observe(nameB)];
      assert.deepEqual(await a().apply(intentA()), []);
      assert.deepEqual(await b().apply(intentB()), []);
      assert.deepEqual([await a().observe(nameA), await b().observe(nameB)], before);
    });

    it('refuses a bad intent for an existing tunnel and leaves it as it was', async () => {
      const before = await a().observe(nameA);
      const bad = intentA({ peers: [{ publicKey: keyB, endpoint: 'nowhere', allowedIps: [] }] });
      await rejectsWith(a().apply(bad), 'IPF_E_TUNNEL_ENDPOINT');
      await rejectsWith(a().apply(intentA({ mtu: 1441 })), 'IPF_E_TUNNEL_MTU');
      assert.deepEqual(await a().observe(nameA), before);
    });

    it('applies a peer change incrementally, keeping the session', async () => {
      const wider = intentA({
        peers: [
          {
            publicKey: keyB,
            endpoint: `${fx.underlay.b}:${PORT_B}`,
            allowedIps: ['10.200.0.2/32', '10.9.0.0/24'],
          },
        ],
      });
      assert.deepEqual(await changes(a(), wider), [`peer-update ${keyB} allowed-ips`]);
      const seen = await a().observe(nameA);
      assert.deepEqual(seen?.peers[0]?.allowedIps, ['10.200.0.2/32', '10.9.0.0/24']);
      const peer = (await a().status(nameA))?.peers[0];
      assert.ok(peer?.handshakeAgeSeconds !== undefined, 'the session was reset');
      assert.ok(peer.rxBytes > 0, 'the counters were reset');
      assert.ok(await pingable('a', '10.200.0.2'));
      assert.deepEqual(await a().apply(wider), []);
      assert.deepEqual(await changes(a(), intentA()), [`peer-update ${keyB} allowed-ips`]);
    });

    it('adds and removes peers and addresses', async () => {
      const other = generateKeyPair().publicKey;
      const more = intentA({
        addresses: ['10.200.0.1/30', '192.168.77.1/24'],
        peers: [...intentA().peers, { publicKey: other, allowedIps: ['10.8.0.0/24'] }],
      });
      assert.deepEqual(await changes(a(), more), [
        `peer-add ${other}`,
        'address-add 192.168.77.1/24',
      ]);
      const seen = await a().observe(nameA);
      assert.deepEqual(seen?.addresses, ['10.200.0.1/30', '192.168.77.1/24']);
      assert.deepEqual(
        seen?.peers.map((p) => p.publicKey),
        [keyB, other].sort(),
      );
      assert.deepEqual(await changes(a(), intentA()), [
        `peer-remove ${other}`,
        'address-del 192.168.77.1/24',
      ]);
      assert.deepEqual((await a().observe(nameA))?.addresses, ['10.200.0.1/30']);
      assert.deepEqual(
        (await a().observe(nameA))?.peers.map((p) => p.publicKey),
        [keyB],
      );
      assert.ok(await pingable('a', '10.200.0.2'));
    });

    it('repairs drift', async () => {
      await fx.drift('a', nameA);
      const drifted = await a().observe(nameA);
      assert.equal(drifted?.mtu, 1300);
      assert.equal(drifted.up, false);
      assert.deepEqual(await changes(a(), intentA()), ['mtu 1440', 'up']);
      assert.ok(await pingable('a', '10.200.0.2'));
    });

    it('refuses a listen port another tunnel holds, leaving nothing of the new one', async () => {
      const third = tunnelName('a', 'c', fx.salt);
      const clash = intentA({ name: third, addresses: ['10.200.1.1/30'], peers: [] });
      await assert.rejects(a().apply(clash), (e: unknown) => {
        assert.ok(e instanceof IpferryError && e.code === 'IPF_E_DATAPLANE', String(e));
        assert.match(e.message, /in use/i);
        return true;
      });
      assert.equal(await a().observe(third), undefined);
      assert.deepEqual(await fx.leftovers('a', third), []);
      assert.ok(await pingable('a', '10.200.0.2'));
    });

    it('removes everything, and removing again finds nothing', async () => {
      assert.equal(await a().remove(nameA), true);
      assert.equal(await b().remove(nameB), true);
      for (const [side, name] of [
        ['a', nameA],
        ['b', nameB],
      ] as const) {
        assert.equal(await fx.drivers[side].observe(name), undefined);
        assert.equal(await fx.drivers[side].status(name), undefined);
        assert.deepEqual(await fx.leftovers(side, name), []);
        assert.equal(await fx.drivers[side].remove(name), false);
      }
      assert.equal(await fx.ping('a', '10.200.0.2'), false);
    });
  });
}
