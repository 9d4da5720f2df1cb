/**
 * The control plane: every operation on desired state (pools, floating IPs, port forwards,
 * nodes) as one optimistic transaction on the store. Validation and decisions are pure (core);
 * this layer reads records, calls them, and commits with compares on exactly what it read, so
 * two concurrent requests can never both win: 200 allocations at once give 200 distinct
 * addresses or a clean "pool exhausted", never a duplicate.
 */
import {
  type Address,
  compareAddressText,
  parseAddress,
  sortByAddress,
  tryParseMac,
} from '../core/address.js';
import { IpferryError } from '../core/errors.js';
import { keys, ROOT } from '../core/keys.js';
import { stringifyStored } from '../core/json.js';
import {
  addForward,
  allocatedWith,
  allocateFingerprint,
  associate,
  checkRelease,
  disassociate,
  move,
  newFloatingIp,
  refuseRoutedToGateway,
  removeForward,
  withTokenDigest,
} from '../core/lifecycle.js';
import type {
  FipState,
  FipStatus,
  FloatingIp,
  Neighbour,
  NodeHealth,
  NodeLiveness,
  NodeRecord,
  NodeView,
  PeerSighting,
  Pool,
  PoolEntry,
  PortForward,
} from '../core/model.js';
import {
  type EntryRange,
  freeAddresses,
  macPins,
  overlapBetween,
  poolEntryFor,
  poolRanges,
  poolSize,
} from '../core/pool.js';
import {
  type AllocateInput,
  type AssociateInput,
  type ForwardInput,
  type MoveInput,
  type PoolInput,
  type PoolUpdateInput,
  type ValidAllocate,
  checkName,
  describeEntry,
  invalid,
  ownAddressEntry,
  Problems,
  updatedPool,
  validateAllocate,
  validateAssociate,
  validateForward,
  validateMove,
  validatePool,
  validatePoolUpdate,
  type ValidPoolUpdate,
  withinTargetRanges,
} from '../core/validate.js';
import type { Compare, Op, Store } from '../store/store.js';
import { type UnmanagedNodeInput, validateUnmanagedNode } from '../core/farend.js';
import { livenessByNode, MeshControl, withHealth } from './mesh.js';
import { noteWrites } from './write-revision.js';
import { type AppliedQuery, waitApplied } from './applied.js';
import type { AppliedReport } from '../core/applied.js';
import {
  absent,
  getRecord,
  listRecords,
  optimistic,
  type Rec,
  RETRY,
  unchanged,
  usableRecord,
} from './records.js';
import type { ArpResponse, FipStatusView, FipView, IppoolEntryView, PoolView } from './views.js';

interface ClientTokenRecord {
  readonly address: string;
  readonly fingerprint: string;
}

interface PoolRecord extends Pool {
  /** Set while a delete is in progress, so no allocation can slip in between check and delete. */
  readonly deleting?: boolean;
  /**
   * Set while a change of targetRanges checks the pool's FIPs: a target brought in meanwhile
   * must be within these too (see updatePool).
   */
  readonly pendingTargetRanges?: readonly string[];
}

/** Status writes per transaction; etcd allows at most 128 operations in one. */
const STATUS_BATCH = 100;

/** Candidates to pick from at random, so concurrent allocators rarely collide. */
const ALLOCATION_SPREAD = 64;

export class ControlPlane {
  /** The fleet mesh: policy, confirmations, overlay addresses, removals, audit. */
  readonly mesh: MeshControl;

  /** The store, noting each write's revision for the request that made it (write-revision.ts). */
  readonly store: Store;

  constructor(
    store: Store,
    private readonly now: () => Date = () => new Date(),
  ) {
    this.store = noteWrites(store);
    this.mesh = new MeshControl(this.store, now);
  }

  // Pools -------------------------------------------------------------------------------------

  async createPool(input: PoolInput): Promise<PoolView> {
    const valid = validatePool(input);
    return optimistic('create pool', async () => {
      const node = await this.requireNode(valid.gateway);
      refuseOwnAddress(valid.entries, node.value);
      const [guard, pools] = await Promise.all([
        this.store.get(keys.poolsGuard),
        listRecords<PoolRecord>(this.store, keys.pools),
      ]);
      if (pools.items.some((p) => p.value.name === valid.name)) {
        throw new IpferryError('IPF_E_POOL_EXISTS', { pool: valid.name });
      }
      refusePoolOverlap(valid.name, poolRanges(valid), pools.items);
      const pool: Pool = { ...valid, createdAt: this.timestamp() };
      const result = await this.store.txn({
        compare: [
          { key: keys.poolsGuard, target: 'mod', op: '=', value: guard?.modRevision ?? 0 },
          absent(keys.pool(pool.name)),
          unchanged(keys.node(node.value.name), node),
        ],
        success: [
          { type: 'put', key: keys.pool(pool.name), value: stringifyStored(pool) },
          { type: 'put', key: keys.poolsGuard, value: String(pools.revision) },
        ],
      });
      return result.succeeded ? this.poolView(pool, result.revision, 0) : RETRY;
    });
  }

  async listPools(): Promise<PoolView[]> {
    const [pools, fips] = await Promise.all([
      listRecords<PoolRecord>(this.store, keys.pools),
      listRecords<FloatingIp>(this.store, keys.fips),
    ]);
    return pools.items
      .filter((p) => !p.value.deleting)
      .map((p) =>
        this.poolView(
          p.value,
          p.kv.modRevision,
          fips.items.filter((f) => f.value.pool === p.value.name).length,
        ),
      );
  }

