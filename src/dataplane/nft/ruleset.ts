/**
 * The `inet ipferry` nftables table: its fixed part (chains and rules that only reference maps
 * and sets), how intent elements become map and set elements, and how `nft -j` output becomes
 * intent elements again. Rules never name an address, so adding, moving or removing a FIP is an
 * element change whatever the number of FIPs: lookups are O(1), not a rule walk per FIP. The fleet
 * mesh (src/core/mesh.ts) follows the same rule: a 5,000-node fleet is the same few rules and
 * 5,000 set elements.
 */
import { addressFromValue, tryParseAddress, tryParsePrefix } from '../../core/address.js';
import {
  decodeElement,
  element,
  observedElement,
  HOST_OWNER,
  type IntentElement,
  type KindOfFamily,
  kindsOf,
  type Payloads,
} from '../../intent/elements.js';
import { isHandledInterfaceName } from '../../intent/facts.js';
import { TUNNEL_IFNAME_PREFIX } from '../../core/tunnel.js';
import type { FipCounter } from '../dataplane.js';
import { forElement, Unfit } from '../linux/args.js';
import {
  HAIRPIN_MARK,
  NFT_FAMILY,
  NFT_SKELETON_VERSION,
  NFT_TABLE,
  TUNNEL_MARK,
} from '../../core/names.js';

const T = `${NFT_FAMILY} ${NFT_TABLE}`;
const COMMENT = `ipferry skeleton ${NFT_SKELETON_VERSION}`;
const MARK = `0x${HAIRPIN_MARK.toString(16)}`;
const TMARK = `0x${TUNNEL_MARK.toString(16)}`;

/** DNAT lookups, identical in prerouting (traffic arriving) and output (the gateway itself). */
const DNAT_RULES = [
  'dnat ip to ip daddr map @dnat4',
  'dnat ip6 to ip6 daddr map @dnat6',
  'dnat ip to ip daddr . meta l4proto . th dport map @fwdport4',
  'dnat ip6 to ip6 daddr . meta l4proto . th dport map @fwdport6',
  'dnat ip to ip daddr . meta l4proto . th dport map @fwd4',
  'dnat ip6 to ip6 daddr . meta l4proto . th dport map @fwd6',
];

