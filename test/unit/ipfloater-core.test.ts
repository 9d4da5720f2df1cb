/**
 * IP Floater's model over FIP records (src/core/ipfloater.ts), pure: endpoints from FIPs, the
 * indexes, the availability rules, the choice of public IP and port, the text forms.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  arpLookup,
  endpointsById,
  endpointsByPrivate,
  endpointsByPublic,
  endpointText,
  floaterState,
  MAX_PUBLIC_IPS,
  parseRedirect,
  planRedirection,
  type RedirectRequest,
  redirectionsText,
} from '../../src/core/ipfloater.js';
import type { FloatingIp, Pool, PortForward } from '../../src/core/model.js';

const AT = '2026-12-07T21:00:00.500Z';

const pool = (over: Partial<Pool> = {}): Pool => ({
  name: 'public',
  gateway: 'gw',
  delivery: 'routed',
  entries: [{ kind: 'range', first: '203.0.113.1', last: '203.0.113.4' }],
  tags: [],
  createdAt: AT,
  ...over,
});

const fip = (address: string, over: Partial<FloatingIp> = {}): FloatingIp => ({
  address,
  family: 4,
  pool: 'public',
  shared: false,
  tags: ['ipfloater'],
  forwards: [],
  allocatedAt: AT,
  ...over,
});

const nat = (address: string, target: string, over: Partial<FloatingIp> = {}): FloatingIp =>
  fip(address, { association: { mode: 'nat', target, associatedAt: AT }, ...over });

const tcp = (id: string, port: number, target: string, targetPort = port): PortForward => ({
  id,
  protocol: 'tcp',
  port,
  portEnd: port,
  targetPort,
  target,
});

const ports = (address: string, forwards: PortForward[], over: Partial<FloatingIp> = {}) =>
  fip(address, {
    association: { mode: 'ports', target: forwards[0]?.target ?? '10.0.0.1', associatedAt: AT },
    forwards,
    ...over,
  });

const noRandom = (): number => 0;

function plan(fips: FloatingIp[], request: RedirectRequest, pools = [pool()]) {
  return planRedirection(floaterState(pools, fips), request, noRandom);
}

describe('IP Floater mapping (pure)', () => {
  it('reads endpoints from nat associations and single TCP forwards', () => {
    const state = floaterState(
      [pool()],
      [nat('203.0.113.1', '10.0.0.11'), ports('203.0.113.2', [tcp('f1', 8080, '10.0.0.12', 80)])],
    );
    const byPublic = endpointsByPublic(state);
    assert.deepEqual(Object.keys(byPublic), [
      '203.0.113.1',
      '203.0.113.2',
      '203.0.113.3',
      '203.0.113.4',
    ]);
    const whole = byPublic['203.0.113.1']!['0']!;
    assert.deepEqual(
      { ...whole, id: '' },
      {
        id: '',
        public_ip: '203.0.113.1',
        public_port: 0,
        private_ip: '10.0.0.11',
        private_port: 0,
        timestamp: Date.parse(AT) / 1000,
      },
    );
    assert.equal(byPublic['203.0.113.2']!['8080']!.private_port, 80);
    assert.deepEqual(byPublic['203.0.113.3'], {});
    assert.equal(Object.keys(endpointsById(state)).length, 2);
    assert.deepEqual(Object.keys(endpointsByPrivate(state)), ['10.0.0.11', '10.0.0.12']);
    assert.equal(
      redirectionsText(state),
      '203.0.113.1 -> 10.0.0.11\n203.0.113.2:8080 -> 10.0.0.12:80\n',
    );
  });

  it('gives every endpoint its own stable id, also forwards with the same id on two FIPs', () => {
    const fips = [
      ports('203.0.113.1', [tcp('f1', 80, '10.0.0.11')]),
      ports('203.0.113.2', [tcp('f1', 80, '10.0.0.12')]),
    ];
    const a = Object.keys(endpointsById(floaterState([pool()], fips)));
    const b = Object.keys(endpointsById(floaterState([pool()], fips)));
    assert.equal(a.length, 2);
    assert.deepEqual(a, b);
  });

  it('marks what IP Floater cannot express as foreign, and shows what it can', () => {
    const state = floaterState(
      [pool()],
      [
        fip('203.0.113.1', {
          association: { mode: 'routed', target: '203.0.113.1', node: 'n', associatedAt: AT },
        }),
        ports('203.0.113.2', [
          tcp('f1', 80, '10.0.0.11'),
          { ...tcp('f2', 53, '10.0.0.11'), protocol: 'udp' },
        ]),
        ports('203.0.113.3', [{ ...tcp('f1', 8000, '10.0.0.11'), portEnd: 8010 }]),
      ],
    );
    assert.deepEqual(
      state.publics.map((p) => [p.address, p.foreign, p.redirections.length]),
      [
        ['203.0.113.1', true, 0],
        ['203.0.113.2', true, 1],
        ['203.0.113.3', true, 0],
        ['203.0.113.4', false, 0],
      ],
    );
    const r = plan([...state.publics.flatMap((p) => (p.fip ? [p.fip] : []))], {
      publicIp: '203.0.113.2',
      publicPort: 81,
      privateIp: '10.0.0.20',
      privatePort: 81,
    });
    assert.equal(r.ok, false);
  });

  it('lists only IPv4, non-shared addresses of the served pools, at most MAX_PUBLIC_IPS', () => {
    const big = pool({
      entries: [
        { kind: 'cidr', cidr: '10.128.0.0/9' },
        { kind: 'cidr', cidr: '2001:db8::/64' },
        { kind: 'address', address: '192.0.2.2', shared: true },
      ],
    });
    const state = floaterState([big], []);
    assert.equal(state.publics.length, MAX_PUBLIC_IPS);
    assert.ok(state.publics.every((p) => p.address.startsWith('10.')));
  });

  it('answers arp from the pools’ MAC pins only', () => {
    const pinned = pool({
      entries: [{ kind: 'address', address: '203.0.113.9', mac: '52:54:00:12:34:56' }],
    });
    assert.equal(arpLookup([pinned], '52-54-00-12-34-56'), '203.0.113.9');
    assert.equal(arpLookup([pinned], '52:54:00:00:00:00'), undefined);
    assert.equal(arpLookup([pinned], 'nonsense'), undefined);
  });

  it('parses requests as IP Floater did: IPv4 addresses, integer ports', () => {
    assert.deepEqual(
      parseRedirect({ privateIp: '10.0.0.1', privatePort: '80', publicPort: 8080 }),
      {
        ok: true,
        value: { privateIp: '10.0.0.1', privatePort: 80, publicPort: 8080 },
      },
    );
    assert.match(
      (parseRedirect({ privateIp: '10.0.0', privatePort: 0 }) as { reason: string }).reason,
      /bad private IP format/,
    );
    assert.match(
      (parseRedirect({ privateIp: '2001:db8::1', privatePort: 0 }) as { reason: string }).reason,
      /bad private IP format/,
    );
    assert.match(
      (parseRedirect({ privateIp: '10.0.0.1', privatePort: '8o' }) as { reason: string }).reason,
      /port format/,
    );
    assert.match(
      (parseRedirect({ privateIp: '10.0.0.1', privatePort: 70000 }) as { reason: string }).reason,
      /port format/,
    );
  });

  it('plans: all-to-all or one-to-one only; private side free; public side free', () => {
    const taken = [
      nat('203.0.113.1', '10.0.0.11'),
      ports('203.0.113.2', [tcp('f1', 80, '10.0.0.12')]),
    ];
    const refused = (r: RedirectRequest) => {
      const d = plan(taken, r);
      return d.ok ? 'planned' : d.reason;
    };
    assert.match(refused({ publicPort: 80, privateIp: '10.0.0.20', privatePort: 0 }), /all-to-all/);
    assert.match(refused({ publicPort: 0, privateIp: '10.0.0.20', privatePort: 80 }), /all-to-all/);
    assert.match(refused({ privateIp: '10.0.0.11', privatePort: 22 }), /already has/);
    assert.match(refused({ privateIp: '10.0.0.12', privatePort: 0 }), /already has/);
    assert.match(refused({ privateIp: '10.0.0.12', privatePort: 80 }), /already has/);
    assert.match(
      refused({ publicIp: '203.0.113.1', publicPort: 22, privateIp: '10.0.0.20', privatePort: 22 }),
      /occupied/,
    );
    assert.match(
      refused({ publicIp: '203.0.113.2', publicPort: 0, privateIp: '10.0.0.20', privatePort: 0 }),
      /occupied/,
    );
    assert.match(
      refused({ publicIp: '198.51.100.1', privateIp: '10.0.0.20', privatePort: 0 }),
      /not a public IP/,
    );
  });

  it('chooses: an address serving the private IP first, then free ones; never another’s FIP', () => {
    const fips = [
      fip('203.0.113.1', { tags: [] }),
      ports('203.0.113.3', [tcp('f1', 80, '10.0.0.12')]),
    ];
    const d = plan(fips, { privateIp: '10.0.0.12', privatePort: 22 });
    assert.deepEqual(d.ok && [d.value.publicIp, d.value.publicPort], ['203.0.113.3', 22]);
    const whole = plan(fips, { privateIp: '10.0.0.20', privatePort: 0 });
    assert.deepEqual(whole.ok && [whole.value.publicIp, whole.value.publicPort], [
      '203.0.113.2',
      0,
    ]);
    const none = plan(
      [
        fip('203.0.113.1', { tags: [] }),
        ...['2', '3', '4'].map((n) => nat(`203.0.113.${n}`, `10.0.1.${n}`)),
      ],
      { privateIp: '10.0.0.20', privatePort: 0 },
    );
    assert.deepEqual(none, { ok: false, reason: 'could not find any free ip' });
  });

  it('assigns the private port as public when free there, else a free one from 1025', () => {
    const fips = ['1', '2', '3', '4'].map((n) =>
      ports(`203.0.113.${n}`, [tcp('f1', 22, `10.0.1.${n}`)]),
    );
    const d = planRedirection(
      floaterState([pool()], fips),
      { publicIp: '203.0.113.1', privateIp: '10.0.0.20', privatePort: 22 },
      () => 0,
    );
    assert.deepEqual(d.ok && d.value.publicPort, 1025);
    const wrapped = planRedirection(
      floaterState(
        [pool()],
        [ports('203.0.113.1', [tcp('f1', 22, '10.0.1.1'), tcp('f2', 65535, '10.0.1.1')])],
      ),
      { publicIp: '203.0.113.1', privateIp: '10.0.0.20', privatePort: 22 },
      () => 65535 - 1025,
    );
    assert.deepEqual(wrapped.ok && wrapped.value.publicPort, 1025);
    const any = plan(fips, { privateIp: '10.0.0.20', privatePort: 22 });
    assert.deepEqual(any.ok && [any.value.publicIp, any.value.publicPort], ['203.0.113.1', 1025]);
    const fixed = plan(fips, { publicPort: 22, privateIp: '10.0.0.20', privatePort: 22 });
    assert.deepEqual(fixed, { ok: false, reason: 'could not find any free ip for that port' });
  });

  it('writes endpoints as IP Floater’s str(ep)', () => {
    const base = { public_ip: '203.0.113.1', private_ip: '10.0.0.1' };
    assert.equal(
      endpointText({ ...base, public_port: 0, private_port: 0 }),
      '203.0.113.1 -> 10.0.0.1',
    );
    assert.equal(
      endpointText({ ...base, public_port: 80, private_port: 8080 }),
      '203.0.113.1:80 -> 10.0.0.1:8080',
    );
  });
});
