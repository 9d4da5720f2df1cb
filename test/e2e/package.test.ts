/**
 * The Debian package, as built by `bash scripts/package.sh`: its control fields and contents,
 * its maintainer scripts (nothing starts the agent, nothing flushes), its unit through
 * `systemd-analyze verify`, its man page through groff — and the agent it installs, started from
 * the unpacked tree with the argv, environment and capabilities the unit gives, inside a lab's
 * gateway as on a gateway of its own, driven by the packaged CLI: a FIP goes ACTIVE and a packet
 * goes through it; stopped as systemd stops it, it leaves the kernel state in place.
 *
 * Nothing is installed on the host: the package is unpacked with `dpkg-deb -x` into a temporary
 * root, and the agent's state, store and token live in a temporary directory. The lab's
 * namespaces and the agent (by pid) are removed in `after`, also when a test fails.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import {
  copyFileSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { gunzipSync } from 'node:zlib';
import { tunnelName } from '../../src/core/tunnel.js';
import { echoProbe, startEchoServer } from '../../src/lab/probe.js';
import { GATEWAY_LAN as L, gatewayLan } from '../../src/lab/scenarios.js';
import { Lab, type LabProcess } from '../../src/lab/topology.js';
import { removeWireguardSockets } from '../../src/lab/wireguard.js';
import { VERSION } from '../../src/version.js';
import { tempDir, waitFor } from '../support/helpers.js';

const exec = promisify(execFile);
const REPO = new URL('../../', import.meta.url).pathname;
const UNIT = 'lib/systemd/system/ipferry-agent.service';
/** systemd's PATH for system services (systemd.exec(5), "Environment variables"). */
const SYSTEMD_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin';
const FIP = '203.0.113.10';

let tmp: { dir: string; remove: () => Promise<void> };
/** The package's files, unpacked. */
let root: string;
let deb: string;

before(async () => {
  tmp = await tempDir('package');
  const built = await exec('bash', [join(REPO, 'scripts/package.sh')], {
    env: { ...process.env, IPFERRY_PACKAGE_DIR: join(tmp.dir, 'out') },
    timeout: 600_000,
    maxBuffer: 64 * 1024 * 1024,
  });
  deb = built.stdout.trim().split('\n').at(-1)!;
  root = join(tmp.dir, 'root');
  await exec('dpkg-deb', ['-x', deb, root]);
});

after(async () => {
  await tmp?.remove();
});

/** Runs a command expected to fail; its exit code and stderr. */
async function failing(
  file: string,
  args: string[],
  env: NodeJS.ProcessEnv,
): Promise<{ code: number; stderr: string }> {
  try {
    await exec(file, args, { env });
  } catch (e) {
    return e as { code: number; stderr: string };
  }
  throw new Error(`${file} ${args.join(' ')} succeeded`);
}

async function field(name: string): Promise<string> {
  return (await exec('dpkg-deb', ['-f', deb, name])).stdout.trim();
}

/** A maintainer script's text, from the package's control archive. */
async function controlFile(name: string): Promise<string> {
  const dir = join(tmp.dir, 'control');
  await exec('dpkg-deb', ['-e', deb, dir]);
  return readFileSync(join(dir, name), 'utf8');
}

/** `Key=value` settings of the unit's [Service] section, in order (keys may repeat). */
function serviceSettings(unit: string): [string, string][] {
  const section = unit.split(/^\[Service\]$/m)[1]!.split(/^\[/m)[0]!;
  return section
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '' && !line.startsWith('#'))
    .map((line) => {
      const eq = line.indexOf('=');
      return [line.slice(0, eq), line.slice(eq + 1)];
    });
}

