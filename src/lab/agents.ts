/**
 * Real agents in a lab: one place for the demo, the lab tests and the benchmarks to run
 * `ipferry agent` with its Linux dataplane acting in a lab namespace, wait until its API answers,
 * join a remote agent to a hub with a join token, and stop them by pid, so they all run and
 * tear down agents the same way.
 *
 * An agent runs in the machine's own network namespace (only its dataplane acts in the lab's,
 * by `--netns`) and listens on 127.0.0.1: deleting a lab does not stop it, whoever started it
 * stops it by pid. The wireguard-go daemons it starts do run inside the lab and die with it, but
 * their control sockets live in /var/run/wireguard, which the whole machine shares
 * (src/lab/wireguard.ts).
 */
import { type ChildProcess, spawn, type StdioOptions } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { chmod, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { ApiClient } from '../client/api-client.js';
import { tunnelName } from '../core/tunnel.js';
import { freePort } from './ports.js';
import { hostPort } from './probe.js';
import type { Lab } from './topology.js';
import { removeWireguardSockets } from './wireguard.js';

/** The CLI of this checkout: bin/ipferry, which runs the compiled dist/ (src/lab and dist/lab alike). */
export const IPFERRY_BIN = fileURLToPath(new URL('../../bin/ipferry', import.meta.url));

/** How long an agent may take to answer /healthz: generous, as other test files share the CPUs. */
const HEALTH_TIMEOUT_MS = 20_000;
/** How long a joined agent may take to register its node with its tunnel key at the hub. */
const REGISTER_TIMEOUT_MS = 15_000;
const POLL_MS = 25;

/**
 * The command line of an agent whose Linux dataplane acts in a lab namespace: one place for the
 * demo and the tests that start real agents, so they all run the agent the same way.
 */
export interface LabAgentOptions {
  readonly node: string;
  /** The namespace its dataplane acts in. */
  readonly netns: string;
  /** `sqlite:PATH`, or the hub's `http://…` for a remote agent. */
  readonly store: string;
  /** API port on 127.0.0.1. */
  readonly port: number;
  readonly tokenFile: string;
  readonly stateDir: string;
  readonly resyncSeconds: number;
  /** Further flags (tunnel, join, …), appended as given. */
  readonly extra?: readonly string[];
}

export function labAgentArgv(o: LabAgentOptions): string[] {
  return [
    'agent',
    '--node',
    o.node,
    '--dataplane',
    'linux',
    '--netns',
    o.netns,
    '--store',
    o.store,
    '--listen',
    `127.0.0.1:${o.port}`,
    '--token-file',
    o.tokenFile,
    '--state-dir',
    o.stateDir,
    '--resync-seconds',
    String(o.resyncSeconds),
    // Info, as an operator's agent logs: what it applied. Lines for people, also in a test's
    // output or a lab's log file, which no journal reads.
    '--log-level',
    'info',
    '--log-format',
    'human',
    ...(o.extra ?? []),
  ];
}

// ---------------------------------------------------------------------------------------------
// One agent process

/** An agent process started by spawnLabAgent. */
export interface LabAgent {
  readonly node: string;
  readonly proc: ChildProcess;
  readonly port: number;
  /** Its API: `http://127.0.0.1:PORT`. */
  readonly url: string;
  /** Its API token file (the agent creates it, 0600, on first start). */
  readonly tokenFile: string;
  readonly stateDir: string;
  readonly argv: readonly string[];
}

export interface SpawnHow {
  /** Default: this checkout's bin/ipferry. */
  readonly bin?: string;
  /** Appends the agent's stdout and stderr to this file instead. */
  readonly log?: string;
  /** Default: stdin ignored, stdout and stderr this process's (so a test shows the agent's log). */
  readonly stdio?: StdioOptions;
  readonly env?: NodeJS.ProcessEnv;
}

/** A spawn that failed (no such binary) is an 'error' event, kept here for waitHealthy. */
const spawnErrors = new WeakMap<ChildProcess, Error>();

/** Starts an agent and returns at once; waitHealthy() waits for its API. */
export function spawnLabAgent(options: LabAgentOptions, how: SpawnHow = {}): LabAgent {
  const argv = labAgentArgv(options);
  const fd = how.log === undefined ? undefined : openSync(how.log, 'a');
  let proc: ChildProcess;
  try {
    proc = spawn(how.bin ?? IPFERRY_BIN, argv, {
      stdio:
        fd === undefined ? (how.stdio ?? ['ignore', 'inherit', 'inherit']) : ['ignore', fd, fd],
      ...(how.env === undefined ? {} : { env: how.env }),
    });
  } finally {
    // The child has its own copy of the descriptor.
    if (fd !== undefined) closeSync(fd);
  }
  proc.on('error', (error) => spawnErrors.set(proc, error));
  return {
    node: options.node,
    proc,
    port: options.port,
    url: `http://127.0.0.1:${options.port}`,
    tokenFile: options.tokenFile,
    stateDir: options.stateDir,
    argv,
  };
}

/** Whether the agent's API at `url` answers /healthz (each try bounded to 2 s). */
export async function healthy(url: string): Promise<boolean> {
  const res = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(2000) }).catch(
    () => undefined,
  );
  return res?.ok === true;
}

