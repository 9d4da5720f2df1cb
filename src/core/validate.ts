/**
 * Validation of everything a user can send, API and CLI alike. Each function collects every
 * problem before failing (one IPF_E_VALIDATION listing all of them), and returns the input in
 * canonical form, so that nothing sloppy ever reaches the store or the kernel.
 */
import {
  type Address,
  type AddressRange,
  compareAddresses,
  type Family,
  parseAddress,
  prefixRange,
  rangeContains,
  tryParseAddress,
  tryParseMac,
  tryParsePrefix,
  tryParseRange,
} from './address.js';
import { type Problem, validationError } from './errors.js';
import {
  ASSOCIATION_MODES,
  type AssociationMode,
  PROTOCOLS,
  type Pool,
  type PoolDelivery,
  type PoolEntry,
  type Protocol,
} from './model.js';
import { type EntryRange, MAX_POOL_ENTRIES, overlapsWithin, poolRanges } from './pool.js';

/** Collects problems; `done()` throws them all at once. */
export class Problems {
  readonly list: Problem[] = [];
  add(path: string, message: string): void {
    this.list.push({ path, message });
  }
  get ok(): boolean {
    return this.list.length === 0;
  }
  done(): void {
    if (!this.ok) throw validationError(this.list);
  }
}

/** Fails with a single problem. */
export function invalid(path: string, message: string): never {
  throw validationError([{ path, message }]);
}

const NAME = /^[a-z0-9](?:[a-z0-9._-]{0,61}[a-z0-9])?$/;
const TAG = /^[A-Za-z0-9][A-Za-z0-9._:=/-]{0,62}$/;
const INTERFACE = /^[A-Za-z0-9][A-Za-z0-9._@-]{0,14}$/;
const CLIENT_TOKEN = /^[\x21-\x7e]{1,64}$/;
const MAX_DESCRIPTION = 256;

export function checkName(p: Problems, path: string, value: unknown): string | undefined {
  if (typeof value !== 'string' || !NAME.test(value)) {
    p.add(
      path,
      'must be 1–63 lower-case letters, digits, ".", "_" or "-", starting and ending with a letter or digit',
    );
    return undefined;
  }
  return value;
}

/* eslint-disable no-control-regex -- matching control characters is the point */
/** C0 controls and DEL, which no version of the API took in a description. */
const CONTROL = /[\u0000-\u001f\u007f]/u;
/**
 * What a terminal acts on instead of showing (issue 12, finding 8): C0 controls and DEL (ESC
 * starts colour and cursor sequences, CR and LF fake lines), C1 controls (U+0080–U+009F: U+009B
 * is a CSI on many terminals), the bidirectional controls (U+061C, U+200E–U+200F, U+202A–U+202E,
 * U+2066–U+2069: they reorder what follows, so one address can read as another) and the line and
 * paragraph separators U+2028–U+2029. The CLI escapes them wherever they come from
 * (src/cli/format.ts); refusing them in requests keeps every other reader of the API
 * (dashboards, scripts, logs) safe too.
 */
const UNSHOWABLE = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]/u;
/* eslint-enable no-control-regex */

/**
 * A description a request brings (every API write takes its description here): text of at most
 * 256 characters without anything of UNSHOWABLE.
 */
function checkRequestDescription(p: Problems, path: string, value: unknown): string | undefined {
  return describedBy(
    p,
    path,
    value,
    UNSHOWABLE,
    'control characters, bidirectional controls or line separators',
  );
}

/**
 * A description as a stored record holds it (src/core/records.ts): text of at most 256
 * characters without C0 controls or DEL. Older versions took C1 and bidirectional controls, and
 * only requests refuse them now, so a FIP or pool stored with one keeps serving: a description
 * never reaches the kernel, and the CLI shows it escaped.
 */
export function checkDescription(p: Problems, path: string, value: unknown): string | undefined {
  return describedBy(p, path, value, CONTROL, 'control characters');
}

