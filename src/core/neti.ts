/**
 * Neti's configuration (Instagram's ZooKeeper-and-iptables firewall sync, `neti.yml`) as an
 * ipferry mesh policy: the same overlay, open ports, SSH whitelist, `reject_all`, NAT overrides
 * and change threshold, so that a Neti fleet moves to ipferry with the rules it already trusts.
 *
 * Neti read its file with PyYAML, so it is read here as YAML 1.1 (`reject_all: yes` is true).
 * What ipferry has no counterpart for (ZooKeeper hosts and paths, AWS keys, log and table files)
 * is listed with the reason, by key only: a value may be a secret (`aws_secret_key`). A value
 * ipferry cannot use is an error naming Neti's key, and the policy produced has passed
 * validateMeshPolicy, the same check `ipferry mesh set` meets.
 *
 * Neti's two sides become two sites: `ec2` and `vpc`, the sides `zk_hosts` names. Agents started
 * with `--site ec2` or `--site vpc` then reach a peer on their own side by its private address and
 * one on the other side by its public address, as Neti's NAT did.
 */
import { parse as parseYaml, YAMLParseError } from 'yaml';
import { tryParseAddress, tryParsePrefix } from './address.js';
import { IpferryError } from './errors.js';
import { type MeshPolicy, validateMeshPolicy } from './mesh.js';
import { Problems } from './validate.js';

// ---------------------------------------------------------------------------------------------
// Model

/** Neti's two sides of the migration, as `zk_hosts` names them; each becomes a site. */
export const NETI_SIDES = ['ec2', 'vpc'] as const;
export type NetiSide = (typeof NETI_SIDES)[number];

/** Neti's change threshold when its ZooKeeper node holds none (DEFAULT_MAX_CHANGE_THRESHOLD). */
export const NETI_DEFAULT_MAXCHANGE = 20;

/** Neti's overlay when a deployment kept the documented default (its README, its cookbook). */
export const NETI_DEFAULT_OVERLAY = '192.168.0.0/18';

/** The keys of a Neti configuration that ipferry takes over, as Neti reads them, typed. */
export interface NetiConfig {
  /** `overlay_subnet`, as written (checked against ipferry's overlay rules when mapped). */
  readonly overlaySubnet?: string;
  /** `open_ports`: TCP ports or ranges (Neti opened TCP only). */
  readonly openPorts: readonly { readonly first: number; readonly last: number }[];
  /** `ssh_whitelist`: prefixes in canonical form (a bare address is its /32 or /128). */
  readonly sshWhitelist: readonly string[];
  readonly rejectAll?: boolean;
  /** `nat_overrides`: address → address to reach it at. */
  readonly natOverrides: Readonly<Record<string, string>>;
  /** `maxchange`: Neti kept it in ZooKeeper; a file (or `--max-change`) may carry it. */
  readonly maxChange?: number;
  /** The sides `zk_hosts` names. */
  readonly sides: readonly NetiSide[];
  /** Every other key, with why ipferry has no place for it. */
  readonly unmapped: readonly NetiUnmapped[];
}

/** A key of the Neti file that has no counterpart: named, never with its value. */
export interface NetiUnmapped {
  readonly key: string;
  readonly reason: string;
}

export interface NetiImport {
  /** The policy, validated: what `ipferry mesh set --file` takes. */
  readonly policy: MeshPolicy;
  /** Keys that have no counterpart, with the reason. */
  readonly unmapped: readonly NetiUnmapped[];
  /** Defaults and conversions the import applied, one sentence each. */
  readonly notes: readonly string[];
}

export interface NetiImportOptions {
  /** The threshold to use instead of the file's (Neti kept it in ZooKeeper). */
  readonly maxChange?: number;
}

// ---------------------------------------------------------------------------------------------
// Keys

const MAPPED_KEYS = [
  'overlay_subnet',
  'open_ports',
  'ssh_whitelist',
  'reject_all',
  'nat_overrides',
  'maxchange',
  'zk_hosts',
] as const;

const ZK_PATH =
  "ZooKeeper's layout: ipferry keeps node records, overlay addresses and the policy in its own store (etcd, `ipferry agent --store`)";

