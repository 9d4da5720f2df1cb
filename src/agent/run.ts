/**
 * Starts and stops one agent: store, node registration with a liveness lease, the reconcile
 * loop and the API. Stopping never touches the dataplane: what the kernel holds keeps
 * forwarding while the agent is down, and the next start reconciles from it.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { networkInterfaces } from 'node:os';
import type { FastifyInstance } from 'fastify';
import { IpferryError, isIpferryError } from '../core/errors.js';
import { keys } from '../core/keys.js';
import { stringifyStored } from '../core/json.js';
import type {
  Neighbour,
  NodeHealth,
  NodeLiveness,
  PathProbe,
  TunnelHealth,
} from '../core/model.js';
import { buildApi } from '../api/app.js';
import { TokenSet } from '../api/auth.js';
import { auditTrail } from '../api/events.js';
import { buildFloaterRest, type FloaterGuard } from '../api/ipfloater-rest.js';
import { FloaterXmlRpc } from '../api/ipfloater-xmlrpc.js';
import { prefixRange, tryParsePrefix } from '../core/address.js';
import { IpFloaterService } from '../service/ipfloater.js';
import type { Dataplane } from '../dataplane/dataplane.js';
import type { HostFacts } from '../intent/facts.js';
import { readNeighbours } from '../dataplane/iproute/neighbours.js';
import { FakeDataplane } from '../dataplane/fake.js';
import { LinuxDataplane } from '../dataplane/linux.js';
import type { TunnelLogger } from '../dataplane/tunnel/driver.js';
import { ControlPlane } from '../service/control.js';
import { openStore } from '../store/open.js';
import type { Store } from '../store/store.js';
import { VERSION } from '../version.js';
import {
  type AgentConfig,
  type IpFloaterConfig,
  isLoopbackHost,
  readEtcdAccess,
} from './config.js';
import { coalesced } from './coalesce.js';
import { followPassWants } from './pass-wants.js';
import { storeAccess } from './credential.js';
import { Reconciler } from './reconcile.js';
import { PathMonitor } from './path-monitor.js';
import { TunnelWatch } from './tunnelwatch.js';
import { defaultLogFormat, logStream } from './log.js';
import { AgentMetrics } from './metrics.js';
import { ensureTokenFile, readSecretFile } from './secrets.js';

export interface RunningAgent {
  readonly url: string;
  readonly control: ControlPlane;
  readonly reconciler: Reconciler;
  readonly dataplane: Dataplane;
  readonly app: FastifyInstance;
  /** Where IP Floater's APIs listen, when served. */
  readonly ipfloater?: { readonly rest?: string; readonly xmlrpc?: string };
  stop(): Promise<void>;
}

const LEASE_TTL_SECONDS = 15;
/** The least time between two health reports: asks and beats in a burst make one write. */
const HEALTH_SPACING_MS = 250;

export interface AgentOptions {
  readonly dataplane?: Dataplane;
  /**
   * Where `arp MAC` looks after the pools' MAC pins. Default: this host's neighbour table
   * (`ip -j neigh`, read-only), also while the dataplane is the fake.
   */
  readonly neighbours?: () => Promise<Neighbour[]>;
  /** Where the log goes instead of stderr (as JSON or human lines, per config.logFormat). */
  readonly logTo?: NodeJS.WritableStream & { readonly isTTY?: boolean };
}

