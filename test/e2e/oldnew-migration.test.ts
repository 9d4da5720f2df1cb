/**
 * "Old server keeps the IP, new server serves it": the old server in datacenter A, whose
 * provider routes the pool to it, hands its public address over to a new server in datacenter B
 * (src/lab/scenarios.ts, `oldNew`). The gateway agent runs on the old server (SQLite store), the
 * new server's agent joins it with a join token and follows it over the http store; the address
 * is associated `routed` to the new server through the tunnel the two agents build.
 *
 * Shown on real packets: the old server answers on its address before the move, ipferry refuses
 * to take the address while the old server still holds it, and once the old server lets go the
 * address answers from the new server (TCP, UDP, ping, IPv4 and IPv6) with the client's real
 * address seen there; the new server's own address keeps its own provider, and connections it
 * opens from the moved address reach the client from that address. The client never sees a
 * tunnel address: not as a hop of a traceroute (built from `ping -t`, as neither traceroute nor
 * tracepath is installed), not as the source of anything it received (recorded by the lab's
 * nftables sets on the client, a capture without tcpdump), and datacenter B's source
 * validation (BCP 38) never had to drop an answer that took the wrong way.
 *
 * The same suite runs per tunnel driver: WireGuard now, tinc once the agent takes
 * `--tunnel-driver tinc`. Every process is killed and everything removed in `after`, also on
 * failure.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ApiClient } from '../../src/client/api-client.js';
import { TUNNEL_IFNAME_PREFIX } from '../../src/core/tunnel.js';
import { LabAgents } from '../../src/lab/agents.js';
import {
  bracketed,
  echoProbe,
  type EchoServer,
  outboundProbe,
  ping,
  socatAddress,
  startEchoServer,
} from '../../src/lab/probe.js';
import {
  OLD_NEW as O,
  oldNew,
  oldNewCounters,
  oldNewForgetSeen,
  oldNewSeen,
} from '../../src/lab/scenarios.js';
import type { Lab } from '../../src/lab/topology.js';
import { ensureBuilt } from '../support/build.js';
import { tempDir, waitFor } from '../support/helpers.js';

/** The old server's public address: the one that moves. */
const FIP = O.service.v4;
const FIP6 = O.service.v6;
const TUNNEL_PORTS = { old: 51820, new: 51821 } as const;
/** The client's echo server, for connections the new server opens. */
const CLIENT_TCP = 7000;
const CLIENT_UDP = 7001;
/** A UDP port nothing listens on at the new server: its answer is an ICMP error. */
const CLOSED_UDP = 9;

interface Driver {
  readonly name: string;
  /** Extra agent arguments, for both agents. */
  readonly args: readonly string[];
  readonly skip?: string;
}

const DRIVERS: readonly Driver[] = [
  { name: 'wireguard', args: [] },
  { name: 'tinc', args: ['--tunnel-driver', 'tinc'] },
];

// ---------------------------------------------------------------------------------------------
// Local probes (src/lab/probe.ts has none that report ICMP errors or bind a source address).

interface Ran {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * Runs a short command in a lab host without throwing for its exit code (a ping that got an
 * ICMP error exits 1, and that error is what we want to read). Bounded by `timeoutMs`.
 */
function run(
  lab: Lab,
  host: string,
  argv: readonly string[],
  options: { input?: string; timeoutMs?: number } = {},
): Promise<Ran> {
  const child = spawn('ip', ['netns', 'exec', lab.ns(host), ...argv], {
    stdio: [options.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  child.stdin?.on('error', () => undefined);
  if (options.input !== undefined) child.stdin?.end(options.input);
  const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 5000);
  return new Promise<Ran>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stdout, stderr }));
  }).finally(() => clearTimeout(timer));
}

/** `ping -6` for IPv6 addresses; `-t` is the TTL, or the hop limit for IPv6. */
function pingArgv(address: string, extra: readonly string[]): string[] {
  return ['ping', ...(address.includes(':') ? ['-6'] : []), '-n', '-c', '1', '-W', '1', ...extra];
}

/** "From X icmp_seq=1 Time to live exceeded" (IPv4), "… Time exceeded: Hop limit" (IPv6). */
const TIME_EXCEEDED = /^From (\S+) icmp_seq=\d+ Time(?: to live| exceeded)/m;
const REPLY = /^\d+ bytes from (\S+?):? icmp_seq=/m;
const ICMP_ERROR = /^From (\S+) icmp_seq=\d+ (.*)$/m;

