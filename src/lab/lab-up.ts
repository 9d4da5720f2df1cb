/**
 * `ipferry lab up`: builds a scenario of src/lab/scenarios.ts under a name, starts its echo
 * servers and, with `agents`, real agents, all detached so they outlive the command, and records
 * everything in the lab's state file (src/lab/labs.ts) as it goes. A failure or Ctrl-C removes
 * all of it again; a SIGKILL leaves the state file for `lab down`.
 */
import type { ChildProcess } from 'node:child_process';
import { mkdirSync, rmSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ApiClient } from '../client/api-client.js';
import { IpferryError } from '../core/errors.js';
import { tunnelName } from '../core/tunnel.js';
import { healthy, IPFERRY_BIN, labAgentArgv, writeSecretFile } from './agents.js';
import {
  ECHO_PORTS,
  killProcessesSync,
  labDir,
  labDown,
  labPrefix,
  listLabs,
  logTail,
  type LabAgentRecord,
  type LabHost,
  type LabPlace,
  type LabProcessKind,
  type LabState,
  type ScenarioName,
  spawnDetached,
  stateFile,
  type TunnelDriver,
  writeState,
} from './labs.js';
import { cleanEnv, etcdMemberArgs } from './etcd.js';
import { deleteNamespaceSync } from './netns.js';
import { freePort } from './ports.js';
import { echoServerCommand } from './probe.js';
import { startTimeOf } from './procs.js';
import {
  applyCloudHome,
  applyFleet,
  applyOldNew,
  CLOUD_HOME,
  cloudHomeSpec,
  FLEET,
  fleetNodes,
  fleetSpec,
  GATEWAY_LAN,
  gatewayLan,
  OLD_NEW,
  oldNewSpec,
} from './scenarios.js';
import { Lab, type LabSpec } from './topology.js';
import { wireguardSocket } from './wireguard.js';

export interface UpRequest {
  readonly scenario: ScenarioName;
  readonly name: string;
  readonly agents: boolean;
  readonly tunnel?: TunnelDriver;
  readonly perSite?: number;
}

/** One line of progress, for a person watching (stderr). */
export type Progress = (line: string) => void;

const HEALTH_TIMEOUT_MS = 30_000;
const REGISTER_TIMEOUT_MS = 20_000;
const ECHO_READY_TIMEOUT_MS = 20_000;
/** Agents of a hand-driven lab: quick enough to follow, light on two cores. */
const RESYNC_SECONDS = 2;
const TUNNEL_PORT = 51820;
/** How many echo servers or agents start at once. */
const START_AT_ONCE = 6;
/** The most fleet members per site `--agents` runs: each agent is a Node process of ~110 MB. */
export const MAX_FLEET_AGENTS_PER_SITE = 10;
/**
 * The pool `lab up --agents` creates on the gateway: a /28 and a /64 of the routed ranges, and
 * the gateway's own public address as shared, for port forwards (docs/migration.md: `forward add`
 * on it in the lan and cloud-home moves).
 */
const POOL = { name: 'public', v4: '203.0.113.0/28', v6: '2001:db8:f::/64' } as const;
const FIP = '203.0.113.10';

interface EchoSpec {
  readonly host: string;
  /** The name it answers with (default the host's). */
  readonly name?: string;
  readonly bind?: readonly string[];
  /**
   * Also answer UDP from each address the host gains later: a node that a routed FIP is
   * delivered to holds it on its tunnel only once associated (echo-server --udp-each-address).
   */
  readonly udpEachAddress?: boolean;
}

/** A scenario as `lab up` builds it. */
interface Plan {
  readonly title: string;
  readonly spec: LabSpec;
  /** What the LabSpec cannot express (nftables of the lab's own routers, extra addresses). */
  readonly apply: (lab: Lab) => Promise<void>;
  readonly roles: Readonly<Record<string, string>>;
  /** Where `lab probe … HOST` goes when not the host's first address. */
  readonly probe?: Readonly<Record<string, string>>;
  readonly pool?: LabState['pool'];
  readonly echo: readonly EchoSpec[];
}

function plan(request: UpRequest, prefix: string): Plan {
  switch (request.scenario) {
    case 'lan':
      return lanPlan(prefix);
    case 'cloud-home':
      return cloudHomePlan(prefix);
    case 'old-new':
      return oldNewPlan(prefix);
    case 'fleet':
      return fleetPlan(prefix, request.perSite);
  }
}

