/**
 * Agent configuration: a YAML file (--config) overlaid by flags, flags winning. Loaded and
 * validated once at the edge; the rest of the agent receives a plain AgentConfig. Unknown keys
 * are errors: a misspelt option that is silently ignored is how routers get misconfigured.
 */
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { parse as parseYaml, YAMLParseError } from 'yaml';
import { IpferryError, type Problem } from '../core/errors.js';
import { parseEndpoint, TUNNEL_DRIVERS, type TunnelDriverKind, tunnelMtu } from '../core/tunnel.js';
import {
  DEFAULT_CREDENTIAL_FILE,
  DEFAULT_STATE_DIR,
  DEFAULT_LISTEN,
  DEFAULT_STORE,
  DEFAULT_TOKEN_FILE,
  DEFAULT_TUNNEL_PORT,
} from '../core/defaults.js';
import { checkName, Problems } from '../core/validate.js';
import { tryParsePrefix } from '../core/address.js';
import type { EgressMode, ReservedPort } from '../core/model.js';
import { isHttpStore, type EtcdAccess } from '../store/open.js';
import { readSecretFile } from './secrets.js';

export interface AgentConfig {
  readonly node: string;
  readonly store: string;
  readonly listen: { readonly host: string; readonly port: number };
  readonly tokenFile: string;
  /** With an http(s) store: this node's credential for the hub (written when it joins). */
  readonly credentialFile: string;
  /** With an http(s) store and no credential yet: the join token to present once. */
  readonly joinTokenFile?: string;
  readonly tls?: { readonly cert: string; readonly key: string };
  /** With an etcd: store: how to reach it over TLS and log in (files, read at start). */
  readonly etcd?: EtcdFiles;
  /** Seconds between full resyncs that repair drift. */
  readonly resyncSeconds: number;
  /** Ports the node itself serves (besides the API, added automatically): never forwarded away. */
  readonly reservedPorts: readonly ReservedPort[];
  /** `linux`: the real kernel (nftables, sysctl, conntrack); `fake`: in memory, changes nothing. */
  readonly dataplane: 'linux' | 'fake';
  /** Network namespace the Linux dataplane acts in (labs, tests); the agent's own when absent. */
  readonly netns?: string;
  readonly logLevel: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'silent';
  /** Lines for people or JSON for the journal; absent: human on a terminal, JSON otherwise. */
  readonly logFormat?: LogFormat;
  readonly site?: string;
  /** Directory for this node's own state (the WireGuard key and daemon files). */
  readonly stateDir: string;
  /** UDP port of this node's tunnel. */
  readonly tunnelPort: number;
  /** Where other nodes reach this node's tunnel (host:port); absent behind NAT (it calls out). */
  readonly endpoint?: string;
  /**
   * MTU of the path the tunnel's packets take; absent: that of this host's route toward its
   * peers' endpoints (else its default route's), as wg-quick derives it.
   */
  readonly underlayMtu?: number;
  /** The tunnel's MTU, when not derived from the underlay's (underlay − 60). */
  readonly tunnelMtu?: number;
  /** Which tunnel this node runs: WireGuard (default) or tinc in switch mode. */
  readonly tunnelDriver: TunnelDriverKind;
  /**
   * Seconds between rounds of active probes through the tunnel (health, path MTU), and between
   * checks that the tunnel's device and daemon are as applied (src/agent/tunnelwatch.ts).
   */
  readonly probeSeconds: number;
  /** Where this node's own traffic leaves: its own default route, or through its gateway. */
  readonly egress: EgressMode;
  /** IP Floater's own APIs, served for its users' scripts; absent: neither is served. */
  readonly ipfloater?: IpFloaterConfig;
}

/** IP Floater's REST and XML-RPC servers (docs/migration.md, "IP Floater's own APIs"). */
export interface IpFloaterConfig {
  readonly rest?: { readonly host: string; readonly port: number };
  readonly xmlrpc?: { readonly host: string; readonly port: number };
  /** Pools whose addresses are IP Floater's public IPs; empty: every pool. */
  readonly pools: readonly string[];
  /** Sources allowed to call (CIDRs, canonical); absent: any. */
  readonly allow?: readonly string[];
  /** `token`: HTTP basic auth with an API token as the password; `none`: no authentication. */
  readonly auth: 'none' | 'token';
}

