/**
 * What the fuzz suites share (test/unit/fuzz-records.test.ts, test/unit/fuzz-api.test.ts,
 * test/kernel/fuzz-render.test.ts): the seed and run counts, valid store records of every kind
 * the agent decodes, the mutations that turn them into what a bad node, an old version or
 * anyone with etcd access might write, and the tally each suite prints at its end.
 *
 * FUZZ_SEED fixes the seed (default below, so a failure replays), FUZZ_RUNS multiplies every
 * property's case count (0.1 for a quick look, 10 for a long night).
 */
import fc from 'fast-check';
import { ERRORS, IpferryError } from '../../src/core/errors.js';
import { keys } from '../../src/core/keys.js';
import type { MeshPolicyRecord } from '../../src/core/mesh.js';
import type { KeyValue } from '../../src/store/store.js';

export const FUZZ_SEED = Number.parseInt(process.env.FUZZ_SEED ?? '', 10) || 20_240_612;
const SCALE = Number(process.env.FUZZ_RUNS ?? '1');

/** `base` cases, scaled by FUZZ_RUNS (at least one). */
export function fuzzRuns(base: number): number {
  return Math.max(1, Math.round(base * (Number.isFinite(SCALE) && SCALE > 0 ? SCALE : 1)));
}

/** fast-check's parameters for a property of `base` cases. */
/**
 * A property's runs, bounded in time: a failure's shrinking over large records can run for
 * many minutes, so a property that has not finished in two minutes fails (with its seed) rather
 * than holding the suite past its budget.
 */
export function fuzzParameters(base: number): fc.Parameters<unknown> {
  return {
    seed: FUZZ_SEED,
    numRuns: fuzzRuns(base),
    plugins: [fc.interruptAfterTimeLimit(120_000, { failOnInterrupt: true })],
  };
}

// --- the tally ---------------------------------------------------------------------------------

/** What a fuzz suite saw: cases, refusals by code, crashes (anything else thrown). */
export class Tally {
  cases = 0;
  readonly refusals = new Map<string, number>();
  readonly crashes: string[] = [];
  /** Free counters (records skipped, scripts checked, requests by status …). */
  readonly counts = new Map<string, number>();

  constructor(readonly name: string) {}

  count(what: string, n = 1): void {
    this.counts.set(what, (this.counts.get(what) ?? 0) + n);
  }

  /**
   * Files what was thrown: an IpferryError with a registered code is a refusal, anything else
   * a crash. Returns whether it was a refusal.
   */
  thrown(where: string, e: unknown): boolean {
    if (e instanceof IpferryError && e.code in ERRORS) {
      this.refusals.set(e.code, (this.refusals.get(e.code) ?? 0) + 1);
      return true;
    }
    this.crash(where, e);
    return false;
  }

  crash(where: string, e: unknown): void {
    const text = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
    this.crashes.push(`${where}: ${text.slice(0, 300)}`);
  }

  /** One line: cases, refusals by code, crashes; then the counters. */
  summary(): string {
    const by = (m: ReadonlyMap<string, number>): string =>
      [...m]
        .sort(([a], [b]) => (a < b ? -1 : 1))
        .map(([k, n]) => `${k}=${n}`)
        .join(' ') || 'none';
    return (
      `fuzz ${this.name}: seed ${FUZZ_SEED}, ${this.cases} cases, refusals ${by(this.refusals)}, ` +
      `crashes ${this.crashes.length}; ${by(this.counts)}`
    );
  }
}

// --- hostile values ----------------------------------------------------------------------------

/** Text that has broken (or would break) a kernel command, a parser or a terminal. */
export const HOSTILE_TEXT: readonly string[] = [
  '',
  ' ',
  '}',
  ';',
  '#',
  '"',
  "'",
  '\\',
  '\n',
  '\r\n',
  '\0',
  '\u0085',
  '\u202e',
  '\u2028',
  '\ud800',
  'é',
  '🙂',
  'q"#',
  'eth0\nip link set lo down',
  'eth0 }; flush ruleset; table inet x {',
  '10.0.0.6 }; delete table inet canary; add table inet pwned {',
  '203.0.113.10 ',
  ' 203.0.113.10',
  '203.0.113.010',
  '203.0.113.256',
  '::ffff:203.0.113.10',
  '2001:DB8::10',
  '2001:db8:0::10',
  '203.0.113.0/24',
  '203.0.113.10-203.0.113.5',
  '203.0.113.1-2001:db8::1',
  '0.0.0.0',
  '255.255.255.255',
  '127.0.0.1',
  '::',
  'fe80::1',
  '224.0.0.1',
  '0.0.0.0/0',
  '::/0',
  'tcp',
  'udp',
  'icmp',
  'nat',
  'routed',
  'ports',
  'onlink',
  'ACTIVE',
  '__proto__',
  'constructor',
  'toString',
  '../../x',
  '-1',
  '1e309',
  '0x50',
  'a'.repeat(5000),
  'gw',
  'b1',
  'Gw',
  '-gw',
  'host:port',
  '[2001:db8::1]:99999',
  '192.0.2.1:0',
  '-----BEGIN RSA PUBLIC KEY-----\nAAAA\nAAAA\n-----END RSA PUBLIC KEY-----\nSubnet = 0.0.0.0/0',
  'x'.repeat(43) + '=',
  'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa=\nPublicKey = y',
];

