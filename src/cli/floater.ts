/**
 * IP Floater's verbs, so its users keep their scripts: `getip`, `redirect`, `releaseip`,
 * `ippool`, `arp`. Each is a composition of the FIP routes; the two-step ones undo their first
 * step when the second fails, so nothing is left half-done.
 */
import { noWaitOption, timeoutOption, type WaitFlags, type WaitScope } from './wait.js';
import { Command } from 'commander';
import type { ArpResponse, FipView, IppoolEntryView, ReleaseResponse } from '../api/contract.js';
import { IpferryError, type Problem } from '../core/errors.js';
import { RemoteError, type ApiClient } from '../client/api-client.js';
import type { CliContext } from './context.js';
import { cell, countText, table } from './format.js';
import { printReleased } from './fip.js';

/**
 * Allocate any free FIP (of `pool` if given) and associate it 1:1 (nat) with `privateIp`. When the
 * association fails the FIP is released again and the association's error is thrown.
 */
export async function getip(api: ApiClient, privateIp: string, pool?: string): Promise<FipView> {
  // Only a FIP of the target's own IP version can be associated with it.
  const family = privateIp.includes(':') ? 6 : 4;
  const fip = await api.allocate({ ...(pool !== undefined ? { pool } : {}), family });
  try {
    return await api.associate(fip.address, { target: privateIp, mode: 'nat' });
  } catch (e) {
    throw await rollback(api, fip.address, e);
  }
}

/**
 * Point `publicIp` at `privateIp` (nat), allocating it first unless it already is, and taking it
 * over from any previous target. A FIP this call allocated is released again if the association
 * fails; one that existed before is left as it was.
 */
export async function redirect(
  api: ApiClient,
  publicIp: string,
  privateIp: string,
): Promise<FipView> {
  let allocatedHere = false;
  try {
    await api.allocate({ address: publicIp });
    allocatedHere = true;
  } catch (e) {
    if (!(e instanceof IpferryError && e.code === 'IPF_E_FIP_IN_USE')) throw e;
  }
  try {
    return await api.associate(publicIp, {
      target: privateIp,
      mode: 'nat',
      allowReassociation: true,
    });
  } catch (e) {
    if (!allocatedHere) throw e;
    throw await rollback(api, publicIp, e);
  }
}

export const releaseip = (api: ApiClient, publicIp: string): Promise<ReleaseResponse> =>
  api.release(publicIp, true);
export const ippool = (api: ApiClient): Promise<IppoolEntryView[]> => api.ippool();
export const arp = (api: ApiClient, mac: string): Promise<ArpResponse> => api.arp(mac);

/**
 * Release `address` after `cause` failed a later step; returns the error to throw: `cause` itself,
 * or, when the release fails too, `cause` with a problem saying the FIP is still allocated.
 */
async function rollback(api: ApiClient, address: string, cause: unknown): Promise<unknown> {
  try {
    await api.release(address, true);
    return cause;
  } catch (e) {
    if (!(cause instanceof IpferryError)) return cause;
    const why = e instanceof Error ? e.message : String(e);
    const problem: Problem = {
      path: 'rollback',
      message: `${address} is still allocated: releasing it failed: ${why}`,
    };
    const body = cause.toJSON().error;
    return new RemoteError(cause.status, { ...body, problems: [...cause.problems, problem] });
  }
}

// Printers -------------------------------------------------------------------------------------

export const printAddress = (f: { address: string }): string => `${f.address}\n`;

export function printRedirect(f: FipView): string {
  return `${f.address} -> ${f.association?.target ?? '?'}\n`;
}

export function printIppool(pools: readonly IppoolEntryView[]): string {
  const summary = table(
    ['pool', 'gateway', 'size', 'allocated', 'entries'],
    pools.map((p) => [
      p.pool,
      p.gateway,
      countText(p.size),
      String(p.allocated.length),
      cell(p.entries.join(',')),
    ]),
  );
  const rows = pools.flatMap((p) =>
    p.allocated.map((a) => [a.address, p.pool, cell(a.mode), cell(a.target)]),
  );
  return rows.length === 0
    ? summary
    : `${summary}\n${table(['address', 'pool', 'mode', 'target'], rows)}`;
}

/** IP Floater's scripts read stdout as its verbs printed it: the applied line goes to stderr. */
const QUIET = { appliedTo: 'err' } as const;

const byAddress = (r: { address: string }): WaitScope => ({ fip: r.address });

// Commands -------------------------------------------------------------------------------------

export function floaterCommands(ctx: CliContext): Command[] {
  return [
    new Command('getip')
      .description(
        'IP Floater: allocate a free FIP and forward it (nat) to PRIVATE_IP; prints the FIP',
      )
      .argument('<private-ip>', 'target address')
      .option('--pool <pool>', 'pool to take it from')
      .addOption(noWaitOption())
      .addOption(timeoutOption())
      .action((privateIp: string, o: { pool?: string } & WaitFlags) =>
        ctx.write((api) => getip(api, privateIp, o.pool), printAddress, byAddress, o, QUIET),
      ),
    new Command('redirect')
      .description('IP Floater: forward PUBLIC_IP (nat) to PRIVATE_IP, allocating it if needed')
      .argument('<public-ip>', 'floating IP')
      .argument('<private-ip>', 'target address')
      .addOption(noWaitOption())
      .addOption(timeoutOption())
      .action((publicIp: string, privateIp: string, o: WaitFlags) =>
        ctx.write((api) => redirect(api, publicIp, privateIp), printRedirect, byAddress, o, QUIET),
      ),
    new Command('releaseip')
      .description('IP Floater: stop forwarding PUBLIC_IP and release it')
      .argument('<public-ip>', 'floating IP')
      .addOption(noWaitOption())
      .addOption(timeoutOption())
      .action((publicIp: string, o: WaitFlags) =>
        ctx.write((api) => releaseip(api, publicIp), printReleased, byAddress, o, QUIET),
      ),
    new Command('ippool')
      .description('IP Floater: list pools and their allocated addresses')
      .action(() => ctx.run(ippool, printIppool)),
    new Command('arp')
      .description('IP Floater: print the address known for a MAC')
      .argument('<mac>', 'MAC address')
      .action((mac: string) => ctx.run((api) => arp(api, mac), printAddress)),
  ];
}
