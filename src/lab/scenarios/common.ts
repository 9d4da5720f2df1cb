/**
 * What every scenario uses, fleet too: hosts without reverse-path filtering, the optional
 * namespace prefix, building a lab and then what its spec cannot express, and reading the
 * counters of the nftables tables a scenario installs.
 */
import { Lab, type LabSpec } from '../topology.js';

/**
 * Reverse-path filtering off, explicitly (new namespaces may inherit the machine's setting), so
 * a lab's own nftables rules are its only source checks.
 */
export const NO_RP_FILTER = {
  'net.ipv4.conf.all.rp_filter': 0,
  'net.ipv4.conf.default.rp_filter': 0,
};

export function withPrefix(prefix: string | undefined): { prefix?: string } {
  return prefix === undefined ? {} : { prefix };
}

/** Creates the lab and installs what its spec cannot express; on failure destroys it, rethrows. */
export async function build(spec: LabSpec, apply: (lab: Lab) => Promise<void>): Promise<Lab> {
  const lab = await Lab.create(spec);
  try {
    await apply(lab);
    return lab;
  } catch (error) {
    await lab.destroy();
    throw error;
  }
}

interface NftCounterList {
  nftables?: { counter?: { name?: string; packets?: number } }[];
}

/** Packets per named counter of a table; empty when the table does not exist. */
export async function readCounters(
  lab: Lab,
  host: string,
  family: string,
  table: string,
): Promise<Map<string, number>> {
  const counters = new Map<string, number>();
  const { stdout: tables } = await lab.exec(host, ['nft', 'list', 'tables']);
  if (!tables.split('\n').includes(`table ${family} ${table}`)) return counters;
  const { stdout } = await lab.exec(host, [
    'nft',
    '-j',
    'list',
    'counters',
    'table',
    family,
    table,
  ]);
  for (const item of (JSON.parse(stdout) as NftCounterList).nftables ?? []) {
    const name = item.counter?.name;
    if (name !== undefined) counters.set(name, item.counter?.packets ?? 0);
  }
  return counters;
}
