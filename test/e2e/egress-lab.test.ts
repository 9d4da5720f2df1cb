/**
 * Egress through the gateway, in the cloudHome lab: the home server's agent joins the gateway's
 * (the cloud VM's) with a join token and serves a routed FIP; then it is restarted with
 * `--egress fip`, `--egress masquerade` and finally without the option, and each time the
 * client's echo server tells which source a connection home opens arrives from: the FIP, the
 * gateway's own address, then home's own again. Throughout, the FIP answers the client (home
 * sees the client's address), the tunnel's packets keep leaving by home's own uplink, home's own
 * default route is never touched, and home's own address still answers through its ISP. The
 * ISP validates sources (BCP 38), so the FIP or the gateway's address could never leave home by
 * its ISP: a probe that arrives from one of them went through the tunnel.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { ApiClient } from '../../src/client/api-client.js';
import { EGRESS_TABLE, ROUTE_PROTO } from '../../src/core/names.js';
import { tunnelName } from '../../src/core/tunnel.js';
import { LabAgents } from '../../src/lab/agents.js';
import { echoProbe, type EchoServer, outboundProbe, startEchoServer } from '../../src/lab/probe.js';
import { CLOUD_HOME as H, cloudHome } from '../../src/lab/scenarios.js';
import type { Lab } from '../../src/lab/topology.js';
import { ensureBuilt } from '../support/build.js';
import { tempDir, waitFor } from '../support/helpers.js';

let lab: Lab;
let tmp: { dir: string; remove: () => Promise<void> };
/** Every agent this file starts: killed by pid in `after`. */
let agents: LabAgents;
/** home's own agent API (its plan). */
let homeApi: ApiClient;
let api: ApiClient;
let clientServer: EchoServer;
/** home's own default routes before any agent ran there (`ip route show default`, v4 and v6). */
let homeDefaults: string;

const FIP = '203.0.113.10';
const FIP6 = '2001:db8:f::10';
const PORTS = { gw: 51820, home: 51821 } as const;

/**
 * home's plan once converged: nothing left to change (ipferry reads back exactly what it wrote:
 * routes, the suppress_prefixlength rule), and its egress note.
 */
async function settledPlan(): Promise<string | undefined> {
  const plan = await waitFor(
    "home's plan empty",
    async () => {
      const p = await homeApi.plan();
      return p.add.length + p.replace.length + p.remove.length === 0 && p;
    },
    15_000,
  );
  return plan.refused.find((r) => r.address === 'egress')?.reason;
}

/** (Re)starts home's agent on its credential, with `--egress MODE` unless mode is undefined. */
async function startHome(mode: 'fip' | 'masquerade' | undefined): Promise<void> {
  await agents.kill('home');
  await agents.start({
    node: 'home',
    store: api.server,
    extra: [
      '--tunnel-port',
      String(PORTS.home),
      '--credential-file',
      agents.credentialFile('home'),
      ...(mode ? ['--egress', mode] : []),
    ],
  });
  homeApi = await agents.client('home');
  await waitFor(
    `home registered with egress ${mode ?? 'own'}`,
    async () => (await api.getNode('home')).egress === mode,
    10_000,
  );
}

async function out(host: string, argv: string[]): Promise<string> {
  return (await lab.exec(host, argv)).stdout.trim();
}

const defaults = async (): Promise<string> =>
  [
    await out('home', ['ip', '-4', 'route', 'show', 'default']),
    await out('home', ['ip', '-6', 'route', 'show', 'default']),
  ].join('\n');

/** ipferry's routes in home's main table (protocol 241), both families. */
const ownRoutes = async (): Promise<string> =>
  [
    await out('home', ['ip', '-4', 'route', 'show', 'proto', String(ROUTE_PROTO)]),
    await out('home', ['ip', '-6', 'route', 'show', 'proto', String(ROUTE_PROTO)]),
  ].join('\n');

/** Source the client sees for a TCP connection home opens to it, v4 or v6. */
const leavesAs = (family: 4 | 6): Promise<string | undefined> =>
  outboundProbe(lab, 'home', clientServer, family === 4 ? H.client.v4 : H.client.v6, {
    timeoutMs: 1500,
  });

/** What must hold in every phase: the FIP and home's own address answer, the tunnel stays out. */
async function stillReachable(): Promise<void> {
  for (const address of [FIP, FIP6]) {
    const reply = await waitFor(
      `${address} answering`,
      async () => echoProbe(lab, 'client', 'tcp', address, 80, 1500),
      15_000,
    );
    const client = address.includes(':') ? H.client.v6 : H.client.v4;
    assert.deepEqual(reply, { name: 'home', address: client }, address);
  }
  // home's own address answers through its ISP (which would drop it from any other source).
  assert.deepEqual(await echoProbe(lab, 'client', 'tcp', H.home.v4, 80, 1500), {
    name: 'home',
    address: H.client.v4,
  });
  assert.equal(await defaults(), homeDefaults, "home's own default routes changed");
}

