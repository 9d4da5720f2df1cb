/**
 * Unmanaged nodes and `ipferry node render`: the far end's configuration for Linux (one wg-quick
 * file) and FreeBSD (rc.conf, start_if, wg(8), pf.conf, a pf anchor), checked against golden
 * files (test/support/fixtures/render/; the FreeBSD ones written from pf.conf(5), wg(8) and
 * rc.conf(5), see docs/far-ends.md: FreeBSD cannot run here); the refusals (tinc, an unknown or
 * managed node, values a record should not hold); the revision and `--check`; the API route.
 *
 * UPDATE_GOLDEN=1 rewrites the golden files from the renderers (read the diff before committing).
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { FastifyInstance } from 'fastify';
import type { FipView, NodeListView, PoolView } from '../../src/api/contract.js';
import { validateUnmanagedNode } from '../../src/core/farend.js';
import type { FloatingIp, NodeRecord } from '../../src/core/model.js';
import { type FarEndState, farEndSpec } from '../../src/core/render/farend.js';
import { renderFreebsd } from '../../src/core/render/freebsd.js';
import { renderLinux } from '../../src/core/render/linux.js';
import { checkRendered, revisionOf } from '../../src/core/render/revision.js';
import type { ControlPlane } from '../../src/service/control.js';
import type { Store } from '../../src/store/store.js';
import { printNode, printNodeTable } from '../../src/cli/node.js';
import { fake, run, useFakeAgent } from '../support/cli-harness.js';
import { controlPlane, dumpStore, testApi, TOKEN_RW } from '../support/helpers.js';

const FIXTURES = join(import.meta.dirname, '../support/fixtures/render');
const GW_KEY = Buffer.alloc(32, 7).toString('base64');
const HOME_KEY = Buffer.alloc(32, 9).toString('base64');
const AT = '2026-01-01T00:00:00.000Z';

const gw: NodeRecord = {
  name: 'gw',
  endpoint: '192.0.2.2:51820',
  publicKey: GW_KEY,
  addresses: ['192.0.2.2'],
  reservedPorts: [],
  registeredAt: AT,
};
const home: NodeRecord = {
  name: 'home',
  unmanaged: true,
  publicKey: HOME_KEY,
  addresses: ['198.18.0.10'],
  reservedPorts: [],
  registeredAt: AT,
};

function fip(address: string, over: Partial<FloatingIp> = {}): FloatingIp {
  return {
    address,
    family: address.includes(':') ? 6 : 4,
    pool: 'public',
    shared: false,
    tags: [],
    forwards: [],
    allocatedAt: AT,
    ...over,
  };
}

const routed = (address: string, node = 'home'): FloatingIp =>
  fip(address, { association: { mode: 'routed', target: address, node, associatedAt: AT } });

/** The cloud-home migration: a routed FIP per family, mail and DNS forwarded to home's address. */
function state(extra: readonly FloatingIp[] = []): FarEndState {
  return {
    nodes: [gw, home],
    pools: [{ name: 'public', gateway: 'gw' }],
    fips: [
      routed('203.0.113.10'),
      routed('2001:db8:f::10'),
      fip('192.0.2.2', {
        shared: true,
        association: { mode: 'ports', target: '198.18.0.10', node: 'home', associatedAt: AT },
        forwards: [
          {
            id: 'f1',
            protocol: 'tcp',
            port: 25,
            portEnd: 25,
            targetPort: 25,
            target: '198.18.0.10',
          },
          {
            id: 'f2',
            protocol: 'udp',
            port: 53,
            portEnd: 53,
            targetPort: 53,
            target: '198.18.0.10',
          },
          {
            id: 'f3',
            protocol: 'tcp',
            port: 8000,
            portEnd: 8010,
            targetPort: 9000,
            target: '198.18.0.10',
          },
        ],
      }),
      // Not home's: must not show up, nor change the revision.
      routed('203.0.113.11', 'gw'),
      ...extra,
    ],
  };
}

async function golden(name: string, text: string): Promise<void> {
  const path = join(FIXTURES, name);
  if (process.env['UPDATE_GOLDEN'] === '1') await writeFile(path, text);
  assert.equal(text, await readFile(path, 'utf8'), `${name} differs from its golden file`);
}

