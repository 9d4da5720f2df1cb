/**
 * Apply time against the number of FIPs: the first full apply, then moving one FIP, for
 * ipferry's Linux dataplane (compiled intent → one `nft -f` transaction, plus the conntrack
 * cleanup of the moved FIP) and for the baseline, IP Floater-style chains per IP loaded with
 * iptables-restore (see floater.ts). Each measurement runs in a fresh one-namespace lab, in a
 * worker process inside that namespace (apply-worker.ts), as an agent runs on its host.
 */
import { Lab } from '../src/lab/topology.js';
import type { BenchModule, BenchOptions, BenchResult } from './types.js';
import type { WorkerStep } from './apply-worker.js';
import { median } from './stats.js';
import { benchLabPrefix, benchScript, runWorker } from './worker.js';
import { formatNumber } from './report.js';

const GROUP = 'Apply time';
const SIZES = { full: [1_000, 10_000, 100_000], quick: [100, 1_000] };
/** Moves per size: each is a whole reconcile at 100,000 FIPs, so fewer there. */
const moves = (quick: boolean, n: number): number => (quick ? 2 : n >= 100_000 ? 3 : 5);
/** iptables-restore of 100,000 FIPs takes minutes: a deadline keeps the run within budget. */
const DEADLINE_S = { ipferry: 180, iptables: 240 };
const MOVE_TARGET_MS = 50;
const FULL_TARGET_MS: Record<number, number> = { 10_000: 1_000, 100_000: 10_000 };

/** Which iptables the baseline uses: legacy (IP Floater's era, and the faster one) or nft. */
export function iptablesBackend(): 'legacy' | 'nft' {
  return process.env.IPF_BENCH_IPTABLES === 'nft' ? 'nft' : 'legacy';
}

interface Measured {
  readonly full?: WorkerStep;
  readonly moves: WorkerStep[];
  readonly check?: WorkerStep;
  readonly diag?: WorkerStep;
  readonly timedOut: boolean;
  readonly seconds: number;
}

async function measure(
  impl: 'ipferry' | 'iptables',
  n: number,
  options: BenchOptions,
): Promise<Measured> {
  const lab = await Lab.create({
    prefix: benchLabPrefix(),
    hosts: [{ name: 'gw', router: true }],
    links: [],
  });
  try {
    const argv = benchScript('apply-worker.ts', [
      '--impl',
      impl,
      '--fips',
      String(n),
      '--moves',
      String(moves(options.quick, n)),
      '--iptables',
      iptablesBackend(),
    ]);
    const run = await runWorker<WorkerStep>(lab, 'gw', argv, DEADLINE_S[impl] * 1000);
    if (!run.timedOut && run.code !== 0) {
      throw new Error(`apply-worker ${impl} ${n} failed (exit ${run.code}): ${run.stderr}`);
    }
    const check = run.lines.find((l) => l.step === 'check');
    if (check && !check.ok) {
      throw new Error(
        `${impl} ${n}: the last FIP does not point where it was moved: ${check.detail}`,
      );
    }
    return {
      full: run.lines.find((l) => l.step === 'full'),
      moves: run.lines.filter((l) => l.step === 'move'),
      check,
      diag: run.lines.find((l) => l.step === 'diag'),
      timedOut: run.timedOut,
      seconds: run.seconds,
    };
  } finally {
    await lab.destroy();
  }
}

const ms = (v: number | undefined): string => `${formatNumber(v ?? Number.NaN)} ms`;

function baselineLabel(): string {
  return `iptables-${iptablesBackend()}-restore, chains per IP`;
}

/** A figure for a step the baseline did not reach before its deadline: at least that long. */
function baselineValue(
  step: number | undefined,
  m: Measured,
): { value: number; stopped: boolean } | undefined {
  if (step !== undefined) return { value: step, stopped: false };
  if (m.timedOut) return { value: DEADLINE_S.iptables * 1000, stopped: true };
  return undefined;
}

function fullResult(n: number, ours: Measured, base: Measured): BenchResult {
  const value = ours.full?.ms ?? Number.NaN;
  const b = baselineValue(base.full?.ms, base);
  const limit = FULL_TARGET_MS[n];
  const notes: string[] = [];
  if (ours.full?.compileMs !== undefined) {
    notes.push(`compile + diff before it: ${ms(ours.full.compileMs)}`);
  }
  if (b?.stopped) notes.push(`baseline stopped at its ${DEADLINE_S.iptables} s deadline: at least`);
  if (limit !== undefined && !(value < limit)) {
    notes.push(
      `missed: one nft transaction of ${formatNumber(ours.full?.elements ?? 0)} elements ` +
        '(per FIP a dnat and an snat map element and an element of the counting set)',
    );
  }
  return {
    group: GROUP,
    name: `apply.full.fips=${n}`,
    label: `First full apply, ${n.toLocaleString('en-US')} FIPs`,
    value,
    unit: 'ms',
    better: 'lower',
    ...(b ? { baseline: { label: baselineLabel(), value: b.value } } : {}),
    ...(limit !== undefined
      ? { target: { text: `< ${limit.toLocaleString('en-US')} ms`, met: value < limit } }
      : {}),
    ...(notes.length > 0 ? { note: notes.join('; ') } : {}),
    series: { name: 'First full apply (ms)', x: n },
  };
}

