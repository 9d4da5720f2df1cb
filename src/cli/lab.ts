/**
 * `ipferry lab …`: throwaway labs of network namespaces to try ipferry by hand (src/lab/labs.ts,
 * src/lab/lab-up.ts). Local only: no agent API, so no --server or token flags; root for
 * everything but `list`. Handlers return data; the printers below turn it into text.
 */
import { Argument, Command, InvalidArgumentError, Option } from 'commander';
import { IpferryError } from '../core/errors.js';
import { labUp, MAX_FLEET_AGENTS_PER_SITE } from '../lab/lab-up.js';
import {
  type DownReport,
  labDown,
  labDownAll,
  labPlace,
  labProbe,
  type LabPlace,
  type LabState,
  type LabSummary,
  listLabs,
  type ProbeResult,
  requireRoot,
  requireState,
  SCENARIOS,
  type ScenarioName,
  checkLabName,
  type TunnelDriver,
} from '../lab/labs.js';
import { FLEET } from '../lab/scenarios.js';
import type { CliContext } from './context.js';
import { cell, table, terminalText } from './format.js';
import { port } from './options.js';
import { UsageError } from './exit.js';

interface LabFlags {
  readonly stateDir?: string;
  readonly json?: boolean;
}

interface UpFlags extends LabFlags {
  readonly name?: string;
  readonly agents?: boolean;
  readonly tunnel?: TunnelDriver;
  readonly perSite?: number;
}

interface ProbeFlags extends LabFlags {
  readonly port?: number;
  readonly udp?: boolean;
  readonly count?: number;
}

interface DownFlags extends LabFlags {
  readonly all?: boolean;
}

function intIn(min: number, max: number): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (!/^\d+$/.test(value) || n < min || n > max) {
      throw new InvalidArgumentError(`Expected a whole number from ${min} to ${max}.`);
    }
    return n;
  };
}

/** `cloud-home` → `cloudhome`: lab names have no `-` (see LAB_NAME). */
export function defaultLabName(scenario: ScenarioName): string {
  return scenario.replace(/-/g, '');
}

// ---------------------------------------------------------------------------------------------
// Printers

export function printUp(s: LabState): string {
  const lines = [`lab ${s.name} is up: ${s.scenario}, ${s.title}`, ''];
  lines.push(
    table(
      ['host', 'namespace', 'addresses', 'role'],
      s.hosts.map((h) => [h.name, h.namespace, cell(h.addresses.join(' ')), cell(h.role)]),
    ).trimEnd(),
  );
  lines.push('');
  if (s.pool) {
    const ranges = [s.pool.v4, s.pool.v6].filter((r) => r !== undefined).join(', ');
    lines.push(`routed:       ${ranges} to ${s.pool.routedTo}`);
  }
  // The pool the agents use is a part of what is routed, plus the gateway's own address.
  if (s.agentPool) {
    const p = s.agentPool;
    const shared = p.shared.length > 0 ? `, shared ${p.shared.join(', ')}` : '';
    lines.push(`pool:         ${p.name} on ${p.gateway}: ${p.entries.join(', ')}${shared}`);
  }
  lines.push(
    `echo servers: tcp/${s.echo.tcp} and udp/${s.echo.udp} on ${s.echo.hosts.join(', ')} (answer "NAME SOURCE")`,
  );
  if (s.etcd) lines.push(`etcd:         ${s.etcd.url}`);
  for (const a of s.agents) {
    lines.push(`agent ${a.node}: ${a.url}, token ${a.tokenFile}, log ${a.log}`);
  }
  if (!s.options.agents) {
    lines.push(`agents:       none (lab up ${s.scenario} --agents starts them)`);
  }
  lines.push(`enter a host: ip netns exec ${s.prefix}HOST bash`);
  lines.push(`state:        ${s.dir}.json; logs in ${s.dir}/logs`);
  if (s.next.length > 0) {
    lines.push('', 'try:');
    for (const step of s.next) lines.push(`  ${step}`);
  }
  lines.push('', `remove it with: ipferry lab down ${s.name}`);
  return lines.join('\n') + '\n';
}

export function printProbe(r: ProbeResult): string {
  const target = r.to === r.address ? r.address : `${r.to} (${r.address})`;
  const outcome = (a: ProbeResult['attempts'][number]): string =>
    a.answeredBy !== undefined
      ? `${a.answeredBy} answered, saw ${a.sawAddress ?? '?'}`
      : a.reply !== undefined
        ? `answered, not an echo server: ${JSON.stringify(a.reply)}`
        : a.connected === true
          ? 'connected, nothing came back: not an echo server'
          : 'no answer';
  return (
    r.attempts
      .map((a) => `${r.from} → ${target} ${r.protocol}/${r.port}: ${outcome(a)} (${a.ms} ms)`)
      .join('\n') + '\n'
  );
}

export function printList(labs: readonly LabSummary[]): string {
  if (labs.length === 0) return 'no labs\n';
  return table(
    ['name', 'scenario', 'condition', 'namespaces', 'processes', 'agents', 'created'],
    labs.map((l) => [
      l.name,
      cell(l.scenario),
      l.condition,
      l.namespaces.expected === undefined
        ? String(l.namespaces.present)
        : `${l.namespaces.present}/${l.namespaces.expected}`,
      l.processes === undefined
        ? cell(undefined)
        : `${l.processes.running}/${l.processes.expected}`,
      String(l.agents),
      cell(l.createdAt),
    ]),
  );
}

export function printDown(reports: readonly DownReport[]): string {
  if (reports.length === 0) return 'no labs\n';
  return (
    reports
      .map(
        (r) =>
          `lab ${r.name} removed: ${r.processes} process(es) stopped, ${r.namespaces.length} namespace(s) deleted, ${r.sockets} socket(s) removed${r.hadState ? '' : ' (it had no state file)'}`,
      )
      .join('\n') + '\n'
  );
}

