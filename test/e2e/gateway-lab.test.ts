/**
 * Floating IPs forwarding real packets. A lab of network namespaces (outside client, upstream
 * router that routes the pool to the gateway, the gateway, two LAN backends, a LAN client) and a
 * real `ipferry agent` process whose Linux dataplane acts inside the gateway's namespace. The
 * machine's own namespace is never touched; everything is removed in `after`, also on failure.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ApiClient } from '../../src/client/api-client.js';
import { GATEWAY_LAN as L, gatewayLan } from '../../src/lab/scenarios.js';
import { echoProbe, type EchoServer, outboundProbe, startEchoServer } from '../../src/lab/probe.js';
import { LabAgents } from '../../src/lab/agents.js';
import { Lab } from '../../src/lab/topology.js';
import { ensureBuilt } from '../support/build.js';
import { tempDir, waitFor } from '../support/helpers.js';

let lab: Lab;
let tmp: { dir: string; remove: () => Promise<void> };
/** The gateway's agent, killed by pid in `after` (and once in a test). */
let agents: LabAgents;
let api: ApiClient;
let clientServer: EchoServer;

const FIP = '203.0.113.10';
const FIP6 = '2001:db8:f::10';

async function activeAt(address: string): Promise<void> {
  await waitFor(`${address} ACTIVE and current`, async () => {
    const f = await api.getFip(address);
    return f.status.state === 'ACTIVE' && !f.status.stale && f.status.revision === f.revision;
  });
}

const who = async (
  host: string,
  proto: 'tcp' | 'udp',
  address: string,
  p: number,
  timeoutMs = 1500,
) => echoProbe(lab, host, proto, address, p, timeoutMs);

/** The gateway's kernel state without counter values (which change with every packet). */
async function kernelState(): Promise<string> {
  return (await lab.exec('gw', ['nft', '-s', 'list', 'table', 'inet', 'ipferry'])).stdout;
}

before(async () => {
  await ensureBuilt();
  tmp = await tempDir('gwlab');
  lab = await Lab.create(gatewayLan());
  agents = new LabAgents({ lab, dir: tmp.dir });
  clientServer = await startEchoServer(lab, 'client', { tcp: [80] });
  await startEchoServer(lab, 'be1', { tcp: [80, 8000, 8005], udp: [5353] });
  await startEchoServer(lab, 'be2', { tcp: [80, 25, 9001], udp: [5353, 7000, 7001, 7002] });
  // The gateway's own service on its shared address.
  await startEchoServer(lab, 'gw', { tcp: [2222] });
  ({ api } = await agents.startHub('gw'));
  await api.createPool({
    name: 'public',
    gateway: 'gw',
    entries: ['203.0.113.0/28', '2001:db8:f::/64'],
    shared: [L.gw.uplink.v4],
  });
});

after(async () => {
  await agents?.teardown();
  await tmp?.remove();
});

