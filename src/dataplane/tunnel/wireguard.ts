/**
 * The WireGuard tunnel driver: `ip` for the interface, its MTU and addresses, `wg` for keys,
 * port and peers; everything inside `netns` when given, through execFile, never a shell.
 *
 * Two implementations behind one interface. Where the kernel has the wireguard module, the
 * interface is an `ip link add … type wireguard`. Where it has not, `wireguard-go -f NAME`
 * (userspace, over TUN) runs detached inside the namespace, so tunnels outlive the agent; its
 * pid is kept in `stateDir/wireguard/NAME.pid` and it is stopped by that pid. wireguard-go's
 * control socket is `/var/run/wireguard/NAME.sock` in a directory the whole machine shares, so
 * an interface name must be unique on the machine (tunnelName derives one), not only in its
 * namespace; `wg` finds the daemon by that socket.
 *
 * The private key is this node's `stateDir/wireguard/private.key` (0600, directory 0700) and
 * reaches `wg` as that path only. `wg show dump` prints the private key back: its first field
 * is dropped on parsing and never kept, logged or put in an error.
 *
 * A wireguard-go that dies (killed, crashed) takes its TUN interface and every route through
 * it along; the next apply() starts a new one. check() tells the agent that a tunnel needs it
 * (src/core/tunnelhealth.ts): its interface gone or made anew, down, without its addresses, or
 * its wireguard-go not the one started.
 *
 * Only interfaces named `ipf…` are ever created, changed or deleted.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { open, readFile, readlink, rename, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { tryParsePrefix } from '../../core/address.js';
import { IpferryError } from '../../core/errors.js';
import {
  describeChange,
  diffTunnel,
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
import { forValue, shown, tunnel, wg, within } from '../linux/args.js';
import type { TunnelDriver, TunnelLogger, WireGuardImplementation } from './driver.js';
import {
  addressesOf,
  dataplaneError,
  type IpLinkAddr,
  ipIn,
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
  programOf,
  readPid,
  stopProcess,
} from './daemon.js';
import { ensureKeyFile, ensurePrivateDir } from './keys.js';
import {
  type TunnelCheck,
  type TunnelFault,
  tunnelFaults,
  type TunnelSnapshot,
} from '../../core/tunnelhealth.js';

export interface WireGuardDriverOptions {
  /** Network namespace to act in (`ip -n`, `ip netns exec`); the current one when absent. */
  readonly netns?: string;
  /** This node's state: the private key, wireguard-go pid and log files. */
  readonly stateDir: string;
  readonly log?: TunnelLogger;
  /** Skips detection (e.g. userspace on a host whose module misbehaves). */
  readonly implementation?: WireGuardImplementation;
  /** wireguard-go's and wg's socket directory (compiled into both; here for tests). */
  readonly socketDir?: string;
  /** How long wireguard-go may take to bring its interface and socket up (default 5 s). */
  readonly startTimeoutMs?: number;
  /** Unix time in seconds, for handshake ages. */
  readonly now?: () => number;
}

/** wireguard-go refuses to run on kernels ≥ 5.6 (which have the module) without this. */
const USERSPACE_ENV = 'WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD';
interface DumpPeer {
  readonly peer: TunnelPeer;
  readonly status: PeerStatus;
}

interface Dump {
  readonly publicKey: string | undefined;
  readonly listenPort: number;
  readonly peers: readonly DumpPeer[];
}

export class WireGuardDriver implements TunnelDriver {
  readonly kind = 'wireguard';
  readonly #netns: string | undefined;
  readonly #dir: string;
  readonly #socketDir: string;
  readonly #log: TunnelLogger | undefined;
  readonly #startTimeoutMs: number;
  readonly #now: () => number;
  #implementation: Promise<WireGuardImplementation> | undefined;
  /** apply(), remove() and check() one at a time. */
  readonly #serial = new Serial();
  /** Each tunnel as the last apply() left it, for check(). */
  readonly #left = new Map<string, TunnelSnapshot>();
  /** Losses apply() found and repaired, until check() tells of them. */
  readonly #repaired = new Map<string, { faults: TunnelFault[]; at: number }>();

