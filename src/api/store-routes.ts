/**
 * The hub side of the `http` store: this agent's Store over HTTP under /v1/store (routes and wire
 * form in store/wire.ts), so that a remote agent with no etcd can follow desired state from here.
 *
 * Who may do what:
 * - an admin token (token file) may do everything; a read-only one only the GET routes;
 * - a node credential (api/join.ts) may read under ROOT except PRIVATE_PREFIXES (its gets of them
 *   are refused, its lists and watches leave them out) and under HEALTH_ROOT (the nodes' health
 *   reports), and write only what is its own, in the shape it must have: core/node-writes.ts
 *   holds the rules (its registration, liveness under its own lease, health, its overlay lock
 *   by compare-and-create, statuses of the FIPs it serves, with limits), node-writes.ts here
 *   reads what they need. Leases it grants are recorded as its own (keys.leaseOwner, attached
 *   to the lease), short and few; it may keep alive, revoke and attach keys to those only. Its
 *   compares may name only keys it may read. Anything else is refused with IPF_E_FORBIDDEN
 *   before the store is touched, so a refused request writes nothing.
 */
import { PassThrough } from 'node:stream';
import type { Static } from '@sinclair/typebox';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { IpferryError, isIpferryError } from '../core/errors.js';
import { HEALTH_ROOT, keys, PASS_WANTED_KEY, PRIVATE_PREFIXES, ROOT } from '../core/keys.js';
import { MAX_NODE_LEASE_TTL_SECONDS } from '../core/node-writes.js';
import type { Store, Txn, Watch, WatchEvent } from '../store/store.js';
import {
  HEARTBEAT_DEFAULT_MS,
  HEARTBEAT_MAX_MS,
  HEARTBEAT_MIN_MS,
  STORE_ROUTES,
  STORE_SCHEMAS,
  type GetResponse,
  type GrantLeaseRequest,
  type TxnRequest,
  type LeaseResponse,
  type WatchLine,
  type WatchQuery,
} from '../store/wire.js';
import { callerOf, type Caller } from './auth.js';
import {
  checkNodeLeaseCount,
  checkNodeWrite,
  forbidden as forbiddenFor,
  requireOwnLease,
} from './node-writes.js';

/** A watch stream whose client does not read is dropped past this (it reconnects and resumes). */
const WATCH_MAX_BUFFER = 32 * 1024 * 1024;
/** Large enough for a status batch or a big pool record. */
const TXN_BODY_LIMIT = 16 * 1024 * 1024;

// --- schemas: the wire's (store/wire.ts), with what OpenAPI shows ------------------------------

const W = STORE_SCHEMAS;
const schemas = {
  get: {
    tags: ['store'],
    summary: 'One key (null when absent)',
    querystring: W.get.querystring,
    response: { 200: W.get.response },
  },
  list: {
    tags: ['store'],
    summary: 'Every key under a prefix, sorted, with the revision the list is consistent with',
    querystring: W.list.querystring,
    response: { 200: W.list.response },
  },
  txn: {
    tags: ['store'],
    summary: 'A transaction: if every compare holds, the success ops, else the failure ops',
    body: W.txn.body,
    response: { 200: W.txn.response },
  },
  watch: {
    tags: ['store'],
    summary: 'Changes under a prefix as an NDJSON stream, from a revision on, with heartbeats',
    querystring: W.watch.querystring,
  },
  grant: {
    tags: ['store'],
    summary: 'A lease that expires ttlSeconds after its last keep-alive',
    body: W.grant.body,
    response: { 201: W.grant.response },
  },
  keepAlive: {
    tags: ['store'],
    summary: 'Refresh a lease',
    params: W.lease.params,
    response: { 200: W.lease.response },
  },
  revoke: {
    tags: ['store'],
    summary: 'Revoke a lease and delete its keys',
    params: W.lease.params,
    response: { 200: W.lease.response },
  },
};

/**
 * Answers leave through JSON.stringify, as the API's do (routes.ts): the schemas describe them
 * for OpenAPI; a compiled serializer would only cost time on a large list.
 */
const serializerCompiler = () => (data: unknown) => JSON.stringify(data);

// --- what a node credential may do -----------------------------------------------------------

function forbidden(caller: { node: string }, what: string): IpferryError {
  return forbiddenFor(caller.node, what);
}

function isPrivate(key: string): boolean {
  return PRIVATE_PREFIXES.some((p) => key.startsWith(p));
}

