/**
 * The gateway's drop ranges leave out the host's own addresses and the routed FIPs passing
 * through ("holes"). Holes parses and sorts them once per compile and finds those inside each
 * pool range by binary search; the reference below is the earlier per-range code (parse, filter
 * and sort every hole for every range), kept here to hold the two to the same output on random
 * ranges and holes, and compile's drop elements to the same output as drops built with it.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { type Address, addressFromValue, parseAddress } from '../../src/core/address.js';
import { compile } from '../../src/core/compile/index.js';
import { Holes } from '../../src/core/compile/gateway.js';
import type { Pool, PoolEntry } from '../../src/core/model.js';
import { poolRanges } from '../../src/core/pool.js';
import { element } from '../../src/intent/elements.js';
import { fuzzParameters } from '../support/fuzz.js';

function referenceSubtract(
  first: Address,
  last: Address,
  holes: ReadonlySet<string>,
): [Address, Address][] {
  const cuts = [...holes]
    .map((h) => parseAddress(h))
    .filter((h) => h.family === first.family && h.value >= first.value && h.value <= last.value)
    .sort((a, b) => (a.value < b.value ? -1 : 1));
  const out: [Address, Address][] = [];
  let start = first.value;
  for (const cut of cuts) {
    if (cut.value > start)
      out.push([
        addressFromValue(first.family, start),
        addressFromValue(first.family, cut.value - 1n),
      ]);
    start = cut.value + 1n;
  }
  if (start <= last.value) out.push([addressFromValue(first.family, start), last]);
  return out;
}

/** The drops compile made before Holes: every non-shared range minus the holes, overlaps joined. */
function referenceDrops(pools: readonly Pool[], holes: ReadonlySet<string>): string[] {
  const drops: { first: Address; last: Address; owner: string }[] = [];
  for (const pool of pools) {
    for (const { entry, range } of poolRanges(pool)) {
      if (entry.kind === 'address' && entry.shared) continue;
      for (const [first, last] of referenceSubtract(range.first, range.last, holes)) {
        drops.push({ first, last, owner: `pool:${pool.name}` });
      }
    }
  }
  const sorted = [...drops].sort((a, b) =>
    a.first.family !== b.first.family
      ? a.first.family - b.first.family
      : a.first.value < b.first.value
        ? -1
        : a.first.value > b.first.value
          ? 1
          : 0,
  );
  const joined: typeof drops = [];
  for (const r of sorted) {
    const prev = joined[joined.length - 1];
    if (prev && prev.first.family === r.first.family && r.first.value <= prev.last.value) {
      if (r.last.value > prev.last.value) joined[joined.length - 1] = { ...prev, last: r.last };
    } else joined.push(r);
  }
  return joined
    .map((d) => element('drop', { first: d.first.text, last: d.last.text }, d.owner))
    .map((e) => JSON.stringify(e))
    .sort();
}

// Addresses near a few bases, so that ranges and holes meet often: the low and high ends of
// each family's space, and an ordinary block of each.
const V4_BASES = [0n, 0xcb007100n, 0xffffffc0n];
const V6_BASES = [0n, 0x20010db8n << 96n, (1n << 128n) - 64n];
const nearby = fc
  .tuple(fc.constantFrom(4 as const, 6 as const), fc.nat(2), fc.nat(63))
  .map(([family, base, offset]) =>
    addressFromValue(family, (family === 4 ? V4_BASES : V6_BASES)[base]! + BigInt(offset)),
  );
const range = fc.tuple(nearby, fc.nat(40)).map(([first, size]) => {
  const max = first.family === 4 ? (1n << 32n) - 1n : (1n << 128n) - 1n;
  const lastValue = first.value + BigInt(size) > max ? max : first.value + BigInt(size);
  return { first, last: addressFromValue(first.family, lastValue) };
});
// A hole as compile gets it: canonical text, now and then an IPv6 one in capitals (the same
// address spelt twice).
const holeText = fc
  .tuple(nearby, fc.boolean())
  .map(([a, upper]) => (upper && a.family === 6 ? a.text.toUpperCase() : a.text));
