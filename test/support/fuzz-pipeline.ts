/**
 * The agent's path from store records to the nft script, as the fuzz suites drive it: decode
 * (DesiredState, src/agent/desired.ts), compile (src/core/compile/index.ts, called as the
 * reconcile loop's compileSnapshot calls it) for every node, and render the nftables table
 * (src/dataplane/nft/ruleset.ts). Each step files what it throws in the tally: an IpferryError
 * with a registered code is a refusal, anything else a crash.
 */
import fc from 'fast-check';
import { DesiredState, type Snapshot } from '../../src/agent/desired.js';
import { compile, type HostIntent } from '../../src/core/compile/index.js';
import type { TunnelOptions } from '../../src/core/compile/tunnel-path.js';
import { renderTable } from '../../src/dataplane/nft/ruleset.js';
import type { HostFacts } from '../../src/intent/facts.js';
import type { IntentElement } from '../../src/intent/elements.js';
import {
  type MutatedWorld,
  NODE_NAMES,
  type StoredRecord,
  type Tally,
  toKeyValues,
} from './fuzz.js';

/** The host facts each node's compile sees: an uplink, a LAN, its own addresses. */
export const FACTS: HostFacts = {
  interfaces: ['eth0', 'lan0', 'br-lan'],
  addresses: ['192.0.2.2', '10.0.0.1', '2001:db8:1::2'],
  defaultRoutes: [
    { family: 4, dev: 'eth0', via: '192.0.2.1', src: '192.0.2.2', mtu: 1500 },
    { family: 6, dev: 'eth0', via: '2001:db8:1::1', mtu: 1500 },
  ],
};

export interface PassOptions {
  readonly driver: 'wireguard' | 'tinc';
  /** Peers whose path was measured; undefined: no probes run. */
  readonly measured?: readonly string[];
  readonly now: Date;
}

export const passOptions: fc.Arbitrary<PassOptions> = fc.record({
  driver: fc.constantFrom('wireguard', 'tinc'),
  measured: fc.option(fc.subarray([...NODE_NAMES]), { nil: undefined }),
  now: fc.constantFrom(new Date('2024-06-12T00:00:00Z'), new Date('2999-06-12T00:00:00Z')),
});

/**
 * Why a record cannot be valid whatever the decoder's finer rules: a required field missing or
 * of the wrong JSON type. An independent oracle, deliberately coarse.
 */
export function plainlyInvalid(r: StoredRecord & { text?: string }): string | undefined {
  if (r.kind === 'alive') return undefined;
  if (r.kind === 'lock' && r.text === undefined) {
    return typeof (r.value as { name?: unknown } | null)?.name === 'string' ? undefined : 'name';
  }
  if (r.text !== undefined) {
    try {
      const parsed: unknown = JSON.parse(r.text);
      if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed))
        return 'not a JSON object';
      return 'a bare object without its fields';
    } catch {
      return 'not JSON';
    }
  }
  const v = r.value as Record<string, unknown> | null;
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return 'not an object';
  const notString = (...fields: string[]): string | undefined =>
    fields.find((f) => typeof v[f] !== 'string');
  let bad: string | undefined;
  switch (r.kind) {
    case 'node':
      bad = notString('name') ?? (Array.isArray(v.addresses) ? undefined : 'addresses');
      break;
    case 'pool':
      bad =
        notString('name', 'gateway', 'delivery') ??
        (Array.isArray(v.entries) ? undefined : 'entries');
      break;
    case 'fip':
      bad =
        notString('address', 'pool') ??
        (typeof v.shared === 'boolean' ? undefined : 'shared') ??
        (v.family === 4 || v.family === 6 ? undefined : 'family') ??
        (v.forwards === undefined || Array.isArray(v.forwards) ? undefined : 'forwards');
      break;
    case 'status':
      bad =
        notString('address', 'state', 'node') ??
        (Number.isInteger(v.revision) ? undefined : 'revision');
      break;
    case 'mesh': {
      const policy = v.policy as Record<string, unknown> | undefined;
      bad =
        typeof policy !== 'object' || policy === null || Array.isArray(policy)
          ? 'policy'
          : typeof policy.overlay !== 'string'
            ? 'policy.overlay'
            : undefined;
      break;
    }
  }
  return bad === undefined ? undefined : `${bad} is missing or of the wrong type`;
}

export interface Decoded {
  readonly snapshot: Snapshot;
  /** Records under a key that DesiredState decodes, with what became of each. */
  readonly outcome: readonly {
    readonly record: MutatedWorld['records'][number];
    readonly kept: boolean;
    readonly reason?: string;
  }[];
}

/** Decodes a world as an agent's DesiredState does (throws only what DesiredState throws). */
export function decodeWorld(world: MutatedWorld): Decoded {
  const snapshot = DesiredState.of(toKeyValues(world.records), world.records.length + 1);
  const outcome = world.records.map((record) => {
    const reason = snapshot.rejected.get(record.key);
    return { record, kept: reason === undefined, ...(reason !== undefined ? { reason } : {}) };
  });
  return { snapshot, outcome };
}

/** compile() for `node` exactly as the reconcile loop calls it (Reconciler.compileSnapshot). */
export function compileFor(snapshot: Snapshot, node: string, o: PassOptions): HostIntent {
  const tunnel: TunnelOptions = {
    listenPort: 51820,
    driver: o.driver,
    ...(o.measured ? { measured: new Set(o.measured) } : {}),
  };
  return compile(
    {
      ...snapshot,
      mesh: {
        ...(snapshot.meshPolicy ? { record: snapshot.meshPolicy } : {}),
        nodes: snapshot.nodes,
        alive: snapshot.alive,
        alwaysOpen: ['udp/51820', 'tcp/7447'],
        now: o.now,
      },
    },
    node,
    FACTS,
    tunnel,
  );
}

/** What compile and render made of one node's part. */
export interface NodePart {
  readonly node: string;
  readonly intent?: HostIntent;
  /** The whole-table nft script, as an apply on a host without the table runs it. */
  readonly script?: string;
  readonly elements?: readonly IntentElement[];
}

/**
 * Compiles and renders every node's part, filing refusals and crashes in the tally under
 * `compile` and `render`. A node whose compile or render threw has no intent or no script.
 */
export function compileAndRender(snapshot: Snapshot, o: PassOptions, tally: Tally): NodePart[] {
  const parts: NodePart[] = [];
  for (const node of NODE_NAMES) {
    let intent: HostIntent;
    try {
      intent = compileFor(snapshot, node, o);
    } catch (e) {
      tally.thrown(`compile ${node}`, e);
      tally.count('compile-refused');
      parts.push({ node });
      continue;
    }
    tally.count('intents');
    tally.count('elements', intent.elements.length);
    tally.count('fips-refused-by-compile', intent.refused.length);
    if (intent.tunnel) tally.count('tunnels');
    if (intent.mesh?.layer) tally.count('mesh-layers');
    const nft = intent.elements.filter((e) => e.kind !== 'table');
    if (!intent.elements.some((e) => e.kind === 'table')) {
      parts.push({ node, intent, elements: nft });
      continue;
    }
    try {
      parts.push({ node, intent, elements: nft, script: renderTable(nft, false) });
      tally.count('scripts');
    } catch (e) {
      tally.thrown(`render ${node}`, e);
      tally.count('render-refused');
      parts.push({ node, intent, elements: nft });
    }
  }
  return parts;
}
