/**
 * The tincd of each tinc tunnel of a node: started on the tunnel's tap and waited for until it
 * is ready, found again by its pid file (or, when that is lost, by its command line), stopped,
 * reloaded with SIGHUP, and asked for its view of the peers with SIGUSR2. tincd daemonizes and
 * logs to a file of its own, so everything it has to say is read from that log.
 *
 * tincd 1.0 survives a crash its own way: on a fatal signal (it segfaults now and then when
 * connections churn) it closes its tap, sleeps 5 s and re-executes itself. killStranded() ends
 * such a tincd rather than wait for it.
 */
import { spawn } from 'node:child_process';
import { copyFile, open, readFile, stat, truncate, unlink } from 'node:fs/promises';
import { forValue, tunnel } from '../linux/args.js';
import type { IpLinkAddr } from './common.js';
import { dataplaneError, hasCarrier, sleep } from './common.js';
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
import type { TunnelLogger } from './driver.js';
import { endpointText, type TunnelFiles, tunnelFiles } from './tinc-config.js';
import { persistent, readTap, tapGone } from './tinc-tap.js';

/** The log file is cut back once it grows past this (status dumps append to it). */
const LOG_LIMIT = 1024 * 1024;
/** tinc 1.0's node status bits (node.h): the session key is valid; the node is reachable. */
const STATUS_VALIDKEY = 0x02;
const STATUS_REACHABLE = 0x10;

/** A node of tincd's dump: where it is now, and whether it is reachable with a valid key. */
export interface DumpedNode {
  readonly endpoint: string | undefined;
  readonly connected: boolean;
}

export interface TincDaemonsOptions {
  /** Network namespace the tincds run in; the current one when undefined. */
  readonly netns: string | undefined;
  /** The node's tinc directory: each tunnel's configuration directory is in it. */
  readonly root: string;
  readonly log: TunnelLogger | undefined;
  /** How long tincd may take to bring its interface and sockets up. */
  readonly startTimeoutMs: number;
}

export class TincDaemons {
  readonly #netns: string | undefined;
  readonly #root: string;
  readonly #log: TunnelLogger | undefined;
  readonly #startTimeoutMs: number;
  /** One status dump at a time per tunnel: each reads the log from where it signalled. */
  readonly #dumping = new Map<string, Promise<unknown>>();

  constructor(options: TincDaemonsOptions) {
    this.#netns = options.netns;
    this.#root = options.root;
    this.#log = options.log;
    this.#startTimeoutMs = options.startTimeoutMs;
  }

  #files(name: string): TunnelFiles {
    return tunnelFiles(this.#root, name);
  }

  /**
   * Live tincds of tunnel `name`: the one in the pid file, or when that is missing or stale,
   * any tincd whose command line names this tunnel's configuration directory (a lost pid file
   * must not orphan a daemon).
   */
  async find(name: string): Promise<number[]> {
    const { dir, pidFile } = this.#files(name);
    const recorded = await readPid(pidFile);
    if (recorded !== undefined && (await servesDir(recorded, dir))) return [recorded];
    return findDaemons(dir);
  }

  /**
   * Starts tincd for `name` inside the namespace and waits until it says Ready with its tap
   * there. tincd detaches before it opens the device and binds its port, so a failure shows
   * only in its log: "Terminating", or an "Address already in use" even when another family's
   * socket could be bound (a half-bound tunnel is refused as a whole).
   */
  async start(name: string): Promise<{ pid: number; link: IpLinkAddr }> {
    // tincd's argv, parsed again (../linux/args.ts): the tunnel's name and its files.
    const { dir, pidFile, logFile } = forValue('tunnel', name, () => {
      const files = this.#files(tunnel.ifname(name));
      return {
        dir: tunnel.localFile(files.dir),
        pidFile: tunnel.localFile(files.pidFile),
        logFile: tunnel.localFile(files.logFile),
      };
    });
    await unlink(pidFile).catch(() => undefined);
    await unlink(logFile).catch(() => undefined);
    const argv = ['tincd', '-c', dir, '--pidfile', pidFile];
    // Debug level 1 logs connections made and lost: what an operator needs when a peer is away.
    argv.push(`--logfile=${logFile}`, '--debug=1');
    const stderr = await launch(
      this.#netns === undefined ? argv : ['ip', 'netns', 'exec', this.#netns, ...argv],
    );
    const deadline = Date.now() + this.#startTimeoutMs;
    for (;;) {
      const log = await readFile(logFile, 'utf8').catch(() => '');
      const pid = await readPid(pidFile);
      const failed = /Terminating|Address already in use/.test(log);
      if (failed || (stderr.exitCode !== 0 && stderr.exitCode !== undefined)) {
        await this.stop(name).catch(() => undefined);
        throw dataplaneError(
          `tincd for ${name} did not start: ${logLines(log) || stderr.text.trim() || `exit ${String(stderr.exitCode)}`}`,
        );
      }
      if (/\bReady\b/.test(log) && pid !== undefined && (await alive(pid))) {
        const link = await readTap(this.#netns, name);
        if (link && hasCarrier(link) !== false) {
          this.#log?.info({ tunnel: name, pid }, 'tinc: started tincd');
          return { pid, link };
        }
      }
      if (Date.now() > deadline) {
        await this.stop(name).catch(() => undefined);
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
  async killStranded(name: string): Promise<void> {
    for (const pid of await this.find(name)) {
      signal(pid, 'SIGKILL');
      if (!(await gone(pid, 2000))) throw dataplaneError(`tincd (pid ${pid}) does not exit`);
      this.#log?.warn(
        { tunnel: name, pid },
        'tinc: killed a tincd whose tap is gone (crashed, waiting to re-execute itself)',
      );
    }
  }

  /** Stops every tincd of tunnel `name`; a tap it made itself is waited for until it is gone. */
  async stop(name: string): Promise<boolean> {
    const pids = await this.find(name);
    for (const pid of pids) {
      // tincd closes its tap and removes its pid file on SIGTERM.
      await stopProcess(pid, 'tincd');
      this.#log?.info({ tunnel: name, pid }, 'tinc: stopped tincd');
    }
    const link = await readTap(this.#netns, name).catch(() => undefined);
    if (link && !persistent(link)) await tapGone(this.#netns, name, 2000);
    return pids.length > 0;
  }

  /** SIGHUP: tinc 1.0 re-reads tinc.conf (ConnectTo) and closes connections of removed hosts. */
  async reload(name: string): Promise<void> {
    const { logFile } = this.#files(name);
    const [pid] = await this.find(name);
    if (pid === undefined) throw dataplaneError(`no tincd serves ${name}`);
    const from = await fileSize(logFile);
    if (!signal(pid, 'SIGHUP')) throw dataplaneError(`tincd for ${name} (pid ${pid}) is gone`);
    const deadline = Date.now() + 3000;
    while (!(await readFrom(logFile, from)).includes('Got HUP signal')) {
      if (Date.now() > deadline) break;
      await sleep(20);
    }
    // A configuration tincd cannot read makes it exit on reload.
    await sleep(50);
    if (!(await alive(pid))) {
      const log = await readFrom(logFile, from);
      throw dataplaneError(`tincd for ${name} exited on reload: ${logLines(log)}`);
    }
  }

  /** Has tincd dump its nodes into the log (SIGUSR2) and reads them back; empty on timeout. */
  async dumpNodes(name: string, pid: number): Promise<Map<string, DumpedNode>> {
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
    const { logFile } = this.#files(name);
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
