/**
 * A throwaway network namespace for the fuzz suites' `nft` runs: named `ipft-fuzz…` (the
 * suite's leftover check looks for `ipft-`), made empty, and removed by `remove()` — which the
 * suite calls in `after`, so also when a property failed — and, as a last resort, when the
 * process exits. Nothing runs in the machine's own namespace.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { run } from '../../src/dataplane/exec.js';

export interface FuzzNamespace {
  readonly name: string;
  /** `nft ARGS` inside the namespace, the script on stdin; resolves with exit code and stderr. */
  nft(
    args: readonly string[],
    input?: string,
  ): Promise<{ code: number; stdout: string; stderr: string }>;
  remove(): Promise<void>;
}

export async function fuzzNamespace(): Promise<FuzzNamespace> {
  const name = `ipft-fuzz${randomBytes(3).toString('hex')}`;
  await run('ip', ['netns', 'add', name]);
  let removed = false;
  const onExit = (): void => {
    if (removed) return;
    try {
      execFileSync('ip', ['netns', 'del', name], { stdio: 'ignore' });
    } catch {
      // Gone already.
    }
  };
  process.once('exit', onExit);
  return {
    name,
    nft: async (args, input) => {
      try {
        const { stdout, stderr } = await run('ip', ['netns', 'exec', name, 'nft', ...args], {
          ...(input !== undefined ? { input } : {}),
          timeoutMs: 20_000,
        });
        return { code: 0, stdout, stderr };
      } catch (e) {
        return { code: 1, stdout: '', stderr: (e as Error).message };
      }
    },
    remove: async () => {
      removed = true;
      process.removeListener('exit', onExit);
      await run('ip', ['netns', 'del', name]).catch(() => undefined);
    },
  };
}
