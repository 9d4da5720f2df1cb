/**
 * wireguard-go in labs. The agents start it detached inside a lab namespace, so it outlives
 * the agent (deleting the namespace ends it); its control socket, though, lives in
 * /var/run/wireguard, one directory for every namespace of the machine, and a wireguard-go
 * killed with SIGKILL leaves it behind. Here: that directory, the daemons of a lab found by
 * namespace, stopping them by pid, and removing the sockets left.
 */
import { readFileSync, rmSync } from 'node:fs';
import { readdir, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { namespacePidsSync } from './netns.js';
import { alive, killQuietly } from './procs.js';
import type { Lab } from './topology.js';

/** wireguard-go's control sockets: one directory for every namespace of the machine. */
export const WIREGUARD_SOCKETS = '/var/run/wireguard';

/** The control socket of the wireguard-go serving interface `name`. */
export function wireguardSocket(name: string): string {
  return join(WIREGUARD_SOCKETS, `${name}.sock`);
}

/** Removes the wireguard-go control sockets of tunnels `names` (after their daemons died). */
export async function removeWireguardSockets(names: Iterable<string>): Promise<void> {
  const present = await readdir(WIREGUARD_SOCKETS).catch(() => [] as string[]);
  for (const socket of [...names].map((name) => `${name}.sock`)) {
    if (present.includes(socket)) {
      await unlink(join(WIREGUARD_SOCKETS, socket)).catch(() => undefined);
    }
  }
}

/** A wireguard-go process in a lab namespace. */
export interface WireguardDaemon {
  readonly pid: number;
  /** Its interface (`ipf…`); its control socket is wireguardSocket(name). */
  readonly name: string;
  readonly ns: string;
}

/** The command line of a process, or undefined when it exited meanwhile. */
function commandLine(pid: number): string[] | undefined {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8')
      .split('\0')
      .filter((a) => a !== '');
  } catch {
    return undefined;
  }
}

/**
 * The wireguard-go daemons (`wireguard-go -f ipf…`, ipferry's tunnels) running in a lab's
 * namespaces: found by namespace, so only the lab's own. Synchronous, for signal handlers too.
 */
export function wireguardDaemons(lab: Pick<Lab, 'hosts' | 'ns'>): WireguardDaemon[] {
  const found: WireguardDaemon[] = [];
  for (const host of lab.hosts) {
    const ns = lab.ns(host);
    for (const pid of namespacePidsSync(ns)) {
      const argv = commandLine(pid) ?? [];
      const name = argv[argv.length - 1];
      if (argv[0]?.split('/').pop() === 'wireguard-go' && name?.startsWith('ipf')) {
        found.push({ pid, name, ns });
      }
    }
  }
  return found;
}

/** SIGKILLs a lab's wireguard-go daemons and removes their sockets, for signal handlers. */
export function killWireguardSync(lab: Pick<Lab, 'hosts' | 'ns'>): WireguardDaemon[] {
  const daemons = wireguardDaemons(lab);
  for (const daemon of daemons) {
    killQuietly(daemon.pid);
    rmSync(wireguardSocket(daemon.name), { force: true });
  }
  return daemons;
}

/**
 * Stops a lab's wireguard-go daemons by pid: SIGTERM (it then removes its interface and
 * socket), SIGKILL after `graceMs`; removes a socket left behind. Resolves with what it stopped.
 */
export async function stopWireguard(
  lab: Pick<Lab, 'hosts' | 'ns'>,
  graceMs = 3000,
): Promise<WireguardDaemon[]> {
  const daemons = wireguardDaemons(lab);
  for (const d of daemons) killQuietly(d.pid, 'SIGTERM');
  const deadline = Date.now() + graceMs;
  for (const d of daemons) {
    while (alive(d.pid) && Date.now() < deadline) await sleep(20);
    if (alive(d.pid)) killQuietly(d.pid);
    rmSync(wireguardSocket(d.name), { force: true });
  }
  return daemons;
}
