/**
 * Property-based fuzzing of the agent's HTTP API (issue 12): random methods on every route of
 * the route table (src/api/paths.ts) and of the http store (/v1/store/…, /v1/join), with random
 * and hostile path parameters, queries and bodies (JSON of any shape, valid bodies mutated,
 * text that is no JSON), sent with an admin token, a read-only token, a joined node's
 * credential, a forged one and none, against an app on an in-memory SQLite store whose plan
 * is a real reconcile loop's on the fake dataplane.
 *
 * Asserted for every answer: never a 5xx; every 4xx is ipferry's error body with a registered
 * code, a message and a hint; a refused write leaves the store's revision as it was.
 * FUZZ_SEED and FUZZ_RUNS replay and scale it (test/support/fuzz.ts).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { FastifyInstance } from 'fastify';
import fc from 'fast-check';
import { Reconciler } from '../../src/agent/reconcile.js';
import { buildApi } from '../../src/api/app.js';
import { TokenSet } from '../../src/api/auth.js';
import { fillPath, ROUTE_PATHS } from '../../src/api/paths.js';
import { ERRORS } from '../../src/core/errors.js';
import { EVENTS_ROOT } from '../../src/core/keys.js';
import { FakeDataplane } from '../../src/dataplane/fake.js';
import type { Store } from '../../src/store/store.js';
import { JOIN_ROUTE, STORE_ROUTES } from '../../src/store/wire.js';
import {
  fuzzParameters,
  HOSTILE_TEXT,
  hostileValue,
  mutate,
  mutation,
  Tally,
} from '../support/fuzz.js';
import { controlPlane, TOKEN_FILE_TEXT, TOKEN_RO, TOKEN_RW } from '../support/helpers.js';

const tally = new Tally('api');
const silent = { info: () => undefined, warn: () => undefined, error: () => undefined };

type Method = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE' | 'HEAD' | 'OPTIONS';

/** Every route: the table's, the http store's and the join. */
const ROUTES: readonly { method: Method; url: string }[] = [
  ...Object.values(ROUTE_PATHS),
  { method: 'GET', url: STORE_ROUTES.get },
  { method: 'GET', url: STORE_ROUTES.list },
  { method: 'POST', url: STORE_ROUTES.txn },
  { method: 'GET', url: STORE_ROUTES.watch },
  { method: 'POST', url: STORE_ROUTES.leases },
  { method: 'POST', url: `${STORE_ROUTES.leases}/:id/keepalive` },
  { method: 'DELETE', url: `${STORE_ROUTES.leases}/:id` },
  { method: 'POST', url: JOIN_ROUTE },
  { method: 'GET', url: '/v1/nowhere/:name' },
];

/** Bodies each route takes when they are right: the fuzz mutates them. */
const BODIES: Readonly<Record<string, readonly unknown[]>> = {
  '/v1/pools': [
    { name: 'fz', gateway: 'gw1', entries: ['198.18.0.0/30'], shared: ['198.18.1.1'] },
    {
      name: 'fz6',
      gateway: 'home',
      delivery: 'onlink',
      uplink: 'eth0',
      entries: ['2001:db8:9::/126'],
    },
  ],
  '/v1/pools/:name': [
    { addEntries: ['198.18.2.0/31'], addShared: ['198.18.1.2'], removeAddresses: ['203.0.113.3'] },
  ],
  '/v1/fips': [
    { pool: 'public' },
    { address: '203.0.113.9', clientToken: 'c-1' },
    { pool: 'v6', family: 6 },
  ],
  '/v1/fips/:address/associate': [
    { target: '10.0.0.21', mode: 'nat', allowReassociation: true },
    { target: '203.0.113.5', mode: 'routed', node: 'home' },
  ],
  '/v1/fips/:address/move': [{ target: '10.0.0.22' }],
  '/v1/fips/:address/forwards': [
    { protocol: 'tcp', port: '8000-8002', targetPort: 9000, target: '10.0.0.30' },
  ],
  '/v1/nodes/join-tokens': [{ ttlSeconds: 60, node: 'b2' }, {}],
  '/v1/mesh/policy': [
    {
      policy: {
        overlay: '100.80.0.0/16',
        fleet: { openPorts: ['tcp/443'], sshAllow: ['198.51.100.0/24'] },
      },
    },
    { policy: { overlay: '100.80.0.0/16' }, confirmWithinSeconds: 60 },
  ],
  '/v1/mesh/confirm': [{ holdsOnly: true }],
  '/v1/mesh/audit': [{ inventory: 'gw1 192.0.2.2\nhome 10.0.0.9 site=dc1', source: 'inv' }],
  [STORE_ROUTES.txn]: [
    {
      compare: [{ key: '/ipferry/v1/nodes/b1', target: 'version', op: '>', value: 0 }],
      success: [
        {
          type: 'put',
          key: '/ipferry/v1/nodes/b1',
          value: JSON.stringify({ name: 'b1', addresses: ['10.0.7.1'], reservedPorts: [] }),
        },
      ],
    },
    {
      compare: [],
      success: [
        {
          type: 'put',
          key: '/ipferry/v1/status/203.0.113.5',
          value: JSON.stringify({
            address: '203.0.113.5',
            state: 'ACTIVE',
            node: 'b1',
            revision: 1,
          }),
        },
      ],
    },
    { compare: [], success: [{ type: 'deletePrefix', prefix: '/ipferry/v1/' }] },
  ],
  [STORE_ROUTES.leases]: [{ ttlSeconds: 10 }],
  [JOIN_ROUTE]: [{ token: 'ipferry-join-x', node: 'b9' }],
};

