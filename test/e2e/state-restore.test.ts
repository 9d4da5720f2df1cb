/**
 * Backup and restore on real kernels: a gateway (SQLite store) with a home server joined through
 * a WireGuard tunnel serves a nat FIP, a routed FIP and a FIP in ports mode with forwards.
 * `ipferry state export` takes its state while the agent runs; the whole lab is then destroyed.
 * In a fresh lab (new namespaces) `ipferry state import` writes the export onto an empty store,
 * a new gateway agent of the same name starts on it, and the home server, started with the
 * credential it got when it joined the first gateway, is let in by the restored credential hash.
 * The restored gateway realises the same kernel state: the same `nft list table inet ipferry`
 * and the same routes and rules, up to the tunnel's interface name (salted with the namespace)
 * and the addresses derived from it; and packets flow through every FIP again.
 *
 * Every process is killed by pid and both labs are removed, also when a test fails.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { cp, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import type { ApiClient } from '../../src/client/api-client.js';
import { LabAgents } from '../../src/lab/agents.js';
import { echoProbe, startEchoServer } from '../../src/lab/probe.js';
import { CLOUD_HOME as H, cloudHome } from '../../src/lab/scenarios.js';
import type { Lab } from '../../src/lab/topology.js';
import { BIN, ensureBuilt } from '../support/build.js';
import { activeFip, tempDir, waitFor } from '../support/helpers.js';

const exec = promisify(execFile);

const TUNNEL_PORTS = { gw: 51820, home: 51821 } as const;
const NAT_FIP = '203.0.113.2';
const ROUTED_FIP = '203.0.113.3';
const PORTS_FIP = '203.0.113.4';
const FIPS = [NAT_FIP, ROUTED_FIP, PORTS_FIP];

interface Site {
  lab: Lab;
  agents: LabAgents;
}

let tmp: { dir: string; remove: () => Promise<void> };
const sites: Site[] = [];

async function ipferry(...args: string[]): Promise<{ out: string; err: string }> {
  const { stdout, stderr } = await exec(BIN, args, {
    env: { PATH: process.env.PATH ?? '' },
    timeout: 60_000,
  });
  return { out: stdout, err: stderr };
}

/** A fresh cloudHome lab with the home server's web service; its agents' files under `dir`. */
async function newLab(dir: string): Promise<Site> {
  const lab = await cloudHome();
  const agents = new LabAgents({ lab, dir });
  // Registered at once, so `after` removes it even if the next step fails.
  sites.push({ lab, agents });
  await startEchoServer(lab, 'home', { tcp: [80] });
  return { lab, agents };
}

function startGateway(agents: LabAgents): Promise<{ api: ApiClient }> {
  return agents.startHub('gw', { endpoint: { address: H.gw.uplink.v4, port: TUNNEL_PORTS.gw } });
}

/**
 * What the gateway's kernel holds for ipferry, as text two labs can be compared by: the
 * ipferry table without counters or handles, IPv4 and IPv6 rules and routes of every table. The
 * tunnel's interface name is salted with the namespace's name, and the link-local addresses
 * differ from lab to lab: they are written as TUNNEL and LINK-LOCAL. The routes are then
 * sorted, as the kernel lists them by address; rules keep their order (by priority).
 */
async function kernelState(lab: Lab): Promise<string> {
  const run = async (args: string[]) => (await lab.exec('gw', args)).stdout;
  const links = JSON.parse(await run(['ip', '-j', 'link', 'show'])) as { ifname: string }[];
  const tunnels = links.map((l) => l.ifname).filter((name) => name.startsWith('ipf'));
  const normal = (text: string): string => {
    let out = text;
    for (const name of tunnels) out = out.split(name).join('TUNNEL');
    return out.replace(/fe80::[0-9a-f:]+/g, 'LINK-LOCAL');
  };
  const sorted = (text: string): string => normal(text).split('\n').sort().join('\n');
  return [
    normal(await run(['nft', '-s', 'list', 'table', 'inet', 'ipferry'])),
    normal(await run(['ip', '-4', 'rule', 'show'])),
    normal(await run(['ip', '-6', 'rule', 'show'])),
    sorted(await run(['ip', '-4', 'route', 'show', 'table', 'all'])),
    sorted(await run(['ip', '-6', 'route', 'show', 'table', 'all'])),
  ].join('\n');
}

async function allActive(api: ApiClient): Promise<void> {
  for (const fip of FIPS) await activeFip(api, fip, 30_000);
}

