/**
 * A remote agent's access to its hub's store (`--store https://HUB:PORT`): the node credential
 * in `--credential-file` (JSON, mode 0600), obtained on the first start by presenting the join
 * token of `--join-token-file` to the hub (api/join.ts). Later starts read the file and need no
 * join token. The file also keeps the hub certificate's fingerprint from the token, so every
 * later connection stays pinned to the same certificate.
 *
 * The credential and the token are secrets: they are never logged, put in argv or in an error.
 */
import { chmod, mkdir, open, rename, stat, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import { IpferryError } from '../core/errors.js';
import { decodeJoinToken, parseNodeCredential } from '../core/join.js';
import { isHttpStore, type StoreAccess } from '../store/open.js';
import type { AgentConfig } from './config.js';
import { readSecretFile } from './secrets.js';

interface CredentialFile {
  readonly node: string;
  readonly credential: string;
  readonly fingerprint?: string;
}

type Config = Pick<AgentConfig, 'node' | 'store' | 'credentialFile' | 'joinTokenFile'>;

/**
 * What openStore needs for `config.store`: nothing for a local store; for an http(s) store the
 * node credential, joining the hub first if there is none yet. `joined` says it just did.
 */
export async function storeAccess(
  config: Config,
): Promise<{ access: StoreAccess; joined: boolean }> {
  if (!isHttpStore(config.store)) return { access: {}, joined: false };
  const saved = await readCredentialFile(config);
  if (saved) return { access: accessOf(saved), joined: false };
  if (config.joinTokenFile === undefined) {
    throw new IpferryError('IPF_E_CONFIG', {
      source: '--store',
      summary: `${config.store} needs this node's credential, and ${config.credentialFile} does not exist: create a join token on the hub (ipferry node join-token create) and start once with --join-token-file`,
    });
  }
  return { access: accessOf(await join(config, config.joinTokenFile)), joined: true };
}

function accessOf(saved: CredentialFile): StoreAccess {
  return {
    credential: saved.credential,
    ...(saved.fingerprint !== undefined ? { fingerprint: saved.fingerprint } : {}),
  };
}

async function readCredentialFile(config: Config): Promise<CredentialFile | undefined> {
  const path = config.credentialFile;
  try {
    await stat(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
  }
  const text = await readSecretFile(path);
  const saved = parseCredentialFile(text);
  if (!saved) {
    throw new IpferryError('IPF_E_SECRET_FILE', {
      path,
      problem:
        'is not a node credential file (JSON with node and credential, written when the agent joined its hub)',
    });
  }
  if (saved.node !== config.node) {
    throw new IpferryError('IPF_E_CONFIG', {
      source: '--credential-file',
      summary: `${path} holds the credential of node ${saved.node}, not of ${config.node}`,
    });
  }
  return saved;
}

function parseCredentialFile(text: string): CredentialFile | undefined {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch {
    return undefined;
  }
  const { node, credential, fingerprint } = (data ?? {}) as Record<string, unknown>;
  if (typeof node !== 'string' || typeof credential !== 'string') return undefined;
  if (parseNodeCredential(credential)?.node !== node) return undefined;
  if (fingerprint !== undefined && typeof fingerprint !== 'string') return undefined;
  return { node, credential, ...(fingerprint !== undefined ? { fingerprint } : {}) };
}

/**
 * Presents the join token and saves the credential. The file is created (0600, in a 0700
 * directory) before the hub is asked, so a join never consumes the token for a credential that
 * then cannot be written; on any failure it is removed again.
 */
async function join(config: Config, tokenFile: string): Promise<CredentialFile> {
  const text = (await readSecretFile(tokenFile)).trim();
  const token = decodeJoinToken(text);
  if (!token) {
    throw new IpferryError('IPF_E_SECRET_FILE', {
      path: tokenFile,
      problem:
        'does not hold a join token (one line ipfjoin1.…, as `ipferry node join-token create` prints it)',
    });
  }
  if (token.fingerprint !== undefined && !/^https:\/\//i.test(config.store)) {
    throw new IpferryError('IPF_E_CONFIG', {
      source: '--store',
      summary: `the join token pins the hub's TLS certificate: use https://, not ${config.store}`,
    });
  }
  const path = config.credentialFile;
  const partial = `${path}.joining`;
  try {
    await mkdir(dirname(path), { recursive: true, mode: 0o700 });
    // Left by a join that was killed half-way: start over.
    await unlink(partial).catch(() => undefined);
    const handle = await open(partial, 'wx', 0o600);
    try {
      // Only a remote node joins: the http store's client is loaded for that alone.
      const { joinHub } = await import('../store/http.js');
      const credential = await joinHub(config.store, {
        token: text,
        node: config.node,
        ...(token.fingerprint !== undefined ? { fingerprint: token.fingerprint } : {}),
      });
      const saved: CredentialFile = {
        node: config.node,
        credential,
        ...(token.fingerprint !== undefined ? { fingerprint: token.fingerprint } : {}),
      };
      await handle.writeFile(`${JSON.stringify(saved)}\n`);
      await handle.sync();
      await handle.close();
      await chmod(partial, 0o600);
      await rename(partial, path);
      return saved;
    } catch (e) {
      await handle.close().catch(() => undefined);
      throw e;
    }
  } catch (e) {
    await unlink(partial).catch(() => undefined);
    if (e instanceof IpferryError) throw e;
    throw new IpferryError('IPF_E_SECRET_FILE', {
      path,
      problem: `cannot be created (${(e as NodeJS.ErrnoException).code ?? 'error'})`,
    });
  }
}
