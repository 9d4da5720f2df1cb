/**
 * Who may call IP Floater's APIs served by the agent: the config refuses a listen beyond
 * loopback without protection; the allow-list refuses other sources before anything else;
 * `--ipfloater-auth token` asks for HTTP basic auth with an API token, read-only tokens read;
 * the audit trail names each write's token, records refused ones too, and holds no token.
 */
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { XmlRpcClient } from '@foxglove/xmlrpc';
import { type RawAgentOptions, resolveConfig } from '../../src/agent/config.js';
import { type RunningAgent, startAgent } from '../../src/agent/run.js';
import { FakeDataplane } from '../../src/dataplane/fake.js';
import { keys } from '../../src/core/keys.js';
import { listEvents } from '../../src/service/events.js';
import { tempDir, TOKEN_FILE_TEXT, TOKEN_RO, TOKEN_RW } from '../support/helpers.js';

let tmp: { dir: string; remove: () => Promise<void> };
const running: RunningAgent[] = [];

function options(extra: RawAgentOptions): RawAgentOptions {
  return {
    node: 'gw1',
    store: `sqlite:${join(tmp.dir, `state-${running.length}.db`)}`,
    listen: '127.0.0.1:0',
    tokenFile: join(tmp.dir, 'token'),
    logLevel: 'silent',
    ...extra,
  };
}

async function agentWith(extra: RawAgentOptions): Promise<RunningAgent> {
  const agent = await startAgent(resolveConfig({}, options(extra), 'test'), {
    dataplane: new FakeDataplane(),
  });
  running.push(agent);
  await agent.control
    .createPool({ name: 'public', gateway: 'gw1', entries: ['203.0.113.8/30'] })
    .catch(() => undefined);
  return agent;
}

