/**
 * The wire form of the `http` store: the routes under /v1/store through which an agent exposes
 * its Store (api/store-routes.ts serves them, store/http.ts calls them), and the join exchange.
 * Both sides import this module, so a change of shape breaks the build, not remote agents: the
 * TypeBox schemas below are what the hub checks requests by (and serves as OpenAPI), and the
 * request and answer types both sides use are derived from them.
 *
 *   GET    /v1/store/get?key=K                          → GetResponse
 *   GET    /v1/store/list?prefix=P                      → ListResult
 *   POST   /v1/store/txn                Txn             → TxnResult
 *   GET    /v1/store/watch?prefix=P[&fromRevision=N][&heartbeatMs=MS]
 *                                                      → NDJSON stream of WatchLine
 *   POST   /v1/store/leases             {ttlSeconds}    → LeaseResponse
 *   POST   /v1/store/leases/:id/keepalive               → LeaseResponse
 *   DELETE /v1/store/leases/:id                         → LeaseResponse
 *   POST   /v1/join                     JoinRequest     → JoinResponse   (no bearer token)
 *
 * The watch stream starts with a heartbeat line and sends one every `heartbeatMs`; a heartbeat's
 * revision says that every event up to it has been sent, so a client that reconnects resumes
 * with `fromRevision = revision + 1` and neither loses nor repeats an event. An error line
 * (IPF_E_STORE_COMPACTED, or IPF_E_STORE when the hub's store closes) ends the stream.
 */
import { Type, type Static } from '@sinclair/typebox';
import type { ErrorBody } from '../core/errors.js';
import type { WatchEvent } from './store.js';

export const STORE_ROUTES = {
  prefix: '/v1/store/',
  get: '/v1/store/get',
  list: '/v1/store/list',
  txn: '/v1/store/txn',
  watch: '/v1/store/watch',
  leases: '/v1/store/leases',
  lease: (id: string) => `/v1/store/leases/${encodeURIComponent(id)}`,
  keepAlive: (id: string) => `/v1/store/leases/${encodeURIComponent(id)}/keepalive`,
} as const;

export const JOIN_ROUTE = '/v1/join';

/** The longest key or prefix the hub takes (its own keys are far shorter). */
export const MAX_KEY_LENGTH = 1024;
/** The longest lease the hub grants: a week (a node credential may take far less: node-writes.ts). */
export const LEASE_TTL_MAX_SECONDS = 7 * 24 * 3600;
/** Default and bounds of the watch heartbeat interval (ms). */
export const HEARTBEAT_DEFAULT_MS = 5_000;
export const HEARTBEAT_MIN_MS = 20;
export const HEARTBEAT_MAX_MS = 60_000;

// --- schemas ---------------------------------------------------------------------------------

/**
 * Keys and prefixes are printable text: an empty key, a NUL or a line break is a request error,
 * not a store failure. A prefix may be empty (everything) to read, never to delete.
 */
const PRINTABLE = '[^\\u0000-\\u001f\\u007f]';
const key = Type.String({
  minLength: 1,
  maxLength: MAX_KEY_LENGTH,
  pattern: `^${PRINTABLE}+$`,
  description: 'store key',
});
const prefix = Type.String({ maxLength: MAX_KEY_LENGTH, pattern: `^${PRINTABLE}*$` });
const deletedPrefix = Type.String({
  minLength: 1,
  maxLength: MAX_KEY_LENGTH,
  pattern: `^${PRINTABLE}+$`,
});
/** Lease ids are what the stores make: hex (SQLite) or decimal (etcd). */
const leaseId = Type.String({ pattern: '^[0-9A-Za-z]{1,32}$' });
const decimal = Type.String({ pattern: '^-?[0-9]{1,15}$' });

