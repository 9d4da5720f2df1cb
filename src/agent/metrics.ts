/**
 * The agent's Prometheus metrics (docs/metrics.md), served at /metrics. What the kernel counts
 * (per-FIP packets and bytes, the tunnel's handshakes and bytes) is read when Prometheus
 * scrapes, once per scrape, not on a timer of its own: an agent nobody scrapes reads nothing.
 * What the loops measure (pass and apply durations, errors, watch restarts) they record here as
 * it happens. Labels are bounded: one series per FIP address and per tunnel peer, never per
 * connection or per request.
 */
import {
  collectDefaultMetrics,
  Counter,
  Gauge,
  Histogram,
  Registry,
  type CounterConfiguration,
  type GaugeConfiguration,
} from 'prom-client';
import type { FipState, MeshNodeReport, PathProbe, TunnelHealth } from '../core/model.js';
import type { FipCounter } from '../dataplane/dataplane.js';

/** Every state a FIP may be in: each is a series of its own (1 for the current one). */
export const FIP_STATES: readonly FipState[] = ['ACTIVE', 'DOWN', 'UNREACHABLE', 'ERROR'];

/** What the agent's parts tell the metrics when Prometheus scrapes. */
export interface MetricSources {
  /** Per-FIP packets and bytes (the `counter` elements); absent: the dataplane counts none. */
  fipCounters?(): Promise<Map<string, FipCounter>>;
  tunnelHealth(): Promise<TunnelHealth | undefined>;
  /** Path probes per peer public key. */
  probes(): ReadonlyMap<string, PathProbe>;
  /** Peer public key → node name, for the `peer` label. */
  peerNodes(): ReadonlyMap<string, string>;
  /** The state this agent last reported for each FIP it realises. */
  fipStates(): ReadonlyMap<string, FipState>;
  revisions(): RevisionView;
  meshReport(): MeshNodeReport | undefined;
  /** How often the tunnel watch found the tunnel lost, and restored it. */
  tunnelIncidents(): { readonly lost: number; readonly restored: number };
}

export interface RevisionView {
  /** The latest store revision the agent's copy of the desired state follows. */
  readonly store: number;
  /** The revision the latest whole pass realised; undefined before the first. */
  readonly applied?: number;
  /** The latest revision holding a change meant to wake the agent (its own reports do not). */
  readonly wanted: number;
}

/** Buckets of the pass and apply histograms, in seconds: 1 ms to 10 s. */
const DURATION_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

const MISNAMED_DEFAULTS = [
  'nodejs_active_handles_total',
  'nodejs_active_requests_total',
  'nodejs_active_resources_total',
];

export class AgentMetrics {
  readonly registry = new Registry();
  readonly passDuration: Histogram;
  readonly applyDuration: Histogram;
  readonly passFailures: Counter;
  readonly applyErrors: Counter;
  readonly appliedElements: Counter<'change'>;
  readonly watchRestarts: Counter;
  private sources?: MetricSources;
  /** What the kernel said for the scrape under way (read once, for every metric of it). */
  private scrape?: { counters: Map<string, FipCounter>; tunnel?: TunnelHealth };
  private reading?: Promise<void>;

  constructor(info: {
    readonly node: string;
    readonly version: string;
    readonly dataplane: string;
  }) {
    const r = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    // Gauges named like counters, which promtool's lint refuses; the same counts stay, by type,
    // in nodejs_active_handles and nodejs_active_requests.
    for (const misnamed of MISNAMED_DEFAULTS) this.registry.removeSingleMetric(misnamed);
    new Gauge({
      name: 'ipferry_agent_info',
      help: 'The agent: its node, version and dataplane (always 1).',
      labelNames: ['node', 'version', 'dataplane'],
      registers: r,
    }).set(info, 1);
    this.passDuration = new Histogram({
      name: 'ipferry_reconcile_pass_duration_seconds',
      help: 'Duration of reconcile passes: read, compile, diff, apply, report.',
      buckets: DURATION_BUCKETS,
      registers: r,
    });
    this.applyDuration = new Histogram({
      name: 'ipferry_reconcile_apply_duration_seconds',
      help: 'Duration of applying a non-empty diff to the dataplane.',
      buckets: DURATION_BUCKETS,
      registers: r,
    });
    this.passFailures = new Counter({
      name: 'ipferry_reconcile_failures_total',
      help: 'Reconcile passes that failed as a whole (store or dataplane unreachable); retried.',
      registers: r,
    });
    this.applyErrors = new Counter({
      name: 'ipferry_apply_errors_total',
      help: 'Floating IPs whose part of a diff the dataplane refused (they went ERROR).',
      registers: r,
    });
    this.appliedElements = new Counter({
      name: 'ipferry_applied_elements_total',
      help: 'Dataplane elements changed by applied diffs, by change.',
      labelNames: ['change'],
      registers: r,
    });
    this.watchRestarts = new Counter({
      name: 'ipferry_store_watch_restarts_total',
      help: "Times the store's watch ended (compacted, lost) and the desired state was listed again.",
      registers: r,
    });
    this.scraped();
  }