export async function startAgent(
  config: AgentConfig,
  options: AgentOptions = {},
): Promise<RunningAgent> {
  const tls = config.tls ? await readTls(config.tls) : undefined;
  const tokenFile = await ensureTokenFile(config.tokenFile);
  const tokens = TokenSet.parse(tokenFile.text, config.tokenFile);
  const hub = await storeAccess(config);
  const store = await openStore(config.store, { ...hub.access, ...(await readEtcdAccess(config)) });
  // The API's logger is made with the API, after the dataplane: until then the drivers' lines
  // (a key pair made, a daemon started) wait here.
  const driverLog = new DeferredLog();
  const dataplane = options.dataplane ?? (await dataplaneFor(config, driverLog));
  const control = new ControlPlane(store);
  const stops: (() => Promise<void>)[] = [() => store.close()];
  try {
    const publicKey = await dataplane.tunnelPublicKey();
    await control.registerNode({
      name: config.node,
      ...(config.site ? { site: config.site } : {}),
      ...(publicKey ? { publicKey } : {}),
      ...(publicKey && config.tunnelDriver !== 'wireguard'
        ? { tunnelDriver: config.tunnelDriver }
        : {}),
      ...(config.endpoint ? { endpoint: config.endpoint } : {}),
      // Its gateway masquerades what it sends through the tunnel only when it says so here.
      ...(config.egress !== 'own' ? { egress: config.egress } : {}),
      addresses: await registeredAddresses(dataplane),
      reservedPorts: config.reservedPorts,
      agentVersion: VERSION,
    });
    // The monitor needs the API's logger, the liveness beat starts first: it finds it here.
    const probing: { monitor?: PathMonitor; reconciler?: Reconciler; watch?: TunnelWatch } = {};
    const liveness = await keepAlive(store, config.node, async () => {
      const probed = withProbes(await dataplane.tunnelHealth(), probing.monitor?.probes());
      const restore = probing.watch?.restore();
      const tunnel = probed && restore ? { ...probed, restore } : probed;
      const mesh = probing.reconciler?.meshReport();
      const pass = probing.reconciler?.lastPass;
      return {
        ...(tunnel ? { tunnel } : {}),
        ...(mesh ? { mesh } : {}),
        ...(pass ? { pass } : {}),
      };
    });
    stops.unshift(liveness.stop);
    const metrics = new AgentMetrics({
      node: config.node,
      version: VERSION,
      dataplane: dataplane.kind,
    });
    const app = await buildApi({
      control,
      tokens,
      logger: {
        level: config.logLevel,
        redact: ['req.headers.authorization'],
        stream: logStream(
          config.logFormat ?? defaultLogFormat(options.logTo ?? process.stderr),
          options.logTo ?? process.stderr,
        ),
      },
      // A line per request drowns the changes at info (Prometheus alone scrapes every few s).
      requestLog: config.logLevel === 'debug',
      metrics: () => metrics.exposition(),
      ...(tls ? { https: tls } : {}),
      agent: {
        node: config.node,
        version: VERSION,
        dataplane: () => ({
          kind: dataplane.kind,
          ...(reconciler.lastApply ? { lastApply: reconciler.lastApply } : {}),
          ...(reconciler.lastError ? { lastError: reconciler.lastError } : {}),
          ...(reconciler.realisedRevision !== undefined
            ? { realisedRevision: reconciler.realisedRevision }
            : {}),
          ...(reconciler.skipped.length > 0 ? { skippedRecords: reconciler.skipped } : {}),
        }),
        plan: () => reconciler.plan(),
        neighbours: options.neighbours ?? (() => readNeighbours(config.netns)),
        ...(dataplane.fipCounters ? { fipCounters: () => dataplane.fipCounters!() } : {}),
      },
    });
    driverLog.attach(app.log);
    const paths = new PathMonitor({
      dataplane,
      log: app.log,
      intervalMs: config.probeSeconds * 1000,
      onChange: () => reconciler.kick(),
      ...(dataplane.kind === 'linux' ? { stateFile: join(config.stateDir, 'path-mtu.json') } : {}),
    });
    await paths.load();
    probing.monitor = paths;
    // A tunnel daemon that crashed or lost its device is found and restored within one interval.
    const watch = new TunnelWatch({
      dataplane,
      log: app.log,
      intervalMs: config.probeSeconds * 1000,
      resync: (): Promise<void> => reconciler.resync(),
      onChange: () => reconciler.kick(),
    });
    probing.watch = watch;
    // A pass is reported when a waiting write asks for it, not after every pass (pass-wants.ts).
    const passWants = await followPassWants({
      store,
      node: config.node,
      lastPass: () => probing.reconciler?.lastPass,
      report: liveness.refresh,
    });
    stops.unshift(() => Promise.resolve(passWants.stop()));
    const reconciler = new Reconciler({
      node: config.node,
      store,
      control,
      dataplane,
      resyncMs: config.resyncSeconds * 1000,
      log: app.log,
      tunnel: {
        listenPort: config.tunnelPort,
        ...(config.underlayMtu !== undefined ? { underlayMtu: config.underlayMtu } : {}),
        ...(config.tunnelMtu ? { mtu: config.tunnelMtu } : {}),
        ...(config.netns ? { salt: config.netns } : {}),
        ...(config.tunnelDriver !== 'wireguard' ? { driver: config.tunnelDriver } : {}),
        ...(config.egress !== 'own' ? { egress: config.egress } : {}),
      },
      paths,
      tunnelWatch: watch,
      metrics,
      onPass: () => passWants.afterPass(),
      // A node credential (a remote agent's) may not write the policy: its hub's agent does.
      writesMeshRollback: hub.access.credential === undefined,
      alwaysOpen: [
        `udp/${config.tunnelPort}`,
        // Agents joining this one as their hub are no mesh members before they have joined.
        ...(isLoopbackHost(config.listen.host) ? [] : [`tcp/${config.listen.port}`]),
        // IP Floater's clients (hypervisors, its CLI) are no mesh members: its own guard applies.
        ...[config.ipfloater?.rest, config.ipfloater?.xmlrpc].flatMap((l) =>
          l && !isLoopbackHost(l.host) ? [`tcp/${l.port}`] : [],
        ),
      ],
    });
    probing.reconciler = reconciler;
    metrics.attach({
      ...(dataplane.fipCounters ? { fipCounters: () => dataplane.fipCounters!() } : {}),
      tunnelHealth: () => dataplane.tunnelHealth(),
      probes: () => paths.probes(),
      peerNodes: () => reconciler.peerNodes(),
      fipStates: () => reconciler.fipStates(),
      revisions: () => reconciler.revisions(),
      meshReport: () => reconciler.meshReport(),
      tunnelIncidents: () => watch.incidents(),
    });
    stops.unshift(
      () => app.close(),
      () => paths.stop(),
      () => watch.stop(),
      () => reconciler.stop(),
    );
    if (tokenFile.created) app.log.info({ tokenFile: config.tokenFile }, 'created API token file');
    if (hub.joined) app.log.info({ credentialFile: config.credentialFile }, 'joined the hub');
    await reconciler.start();
    paths.start();
    watch.start();
    const floater = config.ipfloater
      ? await serveIpFloater(config.ipfloater, control, tokens, app)
      : undefined;
    if (floater) stops.unshift(floater.stop);
    const address = await app.listen({ host: config.listen.host, port: config.listen.port });
    app.log.info(
      { node: config.node, store: store.kind, dataplane: dataplane.kind, egress: config.egress },
      `ipferry agent ${VERSION} listening on ${address}`,
    );
    return {
      url: address,
      control,
      reconciler,
      dataplane,
      app,
      ...(floater ? { ipfloater: floater.urls } : {}),
      stop: () => runAll(stops),
    };
  } catch (e) {
    await runAll(stops);
    throw e;
  }
}

