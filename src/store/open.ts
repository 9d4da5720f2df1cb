/**
 * Turns the `--store` setting into a Store. Forms:
 *   sqlite:PATH              the embedded store in one file (the parent directory is created,
 *                            mode 0700)
 *   http(s)://HUB:PORT       another agent's store through its API (store/http.ts); needs a
 *                            credential
 *   etcd:http://H:P[,http://H2:P2…]  an etcd 3.4+ cluster, any of its members (store/etcd.ts);
 *                            keys under the namespace /ipferry
 */
import { mkdir } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { IpferryError } from '../core/errors.js';
import type { Store } from './store.js';

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
    const { openEtcdStore, parseEtcdEndpoints } = await import('./etcd.js');
    return openEtcdStore(parseEtcdEndpoints(location));
  }
  if (scheme === 'etcds') {
    throw configError(
      'there is no etcds: scheme, and etcd over TLS is not supported yet: write etcd:http://HOST:2379',
    );
  }
  throw configError(`unknown store scheme ${JSON.stringify(scheme)}; use ${EXAMPLE}`);
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