  /** The agent's parts, once they exist: until then only what the loops record is served. */
  attach(sources: MetricSources): void {
    this.sources = sources;
  }

  /** The exposition in Prometheus' text format, with what the kernel counts now. */
  async exposition(): Promise<{ contentType: string; body: string }> {
    await this.read();
    try {
      return { contentType: this.registry.contentType, body: await this.registry.metrics() };
    } finally {
      this.scrape = undefined;
    }
  }

  /** Reads the kernel's counters once for concurrent scrapes; a failed read serves none. */
  private async read(): Promise<void> {
    const s = this.sources;
    if (!s) return;
    this.reading ??= (async () => {
      const [counters, tunnel] = await Promise.all([
        s.fipCounters?.().catch(() => new Map<string, FipCounter>()) ?? new Map(),
        s.tunnelHealth().catch(() => undefined),
      ]);
      this.scrape = { counters, ...(tunnel ? { tunnel } : {}) };
    })().finally(() => {
      this.reading = undefined;
    });
    await this.reading;
  }

  /** The metrics whose values are taken from the agent's parts at scrape time. */
  private scraped(): void {
    const fip = ['fip'] as const;
    this.counter(
      'ipferry_fip_packets_total',
      'Packets sent to the floating IP since its association.',
      fip,
      (set) => {
        for (const [address, c] of this.scrape?.counters ?? []) set({ fip: address }, c.packets);
      },
    );
    this.counter(
      'ipferry_fip_bytes_total',
      'Bytes sent to the floating IP since its association.',
      fip,
      (set) => {
        for (const [address, c] of this.scrape?.counters ?? []) set({ fip: address }, c.bytes);
      },
    );
    this.gauge(
      'ipferry_fip_state',
      'State this agent reported for the floating IP: 1 for its state, 0 for the others.',
      ['fip', 'state'],
      (set) => {
        for (const [address, current] of this.sources?.fipStates() ?? [])
          for (const state of FIP_STATES) set({ fip: address, state }, state === current ? 1 : 0);
      },
    );
    this.peerMetrics();
    this.gauge('ipferry_store_revision', 'Latest store revision the agent follows.', [], (set) => {
      const v = this.sources?.revisions();
      if (v) set({}, v.store);
    });
    this.gauge(
      'ipferry_applied_revision',
      'Store revision the latest whole reconcile pass realised.',
      [],
      (set) => {
        const applied = this.sources?.revisions().applied;
        if (applied !== undefined) set({}, applied);
      },
    );
    this.gauge(
      'ipferry_store_revision_lag',
      'Revisions of desired state not yet realised: the latest change meant for this node minus the revision applied (0 when up to date).',
      [],
      (set) => {
        const v = this.sources?.revisions();
        if (v) set({}, Math.max(0, v.wanted - (v.applied ?? 0)));
      },
    );
    this.gauge(
      'ipferry_mesh_members',
      'Members of the mesh as this node applies it.',
      [],
      (set) => {
        const members = this.sources?.meshReport()?.members;
        if (members !== undefined) set({}, members);
      },
    );
    this.gauge(
      'ipferry_mesh_held_members',
      'Members the mesh keeps although they left (a hold), 0 without a hold.',
      [],
      (set) => {
        const report = this.sources?.meshReport();
        if (report) set({}, report.hold?.keeping.length ?? 0);
      },
    );
    this.counter(
      'ipferry_tunnel_losses_total',
      "Times the tunnel's device or daemon was found lost.",
      [],
      (set) => {
        const n = this.sources?.tunnelIncidents();
        if (n) set({}, n.lost);
      },
    );
    this.counter(
      'ipferry_tunnel_restores_total',
      'Times a lost tunnel was restored.',
      [],
      (set) => {
        const n = this.sources?.tunnelIncidents();
        if (n) set({}, n.restored);
      },
    );
  }

