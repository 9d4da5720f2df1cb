/**
 * `ipferry import neti FILE`: a Neti configuration (`neti.yml`) as the mesh policy it becomes,
 * printed or written as YAML with what could not be mapped, and with `--apply` set through the
 * API as `ipferry mesh set` sets a policy file (as a trial with `--confirm-within`).
 */
import { randomBytes } from 'node:crypto';
import { readFile, rename, rm, writeFile } from 'node:fs/promises';
import { InvalidArgumentError, Command } from 'commander';
import { stringify as stringifyYaml } from 'yaml';
import type { MeshPolicyResponse } from '../api/contract.js';
import { IpferryError } from '../core/errors.js';
import { importNeti, type NetiImport } from '../core/neti.js';
import type { CliContext } from './context.js';
import { UsageError } from './exit.js';
import { setMeshPolicy, printPolicySet } from './mesh.js';
import { durationAtMost } from './options.js';

/** What the command reports: the import, where it was written, what the agent answered. */
export interface NetiImportResult extends NetiImport {
  readonly output?: string;
  readonly applied?: MeshPolicyResponse;
}

interface NetiImportFlags {
  output?: string;
  apply?: boolean;
  confirmWithin?: number;
  maxChange?: number;
}

function wholeNumber(value: string): number {
  if (!/^\d{1,9}$/.test(value))
    throw new InvalidArgumentError('Expected a whole number, 0 or more.');
  return Number(value);
}

async function readNetiFile(path: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (e) {
    const code = (e as { code?: unknown }).code;
    throw new IpferryError('IPF_E_CONFIG', {
      source: path,
      summary: `cannot be read (${typeof code === 'string' ? code : String(e)})`,
    });
  }
}

/* eslint-disable no-control-regex -- matching control characters is the point */
/** What YAML does not take in a comment, or would end it: controls and line breaks. */
const NOT_IN_COMMENT = /[\u0000-\u0008\u000a-\u001f\u007f-\u009f\u2028\u2029\ufeff]/gu;
/* eslint-enable no-control-regex */

/** A line of comment as it was, but for what YAML would refuse or read as a line break. */
const commentSafe = (line: string): string => line.replace(NOT_IN_COMMENT, '?');

/** The policy file: the policy as YAML, after comments that say where it came from. */
export function policyFileText(result: NetiImport, source: string): string {
  const lines = [
    `# The ipferry mesh policy of the Neti configuration ${source}: \`ipferry mesh set --file\` takes it.`,
    ...result.notes.map((n) => `# ${n}`),
    ...(result.unmapped.length > 0 ? ['# Not mapped:'] : []),
    ...result.unmapped.map((u) => `#   ${u.key}: ${u.reason}`),
  ];
  return `${lines.map(commentSafe).join('\n')}\n${stringifyYaml(result.policy)}`;
}

/** Written whole or not at all: a temporary file beside it, renamed over it. */
async function writeWhole(path: string, text: string): Promise<void> {
  const temporary = `${path}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    await writeFile(temporary, text, { flag: 'wx' });
    await rename(temporary, path);
  } catch (e) {
    await rm(temporary, { force: true });
    const code = (e as { code?: unknown }).code;
    throw new IpferryError('IPF_E_CONFIG', {
      source: `--output ${path}`,
      summary: `cannot be written (${typeof code === 'string' ? code : String(e)})`,
    });
  }
}

function unmappedLines(result: NetiImport): string[] {
  return [
    `could not map (${result.unmapped.length}):`,
    ...(result.unmapped.length > 0
      ? result.unmapped.map((u) => `  ${u.key}: ${u.reason}`)
      : ['  none']),
  ];
}

/** Human output: the policy (unless written to a file or applied), notes, what was not mapped. */
export function printNetiImport(r: NetiImportResult): string {
  const head = r.applied
    ? printPolicySet(r.applied).trimEnd().split('\n')
    : r.output
      ? [`policy: written to ${r.output}`]
      : [
          'policy:',
          ...stringifyYaml(r.policy)
            .trimEnd()
            .split('\n')
            .map((l) => `  ${l}`),
        ];
  const notes = r.notes.length > 0 ? ['notes:', ...r.notes.map((n) => `  ${n}`)] : [];
  return [...head, ...notes, ...unmappedLines(r)].join('\n') + '\n';
}

export function importNetiCommand(ctx: CliContext): Command {
  const command = new Command('neti')
    .description(
      'Turn a Neti configuration (neti.yml) into a mesh policy: print it, write it, or apply it (docs/mesh.md#coming-from-neti)',
    )
    .argument('<file>', "Neti's YAML configuration")
    .option('--output <file>', 'write the policy to this file (YAML) instead of printing it')
    .option('--apply', 'set the policy through the API, as `ipferry mesh set` does')
    .option(
      '--confirm-within <duration>',
      'with --apply: a trial that every node rolls back by itself unless `ipferry mesh confirm` comes within this (90s, 5m, 1h)',
      durationAtMost(7 * 86400),
    )
    .option(
      '--max-change <n>',
      "the change threshold your fleet ran with (Neti kept it in ZooKeeper; default the file's maxchange, else Neti's 20)",
      wholeNumber,
    );
  command.action(async (file: string, o: NetiImportFlags) => {
    if (o.confirmWithin !== undefined && o.apply !== true)
      throw new UsageError('--confirm-within needs --apply', 'ipferry import neti');
    const result = importNeti(
      await readNetiFile(file),
      file,
      o.maxChange !== undefined ? { maxChange: o.maxChange } : {},
    );
    if (o.output !== undefined) await writeWhole(o.output, policyFileText(result, file));
    const done: NetiImportResult = {
      ...result,
      ...(o.output !== undefined ? { output: o.output } : {}),
    };
    if (o.apply !== true) {
      ctx.print(done, printNetiImport);
      return;
    }
    await ctx.run(
      async (api) => ({
        ...done,
        applied: await setMeshPolicy(api, result.policy, o.confirmWithin),
      }),
      printNetiImport,
    );
  });
  return command;
}
