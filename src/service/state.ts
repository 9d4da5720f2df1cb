/**
 * Backup of ipferry's desired state (`ipferry state export`, docs/backup.md), and the checks a
 * restore (service/restore.ts) runs on a file before it writes.
 *
 * An export is every record a restored store needs to give the same kernel state and keep
 * joined nodes working, taken from one list at one store revision, as a versioned JSON document:
 * pools, FIPs with their forwards and associations, node records, the mesh policy and its
 * overlay locks, NAT target claims, allocate client-token digests, and the SHA-256 of each
 * joined node's credential (so those nodes authenticate against the restored hub as before).
 *
 * Left out, because a restore must not carry them: anything attached to a lease (liveness, an
 * unused join token, the hub's lease owners: their lease does not exist in the new store), FIP
 * statuses and health reports (agents write them again from what the kernel holds), and a mesh
 * confirmation (it names a revision of the old store, which means nothing in the new one).
 *
 * Each record is checked by the decoders the agents use (core/records.ts): the export leaves out
 * a record the agents skip anyway, the import refuses the whole file if one does not decode,
 * naming its key and why, before anything is written.
 */
import { tryParseAddress } from '../core/address.js';
import { IpferryError, type Problem, validationError } from '../core/errors.js';
import { parseStored } from '../core/json.js';
import { HEALTH_ROOT, keys, ROOT } from '../core/keys.js';
import { validateMeshPolicy } from '../core/mesh.js';
import { decodeFloatingIp, decodeNodeRecord, decodePool } from '../core/records.js';
import { checkName, Problems } from '../core/validate.js';
import type { ListResult } from '../store/store.js';
import { MAX_KEY_LENGTH } from '../store/wire.js';

export const STATE_FORMAT = 'ipferry-state';
/** The export format this ipferry writes; FORMAT_UPGRADES brings older ones to it. */
export const STATE_FORMAT_VERSION = 1;
/** No export of a real store comes near it; a larger file is refused before it is parsed. */
export const MAX_STATE_BYTES = 256 * 1024 * 1024;

/** A key as the hub takes one (store/wire.ts): printable, no control characters. */
const STORE_KEY = new RegExp(`^[^\\u0000-\\u001f\\u007f]{1,${MAX_KEY_LENGTH}}$`, 'u');

export interface StateRecord {
  readonly key: string;
  /** The record as the store holds it, parsed (store values are JSON). */
  readonly value: unknown;
}

export interface StateDocument {
  readonly format: typeof STATE_FORMAT;
  readonly formatVersion: number;
  readonly ipferryVersion: string;
  readonly exportedAt: string;
  /** The store the records were read from, and the revision they are consistent with. */
  readonly source: { readonly kind: string; readonly revision: number };
  readonly records: readonly StateRecord[];
}

/** A key the export did not carry, and why. */
export interface LeftOut {
  readonly key: string;
  readonly reason: string;
  /** Runtime records are left out by design; the others are records the agents skip too. */
  readonly runtime: boolean;
}

export interface StateExport {
  readonly document: StateDocument;
  readonly leftOut: readonly LeftOut[];
}

// --- what is carried -------------------------------------------------------------------------

/** One kind of record a backup carries: which keys, and the check its value must pass. */
interface RecordKind {
  readonly name: string;
  readonly matches: (key: string) => boolean;
  /** Throws IPF_E_VALIDATION with every problem of the value, or of the key it is under. */
  readonly check: (key: string, value: unknown) => void;
}

const prefixed =
  (prefix: string) =>
  (key: string): boolean =>
    key.startsWith(prefix) && key.length > prefix.length;
const exactly =
  (wanted: string) =>
  (key: string): boolean =>
    key === wanted;

const NAT_TARGETS = `${ROOT}nat-targets/`;

/** Runtime records: the agents write them again; see the module comment. */
const RUNTIME_PREFIXES: readonly string[] = [
  keys.alive,
  keys.statuses,
  keys.joinTokens,
  keys.leaseOwners,
  keys.meshConfirm,
  HEALTH_ROOT,
];