function describedBy(
  p: Problems,
  path: string,
  value: unknown,
  refused: RegExp,
  what: string,
): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'string' || value.length > MAX_DESCRIPTION) {
    p.add(path, `must be text of at most ${MAX_DESCRIPTION} characters`);
    return undefined;
  }
  const bad = refused.exec(value);
  if (bad) {
    // Named, not quoted: the message must not carry the character to a terminal either.
    const at = [...value.slice(0, bad.index)].length + 1;
    p.add(
      path,
      `contains ${unicodeName(bad[0])} at character ${at}: a description may not hold ${what}`,
    );
    return undefined;
  }
  return value;
}

/** `U+202E`: how a character is named in a message without writing it there. */
function unicodeName(c: string): string {
  return `U+${(c.codePointAt(0) ?? 0).toString(16).toUpperCase().padStart(4, '0')}`;
}

export function checkTags(p: Problems, path: string, value: unknown): string[] {
  if (value === undefined) return [];
  if (!Array.isArray(value)) {
    p.add(path, 'must be a list of tags');
    return [];
  }
  const tags: string[] = [];
  value.forEach((tag: unknown, i) => {
    if (typeof tag === 'string' && TAG.test(tag)) tags.push(tag);
    else
      p.add(
        `${path}[${i}]`,
        'must be 1–63 letters, digits or ._:=/- starting with a letter or digit',
      );
  });
  return [...new Set(tags)].sort();
}

/**
 * An address a floating IP or a target may use: unicast and routable. Loopback, multicast,
 * unspecified and link-local addresses cannot be forwarded by a router.
 */
export function checkAddress(
  p: Problems,
  path: string,
  value: unknown,
  options: { family?: Family } = {},
): Address | undefined {
  if (typeof value !== 'string') {
    p.add(path, 'must be an IP address');
    return undefined;
  }
  const address = tryParseAddress(value);
  if (!address) {
    p.add(
      path,
      `${JSON.stringify(value)} is not a valid IP address (IPv4 as four decimal numbers without leading zeros, IPv6 in standard notation)`,
    );
    return undefined;
  }
  const unusable = unusableReason(address);
  if (unusable) {
    p.add(path, `${address.text} is ${unusable}`);
    return undefined;
  }
  if (options.family !== undefined && address.family !== options.family) {
    p.add(path, `${address.text} is IPv${address.family} but IPv${options.family} is needed here`);
    return undefined;
  }
  return address;
}

function unusableReason(a: Address): string | undefined {
  if (a.family === 4) {
    const first = Number(a.value >> 24n);
    if (a.value === 0n) return 'the unspecified address';
    if (first === 127) return 'a loopback address';
    if (first >= 224 && first <= 239) return 'a multicast address';
    if (a.value === 0xffffffffn) return 'the broadcast address';
    if (first === 169 && Number((a.value >> 16n) & 0xffn) === 254) return 'a link-local address';
    return undefined;
  }
  if (a.value === 0n) return 'the unspecified address';
  if (a.value === 1n) return 'the loopback address';
  const top = a.value >> 112n;
  if (top >> 8n === 0xffn) return 'a multicast address';
  if ((top & 0xffc0n) === 0xfe80n) return 'a link-local address';
  if (a.value >> 32n === 0xffffn) return 'an IPv4-mapped address (write the IPv4 address itself)';
  return undefined;
}

/** First address of each block `unusableReason` refuses (0.0.0.0 and :: are only ever first). */
const SPECIAL_STARTS = [
  '127.0.0.0',
  '169.254.0.0',
  '224.0.0.0',
  '255.255.255.255',
  '::1',
  '::ffff:0:0',
  'fe80::',
  'ff00::',
].map(parseAddress);

/** A CIDR or range with usable ends may still span a special block: refuse that too. */
function checkNoSpecialInside(
  p: Problems,
  path: string,
  label: string,
  range: AddressRange,
): boolean {
  const hit = SPECIAL_STARTS.find((s) => rangeContains(range, s));
  if (hit) p.add(path, `${label} contains ${hit.text}, which is ${unusableReason(hit)}`);
  return hit === undefined;
}

export interface PoolInput {
  name?: unknown;
  gateway?: unknown;
  delivery?: unknown;
  uplink?: unknown;
  /** Each: `CIDR`, `FIRST-LAST`, `IP` or `IP=MAC`. */
  entries?: unknown;
  /** Addresses that are the gateway's own: only port forwards go to them. */
  shared?: unknown;
  /** CIDRs the pool's FIPs may forward to; absent or empty: anywhere. */
  targetRanges?: unknown;
  description?: unknown;
  tags?: unknown;
}

