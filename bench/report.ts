/**
 * The report of a benchmark run, from its results alone (no I/O here, so the tests can feed it
 * synthetic results): `bench/results.json`, the Markdown of `docs/benchmarks.md` and the plot
 * `docs/benchmarks.svg`. Targets are reported as met or missed, never asserted.
 */
import type { BenchResult } from './types.js';

export interface Machine {
  /** CPU model from /proc/cpuinfo. */
  readonly cpu: string;
  readonly cpus: number;
  readonly ramGiB: number;
  /** `uname -r`. */
  readonly kernel: string;
  /** e.g. `Debian 12.11`. */
  readonly os: string;
  /** Versions of the tools measured (`nft`, `iptables`, `iperf3`), as they print them. */
  readonly tools: Readonly<Record<string, string>>;
}

export interface ModuleOutcome {
  readonly name: string;
  readonly title: string;
  readonly seconds: number;
  /** Why the module failed; absent when it ran to the end. */
  readonly error?: string;
  /** What the module measures and how (Markdown), shown above its tables. */
  readonly about?: string;
}

export interface RunMeta {
  /** ISO 8601, when the command started. */
  readonly date: string;
  /** The exact command line that was run. */
  readonly command: string;
  readonly node: string;
  readonly machine: Machine;
  readonly quick: boolean;
  /** Wall time of the whole command (setup included when run through bench/run.sh). */
  readonly totalSeconds: number;
  readonly modules: readonly ModuleOutcome[];
}

/** A figure with the name of the module that measured it. */
export type ModuleResult = BenchResult & { readonly module: string };

export interface Report {
  readonly meta: RunMeta;
  readonly results: readonly ModuleResult[];
}

/** value ÷ baseline, when there is a baseline to divide by. */
export function ratioOf(r: BenchResult): number | undefined {
  if (!r.baseline || r.baseline.value === 0 || !Number.isFinite(r.baseline.value)) return undefined;
  return r.value / r.baseline.value;
}

/**
 * How the value compares to its baseline in words: "12× better", "1.3× worse", "same" (within
 * 3%, below what these measurements can tell apart).
 */
export function verdict(r: BenchResult): string | undefined {
  const ratio = ratioOf(r);
  if (ratio === undefined || ratio <= 0) return undefined;
  const factor = r.better === 'higher' ? ratio : 1 / ratio;
  if (Math.abs(factor - 1) < 0.03) return 'same';
  return factor > 1 ? `${fmtFactor(factor)} better` : `${fmtFactor(1 / factor)} worse`;
}

function fmtFactor(f: number): string {
  if (f >= 10) return `${Math.round(f).toLocaleString('en-US')}×`;
  // Two decimals near 1, where "1.0×" would say nothing.
  return `${f < 2 ? f.toFixed(2) : f.toPrecision(2)}×`;
}

/** A number as a reader wants it: thousands separated, three significant digits for small ones. */
export function formatNumber(value: number): string {
  if (!Number.isFinite(value)) return String(value);
  const abs = Math.abs(value);
  if (abs >= 100) return Math.round(value).toLocaleString('en-US');
  if (abs >= 10) return value.toFixed(1);
  if (abs >= 1) return value.toFixed(2);
  if (abs === 0) return '0';
  return value.toPrecision(2);
}

export function formatValue(value: number, unit: string): string {
  if (unit === '%') return `${formatNumber(value)}%`;
  return unit === '' ? formatNumber(value) : `${formatNumber(value)} ${unit}`;
}

/** bench/results.json: every figure with its ratio, and the run's machine, date and command. */
export function resultsJson(report: Report): string {
  const results = report.results.map((r) => {
    const ratio = ratioOf(r);
    return ratio === undefined ? r : { ...r, ratio: Number(ratio.toPrecision(4)) };
  });
  return JSON.stringify({ ...report.meta, results }, null, 2) + '\n';
}

// Markdown ------------------------------------------------------------------------------------

/** Table cells must not break the row: pipes escaped, lines joined. */
function cell(text: string): string {
  return text.replace(/\|/g, '\\|').replace(/\s*\n\s*/g, ' ');
}

function row(cells: readonly string[]): string {
  return `| ${cells.map(cell).join(' | ')} |`;
}

