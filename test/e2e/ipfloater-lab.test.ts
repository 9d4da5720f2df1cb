/**
 * IP Floater's own APIs, served by a real agent whose Linux dataplane acts in a lab gateway,
 * called the way its users call them: the OpenNebula hook's curl requests (attach: arp, then
 * PUT the redirection; detach: DELETE it, or DELETE the whole public IP), and Python's standard
 * xmlrpc.client running every XML-RPC method. Real TCP from the lab's outside client reaches the
 * VM through the floating IP while it is attached, and nothing does after the detach.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import type { ApiClient } from '../../src/client/api-client.js';
import { LabAgents } from '../../src/lab/agents.js';
import { freePort } from '../../src/lab/ports.js';
import { echoProbe, startEchoServer } from '../../src/lab/probe.js';
import { GATEWAY_LAN as L, gatewayLan } from '../../src/lab/scenarios.js';
import { Lab } from '../../src/lab/topology.js';
import { ensureBuilt } from '../support/build.js';
import { tempDir, waitFor } from '../support/helpers.js';

const run = promisify(execFile);

let lab: Lab;
let tmp: { dir: string; remove: () => Promise<void> };
let agents: LabAgents;
let api: ApiClient;
/** IP Floater's REST server as the hook names it: HOST:PORT. */
let restServer: string;
let xmlrpcUrl: string;
let pythonClient: string;

const MAC = '52:54:00:0a:00:0b';
const FIP = '203.0.113.10';
const VM = L.be1.v4;

/**
 * What the OpenNebula hook does for one NIC, written for this test: look the MAC's floating IP
 * up, then attach (PUT) or detach (DELETE) it to the VM's address; curl -f fails on an HTTP error.
 */
const HOOK = `
set -u
FLOATING_IP=$(curl -sfXGET "http://$SERVER/arp/$MAC") || { echo "arp failed" >&2; exit 2; }
[ -n "$FLOATING_IP" ] || exit 2
case "$ACTION" in
  attach) curl -sfXPUT "http://$SERVER/public/$FLOATING_IP/redirect/$VM_IP" ;;
  detach) curl -sfXDELETE "http://$SERVER/public/$FLOATING_IP/redirect/$VM_IP" ;;
  detach-all) curl -sfXDELETE "http://$SERVER/public/$FLOATING_IP" ;;
esac
`;

async function hook(
  action: 'attach' | 'detach' | 'detach-all',
): Promise<{ code: number; out: string }> {
  try {
    const { stdout } = await run('bash', ['-c', HOOK], {
      env: {
        PATH: process.env['PATH'] ?? '/usr/bin:/bin',
        SERVER: restServer,
        MAC,
        VM_IP: VM,
        ACTION: action,
      },
      timeout: 10_000,
    });
    return { code: 0, out: stdout };
  } catch (e) {
    const err = e as { code?: number; stdout?: string };
    return { code: err.code ?? -1, out: err.stdout ?? '' };
  }
}

/** One XML-RPC call by Python's standard library; its answer as JSON. */
const PYTHON = `
import json, sys, xmlrpc.client
url, method, args = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
proxy = xmlrpc.client.ServerProxy(url)
print(json.dumps(getattr(proxy, method)(*args)))
`;

async function python(method: string, ...args: unknown[]): Promise<unknown> {
  const { stdout } = await run('python3', [pythonClient, xmlrpcUrl, method, JSON.stringify(args)], {
    timeout: 10_000,
  });
  return JSON.parse(stdout) as unknown;
}

const reach = (address: string, port: number, timeoutMs = 1500) =>
  echoProbe(lab, 'client', 'tcp', address, port, timeoutMs);

async function activeAt(address: string): Promise<void> {
  await waitFor(
    `${address} ACTIVE and current`,
    async () => {
      const f = await api.getFip(address);
      return f.status.state === 'ACTIVE' && !f.status.stale && f.status.revision === f.revision;
    },
    20_000,
  );
}

