/**
 * The benchmark runner: runs the modules of bench/modules.ts in sequence, prints progress, and
 * writes every figure to results.json, a Markdown report and an SVG plot.
 *
 *   node --import tsx bench/run.ts [--quick] [--only NAME] [--out DIR] [--list]
 *
 * A full run writes bench/results.json, docs/benchmarks.md and docs/benchmarks.svg. A partial
 * run (--quick or --only) writes the same three files into bench/out/ (ignored by git) unless
 * --out says where, so a smoke run never replaces the published figures.
 *
 * Cleanup: modules destroy their labs and clusters in `finally`; on Ctrl-C (SIGINT) or SIGTERM
 * the lab and etcd helpers delete their namespaces and stop their processes at once, the module
 * in progress then fails, and the runner exits 130 without writing a report. A second signal
 * exits at once (the same exit handlers still run).
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { format, resolveConfig } from 'prettier';
import { MODULES, type BenchEntry } from './modules.js';
import { describeMachine } from './machine.js';
import {
  type ModuleOutcome,
  type ModuleResult,
  type Report,
  renderMarkdown,
  renderSvg,
  resultsJson,
} from './report.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
/** The whole command must stay under this on the 2-core machine (issue 6). */
const BUDGET_SECONDS = 15 * 60;

export interface RunOptions {
  readonly quick: boolean;
  readonly only?: string;
  /** Output directory for all three files; default: see outputPaths. */
  readonly out?: string;
}

export interface OutputPaths {
  readonly json: string;
  readonly markdown: string;
  readonly svg: string;
}

export function outputPaths(options: RunOptions): OutputPaths {
  const partial = options.quick || options.only !== undefined;
  const dir = options.out ?? (partial ? join(ROOT, 'bench', 'out') : undefined);
  if (dir !== undefined) {
    return {
      json: join(dir, 'results.json'),
      markdown: join(dir, 'benchmarks.md'),
      svg: join(dir, 'benchmarks.svg'),
    };
  }
  return {
    json: join(ROOT, 'bench', 'results.json'),
    markdown: join(ROOT, 'docs', 'benchmarks.md'),
    svg: join(ROOT, 'docs', 'benchmarks.svg'),
  };
}

export function selectModules(only: string | undefined): BenchEntry[] {
  if (only === undefined) return [...MODULES];
  const names = only.split(',').map((s) => s.trim());
  const unknown = names.filter((n) => !MODULES.some((m) => m.name === n));
  if (unknown.length > 0) {
    throw new Error(
      `unknown module ${unknown.join(', ')}; modules: ${MODULES.map((m) => m.name).join(', ')}`,
    );
  }
  return MODULES.filter((m) => names.includes(m.name));
}

/** The command as the user typed it: bench/run.sh passes its own line, else this process's. */
function commandLine(): string {
  const fromScript = process.env.IPF_BENCH_COMMAND;
  if (fromScript) return fromScript;
  const script = relative(ROOT, fileURLToPath(import.meta.url));
  return ['node --import tsx', script, ...process.argv.slice(2)].join(' ');
}

/** When the command started (bench/run.sh passes its start, so setup time counts too). */
function startedAt(): number {
  const fromScript = Number(process.env.IPF_BENCH_STARTED_MS);
  return Number.isFinite(fromScript) && fromScript > 0 ? fromScript : Date.now();
}

