/**
 * Property-based fuzzing of what an agent does with store records (issue 12): valid desired
 * states (nodes, pools, FIPs, statuses, liveness, a mesh policy) with some records mutated —
 * fields of the wrong type, hostile text (`}`, `;`, newlines, quotes, NUL, `#`, unicode),
 * huge and negative numbers, nested junk, fields missing or added, text that is no JSON —
 * go through the agent's decode step, compile for every node, and the nft renderer.
 *
 * Asserted: nothing throws past the edge but an IpferryError with a registered code; every
 * record is either kept or skipped with a reason, a valid one is kept and one that plainly
 * cannot be valid is skipped; decoding is idempotent; compile never fails a whole pass. The
 * scripts themselves are parsed by `nft -c` in test/kernel/fuzz-render.test.ts.
 *
 * FUZZ_SEED and FUZZ_RUNS (test/support/fuzz.ts) replay or scale it; the summary line at the
 * end gives cases, refusals by code and crashes.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import fc from 'fast-check';
import { DesiredState } from '../../src/agent/desired.js';
import { IpferryError } from '../../src/core/errors.js';
import { keys } from '../../src/core/keys.js';
import {
  decodeFipStatus,
  decodeFloatingIp,
  decodeNodeRecord,
  decodePool,
} from '../../src/core/records.js';
import {
  fuzzParameters,
  mutatedWorld,
  mutate,
  mutation,
  recordPlan,
  spoil,
  Tally,
  validWorld,
} from '../support/fuzz.js';
import {
  compileAndRender,
  compileFor,
  decodeWorld,
  passOptions,
  plainlyInvalid,
} from '../support/fuzz-pipeline.js';

const tally = new Tally('records');

after(() => {
  console.log(tally.summary());
  for (const c of tally.crashes.slice(0, 10)) console.log(`  crash: ${c}`);
});

/** Runs `f`, filing a throw in the tally; rethrows a crash so that fast-check shrinks it. */
function guarded<T>(where: string, f: () => T): T | undefined {
  try {
    return f();
  } catch (e) {
    if (tally.thrown(where, e)) return undefined;
    throw e;
  }
}

const DECODERS = {
  node: decodeNodeRecord,
  pool: decodePool,
  fip: decodeFloatingIp,
  status: decodeFipStatus,
} as const;