const PARAMS = [
  'public',
  'v6',
  'gw1',
  'home',
  'b1',
  '203.0.113.5',
  '2001:db8:f::5',
  'f1',
  '52:54:00:12:34:56',
  '1',
];

interface Request {
  readonly method: Method;
  readonly url: string;
  readonly query: Readonly<Record<string, string>>;
  /** undefined: no body; a string: sent as it is (maybe no JSON at all). */
  readonly body: unknown;
  readonly raw: boolean;
  readonly caller: 'rw' | 'ro' | 'node' | 'forged' | 'none' | 'junk';
}

const param = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom(...PARAMS) },
  { weight: 2, arbitrary: fc.constantFrom(...HOSTILE_TEXT) },
  { weight: 1, arbitrary: fc.string({ maxLength: 30, unit: 'binary' }) },
);

const request: fc.Arbitrary<Request> = fc
  .record({
    route: fc.constantFrom(...ROUTES),
    otherMethod: fc.option(
      fc.constantFrom<Method>('GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS'),
      {
        nil: undefined,
        freq: 6,
      },
    ),
    params: fc.array(param, { minLength: 3, maxLength: 3 }),
    query: fc.dictionary(
      fc.constantFrom('force', 'pool', 'key', 'prefix', 'fromRevision', 'heartbeatMs', 'x'),
      fc.oneof(
        param,
        fc.constantFrom(
          'true',
          '/ipferry/v1/',
          '/ipferry/v1/node-credentials/',
          '-1',
          '99999999999',
        ),
      ),
      { maxKeys: 3 },
    ),
    body: fc.oneof(
      { weight: 1, arbitrary: fc.constant({ none: true as const }) },
      { weight: 2, arbitrary: fc.record({ json: fc.jsonValue({ maxDepth: 3 }) }) },
      {
        weight: 5,
        arbitrary: fc.record({ which: fc.nat(), mutations: fc.array(mutation, { maxLength: 3 }) }),
      },
      { weight: 1, arbitrary: fc.record({ json: hostileValue }) },
    ),
    raw: fc.constantFrom('{', '{"a":', 'null', '', '\u0000', '[]', 'x'.repeat(100)),
    rawChance: fc.nat(19),
    caller: fc.constantFrom<Request['caller']>(
      'rw',
      'rw',
      'rw',
      'rw',
      'rw',
      'rw',
      'ro',
      'node',
      'node',
      'forged',
      'none',
      'junk',
    ),
  })
  .map((r) => {
    const templates = BODIES[r.route.url] ?? [{}];
    const given = r.body;
    const body: unknown =
      'none' in given
        ? undefined
        : 'json' in given
          ? given.json
          : given.mutations.reduce(mutate, templates[given.which % templates.length]);
    const raw = r.rawChance === 0;
    const [a = '', b = '', c = ''] = r.params;
    return {
      method: r.otherMethod ?? r.route.method,
      // fillPath throws URIError on a lone surrogate: no argv or JSON string carries one.
      url: fillPath(r.route.url, wellFormed({ name: a, address: b, id: c, mac: c })),
      query: r.query,
      body: raw ? r.raw : body,
      raw,
      caller: r.caller,
    };
  });