export interface ValidPool {
  name: string;
  gateway: string;
  delivery: PoolDelivery;
  uplink?: string;
  entries: PoolEntry[];
  targetRanges?: string[];
  description?: string;
  tags: string[];
}

export function validatePool(input: PoolInput): ValidPool {
  const p = new Problems();
  const name = checkName(p, 'name', input.name);
  const gateway = checkName(p, 'gateway', input.gateway);
  const delivery = input.delivery ?? 'routed';
  if (delivery !== 'routed' && delivery !== 'onlink')
    p.add('delivery', 'must be "routed" or "onlink"');
  let uplink: string | undefined;
  if (delivery === 'onlink') {
    if (typeof input.uplink !== 'string' || !INTERFACE.test(input.uplink)) {
      p.add('uplink', 'an on-link pool needs the uplink interface name (1–15 characters)');
    } else if (input.uplink.length > 11) {
      // The gateway labels the FIPs it holds `UPLINK:ipf`, and labels have at most 15 characters.
      p.add('uplink', 'an on-link uplink name may have at most 11 characters');
    } else uplink = input.uplink;
  } else if (input.uplink !== undefined) {
    p.add('uplink', 'only an on-link pool has an uplink interface');
  }
  const given = lengthOf(input.entries) + lengthOf(input.shared);
  const entries =
    given > MAX_POOL_ENTRIES
      ? tooManyEntries(p, 'entries', given)
      : [
          ...stringList(p, 'entries', input.entries).map(([path, s]) =>
            parseEntry(p, path, s, false),
          ),
          ...stringList(p, 'shared', input.shared).map(([path, s]) => parseEntry(p, path, s, true)),
        ].filter((e): e is PoolEntry => e !== undefined);
  if (entries.length === 0 && p.ok)
    p.add('entries', 'a pool needs at least one address, range or CIDR');
  checkEntriesDisjoint(p, entries, delivery === 'onlink' ? 'onlink' : 'routed');
  const targetRanges = checkTargetRanges(p, 'targetRanges', input.targetRanges);
  const description = checkRequestDescription(p, 'description', input.description);
  const tags = checkTags(p, 'tags', input.tags);
  p.done();
  return {
    name: name!,
    gateway: gateway!,
    delivery: delivery as PoolDelivery,
    ...(uplink ? { uplink } : {}),
    entries,
    ...(targetRanges && targetRanges.length > 0 ? { targetRanges } : {}),
    ...(description !== undefined ? { description } : {}),
    tags,
  };
}

export interface PoolUpdateInput {
  /** Entries to add: each `CIDR`, `FIRST-LAST`, `IP` or `IP=MAC`. */
  addEntries?: unknown;
  /** The gateway's own addresses to add, for port forwards only. */
  addShared?: unknown;
  /** Single-address entries (shared or not) to take out of the pool. */
  removeAddresses?: unknown;
  /** New description; the empty string removes it. */
  description?: unknown;
  /** The pool's tags, replacing the old ones (an empty list removes them all). */
  tags?: unknown;
  /** The pool's target ranges, replacing the old ones (an empty list allows any target). */
  targetRanges?: unknown;
}

export interface ValidPoolUpdate {
  readonly add: readonly PoolEntry[];
  readonly remove: readonly Address[];
  /** `null`: remove the description; absent: keep it. */
  readonly description?: string | null;
  readonly tags?: readonly string[];
  /** Absent: keep them; empty: remove them. */
  readonly targetRanges?: readonly string[];
}

/**
 * What a pool update may change: entries added and single addresses removed, the description
 * and the tags. Its gateway, delivery and existing ranges stay: FIPs and the kernel depend on
 * them (delete and re-create the pool to change those).
 */
