/**
 * The intent's elements: one kernel object each (an nftables map or set element, a route, a
 * policy rule, a sysctl, an address claimed on an uplink), typed per kind.
 *
 * Every kind is one row of KINDS: its place in the apply order, the part of the dataplane that
 * holds it, and its codec. An element travels as `{kind, key, value, owner}` text — the key is
 * its identity in the diff, the value what a replace changes, and that text is what plans show
 * and tests compare — but nobody writes or splits that text by hand: compile builds elements
 * with `element(kind, data, owner)`, and every driver (nftables, routing, claims, sysctls, the
 * fake) reads them back with `decode(e)` as the typed payload of its kind. Adding a kind means a
 * Payloads entry and a KINDS row, which the type checker holds complete, and the `switch` of the
 * driver whose family it names, which it holds exhaustive.
 *
 * Addresses in payloads are canonical text (as src/core/address.ts prints them): compile's
 * inputs are parsed and validated before they get here, and the drivers check what they render
 * into a command (src/dataplane/…). The text itself is held to its fields by `element()`: no
 * field may hold whitespace or a control character, and the text must read back as the payload
 * it was made of, so a field can never carry a separator or a keyword of its codec (a route's
 * `dev` of `a via b`, a drop's `first` with a `-`) and spell another, valid-looking element.
 */
// A refused element is IPF_E_DATAPLANE, as the drivers refuse theirs (errors.ts imports nothing).
import { IpferryError } from '../core/errors.js';

/**
 * The IP protocol a forward or an open mesh port names: `tcp` or `udp` as compiled; an element
 * read back from the kernel carries whatever the kernel holds (so that it can be deleted).
 */
export type ProtocolName = string;

/** An inclusive port range; a single port has `first === last`. */
export interface PortRange {
  readonly first: number;
  readonly last: number;
}

/** What selects the packets of a policy rule: their source address, or their mark. */
export type RuleSelector =
  | { readonly from: string }
  | { readonly fwmark: string; readonly mask: string; readonly family: 4 | 6 };

/** A routing table by number, or by the name `ip` shows for it (`main`). */
export type RoutingTable = number | string;

/** The payload of each kind. */
export interface Payloads {
  /** The table's fixed part at `version` (`damaged` when observed with a rule missing). */
  readonly table: { readonly version: string };
  readonly sysctl: { readonly path: string; readonly value: string };
  /** Connections that leave by the interface they came in on are masqueraded. */
  readonly hairpin: { readonly ifname: string };
  /** A pool range (or part of one) whose unanswered addresses are dropped. */
  readonly drop: { readonly first: string; readonly last: string };
  /**
   * An on-link FIP answered for on `uplink`: held as a local address, or by a proxy ARP/NDP
   * entry (IPv6 claims always are).
   */
  readonly claim: { readonly fip: string; readonly uplink: string; readonly proxy: boolean };
  readonly counter: { readonly fip: string };
  readonly dnat: { readonly fip: string; readonly target: string };
  readonly snat: { readonly target: string; readonly fip: string };
  readonly masq: { readonly target: string };
  /** Ports forwarded as they are. */
  readonly fwd: {
    readonly fip: string;
    readonly protocol: ProtocolName;
    readonly ports: PortRange;
    readonly target: string;
  };
  /** One port forwarded to another port. */
  readonly fwdport: {
    readonly fip: string;
    readonly protocol: ProtocolName;
    readonly port: number;
    readonly target: string;
    readonly targetPort: number;
  };
  /** A nat/ports target behind a tunnel, and the MSS its path carries. */
  readonly tuntarget: { readonly target: string; readonly mss: number };
  /**
   * A route with ipferry's protocol number: `prefix` in the main table or in `table`, by `dev`,
   * with an optional next hop (`inet6 fe80::…` on an IPv4 route), preferred source and MTU.
   */
  readonly route: {
    readonly prefix: string;
    readonly table?: RoutingTable;
    readonly dev: string;
    readonly via?: string;
    readonly src?: string;
    readonly mtu?: number;
  };
  readonly rule: {
    readonly selector: RuleSelector;
    readonly table: RoutingTable;
    readonly suppressPrefixLength?: number;
    readonly priority: number;
  };
  /** The fleet mesh: overlay address → the address that member is reached at from here. */
  readonly meshnat: { readonly overlay: string; readonly address: string };
  /** The source to use toward a same-site member's private address. */
  readonly meshsnat: { readonly target: string; readonly source: string };
  readonly meshmember: { readonly address: string };
  /** A failsafe SSH prefix (observed: possibly a FIRST-LAST range someone added by hand). */
  readonly meshssh: { readonly prefix: string };
  readonly meshport: { readonly protocol: ProtocolName; readonly ports: PortRange };
  readonly meshreject: { readonly family: 'ipv4' | 'ipv6' };
}

