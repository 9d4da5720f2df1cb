/**
 * `ipferry import neti`: a Neti configuration (its own conf/testing.yml, and one with every key)
 * as a mesh policy that ipferry's own validation accepts; every key without a counterpart listed,
 * never its value; bad values refused naming Neti's key; the CLI printing, writing and applying
 * the policy; and the audit reading the host table Neti's neti_util.py prints.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parse as parseYaml } from 'yaml';
import { IpferryError } from '../../src/core/errors.js';
import {
  auditMesh,
  inventoryFormat,
  parseInventory,
  validateMeshPolicy,
} from '../../src/core/mesh.js';
import { importNeti, NETI_DEFAULT_MAXCHANGE } from '../../src/core/neti.js';
import { controlPlane } from '../support/helpers.js';
import { fake, only, run, useFakeAgent } from '../support/cli-harness.js';

/** Neti's conf/testing.yml, key for key, with its placeholders (XX…) as they are. */
const NETI_TESTING_YML = `
---
aws_key: XXXXXXXXXXXXXXXXXXXXXXX
aws_secret_key: XXXXXXXXXXXXXXXXXXXXXXXX
log_file: /tmp/neti.log
table_files_path: /tmp/neti
open_ports:
  - 80
reject_all: false
ssh_whitelist:
  - XX.XX.XX.XX/18
zk_prefix: /testing/neti
zk_update_interval_path: interval
zk_max_change_threshold_path: maxchange
zk_iptoid_node: ip-to-id
zk_idtoip_node: id-to-ip
zk_ip_map_node: ip-map
overlay_subnet: 192.168.0.0/18
zk_hosts:
  ec2:
    - localhost:27021
  vpc:
    - localhost:27021
nat_overrides:
    192.168.75.1: 10.8.1.1
`;

/** The same with a real whitelist in place of the placeholder. */
const NETI_TESTING_FILLED = NETI_TESTING_YML.replace('XX.XX.XX.XX/18', '192.0.2.0/24');

const SECRET = 'wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY';

/** Every key Neti reads, in the spellings PyYAML took: `yes`, a port range, a bare address. */
const NETI_FULL_YML = `
aws_key: AKIAIOSFODNN7EXAMPLE
aws_secret_key: ${SECRET}
log_file: /var/log/neti.log
table_files_path: /var/lib/neti
open_ports: [80, "443", "8000:8010", 443]
reject_all: yes
ssh_whitelist:
  - 192.0.2.0/24
  - 198.51.100.7
  - 2001:db8:ad::/48
zk_prefix: /neti
zk_update_interval_path: interval
zk_max_change_threshold_path: maxchange
zk_iptoid_node: ip-to-id
zk_idtoip_node: id-to-ip
zk_ip_map_node: ip-map
overlay_subnet: 100.64.0.0/18
maxchange: 5
zk_hosts:
  ec2: [10.21.34.65:2181, 10.21.105.57:2181]
  vpc: [10.21.159.3:2181]
nat_overrides:
  100.64.3.9: 198.51.100.9
  100.64.3.10: 203.0.113.10
iptables_chain: ssh_whitelist
`;

function refused(text: string, code = 'IPF_E_VALIDATION'): IpferryError {
  let caught: unknown;
  try {
    importNeti(text, 'neti.yml');
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof IpferryError, 'refused with an IpferryError');
  assert.equal(caught.code, code);
  return caught;
}

const paths = (e: IpferryError): string[] => e.problems.map((p) => p.path);

