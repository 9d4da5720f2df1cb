/**
 * The agent's HTTP API as a Fastify app factory: it builds routes but does not listen, so tests
 * drive it in-process with `inject()` and the agent decides where and how (TLS) to serve it.
 *
 * Every route except /healthz and the API reference needs a bearer token; writes need a
 * read-write one. Errors of every kind (validation, auth, unknown routes, store outages) leave
 * as the registry's ErrorBody with its HTTP status.
 */
import Fastify, {
  LogController,
  type ConnectionError,
  type FastifyError,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
} from 'fastify';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import { X509Certificate } from 'node:crypto';
import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import { IpferryError, isIpferryError, validationError } from '../core/errors.js';
import { NODE_CREDENTIAL_PREFIX } from '../core/join.js';
import type { Neighbour } from '../core/model.js';
import type { ControlPlane } from '../service/control.js';
import type { Store } from '../store/store.js';
import { JOIN_ROUTE, STORE_ROUTES } from '../store/wire.js';
import { bearerToken, setCaller, type TokenSet } from './auth.js';
import { appliedHandler } from './applied.js';
import { eventsHandler, registerAudit } from './events.js';
import type { PlanResponse, StatusResponse } from './contract.js';
import { createJoinTokenHandler, registerJoinRoutes, verifyNodeCredential } from './join.js';
import { PUBLIC_ROUTE_PATHS, registerApiRoutes, routeAuth, type Handlers } from './routes.js';
import { registerStoreRoutes } from './store-routes.js';
import { isPublicUiPath, registerUi, type UiFipCounter } from './ui.js';

export interface AgentInfo {
  readonly node: string;
  readonly version: string;
  dataplane(): StatusResponse['dataplane'];
  /** What the next reconcile pass would change in the kernel. */
  plan(): Promise<PlanResponse>;
  neighbours(): Promise<Neighbour[]>;
  /** Packets and bytes per FIP from this host's dataplane, for the web page; absent: none kept. */
  fipCounters?(): Promise<ReadonlyMap<string, UiFipCounter>>;
}

export interface ApiOptions {
  readonly control: ControlPlane;
  readonly tokens: TokenSet;
  readonly agent: AgentInfo;
  /** Fastify logger options; `false` in tests. */
  readonly logger?: boolean | object;
  readonly https?: { readonly cert: string | Buffer; readonly key: string | Buffer };
  /** Prometheus' exposition for /metrics (read tokens suffice); absent: no /metrics. */
  readonly metrics?: () => Promise<{ readonly contentType: string; readonly body: string }>;
  /** Fastify's line per request and response (default true; the agent keeps them for debug). */
  readonly requestLog?: boolean;
}

const PUBLIC_PATHS = [...PUBLIC_ROUTE_PATHS, '/docs', JOIN_ROUTE];

/**
 * The longest path parameter the router matches: names are at most 63 characters and addresses
 * 45, so anything longer is no parameter of ours (Fastify's default, named here).
 */
export const MAX_PARAM_LENGTH = 100;

/** How much of an unknown route's path an error repeats: the path may be 5 MB long. */
const SHOWN_PATH = 100;

export async function buildApi(options: ApiOptions): Promise<FastifyInstance> {
  const app = Fastify({
    logger: loggerOptions(options.logger ?? false),
    ...(options.requestLog === false
      ? { logController: new LogController({ disableRequestLogging: true }) }
      : {}),
    ...(options.https ? { https: { cert: options.https.cert, key: options.https.key } } : {}),
    ajv: { customOptions: { removeAdditional: false, allErrors: true, coerceTypes: false } },
    routerOptions: { maxParamLength: MAX_PARAM_LENGTH },
    // The router's own refusals (a path parameter too long, a path that is not valid
    // percent-encoding) never reach the error handler: Fastify answers them itself, in its own
    // shape, unless they come here. They come before routing, so before authorization too.
    frameworkErrors: (error, request, reply) => {
      void sendError(frameworkError(error), request, reply);
    },
    // What is not even an HTTP request (headers beyond Node's limit, garbage, a timeout) is
    // answered on the socket, still as an ipferry error.
    clientErrorHandler: clientError,
  }) as unknown as FastifyInstance;

  await app.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: {
        title: 'ipferry agent API',
        version: options.agent.version,
        description:
          'Floating IP pools, floating IPs, associations, port forwards and the fleet mesh. Every route except /healthz needs `Authorization: Bearer <token>`.',
      },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }],
    },
  });
  await app.register(swaggerUi, { routePrefix: '/docs' });

  const store = options.control.store;
  app.addHook('onRequest', async (request, reply) =>
    authorize(options.tokens, store, request, reply),
  );
  app.setErrorHandler((error, request, reply) => sendError(error, request, reply));
  app.setNotFoundHandler((request, reply) =>
    sendError(
      new IpferryError('IPF_E_NOT_FOUND', {
        method: request.method,
        url: shortened(request.url.split('?')[0] ?? ''),
      }),
      request,
      reply,
    ),
  );

  if (options.metrics) registerMetrics(app, options.metrics);

  const join = {
    store,
    ...(options.https ? { tls: { fingerprint: certificateFingerprint(options.https.cert) } } : {}),
  };
  registerAudit(app, options.tokens, store);
  registerApiRoutes(app, handlers(options, createJoinTokenHandler(app, join)));
  registerStoreRoutes(app, store);
  registerJoinRoutes(app, join);
  registerUi(app, {
    store,
    node: options.agent.node,
    ...(options.agent.fipCounters ? { fipCounters: () => options.agent.fipCounters!() } : {}),
  });
  return app;
}