  async getPool(name: string): Promise<PoolView> {
    const pool = await this.requirePool(name);
    const fips = await listRecords<FloatingIp>(this.store, keys.fips);
    return this.poolView(
      pool.value,
      pool.kv.modRevision,
      fips.items.filter((f) => f.value.pool === name).length,
    );
  }

  /**
   * Adds entries (shared ones too), removes single addresses no FIP holds, and sets the
   * description and tags, in one transaction. Added entries are checked against every other pool
   * under the pools guard, as a create is; each removed address is compared absent as a FIP, so
   * an allocation racing with the removal either lands first (and the update is refused) or
   * finds the pool changed and the address gone.
   */
  async updatePool(name: string, input: PoolUpdateInput): Promise<PoolView> {
    const update = validatePoolUpdate(input);
    const ranges = update.targetRanges;
    if (ranges === undefined) return this.writePoolUpdate(name, update);
    // Checked before the mark too, so that a refusal writes nothing unless an association raced it.
    await this.refuseTargetsOutside(name, ranges);
    const mark = await this.markTargetRanges(name, update, ranges);
    if (mark === undefined) return this.writePoolUpdate(name, update);
    try {
      await this.refuseTargetsOutside(name, ranges);
    } catch (e) {
      await this.store.txn({
        compare: [{ key: keys.pool(name), target: 'mod', op: '=', value: mark.revision }],
        success: [
          { type: 'put', key: keys.pool(name), value: stringifyStored(withoutPending(mark.value)) },
        ],
      });
      throw e;
    }
    const view = await this.writePoolUpdate(name, update, mark.revision);
    // Another write to the pool came between mark and update: the FIPs are checked again.
    return view ?? this.updatePool(name, input);
  }

  /**
   * The first step of a change of target ranges. "Every FIP's targets are within them" cannot be
   * compared in a transaction, so: the pool is marked with the new ranges (every association
   * that read the pool before fails its compare, and every one after is held to the old and the
   * new ranges), then its FIPs are checked, then the update is written if nothing else wrote the
   * pool meanwhile, or the mark taken back. Undefined when the ranges stay as they are.
   */
  private async markTargetRanges(
    name: string,
    update: ValidPoolUpdate,
    ranges: readonly string[],
  ): Promise<{ value: PoolRecord; revision: number } | undefined> {
    return optimistic('update pool', async () => {
      const pool = await this.requirePool(name);
      updatedPool(pool.value, update);
      if (sameList(pool.value.targetRanges ?? [], ranges)) return undefined;
      const value: PoolRecord = { ...withoutPending(pool.value), pendingTargetRanges: ranges };
      const r = await this.store.txn({
        compare: [unchanged(keys.pool(name), pool)],
        success: [{ type: 'put', key: keys.pool(name), value: stringifyStored(value) }],
      });
      return r.succeeded ? { value, revision: r.revision } : RETRY;
    });
  }

  /** Refuses target ranges that a target of one of the pool's FIPs is outside of. */
  private async refuseTargetsOutside(name: string, ranges: readonly string[]): Promise<void> {
    const fips = await listRecords<FloatingIp>(this.store, keys.fips);
    const p = new Problems();
    for (const { value: fip } of fips.items) {
      if (fip.pool !== name) continue;
      for (const target of new Set(targetsOf(fip))) {
        if (!withinTargetRanges(target, ranges))
          p.add(
            'targetRanges',
            `floating IP ${fip.address} goes to ${target}, outside ${ranges.length > 0 ? ranges.join(', ') : 'them'}: move or disassociate it first`,
          );
      }
    }
    p.done();
  }

  /**
   * Writes a pool update. With `marked`, only over the pool as markTargetRanges left it:
   * undefined when another write came between.
   */
  private async writePoolUpdate(name: string, update: ValidPoolUpdate): Promise<PoolView>;
  private async writePoolUpdate(
    name: string,
    update: ValidPoolUpdate,
    marked: number,
  ): Promise<PoolView | undefined>;
  private async writePoolUpdate(
    name: string,
    update: ValidPoolUpdate,
    marked?: number,
  ): Promise<PoolView | undefined> {
    return optimistic('update pool', async () => {
      const pool = await this.requirePool(name);
      if (marked !== undefined && pool.kv.modRevision !== marked) return undefined;
      // A mark left by an update that did not finish goes with any write of the pool.
      const next = updatedPool(withoutPending(pool.value), update);
      const [guard, pools, fips, gateway] = await Promise.all([
        this.store.get(keys.poolsGuard),
        listRecords<PoolRecord>(this.store, keys.pools),
        listRecords<FloatingIp>(this.store, keys.fips),
        getRecord<NodeRecord>(this.store, keys.node(pool.value.gateway)),
      ]);
      if (gateway) refuseOwnAddress(update.add, gateway.value);
      refusePoolOverlap(
        name,
        poolRanges({ entries: update.add, delivery: pool.value.delivery }),
        pools.items.filter((other) => other.value.name !== name),
      );
      const allocated = new Set(fips.items.map((f) => f.value.address));
      const held = update.remove.find((a) => allocated.has(a.text));
      if (held)
        throw new IpferryError('IPF_E_ADDRESS_ALLOCATED', { address: held.text, pool: name });
      const r = await this.store.txn({
        compare: [
          unchanged(keys.pool(name), pool),
          { key: keys.poolsGuard, target: 'mod', op: '=', value: guard?.modRevision ?? 0 },
          ...update.remove.map((a) => absent(keys.fip(a.text))),
          ...(gateway ? [unchanged(keys.node(gateway.value.name), gateway)] : []),
        ],
        success: [
          { type: 'put', key: keys.pool(name), value: stringifyStored(next) },
          ...(update.add.length > 0
            ? [{ type: 'put' as const, key: keys.poolsGuard, value: String(pools.revision) }]
            : []),
        ],
      });
      if (!r.succeeded) return RETRY;
      const count = fips.items.filter((f) => f.value.pool === name).length;
      return this.poolView(next, r.revision, count);
    });
  }