/**
 * The trees a node credential may read from (less the private prefixes under ROOT), and the key
 * that asks agents for their pass reports.
 */
const READABLE = [ROOT, HEALTH_ROOT, PASS_WANTED_KEY];

/** What a node credential may read: ROOT without the private prefixes, and the health reports. */
export function nodeMayRead(key: string): boolean {
  return READABLE.some((tree) => key.startsWith(tree)) && !isPrivate(key);
}

/**
 * The filter to apply to a list or watch of `prefix` by `caller`: undefined for admins (they
 * see everything); for a node, its readable keys, or a refusal when the prefix holds none.
 */
function readFilter(caller: Caller, prefix: string): ((key: string) => boolean) | undefined {
  if (caller.kind === 'admin') return undefined;
  const covers = READABLE.some((tree) => prefix.startsWith(tree) || tree.startsWith(prefix));
  if (!covers || isPrivate(prefix)) {
    throw forbidden(
      caller,
      `read ${JSON.stringify(prefix)} (only ${READABLE.join(' and ')}, without secrets)`,
    );
  }
  return nodeMayRead;
}

async function checkNodeTxn(store: Store, caller: { node: string }, txn: Txn): Promise<void> {
  for (const c of txn.compare) {
    if (!nodeMayRead(c.key)) throw forbidden(caller, `compare ${c.key}`);
  }
  await checkNodeWrite(store, caller.node, txn, new Date());
}

// --- routes ----------------------------------------------------------------------------------

function toError(e: unknown): IpferryError {
  if (isIpferryError(e)) return e;
  return new IpferryError('IPF_E_STORE', { reason: e instanceof Error ? e.message : String(e) });
}

/** Registers /v1/store on `app`, serving `store`. Open watch streams end when the app closes. */
export function registerStoreRoutes(app: FastifyInstance, store: Store): void {
  const streams = new Set<() => void>();
  app.addHook('preClose', (done) => {
    for (const stop of [...streams]) stop();
    done();
  });
  registerReadsAndTxn(app, store);
  registerLeases(app, store);
  registerWatch(app, store, streams);
}

function registerReadsAndTxn(app: FastifyInstance, store: Store): void {
  app.get(
    STORE_ROUTES.get,
    { schema: schemas.get, serializerCompiler },
    async (request): Promise<GetResponse> => {
      const caller = callerOf(request);
      const { key: k } = request.query as Static<typeof W.get.querystring>;
      if (caller.kind === 'node' && !nodeMayRead(k)) throw forbidden(caller, `read ${k}`);
      return { kv: (await store.get(k)) ?? null };
    },
  );

  app.get(STORE_ROUTES.list, { schema: schemas.list, serializerCompiler }, async (request) => {
    const { prefix } = request.query as Static<typeof W.list.querystring>;
    const filter = readFilter(callerOf(request), prefix);
    const result = await store.list(prefix);
    return filter
      ? { kvs: result.kvs.filter((kv) => filter(kv.key)), revision: result.revision }
      : result;
  });

  app.post(
    STORE_ROUTES.txn,
    { schema: schemas.txn, bodyLimit: TXN_BODY_LIMIT, serializerCompiler },
    async (request) => {
      const caller = callerOf(request);
      const txn: Txn = request.body as TxnRequest;
      if (caller.kind === 'node') await checkNodeTxn(store, caller, txn);
      return store.txn(txn);
    },
  );
}

function registerLeases(app: FastifyInstance, store: Store): void {
  app.post(
    STORE_ROUTES.leases,
    { schema: schemas.grant, serializerCompiler },
    async (request, reply): Promise<LeaseResponse> => {
      const { ttlSeconds } = request.body as GrantLeaseRequest;
      const lease = await grantLease(store, callerOf(request), ttlSeconds);
      reply.status(201);
      return { lease };
    },
  );

  app.post(
    `${STORE_ROUTES.leases}/:id/keepalive`,
    { schema: schemas.keepAlive, serializerCompiler },
    async (request): Promise<LeaseResponse> => {
      const caller = callerOf(request);
      const { id } = request.params as Static<typeof W.lease.params>;
      if (caller.kind === 'node') await requireOwnLease(store, caller.node, id);
      await store.keepAlive(id);
      return { lease: id };
    },
  );

  app.delete(
    `${STORE_ROUTES.leases}/:id`,
    { schema: schemas.revoke, serializerCompiler },
    async (request): Promise<LeaseResponse> => {
      const caller = callerOf(request);
      const { id } = request.params as Static<typeof W.lease.params>;
      if (caller.kind === 'node') {
        const owner = await store.get(keys.leaseOwner(id));
        // Gone (or never its own): nothing of this node's to revoke, as for an unknown lease.
        if (!owner) return { lease: id };
        if (owner.value !== caller.node)
          throw forbidden(caller, `revoke lease ${id} of another node`);
      }
      await store.revokeLease(id);
      return { lease: id };
    },
  );
}

