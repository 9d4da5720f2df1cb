/**
 * Turns the `--store` setting into a Store. Forms:
 *   sqlite:PATH              the embedded store in one file (the parent directory is created,
 *                            mode 0700)
 *   http(s)://HUB:PORT       another agent's store through its API (store/http.ts); needs a
 *                            credential
 *   etcd:http://H:P[,http://H2:P2…]  an etcd 3.4+ cluster, any of its members (store/etcd.ts);
 *                            keys under the namespace /ipferry
 *   etcd:https://H:P[,…]     the same over TLS, with the CA, client certificate and login of
 *                            StoreAccess.etcd (the agent's --etcd-* options)
 *
 * An etcd store is checked with one read before it is returned: access that cannot work fails
 * here, with nothing left open and nothing written.
 */
import { mkdir } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { IpferryError } from '../core/errors.js';
import type { ListResult, Store } from './store.js';

// Each implementation is imported when its scheme is opened: an agent on SQLite does not
// carry the gRPC stack of the etcd client (about 20 MB resident) for nothing.

const EXAMPLE = 'sqlite:/var/lib/ipferry/state.db';

/** What a remote store needs besides its address. */
export interface StoreAccess {
  /** Bearer credential for an http(s) store (this node's, from joining the hub). */
  readonly credential?: string;
  /** PEM CA certificate(s) for an https store. */
  readonly ca?: string | Buffer;
  /** SHA-256 of the hub's certificate, pinned instead of a CA. */
  readonly fingerprint?: string;
  /** TLS material and login for an etcd store, read from their files by the caller. */
  readonly etcd?: EtcdAccess;
}

/** What an etcd store needs besides its endpoints. Secrets: never logged, never in a message. */
export interface EtcdAccess {
  /** PEM CA certificate(s) of the members' server certificates (https:// only). */
  readonly ca?: Buffer;
  /** PEM client certificate and its private key (https:// only; both or neither). */
  readonly cert?: Buffer;
  readonly key?: Buffer;
  /** etcd user and password (both or neither). */
  readonly user?: string;
  readonly password?: string;
}

/** Whether `spec` names a store reached over HTTP (another agent's API). */
export function isHttpStore(spec: string): boolean {
  return /^https?:\/\//i.test(spec);
}

function configError(summary: string): IpferryError {
  return new IpferryError('IPF_E_CONFIG', { source: '--store', summary });
}

export async function openStore(spec: string, access: StoreAccess = {}): Promise<Store> {
  const colon = spec.indexOf(':');
  if (colon <= 0) {
    throw configError(`expected SCHEME:LOCATION such as ${EXAMPLE}, got ${JSON.stringify(spec)}`);
  }
  const scheme = spec.slice(0, colon).toLowerCase();
  const location = spec.slice(colon + 1);
  if (access.etcd !== undefined && scheme !== 'etcd') {
    throw configError(`the etcd options (--etcd-…) need an etcd: store, not ${scheme}:`);
  }
  if (scheme === 'sqlite') return openSqlite(location);
  if (scheme === 'http' || scheme === 'https') {
    if (access.credential === undefined) {
      throw configError(
        `${scheme}: needs this node's credential: start the agent once with --join-token-file`,
      );
    }
    const { openHttpStore } = await import('./http.js');
    return openHttpStore(spec, {
      credential: access.credential,
      ...(access.ca !== undefined ? { ca: access.ca } : {}),
      ...(access.fingerprint !== undefined ? { fingerprint: access.fingerprint } : {}),
    });
  }
  if (scheme === 'etcd') {
    // Catch the URL-like form early: its "host" would otherwise be read as an endpoint URL.
    if (location.startsWith('//')) {
      throw configError(
        `etcd endpoints are URLs after "etcd:": write etcd:http://127.0.0.1:2379, not ${spec}`,
      );
    }
    return openEtcd(location, access.etcd ?? {});
  }
  if (scheme === 'etcds') {
    throw configError('there is no etcds: scheme: write etcd:https://HOST:2379 for etcd over TLS');
  }
  throw configError(`unknown store scheme ${JSON.stringify(scheme)}; use ${EXAMPLE}`);
}