function objectOf(value: unknown): Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
    ? (value as Record<string, unknown>)
    : {};
}

function fail(path: string, message: string): never {
  throw validationError([{ path, message }]);
}

/** A record must name what its key names (as the agents require: desired.ts, underOwnKey). */
function underOwnKey(key: string, id: unknown, field: string, keyOf: (id: string) => string) {
  if (typeof id !== 'string' || keyOf(id) !== key) {
    fail(field, `${String(id)} does not match the record's key ${key}`);
  }
}

function canonicalAddressAfter(prefix: string, key: string): void {
  const rest = key.slice(prefix.length);
  if (tryParseAddress(rest)?.text !== rest)
    fail('', `${rest} in the key is not a canonical address`);
}

function nameAfter(prefix: string, key: string): void {
  const p = new Problems();
  checkName(p, 'key', key.slice(prefix.length));
  p.done();
}

function checkMeshPolicyRecord(value: unknown): void {
  const r = objectOf(value);
  const p = new Problems();
  validateMeshPolicy(r.policy, p, { stored: true });
  if (r.trial !== undefined) {
    const t = objectOf(r.trial);
    if (t.previous !== null) validateMeshPolicy(t.previous, p, { stored: true });
    if (typeof t.deadline !== 'string' || Number.isNaN(Date.parse(t.deadline))) {
      p.add('trial.deadline', 'must be a time');
    }
  }
  if (typeof r.updatedAt !== 'string') p.add('updatedAt', 'must be a time');
  p.done();
}

function checkMeshRollback(value: unknown): void {
  const r = objectOf(value);
  const p = new Problems();
  validateMeshPolicy(r.policy, p, { stored: true });
  for (const field of ['at', 'changedAt']) {
    const t = r[field];
    if (typeof t !== 'string' || Number.isNaN(Date.parse(t))) p.add(field, 'must be a time');
  }
  p.done();
}

const KINDS: readonly RecordKind[] = [
  {
    name: 'pool',
    matches: prefixed(keys.pools),
    check: (key, value) => underOwnKey(key, decodePool(value).name, 'name', keys.pool),
  },
  {
    name: 'floating IP',
    matches: prefixed(keys.fips),
    check: (key, value) => underOwnKey(key, decodeFloatingIp(value).address, 'address', keys.fip),
  },
  {
    name: 'node',
    matches: prefixed(keys.nodes),
    check: (key, value) => underOwnKey(key, decodeNodeRecord(value).name, 'name', keys.node),
  },
  {
    // Bumped with every pool create and delete; writers compare its revision, not its value.
    name: 'pools guard',
    matches: exactly(keys.poolsGuard),
    check: (_key, value) => {
      if (!(Number.isSafeInteger(value) && (value as number) >= 0)) {
        fail('', 'must be a revision (a whole number)');
      }
    },
  },
  {
    // What an allocate's client token (by its digest) allocated: a retry finds its FIP again.
    name: 'client token',
    matches: prefixed(keys.clientTokens),
    check: (_key, value) => {
      const r = objectOf(value);
      const p = new Problems();
      if (typeof r.address !== 'string' || tryParseAddress(r.address)?.text !== r.address) {
        p.add('address', 'must be an IP address in canonical form');
      }
      if (typeof r.fingerprint !== 'string') p.add('fingerprint', 'must be text');
      p.done();
    },
  },
  {
    // Only the SHA-256 of a joined node's credential: it keeps authenticating as before.
    name: 'node credential',
    matches: prefixed(keys.nodeCredentials),
    check: (key, value) => {
      nameAfter(keys.nodeCredentials, key);
      const sha256 = objectOf(value).sha256;
      if (typeof sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(sha256)) {
        fail('sha256', 'must be a SHA-256 digest: 64 lowercase hex digits');
      }
    },
  },
  {
    name: 'mesh policy',
    matches: exactly(keys.meshPolicy),
    check: (_k, v) => checkMeshPolicyRecord(v),
  },
  {
    name: 'mesh rollback',
    matches: exactly(keys.meshRollback),
    check: (_k, v) => checkMeshRollback(v),
  },
  {
    // Which node holds an overlay address (as desired.ts reads it).
    name: 'overlay lock',
    matches: prefixed(keys.overlays),
    check: (key, value) => {
      canonicalAddressAfter(keys.overlays, key);
      const p = new Problems();
      checkName(p, 'name', objectOf(value).name);
      p.done();
    },
  },
  {
    // Which FIP a 1:1 NAT target SNATs to on a gateway: `nat-targets/GATEWAY/TARGET` → address.
    name: 'NAT target',
    matches: prefixed(NAT_TARGETS),
    check: (key, value) => {
      const [gateway, target, ...more] = key.slice(NAT_TARGETS.length).split('/');
      const p = new Problems();
      checkName(p, 'key', gateway);
      if (more.length > 0 || tryParseAddress(target ?? '')?.text !== target) {
        p.add('key', 'must end in GATEWAY/TARGET-ADDRESS');
      }
      if (typeof value !== 'string' || tryParseAddress(value)?.text !== value) {
        p.add('', 'must be an IP address in canonical form');
      }
      p.done();
    },
  },
];

