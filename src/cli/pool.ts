/** `ipferry pool …`: create, list, show and delete address pools. */
import { noWaitOption, timeoutOption, type WaitFlags } from './wait.js';
import { Command, Option } from 'commander';
import type { CreatePoolRequest, PoolView, UpdatePoolRequest } from '../api/contract.js';
import type { PoolEntry } from '../core/model.js';
import type { ApiClient, DeletePoolResponse } from '../client/api-client.js';
import type { CliContext } from './context.js';
import { cell, countText, details, table } from './format.js';
import { collect } from './options.js';
import { UsageError } from './exit.js';

export interface PoolCreateFlags {
  gateway: string;
  /** `--cidr`, `--range` and `--address` values in the order they were given. */
  entries: readonly string[];
  shared: readonly string[];
  onlink?: string;
  /** `--targets`: CIDRs the pool's FIPs may forward to. */
  targets?: readonly string[];
  description?: string;
  tags: readonly string[];
}

export function createPoolRequest(name: string, flags: PoolCreateFlags): CreatePoolRequest {
  return {
    name,
    gateway: flags.gateway,
    ...(flags.onlink !== undefined ? { delivery: 'onlink' as const, uplink: flags.onlink } : {}),
    entries: [...flags.entries],
    ...(flags.shared.length > 0 ? { shared: [...flags.shared] } : {}),
    ...(flags.targets !== undefined ? { targetRanges: [...flags.targets] } : {}),
    ...(flags.description !== undefined ? { description: flags.description } : {}),
    ...(flags.tags.length > 0 ? { tags: [...flags.tags] } : {}),
  };
}

export interface PoolUpdateFlags {
  /** `--cidr`, `--range` and `--address` values to add, in the order they were given. */
  entries: readonly string[];
  shared: readonly string[];
  remove: readonly string[];
  description?: string;
  tags?: readonly string[];
  /** The new target ranges; empty: any target (`--clear-targets`). */
  targets?: readonly string[];
}

export function updatePoolRequest(flags: PoolUpdateFlags): UpdatePoolRequest {
  return {
    ...(flags.entries.length > 0 ? { addEntries: [...flags.entries] } : {}),
    ...(flags.shared.length > 0 ? { addShared: [...flags.shared] } : {}),
    ...(flags.remove.length > 0 ? { removeAddresses: [...flags.remove] } : {}),
    ...(flags.description !== undefined ? { description: flags.description } : {}),
    ...(flags.tags !== undefined ? { tags: [...flags.tags] } : {}),
    ...(flags.targets !== undefined ? { targetRanges: [...flags.targets] } : {}),
  };
}

/** `--targets A,B --targets C`: one list, in the order given. */
export function targetList(value: string, previous: readonly string[] = []): string[] {
  return [...previous, ...value.split(',').map((t) => t.trim())];
}

// Handlers -------------------------------------------------------------------------------------

export const createPool = (
  api: ApiClient,
  name: string,
  flags: PoolCreateFlags,
): Promise<PoolView> => api.createPool(createPoolRequest(name, flags));
export const updatePool = (
  api: ApiClient,
  name: string,
  flags: PoolUpdateFlags,
): Promise<PoolView> => api.updatePool(name, updatePoolRequest(flags));
export const listPools = (api: ApiClient): Promise<PoolView[]> => api.listPools();
export const showPool = (api: ApiClient, name: string): Promise<PoolView> => api.getPool(name);
export const deletePool = (api: ApiClient, name: string): Promise<DeletePoolResponse> =>
  api.deletePool(name);

// Printers -------------------------------------------------------------------------------------

export function entryText(entry: PoolEntry): string {
  switch (entry.kind) {
    case 'cidr':
      return entry.cidr;
    case 'range':
      return `${entry.first}-${entry.last}`;
    case 'address':
      return `${entry.address}${entry.mac ? `=${entry.mac}` : ''}${entry.shared ? ' (shared)' : ''}`;
  }
}

export function printPoolTable(pools: readonly PoolView[]): string {
  return table(
    ['name', 'gateway', 'delivery', 'size', 'allocated', 'entries', 'description'],
    pools.map((p) => [
      p.name,
      p.gateway,
      p.delivery === 'onlink' && p.uplink ? `onlink:${p.uplink}` : p.delivery,
      countText(p.size),
      String(p.allocated),
      cell(p.entries.map(entryText).join(',')),
      cell(p.description),
    ]),
  );
}

export function printPool(p: PoolView): string {
  return details([
    ['name', p.name],
    ['gateway', p.gateway],
    ['delivery', p.delivery],
    ...(p.uplink ? [['uplink', p.uplink] as const] : []),
    ['size', countText(p.size)],
    ['allocated', String(p.allocated)],
    ['entries', p.entries.map(entryText)],
    ['targets', p.targetRanges && p.targetRanges.length > 0 ? [...p.targetRanges] : 'any'],
    ['description', cell(p.description)],
    ['tags', cell(p.tags.join(', '))],
    ['created', p.createdAt],
    ['revision', String(p.revision)],
  ]);
}

export const printPoolDeleted = (r: DeletePoolResponse): string => `deleted pool ${r.name}\n`;

// Commands -------------------------------------------------------------------------------------

