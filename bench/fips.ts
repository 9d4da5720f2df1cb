/**
 * Synthetic desired state for the dataplane benchmarks: one routed pool in 198.18.0.0/15 (the
 * range RFC 2544 reserves for benchmarks: 131,072 addresses) whose provider routes it to the
 * gateway, and N `nat` FIPs, each to its own private target (one target belongs to one FIP per
 * gateway). The LAST FIP goes to the real backend, so traffic to it meets the whole rule set.
 */
import { addressFromValue, parseAddress } from '../src/core/address.js';
import type { CompileState } from '../src/core/compile/index.js';
import type { FloatingIp, Pool } from '../src/core/model.js';
import type { Redirection } from './floater.js';

export const BENCH_POOL = '198.18.0.0/15';
export const BENCH_GATEWAY = 'gw';
const FIP_BASE = parseAddress('198.18.0.0').value;
/** Targets of every FIP but the last: 10.128.0.1 onwards, nowhere in the lab. */
const TARGET_BASE = parseAddress('10.128.0.0').value;
/** 131,072 addresses in the pool, minus the first (the network's own-looking address). */
export const MAX_FIPS = 131_071;

export function fipAddress(i: number): string {
  return addressFromValue(4, FIP_BASE + BigInt(i + 1)).text;
}

export function dummyTarget(i: number): string {
  return addressFromValue(4, TARGET_BASE + BigInt(i + 1)).text;
}

/** N redirections; the last to `lastTarget`. */
export function redirections(n: number, lastTarget: string): Redirection[] {
  if (n < 1 || n > MAX_FIPS) throw new RangeError(`1..${MAX_FIPS} FIPs, not ${n}`);
  return Array.from({ length: n }, (_, i) => ({
    fip: fipAddress(i),
    target: i === n - 1 ? lastTarget : dummyTarget(i),
  }));
}

const CREATED = '2026-01-01T00:00:00.000Z';

export const benchPool: Pool = {
  name: 'bench',
  gateway: BENCH_GATEWAY,
  delivery: 'routed',
  entries: [{ kind: 'cidr', cidr: BENCH_POOL }],
  tags: [],
  createdAt: CREATED,
};

function floatingIp(r: Redirection): FloatingIp {
  return {
    address: r.fip,
    family: 4,
    pool: benchPool.name,
    shared: false,
    tags: [],
    association: { mode: 'nat', target: r.target, associatedAt: CREATED },
    forwards: [],
    allocatedAt: CREATED,
  };
}

/** The store's view of these redirections, as compile() takes it. */
export function compileState(rs: readonly Redirection[]): CompileState {
  return {
    pools: [benchPool],
    fips: rs.map((r) => ({ fip: floatingIp(r), revision: 1 })),
  };
}

/** The same state with FIP `index` moved to `target` (a new revision, as the store would give). */
export function moved(state: CompileState, index: number, target: string): CompileState {
  return {
    ...state,
    fips: state.fips.map((f, i) =>
      i === index
        ? {
            fip: {
              ...f.fip,
              association: { mode: 'nat' as const, target, associatedAt: CREATED },
            },
            revision: f.revision + 1,
          }
        : f,
    ),
  };
}
