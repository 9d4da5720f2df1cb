/**
 * The demo (`bash scripts/demo.sh`): ipferry's main job on a real kernel, in throwaway labs of
 * network namespaces built with the lab library (src/lab). Part 1 (lan.ts) walks floating IPs
 * through their life on a gateway with the real CLI and a real agent, probing from the lab's
 * hosts between the commands; part 2 (home.ts) serves a cloud VM's FIP from a home server
 * through a WireGuard tunnel and moves it to another one. Both moves are measured under a probe
 * every 10 ms (move.ts).
 *
 * Nothing outside the labs is touched: the agents' APIs listen on loopback, their state lives in
 * a temporary directory, and the kernels they change are the lab namespaces'. Everything is
 * removed at the end — agents and the wireguard-go daemons they started (by pid), namespaces,
 * directory — also when a step fails or on Ctrl-C. `runDemo()` resolves with the outcome;
 * main.ts runs it as a program that exits non-zero on failure.
 */
import { rmSync } from 'node:fs';
import { logTail } from '../src/lab/labs.js';
import { randomPrefix } from '../src/lab/netns.js';
import { killQuietly } from '../src/lab/procs.js';
import { killWireguardSync, stopWireguard, type WireguardDaemon } from '../src/lab/wireguard.js';
import { errorText } from './check.js';
import { Demo } from './context.js';
import { HOME_STEPS } from './home.js';
import { LAN_STEPS } from './lan.js';
import type { MoveMeasurement } from './move.js';
import type { Step } from './steps.js';

export type { MoveMeasurement } from './move.js';
export type { WireguardDaemon } from '../src/lab/wireguard.js';

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

type Failure = { step: string; error: string };

const STEPS: readonly Step[] = [...LAN_STEPS, ...HOME_STEPS];

