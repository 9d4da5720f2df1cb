/**
 * Joining a remote agent to this hub (the agent whose store it will follow).
 *
 * 1. An admin asks for a join token (`POST /v1/nodes/join-tokens`, `ipferry node join-token
 *    create`): a random secret, of which the hub keeps only the SHA-256 under keys.joinToken,
 *    attached to a lease of the token's TTL so that it disappears by itself. The answer encodes
 *    the secret with the hub's URLs and, when the API serves TLS, its certificate's SHA-256, so
 *    the remote agent pins the hub on first contact without a CA (core/join.ts). When a URL is
 *    not https, the answer carries a `warning` (plainTextWarning), which the CLI prints.
 * 2. The remote agent presents it once (`POST /v1/join`, no bearer token) with its node name and
 *    gets a per-node credential; the hub keeps only its SHA-256 under keys.nodeCredential(node)
 *    and deletes the join token in the same transaction (single use). Refusals write nothing.
 * 3. From then on the credential is the node's bearer token for /v1/store (store-routes.ts says
 *    what it may do there) and nothing else.
 *
 * A token created for a node (`--node NAME`) joins only that name, and may re-join it (a new
 * credential replaces the old one). A token without a node joins only a name that is neither
 * registered nor joined, so it can never take over an existing node.
 */
import { randomBytes } from 'node:crypto';
import { networkInterfaces } from 'node:os';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { IpferryError } from '../core/errors.js';
import {
  decodeJoinToken,
  encodeJoinToken,
  encodeNodeCredential,
  parseNodeCredential,
} from '../core/join.js';
import { tryParseAddress, tryParsePrefix } from '../core/address.js';
import { keys } from '../core/keys.js';
import { checkName, Problems } from '../core/validate.js';
import type { Compare, KeyValue, Store } from '../store/store.js';
import { JOIN_ROUTE, STORE_SCHEMAS, type JoinRequest, type JoinResponse } from '../store/wire.js';
import { trackWrites } from '../service/write-revision.js';
import { callerOf, digestHex, matchesDigest } from './auth.js';
import type { Api, JoinTokenResponse, JoinTokenWarning } from './contract.js';
import { REVISION_HEADER } from './paths.js';
import type { Handler } from './routes.js';
import { JOIN_TOKEN_MAX_URLS as MAX_URLS } from './schemas.js';

export { JOIN_TOKEN_TTL_MAX_SECONDS } from './schemas.js';
export const JOIN_TOKEN_TTL_DEFAULT_SECONDS = 3600;

interface JoinTokenRecord {
  readonly node?: string;
  /** Prefixes the node may register its addresses in (core/node-writes.ts); absent: any. */
  readonly allowAddresses?: readonly string[];
  readonly createdAt: string;
  readonly expiresAt: string;
}

export interface NodeCredentialRecord {
  readonly node: string;
  /** From the join token: prefixes the node may register its addresses in. */
  readonly allowAddresses?: readonly string[];
  /** SHA-256 (hex) of the credential's secret part. */
  readonly sha256: string;
  readonly createdAt: string;
}

export interface JoinOptions {
  readonly store: Store;
  /** Whether the API serves HTTPS, and the SHA-256 (hex) of its certificate if so. */
  readonly tls?: { readonly fingerprint: string };
  readonly now?: () => number;
}

const joinSchema = {
  tags: ['nodes'],
  summary: 'Exchange a join token for a node credential (no bearer token)',
  security: [],
  body: STORE_SCHEMAS.join.body,
  response: { 200: STORE_SCHEMAS.join.response },
};

function refused(reason: string): IpferryError {
  return new IpferryError('IPF_E_JOIN_REFUSED', { reason });
}

const UNKNOWN = 'it is unknown, expired or already used';

function newSecret(): string {
  return randomBytes(32).toString('base64url');
}

function parseRecord<T>(kv: KeyValue | undefined): Partial<T> | undefined {
  if (!kv) return undefined;
  try {
    const value: unknown = JSON.parse(kv.value);
    return typeof value === 'object' && value !== null ? value : undefined;
  } catch {
    return undefined;
  }
}

