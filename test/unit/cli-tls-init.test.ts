/**
 * `ipferry tls init`: the certificate it makes is served by a real agent (in-process, fake
 * dataplane), trusted by the CLI's client with --ca-file at every name it was made for, and is
 * what join tokens pin; the key is 0600; an existing pair is never replaced without --force.
 */
import assert from 'node:assert/strict';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { resolveConfig } from '../../src/agent/config.js';
import { type RunningAgent, startAgent } from '../../src/agent/run.js';
import { main } from '../../src/cli/main.js';
import { ApiClient } from '../../src/client/api-client.js';
import { decodeJoinToken } from '../../src/core/join.js';
import { FakeDataplane } from '../../src/dataplane/fake.js';
import { tempDir } from '../support/helpers.js';

async function ipferry(args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await main(
    ['node', 'ipferry', ...args],
    { out: (s) => (out += s), err: (s) => (err += s) },
    {},
  );
  return { code, out, err };
}

const mode = (path: string): number => statSync(path).mode & 0o777;

let tmp: { dir: string; remove: () => Promise<void> };
let tlsDir: string;
let made: { code: number; out: string; err: string };

before(async () => {
  tmp = await tempDir('tls-init');
  tlsDir = join(tmp.dir, 'etc', 'tls');
  made = await ipferry([
    'tls',
    'init',
    '--dir',
    tlsDir,
    '--name',
    'gw1.example.net',
    '--name',
    '192.0.2.1',
    '--name',
    '2001:DB8::1',
    '--days',
    '30',
  ]);
});

after(async () => {
  await tmp.remove();
});

