/**
 * The "small cloud VM as the public router of a home server" migration, end to end, as an
 * operator does it with the CLI, on a real kernel in the cloudHome lab (src/lab/scenarios.ts):
 *
 *   client — up ─┬─ gw   (the cloud VM: one public address, 192.0.2.2; the provider routes
 *                │        203.0.113.0/24 and 2001:db8:f::/48 to it)
 *                └─ isp — home   (the home server: its own address 198.18.0.10 from its ISP,
 *                                 which validates sources)
 *
 * 1. The gateway agent runs on gw (SQLite store); home's agent joins it with a join token made by
 *    `ipferry node join-token create`, and the two build a WireGuard tunnel (wireguard-go).
 * 2. On the VM's single public address, one forward per port (tcp 25, 53, 465, 587, udp 53) to
 *    home's own address: each reaches home, which sees the client's real address (no masquerade:
 *    home's answers go back through the tunnel by Linux's reply-to, although its default route
 *    stays its ISP). Other ports are not forwarded; home's own address keeps answering through
 *    its ISP meanwhile, and home's own outbound traffic leaves there with its own address.
 * 3. A routed IPv6 FIP of the pool 2001:db8:f::/48 and a routed IPv4 FIP, delivered unchanged
 *    to home through the tunnel; home sees the client's IPv6 address.
 * 4. Through the routed IPv4 FIP, the routed IPv6 FIP and forwarded tcp 587: a 1,900-byte payload
 *    (as large as a post-quantum TLS ClientHello) and 64 KiB, each sent by the client in one
 *    write and echoed by home in one write over the same connection, arrive intact both ways.
 *
 * The second suite does step 4 over an MTU black hole between isp and home (blackholeMtu 1380):
 * the agents probe each other through the tunnel, find the largest packet that passes and lower
 * the routes' MTU to it (the MSS clamp follows); without that, every payload check fails.
 *
 * Agents are killed by pid, the lab destroyed and its wireguard sockets removed in `after`, also
 * when a step fails; `after` then checks that no namespace of the lab is left.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import type { FipView, ForwardView, NodeListView } from '../../src/api/contract.js';
import type { ApiClient } from '../../src/client/api-client.js';
import { randomPrefix } from '../../src/lab/netns.js';
import {
  echoProbe,
  type EchoServer,
  outboundProbe,
  randomPayload,
  startEchoServer,
  startPayloadEchoServer,
  tcpExchange,
} from '../../src/lab/probe.js';
import { CLOUD_HOME as H, type CloudHomeOptions } from '../../src/lab/scenarios.js';
import type { Lab } from '../../src/lab/topology.js';
import {
  activeAt as activeAtHub,
  type CloudHomeHub,
  ipferryAt,
  startCloudHomeHub,
  stopCloudHomeHub,
  TUNNEL_PORTS,
} from '../support/cloudhome-hub.js';
import { waitFor } from '../support/helpers.js';

/** The VM's single public address: the pool's shared address, only port forwards go there. */
const SHARED = H.gw.uplink.v4;
const FIP4 = '203.0.113.10';
const FIP6 = '2001:db8:f::10';
const POOL = { v4: '203.0.113.0/28', v6: H.pool.v6 } as const;

/** The ports the issue forwards from the VM to the home server (mail and DNS). */
const FORWARDS = [
  { protocol: 'tcp', port: 25 },
  { protocol: 'tcp', port: 53 },
  { protocol: 'tcp', port: 465 },
  { protocol: 'tcp', port: 587 },
  { protocol: 'udp', port: 53 },
] as const;
/** The forwarded port the large payloads go through (its echo server gives way to theirs). */
const PAYLOAD_FORWARD = 587;
/** home listens here too, but nothing forwards them: they must stay dark on SHARED. */
const UNFORWARDED = { tcp: 80, udp: 5353 } as const;
/** The payload echo server for the routed FIPs (they deliver every port). */
const PAYLOAD_PORT = 9000;
const SIZES = [
  { what: 'a single 1,900-byte payload', bytes: 1900 },
  { what: '64 KiB', bytes: 64 * 1024 },
] as const;
/** The path of the second suite: what passes between isp and home. */
const BLACKHOLE_MTU = 1380;

