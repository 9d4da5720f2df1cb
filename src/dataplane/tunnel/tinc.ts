/**
 * The tinc 1.0 tunnel driver: `tincd` in switch mode over a tap interface, configured by files,
 * with `ip` for the interface's MAC, MTU, addresses and link state; everything inside `netns`
 * when given, through execFile/spawn, never a shell. Its parts: the configuration directory
 * (tinc-config.ts), the tap (tinc-tap.ts), the tincds (tinc-daemon.ts) and the node's RSA key
 * (tinc-keys.ts); this class decides what to change and in which order.
 *
 * Each tunnel is one tincd with its own configuration directory `stateDir/tinc/NAME/`. Peers
 * added or removed are a rewrite and a SIGHUP (tinc 1.0 re-reads tinc.conf and drops
 * connections whose host file went away); a new listen port, key or peer endpoint restarts
 * tincd.
 *
 * The tap is the driver's, not tincd's (tinc-tap.ts), so it outlives tincd: a restart, a kill,
 * a crash leave its ifindex, addresses and every route through it in place, and only its
 * carrier goes while no tincd holds it. That matters because tincd 1.0 survives a crash its own
 * way: on a fatal signal (it segfaults now and then when connections churn) it closes its tap,
 * sleeps 5 s and re-executes itself. Over a tap of its own making, the kernel would delete the
 * tap with its routes and the re-executed tincd would make a bare new one; over ours, the
 * re-executed tincd simply takes it back. The driver does not wait those 5 s: observe() reports
 * a tap no tincd holds as not served, and apply() kills the one waiting to re-execute (SIGKILL:
 * a SIGTERM would only cut its sleep short) and starts a fresh one; restore() does just that
 * for the agent's tunnel watch, within milliseconds of the crash. A tap with another MAC than
 * ours (one an older ipferry let tincd make) gets its MAC back before the rest of the diff (the
 * peers' neighbour entries point at ours). check() tells the agent that a tunnel needs it
 * (src/core/tunnelhealth.ts).
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
 * Only interfaces named `ipf…` are ever created, changed or deleted.
 */
