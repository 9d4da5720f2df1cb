/**
 * Runs a bench script (TypeScript, through tsx) inside a lab host and collects the JSON lines it
 * prints. The process is the lab's (stopped by pid when the lab is destroyed, also on Ctrl-C);
 * at its deadline it is stopped and what it printed until then is returned.
 */
import { fileURLToPath } from 'node:url';
import { randomPrefix } from '../src/lab/netns.js';
import type { Lab } from '../src/lab/topology.js';

/**
 * A fresh namespace prefix for one bench lab: `ipft-bench-` (swept with the other labs'
 * `ipft-`), or IPF_BENCH_NS_PREFIX, which lets a test find exactly its own run's leftovers.
 */
export function benchLabPrefix(): string {
  return randomPrefix(process.env.IPF_BENCH_NS_PREFIX ?? 'ipft-bench-');
}

export interface WorkerRun<T> {
  readonly lines: T[];
  /** True when the deadline stopped it before it ended by itself. */
  readonly timedOut: boolean;
  readonly code: number | null;
  readonly stderr: string;
  readonly seconds: number;
}

/** node + tsx + the script next to this file; tsx resolved here, so the cwd does not matter. */
export function benchScript(name: string, args: readonly string[]): string[] {
  const file = fileURLToPath(new URL(`./${name}`, import.meta.url));
  return [process.execPath, '--import', import.meta.resolve('tsx'), file, ...args];
}

export async function runWorker<T>(
  lab: Lab,
  host: string,
  argv: readonly string[],
  deadlineMs: number,
): Promise<WorkerRun<T>> {
  const started = performance.now();
  const proc = await lab.spawn(host, argv);
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<'deadline'>((resolve) => {
    timer = setTimeout(() => resolve('deadline'), deadlineMs);
  });
  const outcome = await Promise.race([proc.exited, deadline]);
  clearTimeout(timer);
  const timedOut = outcome === 'deadline';
  if (timedOut) await proc.stop(1000);
  const status = await proc.exited;
  const lines = proc
    .stdout()
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as T);
  return {
    lines,
    timedOut,
    code: status.code,
    stderr: proc.stderr().trim(),
    seconds: (performance.now() - started) / 1000,
  };
}
