/**
 * What a store record or a host may hold cannot change the kernel commands ipferry writes
 * (issue 12, finding 3), replayed on a real kernel in a network namespace made here and deleted
 * in `after`: a forward whose target closes the element list and deletes another table is
 * refused as an element — the other table is still there, ipferry's unchanged, the FIP's
 * neighbours applied — and a host interface named `q"#` is left out of the facts, so the host
 * part applies. A pool uplink with a newline and a second `ip` command in it (which took a link
 * down and added an address) and routes, rules, claims and sysctls with hostile values are
 * refused before any command runs: the namespace's links, addresses, routes, rules, proxy
 * entries, sysctls and nftables ruleset are byte for byte as before.
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
// The driver's own refusal is what is tested: elements built without element()'s checks.
import { uncheckedElement as element } from '../support/helpers.js';

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
    // No duplicate address detection: a link-local address going from `tentative` to valid
    // while a test compares the namespace before and after would look like a change.
    for (const conf of ['all', 'default']) {
      await run('ip', ['netns', 'exec', ns, 'sysctl', '-qw', `net.ipv6.conf.${conf}.accept_dad=0`]);
    }
    await inNs('link', 'set', 'lo', 'up');
    await inNs('link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth1');
    // A name Linux allows and nft would need escaped.
    await inNs('link', 'add', 'q"#', 'type', 'veth', 'peer', 'name', 'qpeer');
    await inNs('address', 'add', '192.0.2.2/24', 'dev', 'eth0');
    await inNs('link', 'set', 'eth0', 'up');
    await inNs('link', 'set', 'eth1', 'up');
    // A name with a dot, as a VLAN has: its sysctls are written with `/` between the parts.
    await inNs('link', 'add', 'v.1', 'type', 'veth', 'peer', 'name', 'v1peer');
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
  /** Everything an apply could change, as text: equal before and after means nothing changed. */
  async function kernelState(): Promise<string> {
    const sysctls = [
      'net.ipv4.ip_forward',
      'net.ipv6.conf.all.forwarding',
      'net/ipv4/neigh/eth0/proxy_delay',
      'net/ipv6/conf/eth0/proxy_ndp',
      'net/ipv4/conf/eth0/rp_filter',
    ];
    const parts = await Promise.all([
      inNs('-d', 'link', 'show'),
      inNs('address', 'show'),
      inNs('-4', 'rule', 'show'),
      inNs('-6', 'rule', 'show'),
      inNs('-4', 'route', 'show', 'table', 'all'),
      inNs('-6', 'route', 'show', 'table', 'all'),
      inNs('neigh', 'show', 'proxy'),
      // -s: without the counters of the FIPs, which count whatever passes meanwhile.
      nft('-s', 'list', 'ruleset'),
      run('ip', ['netns', 'exec', ns, 'sysctl', ...sysctls]),
    ]);
    return parts.map((p) => p.stdout).join('\n');
  }

  async function refusedAndUnchanged(add: readonly IntentElement[], what: string): Promise<void> {
    const before = await kernelState();
    await assert.rejects(
      dp.apply({ add: [...add], replace: [], remove: [] }),
      (e: unknown) =>
        e instanceof IpferryError &&
        e.code === 'IPF_E_DATAPLANE' &&
        // Refused where the element is read (decode holds element()'s checks) or rendered.
        /refused an element: |element cannot carry/.test(e.message),
      what,
    );
    assert.equal(await kernelState(), before, `${what}: the kernel changed`);
  }

  it('refuses a pool uplink that carries more ip commands; the link stays up, no address added', async () => {
    const facts = await dp.facts();
    for (const uplink of [
      'eth0\nlink set eth0 down',
      'eth0\naddress add 198.51.100.66/32 dev eth0',
      'eth0\\\nlink set eth0 down',
    ]) {
      const pool: Pool = { ...POOL, delivery: 'onlink', uplink };
      const fips = [nat('203.0.113.40', '10.0.0.40')];
      // Compile refuses to build the element (records.ts refuses such a record before that) …
      assert.throws(
        () => compile({ pools: [pool], fips }, 'gw', facts),
        (e: unknown) => e instanceof IpferryError && e.code === 'IPF_E_DATAPLANE',
      );
      // … and should one reach the driver anyway, the driver is the last line, and it holds.
      const claim = element('claim', { fip: '203.0.113.40', uplink, proxy: false }, '203.0.113.40');
      await refusedAndUnchanged([claim], uplink);
    }
    const eth0 = (await inNs('-j', 'address', 'show', 'dev', 'eth0')).stdout;
    assert.match(eth0, /"operstate":"UP"|"flags":\[[^\]]*"UP"/);
    assert.doesNotMatch(eth0, /198\.51\.100\.66|203\.0\.113\.40/);
  });

  it('refuses routes, rules, claims and sysctls with hostile values; nothing changes', async () => {
    const good = element('route', { prefix: '198.51.100.0/24', dev: 'eth0' }, 'host');
    const values = [
      'eth0\nroute add 198.51.100.77/32 dev eth0',
      'eth0;reboot',
      'eth0 up',
      'eth"0',
      "eth'0",
      'eth0#x',
      'eth\u00000',
      'a'.repeat(16),
      'a'.repeat(5000),
    ];
    for (const v of values) {
      const hostile: [string, IntentElement][] = [
        ['route dev', element('route', { prefix: '198.51.100.0/25', dev: v }, 'host')],
        ['route via', element('route', { prefix: '198.51.100.0/25', dev: 'eth0', via: v }, 'host')],
        [
          'rule from',
          element('rule', { selector: { from: v }, table: 7447, priority: 10100 }, 'host'),
        ],
        [
          'claim uplink',
          element('claim', { fip: '192.0.2.50', uplink: v, proxy: false }, '192.0.2.50'),
        ],
        ['proxy claim address', element('claim', { fip: v, uplink: 'eth0', proxy: true }, 'host')],
        [
          'sysctl name',
          element('sysctl', { path: `net.ipv4.conf.${v}.rp_filter`, value: '2' }, 'host'),
        ],
        ['sysctl value', element('sysctl', { path: 'net.ipv4.ip_forward', value: v }, 'host')],
      ];
      for (const [what, e] of hostile)
        await refusedAndUnchanged([good, e], `${what} ${JSON.stringify(v)}`);
    }
  });

  it('writes the sysctls of an interface whose name has a dot', async () => {
    const e = element('sysctl', { path: 'net.ipv4.neigh.v.1.proxy_delay', value: '0' }, 'host');
    await dp.apply({ add: [e], replace: [], remove: [] });
    const read = await run('ip', [
      'netns',
      'exec',
      ns,
      'cat',
      '/proc/sys/net/ipv4/neigh/v.1/proxy_delay',
    ]);
    assert.equal(read.stdout.trim(), '0');
    const observed = (await dp.observe([e])).filter((o) => o.kind === 'sysctl');
    assert.ok(isEmptyDiff(diffIntent([e], observed)), JSON.stringify(observed));
  });
});