const basic = (user: string, password: string): string =>
  `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;

async function status(url: string, method: string, auth?: string): Promise<number> {
  const res = await fetch(url, { method, ...(auth ? { headers: { authorization: auth } } : {}) });
  await res.arrayBuffer();
  return res.status;
}

/** The trail's events as [api, who, method, path, status, code, called XML-RPC method]. */
async function trail(agent: RunningAgent): Promise<unknown[][]> {
  return (await listEvents(agent.control.store)).map((e) => [
    e.api,
    e.who,
    e.method,
    e.path,
    e.status,
    e.code,
    (e.body as { method?: string } | undefined)?.method,
  ]);
}

/** Every record of the trail as the store holds it: where no secret may be. */
async function storedTrail(agent: RunningAgent): Promise<string> {
  return (await agent.control.store.list(keys.events)).kvs.map((kv) => kv.value).join('\n');
}

before(async () => {
  tmp = await tempDir('ipfloater-auth');
  await writeFile(join(tmp.dir, 'token'), TOKEN_FILE_TEXT, { mode: 0o600 });
  await writeFile(
    join(tmp.dir, 'named-tokens'),
    `${TOKEN_RW} rw name=oneadmin\n${TOKEN_RO} ro name=monitor\n`,
    { mode: 0o600 },
  );
});

after(async () => {
  for (const agent of running) await agent.stop();
  await tmp?.remove();
});

describe("IP Floater's APIs: configuration", () => {
  it('are off by default', () => {
    assert.equal(resolveConfig({}, options({}), 'test').ipfloater, undefined);
  });

  it('refuse to listen beyond loopback with neither an allow-list nor token auth', () => {
    assert.throws(
      () => resolveConfig({}, options({ ipfloaterRest: '0.0.0.0:7003' }), 'test'),
      (e: Error & { code?: string }) =>
        e.code === 'IPF_E_CONFIG' &&
        /--ipfloater-rest: listens on 0\.0\.0\.0, beyond this host, without protection/.test(
          e.message,
        ),
    );
    const allowed = resolveConfig(
      {},
      options({ ipfloaterXmlrpc: '0.0.0.0:7000', ipfloaterAllow: '10.0.0.0/8, 192.0.2.7' }),
      'test',
    );
    assert.deepEqual(allowed.ipfloater, {
      xmlrpc: { host: '0.0.0.0', port: 7000 },
      pools: [],
      allow: ['10.0.0.0/8', '192.0.2.7/32'],
      auth: 'none',
    });
    assert.ok(allowed.reservedPorts.some((p) => p.protocol === 'tcp' && p.port === 7000));
    const tokened = resolveConfig(
      {},
      options({ ipfloaterRest: '[::]:7003', ipfloaterAuth: 'token', ipfloaterPool: 'a,b' }),
      'test',
    );
    assert.deepEqual(tokened.ipfloater, {
      rest: { host: '::', port: 7003 },
      pools: ['a', 'b'],
      auth: 'token',
    });
  });

  it('take lists in the YAML file (the example of docs/configuration.md)', () => {
    const file: RawAgentOptions = {
      ipfloaterRest: '10.0.0.1:7003',
      ipfloaterXmlrpc: '10.0.0.1:7000',
      ipfloaterPool: ['public'],
      ipfloaterAllow: ['10.0.0.0/24'],
      ipfloaterAuth: 'token',
    };
    assert.deepEqual(resolveConfig(file, options({}), 'agent.yaml').ipfloater, {
      rest: { host: '10.0.0.1', port: 7003 },
      xmlrpc: { host: '10.0.0.1', port: 7000 },
      pools: ['public'],
      allow: ['10.0.0.0/24'],
      auth: 'token',
    });
  });

  it('refuse their other options without a server, and bad values', () => {
    assert.throws(
      () => resolveConfig({}, options({ ipfloaterPool: 'public' }), 'test'),
      /--ipfloater-pool: has no effect without --ipfloater-rest or --ipfloater-xmlrpc/,
    );
    assert.throws(
      () =>
        resolveConfig(
          {},
          options({ ipfloaterRest: '127.0.0.1:7003', ipfloaterAllow: '10.0.0.0/33' }),
          'test',
        ),
      /--ipfloater-allow: "10\.0\.0\.0\/33" is not an address or a CIDR prefix/,
    );
    assert.throws(
      () => resolveConfig({}, options({ ipfloaterRest: '7003' }), 'test'),
      /--ipfloater-rest: must be ADDRESS:PORT/,
    );
  });
});

describe("IP Floater's APIs: allow-list and token auth", () => {
  it('refuse a source outside the allow-list (403) before reading credentials', async () => {
    const agent = await agentWith({
      ipfloaterRest: '127.0.0.1:0',
      ipfloaterXmlrpc: '127.0.0.1:0',
      ipfloaterAllow: '192.0.2.0/24',
      ipfloaterAuth: 'token',
    });
    const rest = agent.ipfloater!.rest!;
    assert.equal(await status(`${rest}/public`, 'GET', basic('x', TOKEN_RW)), 403);
    assert.equal(await status(agent.ipfloater!.xmlrpc!, 'POST', basic('x', TOKEN_RW)), 403);
    const put = `${rest}/public/203.0.113.9/redirect/10.0.0.5`;
    assert.equal(await status(put, 'PUT', basic('x', TOKEN_RW)), 403);
    // Refused before its credentials are read: named by its address, whatever token it sent.
    // A refused XML-RPC call is recorded unread (its method is not known): it may be a write.
    assert.deepEqual(await trail(agent), [
      ['ipfloater-xmlrpc', 'ipfloater 127.0.0.1', 'POST', '/', 403, undefined, undefined],
      [
        'ipfloater-rest',
        'ipfloater 127.0.0.1',
        'PUT',
        '/public/203.0.113.9/redirect/10.0.0.5',
        403,
        undefined,
        undefined,
      ],
    ]);
    assert.ok(!(await storedTrail(agent)).includes(TOKEN_RW));
  });

  it('let an allowed source in without a token when auth is none', async () => {
    const agent = await agentWith({ ipfloaterRest: '127.0.0.1:0', ipfloaterAllow: '127.0.0.0/8' });
    assert.equal(await status(`${agent.ipfloater!.rest!}/public`, 'GET'), 200);
  });

  it('ask for a token by basic auth (401 with a realm); a read-only one may only read', async () => {
    const agent = await agentWith({
      ipfloaterRest: '127.0.0.1:0',
      ipfloaterXmlrpc: '127.0.0.1:0',
      ipfloaterAuth: 'token',
    });
    const rest = agent.ipfloater!.rest!;
    const res = await fetch(`${rest}/public`);
    assert.equal(res.status, 401);
    assert.match(res.headers.get('www-authenticate') ?? '', /^Basic realm="ipfloater"/);
    assert.equal(await status(`${rest}/public`, 'GET', basic('x', 'wrong-token-0123456789')), 401);
    assert.equal(await status(`${rest}/public`, 'GET', `Bearer ${TOKEN_RW}`), 401);
    assert.equal(await status(`${rest}/public`, 'GET', basic('', TOKEN_RO)), 200);
    const put = `${rest}/public/203.0.113.9/redirect/10.0.0.5`;
    assert.equal(await status(put, 'PUT', basic('oneadmin', TOKEN_RO)), 403);
    assert.equal(await status(put, 'PUT', basic('oneadmin', TOKEN_RW)), 201);

    const xmlrpc = agent.ipfloater!.xmlrpc!;
    await assert.rejects(new XmlRpcClient(xmlrpc).methodCall('get_version'), /401/);
    const ro = new XmlRpcClient(xmlrpc, { headers: { Authorization: basic('u', TOKEN_RO) } });
    assert.equal(await ro.methodCall('get_version'), '0.12');
    assert.deepEqual(await ro.methodCall('clean_public_ip', ['203.0.113.9']), [
      false,
      'This token may only read',
    ]);
    const rw = new XmlRpcClient(xmlrpc, { headers: { Authorization: basic('u', TOKEN_RW) } });
    assert.deepEqual(await rw.methodCall('clean_public_ip', ['203.0.113.9']), [
      true,
      'Redirections from 203.0.113.9 unregistered',
    ]);
  });

  it('record each write by its token’s name, refusals too, and never a token', async () => {
    const agent = await agentWith({
      ipfloaterRest: '127.0.0.1:0',
      ipfloaterXmlrpc: '127.0.0.1:0',
      ipfloaterAuth: 'token',
      tokenFile: join(tmp.dir, 'named-tokens'),
    });
    const rest = agent.ipfloater!.rest!;
    const put = `${rest}/public/203.0.113.9/redirect/10.0.0.5`;
    const WRONG = 'wrong-token-0123456789';
    assert.equal(await status(put, 'PUT'), 401);
    assert.equal(await status(put, 'PUT', basic('oneadmin', WRONG)), 401);
    assert.equal(await status(put, 'PUT', basic('oneadmin', TOKEN_RO)), 403);
    assert.equal(await status(`${rest}/public`, 'GET', basic('oneadmin', TOKEN_RO)), 200);
    const done = await fetch(put, {
      method: 'PUT',
      headers: { authorization: basic('oneadmin', TOKEN_RW) },
    });
    assert.equal(done.status, 201, await done.text());

    const xmlrpc = agent.ipfloater!.xmlrpc!;
    await assert.rejects(
      new XmlRpcClient(xmlrpc).methodCall('clean_public_ip', ['203.0.113.9']),
      /401/,
    );
    const ro = new XmlRpcClient(xmlrpc, { headers: { Authorization: basic('u', TOKEN_RO) } });
    const rw = new XmlRpcClient(xmlrpc, { headers: { Authorization: basic('u', TOKEN_RW) } });
    assert.deepEqual(await ro.methodCall('clean_public_ip', ['203.0.113.9']), [
      false,
      'This token may only read',
    ]);
    assert.equal(await ro.methodCall('get_version'), '0.12');
    assert.deepEqual(await rw.methodCall('clean_public_ip', ['203.0.113.9']), [
      true,
      'Redirections from 203.0.113.9 unregistered',
    ]);

    const path = '/public/203.0.113.9/redirect/10.0.0.5';
    assert.deepEqual(await trail(agent), [
      ['ipfloater-rest', 'ipfloater 127.0.0.1', 'PUT', path, 401, undefined, undefined],
      [
        'ipfloater-rest',
        'ipfloater 127.0.0.1 with an unknown token',
        'PUT',
        path,
        401,
        undefined,
        undefined,
      ],
      ['ipfloater-rest', 'monitor', 'PUT', path, 403, undefined, undefined],
      ['ipfloater-rest', 'oneadmin', 'PUT', path, 201, undefined, undefined],
      ['ipfloater-xmlrpc', 'ipfloater 127.0.0.1', 'POST', '/', 401, undefined, undefined],
      ['ipfloater-xmlrpc', 'monitor', 'POST', '/', 200, 'XMLRPC_FALSE', 'clean_public_ip'],
      ['ipfloater-xmlrpc', 'oneadmin', 'POST', '/', 200, undefined, 'clean_public_ip'],
    ]);
    const events = await listEvents(agent.control.store);
    assert.equal(events[3]!.revision, Number(done.headers.get('ipferry-revision')));
    assert.ok(events[6]!.revision! > events[3]!.revision);
    const stored = await storedTrail(agent);
    for (const secret of [TOKEN_RW, TOKEN_RO, WRONG]) {
      assert.ok(!stored.includes(secret), `the trail holds ${secret}`);
      for (const user of ['oneadmin', 'u']) {
        const header = basic(user, secret);
        assert.ok(!stored.includes(header.slice('Basic '.length)), `the trail holds ${header}`);
      }
    }
  });

  it('stop with the agent', async () => {
    const agent = await agentWith({ ipfloaterRest: '127.0.0.1:0', ipfloaterXmlrpc: '127.0.0.1:0' });
    const { rest, xmlrpc } = agent.ipfloater!;
    await agent.stop();
    running.splice(running.indexOf(agent), 1);
    await assert.rejects(fetch(`${rest!}/public`));
    await assert.rejects(fetch(xmlrpc!, { method: 'POST', body: '' }));
  });

  it('refuse to start when a port is taken, and leave nothing listening', async () => {
    const first = await agentWith({ ipfloaterRest: '127.0.0.1:0' });
    const port = new URL(first.ipfloater!.rest!).port;
    await assert.rejects(
      agentWith({ ipfloaterXmlrpc: '127.0.0.1:0', ipfloaterRest: `127.0.0.1:${port}` }),
      /EADDRINUSE/,
    );
  });
});
