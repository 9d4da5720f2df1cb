/**
 * `ipferry import ipfloater CONF`: an IP Floater installation's pool, MACs, private ranges and
 * redirections, as one ipferry pool with its FIPs. The files and the database are read and
 * checked whole (src/core/ipfloater-config.ts) and compared with what ipferry holds before the
 * first write, so bad input or a conflict writes nothing; what is there already is left as it
 * is, so running it again changes nothing.
 */
import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import Database from 'better-sqlite3';
import { Command } from 'commander';
import type { FipView, PoolView } from '../api/contract.js';
import { IpferryError } from '../core/errors.js';
import {
  agentFlags,
  DEFAULT_POOL_NAME,
  describeRedirection,
  desiredPool,
  type EndpointRow,
  IMPORT_TAG,
  type ImportPlan,
  notMapped,
  parseEndpoints,
  parseIpfloaterConfig,
  parsePoolFile,
  planImport,
  type Redirection,
  type RedirectionStep,
} from '../core/ipfloater-config.js';
import { validatePool } from '../core/validate.js';
import type { ApiClient } from '../client/api-client.js';
import type { CliContext } from './context.js';

export interface ImportFlags {
  readonly arpTable?: string;
  readonly db?: string;
  readonly gateway: string;
  readonly pool: string;
  readonly dryRun: boolean;
}

/** What the import did (or, with --dry-run, would do). */
export interface ImportResult {
  readonly dryRun: boolean;
  /** Whether anything was (or would be) written. */
  readonly changed: boolean;
  readonly pool: {
    readonly name: string;
    readonly gateway: string;
    readonly action: 'create' | 'update' | 'unchanged';
    readonly entries: readonly string[];
    readonly addedEntries: readonly string[];
    readonly targetRanges: readonly string[];
  };
  readonly redirections: readonly {
    readonly redirection: string;
    readonly kind: Redirection['kind'];
    readonly action: 'create' | 'unchanged';
    /** IP Floater's id of the endpoint row. */
    readonly id: string;
  }[];
  /** Lines of the pool file IP Floater ignores too. */
  readonly dropped: readonly string[];
  readonly notMapped: readonly string[];
  /** Flags of `ipferry agent` that serve IP Floater's APIs where it served them. */
  readonly agentFlags: readonly string[];
}

/** The input files, read and checked: nothing of them reaches the API unchecked. */
interface Inputs {
  readonly plan: (pools: readonly PoolView[], fips: readonly FipView[]) => ImportPlan;
  readonly dropped: readonly string[];
  readonly notMapped: readonly string[];
  readonly agentFlags: readonly string[];
}

async function readText(path: string, what: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (e) {
    const code = (e as { code?: unknown }).code;
    throw new IpferryError('IPF_E_CONFIG', {
      source: path,
      summary: `the ${what} cannot be read (${typeof code === 'string' ? code : String(e)})`,
    });
  }
}

/** The endpoint table, read with the database opened read-only: IP Floater's file is left as it is. */
function readEndpoints(path: string): EndpointRow[] {
  let db: Database.Database | undefined;
  try {
    db = new Database(path, { readonly: true, fileMustExist: true });
    return db
      .prepare(
        'SELECT rowid, id, public_ip, public_port, private_ip, private_port FROM endpoint ORDER BY rowid',
      )
      .all() as EndpointRow[];
  } catch (e) {
    throw new IpferryError('IPF_E_CONFIG', {
      source: path,
      summary: `is not an IP Floater database with an endpoint table (${e instanceof Error ? e.message : String(e)})`,
    });
  } finally {
    db?.close();
  }
}

/** `$VAR`, `${VAR}` and a leading `~`, expanded as IP Floater expands its pool file's path. */
export function expandPath(path: string, env: NodeJS.ProcessEnv = process.env): string {
  const vars = path.replace(
    /\$(\w+)|\$\{(\w+)\}/g,
    (whole, a?: string, b?: string) => env[a ?? b ?? ''] ?? whole,
  );
  return vars === '~' || vars.startsWith('~/') ? homedir() + vars.slice(1) : vars;
}

export async function readInputs(conf: string, flags: ImportFlags): Promise<Inputs> {
  const config = parseIpfloaterConfig(await readText(conf, 'configuration'), conf);
  const given = flags.arpTable ?? config.ipPoolFile;
  const poolFilePath = given === undefined ? undefined : expandPath(given);
  const poolFile =
    poolFilePath === undefined
      ? undefined
      : parsePoolFile(await readText(poolFilePath, 'pool file'), poolFilePath);
  const pool = desiredPool({
    name: flags.pool,
    gateway: flags.gateway,
    config,
    ...(poolFile ? { poolFile } : {}),
  });
  // The API's own checks, here, so that a pool it would refuse stops the import before a write.
  validatePool({
    name: pool.name,
    gateway: pool.gateway,
    entries: [...pool.entries],
    targetRanges: [...pool.targetRanges],
  });
  const addresses = new Set(pool.entries.map((e) => e.split('=')[0] ?? ''));
  const redirections =
    flags.db === undefined
      ? []
      : parseEndpoints(readEndpoints(flags.db), flags.db, addresses, config.privateRanges);
  return {
    plan: (pools, fips) => planImport(pool, redirections, pools, fips),
    dropped: poolFile?.dropped ?? [],
    notMapped: notMapped(config, flags.db !== undefined),
    agentFlags: agentFlags(config),
  };
}

