/**
 * The agent's HTTP API as a Fastify app factory: it builds routes but does not listen, so tests
 * drive it in-process with `inject()` and the agent decides where and how (TLS) to serve it.
 *
 * Every route except /healthz and the API reference needs a bearer token; writes need a
 * read-write one. Errors of every kind (validation, auth, unknown routes, store outages) leave
 * as the registry's ErrorBody with its HTTP status.
 */
import Fastify, {
  type FastifyError,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
} from 'fastify';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import { X509Certificate } from 'node:crypto';
import { IpferryError, isIpferryError, validationError } from '../core/errors.js';
import { NODE_CREDENTIAL_PREFIX } from '../core/join.js';
import type { Neighbour } from '../core/model.js';
import type { ControlPlane } from '../service/control.js';
import type { Store } from '../store/store.js';
import { JOIN_ROUTE, STORE_ROUTES } from '../store/wire.js';
import { bearerToken, setCaller, type TokenSet } from './auth.js';
import {
  API_PREFIX,
  type MeshAuditRequest,
  type MeshConfirmRequest,
  type PlanResponse,
  ROUTES,
  type SetMeshPolicyRequest,
  type StatusResponse,
} from './contract.js';
import { registerJoinRoutes, verifyNodeCredential } from './join.js';
import * as schemas from './schemas.js';
import { registerStoreRoutes } from './store-routes.js';

export interface AgentInfo {
  readonly node: string;
  readonly version: string;
  dataplane(): StatusResponse['dataplane'];
  /** What the next reconcile pass would change in the kernel. */
  plan(): Promise<PlanResponse>;
  neighbours(): Promise<Neighbour[]>;
}

export interface ApiOptions {
  readonly control: ControlPlane;
  readonly tokens: TokenSet;
  readonly agent: AgentInfo;
  /** Fastify logger options; `false` in tests. */
  readonly logger?: boolean | object;
  readonly https?: { readonly cert: string | Buffer; readonly key: string | Buffer };
}

const PUBLIC_PATHS = ['/healthz', '/docs', JOIN_ROUTE];

/**
 * POST routes that change nothing, which a read-only token may call like any GET: the mesh audit
 * takes its inventory as a body (too large for a query string) but only reads, and an audit is
 * what a monitoring job holding a read-only token runs.
 */
const READ_ONLY_POSTS = new Set<string>([ROUTES.meshAudit]);