/** The files of the etcd access options; the password only ever comes from its file. */
export interface EtcdFiles {
  /** PEM CA certificate(s) that signed the members' server certificates. */
  readonly ca?: string;
  /** PEM client certificate and its key (mode 0600), for etcd's --client-cert-auth. */
  readonly cert?: string;
  readonly key?: string;
  /** etcd user, and the file (mode 0600) holding its password on one line. */
  readonly user?: string;
  readonly passwordFile?: string;
}

/** Raw options as flags or file give them (kebab-case flags map to camelCase keys). */
export interface RawAgentOptions {
  node?: unknown;
  store?: unknown;
  listen?: unknown;
  tokenFile?: unknown;
  credentialFile?: unknown;
  joinTokenFile?: unknown;
  tlsCert?: unknown;
  tlsKey?: unknown;
  etcdCa?: unknown;
  etcdCert?: unknown;
  etcdKey?: unknown;
  etcdUser?: unknown;
  etcdPasswordFile?: unknown;
  resyncSeconds?: unknown;
  reservedPorts?: unknown;
  dataplane?: unknown;
  netns?: unknown;
  logLevel?: unknown;
  logFormat?: unknown;
  site?: unknown;
  stateDir?: unknown;
  tunnelPort?: unknown;
  endpoint?: unknown;
  underlayMtu?: unknown;
  tunnelMtu?: unknown;
  tunnelDriver?: unknown;
  probeSeconds?: unknown;
  egress?: unknown;
  ipfloaterRest?: unknown;
  ipfloaterXmlrpc?: unknown;
  ipfloaterPool?: unknown;
  ipfloaterAllow?: unknown;
  ipfloaterAuth?: unknown;
}

const KNOWN_KEYS: readonly (keyof RawAgentOptions)[] = [
  'node',
  'store',
  'listen',
  'tokenFile',
  'credentialFile',
  'joinTokenFile',
  'tlsCert',
  'tlsKey',
  'etcdCa',
  'etcdCert',
  'etcdKey',
  'etcdUser',
  'etcdPasswordFile',
  'resyncSeconds',
  'reservedPorts',
  'dataplane',
  'netns',
  'logLevel',
  'logFormat',
  'site',
  'stateDir',
  'tunnelPort',
  'endpoint',
  'underlayMtu',
  'tunnelMtu',
  'tunnelDriver',
  'probeSeconds',
  'egress',
  'ipfloaterRest',
  'ipfloaterXmlrpc',
  'ipfloaterPool',
  'ipfloaterAllow',
  'ipfloaterAuth',
];
const EGRESS_MODES: readonly EgressMode[] = ['own', 'fip', 'masquerade'];
const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'silent'] as const;
/** Here, not in log.ts: what reads the config (`ipferry state`) need not load pino-pretty. */
export const LOG_FORMATS = ['human', 'json'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

/**
 * The error for invalid options, each named as the operator wrote it: `--tunnel-mtu` when it was
 * given on the command line, the file's key otherwise; and where they came from, as the message's
 * source ("Configuration on the command line is invalid: --tunnel-mtu: …").
 */
function configError(
  problems: readonly Problem[],
  flags: RawAgentOptions,
  configFile: string | undefined,
): IpferryError {
  const given = (path: string): string | undefined => {
    const key = /^[A-Za-z]+/.exec(path)?.[0];
    return key !== undefined && (flags as Record<string, unknown>)[key] !== undefined
      ? key
      : undefined;
  };
  const named = problems.map((x) => {
    const key = given(x.path);
    return key ? { ...x, path: `--${kebab(key)}${x.path.slice(key.length)}` } : x;
  });
  const onFlags = problems.filter((x) => given(x.path) !== undefined).length;
  const where = [
    ...(configFile !== undefined && onFlags < problems.length ? [`in ${configFile}`] : []),
    ...(onFlags > 0 ? ['on the command line'] : []),
  ];
  return new IpferryError(
    'IPF_E_CONFIG',
    {
      source: where.length > 0 ? where.join(' and ') : 'of the agent',
      summary: named.map((x) => `${x.path}: ${x.message}`).join('; '),
    },
    named,
  );
}

function kebab(key: string): string {
  return key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

export async function loadConfigFile(path: string): Promise<RawAgentOptions> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw new IpferryError('IPF_E_CONFIG', {
      source: path,
      summary: `cannot be read (${(e as NodeJS.ErrnoException).code ?? 'error'})`,
    });
  }
  let data: unknown;
  try {
    data = parseYaml(text);
  } catch (e) {
    const where = e instanceof YAMLParseError && e.linePos ? ` at line ${e.linePos[0].line}` : '';
    throw new IpferryError('IPF_E_CONFIG', { source: path, summary: `is not valid YAML${where}` });
  }
  if (data === null || data === undefined) return {};
  if (typeof data !== 'object' || Array.isArray(data)) {
    throw new IpferryError('IPF_E_CONFIG', {
      source: path,
      summary: 'must be a mapping of option: value',
    });
  }
  const unknown = Object.keys(data).filter((k) => !KNOWN_KEYS.includes(k as keyof RawAgentOptions));
  if (unknown.length > 0) {
    throw new IpferryError('IPF_E_CONFIG', {
      source: path,
      summary: `unknown option(s) ${unknown.join(', ')} (known: ${KNOWN_KEYS.join(', ')})`,
    });
  }
  return data;
}

