/**
 * Pool address arithmetic. Pools can be huge (an IPv6 /64 is 2^64 addresses), so nothing here
 * enumerates a pool: entries become ranges, membership is a range check, and finding free
 * addresses walks forward from the start skipping the few that are used. Lists of entries can be
 * long too, so nothing compares every entry with every other: overlaps are found by sorting
 * ranges by their first address and sweeping them once (n log n).
 */
import {
  type Address,
  type AddressRange,
  type Family,
  addressFromValue,
  parseAddress,
  prefixRange,
  rangeContains,
  rangeSize,
  tryParsePrefix,
} from './address.js';
import type { Pool, PoolEntry } from './model.js';

/**
 * The most entries one pool may hold (its `entries` and `shared` together). A block of addresses
 * is one entry however big it is (a CIDR or a FIRST-LAST range), so only addresses written one
 * by one make the list long, and 4096 of them is a whole /20 spelt out address by address, each
 * with its MAC pin. The bound keeps a pool record small (about 300 KB with a MAC on every entry,
 * well inside etcd's 1.5 MiB request) for every agent that decodes and compiles it on each
 * change, and a request from taking the API's event loop for seconds: 50,000 single addresses
 * once blocked an agent for 41 s, long enough for its followers' leases to run out (issue 12).
 * The store-record decoder may refuse a stored pool beyond it just as the API does.
 */
export const MAX_POOL_ENTRIES = 4096;

export interface EntryRange {
  readonly entry: PoolEntry;
  readonly range: AddressRange;
}

/**
 * The usable addresses of an entry. On an on-link IPv4 segment the network and broadcast
 * addresses of a prefix shorter than /31 cannot be used by a host, so they are left out.
 */
export function entryRange(entry: PoolEntry, delivery: Pool['delivery']): AddressRange {
  switch (entry.kind) {
    case 'address': {
      const a = parseAddress(entry.address);
      return { family: a.family, first: a, last: a };
    }
    case 'range': {
      const first = parseAddress(entry.first);
      return { family: first.family, first, last: parseAddress(entry.last) };
    }
    case 'cidr': {
      const prefix = tryParsePrefix(entry.cidr);
      if (!prefix) throw new Error(`stored pool entry ${entry.cidr} is not a prefix`);
      const range = prefixRange(prefix);
      if (delivery === 'onlink' && prefix.family === 4 && prefix.length < 31) {
        return {
          family: 4,
          first: addressFromValue(4, range.first.value + 1n),
          last: addressFromValue(4, range.last.value - 1n),
        };
      }
      return range;
    }
  }
}

/**
 * A pool's ranges, remembered per entries list: records are immutable (a change is a new
 * object), and every agent asks for the ranges of every pool several times in each pass (the
 * drops, the sysctls, the tunnels), which with thousands of entries was mostly address parsing.
 * Weak: a list no longer held takes its ranges along.
 */
const RANGES = new WeakMap<
  readonly PoolEntry[],
  { readonly delivery: Pool['delivery']; readonly ranges: readonly EntryRange[] }
>();

export function poolRanges(pool: Pick<Pool, 'entries' | 'delivery'>): readonly EntryRange[] {
  const known = RANGES.get(pool.entries);
  if (known?.delivery === pool.delivery) return known.ranges;
  const ranges = pool.entries.map((entry) => ({ entry, range: entryRange(entry, pool.delivery) }));
  RANGES.set(pool.entries, { delivery: pool.delivery, ranges });
  return ranges;
}

export function poolEntryFor(pool: Pool, address: Address): PoolEntry | undefined {
  return poolRanges(pool).find((r) => rangeContains(r.range, address))?.entry;
}

export function poolSize(pool: Pool): bigint {
  return poolRanges(pool).reduce((sum, r) => sum + rangeSize(r.range), 0n);
}

export function isSharedAddress(pool: Pool, address: Address): boolean {
  const entry = poolEntryFor(pool, address);
  return entry?.kind === 'address' && entry.shared === true;
}

/** Ranges by first address (IPv4 before IPv6); equal starts keep their order. */
function compareStart(a: AddressRange, b: AddressRange): number {
  if (a.family !== b.family) return a.family - b.family;
  return a.first.value < b.first.value ? -1 : a.first.value > b.first.value ? 1 : 0;
}

