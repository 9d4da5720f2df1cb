/**
 * The demo (`bash scripts/demo.sh`): ipferry's main job on a real kernel, in throwaway labs of
 * network namespaces. Part 1 builds `gatewayLan()` (an outside client, the provider's router,
 * the gateway, two LAN backends and a LAN client), starts a real `ipferry agent` whose Linux
 * dataplane acts inside the gateway's namespace, walks floating IPs through their life with the
 * real CLI and, between the commands, probes from the lab's hosts and says in plain words what
 * answered and which address it saw; a FIP moves between LAN backends under a probe every 10 ms.
 * Part 2 builds a second lab, `cloudHome({homes: 2})` (a small cloud VM as the public router of
 * two home servers behind their own ISP), joins an agent on the home server to the cloud VM's
 * agent with a join token, and serves a floating IP from home through a WireGuard tunnel (routed
 * mode), while home's own address keeps using its own ISP. Then the server moves: a second
 * server, home2, joins the same way and the FIP moves to it under a probe every 10 ms, the
 * measured interruption printed — the tunnel to the new place is built during the move.
 *
 * Nothing outside the labs is touched: the agents' APIs listen on loopback, their state lives in
 * a temporary directory, and the kernels they change are the lab namespaces'. Everything is
 * removed at the end — agents and the wireguard-go daemons they started (by pid), namespaces,
 * directory — also when a step fails or on Ctrl-C. `runDemo()` resolves with the outcome; run as
 * a program it exits non-zero on failure.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { readFileSync, realpathSync, rmSync } from 'node:fs';
import { mkdir, mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { ROUTE_PROTO, ROUTE_TABLE } from '../core/names.js';
import { randomPrefix } from './netns.js';
import {
  echoProbe,
  type EchoReply,
  type EchoServer,
  outboundProbe,
  type Protocol,
  startEchoServer,
} from './probe.js';
import { CLOUD_HOME as H, cloudHome, GATEWAY_LAN as L, gatewayLan } from './scenarios.js';
import { Lab } from './topology.js';
import {
  IPFERRY_BIN,
  type LabAgentOptions,
  spawnLabAgent,
  stopLabAgent,
  waitHealthy,
  writeSecretFile,
} from './agents.js';
import { freePort } from './ports.js';

const FIP = '203.0.113.10';
const FIP6 = '2001:db8:f::10';
/** The gateway's own uplink address, shared: port forwards only, its own services stay. */
const SHARED = L.gw.uplink.v4;

export interface DemoOptions {
  /** Where each output line goes (default: stdout). */
  readonly out?: (line: string) => void;
  /** Bold headers and coloured marks (default: when writing to stdout and it is a TTY). */
  readonly color?: boolean;
  /**
   * Namespace prefix of the first lab (default: a fresh `ipft-demo-xxxxxx-`); the second lab's
   * is this prefix followed by `2-`, so one sweep by `prefix` covers both.
   */
  readonly prefix?: string;
}

export interface DemoResult {
  readonly ok: boolean;
  /** Steps that passed, and how many there are (teardown included). */
  readonly passed: number;
  readonly steps: number;
  /** The failed step and why, when one failed. */
  readonly failure?: { readonly step: string; readonly error: string };
  /** What the probes saw while the FIP moved from be1 to be2 (part 1, 1:1 NAT on the LAN). */
  readonly move?: MoveMeasurement;
  /** What the probes saw while the routed FIP moved from home to home2 (part 2, over tunnels). */
  readonly remoteMove?: MoveMeasurement;
  /** The labs' namespace prefixes and the processes started, so a caller can check they are gone. */
  readonly prefix: string;
  /** The second lab's (cloudHome), inside `prefix`. */
  readonly homePrefix: string;
  /** The first lab's agent. */
  readonly agentPid?: number;
  /** Every agent started, the first lab's first. */
  readonly agentPids: readonly number[];
  /** The wireguard-go daemons the second lab's agents started, found and stopped at teardown. */
  readonly wireguard: readonly WireguardDaemon[];
}

/** A wireguard-go process in a lab namespace: it outlives the agent that started it. */
export interface WireguardDaemon {
  readonly pid: number;
  /** Its interface (`ipf…`); its control socket is /var/run/wireguard/NAME.sock. */
  readonly name: string;
  readonly ns: string;
}

export interface MoveMeasurement {
  readonly address: string;
  /** The echo servers (lab hosts) answering before and after the move. */
  readonly from: string;
  readonly to: string;
  readonly probes: number;
  readonly byFrom: number;
  readonly byTo: number;
  /** Probes that got no answer (refused or timed out). */
  readonly failed: number;
  /**
   * Time to the first answer of `to` from `ipferry fip move` being started (Node start-up
   * included), and from the API's response reaching the CLI (negative: `to` answered first).
   */
  readonly sinceSentMs: number;
  readonly sinceReturnedMs: number;
  /** How far apart the last probe `from` answered and the first `to` answered were started. */
  readonly switchWindowMs: number;
  /**
   * The interruption: from the last answer of `from` to the first answer of `to` (by the time
   * each answer arrived; 0 when they overlapped).
   */
  readonly gapMs: number;
  /** Probes started after the first answer of `to` had arrived that `from` still answered. */
  readonly lateFrom: number;
}

/** A step's check that did not hold: reported as the step's failure. */
class DemoFailure extends Error {}

function check(condition: unknown, message: string): asserts condition {
  if (!condition) throw new DemoFailure(message);
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** `address:port`, with IPv6 in brackets. */
function hostPort(address: string, port: number): string {
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
}

/** An argument as a person would type it in a shell. */
function shellWord(arg: string): string {
  return /^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, `'\\''`)}'`;
}

interface CliResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
  /** When its first output arrived (performance.now()): the API's response reached the CLI. */
  readonly firstOutputAt: number;
}

/** Runs the CLI, capturing its output; bounded (killed after `timeoutMs`). */
function runCli(
  args: readonly string[],
  env: NodeJS.ProcessEnv,
  timeoutMs = 20_000,
): Promise<CliResult> {
  return new Promise((resolve) => {
    const child = spawn(IPFERRY_BIN, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let firstOutputAt = NaN;
    const arrived = (): void => {
      if (Number.isNaN(firstOutputAt)) firstOutputAt = performance.now();
    };
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      arrived();
      stdout += chunk;
    });
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      arrived();
      stderr += chunk;
    });
    const timer = setTimeout(() => {
      stderr += `(killed after ${timeoutMs} ms)\n`;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.once('error', (error) => {
      clearTimeout(timer);
      resolve({ code: 127, stdout, stderr: `${stderr}${error.message}\n`, firstOutputAt });
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? 1, stdout, stderr, firstOutputAt });
    });
  });
}

interface FipJson {
  revision?: number;
  status?: { state?: string; stale?: boolean; revision?: number; message?: string };
}

/** The lab hosts' own addresses, to name them in sentences. */
const HOST_ADDRESS: Record<string, { v4: string; v6: string }> = {
  client: L.client,
  be1: L.be1,
  be2: L.be2,
  lanc: L.lanc,
  home: H.home,
  home2: H.home2,
};