/** Everything one migration set up, filled as it goes so `tearDown` removes what exists. */
interface Migration extends CloudHomeHub {
  clientServer?: EchoServer;
  /** home's echo server on the forwarded port the payloads later use. */
  payloadForwardEcho?: EchoServer;
}

function lab(m: Migration): Lab {
  assert.ok(m.lab, 'the lab was not built');
  return m.lab;
}

function api(m: Migration): ApiClient {
  assert.ok(m.api, 'the gateway agent is not running');
  return m.api;
}

/** Runs the CLI against the gateway agent, as the operator on the VM would; its stdout. */
const ipferry = ipferryAt;

async function ipferryJson<T>(m: Migration, args: readonly string[]): Promise<T> {
  return JSON.parse(await ipferry(m, [...args, '--json'])) as T;
}

/**
 * The lab, home's servers, the gateway agent with the pool, and home's agent joined with a join
 * token: where the operator stands before moving any address.
 */
async function setUp(
  m: Migration,
  options: Omit<CloudHomeOptions, 'prefix'> & { readonly underlay?: 4 | 6 },
): Promise<void> {
  const { underlay = 4, ...labOptions } = options;
  const tcp = FORWARDS.filter((f) => f.protocol === 'tcp' && f.port !== PAYLOAD_FORWARD);
  const udp = FORWARDS.filter((f) => f.protocol === 'udp');
  await startCloudHomeHub(m, {
    lab: labOptions,
    underlay,
    // Probe the tunnel every second: a dead path shows within seconds.
    agentFlags: ['--probe-seconds', '1'],
    pool: ['--cidr', POOL.v4, '--cidr', POOL.v6, '--shared', SHARED],
    beforeAgents: async (lab) => {
      [m.clientServer, , m.payloadForwardEcho] = await Promise.all([
        startEchoServer(lab, 'client', { tcp: [80] }),
        startEchoServer(lab, 'home', {
          tcp: [...tcp.map((f) => f.port), UNFORWARDED.tcp],
          udp: [...udp.map((f) => f.port), UNFORWARDED.udp],
        }),
        // Its own process, so the payload server can take the port over later.
        startEchoServer(lab, 'home', { tcp: [PAYLOAD_FORWARD] }),
      ]);
    },
  });
}

const tearDown = stopCloudHomeHub;

function activeAt(m: Migration, address: string): Promise<FipView> {
  return activeAtHub(m, address, 15_000);
}

/** Step 2 as the operator types it: the VM's own address, one forward per port to home. */
async function forwardPorts(m: Migration): Promise<void> {
  await ipferry(m, ['fip', 'allocate', '--address', SHARED]);
  for (const f of FORWARDS) {
    await ipferry(m, [
      'forward',
      'add',
      SHARED,
      '--proto',
      f.protocol,
      '--port',
      String(f.port),
      '--target',
      H.home.v4,
      '--node',
      'home',
      '--description',
      `${f.protocol} ${f.port} to the home server`,
    ]);
  }
  await activeAt(m, SHARED);
}

/** Step 3: two addresses of the routed pool, delivered unchanged to home. */
async function routeFips(m: Migration): Promise<void> {
  for (const fip of [FIP4, FIP6]) {
    await ipferry(m, ['fip', 'allocate', '--pool', 'public', '--address', fip]);
    await ipferry(m, [
      'fip',
      'associate',
      fip,
      '--mode',
      'routed',
      '--node',
      'home',
      '--target',
      fip,
    ]);
  }
  await activeAt(m, FIP4);
  await activeAt(m, FIP6);
}

/** The client asks home's echo server at `address`; waits for the tunnel's first handshake. */
async function firstAnswer(m: Migration, protocol: 'tcp' | 'udp', address: string, port: number) {
  return waitFor(
    `${protocol} ${address} port ${port} answering`,
    async () => echoProbe(lab(m), 'client', protocol, address, port, 1500),
    15_000,
  );
}

const sha256 = (text: string): string => createHash('sha256').update(text).digest('hex');

