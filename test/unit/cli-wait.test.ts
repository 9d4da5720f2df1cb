/**
 * Writes that wait: the CLI, in process, against an agent with the fake dataplane. A write prints
 * where and how long it took to be applied; an ERROR the dataplane reports, an agent that is not
 * alive, or one that never applies (the laggard named) fail the command; --no-wait does not wait.
 */
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { resolveConfig } from '../../src/agent/config.js';
import { type RunningAgent, startAgent } from '../../src/agent/run.js';
import { main } from '../../src/cli/main.js';
import { keys } from '../../src/core/keys.js';
import { FakeDataplane } from '../../src/dataplane/fake.js';
import { tempDir, TOKEN_FILE_TEXT, TOKEN_RW } from '../support/helpers.js';

let tmp: { dir: string; remove: () => Promise<void> };
let agent: RunningAgent;
const dataplane = new FakeDataplane();

async function ipferry(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await main(
    ['node', 'ipferry', '--server', agent.url, ...args],
    { out: (s) => (out += s), err: (s) => (err += s) },
    { IPFERRY_TOKEN: TOKEN_RW },
    { defaultTokenFile: '/nonexistent/ipferry-api-token', timeoutMs: 30_000 },
  );
  return { code, out, err };
}

before(async () => {
  tmp = await tempDir('cli-wait');
  await writeFile(join(tmp.dir, 'token'), TOKEN_FILE_TEXT, { mode: 0o600 });
  const config = resolveConfig(
    {},
    {
      node: 'gw1',
      store: `sqlite:${join(tmp.dir, 'state.db')}`,
      listen: '127.0.0.1:0',
      tokenFile: join(tmp.dir, 'token'),
      resyncSeconds: 30,
      logLevel: 'silent',
    },
    'test',
  );
  agent = await startAgent(config, { dataplane });
  await agent.control.createPool({ name: 'public', gateway: 'gw1', entries: ['203.0.113.0/29'] });
  // A gateway whose agent is alive but never applies anything, and one whose agent is gone.
  for (const name of ['lag', 'gone']) {
    await agent.control.registerNode({ name, addresses: [], reservedPorts: [] });
  }
  const lease = await agent.control.store.grantLease(60);
  await agent.control.store.txn({
    compare: [],
    success: [{ type: 'put', key: keys.nodeAlive('lag'), value: '{"name":"lag"}', lease }],
  });
  await agent.control.createPool({ name: 'far', gateway: 'lag', entries: ['198.51.100.0/30'] });
  await agent.control.createPool({ name: 'dead', gateway: 'gone', entries: ['198.51.100.8/30'] });
});

after(async () => {
  await agent?.stop();
  await tmp?.remove();
});

