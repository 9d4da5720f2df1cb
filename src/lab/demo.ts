/**
 * The demo (`bash scripts/demo.sh`): ipferry's main job on a real kernel, in a throwaway lab of
 * network namespaces. It builds `gatewayLan()` (an outside client, the provider's router, the
 * gateway, two LAN backends and a LAN client), starts a real `ipferry agent` whose Linux
 * dataplane acts inside the gateway's namespace, walks floating IPs through their life with the
 * real CLI and, between the commands, probes from the lab's hosts and says in plain words what
 * answered and which address it saw.
 *
 * Nothing outside the lab is touched: the agent's API listens on loopback, its state lives in a
 * temporary directory, and the kernel it changes is the gateway namespace's. Everything is
 * removed at the end — agent (by pid), namespaces, directory — also when a step fails or on
 * Ctrl-C. `runDemo()` resolves with the outcome; run as a program it exits non-zero on failure.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync, openSync, readFileSync, realpathSync, rmSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { randomPrefix } from './netns.js';
import {
  echoProbe,
  type EchoReply,
  type EchoServer,
  outboundProbe,
  type Protocol,
  startEchoServer,
} from './probe.js';
import { GATEWAY_LAN as L, gatewayLan } from './scenarios.js';
import { Lab } from './topology.js';

/** The CLI of this checkout (it runs the compiled dist/, which scripts/setup.sh builds). */
const BIN = fileURLToPath(new URL('../../bin/ipferry', import.meta.url));

const FIP = '203.0.113.10';
const FIP6 = '2001:db8:f::10';
/** The gateway's own uplink address, shared: port forwards only, its own services stay. */
const SHARED = L.gw.uplink.v4;

export interface DemoOptions {
  /** Where each output line goes (default: stdout). */
  readonly out?: (line: string) => void;
  /** Bold headers and coloured marks (default: when writing to stdout and it is a TTY). */
  readonly color?: boolean;
  /** Namespace prefix of the lab (default: a fresh `ipft-demo-xxxxxx-`). */
  readonly prefix?: string;
}

export interface DemoResult {
  readonly ok: boolean;
  /** Steps that passed, and how many there are (teardown included). */
  readonly passed: number;
  readonly steps: number;
  /** The failed step and why, when one failed. */
  readonly failure?: { readonly step: string; readonly error: string };
  /** What the probes saw while the FIP moved from be1 to be2. */
  readonly move?: MoveMeasurement;
  /** The lab's namespace prefix and the agent's pid, so a caller can check they are gone. */
  readonly prefix: string;
  readonly agentPid?: number;
}

