/**
 * A real Prometheus (Debian's `prometheus`) scraping a lab gateway's agent: its own process on
 * 127.0.0.1 of this machine, where the lab's agents serve their APIs, with a read-only token in
 * a credentials file as an operator would give it, scraping every second. Traffic sent through a
 * floating IP from the lab's outside client must show in the FIP's byte counter as Prometheus'
 * HTTP API answers it. Prometheus is stopped by pid and its data removed, also when a test fails.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { rmSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { ApiClient } from '../../src/client/api-client.js';
import { ExitCleanup } from '../../src/lab/exit-cleanup.js';
import { LabAgents } from '../../src/lab/agents.js';
import { freePort } from '../../src/lab/ports.js';
import { GATEWAY_LAN as L, gatewayLan } from '../../src/lab/scenarios.js';
import { Lab } from '../../src/lab/topology.js';
import { ensureBuilt } from '../support/build.js';
import { tempDir, waitFor } from '../support/helpers.js';

const FIP = '203.0.113.10';
const RW = 'prometheus-lab-rw-0123456789abcdef';
const RO = 'prometheus-lab-ro-0123456789abcdef';
/** Pings of 1,000 bytes of payload: 1,028-byte IPv4 packets, each counted whole. */
const PINGS = 5;
const PING_BYTES = 1028;
/** Scrapes come every second; a run sharing the CPUs may take much longer. */
const SCRAPE_WAIT_MS = 60_000;

/** Prometheus on loopback, killed by pid and its directory removed (on exit and signals too). */
class Prometheus {
  static readonly #live = new ExitCleanup<Prometheus>();
  #output = '';

