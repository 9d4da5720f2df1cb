/**
 * Reads a real neighbour table: entries are added inside a private network namespace
 * (`unshare -n`), never in the machine's own.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';
import { parseNeighbours } from '../../src/dataplane/iproute/neighbours.js';

const exec = promisify(execFile);

describe('neighbour table', () => {
  it('parses ip -j neigh, dropping entries without a link-layer address', () => {
    const json = JSON.stringify([
      { dst: '192.0.2.1', dev: 'eth0', lladdr: '02:FC:00:00:00:05', state: ['REACHABLE'] },
      { dst: 'fd00::1', dev: 'eth0', state: ['FAILED'] },
      { dst: '2001:db8:0:0::9', dev: 'lan0', lladdr: 'aa:bb:cc:00:00:0a', state: ['STALE'] },
    ]);
    assert.deepEqual(parseNeighbours(json), [
      { address: '192.0.2.1', mac: '02:fc:00:00:00:05', interface: 'eth0' },
      { address: '2001:db8::9', mac: 'aa:bb:cc:00:00:0a', interface: 'lan0' },
    ]);
    assert.deepEqual(parseNeighbours(''), []);
  });

  it('reads the kernel’s table inside a throwaway network namespace', async () => {
    const setup = [
      'ip link set lo up',
      'ip link add ipft-n0 type veth peer name ipft-n1',
      'ip link set ipft-n0 up',
      'ip neigh add 10.9.9.9 lladdr aa:bb:cc:00:00:09 dev ipft-n0',
      'ip neigh add 2001:db8::9 lladdr aa:bb:cc:00:00:0a dev ipft-n0 nud permanent',
    ].join(' && ');
    const reader = fileURLToPath(
      new URL('../support/fixtures/print-neighbours.ts', import.meta.url),
    );
    const { stdout } = await exec(
      'unshare',
      ['-n', 'sh', '-c', `${setup} && exec node --import tsx "$0"`, reader],
      {
        timeout: 30_000,
      },
    );
    assert.deepEqual(JSON.parse(stdout), [
      { address: '10.9.9.9', mac: 'aa:bb:cc:00:00:09', interface: 'ipft-n0' },
      { address: '2001:db8::9', mac: 'aa:bb:cc:00:00:0a', interface: 'ipft-n0' },
    ]);
  });
});
