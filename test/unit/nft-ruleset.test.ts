import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { IpferryError } from '../../src/core/errors.js';
import type { IntentElement } from '../../src/intent/elements.js';
import { NFT_SKELETON_VERSION } from '../../src/core/names.js';
import {
  parseCounters,
  parseTable,
  renderElements,
  renderTable,
} from '../../src/dataplane/nft/ruleset.js';

const host = (kind: IntentElement['kind'], key: string, value = ''): IntentElement => ({
  kind,
  key,
  value,
  owner: 'host',
});

/** The rules of one chain of the rendered table, in order. */
function chainRules(table: string, chain: string): { declaration: string; rules: string[] } {
  const lines = table.split('\n');
  const start = lines.indexOf(`  chain ${chain} {`);
  assert.ok(start >= 0, `chain ${chain}`);
  const end = lines.indexOf('  }', start);
  const [declaration = '', ...rules] = lines.slice(start + 1, end).map((l) => l.trim());
  return { declaration, rules };
}

/** Every line of the table that is a rule (not a declaration, a brace or an element command). */
function ruleLines(table: string): string[] {
  return table
    .split('\n')
    .filter((l) => !/^\s*(map|set|table|chain|type|\}|add |delete )/.test(l.trim()) && l.trim());
}

/** `nft -j list table inet ipferry` as nft 1.0.6 prints the mesh sets holding `MESH` below. */
function meshListing(): string {
  const set = (name: string, elem: unknown[], map = false) => ({
    [map ? 'map' : 'set']: { family: 'inet', table: 'ipferry', name, elem },
  });
  return JSON.stringify({
    nftables: [
      { metainfo: { version: '1.0.6' } },
      { table: { family: 'inet', name: 'ipferry' } },
      set('meshnat4', [['100.80.0.2', '10.0.0.12']], true),
      set('meshsnat4', [['10.0.0.12', '10.0.0.1']], true),
      set('meshmember4', ['10.0.0.12', '192.0.2.3']),
      set('meshmember6', ['2001:db8:5::3']),
      set('meshssh4', ['10.9.9.9', { prefix: { addr: '198.51.100.0', len: 24 } }]),
      set('meshssh6', [{ prefix: { addr: '2001:db8:a::', len: 48 } }, '2001:db8:b::1']),
      set('meshport', [{ concat: ['tcp', 443] }, { concat: ['udp', { range: [8000, 8010] }] }]),
      set('meshreject', ['ipv4', 'ipv6']),
    ],
  });
}

const MESH: IntentElement[] = [
  host('meshnat', '100.80.0.2', '10.0.0.12'),
  host('meshsnat', '10.0.0.12', '10.0.0.1'),
  host('meshmember', '10.0.0.12'),
  host('meshmember', '192.0.2.3'),
  host('meshmember', '2001:db8:5::3'),
  host('meshssh', '10.9.9.9/32'),
  host('meshssh', '198.51.100.0/24'),
  host('meshssh', '2001:db8:a::/48'),
  host('meshssh', '2001:db8:b::1/128'),
  host('meshport', 'tcp . 443'),
  host('meshport', 'udp . 8000-8010'),
  host('meshreject', 'ipv4'),
  host('meshreject', 'ipv6'),
];

const byId = (xs: readonly IntentElement[]): string[] =>
  xs.map((e) => `${e.kind} ${e.key} -> ${e.value} (${e.owner})`).sort();

