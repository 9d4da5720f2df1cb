/** `ipferry forward …`: port forwards of a floating IP in ports mode. */
import { waitOptions, type WaitFlags } from './wait.js';
import { byFip } from './fip.js';
import { Command, Option } from 'commander';
import type { AddForwardRequest, ForwardView } from '../api/contract.js';
import { PROTOCOLS, type Protocol } from '../core/model.js';
import type { ApiClient, RemoveForwardResponse } from '../client/api-client.js';
import type { CliContext } from './context.js';
import { cell, details, portText, table } from './format.js';
import { port, portRange } from './options.js';

export interface AddForwardFlags {
  proto: Protocol;
  port: string;
  targetPort?: number;
  target: string;
  node?: string;
  description?: string;
}

export function addForwardRequest(o: AddForwardFlags): AddForwardRequest {
  return {
    protocol: o.proto,
    port: o.port,
    ...(o.targetPort !== undefined ? { targetPort: o.targetPort } : {}),
    target: o.target,
    ...(o.node !== undefined ? { node: o.node } : {}),
    ...(o.description !== undefined ? { description: o.description } : {}),
  };
}

// Handlers -------------------------------------------------------------------------------------

export const addForward = (api: ApiClient, fip: string, o: AddForwardFlags): Promise<ForwardView> =>
  api.addForward(fip, addForwardRequest(o));
export const listForwards = (api: ApiClient, fip: string): Promise<ForwardView[]> =>
  api.listForwards(fip);
export const removeForward = (
  api: ApiClient,
  fip: string,
  id: string,
): Promise<RemoveForwardResponse> => api.removeForward(fip, id);

// Printers -------------------------------------------------------------------------------------

const targetPorts = (f: ForwardView): string =>
  portText(f.targetPort, f.targetPort + (f.portEnd - f.port));

export function printForwardTable(forwards: readonly ForwardView[]): string {
  return table(
    ['id', 'proto', 'port', 'target', 'target-port', 'node', 'description'],
    forwards.map((f) => [
      f.id,
      f.protocol,
      portText(f.port, f.portEnd),
      f.target,
      targetPorts(f),
      cell(f.node),
      cell(f.description),
    ]),
  );
}

export function printForward(f: ForwardView): string {
  return details([
    ['id', f.id],
    ['protocol', f.protocol],
    ['port', portText(f.port, f.portEnd)],
    ['target', f.target],
    ['target-port', targetPorts(f)],
    ['node', cell(f.node)],
    ['description', cell(f.description)],
  ]);
}

export const printForwardRemoved = (r: RemoveForwardResponse): string =>
  `removed forward ${r.id} from ${r.address}\n`;

// Commands -------------------------------------------------------------------------------------

export function forwardCommand(ctx: CliContext): Command {
  const forward = new Command('forward').description('Manage port forwards of a floating IP');

  const add = forward
    .command('add')
    .description('Forward a port or port range of a floating IP to a target')
    .argument('<fip>', 'floating IP')
    .addOption(new Option('--proto <proto>', 'protocol').choices(PROTOCOLS).makeOptionMandatory())
    .requiredOption('--port <p[-q]>', 'external port or inclusive range', portRange)
    .option('--target-port <p>', 'first target port (default: same as --port)', port)
    .requiredOption('--target <ip>', 'address to forward to')
    .option('--node <node>', 'node that holds the target')
    .option('--description <text>', 'free text');
  waitOptions(add).action((address: string, o: AddForwardFlags & WaitFlags) =>
    ctx.write((api) => addForward(api, address, o), printForward, byFip(address), o),
  );

  forward
    .command('list')
    .description('List the port forwards of a floating IP')
    .argument('<fip>', 'floating IP')
    .action((address: string) => ctx.run((api) => listForwards(api, address), printForwardTable));

  waitOptions(
    forward
      .command('remove')
      .description('Remove a port forward')
      .argument('<fip>', 'floating IP')
      .argument('<id>', 'forward id (see `forward list`)'),
  ).action((address: string, id: string, o: WaitFlags) =>
    ctx.write((api) => removeForward(api, address, id), printForwardRemoved, byFip(address), o),
  );

  return forward;
}