/** Chain name → [declaration, rules]; the rule counts double as the skeleton's fingerprint. */
const CHAINS: Record<string, [string, string[]]> = {
  count: [
    'type filter hook prerouting priority mangle; policy accept;',
    // Per-FIP packets and bytes: the lookup alone updates the counter of the element it finds
    // (a set declared with `counter` gives each element one). Not named counter objects
    // (`counter name ip daddr map @…`): nft reads every stateful object of the ruleset into its
    // cache before each transaction, so with one object per FIP moving one FIP took 60 ms among
    // 10,000 and 490 ms among 100,000. It does not read a set's elements to change one of them.
    // The comment carries the skeleton version (nft -j does not show table comments).
    [`ip daddr @counters4 comment "${COMMENT}"`, 'ip6 daddr @counters6'],
  ],
  prerouting: ['type nat hook prerouting priority dstnat; policy accept;', DNAT_RULES],
  output: [
    'type nat hook output priority -100; policy accept;',
    [
      ...DNAT_RULES,
      // The mesh: this host's own connections to a member's overlay address go to the address
      // that member is reached at from here; the member sees this host's real address (the
      // `ct status dnat accept` in postrouting keeps it from any SNAT). After the FIPs' DNAT:
      // a dnat that matches ends the chain, and a FIP is never an overlay address anyway.
      'dnat ip to ip daddr map @meshnat4',
    ],
  ],
  forward: [
    'type filter hook forward priority filter; policy accept;',
    [
      // Not DNATed to a target: an unassociated FIP or an unforwarded port. Drop, so neither the
      // gateway nor a routing loop answers for it.
      'ip daddr @drop4 drop',
      'ip6 daddr @drop6 drop',
      `ct direction original ct status dnat iifname . oifname @hairpin meta mark set meta mark | ${MARK}`,
      // Tunnels carry less than the links around them: clamp the MSS of connections through
      // them both ways, so no TCP segment needs a fragment or an ICMP that a filtering path
      // would lose. Into a tunnel, the route chosen says how much its path carries (`rt mtu`
      // is the smaller of that route's MTU and the MTU back to the source). Out of a tunnel,
      // the route toward the client says nothing about the tunnel: a SYN-ACK from a nat or
      // ports target behind it (its own address, reached here through the internet by the
      // main table) gets the MSS of that target's tunnel path from the map, and one from a
      // routed FIP (routed into the tunnel by a route with the path's MTU) from `rt mtu`.
      // The kernel only ever lowers an MSS this way, never raises it.
      `oifname "${TUNNEL_IFNAME_PREFIX}*" tcp flags syn / syn,rst tcp option maxseg size set rt mtu`,
      `iifname "${TUNNEL_IFNAME_PREFIX}*" tcp flags syn / syn,rst tcp option maxseg size set rt mtu`,
      `iifname "${TUNNEL_IFNAME_PREFIX}*" tcp flags syn / syn,rst tcp option maxseg size set ip saddr map @tuntarget4`,
      `iifname "${TUNNEL_IFNAME_PREFIX}*" tcp flags syn / syn,rst tcp option maxseg size set ip6 saddr map @tuntarget6`,
    ],
  ],
  // On a gateway: what was DNATed to a target behind a tunnel is marked, so policy routing
  // sends it into the tunnel instead of by the main table (where the target's own address is
  // reached through the internet, like the tunnel's own packets).
  tunmark: [
    'type filter hook prerouting priority -90; policy accept;',
    [
      `ct direction original ct status dnat ip daddr @tuntarget4 meta mark set meta mark | ${TMARK}`,
      `ct direction original ct status dnat ip6 daddr @tuntarget6 meta mark set meta mark | ${TMARK}`,
    ],
  ],
  // On a node answering for a gateway: connections that came in through a tunnel remember it…
  replymark: [
    'type filter hook prerouting priority mangle; policy accept;',
    [`iifname "${TUNNEL_IFNAME_PREFIX}*" ct state new ct mark set ct mark | ${TMARK}`],
  ],
  // …and their answers carry the mark, which policy routing sends back into the tunnel.
  replyroute: [
    'type route hook output priority mangle; policy accept;',
    [`ct mark & ${TMARK} == ${TMARK} meta mark set meta mark | ${TMARK}`],
  ],
  // This host's own SYN and SYN-ACK into a tunnel. The stack picks the MSS it announces from
  // the route it looked up first: for an answer sent back into the tunnel by its mark (above),
  // that is the main table's route toward the client — the host's own uplink — not the tunnel's.
  // After rerouting, the route is the tunnel's, carrying the MTU its path was found to carry.
  tunclamp: [
    'type filter hook postrouting priority mangle; policy accept;',
    [
      `oifname "${TUNNEL_IFNAME_PREFIX}*" tcp flags syn / syn,rst tcp option maxseg size set rt mtu`,
    ],
  ],
  input: [
    'type filter hook input priority filter; policy accept;',
    ['ip daddr @drop4 drop', 'ip6 daddr @drop6 drop'],
  ],
  // The mesh firewall of this host's own services (what the input hook sees: not what a gateway
  // forwards). Every rule is an accept except the last, so with every mesh set empty — a
  // gateway that is no member — the chain changes nothing. Before `input` (priority filter):
  // its drop is final, while its accepts leave the packet to the chains after it.
  meshin: [
    'type filter hook input priority filter - 10; policy accept;',
    [
      'iifname "lo" accept',
      // What comes out of ipferry's own tunnels was delivered here on purpose — a routed FIP or
      // a nat/ports target this node serves for its gateway, the path probes — by a peer that
      // authenticated itself (WireGuard keys, tinc keys): reject_all guards the host's own
      // addresses, it must not black-hole the FIPs the operator exposed through the tunnel.
      `iifname "${TUNNEL_IFNAME_PREFIX}*" accept`,
      // Established and related before the member checks, as Neti did: reject_all drops new
      // connections only. It lets the answers to this host's own connections in (from anyone),
      // ends the common packet's walk at the third rule, and a policy change (reject_all on, a
      // member leaving) never cuts a live session — the operator's own SSH that rolls the
      // change out included. A removed member cannot open new connections.
      'ct state established,related accept',
      // The failsafe: SSH from these prefixes passes whatever else the mesh says, ahead of the
      // drop (test/unit/nft-ruleset.test.ts holds the order).
      'tcp dport 22 ip saddr @meshssh4 accept',
      'tcp dport 22 ip6 saddr @meshssh6 accept',
      'ip saddr @meshmember4 accept',
      'ip6 saddr @meshmember6 accept',
      'meta l4proto . th dport @meshport accept',
      // IPv6 stops working on a link without neighbour discovery and router advertisements;
      // without MLD queries a snooping switch stops forwarding the solicitations to us.
      'icmpv6 type { nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert, nd-redirect, mld-listener-query } accept',
      // reject_all, per family: nothing of the above let it in.
      'meta nfproto @meshreject drop',
    ],
  ],
  postrouting: [
    'type nat hook postrouting priority srcnat; policy accept;',
    [
      // The mesh: this host's own connection to a same-site member's overlay address, DNATed
      // in output to the member's private address, leaves from this host's private address
      // (routing chose the source for the overlay address: the public one).
      'fib saddr type local ct status dnat snat ip to ip daddr map @meshsnat4',
      `meta mark & ${MARK} == ${MARK} masquerade`,
      'ip daddr @masq4 ct status dnat masquerade',
      'ip6 daddr @masq6 ct status dnat masquerade',
      // Replies and forwarded connections keep the client's address; only a target's own new
      // connections leave as its FIP.
      'ct status dnat accept',
      'snat ip to ip saddr map @snat4',
      'snat ip6 to ip6 saddr map @snat6',
      // A node sending its own traffic out through its tunnel (egress) does so from its
      // link-local tunnel address, in @masq4 on its gateway: it leaves behind the gateway's.
      `iifname "${TUNNEL_IFNAME_PREFIX}*" ip saddr @masq4 masquerade`,
    ],
  ],
};

