/**
 * The web page at /ui: its static files, the live-update stream it follows and the per-FIP
 * counters it shows.
 *
 * The page and its assets load without a token (nothing in them is a secret, and the page must
 * load before it can ask for one); everything with data behind it (/ui/session, /ui/events,
 * /ui/counters)
 * goes through the API's bearer-token hook like any route. The page sends the token it keeps in
 * sessionStorage as the Authorization header, which is why the stream is read with fetch()
 * rather than EventSource (which cannot send headers): the token never travels in a URL or a
 * cookie.
 *
 * The stream says *what kind* of state changed and at which revision, never the values: the
 * store holds secrets (client-token digests, node credentials, join tokens) that the page has no
 * use for, so only the kinds on the allow-list below ever leave, and the page re-reads what it
 * shows through the API routes that shape it.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { extname } from 'node:path';
import { PassThrough } from 'node:stream';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { IpferryError, isIpferryError } from '../core/errors.js';
import { HEALTH_ROOT, ROOT } from '../core/keys.js';
import type { Store, Watch, WatchEvent } from '../store/store.js';
import { callerOf } from './auth.js';

export const UI_ROUTES = {
  page: '/ui',
  assets: '/ui/assets',
  events: '/ui/events',
  counters: '/ui/counters',
  session: '/ui/session',
} as const;

/** Packets and bytes sent to one FIP, as the gateway's per-FIP counter holds them. */
export interface UiFipCounter {
  readonly packets: number;
  readonly bytes: number;
}

export interface UiOptions {
  readonly store: Store;
  readonly node: string;
  /** This agent's per-FIP counters; absent when its dataplane keeps none. */
  readonly fipCounters?: () => Promise<ReadonlyMap<string, UiFipCounter>>;
  /** How often an idle stream sends a comment, so proxies and the page see it is alive. */
  readonly heartbeatMs?: number;
}

/**
 * What the page may load: same origin only, no inline script or style, no frames, no forms that
 * post anywhere (the page's forms are handled by its script).
 */
export const UI_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self'",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

const SECURITY_HEADERS: Readonly<Record<string, string>> = {
  'content-security-policy': UI_CSP,
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-resource-policy': 'same-origin',
};

const CONTENT_TYPES: Readonly<Record<string, string>> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
};

/**
 * The kinds of state the stream reports, by the first segment of their key. Anything else under
 * the store's roots (secrets, bookkeeping) is never named.
 */
const REPORTED_KINDS: Readonly<Record<string, string>> = {
  pools: 'pools',
  fips: 'fips',
  status: 'fips',
  nodes: 'nodes',
  alive: 'nodes',
  mesh: 'mesh',
};

const HEARTBEAT_MS = 15_000;
/** A client that does not read its stream is dropped past this; the page reconnects. */
const STREAM_MAX_BUFFER = 1024 * 1024;

/** Paths the auth hook lets through without a token: the page and its files, nothing else. */
export function isPublicUiPath(path: string): boolean {
  return (
    path === UI_ROUTES.page ||
    path === `${UI_ROUTES.page}/` ||
    path.startsWith(`${UI_ROUTES.assets}/`)
  );
}

interface Asset {
  readonly body: Buffer;
  readonly type: string;
}

/**
 * The page's files, read once. In a checkout (run from src/ or dist/) they are src/ui; a
 * package built with `npm run build` carries them in dist/ui beside the compiled code.
 */
function loadAssets(): Map<string, Asset> {
  const candidates = [
    new URL('../../src/ui/', import.meta.url),
    new URL('../ui/', import.meta.url),
  ];
  for (const dir of candidates) {
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch {
      continue;
    }
    const assets = new Map<string, Asset>();
    for (const name of names) {
      const type = CONTENT_TYPES[extname(name)];
      if (type) assets.set(name, { body: readFileSync(fileURLToPath(new URL(name, dir))), type });
    }
    if (assets.has('index.html')) return assets;
  }
  throw new IpferryError('IPF_E_INTERNAL', {
    reason: 'the web page\u2019s files (src/ui or dist/ui) are missing from this installation',
  });
}