export type ElementKind = keyof Payloads;

/** The part of a dataplane that holds a kind. */
export type ElementFamily = 'nft' | 'routing' | 'claim' | 'sysctl';

/** An element as it travels: see the file comment. */
export interface IntentElement {
  readonly kind: ElementKind;
  readonly key: string;
  readonly value: string;
  /** The FIP this element realises, `pool:NAME` or `host`. */
  readonly owner: string;
}

/** An element of kind K, as narrowing on `kind` gives it. */
export type ElementOf<K extends ElementKind> = IntentElement & { readonly kind: K };

/** A decoded element: narrow on `kind` to get the payload of that kind. */
export type TypedElement = {
  readonly [K in ElementKind]: {
    readonly kind: K;
    readonly owner: string;
    readonly data: Payloads[K];
  };
}[ElementKind];

interface KindSpec<P> {
  /** Position in sorted lists and in the apply order (the table first, sysctls next, …). */
  readonly order: number;
  readonly family: ElementFamily;
  readonly encode: (data: P) => { readonly key: string; readonly value: string };
  readonly decode: (key: string, value: string) => P;
}

/** The owner of what no FIP or pool owns. */
export const HOST_OWNER = 'host';

/** The key of the one `table` element (family and name of ipferry's nftables table). */
export const TABLE_KEY = 'inet ipferry';

const SEP = ' . ';
const PROXY = 'proxy ';

