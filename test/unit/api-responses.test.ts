/**
 * Every route of the agent's HTTP contract answers what its response schema says. Fastify checks
 * requests against src/api/contract.ts, but answers leave through JSON.stringify (routes.ts), so
 * nothing else holds a route's answer to `API[name].response[status]`. Here a real agent (SQLite
 * store in a temp dir, the strict fake dataplane) is driven over HTTP through every route of
 * `API` with valid requests, on state rich enough that the optional parts of the answers show
 * (an association in ERROR, a pending plan, forwards, a trial rolled back, a node's tunnel and
 * mesh reports), and each answer is checked with TypeBox's Value.Errors. One refusal per family
 * is checked for ipferry's error shape. The last test fails when a route of the table was never
 * called here, so a new route cannot go without its answer checked. Top-level fields an answer
 * carries that its schema does not name are listed as diagnostics, not refused: the schemas are
 * open, and some answers carry such fields today (a node's reservedPorts, a FIP's forwardSerial).
 */
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { TSchema } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { resolveConfig } from '../../src/agent/config.js';
import { type RunningAgent, startAgent } from '../../src/agent/run.js';
import {
  API,
  type Api,
  type BodyOf,
  type ParamsOf,
  pathOf,
  type QueryOf,
  type ResponseOf,
  type RouteName,
} from '../../src/api/contract.js';
import { stringifyStored } from '../../src/core/json.js';
import { keys } from '../../src/core/keys.js';
import type { NodeHealth, NodeLiveness } from '../../src/core/model.js';
import { FakeDataplane } from '../../src/dataplane/fake.js';
import { tempDir, TOKEN_FILE_TEXT, TOKEN_RO, TOKEN_RW, waitFor } from '../support/helpers.js';

let tmp: { dir: string; remove: () => Promise<void> };
let agent: RunningAgent;
const dataplane = new FakeDataplane();

interface Call<N extends RouteName> {
  readonly params?: ParamsOf<Api[N]>;
  readonly query?: QueryOf<Api[N]>;
  readonly body?: BodyOf<Api[N]>;
  /** The bearer token; null sends none. */
  readonly token?: string | null;
}

interface Answer {
  readonly status: number;
  readonly text: string;
  readonly body: unknown;
}

/** Routes whose success answer was checked against its schema. */
const checked = new Set<RouteName>();
/** Top-level fields an answer carried that its schema does not name, by route. */
const unnamed = new Map<RouteName, Set<string>>();

async function send<N extends RouteName>(name: N, call: Call<N> = {}): Promise<Answer> {
  const spec: Api[RouteName] = API[name];
  const query = new URLSearchParams((call.query ?? {}) as Record<string, string>).toString();
  const token = call.token === undefined ? TOKEN_RW : call.token;
  const res = await fetch(`${agent.url}${pathOf(spec, call.params)}${query ? `?${query}` : ''}`, {
    method: spec.method,
    headers: {
      ...(token ? { authorization: `Bearer ${token}` } : {}),
      ...(call.body !== undefined ? { 'content-type': 'application/json' } : {}),
    },
    ...(call.body !== undefined ? { body: JSON.stringify(call.body) } : {}),
  });
  const text = await res.text();
  return { status: res.status, text, body: text === '' ? undefined : JSON.parse(text) };
}

/** Calls a route that must succeed, and checks its answer against the schema of its status. */
async function answer<N extends RouteName>(
  name: N,
  call: Call<N> = {},
): Promise<ResponseOf<Api[N]>> {
  const { status, text, body } = await send(name, call);
  const schemas: Readonly<Record<number, TSchema>> = API[name].response;
  const schema = schemas[status];
  assert.ok(schema, `${name} answered ${status}, for which its row has no schema: ${text}`);
  const errors = [...Value.Errors(schema, body)].map(
    (e) => `${e.path || '/'}: ${e.message} (got ${JSON.stringify(e.value)})`,
  );
  assert.deepEqual(errors, [], `${name} ${status} does not match its response schema: ${text}`);
  checked.add(name);
  for (const field of fieldsNotNamed(schema, body)) {
    const seen = unnamed.get(name) ?? new Set<string>();
    unnamed.set(name, seen.add(field));
  }
  return body as ResponseOf<Api[N]>;
}

