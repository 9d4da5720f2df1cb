/**
 * Addresses, prefixes, ranges and MACs in one canonical text form, so that a key in the store,
 * a row in a table and an element in a kernel map always spell an address the same way:
 * IPv4 dotted decimal without leading zeros, IPv6 compressed per RFC 5952 (lower case, longest
 * zero run as `::`). Sloppy inputs that libc would accept (`010.1.1.1`, `3232235777`, `1.1`,
 * `0x7f.1`) are refused: on a router, a silently reinterpreted address is an outage.
 */
import ipaddr from 'ipaddr.js';
import { IpferryError } from './errors.js';

export type Family = 4 | 6;

export interface Address {
  readonly family: Family;
  /** Canonical text form. */
  readonly text: string;
  /** The address as an unsigned integer (32 or 128 bits). */
  readonly value: bigint;
}

export interface Prefix {
  readonly family: Family;
  /** Canonical network address (host bits zero). */
  readonly network: Address;
  readonly length: number;
  /** Canonical `network/length`. */
  readonly text: string;
}

export interface AddressRange {
  readonly family: Family;
  readonly first: Address;
  readonly last: Address;
}

const DOTTED_QUAD =
  /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]\d|\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]\d|\d)){3}$/;
// Letters, digits, colons and at most one embedded dotted quad; no zone ids (%eth0): a zone
// makes no sense for a public address.
const IPV6_CHARS = /^[0-9a-fA-F:.]+$/;

export function bitsOf(family: Family): number {
  return family === 4 ? 32 : 128;
}

/** Parses an address strictly; returns undefined for anything not canonical-parsable. */
export function tryParseAddress(input: string): Address | undefined {
  const s = input.trim();
  if (s !== input || s.length === 0) return undefined;
  // The pattern admits only canonical quads (no leading zeros), so the input is the text.
  if (DOTTED_QUAD.test(s)) return { family: 4, text: s, value: BigInt(ipv4Number(s)) };
  if (!s.includes(':') || !IPV6_CHARS.test(s) || !ipaddr.IPv6.isValid(s)) return undefined;
  const embedded = s.lastIndexOf(':');
  const tail = s.slice(embedded + 1);
  if (!tail.includes('.')) return fromBytes(6, ipaddr.IPv6.parse(s).toByteArray());
  if (!DOTTED_QUAD.test(tail)) return undefined;
  // ipaddr.js reads the IPv4-compatible `::a.b.c.d` as `::ffff:a.b.c.d`: spell the quad in hex.
  const [q0, q1, q2, q3] = tail.split('.').map(Number) as [number, number, number, number];
  const hex = `${s.slice(0, embedded + 1)}${((q0 << 8) | q1).toString(16)}:${((q2 << 8) | q3).toString(16)}`;
  return fromBytes(6, ipaddr.IPv6.parse(hex).toByteArray());
}

export function parseAddress(input: string): Address {
  const address = tryParseAddress(input);
  if (!address) throw new IpferryError('IPF_E_BAD_ADDRESS', { input: quote(input) });
  return address;
}

export function canonicalAddress(input: string): string {
  return parseAddress(input).text;
}

export function addressFromValue(family: Family, value: bigint): Address {
  const bytes: number[] = [];
  let v = value;
  for (let i = 0; i < bitsOf(family) / 8; i++) {
    bytes.unshift(Number(v & 0xffn));
    v >>= 8n;
  }
  return fromBytes(family, bytes);
}

/**
 * Parses `ADDRESS/LENGTH`. With `strict`, host bits must be zero (a pool written as
 * 203.0.113.5/24 is almost always a typo); without, they are cleared.
 */
export function tryParsePrefix(input: string, strict = true): Prefix | undefined {
  const slash = input.indexOf('/');
  if (slash < 0) return undefined;
  const address = tryParseAddress(input.slice(0, slash));
  const lengthText = input.slice(slash + 1);
  if (!address || !/^(0|[1-9]\d{0,2})$/.test(lengthText)) return undefined;
  const length = Number(lengthText);
  const bits = bitsOf(address.family);
  if (length > bits) return undefined;
  const hostMask = (1n << BigInt(bits - length)) - 1n;
  if (strict && (address.value & hostMask) !== 0n) return undefined;
  const network = addressFromValue(address.family, address.value & ~hostMask);
  return { family: address.family, network, length, text: `${network.text}/${length}` };
}

