/**
 * The fleet mesh's routes in-process: policy (with trials and their deadline on a clock the test
 * moves), confirmation, the audit (which a read-only token may run), node views carrying the
 * agents' mesh reports, and removing a node. Every refusal is checked for its code, message and
 * hint and for a store left exactly as it was.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { keys } from '../../src/core/keys.js';
import type { NodeHealth, NodeLiveness } from '../../src/core/model.js';
import { stringifyStored } from '../../src/core/json.js';
import { ControlPlane } from '../../src/service/control.js';
import { openStore } from '../../src/store/open.js';
import type { Store } from '../../src/store/store.js';
import { dumpStore, TOKEN_RO, TOKEN_RW, testApi } from '../support/helpers.js';

type Method = 'GET' | 'POST' | 'PUT' | 'DELETE';

interface ErrorOut {
  code: string;
  message: string;
  hint: string;
  problems?: { path: string; message: string }[];
}

interface Reply {
  status: number;
  body: any;
}

let app: FastifyInstance;
let store: Store;
let control: ControlPlane;
/** The control plane's clock: trials run out when the test says so. */
let clock = new Date('2026-03-01T12:00:00.000Z');
const advance = (seconds: number): void => {
  clock = new Date(clock.getTime() + seconds * 1000);
};

async function call(
  method: Method,
  url: string,
  payload?: object,
  token: string | null = TOKEN_RW,
): Promise<Reply> {
  const res = await app.inject({
    method,
    url,
    ...(payload ? { payload } : {}),
    headers: token ? { authorization: `Bearer ${token}` } : {},
  });
  return { status: res.statusCode, body: res.body ? JSON.parse(res.body) : undefined };
}

/** A route that must fail: its status, code, a message and a hint, and an unchanged store. */
async function refused(
  method: Method,
  url: string,
  payload: object | undefined,
  status: number,
  code: string,
  token: string | null = TOKEN_RW,
): Promise<ErrorOut> {
  const before = await dumpStore(store);
  const res = await call(method, url, payload, token);
  assert.equal(res.status, status, JSON.stringify(res.body));
  assert.equal(res.body.error.code, code, JSON.stringify(res.body));
  assert.ok(res.body.error.message.length > 0);
  assert.ok(res.body.error.hint.length > 0);
  assert.equal(await dumpStore(store), before, 'a refused request must not change the store');
  return res.body.error as ErrorOut;
}

const POLICY = {
  overlay: '192.168.0.0/18',
  maxChange: 2,
  fleet: { openPorts: ['tcp/443'], sshAllow: ['192.0.2.0/24'] },
  sites: {
    fra: { lans: ['10.1.0.0/16'] },
    ams: { lans: ['10.2.0.0/16'], openPorts: ['udp/53'] },
  },
  nodes: { web1: { rejectAll: true } },
};

async function register(name: string, site: string, addresses: string[]): Promise<void> {
  await control.registerNode({ name, site, addresses, reservedPorts: [] });
}

before(async () => {
  store = await openStore('sqlite::memory:');
  control = new ControlPlane(store, () => clock);
  await register('gw1', 'fra', ['10.1.0.1', '198.51.100.1']);
  await register('web1', 'fra', ['10.1.0.11', '198.51.100.11']);
  await register('web2', 'ams', ['10.2.0.12', '203.0.113.12']);
  await register('old1', 'ams', ['10.2.0.99']);
  app = await testApi(control);
  const pool = await call('POST', '/v1/pools', {
    name: 'public',
    gateway: 'gw1',
    entries: ['203.0.113.64/28'],
  });
  assert.equal(pool.status, 201, JSON.stringify(pool.body));
  // web2 serves a FIP: it is in use as much as the pool's gateway is.
  assert.equal((await call('POST', '/v1/fips', { address: '203.0.113.70' })).status, 201);
  const associated = await call('POST', '/v1/fips/203.0.113.70/associate', {
    target: '10.2.0.12',
    node: 'web2',
    mode: 'nat',
  });
  assert.equal(associated.status, 200, JSON.stringify(associated.body));
});