describe('node render: the renderers', () => {
  it('linux: one wg-quick file with the return path in its hooks', async () => {
    const spec = farEndSpec(state(), 'home', { os: 'linux', iface: 'ipfhome' });
    await golden('linux-home.conf', renderLinux(spec, 42));
  });

  it('linux: a node with an endpoint listens there; routed only needs no nftables', async () => {
    const nodes = [gw, { ...home, endpoint: '198.18.0.10:51821' }];
    const s: FarEndState = { ...state(), nodes, fips: [routed('203.0.113.10')] };
    const text = renderLinux(farEndSpec(s, 'home', { os: 'linux', iface: 'ipfhome' }), 7);
    await golden('linux-home-routed.conf', text);
    assert.ok(!text.includes('nft'));
  });

  it('freebsd: rc.conf, start_if, wg(8), pf.conf and the anchor with reply-to', async () => {
    const spec = farEndSpec(state(), 'home', { os: 'freebsd' });
    await golden('freebsd-home.txt', renderFreebsd(spec, 42));
  });

  it('freebsd: a listening node, an IPv6 gateway endpoint, a nat target on IPv6', async () => {
    const nodes = [
      { ...gw, endpoint: '[2001:db8:1::2]:51820' },
      { ...home, endpoint: '198.18.0.10:51821' },
    ];
    const nat = fip('203.0.113.5', {
      association: { mode: 'nat', target: '2001:db8:3::10', node: 'home', associatedAt: AT },
    });
    const s: FarEndState = { ...state(), nodes, fips: [nat, routed('203.0.113.10')] };
    const text = renderFreebsd(farEndSpec(s, 'home', { os: 'freebsd', iface: 'wg3' }), 9);
    await golden('freebsd-home-nat.txt', text);
    assert.match(text, /ListenPort = 51821/);
    assert.match(text, /MTU|mtu 1420/, 'an IPv6 underlay: 80 bytes of overhead');
  });

  it('keeps the gateway side as an agent would: MTU from the underlay, keepalive toward it', () => {
    const spec = farEndSpec(state(), 'home', { os: 'linux', underlayMtu: 1492 });
    assert.equal(spec.mtu, 1432);
    assert.equal(spec.keepaliveSeconds, 25);
    assert.match(spec.iface, /^ipfgw[0-9a-z]{7}$/); // named after its peer, as an agent names it
    assert.equal(spec.keyFile, `/etc/wireguard/${spec.iface}.key`);
    const v6 = { ...state(), nodes: [{ ...gw, endpoint: '[2001:db8::2]:51820' }, home] };
    assert.equal(farEndSpec(v6, 'home', { os: 'linux' }).mtu, 1420);
  });

  it('never writes a private key', () => {
    for (const os of ['linux', 'freebsd'] as const) {
      const spec = farEndSpec(state(), 'home', { os });
      const text = os === 'linux' ? renderLinux(spec) : renderFreebsd(spec);
      assert.ok(!/^\s*PrivateKey/m.test(text), os);
      assert.ok(!text.includes(HOME_KEY), `${os}: not even the node's own public key`);
    }
  });
});