/** What came back is exactly what was sent: same length (said first, as it reads best), same bytes. */
function assertIntact(got: string | undefined, sent: string, what: string): void {
  assert.ok(got !== undefined, `${what}: nothing came back`);
  assert.equal(got.length, sent.length, `${what}: ${got.length} of ${sent.length} bytes came back`);
  assert.equal(sha256(got), sha256(sent), `${what}: the bytes that came back differ`);
}

/**
 * Step 4's claims, one `it` per target and size: the client sends the payload in one write and
 * half-closes; home's payload echo server takes all of it, then writes it back in one write over
 * the same connection. Getting back exactly the random bytes sent proves both directions.
 */
function payloadClaims(m: Migration): void {
  before(async () => {
    // The payload server takes over the forwarded port from its echo server.
    await m.payloadForwardEcho?.stop();
    await startPayloadEchoServer(lab(m), 'home', PAYLOAD_FORWARD);
    await startPayloadEchoServer(lab(m), 'home', PAYLOAD_PORT);
  });

  const targets = [
    { what: `the routed IPv4 FIP ${FIP4}`, address: FIP4, port: PAYLOAD_PORT },
    { what: `the routed IPv6 FIP ${FIP6}`, address: FIP6, port: PAYLOAD_PORT },
    {
      what: `tcp ${PAYLOAD_FORWARD} forwarded on ${SHARED}`,
      address: SHARED,
      port: PAYLOAD_FORWARD,
    },
  ] as const;
  for (const target of targets) {
    for (const size of SIZES) {
      it(`${size.what} client → home → client through ${target.what}`, async () => {
        const payload = randomPayload(size.bytes);
        const got = await tcpExchange(lab(m), 'client', target.address, target.port, payload, 8000);
        assertIntact(got, payload, `${size.bytes} bytes through ${target.what}`);
      });
    }
  }
}

/**
 * The path MTU `node`'s agent found toward `peer` through their tunnel, from its node view;
 * undefined while it has found none (or found the whole tunnel MTU passing).
 */
function reportedPathMtu(view: NodeListView, peer: string): number | undefined {
  return view.tunnel?.peers.find((p) => p.node === peer)?.probe?.pathMtu;
}

/**
 * Waits (bounded) until `ipferry node show NODE --json` reports the path MTU of its tunnel to
 * `peer` lowered to `atMost` or less — what the route MTU, and the MSS clamp after it, then
 * follow. Home's view is the one that matters first: the gateway's routes toward home follow
 * its own search, which the payload checks then exercise.
 */
async function waitForTunnelPathMtuLowered(
  m: Migration,
  node: string,
  peer: string,
  atMost: number,
  timeoutMs = 30_000,
): Promise<number> {
  return waitFor(
    `the path MTU of ${node}'s tunnel to ${peer} lowered to ${atMost} or less`,
    async () => {
      const view = await ipferryJson<NodeListView>(m, ['node', 'show', node]);
      const mtu = reportedPathMtu(view, peer);
      return mtu !== undefined && mtu <= atMost ? mtu : undefined;
    },
    timeoutMs,
  );
}