after(async () => {
  await app.close();
  await store.close();
});

describe('mesh API', () => {
  it('shows no mesh before a policy is set', async () => {
    const res = await call('GET', '/v1/mesh');
    assert.equal(res.status, 200);
    assert.equal(res.body.record, undefined);
    assert.equal(res.body.inForce, undefined);
    assert.equal(res.body.rolledBack, false);
    assert.equal(typeof res.body.revision, 'number');
  });

  it('refuses bad policies with coded errors and writes nothing (no policy yet)', async () => {
    const overlap = await refused(
      'PUT',
      '/v1/mesh/policy',
      { policy: { ...POLICY, overlay: '10.1.128.0/18' } },
      400,
      'IPF_E_MESH_OVERLAP',
    );
    assert.equal(
      overlap.message,
      'The overlay 10.1.128.0/18 overlaps LAN 10.1.0.0/16 of site fra at 10.1.128.0.',
    );
    assert.match(overlap.hint, /overlay prefix that no site uses/);

    const pairs = await refused(
      'PUT',
      '/v1/mesh/policy',
      { policy: { ...POLICY, fleet: { natOverrides: { '192.168.0.9': 'not-an-address' } } } },
      400,
      'IPF_E_VALIDATION',
    );
    assert.deepEqual(
      pairs.problems?.map((p) => p.path),
      ['fleet.natOverrides.192.168.0.9'],
    );
    assert.match(pairs.message, /not a pair of IPv4 addresses/);

    const ports = await refused(
      'PUT',
      '/v1/mesh/policy',
      {
        policy: {
          ...POLICY,
          fleet: { openPorts: ['tcp/443', 'tcp/70000', 'sctp/9'] },
          nodes: { web1: { openPorts: ['udp/0-10'], sshAllow: ['192.0.2.1/24'] } },
        },
      },
      400,
      'IPF_E_VALIDATION',
    );
    assert.deepEqual(
      ports.problems?.map((p) => p.path),
      [
        'fleet.openPorts[1]',
        'fleet.openPorts[2]',
        'nodes.web1.openPorts[0]',
        'nodes.web1.sshAllow[0]',
      ],
      'every problem at once',
    );
    assert.match(ports.hint, /every problem is reported at once/);
  });

  it('refuses unknown keys and trials out of bounds, writing nothing', async () => {
    const unknown = await refused(
      'PUT',
      '/v1/mesh/policy',
      { policy: { ...POLICY, fleet: { rejectAl: true } } },
      400,
      'IPF_E_VALIDATION',
    );
    assert.deepEqual(
      unknown.problems?.map((p) => `${p.path}: ${p.message}`),
      ['fleet.rejectAl: is not known'],
    );
    await refused('PUT', '/v1/mesh/policy', { overlay: '192.168.0.0/18' }, 400, 'IPF_E_VALIDATION');
    await refused(
      'PUT',
      '/v1/mesh/policy',
      { policy: POLICY, confirmWithinSeconds: 0 },
      400,
      'IPF_E_VALIDATION',
    );
    const long = await refused(
      'PUT',
      '/v1/mesh/policy',
      { policy: POLICY, confirmWithinSeconds: 30 * 86400 },
      400,
      'IPF_E_VALIDATION',
    );
    assert.match(long.message, /confirmWithinSeconds/);
  });

  it('reports every problem of a policy in one error: unknown keys, bad values, overlaps, the trial', async () => {
    const all = await refused(
      'PUT',
      '/v1/mesh/policy',
      {
        policy: {
          ...POLICY,
          overlay: '10.1.128.0/18',
          maxChange: -1,
          fleet: { rejectAl: true, openPorts: ['tcp/70000'], sshAllow: 'x' },
          sites: { ...POLICY.sites, ber: { lans: ['10.1.0.0/16', '172.16.0.0/12'], extra: 1 } },
          nodes: { web1: 'on' },
          colour: 'blue',
        },
        confirmWithinSeconds: 0,
      },
      400,
      'IPF_E_VALIDATION',
    );
    assert.deepEqual(
      all.problems?.map((p) => p.path),
      [
        'confirmWithinSeconds',
        'colour',
        'maxChange',
        'fleet.rejectAl',
        'fleet.openPorts[0]',
        'fleet.sshAllow',
        'sites.ber.extra',
        'nodes.web1',
        'sites.fra.lans[0]',
        'sites.ber.lans[0]',
      ],
      'one round: the overlaps among the other problems',
    );
    assert.equal(all.message, 'The request is invalid: 10 problems');
    assert.equal(
      all.problems?.find((p) => p.path === 'sites.ber.lans[0]')?.message,
      '10.1.0.0/16 overlaps the overlay 10.1.128.0/18 (first shared address 10.1.128.0)',
    );

    // Overlaps alone keep their own code, and each one is listed.
    const overlaps = await refused(
      'PUT',
      '/v1/mesh/policy',
      {
        policy: {
          ...POLICY,
          overlay: '10.1.0.0/16',
          sites: { ...POLICY.sites, ber: { lans: ['172.16.0.0/12', '10.1.128.0/17'] } },
        },
      },
      400,
      'IPF_E_MESH_OVERLAP',
    );
    assert.equal(
      overlaps.message,
      'The overlay 10.1.0.0/16 overlaps LAN 10.1.0.0/16 of site fra at 10.1.0.0.',
    );
    assert.deepEqual(
      overlaps.problems?.map((p) => p.path),
      ['sites.fra.lans[0]', 'sites.ber.lans[1]'],
    );
  });

  it('sets a policy and gives every registered node a distinct overlay address', async () => {
    const set = await call('PUT', '/v1/mesh/policy', { policy: POLICY });
    assert.equal(set.status, 200, JSON.stringify(set.body));
    assert.equal(set.body.policy.overlay, '192.168.0.0/18');
    assert.equal(set.body.trial, undefined);
    assert.equal(set.body.updatedAt, clock.toISOString());
    const view = await call('GET', '/v1/mesh');
    assert.deepEqual(view.body.record.policy, set.body.policy);
    assert.deepEqual(view.body.inForce, set.body.policy);
    assert.equal(view.body.rolledBack, false);
    const nodes = (await call('GET', '/v1/nodes')).body as { name: string; overlayIp?: string }[];
    const overlays = nodes.map((n) => n.overlayIp);
    assert.equal(overlays.length, 4);
    assert.ok(
      overlays.every((a) => a !== undefined && /^192\.168\.([0-9]|[1-5][0-9]|6[0-3])\./.test(a)),
    );
    assert.equal(new Set(overlays).size, 4, 'distinct');
  });

  it('refuses a bad policy over a good one and keeps the good one', async () => {
    await refused(
      'PUT',
      '/v1/mesh/policy',
      { policy: { ...POLICY, sites: { fra: { lans: ['192.168.8.0/24'] } } } },
      400,
      'IPF_E_MESH_OVERLAP',
    );
    assert.equal((await call('GET', '/v1/mesh')).body.record.policy.overlay, '192.168.0.0/18');
  });

  it('runs a trial that rolls back by itself at its deadline; confirming then is refused', async () => {
    const trial = { ...POLICY, nodes: { web1: { rejectAll: true }, web2: { rejectAll: true } } };
    const set = await call('PUT', '/v1/mesh/policy', { policy: trial, confirmWithinSeconds: 90 });
    assert.equal(set.status, 200, JSON.stringify(set.body));
    assert.equal(set.body.trial.deadline, new Date(clock.getTime() + 90_000).toISOString());
    assert.deepEqual(set.body.trial.previous.nodes, { web1: { rejectAll: true } });
    let view = (await call('GET', '/v1/mesh')).body;
    assert.equal(view.rolledBack, false);
    assert.deepEqual(view.inForce.nodes.web2, { rejectAll: true });

    advance(91);
    view = (await call('GET', '/v1/mesh')).body;
    assert.equal(view.rolledBack, true);
    assert.deepEqual(view.inForce.nodes, { web1: { rejectAll: true } }, 'the previous policy');
    assert.ok(view.record.trial, 'nobody wrote the rollback yet: the deadline alone decides');

    const rollback = { at: set.body.trial.deadline, changedAt: set.body.updatedAt, policy: trial };
    assert.deepEqual(view.rollback, rollback);

    // Refused, and the rollback is written down (no agent did yet): not `refused`, which checks
    // that nothing changed.
    const lateReply = await call('POST', '/v1/mesh/confirm');
    assert.equal(lateReply.status, 409, JSON.stringify(lateReply.body));
    assert.equal(lateReply.body.error.code, 'IPF_E_MESH_NO_TRIAL');
    const late = lateReply.body.error as ErrorOut;
    assert.equal(
      late.message,
      `The mesh policy change of ${rollback.changedAt} was not confirmed by its deadline, ${rollback.at}: every node went back to the policy before it.`,
    );
    assert.match(late.hint, /mesh confirm --holds-only/);
    view = (await call('GET', '/v1/mesh')).body;
    assert.equal(view.record.trial, undefined, 'the late confirmation wrote the rollback down');
    assert.deepEqual(view.record.policy.nodes, { web1: { rejectAll: true } });
    assert.equal(view.rolledBack, true, 'written down, it is still the story of the last change');
    assert.deepEqual(view.rollback, rollback);
    assert.equal(view.confirmation, undefined, 'a refused confirmation releases nothing');

    // Later still, with the rollback in the store, a confirmation is refused all the same…
    advance(3600);
    await refused('POST', '/v1/mesh/confirm', { holdsOnly: false }, 409, 'IPF_E_MESH_NO_TRIAL');
    // …but holds can be released on their own.
    const holds = await call('POST', '/v1/mesh/confirm', { holdsOnly: true });
    assert.equal(holds.status, 200, JSON.stringify(holds.body));
    assert.equal(holds.body.confirmedTrial, false);
    assert.equal(holds.body.trialDeadline, undefined);
    assert.deepEqual(holds.body.released, []);
    view = (await call('GET', '/v1/mesh')).body;
    assert.deepEqual(view.rollback, rollback, 'releasing holds changes nothing of that');
    assert.deepEqual(view.confirmation, holds.body.confirmation);
  });

  it('confirms a running trial, and releases holds when there is none', async () => {
    const trial = { ...POLICY, fleet: { ...POLICY.fleet, openPorts: ['tcp/443', 'tcp/8443'] } };
    assert.equal(
      (await call('PUT', '/v1/mesh/policy', { policy: trial, confirmWithinSeconds: 300 })).status,
      200,
    );
    assert.equal(
      (await call('GET', '/v1/mesh')).body.rolledBack,
      false,
      'a new policy: a new story',
    );
    advance(30);
    // Holds alone: the trial runs on.
    const holdsOnly = await call('POST', '/v1/mesh/confirm', { holdsOnly: true });
    assert.equal(holdsOnly.status, 200, JSON.stringify(holdsOnly.body));
    assert.equal(holdsOnly.body.confirmedTrial, false);
    assert.equal(holdsOnly.body.trialDeadline, new Date(clock.getTime() + 270_000).toISOString());
    assert.ok((await call('GET', '/v1/mesh')).body.record.trial, 'still on trial');
    await refused('POST', '/v1/mesh/confirm', { holdsOnly: 'yes' }, 400, 'IPF_E_VALIDATION');
    advance(30);
    const confirmed = await call('POST', '/v1/mesh/confirm');
    assert.equal(confirmed.status, 200, JSON.stringify(confirmed.body));
    assert.equal(confirmed.body.confirmedTrial, true);
    assert.equal(confirmed.body.confirmation.at, clock.toISOString());
    assert.deepEqual(confirmed.body.released, [], 'no node reported a hold');
    const view = (await call('GET', '/v1/mesh')).body;
    assert.equal(view.record.trial, undefined);
    assert.deepEqual(view.record.policy.fleet.openPorts, ['tcp/443', 'tcp/8443']);
    assert.deepEqual(view.confirmation, confirmed.body.confirmation);
    advance(600);
    assert.equal((await call('GET', '/v1/mesh')).body.rolledBack, false, 'confirmed: stays');

    const again = await call('POST', '/v1/mesh/confirm');
    assert.equal(again.status, 200);
    assert.equal(again.body.confirmedTrial, false);
    assert.ok(again.body.confirmation.revision > confirmed.body.confirmation.revision);
  });

  it('shows each node’s mesh report from its liveness record', async () => {
    const liveness: NodeLiveness = {
      name: 'web1',
      since: clock.toISOString(),
      mesh: {
        appliedRevision: 7,
        rejectAll: true,
        members: 3,
        hold: { keeping: ['192.168.0.5'], maxChange: 2, sinceRevision: 6 },
      },
    };
    await store.txn({
      compare: [],
      success: [{ type: 'put', key: keys.nodeAlive('web1'), value: stringifyStored(liveness) }],
    });
    const one = (await call('GET', '/v1/nodes/web1')).body;
    assert.equal(one.alive, true);
    assert.deepEqual(one.mesh, liveness.mesh);
    const list = (await call('GET', '/v1/nodes')).body as { name: string; mesh?: unknown }[];
    assert.deepEqual(list.find((n) => n.name === 'web1')?.mesh, liveness.mesh);
    assert.equal(list.find((n) => n.name === 'web2')?.mesh, undefined);
    // An agent of this version keeps its report in its health record, beside the root.
    const health: NodeHealth = {
      name: 'web1',
      mesh: { appliedRevision: 9, rejectAll: false, members: 4 },
      updatedAt: clock.toISOString(),
    };
    await store.txn({
      compare: [],
      success: [{ type: 'put', key: keys.nodeHealth('web1'), value: stringifyStored(health) }],
    });
    assert.deepEqual((await call('GET', '/v1/nodes/web1')).body.mesh, health.mesh);
    const again = (await call('GET', '/v1/nodes')).body as { name: string; mesh?: unknown }[];
    assert.deepEqual(again.find((n) => n.name === 'web1')?.mesh, health.mesh);
    // The audit reads it too: web1 applied revision 9, older than the mesh's latest change.
    const lagging = (await control.mesh.audit()).lagging.find((l) => l.node === 'web1');
    assert.equal(lagging?.appliedRevision, 9);
    // Back to the report the audit below expects.
    await store.txn({
      compare: [],
      success: [
        {
          type: 'put',
          key: keys.nodeHealth('web1'),
          value: stringifyStored({ ...health, mesh: liveness.mesh }),
        },
      ],
    });
    // A confirmation says which of the reported holds it released.
    const confirmed = await call('POST', '/v1/mesh/confirm');
    assert.equal(confirmed.status, 200, JSON.stringify(confirmed.body));
    assert.deepEqual(confirmed.body.released, [{ node: 'web1', hold: liveness.mesh?.hold }]);
  });

  it('audits against an inventory: unregistered, unlisted, lagging, reject_all, holds, overlay usage', async () => {
    const inventory = [
      '# hosts of the old datacenter',
      'web1 10.1.0.11',
      'db-main 10.2.0.50,203.0.113.50 site=ams   # not migrated yet',
      '',
      'renamed 10.2.0.12', // web2 by its address
    ].join('\n');
    // old1's agent reported applying revision 5, then died: its report outlives it.
    await store.txn({
      compare: [],
      success: [
        {
          type: 'put',
          key: keys.nodeHealth('old1'),
          value: stringifyStored({
            name: 'old1',
            mesh: { appliedRevision: 5, members: 3 },
            updatedAt: clock.toISOString(),
          } satisfies NodeHealth),
        },
      ],
    });
    const res = await call('POST', '/v1/mesh/audit', { inventory, source: 'hosts.txt' });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const audit = res.body;
    assert.deepEqual(audit.unregistered, [
      { name: 'db-main', addresses: ['10.2.0.50', '203.0.113.50'], site: 'ams', line: 3 },
    ]);
    assert.deepEqual(audit.unlisted, ['gw1', 'old1']);
    assert.deepEqual(audit.overlay, { prefix: '192.168.0.0/18', used: 4, size: 16382 });
    assert.deepEqual(audit.rejectAll, { on: ['web1'], off: ['gw1', 'old1', 'web2'] });
    assert.deepEqual(audit.holds, [
      { node: 'web1', hold: { keeping: ['192.168.0.5'], maxChange: 2, sinceRevision: 6 } },
    ]);
    assert.deepEqual(
      audit.lagging.map((l: { node: string; alive: boolean }) => `${l.node}:${l.alive}`),
      ['gw1:false', 'old1:false', 'web1:true', 'web2:false'],
    );
    assert.equal(audit.lagging.length, 4, 'nobody applied the latest revision');
    assert.equal(audit.lagging.find((l: { node: string }) => l.node === 'web1').appliedRevision, 7);
    assert.deepEqual(
      audit.lagging.find((l: { node: string }) => l.node === 'old1'),
      { node: 'old1', appliedRevision: 5, alive: false },
      'a dead node: what it last applied',
    );
    assert.equal(
      (await call('GET', '/v1/nodes/old1')).body.mesh,
      undefined,
      'node views show a report only while the node is alive',
    );
    assert.deepEqual(audit.rolledBack, []);

    const without = await call('POST', '/v1/mesh/audit', {});
    assert.equal(without.status, 200);
    assert.deepEqual(without.body.unregistered, []);
    assert.deepEqual(without.body.unlisted, [], 'without an inventory nothing is unlisted');
    const bare = await call('POST', '/v1/mesh/audit');
    assert.equal(bare.status, 200, 'a POST without a body is an audit without an inventory');
    assert.deepEqual(bare.body.overlay, without.body.overlay);
  });

  it('refuses an inventory line that does not parse, naming the source and line', async () => {
    const bad = await refused(
      'POST',
      '/v1/mesh/audit',
      { inventory: 'web1 10.1.0.11\nweb2 10.2.0.300\n', source: 'hosts.txt' },
      400,
      'IPF_E_INVENTORY',
    );
    assert.equal(bad.message, 'hosts.txt line 2: "10.2.0.300" is not an IP address');
    assert.match(bad.hint, /NAME ADDRESS\[,ADDRESS…\] \[site=SITE\]/);
    const twice = await refused(
      'POST',
      '/v1/mesh/audit',
      { inventory: 'a 10.0.0.1\na 10.0.0.2\n' },
      400,
      'IPF_E_INVENTORY',
    );
    assert.equal(twice.message, 'inventory line 2: a is listed twice');
    await refused('POST', '/v1/mesh/audit', { inventory: 5 }, 400, 'IPF_E_VALIDATION');
  });

  it('removes a node for good, refusing one still in use or unknown', async () => {
    const gateway = await refused('DELETE', '/v1/nodes/gw1', undefined, 409, 'IPF_E_NODE_IN_USE');
    assert.equal(gateway.message, 'Node gw1 is still in use: pool public.');
    const serving = await refused('DELETE', '/v1/nodes/web2', undefined, 409, 'IPF_E_NODE_IN_USE');
    assert.equal(serving.message, 'Node web2 is still in use: floating IP 203.0.113.70.');
    const unknown = await refused(
      'DELETE',
      '/v1/nodes/nowhere',
      undefined,
      404,
      'IPF_E_NODE_NOT_FOUND',
    );
    assert.equal(unknown.message, 'Node nowhere is not known.');

    const before = (await call('GET', '/v1/nodes/old1')).body as { overlayIp: string };
    const removed = await call('DELETE', '/v1/nodes/old1');
    assert.equal(removed.status, 200, JSON.stringify(removed.body));
    assert.deepEqual(removed.body, { name: 'old1', removed: true, overlayIp: before.overlayIp });
    assert.equal((await call('GET', '/v1/nodes/old1')).status, 404);
    assert.equal(await store.get(keys.overlay(before.overlayIp)), undefined, 'its address is free');
    assert.equal(await store.get(keys.nodeHealth('old1')), undefined, 'its health report too');
    await refused('DELETE', '/v1/nodes/old1', undefined, 404, 'IPF_E_NODE_NOT_FOUND');
  });

  it('lets a read-only token read the mesh and run the audit, but change nothing', async () => {
    assert.equal((await call('GET', '/v1/mesh', undefined, TOKEN_RO)).status, 200);
    const audit = await call('POST', '/v1/mesh/audit', { inventory: 'web1 10.1.0.11' }, TOKEN_RO);
    assert.equal(audit.status, 200, JSON.stringify(audit.body));
    await refused('PUT', '/v1/mesh/policy', { policy: POLICY }, 403, 'IPF_E_FORBIDDEN', TOKEN_RO);
    await refused('POST', '/v1/mesh/confirm', undefined, 403, 'IPF_E_FORBIDDEN', TOKEN_RO);
    await refused('DELETE', '/v1/nodes/web1', undefined, 403, 'IPF_E_FORBIDDEN', TOKEN_RO);
    await refused('POST', '/v1/mesh/audit', {}, 401, 'IPF_E_UNAUTHORIZED', null);
    await refused('GET', '/v1/mesh', undefined, 401, 'IPF_E_UNAUTHORIZED', null);
  });

  it('documents the mesh routes in the OpenAPI document', async () => {
    const doc = (await call('GET', '/docs/json', undefined, null)).body;
    const put = doc.paths['/v1/mesh/policy'].put;
    const policy = put.requestBody.content['application/json'].schema.properties.policy;
    // Described, not checked by the schema: the agent reports every problem at once.
    assert.equal(policy.required, undefined);
    assert.match(policy.properties.overlay.description, /^required: /);
    assert.ok(policy.properties.sites && policy.properties.nodes && policy.properties.fleet);
    assert.ok(doc.paths['/v1/mesh'].get);
    assert.ok(doc.paths['/v1/mesh/confirm'].post);
    assert.ok(
      doc.paths['/v1/mesh/audit'].post.requestBody.content['application/json'].schema.properties
        .inventory,
    );
    assert.ok(doc.paths['/v1/nodes/{name}'].delete);
  });
});