export async function importIpfloater(
  api: ApiClient,
  conf: string,
  flags: ImportFlags,
): Promise<ImportResult> {
  const inputs = await readInputs(conf, flags);
  const [pools, fips] = await Promise.all([api.listPools(), api.listFips()]);
  const plan = inputs.plan(pools, fips);
  if (!flags.dryRun) await apply(api, plan);
  const step = plan.poolStep;
  const redirections = plan.redirections.map((r) => ({
    redirection: describeRedirection(r),
    kind: r.kind,
    action: r.action === 'unchanged' ? ('unchanged' as const) : ('create' as const),
    id: r.id,
  }));
  return {
    dryRun: flags.dryRun,
    changed: step.action !== 'unchanged' || redirections.some((r) => r.action !== 'unchanged'),
    pool: {
      name: plan.pool.name,
      gateway: plan.pool.gateway,
      action: step.action,
      entries: plan.pool.entries,
      addedEntries:
        step.action === 'create'
          ? plan.pool.entries
          : step.action === 'update'
            ? step.addEntries
            : [],
      targetRanges: plan.pool.targetRanges,
    },
    redirections,
    dropped: inputs.dropped,
    notMapped: inputs.notMapped,
    agentFlags: inputs.agentFlags,
  };
}

async function apply(api: ApiClient, plan: ImportPlan): Promise<void> {
  const step = plan.poolStep;
  if (step.action === 'create') {
    await api.createPool({
      name: plan.pool.name,
      gateway: plan.pool.gateway,
      entries: [...plan.pool.entries],
      ...(plan.pool.targetRanges.length > 0 ? { targetRanges: [...plan.pool.targetRanges] } : {}),
      description: 'imported from IP Floater',
    });
  } else if (step.action === 'update') {
    await api.updatePool(plan.pool.name, {
      ...(step.addEntries.length > 0 ? { addEntries: [...step.addEntries] } : {}),
      ...(step.targetRanges ? { targetRanges: [...step.targetRanges] } : {}),
    });
  }
  for (const r of plan.redirections) await applyRedirection(api, plan.pool.name, r);
}

async function applyRedirection(api: ApiClient, pool: string, r: RedirectionStep): Promise<void> {
  if (r.action === 'unchanged') return;
  if (r.action === 'allocate-and-create')
    await api.allocate({ pool, address: r.publicIp, tags: [IMPORT_TAG] });
  if (r.kind === 'nat') await api.associate(r.publicIp, { target: r.privateIp, mode: 'nat' });
  else
    await api.addForward(r.publicIp, {
      protocol: 'tcp',
      port: String(r.publicPort),
      targetPort: r.privatePort,
      target: r.privateIp,
    });
}

// Printer ------------------------------------------------------------------------------------

export function printImport(r: ImportResult): string {
  const done = (action: string): string =>
    action === 'unchanged' ? 'unchanged' : r.dryRun ? `would ${action}` : `${action}d`;
  const lines = [
    `pool ${r.pool.name} (gateway ${r.pool.gateway}): ${done(r.pool.action)}`,
    `  addresses: ${r.pool.entries.length}${r.pool.addedEntries.length > 0 && r.pool.action === 'update' ? ` (${r.pool.addedEntries.length} ${r.dryRun ? 'to add' : 'added'}: ${r.pool.addedEntries.join(', ')})` : ''}`,
    `  targets: ${r.pool.targetRanges.length > 0 ? r.pool.targetRanges.join(', ') : 'any'}`,
  ];
  if (r.redirections.length > 0) {
    lines.push('redirections:');
    for (const x of r.redirections)
      lines.push(
        `  ${x.redirection} (${x.kind === 'nat' ? 'nat' : 'tcp forward'}): ${done(x.action)}`,
      );
  }
  if (r.dropped.length > 0) {
    lines.push('ignored lines:');
    for (const d of r.dropped) lines.push(`  ${d}`);
  }
  if (r.notMapped.length > 0) {
    lines.push('not mapped:');
    for (const n of r.notMapped) lines.push(`  ${n}`);
  }
  lines.push(`IP Floater's APIs: run the gateway's agent with ${r.agentFlags.join(' ')}`);
  if (!r.changed) lines.push('nothing to change: everything was imported already');
  else if (r.dryRun) lines.push('dry run: nothing was written');
  return lines.join('\n') + '\n';
}

// Command ------------------------------------------------------------------------------------

export function importIpfloaterCommand(ctx: CliContext): Command {
  return new Command('ipfloater')
    .description(
      "Create a pool and its FIPs from IP Floater's configuration, pool file and database",
    )
    .argument('<conf>', "IP Floater's ipfloaterd.conf")
    .requiredOption('--gateway <node>', 'node the pool is homed on')
    .option('--arp-table <file>', 'the pool file (IP MAC lines), instead of IP_POOL_FILE')
    .option('--db <file>', "IP Floater's SQLite database: import its redirections")
    .option('--pool <name>', 'name of the pool', DEFAULT_POOL_NAME)
    .option('--dry-run', 'show what would be done, write nothing', false)
    .action(
      (
        conf: string,
        o: { gateway: string; arpTable?: string; db?: string; pool: string; dryRun: boolean },
      ) =>
        ctx.run(
          (api) =>
            importIpfloater(api, conf, {
              gateway: o.gateway,
              pool: o.pool,
              dryRun: o.dryRun,
              ...(o.arpTable !== undefined ? { arpTable: o.arpTable } : {}),
              ...(o.db !== undefined ? { db: o.db } : {}),
            }),
          printImport,
        ),
    );
}
