/**
 * The fleet mesh in a real kernel, with real packets: one host `h` holds mesh elements applied
 * through the Linux dataplane (its `inet ipferry` table), next to a member `m`, an outsider `o`
 * and an outsider `s` inside the failsafe SSH prefix, all on one switch `sw`:
 *
 *   h 10.0.0.1  fd00:e::1      m 10.0.0.2  fd00:e::2      o 10.0.0.3  fd00:e::3      s 10.0.0.70
 *   n 10.0.0.4 (no default route: it reaches its LAN only)
 *
 * With reject_all on, only members, open ports and failsafe SSH get in (IPv6 neighbour
 * discovery keeps working); off, everything does; and h reaches m at m's overlay address,
 * m seeing h's real address. n, whose mesh is compiled by compileMesh from a policy, reaches m
 * at its overlay address through the route the mesh holds for the overlay prefix.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { diffIntent } from '../../src/intent/diff.js';
import { type IntentElement } from '../../src/intent/elements.js';
import { compileMesh, validateMeshPolicy } from '../../src/core/mesh.js';
import type { NodeRecord } from '../../src/core/model.js';
import { NFT_FAMILY, NFT_SKELETON_VERSION, NFT_TABLE, ROUTE_PROTO } from '../../src/core/names.js';
import { LinuxDataplane } from '../../src/dataplane/linux.js';
import { echoProbe, ping, startEchoServer } from '../../src/lab/probe.js';
import { Lab, type LabSpec } from '../../src/lab/topology.js';

const H = { v4: '10.0.0.1', v6: 'fd00:e::1' };
const M = { v4: '10.0.0.2', v6: 'fd00:e::2' };
const O = { v4: '10.0.0.3', v6: 'fd00:e::3' };
const S = { v4: '10.0.0.70' };
const N = { v4: '10.0.0.4' };
const OVERLAY_M = '100.80.0.2';
/** A floating IP h itself maps to m (a gateway's own connections to a FIP). */
const FIP = '203.0.113.10';
/** A port only members reach, the open ones, and SSH. */
const CLOSED = 7000;
const OPEN_TCP = 443;
const OPEN_UDP = 8005;
const CLOSED_UDP = 7001;
const SSH = 22;
/** How long a probe waits before it counts as dropped. */
const DROP_MS = 1500;

function spec(): LabSpec {
  const end = (name: string, addresses: string[]) => ({
    a: { host: name, ifname: 'eth0', addresses },
    b: { host: 'sw', ifname: `sw-${name}`, bridge: 'br0' },
  });
  return {
    hosts: [
      { name: 'sw', bridges: [{ name: 'br0', addresses: ['10.0.0.254/24'] }] },
      // h has a default route, as hosts do: a connection to an overlay address needs some route
      // before the output hook's DNAT sends it to the member instead.
      { name: 'h', routes: [{ to: 'default', via: '10.0.0.254' }] },
      { name: 'm' },
      { name: 'o' },
      { name: 's' },
      { name: 'n' },
    ],
    links: [
      end('h', [`${H.v4}/24`, `${H.v6}/64`]),
      end('m', [`${M.v4}/24`, `${M.v6}/64`]),
      end('o', [`${O.v4}/24`, `${O.v6}/64`]),
      end('s', [`${S.v4}/24`]),
      end('n', [`${N.v4}/24`]),
    ],
  };
}

const host = (kind: IntentElement['kind'], key: string, value = ''): IntentElement => ({
  kind,
  key,
  value,
  owner: 'host',
});

const TABLE = host('table', `${NFT_FAMILY} ${NFT_TABLE}`, NFT_SKELETON_VERSION);
const REJECT = [host('meshreject', 'ipv4'), host('meshreject', 'ipv6')];
const MESH = [
  host('meshnat', OVERLAY_M, M.v4),
  host('meshmember', M.v4),
  host('meshmember', M.v6),
  host('meshssh', '10.0.0.64/26'),
  host('meshssh', 'fd00:5::/64'),
  host('meshport', `tcp . ${OPEN_TCP}`),
  host('meshport', 'udp . 8000-8010'),
];