describe('mesh policy over a large fleet', () => {
  it('gives every node its overlay address in a few transactions, all distinct', async () => {
    const big = await openStore('sqlite::memory:');
    try {
      const c = new ControlPlane(big);
      for (let i = 0; i < 120; i++)
        await c.registerNode({
          name: `n${i}`,
          addresses: [`10.0.${i >> 8}.${i & 255}`],
          reservedPorts: [],
        });
      const before = (await big.list(keys.nodes)).revision;
      await c.mesh.setPolicy({ overlay: '192.168.0.0/18' });
      const nodes = await c.listNodes();
      const overlays = new Set(nodes.map((n) => n.overlayIp));
      assert.equal(overlays.size, 120);
      assert.ok(!overlays.has(undefined));
      // The policy, then 120 nodes in batches of 50: 4 revisions, not 121.
      assert.equal((await big.list(keys.nodes)).revision - before, 4);
      for (const n of nodes)
        assert.equal(JSON.parse((await big.get(keys.overlay(n.overlayIp!)))!.value).name, n.name);
    } finally {
      await big.close();
    }
  });
});

describe('the overlay: private address space only (issue 12, finding 5)', () => {
  it('refuses 0.0.0.0/0 and writes nothing; takes a private overlay; skips a public one stored around the API', async () => {
    const own = await openStore('sqlite::memory:');
    const c = new ControlPlane(own);
    const api = await testApi(c, { node: 'hub' });
    const put = async (policy: object): Promise<Reply> => {
      const res = await api.inject({
        method: 'PUT',
        url: '/v1/mesh/policy',
        payload: { policy },
        headers: { authorization: `Bearer ${TOKEN_RW}` },
      });
      return { status: res.statusCode, body: JSON.parse(res.body) };
    };
    try {
      await c.registerNode({ name: 'hub', addresses: ['198.51.100.1'], reservedPorts: [] });
      await c.registerNode({ name: 'zzz', addresses: ['203.0.113.9'], reservedPorts: [] });

      // The review's policy: every node would get an address of someone on the internet.
      const before = await dumpStore(own);
      const open = await put({ overlay: '0.0.0.0/0' });
      assert.equal(open.status, 400, JSON.stringify(open.body));
      assert.equal(open.body.error.code, 'IPF_E_VALIDATION');
      assert.deepEqual(open.body.error.problems, [
        {
          path: 'overlay',
          message:
            '0.0.0.0/0 is not private address space: an overlay lies inside 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16 (RFC 1918), 100.64.0.0/10 (RFC 6598) or 198.18.0.0/15, so that no member maps an address a host on the internet holds',
        },
      ]);
      assert.ok(open.body.error.hint.length > 0);
      for (const overlay of ['147.195.0.0/16', '10.0.0.0/8', '192.168.0.0/30', 'fd00::/64']) {
        const refusal = await put({ overlay });
        assert.equal(refusal.status, 400, overlay);
        assert.equal(refusal.body.error.code, 'IPF_E_VALIDATION', overlay);
      }
      assert.equal(await dumpStore(own), before, 'a refused policy writes nothing');
      assert.ok((await c.listNodes()).every((n) => n.overlayIp === undefined));

      // A private overlay is taken, and every node's address comes from it.
      const ok = await put({ overlay: '100.64.0.0/16' });
      assert.equal(ok.status, 200, JSON.stringify(ok.body));
      assert.equal(ok.body.policy.overlay, '100.64.0.0/16');
      const overlays = (await c.listNodes()).map((n) => n.overlayIp ?? '');
      assert.equal(overlays.length, 2);
      assert.ok(
        overlays.every((a) => a.startsWith('100.64.')),
        overlays.join(),
      );

      // Written around the API (an admin's store txn, or etcd): not a mesh anyone runs.
      const record = JSON.parse((await own.get(keys.meshPolicy))!.value) as {
        policy: { overlay: string };
      };
      record.policy.overlay = '0.0.0.0/0';
      await own.txn({
        compare: [],
        success: [{ type: 'put', key: keys.meshPolicy, value: stringifyStored(record) }],
      });
      const view = await c.mesh.view();
      assert.equal(view.inForce, undefined, 'no policy in force');
      await c.registerNode({ name: 'new1', addresses: ['192.0.2.7'], reservedPorts: [] });
      assert.equal((await c.getNode('new1')).overlayIp, undefined, 'no address from 0.0.0.0/0');
    } finally {
      await api.close();
      await own.close();
    }
  });
});

void describe('an overlay stored by an older version', () => {
  void it('keeps working at its old size, and may be set again unchanged, but not widened anew', async () => {
    const store = await openStore('sqlite::memory:');
    try {
      const control = new ControlPlane(store);
      // What an older version accepted: a /12.
      await store.txn({
        compare: [],
        success: [
          {
            type: 'put',
            key: keys.meshPolicy,
            value: stringifyStored({
              policy: { overlay: '10.64.0.0/12', fleet: {}, sites: {}, nodes: {} },
              updatedAt: '2026-01-01T00:00:00.000Z',
            }),
          },
        ],
      });
      const kept = await control.mesh.setPolicy({
        overlay: '10.64.0.0/12',
        fleet: { rejectAll: true },
      });
      assert.equal(kept.policy.overlay, '10.64.0.0/12');
      await assert.rejects(
        control.mesh.setPolicy({ overlay: '10.128.0.0/12', fleet: {} }),
        (e) => (e as { code?: string }).code === 'IPF_E_VALIDATION',
      );
    } finally {
      await store.close();
    }
  });
});
