/**
 * The WireGuard driver on a real kernel: the tunnel conformance suite between two lab hosts
 * joined by a veth (100.64.0.1/30 ↔ 100.64.0.2/30). This kernel has no WireGuard module, so
 * the tunnels run on wireguard-go; a kernel with the module runs the same suite on it.
 * Cleanup removes the tunnels, then the lab (its namespaces and every process inside them),
 * then any control socket a killed wireguard-go left, also when a test failed.
 */
import assert from 'node:assert/strict';
import { readdir, readFile, stat, unlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { IpferryError } from '../../src/core/errors.js';
import { type TunnelIntent, tunnelName } from '../../src/core/tunnel.js';
import { run } from '../../src/dataplane/exec.js';
import { generateKeyPair } from '../../src/dataplane/tunnel/keys.js';
import { WireGuardDriver } from '../../src/dataplane/tunnel/wireguard.js';
import { Lab } from '../../src/lab/topology.js';
import { WIREGUARD_SOCKETS, wireguardSocket } from '../../src/lab/wireguard.js';
import { tempDir, waitFor } from '../support/helpers.js';
import { tunnelConformance } from '../support/tunnel-conformance.js';
import { exists, tunnelLabFixture } from '../support/tunnel-lab.js';

/** Lab prefixes and tunnel names this file used, for the final check (other files run alongside). */
const usedPrefixes: string[] = [];
const usedNames: string[] = [];

/** Pids of wireguard-go processes serving `name`, anywhere on the machine. */
async function daemonsOf(name: string): Promise<string[]> {
  const { stdout } = await run('pgrep', ['-af', 'wireguard-go'], { tolerate: () => true });
  return stdout
    .split('\n')
    .filter((line) => line.trim().split(/\s+/).pop() === name)
    .map((line) => line.split(' ')[0] ?? '');
}

tunnelConformance('wireguard (two network namespaces)', () => {
  let salt = '';
  const names = (): string[] => [tunnelName('a', 'b', salt), tunnelName('b', 'a', salt)];
  return tunnelLabFixture('tunnel-wg', {
    kind: 'wireguard',
    can: { handshakes: true, counters: true, learnedEndpoints: true, peerNodes: false },
    peerKey: () => Promise.resolve(generateKeyPair().publicKey),
    driver: (lab, side, stateDir) => new WireGuardDriver({ netns: lab.ns(side), stateDir }),
    stateSubdir: 'wireguard',
    leftovers: async (_side, name) => {
      const left: string[] = [];
      for (const pid of await daemonsOf(name)) left.push(`wireguard-go ${pid}`);
      if (await exists(wireguardSocket(name))) left.push(`socket ${name}.sock`);
      return left;
    },
    onLab: (lab) => {
      salt = lab.prefix;
      usedPrefixes.push(lab.prefix);
      usedNames.push(...names());
    },
    afterDestroy: async () => {
      // A wireguard-go killed with its namespace leaves its socket behind.
      for (const name of names()) {
        if ((await daemonsOf(name)).length === 0) {
          await unlink(wireguardSocket(name)).catch(() => undefined);
        }
      }
    },
  });
});

describe('wireguard driver on a real kernel: crashes, collisions, secrets', () => {
  let lab: Lab | undefined;
  let state: Awaited<ReturnType<typeof tempDir>> | undefined;
  const logged: unknown[] = [];
  const log = {
    info: (obj: object, msg?: string) => logged.push({ obj, msg }),
    warn: () => undefined,
  };
  let x: WireGuardDriver;
  let y: WireGuardDriver;
  let name = '';
  const intent = (): TunnelIntent => ({
    name,
    listenPort: 51820,
    mtu: 1420,
    addresses: ['10.201.0.1/30'],
    peers: [{ publicKey: generateKeyPair().publicKey, allowedIps: ['10.201.0.2/32'] }],
  });

  before(async () => {
    state = await tempDir('tunnel-wg-crash');
    lab = await Lab.create({ hosts: [{ name: 'x' }, { name: 'y' }], links: [] });
    name = tunnelName('x', 'y', lab.prefix);
    usedPrefixes.push(lab.prefix);
    usedNames.push(name);
    x = new WireGuardDriver({ netns: lab.ns('x'), stateDir: join(state.dir, 'x'), log });
    y = new WireGuardDriver({ netns: lab.ns('y'), stateDir: join(state.dir, 'y'), log });
  });

  after(async () => {
    await x?.remove(name).catch(() => undefined);
    await lab?.destroy();
    if ((await daemonsOf(name)).length === 0) {
      await unlink(wireguardSocket(name)).catch(() => undefined);
    }
    await state?.remove();
  });

  it('detects without leaving its probe interface behind', async () => {
    assert.ok(['kernel', 'userspace'].includes(await x.detect()));
    const { stdout } = await run('ip', ['-n', lab!.ns('x'), '-j', 'link', 'show']);
    assert.doesNotMatch(stdout, /ipfprobe/);
  });

  it('restarts a tunnel whose wireguard-go was killed, clearing the socket it left', async (t) => {
    if ((await x.detect()) === 'kernel') return t.skip('kernel WireGuard has no daemon');
    await x.apply(intent());
    const pid = Number(await readFile(x.pidFile(name), 'utf8'));
    assert.deepEqual(await daemonsOf(name), [String(pid)]);
    process.kill(pid, 'SIGKILL');
    await waitFor('wireguard-go to die', async () => (await daemonsOf(name)).length === 0);
    assert.ok(await exists(x.socketFile(name)), 'SIGKILL left no socket: wireguard-go changed');
    assert.equal(await x.observe(name), undefined);
    const changes = await x.apply(intent());
    assert.equal(changes[0]?.kind, 'create');
    const again = Number(await readFile(x.pidFile(name), 'utf8'));
    assert.notEqual(again, pid);
    assert.deepEqual(await daemonsOf(name), [String(again)]);
    assert.equal((await x.observe(name))?.up, true);
  });

  it('refuses a name that wireguard-go serves from another namespace', async (t) => {
    if ((await x.detect()) === 'kernel') return t.skip('kernel interfaces are per namespace');
    await assert.rejects(y.apply(intent()), (e: unknown) => {
      assert.ok(e instanceof IpferryError && e.code === 'IPF_E_DATAPLANE');
      assert.match(e.message, /is taken on this machine/);
      return true;
    });
    assert.equal(await y.observe(name), undefined);
    assert.equal((await x.observe(name))?.up, true);
  });

  it('never logs the private key nor leaves it outside its 0600 file', async () => {
    const privateKey = (await readFile(x.keyFile, 'utf8')).trim();
    assert.equal((await stat(x.keyFile)).mode & 0o777, 0o600);
    assert.ok(logged.length > 0);
    assert.ok(!JSON.stringify(logged).includes(privateKey));
    for (const file of await readdir(dirname(x.keyFile))) {
      if (file === 'private.key') continue;
      const text = await readFile(join(dirname(x.keyFile), file), 'utf8');
      assert.ok(!text.includes(privateKey), file);
    }
  });

  it('removes a tunnel whose pid file is gone, stopping its wireguard-go all the same', async () => {
    await unlink(x.pidFile(name)).catch(() => undefined);
    assert.equal(await x.remove(name), true);
    assert.deepEqual(await daemonsOf(name), []);
    assert.equal(await exists(x.socketFile(name)), false);
    assert.equal(await x.observe(name), undefined);
  });
});

describe('wireguard driver: after the suites', () => {
  it('left no namespace, wireguard-go or socket of its own behind', async () => {
    // node:test runs a file's top-level suites one after another, after hooks included.
    assert.equal(usedPrefixes.length, 2);
    const { stdout } = await run('ip', ['netns', 'list']);
    const namespaces = stdout.split('\n').filter((l) => usedPrefixes.some((p) => l.startsWith(p)));
    assert.deepEqual(namespaces, []);
    const sockets = await readdir(WIREGUARD_SOCKETS).catch(() => []);
    assert.deepEqual(
      sockets.filter((s) => usedNames.some((n) => s === `${n}.sock`)),
      [],
    );
    // A process killed with its namespace may take a moment to be reaped.
    await waitFor('no wireguard-go of ours left', async () => {
      const left = await Promise.all(usedNames.map((n) => daemonsOf(n)));
      return left.flat().length === 0;
    });
  });
});