/**
 * Merges file and flags (flags win) and validates every option, reporting all problems.
 * `configFile` names the file the options of `file` came from, for the error.
 */
export function resolveConfig(
  file: RawAgentOptions,
  flags: RawAgentOptions,
  configFile?: string,
): AgentConfig {
  const raw: RawAgentOptions = { ...file };
  for (const [k, v] of Object.entries(flags))
    if (v !== undefined) (raw as Record<string, unknown>)[k] = v;
  const p = new Problems();
  let node: string | undefined;
  if (raw.node === undefined)
    p.add('node', 'is required (--node NAME or `node:` in the config file)');
  else node = checkName(p, 'node', raw.node);
  const store = stringOption(p, 'store', raw.store ?? DEFAULT_STORE);
  const listen = parseListen(p, raw.listen ?? DEFAULT_LISTEN);
  const tokenFile = stringOption(p, 'tokenFile', raw.tokenFile ?? DEFAULT_TOKEN_FILE);
  const credentialFile = stringOption(
    p,
    'credentialFile',
    raw.credentialFile ?? DEFAULT_CREDENTIAL_FILE,
  );
  let joinTokenFile: string | undefined;
  if (raw.joinTokenFile !== undefined) {
    joinTokenFile = stringOption(p, 'joinTokenFile', raw.joinTokenFile);
    if (store !== undefined && !isHttpStore(store))
      p.add('joinTokenFile', 'joins a hub: use it with an http(s):// store');
  }
  const tls = parseTls(p, raw.tlsCert, raw.tlsKey);
  const etcd = parseEtcd(p, raw, store);
  const resyncSeconds = numberOption(p, 'resyncSeconds', raw.resyncSeconds ?? 30, 1, 86400);
  const reservedPorts = parseReservedPorts(p, raw.reservedPorts ?? [{ protocol: 'tcp', port: 22 }]);
  const dataplane = raw.dataplane ?? 'linux';
  if (dataplane !== 'linux' && dataplane !== 'fake')
    p.add('dataplane', 'must be "linux" or "fake"');
  let netns: string | undefined;
  if (raw.netns !== undefined) {
    if (typeof raw.netns === 'string' && /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/.test(raw.netns))
      netns = raw.netns;
    else p.add('netns', 'must be the name of a network namespace (ip netns list)');
    if (dataplane === 'fake') p.add('netns', 'only the linux dataplane acts in a namespace');
  }
  const logLevel = raw.logLevel ?? 'info';
  if (!LOG_LEVELS.includes(logLevel as AgentConfig['logLevel']))
    p.add('logLevel', `must be one of ${LOG_LEVELS.join(', ')}`);
  const logFormat = raw.logFormat;
  if (logFormat !== undefined && !LOG_FORMATS.includes(logFormat as LogFormat))
    p.add('logFormat', `must be one of ${LOG_FORMATS.join(', ')}`);
  const site = raw.site === undefined ? undefined : checkName(p, 'site', raw.site);
  const stateDir = stringOption(p, 'stateDir', raw.stateDir ?? DEFAULT_STATE_DIR);
  const tunnelPort = numberOption(p, 'tunnelPort', raw.tunnelPort ?? DEFAULT_TUNNEL_PORT, 1, 65535);
  let endpoint: string | undefined;
  if (typeof raw.endpoint === 'string') {
    try {
      endpoint = parseEndpoint(raw.endpoint).text;
    } catch (e) {
      p.add('endpoint', (e as Error).message);
    }
  } else if (raw.endpoint !== undefined) p.add('endpoint', 'must be host:port or [v6]:port');
  // Unset: the tunnel follows this host's routes toward its peers (compile's withUnderlay).
  const underlayMtu =
    raw.underlayMtu === undefined
      ? undefined
      : numberOption(p, 'underlayMtu', raw.underlayMtu, 1280, 65535);
  const wantedMtu =
    raw.tunnelMtu === undefined
      ? undefined
      : numberOption(p, 'tunnelMtu', raw.tunnelMtu, 68, 65535);
  const tunnelDriver = raw.tunnelDriver ?? 'wireguard';
  if (!TUNNEL_DRIVERS.includes(tunnelDriver as TunnelDriverKind))
    p.add('tunnelDriver', `must be one of ${TUNNEL_DRIVERS.join(', ')}`);
  // Down to 0.1 s: the tunnel watch checks the tunnel device as often (tests run it that fast).
  const probeSeconds = numberOption(p, 'probeSeconds', raw.probeSeconds ?? 5, 0.1, 3600);
  // A tunnel MTU of the operator's is checked against their underlay, else against 1500 (the
  // tunnel then keeps it whatever the routes say: see compile's withUnderlay).
  const checkedUnderlay = raw.underlayMtu === undefined ? 1500 : underlayMtu;
  if (checkedUnderlay !== undefined && wantedMtu !== undefined) {
    try {
      tunnelMtu(checkedUnderlay, 4, {
        configured: wantedMtu,
        ...(tunnelDriver === 'tinc' ? { driver: 'tinc' } : {}),
      });
    } catch (e) {
      p.add('tunnelMtu', (e as Error).message);
    }
  }
  const egress = raw.egress ?? 'own';
  if (!EGRESS_MODES.includes(egress as EgressMode))
    p.add('egress', `must be one of ${EGRESS_MODES.join(', ')}`);
  const ipfloater = parseIpFloater(p, raw);
  if (!p.ok) throw configError(p.list, flags, configFile);
  const floaterPorts = [ipfloater?.rest, ipfloater?.xmlrpc].flatMap((l) =>
    l ? [{ protocol: 'tcp' as const, port: l.port }] : [],
  );
  return {
    node: node!,
    store: store!,
    listen: listen!,
    tokenFile: tokenFile!,
    credentialFile: credentialFile!,
    ...(joinTokenFile ? { joinTokenFile } : {}),
    ...(tls ? { tls } : {}),
    ...(etcd ? { etcd } : {}),
    resyncSeconds: resyncSeconds!,
    reservedPorts: [...reservedPorts, { protocol: 'tcp', port: listen!.port }, ...floaterPorts],
    dataplane: dataplane as AgentConfig['dataplane'],
    ...(netns ? { netns } : {}),
    logLevel: logLevel as AgentConfig['logLevel'],
    ...(logFormat !== undefined ? { logFormat: logFormat as LogFormat } : {}),
    ...(site ? { site } : {}),
    stateDir: stateDir!,
    tunnelPort: tunnelPort!,
    ...(endpoint ? { endpoint } : {}),
    ...(underlayMtu !== undefined ? { underlayMtu } : {}),
    ...(wantedMtu !== undefined ? { tunnelMtu: wantedMtu } : {}),
    tunnelDriver: tunnelDriver as TunnelDriverKind,
    probeSeconds: probeSeconds!,
    egress: egress as EgressMode,
    ...(ipfloater ? { ipfloater } : {}),
  };
}

