/**
 * A far end that runs no agent, configured only from `ipferry node render --os linux`, in the
 * cloudHome lab (src/lab/scenarios/cloud-home.ts):
 *
 *   client — up ─┬─ gw   (the cloud VM: its agent, SQLite store, tunnel endpoint 192.0.2.2)
 *                └─ isp — home   (198.18.0.10 from its ISP, which drops what home sends from any
 *                                 other source: BCP 38)
 *
 * 1. The operator registers home with `node add --unmanaged` and the public key of a key made
 *    on home (`wg genkey` there; the private key never leaves home's files), routes
 *    203.0.113.10 to it and forwards tcp 25 of the VM's own address to home's own address.
 * 2. `node render home --os linux` gives one wg-quick file; home applies it with `wg-quick up`
 *    inside its namespace (no WireGuard module here: wg-quick starts wireguard-go), which runs
 *    the file's own return-path hooks. Nothing else is configured on home.
 * 3. The gateway's probes through the tunnel are answered by home: both FIPs become ACTIVE.
 *    The client reaches the routed FIP and the forwarded port with its own address seen at
 *    home; the answers come back (through the tunnel: home's ISP would drop them, and the
 *    forward's answers from 198.18.0.10 would not match the client's connection), while home's
 *    default route stays its ISP (home's own connection to the client leaves from 198.18.0.10).
 * 4. A second routed FIP makes `--check FILE` fail naming it; rendering again and applying the
 *    new file (`wg-quick down`, `up`) brings it up, and `--check` passes.
 * 5. Taken down, the host stops answering the gateway's probes: its FIP goes UNREACHABLE.
 * 6. The FreeBSD rendering's wg(8) file goes through the real `wg setconf` (on a wireguard-go
 *    interface of its own): the gateway peer comes out as rendered.
 *
 * The agent is killed by pid, wireguard-go stopped by pid, the lab destroyed and its sockets and
 * files removed in `after`, also when a step fails; `after` then checks no namespace is left.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chmod, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import type { NodeListView } from '../../src/api/contract.js';
import type { ApiClient } from '../../src/client/api-client.js';
import { LabAgents } from '../../src/lab/agents.js';
import { listNamespaces, randomPrefix } from '../../src/lab/netns.js';
import { echoProbe, type EchoServer, outboundProbe, startEchoServer } from '../../src/lab/probe.js';
import { alive, killQuietly } from '../../src/lab/procs.js';
import { CLOUD_HOME as H, cloudHome } from '../../src/lab/scenarios.js';
import type { Lab } from '../../src/lab/topology.js';
import { removeWireguardSockets, wireguardDaemons } from '../../src/lab/wireguard.js';
import { BIN, ensureBuilt } from '../support/build.js';
import { activeFip, tempDir, waitFor } from '../support/helpers.js';

const execFileP = promisify(execFile);

const SHARED = H.gw.uplink.v4;
const FIP = '203.0.113.10';
const FIP2 = '203.0.113.11';
const SERVICE_PORT = 8080;
const SMTP = 25;
const GW_TUNNEL_PORT = 51820;

interface Far {
  readonly prefix: string;
  /** home's tunnel interface: ipf… so the lab's wireguard-go helpers know it; unique per run. */
  readonly iface: string;
  /** A second interface there, for the FreeBSD rendering's wg(8) file. */
  readonly spare: string;
  tmp?: { dir: string; remove: () => Promise<void> };
  lab?: Lab;
  agents?: LabAgents;
  api?: ApiClient;
  env?: Record<string, string>;
  servers: EchoServer[];
}

const far: Far = {
  prefix: randomPrefix(),
  iface: `ipfu${randomPrefix('').slice(0, 6)}`,
  spare: `ipfv${randomPrefix('').slice(0, 6)}`,
  servers: [],
};

