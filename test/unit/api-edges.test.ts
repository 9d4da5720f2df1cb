/**
 * Every answer of the API has ipferry's error shape, also for requests Fastify refuses before
 * any route or error handler sees them (issue 12, finding 8: a 5,000-character path parameter
 * got Fastify's own `{error: "Bad Request", code: "FST_ERR_…"}`). And a join token whose URLs
 * are not https comes with a warning, which the CLI prints on stderr (also with --json).
 */
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { MAX_PARAM_LENGTH } from '../../src/api/app.js';
import { plainTextWarning } from '../../src/api/join.js';
import { main } from '../../src/cli/main.js';
import { ERRORS } from '../../src/core/errors.js';
import type { Store } from '../../src/store/store.js';
import { controlPlane, dumpStore, TOKEN_RW, testApi } from '../support/helpers.js';

let app: FastifyInstance;
let store: Store;
let close: () => Promise<void>;
let url: string;

before(async () => {
  let control;
  ({ control, store, close } = await controlPlane(['gw1']));
  app = await testApi(control);
  await app.listen({ host: '127.0.0.1', port: 0 });
  url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
});

after(async () => {
  await app.close();
  await close();
});

/** An answer in ipferry's shape: a 4xx, a registry code whose status it is, message and hint. */
function assertIpferryError(status: number, text: string, what: string): string {
  assert.ok(status >= 400 && status < 500, `${what}: status ${status}: ${text.slice(0, 300)}`);
  const body = JSON.parse(text) as { error?: Record<string, unknown> };
  const error = body.error;
  assert.ok(error && typeof error === 'object', `${what}: ${text.slice(0, 300)}`);
  const code = error['code'] as keyof typeof ERRORS;
  assert.ok(code in ERRORS, `${what}: ${String(code)} is no code of the registry`);
  assert.equal(ERRORS[code].status, status, `${what}: ${code} is answered with its own status`);
  assert.equal(typeof error['message'], 'string');
  assert.ok((error['hint'] as string).length > 0, `${what}: a hint`);
  assert.ok(!/FST_ERR/.test(text), `${what}: no Fastify code`);
  return code;
}

const auth = { authorization: `Bearer ${TOKEN_RW}` };
const long = 'a'.repeat(5000);