const FLOATER_LISTEN_EXAMPLE =
  'ADDRESS:PORT, e.g. 127.0.0.1:7003 (REST) or 127.0.0.1:7000 (XML-RPC)';

/**
 * IP Floater's APIs had no authentication. Here a server listening beyond loopback must either
 * limit its sources (ipfloaterAllow) or ask for an API token (ipfloaterAuth: token), else the
 * agent refuses to start: anyone who reaches the port could otherwise redirect public IPs.
 */
function parseIpFloater(p: Problems, raw: RawAgentOptions): IpFloaterConfig | undefined {
  const listenOf = (key: 'ipfloaterRest' | 'ipfloaterXmlrpc') => {
    if (raw[key] === undefined) return undefined;
    const probe = new Problems();
    const l = parseListen(probe, raw[key]);
    if (!l) p.add(key, `must be ${FLOATER_LISTEN_EXAMPLE}`);
    return l;
  };
  const rest = listenOf('ipfloaterRest');
  const xmlrpc = listenOf('ipfloaterXmlrpc');
  const served = raw.ipfloaterRest !== undefined || raw.ipfloaterXmlrpc !== undefined;
  for (const key of ['ipfloaterPool', 'ipfloaterAllow', 'ipfloaterAuth'] as const) {
    if (raw[key] !== undefined && !served) {
      p.add(key, 'has no effect without --ipfloater-rest or --ipfloater-xmlrpc');
    }
  }
  if (!served) return undefined;
  const pools = listOption(raw.ipfloaterPool).flatMap((name) => {
    const valid = checkName(p, 'ipfloaterPool', name);
    return valid ? [valid] : [];
  });
  let allow: string[] | undefined;
  if (raw.ipfloaterAllow !== undefined) {
    allow = listOption(raw.ipfloaterAllow).flatMap((text) => {
      const prefix = tryParsePrefix(
        text.includes('/') ? text : `${text}/${text.includes(':') ? 128 : 32}`,
        false,
      );
      if (prefix) return [prefix.text];
      p.add('ipfloaterAllow', `${JSON.stringify(text)} is not an address or a CIDR prefix`);
      return [];
    });
    if (allow.length === 0) p.add('ipfloaterAllow', 'must name at least one CIDR prefix');
  }
  const auth = raw.ipfloaterAuth ?? 'none';
  if (auth !== 'none' && auth !== 'token') p.add('ipfloaterAuth', 'must be "token" or "none"');
  for (const [key, l] of [
    ['ipfloaterRest', rest],
    ['ipfloaterXmlrpc', xmlrpc],
  ] as const) {
    if (l && !isLoopbackHost(l.host) && allow === undefined && auth !== 'token') {
      p.add(
        key,
        `listens on ${l.host}, beyond this host, without protection: IP Floater's APIs have no authentication, so add --ipfloater-allow CIDR[,CIDR…] (the sources that may call) and/or --ipfloater-auth token (HTTP basic auth, an API token as the password)`,
      );
    }
  }
  return {
    ...(rest ? { rest } : {}),
    ...(xmlrpc ? { xmlrpc } : {}),
    pools,
    ...(allow ? { allow } : {}),
    auth: auth === 'token' ? 'token' : 'none',
  };
}