const HOSTILE_NUMBERS: readonly number[] = [
  0,
  -1,
  1,
  4,
  6,
  22,
  65535,
  65536,
  -65535,
  1.5,
  2 ** 31,
  2 ** 53,
  Number.MAX_SAFE_INTEGER + 2,
  1e300,
  -1e300,
  Number.MIN_VALUE,
];

/** One hostile JSON value of any type (strings mostly from HOSTILE_TEXT). */
export const hostileValue: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom(...HOSTILE_TEXT) },
  { weight: 2, arbitrary: fc.constantFrom(...HOSTILE_NUMBERS) },
  {
    weight: 1,
    arbitrary: fc.constantFrom<unknown>(null, true, false, [], {}, [[[[]]]], { a: {} }),
  },
  { weight: 1, arbitrary: fc.string({ maxLength: 40, unit: 'binary' }) },
  { weight: 1, arbitrary: fc.integer() },
  { weight: 1, arbitrary: fc.double({ noNaN: true, noDefaultInfinity: true }) },
  {
    weight: 1,
    arbitrary: fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.parse(JSON.stringify(v)) as unknown),
  },
  // A value that is right for another field.
  {
    weight: 2,
    arbitrary: fc.constantFrom<unknown>(
      '203.0.113.10',
      '2001:db8:f::10',
      '10.0.0.11',
      'gw',
      ['10.0.0.1'],
      [{ protocol: 'tcp', port: 22 }],
      { mode: 'nat', target: '10.0.0.11', associatedAt: '' },
    ),
  },
);

// --- mutations ---------------------------------------------------------------------------------

type Json = unknown;
type Path = readonly (string | number)[];

/** Every path into a JSON value, the root first. */
export function pathsOf(value: Json, at: Path = []): Path[] {
  const out: Path[] = [at];
  if (Array.isArray(value)) value.forEach((v, i) => out.push(...pathsOf(v, [...at, i])));
  else if (typeof value === 'object' && value !== null) {
    for (const [k, v] of Object.entries(value)) out.push(...pathsOf(v, [...at, k]));
  }
  return out;
}

/** Fields whose values end up in an nft or ip command, a tunnel's configuration or a peer list. */
const POINTED_FIELDS = [
  'address',
  'addresses',
  'target',
  'targetPort',
  'port',
  'portEnd',
  'protocol',
  'node',
  'mode',
  'family',
  'pool',
  'gateway',
  'delivery',
  'uplink',
  'cidr',
  'first',
  'last',
  'shared',
  'endpoint',
  'publicKey',
  'tunnelDriver',
  'overlayIp',
  'egress',
  'site',
  'name',
  'forwards',
  'entries',
  'association',
  'policy',
  'sshAllow',
  'openPorts',
  'natOverrides',
];
const POINTED = new Set(POINTED_FIELDS);

export type MutationOp =
  | 'replace'
  | 'delete'
  | 'extra'
  | 'wrap'
  | 'stringify'
  | 'repeat'
  | 'family'
  | 'shift'
  | 'upper'
  | 'copy';

export interface Mutation {
  /** Index into pathsOf(value), modulo its length. */
  readonly at: number;
  readonly op: MutationOp;
  readonly value: Json;
  /** For `copy`: the path whose value is copied here; for `shift`: how far a number moves. */
  readonly other: number;
  /** A field to aim at (when the record has one by that name): see POINTED. */
  readonly field?: string;
}

export const mutation: fc.Arbitrary<Mutation> = fc.record({
  at: fc.nat(),
  op: fc.constantFrom<MutationOp>(
    'replace',
    'replace',
    'replace',
    'delete',
    'extra',
    'wrap',
    'stringify',
    'repeat',
    'repeat',
    'family',
    'family',
    'shift',
    'shift',
    'upper',
    'copy',
    'copy',
  ),
  value: hostileValue,
  other: fc.nat(),
  field: fc.option(fc.constantFrom(...POINTED_FIELDS), { nil: undefined, freq: 2 }),
});

function clone<T>(value: T): T {
  return JSON.parse(JSON.stringify(value)) as T;
}

