/**
 * IP Floater's XML-RPC API (its ipfloaterd.py), served from the agent on its own port: the same
 * method names, arguments and `[ok, message]` answers, so its CLI and scripts keep working.
 * The XML is read and written by @foxglove/xmlrpc; the HTTP server under it is ours, so the
 * guard (allow-list, basic auth) and a body limit apply before any XML is parsed.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  type HttpHandler,
  type HttpRequest,
  type HttpServer,
  XmlRpcFault,
  XmlRpcServer,
  type XmlRpcValue,
} from '@foxglove/xmlrpc';
import {
  endpointText,
  IPFLOATER_VERSION,
  parseIpv4,
  parsePort,
  publicOf,
  type Redirection,
  redirectionFrom,
  redirectionsText,
  redirectionsTo,
  redirectionTo,
} from '../core/ipfloater.js';
import { answerText, type NewAuditEvent, redactSecrets, type XmlRpcCode } from '../core/events.js';
import type { IpFloaterService } from '../service/ipfloater.js';
import { trackWrites } from '../service/write-revision.js';
import type { Access } from './auth.js';
import type { AuditTrail } from './events.js';
import { BASIC_REALM, checkCaller, type FloaterGuard } from './ipfloater-rest.js';

/** A method call is a few hundred bytes: anything near this is no call of IP Floater's clients. */
const MAX_BODY_BYTES = 64 * 1024;

/** Methods that change something: a read-only token may not call them. */
const WRITES = new Set([
  'create_public_redirection',
  'unregister_redirection',
  'unregister_redirection_from',
  'unregister_redirection_to',
  'clean_public_ip',
  'clean_private_ip',
]);

export interface FloaterXmlRpcOptions {
  readonly service: IpFloaterService;
  readonly guard: FloaterGuard;
  /** Where every call of a method in WRITES is recorded, done or refused. */
  readonly trail: AuditTrail;
}

type Answer = [boolean, XmlRpcValue];

/** Who called, as the guard let them in: their access, and the trail's name for them. */
interface Caller {
  readonly access: Access;
  readonly who: string;
}

/** The XML-RPC server; `listen` starts it, `close` stops it. */
export class FloaterXmlRpc {
  private readonly trail: AuditTrail;
  private readonly http: GuardedHttpServer;
  private readonly methods: FloaterMethods;

  constructor(options: FloaterXmlRpcOptions) {
    this.trail = options.trail;
    this.http = new GuardedHttpServer(options.guard, options.trail);
    this.methods = new FloaterMethods(options.service);
    const rpc = new XmlRpcServer(this.http);
    for (const [name, method] of Object.entries(this.methods.table())) {
      rpc.setHandler(name, async (_name, args, req) => {
        if (!WRITES.has(name)) return answer(method, args);
        const caller = req ? this.http.callerOf(req) : undefined;
        const call = { name, args, path: req?.url, who: caller?.who ?? 'ipfloater' };
        if (caller?.access === 'ro') {
          return this.recorded(call, () => Promise.resolve([false, 'This token may only read']));
        }
        return this.recorded(call, () => answer(method, args));
      });
    }
  }

  /** Runs a call of a method that writes and records it with the revision it made, before the answer leaves. */
  private async recorded(
    call: { name: string; args: XmlRpcValue[]; path: string | undefined; who: string },
    run: () => Promise<XmlRpcValue>,
  ): Promise<XmlRpcValue> {
    const { value: outcome, revision } = await trackWrites(async (): Promise<CallOutcome> => {
      try {
        return { value: await run() };
      } catch (e) {
        return { fault: e as XmlRpcFault };
      }
    });
    await this.trail.record({
      ...callEvent(call.who, call.path, 200),
      body: { method: call.name, params: redactSecrets(call.args) },
      ...outcomeOf(outcome),
      ...(revision !== undefined ? { revision } : {}),
    });
    if ('fault' in outcome) throw outcome.fault;
    return outcome.value;
  }

  /** Listens; resolves with `http://HOST:PORT/`. */
  async listen(host: string, port: number): Promise<string> {
    await this.http.listen(port, host);
    return this.http.url() ?? '';
  }

  close(): Promise<void> {
    return this.http.stop();
  }
}

/** A method's answer; a fault of ours carries only its message (the library would send the stack). */
async function answer(
  method: (args: XmlRpcValue[]) => Promise<XmlRpcValue>,
  args: XmlRpcValue[],
): Promise<XmlRpcValue> {
  try {
    return await method(args);
  } catch (e) {
    throw e instanceof XmlRpcFault
      ? e
      : new XmlRpcFault(e instanceof Error ? e.message : String(e));
  }
}

/** The part of an event every request to the server has: who, where, the HTTP status. */
function callEvent(who: string, url: string | undefined, status: number): NewAuditEvent {
  return {
    at: new Date().toISOString(),
    who,
    api: 'ipfloater-xmlrpc',
    method: 'POST',
    path: (url ?? '/').split('?')[0] ?? '/',
    status,
  };
}

