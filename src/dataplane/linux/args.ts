/**
 * The one way a value of an intent element reaches a word of an `ip`, `sysctl` or `conntrack`
 * command, one renderer per tool (nftables has its own, `nft` in ../nft/ruleset.ts). A payload
 * is text that came, in the end, from a store record or from the kernel: each value is parsed
 * again here into what its field says it is — a canonical address or prefix, an interface name,
 * an integer in range, a routing table, a mark — and written as the tool reads it. A value that
 * does not parse refuses its whole element with IPF_E_DATAPLANE, naming the element, when a
 * manager plans its change: before any command of the apply runs, so nothing is applied.
 *
 * Why every word is checked: `ip -batch` reads one command per line and splits a line into
 * words at blanks, at quotes and at `#` (the rest is a comment), and a backslash at a line's
 * end joins the next line. A pool uplink `eth0\nlink set lo down` pasted as it is would be a
 * second command. The words written here hold none of those characters, and `ipLine` checks
 * that once more for every word of a batch line. The other tools get argv (execFile, no
 * shell); there a value can still become another option (`-F`) or, for sysctl, another file
 * (`kernel/core_pattern`), which the same parsing rules out.
 *
 * The tunnel drivers (../tunnel/) write their values here too: `ip` words for their
 * interfaces (`tunnel`), `wg set` argv (`wg`) and the lines of the files tincd reads (`tinc`:
 * a line per setting, so a newline in a key or a name would be a setting of its own). Their
 * values belong to no intent element; a refusal names the tunnel (forValue, refusedValue).
 */
import { createPublicKey } from 'node:crypto';
import { type Address, type Family, tryParseAddress, tryParsePrefix } from '../../core/address.js';
import { IpferryError } from '../../core/errors.js';
import {
  type Endpoint,
  isTincKey,
  isTunnelName,
  isWireGuardKey,
  parseEndpoint,
} from '../../core/tunnel.js';
import {
  decodeElement,
  element,
  type IntentElement,
  type RoutingTable,
} from '../../intent/elements.js';
import { isHandledInterfaceName } from '../../intent/facts.js';

/**
 * A value that is not what its field says; `forElement` names the element it belongs to. The
 * nftables renderer (../nft/ruleset.ts) throws it too, so every refusal reads the same.
 */
export class Unfit extends Error {}

/** How many characters of a refused value an error shows (a value may be 5 MB of garbage). */
const SHOWN = 64;

/** A value for a message: quoted, control characters escaped, cut after SHOWN characters. */
export function shown(value: unknown): string {
  const text = typeof value === 'string' ? value : String(value);
  return JSON.stringify(text.length > SHOWN ? `${text.slice(0, SHOWN)}…` : text);
}

function unfit(value: unknown, what: string): Unfit {
  return new Unfit(`${shown(value)} is not ${what}`);
}

/** The error that refuses `e`: the kind and key of the element, and what is wrong with it. */
export function refusedElement(e: IntentElement, reason: string): IpferryError {
  return new IpferryError('IPF_E_DATAPLANE', {
    reason: `refused an element: ${e.kind} ${shown(e.key)}: ${reason}`,
  });
}

/**
 * Runs `render` for element `e`; a value that does not parse refuses `e` (refusedElement). So
 * does an element whose text is not what its own values encode to: the codec reads fields by
 * words and leaves out what it does not know (`dev eth0 up` reads as `dev eth0`), so a value
 * with a blank in it would otherwise pass as a shorter one.
 */
export function forElement<T>(e: IntentElement, render: () => T): T {
  const again = element(e.kind, decodeElement(e).data, e.owner);
  if (again.key !== e.key || again.value !== e.value) {
    throw refusedElement(e, `its text is not what its own values encode to (${shown(e.value)})`);
  }
  try {
    return render();
  } catch (error) {
    if (error instanceof Unfit) throw refusedElement(e, error.message);
    throw error;
  }
}

function integer(n: unknown, min: number, max: number, what: string): number {
  if (typeof n !== 'number' || !Number.isInteger(n) || n < min || n > max) throw unfit(n, what);
  return n;
}

/** A canonical address (as src/core/address.ts writes it), of `family` when given. */
function address(text: string, family?: Family): Address {
  const parsed = tryParseAddress(text);
  if (!parsed || parsed.text !== text) throw unfit(text, 'an address');
  if (family !== undefined && parsed.family !== family) {
    throw unfit(text, `an IPv${family} address`);
  }
  return parsed;
}