/**
 * Every key under `prefix` at one revision, for a backup: a SQLite file is read without being
 * written (an agent may be running on it), etcd answers one range at one revision. Another
 * agent's store (http) is refused: a node credential cannot read the secrets a restore needs.
 */
export async function readStoreSnapshot(
  spec: string,
  prefix: string,
  access: StoreAccess = {},
): Promise<ListResult> {
  const colon = spec.indexOf(':');
  const scheme = colon > 0 ? spec.slice(0, colon).toLowerCase() : '';
  if (scheme === 'sqlite') {
    const path = spec.slice(colon + 1);
    if (path === '' || path === ':memory:') {
      throw configError(`a snapshot needs the store's file, e.g. ${EXAMPLE}`);
    }
    const { readSqliteSnapshot } = await import('./sqlite.js');
    return readSqliteSnapshot(path, prefix);
  }
  if (scheme === 'http' || scheme === 'https') {
    throw configError(
      `${scheme}: is another agent's store seen through its API: read the hub's own store (its sqlite: file or etcd:) instead`,
    );
  }
  const store = await openStore(spec, access);
  try {
    return await store.list(prefix);
  } finally {
    await store.close();
  }
}

async function openEtcd(location: string, access: EtcdAccess): Promise<Store> {
  const { openEtcdStore, parseEtcdLocation } = await import('./etcd.js');
  const where = parseEtcdLocation(location);
  const { ca, cert, key, user, password } = access;
  if ((cert === undefined) !== (key === undefined)) {
    throw configError(
      'an etcd client certificate (--etcd-cert) needs its key (--etcd-key), and a key its certificate',
    );
  }
  if ((user === undefined) !== (password === undefined)) {
    throw configError(
      'an etcd user (--etcd-user) needs its password (--etcd-password-file), and a password its user',
    );
  }
  if (!where.tls && (ca !== undefined || cert !== undefined)) {
    // TLS material with plain endpoints would be ignored: the operator believes in a TLS
    // connection that is not there.
    throw configError(
      `--etcd-ca, --etcd-cert and --etcd-key are for TLS: write the endpoints as https://, not etcd:${location}`,
    );
  }
  if (!where.tls && user !== undefined && !where.loopback) {
    throw configError(
      `etcd over http:// would carry the password of --etcd-user in clear across the network: write the endpoints as https:// (etcd with --cert-file), or reach etcd on this host`,
    );
  }
  const store = await openEtcdStore(where.endpoints, {
    ...(where.tls
      ? {
          tls: {
            ...(ca !== undefined ? { ca } : {}),
            ...(cert !== undefined && key !== undefined ? { cert, key } : {}),
          },
        }
      : {}),
    ...(user !== undefined && password !== undefined ? { auth: { user, password } } : {}),
  });
  try {
    await store.check();
  } catch (e) {
    await store.close();
    throw e;
  }
  return store;
}

async function openSqlite(path: string): Promise<Store> {
  if (path === '') throw configError(`sqlite: needs a file path, e.g. ${EXAMPLE}`);
  // ':memory:' is SQLite's private in-memory database: handy for tests, nothing to create.
  if (path !== ':memory:') {
    // 0700: the state names every address and node; only the agent's user needs to read it.
    // (The mode applies to directories created here; existing ones are left as they are.)
    const dir = dirname(resolve(path));
    try {
      await mkdir(dir, { recursive: true, mode: 0o700 });
    } catch (e) {
      throw configError(`cannot create ${dir}: ${e instanceof Error ? e.message : String(e)}`);
    }
  }
  const { openSqliteStore } = await import('./sqlite.js');
  return openSqliteStore(path);
}