const DECLARATIONS = [
  'map dnat4 { type ipv4_addr : ipv4_addr; }',
  'map dnat6 { type ipv6_addr : ipv6_addr; }',
  'map snat4 { type ipv4_addr : ipv4_addr; }',
  'map snat6 { type ipv6_addr : ipv6_addr; }',
  'map fwd4 { type ipv4_addr . inet_proto . inet_service : ipv4_addr; flags interval; }',
  'map fwd6 { type ipv6_addr . inet_proto . inet_service : ipv6_addr; flags interval; }',
  'map fwdport4 { type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service; }',
  'map fwdport6 { type ipv6_addr . inet_proto . inet_service : ipv6_addr . inet_service; }',
  'set counters4 { type ipv4_addr; counter; }',
  'set counters6 { type ipv6_addr; counter; }',
  'set masq4 { type ipv4_addr; }',
  'set masq6 { type ipv6_addr; }',
  'set drop4 { type ipv4_addr; flags interval; }',
  'set drop6 { type ipv6_addr; flags interval; }',
  'set hairpin { type ifname . ifname; }',
  // A nat or ports target behind a tunnel → the TCP MSS its tunnel path carries.
  'map tuntarget4 { typeof ip daddr : tcp option maxseg size; }',
  'map tuntarget6 { typeof ip6 daddr : tcp option maxseg size; }',
  'map meshnat4 { type ipv4_addr : ipv4_addr; }',
  'map meshsnat4 { type ipv4_addr : ipv4_addr; }',
  'set meshmember4 { type ipv4_addr; }',
  'set meshmember6 { type ipv6_addr; }',
  'set meshssh4 { type ipv4_addr; flags interval; }',
  'set meshssh6 { type ipv6_addr; flags interval; }',
  'set meshport { type inet_proto . inet_service; flags interval; }',
  'set meshreject { type nf_proto; }',
];

/** Kinds this table holds; the others belong to other drivers. */
export const NFT_KINDS = kindsOf('nft');