before(async () => {
  await ensureBuilt();
  tmp = await tempDir('egress');
  lab = await cloudHome();
  agents = new LabAgents({ lab, dir: tmp.dir });
  clientServer = await startEchoServer(lab, 'client', { tcp: [80] });
  await startEchoServer(lab, 'home', { tcp: [80] });
  homeDefaults = await defaults();
  assert.match(homeDefaults, /default via 198\.18\.0\.1 dev eth0/);
  ({ api } = await agents.startHub('gw', {
    endpoint: { address: H.gw.uplink.v4, port: PORTS.gw },
  }));
  // The first start joins with the token and egress fip at once, as an operator would.
  await agents.join('home', {
    api,
    extra: ['--tunnel-port', String(PORTS.home), '--egress', 'fip'],
  });
  homeApi = await agents.client('home');
  await api.createPool({
    name: 'public',
    gateway: 'gw',
    entries: ['203.0.113.0/28', '2001:db8:f::/64'],
  });
  for (const address of [FIP, FIP6]) {
    await api.allocate({ address });
    await api.associate(address, { mode: 'routed', node: 'home', target: address });
  }
});

after(async () => {
  await agents?.teardown();
  await tmp?.remove();
});

describe('egress through the gateway (cloudHome)', () => {
  it('fip: home’s outbound connections leave as its routed FIPs; it stays reachable', async () => {
    assert.equal((await api.getNode('home')).egress, 'fip');
    const v4 = await waitFor(
      'IPv4 leaving as the FIP',
      async () => (await leavesAs(4)) === FIP && FIP,
      20_000,
    );
    assert.equal(v4, FIP);
    assert.equal(await waitFor('IPv6 leaving as the FIP', async () => leavesAs(6), 10_000), FIP6);
    await stillReachable();
    assert.equal(await settledPlan(), undefined, 'egress fip fully in effect: no note');
    // The tunnel's own packets: a host route to the gateway's endpoint by home's own uplink.
    const routes = await ownRoutes();
    assert.match(routes, /^192\.0\.2\.2 via 198\.18\.0\.1 dev eth0/m);
    assert.match(routes, /^0\.0\.0\.0\/1 dev ipf\S+ .*src 203\.0\.113\.10/m);
    assert.match(routes, /^128\.0\.0\.0\/1 dev ipf\S+ .*src 203\.0\.113\.10/m);
    assert.match(routes, /^::\/1 dev ipf\S+ .*src 2001:db8:f::10/m);
    const via = JSON.parse(await out('home', ['ip', '-j', 'route', 'get', H.gw.uplink.v4])) as {
      dev?: string;
    }[];
    assert.equal(via[0]?.dev, H.home.ifname);
    assert.match(
      await out('home', ['ip', '-4', 'rule', 'show']),
      new RegExp(`from ${H.home.v4.replaceAll('.', '\\.')} lookup ${EGRESS_TABLE}`),
    );
    // The tunnel really is up: home has shaken hands with the gateway.
    const tun = tunnelName('home', 'home', lab.ns('home'));
    const handshakes = await out('home', ['wg', 'show', tun, 'latest-handshakes']);
    assert.ok(
      handshakes.split('\n').some((line) => Number(line.split('\t')[1]) > 0),
      handshakes,
    );
  });

  it('masquerade: they leave behind the gateway’s own address; IPv6 keeps home’s own route', async () => {
    await startHome('masquerade');
    const v4 = await waitFor(
      'IPv4 leaving behind the gateway',
      async () => (await leavesAs(4)) === H.gw.uplink.v4 && H.gw.uplink.v4,
      20_000,
    );
    assert.equal(v4, H.gw.uplink.v4);
    assert.notEqual(v4, H.home.v4);
    // No NAT66: without egress fip, IPv6 leaves by home's own ISP with its own address.
    assert.equal(await leavesAs(6), H.home.v6);
    await stillReachable();
    assert.match((await settledPlan()) ?? '', /IPv6 keeps the node's own route/);
    assert.match(await ownRoutes(), /^192\.0\.2\.2 via 198\.18\.0\.1 dev eth0/m);
    // The gateway masquerades home's link-local tunnel address.
    assert.match(
      await out('gw', ['nft', 'list', 'set', 'inet', 'ipferry', 'masq4']),
      /elements = \{ 169\.254\.\d+\.\d+ \}/,
    );
  });

  it('own again: ipferry’s egress routes are gone and home leaves by its ISP', async () => {
    await startHome(undefined);
    await waitFor(
      'egress routes gone',
      async () => !/\/1 dev|192\.0\.2\.2 via/.test(await ownRoutes()),
      20_000,
    );
    assert.equal(await leavesAs(4), H.home.v4);
    assert.equal(await leavesAs(6), H.home.v6);
    assert.doesNotMatch(await out('home', ['ip', '-4', 'rule', 'show']), /lookup 7449/);
    assert.equal(
      await out('home', ['ip', '-4', 'route', 'show', 'table', String(EGRESS_TABLE)]).catch(
        () => '',
      ),
      '',
    );
    await stillReachable();
    assert.equal(await settledPlan(), undefined);
    await waitFor(
      'the gateway stops masquerading home',
      async () =>
        !/169\.254/.test(await out('gw', ['nft', 'list', 'set', 'inet', 'ipferry', 'masq4'])),
      10_000,
    );
  });
});
