/**
 * The namespace lab on the real kernel: gatewayLan() routes plainly (no NAT anywhere yet), the
 * probes and the echo server behave as documented, and nothing outlives a lab — not after
 * destroy(), not after a failed create, not after a crash (cleanupLabs) or a SIGTERM.
 * The root namespace is only read, never changed.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { IpferryError } from '../../src/core/errors.js';
import { run } from '../../src/dataplane/exec.js';
import { cleanupLabs, deleteNamespace, listNamespaces, randomPrefix } from '../../src/lab/netns.js';
import {
  echoProbe,
  outboundProbe,
  parseEchoReply,
  ping,
  startEchoServer,
  tcpProbe,
  udpProbe,
  type EchoServer,
} from '../../src/lab/probe.js';
import { alive } from '../../src/lab/procs.js';
import { GATEWAY_LAN as N, gatewayLan } from '../../src/lab/scenarios.js';
import { Lab, type LabSpec } from '../../src/lab/topology.js';

const TCP = 7000;
const UDP = 7001;

/** Every interface name any lab of this file used, checked against the root namespace at the end. */
const usedIfnames = new Set<string>();
let rootIpForward = '';

async function labNamespaces(prefix: string): Promise<string[]> {
  return (await listNamespaces()).filter((name) => name.startsWith(prefix));
}

async function rootIfnames(): Promise<string[]> {
  const { stdout } = await run('ip', ['-o', 'link', 'show']);
  // `2: eth0: <…>` or `5: veth1@if4: <…>`
  return stdout
    .split('\n')
    .map((line) => /^\d+: ([^:@]+)/.exec(line)?.[1])
    .filter((name): name is string => name !== undefined);
}

/** A two-host lab for the tests that do not need the whole gateway topology. */
function pair(prefix: string, address = '10.9.0.2/30'): LabSpec {
  return {
    prefix,
    hosts: [{ name: 'a' }, { name: 'b' }],
    links: [
      {
        a: { host: 'a', ifname: 'ab0', addresses: ['10.9.0.1/30'] },
        b: { host: 'b', ifname: 'ba0', addresses: [address] },
      },
    ],
  };
}

before(async () => {
  rootIpForward = await readFile('/proc/sys/net/ipv4/ip_forward', 'utf8');
});