/** `value` with one mutation applied (a new value; the input is left alone). */
export function mutate(value: Json, m: Mutation): Json {
  const root = clone(value);
  const paths = pathsOf(root);
  // Mostly a leaf: that is where a value meets a parser.
  const leaves = paths.filter((p) => {
    const v = getAt(root, p);
    return typeof v !== 'object' || v === null;
  });
  // Often a field that reaches a kernel command or a tunnel's configuration.
  const pointed = leaves.filter(
    (p) => POINTED.has(String(p[p.length - 1])) || typeof p[p.length - 1] === 'number',
  );
  const named = paths.filter((p) => p.length > 0 && p[p.length - 1] === m.field);
  const pool =
    named.length > 0
      ? named
      : m.at % 3 === 0 && pointed.length > 0
        ? pointed
        : m.at % 5 !== 0 && leaves.length > 0
          ? leaves
          : paths;
  const path = pool[m.at % pool.length] ?? [];
  const replaced = ((): Json => {
    const old = getAt(root, path);
    switch (m.op) {
      case 'family':
        if (typeof old !== 'string') return m.value;
        return old.includes(':')
          ? `10.0.${m.other % 256}.9`
          : `2001:db8:ff::${(m.other % 65536).toString(16)}`;
      case 'shift': {
        const delta = [1, -1, 65535, -65536, 0.5, 1e6][m.other % 6]!;
        return typeof old === 'number' ? old + delta : m.value;
      }
      case 'upper':
        return typeof old === 'string' ? `${old.toUpperCase()}${m.other % 2 ? ' ' : ''}` : m.value;
      case 'copy':
        return clone(getAt(root, paths[m.other % paths.length] ?? []) ?? null);
      case 'replace':
        return m.value;
      case 'delete':
        return DELETE;
      case 'extra':
        return typeof old === 'object' && old !== null && !Array.isArray(old)
          ? { ...old, [`x-${String(m.at % 7)}`]: m.value }
          : m.value;
      case 'wrap':
        return [old];
      case 'stringify':
        return typeof old === 'string' ? Number(old) : JSON.stringify(old ?? null);
      case 'repeat':
        return Array.isArray(old) ? [...old, ...old] : { nested: old, again: old };
    }
  })();
  if (path.length === 0) return replaced === DELETE ? {} : replaced;
  const parent = getAt(root, path.slice(0, -1)) as Record<string | number, Json>;
  const last = path[path.length - 1]!;
  if (replaced === DELETE) {
    if (Array.isArray(parent)) parent.splice(last as number, 1);
    else delete parent[last];
  } else parent[last] = replaced;
  return root;
}

const DELETE = Symbol('delete');

function getAt(value: Json, path: Path): Json {
  let v = value;
  for (const p of path) v = (v as Record<string | number, Json>)[p];
  return v;
}

// --- valid records -----------------------------------------------------------------------------

/** A WireGuard public key: 32 bytes in base64. */
export const wireGuardKey: fc.Arbitrary<string> = fc
  .uint8Array({ minLength: 32, maxLength: 32 })
  .map((b) => Buffer.from(b).toString('base64'));

const TINC_KEY = `-----BEGIN RSA PUBLIC KEY-----\n${'MIIBCgKCAQEA'.padEnd(64, 'A')}\n${'A'.repeat(60)}IDAQAB\n-----END RSA PUBLIC KEY-----\n`;

export const NODE_NAMES = ['gw', 'b1', 'b2', 'home'] as const;
const SITES = ['dc1', 'dc2'] as const;
export const OVERLAY = '100.80.0.0/16';

interface PoolPlan {
  readonly name: string;
  readonly gateway: string;
  readonly family: 4 | 6;
  /** The /24 (or /64) this pool's entries come from: pools never overlap. */
  readonly base: string;
}

const POOL_BASES: readonly { family: 4 | 6; base: string }[] = [
  { family: 4, base: '203.0.113.' },
  { family: 4, base: '198.51.100.' },
  { family: 4, base: '192.0.2.' },
  { family: 6, base: '2001:db8:f::' },
  { family: 6, base: '2001:db8:e::' },
];

const hostNumber = fc.integer({ min: 1, max: 254 });

/** A record and the key it is stored under. */
export interface StoredRecord {
  readonly key: string;
  readonly value: Json;
  readonly kind: 'node' | 'pool' | 'fip' | 'status' | 'mesh' | 'alive' | 'lock';
}

