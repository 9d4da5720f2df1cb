/**
 * What every benchmark module returns, and what bench/run.ts writes to bench/results.json and
 * docs/benchmarks.md. Each figure is measured against a baseline measured in the same run
 * (where there is one), so the report can state it as a ratio, plus absolute values.
 */
export interface BenchResult {
  /** Group heading in the report, e.g. "Per-packet cost" or "Fleet propagation". */
  readonly group: string;
  /** Stable machine-readable name, e.g. `forward.throughput.fips=10000`. */
  readonly name: string;
  /** What was measured, in words (a table row label). */
  readonly label: string;
  readonly value: number;
  /** `Mbit/s`, `ms`, `µs`, `MB`… */
  readonly unit: string;
  /** Whether a larger value is better (throughput) or a smaller one (latency, time, memory). */
  readonly better: 'higher' | 'lower';
  /** The same measured for the baseline in the same run, when there is one. */
  readonly baseline?: { readonly label: string; readonly value: number };
  /** The target the issue sets, when there is one: met or missed is reported, never asserted. */
  readonly target?: { readonly text: string; readonly met: boolean };
  /** Why a target was missed, or anything else a reader needs to read the figure right. */
  readonly note?: string;
  /** For the plot: the x value of a series (e.g. the number of FIPs), and the series name. */
  readonly series?: { readonly name: string; readonly x: number };
}

/** A benchmark module: runs its measurements (cleaning up everything it starts) and reports. */
export interface BenchModule {
  readonly title: string;
  /** A rough upper bound of its running time, for the runner's plan and the 15-minute budget. */
  readonly budgetSeconds: number;
  /** What it measures and how (Markdown), printed above its tables in docs/benchmarks.md. */
  readonly about?: string;
  run(options: BenchOptions): Promise<BenchResult[]>;
}

export interface BenchOptions {
  /** Smaller sizes and fewer repetitions: to check the benchmarks work, not to measure. */
  readonly quick: boolean;
  /** Progress lines for the terminal. */
  readonly log: (line: string) => void;
}
