/**
 * Runs INSIDE a gateway's network namespace (started there by dataplane-apply.ts with
 * `ip netns exec`), the way an agent runs on its host: the tools it drives (`nft`, `conntrack`,
 * `iptables-restore`) start directly, without the lab's `ip netns exec` in front of each, which
 * a real host does not pay.
 *
 *   apply-worker --impl ipferry|iptables --fips N --moves K [--iptables legacy|nft]
 *
 * Prints one JSON line per step as soon as it is measured (so a run stopped at its deadline
 * still reports what it got): {"step":"full"|"move"|"check", …}.
 */
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { compile } from '../src/core/compile/index.js';
import { diffIntent } from '../src/intent/diff.js';
import { type IntentElement } from '../src/intent/elements.js';
import { LinuxDataplane } from '../src/dataplane/linux.js';
import { run } from '../src/dataplane/exec.js';
import { BENCH_GATEWAY, compileState, fipAddress, moved, redirections } from './fips.js';
import { chain, floaterMove, floaterRuleset } from './floater.js';
import { since } from './stats.js';

/** Where the last FIP points: a backend, then alternately a second one and back. */
export const MOVE_TARGETS = ['10.0.0.11', '10.0.0.12'] as const;

/** Long enough for 100,000 FIPs through iptables-restore on a loaded 2-core machine. */
const TOOL_TIMEOUT_MS = 600_000;

export interface WorkerStep {
  readonly step: 'full' | 'move' | 'check' | 'diag';
  /** Wall time of the dataplane change (nft / iptables-restore and what goes with it). */
  readonly ms?: number;
  /** ipferry only: compile() and diffIntent() before it, in this process. */
  readonly compileMs?: number;
  readonly elements?: number;
  /** check: what the kernel holds for the last FIP afterwards. */
  readonly ok?: boolean;
  readonly detail?: string;
  /** diag: the one-element nft change alone, one `conntrack -D`, the change on a plain map. */
  readonly nftMs?: number;
  readonly conntrackMs?: number;
  readonly plainNftMs?: number;
  /** The size of the kernel's connection hash table, which every `conntrack -D` walks. */
  readonly buckets?: number;
}

function emit(step: WorkerStep): void {
  process.stdout.write(JSON.stringify(step) + '\n');
}

async function ipferry(n: number, moves: number): Promise<void> {
  const dataplane = new LinuxDataplane();
  const facts = await dataplane.facts();
  const last = n - 1;
  let state = compileState(redirections(n, MOVE_TARGETS[0]));
  let t = performance.now();
  let elements: readonly IntentElement[] = compile(state, BENCH_GATEWAY, facts).elements;
  const first = diffIntent(elements, []);
  const compileMs = since(t);
  t = performance.now();
  await dataplane.apply(first);
  emit({ step: 'full', ms: since(t), compileMs, elements: elements.length });
  for (let k = 1; k <= moves; k++) {
    const target = MOVE_TARGETS[k % 2] ?? MOVE_TARGETS[0];
    t = performance.now();
    // What the agent does: compile the new state, diff it against what its last apply left.
    state = moved(state, last, target);
    const next = compile(state, BENCH_GATEWAY, facts).elements;
    const diff = diffIntent(next, elements);
    const moveCompileMs = since(t);
    t = performance.now();
    await dataplane.apply(diff);
    emit({ step: 'move', ms: since(t), compileMs: moveCompileMs, elements: diff.replace.length });
    elements = next;
  }
  const want = MOVE_TARGETS[moves % 2] ?? MOVE_TARGETS[0];
  const fip = fipAddress(last);
  const { stdout } = await run(
    'nft',
    ['get', 'element', 'inet', 'ipferry', 'dnat4', `{ ${fip} }`],
    {
      timeoutMs: TOOL_TIMEOUT_MS,
    },
  );
  emit({ step: 'check', ok: stdout.includes(`: ${want}`), detail: stdout.trim() });
  await diagnose(n, fip, want);
}

