/**
 * Real clients over a real home path, through every way a FIP reaches a home server behind a
 * tunnel: Debian's chromium (headless) loads an HTTPS page and curl uploads 1 MB, each exactly
 * once, right after the FIP shows ACTIVE — no retry, no waiting for the path search.
 *
 *   client — up ─┬─ gw   (the cloud VM: hub agent, TLS-less API on its namespace, --endpoint)
 *                └─ isp — home   (the home server, joined by a join token)
 *
 * The path between gw and home carries 1,380 bytes, loses IP fragments and every ICMP "too
 * big" (on isp and on up, a router on the way), with the bottleneck
 * - `uplink`: on home's own cable (home's routes say 1380, as on PPPoE/DSL), or
 * - `path`: on isp toward home, which neither end can see (both keep MTU 1500).
 * Over WireGuard and over tinc. The three targets, each on home's HTTPS server (port 443):
 * - a routed FIP (203.0.113.10), delivered unchanged;
 * - a port forward on the VM's own address (tcp 8443 → home's own address, port 443);
 * - 1:1 NAT of a FIP (203.0.113.11) to home's own address through the tunnel;
 * - over IPv6, a routed FIP and a port forward on the VM's own IPv6 address.
 * The browser's ClientHello (~1,900 bytes, post-quantum key share) and the upload's full-sized
 * segments go client → home: they pass only when the MSS the client is told fits the tunnel's
 * path, and only once the path has been measured. Home sees the client's own address each time.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import {
  browserLoad,
  curlUpload,
  httpsUrl,
  makeCertificate,
  startWebServer,
} from '../../src/lab/clients.js';
import { randomPrefix } from '../../src/lab/netns.js';
import { CLOUD_HOME as H, setCloudHomeBlackhole } from '../../src/lab/scenarios.js';
import {
  activeAt as active,
  type CloudHomeHub,
  ipferryAt as ipferry,
  startCloudHomeHub,
  stopCloudHomeHub,
} from '../support/cloudhome-hub.js';
import { waitFor } from '../support/helpers.js';

const SHARED = H.gw.uplink.v4;
const SHARED6 = H.gw.uplink.v6;
const ROUTED = '203.0.113.10';
const ROUTED6 = '2001:db8:f::10';
const NAT = '203.0.113.11';
const HTTPS = 443;
const FORWARDED = 8443;
const UPLOAD_BYTES = 1024 * 1024;
const PATH_MTU = 1380;
/** What the ISP's line narrows to later (the `path` bottleneck): tunnels still carry IPv6's 1,280. */
const NARROWER_MTU = 1350;

const DRIVERS = [
  { name: 'WireGuard', args: [] as string[] },
  { name: 'tinc', args: ['--tunnel-driver', 'tinc'] },
] as const;
const BOTTLENECKS = [
  { name: 'uplink', what: "on home's own uplink" },
  { name: 'path', what: 'on a router between the ends' },
] as const;

/**
 * The hub and home's HTTPS server. The agents probe at the default interval: measuring a new
 * path must not wait for its tick.
 */
function setUp(
  s: CloudHomeHub,
  driver: (typeof DRIVERS)[number],
  bottleneck: (typeof BOTTLENECKS)[number]['name'],
): Promise<void> {
  return startCloudHomeHub(s, {
    lab: { blackholeMtu: PATH_MTU, bottleneck },
    agentFlags: driver.args,
    pool: [
      '--cidr',
      '203.0.113.0/28',
      '--cidr',
      '2001:db8:f::/64',
      '--shared',
      SHARED,
      '--shared',
      SHARED6,
    ],
    beforeAgents: async (lab) => {
      assert.ok(s.tmp);
      const certificate = await makeCertificate(s.tmp.dir);
      await startWebServer(lab, 'home', { name: 'home', port: HTTPS, certificate });
    },
  });
}

/** The VM's own address, allocated, forwards tcp FORWARDED to home's HTTPS at `target`. */
async function forwardHttps(s: CloudHomeHub, shared: string, target: string): Promise<void> {
  await ipferry(s, ['fip', 'allocate', '--address', shared]);
  await ipferry(s, [
    'forward',
    'add',
    shared,
    '--proto',
    'tcp',
    '--port',
    String(FORWARDED),
    '--target-port',
    String(HTTPS),
    '--target',
    target,
    '--node',
    'home',
  ]);
}

