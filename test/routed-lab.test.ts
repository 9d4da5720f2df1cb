/**
 * The cloud-router-to-home migration with routed FIPs: a gateway agent (the cloud VM) and a
 * remote agent on the home server, joined with a join token and following the gateway over the
 * http store, build a WireGuard tunnel between their namespaces (wireguard-go) and deliver the
 * FIP unchanged to the home server, which answers from it through the tunnel while its own
 * address keeps using its own ISP. The ISP validates sources (BCP 38), so an answer that took
 * the wrong way would be dropped. Everything is removed in `after`, also on failure.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { chmod, readFile, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ApiClient } from '../src/cli/client.js';
import { CLOUD_HOME as H, cloudHome } from '../src/lab/scenarios.js';
import { echoProbe, outboundProbe, type EchoServer, startEchoServer } from '../src/lab/probe.js';
import type { Lab } from '../src/lab/topology.js';
import { BIN, ensureBuilt } from './build.js';
import { tempDir, waitFor } from './helpers.js';

let lab: Lab;
let tmp: { dir: string; remove: () => Promise<void> };
const agents: ChildProcess[] = [];
let api: ApiClient;
let clientServer: EchoServer;

const FIP = '203.0.113.10';
const FIP6 = '2001:db8:f::10';

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
    });
  });
}

async function startAgent(name: string, args: string[]): Promise<string> {
  const port = await freePort();
  const dir = join(tmp.dir, name);
  const proc = spawn(
    BIN,
    [
      'agent',
      '--node',
      name,
      '--dataplane',
      'linux',
      '--netns',
      lab.ns(name),
      '--listen',
      `127.0.0.1:${port}`,
      '--token-file',
      join(dir, 'api-token'),
      '--state-dir',
      join(dir, 'state'),
      '--resync-seconds',
      '1',
      '--log-level',
      'warn',
      ...args,
    ],
    { stdio: ['ignore', 'inherit', 'inherit'] },
  );
  agents.push(proc);
  await waitFor(
    `${name} agent`,
    async () => {
      if (proc.exitCode !== null) throw new Error(`${name} agent exited with ${proc.exitCode}`);
      return (await fetch(`http://127.0.0.1:${port}/healthz`).catch(() => undefined))?.ok;
    },
    20_000,
  );
  return `http://127.0.0.1:${port}`;
}

async function activeAt(address: string): Promise<void> {
  await waitFor(`${address} ACTIVE`, async () => {
    const f = await api.getFip(address);
    return f.status.state === 'ACTIVE' && f.status.revision === f.revision;
  });
}

before(async () => {
  await ensureBuilt();
  tmp = await tempDir('routed');
  lab = await cloudHome();
  clientServer = await startEchoServer(lab, 'client', { tcp: [80] });
  await startEchoServer(lab, 'home', { tcp: [80] });
  const hub = await startAgent('gw', [
    '--store',
    `sqlite:${join(tmp.dir, 'gw.db')}`,
    '--endpoint',
    `${H.gw.uplink.v4}:51820`,
    '--tunnel-port',
    '51820',
  ]);
  const token = (await readFile(join(tmp.dir, 'gw', 'api-token'), 'utf8')).trim();
  api = new ApiClient({ server: hub, token });
  const { token: joinToken } = await api.createJoinToken({ node: 'home', ttlSeconds: 600 });
  const tokenFile = join(tmp.dir, 'join-token');
  await writeFile(tokenFile, `${joinToken}\n`, { mode: 0o600 });
  await chmod(tokenFile, 0o600);
  // The home server has no public endpoint for its tunnel: it calls the gateway and keeps the
  // path open, as it would behind a home router.
  await startAgent('home', [
    '--store',
    hub,
    '--join-token-file',
    tokenFile,
    '--credential-file',
    join(tmp.dir, 'home', 'credential'),
    '--tunnel-port',
    '51821',
  ]);
  await waitFor(
    'home registered with its tunnel key',
    async () => !!(await api.getNode('home')).publicKey,
  );
  await api.createPool({
    name: 'public',
    gateway: 'gw',
    entries: ['203.0.113.0/28', '2001:db8:f::/64'],
  });
});

after(async () => {
  for (const proc of agents) if (proc.exitCode === null) proc.kill('SIGKILL');
  await lab?.destroy();
  await tmp?.remove();
});

describe('routed FIPs through a WireGuard tunnel to a home server', () => {
  it('delivers the FIP unchanged; the home server sees the client and answers through the tunnel', async () => {
    await api.allocate({ address: FIP });
    await api.associate(FIP, { mode: 'routed', node: 'home', target: FIP });
    await activeAt(FIP);
    const reply = await waitFor(
      'an answer through the tunnel',
      async () => echoProbe(lab, 'client', 'tcp', FIP, 80, 1500),
      15_000,
    );
    assert.deepEqual(reply, { name: 'home', address: H.client.v4 });
    // A UDP service must answer from the address it was asked on, as on any multi-homed host:
    // one bound to the wildcard answers from the route's source (the home's own address).
    await startEchoServer(lab, 'home', { name: 'home-fip', udp: [5354], bind: [FIP] });
    assert.deepEqual(await echoProbe(lab, 'client', 'udp', FIP, 5354), {
      name: 'home-fip',
      address: H.client.v4,
    });
  });

  it('keeps the home server’s own address on its own ISP meanwhile', async () => {
    assert.deepEqual(await echoProbe(lab, 'client', 'tcp', H.home.v4, 80), {
      name: 'home',
      address: H.client.v4,
    });
    assert.equal(await outboundProbe(lab, 'home', clientServer, H.client.v4), H.home.v4);
  });

  it('routes an IPv6 FIP to the home server too', async () => {
    await api.allocate({ address: FIP6 });
    await api.associate(FIP6, { mode: 'routed', node: 'home', target: FIP6 });
    await activeAt(FIP6);
    const reply = await waitFor(
      'IPv6 through the tunnel',
      async () => echoProbe(lab, 'client', 'tcp', FIP6, 80, 1500),
      15_000,
    );
    assert.deepEqual(reply, { name: 'home', address: H.client.v6 });
  });

  it('stops delivering on disassociate: the FIP is dropped at the gateway again', async () => {
    await api.disassociate(FIP);
    await waitFor(
      'gone',
      async () => (await echoProbe(lab, 'client', 'tcp', FIP, 80, 700)) === undefined,
      10_000,
    );
    await waitFor(
      'home no longer holds it',
      async () => !(await lab.exec('home', ['ip', 'address', 'show'])).stdout.includes(`${FIP}/32`),
      10_000,
    );
  });
});
