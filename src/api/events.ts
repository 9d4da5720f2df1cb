/**
 * The audit trail's edge: a hook that records every request to a write route of the table
 * (contract.ts) as it is answered, done or refused (auth, validation, conflict), before the
 * answer leaves, and the route that reads the trail (`GET /v1/events`, a long poll with `wait`).
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { type NewAuditEvent, redactSecrets } from '../core/events.js';
import { listEvents, recordEvent, waitEvents } from '../service/events.js';
import type { Store } from '../store/store.js';
import { bearerToken, callerOf, type TokenSet } from './auth.js';
import type { Handlers } from './routes.js';
import { REVISION_HEADER } from './paths.js';
import { routeAuth } from './routes.js';

export function registerAudit(app: FastifyInstance, tokens: TokenSet, store: Store): void {
  app.addHook('onSend', async (request, reply, payload) => {
    if (routeAuth(request) !== 'write') return payload;
    try {
      await recordEvent(store, auditEvent(tokens, request, reply, payload));
    } catch (e) {
      // The write is done (or refused) either way: a trail that cannot be written is logged.
      request.log.error({ err: e }, 'the audit trail could not record a request');
    }
    return payload;
  });
}

function auditEvent(
  tokens: TokenSet,
  request: FastifyRequest,
  reply: FastifyReply,
  payload: unknown,
): NewAuditEvent {
  const revision = Number(reply.getHeader(REVISION_HEADER));
  const code = reply.statusCode >= 400 ? errorCode(payload) : undefined;
  const query = request.query as Record<string, unknown> | undefined;
  return {
    at: new Date().toISOString(),
    who: who(tokens, request),
    method: request.method,
    path: request.url.split('?')[0] ?? '',
    ...(query && Object.keys(query).length > 0
      ? { query: redactSecrets(query) as Record<string, unknown> }
      : {}),
    ...(request.body !== undefined && request.body !== null
      ? { body: redactSecrets(request.body) }
      : {}),
    status: reply.statusCode,
    ...(code !== undefined ? { code } : {}),
    ...(Number.isSafeInteger(revision) && revision > 0 ? { revision } : {}),
  };
}

function who(tokens: TokenSet, request: FastifyRequest): string {
  try {
    const caller = callerOf(request);
    if (caller.kind === 'node') return `node ${caller.node}`;
  } catch {
    // Refused before it was authenticated: named by its token, if it is one of ours.
  }
  const presented = bearerToken(request.headers.authorization);
  const known = tokens.identify(presented);
  if (known) return known.name;
  return presented === undefined ? 'anonymous' : 'an unknown token';
}

function errorCode(payload: unknown): string | undefined {
  if (typeof payload !== 'string') return undefined;
  try {
    const code = (JSON.parse(payload) as { error?: { code?: unknown } }).error?.code;
    return typeof code === 'string' ? code : undefined;
  } catch {
    return undefined;
  }
}

export function eventsHandler(store: Store): Handlers['events'] {
  return ({ query }) => {
    const after = query.after === undefined ? 0 : Number(query.after);
    const limit = query.limit === undefined ? undefined : Number(query.limit);
    const options = { after, ...(limit !== undefined ? { limit } : {}) };
    const wait = waitMs(query.wait);
    return wait > 0 ? waitEvents(store, options, wait) : listEvents(store, options);
  };
}

/** `20s`, `500ms` (the schema's pattern) in milliseconds, at most 25 s. */
function waitMs(text: string | undefined): number {
  const m = text === undefined ? null : /^(\d+)(ms|s)$/.exec(text);
  if (!m) return 0;
  return Math.min(25_000, Number(m[1]) * (m[2] === 's' ? 1000 : 1));
}
