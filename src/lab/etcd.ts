/**
 * Throwaway etcd clusters for tests, the lab and benchmarks: one member or N, all on 127.0.0.1
 * with free ports and their own temporary data directory, so parallel runs never collide and
 * nothing of the machine's own etcd (Debian's etcd.service on 2379) is touched. etcd binds
 * loopback only: it needs no network namespace.
 *
 * Cleanup is layered like the namespace lab's (topology.ts):
 * - `start` stops what it started and removes the data directory when any step fails;
 * - `stop()` ends every member by pid (SIGTERM, then SIGKILL) and removes the data directory;
 * - a process 'exit' / SIGINT / SIGTERM handler SIGKILLs the members of clusters still alive and
 *   removes their directories, so a failed or interrupted test leaves nothing running.
 *
 * `kill(member)` and `restart(member)` make outages; `compact()` drops history so watches from
 * before it fail. Talks to etcd only through its HTTP/JSON gateway (`/health`, `/v3/kv/…`,
 * `/v3/auth/…`), so this module needs no client library.
 *
 * `tls: true` serves clients over https only, with a CA, server and client certificates made by
 * openssl in the cluster's directory (every file 0600) and client certificates required;
 * `auth: true` turns on etcd's authentication with a root user and the user `ipferry`, whose
 * role may read and write the prefix /ipferry. `access` names the files a client needs (the
 * agent's --etcd-* options, `agentFlags`); the gateway calls of this module use them too, and
 * log in as root. Peers talk plain http on loopback: only the client side is under test.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, openSync, readFileSync, rmSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Agent, request, type Dispatcher } from 'undici';
import { opensslCertificate } from './certs.js';
import { freePort } from './ports.js';
import { ExitCleanup } from './exit-cleanup.js';

export interface EtcdClusterOptions {
  /** How many members (default 1). */
  readonly members?: number;
  /** The etcd binary (default `etcd` from PATH: Debian's etcd-server). */
  readonly binary?: string;
  /** How long start and restart wait for the members to be healthy (default 30 s). */
  readonly startTimeoutMs?: number;
  /** More etcd flags for every member (e.g. `--auto-compaction-retention`). */
  readonly extraArgs?: readonly string[];
  /**
   * Serve clients over TLS only (https://), with certificates made for this cluster, and
   * require a client certificate signed by its CA (--client-cert-auth).
   */
  readonly tls?: boolean;
  /** Turn on etcd's authentication: users root and `ipferry` (role: readwrite on /ipferry). */
  readonly auth?: boolean;
}

/**
 * What a client needs to reach a cluster: files, as the agent's --etcd-* options take them.
 * Empty for a plain cluster.
 */
export interface EtcdClientAccess {
  readonly ca?: string;
  readonly cert?: string;
  readonly key?: string;
  readonly user?: string;
  readonly passwordFile?: string;
}

/** The files of a throwaway PKI (makeEtcdPki), every one mode 0600. */
export interface EtcdPki {
  readonly dir: string;
  readonly ca: string;
  readonly caKey: string;
  /** For 127.0.0.1, good for serverAuth and clientAuth (etcd's gateway dials its own member). */
  readonly serverCert: string;
  readonly serverKey: string;
  /** For clientAuth; its common name is ETCD_LAB_USER (etcd takes it as the user name). */
  readonly clientCert: string;
  readonly clientKey: string;
}

/** The user ipferry logs in as when a lab cluster has authentication on. */
export const ETCD_LAB_USER = 'ipferry';
/** The prefix of every key of ipferry's etcd store (DEFAULT_ETCD_NAMESPACE), granted to it. */
const IPFERRY_PREFIX = '/ipferry';
/** The first key after every key that starts with IPFERRY_PREFIX: its range's end. */
const IPFERRY_PREFIX_END = '/ipferrz';

export interface EtcdMember {
  readonly name: string;
  /** `http://127.0.0.1:PORT`: where clients connect. */
  readonly clientUrl: string;
  readonly peerUrl: string;
  readonly dataDir: string;
  /** The member's log (stdout and stderr, appended across restarts). */
  readonly logFile: string;
  /** Pid of the running process, undefined while the member is down. */
  readonly pid: number | undefined;
  readonly running: boolean;
}

const DEFAULT_START_TIMEOUT_MS = 30_000;
const STOP_GRACE_MS = 3_000;
const POLL_MS = 100;
const REQUEST_TIMEOUT_MS = 2_000;

interface MemberState {
  readonly name: string;
  readonly clientUrl: string;
  readonly peerUrl: string;
  readonly dataDir: string;
  readonly logFile: string;
  proc: ChildProcess | undefined;
  exited: Promise<void>;
  /** Why the last spawn failed (no such binary), if it did. */
  spawnError: Error | undefined;
}

