/**
 * The cloudHome lab on the real kernel: a client on the internet, the internet router `up`, a
 * small cloud VM `gw` (which will be the home server's public router) and a home server behind
 * its own ISP. Without any tunnel yet: home is reachable by its own address both ways, the
 * underlay between gw and home works, the ISP drops spoofed sources (BCP 38) — the trap a home
 * server falls into when it answers a floating IP's traffic through its own default route —
 * and with `blackholeMtu` large packets on the isp↔home path die silently while small ones
 * pass. The root namespace is only read; every lab is destroyed.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { IpferryError } from '../../src/core/errors.js';
import { run } from '../../src/dataplane/exec.js';
import { listNamespaces, randomPrefix } from '../../src/lab/netns.js';
import {
  bracketed,
  echoProbe,
  outboundProbe,
  ping,
  socatAddress,
  startEchoServer,
  type EchoServer,
} from '../../src/lab/probe.js';
import {
  CLOUD_HOME as H,
  cloudHome,
  cloudHomeCounters,
  cloudHomeRulesets,
  cloudHomeSpec,
} from '../../src/lab/scenarios.js';
import type { Lab } from '../../src/lab/topology.js';

const TCP = 7000;
const UDP = 7001;
/** A `socat … EXEC:wc -c` server: answers with the number of bytes it received. */
const COUNT = 7100;
const FIP = '203.0.113.10';
const FIP6 = '2001:db8:f::10';

const prefixes: string[] = [];
/** Interface names the labs of this file used, looked for in the root namespace at the end. */
const usedIfnames = new Set<string>();
let rootIfnamesBefore: string[] = [];
let rootIpForward = '';

async function labNamespaces(prefix: string): Promise<string[]> {
  return (await listNamespaces()).filter((name) => name.startsWith(prefix));
}

async function rootIfnames(): Promise<string[]> {
  const { stdout } = await run('ip', ['-o', 'link', 'show']);
  return stdout
    .split('\n')
    .map((line) => /^\d+: ([^:@]+)/.exec(line)?.[1])
    .filter((name): name is string => name !== undefined);
}

async function newLab(options: { blackholeMtu?: number } = {}): Promise<Lab> {
  const prefix = randomPrefix();
  prefixes.push(prefix);
  const lab = await cloudHome({ ...options, prefix });
  for (const name of lab.interfaceNames()) usedIfnames.add(name);
  return lab;
}

function socatTarget(address: string, port: number, options: string[]): string {
  return [socatAddress('tcp', address, port), ...options].join(',');
}

/** socat wants IPv6 literals in brackets, also in `bind=`. */
function bindOption(address: string): string {
  return `bind=${bracketed(address)}`;
}

/**
 * Sends `bytes` bytes over TCP and returns the count the server reported, or undefined when it
 * never came (refused, or stalled until socat's inactivity timeout). `mss` clamps the
 * connection's segment size.
 */
