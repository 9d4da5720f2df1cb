/**
 * The `ipferry` command line. `main` builds a fresh commander program per call, runs one command
 * and returns the exit code; it never calls `process.exit`, and all output goes through `io`, so
 * tests drive it in-process.
 *
 * Exit codes: 0 ok, 1 the agent refused (or a local file failed), 2 usage, 3 agent unreachable.
 */
import { Command, CommanderError, Option } from 'commander';
import { agentCommand } from '../agent/command.js';
import { DEFAULT_SERVER, DEFAULT_TOKEN_FILE } from '../core/defaults.js';
import { CliContext, processIo, type Env, type GlobalFlags, type Io } from './context.js';
import { completionCommand } from './completion.js';
import { eventsCommand } from './events.js';
import { fipCommand } from './fip.js';
import { importCommand } from './import.js';
import { floaterCommands } from './floater.js';
import { forwardCommand } from './forward.js';
import { labCommand } from './lab.js';
import { meshCommand } from './mesh.js';
import { nodeCommand } from './node.js';
import { poolCommand } from './pool.js';
import {
  EXIT_OK,
  EXIT_USAGE,
  UsageError,
  exitCodeFor,
  renderError,
  toIpferryError,
} from './exit.js';
import { planCommand } from './plan.js';
import { stateCommand } from './state.js';
import { statusCommand, versionCommand } from './status.js';
import { tlsCommand } from './tls.js';
import { VERSION } from '../version.js';

export interface MainOptions {
  /** Token file tried when neither --token-file nor IPFERRY_TOKEN is given. */
  readonly defaultTokenFile?: string;
  readonly timeoutMs?: number;
}

/**
 * The global flags, on the program (`ipferry --json fip list`) and again on every API command
 * (`ipferry fip list --json`). Options are positional so that `ipferry agent --token-file F`
 * reaches the agent's own --token-file instead of the client's.
 */
function globalOptions(): Option[] {
  return [
    new Option('--server <url>', `agent API URL (env IPFERRY_SERVER, default ${DEFAULT_SERVER})`),
    new Option(
      '--token-file <file>',
      `file holding the API token on its first line (env IPFERRY_TOKEN_FILE; else env IPFERRY_TOKEN holds the token; else ${DEFAULT_TOKEN_FILE})`,
    ),
    new Option(
      '--ca-file <file>',
      "PEM CA certificate to verify the agent's TLS certificate (env IPFERRY_CA_FILE)",
    ),
    new Option('--json', 'print JSON instead of tables (errors too, on stderr)'),
  ];
}

export function buildProgram(ctx: CliContext, version: string): Command {
  const program = new Command('ipferry')
    .description('Keep public IP addresses reachable while servers move')
    .version(version, '-V, --version', 'print the CLI version')
    .enablePositionalOptions();
  for (const option of globalOptions()) program.addOption(option);
  const api = [
    poolCommand(ctx),
    fipCommand(ctx),
    forwardCommand(ctx),
    nodeCommand(ctx),
    meshCommand(ctx),
    statusCommand(ctx),
    planCommand(ctx),
    versionCommand(ctx),
    ...floaterCommands(ctx),
    importCommand(ctx),
    eventsCommand(ctx),
  ];
  for (const command of api) {
    addGlobalOptions(command);
    program.addCommand(command);
  }
  program.addCommand(agentCommand());
  program.addCommand(stateCommand(ctx));
  program.addCommand(labCommand(ctx));
  program.addCommand(tlsCommand((text) => ctx.io.out(text)));
  program.addCommand(completionCommand((text) => ctx.io.out(text)));
  requireAfterUnknown(program);
  return program;
}

/**
 * Commander checks mandatory options before it looks for unknown ones, so a typo of a required
 * flag (`--traget 10.0.0.5`) was reported as the flag missing, hiding the typo. Here mandatory
 * options are checked in a preAction hook instead, which runs after commander has refused
 * unknown options (suggesting the flag meant) and checked the arguments.
 */
function requireAfterUnknown(command: Command): void {
  const mandatory = command.options.filter((o) => o.mandatory);
  for (const option of mandatory) option.mandatory = false;
  if (mandatory.length > 0) {
    command.hook('preAction', (self) => {
      const missing = mandatory.find((o) => self.getOptionValue(o.attributeName()) === undefined);
      if (missing) {
        self.error(`error: required option '${missing.flags}' not specified`, {
          code: 'commander.missingMandatoryOptionValue',
        });
      }
    });
  }
  for (const sub of command.commands) requireAfterUnknown(sub);
}

function addGlobalOptions(command: Command): void {
  if (command.commands.length === 0) {
    for (const option of globalOptions()) command.addOption(option);
  }
  for (const sub of command.commands) addGlobalOptions(sub);
}

export async function main(
  argv: string[],
  io: Io = processIo,
  env: Env = process.env,
  options: MainOptions = {},
): Promise<number> {
  const version = VERSION;
  // The command whose action runs; its options merged with its ancestors' are the flags.
  let active: Command | undefined;
  const ctx = new CliContext({
    io,
    env,
    flags: () => (active ? active.optsWithGlobals<GlobalFlags>() : {}),
    version,
    ...options,
  });
  const program = buildProgram(ctx, version);
  program.hook('preAction', (_program, actionCommand) => {
    active = actionCommand;
  });

  let failed: Command = program;
  configure(program, io, (command) => {
    failed = command;
  });

  const jsonRequested = (): boolean => ctx.json || argv.slice(2).includes('--json');
  try {
    await program.parseAsync(argv, { from: 'node' });
    return EXIT_OK;
  } catch (e) {
    if (e instanceof CommanderError) {
      if (e.code === 'commander.helpDisplayed' || e.code === 'commander.version') return EXIT_OK;
      // A command group run without a subcommand: commander has printed its help to stderr.
      if (e.code === 'commander.help') return e.exitCode === 0 ? EXIT_OK : EXIT_USAGE;
      const usage = new UsageError(usageSummary(e.message), commandPath(failed));
      io.err(renderError(usage, jsonRequested()));
      return EXIT_USAGE;
    }
    const error = toIpferryError(e);
    io.err(renderError(error, jsonRequested()));
    return exitCodeFor(error);
  } finally {
    await ctx.close();
  }
}

/**
 * Every command, including those added whole (`agent`), throws instead of exiting, writes through
 * `io`, and leaves error output to `main` (which reports it in the ipferry format).
 */
function configure(command: Command, io: Io, onError: (command: Command) => void): void {
  command.exitOverride().configureOutput({
    writeOut: (s) => io.out(s),
    writeErr: (s) => io.err(s),
    outputError: () => onError(command),
  });
  for (const sub of command.commands) configure(sub, io, onError);
}

/** Commander's message on one line: `unknown option '--traget' (did you mean --target?)`. */
function usageSummary(message: string): string {
  return message
    .replace(/^error: /, '')
    .replace(/\s*\n\(Did you mean (.+)\?\)\s*$/, ' (did you mean $1?)')
    .trim();
}

function commandPath(command: Command): string {
  const names: string[] = [];
  for (let c: Command | null = command; c; c = c.parent) names.unshift(c.name());
  return names.join(' ');
}
