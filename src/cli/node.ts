/** `ipferry node …`: the nodes registered in the store and whether their agents are alive. */
import { Command } from 'commander';
import type { NodeListView } from '../api/contract.js';
import type { ApiClient } from './client.js';
import type { CliContext } from './context.js';
import { cell, details, table } from './format.js';

export const listNodes = (api: ApiClient): Promise<NodeListView[]> => api.listNodes();
export const showNode = (api: ApiClient, name: string): Promise<NodeListView> => api.getNode(name);

export function printNodeTable(nodes: readonly NodeListView[]): string {
  return table(
    ['name', 'alive', 'site', 'endpoint', 'addresses', 'version'],
    nodes.map((n) => [
      n.name,
      cell(n.alive),
      cell(n.site),
      cell(n.endpoint),
      cell(n.addresses.join(',')),
      cell(n.agentVersion),
    ]),
  );
}

export function printNode(n: NodeListView): string {
  return details([
    ['name', n.name],
    ['alive', n.alive ? `yes${n.aliveSince ? ` (since ${n.aliveSince})` : ''}` : 'no'],
    ['site', cell(n.site)],
    ['endpoint', cell(n.endpoint)],
    ['addresses', [...n.addresses]],
    ['reserved ports', cell(n.reservedPorts.map((r) => `${r.protocol}/${r.port}`).join(' '))],
    ['public key', cell(n.publicKey)],
    ['version', cell(n.agentVersion)],
    ['registered', n.registeredAt],
  ]);
}

export function nodeCommand(ctx: CliContext): Command {
  const node = new Command('node').description('Show the nodes of the fleet');
  node
    .command('list')
    .description('List nodes')
    .action(() => ctx.run(listNodes, printNodeTable));
  node
    .command('show')
    .description('Show one node')
    .argument('<name>', 'node name')
    .action((name: string) => ctx.run((api) => showNode(api, name), printNode));
  return node;
}
