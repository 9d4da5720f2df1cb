/**
 * The diff between two lists of elements — what to add, replace and remove — and what a list
 * holds after a diff: the one comparison the reconcile loop, every dataplane and the plan use.
 * Elements compare by kind (KINDS order), then key; a replace is the same key with another
 * value.
 */
import { compareAddressText } from '../core/address.js';
import { HOST_OWNER, type IntentElement, KINDS } from './elements.js';

/**
 * The elements sorted by compareElements, one per id (the last given, as a map would keep it).
 * Kinds first by a stable bucket pass, then each kind by key: a one-FIP change among 100,000
 * FIPs recompiles 300,000 elements, and a map keyed by id strings cost more than all the rest.
 */
export function sortUnique(elements: readonly IntentElement[]): IntentElement[] {
  const buckets: IntentElement[][] = Object.keys(KINDS).map(() => []);
  for (const e of elements) buckets[KINDS[e.kind].order]!.push(e);
  const out: IntentElement[] = [];
  for (const bucket of buckets) {
    bucket.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    for (let i = 0; i < bucket.length; i++) {
      // Array.prototype.sort is stable: the last of equal keys is the last given.
      if (i + 1 < bucket.length && bucket[i]!.key === bucket[i + 1]!.key) continue;
      out.push(bucket[i]!);
    }
  }
  return out;
}

export function compareElements(a: IntentElement, b: IntentElement): number {
  // Neighbours mostly share their kind: skip the table lookup then (sorting 300,000 elements).
  if (a.kind !== b.kind) return KINDS[a.kind].order - KINDS[b.kind].order;
  return a.key < b.key ? -1 : a.key > b.key ? 1 : 0;
}

export function elementId(e: Pick<IntentElement, 'kind' | 'key'>): string {
  return `${e.kind} ${e.key}`;
}

/** The minimal change from `observed` to `desired`: elements to add, to replace, to remove. */
export interface IntentDiff {
  readonly add: readonly IntentElement[];
  readonly replace: readonly { readonly from: IntentElement; readonly to: IntentElement }[];
  readonly remove: readonly IntentElement[];
}

export function diffIntent(
  desired: readonly IntentElement[],
  observed: readonly IntentElement[],
): IntentDiff {
  // Both sides are usually sorted already (compile's output, and what the last apply left):
  // then one merge walk finds the difference without building an id string and a map entry
  // per element, which is what a one-FIP change among 100,000 spent most of its time on.
  if (strictlySorted(desired) && strictlySorted(observed)) return mergeDiff(desired, observed);
  return diffById(desired, observed);
}

/**
 * The general diff, for lists in any order (duplicates: the last of an id counts): maps of
 * element ids. diffIntent's merge walk must always agree with it (test/unit/core-intent.test.ts).
 */
export function diffById(
  desired: readonly IntentElement[],
  observed: readonly IntentElement[],
): IntentDiff {
  const have = new Map(observed.map((e) => [elementId(e), e]));
  const want = new Map(desired.map((e) => [elementId(e), e]));
  const add: IntentElement[] = [];
  const replace: { from: IntentElement; to: IntentElement }[] = [];
  for (const [id, e] of want) {
    const old = have.get(id);
    if (!old) add.push(e);
    else if (old.value !== e.value) replace.push({ from: old, to: e });
  }
  const remove = [...have].filter(([id]) => !want.has(id)).map(([, e]) => e);
  return { add, replace, remove };
}

/**
 * Lists known to be sorted by compareElements with one element per id: compile's own output,
 * which nobody changes in place (HostIntent.elements is readonly), so diffIntent need not walk
 * it to find out.
 */
const SORTED = new WeakSet<readonly IntentElement[]>();

export function knownSorted(elements: IntentElement[]): readonly IntentElement[] {
  SORTED.add(elements);
  return elements;
}

/** Sorted by compareElements, one element per id. */
function strictlySorted(xs: readonly IntentElement[]): boolean {
  if (SORTED.has(xs)) return true;
  for (let i = 1; i < xs.length; i++) if (compareElements(xs[i - 1]!, xs[i]!) >= 0) return false;
  return true;
}