describe('the Debian package', () => {
  it('is named and described as dpkg expects: version, architecture, dependencies', async () => {
    const arch = (await exec('dpkg', ['--print-architecture'])).stdout.trim();
    assert.equal(deb.split('/').at(-1), `ipferry_${VERSION}_${arch}.deb`);
    assert.equal(await field('Package'), 'ipferry');
    assert.equal(await field('Version'), VERSION);
    // A native addon (better-sqlite3) is inside: the package is for this architecture.
    assert.equal(await field('Architecture'), arch);
    const depends = (await field('Depends')).split(/,\s*/);
    for (const pkg of ['nftables', 'iproute2', 'conntrack', 'wireguard-tools']) {
      assert.ok(depends.includes(pkg), `Depends ${pkg}`);
    }
    assert.ok(!depends.some((d) => d.startsWith('nodejs')), 'Debian 12 nodejs is too old');
    const recommends = (await field('Recommends')).split(/,\s*/);
    for (const pkg of ['wireguard-go', 'tinc']) assert.ok(recommends.includes(pkg), pkg);
    assert.match(await field('Installed-Size'), /^\d+$/);
  });

  it('holds the program, its production dependencies only, the unit, the config and docs', async () => {
    const files = [
      'usr/bin/ipferry',
      'usr/lib/ipferry/package.json',
      'usr/lib/ipferry/dist/cli/bin.js',
      'usr/lib/ipferry/node_modules/better-sqlite3/build/Release/better_sqlite3.node',
      'usr/lib/ipferry/node_modules/fastify/package.json',
      UNIT,
      'etc/ipferry/agent.yaml',
      'usr/share/man/man1/ipferry.1.gz',
      'usr/share/bash-completion/completions/ipferry',
      'usr/share/zsh/vendor-completions/_ipferry',
      'usr/share/fish/vendor_completions.d/ipferry.fish',
      'usr/share/doc/ipferry/operations.md',
    ];
    for (const file of files) assert.ok(statSync(join(root, file)).isFile(), file);
    assert.equal(statSync(join(root, 'usr/bin/ipferry')).mode & 0o777, 0o755);
    const modules = readdirSync(join(root, 'usr/lib/ipferry/node_modules'));
    for (const dev of ['typescript', 'tsx', 'eslint', 'prettier', 'playwright-core']) {
      assert.ok(!modules.includes(dev), `${dev} is a dev dependency`);
    }
    const listing = (await exec('dpkg-deb', ['-c', deb], { maxBuffer: 64 * 1024 * 1024 })).stdout;
    assert.ok(
      listing.split('\n').every((l) => l === '' || l.includes(' root/root ')),
      'every file owned by root',
    );
    assert.doesNotMatch(listing, / \.\/var\/lib\/ipferry/, 'the state directory is not dpkg’s');
    assert.equal((await controlFile('conffiles')).trim(), '/etc/ipferry/agent.yaml');
    assert.equal(
      readFileSync(join(root, 'usr/lib/ipferry/node-major'), 'utf8').trim(),
      process.versions.node.split('.')[0],
    );
  });

  it('its maintainer scripts never enable or start the agent, and never flush the kernel', async () => {
    for (const name of ['postinst', 'prerm', 'postrm']) {
      const text = await controlFile(name);
      await exec('sh', ['-n', join(tmp.dir, 'control', name)]);
      const code = text
        .split('\n')
        .filter((l) => !l.trim().startsWith('#'))
        .join('\n');
      assert.doesNotMatch(code, /systemctl\s+(enable|start|restart|reload-or-restart)\b/, name);
      assert.doesNotMatch(code, /\b(nft|ip|wg|conntrack|tc|sysctl)\s/, name);
      assert.doesNotMatch(code, /flush|\/var\/lib\/ipferry.*rm|rm .*\/var\/lib\/ipferry/, name);
    }
  });

  it('its unit passes systemd-analyze verify without a warning, and is hardened', async () => {
    // verify loads the unit's dependencies (sysinit.target, …) from the same root.
    for (const target of readdirSync('/lib/systemd/system').filter((f) => f.endsWith('.target'))) {
      copyFileSync(join('/lib/systemd/system', target), join(root, 'lib/systemd/system', target));
    }
    const verified = await exec('systemd-analyze', [
      'verify',
      '--man=no',
      `--root=${root}`,
      'ipferry-agent.service',
    ]);
    assert.equal(verified.stderr, '');
    const settings = new Map(serviceSettings(readFileSync(join(root, UNIT), 'utf8')));
    assert.equal(
      settings.get('ExecStart'),
      '/usr/bin/ipferry agent --config /etc/ipferry/agent.yaml',
    );
    assert.equal(settings.get('Restart'), 'on-failure');
    assert.equal(settings.get('KillMode'), 'process', 'tunnel daemons outlive the agent');
    assert.equal(settings.get('ProtectSystem'), 'strict');
    assert.equal(settings.get('StateDirectory'), 'ipferry');
    assert.equal(settings.get('StateDirectoryMode'), '0700');
    assert.equal(settings.get('ProtectKernelTunables'), 'no', '/proc/sys/net is written');
    assert.equal(settings.get('NoNewPrivileges'), 'yes');
    assert.equal(
      settings.get('CapabilityBoundingSet'),
      'CAP_NET_ADMIN CAP_NET_RAW CAP_NET_BIND_SERVICE',
    );
    assert.equal(settings.get('RestrictAddressFamilies'), 'AF_UNIX AF_INET AF_INET6 AF_NETLINK');
    assert.ok(!settings.has('ExecStop'), 'nothing runs on stop');
    assert.ok(!settings.has('ExecStopPost'), 'nothing runs after stop');
  });

  it('its man page, generated from the commands, renders without a warning', async () => {
    const page = gunzipSync(readFileSync(join(root, 'usr/share/man/man1/ipferry.1.gz'))).toString();
    for (const command of [
      'ipferry fip move',
      'ipferry tls init',
      'ipferry completion',
      'ipferry agent',
    ]) {
      assert.ok(page.includes(`.SS ${command.replaceAll('-', '\\-')}`), command);
    }
    const file = join(tmp.dir, 'ipferry.1');
    writeFileSync(file, page);
    const rendered = await exec('groff', ['-man', '-Tutf8', '-ww', '-z', file]);
    assert.equal(rendered.stderr, '');
  });

  it('its wrapper says clearly when no usable Node.js is found', async () => {
    const bin = join(root, 'usr/bin/ipferry');
    const missing = await failing(bin, ['--version'], {
      PATH: SYSTEMD_PATH,
      IPFERRY_NODE: join(tmp.dir, 'no-node'),
    });
    assert.equal(missing.code, 127);
    assert.match(missing.stderr, /Node\.js 20\.18 or newer is needed and none was found/);
    const old = join(tmp.dir, 'old-node');
    writeFileSync(old, '#!/bin/sh\necho v18.19.0\n', { mode: 0o755 });
    const tooOld = await failing(bin, ['--version'], { PATH: SYSTEMD_PATH, IPFERRY_NODE: old });
    assert.equal(tooOld.code, 127);
    assert.match(tooOld.stderr, /is Node\.js v18\.19\.0; ipferry needs 20\.18 or newer/);
    const ok = await exec(bin, ['--version'], {
      env: { PATH: SYSTEMD_PATH, IPFERRY_NODE: process.execPath },
    });
    assert.equal(ok.stdout.trim(), VERSION);
    // Another major than the package's SQLite addon was built for: the CLI runs, the agent not.
    const built = Number(process.versions.node.split('.')[0]);
    const other = join(tmp.dir, 'other-node');
    writeFileSync(other, `#!/bin/sh\necho v${built + 2}.0.0\n`, { mode: 0o755 });
    const otherMajor = await failing(bin, ['agent'], { PATH: SYSTEMD_PATH, IPFERRY_NODE: other });
    assert.equal(otherMajor.code, 127);
    assert.match(
      otherMajor.stderr,
      new RegExp(`built for Node\\.js ${built} and .* is Node\\.js ${built + 2}`),
    );
    const cliOnOther = await exec(bin, ['--version'], {
      env: { PATH: SYSTEMD_PATH, IPFERRY_NODE: other },
    });
    assert.equal(cliOnOther.stdout.trim(), `v${built + 2}.0.0`, 'the wrapper ran it');
  });
});