const nodeRecord = (name: string): fc.Arbitrary<StoredRecord> =>
  fc
    .record({
      site: fc.option(fc.constantFrom(...SITES), { nil: undefined }),
      endpoint: fc.option(
        fc.oneof(
          hostNumber.map((h) => `192.0.2.${h}:51820`),
          hostNumber.map((h) => `[2001:db8:1::${h.toString(16)}]:51820`),
          fc.constant('gw.example.net:51820'),
        ),
        { nil: undefined },
      ),
      tinc: fc.boolean(),
      key: fc.option(wireGuardKey, { nil: undefined, freq: 5 }),
      overlay: fc.option(
        fc.tuple(fc.integer({ min: 0, max: 255 }), hostNumber).map(([a, b]) => `100.80.${a}.${b}`),
        { nil: undefined, freq: 4 },
      ),
      egress: fc.option(fc.constantFrom('fip', 'masquerade'), { nil: undefined, freq: 4 }),
      addresses: fc.array(
        fc.oneof(
          hostNumber.map((h) => `10.0.1.${h}`),
          hostNumber.map((h) => `192.0.2.${h}`),
          hostNumber.map((h) => `2001:db8:5::${h.toString(16)}`),
        ),
        { maxLength: 3 },
      ),
      reserved: fc.array(
        fc.record({
          protocol: fc.constantFrom('tcp', 'udp'),
          port: fc.integer({ min: 0, max: 65535 }),
        }),
        { maxLength: 3 },
      ),
    })
    .map((r) => ({
      key: keys.node(name),
      kind: 'node' as const,
      value: {
        name,
        ...(r.site ? { site: r.site } : {}),
        ...(r.endpoint ? { endpoint: r.endpoint } : {}),
        ...(r.key ? { publicKey: r.tinc ? TINC_KEY : r.key } : {}),
        ...(r.key && r.tinc ? { tunnelDriver: 'tinc' } : {}),
        ...(r.overlay ? { overlayIp: r.overlay } : {}),
        ...(r.egress ? { egress: r.egress } : {}),
        addresses: [...new Set(r.addresses)],
        reservedPorts: r.reserved,
        agentVersion: '0.1.0',
        registeredAt: '2024-06-12T00:00:00.000Z',
      },
    }));

const poolPlans: fc.Arbitrary<PoolPlan[]> = fc
  .subarray([...POOL_BASES], { minLength: 1, maxLength: 3 })
  .chain((bases) =>
    fc.tuple(
      ...bases.map((b, i) =>
        fc
          .constantFrom<string>('gw', 'gw', 'gw', 'b1')
          .map((gateway) => ({ name: `pool${i}`, gateway, family: b.family, base: b.base })),
      ),
    ),
  );

function addressIn(plan: PoolPlan, n: number): string {
  return plan.family === 4 ? `${plan.base}${n}` : `${plan.base}${n.toString(16)}`;
}

/** A pool: a prefix of its base's lower half, a range and single addresses from its upper half. */
const poolRecord = (plan: PoolPlan): fc.Arbitrary<StoredRecord> =>
  fc
    .record({
      delivery: fc.constantFrom('routed', 'onlink'),
      uplink: fc.option(fc.constantFrom('eth0', 'up0', 'br-lan'), { nil: undefined }),
      length:
        plan.family === 4 ? fc.integer({ min: 26, max: 32 }) : fc.integer({ min: 122, max: 128 }),
      range: fc.option(
        fc.tuple(fc.integer({ min: 130, max: 170 }), fc.integer({ min: 0, max: 20 })),
        {
          nil: undefined,
        },
      ),
      singles: fc.uniqueArray(fc.integer({ min: 200, max: 254 }), { maxLength: 3 }),
      shared: fc.boolean(),
      mac: fc.boolean(),
      tags: fc.array(fc.constantFrom('edge', 'a=b', 'x/y'), { maxLength: 2 }),
      description: fc.option(fc.constantFrom('the pool', 'É'), { nil: undefined }),
    })
    .map((r) => {
      const entries: Json[] = [
        {
          kind: 'cidr',
          cidr: `${plan.family === 4 ? `${plan.base}0` : plan.base}/${r.length}`,
        },
      ];
      if (r.range) {
        const [first, extra] = r.range;
        entries.push({
          kind: 'range',
          first: addressIn(plan, first),
          last: addressIn(plan, first + extra),
        });
      }
      r.singles.forEach((n, i) =>
        entries.push({
          kind: 'address',
          address: addressIn(plan, n),
          ...(i === 0 && r.shared ? { shared: true } : {}),
          ...(i === 1 && r.mac ? { mac: '52:54:00:12:34:56' } : {}),
        }),
      );
      return {
        key: keys.pool(plan.name),
        kind: 'pool' as const,
        value: {
          name: plan.name,
          gateway: plan.gateway,
          delivery: r.delivery,
          ...(r.uplink ? { uplink: r.uplink } : {}),
          entries,
          ...(r.description ? { description: r.description } : {}),
          tags: [...new Set(r.tags)].sort(),
          createdAt: '2024-06-12T00:00:00.000Z',
        },
      };
    });

