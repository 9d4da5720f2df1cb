/**
 * Plain-text rendering for human output: aligned tables and `key: value` blocks. No colours and
 * no trailing spaces, so the output diffs cleanly and survives `grep`/`awk`.
 */

/** Placeholder for an empty cell, so columns stay countable for `awk`. */
export const EMPTY = '-';

export function cell(value: string | number | boolean | undefined | null): string {
  if (value === undefined || value === null || value === '') return EMPTY;
  if (typeof value === 'boolean') return value ? 'yes' : 'no';
  return String(value);
}

/** Columns separated by two spaces, headers in capitals, one line per row, newline-terminated. */
export function table(headers: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]): string =>
    widths
      .map((w, i) => (cells[i] ?? '').padEnd(w))
      .join('  ')
      .trimEnd();
  return [line(headers.map((h) => h.toUpperCase())), ...rows.map(line)].join('\n') + '\n';
}

export type DetailValue = string | readonly string[];

/**
 * `key: value` lines with values aligned; a list value puts its first item on the key's line and
 * the rest under it.
 */
export function details(pairs: readonly (readonly [string, DetailValue])[]): string {
  const width = Math.max(0, ...pairs.map(([k]) => k.length + 1));
  const lines: string[] = [];
  for (const [key, value] of pairs) {
    const items = typeof value === 'string' ? [value] : value.length > 0 ? value : [EMPTY];
    items.forEach((item, i) => {
      const label = i === 0 ? `${key}:` : '';
      lines.push(`${label.padEnd(width)}  ${item === '' ? EMPTY : item}`.trimEnd());
    });
  }
  return lines.join('\n') + '\n';
}

export function json(data: unknown): string {
  return JSON.stringify(data, null, 2) + '\n';
}

export function portText(port: number, portEnd: number): string {
  return port === portEnd ? String(port) : `${port}-${portEnd}`;
}

/** `addr:port`, bracketing IPv6 so the port stays readable. */
export function hostPort(address: string, port: string): string {
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
}

/** Counts up to this are written out in digits; beyond it (IPv6 prefixes) as powers of two. */
const LARGE = 2n ** 32n;
/** More power-of-two terms than this are rounded instead (a range of odd length). */
const MAX_TERMS = 3;

/**
 * An address count (a decimal string, exact, as the API sends it) for people: digits up to 2^32,
 * else the powers of two it is made of plus the small rest, as prefixes add up (`2^64 + 16` for
 * a /64 and a /28), or `≈ 2^64.6` when that would take more than three terms. `--json` keeps the
 * exact decimal.
 */
export function countText(decimal: string): string {
  if (!/^\d+$/.test(decimal)) return decimal;
  const n = BigInt(decimal);
  if (n <= LARGE) return decimal;
  const powers: number[] = [];
  for (let bit = n.toString(2).length - 1; bit >= 32; bit--) {
    if ((n >> BigInt(bit)) & 1n) powers.push(bit);
  }
  const rest = n % LARGE;
  if (powers.length > MAX_TERMS) {
    const bits = n.toString(2).length;
    // The top 53 bits are all a double can hold; they are plenty for one decimal.
    const top = Number(n >> BigInt(Math.max(0, bits - 53)));
    return `≈ 2^${(Math.log2(top) + Math.max(0, bits - 53)).toFixed(1)}`;
  }
  return [...powers.map((p) => `2^${p}`), ...(rest > 0n ? [rest.toString()] : [])].join(' + ');
}