async function sendBytes(
  lab: Lab,
  from: string,
  address: string,
  bytes: number,
  options: { mss?: number; timeoutMs?: number } = {},
): Promise<number | undefined> {
  const t = String((options.timeoutMs ?? 1500) / 1000);
  const extra = [`connect-timeout=${t}`];
  if (options.mss !== undefined) extra.push(`mss=${options.mss}`);
  const target = socatTarget(address, COUNT, extra);
  try {
    const { stdout } = await lab.exec(from, ['socat', '-t', t, '-T', t, 'STDIO', target], {
      input: 'x'.repeat(bytes),
      timeoutMs: (options.timeoutMs ?? 1500) + 3000,
    });
    return /^\d+$/.test(stdout.trim()) ? Number(stdout.trim()) : undefined;
  } catch (error) {
    // socat's own failure (refused: `E connect(…)`, timed out: `E connecting to …`) is a
    // result; a broken lab is not.
    if (error instanceof IpferryError && /socat\[\d+\] E connect(ing to |\()/.test(error.message))
      return undefined;
    throw error;
  }
}

/** A TCP connection to an echo server from a chosen source address; its reply, or undefined. */
async function tcpFrom(
  lab: Lab,
  from: string,
  bind: string,
  server: EchoServer,
  address: string,
): Promise<string | undefined> {
  const target = socatTarget(address, server.tcp[0]!, ['connect-timeout=1', bindOption(bind)]);
  try {
    const { stdout } = await lab.exec(from, ['socat', '-t', '1', '-T', '1', 'STDIO', target]);
    return stdout;
  } catch (error) {
    if (error instanceof IpferryError && /socat\[\d+\] E connect(ing to |\()/.test(error.message))
      return undefined;
    throw error;
  }
}

/** One ping of `size` bytes payload with DF (`-M do`) or without (`-M dont`). */
async function sizedPing(
  lab: Lab,
  from: string,
  address: string,
  size: number,
  df: boolean,
): Promise<boolean> {
  const argv = ['ping', '-n', '-q', '-c', '1', '-W', '1', '-s', String(size)];
  // IPv6 never fragments on the way; -M applies to IPv4 only.
  if (!address.includes(':')) argv.push('-M', df ? 'do' : 'dont');
  try {
    await lab.exec(from, [...argv, address], { timeoutMs: 5000 });
    return true;
  } catch (error) {
    if (error instanceof IpferryError && /exit 1\)/.test(error.message)) return false;
    throw error;
  }
}

/** Starts byte-counting servers and waits until they accept. */
async function startCounters(lab: Lab, hosts: readonly string[]): Promise<void> {
  for (const host of hosts) {
    await lab.spawn(host, [
      'socat',
      `TCP6-LISTEN:${COUNT},ipv6only=0,fork,reuseaddr`,
      'EXEC:wc -c',
    ]);
  }
  const deadline = Date.now() + 5000;
  for (const host of hosts) {
    const address = host === 'home' ? H.home.v4 : H.client.v4;
    const from = host === 'home' ? 'client' : 'home';
    while ((await sendBytes(lab, from, address, 1, { timeoutMs: 500 })) !== 1) {
      if (Date.now() > deadline) throw new Error(`byte counter on ${host} not ready`);
      await sleep(50);
    }
  }
}

before(async () => {
  rootIfnamesBefore = await rootIfnames();
  rootIpForward = await readFile('/proc/sys/net/ipv4/ip_forward', 'utf8');
});

describe(
  'cloudHome: a home server behind its ISP, a cloud VM in front',
  { timeout: 60_000 },
  () => {
    let lab: Lab;
    let onClient: EchoServer;

    before(async () => {
      lab = await newLab();
      // home's server answers the probes by port; only the client's is needed by name.
      [onClient] = await Promise.all([
        startEchoServer(lab, 'client', { tcp: [TCP], udp: [UDP] }),
        startEchoServer(lab, 'home', { tcp: [TCP], udp: [UDP] }),
      ]);
      await startCounters(lab, ['home']);
    });

    after(async () => {
      await lab?.destroy();
    });

    it('has the five hosts; gw has no nftables, isp only its BCP 38 table, home forwards nothing', async () => {
      assert.deepEqual(lab.hosts, ['client', 'up', 'gw', 'isp', 'home']);
      assert.equal((await lab.exec('gw', ['nft', 'list', 'ruleset'])).stdout.trim(), '');
      assert.equal((await lab.exec('home', ['nft', 'list', 'ruleset'])).stdout.trim(), '');
      const tables = (await lab.exec('isp', ['nft', 'list', 'tables'])).stdout.trim();
      assert.equal(tables, `table inet ${H.nft.ispTable}`);
      const sysctl = async (host: string, key: string) =>
        (await lab.exec(host, ['sysctl', '-n', key])).stdout.trim();
      assert.equal(await sysctl('home', 'net.ipv4.ip_forward'), '0');
      assert.equal(await sysctl('home', 'net.ipv6.conf.all.forwarding'), '0');
      for (const router of ['up', 'gw', 'isp']) {
        assert.equal(await sysctl(router, 'net.ipv4.ip_forward'), '1');
        assert.equal(await sysctl(router, 'net.ipv6.conf.all.forwarding'), '1');
      }
    });

    it("the client reaches home by home's own address; home sees the client (v4 and v6)", async () => {
      for (const protocol of ['tcp', 'udp'] as const) {
        const port = protocol === 'tcp' ? TCP : UDP;
        assert.deepEqual(await echoProbe(lab, 'client', protocol, H.home.v4, port), {
          name: 'home',
          address: H.client.v4,
        });
        assert.deepEqual(await echoProbe(lab, 'client', protocol, H.home.v6, port), {
          name: 'home',
          address: H.client.v6,
        });
      }
    });

    it('home reaches the client through its own ISP; the client sees 198.18.0.10 (v4 and v6)', async () => {
      assert.equal(await outboundProbe(lab, 'home', onClient, H.client.v4), H.home.v4);
      assert.equal(await outboundProbe(lab, 'home', onClient, H.client.v6), H.home.v6);
      assert.equal(
        await outboundProbe(lab, 'home', onClient, H.client.v4, { protocol: 'udp' }),
        H.home.v4,
      );
      assert.equal(
        await outboundProbe(lab, 'home', onClient, H.client.v6, { protocol: 'udp' }),
        H.home.v6,
      );
    });

    it('the tunnel underlay exists: gw reaches 198.18.0.10, home reaches 192.0.2.2', async () => {
      assert.equal(await ping(lab, 'gw', H.home.v4), true);
      assert.equal(await ping(lab, 'gw', H.home.v6), true);
      assert.equal(await ping(lab, 'home', H.gw.uplink.v4), true);
      assert.equal(await ping(lab, 'home', H.gw.uplink.v6), true);
      // The tunnel is UDP: gw's datagrams reach home and home's answers come back to gw.
      assert.deepEqual(await echoProbe(lab, 'gw', 'udp', H.home.v4, UDP), {
        name: 'home',
        address: H.gw.uplink.v4,
      });
      assert.deepEqual(await echoProbe(lab, 'gw', 'udp', H.home.v6, UDP), {
        name: 'home',
        address: H.gw.uplink.v6,
      });
    });

    it('isp drops what home sends from a floating IP (BCP 38); its own address still works', async () => {
      await lab.exec('home', ['ip', 'address', 'add', `${FIP}/32`, 'dev', 'lo']);
      await lab.exec('home', ['ip', 'address', 'add', `${FIP6}/128`, 'dev', 'lo', 'nodad']);
      try {
        const before = await cloudHomeCounters(lab);
        assert.equal(
          await tcpFrom(lab, 'home', H.home.v4, onClient, H.client.v4),
          `client ${H.home.v4}\n`,
        );
        assert.equal(await tcpFrom(lab, 'home', FIP, onClient, H.client.v4), undefined);
        assert.equal(
          await tcpFrom(lab, 'home', H.home.v6, onClient, H.client.v6),
          `client ${H.home.v6}\n`,
        );
        assert.equal(await tcpFrom(lab, 'home', FIP6, onClient, H.client.v6), undefined);
        const after = await cloudHomeCounters(lab);
        // isp's rule dropped them (SYN and its retransmissions), not something else on the way.
        assert.ok(after.spoofedV4 > before.spoofedV4, 'isp did not drop the IPv4 SYN');
        assert.ok(after.spoofedV6 > before.spoofedV6, 'isp did not drop the IPv6 SYN');
      } finally {
        await lab.exec('home', ['ip', 'address', 'del', `${FIP}/32`, 'dev', 'lo']);
        await lab.exec('home', ['ip', 'address', 'del', `${FIP6}/128`, 'dev', 'lo']);
      }
    });

    it('without blackholeMtu large packets pass: 1,900 bytes and 100 kB to home, 1,400-byte DF pings', async () => {
      assert.equal(await sendBytes(lab, 'client', H.home.v4, 1900), 1900);
      assert.equal(await sendBytes(lab, 'client', H.home.v6, 100_000), 100_000);
      assert.equal(await sizedPing(lab, 'home', H.client.v4, 1400, true), true);
      assert.equal(await sizedPing(lab, 'home', H.client.v6, 1400, true), true);
      const { tooBig, oversize, fragments } = await cloudHomeCounters(lab);
      assert.deepEqual({ tooBig, oversize, fragments }, { tooBig: 0, oversize: 0, fragments: 0 });
    });

    it('destroy removes every namespace of the lab', async () => {
      await lab.destroy();
      assert.deepEqual(await labNamespaces(lab.prefix), []);
    });
  },
);

describe(
  'cloudHome with blackholeMtu 1380: an MTU black hole between isp and home',
  { timeout: 60_000 },
  () => {
    let lab: Lab;

    before(async () => {
      lab = await newLab({ blackholeMtu: 1380 });
      await startCounters(lab, ['home', 'client']);
    });

    after(async () => {
      await lab?.destroy();
    });

    it("home does not know: both ends of its cable keep MTU 1500, only isp's route says 1380", async () => {
      const mtu = async (host: string, ifname: string) =>
        (
          JSON.parse((await lab.exec(host, ['ip', '-j', 'link', 'show', ifname])).stdout) as {
            mtu: number;
          }[]
        )[0]?.mtu;
      assert.equal(await mtu('home', H.home.ifname), 1500);
      assert.equal(await mtu('isp', H.isp.toHome.ifname), 1500);
      const routes = (await lab.exec('isp', ['ip', 'route', 'show', H.homeLink.v4])).stdout;
      assert.match(routes, /mtu 1380/);
      const routes6 = (await lab.exec('isp', ['ip', '-6', 'route', 'show', H.homeLink.v6])).stdout;
      assert.match(routes6, /mtu 1380/);
    });

    it("a 1,900-byte TCP payload from the client to home's own address stalls; small ones pass", async () => {
      const before = await cloudHomeCounters(lab);
      const [small4, mid4, small6, mid6, large4, large6] = await Promise.all([
        sendBytes(lab, 'client', H.home.v4, 100),
        sendBytes(lab, 'client', H.home.v4, 1000),
        sendBytes(lab, 'client', H.home.v6, 100),
        sendBytes(lab, 'client', H.home.v6, 1000),
        sendBytes(lab, 'client', H.home.v4, 1900),
        sendBytes(lab, 'client', H.home.v6, 1900),
      ]);
      assert.deepEqual([small4, mid4, small6, mid6], [100, 1000, 100, 1000]);
      assert.equal(large4, undefined);
      assert.equal(large6, undefined);
      // isp did answer "too big" — and its own answers died in its output chain.
      assert.ok((await cloudHomeCounters(lab)).tooBig > before.tooBig);
    });

    it('with segments that fit (MSS 1300) the same 1,900 bytes, and 100 kB, do arrive', async () => {
      assert.equal(await sendBytes(lab, 'client', H.home.v4, 1900, { mss: 1300 }), 1900);
      assert.equal(await sendBytes(lab, 'client', H.home.v6, 100_000, { mss: 1300 }), 100_000);
      // The other way too: home's packets are checked one by one, not as offload aggregates.
      assert.equal(await sendBytes(lab, 'home', H.client.v4, 100_000, { mss: 1300 }), 100_000);
    });

    it('from home: a 1,400-byte DF ping to the client fails silently, a 1,000-byte one passes', async () => {
      const before = await cloudHomeCounters(lab);
      assert.equal(await sizedPing(lab, 'home', H.client.v4, 1000, true), true);
      assert.equal(await sizedPing(lab, 'home', H.client.v4, 1400, true), false);
      assert.equal(await sizedPing(lab, 'home', H.client.v6, 1000, true), true);
      assert.equal(await sizedPing(lab, 'home', H.client.v6, 1400, true), false);
      assert.equal(await sendBytes(lab, 'home', H.client.v4, 1900), undefined);
      assert.ok((await cloudHomeCounters(lab)).oversize > before.oversize);
    });

    it('toward home, large packets without DF are fragmented by isp and the fragments dropped', async () => {
      const before = await cloudHomeCounters(lab);
      assert.equal(await sizedPing(lab, 'client', H.home.v4, 1000, false), true);
      assert.equal(await sizedPing(lab, 'client', H.home.v4, 1400, false), false);
      assert.ok((await cloudHomeCounters(lab)).fragments > before.fragments);
    });

    it('destroy removes every namespace of the lab', async () => {
      await lab.destroy();
      assert.deepEqual(await labNamespaces(lab.prefix), []);
    });
  },
);

describe('cloudHome options', () => {
  it('refuses a blackholeMtu that is no black hole, before creating anything', async () => {
    const prefix = randomPrefix();
    for (const mtu of [1500, 1279, 1380.5]) {
      await assert.rejects(cloudHome({ prefix, blackholeMtu: mtu }), /blackholeMtu/);
    }
    assert.deepEqual(await labNamespaces(prefix), []);
  });

  it('the spec alone has no filters; the rulesets name the black-hole tables only when asked', () => {
    const spec = cloudHomeSpec({ prefix: 'ipft-x-' });
    assert.equal(spec.prefix, 'ipft-x-');
    assert.deepEqual(
      spec.links.map((l) => `${l.a.host}/${l.a.ifname}-${l.b.host}/${l.b.ifname}`),
      [
        'client/to-up-up/to-client',
        'up/to-gw-gw/wan0',
        'up/to-isp-isp/to-up',
        'isp/to-home-home/eth0',
      ],
    );
    const plain = cloudHomeRulesets();
    assert.match(plain.isp, /ip saddr != 198\.18\.0\.0\/24/);
    assert.match(plain.isp, /ip6 saddr != 2001:db8:3::\/48/);
    assert.doesNotMatch(plain.isp, /packet-too-big/);
    assert.equal(plain.home, undefined);
    assert.equal(plain.ispWire, undefined);
    const hole = cloudHomeRulesets({ blackholeMtu: 1380 });
    assert.match(hole.isp, /chain output/);
    assert.match(hole.ispWire ?? '', /meta length > 1380/);
    assert.match(hole.home ?? '', /frag-off/);
  });
});

describe('the root namespace', () => {
  it('is unchanged: no lab namespace left, no new interface, forwarding as before', async () => {
    assert.equal(prefixes.length, 2);
    for (const prefix of prefixes) assert.deepEqual(await labNamespaces(prefix), []);
    // Some lab names (eth0) may exist in the root namespace already: only new ones count.
    const appeared = (await rootIfnames()).filter(
      (name) => usedIfnames.has(name) && !rootIfnamesBefore.includes(name),
    );
    assert.deepEqual(appeared, []);
    assert.equal(await readFile('/proc/sys/net/ipv4/ip_forward', 'utf8'), rootIpForward);
  });
});