export const KINDS = {
  table: {
    order: 0,
    family: 'nft',
    encode: (d) => ({ key: TABLE_KEY, value: d.version }),
    decode: (_key, value) => ({ version: value }),
  },
  sysctl: {
    order: 1,
    family: 'sysctl',
    encode: (d) => ({ key: d.path, value: d.value }),
    decode: (key, value) => ({ path: key, value }),
  },
  hairpin: {
    order: 2,
    family: 'nft',
    encode: (d) => ({ key: d.ifname, value: d.ifname }),
    decode: (key) => ({ ifname: key }),
  },
  drop: {
    order: 3,
    family: 'nft',
    encode: (d) => ({ key: `${d.first}-${d.last}`, value: '' }),
    decode: (key) => {
      const [first = key, last = first] = key.split('-');
      return { first, last };
    },
  },
  claim: {
    order: 4,
    family: 'claim',
    encode: (d) => ({
      key: d.fip,
      value: d.proxy && !d.fip.includes(':') ? `${PROXY}${d.uplink}` : d.uplink,
    }),
    decode: (key, value) => {
      if (key.includes(':')) return { fip: key, uplink: value, proxy: true };
      const proxy = value.startsWith(PROXY);
      return { fip: key, uplink: proxy ? value.slice(PROXY.length) : value, proxy };
    },
  },
  counter: {
    order: 5,
    family: 'nft',
    encode: (d) => ({ key: d.fip, value: '' }),
    decode: (key) => ({ fip: key }),
  },
  dnat: {
    order: 6,
    family: 'nft',
    encode: (d) => ({ key: d.fip, value: d.target }),
    decode: (key, value) => ({ fip: key, target: value }),
  },
  snat: {
    order: 7,
    family: 'nft',
    encode: (d) => ({ key: d.target, value: d.fip }),
    decode: (key, value) => ({ target: key, fip: value }),
  },
  masq: {
    order: 8,
    family: 'nft',
    encode: (d) => ({ key: d.target, value: '' }),
    decode: (key) => ({ target: key }),
  },
  fwd: {
    order: 9,
    family: 'nft',
    encode: (d) => ({
      key: [d.fip, d.protocol, portsText(d.ports)].join(SEP),
      value: d.target,
    }),
    decode: (key, value) => {
      const [fip = '', protocol = '', ports = ''] = key.split(SEP);
      return { fip, protocol, ports: parsePorts(ports), target: value };
    },
  },
  fwdport: {
    order: 10,
    family: 'nft',
    encode: (d) => ({
      key: [d.fip, d.protocol, String(d.port)].join(SEP),
      value: [d.target, String(d.targetPort)].join(SEP),
    }),
    decode: (key, value) => {
      const [fip = '', protocol = '', port = ''] = key.split(SEP);
      const [target = '', targetPort = ''] = value.split(SEP);
      return {
        fip,
        protocol,
        port: Number(port),
        target,
        targetPort: Number(targetPort),
      };
    },
  },
  tuntarget: {
    order: 11,
    family: 'nft',
    encode: (d) => ({ key: d.target, value: String(d.mss) }),
    decode: (key, value) => ({ target: key, mss: Number(value) }),
  },
  route: {
    order: 12,
    family: 'routing',
    encode: (d) => ({
      key: d.table === undefined ? d.prefix : `${d.prefix} table ${d.table}`,
      value: [
        `dev ${d.dev}`,
        ...(d.via !== undefined ? [`via ${d.via}`] : []),
        ...(d.src !== undefined ? [`src ${d.src}`] : []),
        ...(d.mtu !== undefined ? [`mtu ${d.mtu}`] : []),
      ].join(' '),
    }),
    decode: (key, value) => {
      const [prefix = key, , table] = key.split(' ');
      const words = value.split(' ');
      const after = (word: string): string | undefined => {
        const at = words.indexOf(word);
        return at < 0 ? undefined : words[at + 1];
      };
      const via = after('via');
      const src = after('src');
      const mtu = after('mtu');
      return {
        prefix,
        ...(table !== undefined ? { table: tableOf(table) } : {}),
        dev: after('dev') ?? '',
        ...(via !== undefined
          ? { via: via === 'inet6' ? `inet6 ${after('inet6') ?? ''}` : via }
          : {}),
        ...(src !== undefined ? { src } : {}),
        ...(mtu !== undefined ? { mtu: Number(mtu) } : {}),
      };
    },
  },
  rule: {
    order: 13,
    family: 'routing',
    encode: (d) => {
      const s = d.selector;
      const suppress =
        d.suppressPrefixLength === undefined
          ? ''
          : ` suppress_prefixlength ${d.suppressPrefixLength}`;
      const key =
        'from' in s
          ? `from ${s.from} lookup ${d.table}${suppress}`
          : `fwmark ${s.fwmark}/${s.mask} lookup ${d.table}${suppress} ipv${s.family}`;
      return { key, value: String(d.priority) };
    },
    decode: (key, value) => {
      const words = key.split(' ');
      const [selector, subject = ''] = words;
      const after = (word: string): string | undefined => {
        const at = words.indexOf(word);
        return at < 0 ? undefined : words[at + 1];
      };
      const suppress = after('suppress_prefixlength');
      const [fwmark = '', mask = ''] = subject.split('/');
      return {
        selector:
          selector === 'fwmark'
            ? { fwmark, mask, family: words.at(-1) === 'ipv6' ? 6 : 4 }
            : { from: subject },
        table: tableOf(after('lookup') ?? ''),
        ...(suppress !== undefined ? { suppressPrefixLength: Number(suppress) } : {}),
        priority: Number(value),
      };
    },
  },
  meshnat: {
    order: 14,
    family: 'nft',
    encode: (d) => ({ key: d.overlay, value: d.address }),
    decode: (key, value) => ({ overlay: key, address: value }),
  },
  meshsnat: {
    order: 15,
    family: 'nft',
    encode: (d) => ({ key: d.target, value: d.source }),
    decode: (key, value) => ({ target: key, source: value }),
  },
  meshmember: {
    order: 16,
    family: 'nft',
    encode: (d) => ({ key: d.address, value: '' }),
    decode: (key) => ({ address: key }),
  },
  meshssh: {
    order: 17,
    family: 'nft',
    encode: (d) => ({ key: d.prefix, value: '' }),
    decode: (key) => ({ prefix: key }),
  },
  meshport: {
    order: 18,
    family: 'nft',
    encode: (d) => ({ key: [d.protocol, portsText(d.ports)].join(SEP), value: '' }),
    decode: (key) => {
      const [protocol = '', ports = ''] = key.split(SEP);
      return { protocol, ports: parsePorts(ports) };
    },
  },
  meshreject: {
    order: 19,
    family: 'nft',
    encode: (d) => ({ key: d.family, value: '' }),
    decode: (key) => ({ family: key === 'ipv6' ? 'ipv6' : 'ipv4' }),
  },
} as const satisfies { readonly [K in ElementKind]: KindSpec<Payloads[K]> };

