/**
 * The Linux dataplane against a real kernel, in a network namespace made here and deleted in
 * `cleanup` (also when a test fails): the same conformance suite as the fake.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { LinuxDataplane } from '../src/dataplane/linux.js';
import { run } from '../src/dataplane/exec.js';
import { dataplaneConformance } from './dataplane-conformance.js';
import { waitFor } from './helpers.js';

dataplaneConformance('linux (network namespace)', async () => {
  const netns = `ipft-dp-${randomBytes(3).toString('hex')}`;
  const cleanup = async (): Promise<void> =>
    void (await run('ip', ['netns', 'del', netns]).catch(() => undefined));
  await run('ip', ['netns', 'add', netns]);
  try {
    const inNs = (...args: string[]) => run('ip', ['-n', netns, ...args]);
    await inNs('link', 'set', 'lo', 'up');
    await inNs('link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'lan0');
    await inNs('address', 'add', '192.0.2.2/24', 'dev', 'eth0');
    await inNs('address', 'add', '10.0.0.1/24', 'dev', 'lan0');
    const dataplane = new LinuxDataplane({ netns });
    await dataplane.check();
    return { dataplane, cleanup };
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
