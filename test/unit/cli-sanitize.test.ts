/**
 * What the CLI prints for people cannot drive the terminal (issue 12, finding 8: C1 controls and
 * bidi overrides in descriptions reached it in `fip list`, `pool list`, `status`). Every value a
 * table or a `key: value` block shows goes through src/cli/format.ts's terminalText: C0 and C1
 * controls, DEL, the bidirectional controls and the line separators come out as visible `\u{…}`
 * escapes, and each value stays one cell of one line. `--json` prints values exactly.
 */
import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import type { FastifyInstance } from 'fastify';
import type { FipView, PoolView, StatusResponse } from '../../src/api/contract.js';
import { buildApi } from '../../src/api/app.js';
import { TokenSet } from '../../src/api/auth.js';
import { printFip, printFipTable } from '../../src/cli/fip.js';
import { cell, details, table, terminalLines, terminalText } from '../../src/cli/format.js';
import { main } from '../../src/cli/main.js';
import { printPool, printPoolTable } from '../../src/cli/pool.js';
import { printStatus } from '../../src/cli/status.js';
import { controlPlane, TOKEN_FILE_TEXT, TOKEN_RW } from '../support/helpers.js';

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

describe('ipferry fip, pool and status print hostile text inert; --json keeps it exact', () => {
  let app: FastifyInstance;
  let close: () => Promise<void>;
  let server = '';
  // What the API accepts today (C1 and bidi controls pass its description check; C0 does not).
  const description = 'web \u202e1.2.3.4 \u009b31m\u0085 \u2066x\u2069';

  before(async () => {
    let control;
    ({ control, close } = await controlPlane(['gw1']));
    app = await buildApi({
      control,
      tokens: TokenSet.parse(TOKEN_FILE_TEXT, 'test'),
      agent: {
        node: 'gw1',
        version: 'test',
        dataplane: () => ({ kind: 'fake' }),
        plan: () => Promise.reject(new Error('no plan in this test')),
        neighbours: () => Promise.resolve([]),
      },
    });
    await app.listen({ host: '127.0.0.1', port: 0 });
    server = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
    const auth = { authorization: `Bearer ${TOKEN_RW}` };
    const pool = await app.inject({
      method: 'POST',
      url: '/v1/pools',
      headers: auth,
      payload: { name: 'public', gateway: 'gw1', entries: ['203.0.113.0/28'], description },
    });
    assert.equal(pool.statusCode, 201, pool.body);
    const fip = await app.inject({
      method: 'POST',
      url: '/v1/fips',
      headers: auth,
      payload: { pool: 'public', address: '203.0.113.5', description },
    });
    assert.equal(fip.statusCode, 201, fip.body);
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
});
