/**
 * `ipferry mesh …`: the fleet mesh's policy (set from a YAML or JSON file, optionally as a trial
 * that rolls back by itself unless confirmed), the staged `reject_all` rollout node by node,
 * confirmations, the audit against an inventory, and each node's mesh as its agent applied it.
 */
import { everyAgent, noWaitOption, timeoutOption, type WaitFlags } from './wait.js';
import { readFile } from 'node:fs/promises';
import { Argument, Command, Option } from 'commander';
import { parse as parseYaml, YAMLParseError } from 'yaml';
import type {
  MeshAudit,
  MeshAuditRequest,
  MeshConfirmResponse,
  MeshPolicyResponse,
  MeshView,
  NodeListView,
} from '../api/contract.js';
import { IpferryError } from '../core/errors.js';
import {
  type MeshLayer,
  type MeshPolicy,
  type MeshPolicyRecord,
  type MeshSite,
  parseInventory,
} from '../core/mesh.js';
import type { MeshHold, MeshNodeReport } from '../core/model.js';
import type { ApiClient } from '../client/api-client.js';
import type { CliContext } from './context.js';
import { cell, details, type DetailValue, EMPTY, table, terminalText } from './format.js';
import { durationAtMost } from './options.js';

/** The longest trial the agent accepts (service/mesh.ts), checked before anything is sent. */
const confirmWithin = durationAtMost(7 * 86400);

// Files ----------------------------------------------------------------------------------------

async function readLocal(path: string, flag: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (e) {
    const code = (e as { code?: unknown }).code;
    throw new IpferryError('IPF_E_CONFIG', {
      source: `${flag} ${path}`,
      summary: `cannot be read (${typeof code === 'string' ? code : String(e)})`,
    });
  }
}

/**
 * A policy file: YAML, or JSON (which YAML reads too). Only its syntax is checked here; the agent
 * checks its meaning and reports every problem at once.
 */
export function parsePolicyText(text: string, path: string): unknown {
  try {
    return parseYaml(text) as unknown;
  } catch (e) {
    const where = e instanceof YAMLParseError && e.linePos ? ` at line ${e.linePos[0].line}` : '';
    throw new IpferryError('IPF_E_CONFIG', {
      source: `--file ${path}`,
      summary: `is not valid YAML or JSON${where}`,
    });
  }
}

export async function readPolicyFile(path: string): Promise<unknown> {
  return parsePolicyText(await readLocal(path, '--file'), path);
}

// Handlers -------------------------------------------------------------------------------------

export const showMesh = (api: ApiClient): Promise<MeshView> => api.mesh();

export const setMeshPolicy = (
  api: ApiClient,
  policy: unknown,
  confirmWithinSeconds?: number,
): Promise<MeshPolicyResponse> =>
  api.setMeshPolicy({
    policy: policy as MeshPolicy,
    ...(confirmWithinSeconds !== undefined ? { confirmWithinSeconds } : {}),
  });

export const confirmMesh = (api: ApiClient, holdsOnly = false): Promise<MeshConfirmResponse> =>
  api.confirmMesh(holdsOnly ? { holdsOnly } : {});

/** `--inventory-format`: `auto` lets the agent tell the format from the text (inventoryFormat). */
export const INVENTORY_FORMATS = ['auto', 'ipferry', 'neti'] as const;
export type InventoryFormatChoice = (typeof INVENTORY_FORMATS)[number];

/**
 * An inventory file's text. A format named on the command line is held to here, before anything
 * is sent: the agent tells the formats apart by the text alone, and a file in the other one would
 * otherwise be taken as it is.
 */
async function readInventory(path: string, format: InventoryFormatChoice): Promise<string> {
  const text = await readLocal(path, '--inventory');
  if (format !== 'auto') parseInventory(text, path, format);
  return text;
}

export async function auditMesh(
  api: ApiClient,
  inventoryFile?: string,
  format: InventoryFormatChoice = 'auto',
): Promise<MeshAudit> {
  const body: MeshAuditRequest =
    inventoryFile === undefined
      ? {}
      : { inventory: await readInventory(inventoryFile, format), source: inventoryFile };
  return api.auditMesh(body);
}

export const meshStatus = (api: ApiClient): Promise<NodeListView[]> => api.listNodes();

export interface RejectAllResult {
  readonly node: string;
  readonly rejectAll: boolean;
  readonly record: MeshPolicyRecord;
}

