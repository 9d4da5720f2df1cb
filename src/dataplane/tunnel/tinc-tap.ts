/**
 * The tap of a tinc tunnel. It is the driver's, not tincd's: made persistent (`ip tuntap add …
 * mode tap`) with its MAC, MTU, addresses and link up before the first tincd attaches to it
 * (tincd opens an existing tap of its `Interface` name), so it outlives tincd with its ifindex,
 * addresses and every route through it; only its carrier goes while no tincd holds it.
 *
 * Its MAC is derived from the node and interface name, so a tap made anew comes back with the
 * same one and the peers' neighbour caches stay right. The link is set to `addrgenmode none`
 * before it first goes up: the kernel adds no fe80 address of its own, so every address on the
 * tunnel (link-local ones included) is ipferry's and observe() reports them all.
 *
 * Every function acts in namespace `netns` (the current one when undefined) through `ip`.
 */
import type { Family } from '../../core/address.js';
import { fnv1a, type TunnelChange, type TunnelIntent } from '../../core/tunnel.js';
import { forValue, ipLineOf, tunnel } from '../linux/args.js';
import { dataplaneError, type IpLinkAddr, ipIn, NO_DEVICE, sleep } from './common.js';

/** A locally administered unicast MAC, the same for a node's tunnel across tincd restarts. */
export function tapMac(node: string, ifname: string): string {
  const high = fnv1a(`mac\0${node}\0${ifname}`);
  const low = fnv1a(`${ifname}\0${node}\0mac`);
  const bytes = [
    0x02,
    high >>> 24,
    (high >>> 16) & 0xff,
    (high >>> 8) & 0xff,
    high & 0xff,
    low & 0xff,
  ];
  return bytes.map((b) => b.toString(16).padStart(2, '0')).join(':');
}

/** Whether the tap outlives its tincd: ours, made by `ip tuntap add` (ensureTap). */
export function persistent(link: IpLinkAddr): boolean {
  return link.linkinfo?.info_data?.persist === true;
}

/** Interface `name` as `ip` shows it, or undefined when there is none; refuses a non-tap. */
export async function readTap(
  netns: string | undefined,
  name: string,
): Promise<IpLinkAddr | undefined> {
  const { stdout } = await ipIn(netns, ['-d', '-j', 'address', 'show', 'dev', name], {
    tolerate: NO_DEVICE,
  });
  const [link] = JSON.parse(stdout.trim() || '[]') as IpLinkAddr[];
  if (!link) return undefined;
  const kind = link.linkinfo?.info_kind;
  if (kind !== 'tun' || link.linkinfo?.info_data?.type !== 'tap') {
    throw dataplaneError(`${name} exists but is a ${kind ?? 'plain'} interface, not a tinc tap`);
  }
  return link;
}

/** Waits until interface `name` is gone; false when it is still there after `timeoutMs`. */
export async function tapGone(
  netns: string | undefined,
  name: string,
  timeoutMs: number,
): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (await readTap(netns, name).catch(() => undefined)) {
    if (Date.now() > deadline) return false;
    await sleep(20);
  }
  return true;
}

/**
 * The `ip -batch` lines that make the tunnel's tap: persistent, with its MAC, no kernel
 * link-local address, its MTU, addresses and link up. Every value is parsed again into its
 * words (../linux/args.ts) and every line checked word by word, so an address or a name that
 * would be a second command refuses the tunnel with IPF_E_DATAPLANE; nothing runs.
 */
export function tapLines(node: string, intent: TunnelIntent): string {
  const key = intent.name;
  const lines = forValue('tunnel', key, () => {
    const dev = tunnel.ifname(intent.name);
    return [
      ['tuntap', 'add', 'dev', dev, 'mode', 'tap'],
      ['link', 'set', 'dev', dev, 'address', tunnel.mac(tapMac(node, dev))],
      ['link', 'set', 'dev', dev, 'addrgenmode', 'none'],
      ['link', 'set', 'dev', dev, 'mtu', tunnel.mtu(intent.mtu)],
      ...intent.addresses.map((text) => {
        const address = tunnel.interfaceAddress(text);
        return ['address', 'add', address.text, 'dev', dev, ...nodad(address.family)];
      }),
      ['link', 'set', 'dev', dev, 'up'],
    ];
  });
  return `${lines.map((words) => ipLineOf('tunnel', key, words)).join('\n')}\n`;
}

