/**
 * The real binary against a real agent process on the SQLite store: what a user types, with
 * exit codes, restarts (kill -9), TLS with a CA file, and broken configuration. Every agent this
 * file starts is killed by its pid in `after`, also when a test fails.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { chmod, mkdir, readFile, rename, stat, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { ensureBuilt, BIN } from '../support/build.js';
import { tempDir, waitFor } from '../support/helpers.js';
import { freePort } from '../../src/lab/ports.js';
import { selfSignedCertificate } from '../../src/lab/certs.js';

const exec = promisify(execFile);

interface Result {
  code: number;
  out: string;
  err: string;
}

let tmp: { dir: string; remove: () => Promise<void> };
const agents = new Set<ChildProcess>();

async function ipferry(args: string[], env: Record<string, string> = {}): Promise<Result> {
  try {
    const { stdout, stderr } = await exec(BIN, args, {
      env: { PATH: process.env.PATH ?? '', HOME: tmp.dir, ...env },
      timeout: 30_000,
    });
    return { code: 0, out: stdout, err: stderr };
  } catch (e) {
    const x = e as { code?: number; stdout?: string; stderr?: string };
    return {
      code: typeof x.code === 'number' ? x.code : -1,
      out: x.stdout ?? '',
      err: x.stderr ?? '',
    };
  }
}

interface Agent {
  proc: ChildProcess;
  server: string;
  log: () => string;
}

/** Starts `ipferry agent` and waits until /healthz answers (or the process dies). */
async function startAgent(args: string[], scheme = 'http'): Promise<Agent> {
  const port = await freePort();
  const proc = spawn(
    BIN,
    [
      'agent',
      '--dataplane',
      'fake',
      '--listen',
      `127.0.0.1:${port}`,
      '--log-level',
      'warn',
      ...args,
    ],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  agents.add(proc);
  let output = '';
  proc.stdout?.on('data', (d: Buffer) => (output += d.toString()));
  proc.stderr?.on('data', (d: Buffer) => (output += d.toString()));
  const server = `${scheme}://127.0.0.1:${port}`;
  await waitFor(
    'agent to answer /healthz',
    async () => {
      if (proc.exitCode !== null) throw new Error(`agent exited ${proc.exitCode}: ${output}`);
      const probe = await ipferry([
        'version',
        '--json',
        '--server',
        server,
        '--ca-file',
        join(tmp.dir, 'ca.pem'),
      ]);
      // Any answer but "unreachable" (401 without a token included) means it is serving.
      const answer = JSON.parse(probe.out) as { agentError?: { code: string } };
      return answer.agentError?.code !== 'IPF_E_UNREACHABLE';
    },
    15_000,
  );
  return { proc, server, log: () => output };
}

async function kill(agent: Agent, signal: NodeJS.Signals): Promise<void> {
  const exited = new Promise((resolve) => agent.proc.once('exit', resolve));
  agent.proc.kill(signal);
  await exited;
  agents.delete(agent.proc);
}

before(async () => {
  await ensureBuilt();
  tmp = await tempDir('cli-e2e');
  // A throwaway self-signed certificate for 127.0.0.1, used as its own CA.
  const made = await selfSignedCertificate(tmp.dir, { ip: '127.0.0.1' });
  await rename(made.cert, join(tmp.dir, 'ca.pem'));
  await rename(made.key, join(tmp.dir, 'key.pem'));
});

after(async () => {
  for (const proc of agents) {
    proc.kill('SIGKILL');
  }
  await tmp.remove();
});

describe('ipferry CLI against a real agent (SQLite store)', () => {
  let agent: Agent;
  let env: Record<string, string>;
  const store = () => `sqlite:${join(tmp.dir, 'state.db')}`;
  const agentArgs = () => [
    '--node',
    'gw1',
    '--store',
    store(),
    '--token-file',
    join(tmp.dir, 'token'),
    '--resync-seconds',
    '1',
  ];

  before(async () => {
    agent = await startAgent(agentArgs());
    env = { IPFERRY_SERVER: agent.server, IPFERRY_TOKEN_FILE: join(tmp.dir, 'token') };
  });

  it('creates its token file 0600 and refuses requests without it', async () => {
    assert.equal((await stat(join(tmp.dir, 'token'))).mode & 0o777, 0o600);
    const r = await ipferry(['fip', 'list'], { IPFERRY_SERVER: agent.server });
    assert.equal(r.code, 1);
    assert.match(r.err, /IPF_E_UNAUTHORIZED/);
    assert.match(r.err, /hint: /);
    const token = (await readFile(join(tmp.dir, 'token'), 'utf8')).trim();
    assert.ok(!agent.log().includes(token), 'the token never appears in the agent log');
  });

  it('walks a FIP through pool → allocate → associate → list → release', async () => {
    let r = await ipferry(
      [
        'pool',
        'create',
        'public',
        '--gateway',
        'gw1',
        '--cidr',
        '203.0.113.0/28',
        '--shared',
        '192.0.2.2',
      ],
      env,
    );
    assert.equal(r.code, 0, r.err);
    r = await ipferry(
      ['fip', 'allocate', '--pool', 'public', '--address', '203.0.113.10', '--json'],
      env,
    );
    assert.equal(r.code, 0, r.err);
    assert.equal(JSON.parse(r.out).address, '203.0.113.10');
    r = await ipferry(['fip', 'associate', '203.0.113.10', '--target', '10.0.0.11'], env);
    assert.equal(r.code, 0, r.err);
    await waitFor('ACTIVE in fip list', async () => {
      const list = await ipferry(['fip', 'list', '--json'], env);
      return JSON.parse(list.out)[0]?.status.state === 'ACTIVE';
    });
    r = await ipferry(['fip', 'list'], env);
    assert.match(r.out, /^ADDRESS\s+POOL\s+MODE\s+TARGET/m);
    assert.match(r.out, /^203\.0\.113\.10\s+public\s+nat\s+10\.0\.0\.11\s.*ACTIVE/m);
    r = await ipferry(['fip', 'release', '203.0.113.10'], env);
    assert.equal(r.code, 1);
    assert.match(r.err, /IPF_E_FIP_STILL_ASSOCIATED/);
    r = await ipferry(['fip', 'release', '203.0.113.10', '--force'], env);
    assert.equal(r.code, 0, r.err);
  });

  it('refuses bad input with a code, exit 1, and changes nothing', async () => {
    const before = await ipferry(['fip', 'list', '--json'], env);
    for (const args of [
      ['fip', 'allocate', '--address', '010.1.1.1'],
      ['fip', 'allocate', '--address', '192.0.2.200'],
      ['fip', 'associate', '203.0.113.11', '--target', '10.0.0.1'],
      ['pool', 'create', 'again', '--gateway', 'gw1', '--cidr', '203.0.113.8/29'],
      ['pool', 'create', 'nogw', '--gateway', 'mars', '--cidr', '198.51.100.0/29'],
      ['forward', 'add', '192.0.2.2', '--proto', 'tcp', '--port', '80-70', '--target', '10.0.0.5'],
    ]) {
      const r = await ipferry(args, env);
      assert.equal(r.code, 1, `${args.join(' ')}: ${r.err}`);
      assert.match(r.err, /^error IPF_E_[A-Z_]+: /m, args.join(' '));
    }
    const usage = await ipferry(
      ['forward', 'add', '192.0.2.2', '--proto', 'sctp', '--port', '80', '--target', '10.0.0.5'],
      env,
    );
    assert.equal(usage.code, 2);
    assert.equal((await ipferry(['fip', 'list', '--json'], env)).out, before.out);
  });

  it('speaks IP Floater’s verbs', async () => {
    let r = await ipferry(['getip', '10.0.0.30'], env);
    assert.equal(r.code, 0, r.err);
    const fip = r.out.trim();
    assert.match(fip, /^203\.0\.113\.\d+$/);
    r = await ipferry(['redirect', '203.0.113.14', '10.0.0.31'], env);
    assert.equal(r.code, 0, r.err);
    r = await ipferry(['ippool'], env);
    assert.match(r.out, /public/);
    r = await ipferry(['releaseip', fip], env);
    assert.equal(r.code, 0, r.err);
  });

  it('keeps every FIP through kill -9 and a restart', async () => {
    await ipferry(['fip', 'allocate', '--address', '203.0.113.5'], env);
    await ipferry(['fip', 'associate', '203.0.113.5', '--target', '10.0.0.55'], env);
    await ipferry(['fip', 'allocate', '--address', '192.0.2.2'], env).then((r) =>
      assert.equal(r.code, 0, r.err),
    );
    await ipferry(
      [
        'forward',
        'add',
        '192.0.2.2',
        '--proto',
        'udp',
        '--port',
        '5000-5010',
        '--target-port',
        '6000',
        '--target',
        '10.0.0.56',
      ],
      env,
    ).then((r) => assert.equal(r.code, 0, r.err));
    const fipsOf = async (): Promise<unknown> =>
      (
        JSON.parse((await ipferry(['fip', 'list', '--json'], env)).out) as {
          address: string;
          association?: unknown;
          forwards: unknown;
          revision: number;
        }[]
      ).map((f) => [f.address, f.association, f.forwards, f.revision]);
    const before = await fipsOf();
    await kill(agent, 'SIGKILL');
    const down = await ipferry(['fip', 'list'], env);
    assert.equal(down.code, 3, 'an unreachable agent is exit 3');
    assert.match(down.err, /IPF_E_UNREACHABLE/);
    agent = await startAgent(agentArgs());
    env.IPFERRY_SERVER = agent.server;
    assert.deepEqual(await fipsOf(), before);
    const node = JSON.parse((await ipferry(['node', 'show', 'gw1', '--json'], env)).out) as {
      alive: boolean;
    };
    assert.equal(node.alive, true);
  });

  it('stops cleanly on SIGTERM', async () => {
    const exit = new Promise<number | null>((resolve) =>
      agent.proc.once('exit', (code) => resolve(code)),
    );
    agent.proc.kill('SIGTERM');
    assert.equal(await exit, 0);
    agents.delete(agent.proc);
  });
});

describe('TLS', () => {
  it('serves HTTPS with --tls-cert/--tls-key; the CLI verifies it with --ca-file', async () => {
    const agent = await startAgent(
      [
        '--node',
        'tls1',
        '--store',
        'sqlite::memory:',
        '--token-file',
        join(tmp.dir, 'tls-token'),
        '--tls-cert',
        join(tmp.dir, 'ca.pem'),
        '--tls-key',
        join(tmp.dir, 'key.pem'),
      ],
      'https',
    );
    const env = { IPFERRY_SERVER: agent.server, IPFERRY_TOKEN_FILE: join(tmp.dir, 'tls-token') };
    const ok = await ipferry(['node', 'list', '--ca-file', join(tmp.dir, 'ca.pem')], env);
    assert.equal(ok.code, 0, ok.err);
    assert.match(ok.out, /tls1/);
    const untrusted = await ipferry(['node', 'list'], env);
    assert.equal(untrusted.code, 3);
    assert.match(untrusted.err, /IPF_E_UNREACHABLE/);
    assert.match(untrusted.err, /ca-file/);
    await kill(agent, 'SIGTERM');
  });
});

describe('agent start-up refusals', () => {
  it('refuses a broken config file, an unknown key, a missing node and a readable token file', async () => {
    const bad = join(tmp.dir, 'bad.yaml');
    await writeFile(bad, 'node: [unclosed\n');
    let r = await ipferry(['agent', '--dataplane', 'fake', '--config', bad]);
    assert.equal(r.code, 1);
    assert.match(r.err, /IPF_E_CONFIG.*not valid YAML/);
    await writeFile(bad, 'node: gw9\nlisten: 127.0.0.1:0\nstroe: "sqlite::memory:"\n');
    r = await ipferry(['agent', '--dataplane', 'fake', '--config', bad]);
    assert.match(r.err, /IPF_E_CONFIG.*unknown option\(s\) stroe/);
    r = await ipferry([
      'agent',
      '--dataplane',
      'fake',
      '--store',
      'sqlite::memory:',
      '--listen',
      '127.0.0.1:0',
    ]);
    assert.match(r.err, /IPF_E_CONFIG: Configuration of the agent is invalid: node: is required/);
    r = await ipferry([
      'agent',
      '--dataplane',
      'fake',
      '--node',
      'x',
      '--store',
      'mysql://db',
      '--listen',
      '127.0.0.1:0',
      '--token-file',
      join(tmp.dir, 'token'),
    ]);
    assert.match(r.err, /IPF_E_CONFIG.*unknown store scheme/);
    const loose = join(tmp.dir, 'loose-token');
    await writeFile(loose, 'a-token-that-is-long-enough\n');
    await chmod(loose, 0o644);
    r = await ipferry([
      'agent',
      '--dataplane',
      'fake',
      '--node',
      'x',
      '--store',
      'sqlite::memory:',
      '--listen',
      '127.0.0.1:0',
      '--token-file',
      loose,
    ]);
    assert.equal(r.code, 1);
    assert.match(r.err, /IPF_E_SECRET_FILE.*readable by others/);
    assert.ok(!r.err.includes('a-token-that-is-long-enough'));
  });
  it('refuses a tunnel MTU the underlay cannot carry and an endpoint that does not parse', async () => {
    const base = [
      'agent',
      '--dataplane',
      'fake',
      '--node',
      'x',
      '--store',
      'sqlite::memory:',
      '--listen',
      '127.0.0.1:0',
      '--token-file',
      join(tmp.dir, 'mtu-token'),
    ];
    let r = await ipferry([...base, '--tunnel-mtu', '1480']);
    assert.equal(r.code, 1);
    assert.match(
      r.err,
      /^error IPF_E_CONFIG: Configuration on the command line is invalid: --tunnel-mtu: .*1480/m,
    );
    r = await ipferry([...base, '--underlay-mtu', '1380', '--tunnel-mtu', '1340']);
    assert.equal(r.code, 1, 'over a 1380-byte path WireGuard carries at most 1320');
    assert.match(r.err, /IPF_E_CONFIG.*--tunnel-mtu/);
    r = await ipferry([...base, '--endpoint', '2001:db8::1:51820']);
    assert.equal(r.code, 1);
    assert.match(r.err, /IPF_E_CONFIG.*--endpoint: /);
    r = await ipferry([...base, '--endpoint', 'gw.example:99999']);
    assert.match(r.err, /IPF_E_CONFIG.*--endpoint: /);
    // tinc over a 1500-byte IPv4 path carries at most 1445 (WireGuard 1440).
    r = await ipferry([...base, '--tunnel-driver', 'tinc', '--tunnel-mtu', '1446']);
    assert.equal(r.code, 1);
    assert.match(r.err, /IPF_E_CONFIG.*--tunnel-mtu: .*at most 1445 \(tinc adds 55 bytes\)/);
    r = await ipferry([...base, '--tunnel-driver', 'ipsec']);
    assert.equal(r.code, 2, r.err);
    assert.match(r.err, /--tunnel-driver.*wireguard, tinc/);
    r = await ipferry([...base, '--probe-seconds', '0']);
    assert.equal(r.code, 1);
    assert.match(r.err, /IPF_E_CONFIG.*--probe-seconds/);
  });

  it('refuses the Linux dataplane without its tools, naming the Debian package', async () => {
    // A PATH with node and ip but no nft: the agent must stop before touching anything.
    const bin = join(tmp.dir, 'bin-without-nft');
    await mkdir(bin, { recursive: true });
    await symlink(process.execPath, join(bin, 'node'));
    for (const tool of ['ip', 'sysctl', 'conntrack']) {
      const found = (
        await exec('sh', ['-c', `command -v ${tool}`], {
          env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' },
        })
      ).stdout.trim();
      await symlink(found, join(bin, tool));
    }
    const r = await exec(
      BIN,
      [
        'agent',
        '--node',
        'x',
        '--dataplane',
        'linux',
        '--netns',
        'ipft-never-created',
        '--store',
        'sqlite::memory:',
        '--listen',
        '127.0.0.1:0',
        '--token-file',
        join(tmp.dir, 'nft-token'),
      ],
      {
        env: { PATH: bin, HOME: tmp.dir },
      },
    ).then(
      () => ({ code: 0, err: '' }),
      (e: { code?: number; stderr?: string }) => ({ code: e.code ?? -1, err: e.stderr ?? '' }),
    );
    assert.equal(r.code, 1);
    assert.match(r.err, /IPF_E_KERNEL.*missing nft \(Debian package nftables\)/);
  });
});

describe('the fleet mesh against real agents (a hub on SQLite, a remote agent joined to it)', () => {
  let hub: Agent;
  let b1: Agent;
  let env: Record<string, string>;
  const file = (name: string): string => join(tmp.dir, 'mesh', name);

  before(async () => {
    await mkdir(file(''), { recursive: true, mode: 0o700 });
    hub = await startAgent([
      '--node',
      'hub1',
      '--site',
      'fra',
      '--store',
      `sqlite:${file('hub.db')}`,
      '--token-file',
      file('hub-token'),
      '--resync-seconds',
      '1',
    ]);
    env = { IPFERRY_SERVER: hub.server, IPFERRY_TOKEN_FILE: file('hub-token') };
    // b1 follows the hub's store over its API, as a backend in another site would.
    const token = await ipferry(
      ['node', 'join-token', 'create', '--node', 'b1', '--url', hub.server],
      env,
    );
    assert.equal(token.code, 0, token.err);
    await writeFile(file('b1.join'), token.out, { mode: 0o600 });
    b1 = await startAgent([
      '--node',
      'b1',
      '--site',
      'ams',
      '--store',
      hub.server,
      '--join-token-file',
      file('b1.join'),
      '--credential-file',
      file('b1-credential'),
      '--state-dir',
      file('b1-state'),
      '--token-file',
      file('b1-token'),
      '--resync-seconds',
      '1',
    ]);
  });

  const meshView = async (): Promise<{
    record?: { trial?: { deadline: string }; policy: { nodes: Record<string, object> } };
    inForce?: { nodes: Record<string, { rejectAll?: boolean }> };
  }> => {
    const r = await ipferry(['mesh', 'show', '--json'], env);
    assert.equal(r.code, 0, r.err);
    return JSON.parse(r.out) as never;
  };

  it('sets a policy from a YAML file; show prints it and every node gets an overlay address', async () => {
    await writeFile(
      file('mesh.yaml'),
      [
        'overlay: 192.168.0.0/18',
        'maxChange: 2',
        'fleet:',
        '  openPorts: [tcp/443, udp/8000-8010]',
        '  sshAllow: [192.0.2.0/24]',
        'sites:',
        '  fra: { lans: [10.1.0.0/16] }',
        '  ams: { lans: [10.2.0.0/16] }',
        '',
      ].join('\n'),
    );
    const set = await ipferry(['mesh', 'set', '--file', file('mesh.yaml')], env);
    assert.equal(set.code, 0, set.err);
    assert.match(
      set.out,
      /^policy: +set .*: overlay 192\.168\.0\.0\/18, 2 site\(s\), 0 node layer\(s\)$/m,
    );
    const show = await ipferry(['mesh', 'show'], env);
    assert.equal(show.code, 0, show.err);
    assert.match(show.out, /^trial: +none \(confirmed\)$/m);
    assert.match(show.out, /^rolled back: +no$/m);
    assert.match(show.out, /^fleet: +open tcp\/443 udp\/8000-8010; ssh 192\.0\.2\.0\/24$/m);
    assert.match(show.out, /^site ams: +lans 10\.2\.0\.0\/16$/m);
    const nodes = JSON.parse((await ipferry(['node', 'list', '--json'], env)).out) as {
      name: string;
      overlayIp?: string;
    }[];
    const overlays = nodes.map((n) => n.overlayIp ?? '');
    assert.deepEqual(nodes.map((n) => n.name).sort(), ['b1', 'hub1']);
    assert.ok(
      overlays.every((a) => /^192\.168\.\d+\.\d+$/.test(a)),
      overlays.join(' '),
    );
    assert.notEqual(overlays[0], overlays[1]);
    const list = await ipferry(['node', 'list'], env);
    assert.match(list.out, /^NAME +ALIVE +SITE +OVERLAY +ENDPOINT/m);
  });

  it('refuses a policy whose overlay overlaps a site LAN (exit 1, nothing changes)', async () => {
    const before = await meshView();
    await writeFile(
      file('overlap.yaml'),
      'overlay: 10.1.0.0/18\nsites:\n  fra: { lans: [10.1.0.0/16] }\n',
    );
    const r = await ipferry(['mesh', 'set', '--file', file('overlap.yaml')], env);
    assert.equal(r.code, 1);
    assert.match(
      r.err,
      /^error IPF_E_MESH_OVERLAP: The overlay 10\.1\.0\.0\/18 overlaps LAN 10\.1\.0\.0\/16 of site fra/m,
    );
    assert.deepEqual(await meshView(), before);
  });

  it('switches reject_all on one node as a trial, the agent applies it, and confirm keeps it', async () => {
    const r = await ipferry(['mesh', 'reject-all', 'b1', 'on', '--confirm-within', '5m'], env);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /^reject_all: +on for node b1$/m);
    assert.match(r.out, /^trial: +until \S+: `ipferry mesh confirm` keeps it/m);
    let view = await meshView();
    assert.ok(view.record?.trial, 'on trial');
    assert.equal(view.inForce?.nodes['b1']?.rejectAll, true);
    const deadline = Date.parse(view.record.trial.deadline);
    assert.ok(deadline > Date.now() + 200_000 && deadline <= Date.now() + 300_000, 'about 5 min');

    // b1's agent applies it and says so in its liveness record (refreshed every few seconds).
    await waitFor(
      'b1 to report reject_all on',
      async () => {
        const status = await ipferry(['mesh', 'status'], env);
        return /^b1 +ams +192\.168\.\S+ +yes +\d+ +on /m.test(status.out);
      },
      30_000,
    );

    const confirm = await ipferry(['mesh', 'confirm'], env);
    assert.equal(confirm.code, 0, confirm.err);
    assert.match(confirm.out, /^confirmed: +the policy on trial: it stays$/m);
    view = await meshView();
    assert.equal(view.record?.trial, undefined);
    assert.equal(view.inForce?.nodes['b1']?.rejectAll, true);
    const again = await ipferry(['mesh', 'confirm'], env);
    assert.match(again.out, /^confirmed: +nothing: no policy change was on trial$/m);
    assert.match(again.out, /^released: +nothing: no node reported a membership change held back/m);
  });

  it('audits against an inventory file; a line that does not parse is exit 1 with IPF_E_INVENTORY', async () => {
    await writeFile(
      file('hosts.txt'),
      ['# the fleet', 'hub1 10.1.0.1', 'b1 10.2.0.2', 'db-main 10.2.0.50 site=ams', ''].join('\n'),
    );
    const r = await ipferry(['mesh', 'audit', '--inventory', file('hosts.txt')], env);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /^overlay: +2 of 16382 addresses used \(192\.168\.0\.0\/18\)$/m);
    assert.match(
      r.out,
      /^unregistered hosts \(1\):\n {2}db-main {2}10\.2\.0\.50 {2}site=ams {2}\(line 4\)$/m,
    );
    assert.match(r.out, /^unlisted nodes \(0\):\n {2}none$/m);
    assert.match(r.out, /^reject_all on \(1\):\n {2}b1$/m);
    assert.match(r.out, /^reject_all off \(1\):\n {2}hub1$/m);
    const asJson = JSON.parse(
      (await ipferry(['mesh', 'audit', '--inventory', file('hosts.txt'), '--json'], env)).out,
    ) as { unregistered: { name: string }[] };
    assert.deepEqual(
      asJson.unregistered.map((h) => h.name),
      ['db-main'],
    );

    await writeFile(file('bad-hosts.txt'), 'hub1 10.1.0.1\nb1 10.2.0.300\n');
    const bad = await ipferry(['mesh', 'audit', '--inventory', file('bad-hosts.txt')], env);
    assert.equal(bad.code, 1);
    assert.equal(bad.out, '');
    assert.match(
      bad.err,
      /^error IPF_E_INVENTORY: \S+bad-hosts\.txt line 2: "10\.2\.0\.300" is not an IP address$/m,
    );
    assert.match(bad.err, /^hint: Write one host per line/m);
  });

  it('removes a node for good once its agent is gone; refuses one in use and an unknown one', async () => {
    const pool = await ipferry(
      ['pool', 'create', 'edge', '--gateway', 'hub1', '--cidr', '203.0.113.32/28'],
      env,
    );
    assert.equal(pool.code, 0, pool.err);
    let r = await ipferry(['node', 'remove', 'hub1'], env);
    assert.equal(r.code, 1);
    assert.match(r.err, /^error IPF_E_NODE_IN_USE: Node hub1 is still in use: pool edge\.$/m);
    r = await ipferry(['node', 'remove', 'nowhere'], env);
    assert.equal(r.code, 1);
    assert.match(r.err, /^error IPF_E_NODE_NOT_FOUND: /m);

    const { overlayIp } = JSON.parse(
      (await ipferry(['node', 'show', 'b1', '--json'], env)).out,
    ) as { overlayIp: string };
    // Gone for good: its agent stops first (else it would register the node again).
    await kill(b1, 'SIGTERM');
    r = await ipferry(['node', 'remove', 'b1'], env);
    assert.equal(r.code, 0, r.err);
    assert.match(
      r.out,
      new RegExp(
        `^removed node b1 \\(overlay address ${overlayIp.replace(/\./g, '\\.')} is free again\\)\napplied on hub1 in \\d+ ms\n$`,
      ),
    );
    const names = (
      JSON.parse((await ipferry(['node', 'list', '--json'], env)).out) as { name: string }[]
    ).map((n) => n.name);
    assert.deepEqual(names, ['hub1']);
    r = await ipferry(['node', 'show', 'b1'], env);
    assert.equal(r.code, 1);
    assert.match(r.err, /IPF_E_NODE_NOT_FOUND/);
  });
});
