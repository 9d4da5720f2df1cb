/** `ipferry status` and `ipferry version`. */
import { Command } from 'commander';
import type { StatusResponse, VersionResponse } from '../api/contract.js';
import { IpferryError, type ErrorBody } from '../core/errors.js';
import type { ApiClient } from '../client/api-client.js';
import type { CliContext } from './context.js';
import { details, shortKey } from './format.js';
import { pathLine, restoreLine } from './node.js';

export const getStatus = (api: ApiClient): Promise<StatusResponse> => api.status();

export function printStatus(s: StatusResponse): string {
  const dp = s.dataplane;
  const dataplane = [
    dp.kind,
    ...(dp.lastApply ? [`last apply ${dp.lastApply}`] : []),
    ...(dp.realisedRevision !== undefined ? [`realised revision ${dp.realisedRevision}`] : []),
  ].join(', ');
  return details([
    ['node', s.node],
    ['version', s.version],
    ['store', `${s.store.kind} (revision ${s.store.revision})`],
    [
      'dataplane',
      dp.lastError || dp.skippedRecords?.length
        ? [
            dataplane,
            ...(dp.lastError ? [`last error: ${dp.lastError}`] : []),
            ...skippedLines(dp.skippedRecords ?? []),
          ]
        : dataplane,
    ],
    [
      'fips',
      Object.entries(s.fips)
        .map(([state, n]) => `${state} ${n}`)
        .join(', '),
    ],
    ['nodes', `${s.nodes.alive} alive of ${s.nodes.total}`],
    [
      'tunnel',
      s.tunnel
        ? [
            s.tunnel.driver === 'tinc'
              ? `${s.tunnel.name} (tinc), ${s.tunnel.peers.length} peer(s), ${s.tunnel.peers.filter((p) => p.reachable === true).length} reachable`
              : `${s.tunnel.name}, ${s.tunnel.peers.length} peer(s), ${s.tunnel.peers.filter((p) => p.handshakeAgeSeconds !== undefined && p.handshakeAgeSeconds < 180).length} with a recent handshake`,
            ...s.tunnel.peers.flatMap((p) =>
              p.probe ? [`→ ${p.node ?? shortKey(p.publicKey)}: ${pathLine(p.probe)}`] : [],
            ),
            ...(s.tunnel.restore ? [restoreLine(s.tunnel.restore)] : []),
          ]
        : '-',
    ],
  ]);
}

/** At most a few records by name: a store full of bad records must not flood the terminal. */
const SKIPPED_SHOWN = 5;

function skippedLines(skipped: readonly { key: string; reason: string }[]): string[] {
  if (skipped.length === 0) return [];
  return [
    `skipped ${skipped.length} store record(s) it cannot use:`,
    ...skipped.slice(0, SKIPPED_SHOWN).map((r) => `  ${r.key}: ${r.reason}`),
    ...(skipped.length > SKIPPED_SHOWN
      ? [`  … and ${skipped.length - SKIPPED_SHOWN} more (ipferry plan lists them)`]
      : []),
  ];
}

export interface VersionInfo {
  readonly cli: string;
  /** The agent's answer; absent when it could not be asked (see `agentError`). */
  readonly agent?: VersionResponse;
  readonly agentError?: ErrorBody['error'];
}

/** The CLI's version always; the agent's when it answers. Never fails on the agent's account. */
export async function getVersion(
  cli: string,
  connect: () => Promise<ApiClient>,
): Promise<VersionInfo> {
  try {
    const api = await connect();
    return { cli, agent: await api.version() };
  } catch (e) {
    if (e instanceof IpferryError) return { cli, agentError: e.toJSON().error };
    throw e;
  }
}

export function printVersion(v: VersionInfo): string {
  const agent = v.agent
    ? `${v.agent.version} (node ${v.agent.node})`
    : `unknown (${v.agentError?.code ?? 'no answer'}: ${v.agentError?.message ?? ''})`;
  return details([
    ['cli', v.cli],
    ['agent', agent],
  ]);
}

export function statusCommand(ctx: CliContext): Command {
  return new Command('status')
    .description("Show the agent's node, store, dataplane and counts")
    .action(() => ctx.run(getStatus, printStatus));
}

export function versionCommand(ctx: CliContext): Command {
  return new Command('version')
    .description('Show the versions of this CLI and of the agent')
    .action(async () => {
      ctx.print(await getVersion(ctx.version, () => ctx.api()), printVersion);
    });
}
