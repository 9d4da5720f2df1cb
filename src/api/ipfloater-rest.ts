/**
 * IP Floater's REST API (its restserver.py), served from the agent on its own port, so its
 * users' scripts (the OpenNebula hooks: `curl -fXPUT http://HOST:7003/public/FIP/redirect/VM`)
 * keep working unchanged: its paths, methods, status codes, content types and JSON shapes.
 * Where IP Floater had bugs, this does what its docs meant (docs/migration.md lists each).
 *
 * IP Floater had no authentication; the guard here (an allow-list of sources, HTTP basic auth
 * with an API token as the password) is the agent's choice, see `checkCaller`.
 */
import Fastify, {
  type FastifyBaseLogger,
  type FastifyError,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
} from 'fastify';
import { type AddressRange, rangeContains, tryParseAddress } from '../core/address.js';
import {
  endpointsById,
  endpointsByPrivate,
  endpointsByPublic,
  type FloaterState,
  parseIpv4,
  parsePort,
  publicOf,
  type Redirection,
  redirectionFrom,
  redirectionsTo,
  redirectionTo,
} from '../core/ipfloater.js';
import type { IpFloaterService, Outcome } from '../service/ipfloater.js';
import type { Access, TokenSet } from './auth.js';

/** Who may call IP Floater's APIs: sources, and whether an API token is asked for. */
export interface FloaterGuard {
  /** Source ranges allowed; absent: any source. Checked before anything else. */
  readonly allow?: readonly AddressRange[];
  /** Ask for HTTP basic auth with an API token as the password; absent: no authentication. */
  readonly tokens?: TokenSet;
}

export type GuardVerdict =
  | { readonly ok: true; readonly access: Access }
  | { readonly ok: false; readonly status: 401 | 403; readonly message: string };

/** The realm a 401 names, so curl and Python's xmlrpc.client know to send credentials. */
export const BASIC_REALM = 'Basic realm="ipfloater", charset="UTF-8"';

/**
 * A request's verdict: refused (403) from a source outside the allow-list, before its
 * credentials are even read; then, when tokens are asked for, 401 without a valid one. The user
 * name is not checked (IP Floater's clients have none to give); the password is the API token.
 */
export function checkCaller(
  guard: FloaterGuard,
  remoteAddress: string | undefined,
  authorization: string | undefined,
): GuardVerdict {
  if (guard.allow) {
    const source = tryParseAddress((remoteAddress ?? '').replace(/^::ffff:(?=\d+\.)/, ''));
    if (!source || !guard.allow.some((r) => rangeContains(r, source))) {
      return { ok: false, status: 403, message: 'Your address may not use this service' };
    }
  }
  if (!guard.tokens) return { ok: true, access: 'rw' };
  const access = guard.tokens.check(basicPassword(authorization));
  return access
    ? { ok: true, access }
    : { ok: false, status: 401, message: 'An API token is needed (HTTP basic auth, as password)' };
}

