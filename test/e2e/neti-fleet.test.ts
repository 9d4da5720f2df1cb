/**
 * A Neti configuration imported into a mesh policy, and enforced by the fleet lab: two sites of
 * two nodes (src/lab/scenarios.ts: fleet), an agent per node on etcd, the sites started as Neti's
 * sides (`--site ec2` for site a, `--site vpc` for site b). The policy goes in only as a Neti user
 * would put it: `ipferry import neti neti.yml --apply` with the built binary. Then real packets:
 *
 * - `reject_all: true`: the outsider is dropped on a port that is not open, members get in;
 * - `open_ports: [443]`: the outsider gets in there;
 * - `ssh_whitelist`: SSH from the admin's range gets in, SSH from the outsider does not;
 * - `nat_overrides`: the overridden address leads where the override says;
 * - the sides: a node reaches its own side by private address, the other side by public address;
 * - `ipferry mesh audit` with the host table of Neti's neti_util.py finds the host not in the mesh.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { LabAgents } from '../../src/lab/agents.js';
import { type EtcdCluster, startEtcd } from '../../src/lab/etcd.js';
import { echoProbe, startEchoServer } from '../../src/lab/probe.js';
import { FLEET, fleet, type FleetNode, fleetNodes } from '../../src/lab/scenarios.js';
import type { Lab } from '../../src/lab/topology.js';
import { ControlPlane } from '../../src/service/control.js';
import { openStore } from '../../src/store/open.js';
import type { Store } from '../../src/store/store.js';
import { BIN, ensureBuilt } from '../support/build.js';
import { tempDir, waitFor } from '../support/helpers.js';

const exec = promisify(execFile);

const PER_SITE = 2;
const NODES = fleetNodes({ perSite: PER_SITE });
const SIDE = { a: 'ec2', b: 'vpc' } as const;
const ECHO = 80;
const SSH = 22;
const OPEN = 443;
/** An overlay address the override sends to b2's public address, whoever holds it. */
const OVERRIDDEN = '192.168.63.200';
/** One outside the overlay, as Neti's own testing.yml has (192.168.75.1): sent to b1. */
const OUTSIDE = '192.168.75.1';
const ANSWER_MS = 3000;
const DROP_MS = 800;

const byName = (name: string): FleetNode => NODES.find((n) => n.name === name)!;

/** The Neti configuration, as Neti's users wrote it (ZooKeeper, AWS keys and all). */
const NETI_YML = `
aws_key: AKIAIOSFODNN7EXAMPLE
aws_secret_key: not-a-real-secret-0123456789
log_file: /var/log/neti.log
table_files_path: /var/lib/neti
open_ports:
  - ${OPEN}
reject_all: True
ssh_whitelist:
  - ${FLEET.admin.sshAllow}
zk_prefix: /neti
zk_update_interval_path: interval
zk_max_change_threshold_path: maxchange
zk_iptoid_node: ip-to-id
zk_idtoip_node: id-to-ip
zk_ip_map_node: ip-map
overlay_subnet: ${FLEET.overlay}
zk_hosts:
  ec2:
    - 10.21.34.65:2181
  vpc:
    - 10.21.159.3:2181
nat_overrides:
  ${OVERRIDDEN}: ${byName('b2').public}
  ${OUTSIDE}: ${byName('b1').public}
`;

let lab: Lab;
let etcd: EtcdCluster;
let tmp: { dir: string; remove: () => Promise<void> };
let agents: LabAgents;
let store: Store;
let control: ControlPlane;
let storeSpec: string;