/** The top-level fields of an answer (of each item of a list) that its schema does not name. */
function fieldsNotNamed(schema: TSchema, body: unknown): string[] {
  const object = (schema['type'] === 'array' ? schema['items'] : schema) as TSchema;
  const named = new Set(Object.keys((object['properties'] ?? {}) as object));
  const items = Array.isArray(body) ? (body as unknown[]) : [body];
  return items.flatMap((item) =>
    item !== null && typeof item === 'object' ? Object.keys(item).filter((k) => !named.has(k)) : [],
  );
}

/** Calls a route that must be refused: `status`, `code`, and ipferry's error shape, exactly. */
async function refusal<N extends RouteName>(
  name: N,
  call: Call<N>,
  status: number,
  code: string,
): Promise<void> {
  checkError(await send(name, call), status, code, name);
}

function checkError(answer: Answer, status: number, code: string, what: string): void {
  assert.equal(answer.status, status, `${what}: ${answer.text}`);
  const body = answer.body as { error?: Record<string, unknown> };
  assert.deepEqual(Object.keys(body), ['error'], `${what}: ${answer.text}`);
  const error = body.error!;
  assert.equal(error['code'], code, `${what}: ${answer.text}`);
  for (const field of ['message', 'hint']) {
    assert.equal(typeof error[field], 'string', `${what}: ${field}`);
    assert.ok((error[field] as string).length > 0, `${what}: an empty ${field}`);
  }
  const extra = Object.keys(error).filter(
    (k) => !['code', 'message', 'hint', 'problems'].includes(k),
  );
  assert.deepEqual(extra, [], `${what}: fields beside code, message, hint and problems`);
  if (error['problems'] !== undefined) {
    for (const p of error['problems'] as Record<string, unknown>[]) {
      assert.deepEqual(Object.keys(p).sort(), ['message', 'path'], `${what}: a problem`);
    }
  }
}

async function stateOf(address: string): Promise<string | undefined> {
  return (await answer('getFip', { params: { address } })).status?.state;
}

const POLICY = {
  overlay: '192.168.0.0/18',
  maxChange: 2,
  fleet: { openPorts: ['tcp/443'], sshAllow: ['192.0.2.0/24'] },
  sites: { fra: { lans: ['10.1.0.0/16'] }, ams: { lans: ['10.2.0.0/16'] } },
  nodes: { web1: { rejectAll: true } },
};

before(async () => {
  tmp = await tempDir('api-responses');
  const tokenFile = join(tmp.dir, 'token');
  await writeFile(tokenFile, TOKEN_FILE_TEXT, { mode: 0o600 });
  dataplane.hostFacts = { interfaces: ['eth0'], addresses: ['10.1.0.1', '198.51.100.1'] };
  agent = await startAgent(
    resolveConfig(
      {},
      {
        node: 'gw1',
        site: 'fra',
        store: `sqlite:${join(tmp.dir, 'state.db')}`,
        listen: '127.0.0.1:0',
        tokenFile,
        resyncSeconds: 1,
        logLevel: 'silent',
      },
      'test',
    ),
    {
      dataplane,
      neighbours: () =>
        Promise.resolve([{ address: '10.1.0.7', mac: 'aa:bb:cc:dd:ee:07', interface: 'eth0' }]),
    },
  );
  // Another node, alive, with a tunnel and a mesh as its agent would report them.
  const control = agent.control;
  await control.registerNode({
    name: 'web1',
    site: 'ams',
    endpoint: '203.0.113.200:51820',
    publicKey: 'c2VydmVyLWtleS1vZi13ZWIxLTAwMDAwMDAwMDAwMDA=',
    addresses: ['10.2.0.11', '203.0.113.200'],
    reservedPorts: [{ protocol: 'tcp', port: 22 }],
  });
  const lease = await control.store.grantLease(600);
  const now = new Date().toISOString();
  const liveness: NodeLiveness = { name: 'web1', since: now };
  const health: NodeHealth = {
    name: 'web1',
    updatedAt: now,
    tunnel: {
      name: 'ipf-wg0',
      checkedAt: now,
      peers: [
        {
          publicKey: 'Z2F0ZXdheS1rZXktb2YtZ3cxLTAwMDAwMDAwMDAwMDA=',
          endpoint: '198.51.100.1:51820',
          handshakeAgeSeconds: 12,
          rxBytes: 1024,
          txBytes: 2048,
        },
      ],
    },
    mesh: {
      appliedRevision: 1,
      rejectAll: true,
      members: 2,
      hold: { keeping: ['192.168.0.9'], maxChange: 2, sinceRevision: 1 },
    },
  };
  await control.store.txn({
    compare: [],
    success: [
      { type: 'put', key: keys.nodeAlive('web1'), value: stringifyStored(liveness), lease },
      { type: 'put', key: keys.nodeHealth('web1'), value: stringifyStored(health) },
    ],
  });
  // A node nothing uses, to remove.
  await control.registerNode({ name: 'old1', addresses: ['10.2.0.99'], reservedPorts: [] });
});