export function validatePoolUpdate(input: PoolUpdateInput): ValidPoolUpdate {
  const p = new Problems();
  const adding = lengthOf(input.addEntries) + lengthOf(input.addShared);
  const add =
    adding > MAX_POOL_ENTRIES
      ? tooManyEntries(p, 'addEntries', adding)
      : [
          ...stringList(p, 'addEntries', input.addEntries).map(([path, s]) =>
            parseEntry(p, path, s, false),
          ),
          ...stringList(p, 'addShared', input.addShared).map(([path, s]) =>
            parseEntry(p, path, s, true),
          ),
        ].filter((e): e is PoolEntry => e !== undefined);
  // A pool has no more single addresses to remove than it may have entries.
  const removing = lengthOf(input.removeAddresses);
  const remove =
    removing > MAX_POOL_ENTRIES
      ? tooManyEntries(p, 'removeAddresses', removing)
      : stringList(p, 'removeAddresses', input.removeAddresses)
          .map(([path, s]) => checkAddress(p, path, s))
          .filter((a): a is Address => a !== undefined);
  const description =
    input.description === '' ? '' : checkRequestDescription(p, 'description', input.description);
  const tags = input.tags === undefined ? undefined : checkTags(p, 'tags', input.tags);
  const targetRanges = checkTargetRanges(p, 'targetRanges', input.targetRanges);
  if (
    p.ok &&
    input.addEntries === undefined &&
    input.addShared === undefined &&
    input.removeAddresses === undefined &&
    input.description === undefined &&
    input.tags === undefined &&
    input.targetRanges === undefined
  )
    p.add('request', 'names nothing to change');
  p.done();
  return {
    add,
    remove,
    ...(description !== undefined ? { description: description === '' ? null : description } : {}),
    ...(tags !== undefined ? { tags } : {}),
    ...(targetRanges !== undefined ? { targetRanges } : {}),
  };
}

/** More target ranges than any pool needs: a bound, so a request cannot make checks costly. */
export const MAX_TARGET_RANGES = 256;

/**
 * A pool's target ranges: CIDRs with the host bits zero (as pool entries), without repeats, in
 * the order given. Undefined when not given.
 */
export function checkTargetRanges(p: Problems, path: string, value: unknown): string[] | undefined {
  if (value === undefined) return undefined;
  if (Array.isArray(value) && value.length > MAX_TARGET_RANGES) {
    p.add(path, `${value.length} ranges given, more than the ${MAX_TARGET_RANGES} a pool may have`);
    return undefined;
  }
  const ranges = stringList(p, path, value).flatMap(([at, text]) => {
    const prefix = tryParsePrefix(text);
    if (prefix) return [prefix.text];
    const loose = text.includes('/') ? tryParsePrefix(text, false) : undefined;
    p.add(
      at,
      loose
        ? `${JSON.stringify(text)} has host bits set: write the network, ${loose.text}`
        : `${JSON.stringify(text)} is not a CIDR prefix (address/length, e.g. 192.168.1.0/24)`,
    );
    return [];
  });
  return [...new Set(ranges)];
}

/**
 * Whether `target` may be a target of a pool with these ranges: each list given must hold it
 * (a pool whose ranges are being changed is held to the old and the new ones at once). A list
 * that is absent or empty holds everything.
 */
export function withinTargetRanges(
  target: string,
  ...rangeLists: readonly (readonly string[] | undefined)[]
): boolean {
  const address = tryParseAddress(target);
  if (!address) return false;
  return rangeLists.every(
    (ranges) =>
      ranges === undefined ||
      ranges.length === 0 ||
      ranges.some((cidr) => {
        const prefix = tryParsePrefix(cidr);
        return prefix !== undefined && rangeContains(prefixRange(prefix), address);
      }),
  );
}

/**
 * The pool after an update. Only whole single-address entries come out: a range or prefix cannot
 * be taken apart here, since FIPs may be allocated anywhere in it.
 */
