/**
 * IP Floater's REST and XML-RPC APIs served by an agent in-process on the fake dataplane: every
 * route and method, IP Floater's answers and status codes, its refusals, the bugs fixed
 * (docs/migration.md), what the kernel would get (the fake dataplane's dump), and the audit
 * trail of their writes.
 */
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { XmlRpcClient } from '@foxglove/xmlrpc';
import { resolveConfig } from '../../src/agent/config.js';
import { type RunningAgent, startAgent } from '../../src/agent/run.js';
import { FakeDataplane } from '../../src/dataplane/fake.js';
import { redirectionFrom } from '../../src/core/ipfloater.js';
import type { ControlPlane } from '../../src/service/control.js';
import type { AuditEvent } from '../../src/core/events.js';
import { listEvents } from '../../src/service/events.js';
import { IpFloaterService } from '../../src/service/ipfloater.js';
import { tempDir, TOKEN_FILE_TEXT, waitFor } from '../support/helpers.js';

let tmp: { dir: string; remove: () => Promise<void> };
let agent: RunningAgent;
const dataplane = new FakeDataplane();
let rest: string;
let rpc: XmlRpcClient;

const MAC = '52:54:00:12:34:56';
const PINNED = '203.0.113.5';
const VM = '10.0.0.11';
const VM2 = '10.0.0.12';

async function call(
  method: string,
  url: string,
): Promise<{
  status: number;
  type: string;
  body: string;
  location: string | null;
  revision: string | null;
}> {
  const res = await fetch(`${rest.replace(/\/$/, '')}${url}`, { method });
  return {
    status: res.status,
    type: res.headers.get('content-type') ?? '',
    body: await res.text(),
    location: res.headers.get('location'),
    revision: res.headers.get('ipferry-revision'),
  };
}

/** The events recorded after sequence number `after`. */
async function trailAfter(after: number): Promise<AuditEvent[]> {
  return listEvents(agent.control.store, { after });
}

async function lastSeq(): Promise<number> {
  return (await listEvents(agent.control.store)).at(-1)?.seq ?? 0;
}

async function getJson(url: string): Promise<unknown> {
  const r = await call('GET', url);
  assert.equal(r.status, 200, r.body);
  assert.match(r.type, /^application\/json/);
  return JSON.parse(r.body);
}

before(async () => {
  tmp = await tempDir('ipfloater-api');
  await writeFile(join(tmp.dir, 'token'), TOKEN_FILE_TEXT, { mode: 0o600 });
  const config = resolveConfig(
    {},
    {
      node: 'gw1',
      store: `sqlite:${join(tmp.dir, 'state.db')}`,
      listen: '127.0.0.1:0',
      tokenFile: join(tmp.dir, 'token'),
      resyncSeconds: 1,
      logLevel: 'silent',
      ipfloaterRest: '127.0.0.1:0',
      ipfloaterXmlrpc: '127.0.0.1:0',
      ipfloaterPool: 'public',
    },
    'test',
  );
  agent = await startAgent(config, { dataplane });
  rest = agent.ipfloater!.rest!;
  rpc = new XmlRpcClient(agent.ipfloater!.xmlrpc!);
  await agent.control.createPool({
    name: 'public',
    gateway: 'gw1',
    entries: ['203.0.113.1-203.0.113.4', `${PINNED}=${MAC}`],
  });
  // Not served: its addresses are no public IPs of IP Floater's.
  await agent.control.createPool({ name: 'other', gateway: 'gw1', entries: ['198.51.100.0/30'] });
});

after(async () => {
  await agent?.stop();
  await tmp?.remove();
});

