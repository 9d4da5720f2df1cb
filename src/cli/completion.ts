/**
 * Shell completion (`ipferry completion bash|zsh|fish`) and the man page, both generated from
 * the commander program itself: every command, argument and flag comes from the tree that parses
 * the command line, so nothing is listed by hand and nothing can fall out of step.
 */
import { Argument, Command, type Option } from 'commander';

export interface CliFlag {
  readonly long?: string;
  readonly short?: string;
  readonly takesValue: boolean;
  readonly valueName?: string;
  readonly choices?: readonly string[];
  readonly description: string;
}

export interface CliArgument {
  readonly name: string;
  readonly required: boolean;
  readonly variadic: boolean;
  readonly choices?: readonly string[];
}

export interface CliCommand {
  /** Words from the program's name down: `['ipferry', 'fip', 'move']`. */
  readonly path: readonly string[];
  readonly description: string;
  readonly flags: readonly CliFlag[];
  readonly args: readonly CliArgument[];
  readonly commands: readonly CliCommand[];
}

const HELP: CliFlag = {
  long: '--help',
  short: '-h',
  takesValue: false,
  description: 'display help for command',
};

/** The program as plain data: what both the completion scripts and the man page are made of. */
export function describeProgram(program: Command): CliCommand {
  return describe(program, [program.name()]);
}

function describe(command: Command, path: readonly string[]): CliCommand {
  const flags = command.options.filter((o) => !o.hidden).map(describeFlag);
  return {
    path,
    description: command.description(),
    flags: flags.some((f) => f.long === '--help') ? flags : [...flags, HELP],
    args: command.registeredArguments.map((a) => ({
      name: a.name(),
      required: a.required,
      variadic: a.variadic,
      ...(a.argChoices ? { choices: [...a.argChoices] } : {}),
    })),
    commands: command.commands.map((c) => describe(c, [...path, c.name()])),
  };
}

function describeFlag(option: Option): CliFlag {
  const valueName = /[<[]([^>\]]+)[>\]]/.exec(option.flags)?.[1];
  return {
    ...(option.long ? { long: option.long } : {}),
    ...(option.short ? { short: option.short } : {}),
    takesValue: option.required || option.optional,
    ...(valueName ? { valueName } : {}),
    ...(option.argChoices ? { choices: [...option.argChoices] } : {}),
    description: option.description,
  };
}

/** Every command of the tree, the tree's root first. */
export function allCommands(root: CliCommand): CliCommand[] {
  return [root, ...root.commands.flatMap(allCommands)];
}

function flagNames(flag: CliFlag): string[] {
  return [flag.short, flag.long].filter((n): n is string => n !== undefined);
}

// ---------------------------------------------------------------------------------------------
// Quoting. Command and flag names come from the program, but they are quoted all the same, so a
// description or choice with a quote or `$` in it can never become shell code.