/**
 * IP Floater's REST and XML-RPC servers over this agent's control plane; resolves with where
 * they listen and what stops them. A server that cannot listen stops the other and fails the start.
 */
async function serveIpFloater(
  config: IpFloaterConfig,
  control: ControlPlane,
  tokens: TokenSet,
  app: FastifyInstance,
): Promise<{ urls: { rest?: string; xmlrpc?: string }; stop: () => Promise<void> }> {
  const service = new IpFloaterService(control, { pools: config.pools });
  const trail = auditTrail(control.store, app.log.child({ api: 'ipfloater' }));
  const guard: FloaterGuard = {
    ...(config.allow
      ? {
          allow: config.allow.flatMap((c) => {
            const prefix = tryParsePrefix(c, false);
            return prefix ? [prefixRange(prefix)] : [];
          }),
        }
      : {}),
    ...(config.auth === 'token' ? { tokens } : {}),
  };
  const stops: (() => Promise<void>)[] = [];
  const urls: { rest?: string; xmlrpc?: string } = {};
  try {
    if (config.rest) {
      const rest = buildFloaterRest({
        service,
        guard,
        trail,
        logger: app.log.child({ api: 'ipfloater-rest' }),
      });
      stops.push(() => rest.close());
      const url = await rest.listen({ host: config.rest.host, port: config.rest.port });
      urls.rest = url;
      app.log.info({ pools: config.pools, auth: config.auth }, `IP Floater REST API on ${url}`);
    }
    if (config.xmlrpc) {
      const rpc = new FloaterXmlRpc({ service, guard, trail });
      stops.push(() => rpc.close());
      const url = await rpc.listen(config.xmlrpc.host, config.xmlrpc.port);
      urls.xmlrpc = url;
      app.log.info({ pools: config.pools, auth: config.auth }, `IP Floater XML-RPC API on ${url}`);
    }
  } catch (e) {
    await runAll(stops);
    throw e;
  }
  return { urls, stop: () => runAll(stops) };
}

