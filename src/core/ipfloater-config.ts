/**
 * IP Floater's configuration as typed values, and the plan that turns it into ipferry's: one
 * pool (its public IPs, their MACs, its private ranges as target ranges) and its redirections
 * (a whole address as a FIP associated `nat`, a port as a TCP forward). Pure: the CLI reads the
 * files and the database (src/cli/import-ipfloater.ts) and makes the API calls.
 *
 * IP Floater reads `[IPFLOATER]` of ipfloaterd.conf (keys as Python's ConfigParser takes them:
 * any case), its pool file (`--arp-table`: lines `IP [MAC]`, `#` comments, a repeated address
 * or MAC ignored) and the table `endpoint` of its database. Every line of them is checked here
 * before anything is written: a bad one is an error naming its file and line.
 */
import { decode as decodeIni } from 'ini';
import { type Address, tryParseAddress, tryParseMac, tryParsePrefix } from './address.js';
import { IpferryError, type Problem } from './errors.js';
import { IPFLOATER_TAG } from './ipfloater.js';
import type { FloatingIp, PoolEntry } from './model.js';
import { withinTargetRanges } from './validate.js';

/**
 * The tag of every FIP the import allocates: the one IP Floater's API adapter gives its own
 * (core/ipfloater.ts), so its XML-RPC and REST calls treat imported redirections as theirs.
 */
export const IMPORT_TAG = IPFLOATER_TAG;
export const DEFAULT_POOL_NAME = 'ipfloater';

/** What IP Floater uses when a key is not set (its config.py). */
const DEFAULTS = {
  LISTEN_IP: '127.0.0.1',
  LISTEN_PORT: '7000',
  REST_IP: '127.0.0.1',
  REST_PORT: '7002',
  DB: 'sqlite:///var/lib/ipfloater/ipfloater.db',
  BLOCK_PUBLIC_IPS: 'True',
} as const;

const KNOWN_KEYS = [
  'IP_POOL',
  'IP_POOL_FILE',
  'LISTEN_IP',
  'LISTEN_PORT',
  'REST_IP',
  'REST_PORT',
  'DB',
  'PRIVATE_IP_RANGES',
  'BLOCK_PUBLIC_IPS',
  'REMOVE_AT_BOOT',
] as const;

export interface HostPort {
  readonly host: string;
  readonly port: number;
}

export type DbSetting =
  | { readonly kind: 'none' }
  | { readonly kind: 'sqlite'; readonly path: string }
  /** Another database (MySQL): not something the import can read. */
  | { readonly kind: 'other'; readonly text: string };

export interface IpfloaterConfig {
  /** IP_POOL, in order, each with the line it is on. */
  readonly ipPool: readonly Address[];
  /** IP_POOL_FILE; absent when empty. */
  readonly ipPoolFile?: string;
  /** PRIVATE_IP_RANGES as networks (IP Floater takes `192.168.1.1/24` for 192.168.1.0/24). */
  readonly privateRanges: readonly string[];
  readonly blockPublicIps: boolean;
  readonly xmlrpc: HostPort;
  /** Absent when REST_IP is empty or REST_PORT is not above 0: IP Floater serves no REST then. */
  readonly rest?: HostPort;
  readonly db: DbSetting;
  /** Keys of the section IP Floater does not know, or knows but never uses. */
  readonly ignoredKeys: readonly string[];
}

/** Where a problem is: `FILE:LINE` (or the file alone). */
function at(file: string, line?: number): string {
  return line === undefined ? file : `${file}:${line}`;
}

function configError(file: string, problems: readonly Problem[]): IpferryError {
  const first = problems[0];
  return new IpferryError(
    'IPF_E_CONFIG',
    {
      source: file,
      summary:
        problems.length === 1 && first
          ? `${first.path}: ${first.message}`
          : `${problems.length} problems`,
    },
    problems,
  );
}

