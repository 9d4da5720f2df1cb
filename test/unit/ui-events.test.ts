/**
 * The web page's routes: its files load without a token under a strict CSP; the event stream,
 * the session and the counters need one (read-only is enough), and the stream names the kinds
 * of state a write changed, never a value or a secret's key.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { Agent } from 'undici';
import { keys } from '../../src/core/keys.js';
import { changedKinds, sseEvent, UI_CSP } from '../../src/api/ui.js';
import type { ControlPlane } from '../../src/service/control.js';
import { controlPlane, TOKEN_RO, TOKEN_RW, testApi } from '../support/helpers.js';

let app: FastifyInstance;
let control: ControlPlane;
let close: () => Promise<void>;
let base: string;

before(async () => {
  ({ control, close } = await controlPlane(['gw1']));
  app = await testApi(control, {
    fipCounters: () => Promise.resolve(new Map([['203.0.113.5', { packets: 7, bytes: 840 }]])),
  });
  base = await app.listen({ host: '127.0.0.1', port: 0 });
  await control.createPool({ name: 'pub', gateway: 'gw1', entries: ['203.0.113.0/28'] });
});

after(async () => {
  await connections.destroy();
  await app.close();
  await close();
});

const auth = (token: string) => ({ authorization: `Bearer ${token}` });

/**
 * The test's own connection pool, destroyed before the agent closes: an answer whose body is
 * left unread keeps its connection busy, the pool opens another that may never carry a request,
 * and the server would wait for such a connection until its timeout to close.
 */
const connections = new Agent();

/** GET `path`, its body read whole. */
async function get(
  path: string,
  token?: string,
): Promise<{ status: number; headers: Headers; text: string; json: () => any }> {
  const res = await fetch(`${base}${path}`, {
    headers: token ? auth(token) : {},
    dispatcher: connections,
  } as unknown as RequestInit);
  const text = await res.text();
  return { status: res.status, headers: res.headers, text, json: (): any => JSON.parse(text) };
}

/** Reads server-sent events from `response` until `until` holds for the ones read so far. */
async function readEvents(
  response: Response,
  until: (events: { name: string; data: any }[]) => boolean,
): Promise<{ name: string; data: any }[]> {
  const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
  const events: { name: string; data: any }[] = [];
  let buffer = '';
  while (!until(events)) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let end: number;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const name = /^event: (.*)$/m.exec(block)?.[1];
      const data = /^data: (.*)$/m.exec(block)?.[1];
      if (name && data) events.push({ name, data: JSON.parse(data) });
    }
  }
  await reader.cancel();
  return events;
}

describe('the web page’s files', () => {
  it('load without a token, under a CSP that allows only this origin and no inline script', async () => {
    const page = await get('/ui');
    assert.equal(page.status, 200);
    assert.match(page.headers.get('content-type') ?? '', /^text\/html/);
    assert.equal(page.headers.get('content-security-policy'), UI_CSP);
    assert.match(UI_CSP, /script-src 'self'(;|$)/);
    assert.doesNotMatch(UI_CSP, /unsafe-inline|unsafe-eval|https?:/);
    assert.equal(page.headers.get('x-frame-options'), 'DENY');
    assert.match(page.text, /<script type="module" src="\/ui\/assets\/app\.js"><\/script>/);
    assert.doesNotMatch(page.text, /<script>|<script type="module">|on(click|load|submit)=/);

    for (const [file, type] of [
      ['app.js', /^text\/javascript/],
      ['api.js', /^text\/javascript/],
      ['dom.js', /^text\/javascript/],
      ['style.css', /^text\/css/],
      ['icon.svg', /^image\/svg\+xml/],
    ] as const) {
      const res = await get(`/ui/assets/${file}`);
      assert.equal(res.status, 200, file);
      assert.match(res.headers.get('content-type') ?? '', type);
      assert.equal(res.headers.get('x-content-type-options'), 'nosniff');
    }
  });

  it('serves only its own files: anything else under /ui is an ipferry error', async () => {
    for (const path of ['/ui/assets/nope.js', '/ui/assets/..%2Fui.ts', '/ui/assets/index.html']) {
      const res = await get(path);
      assert.equal(res.status, 404, path);
      assert.equal(res.json().error.code, 'IPF_E_NOT_FOUND');
    }
  });
});

