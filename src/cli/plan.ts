/** `ipferry plan`: what the agent would add, change and remove in this host's kernel now. */
import { Command } from 'commander';
import type { PlanResponse } from '../api/contract.js';
import type { IntentElement } from '../intent/elements.js';
import type { ApiClient } from '../client/api-client.js';
import type { CliContext } from './context.js';
import { terminalText } from './format.js';

export const getPlan = (api: ApiClient): Promise<PlanResponse> => api.plan();

/**
 * One line per element, `+` add, `~` change, `-` remove, like a diff a person can read. Keys,
 * values and reasons come from store records (a skipped record's reason quotes what it held), so
 * each line is written for the terminal on its own: it stays one line, whatever it quotes.
 */
export function printPlan(p: PlanResponse): string {
  const lines = [
    `plan for node ${p.node} (${p.dataplane} dataplane) at store revision ${p.revision}:`,
  ];
  const show = (e: IntentElement): string => `${e.kind} ${e.key}${e.value ? ` -> ${e.value}` : ''}`;
  for (const e of p.add) lines.push(`  + ${show(e)}`);
  for (const r of p.replace)
    lines.push(`  ~ ${show(r.from)}  =>  ${r.to.value || '(new version)'}`);
  for (const e of p.remove) lines.push(`  - ${show(e)}`);
  for (const r of p.refused) lines.push(`  ! ${r.address}: ${r.reason}`);
  // An older agent does not send `skipped`.
  for (const r of p.skipped ?? []) lines.push(`  ? skipped ${r.key}: ${r.reason}`);
  const changes = p.add.length + p.replace.length + p.remove.length;
  lines.push(
    changes === 0
      ? 'nothing to change: the kernel holds what the store asks for'
      : `${p.add.length} to add, ${p.replace.length} to change, ${p.remove.length} to remove`,
  );
  return lines.map(terminalText).join('\n') + '\n';
}

export function planCommand(ctx: CliContext): Command {
  return new Command('plan')
    .description("Show what the agent would change in this host's kernel now, changing nothing")
    .action(() => ctx.run(getPlan, printPlan));
}
