/**
 * What reaches the text of `ip -batch` and the argv of `ip`, `sysctl` and `conntrack` (issue 12,
 * finding 3: a pool uplink with newlines ran extra `ip` commands). Every value of an element is
 * parsed again before it becomes a word (src/dataplane/linux/args.ts); an element with a hostile
 * value is refused with IPF_E_DATAPLANE, naming it, while the change is planned: no command
 * runs, not even those of the good elements beside it. The managers run here on a recording
 * `exec`, in the order LinuxDataplane.apply gives them; test/kernel/dataplane-hostile.test.ts
 * replays the same on a real kernel.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { IpferryError } from '../../src/core/errors.js';
import { ClaimsManager, claimArgs } from '../../src/dataplane/linux/claims.js';
import { ConntrackManager, staleConnectionFilter } from '../../src/dataplane/linux/conntrack.js';
import { ipLine, sysctl } from '../../src/dataplane/linux/args.js';
import { applySteps, type Exec, stepOf } from '../../src/dataplane/linux/manager.js';
import { nftCommand, NftManager } from '../../src/dataplane/linux/nft.js';
import { RoutingManager } from '../../src/dataplane/linux/routing.js';
import { SysctlManager } from '../../src/dataplane/linux/sysctl.js';
import { routingLines } from '../../src/dataplane/iproute/routing.js';
import type { IntentDiff } from '../../src/intent/diff.js';
import type { IntentElement } from '../../src/intent/elements.js';
// The driver's own refusal is what is tested: elements built without element()'s checks.
import { uncheckedElement as element } from '../support/helpers.js';

interface Call {
  readonly file: string;
  readonly args: readonly string[];
  readonly input?: string;
}

/** The managers of LinuxDataplane, in its order, on an exec that records and succeeds. */
async function apply(diff: IntentDiff): Promise<Call[]> {
  const calls: Call[] = [];
  const exec: Exec = (file, args, options) => {
    calls.push({ file, args, ...(options?.input !== undefined ? { input: options.input } : {}) });
    return Promise.resolve({ stdout: file === 'sysctl' ? '0\n' : '', stderr: '' });
  };
  const sysctls = new SysctlManager(exec);
  const claims = new ClaimsManager(exec);
  const routing = new RoutingManager(exec);
  const nft = new NftManager(nftCommand(exec));
  const conntrack = new ConntrackManager(exec);
  // As LinuxDataplane.apply: the step list is made (every plan) before the first step runs.
  await applySteps([
    ...stepOf(sysctls, diff, 'add'),
    ...stepOf(claims, diff, 'add'),
    ...stepOf(routing, diff, 'add'),
    ...stepOf(nft, diff, 'add'),
    ...stepOf(routing, diff, 'delete'),
    ...stepOf(claims, diff, 'delete'),
    ...stepOf(conntrack, diff, 'delete'),
  ]);
  return calls;
}

const added = (...add: IntentElement[]): IntentDiff => ({ add, replace: [], remove: [] });
const removed = (...remove: IntentElement[]): IntentDiff => ({ add: [], replace: [], remove });

/** Good elements of every kind these tools write, to stand beside a hostile one. */
const GOOD: readonly IntentElement[] = [
  element('sysctl', { path: 'net.ipv4.ip_forward', value: '1' }, 'host'),
  element('claim', { fip: '203.0.113.10', uplink: 'eth0', proxy: false }, '203.0.113.10'),
  element('route', { prefix: '203.0.113.11/32', dev: 'ipf0' }, '203.0.113.11'),
  element(
    'rule',
    { selector: { from: '203.0.113.11' }, table: 7447, priority: 10100 },
    '203.0.113.11',
  ),
  element('dnat', { fip: '203.0.113.10', target: '10.0.0.5' }, '203.0.113.10'),
];

/** Values that would change a command's structure or meaning, or are no value of their field. */
const HOSTILE: readonly [string, string][] = [
  ['a newline and a second command', 'eth0\nlink set lo down'],
  ['a semicolon', 'eth0;reboot'],
  ['a space', 'eth0 up'],
  ['a double quote', 'eth"0'],
  ['a single quote', "eth'0"],
  ['a comment', 'eth0#x'],
  ['NUL', 'eth\u00000'],
  ['a backslash (line continuation)', 'eth0\\'],
  ['a carriage return', 'eth0\r'],
  ['a tab', 'eth0\tup'],
  ['C1 and bidi controls', 'eth\u0085\u202e0'],
  ['16 characters', 'a'.repeat(16)],
  ['5,000 characters', 'a'.repeat(5000)],
  ['..', '..'],
  ['nothing', ''],
];