/** The line a key is set on (the last setting counts, as in ConfigParser), 1-based. */
function lineOfKey(text: string, key: string): number | undefined {
  let found: number | undefined;
  let inSection = false;
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.trim();
    const section = /^\[(.*)\]$/.exec(line);
    if (section) inSection = section[1]?.trim().toUpperCase() === 'IPFLOATER';
    else if (inSection && new RegExp(`^${key}\\s*[=:]`, 'i').test(line)) found = i + 1;
  });
  return found;
}

/** Parses ipfloaterd.conf; every problem of it at once, each naming its line. */
export function parseIpfloaterConfig(text: string, file: string): IpfloaterConfig {
  let parsed: Record<string, unknown>;
  try {
    parsed = decodeIni(text);
  } catch (e) {
    throw configError(file, [{ path: file, message: `is not an INI file (${String(e)})` }]);
  }
  const sectionName = Object.keys(parsed).find((k) => k.toUpperCase() === 'IPFLOATER');
  const section = sectionName === undefined ? undefined : parsed[sectionName];
  if (typeof section !== 'object' || section === null || Array.isArray(section))
    throw configError(file, [{ path: file, message: 'has no [IPFLOATER] section' }]);
  const problems: Problem[] = [];
  const values = new Map<string, string>();
  const ignoredKeys: string[] = [];
  for (const [key, value] of Object.entries(section as Record<string, unknown>)) {
    const name = key.toUpperCase();
    const where = at(file, lineOfKey(text, key.replace(/[^A-Za-z0-9_]/g, '.')));
    if (typeof value === 'object' && value !== null) {
      problems.push({ path: where, message: `${key} must be one value` });
      continue;
    }
    if (!(KNOWN_KEYS as readonly string[]).includes(name) || name === 'REMOVE_AT_BOOT') {
      ignoredKeys.push(key);
      continue;
    }
    values.set(
      name,
      typeof value === 'string' || typeof value === 'boolean' || typeof value === 'number'
        ? String(value).trim()
        : '',
    );
  }
  const get = (key: string): { value: string; where: string } => ({
    value: values.get(key) ?? (DEFAULTS as Record<string, string>)[key] ?? '',
    where: at(file, lineOfKey(text, key)),
  });

  const pool = get('IP_POOL');
  const ipPool = commaList(pool.value).flatMap((item) => {
    const address = tryParseAddress(item);
    if (!address)
      problems.push({ path: pool.where, message: `IP_POOL: ${quote(item)} is not an IP address` });
    return address ? [address] : [];
  });
  const ranges = get('PRIVATE_IP_RANGES');
  const privateRanges = commaList(ranges.value).flatMap((item) => {
    const network = networkOf(item);
    if (!network)
      problems.push({
        path: ranges.where,
        message: `PRIVATE_IP_RANGES: ${quote(item)} is not an address/length range`,
      });
    return network ? [network] : [];
  });
  const block = get('BLOCK_PUBLIC_IPS');
  const blockPublicIps = parseBoolean(block.value);
  if (blockPublicIps === undefined)
    problems.push({
      path: block.where,
      message: `BLOCK_PUBLIC_IPS: ${quote(block.value)} is not True or False`,
    });
  const xmlrpc = hostPort(problems, get('LISTEN_IP'), get('LISTEN_PORT'), 'LISTEN');
  const restIp = get('REST_IP');
  const restPort = get('REST_PORT');
  // IP Floater serves REST only with an address and a port above 0 (a port that is no number is 0).
  const restPortNumber = /^\d+$/.test(restPort.value) ? Number(restPort.value) : 0;
  const rest =
    restIp.value !== '' && restPortNumber > 0
      ? hostPort(problems, restIp, restPort, 'REST')
      : undefined;
  const db = dbSetting(get('DB').value);
  const poolFile = values.get('IP_POOL_FILE') ?? '';
  if (problems.length > 0) throw configError(file, problems);
  return {
    ipPool,
    ...(poolFile !== '' ? { ipPoolFile: poolFile } : {}),
    privateRanges: [...new Set(privateRanges)],
    blockPublicIps: blockPublicIps ?? true,
    xmlrpc: xmlrpc!,
    ...(rest ? { rest } : {}),
    db,
    ignoredKeys,
  };
}

