/** `ipferry fip …`: the floating IP lifecycle, allocate → associate → (move)* → disassociate → release. */
import { Command, Option } from 'commander';
import type {
  AllocateRequest,
  AllocateResponse,
  AssociateRequest,
  FipStatusView,
  FipView,
  MoveRequest,
  ReleaseResponse,
} from '../api/contract.js';
import { ASSOCIATION_MODES, type AssociationMode, type PortForward } from '../core/model.js';
import type { ApiClient } from '../client/api-client.js';
import type { CliContext } from './context.js';
import { cell, details, hostPort, portText, table } from './format.js';
import { collect } from './options.js';
import { UsageError } from './exit.js';
import { waitOptions, type WaitFlags, type WaitScope } from './wait.js';

/** A FIP write concerns its gateway and the nodes it goes to. */
export const byFip = (address: string) => (): WaitScope => ({ fip: address });

export interface AllocateFlags {
  pool?: string;
  address?: string;
  clientToken?: string;
  description?: string;
  tag?: string[];
}

export function allocateRequest(o: AllocateFlags): AllocateRequest {
  return {
    ...(o.pool !== undefined ? { pool: o.pool } : {}),
    ...(o.address !== undefined ? { address: o.address } : {}),
    ...(o.clientToken !== undefined ? { clientToken: o.clientToken } : {}),
    ...(o.description !== undefined ? { description: o.description } : {}),
    ...(o.tag && o.tag.length > 0 ? { tags: [...o.tag] } : {}),
  };
}

export interface AssociateFlags {
  /** Omitted in routed mode: the target is the FIP itself. */
  target?: string;
  node?: string;
  mode?: AssociationMode;
  masquerade?: boolean;
  allowReassociation?: boolean;
}

export function associateRequest(o: AssociateFlags): AssociateRequest {
  return {
    ...(o.target !== undefined ? { target: o.target } : {}),
    ...(o.node !== undefined ? { node: o.node } : {}),
    ...(o.mode !== undefined ? { mode: o.mode } : {}),
    ...(o.masquerade ? { masquerade: true } : {}),
    ...(o.allowReassociation ? { allowReassociation: true } : {}),
  };
}

export interface MoveFlags {
  /** Omitted for a routed FIP: the target is the FIP itself. */
  target?: string;
  node?: string;
}

export function moveRequest(o: MoveFlags): MoveRequest {
  return {
    ...(o.target !== undefined ? { target: o.target } : {}),
    ...(o.node !== undefined ? { node: o.node } : {}),
  };
}

// Handlers -------------------------------------------------------------------------------------

export const allocateFip = (api: ApiClient, o: AllocateFlags): Promise<AllocateResponse> =>
  api.allocate(allocateRequest(o));
export const associateFip = (api: ApiClient, fip: string, o: AssociateFlags): Promise<FipView> =>
  api.associate(fip, associateRequest(o));
export const moveFip = (api: ApiClient, fip: string, o: MoveFlags): Promise<FipView> =>
  api.move(fip, moveRequest(o));
export const disassociateFip = (api: ApiClient, fip: string): Promise<FipView> =>
  api.disassociate(fip);
export const releaseFip = (api: ApiClient, fip: string, force: boolean): Promise<ReleaseResponse> =>
  api.release(fip, force);
export const listFips = (api: ApiClient, pool?: string): Promise<FipView[]> => api.listFips(pool);
export const showFip = (api: ApiClient, fip: string): Promise<FipView> => api.getFip(fip);

// Printers -------------------------------------------------------------------------------------

/** `ACTIVE`, or `ACTIVE (stale)` when the status describes an older revision of the FIP. */
export function stateText(status: FipStatusView): string {
  return status.stale ? `${status.state} (stale)` : status.state;
}

export function forwardText(f: PortForward): string {
  const targetPorts = portText(f.targetPort, f.targetPort + (f.portEnd - f.port));
  return `${f.protocol} ${portText(f.port, f.portEnd)} -> ${hostPort(f.target, targetPorts)}${f.node ? ` on ${f.node}` : ''} [${f.id}]`;
}

export function printFipTable(fips: readonly FipView[]): string {
  return table(
    ['address', 'pool', 'mode', 'target', 'node', 'state', 'description'],
    fips.map((f) => [
      f.address,
      f.pool,
      cell(f.association?.mode),
      cell(f.association?.target),
      cell(f.association?.node),
      stateText(f.status),
      cell(f.description),
    ]),
  );
}