/**
 * Waits until the gateway's maps no longer send `address` anywhere (released and reconciled):
 * no element `FIP : target` (nat), `FIP . tcp . PORT : …` (forwards) or `… : FIP` (snat). The
 * pool's own sets keep naming it, as they do for every free address.
 */
async function goneFromKernel(address: string): Promise<void> {
  const dotted = address.replaceAll('.', '\\.');
  const mapped = new RegExp(`${dotted} [:.] |: ${dotted}(?![\\d.])`);
  await waitFor(
    `${address} gone from the gateway's maps`,
    async () => {
      const { stdout } = await lab.exec('gw', ['nft', 'list', 'table', 'inet', 'ipferry']);
      return !mapped.test(stdout);
    },
    20_000,
  );
}

before(async () => {
  await ensureBuilt();
  tmp = await tempDir('ipfloater-lab');
  pythonClient = join(tmp.dir, 'xmlrpc-call.py');
  await writeFile(pythonClient, PYTHON);
  lab = await Lab.create(gatewayLan());
  agents = new LabAgents({ lab, dir: tmp.dir });
  await startEchoServer(lab, 'be1', { tcp: [80, 22] });
  await startEchoServer(lab, 'be2', { tcp: [80] });
  const [restPort, xmlrpcPort] = [await freePort(), await freePort()];
  restServer = `127.0.0.1:${restPort}`;
  // As IP Floater's CLI builds it: no path, so Python posts to /RPC2.
  xmlrpcUrl = `http://127.0.0.1:${xmlrpcPort}`;
  ({ api } = await agents.startHub('gw', {
    extra: [
      '--ipfloater-rest',
      restServer,
      '--ipfloater-xmlrpc',
      `127.0.0.1:${xmlrpcPort}`,
      '--ipfloater-pool',
      'public',
    ],
  }));
  await api.createPool({
    name: 'public',
    gateway: 'gw',
    entries: [`${FIP}=${MAC}`, '203.0.113.11-203.0.113.12'],
  });
});

after(async () => {
  await agents?.teardown();
  await tmp?.remove();
});

describe("IP Floater's REST API as the OpenNebula hook calls it (curl)", () => {
  it('attach: the MAC’s floating IP is redirected to the VM, and the outside reaches it', async () => {
    const r = await hook('attach');
    assert.equal(r.code, 0);
    const ep = JSON.parse(r.out) as Record<string, unknown>;
    assert.deepEqual(
      [ep['public_ip'], ep['public_port'], ep['private_ip'], ep['private_port']],
      [FIP, 0, VM, 0],
    );
    await activeAt(FIP);
    assert.deepEqual(await reach(FIP, 80), { name: 'be1', address: L.client.v4 });
    assert.deepEqual(await reach(FIP, 22), { name: 'be1', address: L.client.v4 });
  });

  it('attach again fails (curl -f), and changes nothing', async () => {
    assert.notEqual((await hook('attach')).code, 0);
    assert.deepEqual(await reach(FIP, 80), { name: 'be1', address: L.client.v4 });
  });

  it('detach: the redirection goes, the address is free again, and nothing reaches the VM', async () => {
    const r = await hook('detach');
    assert.equal(r.code, 0);
    assert.equal(r.out, '');
    await goneFromKernel(FIP);
    assert.equal(await reach(FIP, 80, 800), undefined);
    assert.notEqual((await hook('detach')).code, 0, 'a second detach is a 404');
    const { stdout } = await run('curl', ['-sf', `http://${restServer}/public/${FIP}`]);
    assert.equal(stdout, '{}');
  });

  it('detach of every redirection of the floating IP (DELETE /public/FIP)', async () => {
    assert.equal((await hook('attach')).code, 0);
    await activeAt(FIP);
    assert.deepEqual(await reach(FIP, 80), { name: 'be1', address: L.client.v4 });
    assert.equal((await hook('detach-all')).code, 0);
    await goneFromKernel(FIP);
    assert.equal(await reach(FIP, 80, 800), undefined);
    assert.notEqual((await hook('detach-all')).code, 0);
  });
});