/** The node a presented node credential belongs to, or undefined if it is not a valid one. */
export async function verifyNodeCredential(
  store: Store,
  presented: string,
): Promise<string | undefined> {
  const parsed = parseNodeCredential(presented);
  if (!parsed) return undefined;
  const record = parseRecord<NodeCredentialRecord>(
    await store.get(keys.nodeCredential(parsed.node)),
  );
  if (typeof record?.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(record.sha256)) return undefined;
  return matchesDigest(parsed.secret, record.sha256) ? parsed.node : undefined;
}

/** `POST /v1/nodes/join-tokens` (contract.ts), for an admin with a read-write token only. */
export function createJoinTokenHandler(
  app: FastifyInstance,
  options: JoinOptions,
): Handler<Api['createJoinToken']> {
  const { store } = options;
  const now = options.now ?? Date.now;

  return async (request, reply) => {
    const caller = callerOf(request);
    if (caller.kind !== 'admin' || caller.access !== 'rw') {
      throw new IpferryError('IPF_E_FORBIDDEN', {
        reason: 'only an admin token creates join tokens',
      });
    }
    const body = request.body;
    const p = new Problems();
    const node = body.node === undefined ? undefined : checkName(p, 'node', body.node);
    const allowAddresses = body.allowAddresses?.map((text, i) => {
      // A bare address is its own /32 or /128.
      const address = text.includes('/') ? undefined : tryParseAddress(text);
      const prefix = tryParsePrefix(
        address ? `${address.text}/${address.family === 4 ? 32 : 128}` : text,
        false,
      );
      if (!prefix) p.add(`allowAddresses[${i}]`, `${JSON.stringify(text)} is not a prefix`);
      return prefix?.text ?? text;
    });
    p.done();
    const ttlSeconds = body.ttlSeconds ?? JOIN_TOKEN_TTL_DEFAULT_SECONDS;
    const urls = body.urls ?? defaultUrls(app, request, options.tls !== undefined);
    const secret = newSecret();
    const created = now();
    const record: JoinTokenRecord = {
      ...(node ? { node } : {}),
      ...(allowAddresses ? { allowAddresses } : {}),
      createdAt: new Date(created).toISOString(),
      expiresAt: new Date(created + ttlSeconds * 1000).toISOString(),
    };
    const lease = await store.grantLease(ttlSeconds);
    try {
      await store.txn({
        compare: [],
        success: [
          {
            type: 'put',
            key: keys.joinToken(digestHex(secret)),
            value: JSON.stringify(record),
            lease,
          },
        ],
      });
    } catch (e) {
      await store.revokeLease(lease).catch(() => undefined);
      throw e;
    }
    const fingerprint = options.tls?.fingerprint;
    const warning = plainTextWarning(urls, options.tls !== undefined);
    const answer: JoinTokenResponse = {
      token: encodeJoinToken({ urls, secret, ...(fingerprint ? { fingerprint } : {}) }),
      expiresAt: record.expiresAt,
      urls,
      ...(node ? { node } : {}),
      ...(fingerprint ? { fingerprint } : {}),
      ...(warning ? { warning } : {}),
    };
    if (warning)
      request.log.warn({ urls: warning.urls }, 'join token with URLs that are not https');
    reply.status(201).header('cache-control', 'no-store');
    return answer;
  };
}

/**
 * Why a token whose URLs are not all https is unsafe, or undefined when they are. The secret in
 * it, the credential the node gets for it and every store read and write of that node would
 * travel unencrypted, to whoever answers at the address (no certificate pins the hub).
 */
