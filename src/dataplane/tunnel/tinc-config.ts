/**
 * A tinc tunnel's configuration directory, `stateDir/tinc/NAME/`, written from the intent and
 * read back by observe(): `tinc.conf` (this node's Name, switch mode, tap `Interface = NAME`, a
 * `ConnectTo` per peer with an endpoint), `hosts/NODE` per peer (`Address`, its RSA public key,
 * and the intent's allowed IPs and keepalive as `# ipferry-…` comment lines so they can be read
 * back), this node's own `hosts/NODE` (`Port` = listen port, public key), and tincd's pid and
 * log files.
 */
import { randomBytes } from 'node:crypto';
import { open, readdir, readFile, rename, stat, unlink, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { type Problem, validationError } from '../../core/errors.js';
import {
  isTincKey,
  parseEndpoint,
  type TunnelIntent,
  type TunnelPeer,
  validateTunnelIntent,
} from '../../core/tunnel.js';
import { forValue, shown, tinc, tincFileOf, tunnel, Unfit, within } from '../linux/args.js';
import { ensurePrivateDir } from './keys.js';

/** tinc pings each peer this often and drops it after PingTimeout without an answer. */
const PING_INTERVAL = 10;
const PING_TIMEOUT = 5;
/** The longest tinc waits between attempts to reach a peer (its default is 900 s). */
const MAX_TIMEOUT = 10;
const ALLOWED_IPS_COMMENT = '# ipferry-allowed-ips:';
const KEEPALIVE_COMMENT = '# ipferry-keepalive:';

/** Tunnel `name`'s files under the node's tinc directory `root`. */
export interface TunnelFiles {
  /** tincd's configuration directory (`-c`). */
  readonly dir: string;
  readonly pidFile: string;
  readonly logFile: string;
}

export function tunnelFiles(root: string, name: string): TunnelFiles {
  const dir = join(root, name);
  return { dir, pidFile: join(dir, 'tincd.pid'), logFile: join(dir, 'tincd.log') };
}

/** What a tunnel's configuration directory says. */
export interface TincConfig {
  readonly keyFile: string | undefined;
  readonly listenPort: number;
  readonly peers: readonly TunnelPeer[];
}

/** This node as its tunnels' configuration names it. */
export interface OwnHost {
  /** Its tinc Name (tincName). */
  readonly name: string;
  /** The private key file tincd is pointed at (PrivateKeyFile). */
  readonly keyFile: string;
  readonly publicKey: string;
}

/**
 * tinc Names allow only [A-Za-z0-9_]; node names are [a-z0-9-], so swapping `-` for `_` is
 * one-to-one and readable, and nodeOf undoes it.
 */
export function tincName(node: string): string {
  return node.replace(/-/g, '_');
}

function nodeOf(name: string): string {
  return name.replace(/_/g, '-');
}

/**
 * The core's checks, plus what tinc needs: its own kind, and one host file per peer node (none
 * named like `node`, this node's own).
 */
export function validateTincIntent(input: TunnelIntent, node: string): TunnelIntent {
  // First, so a WireGuard intent is told so rather than that its keys are not tinc's.
  if ((input as { driver?: unknown } | undefined)?.driver !== 'tinc') {
    throw validationError([
      { path: 'driver', message: 'must be "tinc" for the tinc driver (absent means WireGuard)' },
    ]);
  }
  const intent = validateTunnelIntent(input);
  const problems: Problem[] = [];
  const seen = new Map<string, number>();
  intent.peers.forEach((peer, i) => {
    const name = tincName(peer.node ?? '');
    if (peer.node === node) {
      problems.push({ path: `peers[${i}].node`, message: 'is this node itself' });
    }
    const other = seen.get(name);
    if (other !== undefined) {
      problems.push({ path: `peers[${i}].node`, message: `is also peers[${other}]'s node` });
    }
    seen.set(name, i);
  });
  if (problems.length > 0) throw validationError(problems);
  return intent;
}

/**
 * The tunnel's files, by their path in its configuration directory (`tinc.conf`,
 * `hosts/NAME`), as they are written. Every value is parsed again on its way into a line
 * (../linux/args.ts: a node name, an interface name, a port, an endpoint, a prefix, a PEM key
 * block), and every line is checked once more, so a value that would end its line and start
 * another (`Subnet = 0.0.0.0/0` after a key, `ConnectTo` after a name) refuses the tunnel with
 * IPF_E_DATAPLANE before any file is written. Without `own.publicKey` this node's own host file
 * is left out: the driver checks an intent so before it has made its key.
 */
export function renderConfig(
  own: Omit<OwnHost, 'publicKey'> & { readonly publicKey?: string },
  intent: TunnelIntent,
): Map<string, string> {
  const key = intent.name;
  return forValue('tunnel', key, () => {
    const name = tinc.name(own.name);
    const connect = intent.peers.filter((p) => p.endpoint !== undefined);
    const conf = [
      '# Written by ipferry: changes here are overwritten.',
      `Name = ${name}`,
      'Mode = switch',
      'DeviceType = tap',
      `Interface = ${tunnel.ifname(intent.name)}`,
      'AddressFamily = any',
      `PrivateKeyFile = ${tinc.localFile(own.keyFile)}`,
      // The agents' probes measure the path (src/agent/path-monitor.ts), as for WireGuard. tinc's own
      // discovery would send what is larger than what it has found so far over its TCP meta
      // connection meanwhile — so a large probe passes through a black hole and the path looks
      // whole — and settle a few bytes low. Off, every frame goes by UDP, unfragmented by tinc.
      'PMTUDiscovery = no',
      `PingInterval = ${PING_INTERVAL}`,
      `PingTimeout = ${PING_TIMEOUT}`,
      `MaxTimeout = ${MAX_TIMEOUT}`,
      ...connect.map((p) => `ConnectTo = ${peerName(p)}`),
    ];
    const files = new Map<string, string>([['tinc.conf', tincFileOf('tunnel', key, conf)]]);
    const port = `Port = ${tinc.port(intent.listenPort)}`;
    if (own.publicKey !== undefined) {
      const lines = [port, ...within('this node', () => tinc.pem(own.publicKey ?? ''))];
      files.set(`hosts/${name}`, tincFileOf('tunnel', key, lines));
    }
    for (const peer of intent.peers) {
      const file = `hosts/${peerName(peer)}`;
      if (file === `hosts/${name}`) throw new Unfit(`peer ${shown(peer.node)} is this node`);
      files.set(file, tincFileOf('tunnel', key, hostLines(peer)));
    }
    return files;
  });
}

/** A peer's tinc Name, parsed again. */
function peerName(peer: TunnelPeer): string {
  return within(`peer ${shown(peer.node)}`, () => tinc.name(tincName(peer.node ?? '')));
}

/**
 * Writes the tunnel's configuration into `dir` from the intent (renderConfig: all of it is
 * rendered before the first file is written). Only files whose content changes are written
 * (tinc drops the connection of a peer whose host file is newer than its last reload); a
 * change to comment lines only keeps the file's old mtime for the same reason.
 */
export async function writeConfig(dir: string, own: OwnHost, intent: TunnelIntent): Promise<void> {
  const files = renderConfig(own, intent);
  await ensurePrivateDir(dir);
  await ensurePrivateDir(join(dir, 'hosts'));
  for (const [path, text] of files) await writeIfChanged(join(dir, path), text);
  for (const name of await readdir(join(dir, 'hosts'))) {
    if (!files.has(`hosts/${name}`)) await unlink(join(dir, 'hosts', name));
  }
}

/** What the configuration in `dir` says; `ownName` when tinc.conf names no node. */
export async function readConfig(dir: string, ownName: string): Promise<TincConfig> {
  const conf = await readFile(join(dir, 'tinc.conf'), 'utf8').catch(() => '');
  const keyFile = /^PrivateKeyFile\s*=\s*(.+)$/m.exec(conf)?.[1]?.trim();
  const own = /^Name\s*=\s*(\w+)$/m.exec(conf)?.[1] ?? ownName;
  const names = await readdir(join(dir, 'hosts')).catch(() => []);
  let listenPort = 0;
  const peers: TunnelPeer[] = [];
  for (const file of names.filter((n) => /^\w+$/.test(n)).sort()) {
    const text = await readFile(join(dir, 'hosts', file), 'utf8').catch(() => '');
    if (file === own) {
      listenPort = Number(/^Port\s*=\s*(\d+)$/m.exec(text)?.[1] ?? 0);
      continue;
    }
    const peer = parseHostFile(nodeOf(file), text);
    if (peer) peers.push(peer);
  }
  peers.sort((a, b) => (a.publicKey < b.publicKey ? -1 : a.publicKey > b.publicKey ? 1 : 0));
  return { keyFile, listenPort, peers };
}

function pemLine(pem: string): string {
  return pem.endsWith('\n') ? pem : `${pem}\n`;
}

/**
 * A peer's host file, as lines. tinc's own path MTU discovery is off (tinc.conf): the agents'
 * probes (src/agent/path-monitor.ts) search the path for both drivers alike, and the routes and
 * MSS clamps follow what they find.
 */
function hostLines(peer: TunnelPeer): string[] {
  return within(`peer ${shown(peer.node)}`, () => {
    const lines = [
      `${ALLOWED_IPS_COMMENT} ${tunnel.allowedIps(peer.allowedIps)} (recorded; tinc's switch mode does not enforce them)`,
    ];
    if (peer.keepaliveSeconds !== undefined) {
      lines.push(`${KEEPALIVE_COMMENT} ${tunnel.keepalive(peer.keepaliveSeconds)}`);
    }
    if (peer.endpoint !== undefined) lines.push(`Address = ${tinc.address(peer.endpoint)}`);
    return [...lines, ...tinc.pem(peer.publicKey)];
  });
}

function parseHostFile(node: string, text: string): TunnelPeer | undefined {
  const pem = /-----BEGIN RSA PUBLIC KEY-----\n[\s\S]*?-----END RSA PUBLIC KEY-----\n?/.exec(text);
  const publicKey = pem ? pemLine(pem[0]) : '';
  if (!isTincKey(publicKey)) return undefined;
  const allowed = new RegExp(`^${ALLOWED_IPS_COMMENT} (\\S*)`, 'm').exec(text)?.[1] ?? '';
  const keepalive = new RegExp(`^${KEEPALIVE_COMMENT} (\\d+)$`, 'm').exec(text)?.[1];
  const address = /^Address\s*=\s*(\S+)\s+(\d+)\s*$/m.exec(text);
  const endpoint = address ? endpointText(address[1] ?? '', address[2] ?? '') : undefined;
  return {
    publicKey,
    node,
    ...(endpoint === undefined ? {} : { endpoint }),
    allowedIps: allowed === '' ? [] : allowed.split(',').sort(),
    ...(keepalive === undefined ? {} : { keepaliveSeconds: Number(keepalive) }),
  };
}

/** tinc's `HOST PORT` as an endpoint's text; undefined when it is not an address and port. */
export function endpointText(host: string, port: string): string | undefined {
  try {
    return parseEndpoint(host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`).text;
  } catch {
    return undefined;
  }
}

/**
 * Replaces `path` with `text` atomically (0600), unless it already holds exactly that. When
 * only comment lines differ, the old mtime is kept: tinc need not notice.
 */
async function writeIfChanged(path: string, text: string): Promise<void> {
  const old = await readFile(path, 'utf8').catch(() => undefined);
  if (old === text) return;
  const before = await stat(path).catch(() => undefined);
  const temporary = `${path}.tmp-${randomBytes(4).toString('hex')}`;
  const file = await open(temporary, 'wx', 0o600);
  try {
    await file.writeFile(text);
  } finally {
    await file.close();
  }
  await rename(temporary, path);
  const meaningful = (t: string): string =>
    t
      .split('\n')
      .filter((line) => !line.startsWith('#'))
      .join('\n');
  if (before && old !== undefined && meaningful(old) === meaningful(text)) {
    await utimes(path, before.atime, before.mtime);
  }
}