describe('the fleet mesh on a real kernel', { timeout: 90_000 }, () => {
  let lab: Lab | undefined;
  let dp: LinuxDataplane;

  /** One apply from what h holds to exactly `elements`. */
  const applyOnH = async (elements: IntentElement[]): Promise<void> => {
    const wanted = [TABLE, ...elements];
    await dp.apply(diffIntent(wanted, await dp.observe(wanted)));
    const left = diffIntent(wanted, await dp.observe(wanted));
    assert.deepEqual([...left.add, ...left.replace, ...left.remove], []);
  };

  /** Who answered and the source address it saw, or undefined when nothing came back. */
  const tcp = (from: string, address: string, port: number, timeoutMs = 4000) =>
    echoProbe(lab!, from, 'tcp', address, port, timeoutMs);
  const udp = (from: string, port: number, timeoutMs = 4000) =>
    echoProbe(lab!, from, 'udp', H.v4, port, timeoutMs);
  const seen = (name: string, address: string) => ({ name, address });

  before(async () => {
    lab = await Lab.create(spec());
    dp = new LinuxDataplane({ netns: lab.ns('h') });
    await dp.check();
    await Promise.all([
      startEchoServer(lab, 'h', { tcp: [CLOSED, OPEN_TCP, SSH], udp: [OPEN_UDP, CLOSED_UDP] }),
      startEchoServer(lab, 'm', { tcp: [CLOSED] }),
    ]);
  });

  after(async () => {
    await lab?.destroy();
  });

  it('changes nothing while the mesh sets are empty', async () => {
    await applyOnH([]);
    assert.deepEqual(await tcp('o', H.v4, CLOSED), seen('h', O.v4));
    assert.deepEqual(await tcp('o', H.v6, CLOSED), seen('h', O.v6));
  });

  it('with reject_all on: members, open ports and failsafe SSH in, everything else dropped', async () => {
    await applyOnH([...MESH, ...REJECT]);
    // IPv6 must keep working under reject_all: with every neighbour forgotten, h's own ping
    // to an outsider needs the outsider's neighbour advertisement to get through h's chain
    // (a member's would pass as a member's packet anyway).
    for (const name of ['h', 'm', 'o']) {
      await lab!.exec(name, ['ip', '-6', 'neigh', 'flush', 'all']);
    }
    const [pinged, member4, member6, port, udpPort, ssh] = await Promise.all([
      ping(lab!, 'h', O.v6, 3000),
      tcp('m', H.v4, CLOSED),
      tcp('m', H.v6, CLOSED),
      tcp('o', H.v4, OPEN_TCP),
      udp('o', OPEN_UDP),
      tcp('s', H.v4, SSH),
    ]);
    assert.ok(pinged, 'h resolves an outsider’s IPv6 address and hears its answer');
    assert.deepEqual(member4, seen('h', M.v4), 'a member connects');
    assert.deepEqual(member6, seen('h', M.v6), 'a member connects over IPv6');
    assert.deepEqual(port, seen('h', O.v4), 'anyone reaches an open TCP port');
    assert.deepEqual(udpPort, seen('h', O.v4), 'anyone reaches a port of an open UDP range');
    assert.deepEqual(ssh, seen('h', S.v4), 'failsafe SSH from its prefix');
    // Every one of these listens (the member got through above): nothing back means dropped.
    const dropped = await Promise.all([
      tcp('o', H.v4, CLOSED, DROP_MS),
      tcp('o', H.v6, CLOSED, DROP_MS),
      tcp('o', H.v4, SSH, DROP_MS),
      udp('o', CLOSED_UDP, DROP_MS),
      tcp('s', H.v4, CLOSED, DROP_MS),
    ]);
    assert.deepEqual(dropped, [undefined, undefined, undefined, undefined, undefined]);
  });

  it('reaches a member at its overlay address, which sees this host’s real address', async () => {
    // reject_all is still on: the answers come back as part of h's own connection.
    assert.deepEqual(await tcp('h', OVERLAY_M, CLOSED), seen('m', H.v4));
    // Next to a FIP's DNAT for the host's own connections (same output chain): both apply.
    const fip = { ...host('dnat', FIP, M.v4), owner: FIP };
    await applyOnH([...MESH, ...REJECT, fip]);
    const [viaFip, viaOverlay] = await Promise.all([
      tcp('h', FIP, CLOSED),
      tcp('h', OVERLAY_M, CLOSED),
    ]);
    assert.deepEqual([viaFip, viaOverlay], [seen('m', H.v4), seen('m', H.v4)]);
    await applyOnH([...MESH, ...REJECT]);
  });

  it('with reject_all off, everything passes again', async () => {
    await applyOnH(MESH);
    const all = await Promise.all([
      tcp('o', H.v4, CLOSED),
      tcp('o', H.v6, CLOSED),
      tcp('o', H.v4, SSH),
      udp('o', CLOSED_UDP),
      tcp('h', OVERLAY_M, CLOSED),
    ]);
    assert.deepEqual(all, [
      seen('h', O.v4),
      seen('h', O.v6),
      seen('h', O.v4),
      seen('h', O.v4),
      seen('m', H.v4),
    ]);
  });

  it('routes the overlay prefix: a host without a default route reaches a member by its overlay address', async () => {
    const n = new LinuxDataplane({ netns: lab!.ns('n') });
    const record = (name: string, address: string, overlayIp: string): NodeRecord => ({
      name,
      site: 'lan',
      addresses: [address],
      reservedPorts: [],
      registeredAt: new Date(0).toISOString(),
      overlayIp,
    });
    const policy = validateMeshPolicy({ overlay: '100.80.0.0/24' });
    const mesh = compileMesh(
      {
        record: { policy, updatedAt: new Date(0).toISOString() },
        nodes: [record('n', N.v4, '100.80.0.4'), record('m', M.v4, OVERLAY_M)],
        alive: new Set(['n', 'm']),
      },
      'n',
      new Date(),
      await n.facts(),
    );
    const route = host('route', '100.80.0.0/24', `dev lo src ${N.v4}`);
    assert.deepEqual(
      mesh.elements.filter((e) => e.kind === 'route'),
      [route],
      'the overlay prefix, from the address n holds',
    );
    const applyOnN = async (elements: readonly IntentElement[]): Promise<void> => {
      const wanted = [TABLE, ...elements];
      await n.apply(diffIntent(wanted, await n.observe(wanted)));
      const left = diffIntent(wanted, await n.observe(wanted));
      assert.deepEqual([...left.add, ...left.replace, ...left.remove], []);
    };
    try {
      // Without the route, the DNAT in output is never reached: connect() fails at once.
      await applyOnN(mesh.elements.filter((e) => e.kind !== 'route'));
      assert.equal(await tcp('n', OVERLAY_M, CLOSED, DROP_MS), undefined);
      await assert.rejects(lab!.exec('n', ['ip', 'route', 'get', OVERLAY_M]), /unreachable/);
      await applyOnN(mesh.elements);
      assert.deepEqual(await tcp('n', OVERLAY_M, CLOSED), seen('m', N.v4));
      const held = await lab!.exec('n', ['ip', 'route', 'show', 'proto', String(ROUTE_PROTO)]);
      assert.match(held.stdout, /^100\.80\.0\.0\/24 dev lo scope link src 10\.0\.0\.4 $/m);
      // An overlay address no member holds goes nowhere: not out to the LAN.
      assert.equal(await tcp('n', '100.80.0.99', CLOSED, DROP_MS), undefined);
    } finally {
      await applyOnN([]);
    }
    const left = await lab!.exec('n', ['ip', 'route', 'show', 'proto', String(ROUTE_PROTO)]);
    assert.equal(left.stdout, '', 'the route goes with the mesh');
  });

  it('drops a member that left, on again: it is an outsider like any other', async () => {
    const without = MESH.filter((e) => e.key !== M.v4 && e.key !== M.v6);
    await applyOnH([...without, ...REJECT]);
    assert.equal(await tcp('m', H.v4, CLOSED, DROP_MS), undefined);
    // Its overlay mapping stayed (only its membership went): h still reaches it.
    assert.deepEqual(await tcp('h', OVERLAY_M, CLOSED), seen('m', H.v4));
  });
});