export function poolCommand(ctx: CliContext): Command {
  const pool = new Command('pool').description('Manage pools of public addresses');

  // One list across the three flags keeps the order the operator wrote them in.
  const entries: string[] = [];
  const entry = (value: string, previous: string[] = []): string[] => {
    entries.push(value);
    return [...previous, value];
  };
  pool
    .command('create')
    .description('Create a pool homed on a gateway node')
    .argument('<name>', 'pool name')
    .requiredOption('--gateway <node>', 'node the addresses are delivered to')
    .option('--cidr <cidr>', 'a prefix of addresses (repeatable)', entry)
    .option('--range <first-last>', 'an inclusive range of addresses (repeatable)', entry)
    .option('--address <ip[=mac]>', 'one address, optionally pinned to a MAC (repeatable)', entry)
    .option(
      '--shared <ip>',
      "the gateway's own address, for port forwards only (repeatable)",
      collect,
      [],
    )
    .option(
      '--onlink <iface>',
      'addresses sit on the uplink segment of IFACE (answer ARP/NDP there)',
    )
    .option(
      '--targets <cidr,...>',
      'forward only to addresses within these prefixes (repeatable)',
      targetList,
    )
    .option('--description <text>', 'free text')
    .option('--tag <tag>', 'a tag (repeatable)', collect, [])
    .addOption(noWaitOption())
    .addOption(timeoutOption())
    .action(
      (
        name: string,
        o: WaitFlags & {
          gateway: string;
          shared: string[];
          onlink?: string;
          targets?: string[];
          description?: string;
          tag: string[];
        },
      ) =>
        ctx.write(
          (api) =>
            createPool(api, name, {
              gateway: o.gateway,
              entries,
              shared: o.shared,
              tags: o.tag,
              ...(o.onlink !== undefined ? { onlink: o.onlink } : {}),
              ...(o.targets !== undefined ? { targets: o.targets } : {}),
              ...(o.description !== undefined ? { description: o.description } : {}),
            }),
          printPool,
          () => ({ pool: name }),
          o,
        ),
    );

  // The update's own list, for the same reason.
  const added: string[] = [];
  const add = (value: string, previous: string[] = []): string[] => {
    added.push(value);
    return [...previous, value];
  };
  const update = pool
    .command('update')
    .description(
      'Add addresses (shared ones too) to a pool, remove single addresses, set its target ranges, description or tags',
    )
    .argument('<name>', 'pool name')
    .option('--cidr <cidr>', 'add a prefix of addresses (repeatable)', add)
    .option('--range <first-last>', 'add an inclusive range of addresses (repeatable)', add)
    .option('--address <ip[=mac]>', 'add one address, optionally pinned to a MAC (repeatable)', add)
    .option(
      '--shared <ip>',
      "add the gateway's own address, for port forwards only (repeatable)",
      collect,
      [],
    )
    .option(
      '--remove <ip>',
      'remove a single-address entry that no floating IP holds (repeatable)',
      collect,
      [],
    )
    .option('--description <text>', 'set the description ("" removes it)')
    .option('--tag <tag>', 'replace the tags with these (repeatable)', collect)
    .addOption(new Option('--clear-tags', 'remove every tag').conflicts('tag'))
    .option(
      '--targets <cidr,...>',
      'replace the target ranges with these (repeatable); refused while a FIP goes outside them',
      targetList,
    )
    .addOption(
      new Option('--clear-targets', 'remove the target ranges: any target').conflicts('targets'),
    )
    .addOption(noWaitOption())
    .addOption(timeoutOption());
  update.action(
    (
      name: string,
      o: WaitFlags & {
        shared: string[];
        remove: string[];
        description?: string;
        tag?: string[];
        clearTags?: boolean;
        targets?: string[];
        clearTargets?: boolean;
      },
    ) => {
      const flags: PoolUpdateFlags = {
        entries: added,
        shared: o.shared,
        remove: o.remove,
        ...(o.description !== undefined ? { description: o.description } : {}),
        ...(o.tag !== undefined ? { tags: o.tag } : o.clearTags ? { tags: [] } : {}),
        ...(o.targets !== undefined
          ? { targets: o.targets }
          : o.clearTargets
            ? { targets: [] }
            : {}),
      };
      if (Object.keys(updatePoolRequest(flags)).length === 0) {
        throw new UsageError(
          'nothing to change: give --cidr, --range, --address, --shared, --remove, --description, --tag, --clear-tags, --targets or --clear-targets',
          'ipferry pool update',
        );
      }
      return ctx.write(
        (api) => updatePool(api, name, flags),
        printPool,
        () => ({ pool: name }),
        o,
      );
    },
  );

  pool
    .command('list')
    .description('List pools')
    .action(() => ctx.run(listPools, printPoolTable));

  pool
    .command('show')
    .description('Show one pool')
    .argument('<name>', 'pool name')
    .action((name: string) => ctx.run((api) => showPool(api, name), printPool));

  pool
    .command('delete')
    .description('Delete a pool that has no allocated floating IPs')
    .argument('<name>', 'pool name')
    .addOption(noWaitOption())
    .addOption(timeoutOption())
    .action((name: string, o: WaitFlags) =>
      // Its gateway is not known once it is gone: every live agent has it to apply.
      ctx.write(
        (api) => deletePool(api, name),
        printPoolDeleted,
        () => ({ all: true }),
        o,
      ),
    );

  return pool;
}
