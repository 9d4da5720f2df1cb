/**
 * One behaviour for every dataplane: the strict fake and the Linux kernel (in a throwaway
 * network namespace) must agree on what observe() reports after apply(), on all-or-nothing
 * failure, on replace-in-place, and on never resetting a sysctl.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { IpferryError } from '../../src/core/errors.js';
import { compile, type HostIntent } from '../../src/core/compile/index.js';
import { diffIntent, type IntentDiff } from '../../src/intent/diff.js';
import { type IntentElement } from '../../src/intent/elements.js';
import type { FloatingIp, NodeRecord, Pool } from '../../src/core/model.js';
import { NFT_FAMILY, NFT_SKELETON_VERSION, NFT_TABLE } from '../../src/core/names.js';
import type { Dataplane } from '../../src/dataplane/dataplane.js';

export interface DataplaneFixture {
  readonly dataplane: Dataplane;
  /**
   * Sends `count` IPv4 echo requests of 84 bytes (ping's default) to `address` from outside the
   * host, arriving on eth0: real packets on Linux, countPacket on the fake.
   */
  sendPings(address: string, count: number): Promise<void>;
  cleanup(): Promise<void>;
}

const POOL: Pool = {
  name: 'public',
  gateway: 'gw',
  delivery: 'routed',
  entries: [
    { kind: 'cidr', cidr: '203.0.113.0/24' },
    { kind: 'address', address: '192.0.2.2', shared: true },
    { kind: 'cidr', cidr: '2001:db8:f::/64' },
  ],
  tags: [],
  createdAt: '',
};

function fip(
  address: string,
  association?: FloatingIp['association'],
  forwards: FloatingIp['forwards'] = [],
): { fip: FloatingIp; revision: number } {
  return {
    fip: {
      address,
      family: address.includes(':') ? 6 : 4,
      pool: 'public',
      shared: address === '192.0.2.2',
      tags: [],
      forwards,
      allocatedAt: '',
      ...(association ? { association } : {}),
    },
    revision: 1,
  };
}

const nat = (target: string): FloatingIp['association'] => ({
  mode: 'nat',
  target,
  associatedAt: '',
});

export function stateWith(fips: { fip: FloatingIp; revision: number }[]) {
  return { pools: [POOL], fips };
}

const BASE = [
  fip('203.0.113.10', nat('10.0.0.11')),
  fip('2001:db8:f::10', nat('fd00:10::11')),
  fip('203.0.113.12', { ...nat('10.0.0.12')!, masquerade: true }),
  fip('203.0.113.13'),
  fip('192.0.2.2', { mode: 'ports', target: '10.0.0.20', associatedAt: '' }, [
    { id: 'f1', protocol: 'tcp', port: 25, portEnd: 25, targetPort: 25, target: '10.0.0.20' },
    { id: 'f2', protocol: 'tcp', port: 8000, portEnd: 8010, targetPort: 8000, target: '10.0.0.20' },
    { id: 'f3', protocol: 'udp', port: 6000, portEnd: 6002, targetPort: 7000, target: '10.0.0.20' },
  ]),
];

const MOVED = BASE.map((f) =>
  f.fip.address === '203.0.113.10' ? fip('203.0.113.10', nat('10.0.0.31')) : f,
);

async function intentFor(
  dp: Dataplane,
  fips: { fip: FloatingIp; revision: number }[],
): Promise<HostIntent> {
  return compile(stateWith(fips), 'gw', await dp.facts());
}

async function converge(dp: Dataplane, intent: HostIntent): Promise<IntentDiff> {
  const diff = diffIntent(intent.elements, await dp.observe(intent.elements));
  await dp.apply(diff);
  return diff;
}

async function remaining(dp: Dataplane, intent: HostIntent): Promise<IntentDiff> {
  return diffIntent(intent.elements, await dp.observe(intent.elements));
}

const sorted = (xs: readonly IntentElement[]): string[] =>
  xs.map((e) => `${e.kind} ${e.key} -> ${e.value}`).sort();

const host = (kind: IntentElement['kind'], key: string, value = ''): IntentElement => ({
  kind,
  key,
  value,
  owner: 'host',
});

const isMesh = (e: IntentElement): boolean => e.kind.startsWith('mesh');