// ---------------------------------------------------------------------------------------------

function place(flags: LabFlags): LabPlace {
  return labPlace(process.env, flags.stateDir);
}

function checkUpFlags(scenario: ScenarioName, flags: UpFlags): void {
  const path = 'ipferry lab up';
  if (flags.tunnel !== undefined && scenario !== 'old-new' && scenario !== 'cloud-home') {
    throw new UsageError('--tunnel is for the scenarios old-new and cloud-home', path);
  }
  if (flags.perSite !== undefined && scenario !== 'fleet') {
    throw new UsageError('--per-site is for the scenario fleet', path);
  }
  const perSite = flags.perSite ?? FLEET.defaultPerSite;
  if (scenario === 'fleet' && flags.agents === true && perSite > MAX_FLEET_AGENTS_PER_SITE) {
    throw new UsageError(
      `--agents runs at most ${MAX_FLEET_AGENTS_PER_SITE} agents per site (each is a Node process of about 110 MB); use a smaller --per-site`,
      path,
    );
  }
}

function stateDirOption(): Option {
  return new Option(
    '--state-dir <dir>',
    'where lab state files live (env IPFERRY_LAB_DIR, default /run/ipferry-lab)',
  );
}

function jsonOption(): Option {
  return new Option('--json', 'print JSON instead of text');
}

export function labCommand(ctx: CliContext): Command {
  const lab = new Command('lab').description(
    'Throwaway labs of network namespaces to try ipferry in (root)',
  );

  lab
    .command('up')
    .description('Build a lab: namespaces, echo servers and, with --agents, real agents')
    .addArgument(new Argument('<scenario>', 'what to build').choices(SCENARIOS))
    .option('--name <name>', 'name of the lab (default: the scenario without "-")')
    .option('--agents', 'also start agents (gateway on SQLite, remotes joined; etcd for fleet)')
    .addOption(
      new Option('--tunnel <driver>', 'tunnel of the agents (old-new, cloud-home)').choices([
        'wireguard',
        'tinc',
      ]),
    )
    .option(
      '--per-site <n>',
      `fleet members per site (fleet; default ${FLEET.defaultPerSite})`,
      intIn(1, FLEET.maxPerSite),
    )
    .addOption(stateDirOption())
    .addOption(jsonOption())
    .action(async (scenario: ScenarioName, flags: UpFlags) => {
      checkUpFlags(scenario, flags);
      const name = checkLabName(flags.name ?? defaultLabName(scenario));
      const where = place(flags);
      requireRoot();
      const state = await labUp(
        where,
        {
          scenario,
          name,
          agents: flags.agents === true,
          ...(flags.tunnel === undefined ? {} : { tunnel: flags.tunnel }),
          ...(flags.perSite === undefined ? {} : { perSite: flags.perSite }),
        },
        // Progress goes to stderr, past ctx.print: written for the terminal as all output is.
        (line) => ctx.io.err(`lab ${name}: ${terminalText(line)}\n`),
      );
      ctx.print(state, printUp);
    });

  lab
    .command('show')
    .description('Show what a lab holds, as `lab up` printed it')
    .argument('<name>', 'the lab')
    .addOption(stateDirOption())
    .addOption(jsonOption())
    .action((name: string, flags: LabFlags) => {
      ctx.print(requireState(place(flags), checkLabName(name)), printUp);
    });

  lab
    .command('probe')
    .description('Ask an echo server from a host of the lab: who answered, which source it saw')
    .argument('<name>', 'the lab')
    .argument('<from>', 'the host to probe from')
    .argument('<to>', 'a host of the lab or an IP address (a floating IP, say)')
    .option('--port <port>', 'port (default: 80 for TCP, 5353 for UDP)', port)
    .option('--udp', 'UDP instead of TCP')
    .option('--count <n>', 'how many probes, one after the other (default 1)', intIn(1, 1000))
    .addOption(stateDirOption())
    .addOption(jsonOption())
    .action(async (name: string, from: string, to: string, flags: ProbeFlags) => {
      const where = place(flags);
      requireRoot();
      const result = await labProbe(where, checkLabName(name), {
        from,
        to,
        protocol: flags.udp === true ? 'udp' : 'tcp',
        ...(flags.port === undefined ? {} : { port: flags.port }),
        ...(flags.count === undefined ? {} : { count: flags.count }),
      });
      ctx.print(result, printProbe);
      if (result.answered === 0) {
        throw new IpferryError('IPF_E_LAB_NO_ANSWER', {
          protocol: result.protocol,
          port: result.port,
          address: result.address,
          from: result.from,
        });
      }
    });

  lab
    .command('list')
    .description('Labs that exist (state files and namespaces), and whether they are whole')
    .addOption(stateDirOption())
    .addOption(jsonOption())
    .action(async (flags: LabFlags) => {
      ctx.print(await listLabs(place(flags)), printList);
    });

  lab
    .command('down')
    .description('Stop and remove a lab, also what a crashed `lab up` left')
    .argument('[name]', 'the lab')
    .option('--all', 'every lab')
    .addOption(stateDirOption())
    .addOption(jsonOption())
    .action(async (name: string | undefined, flags: DownFlags) => {
      if ((name === undefined) === (flags.all !== true)) {
        throw new UsageError('give a lab NAME or --all', 'ipferry lab down');
      }
      const where = place(flags);
      requireRoot();
      const reports =
        name === undefined ? await labDownAll(where) : [await labDown(where, checkLabName(name))];
      ctx.print(reports, printDown);
    });

  return lab;
}