/** Why a record does not decode, in one line: each problem with its field. */
function reasonOf(e: IpferryError): string {
  const problems = e.problems.map((p) => (p.path ? `${p.path} ${p.message}` : p.message));
  return problems.length > 0 ? problems.join('; ') : e.message;
}

/** Whether `key` is carried, or the reason it is not (runtime: true for records by design). */
function classify(key: string, lease: string | undefined): LeftOut | RecordKind {
  if (lease !== undefined) return { key, reason: 'attached to a lease (runtime)', runtime: true };
  if (RUNTIME_PREFIXES.some((p) => key.startsWith(p))) {
    return { key, reason: 'runtime: agents write it again', runtime: true };
  }
  const kind = KINDS.find((k) => k.matches(key));
  return kind ?? { key, reason: 'not a kind of record this ipferry backs up', runtime: false };
}

/** Checks one record as its kind requires; the reason when it does not pass. */
function problemOf(kind: RecordKind, key: string, value: unknown): string | undefined {
  try {
    kind.check(key, value);
    return undefined;
  } catch (e) {
    if (e instanceof IpferryError) return reasonOf(e);
    throw e;
  }
}

// --- export ----------------------------------------------------------------------------------

/** What an export is taken from: one list of ROOT at one revision (store/open.ts). */
export interface ExportSource {
  readonly kind: string;
  readonly snapshot: ListResult;
}

export function buildStateExport(
  source: ExportSource,
  ipferryVersion: string,
  now: Date,
): StateExport {
  const records: StateRecord[] = [];
  const leftOut: LeftOut[] = [];
  for (const kv of source.snapshot.kvs) {
    const kind = classify(kv.key, kv.lease);
    if (!('check' in kind)) {
      leftOut.push(kind);
      continue;
    }
    let value: unknown;
    try {
      value = parseStored<unknown>(kv.key, kv.value);
    } catch {
      leftOut.push({ key: kv.key, reason: 'not JSON', runtime: false });
      continue;
    }
    const problem = problemOf(kind, kv.key, value);
    if (problem === undefined) records.push({ key: kv.key, value });
    // One the API would not have written: the agents skip it (ipferry plan names it), so the
    // restored kernel state is the same without it.
    else
      leftOut.push({
        key: kv.key,
        reason: `${kind.name} that does not decode: ${problem}`,
        runtime: false,
      });
  }
  return {
    document: {
      format: STATE_FORMAT,
      formatVersion: STATE_FORMAT_VERSION,
      ipferryVersion,
      exportedAt: now.toISOString(),
      source: { kind: source.kind, revision: source.snapshot.revision },
      records,
    },
    leftOut,
  };
}

