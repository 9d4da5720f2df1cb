import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseAddress, rangeSize } from '../../src/core/address.js';
import type { Pool, PoolEntry } from '../../src/core/model.js';
import {
  entryRange,
  firstOverlap,
  freeAddresses,
  isSharedAddress,
  macPins,
  MAX_POOL_ENTRIES,
  overlapBetween,
  overlapsWithin,
  poolEntryFor,
  poolRanges,
  poolSize,
} from '../../src/core/pool.js';

function mkPool(entries: PoolEntry[], delivery: Pool['delivery'] = 'routed'): Pool {
  return {
    name: 'p1',
    gateway: 'gw1',
    delivery,
    ...(delivery === 'onlink' ? { uplink: 'eth0' } : {}),
    entries,
    tags: [],
    createdAt: '2024-01-01T00:00:00.000Z',
  };
}

const cidr = (c: string): PoolEntry => ({ kind: 'cidr', cidr: c });
const range = (first: string, last: string): PoolEntry => ({ kind: 'range', first, last });
const single = (address: string, extra: { mac?: string; shared?: boolean } = {}): PoolEntry => ({
  kind: 'address',
  address,
  ...extra,
});

function texts(list: readonly { text: string }[]): string[] {
  return list.map((a) => a.text);
}

void describe('core/pool: entryRange', () => {
  void it('leaves out network and broadcast of an on-link IPv4 /24', () => {
    const r = entryRange(cidr('203.0.113.0/24'), 'onlink');
    assert.equal(r.family, 4);
    assert.equal(r.first.text, '203.0.113.1');
    assert.equal(r.last.text, '203.0.113.254');
    assert.equal(rangeSize(r), 254n);
  });

  void it('keeps every address of a routed IPv4 /24', () => {
    const r = entryRange(cidr('203.0.113.0/24'), 'routed');
    assert.equal(r.first.text, '203.0.113.0');
    assert.equal(r.last.text, '203.0.113.255');
    assert.equal(rangeSize(r), 256n);
  });

  void it('keeps /31 and /32 whole even on-link (RFC 3021 point-to-point)', () => {
    const p31 = entryRange(cidr('203.0.113.0/31'), 'onlink');
    assert.deepEqual(texts([p31.first, p31.last]), ['203.0.113.0', '203.0.113.1']);
    const p32 = entryRange(cidr('203.0.113.7/32'), 'onlink');
    assert.deepEqual(texts([p32.first, p32.last]), ['203.0.113.7', '203.0.113.7']);
    const p30 = entryRange(cidr('203.0.113.4/30'), 'onlink');
    assert.deepEqual(texts([p30.first, p30.last]), ['203.0.113.5', '203.0.113.6']);
  });

  void it('never trims IPv6 prefixes (no broadcast in IPv6)', () => {
    const r = entryRange(cidr('2001:db8::/120'), 'onlink');
    assert.equal(r.first.text, '2001:db8::');
    assert.equal(r.last.text, '2001:db8::ff');
  });

  void it('maps ranges and single addresses the same whatever the delivery', () => {
    for (const delivery of ['routed', 'onlink'] as const) {
      const r = entryRange(range('192.0.2.0', '192.0.2.255'), delivery);
      assert.deepEqual(texts([r.first, r.last]), ['192.0.2.0', '192.0.2.255']);
      const a = entryRange(single('192.0.2.0', { mac: '52:54:00:12:34:56' }), delivery);
      assert.deepEqual(texts([a.first, a.last]), ['192.0.2.0', '192.0.2.0']);
    }
  });

  void it('fails loudly on a corrupt stored CIDR', () => {
    assert.throws(() => entryRange(cidr('203.0.113.5/24'), 'routed'), /is not a prefix/);
  });
});