const holes = fc.array(holeText, { maxLength: 30 }).map((h) => new Set(h));

const show = (parts: [Address, Address][]): string[] =>
  parts.map(([a, b]) => `${a.text}-${b.text}`);

describe('compile: drop ranges minus the holes', () => {
  it('subtracts as the per-range reference does, on random ranges and holes', () => {
    fc.assert(
      fc.property(fc.array(range, { minLength: 1, maxLength: 8 }), holes, (ranges, h) => {
        const parsed = new Holes(h);
        for (const r of ranges) {
          assert.deepEqual(
            show(parsed.subtract(r.first, r.last)),
            show(referenceSubtract(r.first, r.last, h)),
          );
        }
      }),
      fuzzParameters(2000),
    );
  });

  it('handles the edges: a hole at each end, every address a hole, no holes, the last address', () => {
    const a = (t: string): Address => parseAddress(t);
    const h = new Holes(['192.0.2.0', '192.0.2.3', '192.0.2.1', '2001:db8::1', '2001:DB8::1']);
    assert.deepEqual(show(h.subtract(a('192.0.2.0'), a('192.0.2.3'))), ['192.0.2.2-192.0.2.2']);
    assert.deepEqual(show(h.subtract(a('192.0.2.0'), a('192.0.2.1'))), []);
    assert.deepEqual(show(h.subtract(a('192.0.2.4'), a('192.0.2.9'))), ['192.0.2.4-192.0.2.9']);
    assert.deepEqual(show(h.subtract(a('2001:db8::'), a('2001:db8::2'))), [
      '2001:db8::-2001:db8::',
      '2001:db8::2-2001:db8::2',
    ]);
    const top = new Holes(['255.255.255.254']);
    assert.deepEqual(show(top.subtract(a('255.255.255.250'), a('255.255.255.255'))), [
      '255.255.255.250-255.255.255.253',
      '255.255.255.255-255.255.255.255',
    ]);
    assert.deepEqual(show(new Holes([]).subtract(a('10.0.0.1'), a('10.0.0.1'))), [
      '10.0.0.1-10.0.0.1',
    ]);
  });

  it('refuses a hole that is no address, as parsing each one did', () => {
    assert.throws(() => new Holes(['192.0.2.1', 'not an address']), { code: 'IPF_E_BAD_ADDRESS' });
  });

  it("gives compile's drop elements of the reference, for random pools and host addresses", () => {
    const entry: fc.Arbitrary<PoolEntry> = fc.oneof(
      range.map(({ first, last }) => ({
        kind: 'range' as const,
        first: first.text,
        last: last.text,
      })),
      fc.tuple(nearby, fc.boolean()).map(([address, shared]) => ({
        kind: 'address' as const,
        address: address.text,
        ...(shared ? { shared } : {}),
      })),
      nearby.map((a) => ({
        kind: 'cidr' as const,
        cidr: `${addressFromValue(a.family, a.value & ~7n).text}/${a.family === 4 ? 29 : 125}`,
      })),
    );
    const pool = fc
      .tuple(fc.array(entry, { minLength: 1, maxLength: 12 }), fc.boolean())
      .map(([entries, onlink]) => ({ entries, onlink }));
    fc.assert(
      fc.property(
        fc.array(pool, { minLength: 1, maxLength: 3 }),
        fc.array(nearby, { maxLength: 30 }),
        (shapes, own) => {
          const pools: Pool[] = shapes.map((s, i) => ({
            name: `p${i}`,
            gateway: 'gw',
            delivery: s.onlink ? 'onlink' : 'routed',
            ...(s.onlink ? { uplink: 'eth0' } : {}),
            entries: s.entries,
            tags: [],
            createdAt: '2024-01-01T00:00:00.000Z',
          }));
          const addresses = own.map((a) => a.text);
          const intent = compile({ pools, fips: [] }, 'gw', { interfaces: [], addresses });
          const drops = intent.elements
            .filter((e) => e.kind === 'drop')
            .map((e) => JSON.stringify(e))
            .sort();
          assert.deepEqual(drops, referenceDrops(pools, new Set(addresses)));
        },
      ),
      fuzzParameters(500),
    );
  });
});
