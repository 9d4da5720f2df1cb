/**
 * A failed apply leaves the kernel as it found it. In a network namespace made here (deleted in
 * `after`, also when a test fails), one diff touches every family the Linux dataplane holds — two
 * sysctls, claims on an uplink (added, switched from address to proxy entry, released), IPv4 and
 * IPv6 routes and rules (added, replaced, removed), nftables elements (added, moved, removed) —
 * and each step of its apply is made to fail in turn: before the step runs (the dataplane's
 * test hook), and inside it by a cause the kernel itself refuses (a sysctl or device that does
 * not exist, overlapping port ranges, a rule or claim that is not there). Every time, the dump
 * of what ipferry may touch (its table, its routes, all rules, the sysctls, the addresses and
 * proxy neighbours) is the same after the failed apply as before it.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { IpferryError } from '../../src/core/errors.js';
import { NFT_FAMILY, NFT_SKELETON_VERSION, NFT_TABLE, ROUTE_PROTO } from '../../src/core/names.js';
import { LinuxDataplane } from '../../src/dataplane/linux.js';
import { run } from '../../src/dataplane/exec.js';
import { diffIntent, type IntentDiff } from '../../src/intent/diff.js';
import {
  element,
  HOST_OWNER,
  type IntentElement,
  type Payloads,
} from '../../src/intent/elements.js';
import { addNamespace, deleteNamespace, randomPrefix } from '../../src/lab/netns.js';

const UPLINK = 'eth0';
const LAN = 'lan0';
/** A device that does not exist: the kernel refuses what names it. */
const MISSING = 'nosuch0';
const TABLE = 7450;

const host = <K extends keyof Payloads>(kind: K, data: Payloads[K]): IntentElement =>
  element(kind, data, HOST_OWNER);
const sysctl = (path: string, value: string) => host('sysctl', { path, value });
const claim = (fip: string, proxy = false) => element('claim', { fip, uplink: UPLINK, proxy }, fip);
const route = (prefix: string, more: Partial<Payloads['route']> = {}) =>
  host('route', { prefix, dev: LAN, ...more });
const rule = (from: string, priority: number) =>
  element('rule', { selector: { from }, table: TABLE, priority }, from);
const dnat = (fip: string, target: string) => element('dnat', { fip, target }, fip);
const snat = (target: string, fip: string) => element('snat', { target, fip }, fip);
const counter = (fip: string) => element('counter', { fip }, fip);

const FORWARD = 'net.ipv4.ip_forward';
const PROXY_DELAY = `net.ipv4.neigh.${UPLINK}.proxy_delay`;

/** What the host holds before each apply. */
const BEFORE: IntentElement[] = [
  host('table', { version: NFT_SKELETON_VERSION }),
  sysctl(FORWARD, '0'),
  sysctl(PROXY_DELAY, '80'),
  host('hairpin', { ifname: UPLINK }),
  host('hairpin', { ifname: LAN }),
  element('drop', { first: '192.0.2.100', last: '192.0.2.110' }, 'pool:public'),
  element('drop', { first: '2001:db8:1::100', last: '2001:db8:1::1ff' }, 'pool:public'),
  claim('192.0.2.101'),
  claim('192.0.2.102'),
  counter('203.0.113.10'),
  dnat('203.0.113.10', '10.0.0.11'),
  snat('10.0.0.11', '203.0.113.10'),
  dnat('203.0.113.11', '10.0.0.15'),
  snat('10.0.0.15', '203.0.113.11'),
  route('198.51.100.0/24'),
  route('198.51.100.128/25', { table: TABLE }),
  rule('203.0.113.21', 10101),
  rule('203.0.113.22', 10102),
];

/**
 * What the apply asks for: both sysctls changed; a claim added (IPv4 address, IPv6 proxy NDP),
 * one switched from address to proxy entry, one released; routes added in both families, one
 * replaced, one removed; a rule added, one replaced (new priority), one removed; a FIP added,
 * one moved (its old DNAT's connections forgotten), one released.
 */
const AFTER: IntentElement[] = [
  host('table', { version: NFT_SKELETON_VERSION }),
  sysctl(FORWARD, '1'),
  sysctl(PROXY_DELAY, '0'),
  host('hairpin', { ifname: UPLINK }),
  host('hairpin', { ifname: LAN }),
  element('drop', { first: '192.0.2.100', last: '192.0.2.110' }, 'pool:public'),
  element('drop', { first: '2001:db8:1::100', last: '2001:db8:1::1ff' }, 'pool:public'),
  claim('192.0.2.100'),
  claim('192.0.2.102', true),
  claim('2001:db8:1::100', true),
  counter('203.0.113.10'),
  dnat('203.0.113.10', '10.0.0.12'),
  snat('10.0.0.12', '203.0.113.10'),
  counter('203.0.113.20'),
  dnat('203.0.113.20', '10.0.0.20'),
  snat('10.0.0.20', '203.0.113.20'),
  route('198.51.100.0/24', { via: '10.0.0.9' }),
  route('203.0.113.20/32', { table: TABLE }),
  route('2001:db8:20::/64'),
  rule('203.0.113.20', 10100),
  rule('203.0.113.22', 10103),
];

