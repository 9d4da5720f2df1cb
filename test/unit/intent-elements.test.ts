/**
 * The element codec joins fields into `key`/`value` text with spaces, ` . `, `-` and keywords
 * (`dev`, `via`, `lookup` …), so a field holding one of them could spell another, valid element
 * (issue 12, finding 3: store text reaching `nft -f` and `ip -batch`). `element()` refuses such
 * data with IPF_E_DATAPLANE. Held here: what compile and the drivers build still reads back as
 * itself, each way of smuggling structure named in the issue is refused, and for random payloads
 * of every kind built from separators and keywords, an element is either refused or reads back
 * as exactly the payload it was made of.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { IpferryError } from '../../src/core/errors.js';
import {
  observedElement,
  decodeElement,
  ELEMENT_KINDS,
  element,
  type ElementKind,
  HOST_OWNER,
  type Payloads,
} from '../../src/intent/elements.js';
import { fuzzParameters } from '../support/fuzz.js';

/** A payload of every kind as compile or a driver builds it. */
const ORDINARY: { readonly [K in ElementKind]: readonly Payloads[K][] } = {
  table: [{ version: '8' }, { version: 'damaged' }],
  sysctl: [{ path: 'net/ipv4/conf/eth0/proxy_arp', value: '1' }],
  hairpin: [{ ifname: 'eth0.100' }, { ifname: 'br-lan@x' }],
  drop: [
    { first: '203.0.113.1', last: '203.0.113.14' },
    { first: '2001:db8::', last: '2001:db8::ffff' },
  ],
  claim: [
    { fip: '203.0.113.5', uplink: 'eth0', proxy: false },
    { fip: '203.0.113.5', uplink: 'eth0', proxy: true },
    { fip: '2001:db8::5', uplink: 'proxy', proxy: true },
  ],
  counter: [{ fip: '203.0.113.5' }],
  dnat: [{ fip: '203.0.113.5', target: '10.0.0.5' }],
  snat: [{ target: '10.0.0.5', fip: '203.0.113.5' }],
  masq: [{ target: '10.0.0.5' }],
  fwd: [
    { fip: '203.0.113.5', protocol: 'tcp', ports: { first: 8000, last: 8010 }, target: '10.0.0.5' },
  ],
  fwdport: [
    { fip: '203.0.113.5', protocol: 'udp', port: 53, target: '10.0.0.5', targetPort: 5353 },
  ],
  tuntarget: [{ target: '10.0.0.5', mss: 1380 }],
  route: [
    { prefix: '203.0.113.5/32', dev: 'ipf-b1' },
    { prefix: '0.0.0.0/0', table: 52, dev: 'wg0', via: '10.0.0.1', src: '192.0.2.2', mtu: 1420 },
    { prefix: '203.0.113.0/24', table: 'main', dev: 'eth0', via: 'inet6 fe80::1' },
  ],
  rule: [
    { selector: { from: '203.0.113.5' }, table: 52, priority: 10_500 },
    { selector: { from: '0.0.0.0/0' }, table: 'main', suppressPrefixLength: 0, priority: 10_400 },
    {
      selector: { fwmark: '0x1000000', mask: '0xff000000', family: 6 },
      table: 53,
      priority: 10_600,
    },
  ],
  meshnat: [{ overlay: '10.99.0.2', address: '198.51.100.2' }],
  meshsnat: [{ target: '10.0.0.2', source: '10.0.0.1' }],
  meshmember: [{ address: '198.51.100.2' }],
  meshssh: [{ prefix: '192.0.2.0/24' }, { prefix: '192.0.2.1-192.0.2.9' }],
  meshport: [{ protocol: 'tcp', ports: { first: 22, last: 22 } }],
  meshreject: [{ family: 'ipv4' }, { family: 'ipv6' }],
};

const build = <K extends ElementKind>(kind: K, data: Payloads[K]) =>
  element(kind, data, HOST_OWNER);

/** What `element()` threw: its code and reason. */
function refusal(make: () => unknown): { code: string; reason: string } {
  try {
    make();
  } catch (e) {
    assert.ok(e instanceof IpferryError, String(e));
    return { code: e.code, reason: String(e.params.reason ?? '') };
  }
  assert.fail('element() took it');
}