describe('node render: refusals', () => {
  const refuses = (s: FarEndState, node: string, pattern: RegExp, o = {}): void => {
    assert.throws(
      () => farEndSpec(s, node, { os: 'linux', ...o }),
      (e: Error & { code?: string; problems?: readonly { path: string; message: string }[] }) =>
        e.code === 'IPF_E_VALIDATION' &&
        pattern.test(
          [e.message, ...(e.problems ?? []).map((p) => `${p.path}: ${p.message}`)].join('\n'),
        ),
    );
  };

  it('refuses an unknown node, a managed one and a tinc one', () => {
    refuses(state(), 'nosuch', /not registered/);
    refuses(state(), 'gw', /runs an agent/);
    const tinc = { ...state(), nodes: [gw, { ...home, tunnelDriver: 'tinc' as const }] };
    refuses(tinc, 'home', /WireGuard only/);
  });

  it('refuses a node that serves nothing without --gateway, or two gateways', () => {
    const idle = { ...state(), fips: [] };
    refuses(idle, 'home', /serves no FIP yet/);
    assert.equal(farEndSpec(idle, 'home', { os: 'linux', gateway: 'gw' }).gateway.name, 'gw');
    refuses(state(), 'home', /not other/, { gateway: 'other' });
    const two: FarEndState = {
      nodes: [gw, { ...gw, name: 'gw2', publicKey: HOME_KEY.replace('J', 'K') }, home],
      pools: [
        { name: 'public', gateway: 'gw' },
        { name: 'second', gateway: 'gw2' },
      ],
      fips: [routed('203.0.113.10'), { ...routed('198.51.100.5'), pool: 'second' }],
    };
    refuses(two, 'home', /one node answers for one gateway/);
  });

  it('refuses values a record should not hold before they reach the text', () => {
    refuses(state([routed('203.0.113.99; rm -rf /')]), 'home', /not an IP address/);
    const badKey = { ...state(), nodes: [{ ...gw, publicKey: 'x\nPostUp = reboot' }, home] };
    refuses(badKey, 'home', /no WireGuard key/);
    const badEndpoint = { ...state(), nodes: [{ ...gw, endpoint: 'gw:1 # x' }, home] };
    refuses(badEndpoint, 'home', /endpoint/);
    refuses(state(), 'home', /interface/, { iface: 'wg0; reboot' });
    refuses(state(), 'home', /keyFile/, { keyFile: '/etc/../x key' });
    assert.throws(() => farEndSpec(state(), 'home', { os: 'freebsd', iface: 'ipfhome' }), /wgN/);
  });

  it('refuses an endpointless node behind an endpointless gateway', () => {
    const s = { ...state(), nodes: [{ ...gw, endpoint: undefined }, home] } as FarEndState;
    refuses(s, 'home', /one must reach the other/);
  });
});

describe('node render: the revision and --check', () => {
  it('covers only what shapes the text', () => {
    const base = revisionOf(farEndSpec(state(), 'home', { os: 'linux' }));
    const unrelated = state([routed('203.0.113.12', 'gw')]);
    assert.equal(revisionOf(farEndSpec(unrelated, 'home', { os: 'linux' })), base);
    const more = state([routed('203.0.113.13')]);
    assert.notEqual(revisionOf(farEndSpec(more, 'home', { os: 'linux' })), base);
    assert.notEqual(revisionOf(farEndSpec(state(), 'home', { os: 'freebsd' })), base);
  });

  it('names what changed since a file was rendered', () => {
    const old = renderLinux(farEndSpec(state(), 'home', { os: 'linux' }), 1);
    assert.deepEqual(checkRendered(old, farEndSpec(state(), 'home', { os: 'linux' })), {
      current: true,
      revision: revisionOf(farEndSpec(state(), 'home', { os: 'linux' })),
    });
    const now = farEndSpec(
      { ...state(), fips: state().fips.filter((f) => f.address !== '2001:db8:f::10') },
      'home',
      { os: 'linux' },
    );
    const more = farEndSpec(state([routed('203.0.113.13')]), 'home', { os: 'linux' });
    const gone = checkRendered(old, now);
    assert.equal(gone.current, false);
    assert.deepEqual(!gone.current && [gone.added, gone.removed], [[], ['routed 2001:db8:f::10']]);
    const added = checkRendered(old, more);
    assert.deepEqual(!added.current && added.added, ['routed 203.0.113.13']);
    const foreign = checkRendered('[Interface]\n', more);
    assert.equal(!foreign.current && foreign.found, undefined);
  });
});

