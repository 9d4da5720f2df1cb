import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  type Address,
  addressFromValue,
  bitsOf,
  canonicalAddress,
  compareAddresses,
  compareAddressText,
  parseAddress,
  prefixRange,
  rangeContains,
  rangeOverlap,
  rangeSize,
  sortByAddress,
  tryParseAddress,
  tryParseMac,
  tryParsePrefix,
  tryParseRange,
} from '../../src/core/address.js';
import { IpferryError } from '../../src/core/errors.js';

function addr(text: string): Address {
  return parseAddress(text);
}

void describe('core/address: canonical forms', () => {
  void it('keeps canonical IPv4 as is and computes its 32-bit value', () => {
    const a = parseAddress('192.0.2.10');
    assert.deepEqual(a, { family: 4, text: '192.0.2.10', value: 0xc000020an });
    assert.equal(canonicalAddress('0.0.0.0'), '0.0.0.0');
    assert.equal(parseAddress('255.255.255.255').value, 0xffffffffn);
  });

  void it('compresses IPv6 per RFC 5952', () => {
    const cases: [string, string][] = [
      ['2001:DB8:0:0:0:0:0:1', '2001:db8::1'],
      ['2001:0db8:0000:0000:0000:0000:0000:0001', '2001:db8::1'],
      ['2001:0db8::0001', '2001:db8::1'],
      ['2001:db8::0:1', '2001:db8::1'],
      // The longest run of zero groups becomes "::" …
      ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
      ['1:0:0:2:0:0:0:3', '1:0:0:2::3'],
      // … a single zero group is not compressed …
      ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'],
      // … and of two equal runs the first one is.
      ['2001:0:0:1:0:0:1:1', '2001::1:0:0:1:1'],
      ['2001:db8:0:1:0:0:0:1', '2001:db8:0:1::1'],
      ['0:0:0:0:0:0:0:0', '::'],
      ['::', '::'],
      ['0:0:0:0:0:0:0:1', '::1'],
      ['FE80:0:0:0:0:0:0:0', 'fe80::'],
      ['1:2:3:4:5:6:7:8', '1:2:3:4:5:6:7:8'],
      ['ABCD:EF01:2345:6789:ABCD:EF01:2345:6789', 'abcd:ef01:2345:6789:abcd:ef01:2345:6789'],
    ];
    for (const [input, canonical] of cases) {
      assert.equal(canonicalAddress(input), canonical, input);
      const parsed = parseAddress(input);
      assert.equal(parsed.family, 6, input);
      // The canonical form is a fixed point.
      assert.equal(canonicalAddress(canonical), canonical, canonical);
      assert.equal(parseAddress(canonical).value, parsed.value, canonical);
    }
  });

  void it('computes 128-bit values for IPv6', () => {
    assert.equal(parseAddress('::').value, 0n);
    assert.equal(parseAddress('::1').value, 1n);
    assert.equal(parseAddress('2001:db8::1').value, (0x20010db8n << 96n) | 1n);
    assert.equal(parseAddress('ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff').value, (1n << 128n) - 1n);
  });

  void it('reads an embedded dotted quad as the same address as its hex spelling', () => {
    assert.equal(parseAddress('::ffff:192.0.2.1').value, parseAddress('::ffff:c000:201').value);
    assert.equal(canonicalAddress('::ffff:192.0.2.1'), canonicalAddress('::ffff:c000:201'));
    assert.equal(canonicalAddress('64:ff9b::192.0.2.1'), '64:ff9b::c000:201');
    assert.equal(canonicalAddress('1::192.0.2.1'), '1::c000:201');
  });

  void it('does not reinterpret the IPv4-compatible form ::a.b.c.d as IPv4-mapped', () => {
    // RFC 4291: ::192.0.2.1 is ::c000:201, not ::ffff:192.0.2.1.
    const a = parseAddress('::192.0.2.1');
    assert.equal(a.value, 0xc0000201n);
    assert.equal(a.text, '::c000:201');
    assert.equal(parseAddress('::0.0.0.1').value, 1n);
  });

  void it('parseAddress of a canonical IPv4 text gives family 4, never an IPv6 form', () => {
    assert.equal(parseAddress('203.0.113.7').family, 4);
    assert.equal(bitsOf(4), 32);
    assert.equal(bitsOf(6), 128);
  });
});