  /**
   * Deletes an empty pool. "No FIP in it" cannot be compared in a transaction, so: refuse if
   * it has FIPs (writing nothing); otherwise mark it deleting, which fails every allocation
   * still holding the old pool revision, check again, and delete it (or take the mark back if
   * an allocation won the race).
   */
  async deletePool(name: string): Promise<{ name: string; deleted: true }> {
    await this.refuseIfPoolInUse(name);
    const marked = await optimistic('delete pool', async () => {
      const pool = await this.requirePool(name);
      const value: PoolRecord = { ...pool.value, deleting: true };
      const r = await this.store.txn({
        compare: [unchanged(keys.pool(name), pool)],
        success: [{ type: 'put', key: keys.pool(name), value: stringifyStored(value) }],
      });
      return r.succeeded ? { value, revision: r.revision } : RETRY;
    });
    const stillMarked = {
      key: keys.pool(name),
      target: 'mod' as const,
      op: '=' as const,
      value: marked.revision,
    };
    try {
      await this.refuseIfPoolInUse(name);
    } catch (e) {
      const { deleting: _mark, ...restored } = marked.value;
      await this.store.txn({
        compare: [stillMarked],
        success: [{ type: 'put', key: keys.pool(name), value: stringifyStored(restored) }],
      });
      throw e;
    }
    await this.store.txn({
      compare: [stillMarked],
      success: [
        { type: 'delete', key: keys.pool(name) },
        { type: 'put', key: keys.poolsGuard, value: String(marked.revision) },
      ],
    });
    return { name, deleted: true };
  }

  private async refuseIfPoolInUse(name: string): Promise<void> {
    const fips = await listRecords<FloatingIp>(this.store, keys.fips);
    const count = fips.items.filter((f) => f.value.pool === name).length;
    if (count > 0) throw new IpferryError('IPF_E_POOL_IN_USE', { pool: name, count });
  }

  // Floating IPs ------------------------------------------------------------------------------

  async allocate(input: AllocateInput): Promise<FipView & { created: boolean }> {
    const request = validateAllocate(input);
    return optimistic('allocate', async () => {
      const token = request.clientToken;
      const tokenKey = token ? keys.clientToken(token) : undefined;
      // Older versions kept a token under its own text: a retry still finds it there.
      const legacyKey = token ? keys.legacyClientToken(token) : undefined;
      const [held, legacy] = await Promise.all([
        tokenKey ? getRecord<ClientTokenRecord>(this.store, tokenKey) : undefined,
        legacyKey ? getRecord<ClientTokenRecord>(this.store, legacyKey) : undefined,
      ]);
      const remembered = held ?? legacy;
      if (token && remembered) {
        const replay = await this.replayClientToken(request, token, remembered.value);
        if (replay) return { ...replay, created: false };
      }
      const [pools, fips] = await Promise.all([
        listRecords<PoolRecord>(this.store, keys.pools),
        listRecords<FloatingIp>(this.store, keys.fips),
      ]);
      const { pool, address } = this.pickAddress(request, pools.items, fips.items);
      const fip = newFloatingIp(pool.value, address, request, this.timestamp());
      const ops: Op[] = [{ type: 'put', key: keys.fip(fip.address), value: stringifyStored(fip) }];
      if (tokenKey) {
        const record: ClientTokenRecord = {
          address: fip.address,
          fingerprint: allocateFingerprint(request),
        };
        ops.push({ type: 'put', key: tokenKey, value: stringifyStored(record) });
      }
      // An older record of this token whose FIP is gone makes way for the new one.
      if (legacyKey && legacy) ops.push({ type: 'delete', key: legacyKey });
      const result = await this.store.txn({
        compare: [
          unchanged(keys.pool(pool.value.name), pool),
          absent(keys.fip(fip.address)),
          ...(tokenKey ? [unchanged(tokenKey, held)] : []),
          ...(legacyKey ? [unchanged(legacyKey, legacy)] : []),
        ],
        success: ops,
      });
      if (!result.succeeded) return RETRY;
      return { ...this.fipView(fip, result.revision, undefined), created: true };
    });
  }

  private async replayClientToken(
    request: ValidAllocate,
    token: string,
    remembered: ClientTokenRecord,
  ): Promise<FipView | undefined> {
    if (remembered.fingerprint !== allocateFingerprint(request)) {
      throw new IpferryError('IPF_E_CLIENT_TOKEN_REUSED', { token });
    }
    const fip = await getRecord<FloatingIp>(this.store, keys.fip(remembered.address));
    if (!fip || !allocatedWith(fip.value, token)) return undefined;
    const status = await getRecord<FipStatus>(this.store, keys.status(remembered.address));
    return this.fipView(fip.value, fip.kv.modRevision, status?.value);
  }