describe('a gateway forwarding floating IPs (nat and ports) on a real kernel', () => {
  it('nat: TCP and UDP from outside reach backend 1, which sees the client’s address', async () => {
    await api.allocate({ address: FIP });
    await api.associate(FIP, { target: L.be1.v4 });
    await activeAt(FIP);
    assert.deepEqual(await who('client', 'tcp', FIP, 80), { name: 'be1', address: L.client.v4 });
    assert.deepEqual(await who('client', 'udp', FIP, 5353), { name: 'be1', address: L.client.v4 });
  });

  it('nat: backend 1’s own outbound connection leaves with the FIP as source', async () => {
    assert.equal(await outboundProbe(lab, 'be1', clientServer, L.client.v4), FIP);
    // A backend without a FIP leaves with its own address (the upstream routes the LAN back).
    assert.equal(await outboundProbe(lab, 'be2', clientServer, L.client.v4), L.be2.v4);
  });

  it('nat over IPv6 (NAT66, asked for explicitly)', async () => {
    await api.allocate({ address: FIP6 });
    await api.associate(FIP6, { target: L.be1.v6 });
    await activeAt(FIP6);
    assert.deepEqual(await who('client', 'tcp', FIP6, 80), { name: 'be1', address: L.client.v6 });
  });

  it('hairpin: the LAN client reaches backend 1 through its FIP and gets answers', async () => {
    const reply = await who('lanc', 'tcp', FIP, 80);
    assert.equal(reply?.name, 'be1');
    // Masqueraded to the gateway's LAN address, so be1 answers through the gateway.
    assert.equal(reply?.address, L.gw.lan.v4);
  });

  it('ports: only forwarded ports answer; ranges map onto ranges; the rest gets nothing', async () => {
    const fip = '203.0.113.11';
    await api.allocate({ address: fip });
    await api.addForward(fip, { protocol: 'tcp', port: '8000-8010', target: L.be1.v4 });
    await api.addForward(fip, {
      protocol: 'udp',
      port: '6000-6002',
      targetPort: 7000,
      target: L.be2.v4,
    });
    await activeAt(fip);
    assert.deepEqual(await who('client', 'tcp', fip, 8000), { name: 'be1', address: L.client.v4 });
    assert.deepEqual(await who('client', 'tcp', fip, 8005), { name: 'be1', address: L.client.v4 });
    assert.deepEqual(await who('client', 'udp', fip, 6001), { name: 'be2', address: L.client.v4 });
    assert.equal(
      await who('client', 'tcp', fip, 80, 800),
      undefined,
      'an unforwarded port gets no answer',
    );
    assert.equal(await who('client', 'udp', fip, 5353, 800), undefined);
  });

  it('ports on the gateway’s own address reach the backend while its own services keep answering', async () => {
    const own = L.gw.uplink.v4;
    await api.allocate({ address: own });
    await api.addForward(own, { protocol: 'tcp', port: 25, target: L.be2.v4 });
    await activeAt(own);
    assert.deepEqual(await who('client', 'tcp', own, 25), { name: 'be2', address: L.client.v4 });
    assert.deepEqual(await who('client', 'tcp', own, 2222), { name: 'gw', address: L.client.v4 });
  });

  it('an unassociated FIP of the pool gets no answer (no routing loop either)', async () => {
    await api.allocate({ address: '203.0.113.12' });
    await activeAt(FIP);
    assert.equal(await who('client', 'tcp', '203.0.113.12', 80, 800), undefined);
  });

  it('move to backend 2: new connections reach it, and no conntrack entry keeps feeding backend 1', async () => {
    // A UDP "connection" from a fixed source port: without the conntrack cleanup it would keep
    // going to backend 1 for as long as packets keep flowing.
    const udpFrom40000 = async () =>
      (
        await lab.exec('client', ['socat', '-T', '1', '-', `UDP:${FIP}:5353,sourceport=40000`], {
          input: 'x\n',
          timeoutMs: 5000,
        })
      ).stdout;
    assert.match(await udpFrom40000(), /^be1 /);
    await api.move(FIP, { target: L.be2.v4 });
    await activeAt(FIP);
    assert.match(await udpFrom40000(), /^be2 /);
    assert.deepEqual(await who('client', 'tcp', FIP, 80), { name: 'be2', address: L.client.v4 });
    assert.equal(await outboundProbe(lab, 'be2', clientServer, L.client.v4), FIP);
    assert.equal(await outboundProbe(lab, 'be1', clientServer, L.client.v4), L.be1.v4);
  });

  it('survives kill -9 of the agent during steady probes, and its restart changes nothing', async () => {
    const before = await kernelState();
    let lost = 0;
    let sent = 0;
    let probing = true;
    const probes = (async () => {
      while (probing) {
        sent++;
        if ((await who('client', 'tcp', FIP, 80, 1000))?.name !== 'be2') lost++;
      }
    })();
    await sleep(300);
    await agents.kill('gw');
    await sleep(500);
    // Back on the same port, store and token file.
    await agents.restart('gw');
    api = await agents.client('gw');
    await sleep(1500);
    probing = false;
    await probes;
    assert.ok(sent >= 10, `only ${sent} probes were sent`);
    assert.equal(lost, 0, `${lost} of ${sent} probes lost`);
    assert.equal(await kernelState(), before, 'the restarted agent found nothing to change');
  });

  it('never touches what it does not own: foreign tables, routes and rules survive 100 reconciles', async () => {
    const foreign = [
      'add table ip dockerish',
      'add chain ip dockerish DOCKER { type nat hook prerouting priority dstnat; policy accept; }',
      'add rule ip dockerish DOCKER iifname "docker0" return',
      'add rule ip dockerish DOCKER tcp dport 8080 dnat to 172.17.0.2:80',
      'add table inet ufwish',
      'add chain inet ufwish input { type filter hook input priority filter; policy accept; }',
      'add rule inet ufwish input tcp dport 22 counter accept',
      '',
    ].join('\n');
    await lab.exec('gw', ['nft', '-f', '-'], { input: foreign });
    await lab.exec('gw', ['ip', 'route', 'add', '198.18.0.0/24', 'via', L.be1.v4, 'table', '77']);
    await lab.exec('gw', [
      'ip',
      'rule',
      'add',
      'from',
      '10.0.0.99',
      'lookup',
      '77',
      'priority',
      '1234',
    ]);
    const snapshot = async () =>
      [
        (await lab.exec('gw', ['nft', '-s', 'list', 'table', 'ip', 'dockerish'])).stdout,
        (await lab.exec('gw', ['nft', '-s', 'list', 'table', 'inet', 'ufwish'])).stdout,
        (await lab.exec('gw', ['ip', 'rule', 'show'])).stdout,
        (await lab.exec('gw', ['ip', 'route', 'show', 'table', 'all'])).stdout,
      ].join('\n');
    const before = await snapshot();
    for (let i = 0; i < 100; i++) {
      await api.move(FIP, { target: i % 2 === 0 ? L.be1.v4 : L.be2.v4 });
      await activeAt(FIP);
    }
    assert.equal(await snapshot(), before);
    assert.deepEqual(await who('client', 'tcp', FIP, 80), { name: 'be2', address: L.client.v4 });
  });

  it('repairs drift: an element deleted by hand is back within the resync period', async () => {
    await lab.exec('gw', ['nft', 'delete', 'element', 'inet', 'ipferry', 'dnat4', `{ ${FIP} }`]);
    assert.equal(await who('client', 'tcp', FIP, 80, 500), undefined);
    await waitFor(
      'drift repaired',
      async () => (await who('client', 'tcp', FIP, 80, 500))?.name === 'be2',
      5000,
    );
  });

  it('rebuilds its table when a rule is deleted by hand', async () => {
    const rules = JSON.parse(
      (await lab.exec('gw', ['nft', '-j', '-a', 'list', 'chain', 'inet', 'ipferry', 'prerouting']))
        .stdout,
    ) as { nftables: { rule?: { handle: number } }[] };
    const handle = rules.nftables.find((o) => o.rule)?.rule?.handle;
    assert.ok(handle);
    const before = await kernelState();
    await lab.exec('gw', [
      'nft',
      'delete',
      'rule',
      'inet',
      'ipferry',
      'prerouting',
      'handle',
      String(handle),
    ]);
    // Rebuilt in one transaction: the same objects, though counters are listed in creation order.
    const objects = (state: string) => state.split('\n').sort();
    await waitFor(
      'table rebuilt',
      async () => {
        const now = await kernelState();
        return JSON.stringify(objects(now)) === JSON.stringify(objects(before));
      },
      5000,
    );
    assert.deepEqual(await who('client', 'tcp', FIP, 80), { name: 'be2', address: L.client.v4 });
  });

  it('refuses at the API what this host could not realise, changing neither the FIP nor the kernel', async () => {
    // Routed to its own gateway: compile would refuse it (compile/tunnels.ts), so the API refuses it first.
    const before = await kernelState();
    const fip = '203.0.113.13';
    const allocated = await api.allocate({ address: fip });
    await assert.rejects(
      api.associate(fip, { mode: 'routed', node: 'gw' }),
      (e: Error & { code?: string }) => e.code === 'IPF_E_ROUTED_TO_GATEWAY',
    );
    const after = await api.getFip(fip);
    assert.equal(after.revision, allocated.revision, 'the refused association wrote nothing');
    assert.equal(after.association, undefined);
    assert.equal(await kernelState(), before, 'nothing of the refused association was applied');
    await api.release(fip);
  });

  it('on-link pool: the gateway answers ARP and NDP for its FIPs on the uplink, and stops on release', async () => {
    // Addresses of the uplink's own segment: the upstream reaches them by ARP/NDP, not a route.
    await api.createPool({
      name: 'onlink',
      gateway: 'gw',
      delivery: 'onlink',
      uplink: L.gw.uplink.ifname,
      entries: ['192.0.2.100-192.0.2.110', '2001:db8:1::100-2001:db8:1::110'],
    });
    for (const [fip, target] of [
      ['192.0.2.100', L.be1.v4],
      ['2001:db8:1::100', L.be2.v6],
    ] as const) {
      await api.allocate({ address: fip });
      await api.associate(fip, { target });
      await activeAt(fip);
    }
    assert.deepEqual(await who('client', 'tcp', '192.0.2.100', 80), {
      name: 'be1',
      address: L.client.v4,
    });
    assert.deepEqual(await who('client', 'tcp', '2001:db8:1::100', 80), {
      name: 'be2',
      address: L.client.v6,
    });
    const addresses = (await lab.exec('gw', ['ip', 'address', 'show', 'dev', L.gw.uplink.ifname]))
      .stdout;
    assert.match(addresses, /inet 192\.0\.2\.100\/32 scope global wan0:ipf/);
    assert.match(
      (await lab.exec('gw', ['ip', '-6', 'neigh', 'show', 'proxy'])).stdout,
      /2001:db8:1::100 dev wan0 proxy/,
    );
    // The gateway's own address is still its own: not a FIP, never dropped.
    assert.deepEqual(await who('client', 'tcp', L.gw.uplink.v4, 2222), {
      name: 'gw',
      address: L.client.v4,
    });
    await api.release('192.0.2.100', true);
    await api.release('2001:db8:1::100', true);
    const claimsLeft = async () =>
      (await lab.exec('gw', ['ip', 'address', 'show'])).stdout.includes('192.0.2.100') ||
      (await lab.exec('gw', ['ip', '-6', 'neigh', 'show', 'proxy'])).stdout.includes(
        '2001:db8:1::100',
      );
    await waitFor('claims gone', async () => !(await claimsLeft()));
    assert.equal(await who('client', 'tcp', '192.0.2.100', 80, 800), undefined);
  });

  it('release: nothing answers on the FIP any more', async () => {
    await api.release(FIP, true);
    await waitFor('released', async () => !(await kernelState()).includes(`${FIP} :`));
    assert.equal(await who('client', 'tcp', FIP, 80, 800), undefined);
    assert.equal(await who('client', 'udp', FIP, 5353, 800), undefined);
  });
});
