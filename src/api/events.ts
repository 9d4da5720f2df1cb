/**
 * The audit trail's edge: one recorder (`auditTrail`) for every API that writes. Fastify apps
 * record every write request as it is answered, done or refused (auth, validation, conflict),
 * before the answer leaves (`recordAnswers`): the agent's API (the table's write routes and the
 * join) and IP Floater's REST API; IP Floater's XML-RPC server records its calls itself. Here
 * too: the route that reads the trail (`GET /v1/events`, a long poll with `wait`).
 */
import type { FastifyBaseLogger, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import {
  answerText,
  type AuditedApi,
  type NewAuditEvent,
  REDACTED,
  redactSecrets,
} from '../core/events.js';
import { listEvents, recordEvent, waitEvents } from '../service/events.js';
import type { Store } from '../store/store.js';
import { JOIN_ROUTE } from '../store/wire.js';
import { bearerToken, callerOf, type TokenSet } from './auth.js';
import type { Handlers } from './routes.js';
import { REVISION_HEADER } from './paths.js';
import { routeAuth } from './routes.js';

/** Records events in the store's trail. */
export interface AuditTrail {
  /** Never fails: the write is done (or refused) either way, so a trail that cannot be written is logged. */
  record(event: NewAuditEvent): Promise<void>;
}

export function auditTrail(store: Store, log: Pick<FastifyBaseLogger, 'error'>): AuditTrail {
  return {
    async record(event) {
      try {
        await recordEvent(store, event);
      } catch (e) {
        log.error({ err: e }, 'the audit trail could not record a request');
      }
    },
  };
}

/** Which requests of a Fastify app are writes, and who made them. */
export interface AuditedRequests {
  isWrite(request: FastifyRequest): boolean;
  who(request: FastifyRequest): string;
  /** Absent: the agent's own API. */
  readonly api?: AuditedApi;
}

/** Records each write request `app` answers, before the answer leaves. */
export function recordAnswers(
  app: FastifyInstance,
  trail: AuditTrail,
  audited: AuditedRequests,
): void {
  app.addHook('onSend', async (request, reply, payload) => {
    if (audited.isWrite(request)) {
      await trail.record(answeredEvent(request, reply, payload, audited));
    }
    return payload;
  });
}

/** The agent's API: the table's write routes (contract.ts) and the join (not /v1/store). */
export function registerAudit(app: FastifyInstance, tokens: TokenSet, store: Store): void {
  recordAnswers(app, auditTrail(store, app.log), {
    isWrite: (request) => routeAuth(request) === 'write' || isJoin(request),
    who: (request) => who(tokens, request),
  });
}

function isJoin(request: FastifyRequest): boolean {
  return request.method === 'POST' && request.routeOptions.url === JOIN_ROUTE;
}

function answeredEvent(
  request: FastifyRequest,
  reply: FastifyReply,
  payload: unknown,
  audited: AuditedRequests,
): NewAuditEvent {
  const revision = Number(reply.getHeader(REVISION_HEADER));
  const code = reply.statusCode >= 400 ? errorCode(payload) : undefined;
  const query = request.query as Record<string, unknown> | undefined;
  // Only IP Floater's answers: they are endpoints and messages, where the agent's may be secrets.
  const answer = audited.api && typeof payload === 'string' && payload ? payload : undefined;
  return {
    at: new Date().toISOString(),
    who: audited.who(request),
    ...(audited.api ? { api: audited.api } : {}),
    method: request.method,
    path: request.url.split('?')[0] ?? '',
    ...(query && Object.keys(query).length > 0
      ? { query: redactSecrets(query) as Record<string, unknown> }
      : {}),
    ...(request.body !== undefined && request.body !== null
      ? { body: recordedBody(request.body) }
      : {}),
    status: reply.statusCode,
    ...(code !== undefined ? { code } : {}),
    ...(answer !== undefined ? { answer: answerText(answer) } : {}),
    ...(Number.isSafeInteger(revision) && revision > 0 ? { revision } : {}),
  };
}

/**
 * An object's fields with the secrets' values left out; anything else (text, a list: a body its
 * route's schema refuses) has no field names that tell a secret, so none of it is kept.
 */
function recordedBody(body: unknown): unknown {
  return typeof body === 'object' && !Array.isArray(body) ? redactSecrets(body) : REDACTED;
}

function who(tokens: TokenSet, request: FastifyRequest): string {
  // Its token is in the body (redacted): whoever holds one, named by nothing else.
  if (isJoin(request)) return 'a join token';
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
