/**
 * Runs kernel tools (`ip`, `nft`, `wg`, `conntrack`) with execFile — never a shell — and
 * turns failures into IpferryError('IPF_E_DATAPLANE') carrying argv, exit code and stderr.
 * Secrets never go through argv: callers feed them by file or stdin.
 */
import { execFile } from 'node:child_process';
import { IpferryError } from '../core/errors.js';

export interface ExecResult {
  readonly stdout: string;
  readonly stderr: string;
}

export interface RunOptions {
  readonly input?: string;
  readonly timeoutMs?: number;
  /** Treats a failure as success when this returns true (e.g. "0 entries deleted"). */
  readonly tolerate?: (stderr: string) => boolean;
}

export async function run(
  file: string,
  args: readonly string[],
  options: RunOptions = {},
): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      file,
      [...args],
      { timeout: options.timeoutMs ?? 30_000, maxBuffer: 256 * 1024 * 1024, encoding: 'utf8' },
      (error, stdout, stderr) => {
        if (!error || (options.tolerate?.(stderr) && typeof error.code === 'number')) {
          return resolve({ stdout, stderr });
        }
        const code = (error as NodeJS.ErrnoException).code;
        const reason =
          code === 'ENOENT'
            ? `${file} is not installed`
            : `\`${[file, ...args].join(' ')}\` failed (exit ${String(code ?? error.signal ?? '?')}): ${stderr.trim() || error.message}`;
        reject(new IpferryError('IPF_E_DATAPLANE', { reason }));
      },
    );
    if (options.input !== undefined) child.stdin?.end(options.input);
  });
}
