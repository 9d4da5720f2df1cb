/**
 * The agent's log: `--log-format human|json` (flag and YAML `logFormat`), info by default, one
 * line per applied change saying what changed (none for a pass that changed nothing), and no
 * token in any line it writes.
 */
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { resolveConfig } from '../../src/agent/config.js';
import { appliedSummary, defaultLogFormat } from '../../src/agent/log.js';
import { type RunningAgent, startAgent } from '../../src/agent/run.js';
import type { FloatingIp } from '../../src/core/model.js';
import { FakeDataplane } from '../../src/dataplane/fake.js';
import { element, HOST_OWNER } from '../../src/intent/elements.js';
import { isIpferryError } from '../../src/core/errors.js';
import { tempDir, waitFor } from '../support/helpers.js';

const TOKEN = 'agent-log-test-token-0123456789abcdef';
const FIP = '203.0.113.10';

const base = { node: 'gw1', store: 'sqlite::memory:' };

describe('log options', () => {
  it('logs at info by default, in the format the terminal suggests', () => {
    const config = resolveConfig({}, base);
    assert.equal(config.logLevel, 'info');
    assert.equal(config.logFormat, undefined);
    assert.equal(defaultLogFormat({ isTTY: true }), 'human');
    assert.equal(defaultLogFormat({ isTTY: false }), 'json');
    assert.equal(defaultLogFormat({}), 'json');
  });

  it('takes logFormat from the file, the flag winning', () => {
    assert.equal(resolveConfig({ logFormat: 'json' }, base).logFormat, 'json');
    assert.equal(
      resolveConfig({ logFormat: 'json' }, { ...base, logFormat: 'human' }).logFormat,
      'human',
    );
  });

  it('refuses another format, naming the flag', () => {
    assert.throws(
      () => resolveConfig({}, { ...base, logFormat: 'pretty' }),
      (e: unknown) =>
        isIpferryError(e) && /--log-format: must be one of human, json/.test(e.message),
    );
  });
});

describe('appliedSummary', () => {
  const fip = (address: string, target?: string): FloatingIp =>
    ({
      address,
      family: 4,
      pool: 'public',
      shared: false,
      tags: [],
      ...(target
        ? { association: { mode: 'nat', target, associatedAt: '2026-01-01T00:00:00Z' } }
        : {}),
    }) as unknown as FloatingIp;

  it('names each FIP with where it goes, and counts what changed by kind', () => {
    const diff = {
      add: [
        element('dnat', { fip: FIP, target: '10.0.0.12' }, FIP),
        element('snat', { target: '10.0.0.12', fip: FIP }, FIP),
        element('route', { prefix: '10.0.0.12/32', dev: 'ipf0' }, FIP),
        element('sysctl', { path: 'net/ipv4/ip_forward', value: '1' }, HOST_OWNER),
      ],
      replace: [],
      remove: [
        element('dnat', { fip: '203.0.113.11', target: '10.0.0.13' }, '203.0.113.11'),
        element('route', { prefix: '10.0.0.13/32', dev: 'ipf0' }, '203.0.113.11'),
      ],
    };
    const fips = new Map([
      [FIP, fip(FIP, '10.0.0.12')],
      ['203.0.113.11', fip('203.0.113.11')],
    ]);
    assert.equal(
      appliedSummary(diff, fips, 14.2),
      'applied: 203.0.113.10 → 10.0.0.12 (nat), 203.0.113.11 → (none), host settings; 3 nftables elements, 2 routes, 1 sysctl, in 14 ms',
    );
  });

  it('names at most five FIPs', () => {
    const addresses = Array.from({ length: 8 }, (_, i) => `203.0.113.${20 + i}`);
    const diff = {
      add: addresses.map((a) => element('counter', { fip: a }, a)),
      replace: [],
      remove: [],
    };
    const text = appliedSummary(diff, new Map(), 3);
    assert.match(
      text,
      /203\.0\.113\.24 → \(none\), 3 more floating IPs; 8 nftables elements, in 3 ms$/,
    );
  });
});

/** An agent on the fake dataplane whose log goes to `lines`. */
async function agentLogging(format: 'human' | 'json', dir: string) {
  const out = new PassThrough();
  let text = '';
  out.on('data', (d: Buffer) => (text += d.toString()));
  const tokenFile = join(dir, `token-${format}`);
  await writeFile(tokenFile, `${TOKEN} rw\n`, { mode: 0o600 });
  const config = resolveConfig(
    {},
    {
      node: 'gw1',
      store: `sqlite:${join(dir, `${format}.db`)}`,
      listen: '127.0.0.1:0',
      tokenFile,
      resyncSeconds: 30,
      logFormat: format,
    },
  );
  const agent = await startAgent(config, { dataplane: new FakeDataplane(), logTo: out });
  return { agent, text: () => text };
}

async function associate(agent: RunningAgent): Promise<void> {
  const c = agent.control;
  await c.createPool({ name: 'public', gateway: 'gw1', entries: ['203.0.113.0/28'] });
  await c.allocate({ address: FIP });
  await c.associate(FIP, { target: '10.0.0.11' });
  await waitFor('ACTIVE', async () => (await c.getFip(FIP)).status.state === 'ACTIVE');
  await agent.reconciler.settled();
}

describe('the agent log', () => {
  let tmp: { dir: string; remove: () => Promise<void> };
  const agents: RunningAgent[] = [];
  before(async () => {
    tmp = await tempDir('agent-log');
  });
  after(async () => {
    for (const a of agents) await a.stop();
    await tmp.remove();
  });

  it('writes JSON lines, one applied line per change, none for a pass that changed nothing', async () => {
    const { agent, text } = await agentLogging('json', tmp.dir);
    agents.push(agent);
    await associate(agent);
    const lines = text()
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { level: number; msg: string; add?: number; ms?: number });
    assert.ok(lines.some((l) => /listening on http:\/\/127\.0\.0\.1:\d+$/.test(l.msg)));
    const applied = lines.filter((l) => l.msg.startsWith('applied: '));
    const association = applied.filter((l) => l.msg.includes(`${FIP} → 10.0.0.11 (nat)`));
    assert.equal(association.length, 1, JSON.stringify(applied));
    assert.match(association[0]!.msg, /; \d+ nftables elements?, .*in \d+ ms$/);
    assert.equal(association[0]!.level, 30, 'info');
    assert.ok(typeof association[0]!.ms === 'number');

    const count = applied.length;
    await agent.reconciler.resync();
    await agent.reconciler.resync();
    const after = text()
      .split('\n')
      .filter((l) => l.includes('"applied: '));
    assert.equal(after.length, count, 'a pass that changes nothing writes no line');
  });

  it('writes human lines, and no token in any line', async () => {
    const { agent, text } = await agentLogging('human', tmp.dir);
    agents.push(agent);
    await associate(agent);
    // Requests with the token, right and wrong, at the API and at /metrics.
    for (const url of ['/v1/fips', '/metrics', '/v1/nope'])
      for (const token of [TOKEN, `${TOKEN}x`])
        await agent.app.inject({
          method: 'GET',
          url,
          headers: { authorization: `Bearer ${token}` },
        });
    const log = text();
    assert.ok(!log.trimStart().startsWith('{'), log);
    assert.match(log, /INFO: applied: 203\.0\.113\.10 → 10\.0\.0\.11 \(nat\), .* in \d+ ms/);
    assert.match(log, /INFO: ipferry agent .* listening on http:\/\/127\.0\.0\.1:\d+/);
    assert.ok(!log.includes(TOKEN), log);
    assert.ok(!log.includes('incoming request'), 'no line per request at info');
  });
});