export function updatedPool<P extends Pool>(pool: P, update: ValidPoolUpdate): P {
  const p = new Problems();
  // Entries by address, and the ranges in address order, so that each removal is one lookup.
  const single = new Map<string, number>();
  pool.entries.forEach((e, i) => {
    if (e.kind === 'address' && !single.has(e.address)) single.set(e.address, i);
  });
  const removed = new Set<number>();
  let within: ReturnType<typeof rangeFinder> | undefined;
  update.remove.forEach((address, i) => {
    const at = single.get(address.text);
    if (at !== undefined && !removed.has(at)) {
      removed.add(at);
      return;
    }
    within ??= rangeFinder(poolRanges(pool));
    const entry = at === undefined ? within(address) : undefined;
    p.add(
      `removeAddresses[${i}]`,
      entry
        ? `${address.text} is part of ${describeEntry(entry)}: only single-address entries can be removed (delete and re-create the pool to change a range)`
        : `${address.text} is not in pool ${pool.name}`,
    );
  });
  const kept = pool.entries.filter((_, i) => !removed.has(i));
  const entries = [...kept, ...update.add];
  if (update.add.length > 0 && entries.length > MAX_POOL_ENTRIES) {
    p.add(
      update.add.some((e) => !(e.kind === 'address' && e.shared)) ? 'addEntries' : 'addShared',
      `pool ${pool.name} would hold ${entries.length} entries, more than the ${MAX_POOL_ENTRIES} a pool may hold: write a block of addresses as one CIDR or FIRST-LAST range`,
    );
  } else checkAddedDisjoint(p, pool.name, entries, kept.length, pool.delivery);
  if (entries.length === 0 && p.ok)
    p.add('removeAddresses', 'a pool needs at least one address, range or CIDR');
  p.done();
  const { description: _old, targetRanges: _ranges, ...rest } = pool;
  const description =
    update.description === undefined ? pool.description : (update.description ?? undefined);
  const targetRanges = update.targetRanges ?? pool.targetRanges;
  const next: Pool = {
    ...rest,
    entries,
    ...(targetRanges && targetRanges.length > 0 ? { targetRanges } : {}),
    ...(description !== undefined ? { description } : {}),
    tags: update.tags ?? pool.tags,
  };
  return next as P;
}

/**
 * The entry whose range holds an address, by binary search over the ranges in address order
 * (a pool's ranges are disjoint, so at most the last one starting at or below it can).
 */