describe('unmanaged nodes: validation', () => {
  it('takes a WireGuard key, an optional endpoint and addresses', () => {
    assert.deepEqual(
      validateUnmanagedNode({
        name: 'home',
        unmanaged: true,
        publicKey: HOME_KEY,
        endpoint: '198.18.0.10:51821',
        addresses: ['198.18.0.10', '198.18.0.10', '2001:DB8::1'],
      }),
      {
        name: 'home',
        unmanaged: true,
        publicKey: HOME_KEY,
        endpoint: '198.18.0.10:51821',
        addresses: ['198.18.0.10', '2001:db8::1'],
        reservedPorts: [],
      },
    );
  });

  it('refuses tinc, a missing key, a bad endpoint, a managed registration, all at once', () => {
    assert.throws(
      () =>
        validateUnmanagedNode({
          name: 'home',
          unmanaged: false,
          publicKey: 'nope',
          endpoint: 'home',
          tunnelDriver: 'tinc',
          addresses: ['x'],
        }),
      (e: Error & { problems?: { path: string; message: string }[] }) => {
        const paths = (e.problems ?? []).map((p) => p.path).sort();
        assert.deepEqual(paths, [
          'addresses[0]',
          'endpoint',
          'publicKey',
          'tunnelDriver',
          'unmanaged',
        ]);
        assert.match(e.problems!.find((p) => p.path === 'tunnelDriver')!.message, /WireGuard only/);
        return true;
      },
    );
  });
});

describe('unmanaged nodes: POST /v1/nodes', () => {
  let control: ControlPlane;
  let store: Store;
  let close: () => Promise<void>;
  let app: FastifyInstance;

  before(async () => {
    ({ control, store, close } = await controlPlane(['gw']));
    app = await testApi(control);
  });
  after(async () => {
    await app.close();
    await close();
  });

  const post = async (payload: object) => {
    const res = await app.inject({
      method: 'POST',
      url: '/v1/nodes',
      payload,
      headers: { authorization: `Bearer ${TOKEN_RW}` },
    });
    return { status: res.statusCode, body: JSON.parse(res.body) as Record<string, any> };
  };

  it('registers it without liveness; node show says unmanaged', async () => {
    const res = await post({ name: 'home', unmanaged: true, publicKey: HOME_KEY });
    assert.equal(res.status, 201, JSON.stringify(res.body));
    assert.equal(res.body['unmanaged'], true);
    assert.equal(res.body['alive'], false);
    const shown = await control.getNode('home');
    assert.equal(shown.unmanaged, true);
    assert.equal(shown.alive, false);
    assert.equal(shown.overlayIp, undefined);
  });

  it('refuses a taken name (409), a taken key and tinc (400), and changes nothing', async () => {
    for (const [payload, status, code, path] of [
      [{ name: 'home', unmanaged: true, publicKey: GW_KEY }, 409, 'IPF_E_NODE_EXISTS', undefined],
      [
        { name: 'home2', unmanaged: true, publicKey: HOME_KEY },
        400,
        'IPF_E_VALIDATION',
        'publicKey',
      ],
      [
        { name: 'home3', unmanaged: true, publicKey: GW_KEY, tunnelDriver: 'tinc' },
        400,
        'IPF_E_VALIDATION',
        'tunnelDriver',
      ],
    ] as const) {
      const before = await dumpStore(store);
      const res = await post(payload);
      assert.equal(res.status, status, JSON.stringify(res.body));
      assert.equal(res.body['error'].code, code);
      if (path !== undefined)
        assert.ok(res.body['error'].problems.some((p: { path: string }) => p.path === path));
      assert.equal(await dumpStore(store), before);
    }
  });
});

describe('node show of an unmanaged node', () => {
  it("gives its tunnel as its gateway's agent sees it, and says it has no agent", () => {
    const shown = printNode({
      ...home,
      alive: false,
      seenBy: [
        {
          node: 'gw',
          tunnel: 'ipfgw1',
          checkedAt: AT,
          peer: {
            publicKey: HOME_KEY,
            endpoint: '198.18.0.10:40000',
            handshakeAgeSeconds: 3,
            rxBytes: 100,
            txBytes: 200,
            probe: { alive: true, checkedAt: AT, rttMs: 0.4 },
          },
        },
      ],
    });
    assert.match(shown, /alive:\s+- \(no agent\)/);
    assert.match(shown, /managed:\s+no: unmanaged/);
    assert.match(shown, /ipfgw1 of gw → home at 198\.18\.0\.10:40000: handshake 3 s ago/);
    assert.match(shown, /path: answers \(0\.4 ms\)/);
    assert.match(printNode({ ...home, alive: false }), /no agent peering with it reports it/);
    assert.match(printNodeTable([{ ...home, alive: false }]), /home\s+unmanaged/);
  });
});