describe('gatewayLan: plain routing, no NAT', { timeout: 60_000 }, () => {
  let lab: Lab | undefined;
  let onClient: EchoServer;
  let onBe1: EchoServer;

  before(async () => {
    lab = await Lab.create(gatewayLan());
    for (const name of lab.interfaceNames()) usedIfnames.add(name);
    [onClient, onBe1] = await Promise.all([
      startEchoServer(lab, 'client', { tcp: [TCP], udp: [UDP] }),
      startEchoServer(lab, 'be1', { tcp: [TCP], udp: [UDP] }),
    ]);
  });

  after(async () => {
    await lab?.destroy();
  });

  it('names every namespace <prefix><host> with a fresh ipft- prefix', () => {
    assert.match(lab!.prefix, /^ipft-[a-z0-9]{6}-$/);
    assert.deepEqual(lab!.hosts, ['client', 'up', 'gw', 'be1', 'be2', 'lanc']);
    assert.equal(lab!.ns('gw'), `${lab!.prefix}gw`);
    assert.throws(() => lab!.ns('nope'), IpferryError);
  });

  it('echo server answers `NAME <remote address>\\n` over TCP and UDP, IPv4 not v4-mapped', async () => {
    const tcp = await tcpProbe(lab!, 'lanc', N.be1.v4, TCP);
    const udp = await udpProbe(lab!, 'lanc', N.be1.v4, UDP);
    assert.equal(tcp, `be1 ${N.lanc.v4}\n`);
    assert.equal(udp, `be1 ${N.lanc.v4}\n`);
    assert.deepEqual(parseEchoReply(tcp), { name: 'be1', address: N.lanc.v4 });
    assert.equal(parseEchoReply('be1 10.0.0.50'), undefined);
    assert.equal(parseEchoReply(undefined), undefined);
  });

  it('lanc reaches be1 on the LAN over IPv6 too', async () => {
    assert.deepEqual(await echoProbe(lab!, 'lanc', 'tcp', N.be1.v6, TCP), {
      name: 'be1',
      address: N.lanc.v6,
    });
    assert.deepEqual(await echoProbe(lab!, 'lanc', 'udp', N.be1.v6, UDP), {
      name: 'be1',
      address: N.lanc.v6,
    });
  });

  it('be1 reaches the client through gw and up; the client sees 10.0.0.11 (no NAT)', async () => {
    assert.equal(await outboundProbe(lab!, 'be1', onClient, N.client.v4), N.be1.v4);
    assert.equal(
      await outboundProbe(lab!, 'be1', onClient, N.client.v4, { protocol: 'udp' }),
      N.be1.v4,
    );
  });

  it('be1 reaches the client over IPv6; the client sees fd00:10::11', async () => {
    assert.equal(await outboundProbe(lab!, 'be1', onClient, N.client.v6), N.be1.v6);
    assert.equal(
      await outboundProbe(lab!, 'be1', onClient, N.client.v6, { protocol: 'udp' }),
      N.be1.v6,
    );
  });

  it("the client pings gw's uplink (v4 and v6)", async () => {
    assert.equal(await ping(lab!, 'client', N.gw.uplink.v4), true);
    assert.equal(await ping(lab!, 'client', N.gw.uplink.v6), true);
  });

  it('gw has no nftables: the dataplane under test brings its own', async () => {
    const { stdout } = await lab!.exec('gw', ['nft', 'list', 'ruleset']);
    assert.equal(stdout.trim(), '');
  });

  it('a failed probe is undefined: refused (TCP RST, ICMP port unreachable) or timed out', async () => {
    assert.equal(await tcpProbe(lab!, 'be1', N.client.v4, 7999), undefined);
    assert.equal(await udpProbe(lab!, 'be1', N.client.v4, 7999), undefined);
    assert.equal(await tcpProbe(lab!, 'be1', N.client.v6, 7999), undefined);
    const started = Date.now();
    // Nobody holds 10.0.0.99: ARP fails, the probe gives up after its timeout.
    assert.equal(await tcpProbe(lab!, 'be1', '10.0.0.99', TCP, 500), undefined);
    assert.equal(await ping(lab!, 'be1', '10.0.0.99', 500), false);
    assert.ok(Date.now() - started < 5000);
  });

  it('a broken lab throws: unknown host, unknown echo-server port, wrong server', async () => {
    await assert.rejects(tcpProbe(lab!, 'nope', N.client.v4, TCP), IpferryError);
    await assert.rejects(
      outboundProbe(lab!, 'be1', { ...onClient, udp: [] }, N.client.v4, {
        protocol: 'udp',
      }),
      /no udp port/,
    );
    // be1's server answers where the caller expected the client's: a wiring mistake.
    await assert.rejects(outboundProbe(lab!, 'lanc', onClient, N.be1.v4), /be1 answered/);
  });

  it('spawn fails with the process stderr when the program never gets ready', async () => {
    await assert.rejects(startEchoServer(lab!, 'be1', { tcp: [TCP] }), /EADDRINUSE/);
    assert.equal(alive(onBe1.process.pid), true);
  });

  it('destroy stops the processes and deletes every namespace, twice is fine', async () => {
    const prefix = lab!.prefix;
    const pids = [onClient.process.pid, onBe1.process.pid];
    await lab!.destroy();
    await lab!.destroy();
    assert.deepEqual(await labNamespaces(prefix), []);
    for (const pid of pids) assert.equal(alive(pid), false, `pid ${pid} still alive`);
    await assert.rejects(lab!.spawn('client', ['sleep', '1']), /destroyed/);
  });
});

