/**
 * Secret files (API tokens, node credentials): created 0600 in a 0700 directory, and refused
 * when anyone but the owner can read them. Their contents never reach argv, logs or errors.
 */
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, open, readFile, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import { IpferryError } from '../core/errors.js';

export async function readSecretFile(path: string): Promise<string> {
  let mode: number;
  try {
    mode = (await stat(path)).mode;
  } catch (e) {
    throw new IpferryError('IPF_E_SECRET_FILE', {
      path,
      problem: `cannot be read (${(e as NodeJS.ErrnoException).code ?? 'error'})`,
    });
  }
  if ((mode & 0o077) !== 0) {
    throw new IpferryError('IPF_E_SECRET_FILE', {
      path,
      problem: `is readable by others (mode ${(mode & 0o777).toString(8).padStart(4, '0')}; it must be 0600)`,
    });
  }
  return readFile(path, 'utf8');
}

/**
 * Reads the token file, creating it with one fresh read-write token when it does not exist,
 * so that a first `ipferry agent` on a host is secure without a setup step. Returns whether it
 * was created (the agent then logs the path, never the token).
 */
export async function ensureTokenFile(path: string): Promise<{ text: string; created: boolean }> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  try {
    const handle = await open(path, 'wx', 0o600);
    const token = randomBytes(32).toString('base64url');
    await handle.writeFile(`${token}\n`);
    await handle.close();
    await chmod(path, 0o600);
    return { text: `${token}\n`, created: true };
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') {
      throw new IpferryError('IPF_E_SECRET_FILE', {
        path,
        problem: `cannot be created (${(e as NodeJS.ErrnoException).code ?? 'error'})`,
      });
    }
  }
  return { text: await readSecretFile(path), created: false };
}
