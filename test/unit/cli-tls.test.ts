/**
 * The CLI against a fake agent that serves HTTPS with a self-signed certificate: trusted only with
 * --ca-file (or IPFERRY_CA_FILE).
 */
import assert from 'node:assert/strict';
import { selfSignedCertificate } from '../../src/lab/certs.js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { FakeAgent, run, TOKEN, useFakeAgent } from '../support/cli-harness.js';

describe('ipferry CLI', () => {
  useFakeAgent();

  describe('TLS with --ca-file', () => {
    const tlsFake = new FakeAgent();
    let dir: string;
    let caFile: string;
    let skip: string | false = false;

    before(async () => {
      dir = mkdtempSync(join(tmpdir(), 'ipferry-tls-'));
      let key: string;
      try {
        ({ cert: caFile, key } = await selfSignedCertificate(dir, { ip: '127.0.0.1' }));
      } catch {
        skip = 'openssl is not available';
        return;
      }
      const { readFileSync } = await import('node:fs');
      await tlsFake.start({ key: readFileSync(key, 'utf8'), cert: readFileSync(caFile, 'utf8') });
    });
    after(async () => {
      await tlsFake.stop();
      rmSync(dir, { recursive: true, force: true });
    });

    it('an untrusted certificate is unreachable (exit 3) with a hint at --ca-file; with it the call succeeds', async (t) => {
      if (skip) return t.skip(skip);
      tlsFake.reply('GET /v1/nodes', 200, []);
      const untrusted = await run(['node', 'list'], { IPFERRY_TOKEN: TOKEN }, tlsFake.url);
      assert.equal(untrusted.code, 3);
      assert.match(untrusted.err, /not trusted .*--ca-file/);
      assert.equal(tlsFake.requests.length, 0);

      const trusted = await run(
        ['--ca-file', caFile, 'node', 'list'],
        { IPFERRY_TOKEN: TOKEN },
        tlsFake.url,
      );
      assert.equal(trusted.code, 0, trusted.err);
      const viaEnv = await run(
        ['node', 'list'],
        { IPFERRY_TOKEN: TOKEN, IPFERRY_CA_FILE: caFile },
        tlsFake.url,
      );
      assert.equal(viaEnv.code, 0, viaEnv.err);
      assert.equal(tlsFake.requests.length, 2);
      assert.equal(tlsFake.requests[0]!.authorization, `Bearer ${TOKEN}`);
    });

    it('an unreadable --ca-file is an error', async () => {
      const r = await run(['--ca-file', join(dir, 'nope.pem'), 'node', 'list']);
      assert.equal(r.code, 1);
      assert.match(
        r.err,
        /^error IPF_E_CONFIG: Configuration --ca-file .*nope\.pem is invalid: cannot be read \(ENOENT\)$/m,
      );
    });
  });
});
