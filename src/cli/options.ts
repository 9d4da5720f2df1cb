/** Option parsers shared by the commands. They reject only what is malformed as a flag; the
 * server validates meaning and reports every problem at once. */
import { InvalidArgumentError } from 'commander';

/** Repeatable option: each occurrence appends. */
export function collect(value: string, previous: readonly string[] = []): string[] {
  return [...previous, value];
}

export function port(value: string): number {
  if (!/^\d{1,5}$/.test(value) || Number(value) > 65535) {
    throw new InvalidArgumentError('Expected a port number 0-65535.');
  }
  return Number(value);
}

/** `P` or `P-Q`, passed on as text. */
export function portRange(value: string): string {
  if (!/^\d{1,5}(-\d{1,5})?$/.test(value)) {
    throw new InvalidArgumentError('Expected a port P or a range P-Q.');
  }
  return value;
}
