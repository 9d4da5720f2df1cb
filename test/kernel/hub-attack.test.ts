/**
 * A joined node that lies, against a hub whose dataplane is a real kernel (issue 12, finding 1).
 * The hub agent runs here on SQLite with its Linux dataplane in a namespace made for the test;
 * node `zzz` joins with a join token that allows it its own address only (`--allow-addresses`),
 * registers honestly and gets its own overlay address, then sends what the security review
 * sent: its record naming the hub's overlay address, its alive key, and the hub's overlay lock,
 * in one transaction — and, separately, records whose addresses add an outsider's, the hub's
 * own, or an overlay address. Every attempt is refused, and the
 * hub's kernel still maps its overlay address to itself (`meshnat4`) and lets in only the
 * addresses the members really have (`meshmember4`).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { resolveConfig } from '../../src/agent/config.js';
import { type RunningAgent, startAgent } from '../../src/agent/run.js';
import { ApiClient } from '../../src/client/api-client.js';
import { IpferryError } from '../../src/core/errors.js';
import { keys, ROOT } from '../../src/core/keys.js';
import { run } from '../../src/dataplane/exec.js';
import { ControlPlane } from '../../src/service/control.js';
import { type HttpStore, joinHub, openHttpStore } from '../../src/store/http.js';
import type { Op } from '../../src/store/store.js';
import { tempDir, waitFor } from '../support/helpers.js';

const HUB_PUBLIC = '203.0.113.1';
const HUB_PRIVATE = '10.1.0.1';
const ZZZ = '198.51.100.9';
/** An address nobody in the fleet has: what the attacker wants let through every firewall. */
const OUTSIDER = '192.0.2.99';

const put = (key: string, value: unknown, lease?: string): Op => ({
  type: 'put',
  key,
  value: JSON.stringify(value),
  ...(lease ? { lease } : {}),
});