interface Trace {
  /** The routers that answered "time exceeded", one per TTL ('*' when none did). */
  readonly hops: readonly string[];
  /** The source of the echo reply that ended the trace, if one came. */
  readonly reply?: string;
}

/** A traceroute from `host`: one `ping -t TTL` per TTL from 1 to `maxTtl`, until a reply. */
async function traceroute(lab: Lab, host: string, address: string, maxTtl = 8): Promise<Trace> {
  const hops: string[] = [];
  for (let ttl = 1; ttl <= maxTtl; ttl++) {
    const { stdout } = await run(lab, host, [...pingArgv(address, ['-t', String(ttl)]), address]);
    const reply = REPLY.exec(stdout)?.[1];
    if (reply !== undefined) return { hops, reply };
    hops.push(TIME_EXCEEDED.exec(stdout)?.[1] ?? '*');
  }
  return { hops };
}

/** One ping of `size` bytes of payload that routers must not fragment (IPv4 DF; IPv6 never). */
/**
 * One DF ping of `size` bytes, asked again (for up to 5 s) while nothing at all comes back: the
 * tests judge what answers — the address, or which ICMP error from whom — and a single packet
 * lost while tinc's own path MTU discovery settles is not that.
 */
async function dfPing(lab: Lab, host: string, address: string, size: number): Promise<string> {
  const df = address.includes(':') ? [] : ['-M', 'do'];
  const argv = [...pingArgv(address, [...df, '-s', String(size)]), address];
  const deadline = Date.now() + 5000;
  for (;;) {
    const { stdout } = await run(lab, host, argv);
    if (REPLY.test(stdout) || ICMP_ERROR.test(stdout) || Date.now() > deadline) return stdout;
    await sleep(200);
  }
}

/**
 * A connection (TCP) or datagram (UDP) `host` opens from the source address `bind` to the echo
 * server at `address`:`port`; returns the echo line (`NAME SOURCE-IT-SAW`), or undefined.
 */
async function fromAddress(
  lab: Lab,
  host: string,
  protocol: 'tcp' | 'udp',
  bind: string,
  address: string,
  port: number,
): Promise<string | undefined> {
  const options = [`bind=${bracketed(bind)}`, ...(protocol === 'tcp' ? ['connect-timeout=2'] : [])];
  const target = [socatAddress(protocol, address, port), ...options].join(',');
  // UDP: stdin ends after the datagram, and socat waits -t for the answer before it exits.
  const argv = ['socat', '-t', '1.5', '-T', '2', 'STDIO', target];
  const { stdout } = await run(lab, host, argv, { input: 'hello\n', timeoutMs: 6000 });
  return stdout === '' ? undefined : stdout;
}

/** Addresses (without prefix length) of the `ipf*` tunnel interfaces of a lab host. */
async function tunnelAddresses(lab: Lab, host: string): Promise<string[]> {
  interface Link {
    ifname: string;
    addr_info?: { local?: string }[];
  }
  const { stdout } = await lab.exec(host, ['ip', '-j', 'address', 'show']);
  return (JSON.parse(stdout || '[]') as Link[])
    .filter((l) => l.ifname.startsWith(TUNNEL_IFNAME_PREFIX))
    .flatMap((l) => (l.addr_info ?? []).flatMap((a) => a.local ?? []));
}

/** The MTUs of the `ipf*` tunnel interfaces of a lab host. */
async function tunnelMtus(lab: Lab, host: string): Promise<number[]> {
  const { stdout } = await lab.exec(host, ['ip', '-j', 'link', 'show']);
  return (JSON.parse(stdout || '[]') as { ifname: string; mtu: number }[])
    .filter((l) => l.ifname.startsWith(TUNNEL_IFNAME_PREFIX))
    .map((l) => l.mtu);
}

/** Every address of the lab's cables: the only addresses a hop may have. */
function publicLinkAddresses(lab: Lab): Set<string> {
  return new Set(
    lab.links.flatMap((l) => [l.a, l.b]).flatMap((e) => (e.addresses ?? []).map(stripPrefix)),
  );
}

function stripPrefix(cidr: string): string {
  return cidr.split('/')[0] ?? cidr;
}

/** Addresses no client on the internet may ever see: link-local, private (the tunnels' kind). */
const INTERNAL = /^(169\.254\.|10\.|fe80:)/i;