function fmtDuration(seconds: number): string {
  const s = Math.round(seconds);
  return s >= 60 ? `${Math.floor(s / 60)} min ${s % 60} s` : `${s} s`;
}

export function resultTable(results: readonly BenchResult[]): string[] {
  const lines = [
    row(['Measure', 'Value', 'Baseline', 'Ratio', 'Target', 'Note']),
    row(['---', '--:', '---', '---', '---', '---']),
  ];
  for (const r of results) {
    const ratio = ratioOf(r);
    const baseline = r.baseline
      ? `${formatValue(r.baseline.value, r.unit)} (${r.baseline.label})`
      : '—';
    const ratioText =
      ratio === undefined ? '—' : `${ratio.toPrecision(3)} (${verdict(r) ?? 'n/a'})`;
    const target = r.target ? `${r.target.text}: **${r.target.met ? 'met' : 'missed'}**` : '—';
    lines.push(
      row([r.label, formatValue(r.value, r.unit), baseline, ratioText, target, r.note ?? '']),
    );
  }
  return lines;
}

/** Groups in the order they first appear. */
function byGroup(results: readonly BenchResult[]): Map<string, BenchResult[]> {
  const groups = new Map<string, BenchResult[]>();
  for (const r of results) groups.set(r.group, [...(groups.get(r.group) ?? []), r]);
  return groups;
}

function machineLine(m: Machine): string {
  const tools = Object.entries(m.tools)
    .map(([, v]) => v)
    .join(', ');
  return (
    `${m.cpu}, ${m.cpus} CPU${m.cpus === 1 ? '' : 's'}, ${m.ramGiB.toFixed(1)} GiB RAM, ` +
    `Linux ${m.kernel}, ${m.os}` +
    (tools ? `; ${tools}` : '')
  );
}

/**
 * docs/benchmarks.md: each module's results under its own heading, a table per group; the plot
 * is linked by its file name, next to the Markdown.
 */
export function renderMarkdown(report: Report, plotFile = 'benchmarks.svg'): string {
  const { meta } = report;
  const failed = meta.modules.filter((m) => m.error !== undefined);
  const met = report.results.filter((r) => r.target?.met === true).length;
  const targets = report.results.filter((r) => r.target).length;
  const out: string[] = [
    '# Benchmarks',
    '',
    `Measured by \`${meta.command}\` on ${meta.date.slice(0, 10)} (started ${meta.date}); ` +
      `the whole command took ${fmtDuration(meta.totalSeconds)}` +
      (meta.quick ? ' — a **quick run** (small sizes, few repetitions): it checks that the ' : '') +
      (meta.quick ? 'benchmarks work, its figures are not measurements.' : '.'),
    '',
    `- Machine: ${machineLine(meta.machine)}`,
    `- Node.js ${meta.node}`,
    `- Targets met: ${met} of ${targets}` +
      (failed.length > 0 ? `; modules failed: ${failed.map((m) => m.name).join(', ')}` : ''),
    '',
    'Every figure is measured in the same run as its baseline, on the same machine and topology. ' +
      '**Ratio** is value ÷ baseline; whether that is better depends on the measure (higher ' +
      'throughput, lower latency and time). Targets come from issue 6 and are reported, never ' +
      'asserted. All figures are also in `bench/results.json`; this page and the plot are ' +
      'written by the command, edit the code in `bench/`, not this file.',
    '',
  ];
  if (report.results.some((r) => r.series)) out.push(`![Benchmark plots](${plotFile})`, '');
  for (const m of meta.modules) {
    out.push(`## ${m.title}`, '');
    if (m.about) out.push(m.about.trim(), '');
    if (m.error !== undefined)
      out.push(`**Failed** after ${fmtDuration(m.seconds)}: ${m.error}`, '');
    const results = report.results.filter((r) => r.module === m.name);
    for (const [group, rs] of byGroup(results)) {
      out.push(`### ${group}`, '', ...resultTable(rs), '');
    }
  }
  out.push('## Modules', '', row(['Module', 'Time', 'Outcome']), row(['---', '--:', '---']));
  for (const m of meta.modules) {
    out.push(row([m.name, fmtDuration(m.seconds), m.error === undefined ? 'ok' : 'failed']));
  }
  out.push('');
  return out.join('\n');
}