/**
 * An interface name as Linux and every tool take it as one word: what the host's facts admit
 * (isHandledInterfaceName), less `.` and `..`, which Linux refuses and a sysctl path would read
 * as a directory.
 */
function ifname(name: string): string {
  if (!isHandledInterfaceName(name) || name === '.' || name === '..') {
    throw unfit(name, 'an interface name');
  }
  return name;
}

/** Route and rule words of `ip`. */
export const ip = {
  address,
  /** A canonical prefix with its host bits zero: `203.0.113.10/32`, `0.0.0.0/1`, `::/0`. */
  prefix(text: string): { readonly text: string; readonly family: Family } {
    const parsed = tryParsePrefix(text);
    if (!parsed || parsed.text !== text) throw unfit(text, 'a prefix');
    return { text: parsed.text, family: parsed.family };
  },
  ifname,
  /**
   * A route's next hop: an address of the route's family, or (`via inet6 fe80::…`) an IPv6
   * next hop of an IPv4 route; as words.
   */
  via(text: string, family: Family): string[] {
    const inet6 = /^inet6 (.*)$/s.exec(text);
    if (inet6) return ['inet6', address(inet6[1] ?? '', 6).text];
    return [address(text, family).text];
  },
  /**
   * A routing table: a number (1 to 2^32-1), or a name from rt_tables as `ip -j` shows it
   * (`main`). Not `all` or `unspec`, which mean every table to a deletion.
   */
  table(t: RoutingTable): string {
    if (typeof t === 'number') return String(integer(t, 1, 0xffffffff, 'a routing table'));
    if (!/^[A-Za-z][A-Za-z0-9_-]{0,31}$/.test(t) || t === 'all' || t === 'unspec') {
      throw unfit(t, 'a routing table');
    }
    return t;
  },
  priority(n: number): string {
    return String(integer(n, 0, 0xffffffff, 'a rule priority'));
  },
  /** A route's MTU: IPv4's least (68) to the largest a packet can have. */
  mtu(n: number): string {
    return String(integer(n, 68, 65535, 'an MTU'));
  },
  prefixLength(n: number, family: Family): string {
    return String(integer(n, 0, family === 4 ? 32 : 128, `an IPv${family} prefix length`));
  },
  /** A firewall mark or mask (0x… or decimal) as `0x…`. */
  mark(text: string): string {
    const n = /^(0x[0-9a-fA-F]{1,8}|\d{1,10})$/.test(text) ? Number(text) : NaN;
    if (!(n >= 0 && n <= 0xffffffff)) throw unfit(text, 'a firewall mark');
    return `0x${n.toString(16)}`;
  },
  /** The label of an address held on `uplink` (Linux: the interface's name first, 15 at most). */
  label(text: string, uplink: string): string {
    if (!text.startsWith(ifname(uplink)) || !/^[A-Za-z0-9_.@+:-]{1,15}$/.test(text)) {
      throw unfit(text, `an address label of ${uplink}`);
    }
    return text;
  },
};

/** What one word of an `ip -batch` line may hold: no blank, quote, `#`, backslash or control. */
const BATCH_WORD = /^[A-Za-z0-9_.:/@+-]+$/;

/**
 * One line of `ip -batch` from words the renderers above wrote. The check is a second line of
 * defence: a word that fails it is a bug in a renderer, and still refuses the element.
 */
export function ipLine(e: IntentElement, words: readonly string[]): string {
  for (const word of words) {
    if (!BATCH_WORD.test(word)) throw refusedElement(e, `${shown(word)} is not one word of ip`);
  }
  return words.join(' ');
}

/**
 * Sysctl names and values. Only the two trees ipferry sets, so no value can name another file
 * (`kernel.core_pattern`): `net.ipv4|ipv6.SETTING` and `net.ipv4|ipv6.conf|neigh.IFNAME.SETTING`.
 * A name is written with `/` between its parts: sysctl then keeps the dots of an interface name
 * (a VLAN, `eth0.100`), where the dotted form would read them as more parts.
 */
