/**
 * The host's neighbour (ARP/NDP) table from `ip -j neigh show`, read-only. Entries without a
 * link-layer address (INCOMPLETE, FAILED) say nothing about who owns an address, so they are
 * left out. Also the parser of proxy entries (`ip -j neigh show proxy`), which the Linux
 * dataplane reads back as on-link claims.
 */
import { tryParseAddress, tryParseMac } from '../../core/address.js';
import type { Neighbour } from '../../core/model.js';
import { run } from '../exec.js';

interface IpNeighEntry {
  dst?: string;
  dev?: string;
  lladdr?: string;
  state?: string[];
}

export function parseNeighbours(json: string): Neighbour[] {
  const entries = JSON.parse(json || '[]') as IpNeighEntry[];
  return entries.flatMap((e): Neighbour[] => {
    const address = e.dst ? tryParseAddress(e.dst) : undefined;
    const mac = e.lladdr ? tryParseMac(e.lladdr) : undefined;
    if (!address || !mac || !e.dev || e.state?.some((s) => s === 'FAILED' || s === 'INCOMPLETE')) {
      return [];
    }
    return [{ address: address.text, mac, interface: e.dev }];
  });
}

/** The neighbour table of the current network namespace, or of `netns`. */
export async function readNeighbours(netns?: string): Promise<Neighbour[]> {
  const args = ['-j', 'neigh', 'show'];
  const { stdout } = await run('ip', netns ? ['-n', netns, ...args] : args);
  return parseNeighbours(stdout);
}

/** A proxy neighbour entry: the host answers ARP (IPv4) or NDP (IPv6) for `address` on `interface`. */
export interface ProxyEntry {
  readonly address: string;
  readonly interface: string;
}

/**
 * Parses `ip -j neigh show proxy` (both families): the addresses the host answers for on a link
 * without holding them, in canonical spelling. Such entries carry no link-layer address.
 */
export function parseProxyEntries(json: string): ProxyEntry[] {
  const entries = JSON.parse(json || '[]') as IpNeighEntry[];
  return entries.flatMap((e): ProxyEntry[] => {
    const address = e.dst ? tryParseAddress(e.dst) : undefined;
    return address && e.dev ? [{ address: address.text, interface: e.dev }] : [];
  });
}