/** GET /metrics: Prometheus' text format, behind the same tokens as the rest of the API. */
function registerMetrics(app: FastifyInstance, metrics: NonNullable<ApiOptions['metrics']>): void {
  app.get('/metrics', { schema: { hide: true } }, async (_request, reply) => {
    const { contentType, body } = await metrics();
    return reply.type(contentType).send(body);
  });
}

/**
 * Admin tokens (the token file) for everything; node credentials (api/join.ts) for /v1/store
 * only, where store-routes.ts limits them further.
 */
async function authorize(
  tokens: TokenSet,
  store: Store,
  request: FastifyRequest,
  reply: FastifyReply,
): Promise<void> {
  const path = request.url.split('?')[0] ?? '';
  if (PUBLIC_PATHS.some((p) => path === p || path.startsWith(`${p}/`))) return;
  if (isPublicUiPath(path)) return;
  const presented = bearerToken(request.headers.authorization);
  const access = tokens.check(presented);
  if (access) {
    if (access === 'ro' && !readsOnly(request)) {
      throw new IpferryError('IPF_E_FORBIDDEN', { reason: 'it may only read' });
    }
    setCaller(request, { kind: 'admin', access });
    return;
  }
  const node = presented?.startsWith(NODE_CREDENTIAL_PREFIX)
    ? await verifyNodeCredential(store, presented)
    : undefined;
  if (node === undefined) {
    reply.header('www-authenticate', 'Bearer realm="ipferry"');
    throw new IpferryError('IPF_E_UNAUTHORIZED');
  }
  if (!path.startsWith(STORE_ROUTES.prefix)) {
    throw new IpferryError('IPF_E_FORBIDDEN', {
      reason: `a node credential (of ${node}) is only for ${STORE_ROUTES.prefix}`,
    });
  }
  setCaller(request, { kind: 'node', node });
}

/** GETs, and the routes the table says change nothing (an audit takes its inventory as a body). */
function readsOnly(request: FastifyRequest): boolean {
  return request.method === 'GET' || request.method === 'HEAD' || routeAuth(request) === 'read';
}

interface LoggedRequest {
  readonly method: string;
  readonly url: string;
  readonly host?: string;
  readonly ip?: string;
  readonly socket?: { readonly remotePort?: number };
}

/**
 * Fastify's request log line, except that the query of a /v1/store route is left out: it names
 * store keys, and some keys hold secrets (client tokens).
 */
function loggerOptions(logger: boolean | object): boolean | object {
  if (logger === false) return false;
  const base = logger === true ? {} : logger;
  const serializers = (base as { serializers?: object }).serializers ?? {};
  return {
    ...base,
    serializers: {
      ...serializers,
      req: (req: LoggedRequest) => ({
        method: req.method,
        url: req.url.startsWith(STORE_ROUTES.prefix) ? (req.url.split('?')[0] ?? '') : req.url,
        host: req.host,
        remoteAddress: req.ip,
        remotePort: req.socket?.remotePort,
      }),
    },
  };
}

/** SHA-256 of the served certificate (the first of a chain), lower-case hex. */
function certificateFingerprint(cert: string | Buffer): string {
  try {
    return new X509Certificate(cert).fingerprint256.replaceAll(':', '').toLowerCase();
  } catch (e) {
    throw new IpferryError('IPF_E_TLS', {
      reason: `the certificate cannot be parsed (${e instanceof Error ? e.message : String(e)})`,
    });
  }
}

function sendError(error: unknown, request: FastifyRequest, reply: FastifyReply): FastifyReply {
  const e = toIpferryError(error);
  if (e.status >= 500) request.log.error({ err: error }, e.message);
  return reply.status(e.status).send(e.toJSON());
}

/** What the router refused, as a validation error of the URL that does not repeat it. */
function frameworkError(error: FastifyError): IpferryError {
  if (error.code === 'FST_ERR_MAX_PARAM_LENGTH') {
    return validationError([
      {
        path: 'url',
        message: `has a path parameter longer than ${MAX_PARAM_LENGTH} characters`,
      },
    ]);
  }
  if (error.code === 'FST_ERR_BAD_URL') {
    return validationError([
      {
        path: 'url',
        message: 'is not valid percent-encoding (a % not followed by two hex digits)',
      },
    ]);
  }
  return toIpferryError(error);
}

