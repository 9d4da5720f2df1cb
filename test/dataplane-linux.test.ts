/**
 * The Linux dataplane against a real kernel, in a network namespace made here and deleted in
 * `cleanup` (also when a test fails): the same conformance suite as the fake.
 */
import { randomBytes } from 'node:crypto';
import { LinuxDataplane } from '../src/dataplane/linux.js';
import { run } from '../src/dataplane/exec.js';
import { dataplaneConformance } from './dataplane-conformance.js';

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
