import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { NFT_SKELETON_VERSION } from '../src/core/names.js';
import { parseTable, renderElements, renderTable } from '../src/dataplane/nft/ruleset.js';

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
    const rules = renderTable([], false)
      .split('\n')
      .filter((l) => !/^\s*(map|set|table|chain|type|\}|add |delete )/.test(l.trim()) && l.trim());
    assert.ok(rules.length > 10, 'the table has rules');
    for (const rule of rules)
      assert.doesNotMatch(rule, /\b\d+\.\d+\.\d+\.\d+\b|[0-9a-f]+::[0-9a-f]/i, rule);
  });

  it('groups element changes per map and creates counters before their map elements', () => {
    const lines = renderElements('add', [
      { kind: 'counter', key: '203.0.113.10', value: '', owner: '203.0.113.10' },
      { kind: 'dnat', key: '203.0.113.10', value: '10.0.0.11', owner: '203.0.113.10' },
      { kind: 'dnat', key: '203.0.113.11', value: '10.0.0.12', owner: '203.0.113.11' },
    ]);
    assert.deepEqual(lines, [
      'add counter inet ipferry fip_203_0_113_10',
      'add element inet ipferry counters4 { 203.0.113.10 : "fip_203_0_113_10" }',
      'add element inet ipferry dnat4 { 203.0.113.10 : 10.0.0.11, 203.0.113.11 : 10.0.0.12 }',
    ]);
    const removal = renderElements('delete', [
      { kind: 'counter', key: '203.0.113.10', value: '', owner: '203.0.113.10' },
    ]);
    assert.deepEqual(removal, [
      'delete element inet ipferry counters4 { 203.0.113.10 : "fip_203_0_113_10" }',
      'delete counter inet ipferry fip_203_0_113_10',
    ]);
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
  });
});