describe('a CLI write waits for the agents it concerns', () => {
  it('prints where and in how long it was applied; --json puts the report under "applied"', async () => {
    const allocated = await ipferry('fip', 'allocate', '--address', '203.0.113.1');
    assert.equal(allocated.code, 0, allocated.err);
    assert.match(allocated.out, /^applied on gw1 in \d+ ms$/m);
    const moved = await ipferry(
      '--json',
      'fip',
      'associate',
      '203.0.113.1',
      '--target',
      '10.0.0.5',
    );
    assert.equal(moved.code, 0, moved.err);
    const body = JSON.parse(moved.out) as {
      address: string;
      association: { target: string };
      applied: { outcome: string; ms: number; agents: { node: string; state: string }[] };
    };
    assert.equal(body.address, '203.0.113.1');
    assert.equal(body.association.target, '10.0.0.5');
    assert.equal(body.applied.outcome, 'applied');
    assert.deepEqual(
      body.applied.agents.map((a) => [a.node, a.state]),
      [['gw1', 'applied']],
    );
    assert.ok(Number.isInteger(body.applied.ms));
    assert.match(dataplane.dump(), /10\.0\.0\.5/);
  });

  it('exits non-zero with the agent’s reason when the dataplane refuses the write (ERROR)', async () => {
    dataplane.refuseWhen((e) => JSON.stringify(e).includes('10.0.0.66'), 'the kernel said no');
    try {
      const r = await ipferry('fip', 'move', '203.0.113.1', '--target', '10.0.0.66');
      assert.equal(r.code, 1, r.out);
      assert.match(r.out, /target: +10\.0\.0\.66/, 'the stored write is still printed');
      assert.doesNotMatch(r.out, /applied on/);
      assert.match(
        r.err,
        /error IPF_E_NOT_APPLIED: .*revision \d+.*gw1: ERROR: .*the kernel said no/,
      );
    } finally {
      dataplane.clearRefusals();
    }
    const back = await ipferry('fip', 'move', '203.0.113.1', '--target', '10.0.0.7');
    assert.equal(back.code, 0, back.err);
    assert.match(back.out, /applied on gw1 in \d+ ms/);
  });

  it('names the agent that has not applied it when the time runs out', async () => {
    const r = await ipferry('pool', 'update', 'far', '--description', 'late', '--timeout', '1s');
    assert.equal(r.code, 1, r.out);
    assert.match(r.err, /IPF_E_APPLY_TIMEOUT: .* lag had not applied it after 1 s/);
  });

  it('fails at once, saying so, when a concerned agent is not alive (UNREACHABLE)', async () => {
    const r = await ipferry('pool', 'update', 'dead', '--description', 'x');
    assert.equal(r.code, 1, r.out);
    assert.match(r.err, /IPF_E_NOT_APPLIED: .*gone: UNREACHABLE: its agent is not alive/);
  });

  it('a FIP its gateway holds DOWN is applied, with the gateway’s reason, when time runs out', async () => {
    const address = '198.51.100.1';
    const r0 = await ipferry('fip', 'allocate', '--pool', 'far', '--address', address, '--no-wait');
    assert.equal(r0.code, 0, r0.err);
    const why =
      'waiting for the path through the tunnel to lag to be measured before routing into it';
    const store = agent.control.store;
    const before = (await store.get(keys.fip(address)))?.modRevision ?? 0;
    // Plays the gateway `lag`: it holds the associated FIP DOWN at the new record's revision.
    const gateway = (async () => {
      for (;;) {
        const kv = await store.get(keys.fip(address));
        if (kv && kv.modRevision > before) {
          const held = { address, state: 'DOWN', node: 'lag', revision: kv.modRevision };
          const value = { ...held, message: why, updatedAt: new Date().toISOString() };
          await store.txn({
            compare: [],
            success: [{ type: 'put', key: keys.status(address), value: JSON.stringify(value) }],
          });
          return;
        }
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    })();
    const r = await ipferry('fip', 'associate', address, '--target', '10.0.0.9', '--timeout', '1s');
    await gateway;
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /^applied on lag in \d+ ms$/m);
    assert.ok(r.out.includes(`lag holds ${address} DOWN: ${why}\n`), r.out);
    assert.match(
      r.out,
      /it turns ACTIVE on its own \(`ipferry fip show 198\.51\.100\.1` follows it\)/,
    );
  });

  it('--no-wait returns once the write is stored, as before', async () => {
    const r = await ipferry('pool', 'update', 'dead', '--description', 'y', '--no-wait');
    assert.equal(r.code, 0, r.err);
    assert.doesNotMatch(r.out, /applied/);
    const json = await ipferry('--json', 'fip', 'disassociate', '203.0.113.1', '--no-wait');
    assert.equal(json.code, 0, json.err);
    assert.equal((JSON.parse(json.out) as { applied?: unknown }).applied, undefined);
  });

  it('a release waits for the gateway that takes the address away', async () => {
    const r = await ipferry('fip', 'release', '203.0.113.1');
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /^released 203\.0\.113\.1\napplied on gw1 in \d+ ms\n$/);
    assert.doesNotMatch(dataplane.dump(), /203\.0\.113\.1/);
  });
});
