/**
 * An IP Floater installation imported with the CLI binary, then forwarding real packets: a
 * configuration, pool file and SQLite database in IP Floater's own schema (a whole-address
 * redirection and a port redirection) written here, `ipferry import ipfloater` run against a
 * real agent on the lab's gateway, and the outside client reaching the backends through the same
 * public addresses and ports, its own address kept. Namespaces and the agent go in `after`.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import Database from 'better-sqlite3';
import type { ApiClient } from '../../src/client/api-client.js';
import { LabAgents } from '../../src/lab/agents.js';
import { freePort } from '../../src/lab/ports.js';
import { echoProbe, startEchoServer } from '../../src/lab/probe.js';
import { GATEWAY_LAN as L, gatewayLan } from '../../src/lab/scenarios.js';
import { Lab } from '../../src/lab/topology.js';
import { BIN, ensureBuilt } from '../support/build.js';
import { activeFip, tempDir } from '../support/helpers.js';

const WHOLE = '203.0.113.10';
const PORTS = '203.0.113.11';
const SPARE = '203.0.113.12';

let lab: Lab;
let tmp: { dir: string; remove: () => Promise<void> };
let agents: LabAgents;
let api: ApiClient;
let server: string;
/** Where the agent serves IP Floater's REST API (--ipfloater-rest). */
let rest: string;

async function ipferry(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  const tokenFile = agents.tokenFile('gw');
  try {
    const r = await promisify(execFile)(BIN, [
      '--server',
      server,
      '--token-file',
      tokenFile,
      ...args,
    ]);
    return { code: 0, out: r.stdout, err: r.stderr };
  } catch (e) {
    const x = e as { code?: number; stdout?: string; stderr?: string };
    return { code: x.code ?? -1, out: x.stdout ?? '', err: x.stderr ?? '' };
  }
}

/** IP Floater's files as an installation has them: its config, its pool file, its database. */
async function ipfloaterInstallation(dir: string): Promise<{ conf: string; db: string }> {
  const conf = join(dir, 'ipfloaterd.conf');
  const poolFile = join(dir, 'ippool.txt');
  const db = join(dir, 'ipfloater.db');
  await writeFile(
    conf,
    [
      '[IPFLOATER]',
      `IP_POOL = ${WHOLE}, ${PORTS}`,
      `IP_POOL_FILE = ${poolFile}`,
      'LISTEN_IP = 127.0.0.1',
      'LISTEN_PORT = 7000',
      'REST_IP = 127.0.0.1',
      'REST_PORT = 7003',
      `DB = sqlite://${db}`,
      // Host bits set, as IP Floater's own example writes its ranges.
      'PRIVATE_IP_RANGES = 10.0.0.1/24',
      'BLOCK_PUBLIC_IPS = True',
      '',
    ].join('\n'),
  );
  await writeFile(poolFile, `# spare\n${SPARE} 52:54:00:0a:0b:0c\n`);
  const sqlite = new Database(db);
  sqlite.exec(
    'create table if not exists endpoint (id, public_ip, public_port, private_ip, private_port, timestamp)',
  );
  const row = sqlite.prepare('insert into endpoint values (?, ?, ?, ?, ?, ?)');
  row.run('a1b2c3', WHOLE, 0, L.be1.v4, 0, 1700000000);
  row.run('d4e5f6', PORTS, 8080, L.be2.v4, 80, 1700000001);
  sqlite.close();
  return { conf, db };
}

before(async () => {
  await ensureBuilt();
  tmp = await tempDir('ipfl-import');
  lab = await Lab.create(gatewayLan());
  agents = new LabAgents({ lab, dir: tmp.dir });
  await startEchoServer(lab, 'be1', { tcp: [80] });
  await startEchoServer(lab, 'be2', { tcp: [80] });
  rest = `127.0.0.1:${await freePort()}`;
  let agent;
  ({ agent, api } = await agents.startHub('gw', { extra: ['--ipfloater-rest', rest] }));
  server = agent.url;
});

after(async () => {
  await agents?.teardown();
  await tmp?.remove();
});

describe("IP Floater's configuration imported and forwarding on a real kernel", () => {
  it('imports the pool and both redirections with the CLI', async () => {
    const { conf, db } = await ipfloaterInstallation(tmp.dir);
    const r = await ipferry('import', 'ipfloater', conf, '--gateway', 'gw', '--db', db);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /^pool ipfloater \(gateway gw\): created$/m);
    assert.match(r.out, new RegExp(`^  ${WHOLE} -> ${L.be1.v4} \\(nat\\): created$`, 'm'));
    assert.match(
      r.out,
      new RegExp(`^  ${PORTS}:8080 -> ${L.be2.v4}:80 \\(tcp forward\\): created$`, 'm'),
    );
    const pool = await api.getPool('ipfloater');
    assert.deepEqual(pool.targetRanges, ['10.0.0.0/24']);
    assert.ok(
      pool.entries.some(
        (e) => e.kind === 'address' && e.address === SPARE && e.mac === '52:54:00:0a:0b:0c',
      ),
    );
  });

  it('the whole-address redirection reaches backend 1 on any port, with the client’s address', async () => {
    await activeFip(api, WHOLE);
    assert.deepEqual(await echoProbe(lab, 'client', 'tcp', WHOLE, 80, 1500), {
      name: 'be1',
      address: L.client.v4,
    });
  });

  it('the port redirection reaches backend 2 on its port; other ports get nothing', async () => {
    await activeFip(api, PORTS);
    assert.deepEqual(await echoProbe(lab, 'client', 'tcp', PORTS, 8080, 1500), {
      name: 'be2',
      address: L.client.v4,
    });
    assert.equal(await echoProbe(lab, 'client', 'tcp', PORTS, 80, 800), undefined);
    assert.equal(await echoProbe(lab, 'client', 'tcp', SPARE, 80, 800), undefined);
  });

  it("IP Floater's REST API shows the imported redirections as IP Floater showed them", async () => {
    const get = async (path: string): Promise<unknown> =>
      (await fetch(`http://${rest}${path}`, { signal: AbortSignal.timeout(5000) })).json();
    const endpoint = (e: unknown) => {
      const x = e as Record<string, unknown>;
      return [x['public_ip'], x['public_port'], x['private_ip'], x['private_port']];
    };
    const whole = (await get(`/public/${WHOLE}`)) as Record<string, unknown>;
    assert.deepEqual(Object.keys(whole), ['0']);
    assert.deepEqual(endpoint(whole['0']), [WHOLE, 0, L.be1.v4, 0]);
    const ports = (await get(`/public/${PORTS}`)) as Record<string, unknown>;
    assert.deepEqual(Object.keys(ports), ['8080']);
    assert.deepEqual(endpoint(ports['8080']), [PORTS, 8080, L.be2.v4, 80]);
  });

  it('running the import again changes nothing, and the traffic keeps flowing', async () => {
    const before = await api.listFips();
    const { conf, db } = {
      conf: join(tmp.dir, 'ipfloaterd.conf'),
      db: join(tmp.dir, 'ipfloater.db'),
    };
    const r = await ipferry('import', 'ipfloater', conf, '--gateway', 'gw', '--db', db);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /^nothing to change: everything was imported already$/m);
    assert.deepEqual(
      (await api.listFips()).map((f) => [f.address, f.revision]),
      before.map((f) => [f.address, f.revision]),
    );
    assert.deepEqual(await echoProbe(lab, 'client', 'tcp', PORTS, 8080, 1500), {
      name: 'be2',
      address: L.client.v4,
    });
  });
});