/**
 * Switches one node's `reject_all` in the policy in force and sets the result: the staged
 * rollout, host by host. The node must be registered (a typo must not look like a rollout).
 * Read, change, write: a policy change another operator makes in between is overwritten.
 */
export async function switchRejectAll(
  api: ApiClient,
  node: string,
  on: boolean,
  confirmWithinSeconds?: number,
): Promise<RejectAllResult> {
  await api.getNode(node);
  const view = await api.mesh();
  // What the nodes run: after a trial ran out, that is the previous policy, not the record's.
  const policy = view.inForce;
  if (!policy) throw new IpferryError('IPF_E_MESH_NOT_CONFIGURED');
  const next: MeshPolicy = {
    ...policy,
    nodes: { ...policy.nodes, [node]: { ...policy.nodes[node], rejectAll: on } },
  };
  const record = await setMeshPolicy(api, next, confirmWithinSeconds);
  return { node, rejectAll: on, record };
}

// Printers -------------------------------------------------------------------------------------

const onOff = (value: boolean): string => (value ? 'on' : 'off');

/** One layer on one line: `lans …; open …; ssh …; reject_all on; nat A->B …`. */
export function layerText(layer: MeshLayer & Pick<MeshSite, 'lans'>): string {
  const parts = [
    layer.lans?.length ? `lans ${layer.lans.join(' ')}` : undefined,
    layer.openPorts?.length ? `open ${layer.openPorts.join(' ')}` : undefined,
    layer.sshAllow?.length ? `ssh ${layer.sshAllow.join(' ')}` : undefined,
    layer.rejectAll !== undefined ? `reject_all ${onOff(layer.rejectAll)}` : undefined,
    layer.natOverrides && Object.keys(layer.natOverrides).length > 0
      ? `nat ${Object.entries(layer.natOverrides)
          .map(([from, to]) => `${from}->${to}`)
          .join(' ')}`
      : undefined,
  ];
  const text = parts.filter((p) => p !== undefined).join('; ');
  return text === '' ? EMPTY : text;
}

const byName = <T>(record: Readonly<Record<string, T>>): [string, T][] =>
  Object.entries(record).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));

function policyPairs(policy: MeshPolicy): [string, DetailValue][] {
  return [
    ['overlay', policy.overlay],
    ['max change', policy.maxChange === undefined ? 'unlimited' : String(policy.maxChange)],
    ['fleet', layerText(policy.fleet)],
    ...byName(policy.sites).map(([name, site]): [string, DetailValue] => [
      `site ${name}`,
      layerText(site),
    ]),
    ...byName(policy.nodes).map(([name, layer]): [string, DetailValue] => [
      `node ${name}`,
      layerText(layer),
    ]),
  ];
}

function trialText(record: MeshPolicyRecord): string {
  if (!record.trial) return 'none (confirmed)';
  const back = record.trial.previous
    ? 'every node goes back to the previous policy'
    : 'the mesh goes away (there was no policy before)';
  return `until ${record.trial.deadline}: \`ipferry mesh confirm\` keeps it, else ${back}`;
}

/** `ipferry mesh show`: the policy in force, its trial, whether it rolled back, the confirmation. */
export function printMeshView(v: MeshView): string {
  // The latest confirmation: what it released. It says nothing about the policy shown, which may
  // have been set (or rolled back) since.
  const confirmed: [string, DetailValue] = [
    'last confirm',
    v.confirmation
      ? `${v.confirmation.at}: released holds up to revision ${v.confirmation.revision}`
      : EMPTY,
  ];
  const rb = v.rollback;
  const head: [string, DetailValue][] = rb
    ? [
        [
          'policy',
          v.inForce
            ? `the one before the change of ${rb.changedAt} (below)`
            : `none in force: the change of ${rb.changedAt} was the first policy`,
        ],
        ['trial', `ran out unconfirmed at ${rb.at}: \`ipferry mesh confirm\` is refused`],
        [
          'rolled back',
          `yes, at ${rb.at}: every node went back; \`ipferry mesh set\` applies the change again`,
        ],
      ]
    : v.record
      ? [
          ['policy', `set ${v.record.updatedAt}`],
          ['trial', trialText(v.record)],
          ['rolled back', 'no'],
        ]
      : [['policy', 'none: set one with `ipferry mesh set --file POLICY.yaml`']];
  return details([
    ...head,
    confirmed,
    ['revision', String(v.revision)],
    ...(v.inForce ? policyPairs(v.inForce) : []),
  ]);
}