describe('fuzz: store records through decode, compile and render', () => {
  it('decodes a valid desired state whole', () => {
    fc.assert(
      fc.property(validWorld, (records) => {
        tally.cases++;
        const { outcome } = decodeWorld({
          records: records.map((r) => ({ ...r, mutated: false })),
        });
        for (const o of outcome) {
          assert.equal(o.reason, undefined, `${o.record.key} ${JSON.stringify(o.record.value)}`);
        }
      }),
      fuzzParameters(300),
    );
  });

  it('keeps or skips every record with a reason, and never throws', () => {
    fc.assert(
      fc.property(mutatedWorld, (world) => {
        tally.cases++;
        const decoded = guarded('decode', () => decodeWorld(world));
        assert.ok(decoded, 'DesiredState threw');
        const { snapshot, outcome } = decoded;
        // A node whose overlay address another node claims too keeps its record but not the
        // address, unless the lock names it (src/agent/desired.ts): it stays in the snapshot.
        const overlayLost = (o: (typeof outcome)[number]): boolean =>
          o.record.kind === 'node' && /^overlayIp \S+ is (locked|claimed) by/.test(o.reason ?? '');
        const contested = world.records.some(
          (r) => r.mutated && (r.kind === 'node' || r.kind === 'lock'),
        );
        for (const o of outcome) {
          const { record } = o;
          if (record.kind === 'alive') continue;
          if (!o.kept) {
            tally.count(overlayLost(o) ? 'overlays-refused' : 'records-skipped');
            assert.ok(o.reason && o.reason.length > 0, `${record.key}: skipped without a reason`);
          } else tally.count('records-kept');
          if (!record.mutated && !(overlayLost(o) && contested)) {
            assert.ok(o.kept, `${record.key}: a valid record was skipped: ${o.reason}`);
          }
          const invalid = plainlyInvalid(record);
          if (invalid) {
            assert.ok(
              !o.kept,
              `${record.key}: kept although ${invalid}: ${record.text ?? JSON.stringify(record.value)}`,
            );
          }
        }
        // What is kept is all there is: one node, pool or FIP per key kept.
        const kept = (kind: string): number =>
          outcome.filter((o) => (o.kept || overlayLost(o)) && o.record.kind === kind).length;
        assert.equal(snapshot.nodes.length, kept('node'));
        assert.equal(snapshot.pools.length, kept('pool'));
        assert.equal(snapshot.fips.length, kept('fip'));
        assert.ok(snapshot.statuses.size <= kept('status'));
      }),
      fuzzParameters(2000),
    );
  });

  it('decoders refuse with IPF_E_VALIDATION only, and decode what they decoded again unchanged', () => {
    const kinds = Object.keys(DECODERS) as (keyof typeof DECODERS)[];
    fc.assert(
      fc.property(
        validWorld,
        fc.nat(),
        fc.array(mutation, { maxLength: 4 }),
        (records, which, mutations) => {
          const decodable = records.filter((r) => kinds.includes(r.kind as never));
          const record = decodable[which % Math.max(1, decodable.length)];
          if (!record) return;
          tally.cases++;
          const decode = DECODERS[record.kind as keyof typeof DECODERS] as (v: unknown) => unknown;
          const value = mutations.reduce(mutate, record.value);
          let once: unknown;
          try {
            once = decode(value);
          } catch (e) {
            tally.thrown(`decode ${record.kind}`, e);
            assert.ok(e instanceof IpferryError, `decode ${record.kind} threw ${String(e)}`);
            assert.equal(e.code, 'IPF_E_VALIDATION');
            assert.ok(e.problems.length > 0);
            return;
          }
          const plain = (v: unknown): unknown => JSON.parse(JSON.stringify(v));
          assert.deepEqual(plain(decode(plain(once))), plain(once));
        },
      ),
      fuzzParameters(3000),
    );
  });

  it('compiles every node and renders its table, refusing only with registered codes', () => {
    fc.assert(
      fc.property(mutatedWorld, passOptions, (world, options) => {
        tally.cases++;
        const decoded = guarded('decode', () => decodeWorld(world));
        if (!decoded) return;
        const crashes = tally.crashes.length;
        const parts = compileAndRender(decoded.snapshot, options, tally);
        assert.equal(tally.crashes.length, crashes, tally.crashes.at(-1));
        for (const part of parts) {
          // A record the decoder let through must not stop a whole pass (issue 12, finding 2).
          assert.ok(part.intent, `compile for ${part.node} refused the whole snapshot`);
        }
      }),
      fuzzParameters(2000),
    );
  });

  it('skips a mesh policy record that is not a policy, and compiles the rest', () => {
    fc.assert(
      fc.property(mutatedWorld, recordPlan, passOptions, (spoilt, plan, options) => {
        const at = spoilt.records.findIndex((r) => r.kind === 'mesh');
        if (at < 0) return;
        tally.cases++;
        const mesh = spoil(spoilt.records[at]!, plan);
        const world = { records: spoilt.records.map((r, i) => (i === at ? mesh : r)) };
        const { snapshot, outcome } = decodeWorld(world);
        const invalid = plainlyInvalid(mesh);
        if (invalid) {
          assert.ok(!outcome.find((o) => o.record === mesh)?.kept, `kept although ${invalid}`);
        }
        for (const node of ['gw', 'b1']) {
          compileFor(snapshot, node, options);
        }
      }),
      fuzzParameters(600),
    );
  });

  it('saw no crash', () => {
    assert.deepEqual(tally.crashes, []);
  });
});