describe('labs leave nothing behind', { timeout: 60_000 }, () => {
  it('a create that fails halfway (invalid address) removes what it built', async () => {
    const prefix = randomPrefix();
    const spec = pair(prefix, '10.9.0.300/30');
    await assert.rejects(Lab.create(spec), (error: unknown) => {
      assert.ok(error instanceof IpferryError);
      assert.equal(error.code, 'IPF_E_DATAPLANE');
      assert.match(error.message, /10\.9\.0\.300/);
      return true;
    });
    assert.deepEqual(await labNamespaces(prefix), []);
  });

  it('an invalid spec is refused before anything is created', async () => {
    const prefix = randomPrefix();
    const longName = pair(prefix);
    await assert.rejects(
      Lab.create({
        ...longName,
        links: [{ a: { host: 'a', ifname: 'much-too-long-name' }, b: { host: 'b', ifname: 'b0' } }],
      }),
      /much-too-long-name/,
    );
    await assert.rejects(
      Lab.create({
        ...longName,
        links: [{ a: { host: 'a', ifname: 'a0' }, b: { host: 'c', ifname: 'c0' } }],
      }),
      /unknown host "c"/,
    );
    assert.deepEqual(await labNamespaces(prefix), []);
  });

  it('a probe in a lab whose namespace vanished throws instead of reporting a failed probe', async () => {
    const lab = await Lab.create(pair(randomPrefix()));
    try {
      for (const name of lab.interfaceNames()) usedIfnames.add(name);
      assert.equal(await ping(lab, 'a', '10.9.0.2'), true);
      await deleteNamespace(lab.ns('b'));
      await assert.rejects(ping(lab, 'b', '10.9.0.1'), /Cannot open network namespace/);
    } finally {
      await lab.destroy();
    }
    assert.deepEqual(await labNamespaces(lab.prefix), []);
  });

  /** Runs the fixture that builds a lab and never destroys it; resolves once the lab is up. */
  async function abandonedLab(prefix: string) {
    const fixture = fileURLToPath(new URL('../support/fixtures/lab-abandon.ts', import.meta.url));
    const child = spawn(process.execPath, ['--import', 'tsx', fixture, prefix], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const exited = new Promise<NodeJS.Signals | null>((resolve) =>
      child.once('exit', (_code, signal) => resolve(signal)),
    );
    let out = '';
    child.stdout.setEncoding('utf8');
    for await (const chunk of child.stdout) {
      out += String(chunk);
      if (out.includes('\n')) break;
    }
    const info = JSON.parse(out) as { namespaces: string[]; sleeper: number };
    usedIfnames.add('ab0').add('ba0');
    return { child, exited, ...info };
  }

  it('cleanupLabs sweeps the namespaces and processes of a crashed run', async () => {
    const prefix = randomPrefix();
    const run = await abandonedLab(prefix);
    try {
      run.child.kill('SIGKILL'); // no exit handler runs: the lab stays behind
      assert.equal(await run.exited, 'SIGKILL');
      assert.deepEqual((await labNamespaces(prefix)).sort(), [...run.namespaces].sort());
      assert.equal(alive(run.sleeper), true);
      assert.deepEqual((await cleanupLabs(prefix)).sort(), [...run.namespaces].sort());
      assert.deepEqual(await labNamespaces(prefix), []);
      assert.equal(alive(run.sleeper), false);
      assert.deepEqual(await cleanupLabs(prefix), []);
    } finally {
      run.child.kill('SIGKILL');
      await cleanupLabs(prefix);
    }
  });

  it('SIGTERM to a run deletes its labs synchronously before it dies', async () => {
    const prefix = randomPrefix();
    const run = await abandonedLab(prefix);
    try {
      run.child.kill('SIGTERM');
      assert.equal(await run.exited, 'SIGTERM');
      assert.deepEqual(await labNamespaces(prefix), []);
      assert.equal(alive(run.sleeper), false);
    } finally {
      run.child.kill('SIGKILL');
      await cleanupLabs(prefix);
    }
  });

  it('cleanupLabs refuses a prefix that would sweep everything', async () => {
    await assert.rejects(cleanupLabs(''), /too-short prefix/);
  });
});

describe('the root namespace', () => {
  it('has none of the interfaces the labs used, and its forwarding is unchanged', async () => {
    assert.ok(usedIfnames.size > 5);
    const leaked = (await rootIfnames()).filter((name) => usedIfnames.has(name));
    assert.deepEqual(leaked, []);
    assert.equal(await readFile('/proc/sys/net/ipv4/ip_forward', 'utf8'), rootIpForward);
  });
});