function lanPlan(prefix: string): Plan {
  const L = GATEWAY_LAN;
  return {
    title: "IP Floater's setting: a gateway with floating IPs in front of a LAN",
    spec: gatewayLan({ prefix }),
    apply: () => Promise.resolve(),
    roles: {
      client: 'a client on the internet',
      up: "the provider's router: routes the pool to gw",
      gw: 'the gateway: its agent forwards the floating IPs',
      be1: 'a LAN backend',
      be2: 'a LAN backend',
      lanc: 'a client on the LAN (hairpin)',
    },
    pool: { v4: L.pool.v4, v6: L.pool.v6, routedTo: 'gw' },
    echo: [{ host: 'client' }, { host: 'be1' }, { host: 'be2' }, { host: 'lanc' }],
  };
}

function cloudHomePlan(prefix: string): Plan {
  const H = CLOUD_HOME;
  return {
    title: 'a small cloud VM as the public router of a home server, over a tunnel',
    spec: cloudHomeSpec({ prefix }),
    apply: (lab) => applyCloudHome(lab),
    roles: {
      client: 'a client on the internet',
      up: 'the internet: routes the pool to gw',
      gw: 'the cloud VM: the pool is routed to it',
      isp: "the home server's ISP: drops foreign sources (BCP 38)",
      home: 'the home server, with its own address from its ISP',
    },
    pool: { v4: H.pool.v4, v6: H.pool.v6, routedTo: 'gw' },
    echo: [{ host: 'client' }, { host: 'home', udpEachAddress: true }],
  };
}

function oldNewPlan(prefix: string): Plan {
  const O = OLD_NEW;
  return {
    title: 'an old server hands its public address to a new server in another datacenter',
    spec: oldNewSpec({ prefix }),
    apply: (lab) => applyOldNew(lab),
    roles: {
      client: 'a client on the internet',
      up: 'the internet: routes the pool to old',
      old: `the old server (datacenter A): answers on ${O.service.v4}`,
      dcb: "datacenter B's router: drops foreign sources (BCP 38)",
      new: 'the new server (datacenter B), with its own address',
    },
    probe: { old: O.service.v4 },
    pool: { v4: O.pool.v4, v6: O.pool.v6, routedTo: 'old' },
    echo: [
      { host: 'client' },
      // Bound to the service address: a UDP answer must leave from the address it was asked on.
      { host: 'old', bind: [O.service.v4, O.service.v6] },
      { host: 'new', udpEachAddress: true },
    ],
  };
}

function fleetPlan(prefix: string, perSite: number | undefined): Plan {
  const options = perSite === undefined ? {} : { perSite };
  const nodes = fleetNodes(options);
  const roles: Record<string, string> = {
    router: 'joins the sites and the internet; drops private prefixes between them',
    outsider: 'a host on the internet, not a fleet member',
    admin: `an operators' host, in the SSH allow-list range ${FLEET.admin.sshAllow}`,
  };
  for (const n of nodes) roles[n.name] = `fleet member, site ${n.site}`;
  return {
    title: 'a fleet in two sites behind one router: the mesh',
    spec: fleetSpec({ prefix, ...options }),
    apply: (lab) => applyFleet(lab, options),
    roles,
    // Members of other sites reach a node by its public address only.
    probe: Object.fromEntries(nodes.map((n) => [n.name, n.public])),
    echo: [...nodes.map((n) => ({ host: n.name })), { host: 'outsider' }, { host: 'admin' }],
  };
}

/** Each host's addresses from the spec (link ends and bridges), IPv4 first. */
function hostAddresses(spec: LabSpec, host: string): string[] {
  const cidrs = [
    ...spec.links.flatMap((l) => [l.a, l.b]).filter((e) => e.host === host),
    ...(spec.hosts.find((h) => h.name === host)?.bridges ?? []),
  ].flatMap((e) => e.addresses ?? []);
  const addresses = [...new Set(cidrs.map((c) => c.slice(0, c.indexOf('/'))))];
  return [
    ...addresses.filter((a) => !a.includes(':')),
    ...addresses.filter((a) => a.includes(':')),
  ];
}

