/**
 * The cloud-router-to-home migration with routed FIPs: a gateway agent (the cloud VM) and
 * remote agents on two home servers behind the same ISP, joined with join tokens and following
 * the gateway over the http store, build WireGuard tunnels between their namespaces
 * (wireguard-go) and deliver the FIP unchanged to a home server, which answers from it through
 * the tunnel while its own address keeps using its own ISP. The ISP validates sources (BCP 38),
 * so an answer that took the wrong way would be dropped.
 *
 * Also shown here: a move of a routed FIP from one home server to the other under a probe every
 * 10 ms (the measured gap is printed, not asserted), remote agents keeping their state while the
 * gateway agent is down and converging when it returns, and a node with a wrong join token
 * refused without a trace. Every process is killed and everything removed in `after`, also on
 * failure.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ApiClient } from '../../src/client/api-client.js';
import { IpferryError } from '../../src/core/errors.js';
import { encodeJoinToken } from '../../src/core/join.js';
import { ROUTE_PROTO } from '../../src/core/names.js';
import { tunnelName } from '../../src/core/tunnel.js';
import { healthy, LabAgents, writeSecretFile } from '../../src/lab/agents.js';
import {
  CLOUD_HOME as H,
  cloudHome,
  cloudHomeCounters,
  cloudHomeSpec,
} from '../../src/lab/scenarios.js';
import {
  echoProbe,
  type EchoReply,
  outboundProbe,
  type EchoServer,
  startEchoServer,
} from '../../src/lab/probe.js';
import type { Lab } from '../../src/lab/topology.js';
import { ensureBuilt } from '../support/build.js';
import { activeFip, tempDir, waitFor } from '../support/helpers.js';

let lab: Lab;
let tmp: { dir: string; remove: () => Promise<void> };
/** Every agent this file starts (also refused and restarted ones): killed by pid in `after`. */
let agents: LabAgents;
let api: ApiClient;
let hub: string;
let clientServer: EchoServer;
/** home's join token, used up by its join: presenting it again must be refused. */
let usedJoinToken: string;

const FIP = '203.0.113.10';
const FIP6 = '2001:db8:f::10';
/** Associated while the gateway agent is back after an outage. */
const FIP_AFTER_OUTAGE = '203.0.113.11';
const TUNNEL_PORTS = { gw: 51820, home: 51821, home2: 51822, intruder: 51823 } as const;

/** Joins a remote home server to the gateway with a join token bound to it; the token. */
async function joinRemote(node: 'home' | 'home2'): Promise<string> {
  // A home server has no public endpoint for its tunnel: it calls the gateway and keeps the
  // path open, as it would behind a home router.
  const { token } = await agents.join(node, {
    api,
    extra: ['--tunnel-port', String(TUNNEL_PORTS[node])],
  });
  return token;
}

async function activeAt(address: string): Promise<void> {
  await activeFip(api, address);
}

before(async () => {
  await ensureBuilt();
  tmp = await tempDir('routed');
  lab = await cloudHome({ homes: 2 });
  agents = new LabAgents({ lab, dir: tmp.dir });
  clientServer = await startEchoServer(lab, 'client', { tcp: [80] });
  await startEchoServer(lab, 'home', { tcp: [80] });
  await startEchoServer(lab, 'home2', { tcp: [80] });
  const gw = await agents.startHub('gw', {
    endpoint: { address: H.gw.uplink.v4, port: TUNNEL_PORTS.gw },
  });
  hub = gw.agent.url;
  api = gw.api;
  usedJoinToken = await joinRemote('home');
  await joinRemote('home2');
  await api.createPool({
    name: 'public',
    gateway: 'gw',
    entries: ['203.0.113.0/28', '2001:db8:f::/64'],
  });
});

after(async () => {
  await agents?.teardown();
  await tmp?.remove();
});