  constructor(options: WireGuardDriverOptions) {
    this.#netns = options.netns;
    this.#dir = join(options.stateDir, 'wireguard');
    this.#socketDir = options.socketDir ?? '/var/run/wireguard';
    this.#log = options.log;
    this.#startTimeoutMs = options.startTimeoutMs ?? 5000;
    this.#now = options.now ?? (() => Math.floor(Date.now() / 1000));
    if (options.implementation) this.#implementation = Promise.resolve(options.implementation);
  }

  /** The private key file handed to `wg set … private-key`. */
  get keyFile(): string {
    return join(this.#dir, 'private.key');
  }

  pidFile(name: string): string {
    return join(this.#dir, `${name}.pid`);
  }

  socketFile(name: string): string {
    return join(this.#socketDir, `${name}.sock`);
  }

  #logFile(name: string): string {
    return join(this.#dir, `${name}.log`);
  }

  #ip(args: readonly string[], options?: RunOptions): Promise<ExecResult> {
    return ipIn(this.#netns, args, options);
  }

  #wg(args: readonly string[], options?: RunOptions): Promise<ExecResult> {
    return this.#netns === undefined
      ? run('wg', args, options)
      : run('ip', ['netns', 'exec', this.#netns, 'wg', ...args], options);
  }

  detect(): Promise<WireGuardImplementation> {
    this.#implementation ??= this.#detect().catch((error: unknown) => {
      this.#implementation = undefined;
      throw error;
    });
    return this.#implementation;
  }

  /**
   * Asks the kernel once, in the target namespace, with a throwaway `ipfprobe…` interface: the
   * module may be built in, loadable on demand, or missing; only trying tells.
   */
  async #detect(): Promise<WireGuardImplementation> {
    await run('wg', ['--version']).catch(() => {
      throw new IpferryError('IPF_E_TUNNEL_DRIVER', {
        reason: 'wg is not installed (Debian package wireguard-tools)',
      });
    });
    const probe = `ipfprobe${randomBytes(3).toString('hex')}`;
    let kernelError = '';
    try {
      await this.#ip(['link', 'add', 'name', probe, 'type', 'wireguard']);
      await this.#ip(['link', 'del', 'dev', probe]);
      this.#log?.info({ netns: this.#netns ?? null }, 'wireguard: kernel module');
      return 'kernel';
    } catch (error) {
      kernelError = (error as Error).message;
    }
    await run('wireguard-go', ['--version']).catch(() => {
      throw new IpferryError('IPF_E_TUNNEL_DRIVER', {
        reason: `the kernel has no WireGuard (${kernelError}) and wireguard-go is not installed`,
      });
    });
    this.#log?.info(
      { netns: this.#netns ?? null },
      'wireguard: no kernel module, using wireguard-go',
    );
    return 'userspace';
  }

  async publicKey(): Promise<string> {
    await ensurePrivateDir(this.#dir);
    const { publicKey, created } = await ensureKeyFile(this.keyFile);
    if (created) this.#log?.info({ publicKey }, 'wireguard: created this node’s key pair');
    return publicKey;
  }

  async observe(name: string): Promise<ObservedTunnel | undefined> {
    refuseForeign(name);
    return (await this.#observe(name))?.tunnel;
  }

  /** The tunnel as observe() reports it, with the interface as `ip` showed it. */
  async #observe(name: string): Promise<{ tunnel: ObservedTunnel; link: IpLinkAddr } | undefined> {
    const link = await this.#link(name);
    if (!link) return undefined;
    const dump = await this.#dump(name);
    if (!dump) return this.#vanishing(name, link);
    const tunnel: ObservedTunnel = {
      name,
      kind: link.linkinfo?.info_kind === 'wireguard' ? 'kernel' : 'userspace',
      publicKey: dump.publicKey,
      listenPort: dump.listenPort,
      mtu: link.mtu ?? 0,
      up: (link.flags ?? []).includes('UP'),
      addresses: addressesOf(link),
      peers: dump.peers.map((p) => p.peer),
    };
    return { tunnel, link };
  }

  async #link(name: string): Promise<IpLinkAddr | undefined> {
    const { stdout } = await this.#ip(['-d', '-j', 'address', 'show', 'dev', name], {
      tolerate: NO_DEVICE,
    });
    const [link] = JSON.parse(stdout.trim() || '[]') as IpLinkAddr[];
    if (!link) return undefined;
    const kind = link.linkinfo?.info_kind;
    if (kind !== 'wireguard' && kind !== 'tun') {
      throw dataplaneError(`${name} exists but is a ${kind ?? 'plain'} interface, not WireGuard`);
    }
    return link;
  }

  /**
   * A TUN interface whose wireguard-go died (killed, crashed) lingers for a moment after the
   * process is gone, until the kernel has unregistered it: wait for that, then report no
   * tunnel. Anything else that does not answer is an error.
   */
  async #vanishing(name: string, link: IpLinkAddr): Promise<undefined> {
    const deadline = Date.now() + 2000;
    while (link.linkinfo?.info_kind === 'tun' && (await this.#daemons(name)).length === 0) {
      if (!(await this.#link(name))) return undefined;
      if (Date.now() > deadline) break;
      await sleep(20);
    }
    throw dataplaneError(`${name} exists but answers no WireGuard requests`);
  }

  /** `wg show NAME dump` without the private key (its first field, dropped here). */
  async #dump(name: string): Promise<Dump | undefined> {
    let result: ExecResult;
    try {
      result = await this.#wg(['show', name, 'dump']);
    } catch {
      return undefined;
    }
    const lines = result.stdout.split('\n').filter((line) => line !== '');
    const [head, ...rest] = lines.map((line) => line.split('\t'));
    if (!head || head.length < 4) return undefined;
    const publicKey = head[1] === '(none)' ? undefined : head[1];
    const now = this.#now();
    return {
      publicKey,
      listenPort: Number(head[2]),
      // Sorted like an intent's peers; `wg` lists them in its own order.
      peers: rest
        .map((f) => parseDumpPeer(f, now))
        .sort((x, y) => (x.peer.publicKey < y.peer.publicKey ? -1 : 1)),
    };
  }

  apply(input: TunnelIntent): Promise<readonly TunnelChange[]> {
    return this.#serial.run(() => this.#apply(input));
  }

  async #apply(input: TunnelIntent): Promise<readonly TunnelChange[]> {
    const valid = validateTunnelIntent(input);
    // Every value, as if the tunnel were made anew, before anything is looked up, run or written.
    wireGuardCommands(valid.name, diffTunnel(valid, undefined, ''), this.keyFile);
    const intent = await resolveEndpoints(valid);
    const implementation = await this.detect();
    const publicKey = await this.publicKey();
    const seen = await this.#observe(intent.name);
    await this.#noteLoss(intent.name, seen?.link);
    const have = seen?.tunnel;
    const changes = diffTunnel(intent, have, publicKey);
    if (changes.length === 0) {
      this.#left.set(intent.name, await this.#snapshot(intent.name, seen?.link));
      return changes;
    }
    const commands = wireGuardCommands(intent.name, changes, this.keyFile);
    const created = changes.some((c) => c.kind === 'create');
    if (created) await this.#create(intent.name, implementation);
    try {
      if (commands.wg) await this.#wg(commands.wg);
      for (const command of commands.ip) await this.#ip(command);
    } catch (error) {
      if (created) await this.#remove(intent.name).catch(() => undefined);
      throw error;
    }
    this.#left.set(intent.name, await this.#snapshot(intent.name));
    this.#log?.info(
      { tunnel: intent.name, changes: changes.map(describeChange) },
      'wireguard: tunnel changed',
    );
    return changes;
  }

  async #create(name: string, implementation: WireGuardImplementation): Promise<void> {
    const dev = forValue('tunnel', name, () => tunnel.ifname(name));
    if (implementation === 'kernel') {
      await this.#ip(['link', 'add', 'name', dev, 'type', 'wireguard']);
    } else {
      await this.#startDaemon(dev);
    }
  }

  /**
   * Starts `wireguard-go -f NAME` detached in the namespace and waits until its interface and
   * control socket are there. A socket left by a daemon that died (SIGKILL leaves it behind)
   * is removed first; a live daemon of that name in another namespace is refused.
   */
  async #startDaemon(name: string): Promise<void> {
    await this.#clearSocket(name);
    await ensurePrivateDir(this.#dir);
    const log = await open(this.#logFile(name), 'w', 0o600);
    const argv = ['wireguard-go', '-f', name];
    let pid: number | undefined;
    try {
      const child = spawn(
        this.#netns === undefined ? 'wireguard-go' : 'ip',
        this.#netns === undefined ? argv.slice(1) : ['netns', 'exec', this.#netns, ...argv],
        {
          detached: true,
          stdio: ['ignore', log.fd, log.fd],
          env: { PATH: DAEMON_PATH, [USERSPACE_ENV]: '1' },
        },
      );
      pid = await new Promise<number>((resolve, reject) => {
        child.once('spawn', () => resolve(child.pid ?? -1));
        child.once('error', (error) =>
          reject(dataplaneError(`cannot start wireguard-go: ${error.message}`)),
        );
      });
      child.unref();
      await this.#writePid(name, pid);
      await this.#waitReady(name, pid);
      this.#log?.info({ tunnel: name, pid }, 'wireguard: started wireguard-go');
    } catch (error) {
      if (pid !== undefined) await stopProcess(pid, 'wireguard-go', { reaped: true });
      await this.#forgetDaemon(name);
      throw error;
    } finally {
      await log.close();
    }
  }

  async #writePid(name: string, pid: number): Promise<void> {
    const temporary = `${this.pidFile(name)}.tmp-${randomBytes(4).toString('hex')}`;
    const file = await open(temporary, 'wx', 0o600);
    try {
      await file.writeFile(`${pid}\n`);
    } finally {
      await file.close();
    }
    await rename(temporary, this.pidFile(name));
  }

  async #waitReady(name: string, pid: number): Promise<void> {
    const deadline = Date.now() + this.#startTimeoutMs;
    for (;;) {
      if (!(await alive(pid))) {
        const log = await readFile(this.#logFile(name), 'utf8').catch(() => '');
        throw dataplaneError(`wireguard-go for ${name} exited: ${lastLines(log)}`);
      }
      const socket = await stat(this.socketFile(name)).catch(() => undefined);
      if (socket && (await this.#link(name).catch(() => undefined))) return;
      if (Date.now() > deadline) {
        throw dataplaneError(`wireguard-go for ${name} not ready after ${this.#startTimeoutMs} ms`);
      }
      await sleep(20);
    }
  }

  async #clearSocket(name: string): Promise<void> {
    const socket = this.socketFile(name);
    if (!(await stat(socket).catch(() => undefined))) return;
    const daemons = await findDaemons(name);
    const mine = await this.#netnsInode();
    const elsewhere = daemons.filter((d) => d.netns !== mine);
    if (elsewhere.length > 0) {
      throw dataplaneError(
        `the interface name ${name} is taken on this machine: wireguard-go (pid ${elsewhere.map((d) => d.pid).join(', ')}) serves ${socket} from another network namespace`,
      );
    }
    for (const daemon of daemons) await stopProcess(daemon.pid, 'wireguard-go', { reaped: true });
    await unlink(socket).catch(() => undefined);
  }

  async #netnsInode(): Promise<number> {
    const path = this.#netns === undefined ? '/proc/self/ns/net' : `/run/netns/${this.#netns}`;
    return (await stat(path)).ino;
  }

  /**
   * Daemons of `name` in this namespace, found by command line and namespace: the pid file says
   * which one this driver started, but a lost pid file must not orphan a daemon.
   */
  async #daemons(name: string): Promise<number[]> {
    const mine = await this.#netnsInode();
    return (await findDaemons(name)).filter((d) => d.netns === mine).map((d) => d.pid);
  }

  async #forgetDaemon(name: string): Promise<void> {
    await unlink(this.pidFile(name)).catch(() => undefined);
    await unlink(this.#logFile(name)).catch(() => undefined);
  }

  /**
   * The interface and the wireguard-go this driver started for it (the pid file's, when it
   * still runs as `wireguard-go … NAME`: cheap enough for every probe interval).
   */
  async #snapshot(name: string, seen?: IpLinkAddr): Promise<TunnelSnapshot> {
    const device = linkSnapshot(seen ?? (await this.#link(name).catch(() => undefined)), false);
    const pid = await readPid(this.pidFile(name));
    const running = pid !== undefined && (await isDaemonOf(pid, name));
    return {
      ...(device ? { link: device } : {}),
      ...(running ? { daemon: { program: 'wireguard-go', pid } } : {}),
    };
  }

  /**
   * Remembers, for check(), that the tunnel is not as the last apply left it: this apply is
   * about to repair a loss nobody reported yet.
   */
  async #noteLoss(name: string, seen: IpLinkAddr | undefined): Promise<void> {
    const left = this.#left.get(name);
    if (!left) return;
    const faults = tunnelFaults(name, left, await this.#snapshot(name, seen));
    if (faults.length > 0) this.#repaired.set(name, { faults, at: Date.now() });
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

  remove(name: string): Promise<boolean> {
    return this.#serial.run(() => {
      refuseForeign(name);
      return this.#remove(name);
    });
  }

  async #remove(name: string): Promise<boolean> {
    this.#left.delete(name);
    this.#repaired.delete(name);
    let found = false;
    const recorded = await readPid(this.pidFile(name));
    for (const pid of await this.#daemons(name)) {
      found = true;
      // wireguard-go removes its interface and socket when it gets SIGTERM.
      await stopProcess(pid, 'wireguard-go', { reaped: true });
      this.#log?.info(
        { tunnel: name, pid, recorded: pid === recorded },
        'wireguard: stopped wireguard-go',
      );
    }
    if (await this.#link(name).catch(() => undefined)) {
      found = true;
      await this.#ip(['link', 'del', 'dev', name], { tolerate: NO_DEVICE });
    }
    // The socket is ours to remove only when no daemon of that name lives anywhere else.
    if ((await findDaemons(name)).length === 0) {
      await unlink(this.socketFile(name)).then(
        () => (found = true),
        () => undefined,
      );
    }
    await this.#forgetDaemon(name);
    if (found) this.#log?.info({ tunnel: name }, 'wireguard: tunnel removed');
    return found;
  }

  async status(name: string): Promise<TunnelStatus | undefined> {
    refuseForeign(name);
    const link = await this.#link(name);
    if (!link) return undefined;
    const dump = await this.#dump(name);
    if (!dump) return this.#vanishing(name, link);
    return { name, peers: dump.peers.map((p) => p.status) };
  }
}

