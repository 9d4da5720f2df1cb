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
import { trackWrites } from '../service/write-revision.js';
import type { Access, TokenSet } from './auth.js';
import { type AuditTrail, recordAnswers } from './events.js';
import { REVISION_HEADER } from './paths.js';

/** Who may call IP Floater's APIs: sources, and whether an API token is asked for. */
export interface FloaterGuard {
  /** Source ranges allowed; absent: any source. Checked before anything else. */
  readonly allow?: readonly AddressRange[];
  /** Ask for HTTP basic auth with an API token as the password; absent: no authentication. */
  readonly tokens?: TokenSet;
}

/** `who` is what the audit trail calls the caller: its token's name, else `ipfloater ADDRESS`. */
export type GuardVerdict =
  | { readonly ok: true; readonly access: Access; readonly who: string }
  | {
      readonly ok: false;
      readonly status: 401 | 403;
      readonly message: string;
      readonly who: string;
    };

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
  const sourceText = (remoteAddress ?? '').replace(/^::ffff:(?=\d+\.)/, '');
  // IP Floater's clients have no identity: the trail names them by where they call from.
  const anonymous = `ipfloater ${sourceText || 'from an unknown address'}`;
  if (guard.allow) {
    const source = tryParseAddress(sourceText);
    if (!source || !guard.allow.some((r) => rangeContains(r, source))) {
      return {
        ok: false,
        status: 403,
        message: 'Your address may not use this service',
        who: anonymous,
      };
    }
  }
  if (!guard.tokens) return { ok: true, access: 'rw', who: anonymous };
  const password = basicPassword(authorization);
  const known = guard.tokens.identify(password);
  if (known) return { ok: true, access: known.access, who: known.name };
  return {
    ok: false,
    status: 401,
    message: 'An API token is needed (HTTP basic auth, as password)',
    who: password === undefined ? anonymous : `${anonymous} with an unknown token`,
  };
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
  /** Where every PUT and DELETE is recorded, done or refused. */
  readonly trail: AuditTrail;
  readonly logger?: FastifyBaseLogger;
}

type Params = Record<string, string>;

/** An answer of IP Floater's: status, body (JSON or text) and where a redirection made is. */
interface Answer {
  readonly status: number;
  readonly type: 'json' | 'text';
  readonly body: string;
  readonly location?: string;
}

type Handler = (params: Params) => Promise<Answer>;

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
  const callers = new WeakMap<FastifyRequest, string>();
  app.addHook('onRequest', async (request, reply) => {
    const verdict = checkCaller(
      options.guard,
      request.socket.remoteAddress,
      request.headers.authorization,
    );
    callers.set(request, verdict.who);
    if (!verdict.ok) {
      if (verdict.status === 401) void reply.header('WWW-Authenticate', BASIC_REALM);
      return send(reply, text(verdict.status, verdict.message));
    }
    if (verdict.access === 'ro' && !reads(request)) {
      return send(reply, text(403, 'This token may only read'));
    }
    return undefined;
  });
  recordAnswers(app, options.trail, {
    api: 'ipfloater-rest',
    isWrite: (request) => !reads(request),
    who: (request) => callers.get(request) ?? 'ipfloater',
  });
  app.setNotFoundHandler((request, reply) =>
    send(reply, text(404, `Not found: ${request.method} ${request.url.slice(0, 100)}`)),
  );
  app.setErrorHandler((error: FastifyError, _request, reply) => {
    const status = error.statusCode && error.statusCode < 500 ? error.statusCode : 500;
    return send(reply, text(status, error.message));
  });
  const routes = new FloaterRoutes(options.service);
  const on = (method: 'GET' | 'PUT' | 'DELETE', url: string, handler: Handler): void => {
    app.route({
      method,
      url,
      handler: async (request: FastifyRequest, reply: FastifyReply) => {
        // The revision a write made, answered as by the agent's API (and kept in the trail).
        const { value, revision } = await trackWrites(() => handler(request.params as Params));
        return send(reply, value, revision);
      },
    });
  };
  on('GET', '/', () => routes.all());
  on('GET', '/public', () => routes.publics());
  on('GET', '/public/:ip', (p) => routes.publicIp(p));
  on('GET', '/public/:ip/:port', (p) => routes.publicPort(p));
  on('GET', '/arp/:mac', (p) => routes.arp(p));
  on('PUT', '/public/:ip_pub/:port_pub/redirect/:ip_priv/:port_priv', (p) => routes.redirect(p));
  on('PUT', '/public/any/:port_pub/redirect/:ip_priv/:port_priv', (p) => routes.redirect(p));
  on('PUT', '/public/:ip_pub/redirect/:ip_priv/:port_priv', (p) => routes.redirect(p));
  on('PUT', '/public/:ip_pub/redirect/:ip_priv', (p) =>
    routes.redirect({ ...p, port_pub: '0', port_priv: '0' }),
  );
  on('PUT', '/public/redirect/:ip_priv/:port_priv', (p) => routes.redirect(p));
  on('DELETE', '/public/:ip_pub/:port_pub/redirect/:ip_priv/:port_priv', (p) =>
    routes.deleteExact(p),
  );
  on('DELETE', '/public/:ip_pub/redirect/:ip_priv', (p) =>
    routes.deleteExact({ ...p, port_pub: '0', port_priv: '0' }),
  );
  on('DELETE', '/public/:ip_pub', (p) => routes.deletePublicIp(p));
  on('DELETE', '/public/:ip_pub/:port_pub', (p) => routes.deletePublicPort(p));
  on('GET', '/private', () => routes.privates());
  on('GET', '/private/:ip', (p) => routes.privateIp(p));
  on('GET', '/private/:ip/:port', (p) => routes.privatePort(p));
  on('DELETE', '/private/:ip', (p) => routes.deletePrivateIp(p));
  on('DELETE', '/private/:ip/:port', (p) => routes.deletePrivatePort(p));
  return app;
}