/** Builds the labs, runs every step, always tears down; resolves with the outcome. */
export async function runDemo(options: DemoOptions = {}): Promise<DemoResult> {
  const out = options.out ?? ((line: string) => process.stdout.write(`${line}\n`));
  const color = options.color ?? (options.out === undefined && process.stdout.isTTY === true);
  const d = new Demo(out, color, options.prefix ?? randomPrefix('ipft-demo-'));
  const total = STEPS.length + 1; // + teardown
  const onSignal = (signal: NodeJS.Signals): void => interrupted(d, signal);
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  d.say(d.bold('ipferry demo: floating IPs on a real Linux gateway, in throwaway namespace labs'));
  d.say('Documentation and private addresses only; nothing outside the labs is touched.');
  let ran: { passed: number; failure?: Failure } = { passed: 0 };
  let problems: string[] = [];
  try {
    ran = await runSteps(d, total);
  } finally {
    problems = await teardown(d, total);
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
  let { passed, failure } = ran;
  if (problems.length === 0) passed++;
  else {
    d.failed(problems.join('; '));
    failure ??= { step: `${total} (teardown)`, error: problems.join('; ') };
  }
  finalLine(d, total, failure);
  return result(d, passed, total, failure);
}

/** Runs the steps in order and stops at the first failure, showing the agents' logs. */
async function runSteps(d: Demo, total: number): Promise<{ passed: number; failure?: Failure }> {
  for (const [index, s] of STEPS.entries()) {
    if (s.heading !== undefined) {
      d.say();
      d.say(d.bold(s.heading));
    }
    d.say();
    d.say(d.bold(`== ${index + 1}/${total}. ${s.title}`));
    try {
      await s.run(d);
    } catch (error) {
      d.failed(errorText(error));
      showAgentLogs(d);
      return {
        passed: index,
        failure: { step: `${index + 1} (${s.title})`, error: errorText(error) },
      };
    }
  }
  return { passed: STEPS.length };
}

function showAgentLogs(d: Demo): void {
  for (const a of d.agents) {
    const log = logTail(a.log, 16_384).split('\n').slice(-20).join('\n');
    if (log === '') continue;
    d.note(`the last lines of the ${a.label} agent's log:`);
    d.say(log.replace(/^/gm, '      '));
  }
}

/**
 * Stops the agents (the last started first), the second lab's wireguard-go daemons, deletes the
 * labs and the directory; resolves with what went wrong.
 */
async function teardown(d: Demo, total: number): Promise<string[]> {
  d.say();
  d.say(
    d.bold(
      `== ${total}/${total}. teardown: stop the agents and wireguard-go, delete the labs and the directory`,
    ),
  );
  const problems: string[] = [];
  const problem = (what: string) => (e: unknown) => void problems.push(`${what}: ${errorText(e)}`);
  for (const agent of [...d.agents].reverse()) {
    await d
      .stopAgent(agent)
      .then(
        () => d.ok(`${agent.label} agent pid ${agent.proc.pid} stopped`),
        problem(`${agent.label} agent`),
      );
  }
  if (d.homeLab) {
    await stopWireguard(d.homeLab).then((stopped) => {
      d.sawDaemons(stopped);
      for (const w of stopped) {
        d.ok(`wireguard-go pid ${w.pid} (${w.name} in ${w.ns}) stopped, its socket removed`);
      }
      if (stopped.length === 0) d.ok('no wireguard-go runs in the second lab any more');
    }, problem('wireguard-go'));
    await d.homeLab
      .destroy()
      .then(
        () => d.ok(`namespaces ${d.homePrefix}* deleted, their processes stopped`),
        problem('second lab'),
      );
  }
  if (d.lab) {
    await d.lab
      .destroy()
      .then(() => d.ok(`namespaces ${d.prefix}* deleted, their processes stopped`), problem('lab'));
  }
  if (d.workDir !== undefined) {
    rmSync(d.workDir, { recursive: true, force: true });
    d.ok(`${d.workDir} removed`);
  }
  return problems;
}

/**
 * Ctrl-C / SIGTERM: the Lab deletes its namespaces in its own handler too; the agents, the
 * wireguard-go daemons' sockets and the directory are ours. Synchronous, then exit: the async
 * teardown would not get to run.
 */
function interrupted(d: Demo, signal: NodeJS.Signals): void {
  for (const { proc } of d.agents) {
    if (proc.pid !== undefined && proc.exitCode === null && proc.signalCode === null) {
      killQuietly(proc.pid);
    }
  }
  if (d.homeLab) killWireguardSync(d.homeLab);
  d.homeLab?.destroySync();
  d.lab?.destroySync();
  if (d.workDir !== undefined) rmSync(d.workDir, { recursive: true, force: true });
  d.out(`demo: interrupted by ${signal}; agents stopped, labs and work directory removed`);
  process.exit(signal === 'SIGINT' ? 130 : 143);
}

function finalLine(d: Demo, total: number, failure: Failure | undefined): void {
  d.say();
  const took = `${Math.round((performance.now() - d.startedAt) / 1000)} s`;
  if (failure === undefined) d.say(d.bold(d.green(`demo: all ${total} steps passed in ${took}`)));
  else d.say(d.bold(d.red(`demo: step ${failure.step} failed after ${took}: ${failure.error}`)));
}

function result(d: Demo, passed: number, total: number, failure: Failure | undefined): DemoResult {
  const pids = d.agents.flatMap(({ proc }) => (proc.pid === undefined ? [] : [proc.pid]));
  return {
    ok: failure === undefined,
    passed,
    steps: total,
    ...(failure ? { failure } : {}),
    ...(d.move ? { move: d.move } : {}),
    ...(d.remoteMove ? { remoteMove: d.remoteMove } : {}),
    prefix: d.prefix,
    homePrefix: d.homePrefix,
    ...(d.agents[0]?.proc.pid !== undefined ? { agentPid: d.agents[0].proc.pid } : {}),
    agentPids: pids,
    wireguard: d.wireguard,
  };
}