describe('intent elements: no field can smuggle structure into the text', () => {
  it('builds what compile and the drivers build, and reads it back as it was', () => {
    for (const kind of ELEMENT_KINDS) {
      for (const data of ORDINARY[kind] as readonly Payloads[ElementKind][]) {
        const e = build(kind, data as never);
        assert.deepEqual(decodeElement(e).data, data, `${kind} ${e.key} = ${e.value}`);
      }
    }
  });

  it('refuses whitespace, control and format characters in any field', () => {
    const cases: [ElementKind, object][] = [
      // The issue's own: a route whose dev would name a next hop, a pool uplink with newlines.
      ['route', { prefix: '203.0.113.5/32', dev: 'a via b' }],
      ['claim', { fip: '203.0.113.5', uplink: 'eth0\nlink set lo down', proxy: false }],
      [
        'dnat',
        {
          fip: '203.0.113.5',
          target: '10.0.0.6 }; delete table inet canary; add table inet pwned {',
        },
      ],
      [
        'fwd',
        {
          fip: '203.0.113.5',
          protocol: 'tcp . 1',
          ports: { first: 1, last: 1 },
          target: '10.0.0.5',
        },
      ],
      ['hairpin', { ifname: 'q\t#' }],
      ['sysctl', { path: 'net/ipv4/ip_forward', value: '1\r' }],
      ['table', { version: '8\u0000' }],
      ['meshssh', { prefix: '192.0.2.0/24\u0085' }],
      ['meshmember', { address: '198.51.100.2\u202e' }],
      ['counter', { fip: '203.0.113.5\u200b' }],
      ['rule', { selector: { fwmark: '0x1 ', mask: '0xff', family: 4 }, table: 52, priority: 1 }],
      ['route', { prefix: '203.0.113.5/32', dev: 'eth0', via: 'inet6  fe80::1' }],
    ];
    for (const [kind, data] of cases) {
      const r = refusal(() => build(kind, data as never));
      assert.equal(r.code, 'IPF_E_DATAPLANE', JSON.stringify(data));
      assert.match(r.reason, /holds whitespace or a control character/);
      // The reason is one printable line: what the field held is escaped.
      assert.doesNotMatch(r.reason, /[\p{Cc}\p{Cf}]/u, JSON.stringify(r.reason));
    }
  });

  it('refuses a separator or keyword of the codec in a field', () => {
    const cases: [ElementKind, object][] = [
      ['drop', { first: '203.0.113.1-203.0.113.9', last: '203.0.113.14' }],
      ['route', { prefix: '203.0.113.5/32', dev: 'via', via: '10.0.0.1' }],
      ['route', { prefix: '203.0.113.5/32', dev: 'src', src: '192.0.2.2' }],
      ['route', { prefix: '203.0.113.5/32', dev: 'eth0', via: 'mtu', mtu: 1400 }],
      ['route', { prefix: '203.0.113.5/32', dev: 'eth0', via: 'inet6' }],
      ['route', { prefix: '203.0.113.5/32', dev: 'eth0', table: '52' }],
      ['rule', { selector: { from: 'lookup' }, table: 52, priority: 1 }],
      [
        'rule',
        {
          selector: { from: '203.0.113.5' },
          table: 'suppress_prefixlength',
          suppressPrefixLength: 0,
          priority: 1,
        },
      ],
      [
        'rule',
        { selector: { fwmark: '0x1/0x2', mask: '0xff', family: 4 }, table: 52, priority: 1 },
      ],
      [
        'fwd',
        { fip: '203.0.113.5', protocol: 'tcp', ports: { first: -1, last: 80 }, target: '10.0.0.5' },
      ],
      ['meshport', { protocol: 'tcp', ports: { first: 22, last: -22 } }],
      ['claim', { fip: '2001:db8::5', uplink: 'eth0', proxy: false }],
    ];
    for (const [kind, data] of cases) {
      const r = refusal(() => build(kind, data as never));
      assert.equal(r.code, 'IPF_E_DATAPLANE', JSON.stringify(data));
      assert.match(r.reason, /reads back as .* separator or keyword/, JSON.stringify(data));
    }
  });

  it('cuts the reason of a huge field short', () => {
    const r = refusal(() => build('masq', { target: `${'a'.repeat(100_000)} b` }));
    assert.ok(r.reason.length < 700, String(r.reason.length));
  });

  it('either refuses a random payload or reads it back exactly, for every kind', () => {
    // Text from the codecs' own separators and keywords, a little whitespace and control.
    const text = fc
      .array(
        fc.constantFrom(
          ...['a', '1', '0x1', '10.0.0.1', '2001:db8::1', 'fe80::1', ':', '.', '-', '/', ' . '],
          ...[' ', '\t', '\n', '\u0000', '\u202e', 'via', 'src', 'dev', 'mtu', 'inet6', 'table'],
          ...['lookup', 'suppress_prefixlength', 'ipv4', 'ipv6', 'proxy', 'proxy ', 'from'],
          ...['fwmark', 'main', '}', ';', '"', '#'],
        ),
        { maxLength: 5 },
      )
      .map((parts) => parts.join(''));
    const num = fc.oneof(fc.integer({ min: -5, max: 70_000 }), fc.constantFrom(NaN, 1.5, 1e21));
    const ports = fc.record({ first: num, last: num });
    const optional = <T>(a: fc.Arbitrary<T>) => fc.option(a, { nil: undefined });
    const table = fc.oneof(text, num);
    const payloads: { readonly [K in ElementKind]: fc.Arbitrary<Payloads[K]> } = {
      table: fc.record({ version: text }),
      sysctl: fc.record({ path: text, value: text }),
      hairpin: fc.record({ ifname: text }),
      drop: fc.record({ first: text, last: text }),
      claim: fc.record({ fip: text, uplink: text, proxy: fc.boolean() }),
      counter: fc.record({ fip: text }),
      dnat: fc.record({ fip: text, target: text }),
      snat: fc.record({ target: text, fip: text }),
      masq: fc.record({ target: text }),
      fwd: fc.record({ fip: text, protocol: text, ports, target: text }),
      fwdport: fc.record({ fip: text, protocol: text, port: num, target: text, targetPort: num }),
      tuntarget: fc.record({ target: text, mss: num }),
      route: fc.record({
        prefix: text,
        table: optional(table),
        dev: text,
        via: optional(
          fc.oneof(
            text,
            text.map((t) => `inet6 ${t}`),
          ),
        ),
        src: optional(text),
        mtu: optional(num),
      }),
      rule: fc.record({
        selector: fc.oneof(
          fc.record({ from: text }),
          fc.record({ fwmark: text, mask: text, family: fc.constantFrom(4 as const, 6 as const) }),
        ),
        table,
        suppressPrefixLength: optional(num),
        priority: num,
      }),
      meshnat: fc.record({ overlay: text, address: text }),
      meshsnat: fc.record({ target: text, source: text }),
      meshmember: fc.record({ address: text }),
      meshssh: fc.record({ prefix: text }),
      meshport: fc.record({ protocol: text, ports }),
      meshreject: fc.record({ family: fc.constantFrom('ipv4' as const, 'ipv6' as const) }),
    };
    const seen = { built: 0, refused: 0 };
    for (const kind of ELEMENT_KINDS) {
      fc.assert(
        fc.property(payloads[kind] as fc.Arbitrary<Payloads[ElementKind]>, (data) => {
          let e;
          try {
            e = build(kind, data as never);
          } catch (err) {
            assert.ok(err instanceof IpferryError && err.code === 'IPF_E_DATAPLANE', String(err));
            seen.refused++;
            return;
          }
          seen.built++;
          assert.doesNotMatch(`${e.key}${e.value}`.replace(/ /g, ''), /[\s\p{Cc}\p{Cf}]/u);
          const back = JSON.parse(JSON.stringify(decodeElement(e).data)) as unknown;
          assert.deepEqual(
            back,
            JSON.parse(JSON.stringify(data)),
            `${kind}: ${e.key} = ${e.value}`,
          );
        }),
        fuzzParameters(300),
      );
    }
    // Both sides were exercised, or the property proved nothing.
    assert.ok(seen.built > 100 && seen.refused > 100, JSON.stringify(seen));
  });

  it('reads back a kernel object no element can name as nothing, not as an error', () => {
    assert.deepEqual(
      observedElement('route', { prefix: '198.51.100.0/24', dev: 'eth0 via 192.0.2.1' }, 'host'),
      [],
    );
    assert.equal(
      observedElement('route', { prefix: '198.51.100.0/24', dev: 'eth0' }, 'host').length,
      1,
    );
  });
});
