/** The gateway's nftables table as the demo shows it: its maps, and the rules apart from them. */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Lab } from '../src/lab/topology.js';
import { check } from './check.js';

/** The gateway's `inet ipferry` table; `stateless` leaves out counter values (`nft -s`). */
export async function nftTable(lab: Lab, stateless = false): Promise<string> {
  const flags = stateless ? ['-s'] : [];
  return (await lab.exec('gw', ['nft', ...flags, 'list', 'table', 'inet', 'ipferry'])).stdout;
}

/** Waits (bounded) until the gateway's table no longer mentions any of `needles`. */
export async function waitNotInKernel(
  lab: Lab,
  needles: readonly string[],
  timeoutMs = 10_000,
): Promise<void> {
  const started = Date.now();
  for (;;) {
    const table = await nftTable(lab);
    const left = needles.filter((n) => table.includes(n));
    if (left.length === 0) return;
    check(
      Date.now() - started < timeoutMs,
      `still in gw's kernel after ${timeoutMs} ms: ${left.join(', ')}`,
    );
    await sleep(100);
  }
}

/** The `map NAME { … }` block of an `nft list table` listing, or undefined. */
export function mapBlock(listing: string, name: string): string | undefined {
  const lines = listing.split('\n');
  const start = lines.findIndex((l) => l.trim() === `map ${name} {`);
  if (start < 0) return undefined;
  const indent = /^\s*/.exec(lines[start] ?? '')?.[0] ?? '';
  const end = lines.findIndex((l, i) => i > start && l === `${indent}}`);
  if (end < 0) return undefined;
  return lines.slice(start, end + 1).join('\n');
}

/** The rules of an `nft list table` listing: lines inside chains, minus their declarations. */
export function ruleLines(listing: string): string[] {
  let inChain = false;
  const rules: string[] = [];
  for (const raw of listing.split('\n')) {
    const line = raw.trim();
    if (/^chain \S+ \{$/.test(line)) inChain = true;
    else if (line === '}') inChain = false;
    else if (inChain && line !== '' && !/^type \S+ hook /.test(line)) rules.push(line);
  }
  return rules;
}
