/** A demo step: a title, what it does, and the heading of the part it starts (if it does). */
import type { Demo } from './context.js';

export interface Step {
  readonly title: string;
  readonly run: (d: Demo) => Promise<void>;
  readonly heading?: string;
}

/** A part of the demo: its heading is printed before its first step. */
export function part(heading: string, steps: readonly Step[]): Step[] {
  return steps.map((s, i) => (i === 0 ? { ...s, heading } : s));
}