function parseDumpPeer(fields: string[], now: number): DumpPeer {
  const [publicKey = '', , endpointText = '(none)', allowed = '(none)', handshake = '0'] = fields;
  const [rx = '0', tx = '0', keepalive = 'off'] = fields.slice(5);
  const endpoint = endpointText === '(none)' ? undefined : canonicalEndpoint(endpointText);
  const allowedIps =
    allowed === '(none)' || allowed === ''
      ? []
      : allowed
          .split(',')
          .map((p) => tryParsePrefix(p.trim(), false)?.text ?? p.trim())
          .sort();
  const keepaliveSeconds = keepalive === 'off' ? undefined : Number(keepalive);
  const latest = Number(handshake);
  return {
    peer: {
      publicKey,
      ...(endpoint === undefined ? {} : { endpoint }),
      allowedIps,
      ...(keepaliveSeconds ? { keepaliveSeconds } : {}),
    },
    status: {
      publicKey,
      endpoint,
      handshakeAgeSeconds: latest > 0 ? Math.max(0, now - latest) : undefined,
      rxBytes: Number(rx),
      txBytes: Number(tx),
    },
  };
}

function canonicalEndpoint(text: string): string {
  try {
    return parseEndpoint(text).text;
  } catch {
    return text; // e.g. a scoped link-local endpoint: shown as the kernel spells it
  }
}