/** Why a move took longer than 50 ms, from the worker's own measurements of its parts. */
export function moveReason(n: number, d: WorkerStep | undefined): string {
  if (!d) return 'missed';
  const parts = [`the nft transaction alone took ${ms(d.nftMs)}`];
  const nft = d.nftMs ?? 0;
  const plain = d.plainNftMs ?? 0;
  if (plain > 0 && nft > 2 * plain) {
    parts.push(
      `the same change on a table of ${n.toLocaleString('en-US')} plain map elements and ` +
        `nothing else ${ms(plain)}: something in the table makes nft read more than the ` +
        'elements it changes (as named counters did: nft 1.0.6 reads every stateful object ' +
        'into its cache before any transaction)',
    );
  } else {
    parts.push(
      `${ms(plain)} on a table of ${n.toLocaleString('en-US')} plain map elements and nothing ` +
        'else: mostly starting nft itself',
    );
  }
  parts.push(
    `each of the two \`conntrack -D\` runs (the old target's flows, dnat and snat) took ` +
      `${ms(d.conntrackMs)}: the kernel walks its whole connection table ` +
      `(${(d.buckets ?? 0).toLocaleString('en-US')} buckets, shared by all namespaces) for each`,
  );
  return `missed: ${parts.join('; ')}`;
}

function moveResults(n: number, ours: Measured, base: Measured): BenchResult[] {
  const value = median(ours.moves.map((m) => m.ms ?? Number.NaN));
  const b = baselineValue(
    base.moves.length > 0 ? median(base.moves.map((m) => m.ms ?? Number.NaN)) : undefined,
    base,
  );
  const met = value < MOVE_TARGET_MS;
  const compileMs = median(ours.moves.map((m) => m.compileMs ?? Number.NaN));
  const count = `${ours.moves.length} move${ours.moves.length === 1 ? '' : 's'}`;
  return [
    {
      group: GROUP,
      name: `apply.move.fips=${n}`,
      label: `Move one FIP among ${n.toLocaleString('en-US')} (median of ${count})`,
      value,
      unit: 'ms',
      better: 'lower',
      ...(b ? { baseline: { label: baselineLabel(), value: b.value } } : {}),
      target: { text: `< ${MOVE_TARGET_MS} ms`, met },
      note: [
        met ? '' : moveReason(n, ours.diag),
        b?.stopped ? 'baseline never got to its moves before its deadline' : '',
      ]
        .filter((s) => s !== '')
        .join('; '),
      series: { name: 'Move one FIP (ms)', x: n },
    },
    {
      group: GROUP,
      name: `apply.move.compile.fips=${n}`,
      label: `Agent compile + diff for that move, ${n.toLocaleString('en-US')} FIPs`,
      value: compileMs,
      unit: 'ms',
      better: 'lower',
      note:
        'before the dataplane apply, in the agent: it compiles the whole intent again on every ' +
        'change (reusing the elements of the FIP records that did not change) and diffs it ' +
        'against the last in one merge walk of the two sorted lists, so this still grows with ' +
        'the number of FIPs',
    },
  ];
}

export const dataplaneApply: BenchModule = {
  title: 'Apply time against the number of FIPs',
  budgetSeconds: 200,
  about: [
    'A gateway namespace with N `nat` FIPs (198.18.0.0/15, each to its own target). **ipferry**:',
    'the agent’s own code path — `compile()` of the desired state, `diffIntent()` against the',
    'last intent, `LinuxDataplane.apply()` (one `nft -f` transaction of map and counter elements;',
    'for a move also the `conntrack -D` of the old target’s flows), timed around `apply()`, in a',
    'process inside the namespace as an agent runs. **Baseline**: IP Floater-style rules, three',
    'chains per FIP (prerouting DNAT, output DNAT, postrouting SNAT), each reached by its own jump,',
    'plus an INPUT drop per pool address, loaded with `iptables-restore`; a move rewrites that',
    'FIP’s chains and its POSTROUTING jump with `iptables-restore --noflush` (cheaper than IP',
    'Floater’s own replay of everything). The baseline uses iptables’ legacy backend unless',
    '`IPF_BENCH_IPTABLES=nft` is set (the tables name the one used): IP Floater’s era, and',
    'faster at loading these rule sets than Debian 12’s default nf_tables backend (tried by hand',
    'on this machine: 1.5–3 minutes to load 100,000 FIPs, 40 s for one move among them). The',
    'moved FIP is the last one; every run checks afterwards that the kernel really sends it to',
    'its last target.',
  ].join('\n'),
  async run(options: BenchOptions): Promise<BenchResult[]> {
    const results: BenchResult[] = [];
    for (const n of options.quick ? SIZES.quick : SIZES.full) {
      options.log(`apply: ${n.toLocaleString('en-US')} FIPs, ipferry`);
      const ours = await measure('ipferry', n, options);
      options.log(
        `apply: ${n} ipferry full ${ms(ours.full?.ms)}, move ${ms(median(ours.moves.map((m) => m.ms ?? NaN)))}`,
      );
      if (ours.timedOut || !ours.full) {
        throw new Error(`ipferry apply of ${n} FIPs did not finish in ${DEADLINE_S.ipferry} s`);
      }
      options.log(`apply: ${n.toLocaleString('en-US')} FIPs, ${baselineLabel()}`);
      const base = await measure('iptables', n, options);
      options.log(
        `apply: ${n} baseline full ${base.full ? ms(base.full.ms) : 'not finished'}` +
          `, move ${base.moves.length > 0 ? ms(median(base.moves.map((m) => m.ms ?? NaN))) : '—'}` +
          ` (${base.seconds.toFixed(0)} s)`,
      );
      results.push(fullResult(n, ours, base), ...moveResults(n, ours, base));
    }
    return results;
  },
};