function hosts(p: Plan, prefix: string): LabHost[] {
  return p.spec.hosts.map((h) => {
    const addresses = hostAddresses(p.spec, h.name);
    const probe = p.probe?.[h.name];
    return {
      name: h.name,
      namespace: `${prefix}${h.name}`,
      role: p.roles[h.name] ?? '',
      addresses:
        probe !== undefined && !addresses.includes(probe) ? [probe, ...addresses] : addresses,
      ...(probe === undefined ? {} : { probe }),
    };
  });
}

// ---------------------------------------------------------------------------------------------

class Builder {
  readonly state: LabState;

  constructor(
    readonly place: LabPlace,
    state: LabState,
    readonly progress: Progress,
  ) {
    this.state = state;
  }

  save(): void {
    writeState(this.place, this.state);
  }

  log(name: string): string {
    return join(this.state.dir, 'logs', `${name}.log`);
  }

  /** Starts a detached process and records it in the state file before anything waits on it. */
  async start(
    kind: LabProcessKind,
    name: string,
    argv: readonly string[],
    env?: NodeJS.ProcessEnv,
  ): Promise<ChildProcess> {
    const log = this.log(`${kind}-${name}`);
    const child = await spawnDetached(argv, log, env).catch((error: unknown) => {
      throw startError(`cannot start ${argv[0] ?? '?'}: ${String(error)}`);
    });
    const pid = child.pid ?? -1;
    const startTime = startTimeOf(pid);
    this.state.processes.push({
      kind,
      name,
      pid,
      ...(startTime === undefined ? {} : { startTime }),
      log,
    });
    this.save();
    return child;
  }

  /** Throws with the process's log when it has exited. */
  checkAlive(child: ChildProcess, what: string): void {
    if (child.exitCode === null && child.signalCode === null) return;
    const how = child.exitCode !== null ? `with ${child.exitCode}` : `by ${child.signalCode}`;
    const log = this.state.processes.find((p) => p.pid === child.pid)?.log;
    throw startError(`${what} exited ${how}: ${logTail(log)}`);
  }

  async echo(lab: Lab, e: EchoSpec): Promise<void> {
    const name = e.name ?? e.host;
    const argv = [
      'ip',
      'netns',
      'exec',
      lab.ns(e.host),
      ...echoServerCommand(),
      '--name',
      name,
      '--tcp',
      String(ECHO_PORTS.tcp),
      '--udp',
      String(ECHO_PORTS.udp),
      ...(e.bind === undefined ? [] : ['--bind', e.bind.join(',')]),
      ...(e.udpEachAddress === true ? ['--udp-each-address'] : []),
    ];
    const child = await this.start('echo', e.host, argv);
    const log = this.log(`echo-${e.host}`);
    const deadline = Date.now() + ECHO_READY_TIMEOUT_MS;
    while (!/^ready$/m.test(logTail(log, 4096))) {
      this.checkAlive(child, `the echo server on ${e.host}`);
      if (Date.now() > deadline) {
        throw startError(`the echo server on ${e.host} was not ready in time: ${logTail(log)}`);
      }
      await sleep(25);
    }
  }

  /** An agent whose dataplane acts in `host`'s namespace; waits until its API answers. */
  async agent(node: string, store: string, extra: readonly string[] = []): Promise<ApiClient> {
    const netns = `${this.state.prefix}${node}`;
    const port = await freePort();
    const nodeDir = join(this.state.dir, node);
    mkdirSync(nodeDir, { recursive: true, mode: 0o700 });
    const tokenFile = join(nodeDir, 'api-token');
    const argv = labAgentArgv({
      node,
      netns,
      store,
      port,
      tokenFile,
      stateDir: join(nodeDir, 'state'),
      resyncSeconds: RESYNC_SECONDS,
      extra,
    });
    this.state.tunnels.push(tunnelName(node, node, netns));
    const child = await this.start('agent', node, [IPFERRY_BIN, ...argv]);
    const url = `http://127.0.0.1:${port}`;
    const record: LabAgentRecord = {
      node,
      host: node,
      url,
      tokenFile,
      store,
      log: this.log(`agent-${node}`),
    };
    this.state.agents.push(record);
    this.save();
    const deadline = Date.now() + HEALTH_TIMEOUT_MS;
    while (!(await healthy(url))) {
      this.checkAlive(child, `the ${node} agent`);
      if (Date.now() > deadline) {
        throw startError(
          `the ${node} agent did not answer at ${url} in time: ${logTail(record.log)}`,
        );
      }
      await sleep(50);
    }
    const token = (await readFile(tokenFile, 'utf8')).trim();
    return new ApiClient({ server: url, token });
  }