/**
 * diffIntent of two strictly sorted lists, with the same result as the map-based walk. An
 * element both lists hold (compile reuses a FIP's unchanged elements) is equal without
 * comparing its text.
 */
function mergeDiff(
  desired: readonly IntentElement[],
  observed: readonly IntentElement[],
): IntentDiff {
  const add: IntentElement[] = [];
  const replace: { from: IntentElement; to: IntentElement }[] = [];
  const remove: IntentElement[] = [];
  let i = 0;
  let j = 0;
  while (i < desired.length && j < observed.length) {
    const to = desired[i]!;
    const from = observed[j]!;
    const order = to === from ? 0 : compareElements(to, from);
    if (order < 0) {
      add.push(to);
      i++;
    } else if (order > 0) {
      remove.push(from);
      j++;
    } else {
      if (from.value !== to.value) replace.push({ from, to });
      i++;
      j++;
    }
  }
  while (i < desired.length) add.push(desired[i++]!);
  while (j < observed.length) remove.push(observed[j++]!);
  return { add, replace, remove };
}

/** What a dataplane holds after `diff` was applied to `observed`. */
export function applyDiff(observed: readonly IntentElement[], diff: IntentDiff): IntentElement[] {
  const gone = [...diff.remove, ...diff.replace.map((r) => r.from)];
  const put = [...diff.add, ...diff.replace.map((r) => r.to)];
  // The usual case, a small diff to a sorted list: two merge walks rather than a map of ids.
  if (strictlySorted(observed))
    return mergePut(mergeGone(observed, sortUnique(gone)), sortUnique(put));
  return applyById(observed, diff);
}

/** applyDiff for a list in any order, by a map of element ids; its merge walks must agree. */
export function applyById(observed: readonly IntentElement[], diff: IntentDiff): IntentElement[] {
  const state = new Map(observed.map((e) => [elementId(e), e]));
  for (const e of [...diff.remove, ...diff.replace.map((r) => r.from)]) state.delete(elementId(e));
  for (const e of [...diff.add, ...diff.replace.map((r) => r.to)]) state.set(elementId(e), e);
  return [...state.values()].sort(compareElements);
}

/** The strictly sorted `xs` without the ids of the strictly sorted `gone`. */
function mergeGone(xs: readonly IntentElement[], gone: readonly IntentElement[]): IntentElement[] {
  const out: IntentElement[] = [];
  let j = 0;
  for (const x of xs) {
    while (j < gone.length && compareElements(gone[j]!, x) < 0) j++;
    if (j < gone.length && compareElements(gone[j]!, x) === 0) continue;
    out.push(x);
  }
  return out;
}

/** Two strictly sorted lists in one; on equal ids `put`'s element wins. */
function mergePut(xs: readonly IntentElement[], put: readonly IntentElement[]): IntentElement[] {
  const out: IntentElement[] = [];
  let j = 0;
  for (const x of xs) {
    while (j < put.length && compareElements(put[j]!, x) < 0) out.push(put[j++]!);
    if (j < put.length && compareElements(put[j]!, x) === 0) continue;
    out.push(x);
  }
  while (j < put.length) out.push(put[j++]!);
  return out;
}

export function isEmptyDiff(d: IntentDiff): boolean {
  return d.add.length === 0 && d.replace.length === 0 && d.remove.length === 0;
}

/** Restricts a diff to the elements of one FIP (to isolate a failing FIP). */
export function diffFor(d: IntentDiff, owner: string): IntentDiff {
  return {
    add: d.add.filter((e) => e.owner === owner),
    replace: d.replace.filter((r) => r.to.owner === owner || r.from.owner === owner),
    remove: d.remove.filter((e) => e.owner === owner),
  };
}

/** Owners in the order their parts must be applied: the host's, the pools', then each FIP's. */
export function diffOwners(d: IntentDiff): string[] {
  const owners = new Set([
    ...d.add.map((e) => e.owner),
    ...d.replace.map((r) => r.to.owner),
    ...d.remove.map((e) => e.owner),
  ]);
  const rank = (o: string): number => (o === HOST_OWNER ? 0 : o.startsWith('pool:') ? 1 : 2);
  return [...owners].sort((a, b) => rank(a) - rank(b) || compareAddressText(a, b));
}
