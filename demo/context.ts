/**
 * What the demo's steps share: the labs and agents it started (for teardown and its result),
 * the CLI's environment, and the ways a step shows things happening — the real CLI printed as
 * typed, probes from lab hosts said in plain words and checked.
 */
import type { ChildProcess } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  type LabAgentOptions,
  spawnLabAgent,
  stopLabAgent,
  waitHealthy,
} from '../src/lab/agents.js';
import {
  echoProbe,
  type EchoReply,
  type EchoServer,
  hostPort,
  outboundProbe,
  type Protocol,
} from '../src/lab/probe.js';
import { CLOUD_HOME as H, GATEWAY_LAN as L } from '../src/lab/scenarios.js';
import type { Lab } from '../src/lab/topology.js';
import type { WireguardDaemon } from '../src/lab/wireguard.js';
import { check, DemoFailure } from './check.js';
import { type CliResult, commandLine, type FipJson, runCli } from './cli.js';
import type { MoveMeasurement } from './move.js';
import { Output } from './output.js';

/** The floating IPs the demo walks through their life. */
export const FIP = '203.0.113.10';
export const FIP6 = '2001:db8:f::10';

/** The lab hosts' own addresses, to name them in sentences. */
const HOST_ADDRESS: Record<string, { v4: string; v6: string }> = {
  client: L.client,
  be1: L.be1,
  be2: L.be2,
  lanc: L.lanc,
  home: H.home,
  home2: H.home2,
};

/** What a probe must find: who answers, whom it saw, and why that is right. */
export interface Expect {
  readonly by: string;
  readonly sees: string;
  readonly why: string;
}

export type Target = readonly [from: string, proto: Protocol, address: string, port: number];

/** An agent the demo started, stopped at teardown. */
export interface StartedAgent {
  readonly label: string;
  readonly proc: ChildProcess;
  readonly log: string;
}

export class Demo extends Output {
  readonly startedAt = performance.now();
  /** The first lab (gatewayLan), and the second (cloudHome). */
  lab: Lab | undefined;
  homeLab: Lab | undefined;
  /** Every agent started, in order: the first lab's gw, then the cloud VM gw, home and home2. */
  readonly agents: StartedAgent[] = [];
  /** The wireguard-go daemons seen in the second lab (while the FIP was routed, and at teardown). */
  readonly wireguard: WireguardDaemon[] = [];
  workDir: string | undefined;
  /** The CLI's environment: which agent it talks to. */
  env: NodeJS.ProcessEnv = {};
  /** The client's echo server in each lab, for the outbound probes. */
  clientServer: EchoServer | undefined;
  homeClientServer: EchoServer | undefined;
  move: MoveMeasurement | undefined;
  remoteMove: MoveMeasurement | undefined;
  /** Part 2: the cloud VM's agent's API, which the CLI talks to from then on, and its directory. */
  hub = '';
  cloudDir = '';

  constructor(
    out: (line: string) => void,
    color: boolean,
    /** The first lab's namespace prefix; the second lab's is `homePrefix`, inside it. */
    readonly prefix: string,
  ) {
    super(out, color);
  }

  get homePrefix(): string {
    return `${this.prefix}2-`;
  }

  live(): Lab {
    check(this.lab, 'the lab is not built');
    return this.lab;
  }

  second(): Lab {
    check(this.homeLab, 'the second lab is not built');
    return this.homeLab;
  }

  sawDaemons(daemons: readonly WireguardDaemon[]): void {
    for (const d of daemons) {
      if (!this.wireguard.some((w) => w.pid === d.pid)) this.wireguard.push(d);
    }
  }

  /** Runs the real CLI; prints `$ ipferry …` and its output; fails unless it exits as expected. */
  async ipferry(
    args: readonly string[],
    opts: { expectFail?: boolean; quiet?: boolean; comment?: string } = {},
  ): Promise<CliResult> {
    const line = commandLine(args);
    if (!opts.quiet)
      this.command(line, opts.comment ?? (opts.expectFail ? 'expected to fail' : ''));
    const result = await runCli(args, this.env);
    if (!opts.quiet) {
      if (result.stdout !== '') this.say(result.stdout);
      if (result.stderr !== '') this.say(result.stderr);
    }
    if (opts.expectFail) check(result.code !== 0, `${line} should have been refused`);
    else check(result.code === 0, `${line} exited with ${result.code}: ${result.stderr.trim()}`);
    return result;
  }