/** Keys Neti reads that ipferry has no use for, with the reason. */
const UNMAPPED_REASONS: Readonly<Record<string, string>> = {
  aws_key:
    'AWS credentials: Neti tagged instances with their overlay address; ipferry keeps it in the node record (`ipferry node list`) and needs no cloud credentials',
  aws_secret_key:
    'AWS credentials: Neti tagged instances with their overlay address; ipferry keeps it in the node record (`ipferry node list`) and needs no cloud credentials',
  log_file: 'the agent logs to stderr (the journal under systemd); `--log-level` sets how much',
  table_files_path:
    'Neti cached its iptables files to skip unchanged reloads; ipferry reads the kernel back and changes only what differs',
  zk_prefix: ZK_PATH,
  zk_update_interval_path: ZK_PATH,
  zk_max_change_threshold_path: `${ZK_PATH}; the threshold itself is maxChange in the policy`,
  zk_iptoid_node: ZK_PATH,
  zk_idtoip_node: ZK_PATH,
  zk_ip_map_node: ZK_PATH,
};

const UNKNOWN_REASON = 'Neti reads no such key, so it did nothing there either';

const isRecord = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

// ---------------------------------------------------------------------------------------------
// Reading

/**
 * A Neti file's text as YAML 1.1, as PyYAML read it. Syntax only; readNetiConfig checks the
 * keys. `source` names the file in the error.
 */
export function parseNetiYaml(text: string, source: string): unknown {
  try {
    return parseYaml(text, { version: '1.1' }) as unknown;
  } catch (e) {
    const where = e instanceof YAMLParseError && e.linePos ? ` at line ${e.linePos[0].line}` : '';
    throw new IpferryError('IPF_E_CONFIG', {
      source,
      summary: `is not valid YAML${where}`,
    });
  }
}

/** `80`, `"80"`, `"8000:8010"` (iptables' range, which Neti passed on as it was). */
function readPort(
  p: Problems,
  path: string,
  value: unknown,
): { first: number; last: number } | undefined {
  const text = typeof value === 'number' ? String(value) : value;
  const m = typeof text === 'string' ? /^(\d{1,5})(?::(\d{1,5}))?$/.exec(text.trim()) : null;
  if (!m) {
    p.add(path, `${JSON.stringify(value)} is not a TCP port (1–65535) or a range FIRST:LAST`);
    return undefined;
  }
  const first = Number(m[1]);
  const last = m[2] === undefined ? first : Number(m[2]);
  if (first < 1 || last > 65535 || first > 65535 || last < 1) {
    p.add(path, `${JSON.stringify(value)} is not a port number (1–65535)`);
    return undefined;
  }
  if (last < first) {
    p.add(path, `range ${JSON.stringify(value)} ends before it starts`);
    return undefined;
  }
  return { first, last };
}

/** Neti's lists may be empty (`open_ports:` with nothing under it reads as null). */
function listAt(p: Problems, path: string, value: unknown): readonly unknown[] {
  if (value === undefined || value === null) return [];
  if (Array.isArray(value)) return value;
  p.add(path, 'must be a list');
  return [];
}

function readPrefix(p: Problems, path: string, value: unknown): string | undefined {
  if (typeof value !== 'string') {
    p.add(path, `${JSON.stringify(value)} is not a prefix (192.0.2.0/24) or an address`);
    return undefined;
  }
  const address = tryParseAddress(value);
  if (address) return `${address.text}/${address.family === 4 ? 32 : 128}`;
  const prefix = tryParsePrefix(value);
  if (prefix) return prefix.text;
  const loose = tryParsePrefix(value, false);
  p.add(
    path,
    loose
      ? `${JSON.stringify(value)} has host bits set: did you mean ${loose.text}?`
      : `${JSON.stringify(value)} is not a prefix (192.0.2.0/24) or an address`,
  );
  return undefined;
}

function readNatOverrides(p: Problems, value: unknown): Record<string, string> {
  if (value === undefined || value === null) return {};
  if (!isRecord(value)) {
    p.add('nat_overrides', 'must map addresses to addresses (SOURCE: DESTINATION)');
    return {};
  }
  const out: Record<string, string> = {};
  for (const [from, to] of Object.entries(value)) {
    const a = tryParseAddress(from);
    const b = typeof to === 'string' ? tryParseAddress(to) : undefined;
    if (a?.family !== 4 || b?.family !== 4) {
      p.add(
        `nat_overrides.${from}`,
        `${JSON.stringify(from)} → ${JSON.stringify(to)} is not a pair of IPv4 addresses`,
      );
    } else out[a.text] = b.text;
  }
  return out;
}