/** The kinds one part of the dataplane holds, as a type: a driver's table over them is complete. */
export type KindOfFamily<F extends ElementFamily> = {
  [K in ElementKind]: (typeof KINDS)[K]['family'] extends F ? K : never;
}[ElementKind];

/** Every kind, in KINDS order. */
export const ELEMENT_KINDS: readonly ElementKind[] = (Object.keys(KINDS) as ElementKind[]).sort(
  (a, b) => KINDS[a].order - KINDS[b].order,
);

/** The kinds one part of the dataplane holds. */
export function kindsOf(family: ElementFamily): ReadonlySet<ElementKind> {
  return new Set(ELEMENT_KINDS.filter((k) => KINDS[k].family === family));
}

/** KINDS as the codec of each kind's own payload (what `satisfies` checked it to be). */
const CODECS: { readonly [K in ElementKind]: KindSpec<Payloads[K]> } = KINDS;

/**
 * The element of kind `kind` that carries `data`, owned by `owner`. Refuses (IPF_E_DATAPLANE)
 * data that its text cannot carry as it is: a field with whitespace or a control or format
 * character, or any field that reads back otherwise (see the file comment).
 */
export function element<K extends ElementKind>(
  kind: K,
  data: Payloads[K],
  owner: string,
): ElementOf<K> {
  const codec: KindSpec<Payloads[K]> = CODECS[kind];
  const unsafe = unsafeField(kind, data);
  if (unsafe !== undefined) {
    throw refused(kind, data, `its ${unsafe} holds whitespace or a control character`);
  }
  const { key, value } = codec.encode(data);
  const back = codec.decode(key, value);
  if (!samePayload(back, data)) {
    throw refused(
      kind,
      data,
      `its text reads back as ${JSON.stringify(back)} (a field holds a separator or keyword of the text, or a value of another type)`,
    );
  }
  return { kind, key, value, owner };
}

/**
 * An element for an object read back from the kernel, or none when its fields cannot be an
 * element (a device named like a keyword of the codec, say): such an object is not one ipferry
 * could have made, so it is left alone rather than failing the whole read.
 */
