/**
 * `ipferry node …`: the nodes registered in the store and whether their agents are alive, and
 * the join tokens that let a remote agent follow this hub.
 */
import { everyAgent, noWaitOption, timeoutOption, type WaitFlags } from './wait.js';
import { readFile } from 'node:fs/promises';
import { Command, InvalidArgumentError, Option } from 'commander';
import type { JoinTokenResponse, NodeListView, RemoveNodeResponse } from '../api/contract.js';
import { IpferryError } from '../core/errors.js';
import type { PathProbe, TunnelHealth, TunnelRestore } from '../core/model.js';
import { FAR_END_OSES, type FarEndOs, farEndSpec, type FarEndSpec } from '../core/render/farend.js';
import { renderFreebsd } from '../core/render/freebsd.js';
import { renderLinux } from '../core/render/linux.js';
import { type CheckResult, checkRendered, revisionOf } from '../core/render/revision.js';
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

export interface AddNodeFlags {
  readonly unmanaged?: boolean;
  readonly publicKey: string;
  readonly endpoint?: string;
  readonly address?: readonly string[];
  readonly site?: string;
  readonly tunnelDriver?: string;
}

/** Registers a node that runs no agent (the API checks every field: core/farend.ts). */
export const addNode = (api: ApiClient, name: string, flags: AddNodeFlags): Promise<NodeListView> =>
  api.addNode({
    name,
    unmanaged: flags.unmanaged === true,
    publicKey: flags.publicKey,
    ...(flags.endpoint !== undefined ? { endpoint: flags.endpoint } : {}),
    ...(flags.address && flags.address.length > 0 ? { addresses: [...flags.address] } : {}),
    ...(flags.site !== undefined ? { site: flags.site } : {}),
    ...(flags.tunnelDriver !== undefined ? { tunnelDriver: flags.tunnelDriver } : {}),
  });

export const printNodeAdded = (n: NodeListView): string =>
  `added unmanaged node ${n.name}: configure the host from \`ipferry node render ${n.name} --os linux|freebsd\`\n`;

export interface RenderFlags {
  readonly os: FarEndOs;
  readonly check?: string;
  readonly interface?: string;
  readonly keyFile?: string;
  readonly gateway?: string;
  readonly underlayMtu?: number;
}

/** The far end's spec from the records the API lists now, and the store revision it read. */
export async function farEnd(
  api: ApiClient,
  name: string,
  flags: RenderFlags,
): Promise<{ spec: FarEndSpec; storeRevision: number }> {
  await api.getNode(name); // IPF_E_NODE_NOT_FOUND for a name it does not know
  const [status, nodes, pools, fips] = await Promise.all([
    api.status(),
    api.listNodes(),
    api.listPools(),
    api.listFips(),
  ]);
  const spec = farEndSpec({ nodes, pools, fips }, name, {
    os: flags.os,
    ...(flags.interface !== undefined ? { iface: flags.interface } : {}),
    ...(flags.keyFile !== undefined ? { keyFile: flags.keyFile } : {}),
    ...(flags.gateway !== undefined ? { gateway: flags.gateway } : {}),
    ...(flags.underlayMtu !== undefined ? { underlayMtu: flags.underlayMtu } : {}),
  });
  return { spec, storeRevision: status.store.revision };
}

export function renderFarEnd(spec: FarEndSpec, storeRevision?: number): string {
  return spec.os === 'freebsd'
    ? renderFreebsd(spec, storeRevision)
    : renderLinux(spec, storeRevision);
}

/** A stale file: exit 1 with what changed, and how to bring it up to date. */
export function staleRender(
  file: string,
  node: string,
  os: FarEndOs,
  result: Extract<CheckResult, { current: false }>,
): IpferryError {
  const changes = [
    ...result.added.map((l) => ({ path: 'now', message: l })),
    ...result.removed.map((l) => ({ path: 'no longer', message: l })),
  ];
  const summary = result.found
    ? `rendered at revision ${result.found}, the store now gives ${result.revision}${changes.length === 0 ? ' (by another version of ipferry)' : ''}`
    : 'it holds no ipferry revision line: not a file node render wrote';
  return new IpferryError('IPF_E_RENDER_STALE', { file, summary, node, os }, changes);
}

async function checkFile(path: string, spec: FarEndSpec): Promise<CheckResult> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    const code = (e as { code?: unknown }).code;
    throw new IpferryError('IPF_E_CONFIG', {
      source: path,
      summary: `cannot be read (${typeof code === 'string' ? code : String(e)})`,
    });
  }
  return checkRendered(text, spec);
}

export const printCheck =
  (file: string) =>
  (r: CheckResult): string =>
    r.current ? `${file} is current (revision ${r.revision})\n` : `${file} is stale\n`;