/** One file of the FreeBSD rendering: the lines after its `# ==> PATH <==` line. */
function section(bundle: string, path: string): string {
  const parts = bundle.split(/^# ==> (.+) <==\n/m);
  const at = parts.indexOf(path);
  assert.ok(at > 0, `the rendering has no ${path}`);
  return parts[at + 1] ?? '';
}

function lab(): Lab {
  assert.ok(far.lab, 'the lab was not built');
  return far.lab;
}

function tmp(): string {
  assert.ok(far.tmp, 'no temporary directory');
  return far.tmp.dir;
}

const confPath = (): string => join(tmp(), `${far.iface}.conf`);

/** The CLI against the gateway agent, as the operator on the VM runs it; its stdout. */
async function ipferry(args: readonly string[]): Promise<string> {
  assert.ok(far.env, 'the gateway agent is not running');
  const { stdout } = await execFileP(BIN, args, { env: far.env, timeout: 30_000 });
  return stdout;
}

/** The CLI's exit code, stdout and stderr, for a command that may fail. */
async function ipferryResult(
  args: readonly string[],
): Promise<{ code: number; out: string; err: string }> {
  try {
    return { code: 0, out: await ipferry(args), err: '' };
  } catch (e) {
    const x = e as { code?: number; stdout?: string; stderr?: string };
    return { code: x.code ?? -1, out: x.stdout ?? '', err: x.stderr ?? '' };
  }
}

const renderArgs = (): string[] => [
  'node',
  'render',
  'home',
  '--os',
  'linux',
  '--interface',
  far.iface,
  '--key-file',
  join(tmp(), `${far.iface}.key`),
];

/** Renders home's configuration and writes it where wg-quick reads it (0600, as it asks). */
async function renderToFile(): Promise<string> {
  const text = await ipferry(renderArgs());
  await writeFile(confPath(), text, { mode: 0o600 });
  return text;
}

const wgQuick = (verb: 'up' | 'down') => lab().exec('home', ['wg-quick', verb, confPath()]);

/** Stops home's wireguard-go by pid (wg-quick down removed its socket; it may still run). */
async function stopHomeDaemons(names: readonly string[] = [far.iface]): Promise<void> {
  const daemons = wireguardDaemons({ hosts: ['home'], ns: (h) => lab().ns(h) }).filter((d) =>
    names.includes(d.name),
  );
  for (const d of daemons) killQuietly(d.pid);
  for (const d of daemons)
    await waitFor(`wireguard-go ${d.pid} gone`, () => Promise.resolve(!alive(d.pid)));
  await removeWireguardSockets(names);
}

const defaultRoutes = async (): Promise<string> =>
  (await lab().exec('home', ['ip', '-4', 'route', 'show', 'default'])).stdout;

function active(address: string) {
  assert.ok(far.api, 'the gateway agent is not running');
  return activeFip(far.api, address, 30_000);
}

/** The client asks home's echo server at `address`; the first answer may wait for a handshake. */
function answer(address: string, port: number) {
  return waitFor(
    `tcp ${address} port ${port} answering`,
    () => echoProbe(lab(), 'client', 'tcp', address, port, 1500),
    15_000,
  );
}

describe('an unmanaged node configured only from node render --os linux', () => {
  let routesBefore = '';

  before(async () => {
    await ensureBuilt();
    far.tmp = await tempDir('unmanaged');
    far.lab = await cloudHome({ prefix: far.prefix });
    far.servers.push(
      await startEchoServer(far.lab, 'home', { tcp: [SERVICE_PORT, SMTP] }),
      await startEchoServer(far.lab, 'client', { tcp: [80] }),
    );
    routesBefore = await defaultRoutes();
    const agents = new LabAgents({
      lab: far.lab,
      dir: far.tmp.dir,
      extra: ['--probe-seconds', '1'],
    });
    far.agents = agents;
    const gw = await agents.startHub('gw', {
      endpoint: { address: SHARED, port: GW_TUNNEL_PORT },
    });
    far.api = gw.api;
    far.env = {
      PATH: process.env['PATH'] ?? '',
      HOME: far.tmp.dir,
      IPFERRY_SERVER: gw.agent.url,
      IPFERRY_TOKEN_FILE: gw.agent.tokenFile,
    };
    const pool = ['--cidr', '203.0.113.0/28', '--shared', SHARED];
    await ipferry(['pool', 'create', 'public', '--gateway', 'gw', ...pool]);
  });

  after(async () => {
    try {
      if (far.lab && far.tmp) {
        await wgQuick('down').catch(() => undefined);
        await stopHomeDaemons([far.iface, far.spare]);
      }
    } finally {
      try {
        for (const s of far.servers) await s.stop();
        await (far.agents ? far.agents.teardown() : far.lab?.destroy());
      } finally {
        await far.api?.close();
        await removeWireguardSockets([far.iface, far.spare]);
        await far.tmp?.remove();
      }
    }
    const left = (await listNamespaces()).filter((ns) => ns.startsWith(far.prefix));
    assert.deepEqual(left, [], 'namespaces of the lab left behind');
  });

  it('registers home with a key made on home, without an agent', async () => {
    const keyFile = join(tmp(), `${far.iface}.key`);
    const privateKey = (await lab().exec('home', ['wg', 'genkey'])).stdout;
    await writeFile(keyFile, privateKey, { mode: 0o600 });
    await chmod(keyFile, 0o600);
    const publicKey = (
      await lab().exec('home', ['wg', 'pubkey'], { input: privateKey })
    ).stdout.trim();
    await ipferry([
      'node',
      'add',
      'home',
      '--unmanaged',
      '--public-key',
      publicKey,
      '--address',
      H.home.v4,
    ]);
    const shown = await ipferry(['node', 'show', 'home']);
    assert.match(shown, /managed:\s+no: unmanaged/);
    assert.ok(!shown.includes(privateKey.trim()), 'the private key never reaches the hub');

    // home is not configured yet: the gateway holds what goes to it DOWN until its tunnel
    // answers, so these writes would wait in vain. The next step waits for ACTIVE instead.
    await ipferry(['fip', 'allocate', '--address', FIP]);
    await ipferry([
      'fip',
      'associate',
      FIP,
      '--mode',
      'routed',
      '--node',
      'home',
      '--target',
      FIP,
      '--no-wait',
    ]);
    await ipferry(['fip', 'allocate', '--address', SHARED]);
    await ipferry([
      'forward',
      'add',
      '--no-wait',
      SHARED,
      '--proto',
      'tcp',
      '--port',
      String(SMTP),
      '--target',
      H.home.v4,
      '--node',
      'home',
    ]);
  });

  it('comes up from the rendered file alone; the gateway probes it and reports ACTIVE', async () => {
    const text = await renderToFile();
    assert.ok(!/^\s*PrivateKey/m.test(text), 'no private key in the rendered file');
    await wgQuick('up');
    await active(FIP);
    await active(SHARED);
    // home reports nothing itself: node show gives its tunnel as the gateway's agent sees it.
    const shown = await waitFor(
      'node show home with the path the gateway probed',
      async () => {
        const text = await ipferry(['node', 'show', 'home']);
        return /of gw → home.*handshake/.test(text) && /path: answers/.test(text) && text;
      },
      15_000,
    );
    assert.match(shown, /alive:\s+- \(no agent\)/);
  });

  it('the routed FIP serves the client, whose address home sees', async () => {
    const reply = await answer(FIP, SERVICE_PORT);
    assert.deepEqual(reply, { name: 'home', address: H.client.v4 });
  });

  it("the forward on the VM's own address reaches home's own address, client kept", async () => {
    const reply = await answer(SHARED, SMTP);
    assert.deepEqual(reply, { name: 'home', address: H.client.v4 });
  });

  it("home's default route stays its ISP: its own connections leave from its own address", async () => {
    assert.equal(await defaultRoutes(), routesBefore);
    const client = far.servers.find((s) => s.host === 'client');
    assert.ok(client);
    assert.equal(await outboundProbe(lab(), 'home', client, H.client.v4), H.home.v4);
  });

  it('a change makes --check report stale; the new rendering brings it up', async () => {
    assert.equal((await ipferryResult([...renderArgs(), '--check', confPath()])).code, 0);
    await ipferry(['fip', 'allocate', '--address', FIP2]);
    await ipferry([
      'fip',
      'associate',
      FIP2,
      '--mode',
      'routed',
      '--node',
      'home',
      '--target',
      FIP2,
    ]);
    const stale = await ipferryResult([...renderArgs(), '--check', confPath()]);
    assert.equal(stale.code, 1, stale.err);
    assert.match(stale.out, /is stale/);
    assert.match(stale.err, new RegExp(`routed ${FIP2.replaceAll('.', '\\.')}`));

    await wgQuick('down');
    await stopHomeDaemons();
    await renderToFile();
    await wgQuick('up');
    await active(FIP2);
    assert.deepEqual(await answer(FIP2, SERVICE_PORT), { name: 'home', address: H.client.v4 });
    assert.deepEqual(await answer(FIP, SERVICE_PORT), { name: 'home', address: H.client.v4 });
    const current = await ipferryResult([...renderArgs(), '--check', confPath()]);
    assert.equal(current.code, 0, current.err);
    assert.match(current.out, /is current/);
    // The old daemon was stopped: one wireguard-go serves home's tunnel.
    const daemons = wireguardDaemons({ hosts: ['home'], ns: (h) => lab().ns(h) });
    assert.equal(daemons.filter((d) => d.name === far.iface).length, 1);
  });

  it('the FIPs follow what the gateway observes: UNREACHABLE once the host stops answering', async () => {
    await wgQuick('down');
    await stopHomeDaemons();
    assert.ok(far.api, 'the gateway agent is not running');
    const api = far.api;
    const f = await waitFor(
      `${FIP} UNREACHABLE`,
      async () => {
        const view = await api.getFip(FIP);
        return view.status.state === 'UNREACHABLE' && view;
      },
      30_000,
    );
    assert.match(f.status.message ?? '', /home/);
  });

  it("the FreeBSD rendering's wg(8) file is one that wg setconf takes as it is", async () => {
    const bundle = await ipferry(['node', 'render', 'home', '--os', 'freebsd']);
    const file = join(tmp(), 'freebsd-wg0.conf');
    await writeFile(file, section(bundle, '/usr/local/etc/wireguard/wg0.conf'), { mode: 0o600 });
    // wg(8) reads the same file on Linux; an interface of its own (wireguard-go), not home's.
    await lab().exec('home', ['wireguard-go', far.spare]);
    await lab().exec('home', ['wg', 'setconf', far.spare, file]);
    const dump = (await lab().exec('home', ['wg', 'show', far.spare, 'dump'])).stdout;
    const gw = JSON.parse(await ipferry(['node', 'show', 'gw', '--json'])) as NodeListView;
    const peer = dump.split('\n')[1]?.split('\t') ?? [];
    assert.deepEqual(
      [peer[0], peer[2], peer[3], peer[7]],
      [gw.publicKey, `${SHARED}:${GW_TUNNEL_PORT}`, '0.0.0.0/0,::/0', '25'],
    );
  });
});