/**
 * Makes the tunnel's tap (tapLines) unless one of ours is there already (false then). A tap
 * tincd made itself (an older ipferry's) is waited for to go with its tincd, stopped by now,
 * and then made anew as ours.
 */
export async function ensureTap(
  netns: string | undefined,
  node: string,
  intent: TunnelIntent,
): Promise<boolean> {
  const name = intent.name;
  const batch = tapLines(node, intent);
  const link = await readTap(netns, name);
  if (link && persistent(link)) return false;
  if (link && !(await tapGone(netns, name, 2000))) {
    throw dataplaneError(`${name} exists, held by something other than this node's tincd`);
  }
  // One `ip -batch` (it stops at the first failing line, as separate calls would).
  await ipIn(netns, ['-batch', '-'], { input: batch });
  return true;
}

/** IPv6 addresses go on without duplicate address detection: the tunnel is the only link. */
function nodad(family: Family): string[] {
  return family === 6 ? ['nodad'] : [];
}

/** Gives the tap its MAC back and no kernel link-local address (a tap tincd made anew). */
export async function restoreTapMac(
  netns: string | undefined,
  node: string,
  name: string,
): Promise<void> {
  const commands = forValue('tunnel', name, () => {
    const dev = tunnel.ifname(name);
    return [
      ['link', 'set', 'dev', dev, 'address', tunnel.mac(tapMac(node, dev))],
      ['link', 'set', 'dev', dev, 'addrgenmode', 'none'],
    ];
  });
  for (const command of commands) await ipIn(netns, command);
}

/**
 * The `ip` commands (argv) of the diff's changes to the tap itself: MTU, addresses, link up;
 * every value parsed again (tapLines), all of them before the first one runs.
 */
export function tapCommands(name: string, changes: readonly TunnelChange[]): string[][] {
  return forValue('tunnel', name, () => {
    const dev = tunnel.ifname(name);
    const commands: string[][] = [];
    for (const change of changes) {
      if (change.kind === 'mtu') {
        commands.push(['link', 'set', 'dev', dev, 'mtu', tunnel.mtu(change.mtu)]);
      } else if (change.kind === 'address-add') {
        const address = tunnel.interfaceAddress(change.address);
        commands.push(['address', 'add', address.text, 'dev', dev, ...nodad(address.family)]);
      } else if (change.kind === 'address-del') {
        commands.push(['address', 'del', tunnel.interfaceAddress(change.address).text, 'dev', dev]);
      } else if (change.kind === 'up') {
        commands.push(['link', 'set', 'dev', dev, 'addrgenmode', 'none']);
        commands.push(['link', 'set', 'dev', dev, 'up']);
      }
    }
    return commands;
  });
}

/** Runs the commands tapCommands rendered of a diff's changes to the tap, in order. */
export async function applyTapChanges(
  netns: string | undefined,
  commands: readonly (readonly string[])[],
): Promise<void> {
  for (const command of commands) await ipIn(netns, command);
}

/** The tap's own byte counters: all peers together, the only ones tinc 1.0 has. */
export async function tapCounters(
  netns: string | undefined,
  name: string,
): Promise<{ rxBytes: number; txBytes: number } | undefined> {
  const { stdout } = await ipIn(netns, ['-s', '-j', 'link', 'show', 'dev', name], {
    tolerate: NO_DEVICE,
  });
  const [link] = JSON.parse(stdout.trim() || '[]') as {
    stats64?: { rx?: { bytes?: number }; tx?: { bytes?: number } };
  }[];
  const rx = link?.stats64?.rx?.bytes;
  const tx = link?.stats64?.tx?.bytes;
  return rx === undefined || tx === undefined ? undefined : { rxBytes: rx, txBytes: tx };
}
