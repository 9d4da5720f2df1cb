/** What the report says about the machine: read from /proc, /etc and the tools themselves. */
import { readFile } from 'node:fs/promises';
import { release } from 'node:os';
import { run } from '../src/dataplane/exec.js';
import type { Machine } from './report.js';

export function parseCpuinfo(text: string): { model: string; count: number } {
  const models = [...text.matchAll(/^model name\s*:\s*(.+)$/gm)].map((m) => (m[1] ?? '').trim());
  const count = [...text.matchAll(/^processor\s*:/gm)].length;
  return { model: models[0] ?? 'unknown CPU', count: count || models.length };
}

export function parseMeminfo(text: string): number {
  const kb = Number(/^MemTotal:\s*(\d+)\s*kB/m.exec(text)?.[1] ?? NaN);
  return kb / 1024 / 1024;
}

async function readOr(path: string, fallback: string): Promise<string> {
  return readFile(path, 'utf8').catch(() => fallback);
}

/** `nft --version` and the like, first line; absent when the tool is not installed. */
async function toolVersion(file: string, args: string[]): Promise<string | undefined> {
  try {
    const { stdout, stderr } = await run(file, args, { timeoutMs: 5000 });
    return (stdout || stderr).split('\n')[0]?.trim() || undefined;
  } catch {
    return undefined;
  }
}

export async function describeMachine(): Promise<Machine> {
  const cpu = parseCpuinfo(await readOr('/proc/cpuinfo', ''));
  const ram = parseMeminfo(await readOr('/proc/meminfo', ''));
  const debian = (await readOr('/etc/debian_version', '')).trim();
  const pretty = /^PRETTY_NAME="?([^"\n]*)"?$/m.exec(await readOr('/etc/os-release', ''))?.[1];
  const tools: Record<string, string> = {};
  const versions: [string, string, string[]][] = [
    ['nft', 'nft', ['--version']],
    // The backend the baseline uses (see dataplane-apply.ts).
    [
      'iptables',
      `iptables-${process.env.IPF_BENCH_IPTABLES === 'nft' ? 'nft' : 'legacy'}`,
      ['--version'],
    ],
    ['iperf3', 'iperf3', ['--version']],
  ];
  for (const [name, file, args] of versions) {
    const v = await toolVersion(file, args);
    if (v) tools[name] = v;
  }
  return {
    cpu: cpu.model,
    cpus: cpu.count,
    ramGiB: Number.isFinite(ram) ? Number(ram.toFixed(1)) : 0,
    kernel: release(),
    os: debian ? `Debian ${debian}` : (pretty ?? 'unknown OS'),
    tools,
  };
}