describe('routed FIPs through a WireGuard tunnel to a home server', () => {
  it('delivers the FIP unchanged; the home server sees the client and answers through the tunnel', async () => {
    await api.allocate({ address: FIP });
    await api.associate(FIP, { mode: 'routed', node: 'home', target: FIP });
    await activeAt(FIP);
    const reply = await waitFor(
      'an answer through the tunnel',
      async () => echoProbe(lab, 'client', 'tcp', FIP, 80, 1500),
      15_000,
    );
    assert.deepEqual(reply, { name: 'home', address: H.client.v4 });
    // A UDP service must answer from the address it was asked on, as on any multi-homed host:
    // one bound to the wildcard answers from the route's source (the home's own address).
    await startEchoServer(lab, 'home', { name: 'home-fip', udp: [5354], bind: [FIP] });
    assert.deepEqual(await echoProbe(lab, 'client', 'udp', FIP, 5354), {
      name: 'home-fip',
      address: H.client.v4,
    });
  });

  it('keeps the home server’s own address on its own ISP meanwhile', async () => {
    assert.deepEqual(await echoProbe(lab, 'client', 'tcp', H.home.v4, 80), {
      name: 'home',
      address: H.client.v4,
    });
    assert.equal(await outboundProbe(lab, 'home', clientServer, H.client.v4), H.home.v4);
  });

  it('routes an IPv6 FIP to the home server too', async () => {
    await api.allocate({ address: FIP6 });
    await api.associate(FIP6, { mode: 'routed', node: 'home', target: FIP6 });
    await activeAt(FIP6);
    const reply = await waitFor(
      'IPv6 through the tunnel',
      async () => echoProbe(lab, 'client', 'tcp', FIP6, 80, 1500),
      15_000,
    );
    assert.deepEqual(reply, { name: 'home', address: H.client.v6 });
  });

  it('forwards ports to the home server’s own address through the tunnel; its answers go back the same way', async () => {
    // Linux's "reply-to": the gateway marks what it DNATs to home and routes it into the tunnel;
    // home marks what came in through the tunnel and sends the answers back through it, although
    // its default route is its ISP. An answer that left by the ISP would come from
    // 198.18.0.10:80, not from the FIP's port 8080, and the client's connection would fail.
    const fip = '203.0.113.12';
    await api.allocate({ address: fip });
    await api.addForward(fip, {
      protocol: 'tcp',
      port: 8080,
      targetPort: 80,
      target: H.home.v4,
      node: 'home',
    });
    await activeAt(fip);
    const reply = await waitFor(
      'a forwarded port through the tunnel',
      async () => echoProbe(lab, 'client', 'tcp', fip, 8080, 1500),
      15_000,
    );
    assert.deepEqual(reply, { name: 'home', address: H.client.v4 });
    // Its own address still answers directly through its ISP, and leaves with it.
    assert.deepEqual(await echoProbe(lab, 'client', 'tcp', H.home.v4, 80), {
      name: 'home',
      address: H.client.v4,
    });
    assert.equal(await outboundProbe(lab, 'home', clientServer, H.client.v4), H.home.v4);
    await api.release(fip, true);
  });

  it('stops delivering on disassociate: the FIP is dropped at the gateway again', async () => {
    await api.disassociate(FIP);
    await waitFor(
      'gone',
      async () => (await echoProbe(lab, 'client', 'tcp', FIP, 80, 700)) === undefined,
      10_000,
    );
    await waitFor(
      'home no longer holds it',
      async () => !(await lab.exec('home', ['ip', 'address', 'show'])).stdout.includes(`${FIP}/32`),
      10_000,
    );
  });
});

interface Probe {
  /** performance.now() when the probe was started, and when its outcome was in. */
  readonly start: number;
  readonly end: number;
  readonly reply?: EchoReply;
  /** A broken lab (not a failed probe, which is an undefined reply). */
  readonly error?: string;
}

/**
 * Starts a TCP probe of `address` from the client every `everyMs` (each bounded by
 * `timeoutMs`) until stopped or `maxMs` have passed; `stop()` resolves with every outcome once
 * the last probe is in.
 */