/** The defects fuzzing found, each replayed by the smallest record that showed it. */
describe('fuzz findings, replayed', () => {
  const pool = (name: string, cidr: string, extra: object = {}) => ({
    name,
    gateway: 'gw',
    delivery: 'routed',
    entries: [{ kind: 'cidr', cidr }],
    tags: [],
    createdAt: '',
    ...extra,
  });
  const fip = (address: string, extra: object = {}) => ({
    address,
    family: address.includes(':') ? 6 : 4,
    pool: 'public',
    shared: false,
    tags: [],
    forwards: [],
    allocatedAt: '',
    ...extra,
  });
  const forward = (id: string, port: number, portEnd: number, target: string) => ({
    id,
    protocol: 'tcp',
    port,
    portEnd,
    targetPort: port,
    target,
  });
  const refuses = (decode: (v: unknown) => unknown, value: unknown, pattern: RegExp): void => {
    assert.throws(
      () => decode(value),
      (e: unknown) =>
        e instanceof IpferryError &&
        e.code === 'IPF_E_VALIDATION' &&
        pattern.test(e.problems.map((p) => `${p.path} ${p.message}`).join('; ')),
    );
  };

  it('a node whose endpoint has no port is skipped, not a failed pass for every peer', () => {
    refuses(
      decodeNodeRecord,
      { name: 'b1', endpoint: '2001:db8:ff::dc08', addresses: [], reservedPorts: [] },
      /^endpoint /,
    );
  });

  it('a node whose tunnel key is no key is skipped (it would reach wg and tinc host files)', () => {
    const node = { name: 'b1', addresses: [], reservedPorts: [] };
    refuses(decodeNodeRecord, { ...node, publicKey: 'gw1-key' }, /^publicKey /);
    refuses(
      decodeNodeRecord,
      {
        ...node,
        tunnelDriver: 'tinc',
        publicKey:
          '-----BEGIN RSA PUBLIC KEY-----\nAAAA\nAAAA\n-----END RSA PUBLIC KEY-----\nSubnet = 0.0.0.0/0\n',
      },
      /^publicKey /,
    );
  });

  it('a FIP forwarding to another family, or twice over the same ports, is skipped', () => {
    const ports = { mode: 'ports', target: '10.0.0.1', associatedAt: '' };
    refuses(
      decodeFloatingIp,
      fip('203.0.113.5', { association: ports, forwards: [forward('a', 80, 80, '2001:db8::1')] }),
      /forwards\[0\]\.target .*IPv6/,
    );
    refuses(
      decodeFloatingIp,
      fip('203.0.113.5', {
        association: ports,
        forwards: [forward('a', 80, 90, '10.0.0.2'), forward('b', 85, 95, '10.0.0.3')],
      }),
      /forwards\[1\] overlaps forwards\[0\]/,
    );
    refuses(
      decodeFloatingIp,
      fip('2001:db8:f::5', { association: { ...ports, target: '2001:DB8::1' } }),
      /association\.target must be in canonical form/,
    );
  });

  it('a pool range across families, backwards, or over another entry is skipped', () => {
    const range = (first: string, last: string) => ({ kind: 'range', first, last });
    const entries = (...e: object[]) => pool('public', '203.0.113.0/28', { entries: e });
    refuses(decodePool, entries(range('203.0.113.20', '2001:db8::1')), /same family/);
    refuses(decodePool, entries(range('203.0.113.20', '203.0.113.10')), /below first/);
    refuses(
      decodePool,
      entries(
        { kind: 'cidr', cidr: '203.0.113.0/28' },
        { kind: 'address', address: '203.0.113.1' },
      ),
      /entries\[1\] overlaps entries\[0\]/,
    );
    refuses(decodePool, pool('public', '203.0.113.5/28'), /canonical/);
  });

  it('two stored pools over one range drop it once; two records of one FIP realise neither', () => {
    const nat = { mode: 'nat', target: '10.0.0.2', associatedAt: '' };
    const kv = (key: string, value: object, i: number) => ({
      key,
      value: JSON.stringify(value),
      createRevision: i,
      modRevision: i,
      version: 1,
    });
    const snapshot = DesiredState.of(
      [
        kv(keys.pool('a'), pool('a', '198.51.100.0/28'), 1),
        kv(keys.pool('b'), pool('b', '198.51.100.0/28', { delivery: 'onlink' }), 2),
        kv(keys.fip('198.51.100.5'), fip('198.51.100.5', { pool: 'a', association: nat }), 3),
        // Written around the API, under another key.
        kv(
          `${keys.fips}x`,
          fip('198.51.100.5', { pool: 'b', association: { ...nat, target: '10.0.0.3' } }),
          4,
        ),
      ],
      5,
    );
    // The record under a key that is not its address is skipped at decode (desired.ts) …
    assert.ok(snapshot.rejected.has(`${keys.fips}x`));
    const kept = compileFor(snapshot, 'gw', { driver: 'wireguard', now: new Date() });
    const drops = kept.elements.filter((e) => e.kind === 'drop').map((e) => e.key);
    assert.deepEqual(drops, ['198.51.100.0-198.51.100.15']);
    assert.ok(kept.elements.some((e) => e.kind === 'dnat' && e.key === '198.51.100.5'));
    // … and should two records of one address reach compile anyway, it realises neither.
    const twice = {
      ...snapshot,
      fips: [
        ...snapshot.fips,
        {
          fip: decodeFloatingIp(
            fip('198.51.100.5', { pool: 'b', association: { ...nat, target: '10.0.0.3' } }),
          ),
          revision: 4,
        },
      ],
    };
    const intent = compileFor(twice, 'gw', { driver: 'wireguard', now: new Date() });
    assert.ok(!intent.elements.some((e) => e.kind === 'dnat'));
    assert.deepEqual(intent.refused, [
      { address: '198.51.100.5', reason: 'more than one store record holds 198.51.100.5' },
    ]);
  });
});