describe('a joined node that lies, against a hub on a real kernel', { timeout: 120_000 }, () => {
  const ns = `ipft-ha-${randomBytes(3).toString('hex')}`;
  let tmp: { dir: string; remove: () => Promise<void> };
  let hub: RunningAgent | undefined;
  let api: ApiClient;
  let node: HttpStore | undefined;
  /** The hub's store through its own route, with the admin token. */
  let admin: HttpStore;
  let hubOverlay: string;
  let zzzOverlay: string;
  let lease: string;

  /** The hub kernel's mesh, element by element. */
  async function kernelMesh(): Promise<{ nat: string; members: string }> {
    const list = async (what: string, name: string) =>
      (await run('ip', ['netns', 'exec', ns, 'nft', 'list', what, 'inet', 'ipferry', name])).stdout;
    return { nat: await list('map', 'meshnat4'), members: await list('set', 'meshmember4') };
  }

  /**
   * Waits until the hub has applied the desired state as it is now: the latest revision of a
   * record it follows. Not the store's own revision, which the agents' health reports and the
   * audit trail move on without giving the hub anything to apply.
   */
  async function applied(): Promise<void> {
    const { kvs } = await admin.list(ROOT);
    const revision = Math.max(0, ...kvs.map((kv) => kv.modRevision));
    await waitFor(
      `the hub realises revision ${revision}`,
      async () => ((await api.status()).dataplane.realisedRevision ?? 0) >= revision,
      20_000,
    );
  }

  before(async () => {
    tmp = await tempDir('hub-attack');
    await run('ip', ['netns', 'add', ns]);
    const inNs = (...args: string[]) => run('ip', ['-n', ns, ...args]);
    await inNs('link', 'set', 'lo', 'up');
    await inNs('link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth1');
    await inNs('address', 'add', `${HUB_PUBLIC}/24`, 'dev', 'eth0');
    await inNs('address', 'add', `${HUB_PRIVATE}/24`, 'dev', 'eth0');
    await inNs('link', 'set', 'eth0', 'up');
    await inNs('link', 'set', 'eth1', 'up');
    hub = await startAgent(
      resolveConfig(
        {},
        {
          node: 'hub',
          store: `sqlite:${join(tmp.dir, 'state.db')}`,
          listen: '127.0.0.1:0',
          tokenFile: join(tmp.dir, 'token'),
          netns: ns,
          resyncSeconds: 1,
          logLevel: 'silent',
        },
        'test',
      ),
    );
    const token = (await readFile(join(tmp.dir, 'token'), 'utf8')).trim().split(/\s+/).pop()!;
    api = new ApiClient({ server: hub.url, token });
    admin = await openHttpStore(hub.url, { credential: token });
    await hub.control.mesh.setPolicy({ overlay: '10.99.0.0/24', fleet: { rejectAll: true } });
    hubOverlay = (await hub.control.getNode('hub')).overlayIp!;
    assert.ok(hubOverlay, 'the hub has an overlay address');

    // zzz joins as any node would, registers, and stays alive under its own lease.
    const joinToken = (await api.createJoinToken({ allowAddresses: [ZZZ] })).token;
    const credential = await joinHub(hub.url, { token: joinToken, node: 'zzz' });
    node = await openHttpStore(hub.url, { credential });
    const registered = await new ControlPlane(node).registerNode({
      name: 'zzz',
      addresses: [ZZZ],
      reservedPorts: [],
    });
    zzzOverlay = registered.overlayIp!;
    lease = await node.grantLease(60);
    await node.txn({
      compare: [],
      success: [put(keys.nodeAlive('zzz'), { name: 'zzz', since: 'now' }, lease)],
    });
    await applied();
  });

  after(async () => {
    await node?.close();
    await admin?.close();
    await api?.close();
    await hub?.stop();
    await run('ip', ['netns', 'del', ns]).catch(() => undefined);
    await tmp?.remove();
  });

  it('maps each overlay address to its own node before any attack', async () => {
    const mesh = await kernelMesh();
    assert.match(mesh.nat, new RegExp(`${hubOverlay.replaceAll('.', '\\.')} : ${HUB_PRIVATE}`));
    assert.match(mesh.nat, new RegExp(`${zzzOverlay.replaceAll('.', '\\.')} : ${ZZZ}`));
    assert.match(mesh.members, new RegExp(ZZZ.replaceAll('.', '\\.')));
  });

  it('refuses the takeover of the hub’s overlay address; the kernel still maps it to the hub', async () => {
    const self = JSON.parse((await admin.get(keys.node('zzz')))!.value) as object;
    const lock = await admin.get(keys.overlay(hubOverlay));
    const current = await admin.get(keys.node('zzz'));
    const attack = {
      success: [
        put(keys.node('zzz'), { ...self, overlayIp: hubOverlay }),
        put(keys.nodeAlive('zzz'), { name: 'zzz', since: 'now' }, lease),
        put(keys.overlay(hubOverlay), { name: 'zzz' }),
      ],
    };
    for (const compare of [
      [],
      [
        {
          key: keys.node('zzz'),
          target: 'mod' as const,
          op: '=' as const,
          value: current!.modRevision,
        },
        {
          key: keys.overlay(hubOverlay),
          target: 'mod' as const,
          op: '=' as const,
          value: lock!.modRevision,
        },
      ],
    ]) {
      await assert.rejects(node!.txn({ compare, ...attack }), (e) => {
        assert.ok(e instanceof IpferryError && e.code === 'IPF_E_FORBIDDEN', String(e));
        return true;
      });
    }
    await applied();
    const mesh = await kernelMesh();
    assert.match(mesh.nat, new RegExp(`${hubOverlay.replaceAll('.', '\\.')} : ${HUB_PRIVATE}`));
    assert.doesNotMatch(mesh.nat, new RegExp(`${hubOverlay.replaceAll('.', '\\.')} : ${ZZZ}`));
  });

  it('refuses addresses that would widen the hub’s firewall; meshmember4 is unchanged', async () => {
    const before = (await kernelMesh()).members;
    const self = JSON.parse((await admin.get(keys.node('zzz')))!.value) as object;
    for (const addresses of [
      [ZZZ, OUTSIDER],
      [ZZZ, HUB_PUBLIC],
      [ZZZ, hubOverlay],
    ]) {
      await assert.rejects(
        node!.txn({ compare: [], success: [put(keys.node('zzz'), { ...self, addresses })] }),
        (e) => e instanceof IpferryError && e.code === 'IPF_E_FORBIDDEN',
      );
    }
    await applied();
    const after = (await kernelMesh()).members;
    assert.equal(after, before);
    assert.doesNotMatch(after, new RegExp(HUB_PUBLIC.replaceAll('.', '\\.')));
    assert.doesNotMatch(after, new RegExp(OUTSIDER.replaceAll('.', '\\.')));
    assert.doesNotMatch(after, /10\.99\.0\./);
  });
});
