/**
 * Tests of the real binary need the compiled CLI. scripts/test.sh builds first; when a test file
 * is run alone, this rebuilds if any source is newer than the build, so a test never runs a
 * stale binary.
 */
import { execFile } from 'node:child_process';
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const BIN = join(ROOT, 'bin', 'ipferry');
const BUILT = join(ROOT, 'dist', 'cli', 'bin.js');

async function newestSource(dir: string): Promise<number> {
  let newest = 0;
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    const mtime = entry.isDirectory() ? await newestSource(path) : (await stat(path)).mtimeMs;
    newest = Math.max(newest, mtime);
  }
  return newest;
}

export async function ensureBuilt(): Promise<void> {
  const built = await stat(BUILT).then(
    (s) => s.mtimeMs,
    () => 0,
  );
  if (built >= (await newestSource(join(ROOT, 'src')))) return;
  await promisify(execFile)(
    join(ROOT, 'node_modules', '.bin', 'tsc'),
    ['-p', 'tsconfig.build.json'],
    { cwd: ROOT },
  );
}