describe('import neti: the configuration', () => {
  it("Neti's own testing.yml: refused for its placeholder whitelist, naming the key", () => {
    const e = refused(NETI_TESTING_YML);
    assert.deepEqual(paths(e), ['ssh_whitelist[0]']);
    assert.match(e.message, /ssh_whitelist\[0\]: "XX\.XX\.XX\.XX\/18" is not a prefix/);
  });

  it("Neti's own testing.yml, whitelist filled in: the policy key by key, the rest listed", () => {
    const r = importNeti(NETI_TESTING_FILLED, 'testing.yml');
    assert.deepEqual(r.policy, {
      overlay: '192.168.0.0/18',
      maxChange: NETI_DEFAULT_MAXCHANGE,
      fleet: {
        openPorts: ['tcp/80'],
        sshAllow: ['192.0.2.0/24'],
        rejectAll: false,
        natOverrides: { '192.168.75.1': '10.8.1.1' },
      },
      sites: { ec2: {}, vpc: {} },
      nodes: {},
    });
    assert.deepEqual(r.unmapped.map((u) => u.key).sort(), [
      'aws_key',
      'aws_secret_key',
      'log_file',
      'table_files_path',
      'zk_hosts',
      'zk_idtoip_node',
      'zk_ip_map_node',
      'zk_iptoid_node',
      'zk_max_change_threshold_path',
      'zk_prefix',
      'zk_update_interval_path',
    ]);
    for (const u of r.unmapped) assert.ok(u.reason.length > 20, `${u.key} has a reason`);
    assert.ok(r.notes.some((n) => n.includes('maxchange') && n.includes('--max-change')));
  });

  it('every key, in the spellings PyYAML read: mapped, converted, and passing ipferry validation', () => {
    const r = importNeti(NETI_FULL_YML, 'neti.yml');
    assert.deepEqual(r.policy, {
      overlay: '100.64.0.0/18',
      maxChange: 5,
      fleet: {
        openPorts: ['tcp/80', 'tcp/443', 'tcp/8000-8010'],
        sshAllow: ['192.0.2.0/24', '198.51.100.7/32', '2001:db8:ad::/48'],
        rejectAll: true,
        natOverrides: { '100.64.3.9': '198.51.100.9', '100.64.3.10': '203.0.113.10' },
      },
      sites: { ec2: {}, vpc: {} },
      nodes: {},
    });
    assert.deepEqual(validateMeshPolicy(r.policy), r.policy, 'the policy is valid as it is');
    const unknown = r.unmapped.find((u) => u.key === 'iptables_chain');
    assert.match(unknown?.reason ?? '', /Neti reads no such key/);
    assert.ok(!JSON.stringify(r).includes(SECRET), 'no value of an unmapped key is repeated');
    assert.ok(!JSON.stringify(r).includes('AKIAIOSFODNN7EXAMPLE'));
  });

  it('--max-change replaces the threshold; absent keys take what Neti did, and say so', () => {
    assert.equal(importNeti(NETI_FULL_YML, 'neti.yml', { maxChange: 0 }).policy.maxChange, 0);
    const r = importNeti('open_ports: []\n', 'neti.yml');
    assert.deepEqual(r.policy, {
      overlay: '192.168.0.0/18',
      maxChange: NETI_DEFAULT_MAXCHANGE,
      fleet: { rejectAll: false },
      sites: {},
      nodes: {},
    });
    assert.ok(r.notes.some((n) => n.startsWith('overlay_subnet is absent')));
    assert.ok(r.notes.some((n) => n.startsWith('reject_all is absent')));
    // Empty lists read as null in YAML (`open_ports:` alone): Neti took them as none.
    assert.deepEqual(importNeti('open_ports:\nssh_whitelist:\n', 'n').policy.fleet, {
      rejectAll: false,
    });
  });

  it('an overlay ipferry refuses is an error naming overlay_subnet', () => {
    const cases: [string, RegExp][] = [
      ['8.8.0.0/16', /not private address space/],
      ['10.0.0.0/8', /wider than \/16/],
      ['192.168.0.0/30', /narrower than \/29/],
      ['192.168.0.1/18', /host bits set: did you mean 192\.168\.0\.0\/18/],
      ['fd00::/64', /IPv6/],
    ];
    for (const [overlay, message] of cases) {
      const e = refused(`overlay_subnet: ${overlay}\n`);
      assert.deepEqual(paths(e), ['overlay_subnet'], overlay);
      assert.match(e.problems[0]!.message, message, overlay);
    }
  });

  it('every bad value at once, each named by its Neti key; nothing is produced', () => {
    const e = refused(
      [
        'open_ports: [80, 0, 70000, "9000:8000", http]',
        'ssh_whitelist: [192.0.2.1/24, nowhere]',
        'reject_all: maybe',
        'nat_overrides: {192.168.0.9: nowhere, "2001:db8::1": 10.0.0.1}',
        'maxchange: -1',
        'zk_hosts: [a, b]',
        '',
      ].join('\n'),
    );
    assert.deepEqual(paths(e), [
      'open_ports[1]',
      'open_ports[2]',
      'open_ports[3]',
      'open_ports[4]',
      'ssh_whitelist[0]',
      'ssh_whitelist[1]',
      'reject_all',
      'nat_overrides.192.168.0.9',
      'nat_overrides.2001:db8::1',
      'maxchange',
      'zk_hosts',
    ]);
    assert.match(e.problems[4]!.message, /did you mean 192\.0\.2\.0\/24/);
    assert.equal(refused('open_ports: 80\n').problems[0]!.message, 'must be a list');
  });

  it('a file that is no YAML mapping is refused', () => {
    assert.match(refused('a: [1, 2\n', 'IPF_E_CONFIG').message, /neti\.yml .*not valid YAML/);
    assert.deepEqual(paths(refused('- overlay_subnet\n')), ['']);
    assert.deepEqual(paths(refused('')), ['']);
    // PyYAML refused a key given twice as well (not silently the last one).
    refused('reject_all: true\nreject_all: false\n', 'IPF_E_CONFIG');
  });
});

