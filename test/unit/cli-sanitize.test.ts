/**
 * What the CLI prints for people cannot drive the terminal (issue 12, finding 8: C1 controls and
 * bidi overrides in descriptions reached it in `fip list`, `pool list`, `status`). Every value a
 * table or a `key: value` block shows goes through src/cli/format.ts's terminalText: C0 and C1
 * controls, DEL, the bidirectional controls and the line separators come out as visible `\u{…}`
 * escapes, and each value stays one cell of one line. Behind them, CliContext.print writes every
 * command's text through terminalLines and renderError writes a server's error message, hint and
 * problems the same way, so a printer that builds its own lines (plan, mesh audit) cannot let one
 * through either. `--json` prints values exactly. The API refuses these characters in a
 * description now (core-validate.test.ts); the records here are written to the store directly,
 * as an older version or anyone who can write to etcd could.
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import type { FastifyInstance } from 'fastify';
import type { FipView, PlanResponse, PoolView, StatusResponse } from '../../src/api/contract.js';
import { keys } from '../../src/core/keys.js';
import type { Store } from '../../src/store/store.js';
import { CliContext } from '../../src/cli/context.js';
import { renderError } from '../../src/cli/exit.js';
import { printFip, printFipTable } from '../../src/cli/fip.js';
import { cell, details, table, terminalLines, terminalText } from '../../src/cli/format.js';
import { main } from '../../src/cli/main.js';
import { printAudit } from '../../src/cli/mesh.js';
import { printPlan } from '../../src/cli/plan.js';
import { printPool, printPoolTable } from '../../src/cli/pool.js';
import { printStatus } from '../../src/cli/status.js';
import { IpferryError } from '../../src/core/errors.js';
import { controlPlane, TOKEN_RW, testApi } from '../support/helpers.js';

/* eslint-disable no-control-regex -- the characters under test */
/** What a terminal must never get from a value: any of these acts instead of showing. */
const ACTIVE =
  /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]/u;
/* eslint-enable no-control-regex */

/** Hostile text of every class, with what it must print as. */
const HOSTILE: readonly [string, string, string][] = [
  ['ESC (colour, title)', 'a\u001b]0;owned\u0007b', 'a\\u{1b}]0;owned\\u{7}b'],
  ['CSI as C1 (U+009B)', 'x\u009b31my', 'x\\u{9b}31my'],
  ['NEL (U+0085)', 'x\u0085y', 'x\\u{85}y'],
  ['RIGHT-TO-LEFT OVERRIDE', 'web \u202e1.2.3.4', 'web \\u{202e}1.2.3.4'],
  ['LEFT-TO-RIGHT EMBEDDING and POP', '\u202ax\u202c', '\\u{202a}x\\u{202c}'],
  ['isolates', '\u2066\u2067\u2068x\u2069', '\\u{2066}\\u{2067}\\u{2068}x\\u{2069}'],
  ['LRM, RLM and ALM', '\u200e\u200f\u061c', '\\u{200e}\\u{200f}\\u{61c}'],
  ['a newline and a fake row', 'x\n203.0.113.66  public', 'x\\u{a}203.0.113.66  public'],
  ['CR (overwrites the line)', 'safe\rEVIL', 'safe\\u{d}EVIL'],
  ['backspace, NUL, DEL and tab', 'a\b\u0000\u007f\tb', 'a\\u{8}\\u{0}\\u{7f}\\u{9}b'],
  ['line and paragraph separators', 'a\u2028b\u2029c', 'a\\u{2028}b\\u{2029}c'],
];

const SAFE = ['plain', 'café – ünïcödé', '日本語', 'emoji 🚀', 'back\\slash', 'tab-less'];