describe("IP Floater's REST API", () => {
  it('GET /public lists every public IP of the served pool, {} for a free one', async () => {
    assert.deepEqual(await getJson('/public'), {
      '203.0.113.1': {},
      '203.0.113.2': {},
      '203.0.113.3': {},
      '203.0.113.4': {},
      '203.0.113.5': {},
    });
    assert.deepEqual(await getJson('/'), {});
    assert.deepEqual(await getJson('/private'), {});
  });

  it('GET /arp/MAC answers the pinned address as text, 404 for an unknown MAC', async () => {
    const r = await call('GET', `/arp/${MAC}`);
    assert.equal(r.status, 200);
    assert.match(r.type, /^text\/plain/);
    assert.equal(r.body, PINNED);
    assert.equal((await call('GET', '/arp/52:54:00:00:00:01')).status, 404);
    assert.equal((await call('GET', '/arp/not-a-mac')).status, 404);
  });

  it('PUT /public/FIP/redirect/VM redirects the whole address: 201, Location, the endpoint', async () => {
    const before = Date.now() / 1000;
    const r = await call('PUT', `/public/${PINNED}/redirect/${VM}`);
    assert.equal(r.status, 201, r.body);
    assert.equal(r.location, `/public/${PINNED}/0`);
    const ep = JSON.parse(r.body) as Record<string, unknown>;
    assert.match(String(ep['id']), /^[0-9a-f]{8}$/);
    assert.deepEqual(
      { ...ep, id: 'x', timestamp: 0 },
      { id: 'x', public_ip: PINNED, public_port: 0, private_ip: VM, private_port: 0, timestamp: 0 },
    );
    assert.ok(typeof ep['timestamp'] === 'number' && ep['timestamp'] >= before - 1);
    const fip = await agent.control.getFip(PINNED);
    assert.equal(fip.association?.mode, 'nat');
    assert.deepEqual(fip.tags, ['ipfloater']);
    await waitFor('realised', () =>
      Promise.resolve(dataplane.dump().includes(`dnat ${PINNED} -> ${VM}`)),
    );
    assert.deepEqual(await getJson(`/public/${PINNED}`), { '0': ep });
    assert.deepEqual(await getJson(`/public/${PINNED}/0`), ep);
    assert.deepEqual(await getJson(`/private/${VM}`), { '0': ep });
    assert.deepEqual(await getJson(`/private/${VM}/0`), ep);
    assert.deepEqual(await getJson('/'), { [String(ep['id'])]: ep });
  });

  it('refuses a second redirection of a taken address or private IP with 404 "Could not obtain"', async () => {
    const taken = await call('PUT', `/public/${PINNED}/redirect/${VM2}`);
    assert.equal(taken.status, 404);
    assert.match(taken.body, /^Could not obtain a redirection for 10\.0\.0\.12:0\n/);
    const busy = await call('PUT', `/public/203.0.113.1/redirect/${VM}`);
    assert.equal(busy.status, 404);
    assert.match(busy.body, /already has a redirection/);
    const port = await call('PUT', `/public/${PINNED}/80/redirect/${VM2}/80`);
    assert.equal(port.status, 404, 'no port redirection on a wholly redirected address');
    const notOurs = await call('PUT', `/public/198.51.100.1/redirect/${VM2}`);
    assert.equal(notOurs.status, 404);
    assert.match(notOurs.body, /not a public IP of ipfloater/);
    const oneToAll = await call('PUT', `/public/203.0.113.1/80/redirect/${VM2}/0`);
    assert.equal(oneToAll.status, 404);
    assert.match(oneToAll.body, /all-to-all/);
    assert.equal((await call('PUT', `/public/203.0.113.1/x/redirect/${VM2}/80`)).status, 404);
  });

  it('turns a control-plane refusal into 404 "Could not obtain", releasing what it allocated', async () => {
    // A pool's address is no server: the control plane refuses it as a target.
    const r = await call('PUT', '/public/203.0.113.2/redirect/198.51.100.1');
    assert.equal(r.status, 404);
    assert.match(
      r.body,
      /^Could not obtain a redirection for 198\.51\.100\.1:0\n.*198\.51\.100\.1/s,
    );
    await assert.rejects(agent.control.getFip('203.0.113.2'), { code: 'IPF_E_FIP_NOT_FOUND' });
    const port = await call('PUT', '/public/203.0.113.2/80/redirect/198.51.100.1/80');
    assert.equal(port.status, 404);
    await assert.rejects(agent.control.getFip('203.0.113.2'), { code: 'IPF_E_FIP_NOT_FOUND' });
  });

  it('GET of a free or unknown public IP or port is {} (on purpose); private ones 404', async () => {
    assert.deepEqual(await getJson('/public/203.0.113.2'), {});
    assert.deepEqual(await getJson('/public/192.0.2.99'), {});
    assert.deepEqual(await getJson('/public/203.0.113.2/80'), {});
    assert.equal((await call('GET', '/public/203.0.113.2/eighty')).status, 400);
    assert.equal((await call('GET', `/private/${VM2}`)).status, 404);
    assert.equal((await call('GET', `/private/${VM}/80`)).status, 404);
    assert.equal((await call('GET', `/private/${VM}/x`)).status, 400);
  });

  it('DELETE /public/FIP/redirect/VM removes it and releases the address it allocated', async () => {
    const wrong = await call('DELETE', `/public/${PINNED}/redirect/${VM2}`);
    assert.equal(wrong.status, 404);
    assert.match(wrong.body, /Does it exist\?/);
    const r = await call('DELETE', `/public/${PINNED}/redirect/${VM}`);
    assert.equal(r.status, 200);
    assert.equal(r.body, '');
    await assert.rejects(agent.control.getFip(PINNED), { code: 'IPF_E_FIP_NOT_FOUND' });
    assert.deepEqual(await getJson(`/public/${PINNED}`), {});
    assert.equal((await call('DELETE', `/public/${PINNED}/redirect/${VM}`)).status, 404);
    await waitFor('unrealised', () =>
      Promise.resolve(!dataplane.dump().includes(`dnat ${PINNED}`)),
    );
  });

  it('port redirections: given, any IP, any IP and port; the private port when free, else another', async () => {
    const given = await call('PUT', `/public/203.0.113.1/8080/redirect/${VM}/80`);
    assert.equal(given.status, 201, given.body);
    assert.equal(given.location, '/public/203.0.113.1/8080');
    const fip = await agent.control.getFip('203.0.113.1');
    assert.equal(fip.association?.mode, 'ports');
    assert.deepEqual(
      fip.forwards.map((f) => [f.protocol, f.port, f.portEnd, f.target, f.targetPort]),
      [['tcp', 8080, 8080, VM, 80]],
    );
    // Any IP, port 22: the address already serving VM comes first.
    const any = JSON.parse((await call('PUT', `/public/any/22/redirect/${VM}/22`)).body);
    assert.deepEqual([any.public_ip, any.public_port], ['203.0.113.1', 22]);
    // The public port left open: the private one when free there.
    const open = JSON.parse((await call('PUT', `/public/203.0.113.1/redirect/${VM2}/443`)).body);
    assert.deepEqual([open.public_ip, open.public_port], ['203.0.113.1', 443]);
    // Taken there: another, from 1025 up.
    const other = await call('PUT', `/public/203.0.113.1/redirect/${VM2}/22`);
    assert.equal(other.status, 201, other.body);
    const moved = JSON.parse(other.body);
    assert.ok(moved.public_port >= 1025 && moved.public_port !== 8080, String(moved.public_port));
    const both = JSON.parse((await call('PUT', `/public/redirect/${VM2}/25`)).body);
    assert.deepEqual([both.private_ip, both.private_port], [VM2, 25]);
    assert.equal(
      (await call('PUT', `/public/203.0.113.1/9999/redirect/${VM}/80`)).status,
      404,
      'VM:80 already has one',
    );
    assert.deepEqual(Object.keys((await getJson(`/private/${VM2}`)) as object).sort(), [
      '22',
      '25',
      '443',
    ]);
  });

  it('DELETE /public/IP/PORT removes that one (IP Floater never matched the port: fixed)', async () => {
    assert.equal((await call('DELETE', '/public/203.0.113.1/8080')).status, 200);
    assert.deepEqual(await getJson('/public/203.0.113.1/8080'), {});
    assert.equal((await call('DELETE', '/public/203.0.113.1/8080')).status, 404);
    assert.equal((await call('DELETE', '/public/203.0.113.1/port')).status, 400);
  });

  it('DELETE /private/IP/PORT and /private/IP remove by the private side', async () => {
    assert.equal((await call('DELETE', `/private/${VM}/22`)).status, 200);
    assert.equal((await call('DELETE', `/private/${VM}/22`)).status, 404);
    assert.equal((await call('DELETE', `/private/${VM2}`)).status, 200);
    assert.equal(
      (await call('DELETE', `/private/${VM2}`)).status,
      404,
      'IP Floater: NameError, fixed',
    );
    assert.deepEqual(await getJson('/private'), {});
    // Nothing left on it: the address the adapter allocated is free again.
    await assert.rejects(agent.control.getFip('203.0.113.1'), { code: 'IPF_E_FIP_NOT_FOUND' });
  });

  it('DELETE /public/IP removes every redirection of the address; 404 when it has none', async () => {
    await call('PUT', `/public/203.0.113.2/80/redirect/${VM}/80`);
    await call('PUT', `/public/203.0.113.2/81/redirect/${VM}/81`);
    assert.equal((await call('DELETE', '/public/203.0.113.2')).status, 200);
    assert.deepEqual(await getJson('/public/203.0.113.2'), {});
    assert.equal((await call('DELETE', '/public/203.0.113.2')).status, 404);
  });

  it('leaves an address allocated outside IP Floater allocated, and never picks it by itself', async () => {
    for (const a of ['203.0.113.1', '203.0.113.2', '203.0.113.3', PINNED]) {
      await agent.control.allocate({ address: a });
    }
    const auto = await call('PUT', `/public/redirect/${VM}/0`);
    assert.equal(auto.status, 201, auto.body);
    assert.equal(JSON.parse(auto.body).public_ip, '203.0.113.4');
    const named = await call('PUT', `/public/203.0.113.3/redirect/${VM2}`);
    assert.equal(named.status, 201, named.body);
    assert.equal((await call('DELETE', `/public/203.0.113.3/redirect/${VM2}`)).status, 200);
    const kept = await agent.control.getFip('203.0.113.3');
    assert.equal(kept.association, undefined, 'disassociated');
    assert.equal((await call('DELETE', `/public/203.0.113.4`)).status, 200);
    for (const a of ['203.0.113.1', '203.0.113.2', '203.0.113.3', PINNED]) {
      await agent.control.release(a, true);
    }
  });

  it('unknown routes are 404 text', async () => {
    const r = await call('GET', '/nowhere');
    assert.equal(r.status, 404);
    assert.match(r.type, /^text\/plain/);
  });
});

