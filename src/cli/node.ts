/**
 * `ipferry node …`: the nodes registered in the store and whether their agents are alive, and
 * the join tokens that let a remote agent follow this hub.
 */
import { Command } from 'commander';
import type { JoinTokenResponse, NodeListView, RemoveNodeResponse } from '../api/contract.js';
import type { PathProbe, TunnelHealth, TunnelRestore } from '../core/model.js';
import type { ApiClient } from '../client/api-client.js';
import type { CliContext } from './context.js';
import { bytesText, cell, details, keyText, shortKey, table, terminalLines } from './format.js';
import { meshReportText } from './mesh.js';
import { collect, duration } from './options.js';

export interface JoinTokenFlags {
  readonly ttl?: number;
  readonly node?: string;
  readonly url?: readonly string[];
  readonly allowAddresses?: readonly string[];
}

export const listNodes = (api: ApiClient): Promise<NodeListView[]> => api.listNodes();
export const showNode = (api: ApiClient, name: string): Promise<NodeListView> => api.getNode(name);
export const removeNode = (api: ApiClient, name: string): Promise<RemoveNodeResponse> =>
  api.removeNode(name);

export const createJoinToken = (
  api: ApiClient,
  flags: JoinTokenFlags,
): Promise<JoinTokenResponse> =>
  api.createJoinToken({
    ...(flags.ttl !== undefined ? { ttlSeconds: flags.ttl } : {}),
    ...(flags.node !== undefined ? { node: flags.node } : {}),
    ...(flags.url && flags.url.length > 0 ? { urls: [...flags.url] } : {}),
    ...(flags.allowAddresses && flags.allowAddresses.length > 0
      ? { allowAddresses: [...flags.allowAddresses] }
      : {}),
  });

/** Only the token on stdout, so that `… > join-token` captures exactly what to copy. */
export function printJoinToken(answer: JoinTokenResponse): string {
  return `${answer.token}\n`;
}

/**
 * The agent's warning about a token whose URLs are not https (stderr, with or without --json:
 * the secret and everything the node then sends would cross the network readable).
 */
export function joinTokenWarning(answer: JoinTokenResponse): string {
  const w = answer.warning;
  return w ? terminalLines(`warning: ${w.message}\nhint: ${w.hint}\n`) : '';
}

/** What to do with the token, for a human (stderr). */
export function joinTokenNextSteps(answer: JoinTokenResponse): string {
  const node = answer.node ?? 'NAME';
  const hub = answer.urls[0] ?? 'https://HUB:7447';
  return [
    `Join token for ${answer.node ? `node ${answer.node}` : 'one new node'}, valid until ${answer.expiresAt}, usable once.`,
    ...(answer.fingerprint
      ? [`It pins the hub's TLS certificate (SHA-256 ${answer.fingerprint}).`]
      : []),
    'On the remote host, save it in a file of mode 0600 and run:',
    `  ipferry agent --node ${node} --store ${hub} --join-token-file FILE`,
    '',
  ].join('\n');
}

export function printNodeTable(nodes: readonly NodeListView[]): string {
  return table(
    ['name', 'alive', 'site', 'overlay', 'endpoint', 'addresses', 'version'],
    nodes.map((n) => [
      n.name,
      cell(n.alive),
      cell(n.site),
      cell(n.overlayIp),
      cell(n.endpoint),
      cell(n.addresses.join(',')),
      cell(n.agentVersion),
    ]),
  );
}

/**
 * One line per tunnel peer: who, when it last shook hands (or, for tinc, whether it is
 * reachable: tinc 1.0 keeps no handshake times), how much went each way (tinc counts nothing
 * per peer: its interface's totals come first instead); then what the path probes found, and
 * the latest time the agent found the tunnel lost and restored it.
 */
export function tunnelLines(t: TunnelHealth | undefined): string | string[] {
  if (!t) return '-';
  const lines: string[] = [];
  const perPeer = t.peers.every((p) => p.rxBytes !== undefined);
  if (!perPeer || t.rxBytes !== undefined) {
    const totals =
      t.rxBytes !== undefined && t.txBytes !== undefined
        ? `rx ${bytesText(t.rxBytes)}, tx ${bytesText(t.txBytes)} in all`
        : 'no byte counters';
    lines.push(`${t.name}${t.driver ? ` (${t.driver})` : ''}: ${totals}, none per peer`);
  }
  if (t.peers.length === 0) lines.push(`${t.name} (no peers)`);
  for (const p of t.peers) {
    const who = p.node ?? shortKey(p.publicKey);
    const state =
      p.reachable !== undefined
        ? p.reachable
          ? 'reachable'
          : 'not reachable'
        : p.handshakeAgeSeconds === undefined
          ? 'no handshake yet'
          : `handshake ${p.handshakeAgeSeconds} s ago`;
    const traffic =
      p.rxBytes !== undefined && p.txBytes !== undefined
        ? `, rx ${bytesText(p.rxBytes)}, tx ${bytesText(p.txBytes)}`
        : '';
    lines.push(`${t.name} → ${who}${p.endpoint ? ` at ${p.endpoint}` : ''}: ${state}${traffic}`);
    if (p.probe) lines.push(`  path: ${pathLine(p.probe)}`);
  }
  if (t.restore) lines.push(`${t.name} ${restoreLine(t.restore)}`);
  return lines;
}

