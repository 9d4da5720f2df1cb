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
import { fnv1a, type TunnelChange, type TunnelIntent } from '../../core/tunnel.js';
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
 * Makes the tunnel's tap, persistent, with its MAC, no kernel link-local address, MTU,
 * addresses and link up, unless one of ours is there already (false then). A tap tincd made
 * itself (an older ipferry's) is waited for to go with its tincd, stopped by now, and then
 * made anew as ours.
 */
export async function ensureTap(
  netns: string | undefined,
  node: string,
  intent: TunnelIntent,
): Promise<boolean> {
  const name = intent.name;
  const link = await readTap(netns, name);
  if (link && persistent(link)) return false;
  if (link && !(await tapGone(netns, name, 2000))) {
    throw dataplaneError(`${name} exists, held by something other than this node's tincd`);
  }
  // One `ip -batch` (it stops at the first failing line, as separate calls would).
  const lines = [
    `tuntap add dev ${name} mode tap`,
    `link set dev ${name} address ${tapMac(node, name)}`,
    `link set dev ${name} addrgenmode none`,
    `link set dev ${name} mtu ${intent.mtu}`,
    ...intent.addresses.map(
      (a) => `address add ${a} dev ${name}${a.includes(':') ? ' nodad' : ''}`,
    ),
    `link set dev ${name} up`,
  ];
  await ipIn(netns, ['-batch', '-'], { input: `${lines.join('\n')}\n` });
  return true;
}

/** Gives the tap its MAC back and no kernel link-local address (a tap tincd made anew). */
export async function restoreTapMac(
  netns: string | undefined,
  node: string,
  name: string,
): Promise<void> {
  await ipIn(netns, ['link', 'set', 'dev', name, 'address', tapMac(node, name)]);
  await ipIn(netns, ['link', 'set', 'dev', name, 'addrgenmode', 'none']);
}

/** The diff's changes to the tap itself: MTU, addresses, link up. */
export async function applyTapChanges(
  netns: string | undefined,
  name: string,
  changes: readonly TunnelChange[],
): Promise<void> {
  for (const change of changes) {
    if (change.kind === 'mtu') {
      await ipIn(netns, ['link', 'set', 'dev', name, 'mtu', String(change.mtu)]);
    } else if (change.kind === 'address-add') {
      const nodad = change.address.includes(':') ? ['nodad'] : [];
      await ipIn(netns, ['address', 'add', change.address, 'dev', name, ...nodad]);
    } else if (change.kind === 'address-del') {
      await ipIn(netns, ['address', 'del', change.address, 'dev', name]);
    } else if (change.kind === 'up') {
      await ipIn(netns, ['link', 'set', 'dev', name, 'addrgenmode', 'none']);
      await ipIn(netns, ['link', 'set', 'dev', name, 'up']);
    }
  }
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