/** A list given as YAML list or as comma-separated text (a flag). */
function listOption(value: unknown): string[] {
  if (value === undefined) return [];
  const items = Array.isArray(value)
    ? value
    : typeof value === 'string'
      ? value.split(',')
      : [value];
  return items.map((v) => (typeof v === 'string' ? v.trim() : String(v))).filter((v) => v !== '');
}

/** Whether a listen host is reachable only from this host. */
export function isLoopbackHost(host: string): boolean {
  return host === 'localhost' || host.startsWith('127.') || host === '::1';
}

function stringOption(p: Problems, path: string, value: unknown): string | undefined {
  if (typeof value === 'string' && value.length > 0) return value;
  p.add(path, 'must be a non-empty string');
  return undefined;
}

function numberOption(
  p: Problems,
  path: string,
  value: unknown,
  min: number,
  max: number,
): number | undefined {
  const n = typeof value === 'string' && /^\d+(\.\d+)?$/.test(value) ? Number(value) : value;
  if (typeof n === 'number' && n >= min && n <= max) return n;
  p.add(path, `must be a number from ${min} to ${max}`);
  return undefined;
}

function parseListen(p: Problems, value: unknown): AgentConfig['listen'] | undefined {
  const m =
    typeof value === 'string' ? /^(?:\[([0-9a-fA-F:.]+)\]|([^:\s]+)):(\d{1,5})$/.exec(value) : null;
  const port = m ? Number(m[3]) : NaN;
  const host = m?.[1] ?? m?.[2];
  if (!m || !host || port < 0 || port > 65535) {
    p.add('listen', 'must be ADDRESS:PORT, e.g. 127.0.0.1:7447 or [::1]:7447');
    return undefined;
  }
  return { host, port };
}