function commaList(value: string): string[] {
  return value
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
}

function quote(text: string): string {
  return JSON.stringify(text);
}

/** `192.168.1.1/24` → `192.168.1.0/24`; a bare address is its own /32 or /128. */
function networkOf(item: string): string | undefined {
  if (!item.includes('/')) {
    const address = tryParseAddress(item);
    return address ? `${address.text}/${address.family === 4 ? 32 : 128}` : undefined;
  }
  return tryParsePrefix(item, false)?.text;
}

/** As Python's ConfigParser.getboolean. */
function parseBoolean(value: string): boolean | undefined {
  const v = value.toLowerCase();
  if (['1', 'yes', 'true', 'on'].includes(v)) return true;
  if (['0', 'no', 'false', 'off'].includes(v)) return false;
  return undefined;
}

function hostPort(
  problems: Problem[],
  ip: { value: string; where: string },
  port: { value: string; where: string },
  prefix: 'LISTEN' | 'REST',
): HostPort | undefined {
  const address = tryParseAddress(ip.value);
  if (!address)
    problems.push({
      path: ip.where,
      message: `${prefix}_IP: ${quote(ip.value)} is not an address`,
    });
  const n = /^\d{1,5}$/.test(port.value) ? Number(port.value) : NaN;
  if (!(n >= 1 && n <= 65535))
    problems.push({
      path: port.where,
      message: `${prefix}_PORT: ${quote(port.value)} is not a port (1–65535)`,
    });
  return address && n >= 1 && n <= 65535 ? { host: address.text, port: n } : undefined;
}

/** `sqlite:///var/lib/x.db` is the file /var/lib/x.db; IP Floater's MySQL strings are left. */
function dbSetting(text: string): DbSetting {
  if (text === '') return { kind: 'none' };
  const sqlite = /^sqlite:\/\/(.+)$/.exec(text);
  return sqlite?.[1] ? { kind: 'sqlite', path: sqlite[1] } : { kind: 'other', text };
}

/** One address of the pool file, with the MAC it answers `arp` with. */
export interface PoolFileEntry {
  readonly address: Address;
  readonly mac?: string;
  readonly line: number;
}

export interface PoolFile {
  readonly entries: readonly PoolFileEntry[];
  /** Lines IP Floater ignores too (a repeated address, or a MAC another address has), said why. */
  readonly dropped: readonly string[];
}

/**
 * The pool file as IP Floater's arp table reads it: `#` starts a comment, fields are separated
 * by blanks, the first is an address and the second, if any, its MAC (more are ignored). An
 * address given twice keeps its first MAC; a MAC given twice stays with its first address, and
 * the later line is dropped. A line whose address or MAC does not parse is an error.
 */
