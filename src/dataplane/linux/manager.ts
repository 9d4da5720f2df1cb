/**
 * The Linux dataplane's managers: one per family of elements (sysctls, claims, routes and rules,
 * the nftables table, connection tracking). Each reads its share of the kernel, makes its share
 * of a diff, and can take that change back. LinuxDataplane.apply only orders their steps; when
 * one fails, `applySteps` undoes the steps already done, last first, so a failed apply leaves
 * the kernel as it found it.
 *
 * A manager reaches the kernel only through what it is given: an `Exec` for the command-line
 * tools, or a narrower seam of its own (`NftTransport` in ./nft.ts). Another way to reach the
 * kernel (libnftables, netlink) is another implementation of that seam, or of `Manager` itself,
 * behind the same shape.
 */
import { IpferryError } from '../../core/errors.js';
import type { IntentDiff } from '../../intent/diff.js';
import type { ElementKind, IntentElement } from '../../intent/elements.js';
import type { ExecResult, RunOptions } from '../exec.js';

/** Runs a kernel tool (inside the dataplane's namespace, if it has one); never a shell. */
export type Exec = (
  file: string,
  args: readonly string[],
  options?: RunOptions,
) => Promise<ExecResult>;

/**
 * The two halves of an apply: everything added (or changed in place) first, so nothing is ever
 * briefly missing, then everything that went away.
 */
export type Phase = 'add' | 'delete';

export interface Manager<Plan, Done = Plan> {
  /** Names its steps in errors and in the test hook (`${name}-${phase}`). */
  readonly name: string;
  /** The element kinds it holds. */
  readonly kinds: ReadonlySet<ElementKind>;
  /** The elements of its kinds the kernel holds; `wanted` as in Dataplane.observe. */
  observe?(wanted: readonly IntentElement[]): Promise<IntentElement[]>;
  /** Its part of `diff` in `phase`; undefined when it has nothing to do then. */
  plan(diff: IntentDiff, phase: Phase): Plan | undefined;
  /**
   * Makes the change, or, when the kernel refuses part of it, takes back the part that took
   * effect and throws. Returns what `undo` needs (what the kernel held before, what it did).
   */
  apply(plan: Plan): Promise<Done>;
  /** Takes back a change `apply` made in full. Best effort: throws what it could not undo. */
  undo(done: Done): Promise<void>;
}

/** One step of an apply, its manager and plan bound. */
export interface Step {
  readonly name: string;
  /** Makes the change; resolves to how to take it back. */
  run(): Promise<() => Promise<void>>;
}

/** The step of `manager` for `phase` of `diff`, or none when it has nothing to do. */
export function stepOf<P, D>(manager: Manager<P, D>, diff: IntentDiff, phase: Phase): Step[] {
  const plan = manager.plan(diff, phase);
  if (plan === undefined) return [];
  return [
    {
      name: `${manager.name}-${phase}`,
      run: async () => {
        const done = await manager.apply(plan);
        return () => manager.undo(done);
      },
    },
  ];
}

/** Called before each step runs: tests make a step fail here. */
export type BeforeStep = (step: string) => void | Promise<void>;

/**
 * Runs the steps in order. When one fails, the steps done before it are undone, last first, and
 * the step's error is thrown as it was. Should an undo fail too, the kernel is neither as it was
 * nor as asked: the error then says what could not be taken back.
 */
export async function applySteps(steps: readonly Step[], beforeStep?: BeforeStep): Promise<void> {
  const undos: { name: string; undo: () => Promise<void> }[] = [];
  try {
    for (const step of steps) {
      await beforeStep?.(step.name);
      undos.push({ name: step.name, undo: await step.run() });
    }
  } catch (error) {
    const left: string[] = [];
    for (const { name, undo } of undos.reverse()) {
      await undo().catch((e: unknown) => left.push(`${name}: ${(e as Error).message}`));
    }
    if (left.length === 0) throw error;
    throw new IpferryError('IPF_E_DATAPLANE', {
      reason: `${(error as Error).message}; taking back the steps before it failed too (${left.join('; ')})`,
    });
  }
}

/**
 * Runs every undo action, even when one fails, and throws the failures together: a step's
 * undo takes back as much as it can.
 */
export async function undoEach(actions: readonly (() => Promise<unknown>)[]): Promise<void> {
  const failures: string[] = [];
  for (const action of actions) {
    await action().catch((e: unknown) => failures.push((e as Error).message));
  }
  if (failures.length > 0) {
    throw new IpferryError('IPF_E_DATAPLANE', { reason: failures.join('; ') });
  }
}