  private pickAddress(
    request: ValidAllocate,
    pools: readonly Rec<PoolRecord>[],
    fips: readonly Rec<FloatingIp>[],
  ): { pool: Rec<PoolRecord>; address: Address } {
    const live = pools
      .filter((p) => !p.value.deleting)
      .sort((a, b) => (a.value.name < b.value.name ? -1 : 1));
    const named = request.pool ? live.find((p) => p.value.name === request.pool) : undefined;
    if (request.pool && !named)
      throw new IpferryError('IPF_E_POOL_NOT_FOUND', { pool: request.pool });
    const candidates = named ? [named] : live;
    const scope =
      (named ? `pool ${named.value.name}` : 'any pool') +
      (request.family ? ` (IPv${request.family})` : '');
    const used = new Set(fips.map((f) => f.value.address));
    if (request.address) {
      const address = request.address;
      const pool = candidates.find((p) => poolEntryFor(p.value, address));
      if (!pool)
        throw new IpferryError('IPF_E_ADDRESS_NOT_IN_POOL', { address: address.text, scope });
      if (used.has(address.text))
        throw new IpferryError('IPF_E_FIP_IN_USE', { address: address.text });
      return { pool, address };
    }
    for (const pool of candidates) {
      const free = freeAddresses(pool.value, used, ALLOCATION_SPREAD, request.family);
      const address = free[Math.floor(Math.random() * free.length)];
      if (address) return { pool, address };
    }
    throw new IpferryError('IPF_E_POOL_EXHAUSTED', {
      scope: candidates.length === 0 ? 'any pool (there are none)' : scope,
    });
  }

  async listFips(filter: { pool?: string } = {}): Promise<FipView[]> {
    const [fips, statuses] = await Promise.all([
      listRecords<FloatingIp>(this.store, keys.fips),
      listRecords<FipStatus>(this.store, keys.statuses),
    ]);
    const statusOf = new Map(statuses.items.map((s) => [s.value.address, s.value]));
    const listed = fips.items.filter((f) => !filter.pool || f.value.pool === filter.pool);
    return sortByAddress(listed, (f) => f.value.address).map((f) =>
      this.fipView(f.value, f.kv.modRevision, statusOf.get(f.value.address)),
    );
  }

  async getFip(addressText: string): Promise<FipView> {
    const fip = await this.requireFip(addressText);
    const status = await getRecord<FipStatus>(this.store, keys.status(fip.value.address));
    return this.fipView(fip.value, fip.kv.modRevision, status?.value);
  }

  async associate(addressText: string, input: AssociateInput): Promise<FipView> {
    return this.updateFip('associate', addressText, async (fip) => {
      const request = validateAssociate(input, fip.value);
      if (request.node) await this.requireNode(request.node);
      const next = associate(fip.value, request, this.timestamp());
      await this.refuseRoutedToGateway(next);
      return next;
    });
  }

  async move(addressText: string, input: MoveInput): Promise<FipView> {
    return this.updateFip('move', addressText, async (fip) => {
      const { address, family, association } = fip.value;
      const request = validateMove(input, {
        address,
        family,
        ...(association ? { mode: association.mode } : {}),
      });
      if (request.node) await this.requireNode(request.node);
      const next = move(fip.value, request.target, request.node, this.timestamp());
      await this.refuseRoutedToGateway(next);
      return next;
    });
  }

  async disassociate(addressText: string): Promise<FipView> {
    return this.updateFip('disassociate', addressText, async (fip) => {
      await Promise.resolve();
      return disassociate(fip.value);
    });
  }

  /**
   * Releases a FIP. With `ifRevision`, only if its record is the one read at that revision: a
   * caller that decided on an older read (another writer added a forward since) is refused with
   * IPF_E_FIP_CHANGED rather than dropping what it never saw.
   */
  async release(
    addressText: string,
    force: boolean,
    ifRevision?: number,
  ): Promise<{ address: string; released: boolean }> {
    return optimistic('release', async () => {
      const fip = await this.requireFip(addressText, 'release');
      if (ifRevision !== undefined && fip.kv.modRevision !== ifRevision)
        throw new IpferryError('IPF_E_FIP_CHANGED', {
          address: fip.value.address,
          revision: String(ifRevision),
        });
      checkRelease(fip.value, force);
      const pool = await getRecord<Pool>(this.store, keys.pool(fip.value.pool));
      const ops: Op[] = [
        { type: 'delete', key: keys.fip(fip.value.address) },
        { type: 'delete', key: keys.status(fip.value.address) },
        ...this.natTargetOps(fip.value, undefined, pool?.value.gateway),
      ];
      ops.push(...clientTokenDeletes(fip.value));
      const r = await this.store.txn({
        compare: [unchanged(keys.fip(fip.value.address), fip)],
        success: ops,
      });
      return r.succeeded ? { address: fip.value.address, released: true } : RETRY;
    });
  }

  /** Whether the write at `query.revision` is applied by every agent it concerns (applied.ts). */
  applied(query: AppliedQuery, waitMs: number): Promise<AppliedReport> {
    return waitApplied(this.store, query, waitMs);
  }

  // Port forwards -----------------------------------------------------------------------------

  async listForwards(addressText: string): Promise<PortForward[]> {
    return [...(await this.requireFip(addressText)).value.forwards];
  }

  async addForward(addressText: string, input: ForwardInput): Promise<PortForward> {
    let added: PortForward | undefined;
    await this.updateFip('add forward', addressText, async (fip) => {
      const request = validateForward(input, fip.value.family);
      if (request.node) await this.requireNode(request.node);
      const gateway = await this.gatewayOf(fip.value);
      const result = addForward(fip.value, request, gateway?.reservedPorts ?? [], this.timestamp());
      added = result.forward;
      return result.fip;
    });
    if (!added) throw new IpferryError('IPF_E_INTERNAL', { reason: 'forward not recorded' });
    return added;
  }