/** Whether the process has ended (exited, killed, or never started). */
function ended(proc: ChildProcess): boolean {
  return proc.exitCode !== null || proc.signalCode !== null || spawnErrors.has(proc);
}

/**
 * Waits until the agent's API answers /healthz, at most `timeoutMs`; fails at once when the
 * process ends first (a refused flag, a port in use), rather than after the whole timeout.
 */
export async function waitHealthy(
  agent: LabAgent,
  timeoutMs: number = HEALTH_TIMEOUT_MS,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { proc } = agent;
    const failed = spawnErrors.get(proc);
    if (failed) throw new Error(`the ${agent.node} agent did not start: ${failed.message}`);
    if (ended(proc)) {
      const how = proc.exitCode !== null ? `with ${proc.exitCode}` : `by ${proc.signalCode}`;
      throw new Error(`the ${agent.node} agent exited ${how} before its API answered`);
    }
    if (await healthy(agent.url)) return;
    if (Date.now() > deadline) {
      throw new Error(
        `the ${agent.node} agent's API at ${agent.url} did not answer within ${timeoutMs} ms`,
      );
    }
    await sleep(POLL_MS);
  }
}

/**
 * Stops an agent by its pid and resolves once it has exited: SIGKILL at once (graceMs 0, what
 * the tests do: an agent must survive that), or SIGTERM and SIGKILL after `graceMs`.
 */
export async function stopLabAgent(proc: ChildProcess, graceMs = 0): Promise<void> {
  if (ended(proc) || proc.pid === undefined) return;
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  let timer: NodeJS.Timeout | undefined;
  if (graceMs > 0) {
    proc.kill('SIGTERM');
    timer = setTimeout(() => proc.kill('SIGKILL'), graceMs);
  } else {
    proc.kill('SIGKILL');
  }
  await exited;
  clearTimeout(timer);
}

/** Writes a secret (a join token) to a file only its owner can read, also when it existed. */
export async function writeSecretFile(path: string, text: string): Promise<void> {
  await writeFile(path, text, { mode: 0o600 });
  // `mode` applies only to a file writeFile creates.
  await chmod(path, 0o600);
}

// ---------------------------------------------------------------------------------------------
// The agents of one lab

export interface LabAgentsOptions {
  readonly lab: Pick<Lab, 'ns' | 'destroy'>;
  /** Node NODE's files go under DIR/NODE (api-token, state, credential), join tokens in DIR. */
  readonly dir: string;
  /** Default: this checkout's bin/ipferry. */
  readonly bin?: string;
  /** Default 1: a lab's checks should not wait long for a pass of the reconcile loop. */
  readonly resyncSeconds?: number;
  /** Flags every agent of the lab gets, after its own (a tunnel driver, a probe interval…). */
  readonly extra?: readonly string[];
}

export interface StartOptions {
  readonly node: string;
  /** The lab host its dataplane acts in; default the host of the node's name. */
  readonly host?: string;
  /** `sqlite:PATH`, or a hub's URL. */
  readonly store: string;
  readonly extra?: readonly string[];
  /** API port on 127.0.0.1; default a free one. */
  readonly port?: number;
}

export interface HubOptions {
  /** Where the other nodes' tunnels reach this one (`--endpoint`), and its tunnel port. */
  readonly endpoint?: { readonly address: string; readonly port: number };
  readonly host?: string;
  readonly extra?: readonly string[];
}

export interface JoinOptions {
  /** The hub's API: it makes the join token (unless `token` is given) and sees the node register. */
  readonly api: ApiClient;
  /** A join token made elsewhere (say, with the CLI); default one made here for the node. */
  readonly token?: string;
  readonly host?: string;
  /** The joining agent's further flags (its tunnel port, endpoint, egress…). */
  readonly extra?: readonly string[];
}

/**
 * The agents of one lab: each started with its files under `dir`, remembered until stopped, and
 * every process ever started (refused ones too) killed by pid in teardown().
 */
export class LabAgents {
  readonly #o: LabAgentsOptions;
  /** Every process started: teardown kills those still running. */
  readonly #started: LabAgent[] = [];
  /** The agent running now, by node, and how each node was last started (for restart). */
  readonly #running = new Map<string, LabAgent>();
  readonly #last = new Map<string, StartOptions & { readonly port: number }>();
  /** The tunnel names the nodes' agents use: their sockets are removed in teardown. */
  readonly #tunnels = new Set<string>();

  constructor(options: LabAgentsOptions) {
    this.#o = options;
  }

