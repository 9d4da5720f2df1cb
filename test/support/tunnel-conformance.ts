/**
 * One behaviour for every tunnel driver: the strict fake, WireGuard and tinc on a real kernel
 * (two network namespaces joined by a veth) must agree on refusals that create nothing, on
 * what observe() reports after apply(), on traffic through the tunnel, on applying nothing the
 * second time, on incremental peer and address changes, on repairing drift, and on remove()
 * leaving nothing behind. What only some drivers can report (handshake times, byte counters,
 * learned endpoints, peers' node names) the fixture states in `can`, and the suite holds each
 * driver to what it claims.
 *
 * Topology: host a (underlay 100.64.0.1/30, tunnel 10.200.0.1/30, port 51820) has b as peer
 * with an endpoint; host b (100.64.0.2/30, 10.200.0.2/30, port 51821) has a as peer without
 * one and learns a's address when a calls.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { IpferryError } from '../../src/core/errors.js';
import {
  describeChange,
  isTunnelKey,
  type ObservedTunnel,
  type TunnelDriverKind,
  type TunnelIntent,
  type TunnelPeer,
  tunnelMtu,
  tunnelName,
  tunnelOverhead,
} from '../../src/core/tunnel.js';
import type { TunnelDriver } from '../../src/dataplane/tunnel/driver.js';
import { waitFor } from './helpers.js';

export type Side = 'a' | 'b';

/** What a driver can report beyond the intent itself. */
export interface TunnelCapabilities {
  /** status() gives a recent handshake age for a peer that carried traffic. */
  readonly handshakes: boolean;
  /** status() counts bytes per peer. */
  readonly counters: boolean;
  /** status() shows the address a peer without a configured endpoint called from. */
  readonly learnedEndpoints: boolean;
  /** observe() reports each peer's node name. */
  readonly peerNodes: boolean;
}

export interface TunnelFixture {
  /** Which tunnels the drivers make: intents say so, keys and MTUs follow from it. */
  readonly kind: TunnelDriverKind;
  readonly can: TunnelCapabilities;
  /** A public key of this kind for a peer that exists only on paper. */
  peerKey(): Promise<string>;
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
    /** The largest MTU the underlay carries for this kind of tunnel. */
    let mtu = 0;

    // WireGuard intents leave the driver out (the default); others name it.
    const driver = (): Partial<TunnelIntent> =>
      fx.kind === 'wireguard' ? {} : { driver: fx.kind };
    const peerOfA = (over: Partial<TunnelPeer> = {}): TunnelPeer => ({
      publicKey: keyB,
      node: 'b',
      endpoint: `${fx.underlay.b}:${PORT_B}`,
      allowedIps: ['10.200.0.2/32'],
      ...over,
    });
    const intentA = (over: Partial<TunnelIntent> = {}): TunnelIntent => ({
      name: nameA,
      ...driver(),
      listenPort: PORT_A,
      mtu,
      addresses: ['10.200.0.1/30'],
      peers: [peerOfA()],
      underlay: { mtu: UNDERLAY_MTU, family: 4 },
      ...over,
    });
    const intentB = (): TunnelIntent => ({
      name: nameB,
      ...driver(),
      listenPort: PORT_B,
      mtu,
      addresses: ['10.200.0.2/30'],
      peers: [{ publicKey: keyA, node: 'a', allowedIps: ['10.200.0.1/32'] }],
      underlay: { mtu: UNDERLAY_MTU, family: 4 },
    });
    /** A peer as observe() reports it: without its node name where the driver knows none. */
    const observed = ({ node, ...peer }: TunnelPeer): TunnelPeer =>
      fx.can.peerNodes && node !== undefined ? { ...peer, node } : peer;
    const a = (): TunnelDriver => fx.drivers.a;
    const b = (): TunnelDriver => fx.drivers.b;
    const pingable = (from: Side, address: string): Promise<boolean> =>
      waitFor(`ping ${from} → ${address}`, () => fx.ping(from, address), 15_000);
    const changes = async (driver: TunnelDriver, intent: TunnelIntent): Promise<string[]> =>
      (await driver.apply(intent)).map(describeChange);

    before(async () => {
      fx = await setup();
      mtu = tunnelMtu(UNDERLAY_MTU, 4, { driver: fx.kind });
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
      assert.ok(isTunnelKey(fx.kind, keyA) && isTunnelKey(fx.kind, keyB));
      assert.notEqual(keyA, keyB);
      assert.equal(await a().publicKey(), keyA);
    });