describe('/ui/session and /ui/counters', () => {
  it('need a token, and say which kind it is', async () => {
    const none = await get('/ui/session');
    assert.equal(none.status, 401);
    assert.equal(none.json().error.code, 'IPF_E_UNAUTHORIZED');
    assert.deepEqual((await get('/ui/session', TOKEN_RW)).json(), { node: 'gw1', access: 'rw' });
    assert.deepEqual((await get('/ui/session', TOKEN_RO)).json(), { node: 'gw1', access: 'ro' });
  });

  it('counters: the dataplane’s per-FIP packets and bytes', async () => {
    assert.equal((await get('/ui/counters')).status, 401);
    assert.deepEqual((await get('/ui/counters', TOKEN_RO)).json(), {
      node: 'gw1',
      available: true,
      fips: { '203.0.113.5': { packets: 7, bytes: 840 } },
    });
  });
});

describe('/ui/events', () => {
  it('refuses a missing or wrong token before it watches anything', async () => {
    assert.equal((await get('/ui/events')).status, 401);
    assert.equal((await get('/ui/events', 'x'.repeat(24))).status, 401);
  });

  it('streams hello, then the kinds of state each write changed, to a read-only token', async () => {
    const response = await fetch(`${base}/ui/events`, {
      headers: auth(TOKEN_RO),
      dispatcher: connections,
    } as unknown as RequestInit);
    assert.equal(response.status, 200);
    assert.match(response.headers.get('content-type') ?? '', /^text\/event-stream/);
    assert.equal(response.headers.get('cache-control'), 'no-store');
    const events = readEvents(response, (seen) => seen.some((e) => e.name === 'change'));
    // The hello is written before the route returns: a write now is after the stream's start.
    const fip = await control.allocate({ pool: 'pub', clientToken: 'a-client-token-12345' });
    const seen = await events;
    assert.equal(seen[0]?.name, 'hello');
    assert.ok(seen[0]?.data.revision < fip.revision);
    const change = seen.find((e) => e.name === 'change')!;
    assert.equal(change.data.revision, fip.revision);
    // The allocate wrote the FIP, its client token's digest and the pool's counters; the page
    // hears of FIPs only, and nothing of the client token (neither its key nor its digest).
    assert.deepEqual(change.data.kinds, ['fips']);
    assert.deepEqual(Object.keys(change.data).sort(), ['kinds', 'revision']);
  });

  it('ends streams when the agent closes', async () => {
    const { control: c2, close: close2 } = await controlPlane(['gw1']);
    const app2 = await testApi(c2);
    const url = await app2.listen({ host: '127.0.0.1', port: 0 });
    const response = await fetch(`${url}/ui/events`, { headers: auth(TOKEN_RW) });
    const reading = readEvents(response, () => false);
    await app2.close();
    const seen = await reading;
    assert.deepEqual(
      seen.map((e) => e.name),
      ['hello'],
    );
    await close2();
  });
});

describe('/ui/events when the store goes', () => {
  it('sends lost with the store’s error and ends, so the page reconnects and reads again', async () => {
    const { control: c3, close: close3 } = await controlPlane(['gw1']);
    const app3 = await testApi(c3);
    const url = await app3.listen({ host: '127.0.0.1', port: 0 });
    try {
      const response = await fetch(`${url}/ui/events`, {
        headers: auth(TOKEN_RO),
        dispatcher: connections,
      } as unknown as RequestInit);
      const reading = readEvents(response, (seen) => seen.some((e) => e.name === 'lost'));
      await close3();
      const seen = await reading;
      assert.deepEqual(
        seen.map((e) => e.name),
        ['hello', 'lost'],
      );
      assert.equal(seen[1]?.data.error.code, 'IPF_E_STORE');
    } finally {
      await app3.close();
    }
  });
});

describe('changedKinds and sseEvent', () => {
  const put = (key: string) => ({
    type: 'put' as const,
    kv: { key, value: '{}', modRevision: 1, createRevision: 1, version: 1 },
  });

  it('maps keys to the page’s kinds and leaves out secrets and bookkeeping', () => {
    assert.deepEqual(
      changedKinds([
        put(keys.fip('203.0.113.1')),
        put(keys.status('203.0.113.1')),
        put(keys.pool('pub')),
        put(keys.nodeAlive('gw1')),
        put(keys.nodeHealth('gw1')),
        put(keys.meshPolicy),
      ]),
      ['fips', 'mesh', 'nodes', 'pools'],
    );
    assert.deepEqual(
      changedKinds([
        put(keys.clientToken('a-client-token-12345')),
        put(keys.nodeCredential('gw1')),
        put(keys.joinToken('ab'.repeat(32))),
        put(keys.leaseOwner('7')),
        put(keys.poolsGuard),
        put('/elsewhere/fips/1'),
      ]),
      [],
    );
  });

  it('writes one event per block, its data as one line of JSON', () => {
    assert.equal(
      sseEvent('change', { revision: 3, kinds: ['fips'] }),
      'event: change\ndata: {"revision":3,"kinds":["fips"]}\n\n',
    );
  });
});