function readSides(p: Problems, value: unknown, unmapped: NetiUnmapped[]): NetiSide[] {
  if (value === undefined || value === null) return [];
  if (!isRecord(value)) {
    p.add('zk_hosts', 'must map a side (ec2, vpc) to its ZooKeeper hosts');
    return [];
  }
  const sides: NetiSide[] = [];
  for (const key of Object.keys(value)) {
    const side = NETI_SIDES.find((s) => s === key);
    if (side) sides.push(side);
    else unmapped.push({ key: `zk_hosts.${key}`, reason: `${UNKNOWN_REASON} (sides: ec2, vpc)` });
  }
  unmapped.push({
    key: 'zk_hosts',
    reason: `the ZooKeeper hosts: ipferry agents reach their store with \`--store etcd:http://HOST:2379,…\`; the sides (${sides.join(', ') || 'none'}) became sites`,
  });
  return sides;
}

function readMaxChange(p: Problems, value: unknown): number | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value === 'number' && Number.isInteger(value) && value >= 0) return value;
  p.add('maxchange', `${JSON.stringify(value)} is not a whole number of hosts, 0 or more`);
  return undefined;
}

/**
 * A parsed Neti file as typed values: the keys ipferry maps, checked, and every other key listed
 * with its reason. Every problem at once, in one IPF_E_VALIDATION naming Neti's keys.
 */
export function readNetiConfig(input: unknown): NetiConfig {
  const p = new Problems();
  const config = collectNetiConfig(input, p);
  p.done();
  return config;
}

/** readNetiConfig's work, its problems left in `p` (what is wrong is left out of the result). */
function collectNetiConfig(input: unknown, p: Problems): NetiConfig {
  if (!isRecord(input)) {
    p.add('', 'must be a mapping of Neti settings (overlay_subnet, open_ports, …)');
    return { openPorts: [], sshWhitelist: [], natOverrides: {}, sides: [], unmapped: [] };
  }
  const v = input;
  const unmapped: NetiUnmapped[] = [];
  for (const key of Object.keys(v)) {
    if ((MAPPED_KEYS as readonly string[]).includes(key)) continue;
    unmapped.push({ key, reason: UNMAPPED_REASONS[key] ?? UNKNOWN_REASON });
  }
  let overlaySubnet: string | undefined;
  if (v.overlay_subnet !== undefined && v.overlay_subnet !== null) {
    if (typeof v.overlay_subnet === 'string') overlaySubnet = v.overlay_subnet.trim();
    else p.add('overlay_subnet', `${JSON.stringify(v.overlay_subnet)} is not a prefix`);
  }
  const openPorts = listAt(p, 'open_ports', v.open_ports)
    .map((item, i) => readPort(p, `open_ports[${i}]`, item))
    .filter((x) => x !== undefined);
  const sshWhitelist = listAt(p, 'ssh_whitelist', v.ssh_whitelist)
    .map((item, i) => readPrefix(p, `ssh_whitelist[${i}]`, item))
    .filter((x) => x !== undefined);
  let rejectAll: boolean | undefined;
  if (v.reject_all !== undefined && v.reject_all !== null) {
    if (typeof v.reject_all === 'boolean') rejectAll = v.reject_all;
    else p.add('reject_all', `${JSON.stringify(v.reject_all)} is not true or false`);
  }
  const natOverrides = readNatOverrides(p, v.nat_overrides);
  const maxChange = readMaxChange(p, v.maxchange);
  const sides = readSides(p, v.zk_hosts, unmapped);
  return {
    ...(overlaySubnet !== undefined ? { overlaySubnet } : {}),
    openPorts,
    sshWhitelist: [...new Set(sshWhitelist)],
    ...(rejectAll !== undefined ? { rejectAll } : {}),
    natOverrides,
    ...(maxChange !== undefined ? { maxChange } : {}),
    sides,
    unmapped,
  };
}

// ---------------------------------------------------------------------------------------------
// Mapping