  async removeForward(
    addressText: string,
    id: string,
  ): Promise<{ address: string; id: string; removed: true }> {
    const view = await this.updateFip('remove forward', addressText, async (fip) => {
      await Promise.resolve();
      return removeForward(fip.value, id);
    });
    return { address: view.address, id, removed: true };
  }

  /**
   * Read the FIP, decide its next value, commit if it did not change meanwhile. The NAT-target
   * index is kept in the same transaction, so two FIPs can never claim one nat target.
   */
  private async updateFip(
    what: string,
    addressText: string,
    decide: (fip: Rec<FloatingIp>) => Promise<FloatingIp>,
  ): Promise<FipView> {
    return optimistic(what, async () => {
      const fip = await this.requireFip(addressText);
      const next = await decide(fip);
      const status = await getRecord<FipStatus>(this.store, keys.status(fip.value.address));
      if (next === fip.value) return this.fipView(fip.value, fip.kv.modRevision, status?.value);
      await this.refusePooledTargets(fip.value, next);
      const pool = await getRecord<PoolRecord>(this.store, keys.pool(fip.value.pool));
      const added = addedTargets(fip.value, next);
      if (pool && added.length > 0) refuseOutsideTargetRanges(pool.value, added);
      const gateway = pool?.value.gateway;
      const compare = [unchanged(keys.fip(fip.value.address), fip)];
      // The pool's target ranges were read: a change of them (updatePool) must not slip in.
      if (pool && added.length > 0) compare.push(unchanged(keys.pool(pool.value.name), pool));
      const tokenOps = await this.migrateClientToken(next, compare);
      const record = withTokenDigest(next);
      const claim = natTarget(next);
      if (gateway && claim && claim !== natTarget(fip.value)) {
        const holder = await getRecord<string>(this.store, keys.natTarget(gateway, claim));
        if (holder && holder.value !== next.address) {
          throw new IpferryError('IPF_E_TARGET_IN_USE', {
            target: claim,
            address: holder.value,
            mode: 'nat',
          });
        }
        compare.push(unchanged(keys.natTarget(gateway, claim), holder));
      }
      const r = await this.store.txn({
        compare,
        success: [
          { type: 'put', key: keys.fip(next.address), value: stringifyStored(record) },
          ...this.natTargetOps(fip.value, next, gateway),
          ...tokenOps,
        ],
      });
      return r.succeeded ? this.fipView(record, r.revision, status?.value) : RETRY;
    });
  }

  /**
   * A target is a server's address. One that a pool holds belongs to a floating IP (allocated or
   * not): forwarded there, the traffic reaches that pool's gateway as if from outside, which
   * drops it (`drop`, compile/gateway.ts) or answers from another address than the client asked,
   * so the FIP would be associated and never work. Only targets this change brings in are
   * checked: a FIP stored before keeps working for everything else.
   */
  private async refusePooledTargets(before: FloatingIp, next: FloatingIp): Promise<void> {
    const had = new Set(targetsOf(before));
    const added = new Set(targetsOf(next).filter((t) => !had.has(t) && t !== next.address));
    if (added.size === 0) return;
    const pools = (await listRecords<PoolRecord>(this.store, keys.pools)).items.filter(
      (p) => !p.value.deleting,
    );
    const p = new Problems();
    for (const target of added) {
      const address = parseAddress(target);
      const pool = pools.find((q) => poolEntryFor(q.value, address));
      if (!pool) continue;
      const fip = await getRecord<FloatingIp>(this.store, keys.fip(address.text));
      const what = fip ? 'a floating IP of pool' : 'an address of pool';
      const onward =
        fip?.value.association && fip.value.association.mode !== 'routed'
          ? ` (${address.text} itself goes to ${fip.value.association.target}: target that)`
          : '';
      p.add(
        'target',
        `${address.text} is ${what} ${pool.value.name}, not a server: traffic sent there would reach that pool's gateway as if from outside and be dropped. Give the server's own address${onward}, with --node for a server behind a tunnel`,
      );
    }
    p.done();
  }

  /**
   * A FIP record an older version wrote holds its client token as text: its next write stores
   * the digest instead (withTokenDigest), and the token's own record moves to the digest's key
   * in the same transaction, compared on both keys. Nothing for a record of this version.
   */
  private async migrateClientToken(fip: FloatingIp, compare: Compare[]): Promise<Op[]> {
    if (fip.clientToken === undefined) return [];
    const from = keys.legacyClientToken(fip.clientToken);
    const to = keys.clientToken(fip.clientToken);
    const [old, current] = await Promise.all([
      getRecord<ClientTokenRecord>(this.store, from),
      getRecord<ClientTokenRecord>(this.store, to),
    ]);
    compare.push(unchanged(from, old), unchanged(to, current));
    if (!old) return [];
    return [
      { type: 'delete', key: from },
      ...(current ? [] : [{ type: 'put' as const, key: to, value: stringifyStored(old.value) }]),
    ];
  }

  private natTargetOps(
    before: FloatingIp,
    after: FloatingIp | undefined,
    gateway: string | undefined,
  ): Op[] {
    if (!gateway) return [];
    const old = natTarget(before);
    const now = after ? natTarget(after) : undefined;
    if (old === now) return [];
    return [
      ...(old ? [{ type: 'delete' as const, key: keys.natTarget(gateway, old) }] : []),
      ...(now && after
        ? [
            {
              type: 'put' as const,
              key: keys.natTarget(gateway, now),
              value: stringifyStored(after.address),
            },
          ]
        : []),
    ];
  }

  // Nodes and status --------------------------------------------------------------------------