/**
 * 5xx answers fuzzing found in files this suite does not own, counted apart until they are
 * fixed; each is replayed by a todo test below.
 */
const KNOWN_5XX: readonly { name: string; matches: (url: string, body: string) => boolean }[] = [];

const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;

function wellFormed(params: Record<string, string>): Record<string, string> {
  return Object.fromEntries(
    Object.entries(params).map(([k, v]) => [k, v.replace(LONE_SURROGATE, '\ufffd')]),
  );
}

describe('fuzz: random requests at the API', () => {
  let app: FastifyInstance;
  let store: Store;
  let close: () => Promise<void>;
  let reconciler: Reconciler;
  let credential = '';

  before(async () => {
    const cp = await controlPlane(['gw1', 'home']);
    ({ store, close } = cp);
    reconciler = new Reconciler({
      node: 'gw1',
      store,
      control: cp.control,
      dataplane: new FakeDataplane(),
      resyncMs: 3_600_000,
      log: silent,
    });
    app = await buildApi({
      control: cp.control,
      tokens: TokenSet.parse(TOKEN_FILE_TEXT, 'test'),
      agent: {
        node: 'gw1',
        version: 'test',
        dataplane: () => ({ kind: 'fake' }),
        plan: () => reconciler.plan(),
        neighbours: () =>
          Promise.resolve([{ address: '10.0.0.7', mac: '52:54:00:12:34:56', interface: 'lan0' }]),
      },
    });
    const call = async (method: Method, url: string, payload?: object, token = TOKEN_RW) => {
      const res = await app.inject({
        method,
        url,
        ...(payload ? { payload } : {}),
        headers: { authorization: `Bearer ${token}` },
      });
      assert.ok(res.statusCode < 300, `${method} ${url}: ${res.statusCode} ${res.body}`);
      return JSON.parse(res.body) as Record<string, unknown>;
    };
    await call('POST', '/v1/pools', {
      name: 'public',
      gateway: 'gw1',
      entries: ['203.0.113.0/28'],
      shared: ['192.0.2.2'],
    });
    await call('POST', '/v1/pools', { name: 'v6', gateway: 'gw1', entries: ['2001:db8:f::/64'] });
    await call('POST', '/v1/fips', { address: '203.0.113.5' });
    await call('POST', '/v1/fips/203.0.113.5/associate', { target: '10.0.0.11', mode: 'nat' });
    await call('POST', '/v1/fips', { address: '203.0.113.6' });
    await call('POST', '/v1/fips/203.0.113.6/forwards', {
      protocol: 'tcp',
      port: 25,
      target: '10.0.0.12',
    });
    const { token } = (await call('POST', '/v1/nodes/join-tokens', { node: 'b1' })) as {
      token: string;
    };
    const joined = await app.inject({
      method: 'POST',
      url: JOIN_ROUTE,
      payload: { token, node: 'b1' },
    });
    assert.equal(joined.statusCode, 200, joined.body);
    credential = (JSON.parse(joined.body) as { credential: string }).credential;
  });

  after(async () => {
    await app?.close();
    await close?.();
    console.log(tally.summary());
    for (const c of tally.crashes.slice(0, 10)) console.log(`  crash: ${c}`);
  });

  /**
   * Every record but the audit trail's: a refused request is recorded there (that is the trail's
   * job), and must change nothing else.
   */
  const stateOutsideTrail = async (): Promise<string> =>
    JSON.stringify(
      (await store.list('/ipferry/')).kvs.filter((kv) => !kv.key.startsWith(EVENTS_ROOT)),
    );

  function authorization(caller: Request['caller']): Record<string, string> {
    switch (caller) {
      case 'rw':
        return { authorization: `Bearer ${TOKEN_RW}` };
      case 'ro':
        return { authorization: `Bearer ${TOKEN_RO}` };
      case 'node':
        return { authorization: `Bearer ${credential}` };
      case 'forged':
        return { authorization: `Bearer ${credential.slice(0, -4)}AAAA` };
      case 'junk':
        return { authorization: 'Basic \u00ff\u00fe' };
      case 'none':
        return {};
    }
  }

  it('never answers 5xx, refuses with registered codes, and changes nothing it refused', async () => {
    await fc.assert(
      fc.asyncProperty(request, async (r) => {
        tally.cases++;
        const before = await stateOutsideTrail();
        const query = new URLSearchParams(r.query).toString();
        const url = query ? `${r.url}?${query}` : r.url;
        const withBody = r.body !== undefined && r.method !== 'GET' && r.method !== 'HEAD';
        const res = await app.inject({
          method: r.method,
          url,
          headers: {
            ...authorization(r.caller),
            ...(withBody ? { 'content-type': 'application/json' } : {}),
          },
          ...(withBody ? { payload: r.raw ? (r.body as string) : JSON.stringify(r.body) } : {}),
          // A watch that is let in streams until the app closes: take its head only.
          ...(r.url.startsWith(STORE_ROUTES.watch) ? { payloadAsStream: true } : {}),
        });
        const status = res.statusCode;
        tally.count(`http-${Math.floor(status / 100)}xx`);
        const streamed = r.url.startsWith(STORE_ROUTES.watch);
        let text = res.body ?? '';
        if (streamed) {
          const stream = res.stream();
          if (status < 300) {
            stream.destroy();
            return;
          }
          text = await new Promise<string>((resolve) => {
            const chunks: Buffer[] = [];
            stream.on('data', (c: Buffer) => chunks.push(c));
            stream.on('end', () => resolve(Buffer.concat(chunks).toString()));
          });
        }
        const what = `${r.method} ${url.slice(0, 200)} as ${r.caller}: ${status} ${text.slice(0, 300)}`;
        // A HEAD has no body to tell why: the same GET says it.
        const why =
          status >= 500 && r.method === 'HEAD'
            ? (await app.inject({ method: 'GET', url, headers: authorization(r.caller) })).body
            : text;
        const known = status >= 500 ? KNOWN_5XX.find((k) => k.matches(r.url, why)) : undefined;
        if (known) tally.count(`known-5xx: ${known.name}`);
        else if (status >= 500) tally.crash('http', new Error(what));
        assert.ok(status < 500 || known, what);
        if (status < 400) return;
        if (r.method !== 'HEAD') {
          let body: { error?: { code?: unknown; message?: unknown; hint?: unknown } };
          try {
            body = JSON.parse(text) as typeof body;
          } catch {
            assert.fail(`not JSON: ${what}`);
          }
          const code = body.error?.code;
          assert.ok(typeof code === 'string' && code in ERRORS, `no registered code: ${what}`);
          assert.ok(typeof body.error?.message === 'string' && body.error.message.length > 0, what);
          assert.ok(typeof body.error?.hint === 'string', what);
          tally.refusals.set(code, (tally.refusals.get(code) ?? 0) + 1);
        }
        assert.equal(
          await stateOutsideTrail(),
          before,
          `a refused request changed the store: ${what}`,
        );
      }),
      fuzzParameters(2000),
    );
  });

  it('answers a keepalive of an unknown lease with a 4xx, not 503 IPF_E_STORE', async () => {
    const res = await app.inject({
      method: 'POST',
      url: '/v1/store/leases/public/keepalive',
      headers: authorization('rw'),
    });
    assert.ok(res.statusCode < 500, `${res.statusCode} ${res.body}`);
  });

  it('refuses a path parameter holding NUL with a 4xx', async () => {
    const res = await app.inject({
      method: 'GET',
      url: '/v1/pools/%00',
      headers: authorization('rw'),
    });
    assert.ok(res.statusCode < 500, `${res.statusCode} ${res.body}`);
  });

  it('lists FIPs while a status record is no JSON (an admin wrote it through /v1/store)', async () => {
    const key = '/ipferry/v1/status/203.0.113.5';
    const put = await app.inject({
      method: 'POST',
      url: STORE_ROUTES.txn,
      headers: authorization('rw'),
      payload: { compare: [], success: [{ type: 'put', key, value: '{' }] },
    });
    assert.equal(put.statusCode, 200, put.body);
    try {
      const res = await app.inject({
        method: 'GET',
        url: '/v1/fips',
        headers: authorization('rw'),
      });
      assert.ok(res.statusCode < 500, `${res.statusCode} ${res.body}`);
    } finally {
      await store.txn({ compare: [], success: [{ type: 'delete', key }] });
    }
  });

  it('saw no crash', () => {
    assert.deepEqual(tally.crashes, []);
  });
});