function clock(start: number): string {
  const s = Math.round((Date.now() - start) / 1000);
  return `${String(Math.floor(s / 60)).padStart(2, '0')}:${String(s % 60).padStart(2, '0')}`;
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

let interrupted = false;

/** Ctrl-C: the lab and etcd helpers clean up synchronously on the same signal (see above). */
function onSignal(signal: NodeJS.Signals): void {
  if (interrupted) process.exit(130);
  interrupted = true;
  process.exitCode = 130;
  process.stderr.write(`\n[bench] ${signal}: labs and processes removed; stopping\n`);
  // If the module in progress does not notice within a while, end anyway: the exit handlers
  // of the lab and etcd helpers still run.
  setTimeout(() => process.exit(130), 20_000).unref();
}

export async function main(argv: readonly string[] = process.argv.slice(2)): Promise<number> {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      quick: { type: 'boolean', default: false },
      only: { type: 'string' },
      out: { type: 'string' },
      list: { type: 'boolean', default: false },
    },
  });
  if (values.list) {
    for (const m of MODULES) console.log(`${m.name}\t${m.module.title}`);
    return 0;
  }
  const options: RunOptions = {
    quick: values.quick ?? false,
    ...(values.only !== undefined ? { only: values.only } : {}),
    ...(values.out !== undefined ? { out: resolve(values.out) } : {}),
  };
  const selected = selectModules(options.only);
  const start = startedAt();
  const date = new Date(start).toISOString();
  const log = (line: string): void => console.log(`[bench ${clock(start)}] ${line}`);
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  // Everything the modules start (node workers, tsx) is resolved from the checkout.
  process.chdir(ROOT);

  const budget = selected.reduce((s, m) => s + m.module.budgetSeconds, 0);
  log(
    `${options.quick ? 'quick run' : 'full run'}: ${selected.map((m) => m.name).join(', ')} ` +
      `(planned at most ~${Math.ceil(budget / 60)} min; the whole command must stay under ` +
      `${BUDGET_SECONDS / 60} min)`,
  );
  const machine = await describeMachine();
  log(
    `machine: ${machine.cpu}, ${machine.cpus} CPUs, ${machine.ramGiB} GiB, Linux ${machine.kernel}`,
  );

  const outcomes: ModuleOutcome[] = [];
  const results: ModuleResult[] = [];
  for (const [i, entry] of selected.entries()) {
    if (interrupted) break;
    const { name, module } = entry;
    log(
      `(${i + 1}/${selected.length}) ${name}: ${module.title} (budget ${module.budgetSeconds} s)`,
    );
    const t = performance.now();
    let error: string | undefined;
    try {
      const rs = await module.run({ quick: options.quick, log: (l) => log(`  ${l}`) });
      results.push(...rs.map((r) => ({ ...r, module: name })));
    } catch (e) {
      error = errorText(e);
      log(`  ${name} FAILED: ${error}`);
    }
    const seconds = (performance.now() - t) / 1000;
    log(`  ${name}: ${error === undefined ? 'done' : 'failed'} in ${seconds.toFixed(0)} s`);
    outcomes.push({
      name,
      title: module.title,
      seconds,
      ...(error !== undefined ? { error } : {}),
      ...(module.about !== undefined ? { about: module.about } : {}),
    });
  }
  if (interrupted) {
    log('interrupted: no report written');
    return 130;
  }

  const totalSeconds = (Date.now() - start) / 1000;
  const report: Report = {
    meta: {
      date,
      command: commandLine(),
      node: process.version,
      machine,
      quick: options.quick,
      totalSeconds: Number(totalSeconds.toFixed(1)),
      modules: outcomes,
    },
    results,
  };
  const paths = outputPaths(options);
  await writeReport(report, paths);
  const failed = outcomes.filter((o) => o.error !== undefined);
  log(`wrote ${[paths.json, paths.markdown, paths.svg].map((p) => relative(ROOT, p)).join(', ')}`);
  log(
    `total ${totalSeconds.toFixed(0)} s` +
      (totalSeconds > BUDGET_SECONDS ? ` — OVER the ${BUDGET_SECONDS / 60}-minute budget` : '') +
      (failed.length > 0 ? `; failed: ${failed.map((f) => f.name).join(', ')}` : ''),
  );
  return failed.length > 0 ? 1 : 0;
}

/**
 * Writes the three files. The JSON and the Markdown go through Prettier with the project's
 * settings, so the generated files pass `prettier --check .` like the hand-written ones.
 */
export async function writeReport(report: Report, paths: OutputPaths): Promise<void> {
  for (const p of [paths.json, paths.markdown, paths.svg]) {
    await mkdir(dirname(p), { recursive: true });
  }
  const pretty = async (text: string, file: string): Promise<string> =>
    format(text, { ...(await resolveConfig(join(ROOT, 'package.json'))), filepath: file });
  await writeFile(paths.json, await pretty(resultsJson(report), paths.json));
  await writeFile(paths.svg, renderSvg(report.results));
  // The Markdown links the plot relative to itself.
  const markdown = renderMarkdown(report, relative(dirname(paths.markdown), paths.svg));
  await writeFile(paths.markdown, await pretty(markdown, paths.markdown));
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().then(
    (code) => {
      process.exitCode = process.exitCode ?? code;
      // Modules close what they open; exit anyway rather than wait on a stray handle.
      process.exit();
    },
    (error: unknown) => {
      console.error(`[bench] ${errorText(error)}`);
      process.exit(2);
    },
  );
}