/** The document as written to a file: one record per line, so a diff of two backups reads well. */
export function renderStateDocument(document: StateDocument): string {
  const { records, ...head } = document;
  const lines = records.map((r) => `    ${JSON.stringify(r)}`);
  const header = JSON.stringify(head, null, 2).replace(/\n}$/, '');
  return `${header},\n  "records": [\n${lines.join(',\n')}\n  ]\n}\n`;
}

// --- import ----------------------------------------------------------------------------------

/**
 * Steps from an older export format to the next, by the version they start from. Format 1 is
 * the first: there is nothing to bring forward yet, and a format below 1 was never written.
 */
const FORMAT_UPGRADES: ReadonlyMap<
  number,
  (doc: Record<string, unknown>) => Record<string, unknown>
> = new Map();

function formatProblem(path: string, message: string): IpferryError {
  return validationError([{ path, message }]);
}

/** The document brought to STATE_FORMAT_VERSION, or a clear refusal. */
function upgradeDocument(doc: Record<string, unknown>): Record<string, unknown> {
  if (doc.format !== STATE_FORMAT) {
    throw formatProblem('format', `must be "${STATE_FORMAT}": this is not an ipferry state export`);
  }
  let version = doc.formatVersion;
  if (!Number.isSafeInteger(version) || (version as number) < 1) {
    throw formatProblem('formatVersion', 'must be a whole number from 1: no ipferry wrote this');
  }
  if ((version as number) > STATE_FORMAT_VERSION) {
    throw formatProblem(
      'formatVersion',
      `is ${String(version)}, newer than this ipferry reads (${STATE_FORMAT_VERSION}): import it with the ipferry that wrote it (${String(doc.ipferryVersion)}) or a later one`,
    );
  }
  let upgraded = doc;
  while ((version as number) < STATE_FORMAT_VERSION) {
    const step = FORMAT_UPGRADES.get(version as number);
    if (!step)
      throw formatProblem('formatVersion', `${String(version)} cannot be read by this ipferry`);
    upgraded = step(upgraded);
    version = upgraded.formatVersion;
  }
  return upgraded;
}

/**
 * The records of an export, each checked as the agents check it. Every problem is reported at
 * once, by the record's key: a file with one bad record is refused whole.
 */
export function parseStateDocument(text: string): StateRecord[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    throw formatProblem('', `is not JSON: ${e instanceof Error ? e.message : String(e)}`);
  }
  if (objectOf(parsed) !== parsed) throw formatProblem('', 'must be a JSON object');
  const doc = upgradeDocument(parsed as Record<string, unknown>);
  if (!Array.isArray(doc.records)) throw formatProblem('records', 'must be a list');
  const problems: Problem[] = [];
  const seen = new Set<string>();
  const records: StateRecord[] = [];
  doc.records.forEach((raw: unknown, i) => {
    const r = objectOf(raw);
    const key = r.key;
    if (typeof key !== 'string' || !STORE_KEY.test(key)) {
      problems.push({
        path: `records[${i}].key`,
        message: `must be a store key: printable text of at most ${MAX_KEY_LENGTH} characters`,
      });
      return;
    }
    if (seen.has(key)) {
      problems.push({ path: key, message: 'appears more than once' });
      return;
    }
    seen.add(key);
    const kind = classify(key, undefined);
    if (!('check' in kind)) {
      problems.push({ path: key, message: `is not restored: ${kind.reason}` });
      return;
    }
    if (!('value' in r)) {
      problems.push({ path: key, message: 'has no value' });
      return;
    }
    const problem = problemOf(kind, key, r.value);
    if (problem !== undefined) problems.push({ path: key, message: `${kind.name}: ${problem}` });
    else records.push({ key, value: r.value });
  });
  if (problems.length > 0) throw validationError(problems);
  return records;
}
