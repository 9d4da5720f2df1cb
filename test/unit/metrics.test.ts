/**
 * The agent's /metrics on the fake dataplane: names, types and labels by Prometheus'
 * conventions (docs/metrics.md), per-FIP counters read from the dataplane when scraped, the
 * same tokens as the API (a read-only one suffices), and promtool's own check of the exposition
 * when Debian's prometheus is installed.
 */
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { resolveConfig } from '../../src/agent/config.js';
import { AgentMetrics } from '../../src/agent/metrics.js';
import { type RunningAgent, startAgent } from '../../src/agent/run.js';
import type { TunnelHealth } from '../../src/core/model.js';
import { FakeDataplane } from '../../src/dataplane/fake.js';
import { tempDir, waitFor } from '../support/helpers.js';

const RW = 'metrics-test-token-rw-0123456789';
const RO = 'metrics-test-token-ro-0123456789';
const FIP = '203.0.113.10';

let tmp: { dir: string; remove: () => Promise<void> };
let agent: RunningAgent | undefined;
const dataplane = new FakeDataplane();

interface Sample {
  readonly name: string;
  readonly labels: Record<string, string>;
  readonly value: number;
}

/** The samples of an exposition, and each family's TYPE (enough for our own output). */
function parse(text: string): {
  samples: Sample[];
  types: Map<string, string>;
  helps: Set<string>;
} {
  const samples: Sample[] = [];
  const types = new Map<string, string>();
  const helps = new Set<string>();
  for (const line of text.split('\n')) {
    const type = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (type) types.set(type[1]!, type[2]!);
    const help = /^# HELP (\S+) /.exec(line);
    if (help) helps.add(help[1]!);
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!;
    samples.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return { samples, types, helps };
}

function value(samples: readonly Sample[], name: string, labels: Record<string, string> = {}) {
  return samples.find(
    (s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v),
  )?.value;
}

async function scrape(token: string | undefined) {
  return agent!.app.inject({
    method: 'GET',
    url: '/metrics',
    headers: token ? { authorization: `Bearer ${token}` } : {},
  });
}

before(async () => {
  tmp = await tempDir('metrics');
  const tokenFile = join(tmp.dir, 'token');
  await writeFile(tokenFile, `${RW} rw\n${RO} ro\n`, { mode: 0o600 });
  const config = resolveConfig(
    {},
    {
      node: 'gw1',
      store: `sqlite:${join(tmp.dir, 'state.db')}`,
      listen: '127.0.0.1:0',
      tokenFile,
      resyncSeconds: 30,
      logLevel: 'silent',
    },
    'test',
  );
  agent = await startAgent(config, { dataplane });
  const c = agent.control;
  await c.createPool({ name: 'public', gateway: 'gw1', entries: ['203.0.113.0/28'] });
  await c.allocate({ address: FIP });
  await c.associate(FIP, { target: '10.0.0.11' });
  await waitFor('ACTIVE', async () => (await c.getFip(FIP)).status.state === 'ACTIVE');
  await agent.reconciler.settled();
});

after(async () => {
  await agent?.stop();
  await tmp.remove();
});

describe('/metrics (fake dataplane)', () => {
  it('answers a read-only token, and refuses without one', async () => {
    assert.equal((await scrape(undefined)).statusCode, 401);
    const res = await scrape(RO);
    assert.equal(res.statusCode, 200);
    assert.match(String(res.headers['content-type']), /^text\/plain; version=0\.0\.4/);
  });

  it('counts the packets and bytes sent to a FIP when scraped, not before', async () => {
    const before = parse((await scrape(RO)).body).samples;
    assert.equal(value(before, 'ipferry_fip_bytes_total', { fip: FIP }), 0);
    dataplane.countPacket(FIP, 1400);
    dataplane.countPacket(FIP, 600);
    const { samples } = parse((await scrape(RO)).body);
    assert.equal(value(samples, 'ipferry_fip_packets_total', { fip: FIP }), 2);
    assert.equal(value(samples, 'ipferry_fip_bytes_total', { fip: FIP }), 2000);
  });

  it('gives each FIP one series per state, 1 for the state it reported', async () => {
    const { samples } = parse((await scrape(RO)).body);
    const states = samples.filter((s) => s.name === 'ipferry_fip_state' && s.labels['fip'] === FIP);
    assert.deepEqual(states.map((s) => [s.labels['state'], s.value]).sort(), [
      ['ACTIVE', 1],
      ['DOWN', 0],
      ['ERROR', 0],
      ['UNREACHABLE', 0],
    ]);
  });

  it('records passes and applies, and no revision lag once settled', async () => {
    const { samples, types } = parse((await scrape(RO)).body);
    assert.equal(types.get('ipferry_reconcile_pass_duration_seconds'), 'histogram');
    assert.equal(types.get('ipferry_reconcile_apply_duration_seconds'), 'histogram');
    assert.ok(value(samples, 'ipferry_reconcile_pass_duration_seconds_count')! >= 1);
    assert.ok(value(samples, 'ipferry_reconcile_apply_duration_seconds_count')! >= 1);
    assert.ok(value(samples, 'ipferry_applied_elements_total', { change: 'add' })! >= 1);
    assert.equal(value(samples, 'ipferry_apply_errors_total'), 0);
    assert.equal(value(samples, 'ipferry_reconcile_failures_total'), 0);
    assert.equal(value(samples, 'ipferry_store_watch_restarts_total'), 0);
    assert.equal(value(samples, 'ipferry_store_revision_lag'), 0);
    const applied = value(samples, 'ipferry_applied_revision')!;
    assert.ok(applied > 0 && applied <= value(samples, 'ipferry_store_revision')!);
    assert.equal(value(samples, 'ipferry_agent_info', { node: 'gw1', dataplane: 'fake' }), 1);
    assert.ok(value(samples, 'process_cpu_seconds_total') !== undefined, 'default metrics');
  });

  it('names every metric by the conventions: HELP, TYPE, _total counters, base units', async () => {
    const { samples, types, helps } = parse((await scrape(RO)).body);
    const ours = [...types].filter(([name]) => name.startsWith('ipferry_'));
    assert.ok(ours.length >= 15, `${ours.length} ipferry_ families`);
    for (const [name, type] of ours) {
      assert.ok(helps.has(name), `${name} has HELP`);
      if (type === 'counter') assert.match(name, /_total$/, `${name} is a counter`);
      else assert.doesNotMatch(name, /_total$/, `${name} (${type}) is no counter`);
      assert.doesNotMatch(name, /_(ms|milliseconds|kb|mb)(_|$)/, `${name} in base units`);
    }
    const allowed = new Set([
      'fip',
      'state',
      'peer',
      'change',
      'le',
      'node',
      'version',
      'dataplane',
    ]);
    for (const s of samples.filter((x) => x.name.startsWith('ipferry_')))
      for (const label of Object.keys(s.labels))
        assert.ok(allowed.has(label), `${s.name} has the bounded label ${label}`);
  });

  it('is accepted by promtool check metrics', async (t) => {
    if (spawnSync('promtool', ['--version']).status !== 0) {
      t.skip('promtool (Debian: prometheus) is not installed');
      return;
    }
    const body = (await scrape(RO)).body;
    const result = await new Promise<{ code: number | null; out: string }>((resolve) => {
      const child = execFile('promtool', ['check', 'metrics'], (error, stdout, stderr) =>
        resolve({ code: error ? (error.code as number) : 0, out: stdout + stderr }),
      );
      child.stdin!.end(body);
    });
    assert.equal(result.code, 0, result.out);
  });
});

describe('the metrics documented', () => {
  it('docs/metrics.md lists every ipferry metric the agent serves, and no other', async () => {
    const { types } = parse((await scrape(RO)).body);
    const served = [...types.keys()].filter((n) => n.startsWith('ipferry_')).sort();
    const doc = await readFile(new URL('../../docs/metrics.md', import.meta.url), 'utf8');
    const listed = [...doc.matchAll(/^\| `(ipferry_[a-z_]+)` +\| (\w+)/gm)];
    assert.deepEqual(listed.map((m) => m[1]).sort(), served);
    for (const [, name, type] of listed) assert.equal(type, types.get(name!), `${name}'s type`);
  });

  it("the Grafana dashboard's queries name only metrics the agent serves", async () => {
    const { types } = parse((await scrape(RO)).body);
    const dashboard = await readFile(
      new URL('../../docs/grafana-dashboard.json', import.meta.url),
      'utf8',
    );
    const used = new Set(
      [...dashboard.matchAll(/\b((?:ipferry|process)_[a-z_]+)/g)].map((m) =>
        m[1]!.replace(/_(bucket|count|sum)$/, ''),
      ),
    );
    assert.ok(used.size >= 15, [...used].join(' '));
    for (const name of used) assert.ok(types.has(name), `${name} is served`);
  });
});

describe('AgentMetrics: tunnel peers', () => {
  it('names each peer by its node, with handshake age, bytes, path MTU and probe RTT', async () => {
    const metrics = new AgentMetrics({ node: 'gw1', version: '0', dataplane: 'fake' });
    const tunnel: TunnelHealth = {
      name: 'ipf0',
      checkedAt: new Date().toISOString(),
      peers: [
        { publicKey: 'KEY-HOME', handshakeAgeSeconds: 12, rxBytes: 5000, txBytes: 7000 },
        { publicKey: 'KEY-UNKNOWN' },
      ],
    };
    metrics.attach({
      tunnelHealth: () => Promise.resolve(tunnel),
      probes: () =>
        new Map([
          ['KEY-HOME', { alive: true, checkedAt: '', rttMs: 2.5, pathMtu: 1380, tunnelMtu: 1420 }],
        ]),
      peerNodes: () => new Map([['KEY-HOME', 'home']]),
      fipStates: () => new Map(),
      revisions: () => ({ store: 7, applied: 5, wanted: 6 }),
      meshReport: () => ({
        members: 3,
        hold: { keeping: ['fd00::1'], maxChange: 1, sinceRevision: 4 },
      }),
      tunnelIncidents: () => ({ lost: 2, restored: 1 }),
    });
    const { samples } = parse((await metrics.exposition()).body);
    const home = { peer: 'home' };
    assert.equal(value(samples, 'ipferry_tunnel_handshake_age_seconds', home), 12);
    assert.equal(value(samples, 'ipferry_tunnel_receive_bytes_total', home), 5000);
    assert.equal(value(samples, 'ipferry_tunnel_transmit_bytes_total', home), 7000);
    assert.equal(value(samples, 'ipferry_tunnel_path_mtu_bytes', home), 1380);
    assert.equal(value(samples, 'ipferry_tunnel_probe_rtt_seconds', home), 0.0025);
    assert.equal(value(samples, 'ipferry_tunnel_peer_up', home), 1);
    assert.equal(
      value(samples, 'ipferry_tunnel_handshake_age_seconds', { peer: 'KEY-UNKNOWN' }),
      undefined,
      'no handshake yet: no sample',
    );
    assert.equal(value(samples, 'ipferry_store_revision_lag'), 1);
    assert.equal(value(samples, 'ipferry_mesh_members'), 3);
    assert.equal(value(samples, 'ipferry_mesh_held_members'), 1);
    assert.equal(value(samples, 'ipferry_tunnel_losses_total'), 2);
    assert.equal(value(samples, 'ipferry_tunnel_restores_total'), 1);
  });

  it('gives a tinc tunnel its interface bytes without a peer label, and reachability as up', async () => {
    const metrics = new AgentMetrics({ node: 'gw1', version: '0', dataplane: 'fake' });
    metrics.attach({
      tunnelHealth: () =>
        Promise.resolve({
          name: 'ipf0',
          checkedAt: new Date().toISOString(),
          driver: 'tinc',
          rxBytes: 300,
          txBytes: 400,
          peers: [
            { publicKey: 'TINC-HOME', reachable: true },
            { publicKey: 'TINC-OLD', reachable: false },
          ],
        }),
      probes: () => new Map(),
      peerNodes: () => new Map([['TINC-HOME', 'home']]),
      fipStates: () => new Map(),
      revisions: () => ({ store: 1, wanted: 0 }),
      meshReport: () => undefined,
      tunnelIncidents: () => ({ lost: 0, restored: 0 }),
    });
    const { body } = await metrics.exposition();
    const { samples } = parse(body);
    assert.match(body, /^ipferry_tunnel_receive_bytes_total 300$/m);
    assert.match(body, /^ipferry_tunnel_transmit_bytes_total 400$/m);
    assert.equal(value(samples, 'ipferry_tunnel_peer_up', { peer: 'home' }), 1);
    assert.equal(value(samples, 'ipferry_tunnel_peer_up', { peer: 'TINC-OLD' }), 0);
    assert.equal(value(samples, 'ipferry_applied_revision'), 0, 'nothing applied yet');
    assert.equal(value(samples, 'ipferry_mesh_members'), 0, 'no mesh');
  });
});