function parseTls(p: Problems, cert: unknown, key: unknown): AgentConfig['tls'] | undefined {
  if (cert === undefined && key === undefined) return undefined;
  if (typeof cert !== 'string' || typeof key !== 'string' || !cert || !key) {
    p.add('tls', 'needs both --tls-cert and --tls-key');
    return undefined;
  }
  return { cert, key };
}

const ETCD_KEYS = ['etcdCa', 'etcdCert', 'etcdKey', 'etcdUser', 'etcdPasswordFile'] as const;

function parseEtcd(
  p: Problems,
  raw: RawAgentOptions,
  store: string | undefined,
): EtcdFiles | undefined {
  const given = ETCD_KEYS.filter((k) => raw[k] !== undefined);
  if (given.length === 0) return undefined;
  const files: Record<string, string> = {};
  for (const k of given) {
    const value = stringOption(p, k, raw[k]);
    if (value !== undefined) files[k] = value;
  }
  if (store !== undefined && !store.toLowerCase().startsWith('etcd:')) {
    for (const k of given) p.add(k, 'is for an etcd: store (--store etcd:https://…)');
  }
  const pair = (a: (typeof ETCD_KEYS)[number], b: (typeof ETCD_KEYS)[number], what: string) => {
    if (raw[a] !== undefined && raw[b] === undefined) p.add(a, `needs --${kebab(b)} ${what} too`);
  };
  pair('etcdCert', 'etcdKey', "(the certificate's private key)");
  pair('etcdKey', 'etcdCert', '(the certificate of the key)');
  pair('etcdUser', 'etcdPasswordFile', "(the user's password, in a file of mode 0600)");
  pair('etcdPasswordFile', 'etcdUser', '(whose password it is)');
  // The name reaches messages and logs: printable ASCII only, nothing that could steer a terminal.
  if (files['etcdUser'] !== undefined && !/^[!-~]{1,128}$/.test(files['etcdUser'])) {
    p.add('etcdUser', 'must be an etcd user name: 1 to 128 printable ASCII characters, no spaces');
  }
  return {
    ...(files['etcdCa'] !== undefined ? { ca: files['etcdCa'] } : {}),
    ...(files['etcdCert'] !== undefined ? { cert: files['etcdCert'] } : {}),
    ...(files['etcdKey'] !== undefined ? { key: files['etcdKey'] } : {}),
    ...(files['etcdUser'] !== undefined ? { user: files['etcdUser'] } : {}),
    ...(files['etcdPasswordFile'] !== undefined ? { passwordFile: files['etcdPasswordFile'] } : {}),
  };
}