  /** Per tunnel peer: handshake, bytes, and what the path probes found. */
  private peerMetrics(): void {
    const peer = ['peer'] as const;
    const each =
      (
        pick: (
          p: TunnelHealth['peers'][number],
          probe: PathProbe | undefined,
        ) => number | undefined,
      ) =>
      (set: (labels: { peer: string }, v: number) => void) => {
        const tunnel = this.scrape?.tunnel;
        if (!tunnel) return;
        const probes = this.sources?.probes();
        const nodes = this.sources?.peerNodes();
        for (const p of tunnel.peers) {
          const v = pick(p, probes?.get(p.publicKey));
          if (v !== undefined) set({ peer: nodes?.get(p.publicKey) ?? p.node ?? p.publicKey }, v);
        }
      };
    this.gauge(
      'ipferry_tunnel_handshake_age_seconds',
      'Seconds since the latest WireGuard handshake with the peer.',
      peer,
      each((p) => p.handshakeAgeSeconds),
    );
    this.gauge(
      'ipferry_tunnel_peer_up',
      'Whether the peer answers through the tunnel (path probes; tinc: its daemon reaches it): 1 or 0.',
      peer,
      each((p, probe) =>
        probe ? Number(probe.alive) : p.reachable !== undefined ? Number(p.reachable) : undefined,
      ),
    );
    this.gauge(
      'ipferry_tunnel_path_mtu_bytes',
      "Largest packet the path to the peer carries: the probes' finding, else the tunnel's MTU.",
      peer,
      each((_, probe) => probe?.pathMtu ?? probe?.tunnelMtu),
    );
    this.gauge(
      'ipferry_tunnel_probe_rtt_seconds',
      'Round trip of the latest answered path probe to the peer.',
      peer,
      each((_, probe) => (probe?.rttMs !== undefined ? probe.rttMs / 1000 : undefined)),
    );
    // Per peer from WireGuard; a driver that counts only its interface (tinc) gives one series
    // without a peer label.
    const bytes = (name: string, help: string, key: 'rxBytes' | 'txBytes') =>
      this.counter(name, help, peer, (set) => {
        const tunnel = this.scrape?.tunnel;
        if (!tunnel) return;
        const perPeer = each((p) => p[key]);
        perPeer(set);
        const total = tunnel[key];
        if (total !== undefined) set({}, total);
      });
    bytes(
      'ipferry_tunnel_receive_bytes_total',
      'Bytes received through the tunnel from the peer.',
      'rxBytes',
    );
    bytes(
      'ipferry_tunnel_transmit_bytes_total',
      'Bytes sent through the tunnel to the peer.',
      'txBytes',
    );
  }

  /** A counter whose values are whatever the kernel or a loop counts when scraped. */
  private counter<L extends string>(
    name: string,
    help: string,
    labelNames: readonly L[],
    fill: (set: (labels: Partial<Record<L, string>>, value: number) => void) => void,
  ): void {
    const config: CounterConfiguration<L> = {
      name,
      help,
      labelNames,
      registers: [this.registry],
      collect() {
        this.reset();
        fill((labels, value) => this.inc(labels as never, value));
      },
    };
    new Counter(config);
  }

  private gauge<L extends string>(
    name: string,
    help: string,
    labelNames: readonly L[],
    fill: (set: (labels: Partial<Record<L, string>>, value: number) => void) => void,
  ): void {
    const config: GaugeConfiguration<L> = {
      name,
      help,
      labelNames,
      registers: [this.registry],
      collect() {
        this.reset();
        fill((labels, value) => this.set(labels as never, value));
      },
    };
    new Gauge(config);
  }
}
