/**
 * `ipferry events`: the audit trail, one line per write or refused write (who, what, how it
 * ended, the revision it made); `--follow` keeps printing new ones as they are recorded (a long
 * poll on the agent, which follows the store's watch).
 */
import { Command, InvalidArgumentError } from 'commander';
import type { EventsResponse } from '../api/contract.js';
import type { ApiClient } from '../client/api-client.js';
import type { AuditEvent } from '../core/events.js';
import type { CliContext } from './context.js';
import { terminalLines, terminalText } from './format.js';

export const DEFAULT_EVENTS = 20;

/** How long each poll of `--follow` lets the agent hold the request. */
const FOLLOW_WAIT = '20s';

function limit(value: string): number {
  if (!/^\d{1,4}$/.test(value) || Number(value) < 1 || Number(value) > 1000) {
    throw new InvalidArgumentError('Expected a number of events from 1 to 1000.');
  }
  return Number(value);
}

/**
 * `AT #SEQ WHO [API] METHOD PATH [BODY] -> STATUS [CODE] [rev N] ["ANSWER"]`, one line per event
 * (API and ANSWER: IP Floater's APIs only).
 */
export function eventLine(e: AuditEvent): string {
  const outcome = `${e.status}${e.code ? ` ${e.code}` : ''}${e.revision ? ` rev ${e.revision}` : ''}`;
  const api = e.api ? ` [${e.api}]` : '';
  const body = e.body !== undefined ? ` ${JSON.stringify(e.body)}` : '';
  const answer = e.answer !== undefined ? ` ${JSON.stringify(e.answer)}` : '';
  return `${e.at} #${e.seq} ${terminalText(e.who)}${api} ${e.method} ${terminalText(e.path)}${terminalText(body)} -> ${outcome}${terminalText(answer)}`;
}

export function printEvents(events: EventsResponse): string {
  if (events.length === 0) return 'no events recorded\n';
  return events.map((e) => `${eventLine(e)}\n`).join('');
}

/** Prints new events as they come, until the process is stopped. */
async function follow(ctx: CliContext, api: ApiClient, after: number): Promise<never> {
  let last = after;
  for (;;) {
    const events = await api.events({ after: String(last), wait: FOLLOW_WAIT });
    for (const e of events) {
      ctx.io.out(ctx.json ? `${JSON.stringify(e)}\n` : terminalLines(`${eventLine(e)}\n`));
      last = Math.max(last, e.seq);
    }
  }
}

export function eventsCommand(ctx: CliContext): Command {
  return new Command('events')
    .description('Show the audit trail: every write and refused write, who made it, the revision')
    .option('--limit <n>', `the latest N events (default ${DEFAULT_EVENTS}, at most 1000)`, limit)
    .option('--follow', 'keep printing new events as they are recorded (until stopped)')
    .action(async (o: { limit?: number; follow?: boolean }) => {
      const api = await ctx.api();
      const events = await api.events({ limit: String(o.limit ?? DEFAULT_EVENTS) });
      if (!o.follow) {
        ctx.print(events, printEvents);
        return;
      }
      // Followed: one event per line, JSON objects too (NDJSON), so a pipe reads them as they come.
      for (const e of events)
        ctx.io.out(ctx.json ? `${JSON.stringify(e)}\n` : terminalLines(`${eventLine(e)}\n`));
      await follow(ctx, api, events.at(-1)?.seq ?? (await latestSeq(api)));
    });
}

async function latestSeq(api: ApiClient): Promise<number> {
  return (await api.events({ limit: '1' })).at(-1)?.seq ?? 0;
}