type CallOutcome = { readonly value: XmlRpcValue } | { readonly fault: XmlRpcFault };

/** How a call ended, for its event: IP Floater's `[ok, message]` or a fault. */
function outcomeOf(outcome: CallOutcome): {
  code?: XmlRpcCode;
  answer: string;
} {
  if ('fault' in outcome) {
    return {
      code: 'XMLRPC_FAULT',
      answer: answerText(outcome.fault.faultString ?? outcome.fault.message),
    };
  }
  const [ok, message] = Array.isArray(outcome.value) ? outcome.value : [true, outcome.value];
  const said = typeof message === 'string' ? message : JSON.stringify(message);
  return { ...(ok === true ? {} : { code: 'XMLRPC_FALSE' }), answer: answerText(said) };
}

/** The method table: IP Floater's names, each taking its positional arguments. */
class FloaterMethods {
  constructor(private readonly service: IpFloaterService) {}

  table(): Record<string, (args: XmlRpcValue[]) => Promise<XmlRpcValue>> {
    return {
      create_public_redirection: (a) => this.create(arity(a, 4)),
      unregister_redirection: (a) => this.unregister(arity(a, 4)),
      unregister_redirection_from: (a) => this.unregisterFrom(arity(a, 2)),
      unregister_redirection_to: (a) => this.unregisterTo(arity(a, 2)),
      clean_public_ip: (a) => this.cleanPublic(arity(a, 1)),
      clean_private_ip: (a) => this.cleanPrivate(arity(a, 1)),
      get_version: async (a) => {
        arity(a, 0);
        return Promise.resolve(IPFLOATER_VERSION);
      },
      get_redirections: async (a) => {
        arity(a, 0);
        return redirectionsText(await this.service.state());
      },
      get_public_ips: async (a) => {
        arity(a, 0);
        return [true, (await this.service.state()).publics.map((p) => p.address)];
      },
      arp: (a) => this.arp(arity(a, 1)),
    };
  }

  /** `""` for an IP or a negative port: let ipfloater choose, as in IP Floater. */
  private async create([ipPub, portPub, ipPriv, portPriv]: XmlRpcValue[]): Promise<Answer> {
    const open = (v: XmlRpcValue): boolean => v === '' || (typeof v === 'number' && v < 0);
    const outcome = await this.service.redirect({
      ...(open(ipPub) ? {} : { publicIp: ipPub }),
      ...(open(portPub) ? {} : { publicPort: portPub }),
      privateIp: ipPriv,
      privatePort: portPriv,
    });
    if (outcome.ok) return [true, endpointText(outcome.value)];
    return outcome.kind === 'refused'
      ? [
          false,
          `Could not obtain a redirection for ${show(ipPriv)}:${show(portPriv)} (${outcome.reason})`,
        ]
      : [
          false,
          `Could not apply the redirection to ${show(ipPriv)}:${show(portPriv)} (${outcome.reason})`,
        ];
  }

  private async unregister([ipPub, portPub, ipPriv, portPriv]: XmlRpcValue[]): Promise<Answer> {
    const what = endpointText({
      public_ip: show(ipPub),
      public_port: parsePort(portPub) ?? -1,
      private_ip: show(ipPriv),
      private_port: parsePort(portPriv) ?? -1,
    });
    const state = await this.service.state();
    const publicPort = parsePort(portPub);
    const r =
      publicPort === undefined ? undefined : redirectionFrom(state, show(ipPub), publicPort);
    if (
      !r ||
      r.endpoint.private_ip !== parseIpv4(ipPriv) ||
      r.endpoint.private_port !== parsePort(portPriv)
    ) {
      return [false, `Could not delete the redirection ${what}. Does it exist?`];
    }
    return this.removed(state, [r], `Redirection ${endpointText(r.endpoint)} unregistered`);
  }

  private async unregisterFrom([ip, port]: XmlRpcValue[]): Promise<Answer> {
    const state = await this.service.state();
    const p = parsePort(port);
    const r = p === undefined ? undefined : redirectionFrom(state, show(ip), p);
    if (!r)
      return [
        false,
        `Could not delete the redirection from ${show(ip)}:${show(port)}. Does it exist?`,
      ];
    return this.removed(state, [r], `Redirection ${endpointText(r.endpoint)} unregistered`);
  }

  private async unregisterTo([ip, port]: XmlRpcValue[]): Promise<Answer> {
    const state = await this.service.state();
    const p = parsePort(port);
    const address = parseIpv4(ip);
    const r = p === undefined || !address ? undefined : redirectionTo(state, address, p);
    if (!r)
      return [
        false,
        `Could not delete the redirection to ${show(ip)}:${show(port)}. Does it exist?`,
      ];
    return this.removed(state, [r], `Redirection ${endpointText(r.endpoint)} unregistered`);
  }