export function printFip(f: FipView): string {
  const a = f.association;
  const s = f.status;
  const state = `${stateText(s)}${s.node ? ` on ${s.node}` : ''}${s.message ? `: ${s.message}` : ''}`;
  return details([
    ['address', f.address],
    ['pool', f.pool],
    ...(f.shared ? [['shared', 'yes (ports mode only)'] as const] : []),
    ['state', state],
    ['mode', cell(a?.mode)],
    ['target', cell(a?.target)],
    ['node', cell(a?.node)],
    ...(a ? [['masquerade', cell(a.masquerade === true)] as const] : []),
    ['forwards', f.forwards.map(forwardText)],
    ['description', cell(f.description)],
    ['tags', cell(f.tags.join(', '))],
    ['allocated', f.allocatedAt],
    ['revision', String(f.revision)],
  ]);
}

export function printAllocated(f: AllocateResponse): string {
  return f.created
    ? printFip(f)
    : printFip(f) + 'note: this client token returned an earlier allocation\n';
}

export const printReleased = (r: ReleaseResponse): string =>
  r.released ? `released ${r.address}\n` : `${r.address} was not allocated\n`;

// Commands -------------------------------------------------------------------------------------

export function fipCommand(ctx: CliContext): Command {
  const fip = new Command('fip').description('Allocate, associate, move and release floating IPs');

  const allocate = fip
    .command('allocate')
    .description('Allocate a floating IP from a pool')
    .option('--pool <pool>', 'pool to take it from (default: any pool with a free address)')
    .option('--address <ip>', 'a specific address instead of any free one')
    .option('--client-token <token>', 'idempotency token: repeating the call returns the same FIP')
    .option('--description <text>', 'free text')
    .option('--tag <tag>', 'a tag (repeatable)', collect, []);
  waitOptions(allocate).action((o: AllocateFlags & WaitFlags) =>
    ctx.write(
      (api) => allocateFip(api, o),
      printAllocated,
      (f) => ({ fip: f.address }),
      o,
    ),
  );

  const associate = fip
    .command('associate')
    .description('Forward a floating IP to a target address')
    .argument('<fip>', 'floating IP')
    .option('--target <ip>', 'address to forward to (routed mode: the FIP itself, the default)')
    .option('--node <node>', 'node that holds the target (required for routed mode)')
    .addOption(
      new Option('--mode <mode>', 'how the FIP reaches the target (default nat)').choices(
        ASSOCIATION_MODES,
      ),
    )
    .option('--masquerade', 'SNAT toward the target (it then loses the client address)')
    .option('--allow-reassociation', 're-target a FIP that is already associated');
  waitOptions(associate).action((address: string, o: AssociateFlags & WaitFlags) => {
    // Only a routed FIP has a target to default to (itself); say so before sending anything.
    if (o.target === undefined && o.mode !== 'routed') {
      throw new UsageError(
        "required option '--target <ip>' not specified (only --mode routed may omit it)",
        'ipferry fip associate',
      );
    }
    return ctx.write((api) => associateFip(api, address, o), printFip, byFip(address), o);
  });

  const move = fip
    .command('move')
    .description('Re-target an associated floating IP, keeping its mode')
    .argument('<fip>', 'floating IP')
    .option('--target <ip>', 'new target address (a routed FIP: omit it, its target is the FIP)')
    .option('--node <node>', 'node that holds the new target');
  waitOptions(move).action((address: string, o: MoveFlags & WaitFlags) =>
    ctx.write((api) => moveFip(api, address, o), printFip, byFip(address), o),
  );

  waitOptions(
    fip
      .command('disassociate')
      .description('Stop forwarding a floating IP (it stays allocated)')
      .argument('<fip>', 'floating IP'),
  ).action((address: string, o: WaitFlags) =>
    ctx.write((api) => disassociateFip(api, address), printFip, byFip(address), o),
  );

  waitOptions(
    fip
      .command('release')
      .description('Return a floating IP to its pool')
      .argument('<fip>', 'floating IP')
      .option('--force', 'release even while it is associated'),
  ).action((address: string, o: { force?: boolean } & WaitFlags) =>
    ctx.write(
      (api) => releaseFip(api, address, o.force === true),
      printReleased,
      byFip(address),
      o,
    ),
  );

  fip
    .command('list')
    .description('List floating IPs')
    .option('--pool <pool>', 'only this pool')
    .action((o: { pool?: string }) => ctx.run((api) => listFips(api, o.pool), printFipTable));

  fip
    .command('show')
    .description('Show one floating IP with its status and forwards')
    .argument('<fip>', 'floating IP')
    .action((address: string) => ctx.run((api) => showFip(api, address), printFip));

  return fip;
}