describe('ipferry node add / render (CLI)', () => {
  useFakeAgent();
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ipft-render-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const view = (n: NodeRecord): NodeListView => ({ ...n, alive: false });
  const pools = [{ name: 'public', gateway: 'gw' }] as unknown as PoolView[];
  const fipsOf = (s: FarEndState): FipView[] =>
    s.fips.map((f) => ({ ...f, revision: 3, status: { state: 'ACTIVE' } }));
  const script = (s: FarEndState, revision: number): void => {
    fake.reset();
    fake
      .reply('GET /v1/nodes/home', 200, view(home))
      .reply('GET /v1/status', 200, { store: { kind: 'sqlite', revision } })
      .reply('GET /v1/nodes', 200, s.nodes.map(view))
      .reply('GET /v1/pools', 200, pools)
      .reply('GET /v1/fips', 200, fipsOf(s));
  };

  it('node add sends the registration', async () => {
    fake.reply('POST /v1/nodes', 201, view(home));
    const r = await run([
      'node',
      'add',
      'home',
      '--unmanaged',
      '--public-key',
      HOME_KEY,
      '--address',
      '198.18.0.10',
    ]);
    assert.equal(r.code, 0, r.err);
    assert.deepEqual(fake.requests[0]?.body, {
      name: 'home',
      unmanaged: true,
      publicKey: HOME_KEY,
      addresses: ['198.18.0.10'],
    });
    assert.match(r.out, /node render home/);
  });

  it('node add without --unmanaged is a usage error', async () => {
    const r = await run(['node', 'add', 'home', '--public-key', HOME_KEY]);
    assert.equal(r.code, 2);
    assert.equal(fake.requests.length, 0);
  });

  it('render prints the file; --check says current, then stale with what changed', async () => {
    script(state(), 42);
    const rendered = await run([
      'node',
      'render',
      'home',
      '--os',
      'linux',
      '--interface',
      'ipfhome',
    ]);
    assert.equal(rendered.code, 0, rendered.err);
    assert.equal(
      rendered.out,
      renderLinux(farEndSpec(state(), 'home', { os: 'linux', iface: 'ipfhome' }), 42),
    );
    const file = join(dir, 'ipfhome.conf');
    await writeFile(file, rendered.out);

    // Unrelated writes moved the store on: still current.
    script(state([routed('203.0.113.12', 'gw')]), 57);
    const current = await run([
      'node',
      'render',
      'home',
      '--os',
      'linux',
      '--interface',
      'ipfhome',
      '--check',
      file,
    ]);
    assert.equal(current.code, 0, current.err);
    assert.match(current.out, /is current/);

    script(state([routed('203.0.113.13')]), 58);
    const stale = await run([
      'node',
      'render',
      'home',
      '--os',
      'linux',
      '--interface',
      'ipfhome',
      '--check',
      file,
    ]);
    assert.equal(stale.code, 1);
    assert.match(stale.out, /is stale/);
    assert.match(stale.err, /stale: rendered at revision [0-9a-f]{16}/);
    assert.match(stale.err, /routed 203\.0\.113\.13/);
    assert.match(stale.err, /hint: Render it again/);
  });

  it('render refuses a managed node with a clear error', async () => {
    fake
      .reply('GET /v1/nodes/gw', 200, view(gw))
      .reply('GET /v1/status', 200, { store: { kind: 'sqlite', revision: 1 } })
      .reply('GET /v1/nodes', 200, [gw, home].map(view))
      .reply('GET /v1/pools', 200, pools)
      .reply('GET /v1/fips', 200, fipsOf(state()));
    const r = await run(['node', 'render', 'gw', '--os', 'freebsd']);
    assert.equal(r.code, 1);
    assert.match(r.err, /runs an agent/);
  });

  it('render --os must be linux or freebsd', async () => {
    const r = await run(['node', 'render', 'home', '--os', 'windows']);
    assert.equal(r.code, 2);
  });
});
