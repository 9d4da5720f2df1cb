/**
 * Routed FIPs of an on-link IPv4 pool, with real packets: the provider's router (`up`) reaches
 * the pool by ARP on the gateway's uplink segment instead of routing it to the gateway. The
 * cloudHome lab's up↔gw link is such a segment (192.0.2.0/24): `up` has no route for
 * 192.0.2.64/28, only its connected /24, so it ARPs for those addresses on `to-gw`.
 *
 * A FIP routed to the home server must not be a local address of the gateway (it would be
 * swallowed there): the gateway answers ARP for it by a proxy neighbour entry on its uplink,
 * which Linux honours because the route to the FIP leaves by the tunnel, and routes it on. In
 * nat mode the FIP is a labelled local address again. A gateway agent (SQLite store) and a
 * remote agent on home (http store, join token) run here; every process is killed and
 * everything removed in `after`, also on failure.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { ApiClient } from '../../src/client/api-client.js';
import { parseProxyEntries, readNeighbours } from '../../src/dataplane/iproute/neighbours.js';
import { LabAgents } from '../../src/lab/agents.js';
import { echoProbe, startEchoServer } from '../../src/lab/probe.js';
import { CLOUD_HOME as H, cloudHome } from '../../src/lab/scenarios.js';
import type { Lab } from '../../src/lab/topology.js';
import { ensureBuilt } from '../support/build.js';
import { activeFip, tempDir, waitFor } from '../support/helpers.js';

/** Inside up↔gw's 192.0.2.0/24, away from up (.1) and gw (.2). */
const POOL = '192.0.2.64/28';
const FIP = '192.0.2.70';
/** A pool address nobody associated: nothing may answer ARP for it. */
const IDLE = '192.0.2.71';
const UPLINK = H.gw.uplink.ifname;
const UP_TO_GW = H.up.toGw.ifname;
const TUNNEL_PORTS = { gw: 51820, home: 51821 } as const;

let lab: Lab;
let tmp: { dir: string; remove: () => Promise<void> };
let api: ApiClient;
/** Every agent this file starts: killed by pid in `after`. */
let agents: LabAgents;

async function activeAt(address: string): Promise<void> {
  await activeFip(api, address);
}

/** The gateway's IPv4 proxy entries, as `ADDRESS dev IFNAME`. */
async function proxyEntries(): Promise<string[]> {
  const { stdout } = await lab.exec('gw', ['ip', '-4', '-j', 'neigh', 'show', 'proxy']);
  return parseProxyEntries(stdout).map((p) => `${p.address} dev ${p.interface}`);
}

/** The gateway's IPv4 addresses on its uplink, as `ADDRESS/LEN LABEL`. */
async function uplinkAddresses(): Promise<string[]> {
  const { stdout } = await lab.exec('gw', ['ip', '-4', '-j', 'address', 'show', 'dev', UPLINK]);
  const links = JSON.parse(stdout || '[]') as {
    addr_info?: { local?: string; prefixlen?: number; label?: string }[];
  }[];
  return links.flatMap((l) =>
    (l.addr_info ?? []).map((a) => `${a.local}/${a.prefixlen} ${a.label ?? ''}`),
  );
}

/** The MAC `up` resolved `address` to on its link to gw, if any. */
async function upResolves(address: string): Promise<string | undefined> {
  const table = await readNeighbours(lab.ns('up'));
  return table.find((n) => n.address === address && n.interface === UP_TO_GW)?.mac;
}

async function gwMac(): Promise<string> {
  const { stdout } = await lab.exec('gw', ['ip', '-j', 'link', 'show', 'dev', UPLINK]);
  const [link] = JSON.parse(stdout) as { address?: string }[];
  assert.ok(link?.address, `no MAC on gw's ${UPLINK}`);
  return link.address.toLowerCase();
}

/** Forgets what `up` learnt about `address`, so the next packet asks by ARP again. */
async function upForgets(address: string): Promise<void> {
  await lab.exec('up', ['ip', 'neigh', 'flush', 'to', address, 'dev', UP_TO_GW]);
}

const probeFip = () => echoProbe(lab, 'client', 'tcp', FIP, 80, 1500);

before(async () => {
  await ensureBuilt();
  tmp = await tempDir('routed-onlink');
  lab = await cloudHome();
  agents = new LabAgents({ lab, dir: tmp.dir });
  await startEchoServer(lab, 'home', { tcp: [80] });
  ({ api } = await agents.startHub('gw', {
    endpoint: { address: H.gw.uplink.v4, port: TUNNEL_PORTS.gw },
  }));
  await agents.join('home', { api, extra: ['--tunnel-port', String(TUNNEL_PORTS.home)] });
  await api.createPool({
    name: 'link',
    gateway: 'gw',
    delivery: 'onlink',
    uplink: UPLINK,
    entries: [POOL],
  });
});

