/**
 * The tinc 1.0 tunnel driver: `tincd` in switch mode over a tap interface, configured by files,
 * with `ip` for the interface's MAC, MTU, addresses and link state; everything inside `netns`
 * when given, through execFile/spawn, never a shell.
 *
 * Each tunnel is one tincd with its own configuration directory `stateDir/tinc/NAME/`:
 * `tinc.conf` (this node's Name, switch mode, tap `Interface = NAME`, a `ConnectTo` per peer
 * with an endpoint), `hosts/NODE` per peer (`Address`, its RSA public key, and the intent's
 * allowed IPs and keepalive as `# ipferry-…` comment lines so observe() can read them back),
 * this node's own `hosts/NODE` (`Port` = listen port, public key), and tincd's pid and log
 * files. tincd daemonizes and is found again by its pid file (or, when that is lost, by its
 * command line). Peers added or removed are a rewrite and a SIGHUP (tinc 1.0 re-reads
 * tinc.conf and drops connections whose host file went away); a new listen port, key or peer
 * endpoint restarts tincd.
 *
 * The tap is the driver's, not tincd's: it is made persistent (`ip tuntap add … mode tap`)
 * with its MAC, MTU, addresses and link up before the first tincd attaches to it (tincd opens
 * an existing tap of its `Interface` name). So it outlives tincd: a restart, a kill, a crash
 * leave its ifindex, addresses and every route through it in place, and only its carrier goes
 * while no tincd holds it. That matters because tincd 1.0 survives a crash its own way: on a
 * fatal signal (it segfaults now and then when connections churn) it closes its tap, sleeps
 * 5 s and re-executes itself. Over a tap of its own making, the kernel would delete the tap
 * with its routes and the re-executed tincd would make a bare new one; over ours, the
 * re-executed tincd simply takes it back. The driver does not wait those 5 s: observe()
 * reports a tap no tincd holds as not served, and apply() kills the one waiting to re-execute
 * (SIGKILL: a SIGTERM would only cut its sleep short) and starts a fresh one; restore() does
 * just that for the agent's tunnel watch, within milliseconds of the crash. A tap with another
 * MAC than ours (one an older ipferry let tincd make) gets its MAC back before the rest of the
 * diff (the peers' neighbour entries point at ours). check() tells the agent that a tunnel
 * needs it (src/core/tunnelhealth.ts).
 *
 * Differences from WireGuard that callers see:
 * - Switch mode has no allowed IPs: tinc forwards any frame to whichever peer owns the
 *   destination MAC (learned, broadcast otherwise). The allowed IPs are recorded and reported
 *   but NOT enforced; the routes the agent sets decide what enters the tunnel, and a peer can
 *   send any source address.
 * - tinc 1.0 has no per-peer counters or handshake times. status() asks tincd for its node
 *   list (SIGUSR2 dumps it into the log file): a peer is reachable (with a valid key) or not,
 *   and a reachable one reports its current UDP endpoint and, standing in for a handshake,
 *   handshake age 0. Per-peer bytes are 0; the tap's own counters (all peers together) are
 *   reported for the tunnel.
 * - Keepalive is recorded only: tinc pings every peer every PingInterval (10 s) regardless.
 * - observe() reports configured endpoints (the files), not learned ones.
 *
 * The tap's MAC is derived from the node and interface name, so a tap made anew comes back
 * with the same one and the peers' neighbour caches stay right. The link is set to
 * `addrgenmode none` before it first goes up: the kernel adds no fe80 address of its own, so
 * every address on the tunnel (link-local ones included) is ipferry's and observe() reports
 * them all.
 *
 * The node's RSA key pair (2048 bits) is made with node:crypto on first use; the private key is
 * `stateDir/tinc/rsa_key.priv` (0600 in a 0700 directory), named to tincd by path
 * (`PrivateKeyFile`), never put in argv, a log line or an error message.
 *
 * Only interfaces named `ipf…` are ever created, changed or deleted.
 */
import { spawn } from 'node:child_process';
import {
  createPrivateKey,
  createPublicKey,
  generateKeyPair as generateKeyPairCallback,
  type KeyObject,
  randomBytes,
} from 'node:crypto';
import {
  copyFile,
  lstat,
  open,
  readdir,
  readFile,
  rename,
  rm,
  stat,
  truncate,
  unlink,
  utimes,
} from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { IpferryError, type Problem, validationError } from '../../core/errors.js';
import {
  describeChange,
  diffTunnel,
  fnv1a,
  isTincKey,
  type ObservedTunnel,
  parseEndpoint,
  type PeerStatus,
  type TunnelChange,
  type TunnelIntent,
  type TunnelPeer,
  type TunnelStatus,
  validateTunnelIntent,
} from '../../core/tunnel.js';
import { type ExecResult, run, type RunOptions } from '../exec.js';
import type { TunnelDriver, TunnelLogger, WireGuardImplementation } from './driver.js';
import type {
  TunnelCheck,
  TunnelFault,
  TunnelFaultKind,
  TunnelSnapshot,
} from '../../core/tunnelhealth.js';
import { tunnelFaults } from '../../core/tunnelhealth.js';
import {
  addressesOf,
  dataplaneError,
  type IpLinkAddr,
  ipIn,
  hasCarrier,
  linkSnapshot,
  NO_DEVICE,
  refuseForeign,
  resolveEndpoints,
  Serial,
  sleep,
} from './common.js';
import {
  alive,
  argvOf,
  DAEMON_PATH,
  findProcesses,
  gone,
  programOf,
  readPid,
  signal,
  stopProcess,
} from './daemon.js';
import { ensurePrivateDir, writePrivateKey } from './keys.js';

