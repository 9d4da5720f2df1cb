/**
 * WireGuard keys: x25519 key pairs made with node:crypto, in WireGuard's text form (base64 of
 * the raw 32 bytes, the private key clamped like `wg genkey` does), so `wg pubkey` agrees with
 * publicKeyOf. The private key lives in a 0600 file inside a 0700 directory on its own node and
 * goes to `wg` only as that file's path: never through argv, a log line or an error message.
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes } from 'node:crypto';
import { chmod, link, lstat, mkdir, open, readFile, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import { IpferryError, validationError } from '../../core/errors.js';
import { isWireGuardKey } from '../../core/tunnel.js';

export interface KeyPair {
  readonly privateKey: string;
  readonly publicKey: string;
}

// PKCS#8 wrapping of a raw X25519 private key (RFC 8410): the fixed header, then the 32 bytes.
const PKCS8_X25519_HEADER = Buffer.from('302e020100300506032b656e04220420', 'hex');

function keyError(path: string, problem: string): IpferryError {
  return new IpferryError('IPF_E_TUNNEL_KEY', { path, problem });
}

/** A fresh key pair; the private key's bytes are clamped as X25519 uses them. */
export function generateKeyPair(): KeyPair {
  const { privateKey } = generateKeyPairSync('x25519');
  const jwk = privateKey.export({ format: 'jwk' });
  const raw = Buffer.from(jwk.d ?? '', 'base64url');
  raw[0] = (raw[0] ?? 0) & 248;
  raw[31] = ((raw[31] ?? 0) & 127) | 64;
  const text = raw.toString('base64');
  raw.fill(0);
  return { privateKey: text, publicKey: publicKeyOf(text) };
}

/** The public key of a base64 private key, as `wg pubkey` prints it. */
export function publicKeyOf(privateKey: string): string {
  const raw = Buffer.from(privateKey, 'base64');
  if (!isWireGuardKey(privateKey) || raw.length !== 32) {
    // The key itself is never quoted.
    throw validationError([
      { path: 'privateKey', message: 'is not a WireGuard key (base64 of 32 bytes)' },
    ]);
  }
  const der = Buffer.concat([PKCS8_X25519_HEADER, raw]);
  const key = createPrivateKey({ key: der, format: 'der', type: 'pkcs8' });
  der.fill(0);
  raw.fill(0);
  return Buffer.from(createPublicKey(key).export({ format: 'jwk' }).x ?? '', 'base64url').toString(
    'base64',
  );
}

/**
 * Creates `path` holding `privateKey`, atomically and without replacing an existing file: the
 * key is written to a temporary 0600 file in the same 0700 directory, synced, then hard-linked
 * into place (which fails when the file already exists, so two writers never mix keys).
 * Returns false when `path` already existed.
 */
export async function writePrivateKey(path: string, privateKey: string): Promise<boolean> {
  await ensurePrivateDir(dirname(path));
  const temporary = `${path}.tmp-${randomBytes(6).toString('hex')}`;
  const file = await open(temporary, 'wx', 0o600);
  try {
    await file.chmod(0o600);
    await file.writeFile(`${privateKey}\n`);
    await file.sync();
  } finally {
    await file.close();
  }
  try {
    await link(temporary, path);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw error;
  } finally {
    await unlink(temporary).catch(() => undefined);
  }
}

/** Makes `dir` (and its parents) and ensures it is ours alone: 0700, a real directory. */
export async function ensurePrivateDir(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const stat = await lstat(dir);
  if (!stat.isDirectory()) throw keyError(dir, 'is not a directory');
  if ((stat.mode & 0o077) !== 0) await chmod(dir, 0o700);
}

/**
 * Reads a private key file, refusing one that others can read or write, a symbolic link, or
 * content that is not a key (without ever quoting the content).
 */
export async function loadPrivateKey(path: string): Promise<string> {
  const stat = await lstat(path).catch((error: NodeJS.ErrnoException) => {
    throw keyError(
      path,
      error.code === 'ENOENT' ? 'does not exist' : `cannot be read (${error.code ?? 'error'})`,
    );
  });
  if (!stat.isFile()) throw keyError(path, 'is not a regular file');
  if ((stat.mode & 0o077) !== 0) {
    throw keyError(path, `has mode ${(stat.mode & 0o777).toString(8)}, not 600`);
  }
  const text = (await readFile(path, 'utf8')).trim();
  if (!isWireGuardKey(text)) throw keyError(path, 'does not hold a WireGuard key');
  return text;
}

/**
 * The key pair kept in `path`, made on first use. The private key stays in the file: callers
 * get the public half and hand `wg` the path.
 */
export async function ensureKeyFile(
  path: string,
): Promise<{ publicKey: string; created: boolean }> {
  try {
    return { publicKey: publicKeyOf(await loadPrivateKey(path)), created: false };
  } catch (error) {
    if (!(error instanceof IpferryError) || error.params.problem !== 'does not exist') throw error;
  }
  const pair = generateKeyPair();
  const created = await writePrivateKey(path, pair.privateKey);
  // Someone else made it first: theirs is the key.
  if (!created) return { publicKey: publicKeyOf(await loadPrivateKey(path)), created: false };
  return { publicKey: pair.publicKey, created: true };
}