  /**
   * Creates or refreshes a node's record (called by its own agent). The node keeps its overlay
   * address; when the mesh has a policy and the node has none yet, it gets one.
   */
  async registerNode(record: Omit<NodeRecord, 'registeredAt' | 'overlayIp'>): Promise<NodeRecord> {
    const p = new Problems();
    checkName(p, 'node', record.name);
    p.done();
    const registered = await optimistic('register node', async () => {
      const existing = await getRecord<NodeRecord>(this.store, keys.node(record.name));
      const overlayIp = existing?.value.overlayIp;
      const next: NodeRecord = {
        ...record,
        ...(overlayIp ? { overlayIp } : {}),
        registeredAt: existing?.value.registeredAt ?? this.timestamp(),
      };
      const r = await this.store.txn({
        compare: [unchanged(keys.node(record.name), existing)],
        success: [{ type: 'put', key: keys.node(record.name), value: stringifyStored(next) }],
      });
      return r.succeeded ? next : RETRY;
    });
    const overlayIp = await this.mesh.ensureOverlay(record.name);
    return overlayIp ? { ...registered, overlayIp } : registered;
  }

  /**
   * Registers a node that runs no agent (core/farend.ts): refused when the name is taken or its
   * key is another node's. It gets no overlay address: without an agent it takes no part in
   * the mesh.
   */
  async addUnmanagedNode(input: UnmanagedNodeInput): Promise<NodeRecord> {
    const valid = validateUnmanagedNode(input);
    return optimistic('add node', async () => {
      const nodes = await listRecords<NodeRecord>(this.store, keys.nodes);
      if (nodes.items.some((n) => n.value.name === valid.name))
        throw new IpferryError('IPF_E_NODE_EXISTS', { node: valid.name });
      const owner = nodes.items.find((n) => n.value.publicKey === valid.publicKey);
      if (owner) invalid('publicKey', `is the tunnel key of node ${owner.value.name}`);
      const next: NodeRecord = { ...valid, registeredAt: this.timestamp() };
      const r = await this.store.txn({
        compare: [absent(keys.node(valid.name))],
        success: [{ type: 'put', key: keys.node(valid.name), value: stringifyStored(next) }],
      });
      return r.succeeded ? next : RETRY;
    });
  }

  async listNodes(): Promise<NodeView[]> {
    const [nodes, alive, health] = await Promise.all([
      listRecords<NodeRecord>(this.store, keys.nodes),
      listRecords<NodeLiveness>(this.store, keys.alive),
      listRecords<NodeHealth>(this.store, keys.health),
    ]);
    const aliveOf = livenessByNode(
      alive.items.map((a) => a.value),
      health.items.map((h) => h.value),
    );
    const byKey = keyOwners(nodes.items.map((n) => n.value));
    return nodes.items.map((n) =>
      withSightings(nodeView(n.value, aliveOf.get(n.value.name), byKey), aliveOf),
    );
  }

  async getNode(name: string): Promise<NodeView> {
    const node = await this.requireNode(name);
    const [alive, health, nodes] = await Promise.all([
      getRecord<NodeLiveness>(this.store, keys.nodeAlive(name)),
      getRecord<NodeHealth>(this.store, keys.nodeHealth(name)),
      listRecords<NodeRecord>(this.store, keys.nodes),
    ]);
    const view = nodeView(
      node.value,
      withHealth(alive?.value, health?.value),
      keyOwners(nodes.items.map((n) => n.value)),
    );
    if (!node.value.unmanaged) return view;
    // Only the agents that peer with it can tell how its tunnel does.
    const [everyAlive, everyHealth] = await Promise.all([
      listRecords<NodeLiveness>(this.store, keys.alive),
      listRecords<NodeHealth>(this.store, keys.health),
    ]);
    const aliveOf = livenessByNode(
      everyAlive.items.map((a) => a.value),
      everyHealth.items.map((h) => h.value),
    );
    return withSightings(view, aliveOf);
  }

  /**
   * Records what an agent realised. Fenced on each FIP's revision: a status for a record that
   * has changed since is dropped, so a slow agent never reports a stale decision as current.
   * Written in batches (one transaction, one fsync, for up to STATUS_BATCH FIPs); a batch that
   * fails its fence is retried FIP by FIP so the others still land. Returns how many landed.
   */
  async reportStatuses(statuses: readonly FipStatus[]): Promise<number> {
    let landed = 0;
    for (let i = 0; i < statuses.length; i += STATUS_BATCH) {
      const batch = statuses.slice(i, i + STATUS_BATCH);
      if (await this.writeStatuses(batch)) landed += batch.length;
      else if (batch.length > 1) {
        for (const one of batch) if (await this.writeStatuses([one])) landed++;
      }
    }
    return landed;
  }

  private async writeStatuses(statuses: readonly FipStatus[]): Promise<boolean> {
    const r = await this.store.txn({
      compare: statuses.map((s) => ({
        key: keys.fip(s.address),
        target: 'mod' as const,
        op: '=' as const,
        value: s.revision,
      })),
      success: statuses.map((s) => ({
        type: 'put' as const,
        key: keys.status(s.address),
        value: stringifyStored(s),
      })),
    });
    return r.succeeded;
  }

