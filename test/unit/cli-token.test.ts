/**
 * Where the CLI takes its API token from (--token-file, IPFERRY_TOKEN, the default file), against
 * the in-process fake agent (test/support/cli-harness.ts).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parseTokenFile } from '../../src/cli/context.js';
import { main } from '../../src/cli/main.js';
import { fake, only, run, TOKEN, useFakeAgent } from '../support/cli-harness.js';

describe('ipferry CLI', () => {
  useFakeAgent();

  describe('token', () => {
    let dir: string;
    before(() => {
      dir = mkdtempSync(join(tmpdir(), 'ipferry-cli-'));
    });
    after(() => {
      rmSync(dir, { recursive: true, force: true });
    });

    it('--token-file takes the first word of the first non-comment line and wins over IPFERRY_TOKEN', async () => {
      const file = join(dir, 'token');
      writeFileSync(file, `# API token\n\n  ${TOKEN} ro\nother-token\n`, { mode: 0o600 });
      fake.reply('GET /v1/fips', 200, []);
      const r = await run(['--token-file', file, 'fip', 'list'], { IPFERRY_TOKEN: 'from-env' });
      assert.equal(r.code, 0, r.err);
      assert.equal(only().authorization, `Bearer ${TOKEN}`);
    });

    it('the default token file is used when nothing else is given', async () => {
      const file = join(dir, 'default-token');
      writeFileSync(file, `${TOKEN}\n`, { mode: 0o600 });
      fake.reply('GET /v1/fips', 200, []);
      let err = '';
      const code = await main(
        ['node', 'ipferry', '--server', fake.url, 'fip', 'list'],
        { out: () => undefined, err: (s) => (err += s) },
        {},
        { defaultTokenFile: file },
      );
      assert.equal(code, 0, err);
      assert.equal(only().authorization, `Bearer ${TOKEN}`);
    });

    it('without any token no Authorization header is sent, and the 401 is reported', async () => {
      fake.reply('GET /v1/fips', 401, {
        error: {
          code: 'IPF_E_UNAUTHORIZED',
          message: 'Missing or invalid API token.',
          hint: 'Pass a token with --token-file or IPFERRY_TOKEN.',
        },
      });
      const r = await run(['fip', 'list'], {});
      assert.equal(r.code, 1);
      assert.equal(only().authorization, undefined);
      assert.match(r.err, /^error IPF_E_UNAUTHORIZED: /);
    });

    it('an unreadable or empty --token-file is an error, without a request', async () => {
      const empty = join(dir, 'empty');
      writeFileSync(empty, '# nothing here\n');
      const missing = await run(['--token-file', join(dir, 'missing'), 'fip', 'list']);
      assert.equal(missing.code, 1);
      assert.match(
        missing.err,
        /^error IPF_E_TOKEN_FILE: Token file .*missing cannot be read \(ENOENT\)\.$/m,
      );
      // Where a client gets a token, not how an agent keeps its secret files.
      assert.match(missing.err, /^hint: .*\/var\/lib\/ipferry\/api-token.*IPFERRY_TOKEN\.$/m);
      assert.doesNotMatch(missing.err, /chmod/);
      const none = await run(['fip', 'list', '--token-file', empty]);
      assert.equal(none.code, 1);
      assert.match(none.err, /contains no token/);
      assert.equal(fake.requests.length, 0);
    });

    it('parseTokenFile', () => {
      assert.equal(parseTokenFile('abc'), 'abc');
      assert.equal(parseTokenFile('\r\n# c\r\nabc rw\r\n'), 'abc');
      assert.equal(parseTokenFile('# only\n\n'), undefined);
    });
  });
});