export function parsePoolFile(text: string, file: string): PoolFile {
  const problems: Problem[] = [];
  const byAddress = new Map<string, { address: Address; mac?: string; line: number }>();
  const macOwner = new Map<string, string>();
  const dropped: string[] = [];
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = i + 1;
    const fields = (raw.split('#', 1)[0] ?? '').trim().split(/\s+/).filter(Boolean);
    if (fields.length === 0) return;
    const [ipText = '', macText] = fields;
    const address = tryParseAddress(ipText);
    const mac = macText === undefined ? undefined : tryParseMac(macText);
    if (!address)
      problems.push({ path: at(file, line), message: `${quote(ipText)} is not an IP address` });
    if (macText !== undefined && !mac)
      problems.push({ path: at(file, line), message: `${quote(macText)} is not a MAC address` });
    if (!address || (macText !== undefined && !mac)) return;
    const known = byAddress.get(address.text);
    if (mac && macOwner.has(mac) && macOwner.get(mac) !== address.text) {
      dropped.push(
        `${at(file, line)}: ${mac} is already the MAC of ${macOwner.get(mac)}: line ignored, as IP Floater does`,
      );
      return;
    }
    if (known) {
      if (mac && known.mac === undefined) {
        byAddress.set(address.text, { ...known, mac });
        macOwner.set(mac, address.text);
      } else
        dropped.push(
          `${at(file, line)}: ${address.text} is already on line ${known.line}: ignored`,
        );
      return;
    }
    byAddress.set(address.text, { address, ...(mac ? { mac } : {}), line });
    if (mac) macOwner.set(mac, address.text);
  });
  if (problems.length > 0) throw configError(file, problems);
  return { entries: [...byAddress.values()], dropped };
}

/** A row of IP Floater's `endpoint` table as the database gives it (types unchecked). */
export interface EndpointRow {
  readonly rowid: number;
  readonly id: unknown;
  readonly public_ip: unknown;
  readonly public_port: unknown;
  readonly private_ip: unknown;
  readonly private_port: unknown;
}

/** A redirection of IP Floater's: a whole address (`nat`) or one TCP port. */
export type Redirection =
  | {
      readonly kind: 'nat';
      readonly id: string;
      readonly publicIp: string;
      readonly privateIp: string;
    }
  | {
      readonly kind: 'port';
      readonly id: string;
      readonly publicIp: string;
      readonly publicPort: number;
      readonly privateIp: string;
      readonly privatePort: number;
    };

function portOf(value: unknown): number | undefined {
  const n = typeof value === 'string' && /^\d{1,5}$/.test(value) ? Number(value) : value;
  return typeof n === 'number' && Number.isInteger(n) && n >= 0 && n <= 65535 ? n : undefined;
}

/**
 * The rows of the endpoint table, checked as IP Floater checks them when it loads them: both
 * ports 0 (the whole address) or neither; the public IP in the pool and the private IP in the
 * private ranges; no public IP:port, and no private IP:port, taken twice (a whole address takes
 * all its ports). IP Floater drops a row that fails; here it is an error naming the row.
 */
export function parseEndpoints(
  rows: readonly EndpointRow[],
  file: string,
  pool: ReadonlySet<string>,
  privateRanges: readonly string[],
): Redirection[] {
  const problems: Problem[] = [];
  const publicTaken = new Map<string, Set<number>>();
  const privateTaken = new Map<string, Set<number>>();
  const redirections: Redirection[] = [];
  for (const row of rows) {
    const id = typeof row.id === 'string' || typeof row.id === 'number' ? String(row.id) : '';
    const where = `${file}: row ${row.rowid}${id ? ` (id ${id})` : ''}`;
    const bad = (message: string): void => void problems.push({ path: where, message });
    const publicIp = typeof row.public_ip === 'string' ? tryParseAddress(row.public_ip) : undefined;
    const privateIp =
      typeof row.private_ip === 'string' ? tryParseAddress(row.private_ip) : undefined;
    const publicPort = portOf(row.public_port);
    const privatePort = portOf(row.private_port);
    if (!publicIp) bad(`public_ip ${quote(String(row.public_ip))} is not an IP address`);
    if (!privateIp) bad(`private_ip ${quote(String(row.private_ip))} is not an IP address`);
    if (publicPort === undefined)
      bad(`public_port ${quote(String(row.public_port))} is not a port`);
    if (privatePort === undefined)
      bad(`private_port ${quote(String(row.private_port))} is not a port`);
    if (!publicIp || !privateIp || publicPort === undefined || privatePort === undefined) continue;
    if ((publicPort === 0) !== (privatePort === 0)) {
      bad(
        'one port is 0 and the other not: IP Floater redirects a whole address to a whole address, or a port to a port',
      );
      continue;
    }
    if (!pool.has(publicIp.text)) {
      bad(`public_ip ${publicIp.text} is not in IP_POOL or the pool file`);
      continue;
    }
    if (publicIp.family !== privateIp.family) {
      bad(`public_ip ${publicIp.text} and private_ip ${privateIp.text} are of different families`);
      continue;
    }
    if (!withinTargetRanges(privateIp.text, privateRanges) || privateRanges.length === 0) {
      bad(`private_ip ${privateIp.text} is not in PRIVATE_IP_RANGES`);
      continue;
    }
    if (!claim(publicTaken, publicIp.text, publicPort)) {
      bad(
        `${publicIp.text}${publicPort ? ` port ${publicPort}` : ''} is redirected by an earlier row`,
      );
      continue;
    }
    if (!claim(privateTaken, privateIp.text, privatePort)) {
      bad(
        `${privateIp.text}${privatePort ? ` port ${privatePort}` : ''} is the target of an earlier row`,
      );
      continue;
    }
    redirections.push(
      publicPort === 0
        ? { kind: 'nat', id, publicIp: publicIp.text, privateIp: privateIp.text }
        : {
            kind: 'port',
            id,
            publicIp: publicIp.text,
            publicPort,
            privateIp: privateIp.text,
            privatePort,
          },
    );
  }
  if (problems.length > 0) throw configError(file, problems);
  return redirections;
}

