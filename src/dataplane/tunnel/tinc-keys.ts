/**
 * tinc's keys: the node's RSA key pair (2048 bits) is made with node:crypto on first use; the
 * private key is `stateDir/tinc/rsa_key.priv` (0600 in a 0700 directory), named to tincd by path
 * (`PrivateKeyFile`), never put in argv, a log line or an error message. Public keys are PKCS#1
 * PEM, as tinc 1.0's host files hold them.
 */
import {
  createPrivateKey,
  createPublicKey,
  generateKeyPair as generateKeyPairCallback,
  type KeyObject,
} from 'node:crypto';
import { lstat, readFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { IpferryError } from '../../core/errors.js';
import { isTincKey } from '../../core/tunnel.js';
import { dataplaneError } from './common.js';
import { writePrivateKey } from './keys.js';

const generateKeyPairAsync = promisify(generateKeyPairCallback);

function keyError(path: string, problem: string): IpferryError {
  return new IpferryError('IPF_E_TUNNEL_KEY', { path, problem });
}

/**
 * The public key of the RSA key pair kept in `path`, made on first use (its directory must
 * exist). The private key stays in the file: tincd is handed the path.
 */
export async function ensureRsaKeyFile(
  path: string,
): Promise<{ publicKey: string; created: boolean }> {
  try {
    return { publicKey: await loadPublicKey(path), created: false };
  } catch (error) {
    if (!(error instanceof IpferryError) || error.params.problem !== 'does not exist') {
      throw error;
    }
  }
  const { privateKey } = await generateKeyPairAsync('rsa', { modulusLength: 2048 });
  const pem = privateKey.export({ type: 'pkcs1', format: 'pem' }).toString();
  // Someone else made it first: theirs is the key.
  if (!(await writePrivateKey(path, pem.trimEnd()))) {
    return { publicKey: await loadPublicKey(path), created: false };
  }
  return { publicKey: publicPem(privateKey), created: true };
}

/**
 * The PKCS#1 PEM public key of the RSA private key in `path`, refusing a file that others can
 * read or write, a symbolic link, or content that is not an RSA key (never quoting it).
 */
export async function loadPublicKey(path: string): Promise<string> {
  const info = await lstat(path).catch((error: NodeJS.ErrnoException) => {
    throw keyError(
      path,
      error.code === 'ENOENT' ? 'does not exist' : `cannot be read (${error.code ?? 'error'})`,
    );
  });
  if (!info.isFile()) throw keyError(path, 'is not a regular file');
  if ((info.mode & 0o077) !== 0) {
    throw keyError(path, `has mode ${(info.mode & 0o777).toString(8)}, not 600`);
  }
  let key: KeyObject;
  try {
    key = createPrivateKey({ key: await readFile(path), format: 'pem' });
  } catch {
    throw keyError(path, 'does not hold an RSA private key');
  }
  if (key.asymmetricKeyType !== 'rsa') throw keyError(path, 'does not hold an RSA private key');
  return publicPem(key);
}

function publicPem(privateKey: KeyObject): string {
  const pem = createPublicKey(privateKey).export({ type: 'pkcs1', format: 'pem' }).toString();
  if (!isTincKey(pem)) throw dataplaneError('node:crypto made an RSA key tinc cannot read');
  return pem;
}