// ---------------------------------------------------------------------------------------------

/** What neti_util.py prints: PrettyTable, plain columns, left-aligned, then the totals. */
const NETI_UTIL_TABLE = [
  'Name                Public IP               Private IP           Overlay IP             Neti Version        VPC?        ',
  'web-1               198.51.100.11           10.0.1.11            192.168.0.12           0.1.2               False        ',
  'Web 2               203.0.113.12            172.31.4.12          192.168.0.13           0.1.2               True        ',
  'None                198.51.100.40           10.0.1.40            None                   None                False        ',
  'db-main             None                    172.31.9.50          None                   None                True        ',
  '4 total instances, 2 instances in Neti (50%)',
  '',
].join('\n');

describe('the audit reads the host table of neti_util.py', () => {
  const table = NETI_UTIL_TABLE.replace('Web 2 ', 'Web-2 ');

  it('is told from an ipferry inventory by its header', () => {
    assert.equal(inventoryFormat(table), 'neti');
    assert.equal(inventoryFormat('\n\nweb1 10.0.0.1\n'), 'ipferry');
    assert.equal(inventoryFormat(''), 'ipferry');
  });

  it('a host per instance: its Name in lower case (else its address), public and private addresses, its side as site', () => {
    assert.deepEqual(parseInventory(table, 'hosts.txt'), [
      { name: 'web-1', addresses: ['198.51.100.11', '10.0.1.11'], site: 'ec2', line: 2 },
      { name: 'web-2', addresses: ['203.0.113.12', '172.31.4.12'], site: 'vpc', line: 3 },
      { name: '198.51.100.40', addresses: ['198.51.100.40', '10.0.1.40'], site: 'ec2', line: 4 },
      { name: 'db-main', addresses: ['172.31.9.50'], site: 'vpc', line: 5 },
    ]);
  });

  it('the first bad row fails the whole table, naming its line', () => {
    const cases: [string, string, RegExp][] = [
      [NETI_UTIL_TABLE, 'hosts.txt line 3', /"web 2" is not a host name/],
      [table.replace('10.0.1.11 ', '10.0.1.300'), 'hosts.txt line 2', /"10\.0\.1\.300" is not/],
      [table.replace('Web-2 ', 'WEB-1 '), 'hosts.txt line 3', /web-1 is listed twice/],
      [table.replace('True  ', 'Yes   '), 'hosts.txt line 3', /"Yes" in column VPC\?/],
      [
        table.replace('None                    172.31.9.50', 'None                    None       '),
        'hosts.txt line 5',
        /db-main has no address/,
      ],
    ];
    for (const [text, where, reason] of cases) {
      assert.throws(
        () => parseInventory(text, 'hosts.txt'),
        (e: unknown) =>
          e instanceof IpferryError &&
          e.code === 'IPF_E_INVENTORY' &&
          e.message.startsWith(where) &&
          reason.test(e.message),
        where,
      );
    }
    // Forced to Neti's format, a file without its header is refused at its first line.
    assert.throws(
      () => parseInventory('\nweb1 10.0.0.1\n', 'hosts.txt', 'neti'),
      /hosts\.txt line 2: is not neti_util\.py's table/,
    );
  });

  it('the audit matches the instances against registered nodes by name or address', async () => {
    const { control, close } = await controlPlane([]);
    try {
      const reserved = { reservedPorts: [] };
      await control.registerNode({ name: 'web-1', addresses: ['10.0.1.11'], ...reserved });
      await control.registerNode({ name: 'db7', addresses: ['172.31.9.50'], ...reserved });
      await control.registerNode({ name: 'cache9', addresses: ['10.0.9.9'], ...reserved });
      const audit = await control.mesh.audit(table, 'hosts.txt');
      assert.deepEqual(
        audit.unregistered.map((h) => h.name),
        ['web-2', '198.51.100.40'],
      );
      assert.deepEqual(audit.unlisted, ['cache9']);
      // The pure audit agrees on the parsed table.
      const pure = auditMesh({
        revision: 1,
        nodes: [],
        inventory: parseInventory(table),
        now: new Date(),
      });
      assert.equal(pure.unregistered.length, 4);
    } finally {
      await close();
    }
  });
});