describe('the packaged agent, started as its unit starts it, serving a lab gateway', () => {
  let lab: Lab;
  let agent: LabProcess | undefined;
  let state: string;

  /** The packaged CLI, run on the gateway beside its agent, with the agent's token. */
  async function cli(...args: string[]): Promise<string> {
    const bin = join(root, 'usr/bin/ipferry');
    const env = ['env', '-i', `PATH=${SYSTEMD_PATH}`, `IPFERRY_TOKEN_FILE=${state}/api-token`];
    return (await lab.exec('gw', [...env, bin, ...args])).stdout;
  }

  before(async () => {
    lab = await Lab.create(gatewayLan());
    await startEchoServer(lab, 'be1', { tcp: [80] });
    state = join(tmp.dir, 'var-lib-ipferry');
    mkdirSync(state, { mode: 0o700 });
  });

  after(async () => {
    await agent?.stop(0);
    await lab?.destroy();
    // Its tunnel's name has no namespace salt: it runs as on a host of its own.
    await removeWireguardSockets([tunnelName('gw', 'gw')]);
  });

  it('serves: a FIP goes ACTIVE and a packet from outside goes through it', async () => {
    // The operator's part, /etc/ipferry/agent.yaml: only the paths are the test's own.
    writeFileSync(
      join(root, 'etc/ipferry/agent.yaml'),
      [
        'node: gw',
        `store: sqlite:${state}/ipferry.db`,
        `stateDir: ${state}`,
        `tokenFile: ${state}/api-token`,
        'resyncSeconds: 1',
        '',
      ].join('\n'),
    );
    const unit = serviceSettings(readFileSync(join(root, UNIT), 'utf8'));
    const setting = (key: string): string => new Map(unit).get(key)!;
    // ExecStart's words, its absolute paths taken inside the unpacked tree.
    const argv = setting('ExecStart')
      .split(/\s+/)
      .map((word) => (word.startsWith('/') ? join(root, word) : word));
    // What systemd gives the service: its PATH, the unit's Environment=, the directories' paths.
    const env: Record<string, string> = {
      PATH: SYSTEMD_PATH,
      STATE_DIRECTORY: state,
      RUNTIME_DIRECTORY: '/run/wireguard',
      ...Object.fromEntries(
        unit
          .filter(([key]) => key === 'Environment')
          .flatMap(([, value]) =>
            value.split(/\s+/).map((kv) => kv.split('=', 2) as [string, string]),
          ),
      ),
    };
    // Its capabilities, and no new privileges: the unit's sets, applied by setpriv(1). The
    // agent runs inside the gateway's namespace as it would on a gateway of its own (no --netns).
    const caps = setting('CapabilityBoundingSet')
      .split(/\s+/)
      .map((c) => `+${c.replace(/^CAP_/, '').toLowerCase()}`)
      .join(',');
    assert.equal(setting('NoNewPrivileges'), 'yes');
    agent = await lab.spawn(
      'gw',
      [
        'setpriv',
        `--bounding-set=-all,${caps}`,
        `--inh-caps=-all,${caps}`,
        `--ambient-caps=-all,${caps}`,
        '--no-new-privs',
        ...argv,
      ],
      { env },
    );
    let ended = false;
    void agent.exited.then(() => (ended = true));
    // It logs to stderr (the journal's); ready is when its API answers on the gateway.
    await waitFor(
      'the packaged agent answers',
      async () => {
        assert.ok(!ended, `the agent exited: ${agent!.stderr()}`);
        return cli('--json', 'status').then(
          () => true,
          () => false,
        );
      },
      30_000,
    );
    const status = readFileSync(`/proc/${agent.pid}/status`, 'utf8');
    assert.match(status, /^CapBnd:\s+0000000000003400$/m, 'NET_BIND_SERVICE, NET_ADMIN, NET_RAW');
    assert.match(status, /^NoNewPrivs:\s+1$/m);
    assert.equal(statSync(join(state, 'api-token')).mode & 0o777, 0o600);

    await cli('pool', 'create', 'public', '--gateway', 'gw', '--cidr', '203.0.113.0/28');
    await cli('fip', 'allocate', '--address', FIP);
    await cli('fip', 'associate', FIP, '--target', L.be1.v4, '--mode', 'nat');
    await waitFor(
      `${FIP} ACTIVE`,
      async () => {
        const fip = JSON.parse(await cli('--json', 'fip', 'show', FIP)) as {
          revision: number;
          status: { state: string; stale?: boolean; revision?: number };
        };
        return (
          fip.status.state === 'ACTIVE' && !fip.status.stale && fip.status.revision === fip.revision
        );
      },
      15_000,
    );
    assert.deepEqual(await echoProbe(lab, 'client', 'tcp', FIP, 80, 1500), {
      name: 'be1',
      address: L.client.v4,
    });
  });

  it('stopped as systemd stops it (SIGTERM to its pid), it leaves the kernel state in place', async () => {
    const nft = async (): Promise<string> =>
      (await lab.exec('gw', ['nft', '-s', 'list', 'table', 'inet', 'ipferry'])).stdout;
    const before = await nft();
    assert.match(before, new RegExp(FIP.replaceAll('.', '\\.')));
    await agent!.stop(20_000);
    assert.deepEqual(await agent!.exited, { code: 0, signal: null });
    assert.equal(await nft(), before);
    assert.deepEqual(await echoProbe(lab, 'client', 'tcp', FIP, 80, 1500), {
      name: 'be1',
      address: L.client.v4,
    });
  });
});
