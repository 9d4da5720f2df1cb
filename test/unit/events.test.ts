/**
 * The audit trail: every write through the API, done or refused (validation, conflict, a
 * read-only token, no token), is one event with the token's name, the request without its
 * secrets, the answer's status and code, and the revision the write made; so are joins, without
 * the join token or the node credential, and no agent's /v1/store write is; the ring keeps its
 * bound in the transaction that writes; a node's credential can neither write nor delete
 * events; `ipferry events` prints them, and a long poll returns the next one as it is recorded.
 */
import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { buildApi } from '../../src/api/app.js';
import { TokenSet } from '../../src/api/auth.js';
import { auditTrail } from '../../src/api/events.js';
import { ApiClient } from '../../src/client/api-client.js';
import { eventLine } from '../../src/cli/events.js';
import { main } from '../../src/cli/main.js';
import type { AuditEvent } from '../../src/core/events.js';
import { decodeJoinToken, encodeJoinToken } from '../../src/core/join.js';
import { keys } from '../../src/core/keys.js';
import { NodeWriteRefused, planNodeTxn } from '../../src/core/node-writes.js';
import { listEvents, recordEvent } from '../../src/service/events.js';
import type { Store } from '../../src/store/store.js';
import { controlPlane, TOKEN_RO, TOKEN_RW } from '../support/helpers.js';

const CLIENT_TOKEN = 'client-token-do-not-record-1234';
let ctx: Awaited<ReturnType<typeof controlPlane>>;
let app: FastifyInstance;
let url: string;