// ---------------------------------------------------------------------------------------------

describe('ipferry import neti', () => {
  useFakeAgent();
  let dir = '';
  let file = '';
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'ipferry-neti-'));
    file = join(dir, 'neti.yml');
    writeFileSync(file, NETI_FULL_YML);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('prints the policy as YAML, the notes and what could not be mapped; sends nothing', async () => {
    const r = await run(['import', 'neti', file]);
    assert.equal(r.code, 0, r.err);
    assert.equal(fake.requests.length, 0);
    assert.match(r.out, /^policy:\n {2}overlay: 100\.64\.0\.0\/18\n {2}maxChange: 5\n/);
    assert.match(r.out, /\ncould not map \(12\):\n {2}aws_key: AWS credentials/);
    assert.match(r.out, /\n {2}iptables_chain: Neti reads no such key/);
    assert.ok(!r.out.includes(SECRET));
  });

  it('--json: the policy, unmapped keys and notes as one object', async () => {
    const r = await run(['--json', 'import', 'neti', file]);
    assert.equal(r.code, 0, r.err);
    const out = JSON.parse(r.out) as { policy: unknown; unmapped: unknown[]; notes: unknown[] };
    assert.deepEqual(out.policy, importNeti(NETI_FULL_YML, 'x').policy);
    assert.equal(out.unmapped.length, 12);
  });

  it('--output writes a policy file that `mesh set --file` takes as it is', async () => {
    const output = join(dir, 'mesh.yaml');
    const r = await run(['import', 'neti', file, '--output', output]);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /^policy: written to .*mesh\.yaml\n/);
    const text = readFileSync(output, 'utf8');
    assert.match(text, /^# The ipferry mesh policy of the Neti configuration/);
    assert.deepEqual(validateMeshPolicy(parseYaml(text)), importNeti(NETI_FULL_YML, 'x').policy);
    assert.deepEqual(
      readdirSync(dir).filter((f) => f.endsWith('.tmp')),
      [],
      'no temporary file is left',
    );
    fake.reply('PUT /v1/mesh/policy', 200, {
      policy: parseYaml(text) as unknown,
      updatedAt: '2026-03-01T12:00:00.000Z',
    });
    assert.equal((await run(['mesh', 'set', '--file', output])).code, 0);
    assert.deepEqual(only().body, { policy: parseYaml(text) as unknown });
  });

  it('--output: a key with controls or line breaks cannot break the file out of its comments', async () => {
    const odd = join(dir, 'odd.yml');
    writeFileSync(
      odd,
      'overlay_subnet: 192.168.0.0/18\n"evil\\nrejectAll: true\\u0007\\u2028": 1\n',
    );
    const output = join(dir, 'odd.yaml');
    const r = await run(['import', 'neti', odd, '--output', output]);
    assert.equal(r.code, 0, r.err);
    const policy = validateMeshPolicy(parseYaml(readFileSync(output, 'utf8')));
    assert.deepEqual(policy.fleet, { rejectAll: false });
    assert.match(
      readFileSync(output, 'utf8'),
      /# {3}evil\?rejectAll: true\?\?: Neti reads no such key/,
    );
  });

  it('--apply sets the policy through the API, a trial with --confirm-within', async () => {
    const policy = importNeti(NETI_FULL_YML, 'x').policy;
    fake.reply('PUT /v1/mesh/policy', 200, {
      policy,
      trial: { previous: null, deadline: '2026-03-01T12:05:00.000Z' },
      updatedAt: '2026-03-01T12:00:00.000Z',
    });
    const r = await run(['import', 'neti', file, '--apply', '--confirm-within', '5m']);
    assert.equal(r.code, 0, r.err);
    assert.deepEqual(only().body, { policy, confirmWithinSeconds: 300 });
    assert.match(r.out, /^policy: +set 2026-03-01T12:00:00\.000Z: overlay 100\.64\.0\.0\/18/);
    assert.match(r.out, /\ntrial: +until 2026-03-01T12:05:00\.000Z/);
    assert.match(r.out, /\ncould not map \(12\):/);
  });

  it('bad input exits non-zero with the error, and sends and writes nothing', async () => {
    const bad = join(dir, 'bad.yml');
    const output = join(dir, 'never.yaml');
    writeFileSync(bad, 'overlay_subnet: 8.8.0.0/16\nopen_ports: [70000]\n');
    const r = await run(['import', 'neti', bad, '--apply', '--output', output]);
    assert.equal(r.code, 1);
    assert.match(r.err, /IPF_E_VALIDATION.*2 problems/);
    assert.match(r.err, /open_ports\[0\]/);
    assert.match(r.err, /overlay_subnet/);
    assert.equal(fake.requests.length, 0);
    assert.ok(!readdirSync(dir).includes('never.yaml'));
    const missing = await run(['import', 'neti', join(dir, 'nope.yml')]);
    assert.equal(missing.code, 1);
    assert.match(missing.err, /IPF_E_CONFIG.*nope\.yml.*cannot be read \(ENOENT\)/);
    const usage = await run(['import', 'neti', file, '--confirm-within', '5m']);
    assert.equal(usage.code, 2);
    assert.match(usage.err, /--confirm-within needs --apply/);
    assert.equal((await run(['import', 'neti', file, '--max-change', 'x'])).code, 2);
  });

  it('mesh audit --inventory-format neti holds the file to that format before sending it', async () => {
    const hosts = join(dir, 'hosts.txt');
    writeFileSync(hosts, 'web1 10.0.0.1\n');
    const r = await run(['mesh', 'audit', '--inventory', hosts, '--inventory-format', 'neti']);
    assert.equal(r.code, 1);
    assert.match(r.err, /IPF_E_INVENTORY.*hosts\.txt line 1: is not neti_util\.py's table/);
    assert.equal(fake.requests.length, 0);
    const table = join(dir, 'table.txt');
    writeFileSync(table, NETI_UTIL_TABLE.replace('Web 2 ', 'web-2 '));
    fake.reply('POST /v1/mesh/audit', 200, {
      revision: 3,
      unregistered: [],
      unlisted: [],
      lagging: [],
      rejectAll: { on: [], off: [] },
      holds: [],
      rolledBack: [],
    });
    const ok = await run(['mesh', 'audit', '--inventory', table, '--inventory-format', 'neti']);
    assert.equal(ok.code, 0, ok.err);
    assert.deepEqual(only().body, {
      inventory: NETI_UTIL_TABLE.replace('Web 2 ', 'web-2 '),
      source: table,
    });
  });
});