/** Whether a request only reads: every other method is a write (recorded, refused to `ro`). */
function reads(request: FastifyRequest): boolean {
  return request.method === 'GET' || request.method === 'HEAD';
}

function send(reply: FastifyReply, answer: Answer, revision?: number): FastifyReply {
  if (answer.location !== undefined) void reply.header('Location', answer.location);
  if (revision !== undefined) void reply.header(REVISION_HEADER, String(revision));
  return reply
    .code(answer.status)
    .type(answer.type === 'json' ? 'application/json' : 'text/plain; charset=utf-8')
    .send(answer.body);
}

function json(body: unknown, status = 200): Answer {
  return { status, type: 'json', body: JSON.stringify(body) };
}

function text(status: number, body: string): Answer {
  return { status, type: 'text', body };
}

const BAD_PORT = 'Malformed request: port must be an integer';

/** The handlers, one per IP Floater route, over the service. */
class FloaterRoutes {
  constructor(private readonly service: IpFloaterService) {}

  async all(): Promise<Answer> {
    return json(endpointsById(await this.service.state()));
  }

  async publics(): Promise<Answer> {
    return json(endpointsByPublic(await this.service.state()));
  }

  /** `{}` for an address without redirections or unknown: IP Floater's "free", on purpose. */
  async publicIp(p: Params): Promise<Answer> {
    const at = publicOf(await this.service.state(), p['ip'] ?? '');
    const byPort = Object.fromEntries(
      (at?.redirections ?? []).map((r) => [r.endpoint.public_port, r.endpoint]),
    );
    return json(byPort);
  }

  async publicPort(p: Params): Promise<Answer> {
    const port = parsePort(p['port']);
    if (port === undefined) return text(400, BAD_PORT);
    const r = redirectionFrom(await this.service.state(), p['ip'] ?? '', port);
    return json(r?.endpoint ?? {});
  }

  async arp(p: Params): Promise<Answer> {
    const mac = p['mac'] ?? '';
    const ip = await this.service.arp(mac);
    return ip === undefined
      ? text(404, `Could not get the information for mac ${mac}`)
      : text(200, ip);
  }