/** The latest loss of the tunnel and its restoring, in one line. */
export function restoreLine(r: TunnelRestore): string {
  const after = (at: string | undefined): string | undefined =>
    at === undefined ? undefined : `${Date.parse(at) - Date.parse(r.noticedAt)} ms`;
  const restored = after(r.restoredAt);
  const answered = after(r.answeredAt);
  return [
    `lost at ${r.noticedAt} (${r.faults.join('; ')})`,
    restored === undefined
      ? 'not restored yet'
      : `restored ${restored} later${r.repair === 'daemon' ? ' (a new daemon on the kept device)' : r.repair === 'pass' ? ' (the device and its routes made anew)' : ''}`,
    ...(restored === undefined
      ? []
      : [answered === undefined ? 'peers not answering yet' : `peers answering ${answered} later`]),
  ].join(', ');
}

/** What the active probes through the tunnel found, in one line. */
export function pathLine(p: PathProbe): string {
  const parts = [
    p.alive ? `answers${p.rttMs !== undefined ? ` (${p.rttMs} ms)` : ''}` : 'DEAD',
    p.largePasses === undefined ? undefined : `large probe ${p.largePasses ? 'passes' : 'lost'}`,
    p.pathMtu !== undefined
      ? `MTU lowered to ${p.pathMtu}${p.tunnelMtu ? ` (tunnel ${p.tunnelMtu})` : ''}`
      : undefined,
    p.note,
  ];
  return parts.filter((x) => x !== undefined).join('; ');
}

export function printNode(n: NodeListView): string {
  return details([
    ['name', n.name],
    ['alive', n.alive ? `yes${n.aliveSince ? ` (since ${n.aliveSince})` : ''}` : 'no'],
    ['site', cell(n.site)],
    ['endpoint', cell(n.endpoint)],
    ['overlay', cell(n.overlayIp)],
    ['addresses', [...n.addresses]],
    ['reserved ports', cell(n.reservedPorts.map((r) => `${r.protocol}/${r.port}`).join(' '))],
    ['public key', cell(n.publicKey === undefined ? undefined : keyText(n.publicKey))],
    ['tunnel', tunnelLines(n.tunnel)],
    ['mesh', meshReportText(n.mesh)],
    ['version', cell(n.agentVersion)],
    ['registered', n.registeredAt],
  ]);
}

export const printNodeRemoved = (r: RemoveNodeResponse): string =>
  `removed node ${r.name}${r.overlayIp ? ` (overlay address ${r.overlayIp} is free again)` : ''}\n`;

export function nodeCommand(ctx: CliContext): Command {
  const node = new Command('node').description('Show and remove the nodes of the fleet');
  node
    .command('list')
    .description('List nodes')
    .action(() => ctx.run(listNodes, printNodeTable));
  node
    .command('show')
    .description('Show one node')
    .argument('<name>', 'node name')
    .action((name: string) => ctx.run((api) => showNode(api, name), printNode));
  node
    .command('remove')
    .description(
      'Remove a node for good: its record, liveness and overlay address (refused while a pool or a floating IP uses it)',
    )
    .argument('<name>', 'node name')
    .action((name: string) => ctx.run((api) => removeNode(api, name), printNodeRemoved));
  const joinToken = new Command('join-token').description(
    'Tokens that let a remote agent join this hub and follow its store',
  );
  joinToken
    .command('create')
    .description(
      'Create a single-use join token; prints it (and, on stderr, how to use it on the remote host, and a warning when its URLs are not https)',
    )
    .option('--ttl <duration>', 'how long it stays valid: 90s, 30m, 1h, 2d (default 1h)', duration)
    .option(
      '--node <name>',
      'only this node may join with it (needed to join a node that is already registered)',
    )
    .option(
      '--allow-addresses <prefix>',
      'a prefix the node may register its addresses in (repeatable; default: any address outside the pools and the mesh overlay)',
      collect,
    )
    .option(
      '--url <url>',
      "the hub's URL as remote hosts reach it (repeatable; default: the agent's listen address)",
      collect,
    )
    .action(async (flags: JoinTokenFlags) => {
      const answer = await createJoinToken(await ctx.api(), flags);
      ctx.print(answer, printJoinToken);
      if (!ctx.json) ctx.io.err(terminalLines(joinTokenNextSteps(answer)));
      ctx.io.err(joinTokenWarning(answer));
    });
  node.addCommand(joinToken);
  return node;
}