  /** Counts for `ipferry status`, consistent with one store revision. */
  async summary(): Promise<{
    revision: number;
    fips: Record<FipState, number>;
    nodes: { total: number; alive: number };
  }> {
    const { kvs, revision } = await this.store.list(ROOT);
    const fips: Record<FipState, number> = { ACTIVE: 0, DOWN: 0, UNREACHABLE: 0, ERROR: 0 };
    const statuses = new Map<string, FipStatus>();
    for (const kv of kvs) {
      if (kv.key.startsWith(keys.statuses)) {
        const s = usableRecord<FipStatus>(kv);
        if (s) statuses.set(s.address, s);
      }
    }
    let nodes = 0;
    let alive = 0;
    for (const kv of kvs) {
      if (kv.key.startsWith(keys.fips)) {
        // A FIP record no agent can use is reported ERROR by its gateway: count it so.
        const fip = usableRecord<FloatingIp>(kv);
        fips[fip ? statusView(fip, kv.modRevision, statuses.get(fip.address)).state : 'ERROR']++;
      } else if (kv.key.startsWith(keys.nodes)) nodes++;
      else if (kv.key.startsWith(keys.alive)) alive++;
    }
    return { revision, fips, nodes: { total: nodes, alive } };
  }

  async ippool(): Promise<IppoolEntryView[]> {
    const [pools, fips] = await Promise.all([
      listRecords<PoolRecord>(this.store, keys.pools),
      listRecords<FloatingIp>(this.store, keys.fips),
    ]);
    return pools.items
      .filter((p) => !p.value.deleting)
      .map(({ value: pool }) => ({
        pool: pool.name,
        gateway: pool.gateway,
        entries: pool.entries.map(describeEntry),
        size: poolSize(pool).toString(),
        allocated: sortByAddress(
          fips.items.filter((f) => f.value.pool === pool.name).map((f) => f.value),
          (f) => f.address,
        ).map((f) => ({
          address: f.address,
          ...(f.association ? { target: f.association.target, mode: f.association.mode } : {}),
        })),
      }));
  }

  /** MAC → address: a pool's pinned MAC first (IP Floater's `arp`), then the gateway's neighbours. */
  async arp(macText: string, neighbours: () => Promise<Neighbour[]>): Promise<ArpResponse> {
    const mac = tryParseMac(macText);
    if (!mac)
      invalid(
        'mac',
        `${JSON.stringify(macText)} is not a MAC address (six hex pairs, e.g. 52:54:00:12:34:56)`,
      );
    const pools = await listRecords<Pool>(this.store, keys.pools);
    for (const { value: pool } of pools.items) {
      const pin = macPins(pool).find((m) => m.mac === mac);
      if (pin) return { mac, address: pin.address, source: 'pool', pool: pool.name };
    }
    const seen = (await neighbours())
      .filter((n) => n.mac === mac)
      .sort((a, b) => compareAddressText(a.address, b.address));
    const first = seen.find((n) => parseAddress(n.address).family === 4) ?? seen[0];
    if (first)
      return { mac, address: first.address, source: 'neighbour', interface: first.interface };
    throw new IpferryError('IPF_E_NOT_FOUND_MAC', { mac });
  }

  // Helpers -----------------------------------------------------------------------------------

  private async requirePool(name: string): Promise<Rec<PoolRecord>> {
    const pool = await getRecord<PoolRecord>(this.store, keys.pool(name));
    if (!pool || pool.value.deleting)
      throw new IpferryError('IPF_E_POOL_NOT_FOUND', { pool: name });
    return pool;
  }

  /**
   * The FIP at an address. When there is none, the error says what would make it one: allocate
   * it if a pool holds it, else put it in a pool first (for a release: that it is not allocated).
   */
  private async requireFip(addressText: string, purpose?: 'release'): Promise<Rec<FloatingIp>> {
    const address = parseAddress(addressText);
    const fip = await getRecord<FloatingIp>(this.store, keys.fip(address.text));
    if (fip) return fip;
    if (purpose === 'release')
      throw new IpferryError('IPF_E_FIP_NOT_ALLOCATED', { address: address.text });
    const pools = await listRecords<PoolRecord>(this.store, keys.pools);
    const pooled = pools.items.some((p) => !p.value.deleting && poolEntryFor(p.value, address));
    throw new IpferryError(pooled ? 'IPF_E_FIP_NOT_FOUND' : 'IPF_E_FIP_NOT_IN_POOL', {
      address: address.text,
    });
  }

  private async refuseRoutedToGateway(fip: FloatingIp): Promise<void> {
    if (fip.association?.mode !== 'routed') return;
    const pool = await getRecord<Pool>(this.store, keys.pool(fip.pool));
    if (pool) refuseRoutedToGateway(fip, pool.value);
  }

  private async requireNode(name: string): Promise<Rec<NodeRecord>> {
    if (!checkName(new Problems(), 'node', name))
      invalid('node', `${JSON.stringify(name)} is not a valid node name`);
    const node = await getRecord<NodeRecord>(this.store, keys.node(name));
    if (!node) throw new IpferryError('IPF_E_NODE_NOT_FOUND', { node: name });
    return node;
  }

  private async gatewayOf(fip: FloatingIp): Promise<NodeRecord | undefined> {
    const pool = await getRecord<Pool>(this.store, keys.pool(fip.pool));
    if (!pool) return undefined;
    return (await getRecord<NodeRecord>(this.store, keys.node(pool.value.gateway)))?.value;
  }

  private poolView(pool: PoolRecord, revision: number, allocated: number): PoolView {
    const { deleting: _d, pendingTargetRanges: _p, ...rest } = pool;
    return { ...rest, revision, size: poolSize(pool).toString(), allocated };
  }

  /**
   * A FIP as clients see it: without its client token, not even the digest (it would tell a
   * reader that guesses tokens which one is used).
   */
  private fipView(fip: FloatingIp, revision: number, status: FipStatus | undefined): FipView {
    const { clientToken: _token, clientTokenSha256: _digest, ...shown } = fip;
    return { ...shown, revision, status: statusView(fip, revision, status) };
  }

