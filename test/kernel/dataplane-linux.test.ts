/**
 * The Linux dataplane against a real kernel, in a network namespace made here and deleted in
 * `cleanup` (also when a test fails): the same conformance suite as the fake.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { diffIntent } from '../../src/intent/diff.js';
import { type IntentElement } from '../../src/intent/elements.js';
import { NFT_SKELETON_VERSION } from '../../src/core/names.js';
import { LinuxDataplane } from '../../src/dataplane/linux.js';
import { renderTable } from '../../src/dataplane/nft/ruleset.js';
import { run } from '../../src/dataplane/exec.js';
import { dataplaneConformance } from '../support/dataplane-conformance.js';
import { waitFor } from '../support/helpers.js';

dataplaneConformance('linux (network namespace)', async () => {
  const id = randomBytes(3).toString('hex');
  const netns = `ipft-dp-${id}`;
  // "The internet" at eth0 (192.0.2.9, routing the pool to the gateway) and the far end of
  // lan0, so that real packets arrive at the gateway as they would on a host.
  const client = `ipft-dc-${id}`;
  const cleanup = async (): Promise<void> => {
    for (const ns of [netns, client]) await run('ip', ['netns', 'del', ns]).catch(() => undefined);
  };
  try {
    await run('ip', ['netns', 'add', netns]);
    await run('ip', ['netns', 'add', client]);
    const inNs = (...args: string[]) => run('ip', ['-n', netns, ...args]);
    const inClient = (...args: string[]) => run('ip', ['-n', client, ...args]);
    await inNs('link', 'set', 'lo', 'up');
    await inNs('link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'up0', 'netns', client);
    await inNs('link', 'add', 'lan0', 'type', 'veth', 'peer', 'name', 'down0', 'netns', client);
    await inNs('address', 'add', '192.0.2.2/24', 'dev', 'eth0');
    await inNs('address', 'add', '10.0.0.1/24', 'dev', 'lan0');
    await inClient('address', 'add', '192.0.2.9/24', 'dev', 'up0');
    for (const dev of ['eth0', 'lan0']) await inNs('link', 'set', dev, 'up');
    for (const dev of ['up0', 'down0']) await inClient('link', 'set', dev, 'up');
    await inClient('route', 'add', '203.0.113.0/24', 'via', '192.0.2.2');
    const dataplane = new LinuxDataplane({ netns });
    await dataplane.check();
    const sendPings = async (address: string, count: number): Promise<void> => {
      // Exactly `count` requests (`-w` would go on sending until an answer or its deadline).
      // Nobody answers (the targets do not exist): ping exits 1 a second after the last one.
      await run(
        'ip',
        [
          'netns',
          'exec',
          client,
          'ping',
          '-n',
          '-c',
          String(count),
          '-i',
          '0.2',
          '-W',
          '1',
          address,
        ],
        { tolerate: () => true, timeoutMs: 10_000 },
      );
    };
    return { dataplane, sendPings, cleanup };
  } catch (e) {
    await cleanup();
    throw e;
  }
});

describe('linux dataplane: address watch', () => {
  it('tells the agent when the host gains or loses an address, in its namespace only', async () => {
    const netns = `ipft-dw-${randomBytes(3).toString('hex')}`;
    await run('ip', ['netns', 'add', netns]);
    let calls = 0;
    const stop = new LinuxDataplane({ netns }).watchAddresses(() => calls++);
    try {
      await run('ip', ['-n', netns, 'link', 'set', 'lo', 'up']);
      await sleep(300); // the monitor is listening; lo's own addresses came and went
      calls = 0;
      await run('ip', ['-n', netns, 'address', 'add', '203.0.113.10/32', 'dev', 'lo']);
      await waitFor('an address added', async () => Promise.resolve(calls === 1));
      await run('ip', ['-n', netns, 'address', 'del', '203.0.113.10/32', 'dev', 'lo']);
      await waitFor('an address removed', async () => Promise.resolve(calls === 2));
      // Three changes in a burst are one call.
      for (const a of ['203.0.113.11', '203.0.113.12', '203.0.113.13'])
        await run('ip', ['-n', netns, 'address', 'add', `${a}/32`, 'dev', 'lo']);
      await waitFor('one call for the burst', async () => Promise.resolve(calls === 3));
      await sleep(300);
      assert.equal(calls, 3);
    } finally {
      stop();
      await run('ip', ['netns', 'del', netns]).catch(() => undefined);
    }
  });
});

describe('linux dataplane: skeleton upgrade', () => {
  it('replaces a version 6 table (a named counter per FIP) in one apply, keeping its FIPs', async () => {
    const netns = `ipft-du-${randomBytes(3).toString('hex')}`;
    await run('ip', ['netns', 'add', netns]);
    try {
      const nft = (args: string[], input?: string) =>
        run('ip', ['netns', 'exec', netns, 'nft', ...args], input ? { input } : {});
      // Version 6 differed only in its counters: a map of FIP → named counter object.
      const v7 = renderTable([], false);
      const v6 = v7
        .replace(
          'set counters4 { type ipv4_addr; counter; }',
          'map counters4 { type ipv4_addr : counter; }',
        )
        .replace(
          'set counters6 { type ipv6_addr; counter; }',
          'map counters6 { type ipv6_addr : counter; }',
        )
        .replace(
          `ip daddr @counters4 comment "ipferry skeleton ${NFT_SKELETON_VERSION}"`,
          'counter name ip daddr map @counters4 comment "ipferry skeleton 6"',
        )
        .replace('ip6 daddr @counters6', 'counter name ip6 daddr map @counters6');
      assert.notEqual(v6, v7);
      await nft(
        ['-f', '-'],
        v6 +
          'add counter inet ipferry fip_203_0_113_10\n' +
          'add element inet ipferry counters4 { 203.0.113.10 : "fip_203_0_113_10" }\n' +
          'add element inet ipferry dnat4 { 203.0.113.10 : 10.0.0.11 }\n' +
          'add element inet ipferry snat4 { 10.0.0.11 : 203.0.113.10 }\n',
      );
      const dataplane = new LinuxDataplane({ netns });
      const wanted: IntentElement[] = [
        { kind: 'table', key: 'inet ipferry', value: NFT_SKELETON_VERSION, owner: 'host' },
        { kind: 'counter', key: '203.0.113.10', value: '', owner: '203.0.113.10' },
        { kind: 'dnat', key: '203.0.113.10', value: '10.0.0.11', owner: '203.0.113.10' },
        { kind: 'snat', key: '10.0.0.11', value: '203.0.113.10', owner: '203.0.113.10' },
      ];
      const diff = diffIntent(wanted, await dataplane.observe(wanted));
      // Only the table is out of date: the FIP's elements read back from the old table.
      assert.deepEqual(diff.add, []);
      assert.deepEqual(diff.remove, []);
      assert.deepEqual(
        diff.replace.map((r) => `${r.from.kind} ${r.from.value} => ${r.to.value}`),
        ['table damaged => ' + NFT_SKELETON_VERSION],
      );
      await dataplane.apply(diff);
      assert.deepEqual(diffIntent(wanted, await dataplane.observe(wanted)), {
        add: [],
        replace: [],
        remove: [],
      });
      // No named counter objects are left, and the FIP counts in the set.
      const { stdout } = await nft(['-j', 'list', 'counters', 'table', 'inet', 'ipferry']);
      assert.ok(!stdout.includes('"counter"'), stdout);
      assert.deepEqual([...(await dataplane.fipCounters()).keys()], ['203.0.113.10']);
    } finally {
      await run('ip', ['netns', 'del', netns]).catch(() => undefined);
    }
  });
});
