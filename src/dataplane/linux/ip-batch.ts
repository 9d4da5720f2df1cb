/**
 * `ip -batch -`: many changes in one process. It stops at its first failing line and names it
 * (`Command failed -:N`): the lines before it took effect, that line and the rest did not. That
 * is what lets a manager take back exactly the part of a batch that was done.
 */
import type { Exec } from './manager.js';

export type BatchResult =
  | { readonly ok: true }
  /** `done`: how many lines took effect (all of them when `ip` did not say). */
  | { readonly ok: false; readonly done: number; readonly error: unknown };

/** Runs `lines` (`ip` arguments as words) as one batch; `options` go before `-batch`. */
export async function ipBatch(
  exec: Exec,
  options: readonly string[],
  lines: readonly string[],
): Promise<BatchResult> {
  if (lines.length === 0) return { ok: true };
  try {
    await exec('ip', [...options, '-batch', '-'], { input: lines.join('\n') + '\n' });
    return { ok: true };
  } catch (error) {
    const failed = /Command failed -:(\d+)/.exec((error as Error).message)?.[1];
    const done = failed === undefined ? lines.length : Number(failed) - 1;
    return { ok: false, done: Math.min(Math.max(done, 0), lines.length), error };
  }
}

/**
 * Runs lines that take a change back: `-force` goes on past a failing line, so one that cannot
 * be undone does not keep the others from it; throws when any failed.
 */
export async function ipBatchForce(
  exec: Exec,
  options: readonly string[],
  lines: readonly string[],
): Promise<void> {
  if (lines.length === 0) return;
  await exec('ip', [...options, '-force', '-batch', '-'], { input: lines.join('\n') + '\n' });
}