const HOSTILE_ADDRESSES: readonly [string, string][] = [
  ['a newline and a second command', '10.0.0.6\nlink set lo down'],
  ['a semicolon', '10.0.0.6;reboot'],
  ['a trailing space', '10.0.0.6 '],
  ['quotes', '"10.0.0.6"'],
  ['a comment', '10.0.0.6#'],
  ['NUL', '10.0.0.6\u0000'],
  ['an option', '-F'],
  ['leading zeros', '010.0.0.6'],
  ['a prefix and a device', '10.0.0.6/32 dev lo'],
  ['5,000 characters', '1'.repeat(5000)],
];

/** Each slot of each element a value can reach, as a function of that value. */
const IFNAME_SLOTS: readonly [string, (v: string) => IntentElement][] = [
  ['route dev', (v) => element('route', { prefix: '203.0.113.20/32', dev: v }, '203.0.113.20')],
  [
    'claim uplink (address)',
    (v) => element('claim', { fip: '203.0.113.20', uplink: v, proxy: false }, '203.0.113.20'),
  ],
  [
    'claim uplink (proxy ARP)',
    (v) => element('claim', { fip: '203.0.113.20', uplink: v, proxy: true }, '203.0.113.20'),
  ],
  [
    'claim uplink (proxy NDP)',
    (v) => element('claim', { fip: '2001:db8::20', uplink: v, proxy: true }, '2001:db8::20'),
  ],
  [
    'sysctl name',
    (v) => element('sysctl', { path: `net.ipv6.conf.${v}.proxy_ndp`, value: '1' }, 'host'),
  ],
];

const ADDRESS_SLOTS: readonly [string, (v: string) => IntentElement][] = [
  ['route prefix', (v) => element('route', { prefix: `${v}/32`, dev: 'ipf0' }, 'host')],
  ['route via', (v) => element('route', { prefix: '0.0.0.0/1', dev: 'ipf0', via: v }, 'host')],
  [
    'route via inet6',
    (v) => element('route', { prefix: '0.0.0.0/1', dev: 'ipf0', via: `inet6 ${v}` }, 'host'),
  ],
  ['route src', (v) => element('route', { prefix: '0.0.0.0/1', dev: 'ipf0', src: v }, 'host')],
  [
    'rule from',
    (v) => element('rule', { selector: { from: v }, table: 7447, priority: 10100 }, 'host'),
  ],
  ['claim address', (v) => element('claim', { fip: v, uplink: 'eth0', proxy: false }, 'host')],
  ['claim proxy', (v) => element('claim', { fip: v, uplink: 'eth0', proxy: true }, 'host')],
];

/** Elements whose only fault is a number or name out of its range, written as compile would. */
const OUT_OF_RANGE: readonly [string, IntentElement][] = [
  ['route MTU 0', element('route', { prefix: '0.0.0.0/1', dev: 'ipf0', mtu: 0 }, 'host')],
  ['route MTU 70000', element('route', { prefix: '0.0.0.0/1', dev: 'ipf0', mtu: 70000 }, 'host')],
  ['route MTU 1400.5', element('route', { prefix: '0.0.0.0/1', dev: 'ipf0', mtu: 1400.5 }, 'host')],
  [
    'route table 2^32',
    element('route', { prefix: '0.0.0.0/1', table: 2 ** 32, dev: 'ipf0' }, 'host'),
  ],
  ['route table all', element('route', { prefix: '0.0.0.0/1', table: 'all', dev: 'ipf0' }, 'host')],
  [
    'route table with a newline',
    { kind: 'route', key: '0.0.0.0/1 table 7447\nlink', value: 'dev ipf0', owner: 'host' },
  ],
  [
    'route MTU as text',
    { kind: 'route', key: '0.0.0.0/1', value: 'dev ipf0 mtu 1400;reboot', owner: 'host' },
  ],
  ['prefix with host bits', element('route', { prefix: '10.0.0.1/8', dev: 'ipf0' }, 'host')],
  ['prefix /33', element('route', { prefix: '10.0.0.0/33', dev: 'ipf0' }, 'host')],
  [
    'IPv6 src of an IPv4 route',
    element('route', { prefix: '0.0.0.0/1', dev: 'ipf0', src: '2001:db8::1' }, 'host'),
  ],
  [
    'rule priority -1',
    element('rule', { selector: { from: '10.0.0.1' }, table: 7447, priority: -1 }, 'host'),
  ],
  [
    'rule suppress_prefixlength 33',
    element(
      'rule',
      { selector: { from: '10.0.0.1' }, table: 'main', suppressPrefixLength: 33, priority: 1 },
      'host',
    ),
  ],
  [
    'rule fwmark beyond 32 bits',
    element(
      'rule',
      { selector: { fwmark: '0x100000000', mask: '0x1', family: 4 }, table: 7448, priority: 1 },
      'host',
    ),
  ],
  [
    'rule fwmark as words',
    element(
      'rule',
      { selector: { fwmark: '0x1;reboot', mask: '0x1', family: 4 }, table: 7448, priority: 1 },
      'host',
    ),
  ],
  [
    'claim label beyond 15 characters',
    element('claim', { fip: '203.0.113.9', uplink: 'abcdefghijklm', proxy: false }, 'host'),
  ],
  ['sysctl outside net', element('sysctl', { path: 'kernel.core_pattern', value: '1' }, 'host')],
  [
    'sysctl with slashes',
    element('sysctl', { path: 'net.ipv4.conf.eth0/../../../kernel.x', value: '1' }, 'host'),
  ],
  [
    'sysctl value with a second setting',
    element('sysctl', { path: 'net.ipv4.ip_forward', value: '1 kernel.panic=1' }, 'host'),
  ],
  ['sysctl value as text', element('sysctl', { path: 'net.ipv4.ip_forward', value: 'on' }, 'host')],
];

