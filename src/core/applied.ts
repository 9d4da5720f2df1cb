/**
 * Whether a write has reached the kernels it concerns: the agents concerned (a pool's gateway,
 * the nodes a FIP or its forwards go to) and what each last reported, judged against the write's
 * store revision. Pure: the service (service/applied.ts) reads the reports and waits for more.
 */
import type { FipStatus, PassReport } from './model.js';

export type { PassReport };

export type AgentAppliedState = 'applied' | 'pending' | 'error' | 'unreachable';

export interface AgentApplied {
  readonly node: string;
  readonly state: AgentAppliedState;
  /** The revision the agent last reported as applied. */
  readonly revision?: number;
  /** The agent's own words for an error, or why it cannot answer. */
  readonly message?: string;
  /**
   * Applied, and the FIP held DOWN for this reason (a new tunnel's path being measured before
   * anything is routed into it): the gateway turns it ACTIVE on its own, with no further write.
   */
  readonly held?: string;
}

/**
 * `applied` once every agent concerned is (some may hold a FIP DOWN: see `settled`);
 * `error`/`unreachable` as soon as one is.
 */
export type AppliedOutcome = 'applied' | 'pending' | 'error' | 'unreachable';

export interface AppliedReport {
  readonly revision: number;
  readonly outcome: AppliedOutcome;
  readonly agents: readonly AgentApplied[];
}

/** One agent whose kernel the write concerns, with what it last reported. */
export interface ConcernedAgent {
  readonly node: string;
  readonly alive: boolean;
  readonly pass?: PassReport;
  /**
   * For a FIP's gateway while the FIP exists: its status must describe the record at
   * `fipRevision` or later (the status carries the state the kernel took: ERROR with why).
   */
  readonly fip?: { readonly fipRevision: number; readonly status?: FipStatus };
}

export function agentApplied(revision: number, a: ConcernedAgent): AgentApplied {
  if (!a.alive) {
    return { node: a.node, state: 'unreachable', message: 'its agent is not alive' };
  }
  if (a.fip) return byFipStatus(a.node, a.fip.fipRevision, a.fip.status);
  const pass = a.pass;
  if (!pass || pass.revision < revision) {
    return { node: a.node, state: 'pending', ...(pass ? { revision: pass.revision } : {}) };
  }
  if (pass.errors && pass.errors.length > 0) {
    return {
      node: a.node,
      state: 'error',
      revision: pass.revision,
      message: pass.errors.join('; '),
    };
  }
  return { node: a.node, state: 'applied', revision: pass.revision };
}

function byFipStatus(node: string, fipRevision: number, status?: FipStatus): AgentApplied {
  if (!status || status.revision < fipRevision) {
    return { node, state: 'pending', ...(status ? { revision: status.revision } : {}) };
  }
  const base = { node, revision: status.revision };
  if (status.state === 'ERROR')
    return { ...base, state: 'error', message: status.message ?? 'ERROR' };
  if (status.state === 'UNREACHABLE') {
    return {
      ...base,
      state: 'unreachable',
      message: status.message ?? 'the tunnel does not answer',
    };
  }
  // The gateway writes DOWN with a reason only while it holds an associated FIP back.
  if (status.state === 'DOWN' && status.message) {
    return { ...base, state: 'applied', held: status.message };
  }
  return { ...base, state: 'applied' };
}

export function appliedReport(revision: number, agents: readonly ConcernedAgent[]): AppliedReport {
  const judged = agents.map((a) => agentApplied(revision, a));
  return { revision, outcome: outcomeOf(judged), agents: judged };
}

function outcomeOf(agents: readonly AgentApplied[]): AppliedOutcome {
  for (const state of ['error', 'unreachable', 'pending'] as const) {
    if (agents.some((a) => a.state === state)) return state;
  }
  return 'applied';
}

/**
 * Nothing more to wait for: an answer other than `applied`, or applied with no FIP held DOWN.
 * A held FIP is worth waiting for while there is time (the usual wait ends ACTIVE); when time
 * runs out it is still applied, and says what it waits for.
 */
export function settled(report: AppliedReport): boolean {
  return report.outcome !== 'pending' && !report.agents.some((a) => a.held !== undefined);
}

/** `gw and home`, `gw, home and vps`: the agents that applied, for one line of output. */
export function nodeList(names: readonly string[]): string {
  if (names.length <= 1) return names[0] ?? '';
  return `${names.slice(0, -1).join(', ')} and ${names[names.length - 1]}`;
}