const STEPS = [
  'sysctl-add',
  'claims-add',
  'routing-add',
  'nft-add',
  'routing-delete',
  'claims-delete',
  'conntrack-delete',
];

/** Each step failing inside, by what the kernel refuses: what to add to the diff for it. */
const REFUSED: { step: string; cause: string; diff: Partial<IntentDiff> }[] = [
  {
    step: 'sysctl-add',
    cause: 'a sysctl of a device that does not exist, written after two that exist',
    diff: { add: [sysctl(`net.ipv4.neigh.${MISSING}.proxy_delay`, '0')] },
  },
  {
    step: 'claims-add',
    cause: 'a claim on a device that does not exist, after the others in the batch',
    diff: { add: [element('claim', { fip: '192.0.2.109', uplink: MISSING, proxy: false }, '')] },
  },
  {
    step: 'routing-add',
    cause:
      'an IPv6 route through a device that does not exist, after the IPv4 batch and an IPv6 route',
    diff: { add: [route('2001:db8:99::/64', { dev: MISSING })] },
  },
  {
    step: 'nft-add',
    cause: 'two port ranges of one FIP that overlap',
    diff: {
      add: [
        element(
          'fwd',
          {
            fip: '203.0.113.40',
            protocol: 'tcp',
            ports: { first: 8000, last: 8010 },
            target: '10.0.0.40',
          },
          '203.0.113.40',
        ),
        element(
          'fwd',
          {
            fip: '203.0.113.40',
            protocol: 'tcp',
            ports: { first: 8005, last: 8020 },
            target: '10.0.0.41',
          },
          '203.0.113.40',
        ),
      ],
    },
  },
  {
    step: 'routing-delete',
    cause: 'a rule to delete that is not there, after one that is',
    diff: { remove: [rule('203.0.113.29', 10109)] },
  },
  {
    step: 'claims-delete',
    cause: 'a claim to release that is not held, after the others in the batch',
    diff: { remove: [claim('192.0.2.109')] },
  },
];