/** IP Floater's availability rule: port 0 takes the whole address, and needs it free. */
function claim(taken: Map<string, Set<number>>, address: string, port: number): boolean {
  const ports = taken.get(address) ?? new Set<number>();
  if (ports.has(0) || ports.has(port) || (port === 0 && ports.size > 0)) return false;
  ports.add(port);
  taken.set(address, ports);
  return true;
}

// The plan -----------------------------------------------------------------------------------

/** The pool the import makes: IP_POOL, then the pool file's addresses, each once. */
export interface PoolPlanInput {
  readonly name: string;
  readonly gateway: string;
  readonly config: IpfloaterConfig;
  readonly poolFile?: PoolFile;
}

export interface DesiredPool {
  readonly name: string;
  readonly gateway: string;
  /** `IP` or `IP=MAC`, as the API takes them. */
  readonly entries: readonly string[];
  readonly targetRanges: readonly string[];
}

export function desiredPool(input: PoolPlanInput): DesiredPool {
  const entries = new Map<string, string | undefined>();
  for (const e of input.poolFile?.entries ?? []) entries.set(e.address.text, e.mac);
  for (const a of input.config.ipPool) if (!entries.has(a.text)) entries.set(a.text, undefined);
  return {
    name: input.name,
    gateway: input.gateway,
    entries: [...entries].map(([address, mac]) => (mac ? `${address}=${mac}` : address)),
    targetRanges: input.config.privateRanges,
  };
}

/** The pool as it is now, as far as the plan needs it. */
export interface CurrentPool {
  readonly name: string;
  readonly gateway: string;
  readonly entries: readonly PoolEntry[];
  readonly targetRanges?: readonly string[];
}

export type PoolStep =
  | { readonly action: 'create'; readonly pool: DesiredPool }
  | {
      readonly action: 'update';
      readonly addEntries: readonly string[];
      readonly targetRanges?: readonly string[];
    }
  | { readonly action: 'unchanged' };

export type RedirectionStep = Redirection & {
  /** `allocate`: the FIP is allocated first; `unchanged`: it is there already. */
  readonly action: 'create' | 'allocate-and-create' | 'unchanged';
};

export interface ImportPlan {
  readonly pool: DesiredPool;
  readonly poolStep: PoolStep;
  readonly redirections: readonly RedirectionStep[];
}