/** The built CLI against a1's agent, with a1's token: exit code and output. */
async function ipferry(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const agent = agents.get('a1')!;
  const argv = ['--server', agent.url, '--token-file', agent.tokenFile, ...args];
  try {
    const { stdout, stderr } = await exec(BIN, argv, {
      env: { PATH: process.env.PATH ?? '', HOME: tmp.dir },
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

async function overlayOf(name: string): Promise<string> {
  const ip = (await control.getNode(name)).overlayIp;
  assert.ok(ip, `${name} has an overlay address`);
  return ip;
}

/** Who answers `address:port` from `from`, and which address it saw; undefined when dropped. */
function reach(from: string, address: string, port = ECHO, timeoutMs = ANSWER_MS) {
  return echoProbe(lab, from, 'tcp', address, port, timeoutMs);
}

before(
  async () => {
    await ensureBuilt();
    tmp = await tempDir('neti-fleet');
    [lab, etcd] = await Promise.all([fleet({ perSite: PER_SITE }), startEtcd()]);
    storeSpec = `etcd:${etcd.endpoints.join(',')}`;
    store = await openStore(storeSpec);
    control = new ControlPlane(store);
    agents = new LabAgents({ lab, dir: tmp.dir, extra: ['--probe-seconds', '60'] });
    await Promise.all(NODES.map((n) => startEchoServer(lab, n.name, { tcp: [ECHO, SSH, OPEN] })));
    await Promise.all(
      NODES.map((n) =>
        agents.start({ node: n.name, store: storeSpec, extra: ['--site', SIDE[n.site]] }),
      ),
    );
  },
  { timeout: 120_000 },
);

after(
  async () => {
    await agents?.teardown();
    await store?.close();
    await etcd?.stop();
    await lab?.destroy();
    await tmp?.remove();
  },
  { timeout: 60_000 },
);

describe(
  'a Neti configuration imported and enforced by the fleet lab',
  { timeout: 300_000 },
  () => {
    it('`ipferry import neti --apply` sets the policy and lists what it could not map', async () => {
      const file = join(tmp.dir, 'neti.yml');
      await writeFile(file, NETI_YML);
      const r = await ipferry(['import', 'neti', file, '--apply']);
      assert.equal(r.code, 0, r.err);
      assert.match(
        r.out,
        /^policy: +set .*: overlay 192\.168\.0\.0\/18, 2 site\(s\), 0 node layer\(s\)/,
      );
      assert.match(r.out, /\ncould not map \(11\):\n/);
      assert.ok(!r.out.includes('not-a-real-secret'), 'no value of an unmapped key is printed');
      const policy = (await control.mesh.view()).inForce;
      assert.deepEqual(policy?.fleet, {
        openPorts: [`tcp/${OPEN}`],
        sshAllow: [FLEET.admin.sshAllow],
        rejectAll: true,
        natOverrides: { [OVERRIDDEN]: byName('b2').public, [OUTSIDE]: byName('b1').public },
      });
      const names = NODES.map((n) => n.name);
      await waitFor(
        'every agent applied the imported policy',
        async () => {
          const audit = await control.mesh.audit();
          return audit.lagging.length === 0 && audit.rejectAll.on.length === names.length;
        },
        60_000,
      );
    });

    it('reject_all: a port that is not open drops the outsider; members get in', async () => {
      const a1 = byName('a1');
      assert.equal(
        await reach('outsider', a1.public, ECHO, DROP_MS),
        undefined,
        'outsider → a1:80',
      );
      assert.deepEqual(await reach('b1', a1.public), { name: 'a1', address: byName('b1').public });
      assert.deepEqual(await reach('a2', a1.private), {
        name: 'a1',
        address: byName('a2').private,
      });
    });

    it('open_ports: the outsider gets in on 443', async () => {
      for (const n of NODES) {
        assert.deepEqual(await reach('outsider', n.public, OPEN), {
          name: n.name,
          address: FLEET.outsider.v4,
        });
      }
    });

    it('ssh_whitelist: SSH from the admin range gets in, from the outsider not; the admin has only SSH', async () => {
      const b1 = byName('b1');
      assert.deepEqual(await reach('admin', b1.public, SSH), {
        name: 'b1',
        address: FLEET.admin.v4,
      });
      assert.equal(await reach('outsider', b1.public, SSH, DROP_MS), undefined, 'outsider → b1:22');
      assert.equal(await reach('admin', b1.public, ECHO, DROP_MS), undefined, 'admin → b1:80');
    });

    it('nat_overrides: the overridden address leads to b2', async () => {
      assert.deepEqual(await reach('a1', OVERRIDDEN), { name: 'b2', address: byName('a1').public });
    });

    it("the sides: a node's own side by private address, the other side by public address", async () => {
      const a1 = byName('a1');
      // A member's overlay address may be the overridden one: then the override wins, as in Neti.
      const via = async (name: string, address: string) =>
        (await overlayOf(name)) === OVERRIDDEN
          ? { name: 'b2', address: a1.public }
          : { name, address };
      assert.deepEqual(await reach('a1', await overlayOf('a2')), await via('a2', a1.private));
      assert.deepEqual(await reach('a1', await overlayOf('b1')), await via('b1', a1.public));
    });

    it("mesh audit with neti_util.py's host table finds the instance not in the mesh", async () => {
      const row = (name: string, pub: string, priv: string, vpc: boolean): string =>
        `${name.padEnd(12)}${pub.padEnd(20)}${priv.padEnd(20)}${'None'.padEnd(16)}${'None'.padEnd(16)}${vpc ? 'True' : 'False'}`;
      const table = [
        `${'Name'.padEnd(12)}${'Public IP'.padEnd(20)}${'Private IP'.padEnd(20)}${'Overlay IP'.padEnd(16)}${'Neti Version'.padEnd(16)}VPC?`,
        ...NODES.map((n) => row(n.name.toUpperCase(), n.public, n.private, n.site === 'b')),
        row('legacy-db', '198.51.100.99', '10.1.0.99', false),
        `${NODES.length + 1} total instances, ${NODES.length} instances in Neti (80%)`,
        '',
      ].join('\n');
      const file = join(tmp.dir, 'instances.txt');
      await writeFile(file, table);
      const r = await ipferry(['--json', 'mesh', 'audit', '--inventory', file]);
      assert.equal(r.code, 0, r.err);
      const audit = JSON.parse(r.out) as {
        unregistered: { name: string; site?: string }[];
        unlisted: string[];
      };
      assert.deepEqual(
        audit.unregistered.map((h) => [h.name, h.site]),
        [['legacy-db', 'ec2']],
      );
      assert.deepEqual(audit.unlisted, []);
    });
  },
);