void describe('core/address: sloppy input is refused', () => {
  const sloppy = [
    '010.1.1.1', // octal-looking leading zero
    '01.2.3.4',
    '1.2.3.04',
    '3232235777', // a bare integer
    '1.1', // short forms
    '1.2.3',
    '0x7f.0.0.1', // hex parts
    '0x7f000001',
    '1.2.3.4 ', // surrounding white space
    ' 1.2.3.4',
    '1.2.3.4\n',
    '256.1.1.1', // out of range
    '1.2.3.256',
    '1.2.3.4.5',
    '1..2.3',
    '-1.2.3.4',
    '+1.2.3.4',
    '１.2.3.4', // full-width digit
    '',
    ' ',
    '2001:db8::1::2', // two "::"
    '2001:db8::g',
    '2001:db8:0:0:0:0:0:1:2', // nine groups
    '12345::1',
    '::ffff:01.2.3.4', // leading zero in the embedded quad
    '::ffff:1.2.3',
    '[2001:db8::1]',
    'localhost',
  ];
  for (const input of sloppy) {
    void it(`refuses ${JSON.stringify(input)}`, () => {
      assert.equal(tryParseAddress(input), undefined);
      assert.throws(
        () => parseAddress(input),
        (e: unknown) =>
          e instanceof IpferryError &&
          e.code === 'IPF_E_BAD_ADDRESS' &&
          e.status === 400 &&
          typeof e.params.input === 'string',
      );
    });
  }

  void it('refuses IPv6 zone ids', () => {
    for (const input of ['fe80::1%eth0', 'fe80::1%1', '2001:db8::1%eth0', 'fe80::1%']) {
      assert.equal(tryParseAddress(input), undefined, input);
    }
  });

  void it('quotes the input in the error, shortened when long', () => {
    try {
      parseAddress('x'.repeat(200));
      assert.fail('expected a throw');
    } catch (e) {
      assert.ok(e instanceof IpferryError);
      assert.equal(e.params.input, JSON.stringify(`${'x'.repeat(64)}…`));
    }
  });
});

void describe('core/address: prefixes', () => {
  void it('parses canonical prefixes of both families', () => {
    const p = tryParsePrefix('203.0.113.0/24');
    assert.ok(p);
    assert.equal(p.family, 4);
    assert.equal(p.length, 24);
    assert.equal(p.network.text, '203.0.113.0');
    assert.equal(p.text, '203.0.113.0/24');
    assert.equal(tryParsePrefix('2001:DB8:0:0::/32')?.text, '2001:db8::/32');
    assert.equal(tryParsePrefix('2001:db8:0:0:0:0:0:0/64')?.text, '2001:db8::/64');
  });

  void it('accepts length bounds 0 and the full width, refuses past it', () => {
    assert.equal(tryParsePrefix('0.0.0.0/0')?.text, '0.0.0.0/0');
    assert.equal(tryParsePrefix('192.0.2.1/32')?.text, '192.0.2.1/32');
    assert.equal(tryParsePrefix('192.0.2.0/33'), undefined);
    assert.equal(tryParsePrefix('::/0')?.text, '::/0');
    assert.equal(tryParsePrefix('2001:db8::1/128')?.text, '2001:db8::1/128');
    assert.equal(tryParsePrefix('2001:db8::/129'), undefined);
  });

  void it('is strict about host bits by default', () => {
    assert.equal(tryParsePrefix('203.0.113.5/24'), undefined);
    assert.equal(tryParsePrefix('203.0.113.5/24', true), undefined);
    assert.equal(tryParsePrefix('2001:db8::1/64'), undefined);
    assert.equal(tryParsePrefix('192.0.2.1/31'), undefined);
  });

  void it('clears host bits when not strict', () => {
    assert.equal(tryParsePrefix('203.0.113.5/24', false)?.text, '203.0.113.0/24');
    assert.equal(tryParsePrefix('2001:db8::1/64', false)?.text, '2001:db8::/64');
    assert.equal(tryParsePrefix('255.255.255.255/1', false)?.text, '128.0.0.0/1');
  });

  void it('refuses sloppy lengths and addresses', () => {
    for (const input of [
      '203.0.113.0/033',
      '203.0.113.0/024',
      '203.0.113.0/',
      '/24',
      '203.0.113.0',
      '203.0.113.0/24/1',
      '203.0.113.0/+24',
      '203.0.113.0/ 24',
      '203.0.113.0/24 ',
      '203.0.113.0/-1',
      '203.0.113.0/1e1',
      '203.0.113.0/0x18',
      '203.0.113.0/2.4',
      '203.0.113.0/1000',
      '010.0.0.0/8',
      '2001:db8::%eth0/64',
    ]) {
      assert.equal(tryParsePrefix(input), undefined, input);
      assert.equal(tryParsePrefix(input, false), undefined, input);
    }
  });

  void it('turns a prefix into the range of all its addresses', () => {
    const v4 = prefixRange(tryParsePrefix('203.0.113.0/24')!);
    assert.equal(v4.family, 4);
    assert.equal(v4.first.text, '203.0.113.0');
    assert.equal(v4.last.text, '203.0.113.255');
    assert.equal(rangeSize(v4), 256n);

    const v6 = prefixRange(tryParsePrefix('2001:db8::/64')!);
    assert.equal(v6.first.text, '2001:db8::');
    assert.equal(v6.last.text, '2001:db8::ffff:ffff:ffff:ffff');
    assert.equal(rangeSize(v6), 1n << 64n);

    assert.equal(rangeSize(prefixRange(tryParsePrefix('192.0.2.7/32')!)), 1n);
    assert.equal(rangeSize(prefixRange(tryParsePrefix('::/0')!)), 1n << 128n);
  });
});

