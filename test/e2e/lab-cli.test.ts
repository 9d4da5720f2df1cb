/**
 * `ipferry lab` through the real binary: every scenario goes up, shows in `lab list`, answers a
 * probe with the right host and the prober's address, and goes down without a trace (no
 * namespace, no process, no state file). A `lab up` killed halfway and namespaces without a
 * state file are removed by `lab down NAME` and `lab down --all`. Agents: a gateway agent on the
 * LAN forwards a floating IP set with the CLI and a port of its own address (the pool it made
 * shares that address), where a service that is no echo server answers the probe; a cloud VM
 * delivers a routed FIP to a home server that answers it over TCP and UDP, and a UDP port of its
 * own address; a fleet on etcd gives overlay addresses.
 *
 * Everything runs under a namespace base and a state directory of this file's own
 * (IPFERRY_LAB_PREFIX, IPFERRY_LAB_DIR), so `lab down --all` here never touches a lab of a
 * person or another test; `after` sweeps that base whatever happened.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import {
  isRunning,
  type LabState,
  type LabSummary,
  type ProbeResult,
  strayProcesses,
} from '../../src/lab/labs.js';
import { cleanupLabs, listNamespaces } from '../../src/lab/netns.js';
import { wireguardSocket } from '../../src/lab/wireguard.js';
import { BIN, ensureBuilt } from '../support/build.js';
import { tempDir, waitFor } from '../support/helpers.js';

const exec = promisify(execFile);

let tmp: { dir: string; remove: () => Promise<void> };
/** This file's own namespace base: `ipfl` and six random characters, then `-`. */
const BASE = `ipfl${[...randomBytes(6)].map((b) => 'abcdefghijklmnopqrstuvwxyz0123456789'[b % 36]).join('')}-`;

interface Result {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

function env(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return { ...process.env, IPFERRY_LAB_PREFIX: BASE, IPFERRY_LAB_DIR: tmp.dir, ...extra };
}

async function ipferry(args: string[], extra: Record<string, string> = {}): Promise<Result> {
  try {
    const { stdout, stderr } = await exec(BIN, args, { env: env(extra), timeout: 120_000 });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code?: number; stdout?: string; stderr?: string };
    return { code: err.code ?? -1, stdout: err.stdout ?? '', stderr: err.stderr ?? '' };
  }
}