/**
 * Answers what Node could not parse as a request, on the socket (there is no request to reply
 * to), in the registry's shape; the connection is closed after it as Node would.
 */
function clientError(error: ConnectionError, socket: Socket): void {
  if (error.code === 'ECONNRESET' || socket.destroyed) return;
  const reason =
    error.code === 'HPE_HEADER_OVERFLOW'
      ? 'has headers larger than the server takes'
      : error.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? 'did not arrive in time'
        : 'is not well-formed HTTP';
  const e = validationError([{ path: 'request', message: reason }]);
  const body = JSON.stringify(e.toJSON());
  if (socket.writable) {
    socket.write(
      [
        `HTTP/1.1 ${e.status} ${STATUS_CODES[e.status] ?? ''}`,
        `Content-Length: ${Buffer.byteLength(body)}`,
        'Content-Type: application/json; charset=utf-8',
        'Connection: close',
        '',
        body,
      ].join('\r\n'),
    );
  }
  socket.destroy(error);
}

function shortened(path: string): string {
  return path.length > SHOWN_PATH ? `${path.slice(0, SHOWN_PATH)}…` : path;
}

function toIpferryError(error: unknown): IpferryError {
  if (isIpferryError(error)) return error;
  const fe = error as Partial<FastifyError>;
  if (fe.validation) {
    return validationError(
      fe.validation.map((v) => ({
        path: [
          fe.validationContext ?? 'body',
          ...v.instancePath.split('/').filter(Boolean),
          (v.params as { missingProperty?: string; additionalProperty?: string }).missingProperty ??
            (v.params as { additionalProperty?: string }).additionalProperty ??
            '',
        ]
          .filter(Boolean)
          .join('.'),
        message:
          v.keyword === 'additionalProperties'
            ? 'is not a known field'
            : (v.message ?? 'is invalid'),
      })),
    );
  }
  if (fe.statusCode && fe.statusCode < 500) {
    return validationError([{ path: 'request', message: fe.message ?? 'is invalid' }]);
  }
  return new IpferryError('IPF_E_INTERNAL', { reason: fe.message ?? String(error) });
}

/** What each route of the table (contract.ts) does. */
function handlers(
  { control, agent }: ApiOptions,
  createJoinToken: Handlers['createJoinToken'],
): Handlers {
  return {
    health: () => ({ ok: true, node: agent.node }),
    version: () => ({ version: agent.version, node: agent.node }),
    status: () => statusOf(control, agent),
    plan: () => agent.plan(),

    listPools: () => control.listPools(),
    createPool: (req) => control.createPool(req.body),
    getPool: (req) => control.getPool(req.params.name),
    updatePool: (req) => control.updatePool(req.params.name, req.body),
    deletePool: (req) => control.deletePool(req.params.name),

    listFips: (req) => control.listFips(req.query.pool ? { pool: req.query.pool } : {}),
    allocate: async (req, reply) => {
      const result = await control.allocate(req.body);
      reply.status(result.created ? 201 : 200);
      return result;
    },
    getFip: (req) => control.getFip(req.params.address),
    release: (req) => control.release(req.params.address, req.query.force === 'true'),
    associate: (req) => control.associate(req.params.address, req.body),
    move: (req) => control.move(req.params.address, req.body),
    disassociate: (req) => control.disassociate(req.params.address),

    listForwards: (req) => control.listForwards(req.params.address),
    addForward: (req) => control.addForward(req.params.address, req.body),
    removeForward: (req) => control.removeForward(req.params.address, req.params.id),

    listNodes: () => control.listNodes(),
    addNode: async (req) => ({ ...(await control.addUnmanagedNode(req.body)), alive: false }),
    getNode: (req) => control.getNode(req.params.name),
    removeNode: (req) => control.mesh.removeNode(req.params.name),
    createJoinToken,

    mesh: () => control.mesh.view(),
    setMeshPolicy: ({ body }) =>
      control.mesh.setPolicy(
        body.policy,
        body.confirmWithinSeconds !== undefined
          ? { confirmWithinSeconds: body.confirmWithinSeconds }
          : {},
      ),
    confirmMesh: (req) => control.mesh.confirm({ holdsOnly: req.body.holdsOnly === true }),
    auditMesh: (req) => control.mesh.audit(req.body.inventory, req.body.source),

    applied: appliedHandler(control),
    events: eventsHandler(control.store),
    ippool: () => control.ippool(),
    arp: (req) => control.arp(req.params.mac, () => agent.neighbours()),
  };
}

async function statusOf(control: ControlPlane, agent: AgentInfo): Promise<StatusResponse> {
  const [summary, self] = await Promise.all([
    control.summary(),
    control.getNode(agent.node).catch(() => undefined),
  ]);
  return {
    node: agent.node,
    version: agent.version,
    store: { kind: control.store.kind, revision: summary.revision },
    dataplane: agent.dataplane(),
    fips: summary.fips,
    nodes: summary.nodes,
    ...(self?.tunnel ? { tunnel: self.tunnel } : {}),
  };
}