void describe('core/pool: membership and size', () => {
  const pool = mkPool([
    cidr('203.0.113.0/29'),
    range('198.51.100.10', '198.51.100.12'),
    single('192.0.2.1', { shared: true }),
    single('192.0.2.5', { mac: '52:54:00:12:34:56' }),
  ]);

  void it('finds the entry an address belongs to', () => {
    assert.deepEqual(poolEntryFor(pool, parseAddress('203.0.113.7')), cidr('203.0.113.0/29'));
    assert.deepEqual(
      poolEntryFor(pool, parseAddress('198.51.100.12')),
      range('198.51.100.10', '198.51.100.12'),
    );
    assert.equal(poolEntryFor(pool, parseAddress('198.51.100.13')), undefined);
    assert.equal(poolEntryFor(pool, parseAddress('2001:db8::1')), undefined);
  });

  void it('knows the shared address', () => {
    assert.equal(isSharedAddress(pool, parseAddress('192.0.2.1')), true);
    assert.equal(isSharedAddress(pool, parseAddress('192.0.2.5')), false);
    assert.equal(isSharedAddress(pool, parseAddress('203.0.113.1')), false);
    assert.equal(isSharedAddress(pool, parseAddress('10.0.0.1')), false);
  });

  void it('lists MAC pins', () => {
    assert.deepEqual(macPins(pool), [{ address: '192.0.2.5', mac: '52:54:00:12:34:56' }]);
  });

  void it('counts the usable addresses', () => {
    assert.equal(poolSize(pool), 8n + 3n + 1n + 1n);
    assert.equal(poolSize(mkPool([cidr('203.0.113.0/24')], 'onlink')), 254n);
    assert.equal(poolSize(mkPool([cidr('203.0.113.0/24')], 'routed')), 256n);
  });

  void it('sizes an IPv6 /64 as 2^64, exactly, as a bigint', () => {
    const size = poolSize(mkPool([cidr('2001:db8::/64')]));
    assert.equal(typeof size, 'bigint');
    assert.equal(size, 18446744073709551616n);
    assert.equal(size, 2n ** 64n);
    assert.equal(poolSize(mkPool([cidr('2001:db8::/32')])), 2n ** 96n);
  });
});