/** Asserts that `diff` is refused, naming `e`, and that no command ran. */
async function refusedBeforeAnyCommand(diff: IntentDiff, e: IntentElement): Promise<void> {
  let calls: Call[] | undefined;
  await assert.rejects(
    (async () => {
      calls = await apply(diff);
    })(),
    (error: unknown) => {
      assert.ok(error instanceof IpferryError, String(error));
      assert.equal(error.code, 'IPF_E_DATAPLANE');
      // Refused where the element is read (decode holds element()'s checks) or rendered.
      assert.match(
        error.message,
        new RegExp(`refused an element: ${e.kind} |a ${e.kind} element cannot carry`),
      );
      return true;
    },
  );
  assert.equal(calls, undefined, 'no command ran');
}

describe('ip, sysctl and conntrack commands: rendered from parsed values', () => {
  it('writes well-formed elements as before, interface names with dots included', async () => {
    const calls = await apply(
      added(
        ...GOOD,
        element('sysctl', { path: 'net.ipv4.neigh.eth0.100.proxy_delay', value: '0' }, 'host'),
        element(
          'route',
          { prefix: '0.0.0.0/1', table: 7449, dev: 'ipf0', via: 'inet6 fe80::1', mtu: 1380 },
          'host',
        ),
        element(
          'rule',
          {
            selector: { fwmark: '0x40000000', mask: '0x40000000', family: 6 },
            table: 7448,
            priority: 10200,
          },
          'host',
        ),
        element('claim', { fip: '2001:db8::5', uplink: 'eth0.100', proxy: true }, '2001:db8::5'),
      ),
    );
    const shown = calls.map((c) => [c.file, ...c.args].join(' ') + (c.input ? `\n${c.input}` : ''));
    assert.deepEqual(shown.slice(0, 4), [
      'sysctl -n net/ipv4/ip_forward',
      'sysctl -qw net/ipv4/ip_forward=1',
      'sysctl -n net/ipv4/neigh/eth0.100/proxy_delay',
      'sysctl -qw net/ipv4/neigh/eth0.100/proxy_delay=0',
    ]);
    assert.equal(
      shown[4],
      'ip -batch -\naddress add 203.0.113.10/32 dev eth0 label eth0:ipf\nneigh add proxy 2001:db8::5 dev eth0.100\n',
    );
    assert.equal(
      shown[5],
      'ip -4 -batch -\nroute replace 203.0.113.11/32 dev ipf0 proto 241\nroute replace 0.0.0.0/1 table 7449 dev ipf0 via inet6 fe80::1 mtu 1380 proto 241\nrule add from 203.0.113.11 lookup 7447 priority 10100 protocol 241\n',
    );
    assert.equal(
      shown[6],
      'ip -6 -batch -\nrule add fwmark 0x40000000/0x40000000 lookup 7448 priority 10200 protocol 241\n',
    );
    assert.match(
      shown[7] ?? '',
      /^nft -f -\nadd element inet ipferry dnat4 \{ 203\.0\.113\.10 : 10\.0\.0\.5 \}\n$/,
    );
    assert.equal(shown.length, 8);
  });

  it('deletes routes and rules by argv words, and forgets the flows of what went away', async () => {
    const calls = await apply(removed(...GOOD.filter((e) => e.kind !== 'sysctl')));
    const shown = calls.map((c) => [c.file, ...c.args].join(' ') + (c.input ? `\n${c.input}` : ''));
    assert.ok(
      shown.includes('ip -4 rule del from 203.0.113.11 lookup 7447 priority 10100 protocol 241'),
    );
    assert.ok(shown.includes('ip -4 route del 203.0.113.11/32 dev ipf0 proto 241'));
    assert.ok(shown.includes('ip -batch -\naddress del 203.0.113.10/32 dev eth0\n'));
    assert.ok(shown.includes('conntrack -D -d 203.0.113.10 -r 10.0.0.5'));
  });

  for (const [slot, make] of IFNAME_SLOTS) {
    for (const [what, value] of HOSTILE) {
      it(`refuses a ${slot} with ${what} before any command runs`, async () => {
        const hostile = make(value);
        await refusedBeforeAnyCommand(added(...GOOD, hostile), hostile);
        if (hostile.kind !== 'sysctl') {
          await refusedBeforeAnyCommand(removed(...GOOD, hostile), hostile);
        }
      });
    }
  }

  for (const [slot, make] of ADDRESS_SLOTS) {
    for (const [what, value] of HOSTILE_ADDRESSES) {
      it(`refuses a ${slot} with ${what} before any command runs`, async () => {
        const hostile = make(value);
        await refusedBeforeAnyCommand(added(...GOOD, hostile), hostile);
        await refusedBeforeAnyCommand(removed(...GOOD, hostile), hostile);
      });
    }
  }

  for (const [what, hostile] of OUT_OF_RANGE) {
    it(`refuses ${what} before any command runs`, async () => {
      await refusedBeforeAnyCommand(added(...GOOD, hostile), hostile);
    });
  }

  it('refuses a changed route whose old form (what undo would put back) does not parse', async () => {
    const from: IntentElement = {
      kind: 'route',
      key: '203.0.113.30/32',
      value: 'dev eth0\nlink set lo down',
      owner: '203.0.113.30',
    };
    const to = element('route', { prefix: '203.0.113.30/32', dev: 'ipf0' }, '203.0.113.30');
    await refusedBeforeAnyCommand({ add: [...GOOD], replace: [{ from, to }], remove: [] }, from);
  });

  it('refuses the flows of a hostile forward that went away (conntrack argv)', async () => {
    for (const target of ['-F', '10.0.0.6 -F', '2001:db8::6']) {
      const hostile = element('dnat', { fip: '203.0.113.10', target }, '203.0.113.10');
      assert.throws(
        () => staleConnectionFilter(hostile),
        (e: unknown) => e instanceof IpferryError && e.code === 'IPF_E_DATAPLANE',
      );
      await refusedBeforeAnyCommand(removed(...GOOD, hostile), hostile);
    }
    const fwd = element(
      'fwd',
      {
        fip: '203.0.113.10',
        protocol: 'tcp;x',
        ports: { first: 80, last: 80 },
        target: '10.0.0.6',
      },
      '203.0.113.10',
    );
    assert.throws(() => staleConnectionFilter(fwd), /refused an element: fwd .*not tcp or udp/);
  });

  it('names the element and shows at most 64 characters of a value', () => {
    const hostile = element(
      'claim',
      // Nothing element() refuses (no whitespace): the renderer's own refusal is what shows.
      { fip: '203.0.113.10', uplink: `eth0${'x'.repeat(5000)}`, proxy: false },
      '203.0.113.10',
    );
    assert.throws(
      () => claimArgs('add', hostile),
      (e: unknown) => {
        assert.ok(e instanceof IpferryError);
        assert.match(
          e.message,
          /refused an element: claim "203\.0\.113\.10": "eth0x+…" is not an interface name/,
        );
        assert.ok(e.message.length < 300, e.message);
        assert.ok(!e.message.includes('\n'));
        return true;
      },
    );
  });

  it('checks every word of a batch line once more', () => {
    const e = GOOD[2]!;
    assert.equal(ipLine(e, ['route', 'del', '10.0.0.0/8']), 'route del 10.0.0.0/8');
    for (const word of ['a b', 'a\nb', 'a#', '"a"', 'a\\', '']) {
      assert.throws(() => ipLine(e, ['route', word]), /refused an element: route/);
    }
  });

  it('renders one routing line per element, each of its family', () => {
    const lines = routingLines('add', GOOD);
    assert.deepEqual(
      lines.map((l) => [l.family, l.line]),
      [
        [4, 'route replace 203.0.113.11/32 dev ipf0 proto 241'],
        [4, 'rule add from 203.0.113.11 lookup 7447 priority 10100 protocol 241'],
      ],
    );
  });

  it('writes sysctl names with slashes, only under net.ipv4 and net.ipv6', () => {
    assert.equal(sysctl.path('net.ipv6.conf.all.forwarding'), 'net/ipv6/conf/all/forwarding');
    assert.equal(sysctl.path('net.ipv4.conf.ipf0.rp_filter'), 'net/ipv4/conf/ipf0/rp_filter');
    for (const bad of [
      'net.core.somaxconn',
      'vm.overcommit_memory',
      'net.ipv4.conf.a b.x',
      'net.ipv4.conf...x',
    ]) {
      assert.throws(() => sysctl.path(bad), /is not (a sysctl ipferry sets|an interface name)/);
    }
  });
});
