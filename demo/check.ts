/** How a demo step fails: a check that did not hold, reported as the step's failure. */

export class DemoFailure extends Error {}

export function check(condition: unknown, message: string): asserts condition {
  if (!condition) throw new DemoFailure(message);
}

export function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