/**
 * Where a move's time goes, measured rather than guessed: the same one-element nft change
 * alone, one `conntrack -D` alone, and the same change on a table that holds N plain map
 * elements and nothing else (the ipferry table deleted first: nft's cache covers the whole
 * ruleset), which tells what the rest of ipferry's table costs nft.
 */
async function diagnose(n: number, fip: string, current: string): Promise<void> {
  const other = current === MOVE_TARGETS[0] ? MOVE_TARGETS[1] : MOVE_TARGETS[0];
  const change = (table: string, map: string) =>
    `delete element ${table} ${map} { ${fip} : ${current} }\n` +
    `add element ${table} ${map} { ${fip} : ${other} }\n`;
  let t = performance.now();
  await run('nft', ['-f', '-'], {
    input: change('inet ipferry', 'dnat4'),
    timeoutMs: TOOL_TIMEOUT_MS,
  });
  const nftMs = since(t);
  t = performance.now();
  await run('conntrack', ['-D', '-d', fip, '-r', current], { tolerate: () => true });
  const conntrackMs = since(t);
  await run('nft', ['delete', 'table', 'inet', 'ipferry'], { timeoutMs: TOOL_TIMEOUT_MS });
  const items = redirections(n, current).map((r) => `${r.fip} : ${r.target}`);
  const plain =
    'table ip ipfbdiag {\n  map m { type ipv4_addr : ipv4_addr; }\n}\n' +
    `add element ip ipfbdiag m { ${items.join(', ')} }\n`;
  await run('nft', ['-f', '-'], { input: plain, timeoutMs: TOOL_TIMEOUT_MS });
  t = performance.now();
  await run('nft', ['-f', '-'], { input: change('ip ipfbdiag', 'm'), timeoutMs: TOOL_TIMEOUT_MS });
  const plainNftMs = since(t);
  const buckets = await readFile('/proc/sys/net/netfilter/nf_conntrack_buckets', 'utf8').catch(
    () => '',
  );
  emit({ step: 'diag', nftMs, conntrackMs, plainNftMs, buckets: Number(buckets.trim()) || 0 });
}

async function iptables(n: number, moves: number, backend: string): Promise<void> {
  const restore = `iptables-${backend}-restore`;
  const last = n - 1;
  const fip = fipAddress(last);
  const rules = floaterRuleset(redirections(n, MOVE_TARGETS[0]));
  let t = performance.now();
  await run(restore, [], { input: rules, timeoutMs: TOOL_TIMEOUT_MS });
  emit({ step: 'full', ms: since(t), elements: n * 7 + 1 });
  let from: string = MOVE_TARGETS[0];
  for (let k = 1; k <= moves; k++) {
    const to = MOVE_TARGETS[k % 2] ?? MOVE_TARGETS[0];
    const script = floaterMove(fip, from, to);
    t = performance.now();
    await run(restore, ['--noflush'], { input: script, timeoutMs: TOOL_TIMEOUT_MS });
    emit({ step: 'move', ms: since(t), elements: 3 });
    from = to;
  }
  const { stdout } = await run(`iptables-${backend}`, ['-t', 'nat', '-S', chain.pre(fip)], {
    timeoutMs: TOOL_TIMEOUT_MS,
  });
  emit({ step: 'check', ok: stdout.includes(`--to-destination ${from}`), detail: stdout.trim() });
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      impl: { type: 'string' },
      fips: { type: 'string' },
      moves: { type: 'string', default: '3' },
      iptables: { type: 'string', default: 'legacy' },
    },
  });
  const n = Number(values.fips);
  const moves = Number(values.moves);
  if (!Number.isInteger(n) || n < 1) throw new Error('--fips N is required');
  if (!Number.isInteger(moves) || moves < 0) throw new Error('--moves K must be 0 or more');
  if (values.impl === 'ipferry') await ipferry(n, moves);
  else if (values.impl === 'iptables') {
    const backend = values.iptables ?? 'legacy';
    if (backend !== 'legacy' && backend !== 'nft') throw new Error('--iptables legacy|nft');
    await iptables(n, moves, backend);
  } else throw new Error('--impl ipferry|iptables');
}

main().catch((error: unknown) => {
  process.stderr.write(`apply-worker: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
});