after(async () => {
  await agents?.teardown();
  await tmp?.remove();
});

describe('routed FIPs of an on-link IPv4 pool (proxy ARP)', () => {
  it('answers ARP for the FIP on the uplink without holding it; the client reaches home by it', async () => {
    await api.allocate({ address: FIP });
    await api.associate(FIP, { mode: 'routed', node: 'home', target: FIP });
    await activeAt(FIP);
    await upForgets(FIP);
    const reply = await waitFor('home answering on the FIP', probeFip, 15_000);
    assert.deepEqual(reply, { name: 'home', address: H.client.v4 });
    // up asked by ARP and the gateway answered with its own MAC...
    assert.equal(await upResolves(FIP), await gwMac());
    // ...from a proxy entry for this one address, not a local address and not proxy_arp.
    assert.deepEqual(await proxyEntries(), [`${FIP} dev ${UPLINK}`]);
    assert.ok(!(await uplinkAddresses()).some((a) => a.startsWith(`${FIP}/`)));
    const { stdout } = await lab.exec('gw', ['sysctl', '-n', `net.ipv4.conf.${UPLINK}.proxy_arp`]);
    assert.equal(stdout.trim(), '0');
    // A pool address nobody associated gets no ARP answer at all.
    await upForgets(IDLE);
    assert.equal(await echoProbe(lab, 'client', 'tcp', IDLE, 80, 1500), undefined);
    assert.equal(await upResolves(IDLE), undefined);
  });

  it('takes back a local address left next to the proxy entry (an agent killed mid-switch)', async () => {
    // What a nat → routed switch leaves when its agent dies between adding the proxy entry and
    // deleting the address: the address swallows the FIP until the next read of the kernel.
    const label = `${UPLINK}:ipf`;
    await lab.exec('gw', ['ip', 'address', 'add', `${FIP}/32`, 'dev', UPLINK, 'label', label]);
    await waitFor(
      'the stray local address removed',
      async () => !(await uplinkAddresses()).some((a) => a.startsWith(`${FIP}/`)),
      10_000,
    );
    assert.deepEqual(await proxyEntries(), [`${FIP} dev ${UPLINK}`]);
    assert.deepEqual(await waitFor('home again', probeFip, 10_000), {
      name: 'home',
      address: H.client.v4,
    });
  });

  it('removes the proxy entry on disassociate: nothing answers for the FIP any more', async () => {
    await api.disassociate(FIP);
    await waitFor('the proxy entry gone', async () => (await proxyEntries()).length === 0, 10_000);
    await upForgets(FIP);
    assert.equal(await probeFip(), undefined);
    assert.equal(await upResolves(FIP), undefined, 'something still answers ARP for the FIP');
    assert.ok(!(await uplinkAddresses()).some((a) => a.startsWith(`${FIP}/`)));
  });

  it('holds the FIP as a local address again in nat mode, and swaps back to the proxy entry for routed', async () => {
    // nat to home's own address through the tunnel: the gateway DNATs, so the FIP is local.
    await api.associate(FIP, { mode: 'nat', node: 'home', target: H.home.v4 });
    await activeAt(FIP);
    await upForgets(FIP);
    assert.deepEqual(await waitFor('home by nat', probeFip, 15_000), {
      name: 'home',
      address: H.client.v4,
    });
    assert.deepEqual(await uplinkAddresses(), [
      `${H.gw.uplink.v4}/24 ${UPLINK}`,
      `${FIP}/32 ${UPLINK}:ipf`,
    ]);
    assert.deepEqual(await proxyEntries(), []);
    assert.equal(await upResolves(FIP), await gwMac());

    await api.associate(FIP, {
      mode: 'routed',
      node: 'home',
      target: FIP,
      allowReassociation: true,
    });
    await activeAt(FIP);
    await waitFor(
      'the address swapped for the proxy entry',
      async () =>
        (await proxyEntries()).length === 1 &&
        !(await uplinkAddresses()).some((a) => a.startsWith(`${FIP}/`)),
      10_000,
    );
    await upForgets(FIP);
    assert.deepEqual(await waitFor('home by routing again', probeFip, 15_000), {
      name: 'home',
      address: H.client.v4,
    });
    assert.equal(await upResolves(FIP), await gwMac());
  });
});