const targetOf = (family: 4 | 6, n: number): string =>
  family === 4 ? `10.0.${n % 3}.${n}` : `2001:db8:ff::${n.toString(16)}`;

/** Non-overlapping forwards: each starts past the end of the one before. */
const forwards = (family: 4 | 6): fc.Arbitrary<Json[]> =>
  fc
    .array(
      fc.record({
        protocol: fc.constantFrom('tcp', 'udp'),
        gap: fc.integer({ min: 1, max: 3000 }),
        width: fc.integer({ min: 0, max: 4 }),
        remap: fc.option(fc.integer({ min: 1, max: 60000 }), { nil: undefined }),
        target: hostNumber,
        node: fc.option(fc.constantFrom(...NODE_NAMES), { nil: undefined, freq: 4 }),
      }),
      { maxLength: 4 },
    )
    .map((list) => {
      let next = 0;
      return list.map((f, i) => {
        const port = next + f.gap;
        const portEnd = Math.min(65535, port + f.width);
        next = portEnd;
        return {
          id: `f${i + 1}`,
          protocol: f.protocol,
          port,
          portEnd,
          targetPort: f.remap ?? port,
          target: targetOf(family, f.target),
          ...(f.node ? { node: f.node } : {}),
        };
      });
    })
    // A forward past port 65535 is cut off: keep only those that fit.
    .map((list) =>
      list.filter(
        (f) =>
          f.port <= 65535 && f.portEnd >= f.port && f.targetPort + (f.portEnd - f.port) <= 65535,
      ),
    );

const fipRecord = (plan: PoolPlan, n: number): fc.Arbitrary<StoredRecord> =>
  fc
    .record({
      mode: fc.constantFrom<string | undefined>('nat', 'routed', 'ports', undefined),
      target: hostNumber,
      node: fc.option(fc.constantFrom(...NODE_NAMES), { nil: undefined }),
      masquerade: fc.boolean(),
      forwards: forwards(plan.family),
      shared: fc.boolean(),
    })
    .map((r) => {
      const address = addressIn(plan, n);
      const mode = r.mode;
      const association =
        mode === undefined
          ? undefined
          : {
              mode,
              target: mode === 'routed' ? address : targetOf(plan.family, r.target),
              ...(mode === 'routed' ? { node: r.node ?? 'b1' } : r.node ? { node: r.node } : {}),
              ...(mode === 'nat' && r.masquerade ? { masquerade: true } : {}),
              associatedAt: '2024-06-12T00:00:00.000Z',
            };
      return {
        key: keys.fip(address),
        kind: 'fip' as const,
        value: {
          address,
          family: plan.family,
          pool: plan.name,
          shared: mode === 'ports' && r.shared,
          tags: [],
          ...(association ? { association } : {}),
          forwards: mode === 'ports' ? r.forwards : [],
          forwardSerial: 9,
          allocatedAt: '2024-06-12T00:00:00.000Z',
        },
      };
    });

const statusRecord = (address: string): fc.Arbitrary<StoredRecord> =>
  fc
    .record({
      state: fc.constantFrom('DOWN', 'ACTIVE', 'UNREACHABLE', 'ERROR'),
      node: fc.constantFrom(...NODE_NAMES),
      revision: fc.nat(1000),
      message: fc.option(fc.constantFrom('nft: refused', 'x'.repeat(300)), { nil: undefined }),
    })
    .map((r) => ({
      key: keys.status(address),
      kind: 'status' as const,
      value: { address, ...r, updatedAt: '2024-06-12T00:00:00.000Z' },
    }));

const layer = fc.record(
  {
    openPorts: fc.uniqueArray(
      fc.constantFrom('tcp/443', 'udp/53', 'tcp/8000-8010', 'udp/60000-60100'),
      {
        maxLength: 3,
      },
    ),
    sshAllow: fc.uniqueArray(
      fc.constantFrom('198.51.100.0/24', '10.9.9.9/32', '2001:db8:a::/48', '192.0.2.0/25'),
      { maxLength: 3 },
    ),
    rejectAll: fc.boolean(),
    natOverrides: fc.dictionary(
      fc.constantFrom('100.80.0.1', '100.80.1.2', '100.80.9.9'),
      fc.constantFrom('10.0.1.5', '192.0.2.77'),
      { maxKeys: 2 },
    ),
  },
  { requiredKeys: [] },
);

export const meshPolicy = fc.record({
  overlay: fc.constant(OVERLAY),
  maxChange: fc.option(fc.nat(5), { nil: undefined }),
  fleet: layer,
  sites: fc.dictionary(
    fc.constantFrom(...SITES),
    layer.map((l) => ({ ...l, lans: ['10.0.1.0/24'] })),
    { maxKeys: 2 },
  ),
  nodes: fc.dictionary(fc.constantFrom(...NODE_NAMES), layer, { maxKeys: 2 }),
});