/** After `mesh set`: what was written, and what to do while it is on trial. */
export function printPolicySet(r: MeshPolicyResponse): string {
  const sites = Object.keys(r.policy.sites).length;
  const nodes = Object.keys(r.policy.nodes).length;
  return details([
    [
      'policy',
      `set ${r.updatedAt}: overlay ${r.policy.overlay}, ${sites} site(s), ${nodes} node layer(s)`,
    ],
    ['trial', trialText(r)],
  ]);
}

export function printRejectAll(r: RejectAllResult): string {
  return details([
    ['reject_all', `${onOff(r.rejectAll)} for node ${r.node}`],
    ['trial', trialText(r.record)],
  ]);
}

/** After `mesh confirm`: what it kept, and which holds it released, as the nodes reported them. */
export function printConfirm(r: MeshConfirmResponse): string {
  const trial = r.confirmedTrial
    ? 'the policy on trial: it stays'
    : r.trialDeadline
      ? `nothing (--holds-only): the policy on trial still rolls back at ${r.trialDeadline} unless confirmed`
      : 'nothing: no policy change was on trial';
  const released: DetailValue =
    r.released.length === 0
      ? `nothing: no node reported a membership change held back (revision ${r.confirmation.revision})`
      : r.released.map(
          (h) =>
            `${h.node}: ${h.hold.keeping.length} departed member(s) (${h.hold.keeping.join(', ')}), dropped now`,
        );
  return details([
    ['confirmed', trial],
    ['released', released],
  ]);
}

function holdText(h: MeshHold): string {
  return `keeping ${h.keeping.length} departed member(s) (${h.keeping.join(', ')}), max change ${h.maxChange}, since revision ${h.sinceRevision}`;
}

function section(title: string, items: readonly string[] | undefined): string[] {
  if (items === undefined) return [`${title}:`, '  (no inventory given)'];
  return [
    `${title} (${items.length}):`,
    ...(items.length > 0 ? items : ['none']).map((i) => `  ${i}`),
  ];
}

/** A lagging node: what it applied, and whether its agent still runs. */
function laggingText(l: MeshAudit['lagging'][number]): string {
  if (l.alive) {
    return `${l.node}  ${l.appliedRevision !== undefined ? `applied revision ${l.appliedRevision}` : 'applied nothing yet'}`;
  }
  return l.appliedRevision !== undefined
    ? `${l.node}  not alive; last applied revision ${l.appliedRevision}`
    : `${l.node}  not alive; no applied revision known`;
}

/**
 * `ipferry mesh audit`: one section per finding, one line per host or node. The hosts come from
 * an inventory file and the nodes from the store, so each line is written for the terminal on its
 * own: it stays one line, whatever a name or an address held.
 */
export function printAudit(a: MeshAudit, withInventory: boolean): string {
  const lines = [
    `revision: ${a.revision}`,
    `overlay:  ${a.overlay ? `${a.overlay.used} of ${a.overlay.size} addresses used (${a.overlay.prefix})` : 'no mesh policy in force'}`,
    '',
    ...section(
      'unregistered hosts',
      withInventory
        ? a.unregistered.map(
            (h) =>
              `${h.name}  ${h.addresses.join(',')}${h.site ? `  site=${h.site}` : ''}  (line ${h.line})`,
          )
        : undefined,
    ),
    ...section('unlisted nodes', withInventory ? [...a.unlisted] : undefined),
    ...section('lagging nodes', a.lagging.map(laggingText)),
    ...section('reject_all on', [...a.rejectAll.on]),
    ...section('reject_all off', [...a.rejectAll.off]),
    ...section(
      'holds',
      a.holds.map((h) => `${h.node}  ${holdText(h.hold)}: \`ipferry mesh confirm\` releases it`),
    ),
    ...section('rolled back', [...a.rolledBack]),
  ];
  return lines.map(terminalText).join('\n') + '\n';
}

/** A node's mesh report in words, for `node show`. */
export function meshReportText(m: MeshNodeReport | undefined): DetailValue {
  if (!m) return EMPTY;
  const line = [
    m.appliedRevision !== undefined ? `applied revision ${m.appliedRevision}` : undefined,
    m.rejectAll !== undefined ? `reject_all ${onOff(m.rejectAll)}` : undefined,
    m.members !== undefined ? `${m.members} member(s)` : undefined,
    m.rolledBack ? 'rolled back (trial ran out)' : undefined,
  ]
    .filter((x) => x !== undefined)
    .join(', ');
  return m.hold ? [line || EMPTY, `hold: ${holdText(m.hold)}`] : line || EMPTY;
}