void describe('core/address: ranges', () => {
  void it('parses FIRST-LAST in canonical form', () => {
    const r = tryParseRange('192.0.2.9-192.0.2.10');
    assert.ok(r);
    assert.equal(r.family, 4);
    assert.equal(r.first.text, '192.0.2.9');
    assert.equal(r.last.text, '192.0.2.10');
    assert.equal(rangeSize(r), 2n);

    const v6 = tryParseRange('2001:DB8::1-2001:db8:0:0:0:0:0:ff');
    assert.ok(v6);
    assert.equal(v6.first.text, '2001:db8::1');
    assert.equal(v6.last.text, '2001:db8::ff');
    assert.equal(rangeSize(v6), 255n);
  });

  void it('accepts a one-address range', () => {
    const r = tryParseRange('192.0.2.5-192.0.2.5');
    assert.ok(r);
    assert.equal(rangeSize(r), 1n);
  });

  void it('refuses reversed ranges (numeric order, not text order)', () => {
    assert.equal(tryParseRange('192.0.2.10-192.0.2.9'), undefined);
    // "192.0.2.10" < "192.0.2.9" as text, but not as numbers: this one is in order.
    assert.ok(tryParseRange('192.0.2.9-192.0.2.10'));
    assert.equal(tryParseRange('2001:db8::ff-2001:db8::1'), undefined);
  });

  void it('refuses mixed families and malformed ranges', () => {
    for (const input of [
      '192.0.2.1-2001:db8::1',
      '2001:db8::1-192.0.2.1',
      '192.0.2.1-192.0.2.2-192.0.2.3',
      '192.0.2.1 - 192.0.2.2',
      '192.0.2.1-',
      '-192.0.2.1',
      '192.0.2.1',
      '010.0.0.1-10.0.0.2',
    ]) {
      assert.equal(tryParseRange(input), undefined, input);
    }
  });

  void it('checks membership by family and bounds', () => {
    const r = tryParseRange('192.0.2.10-192.0.2.20')!;
    assert.equal(rangeContains(r, addr('192.0.2.10')), true);
    assert.equal(rangeContains(r, addr('192.0.2.20')), true);
    assert.equal(rangeContains(r, addr('192.0.2.15')), true);
    assert.equal(rangeContains(r, addr('192.0.2.9')), false);
    assert.equal(rangeContains(r, addr('192.0.2.21')), false);
    // Same value in the other family is not a member.
    assert.equal(rangeContains(r, addressFromValue(6, addr('192.0.2.15').value)), false);
  });

  void it('finds the first common address of two ranges', () => {
    const a = tryParseRange('192.0.2.10-192.0.2.20')!;
    assert.equal(rangeOverlap(a, tryParseRange('192.0.2.15-192.0.2.30')!)?.text, '192.0.2.15');
    assert.equal(rangeOverlap(a, tryParseRange('192.0.2.0-192.0.2.10')!)?.text, '192.0.2.10');
    assert.equal(rangeOverlap(a, tryParseRange('192.0.2.12-192.0.2.13')!)?.text, '192.0.2.12');
    assert.equal(rangeOverlap(a, tryParseRange('192.0.2.21-192.0.2.30')!), undefined);
    assert.equal(rangeOverlap(a, tryParseRange('192.0.2.0-192.0.2.9')!), undefined);
    const v6 = prefixRange(tryParsePrefix('::/96')!);
    // 192.0.2.15 and ::c000:20f have the same value but are of different families.
    assert.equal(rangeOverlap(a, v6), undefined);
  });
});