  /** Node `node`'s API token file (its agent writes it on first start). */
  tokenFile(node: string): string {
    return join(this.#o.dir, node, 'api-token');
  }

  /** The credential a joined node keeps for the hub. */
  credentialFile(node: string): string {
    return join(this.#o.dir, node, 'credential');
  }

  /** The agent of `node` running now, if any. */
  get(node: string): LabAgent | undefined {
    return this.#running.get(node);
  }

  /**
   * Starts an agent without waiting for it (one expected to exit, say): tracked for teardown,
   * not taken as the node's running agent.
   */
  async spawn(o: StartOptions, stdio?: StdioOptions): Promise<LabAgent> {
    const host = o.host ?? o.node;
    const netns = this.#o.lab.ns(host);
    const port = o.port ?? (await freePort());
    const agent = spawnLabAgent(
      {
        node: o.node,
        netns,
        store: o.store,
        port,
        tokenFile: this.tokenFile(o.node),
        stateDir: join(this.#o.dir, o.node, 'state'),
        resyncSeconds: this.#o.resyncSeconds ?? 1,
        extra: [...(o.extra ?? []), ...(this.#o.extra ?? [])],
      },
      {
        ...(this.#o.bin === undefined ? {} : { bin: this.#o.bin }),
        ...(stdio === undefined ? {} : { stdio }),
      },
    );
    this.#started.push(agent);
    // The agent salts its tunnel's name with its namespace (src/agent/run.ts).
    this.#tunnels.add(tunnelName(o.node, o.node, netns));
    this.#last.set(o.node, { ...o, port });
    return agent;
  }

  /** Starts the agent of `o.node` and waits (bounded) until its API answers. */
  async start(o: StartOptions): Promise<LabAgent> {
    const agent = await this.spawn(o);
    await waitHealthy(agent);
    this.#running.set(o.node, agent);
    return agent;
  }

  /** Starts `node`'s agent again as it was last started: same port, store and flags. */
  async restart(node: string): Promise<LabAgent> {
    const last = this.#last.get(node);
    if (last === undefined) throw new Error(`no ${node} agent was started before`);
    await this.kill(node);
    return this.start(last);
  }

  /**
   * Starts the hub of the lab: `node`'s agent on its own SQLite store (DIR/NODE/NODE.db), with
   * a tunnel endpoint when the other nodes' tunnels call it; resolves with an API client too.
   */
  async startHub(node: string, o: HubOptions = {}): Promise<{ agent: LabAgent; api: ApiClient }> {
    const endpoint = o.endpoint;
    const agent = await this.start({
      node,
      ...(o.host === undefined ? {} : { host: o.host }),
      store: `sqlite:${join(this.#o.dir, node, `${node}.db`)}`,
      extra: [
        ...(endpoint === undefined
          ? []
          : [
              '--endpoint',
              hostPort(endpoint.address, endpoint.port),
              '--tunnel-port',
              String(endpoint.port),
            ]),
        ...(o.extra ?? []),
      ],
    });
    return { agent, api: await this.client(node) };
  }

  /** An API client of `node`'s agent, with the token it made. */
  async client(node: string): Promise<ApiClient> {
    const agent = this.#running.get(node);
    if (agent === undefined) throw new Error(`no ${node} agent is running`);
    const token = (await readFile(agent.tokenFile, 'utf8')).trim();
    return new ApiClient({ server: agent.url, token });
  }

  /**
   * A remote agent joining the hub behind `o.api`: a join token bound to `node` (made here
   * unless given) in a 0600 file, the agent started on the hub's store with it and a credential
   * file, and waited for until the hub has its node registered with its tunnel key.
   */
  async join(node: string, o: JoinOptions): Promise<{ agent: LabAgent; token: string }> {
    const token = o.token ?? (await o.api.createJoinToken({ node, ttlSeconds: 600 })).token;
    const tokenFile = join(this.#o.dir, `join-token-${node}`);
    await writeSecretFile(tokenFile, `${token}\n`);
    const agent = await this.start({
      node,
      ...(o.host === undefined ? {} : { host: o.host }),
      store: o.api.server,
      extra: [
        '--join-token-file',
        tokenFile,
        '--credential-file',
        this.credentialFile(node),
        ...(o.extra ?? []),
      ],
    });
    const deadline = Date.now() + REGISTER_TIMEOUT_MS;
    while (!(await o.api.getNode(node)).publicKey) {
      if (Date.now() > deadline) {
        throw new Error(
          `${node} did not register with its tunnel key within ${REGISTER_TIMEOUT_MS} ms`,
        );
      }
      await sleep(POLL_MS);
    }
    return { agent, token };
  }

  /** SIGKILLs `node`'s running agent by pid and waits until it has exited; none running is fine. */
  async kill(node: string): Promise<void> {
    const agent = this.#running.get(node);
    this.#running.delete(node);
    if (agent) await stopLabAgent(agent.proc);
  }

  /** SIGKILLs every agent this lab started that still runs, and waits for them to exit. */
  async stopAll(): Promise<void> {
    this.#running.clear();
    await Promise.all(this.#started.map((agent) => stopLabAgent(agent.proc)));
  }

  /**
   * For after-hooks, also when a test failed: stops the agents, destroys the lab (which ends the
   * wireguard-go daemons inside), then removes the control sockets those leave behind.
   */
  async teardown(): Promise<void> {
    try {
      await this.stopAll();
    } finally {
      try {
        await this.#o.lab.destroy();
      } finally {
        await removeWireguardSockets(this.#tunnels);
      }
    }
  }
}