const generateKeyPairAsync = promisify(generateKeyPairCallback);

export interface TincDriverOptions {
  /** Network namespace to act in (`ip -n`, `ip netns exec`); the current one when absent. */
  readonly netns?: string;
  /** This node's state: the private key, and per tunnel tincd's configuration, pid and log. */
  readonly stateDir: string;
  /** This node's name ([a-z0-9-]); its tinc Name is the same with `-` as `_`. */
  readonly node: string;
  readonly log?: TunnelLogger;
  /** How long tincd may take to bring its interface and sockets up (default 10 s). */
  readonly startTimeoutMs?: number;
}

/** tinc pings each peer this often and drops it after PingTimeout without an answer. */
const PING_INTERVAL = 10;
const PING_TIMEOUT = 5;
/** The longest tinc waits between attempts to reach a peer (its default is 900 s). */
const MAX_TIMEOUT = 10;
/** The log file is cut back once it grows past this (status dumps append to it). */
const LOG_LIMIT = 1024 * 1024;
const NODE_NAME = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;
const ALLOWED_IPS_COMMENT = '# ipferry-allowed-ips:';
const KEEPALIVE_COMMENT = '# ipferry-keepalive:';
/** tinc 1.0's node status bits (node.h): the session key is valid; the node is reachable. */
const STATUS_VALIDKEY = 0x02;
const STATUS_REACHABLE = 0x10;

/** What a tunnel's configuration directory says. */
interface TincConfig {
  readonly keyFile: string | undefined;
  readonly listenPort: number;
  readonly peers: readonly TunnelPeer[];
}

interface DumpedNode {
  readonly endpoint: string | undefined;
  readonly connected: boolean;
}

