/**
 * A strict in-memory dataplane. It keeps state like a kernel, refuses what a kernel would
 * refuse (removing what is not there, adding what already is, mapping a FIP onto itself, two
 * FIPs claiming one NAT target), applies a diff all-or-nothing, and prints its state with
 * `dump()` so tests can compare whole states. Tests can also make it refuse an element the way
 * a kernel would refuse a rule, to exercise ERROR paths.
 */
import { IpferryError } from '../core/errors.js';
import { compareElements, elementId, type IntentDiff, type IntentElement } from '../core/intent.js';
import type { Dataplane } from './dataplane.js';

export class FakeDataplane implements Dataplane {
  readonly kind = 'fake';
  private elements = new Map<string, IntentElement>();
  private refusals: { match: (e: IntentElement) => boolean; reason: string }[] = [];
  /** Number of successful apply() calls and elements they touched (for tests and benchmarks). */
  applies = 0;
  lastApplySize = 0;

  async observe(): Promise<IntentElement[]> {
    await Promise.resolve();
    return [...this.elements.values()].sort(compareElements);
  }

  async apply(diff: IntentDiff): Promise<void> {
    await Promise.resolve();
    const next = new Map(this.elements);
    for (const e of diff.remove) this.take(next, e, 'remove');
    for (const { from, to } of diff.replace) {
      this.take(next, from, 'replace');
      this.put(next, to);
    }
    for (const e of diff.add) {
      if (next.has(elementId(e))) this.refuse(e, 'it already exists');
      this.put(next, e);
    }
    this.checkNatTargetsUnique(next);
    this.elements = next;
    this.applies++;
    this.lastApplySize = diff.add.length + diff.replace.length + diff.remove.length;
  }

  async close(): Promise<void> {
    await Promise.resolve();
  }

  /** Makes the next applies refuse matching elements with `reason`, like a kernel error. */
  refuseWhen(match: (e: IntentElement) => boolean, reason: string): void {
    this.refusals.push({ match, reason });
  }

  clearRefusals(): void {
    this.refusals = [];
  }

  /** Deletes one element behind the agent's back, as an operator with `nft delete element` would. */
  tamperRemove(kind: IntentElement['kind'], key: string): boolean {
    return this.elements.delete(elementId({ kind, key }));
  }

  dump(): string {
    return [...this.elements.values()]
      .sort(compareElements)
      .map((e) => `${e.kind} ${e.key} -> ${e.value}`)
      .join('\n');
  }

  private take(state: Map<string, IntentElement>, e: IntentElement, op: string): void {
    const id = elementId(e);
    const have = state.get(id);
    if (!have || have.value !== e.value) this.refuse(e, `cannot ${op}: no such element`);
    state.delete(id);
  }

  private put(state: Map<string, IntentElement>, e: IntentElement): void {
    if (e.kind === 'nat' && e.key === e.value.split(' ')[0])
      this.refuse(e, 'a FIP cannot be its own target');
    const refusal = this.refusals.find((r) => r.match(e));
    if (refusal) this.refuse(e, refusal.reason);
    state.set(elementId(e), e);
  }

  private checkNatTargetsUnique(state: Map<string, IntentElement>): void {
    const seen = new Map<string, string>();
    for (const e of state.values()) {
      if (e.kind !== 'nat') continue;
      const target = e.value.split(' ')[0] ?? e.value;
      const other = seen.get(target);
      if (other) this.refuse(e, `target ${target} is already the NAT target of ${other}`);
      seen.set(target, e.key);
    }
  }

  private refuse(e: IntentElement, reason: string): never {
    throw new IpferryError('IPF_E_DATAPLANE', {
      reason: `${e.kind} ${e.key} -> ${e.value}: ${reason}`,
    });
  }
}