  /** Polls `fip show --json` (bounded) until the agent has realised the FIP's revision. */
  async waitActive(address: string, timeoutMs = 15_000): Promise<void> {
    const started = Date.now();
    let last: FipJson = {};
    while (Date.now() - started < timeoutMs) {
      const shown = await this.ipferry(['fip', 'show', address, '--json'], { quiet: true });
      last = JSON.parse(shown.stdout) as FipJson;
      const s = last.status;
      if (s?.state === 'ACTIVE' && s.stale !== true && s.revision === last.revision) {
        this.ok(`${address} is ACTIVE: the agent applied revision ${s.revision} to gw's kernel`);
        return;
      }
      check(s?.state !== 'ERROR', `${address} is in ERROR: ${s?.message ?? '(no message)'}`);
      await sleep(100);
    }
    throw new DemoFailure(
      `${address} not ACTIVE after ${timeoutMs} ms (status ${JSON.stringify(last.status)})`,
    );
  }

  /**
   * Starts `ipferry agent …` in the background (printed as a person would type it), its output
   * in `log`, and waits (bounded) until its API answers.
   */
  async startAgent(
    label: string,
    options: LabAgentOptions,
    log: string,
    comment = '',
  ): Promise<ChildProcess> {
    const agent = spawnLabAgent(options, { log, env: this.env });
    this.agents.push({ label, proc: agent.proc, log });
    this.command(`${commandLine(agent.argv)} >${log} 2>&1 &`, comment);
    await waitHealthy(agent, 15_000);
    return agent.proc;
  }

  /** SIGTERM, SIGKILL after 5 s: the demo shows an agent stopping cleanly. */
  stopAgent(agent: StartedAgent): Promise<void> {
    return stopLabAgent(agent.proc, 5000);
  }

  /**
   * Asks an echo server from a lab host (of the first lab unless `where` says otherwise); prints
   * who answered and whom it saw, and checks both.
   */
  async probe(
    [from, proto, address, port]: Target,
    expect: Expect,
    where: Lab = this.live(),
  ): Promise<EchoReply> {
    const reply = await echoProbe(where, from, proto, address, port, 2000);
    const what = route(from, proto, address, port);
    check(reply, `${what}: no answer (expected ${expect.by})`);
    check(
      reply.name === expect.by && reply.address === expect.sees,
      `${what}: answered by ${reply.name}, which saw ${reply.address} (expected ${expect.by} seeing ${expect.sees})`,
    );
    this.ok(`${what} answered by ${reply.name}, which saw ${reply.address} (${expect.why})`);
    return reply;
  }

  /**
   * Checks that nothing answers (a short timeout: an answer comes within milliseconds), for
   * several targets at once, printed in order: each waits out its whole timeout, so one after
   * the other they would only make the demo slower.
   */
  async silent(why: string, targets: readonly Target[], where: Lab = this.live()): Promise<void> {
    const replies = await Promise.all(
      targets.map(([from, proto, address, port]) =>
        echoProbe(where, from, proto, address, port, 800),
      ),
    );
    for (const [i, [from, proto, address, port]] of targets.entries()) {
      const what = route(from, proto, address, port);
      const reply = replies[i];
      check(reply === undefined, `${what}: ${reply?.name ?? '?'} answered, expected no answer`);
      this.ok(`${why}: no answer for ${what}`);
    }
  }

  /** A host's own connection out to the client's echo server: which source did it see? */
  async outbound(
    from: string,
    expected: string,
    why: string,
    where: { lab: Lab; server: EchoServer | undefined } = {
      lab: this.live(),
      server: this.clientServer,
    },
  ): Promise<void> {
    check(where.server, 'the client has no echo server');
    const seen = await outboundProbe(where.lab, from, where.server, L.client.v4);
    const what = `${from} ${HOST_ADDRESS[from]?.v4 ?? ''} → client ${hostPort(L.client.v4, 80)}/tcp`;
    check(seen === expected, `${what}: the client saw ${seen ?? 'nothing'}, expected ${expected}`);
    this.ok(`${what}: the client saw ${seen} (${why})`);
  }
}

/** `client 198.51.100.9 → 203.0.113.10:80/tcp`: who asks (and from where), what, how. */
function route(from: string, proto: Protocol, address: string, port: number): string {
  const own = HOST_ADDRESS[from]?.[address.includes(':') ? 'v6' : 'v4'];
  return `${from}${own === undefined ? '' : ` ${own}`} → ${hostPort(address, port)}/${proto}`;
}