/** `ipferry mesh status`: one row per node, from what each agent reported applying. */
export function printMeshStatus(nodes: readonly NodeListView[]): string {
  return table(
    ['name', 'site', 'overlay', 'alive', 'applied', 'reject_all', 'members', 'hold', 'rolled_back'],
    nodes.map((n) => [
      n.name,
      cell(n.site),
      cell(n.overlayIp),
      cell(n.alive),
      cell(n.mesh?.appliedRevision),
      cell(n.mesh?.rejectAll === undefined ? undefined : onOff(n.mesh.rejectAll)),
      cell(n.mesh?.members),
      cell(n.mesh?.hold?.keeping.length),
      cell(n.mesh ? (n.mesh.rolledBack ?? false) : undefined),
    ]),
  );
}

// Commands -------------------------------------------------------------------------------------

const CONFIRM_WITHIN =
  'apply as a trial: unless `ipferry mesh confirm` comes within this (90s, 5m, 1h), every node goes back to the previous policy by itself';

export function meshCommand(ctx: CliContext): Command {
  const mesh = new Command('mesh').description(
    'The fleet mesh: overlay addresses, membership and firewall policy (docs/mesh.md)',
  );
  mesh
    .command('show')
    .description(
      'Show the policy in force, its trial and deadline, whether it rolled back, the latest confirmation',
    )
    .action(() => ctx.run(showMesh, printMeshView));
  mesh
    .command('set')
    .description('Set the mesh policy from a YAML or JSON file (it replaces the whole policy)')
    .requiredOption('--file <file>', 'the policy file (docs/mesh.md#the-policy-file)')
    .option('--confirm-within <duration>', CONFIRM_WITHIN, confirmWithin)
    .addOption(noWaitOption())
    .addOption(timeoutOption())
    .action(async (o: { file: string; confirmWithin?: number } & WaitFlags) => {
      const policy = await readPolicyFile(o.file);
      await ctx.write(
        (api) => setMeshPolicy(api, policy, o.confirmWithin),
        printPolicySet,
        everyAgent,
        o,
      );
    });
  mesh
    .command('reject-all')
    .description("Switch one node's reject_all in the policy in force (a staged rollout)")
    .argument('<node>', 'node name')
    .addArgument(new Argument('<state>', 'on or off').choices(['on', 'off']))
    .option('--confirm-within <duration>', CONFIRM_WITHIN, confirmWithin)
    .addOption(noWaitOption())
    .addOption(timeoutOption())
    .action((node: string, state: 'on' | 'off', o: { confirmWithin?: number } & WaitFlags) =>
      ctx.write(
        (api) => switchRejectAll(api, node, state === 'on', o.confirmWithin),
        printRejectAll,
        everyAgent,
        o,
      ),
    );
  mesh
    .command('confirm')
    .description(
      'Keep the policy on trial (refused once it ran out), and release membership changes held back by max change',
    )
    .option(
      '--holds-only',
      'release held membership changes only: confirm no trial, and refuse none that ran out',
    )
    .addOption(noWaitOption())
    .addOption(timeoutOption())
    .action((o: { holdsOnly?: boolean } & WaitFlags) =>
      ctx.write((api) => confirmMesh(api, o.holdsOnly === true), printConfirm, everyAgent, o),
    );
  mesh
    .command('audit')
    .description(
      'Unregistered and unlisted hosts, lagging nodes, reject_all per node, holds, overlay usage (changes nothing)',
    )
    .option('--inventory <file>', 'hosts to check: NAME ADDRESS[,ADDRESS…] [site=SITE] per line')
    .addOption(
      new Option(
        '--inventory-format <format>',
        "the inventory's format: ipferry's lines, or the host table Neti's neti_util.py prints",
      )
        .choices(INVENTORY_FORMATS)
        .default('auto'),
    )
    .action((o: { inventory?: string; inventoryFormat: InventoryFormatChoice }) =>
      ctx.run(
        (api) => auditMesh(api, o.inventory, o.inventoryFormat),
        (a) => printAudit(a, o.inventory !== undefined),
      ),
    );
  mesh
    .command('status')
    .description("Each node's mesh as its agent last applied it")
    .action(() => ctx.run(meshStatus, printMeshStatus));
  return mesh;
}