describe('ipferry tls init', () => {
  it('makes cert.pem (0644) and key.pem (0600) that belong together, valid for --days', () => {
    assert.equal(made.code, 0, made.err);
    const cert = join(tlsDir, 'cert.pem');
    const key = join(tlsDir, 'key.pem');
    assert.equal(mode(key), 0o600);
    assert.equal(mode(cert), 0o644);
    const x509 = new X509Certificate(readFileSync(cert));
    assert.ok(x509.checkPrivateKey(createPrivateKey(readFileSync(key))));
    assert.ok(x509.ca, 'its own CA, so that clients can trust it as their --ca-file');
    assert.ok(x509.verify(x509.publicKey), 'self-signed');
    const days = (Date.parse(x509.validTo) - Date.parse(x509.validFrom)) / 86_400_000;
    assert.ok(Math.abs(days - 30) < 1, `valid ${days} days`);
  });

  it('names every --name and the loopback names in subjectAltName (IPv6 canonical)', () => {
    const x509 = new X509Certificate(readFileSync(join(tlsDir, 'cert.pem')));
    const sans = (x509.subjectAltName ?? '').split(', ').sort();
    assert.deepEqual(
      sans,
      [
        'DNS:gw1.example.net',
        'DNS:localhost',
        'IP Address:127.0.0.1',
        'IP Address:192.0.2.1',
        'IP Address:2001:DB8:0:0:0:0:0:1',
        'IP Address:0:0:0:0:0:0:0:1',
      ].sort(),
    );
    assert.match(x509.subject, /CN=gw1\.example\.net/);
  });

  it('prints the fingerprint and the lines that serve and trust it', () => {
    const x509 = new X509Certificate(readFileSync(join(tlsDir, 'cert.pem')));
    const hex = x509.fingerprint256.replaceAll(':', '').toLowerCase();
    assert.match(made.out, new RegExp(`^sha256 +${hex}$`, 'm'));
    assert.match(made.out, new RegExp(`tlsCert: ${join(tlsDir, 'cert.pem')}`));
    assert.match(made.out, new RegExp(`tlsKey: ${join(tlsDir, 'key.pem')}`));
    assert.match(
      made.out,
      new RegExp(`--server https://gw1\\.example\\.net:7447 --ca-file ${join(tlsDir, 'cert.pem')}`),
    );
  });

  describe('served by an agent', () => {
    let agent: RunningAgent;
    let token: string;

    before(async () => {
      agent = await startAgent(
        resolveConfig(
          {},
          {
            node: 'gw1',
            store: 'sqlite::memory:',
            listen: '127.0.0.1:0',
            tokenFile: join(tmp.dir, 'api-token'),
            tlsCert: join(tlsDir, 'cert.pem'),
            tlsKey: join(tlsDir, 'key.pem'),
            logLevel: 'silent',
          },
          'test',
        ),
        { dataplane: new FakeDataplane() },
      );
      token = readFileSync(join(tmp.dir, 'api-token'), 'utf8').trim();
    });
    after(async () => {
      await agent?.stop();
    });

    it('is trusted with --ca-file at 127.0.0.1 and at localhost; without it, not', async () => {
      const port = new URL(agent.url).port;
      assert.equal(new URL(agent.url).protocol, 'https:');
      const ca = readFileSync(join(tlsDir, 'cert.pem'), 'utf8');
      for (const host of ['127.0.0.1', 'localhost']) {
        const client = new ApiClient({ server: `https://${host}:${port}`, token, ca });
        assert.deepEqual(
          (await client.listNodes()).map((n) => n.name),
          ['gw1'],
          host,
        );
      }
      const untrusted = new ApiClient({ server: `https://127.0.0.1:${port}`, token });
      await assert.rejects(untrusted.listNodes(), /not trusted/);
    });

    it('join tokens carry its fingerprint, the one tls init printed', async () => {
      const port = new URL(agent.url).port;
      const ca = readFileSync(join(tlsDir, 'cert.pem'), 'utf8');
      const client = new ApiClient({ server: `https://127.0.0.1:${port}`, token, ca });
      const created = await client.createJoinToken({ node: 'home1' });
      const printed = /^sha256 +([0-9a-f]{64})$/m.exec(made.out)?.[1];
      assert.ok(printed);
      assert.equal(created.fingerprint, printed);
      assert.equal(decodeJoinToken(created.token)?.fingerprint, printed);
    });
  });

  it('refuses to replace an existing pair without --force, and leaves it as it was', async () => {
    const before = readFileSync(join(tlsDir, 'cert.pem'), 'utf8');
    const keyBefore = readFileSync(join(tlsDir, 'key.pem'), 'utf8');
    const again = await ipferry(['tls', 'init', '--dir', tlsDir]);
    assert.equal(again.code, 1);
    assert.match(again.err, /^error IPF_E_TLS: TLS setup failed: .*cert\.pem exists$/m);
    assert.match(again.err, /--force/);
    assert.equal(again.out, '');
    assert.equal(readFileSync(join(tlsDir, 'cert.pem'), 'utf8'), before);
    assert.equal(readFileSync(join(tlsDir, 'key.pem'), 'utf8'), keyBefore);
  });

  it('replaces the pair with --force, leaving no temporary files', async () => {
    const before = readFileSync(join(tlsDir, 'cert.pem'), 'utf8');
    const forced = await ipferry(['tls', 'init', '--dir', tlsDir, '--force', '--name', 'gw2']);
    assert.equal(forced.code, 0, forced.err);
    assert.notEqual(readFileSync(join(tlsDir, 'cert.pem'), 'utf8'), before);
    assert.equal(mode(join(tlsDir, 'key.pem')), 0o600);
    const { readdirSync } = await import('node:fs');
    assert.deepEqual(readdirSync(tlsDir).sort(), ['cert.pem', 'key.pem']);
  });

  it('a directory it cannot make is an IPF_E_TLS error naming it, not an internal one', async () => {
    const file = join(tmp.dir, 'a-file');
    writeFileSync(file, '');
    const r = await ipferry(['tls', 'init', '--dir', join(file, 'tls')]);
    assert.equal(r.code, 1);
    assert.match(
      r.err,
      /^error IPF_E_TLS: TLS setup failed: cannot write .*a-file\/tls \(ENOTDIR\)$/m,
    );
    assert.match(r.err, /give --dir a directory you may write/);
  });

  it('refuses bad --name and --days with a usage error (exit 2), writing nothing', async () => {
    const dir = join(tmp.dir, 'never');
    const bad = await ipferry(['tls', 'init', '--dir', dir, '--name', 'a b', '--days', '0']);
    assert.equal(bad.code, 2);
    assert.match(bad.err, /--name "a b" is neither an IP address nor a DNS name/);
    assert.match(bad.err, /--days must be a whole number of days from 1 to 36500, not 0/);
    assert.throws(() => statSync(dir), /ENOENT/);
  });
});