function rangeFinder(ranges: readonly EntryRange[]): (address: Address) => PoolEntry | undefined {
  const sorted = [...ranges].sort((x, y) => compareAddresses(x.range.first, y.range.first));
  return (address) => {
    let lo = 0;
    let hi = sorted.length - 1;
    let found: EntryRange | undefined;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const r = sorted[mid]!;
      if (compareAddresses(r.range.first, address) <= 0) {
        found = r;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    return found && rangeContains(found.range, address) ? found.entry : undefined;
  };
}

/**
 * Added entries must not overlap each other or the entries kept (those may overlap among
 * themselves only in a record an older version wrote, which is not this request's doing). An
 * address that is already an entry gets a message saying how to change its kind (remove and add
 * it in one update).
 */
function checkAddedDisjoint(
  p: Problems,
  pool: string,
  entries: readonly PoolEntry[],
  kept: number,
  delivery: PoolDelivery,
): void {
  for (const { a: i, b: j, at } of overlapsWithin(poolRanges({ entries, delivery }))) {
    if (j < kept) continue;
    const [a, b] = [entries[i]!, entries[j]!];
    const path = b.kind === 'address' && b.shared ? 'addShared' : 'addEntries';
    p.add(
      path,
      a.kind === 'address' && b.kind === 'address' && a.address === b.address && i < kept
        ? `${a.address} is already in pool ${pool} as ${describeEntry(a)}: to change it, remove and add it in one update (\`ipferry pool update ${pool} --remove ${a.address} ${b.shared ? '--shared' : '--address'} ${describeEntry({ ...b, shared: false })}\`)`
        : `entries ${describeEntry(a)} and ${describeEntry(b)} overlap at ${at.text}`,
    );
  }
}

/**
 * A pool's single-address entry that the gateway registered as its own: nat or routed there
 * would take the gateway's traffic, and its own ports would not be kept from forwards. As a
 * shared entry it is what the gateway's own address is for. (Ranges and prefixes may hold an
 * address the gateway is about to give up, docs/migration.md: compile holds its FIP until then.)
 */
export function ownAddressEntry(
  entries: readonly PoolEntry[],
  gatewayAddresses: readonly string[],
): string | undefined {
  const own = new Set(gatewayAddresses.flatMap((a) => tryParseAddress(a)?.text ?? []));
  for (const e of entries)
    if (e.kind === 'address' && !e.shared && own.has(e.address)) return e.address;
  return undefined;
}

function stringList(p: Problems, path: string, value: unknown): [string, string][] {
  if (value === undefined) return [];
  if (!Array.isArray(value)) {
    p.add(path, 'must be a list');
    return [];
  }
  return value.flatMap((v: unknown, i): [string, string][] => {
    if (typeof v === 'string') return [[`${path}[${i}]`, v]];
    p.add(`${path}[${i}]`, 'must be text');
    return [];
  });
}

function parseEntry(
  p: Problems,
  path: string,
  text: string,
  shared: boolean,
): PoolEntry | undefined {
  if (shared) {
    const a = checkAddress(p, path, text);
    return a ? { kind: 'address', address: a.text, shared: true } : undefined;
  }
  if (text.includes('/')) {
    const prefix = tryParsePrefix(text);
    if (!prefix) {
      p.add(
        path,
        `${JSON.stringify(text)} is not a CIDR prefix (address/length with the host bits zero, e.g. 203.0.113.0/28)`,
      );
      return undefined;
    }
    const minLength = prefix.family === 4 ? 8 : 32;
    if (prefix.length < minLength) {
      p.add(
        path,
        `${prefix.text} is larger than a floating IP pool can sensibly be (at most /${minLength})`,
      );
      return undefined;
    }
    return checkAddress(p, path, prefix.network.text) &&
      checkNoSpecialInside(p, path, prefix.text, prefixRange(prefix))
      ? { kind: 'cidr', cidr: prefix.text }
      : undefined;
  }
  if (text.includes('-') && !text.includes('=')) {
    const range = tryParseRange(text);
    if (!range) {
      p.add(
        path,
        `${JSON.stringify(text)} is not a range (FIRST-LAST, both of one family, FIRST ≤ LAST)`,
      );
      return undefined;
    }
    if (!checkAddress(p, path, range.first.text) || !checkAddress(p, path, range.last.text))
      return undefined;
    if (!checkNoSpecialInside(p, path, `${range.first.text}-${range.last.text}`, range))
      return undefined;
    return { kind: 'range', first: range.first.text, last: range.last.text };
  }
  const [ip, mac, ...rest] = text.split('=');
  const address = checkAddress(p, path, ip);
  if (mac === undefined) return address ? { kind: 'address', address: address.text } : undefined;
  const canonicalMac = tryParseMac(mac);
  if (!canonicalMac || rest.length > 0) {
    p.add(
      path,
      `${JSON.stringify(mac)} is not a MAC address (six hex pairs, e.g. 52:54:00:12:34:56)`,
    );
    return undefined;
  }
  return address ? { kind: 'address', address: address.text, mac: canonicalMac } : undefined;
}

function checkEntriesDisjoint(p: Problems, entries: PoolEntry[], delivery: PoolDelivery): void {
  for (const { a, b, at } of overlapsWithin(poolRanges({ entries, delivery }))) {
    p.add(
      'entries',
      `entries ${describeEntry(entries[a]!)} and ${describeEntry(entries[b]!)} overlap at ${at.text}`,
    );
  }
}

/** How many items a list given for a pool holds (0 when it is no list: stringList says so). */
function lengthOf(value: unknown): number {
  return Array.isArray(value) ? value.length : 0;
}

/** Refuses a list too long to be a pool's before a single entry of it is parsed. */
function tooManyEntries(p: Problems, path: string, given: number): never[] {
  p.add(
    path,
    `${given} entries given, more than the ${MAX_POOL_ENTRIES} a pool may hold: write a block of addresses as one CIDR or FIRST-LAST range`,
  );
  return [];
}

export function describeEntry(entry: PoolEntry): string {
  switch (entry.kind) {
    case 'cidr':
      return entry.cidr;
    case 'range':
      return `${entry.first}-${entry.last}`;
    case 'address':
      return `${entry.address}${entry.mac ? `=${entry.mac}` : ''}${entry.shared ? ' (shared)' : ''}`;
  }
}

export interface AllocateInput {
  pool?: unknown;
  address?: unknown;
  /** Only addresses of this IP version (4 or 6) when any free address is taken. */
  family?: unknown;
  clientToken?: unknown;
  description?: unknown;
  tags?: unknown;
}

export interface ValidAllocate {
  pool?: string;
  address?: Address;
  family?: Family;
  clientToken?: string;
  description?: string;
  tags: string[];
}

export function validateAllocate(input: AllocateInput): ValidAllocate {
  const p = new Problems();
  const pool = input.pool === undefined ? undefined : checkName(p, 'pool', input.pool);
  const address =
    input.address === undefined ? undefined : checkAddress(p, 'address', input.address);
  const family = input.family;
  if (family !== undefined && family !== 4 && family !== 6) p.add('family', 'must be 4 or 6');
  else if (family !== undefined && address && address.family !== family) {
    p.add('family', `${address.text} is IPv${address.family}, not IPv${family}`);
  }
  let clientToken: string | undefined;
  if (input.clientToken !== undefined) {
    if (typeof input.clientToken === 'string' && CLIENT_TOKEN.test(input.clientToken))
      clientToken = input.clientToken;
    else p.add('clientToken', 'must be 1–64 printable ASCII characters without spaces');
  }
  const description = checkRequestDescription(p, 'description', input.description);
  const tags = checkTags(p, 'tags', input.tags);
  p.done();
  return {
    ...(pool ? { pool } : {}),
    ...(address ? { address } : {}),
    ...(family === 4 || family === 6 ? { family } : {}),
    ...(clientToken ? { clientToken } : {}),
    ...(description !== undefined ? { description } : {}),
    tags,
  };
}

export interface AssociateInput {
  target?: unknown;
  node?: unknown;
  mode?: unknown;
  masquerade?: unknown;
  allowReassociation?: unknown;
}

export interface ValidAssociate {
  target: Address;
  node?: string;
  mode: AssociationMode;
  masquerade: boolean;
  allowReassociation: boolean;
}

/** The FIP a request is about, as far as validating the request needs it. */
export interface FipContext {
  readonly address: string;
  readonly family: Family;
  /** Its association's mode now, if it is associated. */
  readonly mode?: AssociationMode;
}

/**
 * `fip`: the FIP's family (its target must be of it), or the FIP itself, which a routed
 * association also needs to know its target.
 */
export function validateAssociate(
  input: AssociateInput,
  fip?: Family | FipContext,
): ValidAssociate {
  const p = new Problems();
  const mode = input.mode ?? 'nat';
  const target =
    mode === 'routed' && typeof fip === 'object'
      ? routedTarget(p, input.target, fip)
      : requiredTarget(p, input.target, familyOf(fip));
  const node = input.node === undefined ? undefined : checkName(p, 'node', input.node);
  if (typeof mode !== 'string' || !ASSOCIATION_MODES.includes(mode as AssociationMode)) {
    p.add('mode', `must be one of ${ASSOCIATION_MODES.join(', ')}`);
  }
  if (mode === 'routed' && input.node === undefined) {
    p.add('node', 'routed mode delivers the FIP to a node: name the node that holds the target');
  }
  const masquerade = checkBoolean(p, 'masquerade', input.masquerade);
  const allowReassociation = checkBoolean(p, 'allowReassociation', input.allowReassociation);
  if (masquerade && mode === 'routed') p.add('masquerade', 'routed mode does no NAT at all');
  p.done();
  return {
    target: target!,
    ...(node ? { node } : {}),
    mode: mode as AssociationMode,
    masquerade,
    allowReassociation,
  };
}

export interface MoveInput {
  target?: unknown;
  node?: unknown;
}

/** `fip` as in validateAssociate; with the FIP itself, its mode says whether it is routed. */
export function validateMove(
  input: MoveInput,
  fip?: Family | FipContext,
): { target: Address; node?: string } {
  const p = new Problems();
  const target =
    typeof fip === 'object' && fip.mode === 'routed'
      ? routedTarget(p, input.target, fip)
      : requiredTarget(p, input.target, familyOf(fip));
  const node = input.node === undefined ? undefined : checkName(p, 'node', input.node);
  p.done();
  return { target: target!, ...(node ? { node } : {}) };
}

function familyOf(fip: Family | FipContext | undefined): Family | undefined {
  return typeof fip === 'object' ? fip.family : fip;
}

function requiredTarget(p: Problems, value: unknown, family?: Family): Address | undefined {
  if (value === undefined) {
    p.add('target', 'is required: the address to forward to (only a routed FIP may omit it)');
    return undefined;
  }
  return checkAddress(p, 'target', value, family ? { family } : {});
}

/**
 * A routed FIP is delivered unchanged: the node receives the FIP itself, so that is its only
 * possible target. Omitted, the target is the FIP; any other address would be shown but do
 * nothing, so it is refused.
 */
function routedTarget(p: Problems, value: unknown, fip: FipContext): Address | undefined {
  const own = parseAddress(fip.address);
  if (value === undefined) return own;
  const target = checkAddress(p, 'target', value, { family: fip.family });
  if (target && target.text !== own.text) {
    p.add(
      'target',
      `a routed FIP is delivered unchanged, so its target is the FIP itself (${own.text}), not ${target.text}: omit the target, or use nat mode to forward to ${target.text}`,
    );
    return undefined;
  }
  return target;
}

function checkBoolean(p: Problems, path: string, value: unknown): boolean {
  if (value === undefined) return false;
  if (typeof value !== 'boolean') {
    p.add(path, 'must be true or false');
    return false;
  }
  return value;
}

export interface ForwardInput {
  protocol?: unknown;
  /** `P`, `P-Q`, or a number. */
  port?: unknown;
  targetPort?: unknown;
  target?: unknown;
  node?: unknown;
  description?: unknown;
}

export interface ValidForward {
  protocol: Protocol;
  port: number;
  portEnd: number;
  targetPort: number;
  target: Address;
  node?: string;
  description?: string;
}

export function validateForward(input: ForwardInput, fipFamily?: Family): ValidForward {
  const p = new Problems();
  const protocol = input.protocol;
  if (typeof protocol !== 'string' || !PROTOCOLS.includes(protocol as Protocol)) {
    p.add('protocol', `must be one of ${PROTOCOLS.join(', ')}`);
  }
  const ports = parsePortRange(p, 'port', input.port);
  let targetPort = ports?.port;
  if (input.targetPort !== undefined) targetPort = parsePort(p, 'targetPort', input.targetPort);
  if (ports && targetPort !== undefined && targetPort + (ports.portEnd - ports.port) > 65535) {
    p.add(
      'targetPort',
      `the range ${ports.port}-${ports.portEnd} mapped from ${targetPort} would end past port 65535`,
    );
  }
  const target = checkAddress(p, 'target', input.target, fipFamily ? { family: fipFamily } : {});
  const node = input.node === undefined ? undefined : checkName(p, 'node', input.node);
  const description = checkRequestDescription(p, 'description', input.description);
  p.done();
  return {
    protocol: protocol as Protocol,
    port: ports!.port,
    portEnd: ports!.portEnd,
    targetPort: targetPort!,
    target: target!,
    ...(node ? { node } : {}),
    ...(description !== undefined ? { description } : {}),
  };
}

export function parsePortRange(
  p: Problems,
  path: string,
  value: unknown,
): { port: number; portEnd: number } | undefined {
  if (typeof value === 'number') {
    const port = parsePort(p, path, value);
    return port === undefined ? undefined : { port, portEnd: port };
  }
  if (typeof value !== 'string') {
    p.add(path, 'must be a port (1–65535) or a range P-Q');
    return undefined;
  }
  const m = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(value);
  if (!m) {
    p.add(path, `${JSON.stringify(value)} is not a port (1–65535) or a range P-Q`);
    return undefined;
  }
  const port = parsePort(p, path, Number(m[1]));
  const portEnd = m[2] === undefined ? port : parsePort(p, path, Number(m[2]));
  if (port === undefined || portEnd === undefined) return undefined;
  if (portEnd < port) {
    p.add(path, `range ${value} ends before it starts`);
    return undefined;
  }
  return { port, portEnd };
}

function parsePort(p: Problems, path: string, value: unknown): number | undefined {
  const n = typeof value === 'string' && /^\d{1,5}$/.test(value) ? Number(value) : value;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > 65535) {
    p.add(path, `${JSON.stringify(value)} is not a port number (1–65535)`);
    return undefined;
  }
  return n;
}