/** The whole table, fixed part and elements, as one `nft -f` script that replaces it atomically. */
export function renderTable(elements: readonly IntentElement[], replaceExisting: boolean): string {
  const lines = replaceExisting ? [`add table ${T}`, `delete table ${T}`] : [];
  lines.push(`table ${T} {`);
  for (const d of DECLARATIONS) lines.push(`  ${d}`);
  for (const [name, [declaration, rules]] of Object.entries(CHAINS)) {
    lines.push(`  chain ${name} {`, `    ${declaration}`, ...rules.map((r) => `    ${r}`), '  }');
  }
  lines.push('}');
  lines.push(...renderElements('add', elements));
  return lines.join('\n') + '\n';
}

/**
 * `add`/`delete` commands for elements, grouped per map so 10,000 FIPs are a handful of
 * commands. A counter is an element like any other: the set gives it its packet and byte count.
 */
export function renderElements(op: 'add' | 'delete', elements: readonly IntentElement[]): string[] {
  const groups = new Map<string, string[]>();
  for (const e of elements) {
    const target = elementTarget(e);
    if (!target) continue;
    const list = groups.get(target.container) ?? [];
    list.push(target.text);
    groups.set(target.container, list);
  }
  return [...groups].map(
    ([container, items]) => `${op} element ${T} ${container} { ${items.join(', ')} }`,
  );
}

/** Where an element of the table goes: the map or set, and its text there. */
interface Target {
  readonly container: string;
  readonly text: string;
}

type NftKind = KindOfFamily<'nft'>;

/**
 * The one way a value reaches the nft script: each is parsed again here and written as nft
 * takes it, so a payload that is not what its kind says (a forward target `10.0.0.6 }; delete
 * table …` from a store record) is refused as an element instead of changing the script.
 */
const nft = {
  address(text: string): string {
    const parsed = tryParseAddress(text);
    if (!parsed || parsed.text !== text) throw unfit(`${JSON.stringify(text)} is not an address`);
    return text;
  },
  /** A prefix, or a FIRST-LAST range (an interval someone added by hand, read back to delete). */
  interval(text: string): string {
    const [first = '', last] = text.split('-');
    if (last !== undefined) return `${nft.address(first)}-${nft.address(last)}`;
    const parsed = tryParsePrefix(text);
    if (!parsed || parsed.text !== text) throw unfit(`${JSON.stringify(text)} is not a prefix`);
    return text;
  },
  port(n: number): string {
    if (!Number.isInteger(n) || n < 0 || n > 65535) throw unfit(`${String(n)} is not a port`);
    return String(n);
  },
  ports(p: { first: number; last: number }): string {
    if (p.first > p.last) throw unfit(`${p.first}-${p.last} is not a port range`);
    return p.first === p.last ? nft.port(p.first) : `${nft.port(p.first)}-${nft.port(p.last)}`;
  },
  protocol(text: string): string {
    if (text !== 'tcp' && text !== 'udp') throw unfit(`${JSON.stringify(text)} is not tcp or udp`);
    return text;
  },
  /** An interface name as a quoted nft string: only characters that need no escaping. */
  ifname(name: string): string {
    if (!isHandledInterfaceName(name)) {
      throw unfit(`${JSON.stringify(name)} is not an interface name nft can take`);
    }
    return `"${name}"`;
  },
  count(n: number): string {
    if (!Number.isInteger(n) || n <= 0 || n > 65535) throw unfit(`${String(n)} is not an MSS`);
    return String(n);
  },
  family(text: string): string {
    if (text !== 'ipv4' && text !== 'ipv6') throw unfit(`${JSON.stringify(text)} is not a family`);
    return text;
  },
};

/** Refuses the element being rendered (elementTarget names it: ../linux/args.ts). */
function unfit(reason: string): Unfit {
  return new Unfit(reason);
}

const v = (address: string): 4 | 6 => (address.includes(':') ? 6 : 4);
const pair = (key: string, value: string): string => `${key} : ${value}`;