/** The commands of a diff's changes (the interface itself is made by `create`, not here). */
export interface WireGuardCommands {
  /** `wg` argv: `set NAME …` with the key file, port and peers; undefined when none change. */
  readonly wg: readonly string[] | undefined;
  /** `ip` argv for the interface's MTU, addresses and link, in order. */
  readonly ip: readonly (readonly string[])[];
}

/**
 * The commands that make tunnel `name` as `changes` say, `keyFile` being this node's private
 * key file. Every value is parsed again into its word (../linux/args.ts: keys, endpoints,
 * prefixes, ports, interface addresses, the MTU), all of them before the first command runs:
 * one that does not parse refuses the tunnel with IPF_E_DATAPLANE and nothing runs.
 */
export function wireGuardCommands(
  name: string,
  changes: readonly TunnelChange[],
  keyFile: string,
): WireGuardCommands {
  return forValue('tunnel', name, () => {
    const dev = tunnel.ifname(name);
    const set: string[] = [];
    const ip: string[][] = [];
    for (const change of changes) {
      if (change.kind === 'private-key') set.push('private-key', tunnel.localFile(keyFile));
      if (change.kind === 'listen-port') set.push('listen-port', wg.port(change.port));
      if (change.kind === 'peer-remove') set.push('peer', wg.key(change.publicKey), 'remove');
      if (change.kind === 'peer-add') set.push(...peerArgs(change.peer));
      if (change.kind === 'peer-update') set.push(...peerArgs(change.peer, change.fields));
    }
    for (const change of changes) {
      if (change.kind === 'mtu') {
        ip.push(['link', 'set', 'dev', dev, 'mtu', tunnel.mtu(change.mtu)]);
      } else if (change.kind === 'address-add') {
        const address = tunnel.interfaceAddress(change.address);
        const nodad = address.family === 6 ? ['nodad'] : [];
        ip.push(['address', 'add', address.text, 'dev', dev, ...nodad]);
      } else if (change.kind === 'address-del') {
        ip.push(['address', 'del', tunnel.interfaceAddress(change.address).text, 'dev', dev]);
      } else if (change.kind === 'up') {
        // ipferry gives the tunnel its own link-local address (the peers' probe address); the
        // kernel must not invent another one when the link comes up.
        ip.push(['link', 'set', 'dev', dev, 'addrgenmode', 'none']);
        ip.push(['link', 'set', 'dev', dev, 'up']);
      }
    }
    return { wg: set.length > 0 ? ['set', dev, ...set] : undefined, ip };
  });
}

