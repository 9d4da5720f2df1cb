/**
 * `ipferry import ipfloater`: IP Floater's configuration, pool file and SQLite database parsed
 * (its example configuration's settings too), bad input refused naming file and line with
 * nothing written, the import against a real API (an agent's, in process), run twice (the second
 * changes nothing), and a dry run.
 */
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { after, before, beforeEach, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import type { FastifyInstance } from 'fastify';
import { expandPath } from '../../src/cli/import-ipfloater.js';
import { main } from '../../src/cli/main.js';
import {
  agentFlags,
  notMapped,
  parseEndpoints,
  parseIpfloaterConfig,
  parsePoolFile,
} from '../../src/core/ipfloater-config.js';
import type { Store } from '../../src/store/store.js';
import { controlPlane, dumpStore, tempDir, TOKEN_RW, testApi } from '../support/helpers.js';

/** The settings of IP Floater's example etc/ipfloaterd.conf, its explanations left out. */
const EXAMPLE_CONF = `[IPFLOATER]
IP_POOL =
IP_POOL_FILE =
LISTEN_IP = 127.0.0.1
LISTEN_PORT = 7000
REST_IP = 127.0.0.1
REST_PORT = 7003
DB = sqlite:///var/lib/ipfloater.db
PRIVATE_IP_RANGES = 192.168.1.1/24
BLOCK_PUBLIC_IPS = True
`;

type Row = [string, string, number, string, number];

/** A database in IP Floater's schema (its endpoint table, as it creates it) with these rows. */
function ipfloaterDb(path: string, rows: readonly Row[]): void {
  const db = new Database(path);
  db.exec(
    'create table if not exists endpoint (id, public_ip, public_port, private_ip, private_port, timestamp)',
  );
  const insert = db.prepare('insert into endpoint values (?, ?, ?, ?, ?, ?)');
  for (const row of rows) insert.run(...row, 1700000000);
  db.close();
}

function problemsOf(e: unknown): string[] {
  return (e as { problems: { path: string; message: string }[] }).problems.map(
    (p) => `${p.path}: ${p.message}`,
  );
}

describe('IP Floater configuration', () => {
  it("reads its example configuration, and IP Floater's defaults for what it leaves out", () => {
    const c = parseIpfloaterConfig(EXAMPLE_CONF, 'ipfloaterd.conf');
    assert.deepEqual(c.ipPool, []);
    assert.equal(c.ipPoolFile, undefined);
    assert.deepEqual(c.privateRanges, ['192.168.1.0/24']);
    assert.equal(c.blockPublicIps, true);
    assert.deepEqual(c.xmlrpc, { host: '127.0.0.1', port: 7000 });
    assert.deepEqual(c.rest, { host: '127.0.0.1', port: 7003 });
    assert.deepEqual(c.db, { kind: 'sqlite', path: '/var/lib/ipfloater.db' });
    assert.deepEqual(agentFlags(c), [
      '--ipfloater-xmlrpc 127.0.0.1:7000',
      '--ipfloater-rest 127.0.0.1:7003',
    ]);
    const bare = parseIpfloaterConfig('[IPFLOATER]\n', 'c');
    assert.deepEqual(bare.rest, { host: '127.0.0.1', port: 7002 });
    assert.deepEqual(bare.db, { kind: 'sqlite', path: '/var/lib/ipfloater/ipfloater.db' });
  });

  it('takes keys in any case, comma lists with blanks, booleans as ConfigParser does, no REST without a port', () => {
    const c = parseIpfloaterConfig(
      [
        '; a comment',
        '[IPFLOATER]',
        'ip_pool = 203.0.113.1 , 203.0.113.2,2001:db8::5',
        'Private_IP_Ranges = 10.1.2.3/16, 192.168.7.9, 10.1.0.0/16',
        'BLOCK_PUBLIC_IPS = off',
        'REST_PORT = 0',
        'REMOVE_AT_BOOT = True',
        'COLOUR = blue',
        'DB = mysql://user@db/ipfloater',
      ].join('\n'),
      'c',
    );
    assert.deepEqual(
      c.ipPool.map((a) => a.text),
      ['203.0.113.1', '203.0.113.2', '2001:db8::5'],
    );
    assert.deepEqual(c.privateRanges, ['10.1.0.0/16', '192.168.7.9/32']);
    assert.equal(c.blockPublicIps, false);
    assert.equal(c.rest, undefined);
    assert.deepEqual(agentFlags(c), ['--ipfloater-xmlrpc 127.0.0.1:7000']);
    assert.deepEqual(notMapped(c, false), [
      'BLOCK_PUBLIC_IPS = False: ipferry always drops traffic to a public address or port it does not forward',
      'DB = mysql://user@db/ipfloater: only SQLite databases can be read; redirections not imported',
      'REMOVE_AT_BOOT: not used by IP Floater, ignored',
      'COLOUR: not used by IP Floater, ignored',
    ]);
  });

  it('refuses every bad setting at once, each with its file and line', () => {
    assert.throws(
      () =>
        parseIpfloaterConfig(
          [
            '[IPFLOATER]',
            'IP_POOL = 203.0.113.1, 203.0.113.300',
            'PRIVATE_IP_RANGES = 10.0.0.0/33',
            'LISTEN_PORT = seven',
            'BLOCK_PUBLIC_IPS = maybe',
          ].join('\n'),
          '/etc/default/ipfloaterd.conf',
        ),
      (e: unknown) => {
        assert.equal((e as { code: string }).code, 'IPF_E_CONFIG');
        assert.deepEqual(problemsOf(e), [
          '/etc/default/ipfloaterd.conf:2: IP_POOL: "203.0.113.300" is not an IP address',
          '/etc/default/ipfloaterd.conf:3: PRIVATE_IP_RANGES: "10.0.0.0/33" is not an address/length range',
          '/etc/default/ipfloaterd.conf:5: BLOCK_PUBLIC_IPS: "maybe" is not True or False',
          '/etc/default/ipfloaterd.conf:4: LISTEN_PORT: "seven" is not a port (1–65535)',
        ]);
        return true;
      },
    );
    assert.throws(() => parseIpfloaterConfig('[OTHER]\nA = 1\n', 'c'), /no \[IPFLOATER\] section/);
  });

  it('reads the pool file as its arp table does: comments, blanks, first MAC wins, repeats dropped', () => {
    const f = parsePoolFile(
      [
        '# public addresses',
        '203.0.113.1\t52:54:00:00:00:01   # web',
        '203.0.113.2',
        '',
        '203.0.113.2 52-54-00-00-00-02',
        '203.0.113.1 52:54:00:00:00:09',
        '203.0.113.3 52:54:00:00:00:01',
        '203.0.113.4 52:54:00:00:00:04 extra fields',
      ].join('\n'),
      'pool.txt',
    );
    assert.deepEqual(
      f.entries.map((e) => [e.address.text, e.mac ?? null]),
      [
        ['203.0.113.1', '52:54:00:00:00:01'],
        ['203.0.113.2', '52:54:00:00:00:02'],
        ['203.0.113.4', '52:54:00:00:00:04'],
      ],
    );
    assert.equal(f.dropped.length, 2);
    assert.match(f.dropped[0]!, /^pool\.txt:6: 203\.0\.113\.1 is already on line 2/);
    assert.match(
      f.dropped[1]!,
      /^pool\.txt:7: 52:54:00:00:00:01 is already the MAC of 203\.0\.113\.1/,
    );
    assert.throws(
      () => parsePoolFile('203.0.113.1\n203.0.113.x\n203.0.113.3 zz:zz\n', 'pool.txt'),
      (e: unknown) => {
        assert.deepEqual(problemsOf(e), [
          'pool.txt:2: "203.0.113.x" is not an IP address',
          'pool.txt:3: "zz:zz" is not a MAC address',
        ]);
        return true;
      },
    );
  });

  it('checks the endpoint rows as IP Floater loads them, naming each bad row', () => {
    const pool = new Set(['203.0.113.1', '203.0.113.2']);
    const row = (rowid: number, r: Partial<Row> = []) => {
      const [id, pub, pp, priv, vp] = [`e${rowid}`, '203.0.113.1', 0, '192.168.1.5', 0];
      return {
        rowid,
        id: r[0] ?? id,
        public_ip: r[1] ?? pub,
        public_port: r[2] ?? pp,
        private_ip: r[3] ?? priv,
        private_port: r[4] ?? vp,
      };
    };
    const ok = parseEndpoints(
      [row(1), row(2, [undefined, '203.0.113.2', 8080, '192.168.1.6', 80] as unknown as Row)],
      'db',
      pool,
      ['192.168.1.0/24'],
    );
    assert.deepEqual(ok, [
      { kind: 'nat', id: 'e1', publicIp: '203.0.113.1', privateIp: '192.168.1.5' },
      {
        kind: 'port',
        id: 'e2',
        publicIp: '203.0.113.2',
        publicPort: 8080,
        privateIp: '192.168.1.6',
        privatePort: 80,
      },
    ]);
    assert.throws(
      () =>
        parseEndpoints(
          [
            row(1),
            row(2, [undefined, '203.0.113.1', 22, '192.168.1.7', 22] as unknown as Row),
            row(3, [undefined, '203.0.113.9'] as unknown as Row),
            row(4, [undefined, '203.0.113.2', 80, '10.0.0.1', 80] as unknown as Row),
            row(5, [undefined, '203.0.113.2', 80, '192.168.1.8', 0] as unknown as Row),
            row(6, [undefined, '203.0.113.2', 'x', 'nope', 80] as unknown as Row),
          ],
          '/var/lib/ipfloater.db',
          pool,
          ['192.168.1.0/24'],
        ),
      (e: unknown) => {
        assert.deepEqual(problemsOf(e), [
          '/var/lib/ipfloater.db: row 2 (id e2): 203.0.113.1 port 22 is redirected by an earlier row',
          '/var/lib/ipfloater.db: row 3 (id e3): public_ip 203.0.113.9 is not in IP_POOL or the pool file',
          '/var/lib/ipfloater.db: row 4 (id e4): private_ip 10.0.0.1 is not in PRIVATE_IP_RANGES',
          '/var/lib/ipfloater.db: row 5 (id e5): one port is 0 and the other not: IP Floater redirects a whole address to a whole address, or a port to a port',
          '/var/lib/ipfloater.db: row 6 (id e6): private_ip "nope" is not an IP address',
          '/var/lib/ipfloater.db: row 6 (id e6): public_port "x" is not a port',
        ]);
        return true;
      },
    );
  });
});

describe('IP Floater paths', () => {
  it('expand $VAR, ${VAR} and a leading ~ as IP Floater does, and leave unknown variables', () => {
    const env = { A: '/srv', B: 'ipfl' };
    assert.equal(expandPath('$A/${B}/pool.txt', env), '/srv/ipfl/pool.txt');
    assert.equal(expandPath('$NOPE/pool.txt', env), '$NOPE/pool.txt');
    assert.equal(expandPath('~/pool.txt', env), `${homedir()}/pool.txt`);
    assert.equal(expandPath('/etc/~pool', env), '/etc/~pool');
  });
});

describe('ipferry import ipfloater', () => {
  let app: FastifyInstance;
  let store: Store;
  let close: () => Promise<void>;
  let server: string;
  let dir: string;
  let removeDir: () => Promise<void>;

  async function run(...args: string[]): Promise<{ code: number; out: string; err: string }> {
    let out = '';
    let err = '';
    const code = await main(
      ['node', 'ipferry', '--server', server, ...args],
      { out: (s) => (out += s), err: (s) => (err += s) },
      { IPFERRY_TOKEN: TOKEN_RW },
      { defaultTokenFile: '/nonexistent/ipferry-api-token', timeoutMs: 5000 },
    );
    return { code, out, err };
  }

  const conf = () => join(dir, 'ipfloaterd.conf');
  const poolFile = () => join(dir, 'pool.txt');
  const db = () => join(dir, 'ipfloater.db');
  const importArgs = (...more: string[]) => [
    'import',
    'ipfloater',
    conf(),
    '--gateway',
    'gw1',
    '--db',
    db(),
    ...more,
  ];

  before(async () => {
    let control;
    ({ control, store, close } = await controlPlane(['gw1']));
    app = await testApi(control);
    await app.listen({ host: '127.0.0.1', port: 0 });
    server = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
    ({ dir, remove: removeDir } = await tempDir('import-ipfloater'));
    process.env['IPFL_IMPORT_TEST_DIR'] = dir;
  });
  after(async () => {
    delete process.env['IPFL_IMPORT_TEST_DIR'];
    await app.close();
    await close();
    await removeDir();
  });

  beforeEach(async () => {
    await store.txn({
      compare: [],
      success: [
        { type: 'deletePrefix', prefix: '/ipferry/v1/fips/' },
        { type: 'deletePrefix', prefix: '/ipferry/v1/pools/' },
        { type: 'deletePrefix', prefix: '/ipferry/v1/nat-targets/' },
      ],
    });
    await writeFile(
      conf(),
      [
        '[IPFLOATER]',
        'IP_POOL = 203.0.113.10, 203.0.113.11',
        // A variable in the path, expanded as IP Floater expands it.
        'IP_POOL_FILE = ${IPFL_IMPORT_TEST_DIR}/pool.txt',
        'PRIVATE_IP_RANGES = 192.168.1.1/24',
        'LISTEN_IP = 10.0.0.1',
        'REST_PORT = 7003',
        `DB = sqlite://${db()}`,
        'BLOCK_PUBLIC_IPS = False',
        '',
      ].join('\n'),
    );
    await writeFile(poolFile(), '203.0.113.12 52:54:00:00:00:12\n203.0.113.10\n');
    await import('node:fs/promises').then((fs) => fs.rm(db(), { force: true }));
    ipfloaterDb(db(), [
      ['a1b2c3', '203.0.113.10', 0, '192.168.1.5', 0],
      ['d4e5f6', '203.0.113.11', 8080, '192.168.1.6', 80],
      ['0a0b0c', '203.0.113.11', 2222, '192.168.1.7', 22],
    ]);
  });

  it('creates the pool with its MACs and ranges, and the redirections; a second run changes nothing', async () => {
    const first = await run(...importArgs());
    assert.equal(first.code, 0, first.err);
    assert.match(first.out, /^pool ipfloater \(gateway gw1\): created$/m);
    assert.match(first.out, /^ {2}targets: 192\.168\.1\.0\/24$/m);
    assert.match(first.out, /^ {2}203\.0\.113\.10 -> 192\.168\.1\.5 \(nat\): created$/m);
    assert.match(
      first.out,
      /^ {2}203\.0\.113\.11:8080 -> 192\.168\.1\.6:80 \(tcp forward\): created$/m,
    );
    assert.match(first.out, /BLOCK_PUBLIC_IPS = False/);
    assert.match(
      first.out,
      /run the gateway's agent with --ipfloater-xmlrpc 10\.0\.0\.1:7000 --ipfloater-rest 127\.0\.0\.1:7003$/m,
    );

    const pool = await app.inject({
      url: '/v1/pools/ipfloater',
      headers: { authorization: `Bearer ${TOKEN_RW}` },
    });
    const view = JSON.parse(pool.body) as { entries: unknown[]; targetRanges: string[] };
    assert.deepEqual(view.entries, [
      { kind: 'address', address: '203.0.113.12', mac: '52:54:00:00:00:12' },
      { kind: 'address', address: '203.0.113.10' },
      { kind: 'address', address: '203.0.113.11' },
    ]);
    assert.deepEqual(view.targetRanges, ['192.168.1.0/24']);
    const fips = JSON.parse(
      (await app.inject({ url: '/v1/fips', headers: { authorization: `Bearer ${TOKEN_RW}` } }))
        .body,
    ) as {
      address: string;
      tags: string[];
      association?: { mode: string; target: string };
      forwards: { port: number; targetPort: number; target: string; protocol: string }[];
    }[];
    assert.deepEqual(
      fips.map((f) => [f.address, f.tags, f.association?.mode, f.association?.target]),
      [
        ['203.0.113.10', ['ipfloater'], 'nat', '192.168.1.5'],
        ['203.0.113.11', ['ipfloater'], 'ports', '192.168.1.6'],
      ],
    );
    assert.deepEqual(
      fips[1]!.forwards.map((f) => [f.protocol, f.port, f.target, f.targetPort]),
      [
        ['tcp', 8080, '192.168.1.6', 80],
        ['tcp', 2222, '192.168.1.7', 22],
      ],
    );

    const before = await dumpStore(store);
    const again = await run('--json', ...importArgs());
    assert.equal(again.code, 0, again.err);
    const result = JSON.parse(again.out) as {
      changed: boolean;
      pool: { action: string };
      redirections: { action: string }[];
    };
    assert.equal(result.changed, false);
    assert.equal(result.pool.action, 'unchanged');
    assert.deepEqual(
      result.redirections.map((r) => r.action),
      ['unchanged', 'unchanged', 'unchanged'],
    );
    assert.equal(await dumpStore(store), before, 'a second import must write nothing');
    assert.match(
      (await run(...importArgs())).out,
      /^nothing to change: everything was imported already$/m,
    );
  });

  it('a dry run says what it would do and writes nothing', async () => {
    const before = await dumpStore(store);
    const r = await run(...importArgs('--dry-run', '--pool', 'legacy'));
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /^pool legacy \(gateway gw1\): would create$/m);
    assert.match(r.out, /^ {2}203\.0\.113\.10 -> 192\.168\.1\.5 \(nat\): would create$/m);
    assert.match(r.out, /^dry run: nothing was written$/m);
    assert.equal(await dumpStore(store), before);
  });

  it('completes what is there: addresses added, redirections added, the rest left', async () => {
    await run('import', 'ipfloater', conf(), '--gateway', 'gw1');
    ipfloaterDb(db(), [['new1', '203.0.113.12', 443, '192.168.1.9', 8443]]);
    await writeFile(poolFile(), '203.0.113.12 52:54:00:00:00:12\n203.0.113.13\n');
    const r = await run('--json', ...importArgs());
    assert.equal(r.code, 0, r.err);
    const result = JSON.parse(r.out) as {
      pool: { action: string; addedEntries: string[] };
      redirections: { redirection: string; action: string }[];
    };
    assert.equal(result.pool.action, 'update');
    assert.deepEqual(result.pool.addedEntries, ['203.0.113.13']);
    assert.deepEqual(
      result.redirections.map((x) => x.action),
      ['create', 'create', 'create', 'create'],
    );
  });

  it('refuses bad input naming the file and line, and writes nothing', async () => {
    await writeFile(poolFile(), '203.0.113.12 52:54:00:00:00:12\n203.0.113.256\n');
    const before = await dumpStore(store);
    const r = await run(...importArgs());
    assert.equal(r.code, 1);
    assert.match(
      r.err,
      /^error IPF_E_CONFIG: Configuration .*pool\.txt is invalid: .*pool\.txt:2: "203\.0\.113\.256" is not an IP address$/m,
    );
    assert.equal(await dumpStore(store), before);

    await writeFile(poolFile(), '203.0.113.12\n');
    ipfloaterDb(db(), [['bad', '203.0.113.12', 80, '172.16.0.1', 80]]);
    const row = await run(...importArgs());
    assert.equal(row.code, 1);
    assert.match(row.err, /row 4 \(id bad\): private_ip 172\.16\.0\.1 is not in PRIVATE_IP_RANGES/);
    assert.equal(await dumpStore(store), before);

    const missing = await run('import', 'ipfloater', join(dir, 'nope.conf'), '--gateway', 'gw1');
    assert.equal(missing.code, 1);
    assert.match(missing.err, /nope\.conf is invalid: the configuration cannot be read \(ENOENT\)/);
    assert.equal(await dumpStore(store), before);
  });

  it('refuses to import over what disagrees with it, and writes nothing', async () => {
    await run('import', 'ipfloater', conf(), '--gateway', 'gw1');
    const auth = { authorization: `Bearer ${TOKEN_RW}` };
    await app.inject({
      method: 'POST',
      url: '/v1/fips',
      headers: auth,
      payload: { pool: 'ipfloater', address: '203.0.113.11' },
    });
    await app.inject({
      method: 'POST',
      url: '/v1/fips/203.0.113.11/forwards',
      headers: auth,
      payload: { protocol: 'tcp', port: 8080, target: '192.168.1.99' },
    });
    const before = await dumpStore(store);
    const r = await run(...importArgs());
    assert.equal(r.code, 1);
    assert.match(
      r.err,
      /203\.0\.113\.11:8080 -> 192\.168\.1\.6:80: tcp port 8080 of 203\.0\.113\.11 is forwarded elsewhere already \(forward f1\)/,
    );
    assert.equal(await dumpStore(store), before);
    const other = await run(...importArgs('--gateway', 'gw2'));
    assert.equal(other.code, 1);
    assert.match(other.err, /exists on gateway gw1, not gw2/);
    assert.equal(await dumpStore(store), before);
  });
});