// ---------------------------------------------------------------------------------------------
// Clusters still alive in this process, for the synchronous exit / signal cleanup.

/** One member of a new cluster, as the labs and tests start it. */
export interface NewMember {
  readonly name: string;
  readonly dataDir: string;
  readonly clientUrl: string;
  readonly peerUrl: string;
  /** `name=peerUrl,…` of every member. */
  readonly initialCluster: string;
  readonly clusterToken?: string;
  /** Client TLS (clientUrl is https://): server certificate, key and the CA of client certs. */
  readonly tls?: { readonly cert: string; readonly key: string; readonly ca: string };
}

/** etcd's flags for `member` of a new cluster, logging warnings only (without the binary). */
export function etcdMemberArgs(member: NewMember): string[] {
  return [
    '--name',
    member.name,
    '--data-dir',
    member.dataDir,
    '--listen-client-urls',
    member.clientUrl,
    '--advertise-client-urls',
    member.clientUrl,
    '--listen-peer-urls',
    member.peerUrl,
    '--initial-advertise-peer-urls',
    member.peerUrl,
    '--initial-cluster',
    member.initialCluster,
    ...(member.clusterToken !== undefined ? ['--initial-cluster-token', member.clusterToken] : []),
    '--initial-cluster-state',
    'new',
    ...(member.tls
      ? [
          '--cert-file',
          member.tls.cert,
          '--key-file',
          member.tls.key,
          '--trusted-ca-file',
          member.tls.ca,
          '--client-cert-auth',
        ]
      : []),
    '--logger',
    'zap',
    '--log-level',
    'warn',
  ];
}

/** Destroyed on exit and signals while tracked (see exit-cleanup.ts). */
const live = new ExitCleanup<EtcdCluster>();

function running(proc: ChildProcess | undefined): boolean {
  return proc !== undefined && proc.exitCode === null && proc.signalCode === null;
}

/** The environment without ETCD_* variables: etcd reads them as flags and would mix them in. */
export function cleanEnv(): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('ETCD_')));
}

async function getJson(
  dispatcher: Dispatcher,
  url: string,
  body?: unknown,
  token?: string,
): Promise<unknown> {
  const res = await request(url, {
    dispatcher,
    method: body === undefined ? 'GET' : 'POST',
    headers: {
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      ...(token === undefined ? {} : { authorization: token }),
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
  });
  const text = await res.body.text();
  if (res.statusCode >= 300) {
    throw new Error(`${url} answered HTTP ${res.statusCode}: ${text.slice(0, 300)}`);
  }
  return JSON.parse(text) as unknown;
}

/**
 * Makes a CA and, signed by it, a server certificate for 127.0.0.1 and a client certificate
 * named ETCD_LAB_USER, in `dir` (created 0700), with openssl; every file ends up 0600. A second
 * call into another directory makes an unrelated CA: the wrong one, for tests.
 */
export async function makeEtcdPki(dir: string): Promise<EtcdPki> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const path = (name: string): string => join(dir, name);
  const pki: EtcdPki = {
    dir,
    ca: path('ca.crt'),
    caKey: path('ca.key'),
    serverCert: path('server.crt'),
    serverKey: path('server.key'),
    clientCert: path('client.crt'),
    clientKey: path('client.key'),
  };
  // Bare: without openssl.cnf's defaults only the CA is a CA.
  const req = (args: string[]): Promise<void> => opensslCertificate(args, { bare: true });
  const leaf = (usage: string): string[] => [
    '-CA',
    pki.ca,
    '-CAkey',
    pki.caKey,
    '-addext',
    'basicConstraints=critical,CA:FALSE',
    '-addext',
    `extendedKeyUsage=${usage}`,
  ];
  await req([
    ...['-keyout', pki.caKey, '-out', pki.ca, '-subj', '/CN=ipferry-test-ca'],
    ...['-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign'],
  ]);
  await Promise.all([
    req([
      ...['-keyout', pki.serverKey, '-out', pki.serverCert, '-subj', '/CN=etcd'],
      ...['-addext', 'subjectAltName=IP:127.0.0.1'],
      ...leaf('serverAuth,clientAuth'),
    ]),
    req([
      ...['-keyout', pki.clientKey, '-out', pki.clientCert],
      ...['-subj', `/CN=${ETCD_LAB_USER}`],
      ...leaf('clientAuth'),
    ]),
  ]);
  for (const file of await readdir(dir)) await chmod(join(dir, file), 0o600);
  return pki;
}