/**
 * What the import has to do, given what is there: the pool created or completed (addresses it
 * lacks added, its target ranges set), each redirection made unless it is there already. What is
 * there and says otherwise (the pool on another gateway, an address pinned to another MAC, a
 * FIP of another pool or going elsewhere) is an error, before anything is written.
 */
export function planImport(
  pool: DesiredPool,
  redirections: readonly Redirection[],
  pools: readonly CurrentPool[],
  fips: readonly FloatingIp[],
): ImportPlan {
  const problems: Problem[] = [];
  const current = pools.find((p) => p.name === pool.name);
  const poolStep = current
    ? completePool(problems, pool, current)
    : { action: 'create' as const, pool };
  const byAddress = new Map(fips.map((f) => [f.address, f]));
  const natTargets = new Map(
    fips.flatMap((f) =>
      f.association?.mode === 'nat' ? [[f.association.target, f.address] as const] : [],
    ),
  );
  // A FIP allocated for one row serves the later rows of its address.
  const allocating = new Set<string>();
  const allocate = (r: Redirection): RedirectionStep => {
    const first = !allocating.has(r.publicIp);
    allocating.add(r.publicIp);
    return { ...r, action: first ? 'allocate-and-create' : 'create' };
  };
  const steps = redirections.map((r): RedirectionStep => {
    const fip = byAddress.get(r.publicIp);
    const problem = (message: string): RedirectionStep => {
      problems.push({ path: describeRedirection(r), message });
      return { ...r, action: 'unchanged' };
    };
    if (fip && fip.pool !== pool.name)
      return problem(`${r.publicIp} is a floating IP of pool ${fip.pool}`);
    const pooled = pools.find((p) => p.entries.some((e) => holds(e, r.privateIp)));
    if (pooled) return problem(`${r.privateIp} is an address of pool ${pooled.name}, not a server`);
    if (r.kind === 'nat') {
      const holder = natTargets.get(r.privateIp);
      if (holder !== undefined && holder !== r.publicIp)
        return problem(`${r.privateIp} is already the nat target of ${holder}`);
      if (!fip) return allocate(r);
      const a = fip.association;
      if (a?.mode === 'nat' && a.target === r.privateIp && !a.node)
        return { ...r, action: 'unchanged' };
      if (a || fip.forwards.length > 0)
        return problem(
          `${r.publicIp} is already associated (${a?.mode ?? 'ports'} to ${a?.target ?? '?'}): disassociate it first`,
        );
      return { ...r, action: 'create' };
    }
    if (!fip) return allocate(r);
    if (fip.association && fip.association.mode !== 'ports')
      return problem(
        `${r.publicIp} is associated ${fip.association.mode} to ${fip.association.target}: it forwards every port already`,
      );
    const there = fip.forwards.find(
      (f) => f.protocol === 'tcp' && f.port <= r.publicPort && r.publicPort <= f.portEnd,
    );
    if (!there) return { ...r, action: 'create' };
    if (
      there.port === r.publicPort &&
      there.portEnd === r.publicPort &&
      there.target === r.privateIp &&
      there.targetPort === r.privatePort &&
      !there.node
    )
      return { ...r, action: 'unchanged' };
    return problem(
      `tcp port ${r.publicPort} of ${r.publicIp} is forwarded elsewhere already (forward ${there.id})`,
    );
  });
  if (problems.length > 0)
    throw new IpferryError(
      'IPF_E_VALIDATION',
      {
        summary:
          problems.length === 1 && problems[0]
            ? `${problems[0].path}: ${problems[0].message}`
            : `${problems.length} problems: what ipferry holds already disagrees with the import`,
      },
      problems,
    );
  return { pool, poolStep, redirections: steps };
}