function keyError(path: string, problem: string): IpferryError {
  return new IpferryError('IPF_E_TUNNEL_KEY', { path, problem });
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

/** A locally administered unicast MAC, the same for a node's tunnel across tincd restarts. */
export function tapMac(node: string, ifname: string): string {
  const high = fnv1a(`mac\0${node}\0${ifname}`);
  const low = fnv1a(`${ifname}\0${node}\0mac`);
  const bytes = [
    0x02,
    high >>> 24,
    (high >>> 16) & 0xff,
    (high >>> 8) & 0xff,
    high & 0xff,
    low & 0xff,
  ];
  return bytes.map((b) => b.toString(16).padStart(2, '0')).join(':');
}

export class TincDriver implements TunnelDriver {
  readonly kind = 'tinc';
  readonly #netns: string | undefined;
  readonly #dir: string;
  readonly #node: string;
  readonly #name: string;
  readonly #log: TunnelLogger | undefined;
  readonly #startTimeoutMs: number;
  #installed: Promise<WireGuardImplementation> | undefined;
  /** One status dump at a time per tunnel: each reads the log from where it signalled. */
  readonly #dumping = new Map<string, Promise<unknown>>();
  /** apply(), remove() and check() one at a time. */
  readonly #serial = new Serial();
  /** Each tunnel as the last apply() left it, for check(). */
  readonly #left = new Map<string, TunnelSnapshot>();
  /** Losses apply() found and repaired, until check() tells of them. */
  readonly #repaired = new Map<string, { faults: TunnelFault[]; at: number }>();

  constructor(options: TincDriverOptions) {
    if (!NODE_NAME.test(options.node)) {
      throw validationError([{ path: 'node', message: 'must be a node name ([a-z0-9-])' }]);
    }
    this.#netns = options.netns;
    this.#dir = join(options.stateDir, 'tinc');
    this.#node = options.node;
    this.#name = tincName(options.node);
    this.#log = options.log;
    this.#startTimeoutMs = options.startTimeoutMs ?? 10_000;
  }

  /** The private key file tincd is pointed at (PrivateKeyFile). */
  get keyFile(): string {
    return join(this.#dir, 'rsa_key.priv');
  }

  /** tincd's configuration directory for tunnel `name`. */
  configDir(name: string): string {
    return join(this.#dir, name);
  }

  pidFile(name: string): string {
    return join(this.configDir(name), 'tincd.pid');
  }

  logFile(name: string): string {
    return join(this.configDir(name), 'tincd.log');
  }

  #ip(args: readonly string[], options?: RunOptions): Promise<ExecResult> {
    return ipIn(this.#netns, args, options);
  }

  /** tinc is a userspace daemon; this only checks once that tincd is installed. */
  detect(): Promise<WireGuardImplementation> {
    this.#installed ??= run('tincd', ['--version']).then(
      () => 'userspace' as const,
      () => {
        this.#installed = undefined;
        throw dataplaneError('tincd is not installed (Debian package tinc)');
      },
    );
    return this.#installed;
  }

  async publicKey(): Promise<string> {
    await ensurePrivateDir(this.#dir);
    try {
      return await loadPublicKey(this.keyFile);
    } catch (error) {
      if (!(error instanceof IpferryError) || error.params.problem !== 'does not exist') {
        throw error;
      }
    }
    const { privateKey } = await generateKeyPairAsync('rsa', { modulusLength: 2048 });
    const pem = privateKey.export({ type: 'pkcs1', format: 'pem' }).toString();
    // Someone else made it first: theirs is the key.
    if (!(await writePrivateKey(this.keyFile, pem.trimEnd()))) return loadPublicKey(this.keyFile);
    const publicKey = publicPem(privateKey);
    this.#log?.info({ publicKey }, 'tinc: created this node’s key pair');
    return publicKey;
  }

  async observe(name: string): Promise<ObservedTunnel | undefined> {
    refuseForeign(name);
    return (await this.#observe(name))?.tunnel;
  }

  /** The tunnel as observe() reports it, with the tap as `ip` showed it (its MAC). */
  async #observe(
    name: string,
  ): Promise<{ tunnel: ObservedTunnel; link: IpLinkAddr; pid: number | undefined } | undefined> {
    const link = await this.#link(name);
    if (!link) return undefined;
    const [pid] = await this.#daemons(name);
    // A tap tincd made itself (an older ipferry's) goes with its tincd; ours stays.
    if (pid === undefined && !persistent(link)) return this.#vanishing(name);
    const config = await this.#readConfig(name);
    const publicKey =
      config.keyFile === undefined
        ? undefined
        : await loadPublicKey(config.keyFile).catch(() => undefined);
    const tunnel: ObservedTunnel = {
      name,
      kind: 'userspace',
      publicKey,
      listenPort: config.listenPort,
      mtu: link.mtu ?? 0,
      up: (link.flags ?? []).includes('UP'),
      addresses: addressesOf(link),
      peers: config.peers,
      // A crashed tincd waiting to re-execute itself is alive but has let go of the tap.
      ...(pid !== undefined && hasCarrier(link) !== false ? {} : { served: false }),
    };
    return { tunnel, link, pid };
  }

  async #link(name: string): Promise<IpLinkAddr | undefined> {
    const { stdout } = await this.#ip(['-d', '-j', 'address', 'show', 'dev', name], {
      tolerate: NO_DEVICE,
    });
    const [link] = JSON.parse(stdout.trim() || '[]') as IpLinkAddr[];
    if (!link) return undefined;
    const kind = link.linkinfo?.info_kind;
    if (kind !== 'tun' || link.linkinfo?.info_data?.type !== 'tap') {
      throw dataplaneError(`${name} exists but is a ${kind ?? 'plain'} interface, not a tinc tap`);
    }
    return link;
  }

  /**
   * A tap tincd made itself goes when its tincd dies (killed, crashed), after a moment until
   * the kernel has unregistered it: wait for that, then report no tunnel. One that stays is
   * held by something else: an error.
   */
  async #vanishing(name: string): Promise<undefined> {
    if (await this.#linkGone(name, 2000)) return undefined;
    throw dataplaneError(`${name} exists but no tincd of this node serves it`);
  }

  async #linkGone(name: string, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (await this.#link(name).catch(() => undefined)) {
      if (Date.now() > deadline) return false;
      await sleep(20);
    }
    return true;
  }

  /**
   * Live tincds of tunnel `name`: the one in the pid file, or when that is missing or stale,
   * any tincd whose command line names this tunnel's configuration directory (a lost pid file
   * must not orphan a daemon).
   */
  async #daemons(name: string): Promise<number[]> {
    const dir = this.configDir(name);
    const recorded = await readPid(this.pidFile(name));
    if (recorded !== undefined && (await servesDir(recorded, dir))) return [recorded];
    return findDaemons(dir);
  }

  apply(input: TunnelIntent): Promise<readonly TunnelChange[]> {
    return this.#serial.run(() => this.#apply(input));
  }

  async #apply(input: TunnelIntent): Promise<readonly TunnelChange[]> {
    const intent = await resolveEndpoints(this.#validate(input));
    await this.detect();
    const publicKey = await this.publicKey();
    const name = intent.name;
    const seen = await this.#observe(name);
    await this.#noteLoss(name, seen ? snapshotOf(seen.link, seen.pid) : undefined);
    const have = seen?.tunnel;
    const changes = diffTunnel(intent, have, publicKey);
    // A tap with another MAC was made by a tincd that re-executed itself after a crash.
    const mac = tapMac(this.#node, name);
    const relink = seen !== undefined && seen.link.address !== mac;
    if (changes.length === 0 && !relink) {
      this.#left.set(name, snapshotOf(seen?.link, seen?.pid));
      return changes;
    }
    const created = have === undefined;
    try {
      await this.#writeConfig(intent);
      const restart = !created && changes.some(needsRestart);
      if (created || restart || changes.some((c) => c.kind === 'daemon-start')) {
        if (restart) await this.#stop(name);
        else await this.#killStranded(name);
        if (!(await this.#ensureTap(intent))) {
          if (relink) await this.#relink(name, seen?.link.address);
          await this.#applyLinkChanges(name, changes);
        }
        await this.#start(name);
      } else {
        if (relink) await this.#relink(name, seen.link.address);
        if (changes.some((c) => c.kind === 'peer-add' || c.kind === 'peer-remove')) {
          await this.#reload(name);
        }
        await this.#applyLinkChanges(name, changes);
      }
    } catch (error) {
      if (created) await this.#remove(name).catch(() => undefined);
      throw error;
    }
    this.#left.set(name, await this.#snapshot(name));
    this.#log?.info(
      { tunnel: name, changes: changes.map(describeChange), ...(relink ? { mac } : {}) },
      'tinc: tunnel changed',
    );
    return changes;
  }

  /**
   * Remembers, for check(), that the tunnel is not as the last apply left it (`now`, or taken
   * here when the tap is gone): this apply is about to repair a loss nobody reported yet.
   */
  async #noteLoss(name: string, now: TunnelSnapshot | undefined): Promise<void> {
    const left = this.#left.get(name);
    if (!left) return;
    const faults = tunnelFaults(name, left, now ?? (await this.#snapshot(name)));
    if (faults.length > 0) this.#repaired.set(name, { faults, at: Date.now() });
  }

  /** The tunnel's tap and tincd now, as check() compares them (one `ip`, a few /proc reads). */
  async #snapshot(name: string): Promise<TunnelSnapshot> {
    const link = await this.#link(name).catch(() => undefined);
    const [pid] = await this.#daemons(name);
    return snapshotOf(link, pid);
  }

  check(name: string): Promise<TunnelCheck | undefined> {
    return this.#serial.run(async () => {
      refuseForeign(name);
      const left = this.#left.get(name);
      if (!left) return undefined;
      const now = await this.#snapshot(name);
      const repaired = this.#repaired.get(name);
      this.#repaired.delete(name);
      return {
        name,
        ...(now.link ? { ifindex: now.link.ifindex } : {}),
        faults: tunnelFaults(name, left, now),
        ...(repaired ? { repaired } : {}),
      };
    });
  }

  /**
   * Makes tunnel `name` whole again when its tincd alone is missing: the tap still as the last
   * apply left it (same ifindex, MAC, addresses, up; so the routes through it are there too)
   * but no tincd holds it — crashed and waiting to re-execute, or killed. The stranded tincd
   * is killed and a fresh one attached, without reading or writing anything else: this is the
   * agent's tunnel watch's first answer to a crash (src/agent/tunnelwatch.ts), milliseconds
   * after it. A tincd that re-executed itself and took the tap back is adopted as it is. True
   * when the tunnel is whole (nothing was wrong, or it is now); false when it needs a whole
   * apply (its tap gone, replaced or changed), which is left to the caller.
   */
  restore(name: string): Promise<boolean> {
    return this.#serial.run(async () => {
      refuseForeign(name);
      const left = this.#left.get(name);
      if (!left?.link) return false;
      const link = await this.#link(name).catch(() => undefined);
      if (!link || !persistent(link)) return false;
      const [pid] = await this.#daemons(name);
      const faults = tunnelFaults(name, left, snapshotOf(link, pid));
      if (faults.some((f) => !DAEMON_FAULTS.has(f.kind))) return false;
      if (faults.length === 0) return true;
      const held = pid !== undefined && hasCarrier(link) === true;
      if (held) this.#left.set(name, snapshotOf(link, pid));
      else {
        await this.#killStranded(name);
        const started = await this.#start(name);
        this.#left.set(name, snapshotOf(started.link, started.pid));
      }
      this.#log?.warn(
        { tunnel: name, faults: faults.map((f) => f.detail) },
        held ? 'tinc: a re-executed tincd holds the tap again' : 'tinc: restarted tincd on its tap',
      );
      return true;
    });
  }

  /** The core's checks, plus what tinc needs: its own kind, and one host file per peer node. */
  #validate(input: TunnelIntent): TunnelIntent {
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
      if (peer.node === this.#node) {
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

  // -------------------------------------------------------------------------------------------
  // Configuration files

  /**
   * Writes the tunnel's configuration from the intent. Only files whose content changes are
   * written (tinc drops the connection of a peer whose host file is newer than its last
   * reload); a change to comment lines only keeps the file's old mtime for the same reason.
   */
  async #writeConfig(intent: TunnelIntent): Promise<void> {
    const dir = this.configDir(intent.name);
    await ensurePrivateDir(dir);
    await ensurePrivateDir(join(dir, 'hosts'));
    const publicKey = await this.publicKey();
    const connect = intent.peers.filter((p) => p.endpoint !== undefined);
    const conf = [
      '# Written by ipferry: changes here are overwritten.',
      `Name = ${this.#name}`,
      'Mode = switch',
      'DeviceType = tap',
      `Interface = ${intent.name}`,
      'AddressFamily = any',
      `PrivateKeyFile = ${this.keyFile}`,
      // The agents' probes measure the path (src/agent/path-monitor.ts), as for WireGuard. tinc's own
      // discovery would send what is larger than what it has found so far over its TCP meta
      // connection meanwhile — so a large probe passes through a black hole and the path looks
      // whole — and settle a few bytes low. Off, every frame goes by UDP, unfragmented by tinc.
      'PMTUDiscovery = no',
      `PingInterval = ${PING_INTERVAL}`,
      `PingTimeout = ${PING_TIMEOUT}`,
      `MaxTimeout = ${MAX_TIMEOUT}`,
      ...connect.map((p) => `ConnectTo = ${tincName(p.node ?? '')}`),
    ];
    await writeIfChanged(join(dir, 'tinc.conf'), `${conf.join('\n')}\n`);
    const files = new Map<string, string>([
      [this.#name, `Port = ${intent.listenPort}\n${pemLine(publicKey)}`],
    ]);
    for (const peer of intent.peers) files.set(tincName(peer.node ?? ''), hostFile(peer));
    for (const [name, text] of files) await writeIfChanged(join(dir, 'hosts', name), text);
    for (const name of await readdir(join(dir, 'hosts'))) {
      if (!files.has(name)) await unlink(join(dir, 'hosts', name));
    }
  }

  async #readConfig(name: string): Promise<TincConfig> {
    const dir = this.configDir(name);
    const conf = await readFile(join(dir, 'tinc.conf'), 'utf8').catch(() => '');
    const keyFile = /^PrivateKeyFile\s*=\s*(.+)$/m.exec(conf)?.[1]?.trim();
    const own = /^Name\s*=\s*(\w+)$/m.exec(conf)?.[1] ?? this.#name;
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

  // -------------------------------------------------------------------------------------------
  // tincd

  /**
   * Starts tincd for `name` inside the namespace and waits until it says Ready with its tap
   * there. tincd detaches before it opens the device and binds its port, so a failure shows
   * only in its log: "Terminating", or an "Address already in use" even when another family's
   * socket could be bound (a half-bound tunnel is refused as a whole).
   */
  async #start(name: string): Promise<{ pid: number; link: IpLinkAddr }> {
    const dir = this.configDir(name);
    await unlink(this.pidFile(name)).catch(() => undefined);
    await unlink(this.logFile(name)).catch(() => undefined);
    const argv = ['tincd', '-c', dir, '--pidfile', this.pidFile(name)];
    // Debug level 1 logs connections made and lost: what an operator needs when a peer is away.
    argv.push(`--logfile=${this.logFile(name)}`, '--debug=1');
    const stderr = await launch(
      this.#netns === undefined ? argv : ['ip', 'netns', 'exec', this.#netns, ...argv],
    );
    const deadline = Date.now() + this.#startTimeoutMs;
    for (;;) {
      const log = await readFile(this.logFile(name), 'utf8').catch(() => '');
      const pid = await readPid(this.pidFile(name));
      const failed = /Terminating|Address already in use/.test(log);
      if (failed || (stderr.exitCode !== 0 && stderr.exitCode !== undefined)) {
        await this.#stop(name).catch(() => undefined);
        throw dataplaneError(
          `tincd for ${name} did not start: ${logLines(log) || stderr.text.trim() || `exit ${String(stderr.exitCode)}`}`,
        );
      }
      if (/\bReady\b/.test(log) && pid !== undefined && (await alive(pid))) {
        const link = await this.#link(name);
        if (link && hasCarrier(link) !== false) {
          this.#log?.info({ tunnel: name, pid }, 'tinc: started tincd');
          return { pid, link };
        }
      }
      if (Date.now() > deadline) {
        await this.#stop(name).catch(() => undefined);
        throw dataplaneError(`tincd for ${name} not ready after ${this.#startTimeoutMs} ms`);
      }
      // Short: a tunnel restored after a crash is down until this loop sees tincd ready.
      await sleep(5);
    }
  }

  /**
   * Kills the tincds of tunnel `name` that let go of its tap, before a fresh one starts: after
   * a fatal signal tincd closes the tap and sleeps 5 s before it re-executes itself, and a
   * re-executed tincd would find the fresh one's tap busy, fail, and take its pid file with it.
   * SIGKILL, because a SIGTERM only cuts that sleep short.
   */
  async #killStranded(name: string): Promise<void> {
    for (const pid of await this.#daemons(name)) {
      signal(pid, 'SIGKILL');
      if (!(await gone(pid, 2000))) throw dataplaneError(`tincd (pid ${pid}) does not exit`);
      this.#log?.warn(
        { tunnel: name, pid },
        'tinc: killed a tincd whose tap is gone (crashed, waiting to re-execute itself)',
      );
    }
  }

  /**
   * Gives a tap made by a re-executed tincd our MAC back (the peers' neighbour entries point at
   * it) and no kernel link-local address; the diff does the rest (MTU, addresses, up).
   */
  async #relink(name: string, was: string | undefined): Promise<void> {
    this.#log?.warn(
      { tunnel: name, mac: was ?? null },
      'tinc: the tap is not the one this agent set up (tincd re-executed itself?): restoring its MAC',
    );
    await this.#ip(['link', 'set', 'dev', name, 'address', tapMac(this.#node, name)]);
    await this.#ip(['link', 'set', 'dev', name, 'addrgenmode', 'none']);
  }

  /** Stops every tincd of tunnel `name`; a tap it made itself is waited for until it is gone. */
  async #stop(name: string): Promise<boolean> {
    const pids = await this.#daemons(name);
    for (const pid of pids) {
      // tincd closes its tap and removes its pid file on SIGTERM.
      await stopProcess(pid, 'tincd');
      this.#log?.info({ tunnel: name, pid }, 'tinc: stopped tincd');
    }
    const link = await this.#link(name).catch(() => undefined);
    if (link && !persistent(link)) await this.#linkGone(name, 2000);
    return pids.length > 0;
  }

  /** SIGHUP: tinc 1.0 re-reads tinc.conf (ConnectTo) and closes connections of removed hosts. */
  async #reload(name: string): Promise<void> {
    const [pid] = await this.#daemons(name);
    if (pid === undefined) throw dataplaneError(`no tincd serves ${name}`);
    const from = await fileSize(this.logFile(name));
    if (!signal(pid, 'SIGHUP')) throw dataplaneError(`tincd for ${name} (pid ${pid}) is gone`);
    const deadline = Date.now() + 3000;
    while (!(await readFrom(this.logFile(name), from)).includes('Got HUP signal')) {
      if (Date.now() > deadline) break;
      await sleep(20);
    }
    // A configuration tincd cannot read makes it exit on reload.
    await sleep(50);
    if (!(await alive(pid))) {
      const log = await readFrom(this.logFile(name), from);
      throw dataplaneError(`tincd for ${name} exited on reload: ${logLines(log)}`);
    }
  }

  /**
   * Makes the tunnel's tap, persistent, with its MAC, no kernel link-local address, MTU,
   * addresses and link up, unless one of ours is there already (false then). A tap tincd made
   * itself (an older ipferry's) is waited for to go with its tincd, stopped by now, and then
   * made anew as ours.
   */
  async #ensureTap(intent: TunnelIntent): Promise<boolean> {
    const name = intent.name;
    const link = await this.#link(name);
    if (link && persistent(link)) return false;
    if (link && !(await this.#linkGone(name, 2000))) {
      throw dataplaneError(`${name} exists, held by something other than this node's tincd`);
    }
    // One `ip -batch` (it stops at the first failing line, as separate calls would).
    const lines = [
      `tuntap add dev ${name} mode tap`,
      `link set dev ${name} address ${tapMac(this.#node, name)}`,
      `link set dev ${name} addrgenmode none`,
      `link set dev ${name} mtu ${intent.mtu}`,
      ...intent.addresses.map(
        (a) => `address add ${a} dev ${name}${a.includes(':') ? ' nodad' : ''}`,
      ),
      `link set dev ${name} up`,
    ];
    await this.#ip(['-batch', '-'], { input: `${lines.join('\n')}\n` });
    return true;
  }

  async #addAddress(name: string, address: string): Promise<void> {
    const nodad = address.includes(':') ? ['nodad'] : [];
    await this.#ip(['address', 'add', address, 'dev', name, ...nodad]);
  }

  async #applyLinkChanges(name: string, changes: readonly TunnelChange[]): Promise<void> {
    for (const change of changes) {
      if (change.kind === 'mtu') {
        await this.#ip(['link', 'set', 'dev', name, 'mtu', String(change.mtu)]);
      } else if (change.kind === 'address-add') {
        await this.#addAddress(name, change.address);
      } else if (change.kind === 'address-del') {
        await this.#ip(['address', 'del', change.address, 'dev', name]);
      } else if (change.kind === 'up') {
        await this.#ip(['link', 'set', 'dev', name, 'addrgenmode', 'none']);
        await this.#ip(['link', 'set', 'dev', name, 'up']);
      }
    }
  }

  remove(name: string): Promise<boolean> {
    return this.#serial.run(() => {
      refuseForeign(name);
      return this.#remove(name);
    });
  }

  async #remove(name: string): Promise<boolean> {
    this.#left.delete(name);
    this.#repaired.delete(name);
    let found = await this.#stop(name);
    if (await this.#link(name).catch(() => undefined)) {
      found = true;
      await this.#ip(['link', 'del', 'dev', name], { tolerate: NO_DEVICE });
    }
    const dir = this.configDir(name);
    if (await lstat(dir).catch(() => undefined)) {
      found = true;
      await rm(dir, { recursive: true, force: true });
    }
    if (found) this.#log?.info({ tunnel: name }, 'tinc: tunnel removed');
    return found;
  }

  async status(name: string): Promise<TunnelStatus | undefined> {
    refuseForeign(name);
    const link = await this.#link(name);
    if (!link) return undefined;
    const [pid] = await this.#daemons(name);
    if (pid === undefined && !persistent(link)) return this.#vanishing(name);
    const config = await this.#readConfig(name);
    // No tincd holding the tap (crashed, killed): every peer is unreachable.
    const held = pid !== undefined && hasCarrier(link) !== false;
    const nodes = held ? await this.#dumpNodes(name, pid) : new Map<string, DumpedNode>();
    const peers: PeerStatus[] = config.peers.map((peer) => {
      const node = nodes.get(tincName(peer.node ?? ''));
      const reachable = node?.connected === true;
      return {
        publicKey: peer.publicKey,
        endpoint: (reachable ? node.endpoint : undefined) ?? peer.endpoint,
        // tinc 1.0 keeps no handshake times: a reachable peer with a valid key counts as fresh.
        handshakeAgeSeconds: reachable ? 0 : undefined,
        reachable,
        rxBytes: 0,
        txBytes: 0,
      };
    });
    const device = await this.#counters(name);
    return { name, driver: 'tinc', peerCounters: false, ...(device ? { device } : {}), peers };
  }

  /** The tap's own byte counters: all peers together, the only ones tinc 1.0 has. */
  async #counters(name: string): Promise<{ rxBytes: number; txBytes: number } | undefined> {
    const { stdout } = await this.#ip(['-s', '-j', 'link', 'show', 'dev', name], {
      tolerate: NO_DEVICE,
    });
    const [link] = JSON.parse(stdout.trim() || '[]') as {
      stats64?: { rx?: { bytes?: number }; tx?: { bytes?: number } };
    }[];
    const rx = link?.stats64?.rx?.bytes;
    const tx = link?.stats64?.tx?.bytes;
    return rx === undefined || tx === undefined ? undefined : { rxBytes: rx, txBytes: tx };
  }

  /** Has tincd dump its nodes into the log (SIGUSR2) and reads them back; empty on timeout. */
  async #dumpNodes(name: string, pid: number): Promise<Map<string, DumpedNode>> {
    const previous = this.#dumping.get(name) ?? Promise.resolve();
    const mine = previous.catch(() => undefined).then(() => this.#dumpNodesNow(name, pid));
    this.#dumping.set(name, mine);
    try {
      return await mine;
    } finally {
      if (this.#dumping.get(name) === mine) this.#dumping.delete(name);
    }
  }

  async #dumpNodesNow(name: string, pid: number): Promise<Map<string, DumpedNode>> {
    const logFile = this.logFile(name);
    // tincd opened its log in append mode, so it may be cut back under it.
    if ((await fileSize(logFile)) > LOG_LIMIT) {
      await copyFile(logFile, `${logFile}.1`).catch(() => undefined);
      await truncate(logFile, 0).catch(() => undefined);
    }
    const from = await fileSize(logFile);
    if (!signal(pid, 'SIGUSR2')) return new Map();
    const deadline = Date.now() + 2000;
    for (;;) {
      const text = await readFrom(logFile, from);
      const start = text.indexOf('Nodes:');
      const end = text.indexOf('End of nodes.', start);
      if (start >= 0 && end > start) return parseNodes(text.slice(start, end));
      if (Date.now() > deadline) return new Map();
      await sleep(20);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Keys

/**
 * The PKCS#1 PEM public key of the RSA private key in `path`, refusing a file that others can
 * read or write, a symbolic link, or content that is not an RSA key (never quoting it).
 */
async function loadPublicKey(path: string): Promise<string> {
  const info = await lstat(path).catch((error: NodeJS.ErrnoException) => {
    throw keyError(
      path,
      error.code === 'ENOENT' ? 'does not exist' : `cannot be read (${error.code ?? 'error'})`,
    );
  });
  if (!info.isFile()) throw keyError(path, 'is not a regular file');
  if ((info.mode & 0o077) !== 0) {
    throw keyError(path, `has mode ${(info.mode & 0o777).toString(8)}, not 600`);
  }
  let key: KeyObject;
  try {
    key = createPrivateKey({ key: await readFile(path), format: 'pem' });
  } catch {
    throw keyError(path, 'does not hold an RSA private key');
  }
  if (key.asymmetricKeyType !== 'rsa') throw keyError(path, 'does not hold an RSA private key');
  return publicPem(key);
}

function publicPem(privateKey: KeyObject): string {
  const pem = createPublicKey(privateKey).export({ type: 'pkcs1', format: 'pem' }).toString();
  if (!isTincKey(pem)) throw dataplaneError('node:crypto made an RSA key tinc cannot read');
  return pem;
}

function pemLine(pem: string): string {
  return pem.endsWith('\n') ? pem : `${pem}\n`;
}

// ---------------------------------------------------------------------------------------------
// Host files

/**
 * A peer's host file. tinc's own path MTU discovery is off (tinc.conf): the agents' probes
 * (src/agent/path-monitor.ts) search the path for both drivers alike, and the routes and MSS clamps
 * follow what they find.
 */
function hostFile(peer: TunnelPeer): string {
  const lines = [
    `${ALLOWED_IPS_COMMENT} ${peer.allowedIps.join(',')} (recorded; tinc's switch mode does not enforce them)`,
  ];
  if (peer.keepaliveSeconds !== undefined) {
    lines.push(`${KEEPALIVE_COMMENT} ${peer.keepaliveSeconds}`);
  }
  if (peer.endpoint !== undefined) {
    const endpoint = parseEndpoint(peer.endpoint);
    lines.push(`Address = ${endpoint.host} ${endpoint.port}`);
  }
  return `${lines.join('\n')}\n${pemLine(peer.publicKey)}`;
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

function endpointText(host: string, port: string): string | undefined {
  try {
    return parseEndpoint(host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`).text;
  } catch {
    return undefined;
  }
}

/**
 * The node lines of tinc 1.0's dump: ` NAME at HOST port PORT cipher … status XXXX …` (or
 * `at MYSELF`, or an address tinc does not know yet).
 */
function parseNodes(text: string): Map<string, DumpedNode> {
  const nodes = new Map<string, DumpedNode>();
  for (const line of text.split('\n')) {
    const match = /:\s+(\w+) at (.+?) cipher .* status ([0-9a-f]+)/.exec(line);
    if (!match || match[2] === 'MYSELF') continue;
    const where = /^(\S+) port (\d+)$/.exec(match[2] ?? '');
    const status = parseInt(match[3] ?? '0', 16);
    nodes.set(match[1] ?? '', {
      endpoint: where ? endpointText(where[1] ?? '', where[2] ?? '') : undefined,
      connected: (status & STATUS_REACHABLE) !== 0 && (status & STATUS_VALIDKEY) !== 0,
    });
  }
  return nodes;
}

/** Faults a new tincd on the same tap mends (restore()). */
const DAEMON_FAULTS: ReadonlySet<TunnelFaultKind> = new Set([
  'carrier-lost',
  'daemon-gone',
  'daemon-replaced',
]);

/** Whether the tap outlives its tincd: ours, made by `ip tuntap add` (#ensureTap). */
function persistent(link: IpLinkAddr): boolean {
  return link.linkinfo?.info_data?.persist === true;
}

function snapshotOf(link: IpLinkAddr | undefined, pid: number | undefined): TunnelSnapshot {
  const device = linkSnapshot(link, true);
  return {
    ...(device ? { link: device } : {}),
    ...(pid !== undefined ? { daemon: { program: 'tincd', pid } } : {}),
  };
}

function needsRestart(change: TunnelChange): boolean {
  // tincd reads its key and port only at start; a peer's new address would be picked up only
  // when its connection drops, and tinc 1.0 notices a rewritten host file by mtime, in
  // whole seconds, so a restart is the reliable way.
  return (
    change.kind === 'private-key' ||
    change.kind === 'listen-port' ||
    (change.kind === 'peer-update' && change.fields.includes('endpoint'))
  );
}

// ---------------------------------------------------------------------------------------------
// Files

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

async function fileSize(path: string): Promise<number> {
  return (await stat(path).catch(() => undefined))?.size ?? 0;
}

async function readFrom(path: string, offset: number): Promise<string> {
  const file = await open(path, 'r').catch(() => undefined);
  if (!file) return '';
  try {
    const size = (await file.stat()).size;
    if (size <= offset) return '';
    const buffer = Buffer.alloc(size - offset);
    await file.read(buffer, 0, buffer.length, offset);
    return buffer.toString('utf8');
  } finally {
    await file.close();
  }
}

/** The last lines of a tincd log, without timestamps, for error messages. */
function logLines(log: string): string {
  return log
    .split('\n')
    .map((line) => line.replace(/^.*?tinc\[\d+\]: /, '').trim())
    .filter((line) => line !== '' && !/^tincd .* starting|tun\/tap device/.test(line))
    .slice(-4)
    .join('; ');
}

// ---------------------------------------------------------------------------------------------
// Processes

/**
 * Runs `argv` (tincd, which forks into the background and returns) with a clean environment,
 * and waits for the foreground process to exit; its stderr says why when tincd refused to
 * start before detaching.
 */
async function launch(
  argv: readonly string[],
): Promise<{ exitCode: number | undefined; text: string }> {
  const [file = '', ...args] = argv;
  const child = spawn(file, args, {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { PATH: DAEMON_PATH },
  });
  let text = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk: string) => {
    if (text.length < 4096) text += chunk;
  });
  return new Promise((resolve, reject) => {
    child.once('error', (error) => reject(dataplaneError(`cannot start tincd: ${error.message}`)));
    child.once('close', (code) => resolve({ exitCode: code ?? undefined, text }));
  });
}

/** Whether `pid` is a live tincd started with `-c dir`. */
async function servesDir(pid: number, dir: string): Promise<boolean> {
  return servesDirArgv(await argvOf(pid), dir) && (await alive(pid));
}

function servesDirArgv(argv: readonly string[], dir: string): boolean {
  const at = argv.indexOf('-c');
  return programOf(argv) === 'tincd' && at >= 0 && argv[at + 1] === dir;
}

function findDaemons(dir: string): Promise<number[]> {
  return findProcesses((argv) => servesDirArgv(argv, dir));
}
