/**
 * Waiting for a write to be applied: which agents a write concerns (read from the store), what
 * they last reported (FIP statuses, health records' latest pass), judged by core/applied.ts; and
 * a wait that follows the store's watch on those reports until the answer is final or time is up.
 */
import { parseAddress } from '../core/address.js';
import {
  appliedReport,
  type AppliedReport,
  type ConcernedAgent,
  type PassReport,
  settled,
} from '../core/applied.js';
import { stringifyStored, parseStored } from '../core/json.js';
import { keys, PASS_WANTED_KEY } from '../core/keys.js';
import { decodePassWanted, mergePassWanted, type PassWanted } from '../core/pass-wanted.js';
import type { FipStatus, FloatingIp, NodeHealth, NodeRecord, Pool } from '../core/model.js';
import { poolEntryFor } from '../core/pool.js';
import type { Store, Watch } from '../store/store.js';
import { getRecord, listRecords } from './records.js';

/** The write to wait for and what it touched. */
export interface AppliedQuery {
  /** The write's store revision (the API's `ipferry-revision` answer header). */
  readonly revision: number;
  /** A FIP the write changed or released: its gateway, target node and forwards' nodes. */
  readonly fip?: string;
  /** A pool the write created or changed: its gateway. */
  readonly pool?: string;
  /** Nodes named by the caller. */
  readonly nodes?: readonly string[];
  /** Every node whose agent is alive (node and mesh writes). */
  readonly all?: boolean;
}

/** The most a single call waits; a client that wants longer asks again. */
export const MAX_WAIT_MS = 25_000;

/**
 * The report now, or once it is settled (final, and no FIP held DOWN: core/applied.ts), or
 * when `waitMs` has passed.
 */
export async function waitApplied(
  store: Store,
  query: AppliedQuery,
  waitMs: number,
): Promise<AppliedReport> {
  const deadline = Date.now() + Math.min(Math.max(0, waitMs), MAX_WAIT_MS);
  let wake: () => void = () => undefined;
  let changed = false;
  const onEvents = (): void => {
    changed = true;
    wake();
  };
  // Opened before the first read: a report written in between wakes the loop, none is missed.
  const watches: Watch[] = [keys.statuses, keys.health, keys.alive].map((prefix) =>
    store.watch(prefix, { onEvents, onError: onEvents }),
  );
  let asked = false;
  try {
    for (;;) {
      changed = false;
      const agents = await concernedAgents(store, query);
      const report = appliedReport(query.revision, agents);
      const left = deadline - Date.now();
      if (settled(report) || left <= 0) return report;
      if (!asked) {
        asked = true;
        await askForPasses(store, query, agents);
      }
      if (!changed) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, left);
          wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
      }
      wake = () => undefined;
    }
  } finally {
    for (const w of watches) w.close();
  }
}

/**
 * Asks the agents judged by their pass (all but a FIP's gateway) to report it (PASS_WANTED_KEY):
 * agents write no report per pass unasked. Best effort: when the ask cannot be written, each
 * agent's liveness beat still reports a new pass within seconds.
 */
async function askForPasses(
  store: Store,
  query: AppliedQuery,
  agents: readonly ConcernedAgent[],
): Promise<void> {
  const byPass = agents.filter((a) => a.fip === undefined && a.alive).map((a) => a.node);
  if (byPass.length === 0 && !query.all) return;
  const ask: PassWanted = query.all
    ? { revision: query.revision }
    : { revision: query.revision, nodes: byPass };
  try {
    for (let attempt = 0; attempt < 3; attempt++) {
      const kv = await store.get(PASS_WANTED_KEY);
      const standing = kv ? decodePassWanted(parseStored(kv.key, kv.value)) : undefined;
      const next = mergePassWanted(standing, ask);
      if (!next) return;
      const { succeeded } = await store.txn({
        compare: [
          kv
            ? { key: PASS_WANTED_KEY, target: 'mod', op: '=', value: kv.modRevision }
            : { key: PASS_WANTED_KEY, target: 'create', op: '=', value: 0 },
        ],
        success: [{ type: 'put', key: PASS_WANTED_KEY, value: stringifyStored(next) }],
      });
      if (succeeded) return;
    }
  } catch {
    // The beat reports anyway (see above).
  }
}

/** The agents the query concerns, each with its latest reports; unmanaged nodes are left out. */
export async function concernedAgents(
  store: Store,
  query: AppliedQuery,
): Promise<ConcernedAgent[]> {
  const [nodes, alive, health] = await Promise.all([
    listRecords<NodeRecord>(store, keys.nodes),
    store.list(keys.alive),
    listRecords<NodeHealth>(store, keys.health),
  ]);
  const managed = new Set(nodes.items.filter((n) => !n.value.unmanaged).map((n) => n.value.name));
  const aliveNames = new Set(alive.kvs.map((kv) => kv.key.slice(keys.alive.length)));
  const passOf = new Map(health.items.map((h) => [h.value.name, passReport(h.value.pass)]));

  const names = new Set<string>(query.nodes ?? []);
  if (query.all) for (const n of aliveNames) names.add(n);
  let fipCheck: { gateway: string; fipRevision: number; status?: FipStatus } | undefined;
  if (query.pool !== undefined) {
    const pool = await getRecord<Pool>(store, keys.pool(query.pool));
    if (pool) names.add(pool.value.gateway);
  }
  if (query.fip !== undefined) {
    const found = await fipConcern(store, query.fip);
    for (const n of found.nodes) names.add(n);
    fipCheck = found.check;
  }
  return [...names]
    .filter((n) => managed.has(n))
    .sort()
    .map((node) => {
      const pass = passOf.get(node);
      return {
        node,
        alive: aliveNames.has(node),
        ...(pass ? { pass } : {}),
        ...(fipCheck?.gateway === node
          ? {
              fip: {
                fipRevision: fipCheck.fipRevision,
                ...(fipCheck.status ? { status: fipCheck.status } : {}),
              },
            }
          : {}),
      };
    });
}

async function fipConcern(
  store: Store,
  addressText: string,
): Promise<{
  nodes: string[];
  check?: { gateway: string; fipRevision: number; status?: FipStatus };
}> {
  const address = parseAddress(addressText);
  const fip = await getRecord<FloatingIp>(store, keys.fip(address.text));
  if (!fip) {
    // Released: its pool's gateway had something to take away.
    const pools = await listRecords<Pool>(store, keys.pools);
    const pool = pools.items.find((p) => poolEntryFor(p.value, address));
    return { nodes: pool ? [pool.value.gateway] : [] };
  }
  const [pool, status] = await Promise.all([
    getRecord<Pool>(store, keys.pool(fip.value.pool)),
    getRecord<FipStatus>(store, keys.status(address.text)),
  ]);
  const nodes = [
    ...(fip.value.association?.node ? [fip.value.association.node] : []),
    ...fip.value.forwards.flatMap((f) => (f.node ? [f.node] : [])),
  ];
  if (!pool) return { nodes };
  const gateway = pool.value.gateway;
  return {
    nodes: [gateway, ...nodes],
    check: {
      gateway,
      fipRevision: fip.kv.modRevision,
      ...(status ? { status: status.value } : {}),
    },
  };
}

/** A health record's pass as an agent wrote it, or nothing when it is not one. */
function passReport(value: unknown): PassReport | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  const { revision, errors } = value as { revision?: unknown; errors?: unknown };
  if (typeof revision !== 'number' || !Number.isSafeInteger(revision)) return undefined;
  const words = Array.isArray(errors) ? errors.filter((e) => typeof e === 'string') : [];
  return { revision, ...(words.length > 0 ? { errors: words } : {}) };
}