function completePool(problems: Problem[], pool: DesiredPool, current: CurrentPool): PoolStep {
  if (current.gateway !== pool.gateway) {
    problems.push({
      path: `pool ${pool.name}`,
      message: `exists on gateway ${current.gateway}, not ${pool.gateway}: name another pool with --pool`,
    });
    return { action: 'unchanged' };
  }
  const have = new Map<string, string | undefined>();
  const within: string[] = [];
  for (const e of current.entries) {
    if (e.kind === 'address') have.set(e.address, e.mac);
    else within.push(e.kind === 'cidr' ? e.cidr : `${e.first}-${e.last}`);
  }
  const add: string[] = [];
  for (const entry of pool.entries) {
    const [address = '', mac] = entry.split('=');
    if (have.has(address)) {
      const pinned = have.get(address);
      if (mac !== undefined && pinned !== mac)
        problems.push({
          path: `pool ${pool.name}`,
          message: `${address} is pinned to ${pinned ?? 'no MAC'} there, not ${mac}: change it with \`ipferry pool update ${pool.name} --remove ${address} --address ${entry}\``,
        });
      continue;
    }
    if (inRanges(address, current.entries)) {
      if (mac !== undefined)
        problems.push({
          path: `pool ${pool.name}`,
          message: `${address} is part of a range of it, so no MAC can be pinned to it (${mac})`,
        });
      continue;
    }
    add.push(entry);
  }
  const ranges = current.targetRanges ?? [];
  const sameRanges =
    ranges.length === pool.targetRanges.length &&
    ranges.every((r, i) => r === pool.targetRanges[i]);
  if (add.length === 0 && sameRanges) return { action: 'unchanged' };
  return {
    action: 'update',
    addEntries: add,
    ...(sameRanges ? {} : { targetRanges: pool.targetRanges }),
  };
}

function inRanges(address: string, entries: readonly PoolEntry[]): boolean {
  return entries.some((e) => e.kind !== 'address' && holds(e, address));
}

function holds(entry: PoolEntry, address: string): boolean {
  const a = tryParseAddress(address);
  if (!a) return false;
  if (entry.kind === 'address') return entry.address === a.text;
  if (entry.kind === 'cidr') return withinTargetRanges(a.text, [entry.cidr]);
  const first = tryParseAddress(entry.first);
  const last = tryParseAddress(entry.last);
  return (
    !!first &&
    !!last &&
    first.family === a.family &&
    first.value <= a.value &&
    a.value <= last.value
  );
}

export function describeRedirection(r: Redirection): string {
  return r.kind === 'nat'
    ? `${r.publicIp} -> ${r.privateIp}`
    : `${r.publicIp}:${r.publicPort} -> ${r.privateIp}:${r.privatePort}`;
}

/** What the import cannot carry over, in words, and the agent flags that serve IP Floater's APIs. */
export function notMapped(config: IpfloaterConfig, dbGiven: boolean): string[] {
  const notes: string[] = [];
  if (!config.blockPublicIps)
    notes.push(
      'BLOCK_PUBLIC_IPS = False: ipferry always drops traffic to a public address or port it does not forward',
    );
  if (config.privateRanges.length === 0)
    notes.push(
      'PRIVATE_IP_RANGES is empty: IP Floater then redirects to nothing; the pool gets no target ranges, so any target is allowed',
    );
  if (config.db.kind === 'other')
    notes.push(
      `DB = ${config.db.text}: only SQLite databases can be read; redirections not imported`,
    );
  else if (config.db.kind === 'sqlite' && !dbGiven)
    notes.push(
      `DB = sqlite://${config.db.path}: not read; give --db FILE to import its redirections`,
    );
  for (const key of config.ignoredKeys) notes.push(`${key}: not used by IP Floater, ignored`);
  return notes;
}

/** The agent's flags that serve IP Floater's XML-RPC and REST APIs where it served them. */
export function agentFlags(config: IpfloaterConfig): string[] {
  const hp = ({ host, port }: HostPort): string =>
    host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
  return [
    `--ipfloater-xmlrpc ${hp(config.xmlrpc)}`,
    ...(config.rest ? [`--ipfloater-rest ${hp(config.rest)}`] : []),
  ];
}