export async function buildApi(options: ApiOptions): Promise<FastifyInstance> {
  const app = Fastify({
    logger: loggerOptions(options.logger ?? false),
    ...(options.https ? { https: { cert: options.https.cert, key: options.https.key } } : {}),
    ajv: { customOptions: { removeAdditional: false, allErrors: true, coerceTypes: false } },
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
        url: request.url.split('?')[0] ?? '',
      }),
      request,
      reply,
    ),
  );

  registerRoutes(app, options);
  registerStoreRoutes(app, store);
  registerJoinRoutes(app, {
    store,
    ...(options.https ? { tls: { fingerprint: certificateFingerprint(options.https.cert) } } : {}),
  });
  return app;
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
  const presented = bearerToken(request.headers.authorization);
  const access = tokens.check(presented);
  if (access) {
    if (access === 'ro' && !readsOnly(request.method, path)) {
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

function readsOnly(method: string, path: string): boolean {
  return method === 'GET' || method === 'HEAD' || (method === 'POST' && READ_ONLY_POSTS.has(path));
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

function registerRoutes(app: FastifyInstance, { control, agent }: ApiOptions): void {
  const v = API_PREFIX;
  app.get(ROUTES.healthz, { schema: { hide: true } }, async () => {
    await Promise.resolve();
    return { ok: true, node: agent.node };
  });
  app.get(ROUTES.version, { schema: schemas.tagged('agent') }, async () => {
    await Promise.resolve();
    return { version: agent.version, node: agent.node };
  });
  app.get(ROUTES.status, { schema: schemas.tagged('agent') }, async () => statusOf(control, agent));
  app.get(ROUTES.plan, { schema: schemas.tagged('agent') }, () => agent.plan());

  app.get(ROUTES.pools, { schema: schemas.tagged('pools') }, () => control.listPools());
  app.post(ROUTES.pools, { schema: schemas.createPool }, async (req, reply) => {
    reply.status(201);
    return control.createPool(req.body as object);
  });
  app.get(`${v}/pools/:name`, { schema: schemas.named('pools') }, (req) =>
    control.getPool(param(req, 'name')),
  );
  app.patch(`${v}/pools/:name`, { schema: schemas.updatePool }, (req) =>
    control.updatePool(param(req, 'name'), req.body as object),
  );
  app.delete(`${v}/pools/:name`, { schema: schemas.named('pools') }, (req) =>
    control.deletePool(param(req, 'name')),
  );

  app.get(ROUTES.fips, { schema: schemas.listFips }, (req) => {
    const pool = (req.query as { pool?: string }).pool;
    return control.listFips(pool ? { pool } : {});
  });
  app.post(ROUTES.fips, { schema: schemas.allocate }, async (req, reply) => {
    const result = await control.allocate(req.body as object);
    reply.status(result.created ? 201 : 200);
    return result;
  });
  app.get(`${v}/fips/:address`, { schema: schemas.fip }, (req) =>
    control.getFip(param(req, 'address')),
  );
  app.delete(`${v}/fips/:address`, { schema: schemas.release }, (req) =>
    control.release(param(req, 'address'), (req.query as { force?: string }).force === 'true'),
  );
  app.post(`${v}/fips/:address/associate`, { schema: schemas.associate }, (req) =>
    control.associate(param(req, 'address'), req.body as object),
  );
  app.post(`${v}/fips/:address/move`, { schema: schemas.move }, (req) =>
    control.move(param(req, 'address'), req.body as object),
  );
  app.post(`${v}/fips/:address/disassociate`, { schema: schemas.fip }, (req) =>
    control.disassociate(param(req, 'address')),
  );
  app.get(`${v}/fips/:address/forwards`, { schema: schemas.forwardsOf }, (req) =>
    control.listForwards(param(req, 'address')),
  );
  app.post(`${v}/fips/:address/forwards`, { schema: schemas.addForward }, async (req, reply) => {
    reply.status(201);
    return control.addForward(param(req, 'address'), req.body as object);
  });
  app.delete(`${v}/fips/:address/forwards/:id`, { schema: schemas.forward }, (req) =>
    control.removeForward(param(req, 'address'), param(req, 'id')),
  );

  app.get(ROUTES.nodes, { schema: schemas.tagged('nodes') }, () => control.listNodes());
  app.get(`${v}/nodes/:name`, { schema: schemas.named('nodes') }, (req) =>
    control.getNode(param(req, 'name')),
  );
  app.delete(`${v}/nodes/:name`, { schema: schemas.removeNode }, (req) =>
    control.mesh.removeNode(param(req, 'name')),
  );

  app.get(ROUTES.mesh, { schema: schemas.getMesh }, () => control.mesh.view());
  app.put(ROUTES.meshPolicy, { schema: schemas.setMeshPolicy }, (req) => {
    const body = req.body as SetMeshPolicyRequest;
    return control.mesh.setPolicy(
      body.policy,
      body.confirmWithinSeconds !== undefined
        ? { confirmWithinSeconds: body.confirmWithinSeconds }
        : {},
    );
  });
  app.post(
    ROUTES.meshConfirm,
    // A bare POST confirms the trial and the holds, as before the body existed.
    { schema: schemas.confirmMesh, preValidation: bodyOrEmpty },
    (req) =>
      control.mesh.confirm({ holdsOnly: (req.body as MeshConfirmRequest).holdsOnly === true }),
  );
  app.post(
    ROUTES.meshAudit,
    // Without an inventory there is nothing to send: a bare POST is an audit without one.
    { schema: schemas.auditMesh, preValidation: bodyOrEmpty },
    (req) => {
      const body = req.body as MeshAuditRequest;
      return control.mesh.audit(body.inventory, body.source);
    },
  );

  app.get(ROUTES.ippool, { schema: schemas.tagged('ip floater') }, () => control.ippool());
  app.get(`${v}/arp/:mac`, { schema: schemas.arp }, (req) =>
    control.arp(param(req, 'mac'), () => agent.neighbours()),
  );
}

async function bodyOrEmpty(request: FastifyRequest): Promise<void> {
  await Promise.resolve();
  request.body ??= {};
}

function param(request: FastifyRequest, name: string): string {
  return (request.params as Record<string, string>)[name] ?? '';
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