export const sysctl = {
  path(text: string): string {
    const perInterface = /^net\.(ipv4|ipv6)\.(conf|neigh)\.(.+)\.([a-z0-9_]{1,64})$/.exec(text);
    if (perInterface) {
      const [, family = '', tree = '', name = '', setting = ''] = perInterface;
      return ['net', family, tree, ifname(name), setting].join('/');
    }
    const global = /^net\.(ipv4|ipv6)\.([a-z0-9_]{1,64})$/.exec(text);
    if (global) return ['net', global[1] ?? '', global[2] ?? ''].join('/');
    throw unfit(text, 'a sysctl ipferry sets');
  },
  /** The integers ipferry writes (and the ones it read and puts back). */
  value(text: string): string {
    if (!/^-?\d{1,10}$/.test(text)) throw unfit(text, 'a sysctl value');
    return String(integer(Number(text), -0x80000000, 0xffffffff, 'a sysctl value'));
  },
};

/** `conntrack -D` filter values. */
export const conntrack = {
  address,
  /** The `-f` option of an address: conntrack filters IPv4 unless told otherwise. */
  family(a: Address): string[] {
    return a.family === 6 ? ['-f', 'ipv6'] : [];
  },
  protocol(text: string): string {
    if (text !== 'tcp' && text !== 'udp') throw unfit(text, 'tcp or udp');
    return text;
  },
  port(n: number): string {
    return String(integer(n, 1, 65535, 'a port'));
  },
};

// ---------------------------------------------------------------------------------------------
// Tunnels (../tunnel/): the WireGuard and tinc drivers' commands and tincd's files

/**
 * The error that refuses a value that belongs to no intent element: a tunnel's (`kind`
 * `tunnel`, `key` its interface name). It reads as refusedElement's.
 */
export function refusedValue(kind: string, key: string, reason: string): IpferryError {
  return new IpferryError('IPF_E_DATAPLANE', {
    reason: `refused an element: ${kind} ${shown(key)}: ${reason}`,
  });
}

/** Runs `render` for the values of `kind` `key`; one that does not parse refuses it (refusedValue). */
export function forValue<T>(kind: string, key: string, render: () => T): T {
  try {
    return render();
  } catch (error) {
    if (error instanceof Unfit) throw refusedValue(kind, key, error.message);
    throw error;
  }
}

/** Runs `render`, saying in a refusal which part (`peer "node-b"`) the value was of. */
export function within<T>(part: string, render: () => T): T {
  try {
    return render();
  } catch (error) {
    if (error instanceof Unfit) throw new Unfit(`${part}: ${error.message}`);
    throw error;
  }
}

/** ipLine for a value that belongs to no intent element: refused as refusedValue. */
export function ipLineOf(kind: string, key: string, words: readonly string[]): string {
  for (const word of words) {
    if (!BATCH_WORD.test(word)) {
      throw refusedValue(kind, key, `${shown(word)} is not one word of ip`);
    }
  }
  return words.join(' ');
}

/** Control characters (C0, DEL, C1) and the Unicode line separators. */
// eslint-disable-next-line no-control-regex
const CONTROL = /[\x00-\x1f\x7f-\x9f\u2028\u2029]/;

/** A canonical `ADDRESS/LENGTH` an interface holds (host bits kept): `10.200.0.1/30`. */
function interfaceAddress(text: string): { readonly text: string; readonly family: Family } {
  const slash = text.indexOf('/');
  const parsed = slash < 0 ? undefined : tryParseAddress(text.slice(0, slash));
  const length = text.slice(slash + 1);
  const bits = parsed?.family === 4 ? 32 : 128;
  if (
    !parsed ||
    `${parsed.text}/${length}` !== text ||
    !/^(0|[1-9]\d{0,2})$/.test(length) ||
    Number(length) > bits
  ) {
    throw unfit(text, 'an address with its prefix length');
  }
  return { text, family: parsed.family };
}

/** A canonical endpoint, as src/core/tunnel.ts's parseEndpoint writes it. */
function endpoint(text: string): Endpoint {
  let parsed: Endpoint | undefined;
  try {
    parsed = parseEndpoint(text);
  } catch {
    parsed = undefined;
  }
  if (!parsed || parsed.text !== text) throw unfit(text, 'an endpoint (host:port, [IPv6]:port)');
  return parsed;
}