const meshRecord: fc.Arbitrary<StoredRecord> = fc
  .record({
    policy: meshPolicy,
    trial: fc.option(
      fc.record({
        previous: fc.option(meshPolicy, { nil: null }),
        deadline: fc.constantFrom('2000-01-01T00:00:00.000Z', '2999-01-01T00:00:00.000Z'),
      }),
      { nil: undefined },
    ),
  })
  .map((r) => {
    const policy = JSON.parse(JSON.stringify(r.policy)) as MeshPolicyRecord['policy'];
    return {
      key: keys.meshPolicy,
      kind: 'mesh' as const,
      value: {
        policy,
        ...(r.trial ? { trial: JSON.parse(JSON.stringify(r.trial)) as unknown } : {}),
        updatedAt: '2024-06-12T00:00:00.000Z',
      },
    };
  });

/** A consistent desired state: nodes, pools, their FIPs and statuses, liveness, maybe a mesh. */
export const validWorld: fc.Arbitrary<StoredRecord[]> = fc
  .record({
    nodes: fc.subarray(['b1', 'b2', 'home'], { minLength: 0 }),
    plans: poolPlans,
    mesh: fc.option(meshRecord, { nil: undefined, freq: 2 }),
  })
  .chain(({ nodes, plans, mesh }) => {
    const names = ['gw', ...nodes];
    const fipArbs = plans.map((plan) =>
      fc
        .uniqueArray(
          fc.oneof(
            fc.integer({ min: 1, max: 3 }),
            fc.integer({ min: 130, max: 140 }),
            fc.integer({ min: 200, max: 254 }),
          ),
          {
            maxLength: 4,
          },
        )
        .chain((ns) =>
          ns.length === 0
            ? fc.constant<StoredRecord[]>([])
            : fc.tuple(...ns.map((n) => fipRecord(plan, n))),
        ),
    );
    return fc
      .tuple(
        fc.tuple(...names.map(nodeRecord)),
        fc.tuple(...plans.map(poolRecord)),
        fc.tuple(...fipArbs),
        fc.subarray(names),
      )
      .chain(([nodeRecs, poolRecs, fipLists, alive]) => {
        const fips = fipLists.flat();
        const statuses = fc
          .subarray(fips.map((f) => (f.value as { address: string }).address))
          .chain((as) =>
            as.length === 0 ? fc.constant<StoredRecord[]>([]) : fc.tuple(...as.map(statusRecord)),
          );
        return statuses.map((st) => [
          ...nodeRecs,
          ...poolRecs,
          ...fips,
          ...st,
          // The hub locks each overlay address for its node (service/mesh.ts: ensureOverlay).
          ...nodeRecs.flatMap((r) => {
            const { name, overlayIp } = r.value as { name: string; overlayIp?: string };
            return overlayIp
              ? [{ key: keys.overlay(overlayIp), kind: 'lock' as const, value: { name } }]
              : [];
          }),
          ...alive.map((name) => ({
            key: keys.nodeAlive(name),
            kind: 'alive' as const,
            value: { name, since: '2024-06-12T00:00:00.000Z', pid: 1 },
          })),
          ...(mesh ? [mesh] : []),
        ]);
      });
  });

/** A world with some of its records mutated, some stored as text that is no JSON at all. */
export interface MutatedWorld {
  readonly records: readonly (StoredRecord & {
    readonly mutated: boolean;
    readonly text?: string;
  })[];
}

const RAW_TEXT = [
  '',
  'null',
  '{',
  '{"name":',
  'NaN',
  '\ufeff{}',
  '[]',
  '"gw"',
  '1e999',
  '{"a":1}{"b":2}',
];

type Obj = Record<string, any>;

const otherFamily = (address: unknown, n: number): string =>
  typeof address === 'string' && address.includes(':')
    ? `10.0.${n % 256}.9`
    : `2001:db8:ff::${(n % 65535).toString(16)}`;

/**
 * Changes that keep a record's shape but not its sense: what a careless or hostile writer does
 * that a type check alone would let through. `n` picks the detail.
 */