async function call(
  method: 'GET' | 'POST' | 'PATCH' | 'DELETE',
  path: string,
  token: string | undefined,
  body?: unknown,
): Promise<{ status: number; revision?: string; text: string }> {
  const res = await fetch(`${url}${path}`, {
    method,
    headers: {
      ...(token ? { authorization: `Bearer ${token}` } : {}),
      ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
    },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  const text = await res.text();
  const revision = res.headers.get('ipferry-revision') ?? undefined;
  return { status: res.status, text, ...(revision ? { revision } : {}) };
}

const events = (): Promise<AuditEvent[]> => listEvents(ctx.store);

/** The trail as the store holds it, every record's raw value: where a secret must not be. */
async function storedTrail(): Promise<string> {
  return (await ctx.store.list(keys.events)).kvs.map((kv) => kv.value).join('\n');
}

before(async () => {
  ctx = await controlPlane(['gw1']);
  app = await buildApi({
    control: ctx.control,
    tokens: TokenSet.parse(`${TOKEN_RW} rw name=alice\n${TOKEN_RO} ro\n`, 'test'),
    agent: {
      node: 'gw1',
      version: 'test',
      dataplane: () => ({ kind: 'fake' }),
      plan: () => Promise.reject(new Error('no plan here')),
      neighbours: () => Promise.resolve([]),
    },
  });
  await app.listen({ host: '127.0.0.1', port: 0 });
  url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
});

after(async () => {
  await app?.close();
  await ctx?.close();
});

describe('the audit trail', () => {
  it('records each write once, with the token’s name, the request and the revision it made', async () => {
    const before = (await events()).length;
    await call('POST', '/v1/pools', TOKEN_RW, {
      name: 'public',
      gateway: 'gw1',
      entries: ['203.0.113.0/29'],
    });
    const allocated = await call('POST', '/v1/fips', TOKEN_RW, {
      address: '203.0.113.1',
      clientToken: CLIENT_TOKEN,
    });
    assert.equal(allocated.status, 201);
    await call('GET', '/v1/fips', TOKEN_RW);
    const all = await events();
    assert.equal(all.length, before + 2, 'reads are not recorded');
    const last = all.at(-1)!;
    assert.equal(last.who, 'alice');
    assert.equal(last.method, 'POST');
    assert.equal(last.path, '/v1/fips');
    assert.equal(last.status, 201);
    assert.equal(last.revision, Number(allocated.revision));
    assert.deepEqual(last.body, { address: '203.0.113.1', clientToken: '[redacted]' });
    assert.equal(last.seq, all.at(-2)!.seq + 1);
  });

  it('records refusals too: invalid, conflicting, a read-only token, no token', async () => {
    const before = (await events()).length;
    assert.equal((await call('POST', '/v1/fips', TOKEN_RW, { address: 'nope' })).status, 400);
    assert.equal(
      (await call('POST', '/v1/fips', TOKEN_RW, { address: '203.0.113.1' })).status,
      409,
    );
    assert.equal((await call('DELETE', '/v1/fips/203.0.113.1', TOKEN_RO)).status, 403);
    assert.equal((await call('DELETE', '/v1/fips/203.0.113.1', undefined)).status, 401);
    assert.equal((await call('DELETE', '/v1/fips/203.0.113.1', 'not-a-token-at-all')).status, 401);
    const refused = (await events()).slice(before);
    assert.deepEqual(
      refused.map((e) => [e.status, e.code, e.who, e.revision]),
      [
        [400, 'IPF_E_VALIDATION', 'alice', undefined],
        [409, 'IPF_E_FIP_IN_USE', 'alice', undefined],
        [403, 'IPF_E_FORBIDDEN', refused[2]!.who, undefined],
        [401, 'IPF_E_UNAUTHORIZED', 'anonymous', undefined],
        [401, 'IPF_E_UNAUTHORIZED', 'an unknown token', undefined],
      ],
    );
    // A token without a name is called by a prefix of its digest, never by itself.
    assert.match(refused[2]!.who, /^sha256:[0-9a-f]{12}$/);
  });

  it('records the join: the token created, a refused and a done join, without their secrets', async () => {
    const before = (await events()).length;
    const created = await call('POST', '/v1/nodes/join-tokens', TOKEN_RW, { node: 'n7' });
    assert.equal(created.status, 201, created.text);
    const { token } = JSON.parse(created.text) as { token: string };
    const secret = decodeJoinToken(token)!.secret;
    const wrong = encodeJoinToken({ urls: ['http://192.0.2.1:7447'], secret: 'A'.repeat(43) });
    assert.equal(
      (await call('POST', '/v1/join', undefined, { token: wrong, node: 'n7' })).status,
      401,
    );
    // A body its schema refuses, with the token as text: none of it is kept.
    const asText = await fetch(`${url}/v1/join`, {
      method: 'POST',
      headers: { 'content-type': 'text/plain' },
      body: token,
    });
    assert.equal(asText.status, 400, await asText.text());
    const joined = await call('POST', '/v1/join', undefined, { token, node: 'n7' });
    assert.equal(joined.status, 200, joined.text);
    const { credential } = JSON.parse(joined.text) as { credential: string };
    // The node's own status writes (/v1/store) are no API writes: not recorded.
    const report = await call('POST', '/v1/store/txn', credential, {
      compare: [],
      success: [{ type: 'put', key: keys.nodeHealth('n7'), value: JSON.stringify({ name: 'n7' }) }],
    });
    assert.equal(report.status, 200, report.text);
    assert.equal((JSON.parse(report.text) as { succeeded: boolean }).succeeded, true);

    const recorded = (await events()).slice(before);
    assert.deepEqual(
      recorded.map((e) => [e.who, e.method, e.path, e.status, e.code, e.body]),
      [
        ['alice', 'POST', '/v1/nodes/join-tokens', 201, undefined, { node: 'n7' }],
        [
          'a join token',
          'POST',
          '/v1/join',
          401,
          'IPF_E_JOIN_REFUSED',
          { token: '[redacted]', node: 'n7' },
        ],
        ['a join token', 'POST', '/v1/join', 400, 'IPF_E_VALIDATION', '[redacted]'],
        ['a join token', 'POST', '/v1/join', 200, undefined, { token: '[redacted]', node: 'n7' }],
      ],
    );
    assert.equal(recorded[0]!.revision, Number(created.revision));
    assert.ok(joined.revision, 'a join answers the revision it made');
    assert.equal(recorded[3]!.revision, Number(joined.revision));
    assert.equal(recorded[1]!.revision, undefined, 'a refused join writes nothing');
    const stored = await storedTrail();
    for (const s of [token, secret, wrong, credential, credential.split('.').at(-1)!]) {
      assert.ok(!stored.includes(s), `the trail holds ${s}`);
    }
  });

  it('holds no secret: no token, no client token, anywhere in the trail', async () => {
    const text = await storedTrail();
    for (const secret of [TOKEN_RW, TOKEN_RO, CLIENT_TOKEN, 'not-a-token-at-all']) {
      assert.ok(!text.includes(secret), `the trail holds ${secret}`);
    }
  });

  it('keeps its bound: the oldest slot is overwritten in the same transaction', async () => {
    const ring = await controlPlane([]);
    try {
      for (let i = 1; i <= 12; i++) {
        await recordEvent(
          ring.store,
          {
            at: new Date().toISOString(),
            who: 'test',
            method: 'POST',
            path: `/v1/x/${i}`,
            status: 200,
          },
          5,
        );
      }
      const kept = await listEvents(ring.store);
      assert.deepEqual(
        kept.map((e) => e.seq),
        [8, 9, 10, 11, 12],
      );
      assert.equal((await ring.store.list(keys.events)).kvs.length, 5);
      assert.deepEqual(
        (await listEvents(ring.store, { after: 10 })).map((e) => e.path),
        ['/v1/x/11', '/v1/x/12'],
      );
    } finally {
      await ring.close();
    }
  });

  it('a trail that cannot be written is logged and fails nothing', async () => {
    const logged: unknown[] = [];
    const down = { get: () => Promise.reject(new Error('store down')) } as unknown as Store;
    const trail = auditTrail(down, { error: (obj: unknown) => void logged.push(obj) });
    await trail.record({
      at: new Date().toISOString(),
      who: 'test',
      method: 'PUT',
      path: '/x',
      status: 201,
    });
    assert.equal(logged.length, 1);
  });

  it('a node credential can neither write nor delete an event', () => {
    const put = { type: 'put' as const, key: keys.event(1), value: '{}' };
    assert.throws(() => planNodeTxn('n1', { compare: [], success: [put] }), NodeWriteRefused);
    assert.throws(
      () => planNodeTxn('n1', { compare: [], success: [{ type: 'delete', key: keys.event(1) }] }),
      NodeWriteRefused,
    );
    assert.throws(
      () =>
        planNodeTxn('n1', {
          compare: [],
          success: [{ type: 'deletePrefix', prefix: keys.events }],
        }),
      NodeWriteRefused,
    );
  });

  it('a long poll returns the next event as it is recorded', async () => {
    const api = new ApiClient({ server: url, token: TOKEN_RO });
    try {
      const last = (await events()).at(-1)!.seq;
      const next = api.events({ after: String(last), wait: '10s' });
      await call('PATCH', '/v1/pools/public', TOKEN_RW, { description: 'watched' });
      const got = await next;
      assert.equal(got.length, 1);
      assert.equal(got[0]!.seq, last + 1);
      assert.equal(got[0]!.method, 'PATCH');
    } finally {
      await api.close();
    }
  });

  it('ipferry events prints the latest events, one line each, or JSON', async () => {
    const run = async (...args: string[]): Promise<{ code: number; out: string }> => {
      let out = '';
      const code = await main(
        ['node', 'ipferry', '--server', url, ...args],
        { out: (s) => (out += s), err: () => undefined },
        { IPFERRY_TOKEN: TOKEN_RO },
        { defaultTokenFile: '/nonexistent' },
      );
      return { code, out };
    };
    const text = await run('events', '--limit', '2');
    assert.equal(text.code, 0);
    const lines = text.out.trimEnd().split('\n');
    assert.equal(lines.length, 2);
    assert.match(
      lines[1]!,
      /^\S+ #\d+ alice PATCH \/v1\/pools\/public \{"description":"watched"\} -> 200 rev \d+$/,
    );
    const json = await run('events', '--json', '--limit', '3');
    const parsed = JSON.parse(json.out) as AuditEvent[];
    assert.equal(parsed.length, 3);
    assert.equal(parsed.at(-1)!.path, '/v1/pools/public');
  });

  it('ipferry events shows which of IP Floater’s APIs took a write, and what it answered', () => {
    const event: AuditEvent = {
      seq: 3,
      at: '2026-12-08T00:00:00.000Z',
      who: 'ipfloater 127.0.0.1',
      api: 'ipfloater-xmlrpc',
      method: 'POST',
      path: '/',
      body: { method: 'clean_public_ip', params: ['203.0.113.9'] },
      status: 200,
      code: 'XMLRPC_FALSE',
      answer: 'Could not clean the redirections from 203.0.113.9. Do they exist?',
    };
    assert.equal(
      eventLine(event),
      '2026-12-08T00:00:00.000Z #3 ipfloater 127.0.0.1 [ipfloater-xmlrpc] POST / {"method":"clean_public_ip","params":["203.0.113.9"]} -> 200 XMLRPC_FALSE "Could not clean the redirections from 203.0.113.9. Do they exist?"',
    );
  });
});