describe(
  'the cloud VM becomes the home server’s public router, with the CLI',
  { timeout: 120_000 },
  () => {
    const m: Migration = { prefix: randomPrefix() };
    before(() => setUp(m, {}), { timeout: 90_000 });
    after(() => tearDown(m), { timeout: 60_000 });

    describe('1. the agents', () => {
      it('home’s agent joined the VM’s with a join token and registered its tunnel key', async () => {
        const nodes = await ipferryJson<NodeListView[]>(m, ['node', 'list']);
        assert.deepEqual(nodes.map((n) => n.name).sort(), ['gw', 'home']);
        const home = await ipferryJson<NodeListView>(m, ['node', 'show', 'home']);
        assert.equal(home.alive, true);
        assert.match(home.publicKey ?? '', /^[A-Za-z0-9+/]{43}=$/);
      });
    });

    describe('2. port forwards on the VM’s single public address', () => {
      it('tcp 25, 53, 465, 587 and udp 53 on 192.0.2.2 reach home, which sees the client', async () => {
        await forwardPorts(m);
        const forwards = await ipferryJson<ForwardView[]>(m, ['forward', 'list', SHARED]);
        assert.deepEqual(
          forwards.map((f) => `${f.protocol}/${f.port} → ${f.target}:${f.targetPort} on ${f.node}`),
          FORWARDS.map((f) => `${f.protocol}/${f.port} → ${H.home.v4}:${f.port} on home`),
        );
        for (const f of FORWARDS) {
          assert.deepEqual(
            await firstAnswer(m, f.protocol, SHARED, f.port),
            { name: 'home', address: H.client.v4 },
            `${f.protocol} ${f.port}`,
          );
        }
      });

      it('other ports of 192.0.2.2 are not forwarded, although home listens on them', async () => {
        const lb = lab(m);
        assert.equal(await echoProbe(lb, 'client', 'tcp', SHARED, UNFORWARDED.tcp, 800), undefined);
        assert.equal(await echoProbe(lb, 'client', 'udp', SHARED, UNFORWARDED.udp, 800), undefined);
        // Home does listen there: directly, on its own address, they answer.
        assert.deepEqual(await echoProbe(lb, 'client', 'tcp', H.home.v4, UNFORWARDED.tcp), {
          name: 'home',
          address: H.client.v4,
        });
        assert.deepEqual(await echoProbe(lb, 'client', 'udp', H.home.v4, UNFORWARDED.udp), {
          name: 'home',
          address: H.client.v4,
        });
      });

      it('meanwhile home’s own address answers through its ISP, and home’s outbound leaves there', async () => {
        const lb = lab(m);
        const client = { name: 'home', address: H.client.v4 };
        // The same services on home's own address: these answers leave by home's default route.
        assert.deepEqual(await echoProbe(lb, 'client', 'tcp', H.home.v4, 25), client);
        assert.deepEqual(await echoProbe(lb, 'client', 'udp', H.home.v4, 53), client);
        const server = m.clientServer;
        assert.ok(server);
        assert.equal(await outboundProbe(lb, 'home', server, H.client.v4), H.home.v4);
        assert.equal(await outboundProbe(lb, 'home', server, H.client.v6), H.home.v6);
      });
    });

    describe('3. routed floating IPs', () => {
      it('a routed IPv6 FIP of 2001:db8:f::/48 and a routed IPv4 FIP reach home, which sees the client', async () => {
        await routeFips(m);
        const fips = await ipferryJson<FipView[]>(m, ['fip', 'list']);
        for (const fip of [FIP4, FIP6]) {
          const view = fips.find((f) => f.address === fip);
          assert.equal(view?.association?.mode, 'routed', fip);
          assert.equal(view?.association?.node, 'home', fip);
          assert.equal(view?.status.state, 'ACTIVE', fip);
        }
        assert.deepEqual(await firstAnswer(m, 'tcp', FIP6, UNFORWARDED.tcp), {
          name: 'home',
          address: H.client.v6,
        });
        assert.deepEqual(await firstAnswer(m, 'tcp', FIP4, UNFORWARDED.tcp), {
          name: 'home',
          address: H.client.v4,
        });
        // Home's own traffic still leaves by its ISP with its own address.
        const server = m.clientServer;
        assert.ok(server);
        assert.equal(await outboundProbe(lab(m), 'home', server, H.client.v6), H.home.v6);
      });
    });

    describe('4. large payloads both ways through the tunnel', () => {
      payloadClaims(m);
    });

    describe('5. health', () => {
      it('a dead tunnel path makes the FIPs behind it UNREACHABLE, and ACTIVE again when it heals', async () => {
        const fipState = async (address: string) => (await api(m).getFip(address)).status;
        assert.equal((await fipState(FIP4)).state, 'ACTIVE');
        // The ISP starts dropping the tunnel's packets (both directions, both families).
        await lab(m).exec('isp', ['nft', '-f', '-'], {
          input: `table inet lab_cut {
  chain forward {
    type filter hook forward priority -10; policy accept;
    udp dport { ${TUNNEL_PORTS.gw}, ${TUNNEL_PORTS.home} } drop
    udp sport { ${TUNNEL_PORTS.gw}, ${TUNNEL_PORTS.home} } drop
  }
}
`,
        });
        const dead = await waitFor(
          `${FIP4} UNREACHABLE`,
          async () => {
            const s = await fipState(FIP4);
            return s.state === 'UNREACHABLE' ? s : undefined;
          },
          30_000,
        );
        assert.match(dead.message ?? '', /no answer through the tunnel to home/);
        assert.equal((await fipState(FIP6)).state, 'UNREACHABLE');
        // The forwards on the shared address go to home through the same tunnel.
        assert.equal((await fipState(SHARED)).state, 'UNREACHABLE');
        // The liveness record that carries the probes is refreshed every 5 s.
        const probe = await waitFor(
          'node show gw: home dead',
          async () => {
            const view = await ipferryJson<NodeListView>(m, ['node', 'show', 'gw']);
            const found = view.tunnel?.peers.find((p) => p.node === 'home')?.probe;
            return found?.alive === false ? found : undefined;
          },
          15_000,
        );
        assert.match(probe.note ?? '', /no answer through the tunnel/);
        await lab(m).exec('isp', ['nft', 'delete', 'table', 'inet', 'lab_cut']);
        await waitFor(
          `${FIP4} ACTIVE again`,
          async () => (await fipState(FIP4)).state === 'ACTIVE',
          30_000,
        );
        assert.deepEqual(await firstAnswer(m, 'tcp', FIP4, UNFORWARDED.tcp), {
          name: 'home',
          address: H.client.v4,
        });
      });
    });
  },
);

