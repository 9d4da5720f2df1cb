/**
 * Processes the lab started or found, by pid: whether one still runs (zombies count as gone),
 * the start time that tells it from a later process with a recycled pid, and a signal that does
 * not mind a process that is gone already. Synchronous, so signal handlers can use them too.
 */
import { readFileSync } from 'node:fs';

/** Fields 3… of /proc/PID/stat (the state first), or undefined when there is no such process. */
function statFields(pid: number): string[] | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // The command name (field 2) may hold spaces and parentheses: fields 3… follow the last ')'.
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
}

function running(fields: readonly string[] | undefined): fields is readonly string[] {
  const state = fields?.[0];
  return state !== undefined && state !== '' && state !== 'Z' && state !== 'X';
}

/**
 * Whether the process runs: /proc has it and it is neither a zombie waiting to be reaped nor
 * dead. pid 1 of these machines reaps orphans slowly, so a killed detached daemon (wireguard-go,
 * tincd) stays a zombie for a second or more: it is gone all the same.
 */
export function alive(pid: number): boolean {
  return running(statFields(pid));
}

/**
 * The start time of a process (field 22 of /proc/PID/stat, clock ticks since boot), undefined
 * when it is gone or a zombie. Together with the pid it names one process for good.
 */
export function startTimeOf(pid: number): string | undefined {
  const fields = statFields(pid);
  return running(fields) ? fields[19] : undefined;
}

/** Sends `signal` to `pid`; a process that is gone already is what was wanted. */
export function killQuietly(pid: number, signal: NodeJS.Signals = 'SIGKILL'): void {
  try {
    process.kill(pid, signal);
  } catch {
    // Gone already (ESRCH).
  }
}
