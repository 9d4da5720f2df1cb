/**
 * Pass reports on demand (keys.ts, PASS_WANTED_KEY): a write that waits asks the agents it
 * concerns for their latest reconcile pass; each answers once it has passed the write's
 * revision, by writing its health record. Pure: the hub's side is service/applied.ts, the
 * agent's agent/pass-wants.ts.
 */
import type { PassReport } from './model.js';
import { checkName, Problems } from './validate.js';

/** The newest revision asked for, and by whom: `nodes` absent means every agent. */
export interface PassWanted {
  readonly revision: number;
  readonly nodes?: readonly string[];
}

/** The stored record as the agents read it: undefined (ignored) when it is not one. */
export function decodePassWanted(value: unknown): PassWanted | undefined {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined;
  const { revision, nodes } = value as { revision?: unknown; nodes?: unknown };
  if (typeof revision !== 'number' || !Number.isSafeInteger(revision) || revision < 1) {
    return undefined;
  }
  if (nodes === undefined) return { revision };
  if (!Array.isArray(nodes)) return undefined;
  const p = new Problems();
  const names = nodes.map((n, i) => checkName(p, `nodes[${i}]`, n));
  if (!p.ok) return undefined;
  return { revision, nodes: names as string[] };
}

/**
 * What the hub stores so that both the standing ask and this one are answered: the newer
 * revision (an agent answering it reports any older one too), and every node either names.
 * Undefined when the standing ask covers this one already: nothing to write.
 */
export function mergePassWanted(
  standing: PassWanted | undefined,
  ask: PassWanted,
): PassWanted | undefined {
  if (!standing) return ask;
  const covers =
    standing.revision >= ask.revision &&
    (standing.nodes === undefined ||
      (ask.nodes !== undefined && ask.nodes.every((n) => standing.nodes!.includes(n))));
  if (covers) return undefined;
  const revision = Math.max(standing.revision, ask.revision);
  if (standing.nodes === undefined || ask.nodes === undefined) return { revision };
  return { revision, nodes: [...new Set([...standing.nodes, ...ask.nodes])].sort() };
}

/**
 * Whether `node` answers `wanted` now: it is asked, it has passed the revision, and it has not
 * answered this revision (or a later one) yet.
 */
export function answersPassWanted(
  node: string,
  wanted: PassWanted | undefined,
  lastPass: PassReport | undefined,
  answered: number,
): boolean {
  if (!wanted || !lastPass) return false;
  if (wanted.nodes !== undefined && !wanted.nodes.includes(node)) return false;
  return lastPass.revision >= wanted.revision && answered < wanted.revision;
}