after(async () => {
  await agent?.stop();
  await tmp?.remove();
});

describe('every route of the API answers as its response schema says', () => {
  it('pools', async () => {
    const created = await answer('createPool', {
      body: {
        name: 'public',
        gateway: 'gw1',
        entries: ['203.0.113.0/28', '198.51.100.10-198.51.100.12', '192.0.2.50=52:54:00:12:34:56'],
        shared: ['192.0.2.2'],
        description: 'upstream A',
        tags: ['prod'],
      },
    });
    assert.equal(created.name, 'public');
    await answer('createPool', {
      body: {
        name: 'lan',
        gateway: 'gw1',
        delivery: 'onlink',
        uplink: 'eth0',
        entries: ['2001:db8:f::/64'],
      },
    });
    await answer('createPool', {
      body: { name: 'spare', gateway: 'gw1', entries: ['192.0.2.96/29'] },
    });
    // Any-free-address allocations come from here, never taking an address asked for by name.
    await answer('createPool', {
      body: { name: 'dyn', gateway: 'gw1', entries: ['192.0.2.128/29'] },
    });
    const updated = await answer('updatePool', {
      params: { name: 'public' },
      body: { addEntries: ['192.0.2.60'], addShared: ['192.0.2.3'], tags: ['prod', 'edge'] },
    });
    assert.deepEqual([...updated.tags].sort(), ['edge', 'prod']);
    assert.equal((await answer('getPool', { params: { name: 'public' } })).gateway, 'gw1');
    assert.equal((await answer('listPools')).length, 4);
    assert.deepEqual(await answer('deletePool', { params: { name: 'spare' } }), {
      name: 'spare',
      deleted: true,
    });

    await refusal('getPool', { params: { name: 'nope' } }, 404, 'IPF_E_POOL_NOT_FOUND');
    await refusal(
      'createPool',
      { body: { name: 'x', gateway: 'gw1', entries: ['10.9.0.0/24'], gatway: 'gw1' } as never },
      400,
      'IPF_E_VALIDATION',
    );
  });

  it('floating IPs: allocate, associate, move, a refused association in ERROR, release', async () => {
    const request = { pool: 'dyn', clientToken: 'web-1', description: 'web', tags: ['a'] };
    const first = await answer('allocate', { body: request });
    assert.equal(first.created, true);
    const again = await answer('allocate', { body: request });
    assert.equal(again.created, false, 'the same client token: the earlier FIP, 200');
    assert.equal(again.address, first.address);
    await answer('allocate', { body: { pool: 'lan', family: 6 } });

    await answer('allocate', { body: { address: '203.0.113.10' } });
    const associated = await answer('associate', {
      params: { address: '203.0.113.10' },
      body: { target: '10.1.0.11', mode: 'nat' },
    });
    assert.equal(associated.association?.target, '10.1.0.11');
    await waitFor('ACTIVE', async () => (await stateOf('203.0.113.10')) === 'ACTIVE');
    const moved = await answer('move', {
      params: { address: '203.0.113.10' },
      body: { target: '10.1.0.12' },
    });
    assert.equal(moved.association?.target, '10.1.0.12');
    await waitFor('ACTIVE again', async () => (await stateOf('203.0.113.10')) === 'ACTIVE');

    // Routed to web1 through a tunnel: the gateway's agent builds it and reports its health.
    await answer('allocate', { body: { address: '203.0.113.12' } });
    const routed = await answer('associate', {
      params: { address: '203.0.113.12' },
      body: { mode: 'routed', node: 'web1' },
    });
    assert.equal(routed.association?.mode, 'routed');
    // Health is reported with the liveness beat, every 5 s.
    await waitFor('a tunnel in the status', async () => (await answer('status')).tunnel, 15_000);

    // The kernel refuses one: the FIP is in ERROR with the reason, and the plan still holds it.
    dataplane.refuseWhen((e) => e.value === '10.1.0.66', 'Operation not permitted');
    await answer('allocate', { body: { address: '203.0.113.11' } });
    await answer('associate', {
      params: { address: '203.0.113.11' },
      body: { target: '10.1.0.66', masquerade: true },
    });
    await waitFor('ERROR', async () => (await stateOf('203.0.113.11')) === 'ERROR');
    const plan = await answer('plan');
    assert.ok(plan.add.length > 0, 'the refused elements are still to add');
    const status = await answer('status');
    assert.match(status.dataplane.lastError ?? '', /Operation not permitted/);
    const listed = await answer('listFips', { query: { pool: 'public' } });
    assert.ok(listed.some((f) => f.status.state === 'ERROR' && f.status.message));
    dataplane.clearRefusals();

    const down = await answer('disassociate', { params: { address: '203.0.113.11' } });
    assert.equal(down.association, undefined);
    assert.deepEqual(await answer('release', { params: { address: '203.0.113.11' } }), {
      address: '203.0.113.11',
      released: true,
    });
    await answer('release', { params: { address: first.address }, query: { force: 'true' } });
    assert.ok((await answer('listFips')).length >= 2);

    await refusal('getFip', { params: { address: '203.0.113.14' } }, 404, 'IPF_E_FIP_NOT_FOUND');
    await refusal(
      'associate',
      { params: { address: '203.0.113.10' }, body: { target: '10.1.0.13' }, token: TOKEN_RO },
      403,
      'IPF_E_FORBIDDEN',
    );
  });

  it('port forwards', async () => {
    await answer('allocate', { body: { address: '192.0.2.2' } });
    const smtp = await answer('addForward', {
      params: { address: '192.0.2.2' },
      body: { protocol: 'tcp', port: 25, target: '10.1.0.20', description: 'mail' },
    });
    const range = await answer('addForward', {
      params: { address: '192.0.2.2' },
      body: { protocol: 'udp', port: '60000-60010', targetPort: 61000, target: '10.1.0.20' },
    });
    assert.equal(range.portEnd, 60010);
    assert.equal((await answer('listForwards', { params: { address: '192.0.2.2' } })).length, 2);
    const fip = await answer('getFip', { params: { address: '192.0.2.2' } });
    assert.equal(fip.forwards.length, 2);
    const listed = await answer('listFips');
    assert.equal(listed.find((f) => f.address === '192.0.2.2')?.association?.mode, 'ports');
    assert.deepEqual(
      await answer('removeForward', { params: { address: '192.0.2.2', id: smtp.id } }),
      { address: '192.0.2.2', id: smtp.id, removed: true },
    );

    await refusal(
      'removeForward',
      { params: { address: '192.0.2.2', id: 'f99' } },
      404,
      'IPF_E_FORWARD_NOT_FOUND',
    );
  });

  it('nodes and join tokens', async () => {
    const nodes = await answer('listNodes');
    assert.deepEqual(nodes.map((n) => n.name).sort(), ['gw1', 'old1', 'web1']);
    const web1 = await answer('getNode', { params: { name: 'web1' } });
    assert.equal(web1.alive, true);
    assert.equal(web1.tunnel?.peers.length, 1);
    assert.equal(web1.mesh?.rejectAll, true);
    await answer('getNode', { params: { name: 'gw1' } });
    const token = await answer('createJoinToken', { body: { node: 'b1', ttlSeconds: 600 } });
    assert.match(token.token, /^ipfjoin1\./);
    await answer('createJoinToken', { body: { urls: ['https://hub.example:7447'] } });
    const publicKey = Buffer.alloc(32, 3).toString('base64');
    const far = await answer('addNode', { body: { name: 'far1', unmanaged: true, publicKey } });
    assert.equal(far.unmanaged, true);
    assert.equal((await answer('removeNode', { params: { name: 'old1' } })).removed, true);

    await refusal('getNode', { params: { name: 'nobody' } }, 404, 'IPF_E_NODE_NOT_FOUND');
    await refusal('removeNode', { params: { name: 'gw1' } }, 409, 'IPF_E_NODE_IN_USE');
  });

  it('the mesh: a policy, a trial rolled back, a confirmed one, holds, the audit', async () => {
    const set = await answer('setMeshPolicy', { body: { policy: POLICY } });
    assert.equal(set.trial, undefined);

    // A trial nobody confirms: the agent rolls it back at its deadline.
    await answer('setMeshPolicy', {
      body: { policy: { ...POLICY, maxChange: 3 }, confirmWithinSeconds: 1 },
    });
    await waitFor('rolled back', async () => (await answer('mesh')).rolledBack === true, 10_000);
    const view = await answer('mesh');
    assert.ok(view.rollback, 'the rollback is shown');
    await refusal('confirmMesh', { body: { holdsOnly: false } }, 409, 'IPF_E_MESH_NO_TRIAL');

    const trial = await answer('setMeshPolicy', {
      body: { policy: { ...POLICY, maxChange: 4 }, confirmWithinSeconds: 300 },
    });
    assert.ok(trial.trial?.deadline);
    assert.ok((await answer('mesh')).record?.trial);
    const confirmed = await answer('confirmMesh');
    assert.equal(confirmed.confirmedTrial, true);
    assert.deepEqual(
      confirmed.released.map((r) => r.node),
      ['web1'],
      'the hold web1 reported',
    );
    await answer('confirmMesh', { body: { holdsOnly: true } });

    const audit = await answer('auditMesh', {
      body: {
        inventory: 'web1 10.2.0.11\ndb-main 10.2.0.50,203.0.113.50 site=ams\n',
        source: 'hosts.txt',
      },
      token: TOKEN_RO,
    });
    assert.ok(audit.unregistered.length > 0);
    await answer('auditMesh');

    await refusal(
      'setMeshPolicy',
      { body: { policy: { ...POLICY, overlay: '10.2.0.0/24' } } },
      400,
      'IPF_E_MESH_OVERLAP',
    );
  });

  it('applied: the report on a write by its revision', async () => {
    const fip = (await answer('listFips'))[0]!;
    const report = await answer('applied', {
      query: { revision: String(fip.revision), fip: fip.address, wait: '5s' },
    });
    assert.equal(report.revision, fip.revision);
    assert.ok(['applied', 'pending', 'error', 'unreachable'].includes(report.outcome));
    await refusal('applied', { query: { revision: '0' } }, 400, 'IPF_E_VALIDATION');
    await refusal('applied', { query: { revision: '7', wait: 'soon' } }, 400, 'IPF_E_VALIDATION');
  });

  it('events: the audit trail, and a long poll', async () => {
    const trail = await answer('events', { query: { limit: '5' } });
    assert.ok(trail.length > 0 && trail.length <= 5);
    const last = trail.at(-1)!.seq;
    assert.deepEqual(await answer('events', { query: { after: String(last), wait: '1ms' } }), []);
    await refusal('events', { query: { limit: '0' } }, 400, 'IPF_E_VALIDATION');
  });

  it('IP Floater: ippool and arp', async () => {
    const pools = await answer('ippool');
    assert.ok(pools.find((p) => p.pool === 'public')?.allocated.length);
    assert.equal((await answer('arp', { params: { mac: '52-54-00-12-34-56' } })).source, 'pool');
    assert.equal(
      (await answer('arp', { params: { mac: 'AA:BB:CC:DD:EE:07' } })).source,
      'neighbour',
    );

    await refusal('arp', { params: { mac: 'aa:bb:cc:dd:ee:99' } }, 404, 'IPF_E_NOT_FOUND_MAC');
    await refusal('arp', { params: { mac: 'not-a-mac' } }, 400, 'IPF_E_VALIDATION');
  });

  it('the agent: health, version, status, plan', async () => {
    assert.deepEqual(await answer('health', { token: null }), { ok: true, node: 'gw1' });
    assert.equal((await answer('version', { token: TOKEN_RO })).node, 'gw1');
    const status = await answer('status');
    assert.equal(status.store.kind, 'sqlite');
    assert.equal(typeof status.fips.ACTIVE, 'number');
    await waitFor('nothing left to apply', async () => (await answer('plan')).add.length === 0);

    await refusal('status', { token: null }, 401, 'IPF_E_UNAUTHORIZED');
    await refusal('version', { token: 'not-a-token' }, 401, 'IPF_E_UNAUTHORIZED');
    const unknown = await fetch(`${agent.url}/v1/nothing-here`, {
      headers: { authorization: `Bearer ${TOKEN_RW}` },
    });
    const text = await unknown.text();
    checkError(
      { status: unknown.status, text, body: JSON.parse(text) },
      404,
      'IPF_E_NOT_FOUND',
      'an unknown route',
    );
  });

  it('called every route of the table, and checked its answer', (t) => {
    const missing = Object.keys(API).filter((name) => !checked.has(name as RouteName));
    assert.deepEqual(missing, [], 'routes without a checked answer: call them above');
    for (const [name, fields] of [...unnamed].sort()) {
      t.diagnostic(`${name} answers fields its schema does not name: ${[...fields].join(', ')}`);
    }
  });
});