describe('terminalText', () => {
  for (const [what, input, printed] of HOSTILE) {
    it(`writes ${what} as escapes`, () => {
      assert.equal(terminalText(input), printed);
      assert.doesNotMatch(terminalText(input), ACTIVE);
      assert.equal(cell(input), printed);
      // Escapes are printable: a second pass changes nothing.
      assert.equal(terminalText(terminalText(input)), printed);
    });
  }

  it('leaves printable text, non-ASCII letters and emoji as they are', () => {
    for (const s of SAFE) assert.equal(terminalText(s), s);
  });

  it('terminalLines keeps line feeds and escapes everything else', () => {
    assert.equal(terminalLines('one\ntwo\u001b[2J\u202e\n'), 'one\ntwo\\u{1b}[2J\\u{202e}\n');
    // What terminalText or a table escaped passes again unchanged: escapes are printable.
    for (const [, input, printed] of HOSTILE) {
      assert.equal(terminalLines(terminalText(input)), printed);
      assert.equal(terminalLines(cell(input)), printed);
    }
  });

  it('tables and key-value blocks escape every value and stay aligned', () => {
    const t = table(
      ['a', 'b'],
      [
        ['x\u001b[31m', 'y'],
        ['long value', 'z\nfake'],
      ],
    );
    assert.doesNotMatch(t, ACTIVE);
    const lines = t.split('\n');
    assert.equal(lines.length, 4, t); // header, two rows, the final newline
    assert.equal(lines[1]?.indexOf('y'), lines[0]?.indexOf('B'));
    const d = details([
      ['description', 'x\u202ey'],
      ['tags', ['a\u0085', 'b']],
    ]);
    assert.equal(d, 'description:  x\\u{202e}y\ntags:         a\\u{85}\n              b\n');
  });
});

/** A plan as an agent could answer it: keys, values and reasons quoting what records held. */
const HOSTILE_PLAN: PlanResponse = {
  node: 'gw1',
  dataplane: 'fake',
  revision: 7,
  add: [{ kind: 'dnat', key: '203.0.113.5\u202e', value: '10.0.0.5\u009b2J', owner: 'host' }],
  replace: [],
  remove: [],
  refused: [{ address: '203.0.113.6', reason: 'target \u202e6.0.0.01 is\nfake line' }],
  skipped: [
    { key: '/ipferry/v1/pools/p\u0085', reason: 'description: "x\u001b[2J"\r\n  + fake add' },
  ],
};