/** The UDP ports of the tunnel ends in the second lab (each in its own namespace). */
const GW_TUNNEL_PORT = 51820;
const HOME_TUNNEL_PORTS = { home: 51821, home2: 51822 } as const;
type Home = keyof typeof HOME_TUNNEL_PORTS;

/** Builds the lab, runs every step, always tears down; resolves with the outcome. */
export async function runDemo(options: DemoOptions = {}): Promise<DemoResult> {
  const out = options.out ?? ((line: string) => process.stdout.write(`${line}\n`));
  const color = options.color ?? (options.out === undefined && process.stdout.isTTY === true);
  const paint =
    (code: string) =>
    (text: string): string =>
      color ? `\u001b[${code}m${text}\u001b[0m` : text;
  const bold = paint('1');
  const green = paint('32');
  const red = paint('31');
  const dim = paint('2');
  const prefix = options.prefix ?? randomPrefix('ipft-demo-');
  const homePrefix = `${prefix}2-`;

  let lab: Lab | undefined;
  /** The second lab, cloudHome. */
  let homeLab: Lab | undefined;
  /** Every agent started, in order: the first lab's gw, then the cloud VM gw, home and home2. */
  const agents: { label: string; proc: ChildProcess; log: string }[] = [];
  /** The wireguard-go daemons seen in the second lab (while the FIP was routed, and at teardown). */
  const wireguard: WireguardDaemon[] = [];
  const sawDaemons = (daemons: readonly WireguardDaemon[]): void => {
    for (const d of daemons) if (!wireguard.some((w) => w.pid === d.pid)) wireguard.push(d);
  };
  let workDir: string | undefined;
  let env: NodeJS.ProcessEnv = {};
  let clientServer: EchoServer | undefined;
  let homeClientServer: EchoServer | undefined;
  let move: MoveMeasurement | undefined;
  let remoteMove: MoveMeasurement | undefined;
  const startedAt = performance.now();

  // Ctrl-C / SIGTERM: the Lab deletes its namespaces in its own handler too; the agents, the
  // wireguard-go daemons' sockets and the directory are ours. Synchronous, then exit: the async
  // teardown below would not get to run.
  const onSignal = (signal: NodeJS.Signals): void => {
    for (const { proc } of agents) {
      if (proc.pid !== undefined && proc.exitCode === null && proc.signalCode === null) {
        try {
          process.kill(proc.pid, 'SIGKILL');
        } catch {
          // Already gone.
        }
      }
    }
    if (homeLab) {
      for (const daemon of wireguardDaemons(homeLab)) {
        try {
          process.kill(daemon.pid, 'SIGKILL');
        } catch {
          // Already gone.
        }
        rmSync(wireguardSocket(daemon.name), { force: true });
      }
    }
    homeLab?.destroySync();
    lab?.destroySync();
    if (workDir !== undefined) rmSync(workDir, { recursive: true, force: true });
    out(`demo: interrupted by ${signal}; agents stopped, labs and work directory removed`);
    process.exit(signal === 'SIGINT' ? 130 : 143);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  // ------------------------------------------------------------------------------------------
  // Output and probe helpers

  const say = (text = ''): void => {
    for (const line of text.replace(/\n$/, '').split('\n')) out(line);
  };
  const ok = (text: string): void => out(`  ${green('✓')} ${text}`);
  const note = (text: string): void => out(`    ${dim(text)}`);
  const command = (line: string, comment = ''): void =>
    out(bold(`$ ${line}`) + (comment === '' ? '' : dim(`   (${comment})`)));

  /** Runs the real CLI; prints `$ ipferry …` and its output; fails unless it exits as expected. */
  const ipferry = async (
    args: readonly string[],
    opts: { expectFail?: boolean; quiet?: boolean; comment?: string } = {},
  ): Promise<CliResult> => {
    const line = `ipferry ${args.map(shellWord).join(' ')}`;
    if (!opts.quiet) command(line, opts.comment ?? (opts.expectFail ? 'expected to fail' : ''));
    const result = await runCli(args, env);
    if (!opts.quiet) {
      if (result.stdout !== '') say(result.stdout);
      if (result.stderr !== '') say(result.stderr);
    }
    if (opts.expectFail) check(result.code !== 0, `${line} should have been refused`);
    else check(result.code === 0, `${line} exited with ${result.code}: ${result.stderr.trim()}`);
    return result;
  };

  /** Polls `fip show --json` (bounded) until the agent has realised the FIP's revision. */
  const waitActive = async (address: string, timeoutMs = 15_000): Promise<void> => {
    const started = Date.now();
    let last: FipJson = {};
    while (Date.now() - started < timeoutMs) {
      const shown = await ipferry(['fip', 'show', address, '--json'], { quiet: true });
      last = JSON.parse(shown.stdout) as FipJson;
      const s = last.status;
      if (s?.state === 'ACTIVE' && s.stale !== true && s.revision === last.revision) {
        ok(`${address} is ACTIVE: the agent applied revision ${s.revision} to gw's kernel`);
        return;
      }
      check(s?.state !== 'ERROR', `${address} is in ERROR: ${s?.message ?? '(no message)'}`);
      await sleep(100);
    }
    throw new DemoFailure(
      `${address} not ACTIVE after ${timeoutMs} ms (status ${JSON.stringify(last.status)})`,
    );
  };

  const live = (): Lab => {
    check(lab, 'the lab is not built');
    return lab;
  };

  const route = (from: string, proto: Protocol, address: string, port: number): string => {
    const own = HOST_ADDRESS[from]?.[address.includes(':') ? 'v6' : 'v4'];
    return `${from}${own === undefined ? '' : ` ${own}`} → ${hostPort(address, port)}/${proto}`;
  };

  const second = (): Lab => {
    check(homeLab, 'the second lab is not built');
    return homeLab;
  };

  /**
   * Asks an echo server from a lab host (of the first lab unless `where` says otherwise); prints
   * who answered and whom it saw, and checks both.
   */
  const probe = async (
    from: string,
    proto: Protocol,
    address: string,
    port: number,
    expect: { by: string; sees: string; why: string },
    where: Lab = live(),
  ): Promise<EchoReply> => {
    const reply = await echoProbe(where, from, proto, address, port, 2000);
    const what = route(from, proto, address, port);
    check(reply, `${what}: no answer (expected ${expect.by})`);
    check(
      reply.name === expect.by && reply.address === expect.sees,
      `${what}: answered by ${reply.name}, which saw ${reply.address} (expected ${expect.by} seeing ${expect.sees})`,
    );
    ok(`${what} answered by ${reply.name}, which saw ${reply.address} (${expect.why})`);
    return reply;
  };

  /** Checks that nothing answers (a short timeout: an answer comes within milliseconds). */
  const silent = async (
    from: string,
    proto: Protocol,
    address: string,
    port: number,
    why: string,
    where: Lab = live(),
  ): Promise<void> => {
    const reply = await echoProbe(where, from, proto, address, port, 800);
    const what = route(from, proto, address, port);
    check(reply === undefined, `${what}: ${reply?.name ?? '?'} answered, expected no answer`);
    ok(`${why}: no answer for ${what}`);
  };

  /**
   * Several `silent` checks at once, printed in order: each waits out its whole timeout, so one
   * after the other they would only make the demo slower.
   */
  const silentAll = async (
    why: string,
    targets: readonly (readonly [from: string, proto: Protocol, address: string, port: number])[],
  ): Promise<void> => {
    const replies = await Promise.all(
      targets.map(([from, proto, address, port]) =>
        echoProbe(live(), from, proto, address, port, 800),
      ),
    );
    for (const [i, [from, proto, address, port]] of targets.entries()) {
      const what = route(from, proto, address, port);
      const reply = replies[i];
      check(reply === undefined, `${what}: ${reply?.name ?? '?'} answered, expected no answer`);
      ok(`${why}: no answer for ${what}`);
    }
  };

  /** A backend's own connection out to the client's echo server: which source did it see? */
  const outbound = async (
    from: 'be1' | 'be2' | Home,
    expected: string,
    why: string,
    where: { lab: Lab; server: EchoServer | undefined } = { lab: live(), server: clientServer },
  ): Promise<void> => {
    check(where.server, 'the client has no echo server');
    const seen = await outboundProbe(where.lab, from, where.server, L.client.v4);
    const what = `${from} ${HOST_ADDRESS[from]?.v4 ?? ''} → client ${hostPort(L.client.v4, 80)}/tcp`;
    check(seen === expected, `${what}: the client saw ${seen ?? 'nothing'}, expected ${expected}`);
    ok(`${what}: the client saw ${seen} (${why})`);
  };

  /** Prints what the probes saw during a move, and checks that it switched once and for all. */
  const reportMove = (m: MoveMeasurement): void => {
    ok(
      `${m.probes} TCP probes from the client, one started every 10 ms: ${m.byFrom} answered by ${m.from}, then ${m.byTo} by ${m.to}, ${m.failed} unanswered`,
    );
    check(m.byFrom > 0, `${m.from} never answered before the move`);
    check(m.byTo > 0, `${m.to} never answered`);
    check(
      m.lateFrom === 0,
      `${m.from} still answered ${m.lateFrom} probes started after ${m.to} had taken over`,
    );
    ok(
      `moved to ${m.to}: ${m.to} answered first ${m.sinceSentMs} ms after \`ipferry fip move\` was started (Node start-up included)`,
    );
    ok(`interruption: ${interruption(m)}`);
  };

  /**
   * Starts `ipferry agent …` in the background (printed as a person would type it), its output
   * in `log`, and waits (bounded) until its API answers.
   */
  const startAgent = async (
    label: string,
    options: LabAgentOptions,
    log: string,
    comment = '',
  ): Promise<ChildProcess> => {
    const agent = spawnLabAgent(options, { log, env });
    agents.push({ label, proc: agent.proc, log });
    command(`ipferry ${agent.argv.map(shellWord).join(' ')} >${log} 2>&1 &`, comment);
    await waitHealthy(agent, 15_000);
    return agent.proc;
  };

  /** The tunnel ends of the second lab: `ip -br address show`, filtered to ipferry's `ipf…`. */
  const tunnelAddresses = async (host: 'gw' | Home): Promise<string[]> => {
    const { stdout } = await second().exec(host, ['ip', '-br', 'address', 'show']);
    return stdout.split('\n').filter((l) => l.startsWith('ipf'));
  };

  // ------------------------------------------------------------------------------------------
  // The steps

  const steps: { title: string; run: () => Promise<void>; heading?: string }[] = [];
  let heading: string | undefined;
  const step = (title: string, run: () => Promise<void>): void => {
    steps.push({ title, run, ...(heading === undefined ? {} : { heading }) });
    heading = undefined;
  };
  /** Starts a part: its heading is printed before the next step. */
  const part = (text: string): void => {
    heading = text;
  };

  part('Part 1: floating IPs on a gateway, delivered to its LAN by 1:1 NAT');

  step(
    'build the lab: client — up (the provider) — gw (the gateway) — be1, be2, lanc',
    async () => {
      check(process.getuid?.() === 0, 'the lab needs root (it creates network namespaces)');
      lab = await Lab.create(gatewayLan({ prefix }));
      const l = lab;
      [clientServer] = await Promise.all([
        startEchoServer(l, 'client', { tcp: [80] }),
        startEchoServer(l, 'be1', { tcp: [80], udp: [5353] }),
        startEchoServer(l, 'be2', { tcp: [80, 25], udp: [5353] }),
        startEchoServer(l, 'gw', { tcp: [2222] }),
      ]);
      ok(`network namespaces ${l.hosts.map((h) => l.ns(h)).join(', ')}`);
      ok(`outside: client ${L.client.v4} and ${L.client.v6}`);
      ok(`the provider routes ${L.pool.v4} and ${L.pool.v6} to gw's uplink ${L.gw.uplink.v4}`);
      ok(
        `gw's LAN ${L.lanPrefix.v4}: gw ${L.gw.lan.v4}, be1 ${L.be1.v4}, be2 ${L.be2.v4}, lanc ${L.lanc.v4}`,
      );
      ok('echo servers, which answer "<name> <source address they saw>":');
      note('be1: tcp/80 udp/5353; be2: tcp/80 tcp/25 udp/5353; client: tcp/80 (for outbound)');
      note("gw: tcp/2222, the gateway's own service on its own address");
      await silent(
        'client',
        'tcp',
        FIP,
        80,
        'before ipferry, the pool reaches gw but goes nowhere',
      );
    },
  );

  step('start the agent for node gw, its Linux dataplane acting in the gw namespace', async () => {
    workDir = await mkdtemp(join(tmpdir(), 'ipferry-demo-'));
    const port = await freePort();
    const server = `http://127.0.0.1:${port}`;
    const tokenFile = join(workDir, 'api-token');
    env = { ...process.env, IPFERRY_SERVER: server, IPFERRY_TOKEN_FILE: tokenFile };
    delete env.IPFERRY_TOKEN;
    delete env.IPFERRY_CA_FILE;
    const options = {
      node: 'gw',
      netns: live().ns('gw'),
      store: `sqlite:${join(workDir, 'ipferry.db')}`,
      port,
      tokenFile,
      stateDir: join(workDir, 'state'),
      resyncSeconds: 2,
    };
    const proc = await startAgent('gw', options, join(workDir, 'agent.log'));
    ok(`agent pid ${proc.pid}, API on ${server}`);
    note(`the CLI finds it by IPFERRY_SERVER=${server} IPFERRY_TOKEN_FILE=${tokenFile}`);
    await ipferry(['status']);
  });

  step("a pool of public addresses homed on gw, and the gateway's own shared address", async () => {
    await ipferry([
      'pool',
      'create',
      'public',
      '--gateway',
      'gw',
      '--cidr',
      '203.0.113.0/28',
      '--cidr',
      '2001:db8:f::/64',
      '--shared',
      SHARED,
    ]);
  });

  step(`allocate ${FIP}, then replay the request with the same client token`, async () => {
    const args = ['fip', 'allocate', '--address', FIP, '--client-token', 'demo-web'];
    const first = await ipferry(args);
    check(field(first.stdout, 'address') === FIP, `allocated ${field(first.stdout, 'address')}`);
    const again = await ipferry(args, { comment: 'the same request again, as a retry would' });
    check(field(again.stdout, 'address') === FIP, 'the replay returned another address');
    const list = await ipferry(['fip', 'list']);
    const rows = list.stdout
      .split('\n')
      .slice(1)
      .filter((l) => l.trim() !== ''); // minus header
    check(rows.length === 1, `${rows.length} FIPs allocated, expected 1`);
    ok(`the replay returned the same ${FIP} and took no second address`);
  });

  step(`associate ${FIP} 1:1 (nat) with be1 ${L.be1.v4}`, async () => {
    await ipferry(['fip', 'associate', FIP, '--target', L.be1.v4]);
    await waitActive(FIP);
  });

  step('real packets: in from outside, out of be1, and from the LAN (hairpin)', async () => {
    const preserved = 'client address preserved';
    await probe('client', 'tcp', FIP, 80, { by: 'be1', sees: L.client.v4, why: preserved });
    await probe('client', 'udp', FIP, 5353, { by: 'be1', sees: L.client.v4, why: preserved });
    await outbound('be1', FIP, "be1's own connections leave as its FIP");
    await probe('lanc', 'tcp', FIP, 80, {
      by: 'be1',
      sees: L.gw.lan.v4,
      why: "hairpin: masqueraded to gw's LAN address, so be1's answer goes back through gw",
    });
  });

  step('the kernel holds what the store asks for; FIPs are map elements, not rules', async () => {
    const plan = await ipferry(['plan']);
    check(/nothing to change/.test(plan.stdout), 'the plan is not empty');
    const table = await nftTable(live());
    command(
      `ip netns exec ${live().ns('gw')} nft list table inet ipferry`,
      'excerpt: maps dnat4 and snat4',
    );
    for (const name of ['dnat4', 'snat4']) {
      const block = mapBlock(table, name);
      check(block, `no map ${name} in table inet ipferry`);
      say(block.replace(/\t/g, '  '));
    }
    check(mapBlock(table, 'dnat4')?.includes(`${FIP} : ${L.be1.v4}`), `dnat4 lacks ${FIP}`);
    const rules = ruleLines(table);
    const naming = rules.filter((r) => r.includes(FIP) || r.includes(L.be1.v4));
    check(naming.length === 0, `rules name the FIP or its target: ${naming.join('; ')}`);
    ok(
      `${FIP} is an element of dnat4 (FIP → target) and snat4 (target → FIP); none of the table's ${rules.length} rules names an address`,
    );
  });

  step(`move ${FIP} to be2 ${L.be2.v4} while the client probes it every 10 ms`, async () => {
    const rulesBefore = ruleLines(await nftTable(live(), true));
    const m = await measureMove(
      live(),
      {
        address: FIP,
        from: 'be1',
        to: 'be2',
        probeTimeoutMs: 1000,
        maxInFlight: 20,
        settleMs: 8000,
      },
      () => ipferry(['fip', 'move', FIP, '--target', L.be2.v4]),
    );
    move = m;
    reportMove(m);
    check(m.failed === 0, `${m.failed} probes failed during the move`);
    await waitActive(FIP);
    await probe('client', 'tcp', FIP, 80, {
      by: 'be2',
      sees: L.client.v4,
      why: 'client address preserved',
    });
    await outbound('be2', FIP, "be2's own connections leave as the FIP now");
    await outbound('be1', L.be1.v4, 'be1 leaves with its own address again');
    const table = await nftTable(live(), true);
    check(ruleLines(table).join('\n') === rulesBefore.join('\n'), 'the move changed rules');
    check(mapBlock(table, 'dnat4')?.includes(`${FIP} : ${L.be2.v4}`), `dnat4 lacks ${FIP}`);
    ok(
      `the move changed map elements only (dnat4 now holds ${FIP} : ${L.be2.v4}); the ${rulesBefore.length} rules are as they were`,
    );
  });

  step(`port forwards on the gateway's own address ${SHARED}`, async () => {
    await ipferry(['fip', 'allocate', '--address', SHARED]);
    await ipferry([
      'forward',
      'add',
      SHARED,
      '--proto',
      'tcp',
      '--port',
      '25',
      '--target',
      L.be2.v4,
    ]);
    await waitActive(SHARED);
    await probe('client', 'tcp', SHARED, 25, {
      by: 'be2',
      sees: L.client.v4,
      why: 'forwarded to be2, client address preserved',
    });
    await probe('client', 'tcp', SHARED, 2222, {
      by: 'gw',
      sees: L.client.v4,
      why: "the gateway's own service on the same address still answers itself",
    });
    const refused = await ipferry(
      ['forward', 'add', SHARED, '--proto', 'tcp', '--port', '22', '--target', L.be2.v4],
      { expectFail: true },
    );
    check(/IPF_E_PORT_RESERVED/.test(refused.stderr), 'refused for another reason');
    ok("refused: tcp 22 is the gateway's own (SSH), reserved on its shared address");
    await ipferry(['forward', 'list', SHARED]);
  });

  step(`IPv6: allocate ${FIP6} and associate it (NAT66) with be1 ${L.be1.v6}`, async () => {
    await ipferry(['fip', 'allocate', '--address', FIP6]);
    await ipferry(['fip', 'associate', FIP6, '--target', L.be1.v6, '--mode', 'nat']);
    await waitActive(FIP6);
    await probe('client', 'tcp', FIP6, 80, {
      by: 'be1',
      sees: L.client.v6,
      why: 'client address preserved',
    });
  });

  step('release: refused while associated, then disassociate and release everything', async () => {
    const refused = await ipferry(['fip', 'release', FIP], { expectFail: true });
    check(/IPF_E_FIP_STILL_ASSOCIATED/.test(refused.stderr), 'refused for another reason');
    ok('refused: a FIP still forwarding traffic is not released by accident');
    await ipferry(['fip', 'disassociate', FIP]);
    await ipferry(['fip', 'release', FIP]);
    await ipferry(['fip', 'disassociate', FIP6]);
    await ipferry(['fip', 'release', FIP6]);
    await ipferry(['fip', 'release', SHARED, '--force'], {
      comment: '--force: also removes its port forwards',
    });
    await ipferry(['fip', 'list']);
    await waitNotInKernel(live(), [`${FIP} `, `${FIP6} `, `${SHARED} `]);
    ok("gw's kernel no longer holds any of them");
    await silentAll('released', [
      ['client', 'tcp', FIP, 80],
      ['client', 'udp', FIP, 5353],
      ['client', 'tcp', FIP6, 80],
      ['client', 'tcp', SHARED, 25],
    ]);
    await probe('client', 'tcp', SHARED, 2222, {
      by: 'gw',
      sees: L.client.v4,
      why: "the gateway's own service is untouched",
    });
    const plan = await ipferry(['plan']);
    check(/nothing to change/.test(plan.stdout), 'the plan is not empty');
  });

  // ------------------------------------------------------------------------------------------
  // Part 2: a FIP served by a remote node (a home server) through a WireGuard tunnel; then the
  // server moves to another place and the FIP follows it.

  part(
    "Part 2: a cloud VM's floating IP served from a home server through a tunnel; then the server moves, and its IP keeps answering",
  );

  /** The cloud VM's agent's API, which the CLI talks to from now on, and part 2's directory. */
  let hub = '';
  let cloudDir = '';

  /**
   * Joins a home server to the hub as an operator would: a join token made with the CLI (a
   * secret: kept in a 0600 file, printed shortened), the node's agent started on the hub's store
   * with it, then waited for (bounded) until the node is alive with its tunnel key registered.
   */
  const joinHome = async (node: Home): Promise<void> => {
    const tokenFile = join(cloudDir, `join-token-${node}`);
    const args = ['node', 'join-token', 'create', '--node', node, '--ttl', '10m'];
    command(`ipferry ${args.join(' ')} >${tokenFile}`);
    const created = await ipferry(args, { quiet: true });
    const token = created.stdout.trim();
    check(token !== '' && !token.includes('\n'), 'join-token create printed no single token');
    await writeSecretFile(tokenFile, `${token}\n`);
    say(created.stderr);
    ok(`${tokenFile} (mode 0600) holds ${token.slice(0, 16)}… (a secret: shortened here)`);
    const options = {
      node,
      netns: second().ns(node),
      store: hub,
      port: await freePort(),
      tokenFile: join(cloudDir, `${node}-api-token`),
      stateDir: join(cloudDir, `${node}-state`),
      resyncSeconds: 2,
      extra: [
        '--join-token-file',
        tokenFile,
        '--credential-file',
        join(cloudDir, `${node}-credential`),
        '--tunnel-port',
        String(HOME_TUNNEL_PORTS[node]),
      ],
    };
    const proc = await startAgent(
      node,
      options,
      join(cloudDir, `${node}.log`),
      `no --endpoint: behind its home router, ${node} calls gw and keeps the path open`,
    );
    ok(`${node} agent pid ${proc.pid}: it follows gw's store over ${hub}`);
    const started = Date.now();
    for (;;) {
      const shown = await runCli(['node', 'show', node, '--json'], env);
      const record =
        shown.code === 0
          ? (JSON.parse(shown.stdout) as { alive?: boolean; publicKey?: string })
          : {};
      if (record.alive === true && record.publicKey) break;
      check(
        Date.now() - started < 15_000,
        `${node} did not register with its tunnel key within 15 s`,
      );
      await sleep(200);
    }
    const list = await ipferry(['node', 'list']);
    check(
      new RegExp(`^${node}\\s+yes\\b`, 'm').test(list.stdout),
      `${node} is not listed as alive`,
    );
  };

  /** Waits (bounded) until `host` no longer holds the FIP on a tunnel interface. */
  const waitReleased = async (host: Home): Promise<void> => {
    const started = Date.now();
    while ((await tunnelAddresses(host)).some((l) => l.includes(`${FIP}/`))) {
      check(Date.now() - started < 10_000, `${host} still holds ${FIP} after 10 s`);
      await sleep(100);
    }
  };

  /** Prints a home server's tunnel end (`ip -br address show | grep ^ipf`) and returns it. */
  const showTunnel = async (host: Home, comment = ''): Promise<string[]> => {
    command(`ip netns exec ${second().ns(host)} ip -br address show | grep ^ipf`, comment);
    const addresses = await tunnelAddresses(host);
    if (addresses.length > 0) say(addresses.join('\n'));
    else note(`(nothing: with no FIP to serve, ${host} has no tunnel interface)`);
    return addresses;
  };

  const holds = (addresses: readonly string[]): boolean =>
    addresses.some((l) => l.split(/\s+/).includes(`${FIP}/32`));

  step(
    'build a second lab, cloudHome: client — up (the internet) — gw (a small cloud VM), and up — isp — home, home2',
    async () => {
      homeLab = await cloudHome({ prefix: homePrefix, homes: 2 });
      const h = homeLab;
      [homeClientServer] = await Promise.all([
        startEchoServer(h, 'client', { tcp: [80] }),
        startEchoServer(h, 'home', { tcp: [80] }),
        startEchoServer(h, 'home2', { tcp: [80] }),
      ]);
      ok(`network namespaces ${h.hosts.map((n) => h.ns(n)).join(', ')}`);
      ok(`the internet routes ${H.pool.v4} to the cloud VM gw ${H.gw.uplink.v4}`);
      ok(
        `home ${H.home.v4} has its own address and default route from its ISP (isp, customers ${H.ispCustomers.v4})`,
      );
      ok(
        `home2 ${H.home2.v4}, where the service will move, sits behind the same ISP with its own address`,
      );
      ok(
        `isp validates sources (BCP 38): it drops what home and home2 send from outside ${H.ispCustomers.v4}`,
      );
      note(
        'echo servers: home, home2 tcp/80 (on all their addresses); client tcp/80 (for outbound)',
      );
      for (const host of ['home', 'home2'] as const) {
        await probe(
          'client',
          'tcp',
          H[host].v4,
          80,
          { by: host, sees: H.client.v4, why: `${host}'s own address, through its own ISP` },
          h,
        );
      }
      await silent(
        'client',
        'tcp',
        FIP,
        80,
        'before ipferry, the pool reaches gw but goes nowhere',
        h,
      );
    },
  );

  step(
    `start the agent for the cloud VM gw, its tunnel reachable at ${H.gw.uplink.v4}:${GW_TUNNEL_PORT}`,
    async () => {
      check(workDir, 'no work directory');
      cloudDir = join(workDir, 'cloud');
      await mkdir(cloudDir, { mode: 0o700 });
      const port = await freePort();
      hub = `http://127.0.0.1:${port}`;
      const tokenFile = join(cloudDir, 'gw-api-token');
      env = { ...env, IPFERRY_SERVER: hub, IPFERRY_TOKEN_FILE: tokenFile };
      const options = {
        node: 'gw',
        netns: second().ns('gw'),
        store: `sqlite:${join(cloudDir, 'gw.db')}`,
        port,
        tokenFile,
        stateDir: join(cloudDir, 'gw-state'),
        resyncSeconds: 2,
        extra: [
          '--endpoint',
          `${H.gw.uplink.v4}:${GW_TUNNEL_PORT}`,
          '--tunnel-port',
          String(GW_TUNNEL_PORT),
        ],
      };
      const proc = await startAgent('cloud gw', options, join(cloudDir, 'gw.log'));
      ok(`agent pid ${proc.pid}, API on ${hub}, its own store: the hub other nodes follow`);
      note(`the CLI talks to this agent from now on: IPFERRY_SERVER=${hub}`);
    },
  );

  step('a join token for node home, and the home agent joining the hub with it', async () => {
    await joinHome('home');
    ok(
      'home joined: registered and alive; only its WireGuard public key is in the store, its private key never left home',
    );
  });

  step(
    `route ${FIP} to home through the tunnel (routed: delivered unchanged, no NAT)`,
    async () => {
      await ipferry(['pool', 'create', 'public', '--gateway', 'gw', '--cidr', '203.0.113.0/28']);
      await ipferry(['fip', 'allocate', '--address', FIP]);
      await ipferry([
        'fip',
        'associate',
        FIP,
        '--mode',
        'routed',
        '--node',
        'home',
        '--target',
        FIP,
      ]);
      await waitActive(FIP);
    },
  );

  step(
    `real packets: ${FIP} through the tunnel to home, and home's own address on its ISP`,
    async () => {
      const h = second();
      // home applies the association when it sees it in gw's store, then the tunnel's first
      // handshake: the first answer may take a moment after ACTIVE.
      const started = Date.now();
      while ((await echoProbe(h, 'client', 'tcp', FIP, 80, 1500)) === undefined) {
        check(
          Date.now() - started < 15_000,
          `no answer from ${FIP} through the tunnel within 15 s`,
        );
        await sleep(100);
      }
      await probe(
        'client',
        'tcp',
        FIP,
        80,
        {
          by: 'home',
          sees: H.client.v4,
          why: 'routed through the tunnel, client address preserved',
        },
        h,
      );
      await probe(
        'client',
        'tcp',
        H.home.v4,
        80,
        {
          by: 'home',
          sees: H.client.v4,
          why: "home's own address still works, through its own ISP",
        },
        h,
      );
      await outbound('home', H.home.v4, "home's own connections still leave through its ISP", {
        lab: h,
        server: homeClientServer,
      });
      ok(
        `isp drops packets from home with a 203.0.113.x source (BCP 38): home's answers from ${FIP} must have gone back through the tunnel`,
      );

      const homeNs = h.ns('home');
      const proto = `proto ${ROUTE_PROTO}`;
      const addresses = await showTunnel('home', "home's tunnel end");
      check(holds(addresses), `home's tunnel interface does not hold ${FIP}`);
      command(`ip netns exec ${homeNs} ip rule show | grep '${proto}'`);
      const rules = (await h.exec('home', ['ip', 'rule', 'show'])).stdout
        .split('\n')
        .filter((l) => l.includes(proto))
        .map((l) => l.replace(/\t/g, ' '));
      say(rules.join('\n'));
      check(
        rules.some((l) => l.includes(`from ${FIP} lookup ${ROUTE_TABLE}`)),
        `home has no rule from ${FIP} lookup ${ROUTE_TABLE}`,
      );
      command(`ip netns exec ${homeNs} ip route show table ${ROUTE_TABLE}`);
      say((await h.exec('home', ['ip', 'route', 'show', 'table', String(ROUTE_TABLE)])).stdout);
      command(`ip netns exec ${h.ns('gw')} ip route show ${proto}`, "the cloud VM's side");
      say((await h.exec('gw', ['ip', 'route', 'show', 'proto', String(ROUTE_PROTO)])).stdout);
      ok(
        `policy routing on home: it holds ${FIP} on its tunnel interface; what it sends from ${FIP} looks up table ${ROUTE_TABLE}, whose default route is the tunnel; everything else keeps its own default route via isp`,
      );
      note(`ipferry marks its routes and rules with protocol ${ROUTE_PROTO}; it touches no others`);
      const daemons = wireguardDaemons(h);
      sawDaemons(daemons);
      if (daemons.length > 0) {
        const where = daemons.map((d) => `pid ${d.pid} serves ${d.name} (${d.ns})`).join(', ');
        note(`userspace WireGuard (wireguard-go, started detached by the agents): ${where}`);
      }
    },
  );

  step(
    'the server moves: its new place, home2, joins the hub with its own join token',
    async () => {
      await joinHome('home2');
      const addresses = await showTunnel('home2', 'before the move');
      check(!holds(addresses), `home2 holds ${FIP} before the move`);
      ok(`home2 is ready: it will build its tunnel to gw when it has ${FIP} to serve`);
    },
  );

  step(`move ${FIP} from home to home2 while the client probes it every 10 ms`, async () => {
    const h = second();
    const m = await measureMove(
      h,
      // 500 ms per probe: one whose SYN is lost while home2's tunnel comes up counts as
      // unanswered rather than as a late answer from TCP's retransmission a second later.
      {
        address: FIP,
        from: 'home',
        to: 'home2',
        probeTimeoutMs: 500,
        maxInFlight: 60,
        settleMs: 15_000,
      },
      () => ipferry(['fip', 'move', FIP, '--node', 'home2', '--target', FIP]),
    );
    remoteMove = m;
    reportMove(m);
    note(
      'the interruption includes home2 building its tunnel and its first handshake with gw: home2 had none before',
    );
    await waitActive(FIP);
    await probe(
      'client',
      'tcp',
      FIP,
      80,
      {
        by: 'home2',
        sees: H.client.v4,
        why: 'the same IP, from its new place, client address preserved',
      },
      h,
    );
    await waitReleased('home');
    check(holds(await showTunnel('home2', "home2's tunnel end")), `home2 does not hold ${FIP}`);
    await showTunnel('home', 'the old place');
    ok(`home2 holds ${FIP} now; home gave it up`);
    await probe(
      'client',
      'tcp',
      H.home.v4,
      80,
      { by: 'home', sees: H.client.v4, why: "home's own address is untouched" },
      h,
    );
    await outbound('home2', H.home2.v4, "home2's own connections still leave through its ISP", {
      lab: h,
      server: homeClientServer,
    });
  });

  step(`disassociate ${FIP}: home2 gives it up, gw drops it again`, async () => {
    const h = second();
    await ipferry(['fip', 'disassociate', FIP]);
    const started = Date.now();
    for (;;) {
      const held = (await tunnelAddresses('home2')).some((l) => l.includes(`${FIP}/`));
      const routed = (await h.exec('gw', ['ip', 'route', 'show', 'proto', String(ROUTE_PROTO)]))
        .stdout;
      if (!held && !routed.includes(FIP)) break;
      check(Date.now() - started < 10_000, `${FIP} still routed to or held by home2 after 10 s`);
      await sleep(100);
    }
    await showTunnel('home2');
    ok(`home2 no longer holds ${FIP}; gw no longer routes it into the tunnel`);
    await silent('client', 'tcp', FIP, 80, 'disassociated', h);
    await probe(
      'client',
      'tcp',
      H.home2.v4,
      80,
      { by: 'home2', sees: H.client.v4, why: "home2's own address is untouched" },
      h,
    );
  });

  // ------------------------------------------------------------------------------------------
  // Run them in order, stop at the first failure, always tear down.

  const total = steps.length + 1; // + teardown
  let passed = 0;
  let failure: { step: string; error: string } | undefined;
  say(bold('ipferry demo: floating IPs on a real Linux gateway, in throwaway namespace labs'));
  say('Documentation and private addresses only; nothing outside the labs is touched.');
  try {
    for (const [index, s] of steps.entries()) {
      if (s.heading !== undefined) {
        say();
        say(bold(s.heading));
      }
      say();
      say(bold(`== ${index + 1}/${total}. ${s.title}`));
      try {
        await s.run();
        passed++;
      } catch (error) {
        failure = { step: `${index + 1} (${s.title})`, error: errorText(error) };
        out(`  ${red('✗')} ${errorText(error)}`);
        for (const a of agents) {
          const log = readTail(a.log, 20);
          if (log === '') continue;
          note(`the last lines of the ${a.label} agent's log:`);
          say(log.replace(/^/gm, '      '));
        }
        break;
      }
    }
  } finally {
    say();
    say(
      bold(
        `== ${total}/${total}. teardown: stop the agents and wireguard-go, delete the labs and the directory`,
      ),
    );
    const problems: string[] = [];
    for (const { label, proc } of [...agents].reverse()) {
      // SIGTERM first: the demo shows an agent stopping cleanly; SIGKILL after 5 s.
      await stopLabAgent(proc, 5000).then(
        () => ok(`${label} agent pid ${proc.pid} stopped`),
        (e: unknown) => problems.push(`${label} agent: ${errorText(e)}`),
      );
    }
    if (homeLab) {
      const h = homeLab;
      await stopWireguard(h).then(
        (stopped) => {
          sawDaemons(stopped);
          for (const d of stopped) {
            ok(`wireguard-go pid ${d.pid} (${d.name} in ${d.ns}) stopped, its socket removed`);
          }
          if (stopped.length === 0) ok('no wireguard-go runs in the second lab any more');
        },
        (e: unknown) => problems.push(`wireguard-go: ${errorText(e)}`),
      );
      await h.destroy().then(
        () => ok(`namespaces ${homePrefix}* deleted, their processes stopped`),
        (e: unknown) => problems.push(`second lab: ${errorText(e)}`),
      );
    }
    if (lab) {
      await lab.destroy().then(
        () => ok(`namespaces ${prefix}* deleted, their processes stopped`),
        (e: unknown) => problems.push(`lab: ${errorText(e)}`),
      );
    }
    if (workDir !== undefined) {
      rmSync(workDir, { recursive: true, force: true });
      ok(`${workDir} removed`);
    }
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    if (problems.length === 0) passed++;
    else {
      out(`  ${red('✗')} ${problems.join('; ')}`);
      failure ??= { step: `${total} (teardown)`, error: problems.join('; ') };
    }
  }
  say();
  const took = `${Math.round((performance.now() - startedAt) / 1000)} s`;
  if (failure === undefined) say(bold(green(`demo: all ${total} steps passed in ${took}`)));
  else say(bold(red(`demo: step ${failure.step} failed after ${took}: ${failure.error}`)));
  return {
    ok: failure === undefined,
    passed,
    steps: total,
    ...(failure ? { failure } : {}),
    ...(move ? { move } : {}),
    ...(remoteMove ? { remoteMove } : {}),
    prefix,
    homePrefix,
    ...(agents[0]?.proc.pid !== undefined ? { agentPid: agents[0].proc.pid } : {}),
    agentPids: agents.flatMap(({ proc }) => (proc.pid === undefined ? [] : [proc.pid])),
    wireguard,
  };
}

// ---------------------------------------------------------------------------------------------

interface ProbeRecord {
  readonly sentAt: number;
  readonly doneAt: number;
  readonly name: string | undefined;
}

/** What a move is measured on: the FIP, who answers before and after, how probes are paced. */
interface MoveProbes {
  readonly address: string;
  readonly from: string;
  readonly to: string;
  /** Each probe's bound: a probe that gets no answer within it counts as unanswered. */
  readonly probeTimeoutMs: number;
  /** At most this many probes in flight, so a long gap cannot pile up processes. */
  readonly maxInFlight: number;
  /** How long after the move `to` may take to answer at all. */
  readonly settleMs: number;
}

/**
 * Starts a TCP probe from the client to the FIP every 10 ms from 300 ms before the move until
 * `to` has been answering for 300 ms (`settleMs` at most after the move), and times the take-over
 * against the command.
 */
async function measureMove(
  lab: Lab,
  p: MoveProbes,
  move: () => Promise<CliResult>,
): Promise<MoveMeasurement> {
  const records: ProbeRecord[] = [];
  const inFlight = new Set<Promise<void>>();
  let stop = false;
  const loop = (async () => {
    const deadline = Date.now() + 300 + 20_000 + p.settleMs;
    while (!stop && Date.now() < deadline) {
      if (inFlight.size < p.maxInFlight) {
        const sentAt = performance.now();
        const record = (name: string | undefined): void => {
          records.push({ sentAt, doneAt: performance.now(), name });
        };
        const probe = echoProbe(lab, 'client', 'tcp', p.address, 80, p.probeTimeoutMs).then(
          (reply) => record(reply?.name),
          () => record(undefined),
        );
        inFlight.add(probe);
        void probe.finally(() => inFlight.delete(probe));
      }
      await sleep(10);
    }
  })();
  const finish = async (): Promise<void> => {
    stop = true;
    await loop;
    await Promise.all([...inFlight]);
  };
  try {
    await sleep(300);
    const sentAt = performance.now();
    const result = await move();
    const returnedAt = Number.isNaN(result.firstOutputAt)
      ? performance.now()
      : result.firstOutputAt;
    const deadline = Date.now() + p.settleMs;
    for (;;) {
      const first = firstAnswer(records, p.to);
      if (first !== undefined && performance.now() - first.doneAt > 300) break;
      if (Date.now() > deadline) break;
      await sleep(20);
    }
    await finish();
    const first = firstAnswer(records, p.to);
    const byFrom = records.filter((r) => r.name === p.from);
    // By start time: the last probe `from` answered that was started before the first of `to`.
    const lastFromSent = byFrom
      .filter((r) => first === undefined || r.sentAt < first.sentAt)
      .reduce((latest, r) => Math.max(latest, r.sentAt), -Infinity);
    const lastFromDone = byFrom.reduce((latest, r) => Math.max(latest, r.doneAt), -Infinity);
    const ms = (t: number): number => Math.round(t);
    return {
      address: p.address,
      from: p.from,
      to: p.to,
      probes: records.length,
      byFrom: byFrom.length,
      byTo: records.filter((r) => r.name === p.to).length,
      failed: records.filter((r) => r.name === undefined).length,
      sinceSentMs: first ? ms(first.doneAt - sentAt) : NaN,
      sinceReturnedMs: first ? ms(first.doneAt - returnedAt) : NaN,
      switchWindowMs:
        first && Number.isFinite(lastFromSent) ? ms(first.sentAt - lastFromSent) : NaN,
      gapMs:
        first && Number.isFinite(lastFromDone) ? Math.max(0, ms(first.doneAt - lastFromDone)) : NaN,
      lateFrom: first ? byFrom.filter((r) => r.sentAt > first.doneAt).length : 0,
    };
  } finally {
    await finish();
  }
}

/** The probe `name` answered first (by answer time). */
function firstAnswer(records: readonly ProbeRecord[], name: string): ProbeRecord | undefined {
  let first: ProbeRecord | undefined;
  for (const r of records) if (r.name === name && (!first || r.doneAt < first.doneAt)) first = r;
  return first;
}

/**
 * The interruption line. Without a lost probe, the figure is the time from the API's answer to
 * the first answer of `to` (the old target answered meanwhile); with lost probes, the time
 * between the last answer of `from` and the first of `to`, and how many went unanswered.
 */
export function interruption(m: MoveMeasurement): string {
  if (m.failed === 0) {
    const figure =
      m.sinceReturnedMs >= 0
        ? `${m.sinceReturnedMs} ms from the move API call returning to the first answer of ${m.to}`
        : `0 ms: ${m.to} answered ${-m.sinceReturnedMs} ms before the API's response reached the CLI`;
    return `${figure}; no probe failed, ${m.from} answered every one until ${m.to} took over (the switch fell between two probes started ${m.switchWindowMs} ms apart)`;
  }
  return (
    `${m.gapMs} ms between the last answer from ${m.from} and the first from ${m.to}; ` +
    `${m.failed} of ${m.probes} probes went unanswered meanwhile, none answered by ${m.from} after the switch ` +
    `(${m.sinceReturnedMs} ms from the move API call returning to the first answer of ${m.to})`
  );
}

/** The gateway's `inet ipferry` table; `stateless` leaves out counter values (`nft -s`). */
async function nftTable(lab: Lab, stateless = false): Promise<string> {
  const flags = stateless ? ['-s'] : [];
  return (await lab.exec('gw', ['nft', ...flags, 'list', 'table', 'inet', 'ipferry'])).stdout;
}

/** Waits (bounded) until the gateway's table no longer mentions any of `needles`. */
async function waitNotInKernel(
  lab: Lab,
  needles: readonly string[],
  timeoutMs = 10_000,
): Promise<void> {
  const started = Date.now();
  for (;;) {
    const table = await nftTable(lab);
    const left = needles.filter((n) => table.includes(n));
    if (left.length === 0) return;
    check(
      Date.now() - started < timeoutMs,
      `still in gw's kernel after ${timeoutMs} ms: ${left.join(', ')}`,
    );
    await sleep(100);
  }
}

/** The `map NAME { … }` block of an `nft list table` listing, or undefined. */
export function mapBlock(listing: string, name: string): string | undefined {
  const lines = listing.split('\n');
  const start = lines.findIndex((l) => l.trim() === `map ${name} {`);
  if (start < 0) return undefined;
  const indent = /^\s*/.exec(lines[start] ?? '')?.[0] ?? '';
  const end = lines.findIndex((l, i) => i > start && l === `${indent}}`);
  if (end < 0) return undefined;
  return lines.slice(start, end + 1).join('\n');
}

/** The rules of an `nft list table` listing: lines inside chains, minus their declarations. */
export function ruleLines(listing: string): string[] {
  let inChain = false;
  const rules: string[] = [];
  for (const raw of listing.split('\n')) {
    const line = raw.trim();
    if (/^chain \S+ \{$/.test(line)) inChain = true;
    else if (line === '}') inChain = false;
    else if (inChain && line !== '' && !/^type \S+ hook /.test(line)) rules.push(line);
  }
  return rules;
}

/** The value of a `name:   value` line of the CLI's human output. */
function field(output: string, name: string): string | undefined {
  return new RegExp(`^${name}:\\s+(.*)$`, 'm').exec(output)?.[1]?.trim();
}

function readTail(path: string, lines: number): string {
  try {
    return readFileSync(path, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}

/** The control socket of a wireguard-go interface (one directory for the whole machine). */
function wireguardSocket(name: string): string {
  return `/var/run/wireguard/${name}.sock`;
}

/** Running: /proc has it and it is not a zombie waiting to be reaped. */
function running(pid: number): boolean {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return false;
  }
  // The state follows the command name, which is in parentheses and may contain spaces.
  const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  return state !== '' && state !== 'Z' && state !== 'X';
}

/**
 * The wireguard-go daemons (`wireguard-go -f ipf…`) running in a lab's namespaces. The agents
 * start them detached, so they outlive the agents; found by namespace, so only the lab's own.
 * Synchronous: the signal handler uses it too.
 */
function wireguardDaemons(lab: Lab): WireguardDaemon[] {
  const found: WireguardDaemon[] = [];
  for (const host of lab.hosts) {
    const ns = lab.ns(host);
    let pids: string;
    try {
      pids = execFileSync('ip', ['netns', 'pids', ns], {
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'ignore'],
      });
    } catch {
      continue; // The namespace is gone.
    }
    for (const pid of pids.split(/\s+/).filter((p) => /^\d+$/.test(p))) {
      let argv: string[];
      try {
        argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8')
          .split('\0')
          .filter((a) => a !== '');
      } catch {
        continue; // Exited meanwhile.
      }
      const name = argv[argv.length - 1];
      if (argv[0]?.split('/').pop() === 'wireguard-go' && name?.startsWith('ipf')) {
        found.push({ pid: Number(pid), name, ns });
      }
    }
  }
  return found;
}

/**
 * Stops a lab's wireguard-go daemons by pid: SIGTERM (it then removes its interface and
 * socket), SIGKILL after 3 s; removes a socket left behind. Resolves with what it stopped.
 */
async function stopWireguard(lab: Lab): Promise<WireguardDaemon[]> {
  const daemons = wireguardDaemons(lab);
  const signal = (pid: number, name: NodeJS.Signals): void => {
    try {
      process.kill(pid, name);
    } catch {
      // Already gone.
    }
  };
  for (const d of daemons) signal(d.pid, 'SIGTERM');
  const deadline = Date.now() + 3000;
  for (const d of daemons) {
    while (running(d.pid) && Date.now() < deadline) await sleep(20);
    if (running(d.pid)) signal(d.pid, 'SIGKILL');
    rmSync(wireguardSocket(d.name), { force: true });
  }
  return daemons;
}

function isMain(): boolean {
  const entry = process.argv[1];
  if (entry === undefined) return false;
  try {
    return realpathSync(entry) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isMain()) {
  const { values } = parseArgs({
    options: { 'no-color': { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
  });
  if (values.help) {
    process.stdout.write(
      'usage: bash scripts/demo.sh [--no-color]\n\n' +
        'Builds throwaway labs of network namespaces, runs real ipferry agents on their hosts\n' +
        'and walks floating IPs through their life with the CLI (NAT on a gateway, then routed\n' +
        'through a WireGuard tunnel to a home server and moved to another one), probing real\n' +
        'packets between the steps and timing both moves under a probe every 10 ms.\n' +
        'Needs root; touches nothing outside the labs; exits non-zero on failure.\n',
    );
  } else {
    const result = await runDemo(values['no-color'] ? { color: false } : {});
    process.exitCode = result.ok ? 0 : 1;
  }
}