/**
 * Per kind of this table, its map or set and its text there; the type checker holds the table
 * complete. Mesh NAT is IPv4 only: there is no meshnat6, so an IPv6 key is refused like any
 * unknown map. The `table` element is the table itself, not an element of it.
 */
const TARGETS: { readonly [K in NftKind]: (d: Payloads[K]) => Target | undefined } = {
  table: () => undefined,
  hairpin: (d) => ({
    container: 'hairpin',
    text: `${nft.ifname(d.ifname)} . ${nft.ifname(d.ifname)}`,
  }),
  drop: (d) => ({
    container: `drop${v(d.first)}`,
    text:
      d.first === d.last ? nft.address(d.first) : `${nft.address(d.first)}-${nft.address(d.last)}`,
  }),
  counter: (d) => ({ container: `counters${v(d.fip)}`, text: nft.address(d.fip) }),
  dnat: (d) => ({
    container: `dnat${v(d.fip)}`,
    text: pair(nft.address(d.fip), nft.address(d.target)),
  }),
  snat: (d) => ({
    container: `snat${v(d.target)}`,
    text: pair(nft.address(d.target), nft.address(d.fip)),
  }),
  masq: (d) => ({ container: `masq${v(d.target)}`, text: nft.address(d.target) }),
  fwd: (d) => ({
    container: `fwd${v(d.fip)}`,
    text: pair(
      `${nft.address(d.fip)} . ${nft.protocol(d.protocol)} . ${nft.ports(d.ports)}`,
      nft.address(d.target),
    ),
  }),
  fwdport: (d) => ({
    container: `fwdport${v(d.fip)}`,
    text: pair(
      `${nft.address(d.fip)} . ${nft.protocol(d.protocol)} . ${nft.port(d.port)}`,
      `${nft.address(d.target)} . ${nft.port(d.targetPort)}`,
    ),
  }),
  tuntarget: (d) => ({
    container: `tuntarget${v(d.target)}`,
    text: pair(nft.address(d.target), nft.count(d.mss)),
  }),
  meshnat: (d) => ({
    container: `meshnat${v(d.overlay)}`,
    text: pair(nft.address(d.overlay), nft.address(d.address)),
  }),
  meshsnat: (d) => ({
    container: `meshsnat${v(d.target)}`,
    text: pair(nft.address(d.target), nft.address(d.source)),
  }),
  meshmember: (d) => ({ container: `meshmember${v(d.address)}`, text: nft.address(d.address) }),
  meshssh: (d) => ({ container: `meshssh${v(d.prefix)}`, text: nft.interval(d.prefix) }),
  meshport: (d) => ({
    container: 'meshport',
    text: `${nft.protocol(d.protocol)} . ${nft.ports(d.ports)}`,
  }),
  meshreject: (d) => ({ container: 'meshreject', text: nft.family(d.family) }),
};

function elementTarget(e: IntentElement): Target | undefined {
  if (!NFT_KINDS.has(e.kind)) return undefined;
  // The kind picks both the renderer and the payload's type; TypeScript cannot correlate the two
  // through a union, so the renderer is looked up as the general one.
  const render = TARGETS[e.kind as NftKind] as (d: Payloads[NftKind]) => Target | undefined;
  return forElement(e, () => render(decodeElement(e).data as Payloads[NftKind]));
}

// Reading ----------------------------------------------------------------------------------

type Json = unknown;

interface NftObject {
  table?: { family: string; name: string };
  chain?: { family: string; table: string; name: string };
  rule?: { family: string; table: string; chain: string; comment?: string };
  map?: { family: string; table: string; name: string; elem?: Json[] };
  set?: { family: string; table: string; name: string; elem?: Json[] };
}

/**
 * Turns `nft -j list table inet ipferry` into intent elements. The table itself is one element
 * whose value is the skeleton version when every chain holds its rules, and `damaged`
 * otherwise (a rule deleted by hand), which makes the next apply rebuild it.
 */
