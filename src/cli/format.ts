/**
 * Plain-text rendering for human output: aligned tables and `key: value` blocks. No colours and
 * no trailing spaces, so the output diffs cleanly and survives `grep`/`awk`.
 */
import { createHash } from 'node:crypto';
import { isTincKey } from '../core/tunnel.js';

/** Placeholder for an empty cell, so columns stay countable for `awk`. */
export const EMPTY = '-';

/* eslint-disable no-control-regex -- matching control characters is the point */
/**
 * Characters a terminal acts on instead of showing: C0 controls and DEL (ESC starts colour,
 * cursor and window-title sequences; CR, BS and LF overwrite or fake lines), C1 controls
 * (U+0080–U+009F: U+009B is a CSI on many terminals), the bidirectional controls (U+061C,
 * U+200E–U+200F, U+202A–U+202E, U+2066–U+2069: they reorder the text after them, so an address
 * can read as another) and the line and paragraph separators U+2028–U+2029. The API refuses them
 * in a description (src/core/validate.ts), but a record in a store, an older agent or a server
 * that is not ipferry may send anything, and an error may quote it.
 */
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]/gu;
/** UNSAFE but for the line feed: for a whole text, whose lines stay lines. */
const UNSAFE_IN_LINES =
  /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]/gu;
/* eslint-enable no-control-regex */

const escaped = (c: string): string => `\\u{${(c.codePointAt(0) ?? 0).toString(16)}}`;

/**
 * One value for a terminal: every character of UNSAFE written as a visible `\u{…}` escape
 * (ESC as `\u{1b}`, RIGHT-TO-LEFT OVERRIDE as `\u{202e}`), newlines included, so a value stays
 * one cell of one line. The tables and `key: value` blocks below write every value through it,
 * and CliContext.print writes whole outputs through terminalLines; an escape is printable, so a
 * second pass changes nothing. `--json` prints values exactly as they are.
 */
export function terminalText(value: string): string {
  return value.replace(UNSAFE, escaped);
}

/** A whole text for a terminal: as terminalText, but its line breaks stay line breaks. */
export function terminalLines(text: string): string {
  return text.replace(UNSAFE_IN_LINES, escaped);
}

export function cell(value: string | number | boolean | undefined | null): string {
  if (value === undefined || value === null || value === '') return EMPTY;
  if (typeof value === 'boolean') return value ? 'yes' : 'no';
  return terminalText(String(value));
}

/** Columns separated by two spaces, headers in capitals, one line per row, newline-terminated. */
export function table(
  headers: readonly string[],
  unsafeRows: readonly (readonly string[])[],
): string {
  const rows = unsafeRows.map((r) => r.map(terminalText));
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
      lines.push(`${label.padEnd(width)}  ${item === '' ? EMPTY : terminalText(item)}`.trimEnd());
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

/** Bytes for people: `512 B`, `1.5 KiB`, `3.2 MiB`, `1.1 GiB`. */
export function bytesText(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${n} B` : `${value.toFixed(1)} ${units[unit] ?? ''}`;
}

/**
 * The SHA-256 of a tinc node's RSA public key (the DER inside its PEM), its first 16 hex
 * digits: what tells two keys apart at a glance, where the PEM block is 8 lines.
 */
export function tincKeyFingerprint(pem: string): string {
  const der = Buffer.from(pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64');
  return createHash('sha256').update(der).digest('hex').slice(0, 16);
}

/** A tunnel public key for human output: WireGuard's as it is, tinc's by fingerprint. */
export function keyText(key: string): string {
  return isTincKey(key)
    ? `RSA SHA256:${tincKeyFingerprint(key)} (tinc; --json shows the whole key)`
    : key;
}

/** A key short enough to name a peer in a line: 8 characters, or tinc's fingerprint. */
export function shortKey(key: string): string {
  return isTincKey(key) ? `RSA SHA256:${tincKeyFingerprint(key)}` : `${key.slice(0, 8)}…`;
}
