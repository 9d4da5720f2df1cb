/**
 * `ipferry completion bash|zsh|fish` and the man page: made from the program's own command tree,
 * they cover every command and flag; each script passes its shell's syntax check and completes
 * commands, flags and choices in a real bash, and in a real zsh and fish where they are installed.
 */
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { CliContext } from '../../src/cli/context.js';
import {
  allCommands,
  type CliCommand,
  describeProgram,
  manPage,
  SHELLS,
} from '../../src/cli/completion.js';
import { buildProgram, main } from '../../src/cli/main.js';
import { tempDir } from '../support/helpers.js';

const exec = promisify(execFile);

async function ipferry(args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await main(
    ['node', 'ipferry', ...args],
    { out: (s) => (out += s), err: (s) => (err += s) },
    {},
  );
  return { code, out, err };
}

function tree(): CliCommand {
  const ctx = new CliContext({
    io: { out: () => undefined, err: () => undefined },
    env: {},
    flags: () => ({}),
    version: '0',
  });
  return describeProgram(buildProgram(ctx, '0'));
}

/** Whether `tool` runs here (zsh and fish are not installed everywhere). */
function installed(tool: string): boolean {
  try {
    execFileSync(tool, ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

const quoted = (s: string): string => `'${s}'`;

let tmp: { dir: string; remove: () => Promise<void> };
const scripts = new Map<string, string>();

before(async () => {
  tmp = await tempDir('completion');
  for (const shell of SHELLS) {
    const r = await ipferry(['completion', shell]);
    assert.equal(r.code, 0, r.err);
    scripts.set(shell, r.out);
    writeFileSync(join(tmp.dir, shell), r.out);
  }
});

after(async () => {
  await tmp.remove();
});

describe('ipferry completion', () => {
  it('the tree holds every command, including the newest ones', () => {
    const paths = allCommands(tree()).map((c) => c.path.join(' '));
    for (const p of ['ipferry fip move', 'ipferry node join-token create', 'ipferry agent']) {
      assert.ok(paths.includes(p), p);
    }
    assert.ok(paths.includes('ipferry completion') && paths.includes('ipferry tls init'));
    assert.ok(paths.length > 40, `${paths.length} commands`);
  });

  for (const shell of SHELLS) {
    it(`${shell}: names every subcommand under its parent and every flag of every command`, () => {
      const script = scripts.get(shell)!;
      for (const command of allCommands(tree())) {
        const path = command.path.join(' ');
        const names = command.flags.flatMap((f) => [f.short, f.long]).filter((n) => n);
        if (shell === 'bash') {
          const subs = command.commands.map((c) => quoted(c.path.at(-1)!)).join(' ');
          if (subs) assert.ok(script.includes(`'${path}') printf '%s\\n' ${subs} ;;`), path);
          const flags = names.map((n) => quoted(n!)).join(' ');
          assert.ok(script.includes(`'${path}') printf '%s\\n' ${flags} ;;`), `${path} flags`);
        } else if (shell === 'zsh') {
          for (const sub of command.commands) {
            assert.ok(script.includes(`'${sub.path.at(-1)}:`), sub.path.join(' '));
          }
          const line = script.split('\n').find((l) => l.startsWith(`    '${path}') reply=(`));
          assert.ok(line, path);
          for (const n of names) assert.ok(script.includes(`'${n}:`), `${path} ${n}`);
        } else {
          const at = `-n 'test (__ipferry_path) = \\'${path}\\''`;
          for (const sub of command.commands) {
            assert.ok(script.includes(`${at} -a '${sub.path.at(-1)}'`), sub.path.join(' '));
          }
          for (const flag of command.flags) {
            const long = flag.long ? `-l '${flag.long.slice(2)}'` : `-s '${flag.short!.slice(1)}'`;
            assert.ok(script.includes(`${at} ${long}`), `${path} ${flag.long ?? flag.short}`);
          }
        }
      }
    });
  }

  it('bash: the script passes bash -n', async () => {
    await exec('bash', ['-n', join(tmp.dir, 'bash')]);
  });

  it('bash: completes commands, flags, choices of a flag and of an argument in a real bash', async () => {
    /** What _ipferry offers for the words typed, the last one being completed. */
    const complete = async (...words: string[]): Promise<string[]> => {
      const array = words.map((w) => `'${w}'`).join(' ');
      const { stdout } = await exec('bash', [
        '-c',
        `source '${join(tmp.dir, 'bash')}'; COMP_WORDS=(${array}); COMP_CWORD=${words.length - 1}; _ipferry; printf '%s\\n' "\${COMPREPLY[@]}"`,
      ]);
      return stdout.split('\n').filter((l) => l !== '');
    };
    assert.deepEqual(await complete('ipferry', 'fi'), ['fip']);
    assert.deepEqual(await complete('ipferry', 'fip', 'mo'), ['move']);
    assert.deepEqual(await complete('ipferry', '--json', 'fip', 'mo'), ['move']);
    assert.deepEqual(await complete('ipferry', 'node', 'join-token', ''), ['create']);
    assert.deepEqual(await complete('ipferry', 'agent', '--tunnel-driver', ''), [
      'wireguard',
      'tinc',
    ]);
    // A flag's value is skipped: `--server URL` does not make URL a command.
    assert.deepEqual(await complete('ipferry', '--server', 'http://x', 'fip', 'mo'), ['move']);
    assert.deepEqual(await complete('ipferry', 'fip', 'move', '--ta'), ['--target']);
    assert.deepEqual(await complete('ipferry', 'completion', ''), ['bash', 'zsh', 'fish']);
    assert.deepEqual(await complete('ipferry', 'tls', 'init', '--f'), ['--force']);
  });

  it('zsh: the script passes zsh -n and completes in a real zsh', async (t) => {
    if (!installed('zsh')) return t.skip('zsh is not installed');
    await exec('zsh', ['-n', join(tmp.dir, 'zsh')]);
    // Outside a completion widget: zsh's completion builtins are stood in for by functions
    // that print what they were given.
    const complete = async (...words: string[]): Promise<string> => {
      const array = words.map((w) => `'${w}'`).join(' ');
      const { stdout } = await exec('zsh', [
        '-f',
        '-c',
        [
          'compdef() { :; }',
          '_describe() { print -rl -- "${(@)${(P)4}%%:*}"; }',
          'compadd() { print -rl -- "${(@P)2}"; }',
          '_files() { print -r -- "(files)"; }',
          `source '${join(tmp.dir, 'zsh')}'`,
          `words=(${array}); CURRENT=${words.length}; PREFIX='${words.at(-1)}'; _ipferry`,
        ].join('\n'),
      ]);
      return stdout.trim().split('\n').join(' ');
    };
    assert.match(await complete('ipferry', 'fip', 'mo'), /\bmove\b/);
    assert.match(await complete('ipferry', '--server', 'x', 'fip', 'move', '--ta'), /--target/);
    assert.equal(await complete('ipferry', 'agent', '--tunnel-driver', ''), 'wireguard tinc');
    assert.equal(await complete('ipferry', 'completion', ''), 'bash zsh fish');
    assert.equal(await complete('ipferry', 'tls', 'init', '--dir', ''), '(files)');
  });

  it('fish: the script passes fish --no-execute and completes in a real fish', async (t) => {
    if (!installed('fish')) return t.skip('fish is not installed');
    // fish keeps its variables and history under these: the test's own, not the user's.
    const env = {
      ...process.env,
      XDG_CONFIG_HOME: join(tmp.dir, 'fish-config'),
      XDG_DATA_HOME: join(tmp.dir, 'fish-data'),
    };
    await exec('fish', ['--no-execute', join(tmp.dir, 'fish')], { env });
    const complete = async (line: string): Promise<string[]> => {
      const { stdout } = await exec(
        'fish',
        ['--no-config', '-c', `source '${join(tmp.dir, 'fish')}'; complete -C '${line}'`],
        { env },
      );
      return stdout
        .split('\n')
        .filter((l) => l !== '')
        .map((l) => l.split('\t')[0]!);
    };
    assert.deepEqual(await complete('ipferry fip mo'), ['move']);
    assert.deepEqual(await complete('ipferry --server x fip move --ta'), ['--target']);
    assert.deepEqual((await complete('ipferry agent --tunnel-driver ')).sort(), [
      'tinc',
      'wireguard',
    ]);
    assert.deepEqual((await complete('ipferry completion ')).sort(), ['bash', 'fish', 'zsh']);
  });

  it('an unknown shell is a usage error naming the choices (exit 2)', async () => {
    const r = await ipferry(['completion', 'powershell']);
    assert.equal(r.code, 2);
    assert.equal(r.out, '');
    assert.match(r.err, /Allowed choices are bash, zsh, fish/);
  });
});

describe('the man page', () => {
  const page = (): string => manPage(tree(), '1.2.3');

  it('has a section for every command, with its arguments and own flags', () => {
    const text = page();
    const global = new Set(tree().flags.flatMap((f) => [f.long, f.short]));
    for (const command of allCommands(tree()).slice(1)) {
      const path = command.path.join(' ').replaceAll('-', '\\-');
      assert.ok(text.includes(`\n.SS ${path}\n`), path);
      for (const flag of command.flags) {
        if (flag.long === '--help' || global.has(flag.long)) continue;
        assert.ok(text.includes(`\\fB${flag.long!.replaceAll('-', '\\-')}\\fR`), flag.long);
      }
    }
    assert.match(text, /^\.TH IPFERRY 1 "" "ipferry 1\.2\.3"/);
  });

  it('renders with groff without a warning', async (t) => {
    if (!installed('groff')) return t.skip('groff is not installed');
    const file = join(tmp.dir, 'ipferry.1');
    writeFileSync(file, page());
    const { stderr } = await exec('groff', ['-man', '-Tutf8', '-ww', '-z', file]);
    assert.equal(stderr, '');
  });
});
