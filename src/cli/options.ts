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

const DURATION_UNITS: Readonly<Record<string, number>> = { s: 1, m: 60, h: 3600, d: 86400 };

/** `90s`, `30m`, `1h`, `2d` or plain seconds, as whole seconds. */
export function duration(value: string): number {
  const m = /^(\d{1,7})([smhd]?)$/.exec(value.trim());
  const seconds = m ? Number(m[1]) * (DURATION_UNITS[m[2] || 's'] ?? 1) : NaN;
  if (!(seconds > 0)) {
    throw new InvalidArgumentError('Expected a duration such as 90s, 30m, 1h or 2d.');
  }
  return seconds;
}

/**
 * A duration (as `duration`) of at most `max` seconds. The agent enforces its own limits; checked
 * here too so that the error names the flag rather than the API field it becomes.
 */
export function durationAtMost(max: number): (value: string) => number {
  return (value) => {
    const seconds = duration(value);
    if (seconds > max) {
      const days = max % 86400 === 0 ? ` (${max / 86400} days)` : '';
      throw new InvalidArgumentError(`At most ${max} seconds${days}.`);
    }
    return seconds;
  };
}