  /** A hub: the agent on its own SQLite store, with its tunnel endpoint when it has one. */
  async hub(node: string, extra: readonly string[]): Promise<ApiClient> {
    const db = join(this.state.dir, node, `${node}.db`);
    return this.agent(node, `sqlite:${db}`, extra);
  }

  /** A remote agent joining `hub` with a single-use join token; waits until it registered. */
  async join(hub: ApiClient, node: string, extra: readonly string[]): Promise<ApiClient> {
    const { token } = await hub.createJoinToken({ node, ttlSeconds: 600 });
    const tokenFile = join(this.state.dir, `join-token-${node}`);
    await writeSecretFile(tokenFile, `${token}\n`);
    const credential = join(this.state.dir, node, 'credential');
    const api = await this.agent(node, hub.server, [
      '--join-token-file',
      tokenFile,
      '--credential-file',
      credential,
      ...extra,
    ]);
    const deadline = Date.now() + REGISTER_TIMEOUT_MS;
    while (!(await hub.getNode(node).catch(() => undefined))?.publicKey) {
      if (Date.now() > deadline) {
        throw startError(
          `${node} did not join the hub in time: ${logTail(this.log(`agent-${node}`))}`,
        );
      }
      await sleep(50);
    }
    // Single-use and used: nothing to keep.
    rmSync(tokenFile, { force: true });
    return api;
  }

  /** etcd on loopback with free ports, its data in the lab's directory. */
  async etcd(): Promise<string> {
    const [client, peer] = [await freePort(), await freePort()];
    const clientUrl = `http://127.0.0.1:${client}`;
    const peerUrl = `http://127.0.0.1:${peer}`;
    const dataDir = join(this.state.dir, 'etcd');
    const argv = [
      'etcd',
      ...etcdMemberArgs({
        name: 'lab',
        dataDir,
        clientUrl,
        peerUrl,
        initialCluster: `lab=${peerUrl}`,
      }),
    ];
    const child = await this.start('etcd', 'etcd', argv, cleanEnv());
    this.state.etcd = { url: clientUrl, dataDir };
    this.save();
    const deadline = Date.now() + HEALTH_TIMEOUT_MS;
    for (;;) {
      this.checkAlive(child, 'etcd');
      const res = await fetch(`${clientUrl}/health`, { signal: AbortSignal.timeout(2000) }).catch(
        () => undefined,
      );
      const body = res?.ok ? ((await res.json()) as { health?: string }) : undefined;
      if (body?.health === 'true') return clientUrl;
      if (Date.now() > deadline)
        throw startError(`etcd was not healthy in time: ${logTail(this.log('etcd-etcd'))}`);
      await sleep(100);
    }
  }
}

function startError(reason: string): IpferryError {
  return new IpferryError('IPF_E_LAB_START', { reason });
}

// ---------------------------------------------------------------------------------------------
// Agents per scenario, and what to try next

/** Points the CLI at the lab's hub for the commands that follow (the CLI reads these). */
function cliEnv(agent: LabAgentRecord): string {
  return `export IPFERRY_SERVER=${agent.url} IPFERRY_TOKEN_FILE=${agent.tokenFile}`;
}

/** The pool on the gateway, with its own public address as shared; recorded for the banner. */
async function createPool(b: Builder, api: ApiClient, gateway: string, own: string): Promise<void> {
  const pool = { name: POOL.name, gateway, entries: [POOL.v4, POOL.v6], shared: [own] };
  await api.createPool(pool);
  b.state.agentPool = pool;
  b.save();
}