describe('nftables ruleset', () => {
  it('clamps the MSS of TCP connections into and out of tunnels to the route MTU', () => {
    const table = renderTable([], false);
    assert.match(
      table,
      /oifname "ipf\*" tcp flags syn \/ syn,rst tcp option maxseg size set rt mtu/,
    );
    assert.match(
      table,
      /iifname "ipf\*" tcp flags syn \/ syn,rst tcp option maxseg size set rt mtu/,
    );
    // Out of a tunnel from a nat/ports target: the MSS of that target's tunnel path.
    assert.match(
      table,
      /iifname "ipf\*" tcp flags syn \/ syn,rst tcp option maxseg size set ip saddr map @tuntarget4/,
    );
    assert.match(table, /maxseg size set ip6 saddr map @tuntarget6/);
    // The host's own SYN-ACKs into a tunnel, after the mark rerouted them.
    assert.match(
      table,
      /chain tunclamp \{\n\s+type filter hook postrouting priority mangle; policy accept;\n\s+oifname "ipf\*" tcp flags syn \/ syn,rst tcp option maxseg size set rt mtu/,
    );
    assert.deepEqual(
      renderElements('add', [{ kind: 'tuntarget', key: '198.18.0.10', value: '1272', owner: 'h' }]),
      ['add element inet ipferry tuntarget4 { 198.18.0.10 : 1272 }'],
    );
  });

  it('masquerades what arrives from a tunnel from a @masq4 source, after the SNAT of nat targets', () => {
    const table = renderTable([], false);
    const rule = 'iifname "ipf*" ip saddr @masq4 masquerade';
    assert.ok(table.includes(rule), table);
    // A nat target's own connections keep leaving as its FIP: its SNAT comes first.
    assert.ok(table.indexOf('snat ip to ip saddr map @snat4') < table.indexOf(rule));
    assert.deepEqual(
      renderElements('add', [{ kind: 'masq', key: '169.254.7.9', value: '', owner: 'host' }]),
      ['add element inet ipferry masq4 { 169.254.7.9 }'],
    );
  });

  it('never names an address in a rule: FIPs are elements', () => {
    const rules = ruleLines(renderTable([], false));
    assert.ok(rules.length > 10, 'the table has rules');
    for (const rule of rules)
      assert.doesNotMatch(rule, /\b\d+\.\d+\.\d+\.\d+\b|[0-9a-f]+::[0-9a-f]/i, rule);
  });

  it('groups element changes per map; a counter is a plain element of a counting set', () => {
    const lines = renderElements('add', [
      { kind: 'counter', key: '203.0.113.10', value: '', owner: '203.0.113.10' },
      { kind: 'dnat', key: '203.0.113.10', value: '10.0.0.11', owner: '203.0.113.10' },
      { kind: 'dnat', key: '203.0.113.11', value: '10.0.0.12', owner: '203.0.113.11' },
      { kind: 'counter', key: '2001:db8::10', value: '', owner: '2001:db8::10' },
    ]);
    assert.deepEqual(lines, [
      'add element inet ipferry counters4 { 203.0.113.10 }',
      'add element inet ipferry dnat4 { 203.0.113.10 : 10.0.0.11, 203.0.113.11 : 10.0.0.12 }',
      'add element inet ipferry counters6 { 2001:db8::10 }',
    ]);
    const removal = renderElements('delete', [
      { kind: 'counter', key: '203.0.113.10', value: '', owner: '203.0.113.10' },
    ]);
    assert.deepEqual(removal, ['delete element inet ipferry counters4 { 203.0.113.10 }']);
    // No stateful objects (named counters, quotas): nft 1.0.6 reads every one of them into its
    // cache before any transaction, which made a one-element change grow with the FIPs.
    const table = renderTable([], false);
    assert.doesNotMatch(table, /counter name|: counter;|^\s*counter \w+ \{/m);
    assert.match(table, /set counters4 \{ type ipv4_addr; counter; \}/);
    assert.deepEqual(chainRules(table, 'count').rules, [
      `ip daddr @counters4 comment "ipferry skeleton ${NFT_SKELETON_VERSION}"`,
      'ip6 daddr @counters6',
    ]);
  });

  it('reads counting set elements back as counters, and their packets and bytes', () => {
    // As nft 1.0.6 lists a set declared with `counter` (checked against the kernel).
    const elem = (val: string, packets: number, bytes: number) => ({
      elem: { val, counter: { packets, bytes } },
    });
    const listing = JSON.stringify({
      nftables: [
        { metainfo: { version: '1.0.6' } },
        { table: { family: 'inet', name: 'ipferry' } },
        {
          set: {
            family: 'inet',
            table: 'ipferry',
            name: 'counters4',
            type: 'ipv4_addr',
            elem: [elem('203.0.113.10', 3, 252), elem('203.0.113.12', 0, 0)],
            stmt: [{ counter: null }],
          },
        },
        {
          set: {
            family: 'inet',
            table: 'ipferry',
            name: 'counters6',
            elem: [elem('2001:db8:0::10', 1, 104)],
          },
        },
      ],
    });
    const own = (key: string): IntentElement => ({ kind: 'counter', key, value: '', owner: key });
    assert.deepEqual(
      parseTable(listing).filter((e) => e.kind !== 'table'),
      [own('203.0.113.10'), own('203.0.113.12'), own('2001:db8::10')],
    );
    assert.deepEqual(
      [...parseCounters(listing)],
      [
        ['203.0.113.10', { packets: 3, bytes: 252 }],
        ['203.0.113.12', { packets: 0, bytes: 0 }],
        ['2001:db8::10', { packets: 1, bytes: 104 }],
      ],
    );
  });

  it('renders every mesh kind into its set or map, grouped, ports as intervals', () => {
    assert.deepEqual(renderElements('add', MESH), [
      'add element inet ipferry meshnat4 { 100.80.0.2 : 10.0.0.12 }',
      'add element inet ipferry meshsnat4 { 10.0.0.12 : 10.0.0.1 }',
      'add element inet ipferry meshmember4 { 10.0.0.12, 192.0.2.3 }',
      'add element inet ipferry meshmember6 { 2001:db8:5::3 }',
      'add element inet ipferry meshssh4 { 10.9.9.9/32, 198.51.100.0/24 }',
      'add element inet ipferry meshssh6 { 2001:db8:a::/48, 2001:db8:b::1/128 }',
      'add element inet ipferry meshport { tcp . 443, udp . 8000-8010 }',
      'add element inet ipferry meshreject { ipv4, ipv6 }',
    ]);
    // There is no IPv6 mesh NAT: such an element names a map the kernel does not have.
    assert.deepEqual(renderElements('delete', [host('meshnat', 'fd00::1', 'fd00::2')]), [
      'delete element inet ipferry meshnat6 { fd00::1 : fd00::2 }',
    ]);
  });

  it('reads the mesh sets back as the elements that made them (single-address prefixes too)', () => {
    const parsed = parseTable(meshListing()).filter((e) => e.kind !== 'table');
    assert.deepEqual(byId(parsed), byId(MESH));
    // A range an operator added by hand reads as FIRST-LAST, which no compiled key is: the next
    // apply deletes it by that very text.
    const [odd] = parseTable(
      JSON.stringify({
        nftables: [
          { table: { family: 'inet', name: 'ipferry' } },
          {
            set: {
              family: 'inet',
              table: 'ipferry',
              name: 'meshssh4',
              elem: [{ range: ['10.0.0.1', '10.0.0.5'] }],
            },
          },
        ],
      }),
    ).filter((e) => e.kind !== 'table');
    assert.deepEqual(odd, host('meshssh', '10.0.0.1-10.0.0.5'));
    assert.deepEqual(renderElements('delete', [odd]), [
      'delete element inet ipferry meshssh4 { 10.0.0.1-10.0.0.5 }',
    ]);
  });

  it('a 5,000-member fleet is the same rules as none: members are elements', () => {
    const members = Array.from({ length: 5000 }, (_, i) =>
      host('meshmember', `10.${i >> 8}.${i & 255}.1`),
    );
    const nats = Array.from({ length: 5000 }, (_, i) =>
      host('meshnat', `100.64.${i >> 8}.${i & 255}`, `10.${i >> 8}.${i & 255}.1`),
    );
    const empty = renderTable([], false);
    const full = renderTable([...members, ...nats, ...MESH], false);
    assert.deepEqual(ruleLines(full), ruleLines(empty));
    for (const rule of ruleLines(full))
      assert.doesNotMatch(rule, /\b\d+\.\d+\.\d+\.\d+\b|[0-9a-f]+::[0-9a-f]/i, rule);
    // One add command per set however many elements.
    assert.equal(full.split('\n').filter((l) => l.startsWith('add element')).length, 8);
  });

  it('lets failsafe SSH in before any drop, and changes nothing while the mesh sets are empty', () => {
    const table = renderTable([], false);
    const { declaration, rules } = chainRules(table, 'meshin');
    assert.match(declaration, /type filter hook input priority filter - 10; policy accept;/);
    const ssh = rules.findIndex((r) => r.includes('@meshssh4'));
    assert.ok(ssh >= 0 && rules[ssh]!.startsWith('tcp dport 22 '), rules[ssh]);
    assert.ok(rules[ssh + 1]!.startsWith('tcp dport 22 ip6 saddr @meshssh6'), rules[ssh + 1]);
    // Every rule of the chain before the SSH failsafe accepts; the only drop is the last rule,
    // and it matches only a family listed in @meshreject (empty: nothing).
    for (const rule of rules.slice(0, ssh)) assert.match(rule, / accept$/, rule);
    assert.deepEqual(
      rules.filter((r) => /\b(drop|reject)\b/.test(r)),
      ['meta nfproto @meshreject drop'],
    );
    assert.equal(rules.at(-1), 'meta nfproto @meshreject drop');
    // The other input chain of the table comes later (priority filter > filter - 10), and only
    // drops pool addresses, never the host's own.
    const input = chainRules(table, 'input');
    assert.match(input.declaration, /hook input priority filter;/);
    assert.deepEqual(input.rules, ['ip daddr @drop4 drop', 'ip6 daddr @drop6 drop']);
    // The order of the rest: members, open ports, then neighbour discovery before the drop.
    const at = (needle: string): number => rules.findIndex((r) => r.includes(needle));
    assert.ok(at('ct state established,related') < ssh);
    assert.ok(ssh < at('@meshmember4') && at('@meshmember6') < at('@meshport'));
    assert.ok(at('@meshport') < at('nd-neighbor-solicit'));
    assert.ok(at('nd-neighbor-advert') < at('@meshreject'));
  });

  it('DNATs this host’s own connections to overlay addresses, after the FIPs’ DNAT', () => {
    const table = renderTable([], false);
    const output = chainRules(table, 'output').rules;
    assert.equal(output.at(-1), 'dnat ip to ip daddr map @meshnat4');
    assert.ok(output.indexOf('dnat ip to ip daddr map @dnat4') < output.length - 1);
    // Only the host's own connections: traffic passing through is not the mesh's.
    assert.ok(!chainRules(table, 'prerouting').rules.some((r) => r.includes('meshnat')));
  });

  it('reads a table of another skeleton version as damaged, so it gets rebuilt', () => {
    const listing = (comment: string) =>
      JSON.stringify({
        nftables: [
          { table: { family: 'inet', name: 'ipferry' } },
          { rule: { family: 'inet', table: 'ipferry', chain: 'count', comment } },
        ],
      });
    const [old] = parseTable(listing('ipferry skeleton 1'));
    assert.deepEqual(old, { kind: 'table', key: 'inet ipferry', value: 'damaged', owner: 'host' });
    assert.notEqual(NFT_SKELETON_VERSION, '1');
    // The mesh changed the fixed part: a table of version 4 (no mesh sets) is rebuilt once,
    // one of version 5 (no same-site SNAT) as well, and one of version 6 (a named counter
    // object per FIP, not a counting set), and one of version 7 (tunnel targets in a set, not
    // a map to the MSS of their tunnel path; no clamp of the host's own SYN-ACKs).
    assert.equal(NFT_SKELETON_VERSION, '8');
    assert.equal(parseTable(listing('ipferry skeleton 7'))[0]?.value, 'damaged');
    assert.equal(parseTable(listing('ipferry skeleton 6'))[0]?.value, 'damaged');
    assert.equal(parseTable(listing('ipferry skeleton 5'))[0]?.value, 'damaged');
    const [v4] = parseTable(listing('ipferry skeleton 4'));
    assert.equal(v4?.value, 'damaged');
  });
});

describe('nftables ruleset: what reaches the script', () => {
  const el = (kind: IntentElement['kind'], key: string, value = ''): IntentElement => ({
    kind,
    key,
    value,
    owner: key,
  });

  it('refuses an element whose values are not what its kind says, whatever the store held', () => {
    const hostile: IntentElement[] = [
      // A forward target that would close the element list and delete someone's table.
      el(
        'fwd',
        '203.0.113.5 . tcp . 443',
        '10.0.0.6 }; delete table inet canary; add table inet pwned {',
      ),
      el('dnat', '203.0.113.5', '10.0.0.6 } ; flush ruleset'),
      el('fwd', '203.0.113.5 . tcp; flush ruleset . 443', '10.0.0.6'),
      el('fwd', '203.0.113.5 . tcp . 70000', '10.0.0.6'),
      el('fwdport', '203.0.113.5 . udp . 53', '10.0.0.6 . -1'),
      el('hairpin', 'q"#', 'q"#'),
      el('counter', '203.000.113.5'),
      el('meshssh', '10.0.0.0/8 }'),
      el('tuntarget', '198.18.0.10', '1272; flush ruleset'),
    ];
    for (const e of hostile) {
      assert.throws(
        () => renderElements('add', [e]),
        (err: unknown) =>
          err instanceof IpferryError &&
          err.code === 'IPF_E_DATAPLANE' &&
          /refused an element|cannot carry/.test(err.message),
        `${e.kind} ${e.key} -> ${e.value}`,
      );
    }
    // What compile gives is rendered as it was.
    assert.deepEqual(renderElements('add', [el('fwd', '203.0.113.5 . tcp . 443', '10.0.0.6')]), [
      'add element inet ipferry fwd4 { 203.0.113.5 . tcp . 443 : 10.0.0.6 }',
    ]);
  });
});
