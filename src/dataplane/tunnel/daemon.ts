/**
 * The tunnel daemons' processes (tincd, wireguard-go), as both drivers handle them: started with
 * an environment of their own, found by pid file or command line, signalled and waited for.
 */
import { readdir, readFile, stat } from 'node:fs/promises';
import { dataplaneError, sleep } from './common.js';

// A daemon's environment is built here, not inherited, so nothing of the agent's leaks in.
export const DAEMON_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** The pid in a daemon's pid file, or undefined when there is none (or no number in it). */
export async function readPid(path: string): Promise<number | undefined> {
  const text = await readFile(path, 'utf8').catch(() => '');
  return /^\d+\s*$/.test(text) ? Number(text.trim()) : undefined;
}

/** Running (not exited, not a zombie waiting to be reaped). */
export async function alive(pid: number): Promise<boolean> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  // The state follows the command name, which is in parentheses and may contain spaces.
  const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  return state !== '' && state !== 'Z' && state !== 'X';
}

/** Sends `name` to `pid`; false when there is no such process any more. */
export function signal(pid: number, name: NodeJS.Signals): boolean {
  try {
    process.kill(pid, name);
    return true;
  } catch {
    return false;
  }
}

/** A process's command line, split; empty when it is gone. */
export async function argvOf(pid: number): Promise<string[]> {
  return (await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')).split('\0');
}

/** The name of the program a command line runs (its first word, without the directory). */
export function programOf(argv: readonly string[]): string | undefined {
  return argv[0]?.split('/').pop();
}

/** Every live process on the machine whose command line `matches`. */
export async function findProcesses(
  matches: (argv: readonly string[]) => boolean,
): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    if (matches(await argvOf(pid)) && (await alive(pid))) pids.push(pid);
  }
  return pids;
}

/**
 * Waits until `pid` no longer runs. A daemon that detached (tincd) is never our child to reap,
 * so a zombie counts as gone; one that is (wireguard-go) is `reaped` by Node, which is waited
 * for too, so that nothing of it shows afterwards.
 */
export async function gone(
  pid: number,
  timeoutMs: number,
  { reaped = false }: { reaped?: boolean } = {},
): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() <= deadline) {
    const done = reaped ? !(await exists(pid)) : !(await alive(pid));
    if (done) return true;
    await sleep(5);
  }
  return !(await alive(pid));
}

/** SIGTERM (the daemon then removes what it made), SIGKILL when it lingers. */
export async function stopProcess(
  pid: number,
  program: string,
  options?: { reaped?: boolean },
): Promise<void> {
  signal(pid, 'SIGTERM');
  if (await gone(pid, 3000, options)) return;
  signal(pid, 'SIGKILL');
  if (!(await gone(pid, 2000, options))) {
    throw dataplaneError(`${program} (pid ${pid}) does not exit`);
  }
}

async function exists(pid: number): Promise<boolean> {
  return stat(`/proc/${pid}`).then(
    () => true,
    () => false,
  );
}