/** `wg set` arguments for one peer: everything when it is new, else only what changed. */
function peerArgs(
  peer: TunnelPeer,
  fields: readonly ('endpoint' | 'allowed-ips' | 'keepalive')[] = [
    'endpoint',
    'allowed-ips',
    'keepalive',
  ],
): string[] {
  return within(`peer ${shown(peer.publicKey)}`, () => {
    const args = ['peer', wg.key(peer.publicKey)];
    if (fields.includes('endpoint') && peer.endpoint !== undefined) {
      args.push('endpoint', wg.endpoint(peer.endpoint));
    }
    if (fields.includes('allowed-ips')) args.push('allowed-ips', wg.allowedIps(peer.allowedIps));
    if (fields.includes('keepalive')) {
      args.push('persistent-keepalive', wg.keepalive(peer.keepaliveSeconds));
    }
    return args;
  });
}

// ---------------------------------------------------------------------------------------------
// wireguard-go processes

interface Daemon {
  readonly pid: number;
  /** Inode of its network namespace. */
  readonly netns: number;
}

/** Whether `pid` is a live `wireguard-go … NAME`. */
async function isDaemonOf(pid: number, name: string): Promise<boolean> {
  return runsInterface(await argvOf(pid), name) && (await alive(pid));
}

function runsInterface(argv: readonly string[], name: string): boolean {
  return programOf(argv) === 'wireguard-go' && argv.filter((a) => a !== '').pop() === name;
}

/** Every live `wireguard-go … NAME` on the machine, with its network namespace. */
async function findDaemons(name: string): Promise<Daemon[]> {
  const daemons: Daemon[] = [];
  for (const pid of await findProcesses((argv) => runsInterface(argv, name))) {
    const link = await readlink(`/proc/${pid}/ns/net`).catch(() => '');
    const inode = /^net:\[(\d+)\]$/.exec(link)?.[1];
    if (inode !== undefined) daemons.push({ pid, netns: Number(inode) });
  }
  return daemons;
}

function lastLines(text: string): string {
  return (
    text
      .split('\n')
      .filter((line) => line.trim() !== '' && !/[│┌└]/.test(line))
      .slice(-5)
      .join('; ') || 'no output'
  );
}