/**
 * The lowest address that a range of `a` and a range of `b` both hold, with that range of `b`
 * (so a caller that tagged `b`'s ranges, with their pool say, knows which one). One sweep over
 * both lists in address order: a range that starts while one of the other side still reaches
 * that far overlaps it from its own first address on, and the first such start is the lowest
 * shared address. Neither list needs to be disjoint.
 */
export function overlapBetween<T extends { readonly range: AddressRange }>(
  a: readonly { readonly range: AddressRange }[],
  b: readonly T[],
): { at: Address; other: T } | undefined {
  const sides = [
    ...a.map((r) => ({ range: r.range, other: undefined })),
    ...b.map((r) => ({ range: r.range, other: r })),
  ].sort((x, y) => compareStart(x.range, y.range));
  // Per side, the range of this family reaching furthest so far.
  let family: number | undefined;
  let reachA: { last: bigint } | undefined;
  let reachB: { last: bigint; other: T } | undefined;
  for (const { range, other } of sides) {
    if (range.family !== family) {
      family = range.family;
      reachA = reachB = undefined;
    }
    if (other === undefined) {
      if (reachB && reachB.last >= range.first.value)
        return { at: range.first, other: reachB.other };
      if (!reachA || range.last.value > reachA.last) reachA = { last: range.last.value };
    } else {
      if (reachA && reachA.last >= range.first.value) return { at: range.first, other };
      if (!reachB || range.last.value > reachB.last) reachB = { last: range.last.value, other };
    }
  }
  return undefined;
}

/** First address that both pools (or two lists of entries of one pool) contain. */
export function firstOverlap(
  a: readonly EntryRange[],
  b: readonly EntryRange[],
): Address | undefined {
  return overlapBetween(a, b)?.at;
}

/**
 * Overlapping pairs among one list of ranges, by their positions in it (`a` < `b`), with the
 * first address they share; in order of `a`, then `b`. One sweep in address order: a range that
 * starts before the furthest-reaching range so far ends overlaps that one, so every range that
 * overlaps any earlier one is named once (not every pair: a prefix holding 4,000 listed addresses
 * is 4,000 problems, not 8 million).
 */
export function overlapsWithin(
  ranges: readonly { readonly range: AddressRange }[],
): { a: number; b: number; at: Address }[] {
  const order = ranges
    .map((_, i) => i)
    .sort((i, j) => compareStart(ranges[i]!.range, ranges[j]!.range) || i - j);
  const found: { a: number; b: number; at: Address }[] = [];
  let reach: number | undefined;
  for (const i of order) {
    const range = ranges[i]!.range;
    const held = reach === undefined ? undefined : ranges[reach]!.range;
    const same = held !== undefined && held.family === range.family;
    if (same && held.last.value >= range.first.value) {
      found.push({ a: Math.min(reach!, i), b: Math.max(reach!, i), at: range.first });
    }
    if (!same || range.last.value > held.last.value) reach = i;
  }
  return found.sort((x, y) => x.a - y.a || x.b - y.b);
}

/**
 * Up to `limit` free, non-shared addresses of a pool in address order. `used` holds canonical
 * text forms. Shared addresses are never handed out by "any free address": they must be asked
 * for by name, because they are the gateway's own.
 */
export function freeAddresses(
  pool: Pool,
  used: ReadonlySet<string>,
  limit: number,
  family?: Family,
): Address[] {
  const found: Address[] = [];
  for (const { entry, range } of poolRanges(pool)) {
    if (entry.kind === 'address' && entry.shared) continue;
    if (family !== undefined && range.family !== family) continue;
    for (let v = range.first.value; v <= range.last.value && found.length < limit; v++) {
      const candidate = addressFromValue(range.family, v);
      if (!used.has(candidate.text)) found.push(candidate);
    }
    if (found.length >= limit) break;
  }
  return found;
}

export function macPins(pool: Pool): { address: string; mac: string }[] {
  return pool.entries.flatMap((e) =>
    e.kind === 'address' && e.mac ? [{ address: e.address, mac: e.mac }] : [],
  );
}