  private timestamp(): string {
    return this.now().toISOString();
  }
}

/**
 * Every address belongs to at most one pool. The other pools' ranges, tagged with their pool, are
 * swept together with the new ones in one pass: comparing pool by pool would sort the new
 * ranges once per pool.
 */
function refusePoolOverlap(
  name: string,
  mine: readonly EntryRange[],
  others: readonly Rec<PoolRecord>[],
): void {
  if (mine.length === 0) return;
  const theirs = others.flatMap((o) =>
    poolRanges(o.value).map(({ range }) => ({ range, pool: o.value.name })),
  );
  const hit = overlapBetween(mine, theirs);
  if (hit)
    throw new IpferryError('IPF_E_POOL_OVERLAP', {
      pool: name,
      other: hit.other.pool,
      address: hit.at.text,
    });
}

/** A single address the gateway registered as its own may only be a shared entry. */
function refuseOwnAddress(entries: readonly PoolEntry[], gateway: NodeRecord): void {
  const own = ownAddressEntry(entries, gateway.addresses);
  if (own) throw new IpferryError('IPF_E_ADDRESS_OWN', { address: own, node: gateway.name });
}

/** Deletes the key of the client token a FIP was allocated with, in this version's form or the older one. */
function clientTokenDeletes(fip: FloatingIp): Op[] {
  return [
    ...(fip.clientTokenSha256
      ? [{ type: 'delete' as const, key: keys.clientTokenByDigest(fip.clientTokenSha256) }]
      : []),
    ...(fip.clientToken !== undefined
      ? [
          { type: 'delete' as const, key: keys.legacyClientToken(fip.clientToken) },
          { type: 'delete' as const, key: keys.clientToken(fip.clientToken) },
        ]
      : []),
  ];
}

/** Where a FIP sends traffic: its association's target (but a routed FIP's, itself) and its forwards'. */
function targetsOf(fip: FloatingIp): string[] {
  const a = fip.association;
  return [...(a && a.mode !== 'routed' ? [a.target] : []), ...fip.forwards.map((f) => f.target)];
}

/** Targets `next` sends traffic to that `before` did not (not the FIP itself: routed). */
function addedTargets(before: FloatingIp, next: FloatingIp): string[] {
  const had = new Set(targetsOf(before));
  return [...new Set(targetsOf(next))].filter((t) => !had.has(t) && t !== next.address);
}

/** A target outside the pool's target ranges (and, while they change, the new ones) is refused. */
function refuseOutsideTargetRanges(pool: PoolRecord, targets: readonly string[]): void {
  const p = new Problems();
  for (const target of targets) {
    if (withinTargetRanges(target, pool.targetRanges, pool.pendingTargetRanges)) continue;
    const ranges = [
      ...new Set([...(pool.targetRanges ?? []), ...(pool.pendingTargetRanges ?? [])]),
    ];
    p.add(
      'target',
      `${target} is outside the target ranges of pool ${pool.name} (${ranges.join(', ')}): forward to a server within them, or change them with \`ipferry pool update ${pool.name} --targets\``,
    );
  }
  p.done();
}

function withoutPending(pool: PoolRecord): PoolRecord {
  const { pendingTargetRanges: _p, ...rest } = pool;
  return rest;
}

function sameList(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

function natTarget(fip: FloatingIp): string | undefined {
  return fip.association?.mode === 'nat' ? fip.association.target : undefined;
}

function statusView(
  fip: FloatingIp,
  revision: number,
  status: FipStatus | undefined,
): FipStatusView {
  if (!status) {
    return fip.association
      ? { state: 'DOWN', message: 'not yet realised by the gateway agent' }
      : { state: 'DOWN' };
  }
  return {
    state: status.state,
    node: status.node,
    revision: status.revision,
    ...(status.revision < revision ? { stale: true } : {}),
    ...(status.message ? { message: status.message } : {}),
    updatedAt: status.updatedAt,
  };
}

/** An unmanaged node's tunnel as the agents peering with it report it (NodeView.seenBy). */
function withSightings(view: NodeView, aliveOf: ReadonlyMap<string, NodeLiveness>): NodeView {
  if (!view.unmanaged || !view.publicKey) return view;
  const seenBy: PeerSighting[] = [];
  for (const [node, liveness] of aliveOf) {
    const t = liveness.tunnel;
    const peer = t?.peers.find((p) => p.publicKey === view.publicKey);
    if (t && peer) seenBy.push({ node, tunnel: t.name, checkedAt: t.checkedAt, peer });
  }
  return seenBy.length > 0 ? { ...view, seenBy } : view;
}

function keyOwners(nodes: readonly NodeRecord[]): Map<string, string> {
  return new Map(nodes.flatMap((n) => (n.publicKey ? [[n.publicKey, n.name] as const] : [])));
}

function nodeView(
  node: NodeRecord,
  alive: NodeLiveness | undefined,
  byKey: ReadonlyMap<string, string>,
): NodeView {
  const tunnel = alive?.tunnel && {
    ...alive.tunnel,
    peers: alive.tunnel.peers.map((p) => {
      const peer = byKey.get(p.publicKey);
      return peer ? { ...p, node: peer } : p;
    }),
  };
  return {
    ...node,
    alive: alive !== undefined,
    ...(alive ? { aliveSince: alive.since } : {}),
    ...(tunnel ? { tunnel } : {}),
    ...(alive?.mesh ? { mesh: alive.mesh } : {}),
  };
}