/** What compileMesh gives a member of a three-node fleet with reject_all on (src/core/mesh.ts). */
const MESH: IntentElement[] = [
  host('meshnat', '100.80.0.1', '10.0.0.1'),
  host('meshnat', '100.80.0.2', '10.0.0.12'),
  host('meshnat', '100.80.0.3', '192.0.2.3'),
  host('meshmember', '10.0.0.12'),
  host('meshmember', '192.0.2.3'),
  host('meshmember', '2001:db8:5::3'),
  host('meshssh', '10.9.9.9/32'),
  host('meshssh', '198.51.100.0/24'),
  host('meshssh', '2001:db8:a::/48'),
  host('meshport', 'tcp . 443'),
  host('meshport', 'udp . 8000-8010'),
  host('meshreject', 'ipv4'),
  host('meshreject', 'ipv6'),
];

export function dataplaneConformance(name: string, open: () => Promise<DataplaneFixture>): void {
  describe(`dataplane conformance: ${name}`, () => {
    let fx: DataplaneFixture;
    let dp: Dataplane;
    before(async () => {
      fx = await open();
      dp = fx.dataplane;
    });
    after(async () => fx?.cleanup());

    it('starts empty and reaches the intent in one apply', async () => {
      const intent = await intentFor(dp, BASE);
      // A fresh host has forwarding off and nothing of ipferry's.
      assert.deepEqual(sorted(await dp.observe(intent.elements)), [
        'sysctl net.ipv4.ip_forward -> 0',
        'sysctl net.ipv6.conf.all.forwarding -> 0',
      ]);
      const first = await converge(dp, intent);
      assert.ok(first.add.length > 10);
      const left = await remaining(dp, intent);
      assert.deepEqual(
        { add: left.add, replace: left.replace, remove: left.remove },
        { add: [], replace: [], remove: [] },
      );
      assert.deepEqual(sorted(await dp.observe(intent.elements)), sorted(intent.elements));
    });

    it('moves a FIP by replacing its elements, touching nothing else', async () => {
      const intent = await intentFor(dp, MOVED);
      const diff = await converge(dp, intent);
      assert.deepEqual(
        diff.replace.map((r) => `${r.from.kind} ${r.from.key}: ${r.from.value} => ${r.to.value}`),
        ['dnat 203.0.113.10: 10.0.0.11 => 10.0.0.31'],
      );
      assert.deepEqual(sorted(diff.remove), ['snat 10.0.0.11 -> 203.0.113.10']);
      assert.deepEqual(sorted(diff.add), ['snat 10.0.0.31 -> 203.0.113.10']);
      assert.equal((await remaining(dp, intent)).add.length, 0);
    });

    it('counts each associated FIP’s packets and bytes, and a move keeps its count', async () => {
      const counters = async () => {
        const read = await dp.fipCounters?.();
        assert.ok(read, 'the dataplane reads its counters');
        return read;
      };
      // Every associated FIP has a counter; an unassociated one has none.
      assert.deepEqual([...(await counters()).keys()].sort(), [
        '192.0.2.2',
        '2001:db8:f::10',
        '203.0.113.10',
        '203.0.113.12',
      ]);
      const before = await counters();
      await fx.sendPings('203.0.113.10', 3);
      const after = await counters();
      const at = (m: Map<string, { packets: number; bytes: number }>, fip: string) =>
        m.get(fip) ?? { packets: -1, bytes: -1 };
      assert.deepEqual(at(after, '203.0.113.10'), {
        packets: at(before, '203.0.113.10').packets + 3,
        bytes: at(before, '203.0.113.10').bytes + 3 * 84,
      });
      assert.deepEqual(at(after, '203.0.113.12'), at(before, '203.0.113.12'));
      // A move changes the FIP's NAT elements, never its counter: the count stays.
      for (const state of [BASE, MOVED]) {
        const diff = await converge(dp, await intentFor(dp, state));
        assert.equal(diff.replace.length, 1);
        assert.deepEqual(at(await counters(), '203.0.113.10'), at(after, '203.0.113.10'));
      }
      // Pings to an unassociated FIP count nowhere.
      await fx.sendPings('203.0.113.13', 1);
      assert.equal((await counters()).has('203.0.113.13'), false);
    });

    it('removes a released FIP’s elements', async () => {
      const intent = await intentFor(
        dp,
        MOVED.filter((f) => f.fip.address !== '2001:db8:f::10'),
      );
      const diff = await converge(dp, intent);
      assert.deepEqual(sorted(diff.remove), [
        'counter 2001:db8:f::10 -> ',
        'dnat 2001:db8:f::10 -> fd00:10::11',
        'snat fd00:10::11 -> 2001:db8:f::10',
      ]);
      assert.deepEqual(sorted(await dp.observe(intent.elements)), sorted(intent.elements));
      assert.equal((await dp.fipCounters?.())?.has('2001:db8:f::10'), false);
    });

    it('applies all or nothing: a refused element leaves the previous state in place', async () => {
      const intent = await intentFor(dp, MOVED);
      const before = sorted(await dp.observe(intent.elements));
      const good: IntentElement = {
        kind: 'dnat',
        key: '203.0.113.50',
        value: '10.0.0.50',
        owner: '203.0.113.50',
      };
      const overlapping: IntentElement = {
        kind: 'fwd',
        key: '192.0.2.2 . tcp . 8005-8020',
        value: '10.0.0.21',
        owner: '192.0.2.2',
      };
      await assert.rejects(
        dp.apply({ add: [good, overlapping], replace: [], remove: [] }),
        (e: unknown) => e instanceof IpferryError && e.code === 'IPF_E_DATAPLANE',
      );
      const missing: IntentElement = {
        kind: 'dnat',
        key: '203.0.113.99',
        value: '10.0.0.99',
        owner: '203.0.113.99',
      };
      await assert.rejects(
        dp.apply({ add: [good], replace: [], remove: [missing] }),
        (e: unknown) => e instanceof IpferryError && e.code === 'IPF_E_DATAPLANE',
      );
      assert.deepEqual(sorted(await dp.observe(intent.elements)), before);
    });

    it('never resets a sysctl it no longer needs', async () => {
      const intent = await intentFor(dp, BASE);
      const v6 = intent.elements.find((e) => e.kind === 'sysctl' && e.key.includes('ipv6'));
      assert.ok(v6, 'an IPv6 pool turns IPv6 forwarding on');
      await dp.apply({ add: [], replace: [], remove: [v6] });
      assert.ok(
        (await dp.observe([v6])).some(
          (e) => e.kind === 'sysctl' && e.key === v6.key && e.value === '1',
        ),
      );
    });

    it('claims on-link FIPs (IPv4 address, IPv6 proxy NDP) and gives them back', async () => {
      const onlink: Pool = {
        ...POOL,
        delivery: 'onlink',
        uplink: 'eth0',
        entries: [
          { kind: 'range', first: '192.0.2.100', last: '192.0.2.110' },
          { kind: 'cidr', cidr: '2001:db8:1::/64' },
        ],
      };
      const fips = [
        fip('192.0.2.100', nat('10.0.0.61')),
        fip('2001:db8:1::100', nat('fd00:10::61')),
      ].map((f) => ({ ...f, fip: { ...f.fip, pool: 'public' } }));
      const facts = await dp.facts();
      const intent = compile({ pools: [onlink], fips }, 'gw', facts);
      await dp.apply(diffIntent(intent.elements, await dp.observe(intent.elements)));
      const claims = (await dp.observe(intent.elements)).filter((e) => e.kind === 'claim');
      assert.deepEqual(sorted(claims), [
        'claim 192.0.2.100 -> eth0',
        'claim 2001:db8:1::100 -> eth0',
      ]);
      assert.deepEqual(
        await dp.facts(),
        facts,
        'a claimed FIP is not one of the host’s own addresses',
      );
      const none = compile({ pools: [onlink], fips: [] }, 'gw', facts);
      await dp.apply(diffIntent(none.elements, await dp.observe(none.elements)));
      assert.deepEqual(
        (await dp.observe(none.elements)).filter((e) => e.kind === 'claim'),
        [],
      );
    });

    it('answers ARP for on-link IPv4 FIPs routed on by a proxy entry, swapped with the local address in one apply', async () => {
      // A routed FIP leaves the gateway into a tunnel: a local address would swallow it, so the
      // gateway answers ARP for it by a proxy entry instead. The tunnel and the route into it
      // are test/tunnel-conformance.ts's: only the claims and the nftables side are held here.
      const onlink: Pool = {
        ...POOL,
        delivery: 'onlink',
        uplink: 'eth0',
        entries: [{ kind: 'range', first: '192.0.2.100', last: '192.0.2.110' }],
      };
      const nodes: NodeRecord[] = [
        {
          name: 'n1',
          publicKey: Buffer.alloc(32, 3).toString('base64'),
          addresses: [],
          reservedPorts: [],
          registeredAt: '',
        },
      ];
      const address = '192.0.2.101';
      const routed: FloatingIp['association'] = {
        mode: 'routed',
        target: address,
        node: 'n1',
        associatedAt: '',
      };
      const facts = await dp.facts();
      const intentOf = (association: FloatingIp['association']): IntentElement[] =>
        compile(
          { pools: [onlink], fips: [fip(address, association)], nodes },
          'gw',
          facts,
        ).elements.filter((e) => e.kind !== 'route');
      const claims = async (wanted: IntentElement[]): Promise<string[]> =>
        sorted((await dp.observe(wanted)).filter((e) => e.kind === 'claim'));
      /** One apply to `wanted`; returns how its claims changed, and checks nothing is left. */
      const step = async (wanted: IntentElement[]): Promise<string[]> => {
        const diff = diffIntent(wanted, await dp.observe(wanted));
        await dp.apply(diff);
        const left = diffIntent(wanted, await dp.observe(wanted));
        assert.deepEqual([...left.add, ...left.replace, ...left.remove], []);
        return [
          ...diff.add.filter((e) => e.kind === 'claim').map((e) => `+ ${e.value}`),
          ...diff.replace
            .filter((r) => r.to.kind === 'claim')
            .map((r) => `${r.from.value} => ${r.to.value}`),
          ...diff.remove.filter((e) => e.kind === 'claim').map((e) => `- ${e.value}`),
        ];
      };

      const asRouted = intentOf(routed);
      assert.deepEqual(await step(asRouted), ['+ proxy eth0']);
      assert.deepEqual(await claims(asRouted), [`claim ${address} -> proxy eth0`]);
      assert.deepEqual(await dp.facts(), facts, 'a proxy entry is no address of the host');
      // routed → nat: the local address replaces the proxy entry in one apply, and back.
      const asNat = intentOf(nat('10.0.0.61'));
      assert.deepEqual(await step(asNat), ['proxy eth0 => eth0']);
      assert.deepEqual(await claims(asNat), [`claim ${address} -> eth0`]);
      assert.deepEqual(await step(asRouted), ['eth0 => proxy eth0']);
      assert.deepEqual(await claims(asRouted), [`claim ${address} -> proxy eth0`]);
      // Disassociated: the proxy entry goes too.
      const none = intentOf(undefined);
      assert.deepEqual(await step(none), ['- proxy eth0']);
      assert.deepEqual(await claims(none), []);
    });

    it('holds the fleet mesh: members, NAT, failsafe SSH, open ports, reject_all — each change one apply, nothing else touched', async () => {
      // Whatever the earlier cases left (FIPs, pools, the table) stays as it is throughout.
      const others = (await dp.observe([])).filter((e) => !isMesh(e));
      const table = host('table', `${NFT_FAMILY} ${NFT_TABLE}`, NFT_SKELETON_VERSION);
      // The table at this skeleton version (a damaged one would show as a replace below).
      const withTable = [...others.filter((e) => e.kind !== 'table'), table];
      /** One apply from what the host holds to `mesh`; returns the diff, checks the result. */
      const step = async (mesh: IntentElement[]): Promise<IntentDiff> => {
        const wanted = [...withTable, ...mesh];
        const diff = diffIntent(wanted, await dp.observe(wanted));
        await dp.apply(diff);
        const now = await dp.observe(wanted);
        assert.deepEqual(
          sorted(now.filter(isMesh)),
          sorted(mesh),
          'the mesh reads back as applied',
        );
        assert.deepEqual(sorted(now.filter((e) => !isMesh(e))), sorted(withTable));
        const left = diffIntent(wanted, now);
        assert.deepEqual([...left.add, ...left.replace, ...left.remove], []);
        return diff;
      };
      const changes = (d: IntentDiff): string[] => [
        ...d.add.map((e) => `+ ${e.kind} ${e.key}`),
        ...d.replace.map((r) => `${r.to.kind} ${r.to.key}: ${r.from.value} => ${r.to.value}`),
        ...d.remove.map((e) => `- ${e.kind} ${e.key}`),
      ];

      const first = await step(MESH);
      assert.deepEqual(sorted(first.add.filter(isMesh)), sorted(MESH));
      assert.ok(first.add.every((e) => isMesh(e) || e.kind === 'table'));
      assert.deepEqual([...first.replace, ...first.remove], []);

      // A member leaves: its address and its overlay mapping go, nothing else.
      const left = MESH.filter((e) => e.key !== '192.0.2.3' && e.key !== '100.80.0.3');
      assert.deepEqual(changes(await step(left)), [
        '- meshnat 100.80.0.3',
        '- meshmember 192.0.2.3',
      ]);
      // A member reached at another address (it moved sites): its mapping is replaced in place.
      const moved = left.map((e) =>
        e.kind === 'meshnat' && e.key === '100.80.0.2' ? { ...e, value: '10.0.0.22' } : e,
      );
      assert.deepEqual(changes(await step(moved)), ['meshnat 100.80.0.2: 10.0.0.12 => 10.0.0.22']);
      // reject_all off, then on again.
      const open = moved.filter((e) => e.kind !== 'meshreject');
      assert.deepEqual(changes(await step(open)), ['- meshreject ipv4', '- meshreject ipv6']);
      assert.deepEqual(changes(await step(moved)), ['+ meshreject ipv4', '+ meshreject ipv6']);
      // An open port range widened over the old one, and an SSH prefix narrowed inside the old
      // one: the old element goes and the new one comes in the same transaction.
      const widened = moved.map((e) =>
        e.key === 'udp . 8000-8010'
          ? { ...e, key: 'udp . 7990-8020' }
          : e.key === '198.51.100.0/24'
            ? { ...e, key: '198.51.100.128/25' }
            : e,
      );
      assert.deepEqual(changes(await step(widened)).sort(), [
        '+ meshport udp . 7990-8020',
        '+ meshssh 198.51.100.128/25',
        '- meshport udp . 8000-8010',
        '- meshssh 198.51.100.0/24',
      ]);

      // Refused as a whole: overlapping SSH prefixes, overlapping open ports, an IPv6 overlay
      // mapping (there is no IPv6 mesh NAT); the host keeps exactly what it had.
      const before = sorted(await dp.observe([]));
      for (const bad of [
        host('meshssh', '198.51.100.128/26'),
        host('meshport', 'udp . 8005'),
        host('meshnat', 'fd00:80::1', 'fd00::1'),
      ]) {
        await assert.rejects(
          dp.apply({ add: [host('meshmember', '10.0.0.99'), bad], replace: [], remove: [] }),
          (e: unknown) => e instanceof IpferryError && e.code === 'IPF_E_DATAPLANE',
          `${bad.kind} ${bad.key}`,
        );
        assert.deepEqual(sorted(await dp.observe([])), before);
      }

      // The mesh goes away entirely: every set is empty again, the rest untouched.
      const gone = await step([]);
      assert.equal(gone.remove.length, widened.length);
    });

    it('holds 10,000 FIPs in one apply, then moves one with a three-element change', async () => {
      const many = Array.from({ length: 10_000 }, (_, i) =>
        fip(`203.1.${i >> 8}.${i & 255}`, nat(`10.1.${i >> 8}.${i & 255}`)),
      );
      const pool: Pool = { ...POOL, entries: [{ kind: 'cidr', cidr: '203.0.0.0/8' }] };
      const facts = await dp.facts();
      const intent = compile({ pools: [pool], fips: many }, 'gw', facts);
      await dp.apply(diffIntent(intent.elements, await dp.observe(intent.elements)));
      assert.equal((await remaining(dp, intent)).add.length, 0);
      const moved = many.map((f, i) => (i === 9_999 ? fip(f.fip.address, nat('10.250.0.1')) : f));
      const next = compile({ pools: [pool], fips: moved }, 'gw', facts);
      const diff = diffIntent(next.elements, await dp.observe(next.elements));
      assert.equal(diff.add.length + diff.replace.length + diff.remove.length, 3);
      await dp.apply(diff);
      assert.equal((await remaining(dp, next)).replace.length, 0);
    });
  });
}