describe(
  'linux dataplane: a failed apply leaves the kernel as it was',
  { timeout: 120_000 },
  () => {
    const ns = `${randomPrefix()}gw`;
    let failAt: string | undefined;
    const seen: string[] = [];
    let dp: LinuxDataplane;
    const inNs = (...argv: string[]) => run('ip', ['netns', 'exec', ns, ...argv]);

    /** Everything ipferry may touch in the namespace, as text. */
    const dump = async (): Promise<string> => {
      const text = async (...argv: string[]) => (await inNs(...argv)).stdout.trim();
      const addresses = JSON.parse(await text('ip', '-j', 'address', 'show')) as {
        ifname: string;
        addr_info?: { local: string; prefixlen: number; label?: string }[];
      }[];
      return [
        await text('nft', 'list', 'table', NFT_FAMILY, NFT_TABLE).catch(() => 'no table'),
        await text('ip', '-4', 'route', 'show', 'table', 'all', 'proto', String(ROUTE_PROTO)),
        await text('ip', '-6', 'route', 'show', 'table', 'all', 'proto', String(ROUTE_PROTO)),
        await text('ip', '-4', 'rule', 'show'),
        await text('ip', '-6', 'rule', 'show'),
        await text('sysctl', FORWARD, PROXY_DELAY),
        // Sorted: an address or proxy entry taken back and given again may come back elsewhere
        // in the list, which changes nothing the kernel does with it.
        ...addresses.map(
          (l) =>
            `${l.ifname}: ${(l.addr_info ?? [])
              .map((a) => `${a.local}/${a.prefixlen} ${a.label ?? ''}`)
              .sort()
              .join(', ')}`,
        ),
        (await text('ip', 'neigh', 'show', 'proxy')).split('\n').sort().join('\n'),
      ].join('\n');
    };

    /** Brings the host to `wanted` and checks it holds exactly that. */
    const converge = async (wanted: IntentElement[]): Promise<void> => {
      await dp.apply(diffIntent(wanted, await dp.observe(wanted)));
      const left = diffIntent(wanted, await dp.observe(wanted));
      assert.deepEqual([...left.add, ...left.replace, ...left.remove], []);
    };

    /** The diff from BEFORE to AFTER, read from the kernel, with `extra` added. */
    const theDiff = async (extra: Partial<IntentDiff> = {}): Promise<IntentDiff> => {
      const d = diffIntent(AFTER, await dp.observe(AFTER));
      return {
        add: [...d.add, ...(extra.add ?? [])],
        replace: d.replace,
        remove: [...d.remove, ...(extra.remove ?? [])],
      };
    };

    /** Applies `diff`, expecting it to fail; returns the error. */
    const failing = async (diff: IntentDiff): Promise<IpferryError> => {
      let thrown: unknown;
      await dp.apply(diff).catch((e: unknown) => (thrown = e));
      assert.ok(thrown instanceof IpferryError, `the apply failed: ${String(thrown)}`);
      assert.equal(thrown.code, 'IPF_E_DATAPLANE');
      return thrown;
    };

    before(async () => {
      await addNamespace(ns);
      try {
        await inNs('ip', 'link', 'add', UPLINK, 'type', 'veth', 'peer', 'name', LAN);
        await inNs('ip', 'address', 'add', '192.0.2.2/24', 'dev', UPLINK);
        await inNs('ip', 'address', 'add', '10.0.0.1/24', 'dev', LAN);
        for (const dev of [UPLINK, LAN]) await inNs('ip', 'link', 'set', dev, 'up');
        dp = new LinuxDataplane({
          netns: ns,
          beforeStep: (step) => {
            seen.push(step);
            if (step === failAt) {
              throw new IpferryError('IPF_E_DATAPLANE', { reason: `test: ${step} refused` });
            }
          },
        });
        await dp.check();
      } catch (e) {
        await deleteNamespace(ns);
        throw e;
      }
    });

    after(async () => {
      await deleteNamespace(ns);
    });

    it('a successful apply runs every step, in order, and changes the dump', async () => {
      await converge(BEFORE);
      const was = await dump();
      seen.length = 0;
      await dp.apply(await theDiff());
      assert.deepEqual(seen, STEPS);
      const left = diffIntent(AFTER, await dp.observe(AFTER));
      assert.deepEqual([...left.add, ...left.replace, ...left.remove], []);
      const now = await dump();
      assert.notEqual(now, was);
      // Spot checks that the dump sees each family change.
      assert.match(now, /net\.ipv4\.ip_forward = 1/);
      assert.match(now, /192\.0\.2\.100\/32 eth0:ipf/);
      assert.match(now, /2001:db8:1::100 dev eth0 proxy/);
      assert.match(now, /203\.0\.113\.20 lookup 7450 proto 241/);
      assert.match(now, /2001:db8:20::\/64 dev lan0/);
      assert.match(now, /203\.0\.113\.20 : 10\.0\.0\.20/);
    });

    for (const step of STEPS) {
      it(`fails before ${step}: the steps done before it are undone`, async () => {
        await converge(BEFORE);
        const was = await dump();
        failAt = step;
        try {
          const error = await failing(await theDiff());
          assert.equal(error.message, `The dataplane refused the change: test: ${step} refused`);
        } finally {
          failAt = undefined;
        }
        assert.equal(await dump(), was);
      });
    }

    for (const { step, cause, diff } of REFUSED) {
      it(`fails inside ${step} (${cause}): that step's part and the steps before are undone`, async () => {
        await converge(BEFORE);
        const was = await dump();
        seen.length = 0;
        await failing(await theDiff(diff));
        assert.equal(seen.at(-1), step, 'the step the kernel refused was the last to run');
        assert.equal(await dump(), was);
      });
    }

    it('takes back a whole-table replacement: the old elements, in a sound table', async () => {
      await converge(BEFORE);
      const sound = await dump();
      // A rule deleted by hand: the table reads as damaged, and the apply rewrites all of it. Undo
      // cannot write the damaged table back (nft does not read its own listing of it): it leaves
      // the elements the table held, in the table as it should be.
      const listed = JSON.parse(
        (await inNs('nft', '-j', '-a', 'list', 'chain', NFT_FAMILY, NFT_TABLE, 'forward')).stdout,
      ) as { nftables: { rule?: { handle: number } }[] };
      const handle = listed.nftables.find((o) => o.rule)?.rule?.handle;
      assert.ok(handle !== undefined);
      await inNs('nft', 'delete', 'rule', NFT_FAMILY, NFT_TABLE, 'forward', 'handle', `${handle}`);
      assert.notEqual(await dump(), sound);
      const diff = await theDiff();
      assert.ok(diff.replace.some((r) => r.to.kind === 'table'));
      failAt = 'conntrack-delete';
      try {
        await failing(diff);
      } finally {
        failAt = undefined;
      }
      assert.equal(await dump(), sound);
    });

    it('takes back a table that was not there', async () => {
      await converge(BEFORE);
      await inNs('nft', 'delete', 'table', NFT_FAMILY, NFT_TABLE);
      const was = await dump();
      assert.match(was, /^no table/);
      failAt = 'claims-delete';
      try {
        await failing(await theDiff());
      } finally {
        failAt = undefined;
      }
      assert.equal(await dump(), was);
    });
  },
);