    it('refuses an endpoint that does not parse, creating nothing', async () => {
      const bad = intentA({
        peers: [peerOfA({ endpoint: `2001:db8::2:${PORT_B}`, allowedIps: [] })],
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
        mtu,
        up: true,
        addresses: ['10.200.0.1/30'],
        peers: [observed(peerOfA())],
      });
      assert.equal(seen.mtu, UNDERLAY_MTU - tunnelOverhead(fx.kind, 4, UNDERLAY_MTU));
      assert.deepEqual(settings(await b().observe(nameB)), {
        name: nameB,
        kind: await b().detect(),
        publicKey: keyB,
        listenPort: PORT_B,
        mtu,
        up: true,
        addresses: ['10.200.0.2/30'],
        peers: [observed({ publicKey: keyA, node: 'a', allowedIps: ['10.200.0.1/32'] })],
      });
    });

    it('carries ping both ways and TCP through the tunnel', async () => {
      assert.ok(await pingable('a', '10.200.0.2'));
      assert.ok(await pingable('b', '10.200.0.1'));
      assert.deepEqual(await fx.tcpEcho('a', '10.200.0.2'), { name: 'b', address: '10.200.0.1' });
      assert.deepEqual(await fx.tcpEcho('b', '10.200.0.1'), { name: 'a', address: '10.200.0.2' });
    });

    it('shows the handshake, traffic and endpoints in status, as far as the driver can', async () => {
      const sa = await a().status(nameA);
      const sb = await b().status(nameB);
      assert.equal(sa?.name, nameA);
      assert.equal(sa?.peers.length, 1);
      const [peerB] = sa?.peers ?? [];
      const [peerA] = sb?.peers ?? [];
      assert.equal(peerB?.publicKey, keyB);
      assert.equal(peerA?.publicKey, keyA);
      for (const peer of [peerB, peerA]) {
        if (fx.can.handshakes) {
          assert.ok(peer?.handshakeAgeSeconds !== undefined, 'no handshake');
          assert.ok(peer.handshakeAgeSeconds >= 0 && peer.handshakeAgeSeconds < 60);
        } else {
          assert.equal(peer?.handshakeAgeSeconds, undefined);
        }
        if (fx.can.counters)
          assert.ok(peer && peer.rxBytes > 0 && peer.txBytes > 0, JSON.stringify(peer));
        else assert.deepEqual([peer?.rxBytes, peer?.txBytes], [0, 0]);
      }
      assert.equal(peerB?.endpoint, `${fx.underlay.b}:${PORT_B}`);
      // b was given no endpoint: it learned a's when a called.
      if (fx.can.learnedEndpoints) assert.equal(peerA?.endpoint, `${fx.underlay.a}:${PORT_A}`);
    });

    it('changes nothing when the same intent is applied again', async () => {
      const before = [await a().observe(nameA), await b().observe(nameB)];
      assert.deepEqual(await a().apply(intentA()), []);
      assert.deepEqual(await b().apply(intentB()), []);
      assert.deepEqual([await a().observe(nameA), await b().observe(nameB)], before);
    });

    it('refuses a bad intent for an existing tunnel and leaves it as it was', async () => {
      const before = await a().observe(nameA);
      const bad = intentA({ peers: [peerOfA({ endpoint: 'nowhere', allowedIps: [] })] });
      await rejectsWith(a().apply(bad), 'IPF_E_TUNNEL_ENDPOINT');
      await rejectsWith(a().apply(intentA({ mtu: mtu + 1 })), 'IPF_E_TUNNEL_MTU');
      assert.deepEqual(await a().observe(nameA), before);
    });

    it('applies a peer change incrementally, keeping the session', async () => {
      const wider = intentA({
        peers: [peerOfA({ allowedIps: ['10.200.0.2/32', '10.9.0.0/24'] })],
      });
      assert.deepEqual(await changes(a(), wider), [`peer-update ${keyB} allowed-ips`]);
      const seen = await a().observe(nameA);
      assert.deepEqual(seen?.peers[0]?.allowedIps, ['10.200.0.2/32', '10.9.0.0/24']);
      const peer = (await a().status(nameA))?.peers[0];
      if (fx.can.handshakes) {
        assert.ok(peer?.handshakeAgeSeconds !== undefined, 'the session was reset');
      }
      if (fx.can.counters) assert.ok(peer && peer.rxBytes > 0, 'the counters were reset');
      assert.ok(await pingable('a', '10.200.0.2'));
      assert.deepEqual(await a().apply(wider), []);
      assert.deepEqual(await changes(a(), intentA()), [`peer-update ${keyB} allowed-ips`]);
    });

    it('adds and removes peers and addresses', async () => {
      const other = await fx.peerKey();
      const more = intentA({
        addresses: ['10.200.0.1/30', '192.168.77.1/24'],
        peers: [...intentA().peers, { publicKey: other, node: 'c', allowedIps: ['10.8.0.0/24'] }],
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
      assert.deepEqual(await changes(a(), intentA()), [`mtu ${mtu}`, 'up']);
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
