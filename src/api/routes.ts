/**
 * Registers the routes of contract.ts's table with Fastify: each with its method, path and
 * schemas (so Fastify checks the request and writes the answer by them, and the OpenAPI document
 * shows them), its default status, and a handler whose request is typed by the same schemas.
 * `Handlers` has one handler per route of the table, so neither can be left without the other.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import {
  API,
  type Api,
  type Auth,
  type BodyOf,
  type ParamsOf,
  type QueryOf,
  type ResponseOf,
  type RouteName,
  type RouteSpec,
} from './contract.js';
import { trackWrites } from '../service/write-revision.js';
import { REVISION_HEADER } from './paths.js';

export type RequestOf<R extends RouteSpec> = FastifyRequest<{
  Params: ParamsOf<R>;
  Querystring: QueryOf<R>;
  Body: BodyOf<R>;
}>;

export type Handler<R extends RouteSpec> = (
  request: RequestOf<R>,
  reply: FastifyReply,
) => ResponseOf<R> | Promise<ResponseOf<R>>;

export type Handlers = { readonly [K in RouteName]: Handler<Api[K]> };

/** A handler as Fastify sees it, before the schemas checked the request. */
type UntypedHandler = (request: FastifyRequest, reply: FastifyReply) => unknown;

export function registerApiRoutes(app: FastifyInstance, handlers: Handlers): void {
  for (const name of Object.keys(API) as RouteName[]) {
    // The table and the handlers agree route by route (Handlers' type); a loop over the names
    // cannot show the compiler which route each pair is.
    registerRoute(app, API[name], handlers[name] as UntypedHandler);
  }
}

function registerRoute(app: FastifyInstance, spec: RouteSpec, handler: UntypedHandler): void {
  const status = defaultStatus(spec);
  app.route({
    method: spec.method,
    url: spec.url,
    schema: fastifySchema(spec),
    // The response schemas are open (they describe, for OpenAPI and the client's types; they
    // must not drop a field): compiled serializers of open objects cost 7× JSON.stringify on a
    // list of 10,000 FIPs (63 against 9 ms), for no check.
    serializerCompiler: () => serializeJson,
    ...(spec.bodyOptional ? { preValidation: bodyOrEmpty } : {}),
    handler: async (request, reply) => {
      reply.status(status);
      const { value, revision } = await trackWrites(() => Promise.resolve(handler(request, reply)));
      if (revision !== undefined) reply.header(REVISION_HEADER, String(revision));
      return value;
    },
  });
}

function fastifySchema(spec: RouteSpec): object {
  return {
    ...(spec.hide ? { hide: true } : {}),
    ...(spec.tags ? { tags: spec.tags } : {}),
    ...(spec.summary ? { summary: spec.summary } : {}),
    ...(spec.params ? { params: spec.params } : {}),
    ...(spec.querystring ? { querystring: spec.querystring } : {}),
    ...(spec.body ? { body: spec.body } : {}),
    response: spec.response,
  };
}

function serializeJson(data: unknown): string {
  return JSON.stringify(data);
}

/** The lowest success status the route answers with; a handler may choose another. */
function defaultStatus(spec: RouteSpec): number {
  return Math.min(...Object.keys(spec.response).map(Number));
}

async function bodyOrEmpty(request: FastifyRequest): Promise<void> {
  await Promise.resolve();
  request.body ??= {};
}

const SPECS: readonly RouteSpec[] = Object.values(API);

/** The paths anyone may call, without a token. */
export const PUBLIC_ROUTE_PATHS: readonly string[] = SPECS.filter(
  (spec) => spec.auth === 'public',
).map((spec) => spec.url);

const AUTH_BY_ROUTE = new Map<string, Auth>(
  SPECS.map((spec) => [`${spec.method} ${spec.url}`, spec.auth]),
);

/** The table's word on who may call the route a request matched; undefined off the table. */
export function routeAuth(request: FastifyRequest): Auth | undefined {
  const url = request.routeOptions.url;
  return url === undefined ? undefined : AUTH_BY_ROUTE.get(`${request.method} ${url}`);
}