/** Registers /ui on `app`. Open event streams end when the app closes. */
export function registerUi(app: FastifyInstance, options: UiOptions): void {
  const assets = loadAssets();
  const send = (reply: FastifyReply, asset: Asset): FastifyReply =>
    reply
      .headers(SECURITY_HEADERS)
      .header('cache-control', 'no-cache')
      .type(asset.type)
      .send(asset.body);

  const hide = { schema: { hide: true } };
  const page = (_request: FastifyRequest, reply: FastifyReply): FastifyReply =>
    send(reply, assets.get('index.html')!);
  app.get(UI_ROUTES.page, hide, page);
  app.get(`${UI_ROUTES.page}/`, hide, page);
  app.get(`${UI_ROUTES.assets}/:file`, hide, (request, reply) => {
    const { file } = request.params as { file: string };
    const asset = file === 'index.html' ? undefined : assets.get(file);
    if (!asset) {
      throw new IpferryError('IPF_E_NOT_FOUND', {
        method: 'GET',
        url: `${UI_ROUTES.assets}/${file.slice(0, 60)}`,
      });
    }
    return send(reply, asset);
  });

  // What the page needs to know of its token: whether to offer the write controls at all (the
  // API refuses a read-only token's writes either way).
  app.get(UI_ROUTES.session, hide, (request, reply) => {
    reply.headers(SECURITY_HEADERS).header('cache-control', 'no-store');
    const caller = callerOf(request);
    return { node: options.node, access: caller.kind === 'admin' ? caller.access : 'ro' };
  });

  app.get(UI_ROUTES.counters, hide, async (_request, reply) => {
    reply.headers(SECURITY_HEADERS).header('cache-control', 'no-store');
    const counters = options.fipCounters ? await options.fipCounters() : undefined;
    return {
      node: options.node,
      available: counters !== undefined,
      fips: Object.fromEntries(counters ?? []),
    };
  });

  const streams = new Set<() => void>();
  app.addHook('preClose', (done) => {
    for (const stop of [...streams]) stop();
    done();
  });
  app.get(UI_ROUTES.events, hide, async (request, reply) => {
    const from = (await options.store.txn({ compare: [], success: [] })).revision + 1;
    return (
      reply
        .headers(SECURITY_HEADERS)
        .header('content-type', 'text/event-stream; charset=utf-8')
        .header('cache-control', 'no-store')
        .header('x-accel-buffering', 'no')
        // Not kept alive once the stream ends: an agent that closes ends its streams, and a
        // connection left idle after that would hold the close up for the keep-alive timeout.
        .header('connection', 'close')
        .send(
          openEventStream(options.store, from, options.heartbeatMs ?? HEARTBEAT_MS, {
            streams,
            request,
            reply,
          }),
        )
    );
  });
}

/** The kinds of state `events` changed, sorted, without duplicates; none for what is not shown. */
export function changedKinds(events: readonly WatchEvent[]): string[] {
  const kinds = new Set<string>();
  for (const { kv } of events) {
    if (kv.key.startsWith(HEALTH_ROOT)) {
      kinds.add('nodes');
      continue;
    }
    if (!kv.key.startsWith(ROOT)) continue;
    const kind = REPORTED_KINDS[kv.key.slice(ROOT.length).split('/')[0] ?? ''];
    if (kind) kinds.add(kind);
  }
  return [...kinds].sort();
}

/** One server-sent event: its name and a JSON payload on one `data:` line. */
export function sseEvent(name: string, data: object): string {
  return `event: ${name}\ndata: ${JSON.stringify(data)}\n\n`;
}

interface StreamContext {
  readonly streams: Set<() => void>;
  readonly request: FastifyRequest;
  readonly reply: FastifyReply;
}

/**
 * `hello` with the revision the stream starts after, then one `change` per store revision that
 * touched something the page shows ({revision, kinds}), comments as heartbeats, and `lost` (with
 * the error) before it ends when the store's watch cannot go on: the page then reconnects and
 * re-reads everything.
 */
function openEventStream(
  store: Store,
  from: number,
  heartbeatMs: number,
  { streams, request, reply }: StreamContext,
): PassThrough {
  const stream = new PassThrough();
  const watches: Watch[] = [];
  const running: { timer?: NodeJS.Timeout } = {};
  let stopped = false;

  const stop = (): void => {
    if (stopped) return;
    stopped = true;
    streams.delete(stop);
    clearInterval(running.timer);
    for (const w of watches) w.close();
    if (!stream.writableEnded) stream.end();
  };
  const write = (text: string): void => {
    if (stopped) return;
    stream.write(text);
    if (stream.writableLength > STREAM_MAX_BUFFER) {
      request.log.warn('ui event client does not keep up; dropping its stream');
      stop();
    }
  };
  const lost = (error: Error): void => {
    const e = isIpferryError(error)
      ? error
      : new IpferryError('IPF_E_STORE', { reason: error.message });
    write(sseEvent('lost', e.toJSON()));
    stop();
  };

  for (const prefix of [ROOT, HEALTH_ROOT]) {
    watches.push(
      store.watch(prefix, {
        fromRevision: from,
        onEvents: (events, revision) => {
          const kinds = changedKinds(events);
          if (kinds.length > 0) write(sseEvent('change', { revision, kinds }));
        },
        onError: lost,
      }),
    );
  }
  streams.add(stop);
  stream.on('close', stop);
  reply.raw.on('close', stop);
  write(sseEvent('hello', { revision: from - 1 }));
  running.timer = setInterval(() => write(': heartbeat\n\n'), heartbeatMs);
  running.timer.unref();
  return stream;
}