void describe('core/pool: freeAddresses', () => {
  void it('returns free addresses in order, skipping used ones, up to the limit', () => {
    const pool = mkPool([cidr('203.0.113.0/29')]);
    const used = new Set(['203.0.113.0', '203.0.113.2']);
    assert.deepEqual(texts(freeAddresses(pool, used, 3)), [
      '203.0.113.1',
      '203.0.113.3',
      '203.0.113.4',
    ]);
    assert.deepEqual(texts(freeAddresses(pool, used, 100)), [
      '203.0.113.1',
      '203.0.113.3',
      '203.0.113.4',
      '203.0.113.5',
      '203.0.113.6',
      '203.0.113.7',
    ]);
    assert.deepEqual(freeAddresses(pool, used, 0), []);
  });

  void it('leaves out network and broadcast on-link', () => {
    const pool = mkPool([cidr('203.0.113.0/29')], 'onlink');
    assert.deepEqual(texts(freeAddresses(pool, new Set(), 100)), [
      '203.0.113.1',
      '203.0.113.2',
      '203.0.113.3',
      '203.0.113.4',
      '203.0.113.5',
      '203.0.113.6',
    ]);
  });

  void it('never hands out a shared address', () => {
    const pool = mkPool([single('192.0.2.1', { shared: true }), range('192.0.2.10', '192.0.2.11')]);
    assert.deepEqual(texts(freeAddresses(pool, new Set(), 10)), ['192.0.2.10', '192.0.2.11']);
    const onlyShared = mkPool([single('192.0.2.1', { shared: true })]);
    assert.deepEqual(freeAddresses(onlyShared, new Set(), 10), []);
  });

  void it('walks entries in order and stops across entries at the limit', () => {
    const pool = mkPool([
      range('198.51.100.10', '198.51.100.11'),
      single('192.0.2.5'),
      range('203.0.113.1', '203.0.113.3'),
    ]);
    assert.deepEqual(texts(freeAddresses(pool, new Set(['198.51.100.10']), 3)), [
      '198.51.100.11',
      '192.0.2.5',
      '203.0.113.1',
    ]);
  });

  void it('keeps to one family when asked to', () => {
    const pool = mkPool([cidr('2001:db8::/126'), range('192.0.2.10', '192.0.2.11')]);
    assert.deepEqual(texts(freeAddresses(pool, new Set(), 3, 4)), ['192.0.2.10', '192.0.2.11']);
    assert.deepEqual(texts(freeAddresses(pool, new Set(), 2, 6)), ['2001:db8::', '2001:db8::1']);
    assert.deepEqual(texts(freeAddresses(pool, new Set(), 5)), [
      '2001:db8::',
      '2001:db8::1',
      '2001:db8::2',
      '2001:db8::3',
      '192.0.2.10',
    ]);
  });

  void it('returns nothing when everything is used', () => {
    const pool = mkPool([range('192.0.2.10', '192.0.2.12')]);
    assert.deepEqual(
      freeAddresses(pool, new Set(['192.0.2.10', '192.0.2.11', '192.0.2.12']), 5),
      [],
    );
  });

  void it('uses canonical text to match used IPv6 addresses', () => {
    const pool = mkPool([cidr('2001:db8::/126')]);
    assert.deepEqual(texts(freeAddresses(pool, new Set(['2001:db8::', '2001:db8::2']), 10)), [
      '2001:db8::1',
      '2001:db8::3',
    ]);
  });

  void it('does not enumerate a whole IPv6 /64', { timeout: 2000 }, () => {
    const pool = mkPool([cidr('2001:db8::/64'), cidr('2001:db8:1::/64')]);
    const used = new Set(['2001:db8::', '2001:db8::1']);
    const started = process.hrtime.bigint();
    const free = freeAddresses(pool, used, 16);
    const elapsedMs = Number(process.hrtime.bigint() - started) / 1e6;
    assert.equal(free.length, 16);
    assert.equal(free[0]!.text, '2001:db8::2');
    assert.equal(free[15]!.text, '2001:db8::11');
    assert.ok(elapsedMs < 500, `took ${elapsedMs} ms`);
  });
});

void describe('core/pool: firstOverlap', () => {
  const ranges = (entries: PoolEntry[], delivery: Pool['delivery'] = 'routed') =>
    poolRanges(mkPool(entries, delivery));

  void it('finds the first address two pools share', () => {
    const a = ranges([cidr('203.0.113.0/28'), range('198.51.100.10', '198.51.100.20')]);
    const b = ranges([single('192.0.2.1'), range('198.51.100.15', '198.51.100.30')]);
    assert.equal(firstOverlap(a, b)?.text, '198.51.100.15');
    assert.equal(firstOverlap(b, a)?.text, '198.51.100.15');
  });

  void it('returns undefined for disjoint pools, also across families', () => {
    const a = ranges([cidr('203.0.113.0/28')]);
    assert.equal(firstOverlap(a, ranges([cidr('203.0.113.16/28')])), undefined);
    assert.equal(firstOverlap(a, ranges([cidr('2001:db8::/64')])), undefined);
    assert.equal(firstOverlap(a, []), undefined);
    assert.equal(firstOverlap([], a), undefined);
  });

  void it('finds overlaps inside huge IPv6 prefixes without walking them', () => {
    const a = ranges([cidr('2001:db8::/48')]);
    const b = ranges([single('2001:db8:0:ffff::1')]);
    assert.equal(firstOverlap(a, b)?.text, '2001:db8:0:ffff::1');
  });

  void it('respects on-link trimming: the network address of an on-link /24 is free to others', () => {
    const onlink = ranges([cidr('203.0.113.0/24')], 'onlink');
    assert.equal(firstOverlap(onlink, ranges([single('203.0.113.0')])), undefined);
    assert.equal(firstOverlap(onlink, ranges([single('203.0.113.1')]))?.text, '203.0.113.1');
  });
});