describe("IP Floater's XML-RPC API from Python's xmlrpc.client", () => {
  it('get_version, get_public_ips, arp', async () => {
    assert.equal(await python('get_version'), '0.12');
    assert.deepEqual(await python('get_public_ips'), [true, [FIP, '203.0.113.11', '203.0.113.12']]);
    assert.deepEqual(await python('arp', MAC), [true, FIP]);
    assert.deepEqual(await python('arp', '52:54:00:00:00:99'), [
      false,
      'Could not get the IP address for 52:54:00:00:00:99',
    ]);
  });

  it('create_public_redirection: a port of a chosen address reaches the VM; the rest does not', async () => {
    assert.deepEqual(await python('create_public_redirection', '', -1, VM, 80), [
      true,
      `${FIP}:80 -> ${VM}:80`,
    ]);
    assert.deepEqual(await python('create_public_redirection', FIP, 2222, VM, 22), [
      true,
      `${FIP}:2222 -> ${VM}:22`,
    ]);
    // `ipfloater getip`'s call: any free address, whole.
    assert.deepEqual(await python('create_public_redirection', '', -1, L.be2.v4, 0), [
      true,
      `203.0.113.11 -> ${L.be2.v4}`,
    ]);
    const refused = (await python('create_public_redirection', FIP, 0, L.be2.v4, 0)) as [
      boolean,
      string,
    ];
    assert.equal(refused[0], false);
    assert.match(refused[1], /^Could not obtain a redirection for /);
    assert.equal(
      await python('get_redirections'),
      `${FIP}:80 -> ${VM}:80\n${FIP}:2222 -> ${VM}:22\n203.0.113.11 -> ${L.be2.v4}\n`,
    );
    await activeAt(FIP);
    await activeAt('203.0.113.11');
    assert.deepEqual(await reach(FIP, 80), { name: 'be1', address: L.client.v4 });
    assert.deepEqual(await reach(FIP, 2222), { name: 'be1', address: L.client.v4 });
    assert.equal(await reach(FIP, 22, 800), undefined, 'only redirected ports answer');
    assert.deepEqual(await reach('203.0.113.11', 80), { name: 'be2', address: L.client.v4 });
  });

  it('unregister_redirection, _from, _to, clean_public_ip, clean_private_ip', async () => {
    assert.deepEqual(await python('unregister_redirection', FIP, 2222, VM, 22), [
      true,
      `Redirection ${FIP}:2222 -> ${VM}:22 unregistered`,
    ]);
    assert.deepEqual(await python('unregister_redirection_from', FIP, 2222), [
      false,
      `Could not delete the redirection from ${FIP}:2222. Does it exist?`,
    ]);
    assert.deepEqual(await python('unregister_redirection_to', VM, 80), [
      true,
      `Redirection ${FIP}:80 -> ${VM}:80 unregistered`,
    ]);
    await goneFromKernel(FIP);
    assert.equal(await reach(FIP, 80, 800), undefined);
    assert.deepEqual(await python('clean_private_ip', L.be2.v4), [
      true,
      `Redirections to ${L.be2.v4} unregistered`,
    ]);
    await goneFromKernel('203.0.113.11');
    assert.equal(await reach('203.0.113.11', 80, 800), undefined);
    assert.deepEqual(await python('create_public_redirection', '203.0.113.12', 8080, VM, 80), [
      true,
      `203.0.113.12:8080 -> ${VM}:80`,
    ]);
    assert.deepEqual(await python('unregister_redirection_from', '203.0.113.12', 8080), [
      true,
      `Redirection 203.0.113.12:8080 -> ${VM}:80 unregistered`,
    ]);
    assert.deepEqual(await python('clean_public_ip', '203.0.113.12'), [
      true,
      'Redirections from 203.0.113.12 unregistered',
    ]);
    assert.deepEqual(await python('clean_public_ip', '192.0.2.1'), [
      false,
      'Could not clean the redirections from 192.0.2.1. Do they exist?',
    ]);
    assert.equal(await python('get_redirections'), '');
    assert.deepEqual(await api.listFips(), []);
  });
});