function basicPassword(header: string | undefined): string | undefined {
  const m = header ? /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(header) : null;
  if (!m?.[1]) return undefined;
  const decoded = Buffer.from(m[1], 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  return colon < 0 ? undefined : decoded.slice(colon + 1);
}

export interface FloaterRestOptions {
  readonly service: IpFloaterService;
  readonly guard: FloaterGuard;
  readonly logger?: FastifyBaseLogger;
}

type Params = Record<string, string>;
type Handler = (params: Params, reply: FastifyReply) => Promise<unknown>;

/** Builds the REST app; the agent listens with it (tests `inject()`). */
export function buildFloaterRest(options: FloaterRestOptions): FastifyInstance {
  const app = Fastify({
    ...(options.logger ? { loggerInstance: options.logger } : { logger: false }),
  }) as unknown as FastifyInstance;
  // IP Floater's clients send no body (curl -XPUT): whatever comes is read and ignored.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: 65536 }, (_r, _b, done) =>
    done(null, undefined),
  );
  app.addHook('onRequest', async (request, reply) => {
    const verdict = checkCaller(
      options.guard,
      request.socket.remoteAddress,
      request.headers.authorization,
    );
    if (!verdict.ok) {
      if (verdict.status === 401) void reply.header('WWW-Authenticate', BASIC_REALM);
      return text(reply, verdict.status, verdict.message);
    }
    if (verdict.access === 'ro' && request.method !== 'GET' && request.method !== 'HEAD') {
      return text(reply, 403, 'This token may only read');
    }
    return undefined;
  });
  app.setNotFoundHandler((request, reply) =>
    text(reply, 404, `Not found: ${request.method} ${request.url.slice(0, 100)}`),
  );
  app.setErrorHandler((error: FastifyError, _request, reply) => {
    const status = error.statusCode && error.statusCode < 500 ? error.statusCode : 500;
    return text(reply, status, error.message);
  });
  const routes = new FloaterRoutes(options.service);
  const on = (method: 'GET' | 'PUT' | 'DELETE', url: string, handler: Handler): void => {
    app.route({
      method,
      url,
      handler: (request: FastifyRequest, reply: FastifyReply) =>
        handler(request.params as Params, reply),
    });
  };
  on('GET', '/', (_p, reply) => routes.all(reply));
  on('GET', '/public', (_p, reply) => routes.publics(reply));
  on('GET', '/public/:ip', (p, reply) => routes.publicIp(p, reply));
  on('GET', '/public/:ip/:port', (p, reply) => routes.publicPort(p, reply));
  on('GET', '/arp/:mac', (p, reply) => routes.arp(p, reply));
  on('PUT', '/public/:ip_pub/:port_pub/redirect/:ip_priv/:port_priv', (p, reply) =>
    routes.redirect(p, reply),
  );
  on('PUT', '/public/any/:port_pub/redirect/:ip_priv/:port_priv', (p, reply) =>
    routes.redirect(p, reply),
  );
  on('PUT', '/public/:ip_pub/redirect/:ip_priv/:port_priv', (p, reply) =>
    routes.redirect(p, reply),
  );
  on('PUT', '/public/:ip_pub/redirect/:ip_priv', (p, reply) =>
    routes.redirect({ ...p, port_pub: '0', port_priv: '0' }, reply),
  );
  on('PUT', '/public/redirect/:ip_priv/:port_priv', (p, reply) => routes.redirect(p, reply));
  on('DELETE', '/public/:ip_pub/:port_pub/redirect/:ip_priv/:port_priv', (p, reply) =>
    routes.deleteExact(p, reply),
  );
  on('DELETE', '/public/:ip_pub/redirect/:ip_priv', (p, reply) =>
    routes.deleteExact({ ...p, port_pub: '0', port_priv: '0' }, reply),
  );
  on('DELETE', '/public/:ip_pub', (p, reply) => routes.deletePublicIp(p, reply));
  on('DELETE', '/public/:ip_pub/:port_pub', (p, reply) => routes.deletePublicPort(p, reply));
  on('GET', '/private', (_p, reply) => routes.privates(reply));
  on('GET', '/private/:ip', (p, reply) => routes.privateIp(p, reply));
  on('GET', '/private/:ip/:port', (p, reply) => routes.privatePort(p, reply));
  on('DELETE', '/private/:ip', (p, reply) => routes.deletePrivateIp(p, reply));
  on('DELETE', '/private/:ip/:port', (p, reply) => routes.deletePrivatePort(p, reply));
  return app;
}

function json(reply: FastifyReply, body: unknown, status = 200): FastifyReply {
  return reply.code(status).type('application/json').send(JSON.stringify(body));
}

function text(reply: FastifyReply, status: number, body: string): FastifyReply {
  return reply.code(status).type('text/plain; charset=utf-8').send(body);
}

const BAD_PORT = 'Malformed request: port must be an integer';

/** The handlers, one per IP Floater route, over the service. */
class FloaterRoutes {
  constructor(private readonly service: IpFloaterService) {}

  async all(reply: FastifyReply): Promise<FastifyReply> {
    return json(reply, endpointsById(await this.service.state()));
  }

  async publics(reply: FastifyReply): Promise<FastifyReply> {
    return json(reply, endpointsByPublic(await this.service.state()));
  }

  /** `{}` for an address without redirections or unknown: IP Floater's "free", on purpose. */
  async publicIp(p: Params, reply: FastifyReply): Promise<FastifyReply> {
    const at = publicOf(await this.service.state(), p['ip'] ?? '');
    const byPort = Object.fromEntries(
      (at?.redirections ?? []).map((r) => [r.endpoint.public_port, r.endpoint]),
    );
    return json(reply, byPort);
  }

  async publicPort(p: Params, reply: FastifyReply): Promise<FastifyReply> {
    const port = parsePort(p['port']);
    if (port === undefined) return text(reply, 400, BAD_PORT);
    const r = redirectionFrom(await this.service.state(), p['ip'] ?? '', port);
    return json(reply, r?.endpoint ?? {});
  }

  async arp(p: Params, reply: FastifyReply): Promise<FastifyReply> {
    const mac = p['mac'] ?? '';
    const ip = await this.service.arp(mac);
    return ip === undefined
      ? text(reply, 404, `Could not get the information for mac ${mac}`)
      : text(reply, 200, ip);
  }