export function prefixRange(prefix: Prefix): AddressRange {
  const size = 1n << BigInt(bitsOf(prefix.family) - prefix.length);
  return {
    family: prefix.family,
    first: prefix.network,
    last: addressFromValue(prefix.family, prefix.network.value + size - 1n),
  };
}

/** Parses `FIRST-LAST` (both of one family, FIRST ≤ LAST). */
export function tryParseRange(input: string): AddressRange | undefined {
  const parts = input.split('-');
  if (parts.length !== 2) return undefined;
  const first = tryParseAddress(parts[0] ?? '');
  const last = tryParseAddress(parts[1] ?? '');
  if (!first || !last || first.family !== last.family || first.value > last.value) return undefined;
  return { family: first.family, first, last };
}

export function rangeSize(range: AddressRange): bigint {
  return range.last.value - range.first.value + 1n;
}

export function rangeContains(range: AddressRange, address: Address): boolean {
  return (
    range.family === address.family &&
    address.value >= range.first.value &&
    address.value <= range.last.value
  );
}

/** The first address both ranges contain, if any. */
export function rangeOverlap(a: AddressRange, b: AddressRange): Address | undefined {
  if (a.family !== b.family) return undefined;
  const lo = a.first.value > b.first.value ? a.first.value : b.first.value;
  const hi = a.last.value < b.last.value ? a.last.value : b.last.value;
  return lo <= hi ? addressFromValue(a.family, lo) : undefined;
}

const MAC = /^[0-9a-fA-F]{2}([:-][0-9a-fA-F]{2}){5}$/;

/** MACs are written lower case with colons, as `ip neigh` prints them. */
export function tryParseMac(input: string): string | undefined {
  if (!MAC.test(input)) return undefined;
  const separator = input[2];
  if (
    input
      .split('')
      .filter((c) => c === ':' || c === '-')
      .some((c) => c !== separator)
  ) {
    return undefined;
  }
  return input.toLowerCase().replaceAll('-', ':');
}

/** Addresses sort numerically within a family, IPv4 before IPv6. */
export function compareAddresses(a: Address, b: Address): number {
  if (a.family !== b.family) return a.family - b.family;
  return a.value < b.value ? -1 : a.value > b.value ? 1 : 0;
}

/** A dotted quad already checked against DOTTED_QUAD, as an unsigned 32-bit number. */
function ipv4Number(quad: string): number {
  let value = 0;
  for (const part of quad.split('.')) value = value * 256 + Number(part);
  return value;
}

/**
 * Sorts by an address text as compareAddressText does, parsing each item's address once
 * rather than twice per comparison: listing 10,000 FIPs spent most of its time re-parsing.
 */
export function sortByAddress<T>(items: Iterable<T>, addressOf: (item: T) => string): T[] {
  const keyed = [...items].map((item) => {
    const text = addressOf(item);
    return { item, text, address: tryParseAddress(text) };
  });
  keyed.sort((a, b) =>
    a.address && b.address
      ? compareAddresses(a.address, b.address)
      : a.text < b.text
        ? -1
        : a.text > b.text
          ? 1
          : 0,
  );
  return keyed.map((k) => k.item);
}

export function compareAddressText(a: string, b: string): number {
  const pa = tryParseAddress(a);
  const pb = tryParseAddress(b);
  if (!pa || !pb) return a < b ? -1 : a > b ? 1 : 0;
  return compareAddresses(pa, pb);
}

function fromBytes(family: Family, bytes: readonly number[]): Address {
  let value = 0n;
  for (const byte of bytes) value = (value << 8n) | BigInt(byte);
  const text = family === 4 ? bytes.join('.') : ipaddr.fromByteArray([...bytes]).toString(); // ipaddr.js prints RFC 5952 form
  return { family, text, value };
}

function quote(input: string): string {
  return JSON.stringify(input.length > 64 ? `${input.slice(0, 64)}…` : input);
}