describe('ipferry fip, pool, status and plan print hostile text inert; --json keeps it exact', () => {
  let app: FastifyInstance;
  let store: Store;
  let close: () => Promise<void>;
  let server = '';
  // C1 and bidi controls, which the API refuses now but a store may still hold.
  const description = 'web \u202e1.2.3.4 \u009b31m\u0085 \u2066x\u2069';

  /** Puts `description` into a stored record, past the API. */
  async function storeDescription(key: string): Promise<void> {
    const kv = await store.get(key);
    assert.ok(kv, key);
    const record = JSON.parse(kv.value) as Record<string, unknown>;
    const value = JSON.stringify({ ...record, description });
    await store.txn({ compare: [], success: [{ type: 'put', key, value }] });
  }

  before(async () => {
    let control;
    ({ control, store, close } = await controlPlane(['gw1']));
    app = await testApi(control, { plan: () => Promise.resolve(HOSTILE_PLAN) });
    await app.listen({ host: '127.0.0.1', port: 0 });
    server = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
    const auth = { authorization: `Bearer ${TOKEN_RW}` };
    const pool = await app.inject({
      method: 'POST',
      url: '/v1/pools',
      headers: auth,
      payload: { name: 'public', gateway: 'gw1', entries: ['203.0.113.0/28'], description },
    });
    assert.equal(pool.statusCode, 400, 'the API refuses it');
    const created = await app.inject({
      method: 'POST',
      url: '/v1/pools',
      headers: auth,
      payload: { name: 'public', gateway: 'gw1', entries: ['203.0.113.0/28'] },
    });
    assert.equal(created.statusCode, 201, created.body);
    const fip = await app.inject({
      method: 'POST',
      url: '/v1/fips',
      headers: auth,
      payload: { pool: 'public', address: '203.0.113.5' },
    });
    assert.equal(fip.statusCode, 201, fip.body);
    await storeDescription(keys.pool('public'));
    await storeDescription(keys.fip('203.0.113.5'));
  });

  after(async () => {
    await app.close();
    await close();
  });

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

  for (const command of [
    ['fip', 'list'],
    ['fip', 'show', '203.0.113.5'],
    ['pool', 'list'],
    ['pool', 'show', 'public'],
  ]) {
    it(`${command.join(' ')}: escapes, no active character`, async () => {
      const r = await run(...command);
      assert.equal(r.code, 0, r.err);
      assert.doesNotMatch(r.out, ACTIVE);
      assert.match(
        r.out,
        /web \\u\{202e\}1\.2\.3\.4 \\u\{9b\}31m\\u\{85\} \\u\{2066\}x\\u\{2069\}/,
      );
    });

    it(`${command.join(' ')} --json: the description exactly as stored`, async () => {
      const r = await run('--json', ...command);
      assert.equal(r.code, 0, r.err);
      const data = JSON.parse(r.out) as { description?: string } | { description?: string }[];
      const first = Array.isArray(data) ? data[0] : data;
      assert.equal(first?.description, description);
    });
  }

  it('status, and the printers on records the API would not take (C0 from a store)', async () => {
    const fips = JSON.parse((await run('--json', 'fip', 'list')).out) as FipView[];
    const pools = JSON.parse((await run('--json', 'pool', 'list')).out) as PoolView[];
    const evil = 'x\u001b]0;owned\u0007\u001b[2J\r\n203.0.113.99  public';
    const fip = { ...fips[0]!, description: evil, tags: ['t\u202e'] };
    const pool = { ...pools[0]!, description: evil, uplink: 'eth0\u001b[8m' };
    for (const text of [
      printFipTable([fip]),
      printFip(fip),
      printPoolTable([pool]),
      printPool(pool),
    ]) {
      assert.doesNotMatch(text, ACTIVE, text);
      assert.ok(!text.includes('\r'));
    }
    assert.equal(printFipTable([fip]).split('\n').length, 3, 'one header, one row');
    const status = JSON.parse((await run('--json', 'status')).out) as StatusResponse;
    const hostile: StatusResponse = {
      ...status,
      node: 'gw1\u009b2J',
      dataplane: { kind: 'linux', lastError: `refused\u001b[31m ${evil}` },
    };
    const text = printStatus(hostile);
    assert.doesNotMatch(text, ACTIVE, text);
    assert.match(text, /gw1\\u\{9b\}2J/);
  });

  it('plan: each line written for the terminal, one line each; --json exactly as answered', async () => {
    const r = await run('plan');
    assert.equal(r.code, 0, r.err);
    assert.doesNotMatch(r.out, ACTIVE, r.out);
    assert.equal(r.out, printPlan(HOSTILE_PLAN), 'printed once, not escaped twice');
    assert.deepEqual(r.out.split('\n'), [
      'plan for node gw1 (fake dataplane) at store revision 7:',
      '  + dnat 203.0.113.5\\u{202e} -> 10.0.0.5\\u{9b}2J',
      '  ! 203.0.113.6: target \\u{202e}6.0.0.01 is\\u{a}fake line',
      '  ? skipped /ipferry/v1/pools/p\\u{85}: description: "x\\u{1b}[2J"\\u{d}\\u{a}  + fake add',
      '1 to add, 0 to change, 0 to remove',
      '',
    ]);
    const json = await run('--json', 'plan');
    assert.equal(json.code, 0, json.err);
    assert.deepEqual(JSON.parse(json.out), HOSTILE_PLAN);
    assert.ok(json.out.includes('\u202e') && json.out.includes('\u009b'), 'raw, not escaped');
  });
});