/** The tunnel's health with what the active probes found, per peer. */
function withProbes(
  health: TunnelHealth | undefined,
  probes: ReadonlyMap<string, PathProbe> | undefined,
): TunnelHealth | undefined {
  if (!health || !probes || probes.size === 0) return health;
  return {
    ...health,
    peers: health.peers.map((p) => {
      const probe = probes.get(p.publicKey);
      return probe ? { ...p, probe } : p;
    }),
  };
}

/**
 * Keeps the node alive under a lease: `alive/NODE` (membership) is written once per lease, and
 * the health report (`keys.nodeHealth`: the tunnel's health, the mesh as applied) rewritten on a
 * beat only when it changed, and when a waiting write asks for this node's latest pass
 * (`refresh`, pass-wants.ts). Every agent watches the tree `alive/` is in, so rewriting it on
 * every beat would wake the whole fleet N times per beat for nothing; the health report lives
 * outside that tree, and `node show` on any agent still tells how each node's tunnel is doing.
 * The report is not under the lease: readers show it only while the node is alive, and when the
 * agent dies it stays as the last word of the node (the mesh audit names the revision a dead
 * node last applied); `node remove` deletes it. If the lease is lost (store outage), takes a new
 * one and writes both.
 */
async function keepAlive(
  store: Store,
  node: string,
  health: () => Promise<Pick<NodeHealth, 'tunnel' | 'mesh' | 'pass'>>,
): Promise<{ stop: () => Promise<void>; refresh: () => void }> {
  const liveness: NodeLiveness = { name: node, since: new Date().toISOString(), pid: process.pid };
  /** The report last written, without its timestamp, to tell whether it changed. */
  let written: string | undefined;
  const report = async (): Promise<{ text: string; value: string }> => {
    const r = await health().catch(() => ({}));
    const text = JSON.stringify(r);
    const value = stringifyStored({
      name: node,
      ...r,
      updatedAt: new Date().toISOString(),
    } satisfies NodeHealth);
    return { text, value };
  };
  /** A failed write is tried again on the next request (`written` is still the old report). */
  const write = async (): Promise<boolean> => {
    const { text, value } = await report();
    if (text === written) return false;
    await store.txn({
      compare: [],
      success: [{ type: 'put', key: keys.nodeHealth(node), value }],
    });
    written = text;
    return true;
  };
  // One write at a time, with the report as it is then, at most once per HEALTH_SPACING_MS.
  const reporter = coalesced(write, HEALTH_SPACING_MS);
  // Membership first, on its own: a hub that refuses the health report (an older one) must
  // still see the node alive.
  const join = async (): Promise<string> => {
    const lease = await store.grantLease(LEASE_TTL_SECONDS);
    await store.txn({
      compare: [],
      success: [
        { type: 'put', key: keys.nodeAlive(node), value: stringifyStored(liveness), lease },
      ],
    });
    written = undefined; // write it again with the new lease: the store may have lost it too
    reporter.request();
    await reporter.settled();
    return lease;
  };
  let lease = await join();
  let busy = false;
  const timer = setInterval(
    () => {
      if (busy) return;
      busy = true;
      store
        .keepAlive(lease)
        .then(
          () => reporter.request(),
          async () => {
            lease = await join();
          },
        )
        .catch(() => undefined)
        .finally(() => {
          busy = false;
        });
    },
    (LEASE_TTL_SECONDS * 1000) / 3,
  );
  timer.unref();
  return {
    stop: async () => {
      clearInterval(timer);
      reporter.stop();
      await store.revokeLease(lease).catch(() => undefined);
    },
    refresh: () => reporter.request(),
  };
}