export function parseTable(json: string): IntentElement[] {
  const objects = (JSON.parse(json) as { nftables?: NftObject[] }).nftables ?? [];
  const mine = objects.filter((o) => {
    const owner = o.table ?? o.chain ?? o.rule ?? o.map ?? o.set;
    const table = o.table ? o.table.name : (owner as { table?: string } | undefined)?.table;
    return owner?.family === NFT_FAMILY && table === NFT_TABLE;
  });
  const table = mine.find((o) => o.table)?.table;
  if (!table) return [];
  const version = skeletonIntact(mine) ? NFT_SKELETON_VERSION : 'damaged';
  const elements: IntentElement[] = [element('table', { version }, HOST_OWNER)];
  for (const o of mine) {
    const container = o.map ?? o.set;
    if (container?.elem)
      elements.push(...container.elem.flatMap((item) => parseElement(container.name, item)));
  }
  return elements;
}

function skeletonIntact(objects: NftObject[]): boolean {
  if (!objects.some((o) => o.rule?.comment === COMMENT)) return false;
  const containers = new Set(objects.flatMap((o) => (o.map ?? o.set)?.name ?? []));
  const expected = DECLARATIONS.map((d) => d.split(' ')[1] ?? '');
  if (containers.size !== expected.length || !expected.every((n) => containers.has(n)))
    return false;
  return (
    Object.entries(CHAINS).every(
      ([name, [, rules]]) => objects.filter((o) => o.rule?.chain === name).length === rules.length,
    ) && objects.filter((o) => o.chain).length === Object.keys(CHAINS).length
  );
}

/** What reading one element of a map or set back gives: its payload and its owner. */
interface ReadBack<K extends NftKind> {
  readonly data: Payloads[K];
  readonly owner: string;
}

/**
 * Per kind of this table, how an element read back from `nft -j list` becomes that kind's
 * payload (the inverse of TARGETS); the type checker holds it complete, so a new kind of this
 * table cannot be rendered without being read back. `table` is read from the table's chains.
 */
const READ_BACK: {
  readonly [K in Exclude<NftKind, 'table'>]: (key: Json, value: Json) => ReadBack<K>;
} = {
  dnat: (key, value) => ({ data: { fip: addr(key), target: addr(value) }, owner: addr(key) }),
  snat: (key, value) => ({ data: { target: addr(key), fip: addr(value) }, owner: addr(value) }),
  masq: (key) => ({ data: { target: addr(key) }, owner: HOST_OWNER }),
  tuntarget: (key, value) => ({
    data: { target: addr(key), mss: Number(value) },
    owner: HOST_OWNER,
  }),
  counter: (key) => ({ data: { fip: addr(key) }, owner: addr(key) }),
  fwd: (key, value) => {
    const [fip, protocol, ports] = concat(key);
    return {
      data: {
        fip: addr(fip),
        protocol: String(protocol),
        ports: portRange(ports),
        target: addr(value),
      },
      owner: addr(fip),
    };
  },
  fwdport: (key, value) => {
    const [fip, protocol, port] = concat(key);
    const [target, targetPort] = concat(value);
    return {
      data: {
        fip: addr(fip),
        protocol: String(protocol),
        port: Number(port),
        target: addr(target),
        targetPort: Number(targetPort),
      },
      owner: addr(fip),
    };
  },
  drop: (key) => ({ data: rangeOf(key), owner: 'pool:?' }),
  hairpin: (key) => {
    const [name] = concat(key);
    return { data: { ifname: String(name) }, owner: HOST_OWNER };
  },
  meshnat: (key, value) => ({
    data: { overlay: addr(key), address: addr(value) },
    owner: HOST_OWNER,
  }),
  meshsnat: (key, value) => ({
    data: { target: addr(key), source: addr(value) },
    owner: HOST_OWNER,
  }),
  meshmember: (key) => ({ data: { address: addr(key) }, owner: HOST_OWNER }),
  meshssh: (key) => ({ data: { prefix: prefixText(key) }, owner: HOST_OWNER }),
  meshport: (key) => {
    const [protocol, ports] = concat(key);
    return { data: { protocol: String(protocol), ports: portRange(ports) }, owner: HOST_OWNER };
  },
  meshreject: (key) => ({
    data: { family: String(key) === 'ipv6' ? 'ipv6' : 'ipv4' },
    owner: HOST_OWNER,
  }),
};