// SVG -----------------------------------------------------------------------------------------

interface Line {
  readonly name: string;
  readonly color: string;
  readonly points: readonly (readonly [number, number])[];
}

interface Panel {
  readonly title: string;
  readonly unit: string;
  readonly lines: readonly Line[];
}

const COLORS = { subject: '#1f77b4', baseline: '#d62728' };

/**
 * One panel per series name: the measured values as the "ipferry" line, their baselines (when
 * every point has one) as a second line named after the baseline.
 */
export function panelsOf(results: readonly BenchResult[]): Panel[] {
  const bySeries = new Map<string, BenchResult[]>();
  for (const r of results) {
    if (!r.series) continue;
    bySeries.set(r.series.name, [...(bySeries.get(r.series.name) ?? []), r]);
  }
  return [...bySeries].map(([title, rs]) => {
    const sorted = [...rs].sort((a, b) => (a.series?.x ?? 0) - (b.series?.x ?? 0));
    const lines: Line[] = [
      {
        name: 'ipferry',
        color: COLORS.subject,
        points: sorted.map((r) => [r.series?.x ?? 0, r.value] as const),
      },
    ];
    const withBaseline = sorted.filter((r) => r.baseline);
    if (withBaseline.length > 0) {
      lines.push({
        name: withBaseline[0]?.baseline?.label ?? 'baseline',
        color: COLORS.baseline,
        points: withBaseline.map((r) => [r.series?.x ?? 0, r.baseline?.value ?? 0] as const),
      });
    }
    return { title, unit: sorted[0]?.unit ?? '', lines };
  });
}

function esc(text: string): string {
  return text
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;');
}

/** 1 → "1", 1000 → "1k", 100000 → "100k", 2500000 → "2.5M". */
export function shortNumber(n: number): string {
  const abs = Math.abs(n);
  const trim = (v: number): string => String(Number(v.toPrecision(3)));
  if (abs >= 1e6) return `${trim(n / 1e6)}M`;
  if (abs >= 1e3) return `${trim(n / 1e3)}k`;
  return trim(n);
}

const PANEL_W = 460;
const PANEL_H = 300;
const PAD = { left: 64, right: 16, top: 66, bottom: 44 };

function logScale(lo: number, hi: number, from: number, to: number): (v: number) => number {
  const a = Math.log10(lo);
  const b = Math.log10(hi);
  return (v) => (b === a ? (from + to) / 2 : from + ((Math.log10(v) - a) / (b - a)) * (to - from));
}

function linScale(lo: number, hi: number, from: number, to: number): (v: number) => number {
  return (v) => (hi === lo ? (from + to) / 2 : from + ((v - lo) / (hi - lo)) * (to - from));
}

/** Round-number ticks for a linear axis from 0 to at least `max`. */
function linTicks(max: number): number[] {
  if (max <= 0) return [0, 1];
  const step0 = max / 4;
  const mag = 10 ** Math.floor(Math.log10(step0));
  const step = ([1, 2, 2.5, 5, 10].find((m) => m * mag >= step0) ?? 10) * mag;
  const ticks: number[] = [];
  for (let v = 0; v < max + step; v += step) ticks.push(Number(v.toPrecision(6)));
  return ticks;
}