export function observedElement<K extends ElementKind>(
  kind: K,
  data: Payloads[K],
  owner: string,
): ElementOf<K>[] {
  try {
    return [element(kind, data, owner)];
  } catch (e) {
    if (e instanceof IpferryError && e.code === 'IPF_E_DATAPLANE') return [];
    throw e;
  }
}

/**
 * Whitespace (the codecs' separators are spaces, and ` . `), control characters (C0, DEL, C1:
 * line breaks in an `ip -batch` line, escapes in a terminal) and format characters (bidi
 * overrides, zero-width marks, which make a plan read otherwise than it is).
 */
const UNSAFE = /[\s\p{Cc}\p{Cf}]/u;
/** Printable ASCII without the space: what nearly every field is, and safe (a quicker test). */
const PLAIN = /^[\x21-\x7e]*$/;

/** The path of the first string field of `data` holding UNSAFE text, if any. */
function unsafeField(kind: ElementKind, data: object, prefix = ''): string | undefined {
  const fields = data as Record<string, unknown>;
  for (const name in fields) {
    const field = fields[name];
    if (typeof field === 'string') {
      if (PLAIN.test(field)) continue;
      // An IPv6 next hop of an IPv4 route is written `inet6 ADDRESS`, the one space a field has.
      const text = kind === 'route' && name === 'via' ? field.replace(/^inet6 /, '') : field;
      if (UNSAFE.test(text)) return `${prefix}${name}`;
    } else if (typeof field === 'object' && field !== null) {
      const inner = unsafeField(kind, field, `${prefix}${name}.`);
      if (inner !== undefined) return inner;
    }
  }
  return undefined;
}

/** Payloads alike field by field; a field set to undefined is one left out. */
function samePayload(a: unknown, b: unknown): boolean {
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) {
    return Object.is(a, b);
  }
  const [x, y] = [a as Record<string, unknown>, b as Record<string, unknown>];
  let fields = 0;
  for (const name in x) {
    if (x[name] === undefined) continue;
    fields++;
    if (!samePayload(x[name], y[name])) return false;
  }
  for (const name in y) if (y[name] !== undefined) fields--;
  return fields === 0;
}

function refused(kind: ElementKind, data: object, why: string): IpferryError {
  // Escaped (JSON leaves C1 and format characters as they are), so the reason is one line of
  // printable text; a record may hold kilobytes, the reason shows their start.
  const shown = JSON.stringify(data).replace(
    /[\p{Cc}\p{Cf}]/gu,
    (c) => `\\u{${c.codePointAt(0)!.toString(16)}}`,
  );
  const reason = `a ${kind} element cannot carry ${shown}: ${why}`;
  return new IpferryError('IPF_E_DATAPLANE', {
    reason: reason.length > 600 ? `${reason.slice(0, 600)}…` : reason,
  });
}

/** The payload of an element of a known kind. */
export function decode<K extends ElementKind>(e: ElementOf<K>): Payloads[K] {
  const codec: KindSpec<Payloads[K]> = CODECS[e.kind];
  return codec.decode(e.key, e.value);
}

/** Any element as its typed view (narrow on `kind`). */
export function decodeElement(e: IntentElement): TypedElement {
  return {
    kind: e.kind,
    owner: e.owner,
    data: KINDS[e.kind].decode(e.key, e.value),
  } as TypedElement;
}

/** Whether `e` is of kind `kind` (narrows it for decode). */
export function isKind<K extends ElementKind>(e: IntentElement, kind: K): e is ElementOf<K> {
  return e.kind === kind;
}

/** `80`, or `8000-8010`. */
export function portsText(p: PortRange): string {
  return p.first === p.last ? String(p.first) : `${p.first}-${p.last}`;
}

function tableOf(text: string): RoutingTable {
  return /^\d+$/.test(text) ? Number(text) : text;
}

function parsePorts(text: string): PortRange {
  const [first = '', last = first] = text.split('-');
  return { first: Number(first), last: Number(last) };
}