export interface MoveMeasurement {
  readonly probes: number;
  readonly byBe1: number;
  readonly byBe2: number;
  /** Probes that got no answer (refused or timed out). */
  readonly failed: number;
  /**
   * Time to the first answer of be2 from `ipferry fip move` being started (Node start-up
   * included), and from the API's response reaching the CLI (negative: be2 answered first).
   */
  readonly sinceSentMs: number;
  readonly sinceReturnedMs: number;
  /** How far apart the last probe be1 answered and the first be2 answered were started. */
  readonly switchWindowMs: number;
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

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
    });
  });
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
    const child = spawn(BIN, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
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
};

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

  let lab: Lab | undefined;
  let agent: ChildProcess | undefined;
  let workDir: string | undefined;
  let env: NodeJS.ProcessEnv = {};
  let clientServer: EchoServer | undefined;
  let move: MoveMeasurement | undefined;

  // Ctrl-C / SIGTERM: the Lab deletes its namespaces in its own handler too; the agent and the
  // directory are ours. Synchronous, then exit: the async teardown below would not get to run.
  const onSignal = (signal: NodeJS.Signals): void => {
    if (agent?.pid !== undefined && agent.exitCode === null && agent.signalCode === null) {
      try {
        process.kill(agent.pid, 'SIGKILL');
      } catch {
        // Already gone.
      }
    }
    lab?.destroySync();
    if (workDir !== undefined) rmSync(workDir, { recursive: true, force: true });
    out(`demo: interrupted by ${signal}; agent stopped, lab and work directory removed`);
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

  /** Asks an echo server from a lab host; prints who answered and whom it saw, and checks both. */
  const probe = async (
    from: string,
    proto: Protocol,
    address: string,
    port: number,
    expect: { by: string; sees: string; why: string },
  ): Promise<EchoReply> => {
    const reply = await echoProbe(live(), from, proto, address, port, 2000);
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
  ): Promise<void> => {
    const reply = await echoProbe(live(), from, proto, address, port, 800);
    const what = route(from, proto, address, port);
    check(reply === undefined, `${what}: ${reply?.name ?? '?'} answered, expected no answer`);
    ok(`${why}: no answer for ${what}`);
  };

  /** A backend's own connection out to the client's echo server: which source did it see? */
  const outbound = async (from: 'be1' | 'be2', expected: string, why: string): Promise<void> => {
    check(clientServer, 'the client has no echo server');
    const seen = await outboundProbe(live(), from, clientServer, L.client.v4);
    const what = `${from} ${HOST_ADDRESS[from]?.v4 ?? ''} → client ${hostPort(L.client.v4, 80)}/tcp`;
    check(seen === expected, `${what}: the client saw ${seen ?? 'nothing'}, expected ${expected}`);
    ok(`${what}: the client saw ${seen} (${why})`);
  };

  // ------------------------------------------------------------------------------------------
  // The steps

  const steps: { title: string; run: () => Promise<void> }[] = [];
  const step = (title: string, run: () => Promise<void>): void => {
    steps.push({ title, run });
  };

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
    const args = [
      'agent',
      '--node',
      'gw',
      '--dataplane',
      'linux',
      '--netns',
      live().ns('gw'),
      '--store',
      `sqlite:${join(workDir, 'ipferry.db')}`,
      '--listen',
      `127.0.0.1:${port}`,
      '--token-file',
      tokenFile,
      '--state-dir',
      join(workDir, 'state'),
      '--resync-seconds',
      '2',
      '--log-level',
      'warn',
    ];
    const log = join(workDir, 'agent.log');
    command(`ipferry ${args.map(shellWord).join(' ')} >${log} 2>&1 &`);
    const fd = openSync(log, 'a');
    try {
      agent = spawn(BIN, args, { stdio: ['ignore', fd, fd], env });
    } finally {
      closeSync(fd);
    }
    const proc = agent;
    const started = Date.now();
    for (;;) {
      check(
        proc.exitCode === null && proc.signalCode === null,
        `the agent exited (${proc.exitCode ?? proc.signalCode}): ${readTail(log, 20)}`,
      );
      const health = await fetch(`${server}/healthz`).catch(() => undefined);
      if (health?.ok) break;
      check(Date.now() - started < 15_000, 'the agent API did not come up within 15 s');
      await sleep(100);
    }
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
    const m = await measureMove(live(), () => ipferry(['fip', 'move', FIP, '--target', L.be2.v4]));
    move = m;
    ok(
      `${m.probes} TCP probes from the client, one started every 10 ms: ${m.byBe1} answered by be1, then ${m.byBe2} by be2, ${m.failed} failed`,
    );
    check(m.byBe2 > 0, 'be2 never answered');
    ok(
      `moved to be2: be2 answered first ${m.sinceSentMs} ms after \`ipferry fip move\` was started (Node start-up included)`,
    );
    ok(`interruption: ${interruption(m)}`);
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
    await silent('client', 'tcp', FIP, 80, 'released');
    await silent('client', 'udp', FIP, 5353, 'released');
    await silent('client', 'tcp', FIP6, 80, 'released');
    await silent('client', 'tcp', SHARED, 25, 'released');
    await probe('client', 'tcp', SHARED, 2222, {
      by: 'gw',
      sees: L.client.v4,
      why: "the gateway's own service is untouched",
    });
    const plan = await ipferry(['plan']);
    check(/nothing to change/.test(plan.stdout), 'the plan is not empty');
  });

  // ------------------------------------------------------------------------------------------
  // Run them in order, stop at the first failure, always tear down.

  const total = steps.length + 1; // + teardown
  let passed = 0;
  let failure: { step: string; error: string } | undefined;
  say(bold('ipferry demo: floating IPs on a real Linux gateway, in a throwaway namespace lab'));
  say('Documentation and private addresses only; nothing outside the lab is touched.');
  try {
    for (const [index, s] of steps.entries()) {
      say();
      say(bold(`== ${index + 1}/${total}. ${s.title}`));
      try {
        await s.run();
        passed++;
      } catch (error) {
        failure = { step: `${index + 1} (${s.title})`, error: errorText(error) };
        out(`  ${red('✗')} ${errorText(error)}`);
        const log = workDir === undefined ? '' : readTail(join(workDir, 'agent.log'), 20);
        if (log !== '') {
          note('the last lines of the agent log:');
          say(log.replace(/^/gm, '      '));
        }
        break;
      }
    }
  } finally {
    say();
    say(bold(`== ${total}/${total}. teardown: stop the agent, delete the lab and the directory`));
    const problems: string[] = [];
    if (agent) {
      const pid = agent.pid;
      await stopProcess(agent).then(
        () => ok(`agent pid ${pid} stopped`),
        (e: unknown) => problems.push(`agent: ${errorText(e)}`),
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
  if (failure === undefined) say(bold(green(`demo: all ${total} steps passed`)));
  else say(bold(red(`demo: step ${failure.step} failed: ${failure.error}`)));
  return {
    ok: failure === undefined,
    passed,
    steps: total,
    ...(failure ? { failure } : {}),
    ...(move ? { move } : {}),
    prefix,
    ...(agent?.pid !== undefined ? { agentPid: agent.pid } : {}),
  };
}

// ---------------------------------------------------------------------------------------------

interface ProbeRecord {
  readonly sentAt: number;
  readonly doneAt: number;
  readonly name: string | undefined;
}

/**
 * Starts a TCP probe from the client to the FIP every 10 ms (at most 20 in flight) from 300 ms
 * before the move until be2 has been answering for 300 ms (8 s at most after the move), and
 * times be2's take-over against the command.
 */
async function measureMove(lab: Lab, move: () => Promise<CliResult>): Promise<MoveMeasurement> {
  const records: ProbeRecord[] = [];
  const inFlight = new Set<Promise<void>>();
  let stop = false;
  const loop = (async () => {
    const deadline = Date.now() + 15_000;
    while (!stop && Date.now() < deadline) {
      if (inFlight.size < 20) {
        const sentAt = performance.now();
        const record = (name: string | undefined): void => {
          records.push({ sentAt, doneAt: performance.now(), name });
        };
        const p = echoProbe(lab, 'client', 'tcp', FIP, 80, 1000).then(
          (reply) => record(reply?.name),
          () => record(undefined),
        );
        inFlight.add(p);
        void p.finally(() => inFlight.delete(p));
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
    const deadline = Date.now() + 8000;
    for (;;) {
      const first = firstBe2(records);
      if (first !== undefined && performance.now() - first.doneAt > 300) break;
      if (Date.now() > deadline) break;
      await sleep(20);
    }
    await finish();
    const first = firstBe2(records);
    // By start time: the last probe be1 answered that was started before be2's first.
    const lastBe1 = records
      .filter((r) => r.name === 'be1' && (first === undefined || r.sentAt < first.sentAt))
      .reduce((latest, r) => Math.max(latest, r.sentAt), -Infinity);
    const ms = (t: number): number => Math.round(t);
    return {
      probes: records.length,
      byBe1: records.filter((r) => r.name === 'be1').length,
      byBe2: records.filter((r) => r.name === 'be2').length,
      failed: records.filter((r) => r.name === undefined).length,
      sinceSentMs: first ? ms(first.doneAt - sentAt) : NaN,
      sinceReturnedMs: first ? ms(first.doneAt - returnedAt) : NaN,
      switchWindowMs: first && Number.isFinite(lastBe1) ? ms(first.sentAt - lastBe1) : NaN,
    };
  } finally {
    await finish();
  }
}

/** The probe be2 answered first (by answer time). */
function firstBe2(records: readonly ProbeRecord[]): ProbeRecord | undefined {
  let first: ProbeRecord | undefined;
  for (const r of records) if (r.name === 'be2' && (!first || r.doneAt < first.doneAt)) first = r;
  return first;
}

/** The interruption line: the figure in ms, whether any probe failed, and the resolution. */
export function interruption(m: MoveMeasurement): string {
  const figure =
    m.sinceReturnedMs >= 0
      ? `${m.sinceReturnedMs} ms from the move API call returning to the first answer of be2`
      : `0 ms: be2 answered ${-m.sinceReturnedMs} ms before the API's response reached the CLI`;
  const failed =
    m.failed === 0
      ? 'no probe failed, be1 answered every one until be2 took over'
      : `${m.failed} of ${m.probes} probes failed`;
  return `${figure}; ${failed} (the switch fell between two probes started ${m.switchWindowMs} ms apart)`;
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

/** SIGTERM, then SIGKILL after 5 s; resolves once the process has exited. */
async function stopProcess(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(timer);
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
        'Builds a throwaway lab of network namespaces, runs a real ipferry agent on its gateway\n' +
        'and walks floating IPs through their life with the CLI, probing real packets between\n' +
        'the steps. Needs root; touches nothing outside the lab; exits non-zero on failure.\n',
    );
  } else {
    const result = await runDemo(values['no-color'] ? { color: false } : {});
    process.exitCode = result.ok ? 0 : 1;
  }
}