import { lstat, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { validationError } from '../../core/errors.js';
import {
  describeChange,
  diffTunnel,
  type ObservedTunnel,
  type PeerStatus,
  type TunnelChange,
  type TunnelIntent,
  type TunnelStatus,
} from '../../core/tunnel.js';
import type {
  TunnelCheck,
  TunnelFault,
  TunnelFaultKind,
  TunnelSnapshot,
} from '../../core/tunnelhealth.js';
import { tunnelFaults } from '../../core/tunnelhealth.js';
import { run } from '../exec.js';
import {
  addressesOf,
  dataplaneError,
  hasCarrier,
  type IpLinkAddr,
  ipIn,
  linkSnapshot,
  NO_DEVICE,
  refuseForeign,
  resolveEndpoints,
  Serial,
} from './common.js';
import type { TunnelDriver, TunnelLogger, WireGuardImplementation } from './driver.js';
import { ensurePrivateDir } from './keys.js';
import {
  readConfig,
  renderConfig,
  tincName,
  tunnelFiles,
  validateTincIntent,
  writeConfig,
} from './tinc-config.js';
import { type DumpedNode, TincDaemons } from './tinc-daemon.js';
import { ensureRsaKeyFile, loadPublicKey } from './tinc-keys.js';
import {
  applyTapChanges,
  ensureTap,
  persistent,
  readTap,
  restoreTapMac,
  tapCounters,
  tapCommands,
  tapGone,
  tapLines,
  tapMac,
} from './tinc-tap.js';

export { tincName } from './tinc-config.js';
export { tapMac } from './tinc-tap.js';

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

const NODE_NAME = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

export class TincDriver implements TunnelDriver {
  readonly kind = 'tinc';
  readonly #netns: string | undefined;
  readonly #dir: string;
  readonly #node: string;
  readonly #name: string;
  readonly #log: TunnelLogger | undefined;
  readonly #tincds: TincDaemons;
  #installed: Promise<WireGuardImplementation> | undefined;
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
    this.#tincds = new TincDaemons({
      netns: options.netns,
      root: this.#dir,
      log: options.log,
      startTimeoutMs: options.startTimeoutMs ?? 10_000,
    });
  }

  /** The private key file tincd is pointed at (PrivateKeyFile). */
  get keyFile(): string {
    return join(this.#dir, 'rsa_key.priv');
  }

  /** tincd's configuration directory for tunnel `name`. */
  configDir(name: string): string {
    return tunnelFiles(this.#dir, name).dir;
  }

  pidFile(name: string): string {
    return tunnelFiles(this.#dir, name).pidFile;
  }

  logFile(name: string): string {
    return tunnelFiles(this.#dir, name).logFile;
  }

  #link(name: string): Promise<IpLinkAddr | undefined> {
    return readTap(this.#netns, name);
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
    const { publicKey, created } = await ensureRsaKeyFile(this.keyFile);
    if (created) this.#log?.info({ publicKey }, 'tinc: created this node’s key pair');
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
    const [pid] = await this.#tincds.find(name);
    // A tap tincd made itself (an older ipferry's) goes with its tincd; ours stays.
    if (pid === undefined && !persistent(link)) return this.#vanishing(name);
    const config = await readConfig(this.configDir(name), this.#name);
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

  /**
   * A tap tincd made itself goes when its tincd dies (killed, crashed), after a moment until
   * the kernel has unregistered it: wait for that, then report no tunnel. One that stays is
   * held by something else: an error.
   */
  async #vanishing(name: string): Promise<undefined> {
    if (await tapGone(this.#netns, name, 2000)) return undefined;
    throw dataplaneError(`${name} exists but no tincd of this node serves it`);
  }

  apply(input: TunnelIntent): Promise<readonly TunnelChange[]> {
    return this.#serial.run(() => this.#apply(input));
  }

  async #apply(input: TunnelIntent): Promise<readonly TunnelChange[]> {
    const valid = validateTincIntent(input, this.#node);
    // Every value into its file line or `ip` word (renderConfig, tapLines), before anything is
    // looked up, run or written; this node's own key is read or made only after.
    renderConfig({ name: this.#name, keyFile: this.keyFile }, valid);
    tapLines(this.#node, valid);
    const intent = await resolveEndpoints(valid);
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
    // The tap's commands are rendered before the first file is written (writeConfig renders
    // all its files before it writes one).
    const tap = tapCommands(name, changes);
    try {
      await writeConfig(
        this.configDir(name),
        { name: this.#name, keyFile: this.keyFile, publicKey },
        intent,
      );
      const restart = !created && changes.some(needsRestart);
      if (created || restart || changes.some((c) => c.kind === 'daemon-start')) {
        if (restart) await this.#tincds.stop(name);
        else await this.#tincds.killStranded(name);
        if (!(await ensureTap(this.#netns, this.#node, intent))) {
          if (relink) await this.#relink(name, seen?.link.address);
          await applyTapChanges(this.#netns, tap);
        }
        await this.#tincds.start(name);
      } else {
        if (relink) await this.#relink(name, seen.link.address);
        if (changes.some((c) => c.kind === 'peer-add' || c.kind === 'peer-remove')) {
          await this.#tincds.reload(name);
        }
        await applyTapChanges(this.#netns, tap);
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
    const [pid] = await this.#tincds.find(name);
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
      const [pid] = await this.#tincds.find(name);
      const faults = tunnelFaults(name, left, snapshotOf(link, pid));
      if (faults.some((f) => !DAEMON_FAULTS.has(f.kind))) return false;
      if (faults.length === 0) return true;
      const held = pid !== undefined && hasCarrier(link) === true;
      if (held) this.#left.set(name, snapshotOf(link, pid));
      else {
        await this.#tincds.killStranded(name);
        const started = await this.#tincds.start(name);
        this.#left.set(name, snapshotOf(started.link, started.pid));
      }
      this.#log?.warn(
        { tunnel: name, faults: faults.map((f) => f.detail) },
        held ? 'tinc: a re-executed tincd holds the tap again' : 'tinc: restarted tincd on its tap',
      );
      return true;
    });
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
    await restoreTapMac(this.#netns, this.#node, name);
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
    let found = await this.#tincds.stop(name);
    if (await this.#link(name).catch(() => undefined)) {
      found = true;
      await ipIn(this.#netns, ['link', 'del', 'dev', name], { tolerate: NO_DEVICE });
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
    const [pid] = await this.#tincds.find(name);
    if (pid === undefined && !persistent(link)) return this.#vanishing(name);
    const config = await readConfig(this.configDir(name), this.#name);
    // No tincd holding the tap (crashed, killed): every peer is unreachable.
    const held = pid !== undefined && hasCarrier(link) !== false;
    const nodes = held ? await this.#tincds.dumpNodes(name, pid) : new Map<string, DumpedNode>();
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
    const device = await tapCounters(this.#netns, name);
    return { name, driver: 'tinc', peerCounters: false, ...(device ? { device } : {}), peers };
  }
}

/** Faults a new tincd on the same tap mends (restore()). */
const DAEMON_FAULTS: ReadonlySet<TunnelFaultKind> = new Set([
  'carrier-lost',
  'daemon-gone',
  'daemon-replaced',
]);

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