export class EtcdCluster {
  readonly #members: MemberState[];
  readonly #binary: string;
  readonly #args: readonly string[];
  readonly #startTimeoutMs: number;
  readonly #initialCluster: string;
  readonly #token: string;
  readonly #pki: EtcdPki | undefined;
  readonly #dispatcher: Agent;
  /** root's password and, once logged in, its token for the gateway (auth on). */
  #root: { readonly password: string; token?: string } | undefined;
  #access: EtcdClientAccess = {};
  #stopping: Promise<void> | undefined;

  private constructor(
    readonly dir: string,
    members: MemberState[],
    options: EtcdClusterOptions,
    pki: EtcdPki | undefined,
  ) {
    this.#members = members;
    this.#pki = pki;
    this.#dispatcher = new Agent({
      connect: pki
        ? {
            ca: readFileSync(pki.ca),
            cert: readFileSync(pki.clientCert),
            key: readFileSync(pki.clientKey),
          }
        : {},
    });
    this.#binary = options.binary ?? 'etcd';
    this.#args = options.extraArgs ?? [];
    this.#startTimeoutMs = options.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS;
    this.#initialCluster = members.map((m) => `${m.name}=${m.peerUrl}`).join(',');
    // A cluster token unique to this run: members of another test's cluster that happened to
    // get a recycled port can never join this one.
    this.#token = `ipferry-${randomBytes(6).toString('hex')}`;
  }

  /** Starts the members and waits until every one is healthy (a leader is elected). */
  static async start(options: EtcdClusterOptions = {}): Promise<EtcdCluster> {
    const count = options.members ?? 1;
    if (!Number.isInteger(count) || count < 1 || count > 9) {
      throw new Error(`an etcd cluster has 1 to 9 members, not ${count}`);
    }
    const dir = await mkdtemp(join(tmpdir(), 'ipferry-etcd-'));
    let pki: EtcdPki | undefined;
    try {
      if (options.tls) pki = await makeEtcdPki(join(dir, 'pki'));
    } catch (error) {
      await rm(dir, { recursive: true, force: true });
      throw error;
    }
    const scheme = pki ? 'https' : 'http';
    const members: MemberState[] = [];
    for (let i = 0; i < count; i++) {
      const name = `m${i}`;
      members.push({
        name,
        clientUrl: `${scheme}://127.0.0.1:${await freePort()}`,
        peerUrl: `http://127.0.0.1:${await freePort()}`,
        dataDir: join(dir, name),
        logFile: join(dir, `${name}.log`),
        proc: undefined,
        exited: Promise.resolve(),
        spawnError: undefined,
      });
    }
    const cluster = new EtcdCluster(dir, members, options, pki);
    live.track(cluster);
    try {
      for (const member of members) cluster.#spawn(member);
      await Promise.all(members.map((m) => cluster.#waitHealthy(m)));
      cluster.#access = pki ? { ca: pki.ca, cert: pki.clientCert, key: pki.clientKey } : {};
      if (options.auth) await cluster.#enableAuth();
      return cluster;
    } catch (error) {
      await cluster.stop();
      throw error;
    }
  }

  /** Client URLs of every member, running or not, in member order. */
  get endpoints(): string[] {
    return this.#members.map((m) => m.clientUrl);
  }

  /** The `--store` spec that reaches this cluster: `etcd:URL[,URL…]`. */
  get storeSpec(): string {
    return `etcd:${this.endpoints.join(',')}`;
  }

  /** The files a client of this cluster needs (empty without tls and auth). */
  get access(): EtcdClientAccess {
    return this.#access;
  }

  /** The agent's flags for `access` (`--etcd-ca FILE …`), to append to its command line. */
  get agentFlags(): string[] {
    const a = this.#access;
    return [
      ...(a.ca !== undefined ? ['--etcd-ca', a.ca] : []),
      ...(a.cert !== undefined ? ['--etcd-cert', a.cert] : []),
      ...(a.key !== undefined ? ['--etcd-key', a.key] : []),
      ...(a.user !== undefined ? ['--etcd-user', a.user] : []),
      ...(a.passwordFile !== undefined ? ['--etcd-password-file', a.passwordFile] : []),
    ];
  }

  get members(): EtcdMember[] {
    return this.#members.map((m) => ({
      name: m.name,
      clientUrl: m.clientUrl,
      peerUrl: m.peerUrl,
      dataDir: m.dataDir,
      logFile: m.logFile,
      pid: running(m.proc) ? m.proc?.pid : undefined,
      running: running(m.proc),
    }));
  }

  /** SIGKILLs one member by pid (an outage, not a clean stop) and waits until it has exited. */
  async kill(member: number | string = 0): Promise<void> {
    const m = this.#member(member);
    if (running(m.proc)) m.proc?.kill('SIGKILL');
    await m.exited;
  }

  /** Stops one member cleanly: SIGTERM, SIGKILL after a grace period. */
  async stopMember(member: number | string = 0): Promise<void> {
    const m = this.#member(member);
    await this.#terminate(m);
  }

  /** Starts a stopped member again with its data and ports, and waits until it is healthy. */
  async restart(member: number | string = 0): Promise<void> {
    const m = this.#member(member);
    if (this.#stopping) throw new Error('the etcd cluster is stopped');
    if (running(m.proc)) await this.#terminate(m);
    this.#spawn(m);
    await this.#waitHealthy(m);
  }

  /** The current revision, read from the first running member. */
  async revision(): Promise<number> {
    const answer = (await this.#gateway(this.#anyRunning(), '/v3/kv/range', {
      key: Buffer.from('\0').toString('base64'),
      limit: 1,
    })) as { header?: { revision?: string } };
    const revision = Number(answer.header?.revision);
    if (!Number.isSafeInteger(revision)) throw new Error('etcd answered no revision');
    return revision;
  }

  /**
   * Compacts the history at `revision` (default: the current one): afterwards a watch from
   * below it fails as compacted. Physical: returns once the members have dropped it.
   */
  async compact(revision?: number): Promise<number> {
    const at = revision ?? (await this.revision());
    await this.#gateway(this.#anyRunning(), '/v3/kv/compaction', {
      revision: String(at),
      physical: true,
    });
    return at;
  }

  /** Waits until every running member answers healthy (it has a leader). */
  async waitHealthy(): Promise<void> {
    await Promise.all(
      this.#members.filter((m) => running(m.proc)).map((m) => this.#waitHealthy(m)),
    );
  }

  /** The last `bytes` of a member's log, for a failing test's message. */
  logTail(member: number | string = 0, bytes = 4000): string {
    try {
      return readFileSync(this.#member(member).logFile, 'utf8').slice(-bytes);
    } catch {
      return '';
    }
  }

  /** Stops every member (SIGTERM, then SIGKILL) and removes the data directory. Idempotent. */
  stop(): Promise<void> {
    this.#stopping ??= (async () => {
      try {
        await Promise.all(this.#members.map((m) => this.#terminate(m)));
      } finally {
        await this.#dispatcher.close().catch(() => undefined);
        await rm(this.dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 50 });
        live.untrack(this);
      }
    })();
    return this.#stopping;
  }

  /** The synchronous twin of stop(), for process 'exit' and signal handlers. */
  destroySync(): void {
    for (const m of this.#members) {
      if (running(m.proc)) {
        try {
          m.proc?.kill('SIGKILL');
        } catch {
          // Already gone.
        }
      }
    }
    try {
      // Retries: a member just sent SIGKILL may still be writing for a moment.
      rmSync(this.dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 50 });
    } catch {
      // Nothing more can be done while the process exits.
    }
    live.untrack(this);
  }

  // --- internals -----------------------------------------------------------------------------

  #member(member: number | string): MemberState {
    const m =
      typeof member === 'number'
        ? this.#members[member]
        : this.#members.find((x) => x.name === member);
    if (!m) throw new Error(`no etcd member ${String(member)}`);
    return m;
  }

  #anyRunning(): MemberState {
    const m = this.#members.find((x) => running(x.proc));
    if (!m) throw new Error('no etcd member is running');
    return m;
  }

  /**
   * A call to a member's gateway, logged in as root once authentication is on. A token etcd no
   * longer knows (it keeps simple tokens in memory only: a restarted member forgets them) is
   * replaced by a fresh login.
   */
  async #gateway(m: MemberState, path: string, body: unknown): Promise<unknown> {
    const url = `${m.clientUrl}${path}`;
    if (!this.#root) return getJson(this.#dispatcher, url, body);
    for (let attempt = 1; ; attempt++) {
      this.#root.token ??= await this.#login(m);
      try {
        return await getJson(this.#dispatcher, url, body, this.#root.token);
      } catch (error) {
        if (attempt >= 2 || !/invalid auth token/.test((error as Error).message)) throw error;
        this.#root.token = undefined;
      }
    }
  }

  async #login(m: MemberState): Promise<string> {
    const answer = (await getJson(this.#dispatcher, `${m.clientUrl}/v3/auth/authenticate`, {
      name: 'root',
      password: this.#root?.password,
    })) as { token?: string };
    if (typeof answer.token !== 'string')
      throw new Error('etcd answered the root login without a token');
    return answer.token;
  }

  /**
   * Users root (role root) and `ipferry` (role `ipferry`: readwrite on every key starting with
   * /ipferry), each with a random password, then authentication on. ipferry's password goes to
   * a 0600 file in the PKI's (or the cluster's) directory: `access.passwordFile`.
   */
  async #enableAuth(): Promise<void> {
    const m = this.#anyRunning();
    const call = (path: string, body: unknown): Promise<unknown> =>
      getJson(this.#dispatcher, `${m.clientUrl}/v3/auth/${path}`, body);
    const b64 = (text: string): string => Buffer.from(text).toString('base64');
    const rootPassword = randomBytes(18).toString('base64url');
    const password = randomBytes(18).toString('base64url');
    await call('user/add', { name: 'root', password: rootPassword });
    await call('user/grant', { user: 'root', role: 'root' });
    await call('role/add', { name: ETCD_LAB_USER });
    await call('role/grant', {
      name: ETCD_LAB_USER,
      perm: {
        permType: 'READWRITE',
        key: b64(IPFERRY_PREFIX),
        range_end: b64(IPFERRY_PREFIX_END),
      },
    });
    await call('user/add', { name: ETCD_LAB_USER, password });
    await call('user/grant', { user: ETCD_LAB_USER, role: ETCD_LAB_USER });
    await call('enable', {});
    this.#root = { password: rootPassword };
    const passwordFile = join(this.#pki?.dir ?? this.dir, `${ETCD_LAB_USER}.password`);
    await writeFile(passwordFile, `${password}\n`, { mode: 0o600 });
    await chmod(passwordFile, 0o600);
    this.#access = { ...this.#access, user: ETCD_LAB_USER, passwordFile };
  }

  #spawn(m: MemberState): void {
    const pki = this.#pki;
    const args = [
      ...etcdMemberArgs({
        name: m.name,
        dataDir: m.dataDir,
        clientUrl: m.clientUrl,
        peerUrl: m.peerUrl,
        initialCluster: this.#initialCluster,
        clusterToken: this.#token,
        ...(pki ? { tls: { cert: pki.serverCert, key: pki.serverKey, ca: pki.ca } } : {}),
      }),
      ...this.#args,
    ];
    const fd = openSync(m.logFile, 'a');
    let proc: ChildProcess;
    try {
      proc = spawn(this.#binary, args, { stdio: ['ignore', fd, fd], env: cleanEnv() });
    } finally {
      closeSync(fd); // the child has its own copy
    }
    m.proc = proc;
    m.spawnError = undefined;
    m.exited = new Promise((resolve) => {
      proc.once('exit', () => resolve());
      // A binary that cannot be started emits 'error' and never 'exit'.
      proc.once('error', (error) => {
        m.spawnError = error;
        resolve();
      });
    });
  }

  async #terminate(m: MemberState): Promise<void> {
    const proc = m.proc;
    if (proc && running(proc)) {
      proc.kill('SIGTERM');
      const timer = setTimeout(() => {
        if (running(proc)) proc.kill('SIGKILL');
      }, STOP_GRACE_MS);
      await m.exited;
      clearTimeout(timer);
    }
    await m.exited;
  }

  async #waitHealthy(m: MemberState): Promise<void> {
    const deadline = Date.now() + this.#startTimeoutMs;
    for (;;) {
      if (m.spawnError) {
        throw new Error(
          `etcd member ${m.name} did not start (is etcd-server installed?): ${m.spawnError.message}`,
        );
      }
      if (!running(m.proc)) {
        const proc = m.proc;
        const code = proc?.exitCode ?? null;
        const how = code !== null ? `with ${code}` : `by ${proc?.signalCode ?? 'a signal'}`;
        throw new Error(
          `etcd member ${m.name} exited ${how} before it was healthy (is etcd-server installed?):\n${this.logTail(m.name)}`,
        );
      }
      const health = (await getJson(this.#dispatcher, `${m.clientUrl}/health`).catch(
        () => undefined,
      )) as { health?: string } | undefined;
      if (health?.health === 'true') return;
      if (Date.now() > deadline) {
        throw new Error(
          `etcd member ${m.name} at ${m.clientUrl} was not healthy within ${this.#startTimeoutMs} ms:\n${this.logTail(m.name)}`,
        );
      }
      await sleep(POLL_MS);
    }
  }
}

/** Starts a throwaway etcd cluster (one member by default); see EtcdCluster. */
export function startEtcd(options: EtcdClusterOptions = {}): Promise<EtcdCluster> {
  return EtcdCluster.start(options);
}