/** POSIX shell (bash, zsh) single quotes. */
function sh(text: string): string {
  return `'${text.replaceAll("'", `'\\''`)}'`;
}

/** fish single quotes: only `\` and `'` are special inside them. */
function fish(text: string): string {
  return `'${text.replaceAll('\\', '\\\\').replaceAll("'", "\\'")}'`;
}

/**
 * First clause of a description, on one line (what a completion menu has room for), cut before
 * a parenthesis it would leave open.
 */
function brief(text: string): string {
  const line = text.replace(/\s+/g, ' ').trim();
  const end = line.search(/[.;:](\s|$)/);
  let cut = end > 0 ? line.slice(0, end) : line;
  while ((cut.match(/\(/g) ?? []).length > (cut.match(/\)/g) ?? []).length) {
    cut = cut.slice(0, cut.lastIndexOf('('));
  }
  return cut.trim();
}

// ---------------------------------------------------------------------------------------------
// The tables every script consults: a command's subcommands, its flags, which of them take a
// value, and that value's choices. The scripts walk the words typed so far through them.

interface Tables {
  readonly subcommands: ReadonlyMap<string, readonly string[]>;
  readonly flags: ReadonlyMap<string, readonly string[]>;
  readonly valued: ReadonlyMap<string, readonly string[]>;
  readonly choices: ReadonlyMap<string, ReadonlyMap<string, readonly string[]>>;
}

function tables(root: CliCommand): Tables {
  const subcommands = new Map<string, string[]>();
  const flags = new Map<string, string[]>();
  const valued = new Map<string, string[]>();
  const choices = new Map<string, Map<string, readonly string[]>>();
  for (const command of allCommands(root)) {
    const key = command.path.join(' ');
    subcommands.set(
      key,
      command.commands.map((c) => c.path.at(-1)!),
    );
    flags.set(key, command.flags.flatMap(flagNames));
    valued.set(key, command.flags.filter((f) => f.takesValue).flatMap(flagNames));
    const byFlag = new Map<string, readonly string[]>();
    for (const flag of command.flags) {
      if (flag.choices) for (const name of flagNames(flag)) byFlag.set(name, flag.choices);
    }
    const argChoices = command.args.find((a) => a.choices)?.choices;
    if (argChoices) byFlag.set('', argChoices);
    choices.set(key, byFlag);
  }
  return { subcommands, flags, valued, choices };
}

// ---------------------------------------------------------------------------------------------
// bash

export function bashCompletion(root: CliCommand): string {
  const t = tables(root);
  const name = root.path[0]!;
  const fn = `_${name}`;
  const listCase = (table: ReadonlyMap<string, readonly string[]>): string =>
    [...table]
      .filter(([, words]) => words.length > 0)
      .map(([path, words]) => `    ${sh(path)}) printf '%s\\n' ${words.map(sh).join(' ')} ;;`)
      .join('\n');
  const choiceCase = [...t.choices]
    .flatMap(([path, byFlag]) =>
      [...byFlag].map(
        ([flag, words]) =>
          `    ${sh(`${path}|${flag}`)}) printf '%s\\n' ${words.map(sh).join(' ')} ;;`,
      ),
    )
    .join('\n');
  return `# bash completion for ${name}, generated from its commands by \`${name} completion bash\`.
# Install: ${name} completion bash > /etc/bash_completion.d/${name}  (or source it from ~/.bashrc)

${fn}_subcommands() {
  case "$1" in
${listCase(t.subcommands)}
  esac
}

${fn}_flags() {
  case "$1" in
${listCase(t.flags)}
  esac
}

${fn}_valued() {
  case "$1" in
${listCase(t.valued)}
  esac
}

# Choices of a flag's value ("PATH|FLAG"), or of a command's argument ("PATH|").
${fn}_choices() {
  case "$1" in
${choiceCase}
  esac
}

${fn}_has() {
  local word
  while IFS= read -r word; do [[ $word == "$2" ]] && return 0; done < <("$1" "$3")
  return 1
}

${fn}() {
  local cur prev path word i skip=0
  cur="\${COMP_WORDS[COMP_CWORD]}"
  prev=""
  ((COMP_CWORD > 0)) && prev="\${COMP_WORDS[COMP_CWORD - 1]}"
  path=${sh(name)}
  for ((i = 1; i < COMP_CWORD; i++)); do
    word="\${COMP_WORDS[i]}"
    if ((skip)); then
      skip=0
      continue
    fi
    case "$word" in
      -*) ${fn}_has ${fn}_valued "$word" "$path" && skip=1 ;;
      *) ${fn}_has ${fn}_subcommands "$word" "$path" && path="$path $word" ;;
    esac
  done
  local IFS=$'\\n' words
  if ((skip)); then
    words="$(${fn}_choices "$path|$prev")"
    if [[ -n $words ]]; then
      mapfile -t COMPREPLY < <(compgen -W "$words" -- "$cur")
    else
      mapfile -t COMPREPLY < <(compgen -f -- "$cur")
    fi
    return 0
  fi
  if [[ $cur == -* ]]; then
    mapfile -t COMPREPLY < <(compgen -W "$(${fn}_flags "$path")" -- "$cur")
    return 0
  fi
  words="$(${fn}_subcommands "$path")"
  [[ -z $words ]] && words="$(${fn}_choices "$path|")"
  if [[ -n $words ]]; then
    mapfile -t COMPREPLY < <(compgen -W "$words" -- "$cur")
  else
    mapfile -t COMPREPLY < <(compgen -f -- "$cur")
  fi
  return 0
}

complete -o filenames -F ${fn} ${name}
`;
}

// ---------------------------------------------------------------------------------------------
// zsh

export function zshCompletion(root: CliCommand): string {
  const name = root.path[0]!;
  const fn = `_${name}`;
  const t = tables(root);
  /** zsh's _describe takes `word:description`; a colon in the word is escaped. */
  const entry = (word: string, description: string): string =>
    sh(`${word.replaceAll(':', '\\:')}:${brief(description)}`);
  const describedCase = (pick: (c: CliCommand) => string[]): string =>
    allCommands(root)
      .map((c) => [c.path.join(' '), pick(c)] as const)
      .filter(([, entries]) => entries.length > 0)
      .map(([path, entries]) => `    ${sh(path)}) reply=(${entries.join(' ')}) ;;`)
      .join('\n');
  const subcommandCase = describedCase((c) =>
    c.commands.map((s) => entry(s.path.at(-1)!, s.description)),
  );
  const flagCase = describedCase((c) =>
    c.flags.flatMap((f) => flagNames(f).map((n) => entry(n, f.description))),
  );
  const plainCase = (table: ReadonlyMap<string, readonly string[]>): string =>
    [...table]
      .filter(([, words]) => words.length > 0)
      .map(([path, words]) => `    ${sh(path)}) reply=(${words.map(sh).join(' ')}) ;;`)
      .join('\n');
  const choiceCase = [...t.choices]
    .flatMap(([path, byFlag]) =>
      [...byFlag].map(
        ([flag, words]) => `    ${sh(`${path}|${flag}`)}) reply=(${words.map(sh).join(' ')}) ;;`,
      ),
    )
    .join('\n');
  return `#compdef ${name}
# zsh completion for ${name}, generated from its commands by \`${name} completion zsh\`.
# Install: ${name} completion zsh > "\${fpath[1]}/_${name}"  (or eval it from ~/.zshrc after compinit)

${fn}_subcommands() {
  reply=()
  case "$1" in
${subcommandCase}
  esac
}

${fn}_flags() {
  reply=()
  case "$1" in
${flagCase}
  esac
}

${fn}_valued() {
  reply=()
  case "$1" in
${plainCase(t.valued)}
  esac
}

${fn}_choices() {
  reply=()
  case "$1" in
${choiceCase}
  esac
}

${fn}() {
  local path=${sh(name)} word skip=0 i
  local -a reply subs
  for ((i = 2; i < CURRENT; i++)); do
    word="\${words[i]}"
    if ((skip)); then
      skip=0
      continue
    fi
    if [[ $word == -* ]]; then
      ${fn}_valued "$path"
      ((\${reply[(Ie)$word]})) && skip=1
    else
      ${fn}_subcommands "$path"
      subs=(\${reply%%:*})
      ((\${subs[(Ie)$word]})) && path="$path $word"
    fi
  done
  if ((skip)); then
    ${fn}_choices "$path|\${words[CURRENT - 1]}"
    if ((\${#reply})); then compadd -a reply; else _files; fi
    return
  fi
  if [[ $PREFIX == -* ]]; then
    ${fn}_flags "$path"
    _describe -t flags 'flag' reply
    return
  fi
  ${fn}_subcommands "$path"
  if ((\${#reply})); then
    _describe -t commands 'command' reply
    return
  fi
  ${fn}_choices "$path|"
  if ((\${#reply})); then compadd -a reply; else _files; fi
}

if [[ $zsh_eval_context[-1] == loadautofunc ]]; then
  ${fn} "$@"
else
  compdef ${fn} ${name}
fi
`;
}

// ---------------------------------------------------------------------------------------------
// fish

export function fishCompletion(root: CliCommand): string {
  const name = root.path[0]!;
  const fn = `__${name}`;
  const t = tables(root);
  const switchCase = (table: ReadonlyMap<string, readonly string[]>): string =>
    [...table]
      .filter(([, words]) => words.length > 0)
      .map(
        ([path, words]) =>
          `        case ${fish(path)}\n            printf '%s\\n' ${words.map(fish).join(' ')}`,
      )
      .join('\n');
  const lines: string[] = [];
  for (const command of allCommands(root)) {
    const at = `-n ${fish(`test (${fn}_path) = ${fish(command.path.join(' '))}`)}`;
    for (const sub of command.commands) {
      lines.push(
        `complete -c ${name} ${at} -a ${fish(sub.path.at(-1)!)} -d ${fish(brief(sub.description))}`,
      );
    }
    const argChoices = command.args.find((a) => a.choices)?.choices;
    if (argChoices) lines.push(`complete -c ${name} ${at} -a ${fish(argChoices.join(' '))}`);
    else if (command.commands.length === 0 && command.args.length > 0) {
      lines.push(`complete -c ${name} ${at} -F`);
    }
    for (const flag of command.flags) {
      const names = [
        ...(flag.long ? [`-l ${fish(flag.long.slice(2))}`] : []),
        ...(flag.short ? [`-s ${fish(flag.short.slice(1))}`] : []),
      ];
      const value = flag.choices
        ? ` -x -a ${fish(flag.choices.join(' '))}`
        : flag.takesValue
          ? ' -r -F'
          : '';
      lines.push(
        `complete -c ${name} ${at} ${names.join(' ')}${value} -d ${fish(brief(flag.description))}`,
      );
    }
  }
  return `# fish completion for ${name}, generated from its commands by \`${name} completion fish\`.
# Install: ${name} completion fish > ~/.config/fish/completions/${name}.fish

function ${fn}_subcommands
    switch $argv[1]
${switchCase(t.subcommands)}
    end
end

function ${fn}_valued
    switch $argv[1]
${switchCase(t.valued)}
    end
end

# The command the words typed so far name ('${name} fip move'), skipping flags and their values.
function ${fn}_path
    set -l path ${fish(name)}
    set -l skip 0
    for word in (commandline -opc)[2..-1]
        if test $skip = 1
            set skip 0
            continue
        end
        switch $word
            case '-*'
                contains -- $word (${fn}_valued $path); and set skip 1
            case '*'
                contains -- $word (${fn}_subcommands $path); and set path "$path $word"
        end
    end
    echo $path
end

complete -c ${name} -f
${lines.join('\n')}
`;
}

// ---------------------------------------------------------------------------------------------
// The command

export const SHELLS = ['bash', 'zsh', 'fish'] as const;
export type Shell = (typeof SHELLS)[number];

export function completionScript(shell: Shell, root: CliCommand): string {
  switch (shell) {
    case 'bash':
      return bashCompletion(root);
    case 'zsh':
      return zshCompletion(root);
    case 'fish':
      return fishCompletion(root);
  }
}

/** `ipferry completion SHELL`: the script for SHELL, made from the program it belongs to. */
export function completionCommand(out: (text: string) => void): Command {
  return new Command('completion')
    .description(
      'Print the shell completion script for bash, zsh or fish (the package installs all three)',
    )
    .addArgument(new Argument('<shell>', 'the shell').choices(SHELLS))
    .action((shell: Shell, _flags: unknown, self: Command) => {
      let root: Command = self;
      while (root.parent) root = root.parent;
      out(completionScript(shell, describeProgram(root)));
    });
}

// ---------------------------------------------------------------------------------------------
// The man page (ipferry.1), in the man(7) macros

/** Text for roff: backslashes escaped, and no line may start with a control character. */
function roff(text: string): string {
  return text
    .replace(/\s+/g, ' ')
    .trim()
    .replaceAll('\\', '\\e')
    .replaceAll('-', '\\-')
    .replace(
      /[^\x20-\x7e]/gu,
      (c) => `\\[u${c.codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')}]`,
    )
    .replace(/^([.'])/, '\\&$1');
}

function flagSynopsis(flag: CliFlag): string {
  const names = flagNames(flag)
    .map((n) => `\\fB${roff(n)}\\fR`)
    .join(', ');
  if (!flag.takesValue) return names;
  const value = flag.choices ? flag.choices.join('|') : (flag.valueName ?? 'value');
  return `${names} \\fI${roff(value)}\\fR`;
}

function argSynopsis(arg: CliArgument): string {
  const text = `\\fI${roff(arg.name)}\\fR${arg.variadic ? '...' : ''}`;
  return arg.required ? text : `[${text}]`;
}

function flagItems(flags: readonly CliFlag[]): string[] {
  return flags.flatMap((f) => ['.TP', flagSynopsis(f), roff(f.description)]);
}

/**
 * The man page of the whole program: every command with its arguments and flags, from the same
 * tree that parses them. Flags every API command shares with the program are listed once, under
 * GLOBAL FLAGS; --help, on every command, once too.
 */
export function manPage(root: CliCommand, version: string): string {
  const name = root.path[0]!;
  const global = new Set(root.flags.flatMap(flagNames));
  const own = (c: CliCommand): CliFlag[] =>
    c.flags.filter((f) => f.long !== '--help' && !flagNames(f).some((n) => global.has(n)));
  const sections = allCommands(root)
    .slice(1)
    .flatMap((c) => [
      `.SS ${c.path.map(roff).join(' ')}`,
      `.B ${c.path.map(roff).join(' ')}`,
      ...(c.args.length > 0 || own(c).length > 0 || c.commands.length > 0
        ? [
            [
              c.commands.length > 0 ? '\\fIcommand\\fR' : '',
              own(c).length > 0 ? '[\\fIflags\\fR]' : '',
              ...c.args.map(argSynopsis),
            ]
              .filter((s) => s !== '')
              .join(' '),
          ]
        : []),
      '.PP',
      roff(c.description),
      ...flagItems(own(c)),
    ]);
  return [
    `.TH ${name.toUpperCase()} 1 "" "${name} ${roff(version)}" "${name} manual"`,
    '.SH NAME',
    `${name} \\- ${roff(root.description)}`,
    '.SH SYNOPSIS',
    `.B ${name}`,
    '[\\fIglobal flags\\fR] \\fIcommand\\fR [\\fIflags\\fR] [\\fIarguments\\fR]',
    '.SH DESCRIPTION',
    roff(
      `${name} keeps public IP addresses (floating IPs) reachable while the servers behind them move. ` +
        `\`${name} agent\` runs on each node (a gateway, a home server): it serves the HTTP API and makes the kernel match the state in its store. ` +
        'Every other command is a client of that API, or a local tool (lab, completion, tls).',
    ),
    '.SH GLOBAL FLAGS',
    roff('Given before the command, or after it on every command that calls the API.'),
    ...flagItems(root.flags.filter((f) => f.long !== '--help')),
    '.TP',
    flagSynopsis(HELP),
    roff(HELP.description),
    '.SH COMMANDS',
    ...sections,
    '.SH EXIT STATUS',
    '.TP',
    '0',
    'success',
    '.TP',
    '1',
    roff('the agent refused the request, or a local file failed'),
    '.TP',
    '2',
    roff('usage: an unknown command or flag, a missing argument'),
    '.TP',
    '3',
    roff('the agent could not be reached'),
    '.SH ENVIRONMENT',
    '.TP',
    '.B IPFERRY_SERVER',
    roff('the agent API URL (--server)'),
    '.TP',
    '.B IPFERRY_TOKEN_FILE',
    roff('the file holding the API token (--token-file)'),
    '.TP',
    '.B IPFERRY_TOKEN',
    roff('the API token itself, when no token file is given'),
    '.TP',
    '.B IPFERRY_CA_FILE',
    roff("the CA certificate that verifies the agent's TLS certificate (--ca-file)"),
    '.TP',
    '.B IPFERRY_NODE',
    roff('the node binary /usr/bin/ipferry runs (default: node on PATH; 20.18 or newer)'),
    '.SH FILES',
    '.TP',
    '.I /etc/ipferry/agent.yaml',
    roff('the agent configuration (ipferry-agent.service runs the agent with it)'),
    '.TP',
    '.I /etc/ipferry/tls/',
    roff('the certificate and key made by `ipferry tls init`'),
    '.TP',
    '.I /var/lib/ipferry/',
    roff("the agent's state: its store, API tokens, tunnel keys"),
    '.SH SEE ALSO',
    roff('systemctl(1), journalctl(1), nft(8), ip(8), wg(8); docs/operations.md and docs/cli.md'),
    '',
  ].join('\n');
}
