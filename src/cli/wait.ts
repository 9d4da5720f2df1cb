/**
 * Writes that wait: after a write the CLI asks the agent (GET /v1/applied) until every agent the
 * write concerns has applied its revision, then says where and how long it took; an agent's
 * ERROR or UNREACHABLE, or the time running out, fails the command with the reason.
 */
import { type Command, Option } from 'commander';
import type { AppliedResponse } from '../api/contract.js';
import type { ApiClient } from '../client/api-client.js';
import { nodeList, settled } from '../core/applied.js';
import { IpferryError } from '../core/errors.js';
import { duration } from './options.js';

/** `--no-wait` and `--timeout` as commander leaves them. */
export interface WaitFlags {
  wait?: boolean;
  /** Seconds. */
  timeout?: number;
}

export const DEFAULT_WAIT_SECONDS = 10;

/** What a write touched, for the agent to work out which agents it concerns. */
export interface WaitScope {
  readonly fip?: string;
  readonly pool?: string;
  readonly nodes?: readonly string[];
  readonly all?: boolean;
}

/** Node and mesh writes: every live agent peers with the nodes or runs the mesh. */
export const everyAgent = (): WaitScope => ({ all: true });

/** The applied report as a waiting write prints it (`--json`: under the key `applied`). */
export type AppliedResult = AppliedResponse & { readonly ms: number };

/** Adds `--no-wait` and `--timeout` to a write command. */
export function waitOptions(command: Command): Command {
  return command.addOption(noWaitOption()).addOption(timeoutOption());
}

export const noWaitOption = (): Option =>
  new Option('--no-wait', 'return once the write is stored, without waiting for the agents');

export const timeoutOption = (): Option =>
  new Option(
    '--timeout <duration>',
    `how long to wait for the agents to apply it (default ${DEFAULT_WAIT_SECONDS}s)`,
  ).argParser(duration);

/** One answer of the agent per long poll: it holds each call at most this long. */
const POLL_MS = 20_000;

/**
 * Waits until the write at `revision` is settled for every agent concerned (final, and no FIP
 * held DOWN), or `timeoutSeconds` after `since` (when the write was answered), and measures from
 * `since` to the last answer.
 */
export async function waitApplied(
  api: ApiClient,
  revision: number,
  scope: WaitScope,
  timeoutSeconds: number,
  since: number,
): Promise<AppliedResult> {
  const deadline = since + timeoutSeconds * 1000;
  for (;;) {
    const left = Math.max(0, Math.min(POLL_MS, deadline - performance.now()));
    const report = await api.applied({
      revision: String(revision),
      ...(scope.fip !== undefined ? { fip: scope.fip } : {}),
      ...(scope.pool !== undefined ? { pool: scope.pool } : {}),
      ...(scope.nodes && scope.nodes.length > 0 ? { nodes: scope.nodes.join(',') } : {}),
      ...(scope.all ? { all: 'true' as const } : {}),
      wait: `${Math.ceil(left)}ms`,
    });
    const ms = Math.round(performance.now() - since);
    if (settled(report) || performance.now() >= deadline) return { ...report, ms };
  }
}

/**
 * `applied on gw and home in 140 ms`; nothing concerned: `no agent had anything to apply`. A FIP
 * its gateway still holds DOWN when the wait ended gets a second line with the gateway's reason:
 * the write is carried out, and the FIP turns ACTIVE without anything more to do.
 */
export function appliedLine(r: AppliedResult, fip?: string): string {
  if (r.agents.length === 0) return `stored at revision ${r.revision}: no agent has it to apply\n`;
  const line = `applied on ${nodeList(r.agents.map((a) => a.node))} in ${r.ms} ms\n`;
  const held = r.agents
    .filter((a) => a.held !== undefined)
    .map((a) => `${a.node} holds ${fip ?? 'the FIP'} DOWN: ${a.held}\n`);
  if (held.length === 0) return line;
  const follow = fip !== undefined ? ` (\`ipferry fip show ${fip}\` follows it)` : '';
  return `${line}${held.join('')}it turns ACTIVE on its own${follow}\n`;
}

/** The error a report that is not `applied` ends the command with. */
export function notApplied(r: AppliedResult, timeoutSeconds: number): IpferryError {
  if (r.outcome === 'pending') {
    const laggards = r.agents.filter((a) => a.state === 'pending').map((a) => a.node);
    return new IpferryError('IPF_E_APPLY_TIMEOUT', {
      revision: String(r.revision),
      nodes: nodeList(laggards),
      timeout: `${timeoutSeconds} s`,
    });
  }
  const failed = r.agents.filter((a) => a.state === 'error' || a.state === 'unreachable');
  const reason = failed
    .map((a) => `${a.node}: ${a.state.toUpperCase()}${a.message ? `: ${a.message}` : ''}`)
    .join('; ');
  return new IpferryError('IPF_E_NOT_APPLIED', { revision: String(r.revision), reason });
}