/**
 * Reads the files of the etcd options into what openStore needs (nothing without them). The key
 * and the password file are secrets: refused when others may read them (IPF_E_SECRET_FILE), and
 * their contents never reach a message. Certificates and key are parsed here, so a wrong file
 * is named at start rather than surfacing as a failed TLS handshake.
 */
export async function readEtcdAccess(
  config: Pick<AgentConfig, 'etcd'>,
): Promise<{ etcd?: EtcdAccess }> {
  const files = config.etcd;
  if (!files) return {};
  const ca = files.ca === undefined ? undefined : await readCertificate('--etcd-ca', files.ca);
  let cert: Buffer | undefined;
  let key: Buffer | undefined;
  if (files.cert !== undefined && files.key !== undefined) {
    cert = await readCertificate('--etcd-cert', files.cert);
    key = Buffer.from(await readSecretFile(files.key));
    let matches: boolean;
    try {
      matches = new X509Certificate(cert).checkPrivateKey(createPrivateKey(key));
    } catch {
      throw fileError('--etcd-key', `${files.key} does not hold an unencrypted PEM private key`);
    }
    if (!matches) {
      throw fileError(
        '--etcd-key',
        `${files.key} is not the private key of the certificate in ${files.cert}`,
      );
    }
  }
  let password: string | undefined;
  if (files.passwordFile !== undefined) {
    // One line; its line ending is not part of the password (echo adds one).
    const text = (await readSecretFile(files.passwordFile)).replace(/\r?\n$/, '');
    const problem =
      text === ''
        ? 'is empty: it must hold the etcd password on one line'
        : /[\r\n]/.test(text)
          ? 'holds more than one line: it must hold only the etcd password'
          : undefined;
    if (problem !== undefined) {
      throw new IpferryError('IPF_E_SECRET_FILE', { path: files.passwordFile, problem });
    }
    password = text;
  }
  return {
    etcd: {
      ...(ca !== undefined ? { ca } : {}),
      ...(cert !== undefined && key !== undefined ? { cert, key } : {}),
      ...(files.user !== undefined && password !== undefined ? { user: files.user, password } : {}),
    },
  };
}

function fileError(option: string, summary: string): IpferryError {
  return new IpferryError('IPF_E_CONFIG', { source: option, summary });
}

/** A file of PEM certificates, the first of which must parse; its expiry is checked too. */
async function readCertificate(option: string, path: string): Promise<Buffer> {
  let pem: Buffer;
  try {
    pem = await readFile(path);
  } catch (e) {
    throw fileError(
      option,
      `${path} cannot be read (${(e as NodeJS.ErrnoException).code ?? 'error'})`,
    );
  }
  let certificate: X509Certificate;
  try {
    if (!pem.includes('-----BEGIN CERTIFICATE-----')) throw new Error('no PEM certificate');
    certificate = new X509Certificate(pem);
  } catch {
    throw fileError(option, `${path} does not hold a PEM certificate`);
  }
  const now = Date.now();
  if (Date.parse(certificate.validTo) < now || Date.parse(certificate.validFrom) > now) {
    throw fileError(
      option,
      `the certificate in ${path} is valid only from ${certificate.validFrom} to ${certificate.validTo}`,
    );
  }
  return pem;
}

function parseReservedPorts(p: Problems, value: unknown): ReservedPort[] {
  if (!Array.isArray(value)) {
    p.add('reservedPorts', 'must be a list of {protocol, port}');
    return [];
  }
  return value.flatMap((item: unknown, i): ReservedPort[] => {
    const r = item as { protocol?: unknown; port?: unknown };
    if (
      (r?.protocol === 'tcp' || r?.protocol === 'udp') &&
      Number.isInteger(r.port) &&
      (r.port as number) >= 1 &&
      (r.port as number) <= 65535
    ) {
      return [{ protocol: r.protocol, port: r.port as number }];
    }
    p.add(`reservedPorts[${i}]`, 'must be {protocol: tcp|udp, port: 1-65535}');
    return [];
  });
}