describe('error answers are written for the terminal; --json keeps them byte-exact', () => {
  let http: Server;
  let server = '';
  /** What the fake server answers every request with: an ipferry error full of hostile text. */
  const answer = {
    error: {
      code: 'IPF_E_POOL_EXISTS',
      message: 'Pool \u202eorp exists.\u009b2J\nhint: run `ipferry pool delete prod`',
      hint: 'Choose another name\u0085\u001b]0;owned\u0007.\nerror IPF_E_FAKE: fake',
      problems: [
        { path: 'name\u2066', message: 'is \u202etaken\n  - fake: problem' },
        { path: '', message: 'also\u009b31m' },
      ],
    },
  };
  const body = JSON.stringify(answer);

  before(async () => {
    http = createServer((_req, res) => {
      res.writeHead(409, { 'content-type': 'application/json' });
      res.end(body);
    });
    await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
    server = `http://127.0.0.1:${(http.address() as AddressInfo).port}`;
  });

  after(async () => {
    await new Promise<void>((resolve) => http.close(() => resolve()));
  });

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

  it('a bidi override, C1 and C0 controls and line feeds in message, hint and problems', async () => {
    const r = await run('pool', 'create', 'x', '--gateway', 'gw1', '--cidr', '192.0.2.0/30');
    assert.equal(r.code, 1);
    assert.equal(r.out, '');
    assert.doesNotMatch(r.err, ACTIVE, r.err);
    assert.equal(
      r.err,
      [
        'error IPF_E_POOL_EXISTS: Pool \\u{202e}orp exists.\\u{9b}2J',
        // A further line of the message is indented: it cannot pass for a hint.
        '    hint: run `ipferry pool delete prod`',
        '  - name\\u{2066}: is \\u{202e}taken\\u{a}  - fake: problem',
        '  - also\\u{9b}31m',
        'hint: Choose another name\\u{85}\\u{1b}]0;owned\\u{7}.',
        '    error IPF_E_FAKE: fake',
        '',
      ].join('\n'),
    );
    // Only the lines renderError starts begin at the margin.
    assert.deepEqual(
      r.err
        .split('\n')
        .filter((l) => /^\S/.test(l))
        .map((l) => l.split(' ')[0]),
      ['error', 'hint:'],
    );
  });

  it('--json: the error body exactly as the server sent it', async () => {
    const r = await run(
      '--json',
      'pool',
      'create',
      'x',
      '--gateway',
      'gw1',
      '--cidr',
      '192.0.2.0/30',
    );
    assert.equal(r.code, 1);
    assert.equal(r.err, JSON.stringify(answer, null, 2) + '\n');
  });

  it('an error raised here is written the same way', () => {
    const e = new IpferryError('IPF_E_POOL_NOT_FOUND', { pool: 'p\u202e\u0085' });
    assert.equal(
      renderError(e, false),
      'error IPF_E_POOL_NOT_FOUND: Pool p\\u{202e}\\u{85} does not exist.\n' +
        'hint: List pools with `ipferry pool list`.\n',
    );
    assert.equal(renderError(e, true), JSON.stringify(e.toJSON(), null, 2) + '\n');
  });
});

describe('CliContext.print: the one way text leaves, for printers that build their own lines', () => {
  function context(json: boolean): { ctx: CliContext; out: () => string } {
    let out = '';
    const ctx = new CliContext({
      io: { out: (s) => (out += s), err: () => undefined },
      env: {},
      flags: () => ({ json }),
      version: 'test',
    });
    return { ctx, out: () => out };
  }

  it('escapes what a printer left raw, keeps its lines, and leaves --json exact', () => {
    const data = { name: 'n\u202e\u009b\u2028', note: 'a\u001b[2Jb' };
    const raw = (d: typeof data): string => `removed node ${d.name}\n${d.note}\n`;
    const human = context(false);
    human.ctx.print(data, raw);
    assert.equal(human.out(), 'removed node n\\u{202e}\\u{9b}\\u{2028}\na\\u{1b}[2Jb\n');
    const json = context(true);
    json.ctx.print(data, raw);
    assert.equal(json.out(), JSON.stringify(data, null, 2) + '\n');
    assert.deepEqual(JSON.parse(json.out()), data);
  });

  it('mesh audit: each host and node on one line, whatever its name held', () => {
    const text = printAudit(
      {
        revision: 3,
        overlay: { prefix: '100.64.0.0/24', used: 2, size: 254 },
        unregistered: [
          { name: 'db\u202e1', addresses: ['10.0.0.9\u0085'], site: 's\n  fake', line: 4 },
        ],
        unlisted: ['old\u009b2J'],
        lagging: [{ node: 'n\u2066', appliedRevision: 2, alive: true }],
        rejectAll: { on: ['a\u200f'], off: [] },
        holds: [
          { node: 'h', hold: { keeping: ['100.64.0.9\u061c'], maxChange: 1, sinceRevision: 2 } },
        ],
        rolledBack: [],
      },
      true,
    );
    assert.doesNotMatch(text, ACTIVE, text);
    assert.ok(text.includes('  db\\u{202e}1  10.0.0.9\\u{85}  site=s\\u{a}  fake  (line 4)'), text);
    assert.ok(text.includes('  old\\u{9b}2J\n'), text);
    assert.ok(text.includes('  n\\u{2066}  applied revision 2\n'), text);
    assert.ok(text.includes('(100.64.0.9\\u{61c})'), text);
    assert.equal(terminalLines(text), text, 'print passes it unchanged');
  });
});