/** `n` single addresses from 10.1.0.0 on, every `step`-th (step 2: no two adjacent). */
function singles(n: number, step = 2, base = 0x0a010000): PoolEntry[] {
  return Array.from({ length: n }, (_, i) => {
    const v = base + i * step;
    return single([v >>> 24, (v >>> 16) & 255, (v >>> 8) & 255, v & 255].join('.'));
  });
}

void describe('core/pool: overlaps in one sweep', () => {
  const ranges = (entries: PoolEntry[]) => poolRanges(mkPool(entries));

  void it('finds the lowest shared address whatever the order of the entries', () => {
    const a = ranges([range('198.51.100.40', '198.51.100.50'), cidr('198.51.100.0/28')]);
    const b = ranges([single('198.51.100.45'), range('198.51.100.8', '198.51.100.9')]);
    assert.equal(firstOverlap(a, b)?.text, '198.51.100.8');
    // A long range of one side that started earlier still reaches a later start of the other.
    const long = ranges([range('192.0.2.0', '192.0.2.200'), single('192.0.2.1')]);
    assert.equal(firstOverlap(long, ranges([single('192.0.2.150')]))?.text, '192.0.2.150');
  });

  void it('says which of the other side’s ranges it overlaps, as tagged', () => {
    const theirs = [
      { range: entryRange(cidr('203.0.113.0/28'), 'routed'), pool: 'one' },
      { range: entryRange(cidr('203.0.113.16/28'), 'routed'), pool: 'two' },
    ];
    const hit = overlapBetween(ranges([single('203.0.113.20'), single('203.0.113.40')]), theirs);
    assert.equal(hit?.at.text, '203.0.113.20');
    assert.equal(hit?.other.pool, 'two');
  });

  void it('names each entry that overlaps an earlier one, by position, in input order', () => {
    const entries = [
      single('192.0.2.9'),
      cidr('192.0.2.0/28'),
      range('192.0.2.12', '192.0.2.20'),
      cidr('2001:db8::/64'),
      single('2001:db8::5'),
      single('198.51.100.1'),
    ];
    assert.deepEqual(
      overlapsWithin(ranges(entries)).map(({ a, b, at }) => [a, b, at.text]),
      [
        [0, 1, '192.0.2.9'],
        [1, 2, '192.0.2.12'],
        [3, 4, '2001:db8::5'],
      ],
    );
    assert.deepEqual(overlapsWithin(ranges(singles(100))), []);
  });

  void it('sweeps a pool at the limit once: one problem per listed address inside a prefix', () => {
    const many = [cidr('10.1.0.0/16'), ...singles(MAX_POOL_ENTRIES - 1)];
    const found = overlapsWithin(ranges(many));
    assert.equal(found.length, MAX_POOL_ENTRIES - 1);
    assert.ok(found.every((o) => o.a === 0));
    assert.equal(
      firstOverlap(ranges(singles(MAX_POOL_ENTRIES)), ranges(singles(1, 1, 0x0a010001))),
      undefined,
    );
  });

  void it('remembers a pool’s ranges per entries list and delivery', () => {
    const pool = mkPool([cidr('203.0.113.0/24')]);
    assert.equal(poolRanges(pool), poolRanges({ ...pool }));
    assert.equal(rangeSize(poolRanges({ ...pool, delivery: 'onlink' })[0]!.range), 254n);
    assert.equal(rangeSize(poolRanges(pool)[0]!.range), 256n);
  });
});

void describe('core/pool: a pool at the entry limit', () => {
  void it('hands out the one free address left after one walk over its entries', () => {
    const entries = singles(MAX_POOL_ENTRIES);
    const pool = mkPool(entries);
    const last = '10.1.31.254';
    const used = new Set(entries.flatMap((e) => (e.kind === 'address' ? [e.address] : [])));
    used.delete(last);
    assert.deepEqual(texts(freeAddresses(pool, used, 64)), [last]);
    assert.equal(poolSize(pool), BigInt(MAX_POOL_ENTRIES));
    assert.equal(poolEntryFor(pool, parseAddress(last)), entries.at(-1));
  });
});