/** Each FIP reaches the home server from outside, which sees the client's own address. */
async function servesEveryFip(lab: Lab): Promise<void> {
  const probes: [string, number][] = [
    [NAT_FIP, 80],
    [ROUTED_FIP, 80],
    [PORTS_FIP, 8080],
  ];
  for (const [fip, port] of probes) {
    const reply = await waitFor(
      `${fip}:${port} through the tunnel`,
      async () => echoProbe(lab, 'client', 'tcp', fip, port, 1500),
      20_000,
    );
    assert.deepEqual(reply, { name: 'home', address: H.client.v4 }, `${fip}:${port}`);
  }
}

before(async () => {
  await ensureBuilt();
  tmp = await tempDir('state-restore');
});

after(async () => {
  for (const site of sites.reverse()) await site.agents.teardown();
  await tmp?.remove();
});

describe('a gateway restored from an export realises the same kernel state', () => {
  const backup = () => join(tmp.dir, 'backup.json');
  let original: string;

  it('exports a gateway with nat, routed and ports FIPs while its agent runs', async () => {
    const dir = join(tmp.dir, 'first');
    const { lab, agents } = await newLab(dir);
    const { api } = await startGateway(agents);
    await agents.join('home', { api, extra: ['--tunnel-port', String(TUNNEL_PORTS.home)] });
    await api.createPool({
      name: 'public',
      gateway: 'gw',
      entries: ['203.0.113.0/28', '2001:db8:f::/64'],
    });
    await api.allocate({ address: NAT_FIP });
    await api.associate(NAT_FIP, { mode: 'nat', node: 'home', target: H.home.v4 });
    await api.allocate({ address: ROUTED_FIP });
    await api.associate(ROUTED_FIP, { mode: 'routed', node: 'home', target: ROUTED_FIP });
    await api.allocate({ address: PORTS_FIP });
    await api.associate(PORTS_FIP, { mode: 'ports', node: 'home', target: H.home.v4 });
    await api.addForward(PORTS_FIP, {
      protocol: 'tcp',
      port: 8080,
      targetPort: 80,
      target: H.home.v4,
      node: 'home',
    });
    await api.addForward(PORTS_FIP, { protocol: 'udp', port: '5000-5002', target: H.home.v4 });
    await allActive(api);
    await servesEveryFip(lab);
    original = await kernelState(lab);
    for (const fip of FIPS) assert.ok(original.includes(fip), `${fip} is in the kernel state`);
    assert.ok(original.includes('TUNNEL'), 'routes and rules through the tunnel are compared');

    const store = `sqlite:${join(dir, 'gw', 'gw.db')}`;
    const { out } = await ipferry('state', 'export', '--store', store, '--output', backup());
    assert.match(out, /^exported \d+ record\(s\) .* from sqlite at revision \d+ to /);
    assert.equal((await stat(backup())).mode & 0o777, 0o600);
    const document = JSON.parse(await readFile(backup(), 'utf8'));
    assert.ok(
      document.records.some((r: { key: string }) => r.key.endsWith('/node-credentials/home')),
      'the home server’s credential hash is in the export',
    );

    // The old gateway is gone: its lab, its agents, its store.
    await agents.teardown();
    sites.length = 0;
  });

  it('imports onto an empty store; a new gateway of the same name and the home server, with its old credential, give the same kernel state', async () => {
    assert.ok(original, 'the export step ran');
    const first = join(tmp.dir, 'first');
    const dir = join(tmp.dir, 'second');
    const { lab, agents } = await newLab(dir);
    const { out } = await ipferry(
      'state',
      'import',
      backup(),
      '--store',
      `sqlite:${join(dir, 'gw', 'gw.db')}`,
    );
    assert.match(out, /^imported \d+ record\(s\) .* into sqlite at revision 1\n$/);

    const { api } = await startGateway(agents);
    // The home server is the same machine: its credential and tunnel key, no new join token.
    await cp(join(first, 'home'), join(dir, 'home'), { recursive: true });
    await agents.start({
      node: 'home',
      store: api.server,
      extra: [
        '--credential-file',
        agents.credentialFile('home'),
        '--tunnel-port',
        String(TUNNEL_PORTS.home),
      ],
    });
    await allActive(api);
    await servesEveryFip(lab);
    // A pass may still be settling the last element when every FIP first reads ACTIVE.
    const restored = await waitFor(
      'the restored kernel state',
      async () => {
        const now = await kernelState(lab);
        return now === original ? now : undefined;
      },
      10_000,
    ).catch(async () => kernelState(lab));
    assert.equal(restored, original);
  });
});