function underlayMtu(value: string): number {
  const n = /^\d{1,5}$/.test(value) ? Number(value) : NaN;
  if (!(n >= 1280 && n <= 65535))
    throw new InvalidArgumentError('must be an MTU from 1280 to 65535');
  return n;
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
      n.unmanaged ? 'unmanaged' : cell(n.alive),
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

/**
 * An unmanaged node reports nothing itself: its tunnel as each agent peering with it (its
 * gateway) last saw it, `ipfgw… of gw → home at ENDPOINT: handshake 3 s ago, …`.
 */
export function sightingLines(n: NodeListView): string | string[] {
  const seen = n.seenBy ?? [];
  if (seen.length === 0) return '- (no agent peering with it reports it)';
  return seen.flatMap((s) => {
    const lines = tunnelLines({
      name: `${s.tunnel} of ${s.node}`,
      checkedAt: s.checkedAt,
      peers: [{ ...s.peer, node: n.name }],
    });
    return typeof lines === 'string' ? [lines] : lines;
  });
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
    [
      'alive',
      n.alive
        ? `yes${n.aliveSince ? ` (since ${n.aliveSince})` : ''}`
        : n.unmanaged
          ? '- (no agent)'
          : 'no',
    ],
    [
      'managed',
      n.unmanaged
        ? 'no: unmanaged, configured from `ipferry node render`; its gateway reports its tunnel'
        : 'yes: by its agent',
    ],
    ['site', cell(n.site)],
    ['endpoint', cell(n.endpoint)],
    ['overlay', cell(n.overlayIp)],
    ['addresses', [...n.addresses]],
    ['reserved ports', cell(n.reservedPorts.map((r) => `${r.protocol}/${r.port}`).join(' '))],
    ['public key', cell(n.publicKey === undefined ? undefined : keyText(n.publicKey))],
    ['tunnel', n.unmanaged ? sightingLines(n) : tunnelLines(n.tunnel)],
    ['mesh', meshReportText(n.mesh)],
    ['version', cell(n.agentVersion)],
    ['registered', n.registeredAt],
  ]);
}

export const printNodeRemoved = (r: RemoveNodeResponse): string =>
  `removed node ${r.name}${r.overlayIp ? ` (overlay address ${r.overlayIp} is free again)` : ''}\n`;

export function nodeCommand(ctx: CliContext): Command {
  const node = new Command('node').description(
    'Show, add (unmanaged) and remove the nodes of the fleet; render the configuration of an unmanaged one',
  );
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
    .command('add')
    .description(
      'Register an unmanaged node: a host that runs no agent, whose tunnel its gateway builds (WireGuard only); configure the host from `node render`',
    )
    .argument('<name>', 'node name')
    .requiredOption(
      '--unmanaged',
      'the host runs no agent (required: a node with an agent registers itself)',
    )
    .requiredOption(
      '--public-key <key>',
      "the host's WireGuard public key (wg pubkey); its private key never leaves it",
    )
    .option(
      '--endpoint <host:port>',
      'where its gateway reaches it (none: behind NAT, it calls its gateway)',
    )
    .option(
      '--address <address>',
      'an address of the host, e.g. a forward target (repeatable)',
      collect,
    )
    .option('--site <name>', 'the site it is at')
    .option(
      '--tunnel-driver <driver>',
      'wireguard (the only driver a host without an agent can run)',
    )
    .addOption(noWaitOption())
    .addOption(timeoutOption())
    .action((name: string, flags: AddNodeFlags & WaitFlags) =>
      ctx.write((api) => addNode(api, name, flags), printNodeAdded, everyAgent, flags),
    );
  node
    .command('render')
    .description(
      "Print everything an unmanaged node's host needs (its tunnel and return path), or with --check say whether a file rendered earlier is current",
    )
    .argument('<name>', 'node name')
    .addOption(
      new Option('--os <os>', 'the host: linux (a wg-quick file) or freebsd (rc.conf, wg(8), pf)')
        .choices(FAR_END_OSES)
        .makeOptionMandatory(),
    )
    .option(
      '--check <file>',
      'say whether FILE is current (exit 0) or stale (exit 1, naming what changed)',
    )
    .option(
      '--interface <name>',
      'the tunnel interface on the host (default: linux ipf…, freebsd wg0)',
    )
    .option(
      '--key-file <path>',
      "the host's WireGuard private key file (default /etc/wireguard/IFACE.key; freebsd /usr/local/etc/wireguard/IFACE.key)",
    )
    .option('--gateway <name>', 'its gateway, when it serves no FIP yet')
    .option('--underlay-mtu <bytes>', "the MTU of the host's uplink (default 1500)", underlayMtu)
    .action(async (name: string, flags: RenderFlags) => {
      const { spec, storeRevision } = await farEnd(await ctx.api(), name, flags);
      if (flags.check === undefined) {
        ctx.print(
          {
            os: spec.os,
            revision: revisionOf(spec),
            storeRevision,
            text: renderFarEnd(spec, storeRevision),
          },
          (r) => r.text,
        );
        return;
      }
      const result = await checkFile(flags.check, spec);
      ctx.print(result, printCheck(flags.check));
      if (!result.current) throw staleRender(flags.check, name, spec.os, result);
    });
  node
    .command('remove')
    .description(
      'Remove a node for good: its record, liveness and overlay address (refused while a pool or a floating IP uses it)',
    )
    .argument('<name>', 'node name')
    .addOption(noWaitOption())
    .addOption(timeoutOption())
    .action((name: string, o: WaitFlags) =>
      ctx.write((api) => removeNode(api, name), printNodeRemoved, everyAgent, o),
    );
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