void describe('core/address: MACs', () => {
  void it('lower-cases and uses colons', () => {
    assert.equal(tryParseMac('52:54:00:AB:cd:EF'), '52:54:00:ab:cd:ef');
    assert.equal(tryParseMac('52-54-00-AB-CD-EF'), '52:54:00:ab:cd:ef');
    assert.equal(tryParseMac('52:54:00:12:34:56'), '52:54:00:12:34:56');
  });

  void it('refuses mixed separators and malformed MACs', () => {
    for (const input of [
      '52:54-00:ab:cd:ef',
      '52-54-00-ab-cd:ef',
      '525400abcdef',
      '5254.00ab.cdef',
      '52.54.00.ab.cd.ef',
      '52:54:00:ab:cd',
      '52:54:00:ab:cd:ef:01',
      '52:54:00:ab:cd:eg',
      '2:54:00:ab:cd:ef',
      '52:54:00:ab:cd:ef ',
      ' 52:54:00:ab:cd:ef',
      '',
    ]) {
      assert.equal(tryParseMac(input), undefined, input);
    }
  });
});

void describe('core/address: ordering', () => {
  void it('sorts numerically, not lexicographically', () => {
    assert.ok(compareAddresses(addr('192.0.2.9'), addr('192.0.2.10')) < 0);
    assert.ok(compareAddresses(addr('192.0.2.10'), addr('192.0.2.9')) > 0);
    assert.equal(compareAddresses(addr('192.0.2.9'), addr('192.0.2.9')), 0);
    assert.ok(compareAddresses(addr('2001:db8::9'), addr('2001:db8::10')) < 0);
    assert.ok(compareAddresses(addr('2001:db8::a'), addr('2001:db8::10')) < 0);
  });

  void it('puts IPv4 before IPv6 whatever the values', () => {
    assert.ok(compareAddresses(addr('255.255.255.255'), addr('::1')) < 0);
    assert.ok(compareAddresses(addr('::'), addr('0.0.0.1')) > 0);
  });

  void it('sorts lists of address text', () => {
    const list = ['2001:db8::10', '192.0.2.10', '2001:db8::9', '10.0.0.1', '192.0.2.9', '::1'];
    assert.deepEqual([...list].sort(compareAddressText), [
      '10.0.0.1',
      '192.0.2.9',
      '192.0.2.10',
      '::1',
      '2001:db8::9',
      '2001:db8::10',
    ]);
  });

  void it('sorts records by their address as compareAddressText does, leaving the input alone', () => {
    const list = ['2001:db8::10', '192.0.2.10', 'x', '2001:db8::9', '10.0.0.1', '192.0.2.9'];
    const records = list.map((address, i) => ({ address, i }));
    const sorted = sortByAddress(records, (r) => r.address);
    assert.deepEqual(
      sorted.map((r) => r.address),
      [...list].sort(compareAddressText),
    );
    assert.equal(sorted[0], records[4]);
    assert.deepEqual(
      records.map((r) => r.i),
      [0, 1, 2, 3, 4, 5],
    );
  });

  void it('reads a canonical dotted quad by its value, the largest too', () => {
    assert.equal(addr('255.255.255.255').value, 0xffffffffn);
    assert.equal(addr('198.18.39.16').value, (198n << 24n) | (18n << 16n) | (39n << 8n) | 16n);
    assert.equal(tryParseAddress('198.018.0.1'), undefined);
  });

  void it('falls back to text order for non-addresses', () => {
    assert.ok(compareAddressText('apple', 'banana') < 0);
    assert.ok(compareAddressText('banana', 'apple') > 0);
    assert.equal(compareAddressText('same', 'same'), 0);
  });
});

void describe('core/address: addressFromValue', () => {
  void it('round-trips IPv4 and IPv6 through their values', () => {
    for (const text of [
      '0.0.0.0',
      '0.0.0.1',
      '192.0.2.10',
      '203.0.113.255',
      '255.255.255.255',
      '::',
      '::1',
      '2001:db8::1',
      '2001:db8::1:0:0:1',
      'fe80::',
      '2001:db8:ffff:ffff:ffff:ffff:ffff:ffff',
      'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff',
    ]) {
      const a = parseAddress(text);
      assert.deepEqual(addressFromValue(a.family, a.value), a, text);
    }
  });

  void it('handles full 128-bit values', () => {
    const max = addressFromValue(6, (1n << 128n) - 1n);
    assert.equal(max.text, 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff');
    assert.equal(max.value, (1n << 128n) - 1n);
    const top = addressFromValue(6, 1n << 127n);
    assert.equal(top.text, '8000::');
    assert.equal(addressFromValue(6, (0x20010db8n << 96n) + (1n << 64n)).text, '2001:db8:0:1::');
    assert.equal(addressFromValue(4, 0xc000020an).text, '192.0.2.10');
  });

  void it('gives consecutive addresses for consecutive values', () => {
    const base = parseAddress('2001:db8::ffff');
    assert.equal(addressFromValue(6, base.value + 1n).text, '2001:db8::1:0');
    const v4 = parseAddress('192.0.2.255');
    assert.equal(addressFromValue(4, v4.value + 1n).text, '192.0.3.0');
  });
});