const TWEAKS: { readonly [K in StoredRecord['kind']]?: readonly ((v: Obj, n: number) => Obj)[] } = {
  fip: [
    (v, n) => ({ ...v, association: { ...v.association, target: otherFamily(v.address, n) } }),
    (v) => ({ ...v, association: { ...v.association, target: String(v.address).toUpperCase() } }),
    (v) => ({ ...v, association: { ...v.association, target: v.address } }),
    (v, n) => ({
      ...v,
      association: v.association ?? {
        mode: 'ports',
        target: otherFamily(otherFamily(v.address, n), n),
      },
      forwards: [
        ...(v.forwards ?? []),
        {
          id: 'fx',
          protocol: 'tcp',
          port: 1 + (n % 100),
          portEnd: 200,
          targetPort: 1 + (n % 100),
          target: otherFamily(v.address, n),
        },
      ],
    }),
    // Two forwards over the same ports, to different targets.
    (v, n) => {
      const f = {
        id: 'fa',
        protocol: 'udp',
        port: 5000,
        portEnd: 5010,
        targetPort: 5000,
        target: v.family === 6 ? '2001:db8:ff::a' : '10.0.0.10',
      };
      const g = {
        ...f,
        id: 'fb',
        port: 5005 + (n % 10),
        portEnd: 5020,
        targetPort: 5005 + (n % 10),
        target: v.family === 6 ? '2001:db8:ff::b' : '10.0.0.11',
      };
      return {
        ...v,
        association: { mode: 'ports', target: f.target, associatedAt: '' },
        forwards: [f, g],
      };
    },
    (v, n) => ({
      ...v,
      forwards: (v.forwards ?? []).map((f: Obj) => ({ ...f, portEnd: f.port - 1 - (n % 3) })),
    }),
    (v, n) => ({
      ...v,
      family: v.family === 4 ? 6 : 4,
      address: n % 2 ? v.address : otherFamily(v.address, n),
    }),
    (v) => ({
      ...v,
      shared: true,
      association: { ...(v.association ?? {}), mode: 'nat', target: '10.0.0.12' },
    }),
    (v, n) => ({
      ...v,
      association: { ...v.association, mode: 'routed', node: ['gw', 'b1', 'b2', 'nobody'][n % 4] },
    }),
  ],
  pool: [
    (v, n) => ({
      ...v,
      entries: [...v.entries, ...v.entries.slice(n % Math.max(1, v.entries.length))],
    }),
    (v) => ({
      ...v,
      entries: v.entries.map((e: Obj) =>
        e.kind === 'range' ? { ...e, first: e.last, last: e.first } : e,
      ),
    }),
    (v, n) => ({
      ...v,
      entries: v.entries.map((e: Obj) =>
        e.kind === 'range' ? { ...e, last: otherFamily(e.first, n) } : e,
      ),
    }),
    (v) => ({
      ...v,
      entries: v.entries.map((e: Obj) =>
        e.kind === 'cidr'
          ? {
              ...e,
              cidr: String(e.cidr).replace(/(\.0|::)\//, (m: string) =>
                m === '::/' ? '::5/' : '.5/',
              ),
            }
          : e,
      ),
    }),
    // An address that a prefix of the same pool holds already.
    (v) => {
      const cidr = v.entries.find((e: Obj) => e.kind === 'cidr')?.cidr as string | undefined;
      const inside = cidr?.includes(':')
        ? cidr.replace(/::\/.*/, '::1')
        : cidr?.replace(/\.0\/.*/, '.1');
      return inside ? { ...v, entries: [...v.entries, { kind: 'address', address: inside }] } : v;
    },
    (v, n) => ({
      ...v,
      uplink: ['.', '..', 'eth0.100', 'a'.repeat(15), 'lo', 'ipfq-x'][n % 6],
      delivery: 'onlink',
    }),
    (v, n) => ({ ...v, gateway: ['b1', 'b2', 'home', 'nobody'][n % 4] }),
  ],
  node: [
    (v, n) => ({
      ...v,
      endpoint: ['2001:db8::1', '192.0.2.1', 'host', '192.0.2.1:0', '[::1]:x', 'a b:1'][n % 6],
    }),
    (v, n) => ({
      ...v,
      publicKey: ['gw1-key', '', 'x'.repeat(44), `${'A'.repeat(43)}=\nx`][n % 4],
    }),
    (v, n) => ({ ...v, tunnelDriver: n % 2 ? 'tinc' : 'wireguard' }),
    (v, n) => ({
      ...v,
      overlayIp: ['100.80.0.1', '2001:db8::80', '10.0.1.5', '100.80.0.0', '100.80.255.255'][n % 5],
    }),
    (v, n) => ({
      ...v,
      addresses: [...(v.addresses ?? []), '100.80.0.1', '203.0.113.5', `10.0.1.${n % 250}`],
    }),
    (v) => ({ ...v, reservedPorts: [...(v.reservedPorts ?? []), ...(v.reservedPorts ?? [])] }),
  ],
  status: [
    (v, n) => ({ ...v, address: otherFamily(v.address, n) }),
    (v) => ({ ...v, node: 'nobody' }),
  ],
  mesh: [
    (v) => ({ ...v, policy: { ...v.policy, overlay: '0.0.0.0/0' } }),
    (v) => ({ ...v, policy: { ...v.policy, overlay: '2001:db8::/64' } }),
    (v) => ({
      ...v,
      policy: { ...v.policy, fleet: { sshAllow: ['0.0.0.0/0', '::/0', '10.0.0.1/8'] } },
    }),
    (v) => ({
      ...v,
      policy: {
        ...v.policy,
        fleet: { openPorts: ['tcp/0', 'udp/1-70000', 'icmp/1', 'tcp/22-21'] },
      },
    }),
    (v) => ({
      ...v,
      policy: { ...v.policy, fleet: { natOverrides: { '100.80.0.1': '2001:db8::1', x: 'y' } } },
    }),
    (v) => ({ ...v, trial: { previous: { overlay: 5 }, deadline: 'yesterday' } }),
  ],
};