/** The first page load and the first upload, once each, to `address:port`. */
async function firstTry(s: CloudHomeHub, address: string, port: number): Promise<void> {
  assert.ok(s.lab);
  const page = await browserLoad(s.lab, 'client', httpsUrl(address, port));
  assert.ok(
    page.ok,
    `chromium's first load of ${address}:${port} failed after ${page.ms} ms: ${page.output || '(nothing on stdout)'}`,
  );
  const client = address.includes(':') ? H.client.v6 : H.client.v4;
  assert.match(page.output, new RegExp(`served by home to ${client}`));
  const upload = await curlUpload(
    s.lab,
    'client',
    httpsUrl(address, port, '/upload'),
    UPLOAD_BYTES,
  );
  assert.ok(upload.received, `curl's first upload to ${address}:${port} failed: ${upload.error}`);
  assert.deepEqual(
    { bytes: upload.received.bytes, sha256: upload.received.sha256 },
    upload.sent,
    'the upload arrived changed',
  );
  assert.equal(upload.received.client, client, "home saw another address than the client's");
}

/** The MTU of the gateway's route carrying `address` into the tunnel (none: the device's). */
async function gwRouteMtu(s: CloudHomeHub, address: string): Promise<number | undefined> {
  assert.ok(s.lab);
  const { stdout } = await s.lab.exec('gw', ['ip', '-j', 'route', 'show', address]);
  const [route] = JSON.parse(stdout) as { metrics?: { mtu?: number }[] }[];
  return route?.metrics?.find((m) => m.mtu !== undefined)?.mtu;
}

for (const driver of DRIVERS) {
  for (const bottleneck of BOTTLENECKS) {
    describe(
      `real clients through ${driver.name}, ${PATH_MTU}-byte bottleneck ${bottleneck.what}`,
      { timeout: 300_000 },
      () => {
        const s: CloudHomeHub = { prefix: randomPrefix() };
        before(() => setUp(s, driver, bottleneck.name));
        after(() => stopCloudHomeHub(s));

        it('a routed FIP: the first page load and 1 MB upload after ACTIVE both work', async (t) => {
          await ipferry(s, ['fip', 'allocate', '--pool', 'public', '--address', ROUTED]);
          // The write is applied at once; the gateway may hold the FIP DOWN for a while after
          // (the new tunnel's path being measured), which the CLI reports without failing.
          const associated = await ipferry(s, [
            'fip',
            'associate',
            ROUTED,
            '--mode',
            'routed',
            '--node',
            'home',
            '--target',
            ROUTED,
          ]);
          assert.match(associated, /^applied on gw and home in \d+ ms$/m);
          t.diagnostic(associated.trim().split('\n').slice(-3).join(' | '));
          await active(s, ROUTED);
          await firstTry(s, ROUTED, HTTPS);
        });

        it("a port forward on the VM's own address to home's own address: the same", async () => {
          await forwardHttps(s, SHARED, H.home.v4);
          await active(s, SHARED);
          await firstTry(s, SHARED, FORWARDED);
        });

        it("1:1 NAT of a FIP to home's own address through the tunnel: the same", async () => {
          await ipferry(s, ['fip', 'allocate', '--pool', 'public', '--address', NAT]);
          await ipferry(s, [
            'fip',
            'associate',
            NAT,
            '--mode',
            'nat',
            '--node',
            'home',
            '--target',
            H.home.v4,
          ]);
          await active(s, NAT);
          await firstTry(s, NAT, HTTPS);
        });

        it("IPv6: a routed FIP, and a port forward on the VM's own IPv6 address to home's: the same", async () => {
          await ipferry(s, ['fip', 'allocate', '--pool', 'public', '--address', ROUTED6]);
          await ipferry(s, ['fip', 'associate', ROUTED6, '--mode', 'routed', '--node', 'home']);
          await forwardHttps(s, SHARED6, H.home.v6);
          await active(s, ROUTED6);
          await active(s, SHARED6);
          await firstTry(s, ROUTED6, HTTPS);
          await firstTry(s, SHARED6, FORWARDED);
        });

        if (bottleneck.name === 'path') {
          it('the ISP narrows the path: the next probes find it, and the next load and upload work', async (t) => {
            const before = await gwRouteMtu(s, ROUTED);
            assert.ok(s.lab);
            const narrowed = Date.now();
            await setCloudHomeBlackhole(s.lab, NARROWER_MTU);
            const after = await waitFor(
              'the route into the tunnel lowered',
              async () => {
                const mtu = await gwRouteMtu(s, ROUTED);
                return mtu !== undefined && mtu < (before ?? Infinity) ? mtu : undefined;
              },
              30_000,
            );
            // A figure, not a claim: the agents probe every 5 s and the search takes ~3 s.
            t.diagnostic(
              `route MTU ${String(before)} → ${after} found ${Date.now() - narrowed} ms after the path narrowed to ${NARROWER_MTU}`,
            );
            await firstTry(s, ROUTED, HTTPS);
            await firstTry(s, SHARED, FORWARDED);
          });
        }
      },
    );
  }
}