function renderPanel(panel: Panel, ox: number, oy: number): string[] {
  const all = panel.lines.flatMap((l) => l.points);
  const xs = all.map(([x]) => x).filter((x) => x > 0);
  const ys = all.map(([, y]) => y).filter((y) => Number.isFinite(y));
  const x0 = ox + PAD.left;
  const x1 = ox + PANEL_W - PAD.right;
  const y0 = oy + PANEL_H - PAD.bottom;
  const y1 = oy + PAD.top;
  const xLo = Math.min(...xs);
  const xHi = Math.max(...xs);
  // Spread in x of a factor 10 or more: a log axis, as the sizes are.
  const sx =
    xHi / xLo >= 10 ? logScale(xLo, xHi, x0 + 12, x1 - 12) : linScale(xLo, xHi, x0 + 12, x1 - 12);
  const positive = ys.filter((y) => y > 0);
  const yMin = Math.min(...positive);
  const yMax = Math.max(...ys, 0);
  const logY = positive.length === ys.length && yMin > 0 && yMax / yMin >= 30;
  let sy: (v: number) => number;
  let yTicks: number[];
  if (logY) {
    const lo = 10 ** Math.floor(Math.log10(yMin));
    const hi = 10 ** Math.ceil(Math.log10(yMax));
    sy = logScale(lo, hi, y0, y1);
    yTicks = [];
    for (let v = lo; v <= hi * 1.0001; v *= 10) yTicks.push(v);
  } else {
    yTicks = linTicks(yMax);
    sy = linScale(0, yTicks[yTicks.length - 1] ?? 1, y0, y1);
  }
  const out = [
    `<g>`,
    `<text x="${ox + PANEL_W / 2}" y="${oy + 20}" text-anchor="middle" font-size="14" font-weight="bold">${esc(panel.title)}</text>`,
    `<line x1="${x0}" y1="${y0}" x2="${x1}" y2="${y0}" stroke="#333"/>`,
    `<line x1="${x0}" y1="${y0}" x2="${x0}" y2="${y1}" stroke="#333"/>`,
  ];
  for (const t of yTicks) {
    const y = sy(t).toFixed(1);
    out.push(
      `<line x1="${x0}" y1="${y}" x2="${x1}" y2="${y}" stroke="#ddd"/>`,
      `<text x="${x0 - 6}" y="${y}" dy="4" text-anchor="end" font-size="11">${esc(shortNumber(t))}</text>`,
    );
  }
  for (const x of [...new Set(xs)].sort((a, b) => a - b)) {
    const px = sx(x).toFixed(1);
    out.push(
      `<line x1="${px}" y1="${y0}" x2="${px}" y2="${y0 + 4}" stroke="#333"/>`,
      `<text x="${px}" y="${y0 + 17}" text-anchor="middle" font-size="11">${esc(shortNumber(x))}</text>`,
    );
  }
  const axis = `floating IPs${xHi / xLo >= 10 ? ' (log scale)' : ''}`;
  out.push(
    `<text x="${(x0 + x1) / 2}" y="${y0 + 34}" text-anchor="middle" font-size="11">${esc(axis)}</text>`,
    `<text x="${ox + 14}" y="${(y0 + y1) / 2}" text-anchor="middle" font-size="11" transform="rotate(-90 ${ox + 14} ${(y0 + y1) / 2})">${esc(panel.unit + (logY ? ' (log scale)' : ''))}</text>`,
  );
  panel.lines.forEach((line, i) => {
    const pts = line.points
      .filter(([x, y]) => x > 0 && Number.isFinite(y) && (!logY || y > 0))
      .map(([x, y]) => [sx(x), sy(y)] as const);
    if (pts.length > 1) {
      const d = pts.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(' ');
      out.push(`<polyline points="${d}" fill="none" stroke="${line.color}" stroke-width="2"/>`);
    }
    for (const [x, y] of pts) {
      out.push(`<circle cx="${x.toFixed(1)}" cy="${y.toFixed(1)}" r="3.5" fill="${line.color}"/>`);
    }
    // One legend row per line, under the title: names can be long.
    const ly = oy + 28 + i * 15;
    out.push(
      `<rect x="${x0 + 8}" y="${ly}" width="11" height="11" fill="${line.color}"/>`,
      `<text x="${x0 + 24}" y="${ly + 10}" font-size="11">${esc(line.name)}</text>`,
    );
  });
  out.push('</g>');
  return out;
}

/** The plot: a grid of panels, two per row; an empty but valid SVG without series. */
export function renderSvg(results: readonly BenchResult[], title = 'ipferry benchmarks'): string {
  const panels = panelsOf(results);
  const cols = Math.min(2, Math.max(1, panels.length));
  const rows = Math.max(1, Math.ceil(panels.length / cols));
  const width = cols * PANEL_W;
  const height = rows * PANEL_H + 30;
  const body = panels.flatMap((p, i) =>
    renderPanel(p, (i % cols) * PANEL_W, 30 + Math.floor(i / cols) * PANEL_H),
  );
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif">`,
    `<rect width="${width}" height="${height}" fill="#fff"/>`,
    `<text x="${width / 2}" y="20" text-anchor="middle" font-size="15">${esc(title)}</text>`,
    ...body,
    '</svg>',
    '',
  ].join('\n');
}