/**
 * A file of this node's state directory (a private key): a path without control characters,
 * which a configuration line would end at, blanks at either end, which tinc drops, or a `-`
 * first, which an argv would read as an option.
 */
function localFile(text: string): string {
  if (text === '' || text.startsWith('-') || text.trim() !== text || CONTROL.test(text)) {
    throw unfit(text, 'a file path');
  }
  return text;
}

function port(n: number): string {
  return String(integer(n, 1, 65535, 'a port'));
}

/** A peer's allowed IPs: canonical prefixes (host bits zero), by commas; none is `''`. */
function allowedIps(prefixes: readonly string[]): string {
  return prefixes.map((p) => ip.prefix(p).text).join(',');
}

/** A keepalive interval in seconds; none is `off`. */
function keepalive(seconds: number | undefined): string {
  return seconds === undefined ? 'off' : String(integer(seconds, 1, 65535, 'a keepalive interval'));
}

/** The words both tunnel drivers give `ip` for their interface, and their peers' values. */
export const tunnel = {
  /** An ipferry tunnel's interface: `ipf…`, 15 characters at most (src/core/tunnel.ts). */
  ifname(text: string): string {
    if (!isTunnelName(text)) throw unfit(text, 'an ipferry tunnel (ipf…) name');
    return ifname(text);
  },
  interfaceAddress,
  mtu: (n: number): string => ip.mtu(n),
  /** A MAC as `ip` prints it: six bytes, lower case, colons. */
  mac(text: string): string {
    if (!/^[0-9a-f]{2}(?::[0-9a-f]{2}){5}$/.test(text)) throw unfit(text, 'a MAC address');
    return text;
  },
  port,
  endpoint,
  allowedIps,
  keepalive,
  localFile,
};

/** `wg set` values. The private key is never one: `wg` is given its file (localFile). */
export const wg = {
  /** A WireGuard key: base64 of 32 bytes, 44 characters, as `wg` prints it. */
  key(text: string): string {
    if (!isWireGuardKey(text) || Buffer.from(text, 'base64').length !== 32) {
      throw unfit(text, 'a WireGuard key');
    }
    return text;
  },
  endpoint(text: string): string {
    return endpoint(text).text;
  },
  /** `''` (none) clears a peer's allowed IPs. */
  allowedIps,
  keepalive,
  port,
};

/** What tincd 1.0 reads after `=` on a line: the rest of the line, blanks at its end dropped. */
export const tinc = {
  /** A tinc node name: tinc allows only letters, digits and `_`; node names make them ≤ 63. */
  name(text: string): string {
    if (!/^[A-Za-z0-9_]{1,63}$/.test(text)) throw unfit(text, 'a tinc node name');
    return text;
  },
  /** A host file's `Address`: `HOST PORT`, an address or a host name and a port. */
  address(text: string): string {
    const { host, port } = endpoint(text);
    return `${host} ${port}`;
  },
  port,
  /**
   * An RSA public key in PKCS#1 PEM, as tinc 1.0's host files hold it, as its lines: the
   * BEGIN and END lines and base64 between them (src/core/tunnel.ts's isTincKey), which must
   * also read as an RSA public key. tinc reads the block up to its END line, so nothing can
   * follow the key in it.
   */
  pem(text: string): string[] {
    if (!isTincKey(text)) throw unfit(text, 'an RSA public key (PKCS#1 PEM)');
    try {
      const key = createPublicKey({ key: text, format: 'pem', type: 'pkcs1' });
      if (key.asymmetricKeyType !== 'rsa') throw new Error('not RSA');
    } catch {
      throw unfit(text, 'an RSA public key (PKCS#1 PEM)');
    }
    return text.replace(/\n$/, '').split('\n');
  },
  localFile,
};

/**
 * A file tincd reads (tinc.conf, hosts/NAME) from lines the renderers above wrote, checked once
 * more as ipLine checks `ip`'s: no line holds a control character (a newline would start a
 * line of its own: `Subnet = 0.0.0.0/0` after a key, a `ConnectTo` after a name).
 */
export function tincFileOf(kind: string, key: string, lines: readonly string[]): string {
  for (const line of lines) {
    if (CONTROL.test(line)) {
      throw refusedValue(kind, key, `${shown(line)} is not one line of a tinc file`);
    }
  }
  return `${lines.join('\n')}\n`;
}