/** A lease; a node's is recorded as its own (keys.leaseOwner), short and one of few. */
async function grantLease(store: Store, caller: Caller, ttlSeconds: number): Promise<string> {
  if (caller.kind === 'node') {
    if (ttlSeconds > MAX_NODE_LEASE_TTL_SECONDS) {
      throw forbidden(
        caller,
        `take a lease of more than ${MAX_NODE_LEASE_TTL_SECONDS} s (asked ${ttlSeconds} s)`,
      );
    }
    await checkNodeLeaseCount(store, caller.node);
  }
  const lease = await store.grantLease(ttlSeconds);
  if (caller.kind === 'node') {
    try {
      await store.txn({
        compare: [],
        success: [{ type: 'put', key: keys.leaseOwner(lease), value: caller.node, lease }],
      });
    } catch (e) {
      await store.revokeLease(lease).catch(() => undefined);
      throw e;
    }
  }
  return lease;
}

function registerWatch(app: FastifyInstance, store: Store, streams: Set<() => void>): void {
  app.get(STORE_ROUTES.watch, { schema: schemas.watch }, async (request, reply) => {
    const query = request.query as WatchQuery;
    const filter = readFilter(callerOf(request), query.prefix);
    // Without a start, "from the next revision": fix it now and tell the client in the first
    // heartbeat, so it can resume from there after a reconnect.
    const from =
      query.fromRevision !== undefined
        ? Number(query.fromRevision)
        : (await store.txn({ compare: [], success: [] })).revision + 1;
    const heartbeatMs = Math.min(
      HEARTBEAT_MAX_MS,
      Math.max(HEARTBEAT_MIN_MS, Number(query.heartbeatMs ?? HEARTBEAT_DEFAULT_MS)),
    );
    return reply
      .header('content-type', 'application/x-ndjson; charset=utf-8')
      .header('cache-control', 'no-store')
      .send(
        openWatchStream(store, query.prefix, from, heartbeatMs, filter, streams, request, reply),
      );
  });
}

function openWatchStream(
  store: Store,
  prefix: string,
  from: number,
  heartbeatMs: number,
  filter: ((key: string) => boolean) | undefined,
  streams: Set<() => void>,
  request: FastifyRequest,
  reply: FastifyReply,
): PassThrough {
  const stream = new PassThrough();
  /** Every event up to this revision has been sent (or was not the client's to see). */
  let sent = Math.max(0, from - 1);
  const running: { watch?: Watch; timer?: NodeJS.Timeout } = {};
  let stopped = false;

  const stop = (): void => {
    if (stopped) return;
    stopped = true;
    streams.delete(stop);
    clearInterval(running.timer);
    running.watch?.close();
    if (!stream.writableEnded) stream.end();
  };
  const send = (line: WatchLine): void => {
    if (stopped) return;
    stream.write(`${JSON.stringify(line)}\n`);
    if (stream.writableLength > WATCH_MAX_BUFFER) {
      request.log.warn({ prefix }, 'watch client does not keep up; dropping its stream');
      stop();
    }
  };

  running.watch = store.watch(prefix, {
    fromRevision: from,
    onEvents: (events, revision) => {
      sent = revision;
      const visible: readonly WatchEvent[] = filter
        ? events.filter((e) => filter(e.kv.key))
        : events;
      if (visible.length > 0) send({ events: visible, revision });
    },
    onError: (error) => {
      send({ error: toError(error).toJSON().error });
      stop();
    },
  });
  streams.add(stop);
  stream.on('close', stop);
  // The response closes when the client goes away (or the stream ends): stop watching then.
  reply.raw.on('close', stop);
  send({ heartbeat: true, revision: sent });
  running.timer = setInterval(() => send({ heartbeat: true, revision: sent }), heartbeatMs);
  running.timer.unref();
  return stream;
}