  private constructor(
    readonly proc: ChildProcess,
    readonly url: string,
    readonly dir: string,
  ) {
    proc.stdout?.on(
      'data',
      (d: Buffer) => (this.#output = (this.#output + d.toString()).slice(-4000)),
    );
    proc.stderr?.on(
      'data',
      (d: Buffer) => (this.#output = (this.#output + d.toString()).slice(-4000)),
    );
    Prometheus.#live.track(this);
  }

  /** Starts it scraping `target` (host:port) every second with the token in `tokenFile`. */
  static async start(dir: string, target: string, tokenFile: string): Promise<Prometheus> {
    await mkdir(dir, { recursive: true });
    const config = join(dir, 'prometheus.yml');
    await writeFile(
      config,
      [
        'global:',
        '  scrape_interval: 1s',
        '  scrape_timeout: 1s',
        'scrape_configs:',
        '  - job_name: ipferry',
        '    authorization:',
        `      credentials_file: ${tokenFile}`,
        '    static_configs:',
        `      - targets: ['${target}']`,
        '',
      ].join('\n'),
    );
    const port = await freePort();
    const proc = spawn(
      'prometheus',
      [
        `--config.file=${config}`,
        `--storage.tsdb.path=${join(dir, 'data')}`,
        `--web.listen-address=127.0.0.1:${port}`,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const p = new Prometheus(proc, `http://127.0.0.1:${port}`, dir);
    const spawnError = new Promise<Error>((resolve) => proc.once('error', resolve));
    const ready = waitFor(
      'Prometheus ready',
      async () => {
        if (proc.exitCode !== null) throw new Error(`prometheus exited: ${p.output}`);
        const res = await fetch(`${p.url}/-/ready`).catch(() => undefined);
        return res?.ok === true;
      },
      30_000,
    );
    const first = await Promise.race([ready.then(() => undefined), spawnError]);
    if (first instanceof Error) {
      p.destroySync();
      throw new Error(
        `prometheus did not start (${first.message}): install Debian's prometheus (scripts/setup.sh)`,
      );
    }
    return p;
  }

  get output(): string {
    return this.#output;
  }

  /** An instant PromQL query over the HTTP API: each series' labels and value. */
  async query(promql: string): Promise<{ metric: Record<string, string>; value: number }[]> {
    const res = await fetch(`${this.url}/api/v1/query?query=${encodeURIComponent(promql)}`);
    const body = (await res.json()) as {
      status: string;
      error?: string;
      data?: { result: { metric: Record<string, string>; value: [number, string] }[] };
    };
    if (body.status !== 'success') throw new Error(`query ${promql}: ${body.error}`);
    return (body.data?.result ?? []).map((r) => ({ metric: r.metric, value: Number(r.value[1]) }));
  }

  /** The one value `promql` answers, or undefined while it answers none. */
  async value(promql: string): Promise<number | undefined> {
    const result = await this.query(promql);
    assert.ok(result.length <= 1, `${promql} answers one series: ${JSON.stringify(result)}`);
    return result[0]?.value;
  }

  async stop(): Promise<void> {
    if (this.proc.exitCode === null && this.proc.signalCode === null) {
      const exited = new Promise<void>((resolve) => this.proc.once('exit', () => resolve()));
      this.proc.kill('SIGKILL');
      await exited;
    }
    this.destroySync();
  }

  destroySync(): void {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill('SIGKILL');
    rmSync(this.dir, { recursive: true, force: true });
    Prometheus.#live.untrack(this);
  }
}

/**
 * Polls Prometheus (every 250 ms: it changes once a scrape) until `probe` gives a value that
 * `ok` accepts; resolves with it. Values may be 0, which waitFor alone takes for "not yet".
 */
async function eventually<T>(
  what: string,
  probe: () => Promise<T | undefined>,
  ok: (v: T) => boolean = () => true,
): Promise<T> {
  const found = await waitFor(
    what,
    async () => {
      const v = await probe();
      if (v !== undefined && ok(v)) return { v };
      await sleep(250);
      return false;
    },
    SCRAPE_WAIT_MS,
  );
  return found.v;
}

let lab: Lab | undefined;
let tmp: { dir: string; remove: () => Promise<void> };
let agents: LabAgents | undefined;
let prometheus: Prometheus | undefined;
let api: ApiClient;

before(async () => {
  await ensureBuilt();
  tmp = await tempDir('prometheus');
  lab = await Lab.create(gatewayLan());
  agents = new LabAgents({ lab, dir: tmp.dir });
  // The token file as an operator would write it: one token to manage, a read-only one to scrape.
  await mkdir(join(tmp.dir, 'gw'), { recursive: true, mode: 0o700 });
  await writeFile(agents.tokenFile('gw'), `${RW} rw\n${RO} ro\n`, { mode: 0o600 });
  const { agent } = await agents.startHub('gw');
  api = new ApiClient({ server: agent.url, token: RW });
  await api.createPool({
    name: 'public',
    gateway: 'gw',
    entries: ['203.0.113.0/28'],
    shared: [L.gw.uplink.v4],
  });
  const scrapeToken = join(tmp.dir, 'scrape-token');
  await writeFile(scrapeToken, `${RO}\n`, { mode: 0o600 });
  prometheus = await Prometheus.start(
    join(tmp.dir, 'prometheus'),
    `127.0.0.1:${agent.port}`,
    scrapeToken,
  );
});

after(async () => {
  await prometheus?.stop();
  await agents?.teardown();
  await tmp?.remove();
});

describe('a real Prometheus scraping an agent', () => {
  it('scrapes it with a read-only token', async () => {
    await eventually(
      'a successful scrape',
      () => prometheus!.value('up{job="ipferry"}'),
      (up) => up === 1,
    );
    const info = await prometheus!.query('ipferry_agent_info');
    assert.equal(info[0]?.metric['node'], 'gw');
    assert.equal(info[0]?.metric['dataplane'], 'linux');
  });

  it('answers a per-FIP byte counter that grows with the traffic sent through the FIP', async () => {
    await api.allocate({ address: FIP });
    await api.associate(FIP, { target: L.be1.v4 });
    await waitFor('the FIP ACTIVE', async () => {
      const f = await api.getFip(FIP);
      return f.status.state === 'ACTIVE' && f.status.revision === f.revision;
    });
    const bytes = `ipferry_fip_bytes_total{job="ipferry",fip="${FIP}"}`;
    const before = await eventually('the FIP counter in Prometheus', () =>
      prometheus!.value(bytes),
    );
    await lab!
      .exec('client', ['ping', '-n', '-q', '-c', String(PINGS), '-i', '0.2', '-s', '1000', FIP])
      .catch(() => undefined); // the echo replies are not what is measured: the packets sent are
    const grown = await eventually(
      `${bytes} grown by ${PINGS * PING_BYTES} bytes`,
      () => prometheus!.value(bytes),
      (now) => now >= before + PINGS * PING_BYTES,
    );
    assert.ok(grown >= before + PINGS * PING_BYTES, `${before} → ${grown}`);
    const packets = await prometheus!.value(`ipferry_fip_packets_total{fip="${FIP}"}`);
    assert.ok(packets !== undefined && packets >= PINGS, `packets: ${packets}`);
    await eventually(
      'the FIP ACTIVE in Prometheus',
      () => prometheus!.value(`ipferry_fip_state{fip="${FIP}",state="ACTIVE"}`),
      (active) => active === 1,
    );
    // The agent's own health reports wake it too: the lag may be 1 for the length of a pass.
    await eventually(
      'no revision lag',
      () => prometheus!.value('ipferry_store_revision_lag'),
      (lag) => lag === 0,
    );
    const applies = await prometheus!.value('ipferry_reconcile_apply_duration_seconds_count');
    assert.ok(applies !== undefined && applies >= 1, `apply durations: ${applies}`);
  });

  it('runs every query of the Grafana dashboard, and each answers for this agent', async () => {
    const dashboard = JSON.parse(
      await readFile(new URL('../../docs/grafana-dashboard.json', import.meta.url), 'utf8'),
    ) as { panels: { title: string; targets?: { expr: string }[] }[] };
    const queries = dashboard.panels.flatMap((p) =>
      (p.targets ?? []).map((t) => ({
        panel: p.title,
        // Grafana's variables as it would fill them in: every agent, a rate window of a minute.
        expr: t.expr
          .replaceAll('$instance', '.*')
          .replaceAll('$job', '.*')
          .replaceAll('$__rate_interval', '1m'),
      })),
    );
    assert.ok(queries.length >= 20, `${queries.length} queries`);
    for (const q of queries) {
      // Throws on a query Prometheus cannot parse or run.
      await prometheus!.query(q.expr).catch((e: unknown) => {
        throw new Error(`the "${q.panel}" panel: ${(e as Error).message}`);
      });
    }
    const traffic = queries.find((q) => q.expr.includes('ipferry_fip_bytes_total'))!;
    const series = await prometheus!.query(traffic.expr);
    assert.ok(
      series.some((s) => s.metric['fip'] === FIP),
      `the traffic panel shows ${FIP}: ${JSON.stringify(series)}`,
    );
  });
});