/** Runs a command that must succeed and parses its --json output. */
async function json<T>(args: string[], extra: Record<string, string> = {}): Promise<T> {
  const r = await ipferry([...args, '--json'], extra);
  assert.equal(r.code, 0, `ipferry ${args.join(' ')} failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as T;
}

function statePath(name: string): string {
  return `${tmp.dir}/${name}.json`;
}

function readState(name: string): LabState | undefined {
  try {
    return JSON.parse(readFileSync(statePath(name), 'utf8')) as LabState;
  } catch {
    return undefined;
  }
}

async function namespacesOf(name: string): Promise<string[]> {
  return (await listNamespaces()).filter((ns) => ns.startsWith(`${BASE}${name}-`));
}

/** `lab down NAME` and nothing of the lab left: namespaces, processes, state, sockets. */
async function downAndGone(name: string, args: string[] = [name]): Promise<void> {
  const state = readState(name);
  const r = await ipferry(['lab', 'down', ...args]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, new RegExp(`^lab ${name} removed: `, 'm'));
  assert.deepEqual(await namespacesOf(name), []);
  assert.equal(existsSync(statePath(name)), false, 'state file removed');
  assert.equal(existsSync(`${tmp.dir}/${name}`), false, 'lab directory removed');
  for (const p of state?.processes ?? []) {
    assert.equal(isRunning(p), false, `${p.kind} ${p.name} (pid ${p.pid}) stopped`);
  }
  assert.deepEqual(strayProcesses(`${BASE}${name}-`, `${tmp.dir}/${name}`), []);
  for (const t of state?.tunnels ?? []) {
    assert.equal(existsSync(wireguardSocket(t)), false, `socket ${t} removed`);
  }
  const list = await json<LabSummary[]>(['lab', 'list']);
  assert.equal(
    list.find((l) => l.name === name),
    undefined,
  );
}

async function probe(name: string, args: string[]): Promise<ProbeResult> {
  return json<ProbeResult>(['lab', 'probe', name, ...args]);
}

/** Runs a command that must succeed (exit 0). */
async function ok(args: string[], extra: Record<string, string> = {}): Promise<Result> {
  const r = await ipferry(args, extra);
  assert.equal(r.code, 0, `ipferry ${args.join(' ')} failed: ${r.stderr}`);
  return r;
}

/**
 * A service that is no echo server, in a host of a lab: socat answering each connection or
 * datagram with `reply` (or, without one, accepting connections and sending nothing).
 */
function service(lab: string, host: string, listen: string, reply?: string): () => void {
  const child = spawn(
    'ip',
    [
      'netns',
      'exec',
      `${BASE}${lab}-${host}`,
      'socat',
      listen,
      `SYSTEM:${reply ? `echo ${reply}` : 'sleep 3'}`,
    ],
    { stdio: 'ignore' },
  );
  return () => child.kill();
}

/** A probe that may get no answer (exit 1, the result still on stdout). */
async function tryProbe(name: string, args: string[]): Promise<ProbeResult | undefined> {
  const r = await ipferry(['lab', 'probe', name, ...args, '--json']);
  return r.code === 0 || r.code === 1 ? (JSON.parse(r.stdout) as ProbeResult) : undefined;
}

before(async () => {
  await ensureBuilt();
  tmp = await tempDir('lab-cli');
});

after(async () => {
  // Whatever a failed test left: the CLI's own sweep first, then the namespaces by base.
  if (tmp) await ipferry(['lab', 'down', '--all']);
  await cleanupLabs(BASE);
  await tmp?.remove();
});

interface Case {
  readonly scenario: string;
  readonly name: string;
  readonly args?: readonly string[];
  readonly hosts: number;
  readonly probes: readonly {
    readonly args: readonly string[];
    readonly answeredBy: string;
    readonly saw: string;
  }[];
}

const CASES: readonly Case[] = [
  {
    scenario: 'lan',
    name: 'lan',
    hosts: 6,
    probes: [
      { args: ['client', 'be1'], answeredBy: 'be1', saw: '198.51.100.9' },
      { args: ['be1', 'client', '--udp'], answeredBy: 'client', saw: '10.0.0.11' },
    ],
  },
  {
    scenario: 'cloud-home',
    name: 'cloudhome',
    hosts: 5,
    probes: [{ args: ['client', 'home'], answeredBy: 'home', saw: '198.51.100.9' }],
  },
  {
    scenario: 'old-new',
    name: 'oldnew',
    hosts: 5,
    probes: [
      // The old server's public address, by host name and by address, TCP and UDP.
      { args: ['client', 'old'], answeredBy: 'old', saw: '198.51.100.9' },
      { args: ['client', '203.0.113.10', '--udp'], answeredBy: 'old', saw: '198.51.100.9' },
      { args: ['client', 'new'], answeredBy: 'new', saw: '198.51.100.9' },
    ],
  },
  {
    scenario: 'fleet',
    name: 'fleet',
    args: ['--per-site', '1'],
    // router, outsider, admin, a1, b1
    hosts: 5,
    probes: [{ args: ['a1', 'b1'], answeredBy: 'b1', saw: '198.51.100.11' }],
  },
];

describe('ipferry lab: every scenario up, listed, probed, down', { timeout: 180_000 }, () => {
  for (const c of CASES) {
    it(`${c.scenario}`, async () => {
      const up = await json<LabState>(['lab', 'up', c.scenario, ...(c.args ?? [])]);
      assert.equal(up.name, c.name);
      assert.equal(up.status, 'ready');
      assert.equal(up.hosts.length, c.hosts);
      assert.deepEqual(
        (await namespacesOf(c.name)).sort(),
        up.hosts.map((h) => `${BASE}${c.name}-${h.name}`).sort(),
      );
      const listed = (await json<LabSummary[]>(['lab', 'list'])).find((l) => l.name === c.name);
      assert.equal(listed?.condition, 'up');
      assert.deepEqual(listed.namespaces, { present: c.hosts, expected: c.hosts, missing: [] });
      assert.equal(listed.processes?.running, up.echo.hosts.length);
      for (const p of c.probes) {
        const r = await probe(c.name, [...p.args]);
        assert.equal(r.answered, 1, `probe ${p.args.join(' ')}`);
        assert.deepEqual(
          { by: r.attempts[0]?.answeredBy, saw: r.attempts[0]?.sawAddress },
          { by: p.answeredBy, saw: p.saw },
          `probe ${p.args.join(' ')}`,
        );
      }
      // The human output says how to enter a host.
      const shown = await ipferry(['lab', 'show', c.name]);
      assert.match(shown.stdout, new RegExp(`ip netns exec ${BASE}${c.name}-HOST bash`));
      await downAndGone(c.name);
    });
  }
});

describe('ipferry lab: errors', () => {
  it('an unknown scenario is a usage error (exit 2)', async () => {
    const r = await ipferry(['lab', 'up', 'nowhere']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /^error IPF_E_USAGE: .*nowhere/m);
  });

  it('a flag of another scenario and a bad name are usage errors', async () => {
    assert.equal((await ipferry(['lab', 'up', 'lan', '--per-site', '2'])).code, 2);
    assert.equal((await ipferry(['lab', 'up', 'lan', '--name', 'a-b'])).code, 2);
    assert.equal((await ipferry(['lab', 'down'])).code, 2);
  });

  it('nothing answering is exit 1 with IPF_E_LAB_NO_ANSWER; an unknown lab IPF_E_LAB_NOT_FOUND', async () => {
    await json(['lab', 'up', 'lan', '--name', 'quiet']);
    try {
      const r = await ipferry(['lab', 'probe', 'quiet', 'client', '203.0.113.77']);
      assert.equal(r.code, 1);
      assert.match(r.stdout, /client → 203\.0\.113\.77 tcp\/80: no answer/);
      assert.match(r.stderr, /^error IPF_E_LAB_NO_ANSWER: /m);
      const twice = await ipferry(['lab', 'up', 'lan', '--name', 'quiet']);
      assert.equal(twice.code, 1);
      assert.match(twice.stderr, /^error IPF_E_LAB_EXISTS: Lab quiet exists already \(up\)/m);
    } finally {
      await downAndGone('quiet');
    }
    const gone = await ipferry(['lab', 'down', 'quiet']);
    assert.equal(gone.code, 1);
    assert.match(gone.stderr, /^error IPF_E_LAB_NOT_FOUND: /m);
  });

  it('without root it is IPF_E_KERNEL, exit 1, before anything is built', async (t) => {
    if (process.getuid?.() !== 0) return t.skip('needs root to drop to nobody');
    const r = await new Promise<Result>((resolve) => {
      execFile(
        'setpriv',
        [
          '--reuid=65534',
          '--regid=65534',
          '--clear-groups',
          process.execPath,
          BIN,
          'lab',
          'up',
          'lan',
          '--name',
          'noroot',
        ],
        { env: env() },
        (error, stdout, stderr) =>
          resolve({ code: error ? ((error as { code?: number }).code ?? -1) : 0, stdout, stderr }),
      );
    });
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /^error IPF_E_KERNEL: .*needs root/m);
    assert.deepEqual(await namespacesOf('noroot'), []);
  });
});

describe('ipferry lab: after a crash', { timeout: 120_000 }, () => {
  it('a `lab up` killed halfway (agents running) is listed as crashed and removed by `lab down NAME`', async () => {
    const child = spawn(BIN, ['lab', 'up', 'cloud-home', '--agents', '--name', 'killed'], {
      env: env(),
      stdio: 'ignore',
    });
    const exited = new Promise((resolve) => child.once('exit', resolve));
    // Killed once its first agent runs: namespaces, echo servers and an agent exist by then.
    await waitFor(
      'an agent recorded',
      () => Promise.resolve(readState('killed')?.processes.some((p) => p.kind === 'agent')),
      60_000,
    );
    child.kill('SIGKILL');
    await exited;
    const state = readState('killed');
    assert.equal(state?.status, 'building');
    assert.ok((await namespacesOf('killed')).length > 0, 'namespaces left behind');
    const agent = state.processes.find((p) => p.kind === 'agent');
    assert.ok(agent && isRunning(agent), 'the agent outlived its lab up');
    const listed = (await json<LabSummary[]>(['lab', 'list'])).find((l) => l.name === 'killed');
    assert.equal(listed?.condition, 'crashed');
    await downAndGone('killed');
  });

  it('namespaces without a state file (a process inside) are listed as orphan and removed by `lab down --all`', async () => {
    for (const host of ['client', 'gw']) {
      await exec('ip', ['netns', 'add', `${BASE}ghost-${host}`]);
    }
    const sleeper = spawn('ip', ['netns', 'exec', `${BASE}ghost-gw`, 'sleep', '300'], {
      stdio: 'ignore',
    });
    const exited = new Promise((resolve) => sleeper.once('exit', resolve));
    await waitFor('sleep started', async () => {
      const { stdout } = await exec('ip', ['netns', 'pids', `${BASE}ghost-gw`]);
      return stdout.trim() !== '';
    });
    const listed = (await json<LabSummary[]>(['lab', 'list'])).find((l) => l.name === 'ghost');
    assert.equal(listed?.condition, 'orphan');
    assert.equal(listed.namespaces.present, 2);
    const reports = await json<{ name: string; namespaces: string[] }[]>(['lab', 'down', '--all']);
    assert.deepEqual(
      reports.map((r) => [r.name, r.namespaces]),
      [['ghost', [`${BASE}ghost-client`, `${BASE}ghost-gw`]]],
    );
    await exited;
    assert.deepEqual(await namespacesOf('ghost'), []);
    assert.equal((await ipferry(['lab', 'list'])).stdout, 'no labs\n');
  });
});

describe('ipferry lab: with agents', { timeout: 180_000 }, () => {
  it('lan --agents: a floating IP set with the CLI forwards to be1, then to be2', async () => {
    const up = await json<LabState>(['lab', 'up', 'lan', '--agents', '--name', 'agents']);
    try {
      const gw = up.agents.find((a) => a.node === 'gw');
      assert.ok(gw);
      const api = { IPFERRY_SERVER: gw.url, IPFERRY_TOKEN_FILE: gw.tokenFile };
      assert.equal(
        (await ipferry(['fip', 'allocate', '--pool', 'public', '--address', '203.0.113.10'], api))
          .code,
        0,
      );
      for (const [target, backend] of [
        ['10.0.0.11', 'be1'],
        ['10.0.0.12', 'be2'],
      ] as const) {
        const verb = backend === 'be1' ? ['associate'] : ['move'];
        const r = await ipferry(['fip', ...verb, '203.0.113.10', '--target', target], api);
        assert.equal(r.code, 0, r.stderr);
        const reply = await waitFor(
          `${backend} answering on the FIP`,
          async () => {
            const p = await tryProbe('agents', ['client', '203.0.113.10']);
            return p?.attempts[0]?.answeredBy === backend && p.attempts[0];
          },
          20_000,
        );
        assert.equal(reply.sawAddress, '198.51.100.9');
      }
      // The banner names the pool the agents made: part of what is routed, and gw's own address.
      assert.deepEqual(up.agentPool, {
        name: 'public',
        gateway: 'gw',
        entries: ['203.0.113.0/28', '2001:db8:f::/64'],
        shared: ['192.0.2.2'],
      });
      const shown = (await ok(['lab', 'show', 'agents'])).stdout;
      assert.match(shown, /^routed: +203\.0\.113\.0\/24, 2001:db8:f::\/48 to gw$/m);
      assert.match(
        shown,
        /^pool: +public on gw: 203\.0\.113\.0\/28, 2001:db8:f::\/64, shared 192\.0\.2\.2$/m,
      );
      // docs/migration.md, LAN step 2: a port forward on the gateway's own address, to a mail
      // server on be1 that the probe reports for what it is.
      await ok(['fip', 'allocate', '--address', '192.0.2.2'], api);
      await ok(
        ['forward', 'add', '192.0.2.2', '--proto', 'tcp', '--port', '25', '--target', '10.0.0.11'],
        api,
      );
      const stopMail = service('agents', 'be1', 'TCP-LISTEN:25,fork,reuseaddr', '220 be1 ESMTP');
      const stopSilent = service('agents', 'be1', 'TCP-LISTEN:26,fork,reuseaddr');
      try {
        const mail = await waitFor(
          'the mail server answering on the forward',
          async () => {
            const p = await tryProbe('agents', ['client', '192.0.2.2', '--port', '25']);
            return p?.attempts[0]?.reply !== undefined && p;
          },
          20_000,
        );
        assert.deepEqual(
          mail.attempts.map((a) => a.reply),
          ['220 be1 ESMTP'],
        );
        assert.equal(mail.answered, 1);
        const text = await ok(['lab', 'probe', 'agents', 'client', '192.0.2.2', '--port', '25']);
        assert.match(
          text.stdout,
          /^client → 192\.0\.2\.2 tcp\/25: answered, not an echo server: "220 be1 ESMTP" \(/m,
        );
        const silent = await waitFor(
          'a silent service answering',
          async () => {
            const r = await ipferry(['lab', 'probe', 'agents', 'lanc', 'be1', '--port', '26']);
            return r.code === 0 && r;
          },
          10_000,
        );
        assert.match(silent.stdout, /: connected, nothing came back: not an echo server \(/);
      } finally {
        stopMail();
        stopSilent();
      }
    } finally {
      await downAndGone('agents');
    }
  });

  it('cloud-home --agents: a routed FIP answers TCP and UDP from home, a forward of the VM’s own address reaches home', async () => {
    const up = await json<LabState>(['lab', 'up', 'cloud-home', '--agents', '--name', 'vm']);
    try {
      const gw = up.agents.find((a) => a.node === 'gw');
      assert.ok(gw);
      const api = { IPFERRY_SERVER: gw.url, IPFERRY_TOKEN_FILE: gw.tokenFile };
      assert.deepEqual(up.agentPool?.shared, ['192.0.2.2']);
      // docs/migration.md, cloud-home step 4: a routed FIP. UDP too: home's echo server binds
      // the address once its agent puts it on the tunnel, and answers from it.
      await ok(['fip', 'allocate', '--address', '203.0.113.10'], api);
      await ok(
        [
          'fip',
          'associate',
          '203.0.113.10',
          '--mode',
          'routed',
          '--node',
          'home',
          '--target',
          '203.0.113.10',
        ],
        api,
      );
      for (const udp of [[], ['--udp']]) {
        const reply = await waitFor(
          `home answering on the routed FIP ${udp.join('')}`,
          async () => {
            const p = await tryProbe('vm', ['client', '203.0.113.10', ...udp]);
            return p?.attempts[0]?.answeredBy !== undefined && p.attempts[0];
          },
          30_000,
        );
        assert.deepEqual(
          { by: reply.answeredBy, saw: reply.sawAddress },
          { by: 'home', saw: '198.51.100.9' },
        );
      }
      // Step 3: a port of the VM's own address (the pool's shared one) forwarded to home.
      await ok(['fip', 'allocate', '--address', '192.0.2.2'], api);
      await ok(
        [
          'forward',
          'add',
          '192.0.2.2',
          '--proto',
          'udp',
          '--port',
          '53',
          '--target',
          '198.18.0.10',
          '--node',
          'home',
        ],
        api,
      );
      const stopDns = service('vm', 'home', 'UDP-RECVFROM:53,fork', 'dns-at-home');
      try {
        const dns = await waitFor(
          'home answering on the forwarded port',
          async () => {
            const p = await tryProbe('vm', ['client', '192.0.2.2', '--udp', '--port', '53']);
            return p?.attempts[0]?.reply !== undefined && p.attempts[0];
          },
          30_000,
        );
        assert.equal(dns.reply, 'dns-at-home');
      } finally {
        stopDns();
      }
    } finally {
      await downAndGone('vm');
    }
  });

  it('fleet --agents: etcd and an agent per node; a1 reaches b1 by its overlay address', async () => {
    const up = await json<LabState>([
      'lab',
      'up',
      'fleet',
      '--agents',
      '--per-site',
      '1',
      '--name',
      'mesh',
    ]);
    try {
      assert.deepEqual(up.agents.map((a) => a.node).sort(), ['a1', 'b1']);
      assert.ok(up.etcd, 'etcd recorded');
      const a1 = up.agents.find((a) => a.node === 'a1');
      assert.ok(a1);
      const api = { IPFERRY_SERVER: a1.url, IPFERRY_TOKEN_FILE: a1.tokenFile };
      const overlay = await waitFor(
        "b1's overlay address",
        async () => {
          const r = await ipferry(['node', 'show', 'b1', '--json'], api);
          return r.code === 0 ? (JSON.parse(r.stdout) as { overlayIp?: string }).overlayIp : '';
        },
        20_000,
      );
      const reply = await waitFor(
        'b1 answering on its overlay address',
        async () => {
          const attempt = (await tryProbe('mesh', ['a1', overlay]))?.attempts[0];
          return attempt?.answeredBy !== undefined && attempt;
        },
        20_000,
      );
      assert.deepEqual(
        { by: reply.answeredBy, saw: reply.sawAddress },
        { by: 'b1', saw: '198.51.100.11' },
      );
    } finally {
      await downAndGone('mesh');
    }
  });
});
