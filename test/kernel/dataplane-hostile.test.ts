/**
 * What a store record or a host may hold cannot change the kernel commands ipferry writes
 * (issue 12, finding 3), replayed on a real kernel in a network namespace made here and deleted
 * in `after`: a forward whose target closes the element list and deletes another table is
 * refused as an element — the other table is still there, ipferry's unchanged, the FIP's
 * neighbours applied — and a host interface named `q"#` is left out of the facts, so the host
 * part applies.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { compile } from '../../src/core/compile/index.js';
import { IpferryError } from '../../src/core/errors.js';
import type { FloatingIp, Pool } from '../../src/core/model.js';
import { run } from '../../src/dataplane/exec.js';
import { LinuxDataplane } from '../../src/dataplane/linux.js';
import { diffIntent, isEmptyDiff } from '../../src/intent/diff.js';
import type { IntentElement } from '../../src/intent/elements.js';

const POOL: Pool = {
  name: 'public',
  gateway: 'gw',
  delivery: 'routed',
  entries: [{ kind: 'cidr', cidr: '203.0.113.0/24' }],
  tags: [],
  createdAt: '',
};

function nat(address: string, target: string): { fip: FloatingIp; revision: number } {
  return {
    fip: {
      address,
      family: 4,
      pool: 'public',
      shared: false,
      tags: [],
      forwards: [],
      allocatedAt: '',
      association: { mode: 'nat', target, associatedAt: '' },
    },
    revision: 1,
  };
}

describe('linux dataplane: store records and host names that try to change the script', () => {
  const ns = `ipft-hx-${randomBytes(3).toString('hex')}`;
  const inNs = (...args: string[]) => run('ip', ['-n', ns, ...args]);
  const nft = (...args: string[]) => run('ip', ['netns', 'exec', ns, 'nft', ...args]);
  let dp: LinuxDataplane;
  const warned: unknown[] = [];

  before(async () => {
    await run('ip', ['netns', 'add', ns]);
    await inNs('link', 'set', 'lo', 'up');
    await inNs('link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth1');
    // A name Linux allows and nft would need escaped.
    await inNs('link', 'add', 'q"#', 'type', 'veth', 'peer', 'name', 'qpeer');
    await inNs('address', 'add', '192.0.2.2/24', 'dev', 'eth0');
    await nft('add', 'table', 'inet', 'canary');
    dp = new LinuxDataplane({
      netns: ns,
      log: { info: () => undefined, warn: (obj: object) => warned.push(obj) },
    });
    await dp.check();
  });

  after(async () => {
    await run('ip', ['netns', 'del', ns]).catch(() => undefined);
  });

  it('leaves an interface named q"# out of the facts, and applies the host part', async () => {
    const facts = await dp.facts();
    assert.ok(!facts.interfaces.includes('q"#'), facts.interfaces.join(' '));
    assert.ok(facts.interfaces.includes('qpeer'));
    assert.deepEqual(warned, [{ interface: 'q"#' }]);
    const intent = compile(
      { pools: [POOL], fips: [nat('203.0.113.10', '10.0.0.11')] },
      'gw',
      facts,
    );
    await dp.apply(diffIntent(intent.elements, await dp.observe(intent.elements)));
    assert.ok(isEmptyDiff(diffIntent(intent.elements, await dp.observe(intent.elements))));
  });

  it('refuses a forward whose target would delete another table; that table stays', async () => {
    const before = await nft('list', 'table', 'inet', 'ipferry');
    const hostile: IntentElement = {
      kind: 'fwd',
      key: '203.0.113.20 . tcp . 443',
      value: '10.0.0.6 }; delete table inet canary; add table inet pwned {',
      owner: '203.0.113.20',
    };
    await assert.rejects(
      dp.apply({ add: [hostile], replace: [], remove: [] }),
      (e: unknown) => e instanceof IpferryError && e.code === 'IPF_E_DATAPLANE',
    );
    const tables = (await nft('list', 'tables')).stdout;
    assert.match(tables, /table inet canary/);
    assert.doesNotMatch(tables, /pwned/);
    assert.equal((await nft('list', 'table', 'inet', 'ipferry')).stdout, before.stdout);
  });
});