const compare = Type.Union([
  Type.Object(
    {
      key,
      target: Type.Literal('value'),
      op: Type.Union([Type.Literal('='), Type.Literal('!=')]),
      value: Type.String(),
    },
    { additionalProperties: false },
  ),
  Type.Object(
    {
      key,
      target: Type.Union([Type.Literal('create'), Type.Literal('mod'), Type.Literal('version')]),
      op: Type.Union([Type.Literal('='), Type.Literal('!='), Type.Literal('<'), Type.Literal('>')]),
      value: Type.Integer(),
    },
    { additionalProperties: false },
  ),
]);

const op = Type.Union([
  Type.Object(
    {
      type: Type.Literal('put'),
      key,
      value: Type.String(),
      lease: Type.Optional(leaseId),
    },
    { additionalProperties: false },
  ),
  Type.Object({ type: Type.Literal('delete'), key }, { additionalProperties: false }),
  Type.Object(
    { type: Type.Literal('deletePrefix'), prefix: deletedPrefix },
    { additionalProperties: false },
  ),
]);

const keyValue = Type.Object({
  key: Type.String(),
  value: Type.String(),
  createRevision: Type.Integer(),
  modRevision: Type.Integer(),
  version: Type.Integer(),
  lease: Type.Optional(Type.String()),
});

/** Each route's request and answer; store-routes.ts adds who may call it. */
export const STORE_SCHEMAS = {
  get: {
    querystring: Type.Object({ key }, { additionalProperties: false }),
    response: Type.Object({ kv: Type.Union([keyValue, Type.Null()]) }),
  },
  list: {
    querystring: Type.Object({ prefix }, { additionalProperties: false }),
    response: Type.Object({ kvs: Type.Array(keyValue), revision: Type.Integer() }),
  },
  txn: {
    body: Type.Object(
      {
        compare: Type.Array(compare),
        success: Type.Array(op),
        failure: Type.Optional(Type.Array(op)),
      },
      { additionalProperties: false },
    ),
    response: Type.Object({ succeeded: Type.Boolean(), revision: Type.Integer() }),
  },
  watch: {
    querystring: Type.Object(
      {
        prefix,
        fromRevision: Type.Optional(decimal),
        heartbeatMs: Type.Optional(Type.String({ pattern: '^[0-9]{1,9}$' })),
      },
      { additionalProperties: false },
    ),
  },
  grant: {
    body: Type.Object(
      { ttlSeconds: Type.Number({ exclusiveMinimum: 0, maximum: LEASE_TTL_MAX_SECONDS }) },
      { additionalProperties: false },
    ),
    response: Type.Object({ lease: Type.String() }),
  },
  lease: {
    params: Type.Object({ id: leaseId }),
    response: Type.Object({ lease: Type.String() }),
  },
  join: {
    body: Type.Object(
      {
        /** The join token exactly as `ipferry node join-token create` printed it. */
        token: Type.String({ maxLength: 4096 }),
        /** The name the joining agent runs as (`--node`). */
        node: Type.String(),
      },
      { additionalProperties: false },
    ),
    response: Type.Object({
      node: Type.String(),
      /** The node's credential: its bearer token for /v1/store from now on. Shown only here. */
      credential: Type.String(),
    }),
  },
} as const;

// --- types, from the schemas -----------------------------------------------------------------

export type GetResponse = Static<typeof STORE_SCHEMAS.get.response>;
export type ListResponse = Static<typeof STORE_SCHEMAS.list.response>;
export type WatchQuery = Static<typeof STORE_SCHEMAS.watch.querystring>;
export type TxnRequest = Static<typeof STORE_SCHEMAS.txn.body>;
export type TxnResponse = Static<typeof STORE_SCHEMAS.txn.response>;
export type GrantLeaseRequest = Static<typeof STORE_SCHEMAS.grant.body>;
export type LeaseResponse = Static<typeof STORE_SCHEMAS.lease.response>;
export type JoinRequest = Static<typeof STORE_SCHEMAS.join.body>;
export type JoinResponse = Static<typeof STORE_SCHEMAS.join.response>;

export type WatchLine =
  | { readonly events: readonly WatchEvent[]; readonly revision: number }
  | { readonly heartbeat: true; readonly revision: number }
  | { readonly error: ErrorBody['error'] };