function probeLoop(address: string, everyMs: number, timeoutMs: number, maxMs: number) {
  const results: Probe[] = [];
  const inflight = new Set<Promise<void>>();
  let stopped = false;
  const t0 = performance.now();
  const loop = (async () => {
    for (let i = 1; !stopped && performance.now() - t0 < maxMs; i++) {
      const start = performance.now();
      const probe = echoProbe(lab, 'client', 'tcp', address, 80, timeoutMs).then(
        (reply) => {
          results.push({ start, end: performance.now(), ...(reply ? { reply } : {}) });
        },
        (error: unknown) => {
          results.push({ start, end: performance.now(), error: String(error) });
        },
      );
      inflight.add(probe);
      void probe.finally(() => inflight.delete(probe));
      // Paced from t0, so a slow spawn does not stretch the period; always yield.
      await sleep(Math.max(0, t0 + i * everyMs - performance.now()));
    }
  })();
  return {
    results,
    async stop(): Promise<Probe[]> {
      stopped = true;
      await loop;
      await Promise.all([...inflight]);
      return results;
    },
  };
}

const ms = (value: number): string => `${value.toFixed(0)} ms`;

/** `wg show TUN what` in a lab host's tunnel; '' while the tunnel does not exist. */
async function wgShow(host: string, what: string): Promise<string> {
  const tun = tunnelName(host, host, lab.ns(host));
  return (await lab.exec(host, ['wg', 'show', tun, what]).catch(() => undefined))?.stdout ?? '';
}

/**
 * Watches (every 25 ms) when the tunnel between gw and `node` comes up: `node`'s tunnel
 * interface, gw's peer for it, and gw learning its endpoint (from its first handshake, as the
 * node calls in). These times explain a move's gap; `stop()` resolves with them.
 */
function watchTunnel(node: string, publicKey: string) {
  const seen: { tunnel?: number; gwPeer?: number; handshake?: number } = {};
  let stopped = false;
  const loop = (async () => {
    while (!stopped) {
      const [own, gw] = await Promise.all([
        wgShow(node, 'latest-handshakes'),
        wgShow('gw', 'endpoints'),
      ]);
      const now = performance.now();
      const peer = gw.split('\n').find((line) => line.startsWith(`${publicKey}\t`));
      if (own !== '') seen.tunnel ??= now;
      if (peer !== undefined) seen.gwPeer ??= now;
      if (peer !== undefined && !peer.endsWith('(none)')) seen.handshake ??= now;
      await sleep(25);
    }
  })();
  return {
    async stop(): Promise<typeof seen> {
      stopped = true;
      await loop;
      return seen;
    },
  };
}

/**
 * What ipferry put in a lab host's kernel: its tunnel (link, addresses, peers' allowed IPs), its
 * rules and routes (protocol 241) and its nftables without counter values.
 */
async function kernelState(host: string): Promise<Record<string, string>> {
  const tun = tunnelName(host, host, lab.ns(host));
  const out = async (argv: string[]): Promise<string> => (await lab.exec(host, argv)).stdout.trim();
  const proto = String(ROUTE_PROTO);
  // iproute2 6.1 ignores `ip rule show protocol N` (it lists every rule): filter here.
  const rules = async (family: string): Promise<string> =>
    (await out(['ip', family, 'rule', 'show']))
      .split('\n')
      .filter((line) => line.endsWith(` proto ${proto}`))
      .join('\n');
  return {
    link: await out(['ip', '-o', 'link', 'show', 'dev', tun]),
    addresses: await out(['ip', '-o', 'address', 'show', 'dev', tun]),
    // wireguard-go lists its peers in no stable order.
    peers: (await out(['wg', 'show', tun, 'allowed-ips'])).split('\n').sort().join('\n'),
    rules4: await rules('-4'),
    rules6: await rules('-6'),
    routes4: await out(['ip', '-4', 'route', 'show', 'table', 'all', 'proto', proto]),
    routes6: await out(['ip', '-6', 'route', 'show', 'table', 'all', 'proto', proto]),
    nft: await out(['nft', '-s', 'list', 'ruleset']),
  };
}