  private async cleanPublic([ip]: XmlRpcValue[]): Promise<Answer> {
    const state = await this.service.state();
    const at = publicOf(state, show(ip));
    if (!at) return [false, `Could not clean the redirections from ${show(ip)}. Do they exist?`];
    return this.removed(state, at.redirections, `Redirections from ${at.address} unregistered`);
  }

  private async cleanPrivate([ip]: XmlRpcValue[]): Promise<Answer> {
    const state = await this.service.state();
    const address = parseIpv4(ip);
    const list = address ? redirectionsTo(state, address) : [];
    if (list.length === 0)
      return [false, `Could not clean the redirections to ${show(ip)}. Do they exist?`];
    return this.removed(state, list, `Redirections to ${show(ip)} unregistered`);
  }

  private async arp([mac]: XmlRpcValue[]): Promise<Answer> {
    const ip = await this.service.arp(show(mac));
    return ip === undefined ? [false, `Could not get the IP address for ${show(mac)}`] : [true, ip];
  }

  private async removed(
    state: Awaited<ReturnType<IpFloaterService['state']>>,
    list: readonly Redirection[],
    done: string,
  ): Promise<Answer> {
    const outcome = await this.service.remove(state, list);
    return outcome.ok
      ? [true, done]
      : [false, `Could not delete every redirection (${outcome.reason})`];
  }
}

function arity(args: XmlRpcValue[], n: number): XmlRpcValue[] {
  if (args.length !== n) {
    throw new XmlRpcFault(`the method takes exactly ${n} argument(s) (${args.length} given)`);
  }
  return args;
}

/** A value as it reaches a message: its text, at most 100 characters. */
function show(v: XmlRpcValue): string {
  return (typeof v === 'string' || typeof v === 'number' ? String(v) : typeof v).slice(0, 100);
}

/**
 * The HTTP side, for XmlRpcServer: refuses by the guard, takes only POST, and reads at most
 * MAX_BODY_BYTES, before the library sees anything. Remembers each call's caller for the methods.
 * A call the guard refuses is recorded whatever its method: its XML is not parsed for a caller
 * that may not call, so which method it named is not known.
 */
class GuardedHttpServer implements HttpServer {
  handler: HttpHandler = () => Promise.resolve({ statusCode: 404 });
  private readonly server: Server;
  private readonly callers = new WeakMap<HttpRequest, Caller>();

  constructor(
    private readonly guard: FloaterGuard,
    private readonly trail: AuditTrail,
  ) {
    this.server = createServer((req, res) => this.serve(req, res));
  }

  callerOf(req: HttpRequest): Caller | undefined {
    return this.callers.get(req);
  }

  private serve(req: IncomingMessage, res: ServerResponse): void {
    const verdict = checkCaller(this.guard, req.socket.remoteAddress, req.headers.authorization);
    if (!verdict.ok) {
      if (verdict.status === 401) res.setHeader('WWW-Authenticate', BASIC_REALM);
      if (req.method !== 'POST') return plain(res, verdict.status, verdict.message);
      const refusal = {
        ...callEvent(verdict.who, req.url, verdict.status),
        answer: verdict.message,
      };
      void this.trail.record(refusal).then(() => plain(res, verdict.status, verdict.message));
      return;
    }
    if (req.method !== 'POST') return plain(res, 405, 'XML-RPC takes POST');
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        plain(res, 413, 'request too large');
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => {
      if (size > MAX_BODY_BYTES) return;
      const input: HttpRequest = {
        body: Buffer.concat(chunks).toString('utf8'),
        method: 'POST',
        ...(req.url !== undefined ? { url: req.url } : {}),
      };
      this.callers.set(input, { access: verdict.access, who: verdict.who });
      this.handler(input).then(
        (out) => {
          res.statusCode = out.statusCode;
          for (const [k, v] of Object.entries(out.headers ?? {})) res.setHeader(k, v);
          res.end(out.body);
        },
        () => plain(res, 500, 'internal error'),
      );
    });
  }

  url(): string | undefined {
    const a = this.server.address() as AddressInfo | null;
    if (!a) return undefined;
    const host = a.family === 'IPv6' ? `[${a.address}]` : a.address;
    return `http://${host}:${a.port}/`;
  }

  port(): number | undefined {
    return (this.server.address() as AddressInfo | null)?.port;
  }

  listen(port?: number, hostname?: string): Promise<void> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, hostname, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
  }

  close(): void {
    void this.stop();
  }

  stop(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }
}

function plain(res: ServerResponse, status: number, body: string): void {
  if (res.headersSent) return;
  res.statusCode = status;
  res.setHeader('Content-Type', 'text/plain; charset=utf-8');
  res.end(body);
}