async function startAgents(b: Builder, request: UpRequest): Promise<void> {
  const tunnel = request.tunnel === 'tinc' ? ['--tunnel-driver', 'tinc'] : [];
  const endpoint = (address: string, port: number): string[] => [
    '--endpoint',
    `${address}:${port}`,
    '--tunnel-port',
    String(port),
  ];
  const clients: ApiClient[] = [];
  try {
    switch (request.scenario) {
      case 'lan': {
        const gw = await b.hub('gw', []);
        clients.push(gw);
        await createPool(b, gw, 'gw', GATEWAY_LAN.gw.uplink.v4);
        return;
      }
      case 'cloud-home': {
        const gw = await b.hub('gw', [
          ...endpoint(CLOUD_HOME.gw.uplink.v4, TUNNEL_PORT),
          ...tunnel,
        ]);
        clients.push(gw);
        // A home server has no public endpoint: it calls the VM and keeps the path open.
        clients.push(
          await b.join(gw, 'home', ['--tunnel-port', String(TUNNEL_PORT + 1), ...tunnel]),
        );
        await createPool(b, gw, 'gw', CLOUD_HOME.gw.uplink.v4);
        return;
      }
      case 'old-new': {
        const old = await b.hub('old', [
          ...endpoint(OLD_NEW.old.uplink.v4, TUNNEL_PORT),
          ...tunnel,
        ]);
        clients.push(old);
        clients.push(
          await b.join(old, 'new', [...endpoint(OLD_NEW.new.v4, TUNNEL_PORT + 1), ...tunnel]),
        );
        await createPool(b, old, 'old', OLD_NEW.old.uplink.v4);
        return;
      }
      case 'fleet': {
        b.progress('starting etcd');
        const store = `etcd:${await b.etcd()}`;
        const nodes = fleetNodes(request.perSite === undefined ? {} : { perSite: request.perSite });
        b.progress(`starting ${nodes.length} agents on etcd`);
        const apis: ApiClient[] = [];
        await inBatches(nodes, START_AT_ONCE, async (n) => {
          apis.push(await b.agent(n.name, store, ['--site', n.site]));
        });
        clients.push(...apis);
        await apis[0]?.setMeshPolicy({
          policy: {
            overlay: FLEET.overlay,
            fleet: { sshAllow: [FLEET.admin.sshAllow] },
            sites: {
              a: { lans: [FLEET.sites.a.private.prefix] },
              b: { lans: [FLEET.sites.b.private.prefix] },
            },
            nodes: {},
          },
        });
        return;
      }
    }
  } finally {
    await Promise.all(clients.map((c) => c.close()));
  }
}

function nextSteps(state: LabState, request: UpRequest): string[] {
  const probe = (from: string, to: string): string =>
    `ipferry lab probe ${state.name} ${from} ${to}`;
  const hub = state.agents[0];
  if (hub === undefined) {
    const [from, to] = WITHOUT_AGENTS[request.scenario];
    return [probe(from, to), probe(to, from)];
  }
  const allocate = `ipferry fip allocate --pool ${POOL.name} --address ${FIP}`;
  const routed = (node: string): string =>
    `ipferry fip associate ${FIP} --mode routed --node ${node} --target ${FIP}`;
  const steps: Record<ScenarioName, string[]> = {
    lan: [
      allocate,
      `ipferry fip associate ${FIP} --target ${GATEWAY_LAN.be1.v4}`,
      probe('client', FIP),
      `ipferry fip move ${FIP} --target ${GATEWAY_LAN.be2.v4}`,
      probe('client', FIP),
    ],
    'cloud-home': [allocate, routed('home'), probe('client', FIP)],
    'old-new': [
      probe('client', FIP),
      allocate,
      routed('new'),
      `ip netns exec ${state.prefix}old ip address del ${FIP}/32 dev lo`,
      probe('client', FIP),
    ],
    fleet: [
      'ipferry node list',
      'ipferry mesh status',
      `${probe('a1', 'OVERLAY')}    # b1's overlay address, from node list`,
    ],
  };
  return [cliEnv(hub), ...steps[request.scenario]];
}

/** The probe `lab up` suggests without agents: a host to another, both ways. */
const WITHOUT_AGENTS: Readonly<Record<ScenarioName, readonly [string, string]>> = {
  lan: ['client', 'be1'],
  'cloud-home': ['client', 'home'],
  'old-new': ['client', 'old'],
  fleet: ['a1', 'b1'],
};

// ---------------------------------------------------------------------------------------------