describe('malformed requests: every answer has the ipferry error shape', () => {
  const cases: {
    what: string;
    method: 'GET' | 'POST' | 'DELETE' | 'PATCH' | 'PUT';
    url: string;
    payload?: string;
    headers?: Record<string, string>;
    code: string;
  }[] = [
    {
      what: 'a 5,000-character FIP',
      method: 'GET',
      url: `/v1/fips/${long}`,
      code: 'IPF_E_VALIDATION',
    },
    {
      what: 'a 5,000-character pool',
      method: 'GET',
      url: `/v1/pools/${long}`,
      code: 'IPF_E_VALIDATION',
    },
    {
      what: 'a 5,000-character pool to delete',
      method: 'DELETE',
      url: `/v1/pools/${long}`,
      code: 'IPF_E_VALIDATION',
    },
    {
      what: 'a 5,000-character forward id',
      method: 'DELETE',
      url: `/v1/fips/203.0.113.1/forwards/${long}`,
      code: 'IPF_E_VALIDATION',
    },
    {
      what: `a parameter one longer than ${MAX_PARAM_LENGTH}`,
      method: 'GET',
      url: `/v1/nodes/${'n'.repeat(MAX_PARAM_LENGTH + 1)}`,
      code: 'IPF_E_VALIDATION',
    },
    {
      what: 'bad percent-encoding of a FIP',
      method: 'GET',
      url: '/v1/fips/%zz',
      code: 'IPF_E_VALIDATION',
    },
    {
      what: 'bad percent-encoding of a pool',
      method: 'GET',
      url: '/v1/pools/%E0%A4%A',
      code: 'IPF_E_VALIDATION',
    },
    {
      what: 'bad percent-encoding of a route',
      method: 'GET',
      url: '/v1/%zz',
      code: 'IPF_E_VALIDATION',
    },
    {
      what: 'bad percent-encoding without a token',
      method: 'GET',
      url: '/v1/fips/%zz',
      headers: { authorization: '' },
      code: 'IPF_E_VALIDATION',
    },
    { what: 'an unknown route', method: 'GET', url: '/v1/nothing-here', code: 'IPF_E_NOT_FOUND' },
    { what: 'an unknown method', method: 'PUT', url: '/v1/pools', code: 'IPF_E_NOT_FOUND' },
    {
      what: 'a 5,000-character unknown route',
      method: 'GET',
      url: `/${long}`,
      code: 'IPF_E_NOT_FOUND',
    },
    {
      what: 'a body that is not JSON',
      method: 'POST',
      url: '/v1/pools',
      payload: '{"name": ',
      headers: { 'content-type': 'application/json' },
      code: 'IPF_E_VALIDATION',
    },
    {
      what: 'an empty JSON body',
      method: 'POST',
      url: '/v1/pools',
      payload: '',
      headers: { 'content-type': 'application/json' },
      code: 'IPF_E_VALIDATION',
    },
    {
      what: 'a body of another content type',
      method: 'POST',
      url: '/v1/pools',
      payload: '<pool/>',
      headers: { 'content-type': 'application/xml' },
      code: 'IPF_E_VALIDATION',
    },
    {
      what: 'a text body',
      method: 'POST',
      url: '/v1/pools',
      payload: 'name=x',
      headers: { 'content-type': 'text/plain' },
      code: 'IPF_E_VALIDATION',
    },
    {
      what: 'a body beyond the limit',
      method: 'POST',
      url: '/v1/pools',
      payload: JSON.stringify({ name: 'x', description: 'd'.repeat(2 * 1024 * 1024) }),
      headers: { 'content-type': 'application/json' },
      code: 'IPF_E_VALIDATION',
    },
    {
      what: 'a prototype-poisoning body',
      method: 'POST',
      url: '/v1/pools',
      payload: '{"__proto__": {"admin": true}}',
      headers: { 'content-type': 'application/json' },
      code: 'IPF_E_VALIDATION',
    },
  ];

  for (const c of cases) {
    it(`${c.what}: ${c.code}, and nothing changed`, async () => {
      const before = await dumpStore(store);
      const res = await app.inject({
        method: c.method,
        url: c.url,
        headers: { ...auth, ...(c.headers ?? {}) },
        ...(c.payload !== undefined ? { payload: c.payload } : {}),
      });
      assert.equal(assertIpferryError(res.statusCode, res.body, c.what), c.code);
      assert.ok(res.body.length < 2000, `${c.what}: the answer repeats no 5,000 characters`);
      assert.equal(await dumpStore(store), before);
    });
  }

  /** Sends raw bytes to the listening API; resolves to what came back before it closed. */
  function raw(bytes: string): Promise<string> {
    const { port } = app.server.address() as AddressInfo;
    return new Promise((resolve, reject) => {
      let got = '';
      const socket = connect(port, '127.0.0.1', () => socket.end(bytes));
      socket.on('data', (d: Buffer) => (got += d.toString()));
      socket.on('error', (e: NodeJS.ErrnoException) =>
        e.code === 'ECONNRESET' || e.code === 'EPIPE' ? resolve(got) : reject(e),
      );
      socket.on('close', () => resolve(got));
    });
  }

  for (const [what, bytes] of [
    [
      'headers beyond the limit',
      `GET /v1/pools HTTP/1.1\r\nHost: x\r\nX-Big: ${'h'.repeat(20_000)}\r\n\r\n`,
    ],
    ['a request line that is not HTTP', 'HELLO THERE\r\n\r\n'],
    ['a header without a colon', 'GET /v1/pools HTTP/1.1\r\nHost x\r\n\r\n'],
  ] as const) {
    it(`${what} (below Fastify, on the socket): the ipferry shape`, async () => {
      const answer = await raw(bytes);
      const [head = '', body = ''] = answer.split('\r\n\r\n');
      const status = Number(/^HTTP\/1\.1 (\d{3}) /.exec(head)?.[1]);
      assert.match(head, /content-type: application\/json/i);
      assert.equal(assertIpferryError(status, body, what), 'IPF_E_VALIDATION');
    });
  }

  it('a well-formed request on the same server still works', async () => {
    const res = await fetch(`${url}/v1/pools`, { headers: auth });
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), []);
  });
});

