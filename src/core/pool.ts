/**
 * Pool address arithmetic. Pools can be huge (an IPv6 /64 is 2^64 addresses), so nothing here
 * enumerates a pool: entries become ranges, membership is a range check, and finding free
 * addresses walks forward from the start skipping the few that are used.
 */
import {
  type Address,
  type AddressRange,
  type Family,
  addressFromValue,
  parseAddress,
  prefixRange,
  rangeContains,
  rangeOverlap,
  rangeSize,
  tryParsePrefix,
} from './address.js';
import type { Pool, PoolEntry } from './model.js';

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

export function poolRanges(pool: Pick<Pool, 'entries' | 'delivery'>): EntryRange[] {
  return pool.entries.map((entry) => ({ entry, range: entryRange(entry, pool.delivery) }));
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

/** First address that both pools (or two entries of one pool) contain. */
export function firstOverlap(
  a: readonly EntryRange[],
  b: readonly EntryRange[],
): Address | undefined {
  for (const x of a) {
    for (const y of b) {
      const hit = rangeOverlap(x.range, y.range);
      if (hit) return hit;
    }
  }
  return undefined;
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