/** Where a policy's problem came from in the Neti file: its paths named as Neti's keys. */
function netiPath(path: string): string {
  const rules: [RegExp, string][] = [
    [/^overlay$/, 'overlay_subnet'],
    [/^maxChange$/, 'maxchange'],
    [/^fleet\.openPorts/, 'open_ports'],
    [/^fleet\.sshAllow/, 'ssh_whitelist'],
    [/^fleet\.rejectAll/, 'reject_all'],
    [/^fleet\.natOverrides/, 'nat_overrides'],
    [/^sites/, 'zk_hosts'],
  ];
  for (const [from, to] of rules) if (from.test(path)) return path.replace(from, to);
  return path;
}

/**
 * ipferry's own check of the policy, its problems added to `p` named by the Neti keys they came
 * from; the policy in canonical form when it passed.
 */
function checkPolicy(candidate: MeshPolicy, p: Problems): MeshPolicy | undefined {
  try {
    return validateMeshPolicy(candidate);
  } catch (e) {
    if (!(e instanceof IpferryError)) throw e;
    for (const q of e.problems) p.add(netiPath(q.path), q.message);
    return undefined;
  }
}

/**
 * The mesh policy a Neti configuration becomes: everything on the fleet layer (Neti applied one
 * file to every host), its sides as sites. Defaults Neti's deployments relied on are filled in
 * and said in `notes`. A value ipferry refuses (an overlay of public space, say) is an
 * IPF_E_VALIDATION naming the Neti key.
 */
export function netiToMeshPolicy(config: NetiConfig, options: NetiImportOptions = {}): NetiImport {
  const p = new Problems();
  const mapped = mapNeti(config, options, p);
  p.done();
  return mapped!;
}

function mapNeti(
  config: NetiConfig,
  options: NetiImportOptions,
  p: Problems,
): NetiImport | undefined {
  const notes: string[] = [];
  const overlay = config.overlaySubnet ?? NETI_DEFAULT_OVERLAY;
  if (config.overlaySubnet === undefined)
    notes.push(
      `overlay_subnet is absent: Neti's documented default ${NETI_DEFAULT_OVERLAY} is used`,
    );
  let maxChange = options.maxChange ?? config.maxChange;
  if (options.maxChange !== undefined && config.maxChange !== undefined)
    notes.push(
      `maxchange ${config.maxChange} of the file is replaced by --max-change ${options.maxChange}`,
    );
  if (maxChange === undefined) {
    maxChange = NETI_DEFAULT_MAXCHANGE;
    notes.push(
      `maxchange lives in ZooKeeper (zk_prefix/zk_max_change_threshold_path), not in the file: Neti's default ${NETI_DEFAULT_MAXCHANGE} is used; give the value your fleet ran with as --max-change`,
    );
  }
  const ranges = config.openPorts.map((r) =>
    r.first === r.last ? `tcp/${r.first}` : `tcp/${r.first}-${r.last}`,
  );
  if (config.rejectAll === undefined) notes.push("reject_all is absent: off, ipferry's default");
  const fleet = {
    ...(ranges.length > 0 ? { openPorts: [...new Set(ranges)] } : {}),
    ...(config.sshWhitelist.length > 0 ? { sshAllow: config.sshWhitelist } : {}),
    rejectAll: config.rejectAll ?? false,
    ...(Object.keys(config.natOverrides).length > 0 ? { natOverrides: config.natOverrides } : {}),
  };
  const sites = Object.fromEntries(config.sides.map((side) => [side, {}]));
  if (config.sides.length > 0)
    notes.push(
      `sides ${config.sides.join(', ')} are sites: start each agent with --site ${config.sides.join(' or --site ')} as its host's side`,
    );
  const policy = checkPolicy({ overlay, maxChange, fleet, sites, nodes: {} }, p);
  return policy && { policy, unmapped: config.unmapped, notes };
}

/** Text of a Neti file → the mesh policy and what could not be mapped. */
export function importNeti(
  text: string,
  source: string,
  options: NetiImportOptions = {},
): NetiImport {
  // Neti's keys and ipferry's policy rules checked in one round: every problem at once.
  const p = new Problems();
  const config = collectNetiConfig(parseNetiYaml(text, source), p);
  const mapped = mapNeti(config, options, p);
  p.done();
  return mapped!;
}