/** The kind each map or set holds, by its name without the family digit. */
const KIND_OF_CONTAINER: ReadonlyMap<string, Exclude<NftKind, 'table'>> = new Map(
  (Object.keys(READ_BACK) as Exclude<NftKind, 'table'>[]).map((kind) => [
    kind === 'counter' ? 'counters' : kind,
    kind,
  ]),
);

function parseElement(container: string, item: Json): IntentElement[] {
  const [raw, value] = Array.isArray(item) ? (item as [Json, Json]) : [item, undefined];
  const kind = KIND_OF_CONTAINER.get(container.replace(/[46]$/, ''));
  if (!kind) return [];
  return readBack(kind, elementValue(raw), value);
}

function readBack<K extends Exclude<NftKind, 'table'>>(
  kind: K,
  key: Json,
  value: Json,
): IntentElement[] {
  const { data, owner } = (READ_BACK[kind] as (key: Json, value: Json) => ReadBack<K>)(key, value);
  return observedElement(kind, data, owner);
}

/** An element that carries state (a counter) comes as `{"elem": {"val": KEY, "counter": …}}`. */
function elementValue(x: Json): Json {
  return (x as { elem?: { val?: Json } } | null)?.elem?.val ?? x;
}

/**
 * Per-FIP counters from `nft -j list set inet ipferry counters4` (or 6), by canonical address.
 * An element listed without a counter (none yet: never with this table's declaration) reads 0.
 */
export function parseCounters(json: string): Map<string, FipCounter> {
  const objects = (JSON.parse(json) as { nftables?: NftObject[] }).nftables ?? [];
  const out = new Map<string, FipCounter>();
  for (const o of objects) {
    if (!o.set || !/^counters[46]$/.test(o.set.name)) continue;
    for (const item of o.set.elem ?? []) {
      const counter = (item as { elem?: { counter?: Partial<FipCounter> } } | null)?.elem?.counter;
      out.set(addr(elementValue(item)), {
        packets: counter?.packets ?? 0,
        bytes: counter?.bytes ?? 0,
      });
    }
  }
  return out;
}

function concat(x: Json): Json[] {
  return (x as { concat?: Json[] }).concat ?? [x];
}

function addr(x: Json): string {
  const text = String(x);
  return tryParseAddress(text)?.text ?? text;
}

function portRange(x: Json): { first: number; last: number } {
  const range = (x as { range?: [number, number] }).range;
  return range ? { first: range[0], last: range[1] } : { first: Number(x), last: Number(x) };
}

/**
 * A prefix set element comes back as a prefix, or as a bare address when it holds one address:
 * both become ADDRESS/LENGTH again. A range (only an operator's hand adds one) keeps its
 * FIRST-LAST text, which no compiled key has: the next apply deletes it by that text.
 */
function prefixText(x: Json): string {
  const prefix = (x as { prefix?: { addr: string; len: number } }).prefix;
  if (prefix) return tryParsePrefix(`${prefix.addr}/${prefix.len}`)?.text ?? rangeText(x);
  const single = tryParseAddress(String(x));
  if (single) return `${single.text}/${single.family === 4 ? 32 : 128}`;
  return rangeText(x);
}

/** Interval set elements come back as an address, a prefix or a range: all become a range. */
function rangeOf(x: Json): { first: string; last: string } {
  const [first = '', last = first] = rangeText(x).split('-');
  return { first, last };
}

/** An interval set element as FIRST-LAST. */
function rangeText(x: Json): string {
  const prefix = (x as { prefix?: { addr: string; len: number } }).prefix;
  const range = (x as { range?: [string, string] }).range;
  if (range) return `${addr(range[0])}-${addr(range[1])}`;
  if (prefix) {
    const first = tryParseAddress(prefix.addr);
    if (!first) return String(prefix.addr);
    const size = 1n << BigInt((first.family === 4 ? 32 : 128) - prefix.len);
    const last = first.value + size - 1n;
    return `${first.text}-${addressFromValue(first.family, last).text}`;
  }
  const single = addr(x);
  return `${single}-${single}`;
}