/** Changes across records: two pools over one address, one FIP under two keys, a stolen overlay. */
const WORLD_TWEAKS: readonly ((records: StoredRecord[], n: number) => StoredRecord[])[] = [
  (records) => {
    const pools = records.filter((r) => r.kind === 'pool');
    const [a, b] = pools;
    if (!a || !b) return records;
    const stolen = {
      ...(b.value as Obj),
      entries: [...(b.value as Obj).entries, ...(a.value as Obj).entries],
    };
    return records.map((r) => (r === b ? { ...r, value: stolen } : r));
  },
  (records, n) => {
    const fip = records.find((r) => r.kind === 'fip');
    if (!fip) return records;
    const copy = {
      ...(fip.value as Obj),
      association: { mode: 'nat', target: `10.0.2.${n % 250}`, associatedAt: '' },
    };
    return [...records, { ...fip, key: `${fip.key}x`, value: copy }];
  },
  (records) => {
    const nodes = records.filter((r) => r.kind === 'node');
    const victim = nodes.find((r) => (r.value as Obj).overlayIp);
    if (!victim || nodes.length < 2) return records;
    const thief = nodes.find((r) => r !== victim)!;
    const value = { ...(thief.value as Obj), overlayIp: (victim.value as Obj).overlayIp };
    return records.map((r) => (r === thief ? { ...r, value } : r));
  },
];

/** How one record is spoiled: by text that is no record, a tweak of its sense, or mutations. */
export interface RecordPlan {
  readonly which: number;
  readonly mutations: readonly Mutation[];
  readonly tweak: number | undefined;
  readonly raw: string | undefined;
}

export const recordPlan: fc.Arbitrary<RecordPlan> = fc.record({
  which: fc.nat(),
  mutations: fc.array(mutation, { minLength: 1, maxLength: 3 }),
  tweak: fc.option(fc.nat(), { nil: undefined, freq: 2 }),
  raw: fc.option(fc.constantFrom(...RAW_TEXT), { nil: undefined, freq: 12 }),
});

type WorldRecord = MutatedWorld['records'][number];

/** `r` spoiled as `plan` says. */
export function spoil(r: WorldRecord, plan: RecordPlan): WorldRecord {
  const tweaks = TWEAKS[r.kind];
  if (plan.raw !== undefined) return { ...r, mutated: true, text: plan.raw };
  if (plan.tweak !== undefined && tweaks && tweaks.length > 0) {
    const tweak = tweaks[plan.tweak % tweaks.length]!;
    return { ...r, mutated: true, value: tweak(clone(r.value) as Obj, plan.tweak) };
  }
  return { ...r, mutated: true, value: plan.mutations.reduce(mutate, r.value) };
}

export const mutatedWorld: fc.Arbitrary<MutatedWorld> = validWorld.chain((records) =>
  fc
    .record({
      world: fc.option(fc.nat(), { nil: undefined, freq: 3 }),
      plans: fc.array(recordPlan, { maxLength: Math.max(1, Math.ceil(records.length / 2)) }),
    })
    .map(({ world, plans }) => {
      const base =
        world === undefined ? records : WORLD_TWEAKS[world % WORLD_TWEAKS.length]!(records, world);
      const out = base.map((r) => ({ ...r, mutated: !records.includes(r) }));
      for (const plan of plans) {
        if (out.length === 0) break;
        const i = plan.which % out.length;
        out[i] = spoil(out[i]!, plan);
      }
      return { records: out };
    }),
);

/** The records as the store hands them to an agent. */
export function toKeyValues(records: MutatedWorld['records']): KeyValue[] {
  return records.map((r, i) => ({
    key: r.key,
    value: r.text ?? JSON.stringify(r.value) ?? 'null',
    createRevision: i + 1,
    modRevision: i + 1,
    version: 1,
  }));
}
