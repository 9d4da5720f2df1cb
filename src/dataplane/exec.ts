/**
 * Runs kernel tools (`ip`, later `nft`, `wg`, `conntrack`) with execFile — never a shell — and
 * turns failures into IpferryError('IPF_E_DATAPLANE') carrying argv, exit code and stderr.
 * Secrets never go through argv: callers feed them by file or stdin.
 */
import { execFile } from 'node:child_process';
import { IpferryError } from '../core/errors.js';

export interface ExecResult {
  readonly stdout: string;
  readonly stderr: string;
}

export async function run(
  file: string,
  args: readonly string[],
  options: { input?: string; timeoutMs?: number } = {},
): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      file,
      [...args],
      { timeout: options.timeoutMs ?? 30_000, maxBuffer: 256 * 1024 * 1024, encoding: 'utf8' },
      (error, stdout, stderr) => {
        if (!error) return resolve({ stdout, stderr });
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
