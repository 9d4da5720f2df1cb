/**
 * Routes and policy rules (src/intent: `route` and `rule` elements), read with `ip -j` and
 * written with `ip -batch`, one batch per family (iproute2 cannot switch family inside a batch).
 * Both carry ipferry's route protocol number, which is how ipferry finds its own routes and
 * rules and never others'.
 */
import { tryParseAddress } from '../../core/address.js';
import { ROUTE_PROTO } from '../../core/names.js';
import {
  decodeElement,
  observedElement,
  HOST_OWNER,
  type IntentElement,
  kindsOf,
  type Payloads,
  type RuleSelector,
} from '../../intent/elements.js';
import { forElement, ip, ipLine } from '../linux/args.js';
import type { ExecResult, RunOptions } from '../exec.js';

type Exec = (file: string, args: readonly string[], options?: RunOptions) => Promise<ExecResult>;

export const ROUTING_KINDS = kindsOf('routing');

interface IpRoute {
  dst?: string;
  dev?: string;
  table?: string;
  /** A next hop of the route's own family. */
  gateway?: string;
  /** A next hop of the other family (`via inet6 fe80::…` on an IPv4 route). */
  via?: { family?: string; host?: string };
  prefsrc?: string;
  metrics?: { mtu?: number }[];
}

interface IpRule {
  priority?: number;
  src?: string;
  fwmark?: string;
  fwmask?: string;
  srclen?: number;
  table?: string;
  protocol?: string;
  suppress_prefixlen?: number;
}

export async function observeRouting(exec: Exec): Promise<IntentElement[]> {
  const out: IntentElement[] = [];
  // The four reads at once (a repair pass waits for the slowest, not their sum), then read in
  // a fixed order.
  const families = ['-4', '-6'] as const;
  const read = await Promise.all(
    families.map((family) =>
      Promise.all([
        exec('ip', [family, '-j', 'route', 'show', 'table', 'all', 'proto', String(ROUTE_PROTO)]),
        exec('ip', [family, '-j', 'rule', 'show']),
      ]),
    ),
  );
  for (const [i, family] of families.entries()) {
    const [routes, rules] = read[i] ?? [];
    if (!routes || !rules) continue;
    for (const r of JSON.parse(routes.stdout || '[]') as IpRoute[]) {
      const prefix = routePrefix(r.dst ?? '', family);
      out.push(...observedElement('route', observedRoute(prefix, r), ownerOf(prefix)));
    }
    for (const r of JSON.parse(rules.stdout || '[]') as IpRule[]) {
      if (r.protocol !== String(ROUTE_PROTO) || !r.src) continue;
      const rule = {
        table: tableOf(r.table ?? '?'),
        ...(r.suppress_prefixlen !== undefined
          ? { suppressPrefixLength: r.suppress_prefixlen }
          : {}),
        priority: r.priority ?? 0,
      };
      if (r.fwmark) {
        const mark = { fwmark: r.fwmark, mask: r.fwmask ?? '0xffffffff' };
        const selector = { ...mark, family: family === '-4' ? (4 as const) : (6 as const) };
        out.push(...observedElement('rule', { selector, ...rule }, HOST_OWNER));
        continue;
      }
      const src = tryParseAddress(r.src)?.text ?? r.src;
      out.push(...observedElement('rule', { selector: { from: src }, ...rule }, src));
    }
  }
  return out;
}

/**
 * `ip -batch` lines per family: additions (routes, then rules, so a rule never points at an
 * empty table) or removals (the reverse order).
 */
export function routingBatches(
  op: 'add' | 'del',
  elements: readonly IntentElement[],
): Record<4 | 6, string[]> {
  const lines: Record<4 | 6, string[]> = { 4: [], 6: [] };
  for (const l of routingLines(op, elements)) lines[l.family].push(l.line);
  return lines;
}

/** One `ip` command (a batch line) for one route or rule. */
export interface RoutingLine {
  readonly family: 4 | 6;
  readonly element: IntentElement;
  /** The command's words, after `ip -4`/`ip -6`: argv of one `ip`, or one batch line joined. */
  readonly args: readonly string[];
  readonly line: string;
}

/**
 * routingBatches' lines with the element each comes from, in the same order. Every value is
 * parsed again (../linux/args.ts): an element that does not parse refuses the whole change.
 */