describe(
  'the same over an IPv6 underlay: home reaches the VM at [2001:db8:1::2]',
  { timeout: 120_000 },
  () => {
    const m: Migration = { prefix: randomPrefix() };
    before(
      async () => {
        await setUp(m, { underlay: 6 });
        await forwardPorts(m);
        await routeFips(m);
      },
      { timeout: 90_000 },
    );
    after(() => tearDown(m), { timeout: 60_000 });

    it('home’s tunnel peer is the VM’s IPv6 endpoint, and the tunnel MTU leaves room for IPv6', async () => {
      // Home's liveness record, which carries its tunnel, is refreshed every 5 s.
      const endpoint = await waitFor(
        'node show home: its tunnel to gw',
        async () => {
          const home = await ipferryJson<NodeListView>(m, ['node', 'show', 'home']);
          return home.tunnel?.peers.find((p) => p.node === 'gw')?.endpoint;
        },
        15_000,
      );
      assert.equal(endpoint, `[${H.gw.uplink.v6}]:${TUNNEL_PORTS.gw}`);
      const links = await lab(m).exec('home', ['ip', '-j', 'link', 'show']);
      const tunnel = (JSON.parse(links.stdout) as { ifname: string; mtu: number }[]).find((l) =>
        l.ifname.startsWith('ipf'),
      );
      // 1500 − 80 (IPv6 40, UDP 8, WireGuard 32).
      assert.equal(tunnel?.mtu, 1420);
      assert.deepEqual(await firstAnswer(m, 'tcp', FIP4, UNFORWARDED.tcp), {
        name: 'home',
        address: H.client.v4,
      });
      assert.deepEqual(await firstAnswer(m, 'tcp', FIP6, UNFORWARDED.tcp), {
        name: 'home',
        address: H.client.v6,
      });
    });

    payloadClaims(m);
  },
);

describe(
  `the same over an MTU black hole of ${BLACKHOLE_MTU} between isp and home`,
  { timeout: 150_000 },
  () => {
    const m: Migration = { prefix: randomPrefix() };
    before(
      async () => {
        await setUp(m, { blackholeMtu: BLACKHOLE_MTU });
        await forwardPorts(m);
        await routeFips(m);
        await firstAnswer(m, 'tcp', FIP4, UNFORWARDED.tcp);
        // The tunnel's outer packets carry 60 bytes of IPv4, UDP and WireGuard headers.
        const mtu = await waitForTunnelPathMtuLowered(m, 'home', 'gw', BLACKHOLE_MTU - 60);
        console.log(`home's tunnel to gw over a ${BLACKHOLE_MTU}-byte path: path MTU ${mtu}`);
      },
      { timeout: 120_000 },
    );
    after(() => tearDown(m), { timeout: 60_000 });

    payloadClaims(m);
  },
);
