/**
 * Routes and policy rules (`route` and `rule` elements, ../iproute/routing.ts renders and reads
 * them). The add phase is one `ip -batch` per family: routes with `route replace` (a changed
 * route is changed in place), then rules. The delete phase takes rules, then routes, out one by
 * one, tolerating what is already gone (the routes of a deleted tunnel go with its device).
 * Undo knows each line's inverse, rendered with the line when the change is planned: a route
 * added is deleted, a route replaced gets its old form back, a rule added is deleted, and what a
 * deletion removed is added again.
 */
import { elementId, type IntentDiff } from '../../intent/diff.js';
import type { IntentElement } from '../../intent/elements.js';
import {
  observeRouting,
  ROUTING_KINDS,
  type RoutingLine,
  routingLine,
  routingLines,
} from '../iproute/routing.js';
import { ipBatch, ipBatchForce } from './ip-batch.js';
import { type Exec, type Manager, type Phase, undoEach } from './manager.js';

/** What `ip` says when a deletion finds nothing to delete. */
const ALREADY_GONE = (stderr: string): boolean =>
  /No such process|Cannot find device|No such device|Cannot assign requested address|does not exist/.test(
    stderr,
  );

/** A line and the line that takes it back, both rendered when the change is planned. */
interface PlannedLine extends RoutingLine {
  readonly undo: string;
}

interface RoutingChange {
  readonly op: 'add' | 'del';
  readonly lines: readonly PlannedLine[];
}

export class RoutingManager implements Manager<RoutingChange> {
  readonly name = 'routing';
  readonly kinds = ROUTING_KINDS;

  constructor(private readonly exec: Exec) {}

  async observe(): Promise<IntentElement[]> {
    return observeRouting(this.exec);
  }

  /**
   * Renders every line, and the line that would take it back, now: an element whose values do
   * not parse refuses the change before any step of the apply runs.
   */
  plan(diff: IntentDiff, phase: Phase): RoutingChange | undefined {
    const ours = (e: IntentElement): boolean => ROUTING_KINDS.has(e.kind);
    if (phase === 'add') {
      const put = [...diff.add, ...diff.replace.map((r) => r.to)].filter(ours);
      // A route replaced in place gets its old form back; anything else added is deleted.
      const replaces = new Map(
        diff.replace.filter((r) => r.to.kind === 'route').map((r) => [elementId(r.to), r.from]),
      );
      const lines = routingLines('add', put).map((l) => {
        const old = replaces.get(elementId(l.element));
        return { ...l, undo: old ? routingLine('add', old) : routingLine('del', l.element) };
      });
      return lines.length > 0 ? { op: 'add', lines } : undefined;
    }
    // A changed route was replaced in place; changed rules go out after the new ones came in.
    const gone = [
      ...diff.remove,
      ...diff.replace.map((r) => r.from).filter((e) => e.kind !== 'route'),
    ].filter(ours);
    if (gone.length === 0) return undefined;
    const lines = routingLines('del', gone).map((l) => ({
      ...l,
      undo: routingLine('add', l.element),
    }));
    return { op: 'del', lines };
  }

  async apply(change: RoutingChange): Promise<RoutingChange> {
    return change.op === 'add' ? this.add(change) : this.delete(change);
  }

  async undo(done: RoutingChange): Promise<void> {
    const back = [...done.lines].reverse().map((l) => ({ family: l.family, line: l.undo }));
    // Consecutive lines of one family go in one batch; the order across families is kept.
    const runs: { family: 4 | 6; lines: string[] }[] = [];
    for (const { family, line } of back) {
      const last = runs.at(-1);
      if (last?.family === family) last.lines.push(line);
      else runs.push({ family, lines: [line] });
    }
    await undoEach(runs.map((r) => () => ipBatchForce(this.exec, [`-${r.family}`], r.lines)));
  }

  /** One batch per family; when one stops at a line, every line before it is taken back. */
  private async add(change: RoutingChange): Promise<RoutingChange> {
    const done: PlannedLine[] = [];
    for (const family of [4, 6] as const) {
      const lines = change.lines.filter((l) => l.family === family);
      const result = await ipBatch(
        this.exec,
        [`-${family}`],
        lines.map((l) => l.line),
      );
      done.push(...lines.slice(0, result.ok ? lines.length : result.done));
      if (!result.ok) {
        await this.undo({ ...change, lines: done }).catch(() => undefined);
        throw result.error;
      }
    }
    return change;
  }

  /** Line by line; returns only what was there to delete, which is what undo puts back. */
  private async delete(change: RoutingChange): Promise<RoutingChange> {
    const done: PlannedLine[] = [];
    try {
      for (const l of change.lines) {
        const { stderr } = await this.exec('ip', [`-${l.family}`, ...l.args], {
          tolerate: ALREADY_GONE,
        });
        if (!ALREADY_GONE(stderr)) done.push(l);
      }
    } catch (error) {
      await this.undo({ ...change, lines: done }).catch(() => undefined);
      throw error;
    }
    return { ...change, lines: done };
  }
}