  async redirect(p: Params): Promise<Answer> {
    const outcome = await this.service.redirect({
      ...(p['ip_pub'] !== undefined ? { publicIp: p['ip_pub'] } : {}),
      ...(p['port_pub'] !== undefined ? { publicPort: p['port_pub'] } : {}),
      privateIp: p['ip_priv'],
      privatePort: p['port_priv'],
    });
    if (outcome.ok) {
      const ep = outcome.value;
      return { ...json(ep, 201), location: `/public/${ep.public_ip}/${ep.public_port}` };
    }
    const what = `${p['ip_priv'] ?? ''}:${p['port_priv'] ?? ''}`;
    return outcome.kind === 'refused'
      ? text(404, `Could not obtain a redirection for ${what}\n${outcome.reason}`)
      : text(
          501,
          `An error occurred when registering a redirection for ${what}\n${outcome.reason}`,
        );
  }

  async deleteExact(p: Params): Promise<Answer> {
    const publicPort = parsePort(p['port_pub']);
    const privatePort = parsePort(p['port_priv']);
    if (publicPort === undefined || privatePort === undefined) return text(400, BAD_PORT);
    const state = await this.service.state();
    const r = redirectionFrom(state, p['ip_pub'] ?? '', publicPort);
    const privateIp = parseIpv4(p['ip_priv']);
    const what = `${p['ip_pub'] ?? ''} -> ${p['ip_priv'] ?? ''}`;
    if (!r || r.endpoint.private_ip !== privateIp || r.endpoint.private_port !== privatePort) {
      return text(404, `Could not delete the redirection ${what}. Does it exist?`);
    }
    return this.removed(state, [r], `Failed to terminate redirection ${what}`);
  }

  async deletePublicIp(p: Params): Promise<Answer> {
    const state = await this.service.state();
    const at = publicOf(state, p['ip_pub'] ?? '');
    const ip = p['ip_pub'] ?? '';
    if (!at || at.redirections.length === 0) {
      return text(404, `Could not clean the redirections from ${ip}. Do they exist?`);
    }
    return this.removed(state, at.redirections, `Failed to clean the redirections from ${ip}`);
  }

  async deletePublicPort(p: Params): Promise<Answer> {
    const port = parsePort(p['port_pub']);
    if (port === undefined) return text(400, BAD_PORT);
    const state = await this.service.state();
    const what = `${p['ip_pub'] ?? ''}:${p['port_pub'] ?? ''}`;
    const r = redirectionFrom(state, p['ip_pub'] ?? '', port);
    if (!r) return text(404, `Could not clean the redirection from ${what}. Does it exist?`);
    return this.removed(state, [r], `Failed to terminate redirection from ${what}`);
  }

  async privates(): Promise<Answer> {
    return json(endpointsByPrivate(await this.service.state()));
  }

  async privateIp(p: Params): Promise<Answer> {
    const ip = p['ip'] ?? '';
    const byPort = endpointsByPrivate(await this.service.state())[parseIpv4(ip) ?? ip];
    return byPort ? json(byPort) : text(404, `IP ${ip} not found`);
  }

  async privatePort(p: Params): Promise<Answer> {
    const port = parsePort(p['port']);
    if (port === undefined) return text(400, BAD_PORT);
    const ip = parseIpv4(p['ip']) ?? p['ip'] ?? '';
    const r = redirectionTo(await this.service.state(), ip, port);
    return r ? json(r.endpoint) : text(404, 'redirection not found');
  }

  async deletePrivateIp(p: Params): Promise<Answer> {
    const ip = p['ip'] ?? '';
    const state = await this.service.state();
    const list = redirectionsTo(state, parseIpv4(ip) ?? ip);
    if (list.length === 0) return text(404, `IP ${ip} not found`);
    return this.removed(state, list, `Failed to clean the redirections to ${ip}`);
  }

  async deletePrivatePort(p: Params): Promise<Answer> {
    const port = parsePort(p['port']);
    if (port === undefined) return text(400, BAD_PORT);
    const ip = p['ip'] ?? '';
    const state = await this.service.state();
    const r = redirectionTo(state, parseIpv4(ip) ?? ip, port);
    if (!r) return text(404, `Redirection to ${ip}:${port} not found`);
    return this.removed(state, [r], `Failed to terminate redirection to ${ip}:${port}`);
  }

  private async removed(
    state: FloaterState,
    list: readonly Redirection[],
    failedText: string,
  ): Promise<Answer> {
    const outcome: Outcome<number> = await this.service.remove(state, list);
    return outcome.ok ? text(200, '') : text(501, `${failedText} (${outcome.reason})`);
  }
}