  async redirect(p: Params, reply: FastifyReply): Promise<FastifyReply> {
    const outcome = await this.service.redirect({
      ...(p['ip_pub'] !== undefined ? { publicIp: p['ip_pub'] } : {}),
      ...(p['port_pub'] !== undefined ? { publicPort: p['port_pub'] } : {}),
      privateIp: p['ip_priv'],
      privatePort: p['port_priv'],
    });
    if (outcome.ok) {
      const ep = outcome.value;
      void reply.header('Location', `/public/${ep.public_ip}/${ep.public_port}`);
      return json(reply, ep, 201);
    }
    const what = `${p['ip_priv'] ?? ''}:${p['port_priv'] ?? ''}`;
    return outcome.kind === 'refused'
      ? text(reply, 404, `Could not obtain a redirection for ${what}\n${outcome.reason}`)
      : text(
          reply,
          501,
          `An error occurred when registering a redirection for ${what}\n${outcome.reason}`,
        );
  }

  async deleteExact(p: Params, reply: FastifyReply): Promise<FastifyReply> {
    const publicPort = parsePort(p['port_pub']);
    const privatePort = parsePort(p['port_priv']);
    if (publicPort === undefined || privatePort === undefined) return text(reply, 400, BAD_PORT);
    const state = await this.service.state();
    const r = redirectionFrom(state, p['ip_pub'] ?? '', publicPort);
    const privateIp = parseIpv4(p['ip_priv']);
    const what = `${p['ip_pub'] ?? ''} -> ${p['ip_priv'] ?? ''}`;
    if (!r || r.endpoint.private_ip !== privateIp || r.endpoint.private_port !== privatePort) {
      return text(reply, 404, `Could not delete the redirection ${what}. Does it exist?`);
    }
    return this.removed(reply, state, [r], `Failed to terminate redirection ${what}`);
  }

  async deletePublicIp(p: Params, reply: FastifyReply): Promise<FastifyReply> {
    const state = await this.service.state();
    const at = publicOf(state, p['ip_pub'] ?? '');
    const ip = p['ip_pub'] ?? '';
    if (!at || at.redirections.length === 0) {
      return text(reply, 404, `Could not clean the redirections from ${ip}. Do they exist?`);
    }
    return this.removed(
      reply,
      state,
      at.redirections,
      `Failed to clean the redirections from ${ip}`,
    );
  }

  async deletePublicPort(p: Params, reply: FastifyReply): Promise<FastifyReply> {
    const port = parsePort(p['port_pub']);
    if (port === undefined) return text(reply, 400, BAD_PORT);
    const state = await this.service.state();
    const what = `${p['ip_pub'] ?? ''}:${p['port_pub'] ?? ''}`;
    const r = redirectionFrom(state, p['ip_pub'] ?? '', port);
    if (!r) return text(reply, 404, `Could not clean the redirection from ${what}. Does it exist?`);
    return this.removed(reply, state, [r], `Failed to terminate redirection from ${what}`);
  }

  async privates(reply: FastifyReply): Promise<FastifyReply> {
    return json(reply, endpointsByPrivate(await this.service.state()));
  }

  async privateIp(p: Params, reply: FastifyReply): Promise<FastifyReply> {
    const ip = p['ip'] ?? '';
    const byPort = endpointsByPrivate(await this.service.state())[parseIpv4(ip) ?? ip];
    return byPort ? json(reply, byPort) : text(reply, 404, `IP ${ip} not found`);
  }

  async privatePort(p: Params, reply: FastifyReply): Promise<FastifyReply> {
    const port = parsePort(p['port']);
    if (port === undefined) return text(reply, 400, BAD_PORT);
    const ip = parseIpv4(p['ip']) ?? p['ip'] ?? '';
    const r = redirectionTo(await this.service.state(), ip, port);
    return r ? json(reply, r.endpoint) : text(reply, 404, 'redirection not found');
  }

  async deletePrivateIp(p: Params, reply: FastifyReply): Promise<FastifyReply> {
    const ip = p['ip'] ?? '';
    const state = await this.service.state();
    const list = redirectionsTo(state, parseIpv4(ip) ?? ip);
    if (list.length === 0) return text(reply, 404, `IP ${ip} not found`);
    return this.removed(reply, state, list, `Failed to clean the redirections to ${ip}`);
  }

  async deletePrivatePort(p: Params, reply: FastifyReply): Promise<FastifyReply> {
    const port = parsePort(p['port']);
    if (port === undefined) return text(reply, 400, BAD_PORT);
    const ip = p['ip'] ?? '';
    const state = await this.service.state();
    const r = redirectionTo(state, parseIpv4(ip) ?? ip, port);
    if (!r) return text(reply, 404, `Redirection to ${ip}:${port} not found`);
    return this.removed(reply, state, [r], `Failed to terminate redirection to ${ip}:${port}`);
  }

  private async removed(
    reply: FastifyReply,
    state: FloaterState,
    list: readonly Redirection[],
    failedText: string,
  ): Promise<FastifyReply> {
    const outcome: Outcome<number> = await this.service.remove(state, list);
    return outcome.ok
      ? text(reply, 200, '')
      : text(reply, 501, `${failedText} (${outcome.reason})`);
  }
}