export function plainTextWarning(
  urls: readonly string[],
  servesTls: boolean,
): JoinTokenWarning | undefined {
  const plain = urls.filter((u) => !/^https:\/\//i.test(u));
  if (plain.length === 0) return undefined;
  return {
    message: `${plain.join(', ')} ${plain.length === 1 ? 'is' : 'are'} not https: this join token, the node credential it is exchanged for and all of the node's store traffic would travel in clear text, readable and changeable on the way.`,
    hint: servesTls
      ? 'This agent serves HTTPS: create the token with https:// URLs (--url https://HOST:PORT).'
      : 'Serve the API over TLS (ipferry agent --tls-cert FILE --tls-key FILE) and create a new token, or use this one only across a network you trust.',
    urls: plain,
  };
}

/** `POST /v1/join` (store/wire.ts): a join token for a node credential, without a bearer token. */
export function registerJoinRoutes(app: FastifyInstance, options: JoinOptions): void {
  const { store } = options;
  const now = options.now ?? Date.now;

  app.post(
    JOIN_ROUTE,
    { schema: joinSchema, serializerCompiler: () => JSON.stringify },
    async (request, reply): Promise<JoinResponse> => {
      // The revision it wrote, for the audit trail as for every write (events.ts).
      const { value, revision } = await trackWrites(() =>
        joinNode(store, request.body as JoinRequest, now),
      );
      if (revision !== undefined) reply.header(REVISION_HEADER, String(revision));
      request.log.info({ node: value.node }, 'node joined');
      reply.header('cache-control', 'no-store');
      return value;
    },
  );
}

/** Exchanges the join token for the node's credential, in one transaction; refusals write nothing. */
async function joinNode(store: Store, body: JoinRequest, now: () => number): Promise<JoinResponse> {
  const p = new Problems();
  const node = checkName(p, 'node', body.node);
  p.done();
  const token = decodeJoinToken(body.token);
  if (!token || !node) throw refused(UNKNOWN);

  const tokenKey = keys.joinToken(digestHex(token.secret));
  const tokenKv = await store.get(tokenKey);
  const record = parseRecord<JoinTokenRecord>(tokenKv);
  // The lease removes the token at its expiry; the date also covers a lease that a restart of
  // the hub's store has prolonged.
  const expiresAt = Date.parse(record?.expiresAt ?? '');
  if (!tokenKv || !record || !(expiresAt > now())) throw refused(UNKNOWN);
  if (record.node !== undefined && record.node !== node) {
    throw refused(`it was created for another node than ${node}`);
  }

  const credentialKey = keys.nodeCredential(node);
  const [credentialKv, nodeKv] = await Promise.all([
    store.get(credentialKey),
    store.get(keys.node(node)),
  ]);
  const compare: Compare[] = [
    { key: tokenKey, target: 'mod', op: '=', value: tokenKv.modRevision },
    { key: credentialKey, target: 'mod', op: '=', value: credentialKv?.modRevision ?? 0 },
  ];
  if (record.node === undefined) {
    if (credentialKv || nodeKv) {
      throw refused(
        `node ${node} is already registered; create a join token with --node ${node} to join it again`,
      );
    }
    compare.push({ key: keys.node(node), target: 'create', op: '=', value: 0 });
  }

  const secret = newSecret();
  const stored: NodeCredentialRecord = {
    node,
    ...(Array.isArray(record.allowAddresses) ? { allowAddresses: record.allowAddresses } : {}),
    sha256: digestHex(secret),
    createdAt: new Date(now()).toISOString(),
  };
  const result = await store.txn({
    compare,
    success: [
      { type: 'delete', key: tokenKey },
      { type: 'put', key: credentialKey, value: JSON.stringify(stored) },
    ],
  });
  // Another join with the same token (or of the same node) got there first.
  if (!result.succeeded) throw refused(UNKNOWN);
  if (tokenKv.lease) await store.revokeLease(tokenKv.lease).catch(() => undefined);
  return { node, credential: encodeNodeCredential(node, secret) };
}

/**
 * Where remote agents can reach this API: the address it listens on, or every address of the
 * host when it listens on all of them; the Host the request came to when it does not listen
 * (tests with inject()).
 */
function defaultUrls(app: FastifyInstance, request: FastifyRequest, tls: boolean): string[] {
  const scheme = tls ? 'https' : 'http';
  const bound = app.server.address();
  if (bound && typeof bound === 'object') {
    const wildcard = bound.address === '0.0.0.0' || bound.address === '::';
    const hosts = wildcard ? hostAddresses(bound.address === '::') : [bound.address];
    if (hosts.length > 0) {
      return hosts
        .slice(0, MAX_URLS)
        .map((h) => `${scheme}://${h.includes(':') ? `[${h}]` : h}:${bound.port}`);
    }
  }
  return [`${scheme}://${request.host}`];
}

function hostAddresses(withIpv6: boolean): string[] {
  const all = Object.values(networkInterfaces())
    .flat()
    .filter((i): i is NonNullable<typeof i> => !!i && !i.internal)
    .filter((i) => i.family === 'IPv4' || (withIpv6 && !i.address.startsWith('fe80')))
    .map((i) => i.address);
  // IPv4 first: the common case of a gateway with one public IPv4 address.
  return [...new Set(all)].sort((a, b) => Number(a.includes(':')) - Number(b.includes(':')));
}