describe('cloudHome with two home servers (spec only)', () => {
  it('bridges home and home2 on isp’s to-home; refuses a black hole in front of two', () => {
    const spec = cloudHomeSpec({ homes: 2, prefix: 'ipft-x-' });
    assert.deepEqual(
      spec.hosts.map((h) => h.name),
      ['client', 'up', 'gw', 'isp', 'home', 'home2'],
    );
    assert.deepEqual(
      spec.links.map((l) => `${l.a.host}/${l.a.ifname}-${l.b.host}/${l.b.ifname}`),
      [
        'client/to-up-up/to-client',
        'up/to-gw-gw/wan0',
        'up/to-isp-isp/to-up',
        'isp/p-home-home/eth0',
        'isp/p-home2-home2/eth0',
      ],
    );
    assert.deepEqual(spec.hosts.find((h) => h.name === 'isp')?.bridges, [
      { name: 'to-home', addresses: ['198.18.0.1/24', '2001:db8:3::1/64'] },
    ]);
    assert.throws(() => cloudHomeSpec({ homes: 2, blackholeMtu: 1380 }), /homes 2/);
    assert.throws(() => cloudHomeSpec({ homes: 3 as 2 }), /homes 3/);
  });
});

describe('two home servers: a move between them, a gateway outage, a refused node', () => {
  it('home2 sits behind the same ISP with its own address, both ways', async () => {
    assert.deepEqual(await echoProbe(lab, 'client', 'tcp', H.home2.v4, 80), {
      name: 'home2',
      address: H.client.v4,
    });
    assert.equal(await outboundProbe(lab, 'home2', clientServer, H.client.v4), H.home2.v4);
    assert.equal(await outboundProbe(lab, 'home2', clientServer, H.client.v6), H.home2.v6);
    // isp validates home2's sources too: one outside its customer range dies there.
    const spoofed = '203.0.113.14';
    const before = await cloudHomeCounters(lab);
    await lab.exec('home2', ['ip', 'address', 'add', `${spoofed}/32`, 'dev', 'lo']);
    try {
      const argv = ['ping', '-n', '-q', '-c', '1', '-W', '1', '-I', spoofed, H.client.v4];
      await assert.rejects(lab.exec('home2', argv), /exit 1\)/);
    } finally {
      await lab.exec('home2', ['ip', 'address', 'del', `${spoofed}/32`, 'dev', 'lo']);
    }
    assert.ok((await cloudHomeCounters(lab)).spoofedV4 > before.spoofedV4);
  });

  it('moves a routed FIP from home to home2 under a probe every 10 ms; home2 sees the client', async () => {
    await api.associate(FIP, { mode: 'routed', node: 'home', target: FIP });
    await activeAt(FIP);
    await waitFor(
      'home answering on the FIP',
      async () => (await echoProbe(lab, 'client', 'tcp', FIP, 80, 1500))?.name === 'home',
      15_000,
    );
    const home2Key = (await api.getNode('home2')).publicKey ?? '';
    assert.equal(await wgShow('home2', 'endpoints'), '', 'home2 has a tunnel before the move');
    const loop = probeLoop(FIP, 10, 500, 30_000);
    const tunnel = watchTunnel('home2', home2Key);
    let moveCalled = 0;
    let moveReturned = 0;
    let seen: Awaited<ReturnType<typeof tunnel.stop>> = {};
    try {
      await sleep(500);
      moveCalled = performance.now();
      await api.move(FIP, { node: 'home2', target: FIP });
      moveReturned = performance.now();
      await waitFor(
        'an answer from home2 in the probe loop',
        () => Promise.resolve(loop.results.some((r) => r.reply?.name === 'home2')),
        20_000,
      );
      // Keep probing a while: nothing may come back from home after the switch.
      await sleep(1000);
    } finally {
      await loop.stop();
      seen = await tunnel.stop();
    }
    const results = [...loop.results].sort((a, b) => a.start - b.start);
    assert.deepEqual(
      results.filter((r) => r.error !== undefined).map((r) => r.error),
      [],
      'probes failed for another reason than no answer',
    );
    const fromHome = results.filter((r) => r.reply?.name === 'home');
    const fromHome2 = results.filter((r) => r.reply?.name === 'home2');
    const byEnd = (list: Probe[]) => [...list].sort((a, b) => a.end - b.end);
    const lastHome = byEnd(fromHome).at(-1);
    const firstHome2 = byEnd(fromHome2)[0];
    assert.ok(lastHome, 'home never answered before the move');
    assert.ok(firstHome2, 'home2 never answered');
    // Switched: a probe started after home2 had answered reaches home2 or nothing, never home.
    const lateFromHome = fromHome.filter((r) => r.start > firstHome2.end);
    assert.deepEqual(lateFromHome, [], 'home answered after the switch to home2');
    for (const r of fromHome2) assert.equal(r.reply?.address, H.client.v4);
    const lastHomeStarted = fromHome.at(-1)!;
    const dark = results.filter(
      (r) => r.start > lastHomeStarted.start && r.start < firstHome2.start,
    ).length;
    console.log(
      [
        `routed move ${FIP} home → home2 under a TCP probe every 10 ms (500 ms bound):`,
        `${results.length} probes, ${fromHome.length} answered by home, ${fromHome2.length} by home2,`,
        `${results.length - fromHome.length - fromHome2.length} unanswered;`,
        `gap between the last answer from home and the first from home2: ${ms(firstHome2.end - lastHome.end)};`,
        `move API call ${ms(moveReturned - moveCalled)};`,
        `from its return to the first answer from home2: ${ms(firstHome2.end - moveReturned)};`,
        `probes started between the last that reached home and the first that reached home2: ${dark}`,
        `(${ms(firstHome2.start - lastHomeStarted.start)} apart)`,
      ].join(' '),
    );
    const sinceMove = (t: number | undefined) =>
      t === undefined ? 'not seen' : ms(t - moveCalled);
    console.log(
      [
        `tunnel gw–home2 after the move call: home2's tunnel ${sinceMove(seen.tunnel)},`,
        `gw's peer for home2 ${sinceMove(seen.gwPeer)}, gw learned home2's endpoint (handshake)`,
        `${sinceMove(seen.handshake)}, first answer from home2 ${sinceMove(firstHome2.end)}`,
        ...(seen.tunnel !== undefined && seen.gwPeer !== undefined && seen.tunnel < seen.gwPeer
          ? ["(home2's tunnel was up before gw had its peer)"]
          : []),
      ].join(' '),
    );
    await activeAt(FIP);
    await waitFor(
      'home no longer holds the FIP',
      async () => !(await lab.exec('home', ['ip', 'address', 'show'])).stdout.includes(`${FIP}/32`),
      10_000,
    );
  });

  it('refuses a node with a wrong join token: it exits with IPF_E_JOIN_REFUSED, nothing changes', async () => {
    const nodesBefore = (await api.listNodes()).map((n) => n.name).sort();
    const clientBefore = {
      links: (await lab.exec('client', ['ip', '-o', 'link', 'show'])).stdout,
      nft: (await lab.exec('client', ['nft', 'list', 'ruleset'])).stdout,
    };
    const madeUp = encodeJoinToken({ urls: [hub], secret: randomBytes(32).toString('base64url') });
    const tokens = { 'made up': madeUp, 'already used by home': usedJoinToken };
    for (const [what, token] of Object.entries(tokens)) {
      const dir = join(tmp.dir, 'intruder');
      await mkdir(dir, { recursive: true, mode: 0o700 });
      const tokenFile = join(dir, 'join-token');
      await writeSecretFile(tokenFile, `${token}\n`);
      // The intruder's host is the client: a machine on the internet that found the hub.
      const { proc } = await agents.spawn(
        {
          node: 'intruder',
          host: 'client',
          store: hub,
          extra: [
            '--join-token-file',
            tokenFile,
            '--credential-file',
            agents.credentialFile('intruder'),
            '--tunnel-port',
            String(TUNNEL_PORTS.intruder),
          ],
        },
        ['ignore', 'ignore', 'pipe'],
      );
      let stderr = '';
      proc.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
      const code = await new Promise<number | null>((resolve, reject) => {
        const timer = setTimeout(() => {
          proc.kill('SIGKILL');
          reject(new Error(`intruder agent (${what} token) still running after 20 s`));
        }, 20_000);
        proc.once('exit', (exitCode) => {
          clearTimeout(timer);
          resolve(exitCode);
        });
      });
      assert.notEqual(code, 0, `intruder agent (${what} token) exited with 0`);
      assert.notEqual(code, null, `intruder agent (${what} token) was killed`);
      assert.match(stderr, /IPF_E_JOIN_REFUSED/, `${what} token: ${stderr}`);
      assert.ok(!stderr.includes(token), 'the join token appeared on stderr');
      const files = await readdir(dir);
      assert.ok(
        !files.some((f) => f.startsWith('credential')),
        `${what} token: credential files ${files.join(', ')}`,
      );
    }
    assert.deepEqual((await api.listNodes()).map((n) => n.name).sort(), nodesBefore);
    assert.ok(!nodesBefore.includes('intruder'));
    await assert.rejects(api.getNode('intruder'));
    assert.deepEqual(
      {
        links: (await lab.exec('client', ['ip', '-o', 'link', 'show'])).stdout,
        nft: (await lab.exec('client', ['nft', 'list', 'ruleset'])).stdout,
      },
      clientBefore,
    );
  });

  it('remote agents keep their state while the gateway agent is down, and converge when it returns', async () => {
    // home serves FIP6 (from the IPv6 test above), home2 the moved FIP.
    const answers = async (): Promise<void> => {
      assert.deepEqual(
        await waitFor(
          `${FIP} through the tunnel to home2`,
          async () => echoProbe(lab, 'client', 'tcp', FIP, 80, 1500),
          5000,
        ),
        { name: 'home2', address: H.client.v4 },
      );
      assert.deepEqual(
        await waitFor(
          `${FIP6} through the tunnel to home`,
          async () => echoProbe(lab, 'client', 'tcp', FIP6, 80, 1500),
          5000,
        ),
        { name: 'home', address: H.client.v6 },
      );
    };
    await answers();
    const hosts = ['gw', 'home', 'home2'] as const;
    const before = Object.fromEntries(
      await Promise.all(hosts.map(async (h) => [h, await kernelState(h)] as const)),
    );
    assert.match(before.home?.rules6 ?? '', new RegExp(`from ${FIP6} lookup`));
    assert.match(
      before.home2?.rules4 ?? '',
      new RegExp(`from ${FIP.replaceAll('.', '\\.')} lookup`),
    );
    assert.match(before.home2?.addresses ?? '', new RegExp(`${FIP.replaceAll('.', '\\.')}/32`));
    assert.match(before.gw?.routes4 ?? '', new RegExp(`${FIP.replaceAll('.', '\\.')} dev`));

    await agents.kill('gw');
    // While it is down nothing can change: the API is gone with it.
    await assert.rejects(
      api.getFip(FIP),
      (e: unknown) => e instanceof IpferryError && e.code === 'IPF_E_UNREACHABLE',
    );
    const outageStart = performance.now();
    for (let round = 1; round <= 4; round++) {
      await sleep(1000);
      for (const node of ['home', 'home2']) {
        const agent = agents.get(node)!;
        assert.equal(agent.proc.exitCode, null, `${node} agent exited during the outage`);
        assert.ok(await healthy(agent.url), `${node} agent unhealthy during the outage`);
      }
      for (const h of hosts) assert.deepEqual(await kernelState(h), before[h], `${h} changed`);
      await answers();
    }
    console.log(
      `gateway agent down ${ms(performance.now() - outageStart)}: home and home2 agents up, their kernel state and the gateway's unchanged, ${FIP} and ${FIP6} answering throughout`,
    );

    // Back on the same port and store: the remote agents' http stores reconnect to it.
    const restarted = performance.now();
    await agents.restart('gw');
    await api.allocate({ address: FIP_AFTER_OUTAGE });
    await api.associate(FIP_AFTER_OUTAGE, {
      mode: 'routed',
      node: 'home',
      target: FIP_AFTER_OUTAGE,
    });
    await activeAt(FIP_AFTER_OUTAGE);
    const reply = await waitFor(
      `${FIP_AFTER_OUTAGE} through the tunnel to home after the outage`,
      async () => echoProbe(lab, 'client', 'tcp', FIP_AFTER_OUTAGE, 80, 1500),
      30_000,
    );
    assert.deepEqual(reply, { name: 'home', address: H.client.v4 });
    console.log(
      `gateway agent restarted: ${FIP_AFTER_OUTAGE} associated to home answered ${ms(performance.now() - restarted)} after the restart began`,
    );
    await answers();
    for (const node of ['home', 'home2']) assert.equal(agents.get(node)?.proc.exitCode, null);
  });
});
