/**
 * The host's neighbour (ARP/NDP) table from `ip -j neigh show`, read-only. Entries without a
 * link-layer address (INCOMPLETE, FAILED) say nothing about who owns an address, so they are
 * left out.
 */
import { tryParseAddress, tryParseMac } from '../../core/address.js';
import type { Neighbour } from '../dataplane.js';
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