describe('join tokens whose URLs are not https', () => {
  async function run(args: string[]): Promise<{ code: number; out: string; err: string }> {
    let out = '';
    let err = '';
    const code = await main(
      ['node', 'ipferry', '--server', url, ...args],
      { out: (s) => (out += s), err: (s) => (err += s) },
      { IPFERRY_TOKEN: TOKEN_RW },
      { defaultTokenFile: '/nonexistent/ipferry-api-token', timeoutMs: 5000 },
    );
    return { code, out, err };
  }

  it('the API answers with a warning naming the http:// URLs and how to serve TLS', async () => {
    const res = await app.inject({
      method: 'POST',
      url: '/v1/nodes/join-tokens',
      headers: auth,
      payload: { urls: ['http://192.0.2.1:7447', 'https://gw.example.net:7447'] },
    });
    assert.equal(res.statusCode, 201, res.body);
    const answer = JSON.parse(res.body) as {
      warning?: { message: string; hint: string; urls: string[] };
    };
    assert.deepEqual(answer.warning?.urls, ['http://192.0.2.1:7447']);
    assert.match(answer.warning?.message ?? '', /clear text/);
    assert.match(answer.warning?.hint ?? '', /--tls-cert FILE --tls-key FILE/);
  });

  it('no warning when every URL is https', async () => {
    const res = await app.inject({
      method: 'POST',
      url: '/v1/nodes/join-tokens',
      headers: auth,
      payload: { urls: ['https://gw.example.net:7447'] },
    });
    assert.equal(res.statusCode, 201, res.body);
    assert.equal((JSON.parse(res.body) as { warning?: unknown }).warning, undefined);
  });

  it('an agent that serves TLS is told to hand out its https:// URLs', () => {
    assert.match(plainTextWarning(['http://h:7447'], true)?.hint ?? '', /--url https:/);
    assert.equal(plainTextWarning(['HTTPS://h:7447'], false), undefined);
  });

  it('the CLI prints the token alone on stdout and the warning on stderr', async () => {
    const r = await run(['node', 'join-token', 'create', '--node', 'b1']);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /^ipfjoin1\.[A-Za-z0-9_-]+\n$/);
    assert.match(r.err, new RegExp(`^warning: ${url} is not https: .*clear text`, 'm'));
    assert.match(
      r.err,
      /^hint: Serve the API over TLS \(ipferry agent --tls-cert FILE --tls-key FILE\)/m,
    );
  });

  it('with --json, stdout is the answer with its warning (valid JSON), stderr the warning', async () => {
    const r = await run(['--json', 'node', 'join-token', 'create']);
    assert.equal(r.code, 0, r.err);
    const answer = JSON.parse(r.out) as {
      token: string;
      urls: string[];
      warning?: { urls: string[] };
    };
    assert.deepEqual(answer.warning?.urls, [url]);
    assert.match(r.err, /^warning: .*clear text/m);
    const https = await run(['--json', 'node', 'join-token', 'create', '--url', 'https://gw:7447']);
    assert.equal(https.err, '');
    assert.equal((JSON.parse(https.out) as { warning?: unknown }).warning, undefined);
  });
});