/**
 * While building, Ctrl-C or SIGTERM removes everything, synchronously (the process ends right
 * after): the processes recorded so far by pid, the namespaces with what runs inside, then the
 * sockets of the wireguard-go daemons that died with them, the directory and the state file.
 */
function interruptCleanup(place: LabPlace, state: LabState): () => void {
  const handler = (sig: NodeJS.Signals): void => {
    killProcessesSync(state.processes.filter((p) => p.kind !== 'builder'));
    for (const host of state.hosts) deleteNamespaceSync(host.namespace);
    for (const name of state.tunnels) {
      rmSync(wireguardSocket(name), { force: true });
    }
    rmSync(state.dir, { recursive: true, force: true });
    rmSync(stateFile(place, state.name), { force: true });
    process.exit(sig === 'SIGINT' ? 130 : 143);
  };
  process.once('SIGINT', handler);
  process.once('SIGTERM', handler);
  return () => {
    process.off('SIGINT', handler);
    process.off('SIGTERM', handler);
  };
}

/** Runs `task` on every item, at most `limit` at a time (node start-ups share two cores). */
async function inBatches<T>(
  items: readonly T[],
  limit: number,
  task: (item: T) => Promise<void>,
): Promise<void> {
  const queue = [...items];
  const worker = async (): Promise<void> => {
    for (let item = queue.shift(); item !== undefined; item = queue.shift()) await task(item);
  };
  const results = await Promise.allSettled(Array.from({ length: limit }, worker));
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
}

/** Builds lab `request.name` and leaves it running; resolves with its state. */
export async function labUp(
  place: LabPlace,
  request: UpRequest,
  progress: Progress,
): Promise<LabState> {
  const existing = (await listLabs(place)).find((l) => l.name === request.name);
  if (existing !== undefined) {
    throw new IpferryError('IPF_E_LAB_EXISTS', {
      name: request.name,
      condition: existing.condition,
    });
  }
  const prefix = labPrefix(place, request.name);
  const p = plan(request, prefix);
  const dir = labDir(place, request.name);
  mkdirSync(join(dir, 'logs'), { recursive: true, mode: 0o700 });
  const builderStart = startTimeOf(process.pid);
  const state: LabState = {
    version: 1,
    name: request.name,
    scenario: request.scenario,
    title: p.title,
    options: {
      agents: request.agents,
      ...(request.tunnel === undefined ? {} : { tunnel: request.tunnel }),
      ...(request.perSite === undefined ? {} : { perSite: request.perSite }),
    },
    prefix,
    dir,
    createdAt: new Date().toISOString(),
    status: 'building',
    hosts: hosts(p, prefix),
    ...(p.pool === undefined ? {} : { pool: p.pool }),
    echo: { ...ECHO_PORTS, hosts: p.echo.map((e) => e.host) },
    processes: [
      {
        kind: 'builder',
        name: 'lab up',
        pid: process.pid,
        ...(builderStart === undefined ? {} : { startTime: builderStart }),
      },
    ],
    agents: [],
    tunnels: [],
    next: [],
  };
  const b = new Builder(place, state, progress);
  // Recorded before anything exists: a run killed from here on is found by `lab down`.
  b.save();
  const removeHandlers = interruptCleanup(place, state);
  let lab: Lab | undefined;
  try {
    progress(`building ${state.hosts.length} namespaces (${prefix}*)`);
    lab = await Lab.create(p.spec);
    await p.apply(lab);
    progress(`starting ${p.echo.length} echo servers`);
    const built = lab;
    await inBatches(p.echo, START_AT_ONCE, (e) => b.echo(built, e));
    if (request.agents) {
      progress('starting agents');
      await startAgents(b, request);
    }
    // The hub first (the printed commands point at it), then in the order of the hosts.
    const order = state.hosts.map((h) => h.name);
    state.agents.sort((x, y) => order.indexOf(x.host) - order.indexOf(y.host));
    state.next = nextSteps(state, request);
    state.status = 'ready';
    state.processes = state.processes.filter((r) => r.kind !== 'builder');
    // From here on the lab outlives this process.
    lab.detach();
    b.save();
    return state;
  } catch (error) {
    progress('failed: removing what was built');
    await lab?.destroy();
    await labDown(place, request.name).catch(() => undefined);
    throw error;
  } finally {
    removeHandlers();
  }
}
