/**
 * What the tunnel drivers that act on a real host (WireGuard, tinc) share: `ip` in their
 * namespace, an interface's addresses as observe() reports them, endpoints given by name
 * resolved once per apply (their daemons: daemon.ts).
 */
import { lookup } from 'node:dns/promises';
import { tryParseAddress } from '../../core/address.js';
import { IpferryError, validationError } from '../../core/errors.js';
import { isTunnelName, parseEndpoint, type TunnelIntent } from '../../core/tunnel.js';
import type { TunnelSnapshot } from '../../core/tunnelhealth.js';
import { type ExecResult, run, type RunOptions } from '../exec.js';

/** `ip`'s complaint about an interface that is not there (tolerated when looking). */
export const NO_DEVICE = (stderr: string): boolean =>
  /does not exist|Cannot find device|No such device/.test(stderr);

/** One interface of `ip -d -j address show`, as far as the drivers read it. */
export interface IpLinkAddr {
  ifindex?: number;
  ifname?: string;
  /** The MAC (`ip` calls it the link's address). */
  address?: string;
  mtu?: number;
  flags?: string[];
  linkinfo?: { info_kind?: string; info_data?: { type?: string; persist?: boolean } };
  addr_info?: { family?: string; local?: string; prefixlen?: number; scope?: string }[];
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export function dataplaneError(reason: string): IpferryError {
  return new IpferryError('IPF_E_DATAPLANE', { reason });
}

/** Only `ipf…` interfaces are ever created, changed or deleted. */
export function refuseForeign(name: string): void {
  if (!isTunnelName(name)) {
    throw validationError([
      { path: 'name', message: `${JSON.stringify(name)} is not an ipferry tunnel (ipf…) name` },
    ]);
  }
}

/** `ip ARGS` in namespace `netns` (`ip -n`), or in the current one when it is undefined. */
export function ipIn(
  netns: string | undefined,
  args: readonly string[],
  options?: RunOptions,
): Promise<ExecResult> {
  return run('ip', netns === undefined ? args : ['-n', netns, ...args], options);
}

/** An interface's addresses as `ADDRESS/LEN`, canonical and sorted, as observe() reports them. */
export function addressesOf(link: IpLinkAddr): string[] {
  return (link.addr_info ?? [])
    .filter((a) => a.local !== undefined && a.prefixlen !== undefined)
    .map((a) => ({ address: tryParseAddress(a.local ?? ''), length: a.prefixlen ?? 0 }))
    .filter(({ address }) => address !== undefined)
    .map(({ address, length }) => `${address?.text ?? ''}/${length}`)
    .sort();
}

/** The device part of a tunnel snapshot (src/core/tunnelhealth.ts); `mac` for taps only. */
/**
 * The device part of a TunnelSnapshot. `tap`: tinc's tap, whose MAC the peers know and whose
 * carrier says whether a daemon holds it.
 */
export function linkSnapshot(link: IpLinkAddr | undefined, tap: boolean): TunnelSnapshot['link'] {
  if (!link) return undefined;
  return {
    ifindex: link.ifindex ?? 0,
    up: (link.flags ?? []).includes('UP'),
    ...(tap && link.address !== undefined ? { mac: link.address } : {}),
    ...(tap && hasCarrier(link) !== undefined ? { carrier: hasCarrier(link) } : {}),
    addresses: addressesOf(link),
  };
}

/**
 * Whether a daemon holds the tun/tap device (it has carrier only while one has it open);
 * undefined while the link is down, when the kernel does not say.
 */
export function hasCarrier(link: IpLinkAddr): boolean | undefined {
  const flags = link.flags ?? [];
  return flags.includes('UP') ? !flags.includes('NO-CARRIER') : undefined;
}

/**
 * Runs calls one after the other: a driver's apply(), remove() and check() of the same tunnel
 * must not interleave (a check while apply restarts a daemon would see its device gone).
 */
export class Serial {
  #tail: Promise<unknown> = Promise.resolve();

  run<T>(step: () => Promise<T>): Promise<T> {
    const result = this.#tail.then(step, step);
    this.#tail = result.catch(() => undefined);
    return result;
  }
}

/**
 * Endpoints given by name are resolved here, once per apply, so what the driver sets is what
 * observe() compares with (an address) and a failed lookup creates nothing.
 */
export async function resolveEndpoints(intent: TunnelIntent): Promise<TunnelIntent> {
  const peers = await Promise.all(
    intent.peers.map(async (peer) => {
      if (peer.endpoint === undefined) return peer;
      const endpoint = parseEndpoint(peer.endpoint);
      if (endpoint.family !== undefined) return peer;
      const found = await lookup(endpoint.host).catch((error: NodeJS.ErrnoException) => {
        throw new IpferryError('IPF_E_TUNNEL_ENDPOINT', {
          summary: `cannot resolve ${endpoint.host}: ${error.code ?? error.message}`,
        });
      });
      const host = found.family === 6 ? `[${found.address}]` : found.address;
      return { ...peer, endpoint: parseEndpoint(`${host}:${endpoint.port}`).text };
    }),
  );
  return { ...intent, peers };
}
