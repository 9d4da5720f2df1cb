import assert from 'node:assert/strict';
import { chmod, lstat, readdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { IpferryError } from '../../src/core/errors.js';
import { isWireGuardKey } from '../../src/core/tunnel.js';
import { run } from '../../src/dataplane/exec.js';
import {
  ensureKeyFile,
  generateKeyPair,
  loadPrivateKey,
  publicKeyOf,
  writePrivateKey,
} from '../../src/dataplane/tunnel/keys.js';
import { tempDir } from '../support/helpers.js';

async function wgPubkey(privateKey: string): Promise<string> {
  return (await run('wg', ['pubkey'], { input: `${privateKey}\n` })).stdout.trim();
}

async function rejects(promise: Promise<unknown>, code: string, secret?: string): Promise<void> {
  await assert.rejects(promise, (e: unknown) => {
    assert.ok(e instanceof IpferryError);
    assert.equal(e.code, code);
    if (secret !== undefined) {
      assert.ok(!JSON.stringify({ m: e.message, h: e.hint, p: e.params }).includes(secret));
    }
    return true;
  });
}

describe('WireGuard keys', () => {
  let dir = '';
  let remove: () => Promise<void> = () => Promise.resolve();
  before(async () => ({ dir, remove } = await tempDir('tunnel-keys')));
  after(() => remove());

  it('makes x25519 pairs whose public key is what `wg pubkey` computes', async () => {
    for (let i = 0; i < 5; i++) {
      const pair = generateKeyPair();
      assert.ok(isWireGuardKey(pair.privateKey) && isWireGuardKey(pair.publicKey));
      assert.notEqual(pair.privateKey, pair.publicKey);
      assert.equal(await wgPubkey(pair.privateKey), pair.publicKey);
      // Clamped like `wg genkey`: low three bits clear, top bit clear, second-highest set.
      const raw = Buffer.from(pair.privateKey, 'base64');
      assert.equal((raw[0] ?? 1) & 7, 0);
      assert.equal((raw[31] ?? 0) & 0xc0, 0x40);
    }
  });

  it('derives the public key of a key made by `wg genkey`', async () => {
    const privateKey = (await run('wg', ['genkey'])).stdout.trim();
    assert.equal(publicKeyOf(privateKey), await wgPubkey(privateKey));
  });

  it('refuses to derive from something that is not a key, without quoting it', () => {
    assert.throws(
      () => publicKeyOf('not-a-key-but-secret'),
      (e: unknown) =>
        e instanceof IpferryError &&
        e.code === 'IPF_E_VALIDATION' &&
        !e.message.includes('not-a-key-but-secret'),
    );
  });

  it('stores the private key 0600 in a 0700 directory, atomically, never replacing one', async () => {
    const keys = join(dir, 'state', 'wireguard');
    const path = join(keys, 'private.key');
    const first = generateKeyPair();
    assert.equal(await writePrivateKey(path, first.privateKey), true);
    assert.equal((await lstat(path)).mode & 0o777, 0o600);
    assert.equal((await lstat(keys)).mode & 0o777, 0o700);
    assert.equal(await writePrivateKey(path, generateKeyPair().privateKey), false);
    assert.equal(await loadPrivateKey(path), first.privateKey);
    assert.deepEqual(await readdir(keys), ['private.key']);
  });

  it('makes a key once and then keeps it', async () => {
    const path = join(dir, 'node', 'private.key');
    const made = await ensureKeyFile(path);
    assert.equal(made.created, true);
    assert.equal(await wgPubkey(await readFile(path, 'utf8')), made.publicKey);
    const again = await ensureKeyFile(path);
    assert.deepEqual(again, { publicKey: made.publicKey, created: false });
    const racing = await Promise.all([1, 2, 3].map(() => ensureKeyFile(join(dir, 'race.key'))));
    assert.equal(racing.filter((r) => r.created).length, 1);
    assert.equal(new Set(racing.map((r) => r.publicKey)).size, 1);
  });

  it('refuses a key file others can read, a link, or garbage, never quoting the content', async () => {
    const pair = generateKeyPair();
    const loose = join(dir, 'loose.key');
    await writeFile(loose, pair.privateKey, { mode: 0o600 });
    await chmod(loose, 0o644);
    await rejects(loadPrivateKey(loose), 'IPF_E_TUNNEL_KEY', pair.privateKey);
    await rejects(ensureKeyFile(loose), 'IPF_E_TUNNEL_KEY', pair.privateKey);
    const linked = join(dir, 'linked.key');
    await symlink(join(dir, 'node', 'private.key'), linked);
    await rejects(loadPrivateKey(linked), 'IPF_E_TUNNEL_KEY');
    const garbage = join(dir, 'garbage.key');
    await writeFile(garbage, 'hunter2-secret\n', { mode: 0o600 });
    await rejects(loadPrivateKey(garbage), 'IPF_E_TUNNEL_KEY', 'hunter2');
    await rejects(loadPrivateKey(join(dir, 'missing.key')), 'IPF_E_TUNNEL_KEY');
  });
});