export function routingLines(op: 'add' | 'del', elements: readonly IntentElement[]): RoutingLine[] {
  const order = op === 'add' ? ['route', 'rule'] : ['rule', 'route'];
  return order.flatMap((kind) =>
    elements.filter((e) => e.kind === kind).map((e) => routingCommand(op, e)),
  );
}

/**
 * The `ip` command that adds (`route replace`, `rule add`) or deletes one route or rule, with
 * ipferry's protocol number: a deletion matches only what carries it.
 */
export function routingLine(op: 'add' | 'del', e: IntentElement): string {
  return routingCommand(op, e).line;
}

function routingCommand(op: 'add' | 'del', e: IntentElement): RoutingLine {
  const { family, args } = forElement(e, () => routingArgs(op, e));
  return { family, element: e, args, line: ipLine(e, args) };
}

function routingArgs(op: 'add' | 'del', e: IntentElement): { family: 4 | 6; args: string[] } {
  const t = decodeElement(e);
  const proto = String(ROUTE_PROTO);
  if (t.kind === 'route') {
    const r = t.data;
    const { text: prefix, family } = ip.prefix(r.prefix);
    const args = [
      'route',
      op === 'add' ? 'replace' : 'del',
      prefix,
      ...(r.table !== undefined ? ['table', ip.table(r.table)] : []),
      'dev',
      ip.ifname(r.dev),
      ...(r.via !== undefined ? ['via', ...ip.via(r.via, family)] : []),
      ...(r.src !== undefined ? ['src', ip.address(r.src, family).text] : []),
      ...(r.mtu !== undefined ? ['mtu', ip.mtu(r.mtu)] : []),
      'proto',
      proto,
    ];
    return { family, args };
  }
  if (t.kind !== 'rule') throw new Error(`not a routing element: ${e.kind}`);
  const r = t.data;
  const { family, selector } = ruleSelector(r.selector);
  const suppress =
    r.suppressPrefixLength === undefined
      ? []
      : ['suppress_prefixlength', ip.prefixLength(r.suppressPrefixLength, family)];
  const args = [
    'rule',
    op,
    ...selector,
    'lookup',
    ip.table(r.table),
    ...suppress,
    'priority',
    ip.priority(r.priority),
    'protocol',
    proto,
  ];
  return { family, args };
}

/** A rule's selector as words, and the family of the `ip` it belongs to. */
function ruleSelector(s: RuleSelector): { family: 4 | 6; selector: string[] } {
  if ('from' in s) {
    const from = ip.address(s.from);
    return { family: from.family, selector: ['from', from.text] };
  }
  return {
    family: s.family === 6 ? 6 : 4,
    selector: ['fwmark', `${ip.mark(s.fwmark)}/${ip.mark(s.mask)}`],
  };
}

/** What `ip -j route` shows of one of ipferry's routes, as a route payload. */
function observedRoute(prefix: string, r: IpRoute): Payloads['route'] {
  const via = r.gateway ?? r.via?.host;
  const inet6 = r.gateway === undefined && r.via?.family === 'inet6';
  const canonical = (a: string | undefined): string | undefined =>
    a === undefined ? undefined : (tryParseAddress(a)?.text ?? a);
  const mtu = r.metrics?.find((m) => m.mtu !== undefined)?.mtu;
  const viaText = canonical(via);
  const src = canonical(r.prefsrc);
  return {
    prefix,
    ...(r.table && r.table !== 'main' ? { table: tableOf(r.table) } : {}),
    dev: r.dev ?? '?',
    ...(viaText !== undefined ? { via: inet6 ? `inet6 ${viaText}` : viaText } : {}),
    ...(src !== undefined ? { src } : {}),
    ...(mtu !== undefined ? { mtu } : {}),
  };
}

function tableOf(text: string): number | string {
  return /^\d+$/.test(text) ? Number(text) : text;
}

function routePrefix(dst: string, family: '-4' | '-6'): string {
  if (dst === 'default') return family === '-4' ? '0.0.0.0/0' : '::/0';
  const [address = dst, length] = dst.split('/');
  const parsed = tryParseAddress(address);
  if (!parsed) return dst;
  return `${parsed.text}/${length ?? (parsed.family === 4 ? 32 : 128)}`;
}

function ownerOf(prefix: string): string {
  const [address = '', length] = prefix.split('/');
  const host = length === '32' || length === '128';
  return host ? (tryParseAddress(address)?.text ?? 'host') : 'host';
}