// ---------------------------------------------------------------------------------------------

function oldToNew(driver: Driver): void {
  const title = `old server to new server over ${driver.name}: the IP answers from the new server`;
  describe(title, driver.skip === undefined ? {} : { skip: driver.skip }, () => {
    let lab: Lab;
    let tmp: { dir: string; remove: () => Promise<void> };
    let api: ApiClient;
    let clientServer: EchoServer;
    /** Every agent this suite starts: killed by pid in `after`. */
    let agents: LabAgents;

    async function state(address: string): Promise<{ state: string; message: string }> {
      const f = await api.getFip(address);
      const current = f.status.revision === f.revision;
      return { state: current ? f.status.state : 'PENDING', message: f.status.message ?? '' };
    }

    /**
     * The move of one address: associate it routed to `new` (refused while the old server still
     * holds it), then the old server lets go of it, and it must answer from `new`.
     */
    async function move(address: string, client: string): Promise<void> {
      const host = `${address}/${address.includes(':') ? 128 : 32}`;
      await api.allocate({ address });
      await api.associate(address, { mode: 'routed', node: 'new', target: address });
      // ipferry does not take an address the old server still answers on.
      const refused = await waitFor(
        `${address} refused while the old server holds it`,
        async () => {
          const s = await state(address);
          return s.state === 'ERROR' && s.message;
        },
        15_000,
      );
      assert.match(refused, /address of the gateway itself/);
      assert.deepEqual(await echoProbe(lab, 'client', 'tcp', address, O.service.tcp), {
        name: 'old',
        address: client,
      });
      // The cut-over: the old server's service lets go of its address.
      await lab.exec('old', ['ip', 'address', 'del', host, 'dev', O.service.ifname]);
      // The gateway sees the address gone on its next pass (at the latest on the 1 s resync).
      await waitFor(
        `${address} ACTIVE`,
        async () => (await state(address)).state === 'ACTIVE',
        15_000,
      );
      const reply = await waitFor(
        `${address} answering from the new server`,
        async () => {
          const r = await echoProbe(lab, 'client', 'tcp', address, O.service.tcp, 1500);
          return r?.name === 'new' && r;
        },
        20_000,
      );
      assert.deepEqual(reply, { name: 'new', address: client });
    }

    before(async () => {
      await ensureBuilt();
      tmp = await tempDir(`oldnew-${driver.name}`);
      lab = await oldNew();
      agents = new LabAgents({ lab, dir: tmp.dir, extra: driver.args });
      clientServer = await startEchoServer(lab, 'client', {
        tcp: [CLIENT_TCP],
        udp: [CLIENT_UDP],
      });
      // The new server's TCP service listens on every address, the moved one included.
      await startEchoServer(lab, 'new', { tcp: [O.service.tcp] });
      ({ api } = await agents.startHub('old', {
        endpoint: { address: O.old.uplink.v4, port: TUNNEL_PORTS.old },
      }));
      // A server in a datacenter has a public address: the old server may call it too.
      await agents.join('new', {
        api,
        extra: [
          '--endpoint',
          `${O.new.v4}:${TUNNEL_PORTS.new}`,
          '--tunnel-port',
          String(TUNNEL_PORTS.new),
        ],
      });
      await api.createPool({
        name: 'old-dc',
        gateway: 'old',
        entries: ['203.0.113.0/28', '2001:db8:f::/64'],
      });
    });

    after(async () => {
      await agents?.teardown();
      await tmp?.remove();
    });

    it('before the move the old server answers on its address, also with the gateway agent running', async () => {
      for (const [address, client] of [
        [FIP, O.client.v4],
        [FIP6, O.client.v6],
      ] as const) {
        assert.deepEqual(await echoProbe(lab, 'client', 'tcp', address, O.service.tcp), {
          name: 'old',
          address: client,
        });
        assert.deepEqual(await echoProbe(lab, 'client', 'udp', address, O.service.udp), {
          name: 'old',
          address: client,
        });
        assert.ok(await ping(lab, 'client', address), `ping ${address}`);
      }
      // The old server is the last hop: nothing between it and the client but up.
      assert.deepEqual(await traceroute(lab, 'client', FIP), {
        hops: [O.up.toClient.v4],
        reply: FIP,
      });
    });

    it('moves the IPv4 address: TCP, UDP and ping answer from the new server, which sees the client', async () => {
      await move(FIP, O.client.v4);
      // UDP services answer from the address they were asked on (bound to it).
      await startEchoServer(lab, 'new', { name: 'new', udp: [O.service.udp], bind: [FIP] });
      assert.deepEqual(await echoProbe(lab, 'client', 'udp', FIP, O.service.udp), {
        name: 'new',
        address: O.client.v4,
      });
      // The old server no longer holds the address: only the new server can answer a ping.
      assert.ok(await ping(lab, 'client', FIP), `ping ${FIP}`);
    });

    it('moves the IPv6 address the same way', async () => {
      await move(FIP6, O.client.v6);
      await startEchoServer(lab, 'new', { name: 'new', udp: [O.service.udp], bind: [FIP6] });
      assert.deepEqual(await echoProbe(lab, 'client', 'udp', FIP6, O.service.udp), {
        name: 'new',
        address: O.client.v6,
      });
      assert.ok(await ping(lab, 'client', FIP6), `ping ${FIP6}`);
    });

    it('keeps the new server’s own address on its own provider', async () => {
      for (const [own, client] of [
        [O.new.v4, O.client.v4],
        [O.new.v6, O.client.v6],
      ] as const) {
        assert.deepEqual(await echoProbe(lab, 'client', 'tcp', own, O.service.tcp), {
          name: 'new',
          address: client,
        });
        assert.equal(await outboundProbe(lab, 'new', clientServer, client), own);
      }
    });

    it('connections the new server opens from the moved address reach the client from it', async () => {
      for (const [source, client] of [
        [FIP, O.client.v4],
        [FIP6, O.client.v6],
      ] as const) {
        const tcp = await fromAddress(lab, 'new', 'tcp', source, client, CLIENT_TCP);
        assert.equal(tcp, `client ${source}\n`, `TCP from ${source}`);
        const udp = await fromAddress(lab, 'new', 'udp', source, client, CLIENT_UDP);
        assert.equal(udp, `client ${source}\n`, `UDP from ${source}`);
      }
    });

    it('never shows the client a tunnel address: not as a hop, not as a source', async () => {
      const internal = new Set([
        ...(await tunnelAddresses(lab, 'old')),
        ...(await tunnelAddresses(lab, 'new')),
      ]);
      // The moved addresses sit on the new server's tunnel: they are the point, not internals.
      internal.delete(FIP);
      internal.delete(FIP6);
      assert.ok(internal.size > 0, 'the tunnels have no address of their own to look for');
      const mtu = Math.min(...(await tunnelMtus(lab, 'old')), ...(await tunnelMtus(lab, 'new')));
      assert.ok(Number.isFinite(mtu), 'no tunnel interface');
      // The client's neighbour on its own link talks NDP from its link-local address.
      const upLinkLocal = (await interfaceAddresses(lab, 'up', O.up.toClient.ifname)).filter((a) =>
        a.startsWith('fe80:'),
      );
      const notInternal = (what: string, addresses: readonly string[]): void => {
        for (const a of addresses) {
          assert.ok(!internal.has(a), `${what}: the tunnel address ${a}`);
          if (!upLinkLocal.includes(a)) assert.doesNotMatch(a, INTERNAL, what);
        }
      };

      // Everything the client received since the lab was built (the old server's answers,
      // both moves, the new server's own address, its connections from the moved ones): the
      // lab's public addresses and the moved ones only.
      const allowed = publicLinkAddresses(lab);
      const sofar = await oldNewSeen(lab);
      const everSeen = [...sofar.v4, ...sofar.v6];
      notInternal('seen by the client during the run', everSeen);
      assert.deepEqual(
        everSeen.filter(
          (a) => !allowed.has(a) && a !== FIP && a !== FIP6 && !upLinkLocal.includes(a),
        ),
        [],
        `the client saw ${everSeen.join(', ')}`,
      );

      // From here on: only what the moved addresses' traffic brings, looked at alone.
      const counters = await oldNewCounters(lab);
      await oldNewForgetSeen(lab);

      // Traceroutes: up, then the old server (which forwards into the tunnel), then the
      // address itself. The tunnel is no hop; the new server delivers locally.
      const traces = {
        v4: await traceroute(lab, 'client', FIP),
        v6: await traceroute(lab, 'client', FIP6),
      };
      for (const trace of [traces.v4, traces.v6]) {
        const path = [...trace.hops, trace.reply ?? '(no reply)'].join(' → ');
        console.log(`${driver.name}: traceroute client → ${trace.reply ?? '?'}: ${path}`);
      }
      assert.deepEqual(traces.v4, { hops: [O.up.toClient.v4, O.old.uplink.v4], reply: FIP });
      assert.deepEqual(traces.v6, { hops: [O.up.toClient.v6, O.old.uplink.v6], reply: FIP6 });

      // The path's MTU: what the tunnel's MTU promises passes unfragmented, one byte more gets
      // "fragmentation needed" / "packet too big" — from the old server's public address.
      const errors: string[] = [];
      for (const [address, header] of [
        [FIP, 28],
        [FIP6, 48],
      ] as const) {
        const fits = await dfPing(lab, 'client', address, mtu - header);
        const own = ICMP_ERROR.exec(fits);
        const oldPublic = address === FIP ? O.old.uplink.v4 : O.old.uplink.v6;
        if (driver.name === 'tinc' && own && (own[1] === address || own[1] === oldPublic)) {
          // tinc's own path MTU discovery settles a few bytes below the tap's MTU and answers
          // what it cannot carry whole with "fragmentation needed" in the name of the
          // destination itself; once the agents' probes found that size, the old server's
          // route says it, from its public address. Never a tunnel address.
          assert.match(own[2] ?? '', /Frag needed|Packet too big/, fits);
          errors.push(own[1]);
          continue;
        }
        assert.equal(REPLY.exec(fits)?.[1], address, `${mtu}-byte ping of ${address}: ${fits}`);
        const tooBig = await dfPing(lab, 'client', address, mtu - header + 1);
        const error = ICMP_ERROR.exec(tooBig);
        assert.ok(error, `${mtu + 1}-byte ping of ${address} got no ICMP error: ${tooBig}`);
        assert.match(error[2] ?? '', /Frag needed|Packet too big/, tooBig);
        assert.equal(error[1], address === FIP ? O.old.uplink.v4 : O.old.uplink.v6);
        errors.push(error[1] ?? '');
      }

      // Everything else the new server sends the client: answers over TCP and UDP, pings,
      // connections it opens, and an ICMP error for a closed port — from the moved address.
      for (const [address, client] of [
        [FIP, O.client.v4],
        [FIP6, O.client.v6],
      ] as const) {
        assert.equal((await echoProbe(lab, 'client', 'tcp', address, O.service.tcp))?.name, 'new');
        assert.equal((await echoProbe(lab, 'client', 'udp', address, O.service.udp))?.name, 'new');
        assert.ok(await ping(lab, 'client', address));
        assert.equal(
          await fromAddress(lab, 'new', 'tcp', address, client, CLIENT_TCP),
          `client ${address}\n`,
        );
        const closed = await run(
          lab,
          'client',
          ['socat', '-T', '2', 'STDIO', socatAddress('udp', address, CLOSED_UDP)],
          { input: 'x\n' },
        );
        assert.match(closed.stderr, /Connection refused/, `UDP to a closed port of ${address}`);
      }

      const seen = await oldNewSeen(lab);
      const expected = new Set<string>([
        FIP,
        FIP6,
        ...traces.v4.hops,
        ...traces.v6.hops,
        ...errors,
      ]);
      const unexpected = [...seen.v4, ...seen.v6].filter(
        (a) => !expected.has(a) && !upLinkLocal.includes(a),
      );
      assert.deepEqual(unexpected, [], `the client saw ${[...seen.v4, ...seen.v6].join(', ')}`);
      assert.ok(seen.v4.includes(FIP) && seen.v6.includes(FIP6), 'the moved addresses were seen');
      notInternal('traceroute hops', [...traces.v4.hops, ...traces.v6.hops]);
      notInternal('seen by the client', [...seen.v4, ...seen.v6]);
      // No answer tried to leave by the new server's own provider.
      assert.deepEqual(await oldNewCounters(lab), counters);
    });
  });
}

/** Addresses of one interface of a lab host. */
async function interfaceAddresses(lab: Lab, host: string, ifname: string): Promise<string[]> {
  const { stdout } = await lab.exec(host, ['ip', '-j', 'address', 'show', 'dev', ifname]);
  return (JSON.parse(stdout || '[]') as { addr_info?: { local?: string }[] }[]).flatMap((l) =>
    (l.addr_info ?? []).flatMap((a) => a.local ?? []),
  );
}

for (const driver of DRIVERS) oldToNew(driver);