describe("IP Floater's XML-RPC API", () => {
  it('get_version, get_public_ips, arp', async () => {
    assert.equal(await rpc.methodCall('get_version'), '0.12');
    assert.deepEqual(await rpc.methodCall('get_public_ips'), [
      true,
      ['203.0.113.1', '203.0.113.2', '203.0.113.3', '203.0.113.4', PINNED],
    ]);
    assert.deepEqual(await rpc.methodCall('arp', [MAC]), [true, PINNED]);
    assert.deepEqual(await rpc.methodCall('arp', ['52:54:00:00:00:01']), [
      false,
      'Could not get the IP address for 52:54:00:00:00:01',
    ]);
  });

  it('create_public_redirection: given, "" and negative numbers let it choose', async () => {
    assert.deepEqual(await rpc.methodCall('create_public_redirection', [PINNED, 0, VM, 0]), [
      true,
      `${PINNED} -> ${VM}`,
    ]);
    assert.deepEqual(
      await rpc.methodCall('create_public_redirection', ['203.0.113.1', 2222, VM2, 22]),
      [true, `203.0.113.1:2222 -> ${VM2}:22`],
    );
    assert.deepEqual(await rpc.methodCall('create_public_redirection', ['', -1, VM2, 80]), [
      true,
      `203.0.113.1:80 -> ${VM2}:80`,
    ]);
    const refused = (await rpc.methodCall('create_public_redirection', [PINNED, 0, VM2, 0])) as [
      boolean,
      string,
    ];
    assert.equal(refused[0], false);
    assert.match(refused[1], /^Could not obtain a redirection for 10\.0\.0\.12:0 \(/);
    assert.equal(
      await rpc.methodCall('get_redirections'),
      `203.0.113.1:2222 -> ${VM2}:22\n203.0.113.1:80 -> ${VM2}:80\n${PINNED} -> ${VM}\n`,
    );
  });

  it('unregister_redirection, _from and _to remove and say so; [false, …] when there is none', async () => {
    assert.deepEqual(
      await rpc.methodCall('unregister_redirection', ['203.0.113.1', 2222, VM2, 22]),
      [true, `Redirection 203.0.113.1:2222 -> ${VM2}:22 unregistered`],
    );
    assert.deepEqual(
      await rpc.methodCall('unregister_redirection', ['203.0.113.1', 2222, VM2, 22]),
      [false, `Could not delete the redirection 203.0.113.1:2222 -> ${VM2}:22. Does it exist?`],
    );
    assert.deepEqual(await rpc.methodCall('unregister_redirection_from', ['203.0.113.1', 80]), [
      true,
      `Redirection 203.0.113.1:80 -> ${VM2}:80 unregistered`,
    ]);
    assert.deepEqual(await rpc.methodCall('unregister_redirection_to', [VM, 0]), [
      true,
      `Redirection ${PINNED} -> ${VM} unregistered`,
    ]);
    assert.deepEqual(await rpc.methodCall('unregister_redirection_to', [VM, 0]), [
      false,
      `Could not delete the redirection to ${VM}:0. Does it exist?`,
    ]);
    assert.equal(await rpc.methodCall('get_redirections'), '');
    await waitFor('nothing realised', () =>
      Promise.resolve(!/^(dnat|snat|forward) .*203\.0\.113\./m.test(dataplane.dump())),
    );
  });

  it('clean_public_ip and clean_private_ip', async () => {
    await rpc.methodCall('create_public_redirection', ['203.0.113.2', 80, VM, 80]);
    await rpc.methodCall('create_public_redirection', ['203.0.113.2', 81, VM2, 81]);
    await rpc.methodCall('create_public_redirection', ['203.0.113.3', 82, VM2, 82]);
    assert.deepEqual(await rpc.methodCall('clean_private_ip', [VM2]), [
      true,
      `Redirections to ${VM2} unregistered`,
    ]);
    assert.deepEqual(await rpc.methodCall('clean_private_ip', [VM2]), [
      false,
      `Could not clean the redirections to ${VM2}. Do they exist?`,
    ]);
    assert.deepEqual(await rpc.methodCall('clean_public_ip', ['203.0.113.2']), [
      true,
      'Redirections from 203.0.113.2 unregistered',
    ]);
    assert.deepEqual(await rpc.methodCall('clean_public_ip', ['198.51.100.1']), [
      false,
      'Could not clean the redirections from 198.51.100.1. Do they exist?',
    ]);
    assert.deepEqual(
      (await agent.control.listFips()).map((f) => f.address),
      [],
    );
  });

  it('a wrong number of arguments or an unknown method is a fault', async () => {
    await assert.rejects(rpc.methodCall('arp', []), /exactly 1 argument/);
    await assert.rejects(rpc.methodCall('no_such_method', []), /not found/);
  });
});

describe("the audit trail of IP Floater's APIs", () => {
  const FREE = '203.0.113.4';

  it('records every REST write, done or refused, by the client’s address; no read', async () => {
    const before = await lastSeq();
    const done = await call('PUT', `/public/${FREE}/redirect/${VM}`);
    assert.equal(done.status, 201, done.body);
    assert.match(done.revision ?? '', /^\d+$/, 'a write answers the revision it made');
    assert.equal((await call('PUT', `/public/${FREE}/redirect/${VM2}`)).status, 404);
    assert.equal((await call('DELETE', `/public/${FREE}/x`)).status, 400);
    assert.equal((await call('PUT', '/nowhere')).status, 404);
    assert.equal((await call('GET', `/public/${FREE}`)).status, 200);
    const removed = await call('DELETE', `/public/${FREE}/redirect/${VM}`);
    assert.equal(removed.status, 200, removed.body);

    const recorded = await trailAfter(before);
    assert.deepEqual(
      recorded.map((e) => [e.api, e.who, e.method, e.path, e.status, e.code]),
      [
        [
          'ipfloater-rest',
          'ipfloater 127.0.0.1',
          'PUT',
          `/public/${FREE}/redirect/${VM}`,
          201,
          undefined,
        ],
        [
          'ipfloater-rest',
          'ipfloater 127.0.0.1',
          'PUT',
          `/public/${FREE}/redirect/${VM2}`,
          404,
          undefined,
        ],
        ['ipfloater-rest', 'ipfloater 127.0.0.1', 'DELETE', `/public/${FREE}/x`, 400, undefined],
        ['ipfloater-rest', 'ipfloater 127.0.0.1', 'PUT', '/nowhere', 404, undefined],
        [
          'ipfloater-rest',
          'ipfloater 127.0.0.1',
          'DELETE',
          `/public/${FREE}/redirect/${VM}`,
          200,
          undefined,
        ],
      ],
    );
    const [made, taken, badPort, , gone] = recorded;
    assert.equal(made!.revision, Number(done.revision));
    assert.match(made!.answer ?? '', new RegExp(`"public_ip":"${FREE}"`));
    assert.match(taken!.answer ?? '', /^Could not obtain a redirection for 10\.0\.0\.12:0\n/);
    assert.equal(badPort!.answer, 'Malformed request: port must be an integer');
    assert.deepEqual([taken!.revision, badPort!.revision], [undefined, undefined]);
    assert.equal(gone!.revision, Number(removed.revision));
    assert.ok(gone!.revision > made!.revision);
  });

  it('records every XML-RPC call of a method that writes, its answer or fault; no read', async () => {
    const before = await lastSeq();
    assert.deepEqual(await rpc.methodCall('create_public_redirection', [FREE, 0, VM, 0]), [
      true,
      `${FREE} -> ${VM}`,
    ]);
    const fip = await agent.control.getFip(FREE);
    const refused = (await rpc.methodCall('create_public_redirection', [FREE, 0, VM2, 0])) as [
      boolean,
    ];
    assert.equal(refused[0], false);
    await assert.rejects(rpc.methodCall('clean_public_ip', []), /exactly 1 argument/);
    await rpc.methodCall('get_redirections');
    await rpc.methodCall('arp', [MAC]);
    assert.deepEqual(await rpc.methodCall('clean_public_ip', [FREE]), [
      true,
      `Redirections from ${FREE} unregistered`,
    ]);

    const recorded = await trailAfter(before);
    // Each an HTTP 200 POST to the server's path, told apart by its call and its code.
    assert.deepEqual(
      [...new Set(recorded.map((e) => [e.api, e.who, e.method, e.path, e.status].join(' ')))],
      ['ipfloater-xmlrpc ipfloater 127.0.0.1 POST / 200'],
    );
    assert.deepEqual(
      recorded.map((e) => [e.code, e.body]),
      [
        [undefined, { method: 'create_public_redirection', params: [FREE, 0, VM, 0] }],
        ['XMLRPC_FALSE', { method: 'create_public_redirection', params: [FREE, 0, VM2, 0] }],
        ['XMLRPC_FAULT', { method: 'clean_public_ip', params: [] }],
        [undefined, { method: 'clean_public_ip', params: [FREE] }],
      ],
    );
    const [made, notMade, fault, cleaned] = recorded;
    assert.equal(made!.revision, fip.revision, 'the revision of the FIP record it wrote');
    assert.equal(made!.answer, `${FREE} -> ${VM}`);
    assert.match(notMade!.answer ?? '', /^Could not obtain a redirection for 10\.0\.0\.12:0 \(/);
    assert.match(fault!.answer ?? '', /exactly 1 argument/);
    assert.deepEqual([notMade!.revision, fault!.revision], [undefined, undefined]);
    assert.ok(cleaned!.revision! > made!.revision);
  });
});

describe('the IP Floater adapter racing another writer', () => {
  it('keeps an address it allocated when a forward is added between its read and its release', async () => {
    const control = agent.control;
    const service = new IpFloaterService(control, { pools: ['public'] });
    const made = await service.redirect({
      publicIp: '203.0.113.4',
      publicPort: 90,
      privateIp: VM,
      privatePort: 90,
    });
    assert.ok(made.ok, JSON.stringify(made));
    const state = await service.state();
    const redirection = redirectionFrom(state, '203.0.113.4', 90)!;
    // Another client adds its forward right after the adapter read the FIP.
    const racing = Object.create(control) as ControlPlane;
    racing.getFip = async (address: string) => {
      const read = await control.getFip(address);
      await control.addForward(address, { protocol: 'tcp', port: 91, targetPort: 91, target: VM2 });
      return read;
    };
    const outcome = await new IpFloaterService(racing, { pools: ['public'] }).remove(state, [
      redirection,
    ]);
    assert.equal(outcome.ok, false);
    assert.match(!outcome.ok ? outcome.reason : '', /changed since revision/);
    const kept = await control.getFip('203.0.113.4');
    assert.deepEqual(
      kept.forwards.map((f) => f.port),
      [91],
    );
    await control.release('203.0.113.4', true);
  });

  it('a release guarded by a revision older than the record is refused and changes nothing', async () => {
    const control = agent.control;
    const fip = await control.allocate({ address: '203.0.113.4' });
    await control.associate('203.0.113.4', { target: VM, mode: 'nat' });
    await assert.rejects(control.release('203.0.113.4', true, fip.revision), (e: unknown) => {
      assert.equal((e as { code?: string }).code, 'IPF_E_FIP_CHANGED');
      return true;
    });
    const now = await control.getFip('203.0.113.4');
    assert.equal(now.association?.target, VM);
    assert.deepEqual(await control.release('203.0.113.4', true, now.revision), {
      address: '203.0.113.4',
      released: true,
    });
  });
});
