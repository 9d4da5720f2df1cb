/** The real CLI (bin/ipferry, the compiled dist/) as the demo runs it: captured and bounded. */
import { spawn } from 'node:child_process';
import { IPFERRY_BIN } from '../src/lab/agents.js';

export interface CliResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
  /** When its first output arrived (performance.now()): the API's response reached the CLI. */
  readonly firstOutputAt: number;
}

/** `fip show --json`, the parts the demo reads. */
export interface FipJson {
  revision?: number;
  status?: { state?: string; stale?: boolean; revision?: number; message?: string };
}

/** Runs the CLI, capturing its output; bounded (killed after `timeoutMs`). */
export function runCli(
  args: readonly string[],
  env: NodeJS.ProcessEnv,
  timeoutMs = 20_000,
): Promise<CliResult> {
  return new Promise((resolve) => {
    const child = spawn(IPFERRY_BIN, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let firstOutputAt = NaN;
    const arrived = (): void => {
      if (Number.isNaN(firstOutputAt)) firstOutputAt = performance.now();
    };
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      arrived();
      stdout += chunk;
    });
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      arrived();
      stderr += chunk;
    });
    const timer = setTimeout(() => {
      stderr += `(killed after ${timeoutMs} ms)\n`;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.once('error', (error) => {
      clearTimeout(timer);
      resolve({ code: 127, stdout, stderr: `${stderr}${error.message}\n`, firstOutputAt });
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? 1, stdout, stderr, firstOutputAt });
    });
  });
}

/** An argument as a person would type it in a shell. */
export function shellWord(arg: string): string {
  return /^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, `'\\''`)}'`;
}

/** `ipferry ARGS…` as a person would type it. */
export function commandLine(args: readonly string[]): string {
  return `ipferry ${args.map(shellWord).join(' ')}`;
}

/** The value of a `name:   value` line of the CLI's human output. */
export function field(output: string, name: string): string | undefined {
  return new RegExp(`^${name}:\\s+(.*)$`, 'm').exec(output)?.[1]?.trim();
}