/** A logger that holds what it is told until the real one is attached, then forwards. */
class DeferredLog implements TunnelLogger {
  private target?: TunnelLogger;
  private readonly held: { level: 'info' | 'warn'; obj: object; msg?: string }[] = [];

  attach(target: TunnelLogger): void {
    this.target = target;
    for (const { level, obj, msg } of this.held.splice(0)) target[level](obj, msg);
  }

  info(obj: object, msg?: string): void {
    this.write('info', obj, msg);
  }

  warn(obj: object, msg?: string): void {
    this.write('warn', obj, msg);
  }

  private write(level: 'info' | 'warn', obj: object, msg?: string): void {
    if (this.target) this.target[level](obj, msg);
    else if (this.held.length < 100) this.held.push({ level, obj, ...(msg ? { msg } : {}) });
  }
}

async function dataplaneFor(config: AgentConfig, log: TunnelLogger): Promise<Dataplane> {
  if (config.dataplane === 'fake') return new FakeDataplane();
  const linux = new LinuxDataplane({
    ...(config.netns ? { netns: config.netns } : {}),
    stateDir: config.stateDir,
    tunnelDriver: config.tunnelDriver,
    node: config.node,
    log,
  });
  await linux.check();
  return linux;
}

async function readTls(
  tls: NonNullable<AgentConfig['tls']>,
): Promise<{ cert: Buffer; key: Buffer }> {
  try {
    // The key is a secret like the token file: refused when anyone but the owner can read it.
    const [cert, key] = await Promise.all([readFile(tls.cert), readSecretFile(tls.key)]);
    return { cert, key: Buffer.from(key) };
  } catch (e) {
    if (isIpferryError(e)) throw e;
    throw new IpferryError('IPF_E_TLS', {
      reason: `cannot read ${(e as NodeJS.ErrnoException).path ?? 'file'} (${(e as NodeJS.ErrnoException).code ?? 'error'})`,
    });
  }
}

/**
 * The addresses the node registers: its dataplane's host's — its namespace when it acts in one
 * (labs) — else this machine's. A fake dataplane that names its host's addresses stands for a
 * host of its own (tests, and the fleet benchmark's hundreds of agents in one process).
 */
async function registeredAddresses(dataplane: Dataplane): Promise<string[]> {
  if (dataplane.kind === 'linux') return ownAddresses(await dataplane.facts());
  const facts = await dataplane.facts();
  return facts.addresses.length > 0 ? ownAddresses(facts) : hostAddresses();
}

function ownAddresses(facts: HostFacts): string[] {
  return facts.addresses.filter((a) => a !== '127.0.0.1' && a !== '::1' && !a.startsWith('fe80'));
}

function hostAddresses(): string[] {
  return Object.values(networkInterfaces())
    .flat()
    .filter((i): i is NonNullable<typeof i> => !!i && !i.internal && !i.address.startsWith('fe80'))
    .map((i) => i.address)
    .sort();
}

async function runAll(steps: readonly (() => Promise<void>)[]): Promise<void> {
  for (const step of steps) {
    try {
      await step();
    } catch {
      // keep stopping the rest
    }
  }
}
