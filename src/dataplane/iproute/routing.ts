/**
 * Routes and policy rules (src/intent: `route` and `rule` elements), read with `ip -j` and
 * written with `ip -batch`, one batch per family (iproute2 cannot switch family inside a batch).
 * Both carry ipferry's route protocol number, which is how ipferry finds its own routes and
 * rules and never others'.
 */
import { tryParseAddress } from '../../core/address.js';
import { ROUTE_PROTO } from '../../core/names.js';
import {
  decode,
  decodeElement,
  element,
  HOST_OWNER,
  type IntentElement,
  isKind,
  kindsOf,
  type Payloads,
} from '../../intent/elements.js';
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
      out.push(element('route', observedRoute(prefix, r), ownerOf(prefix)));
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
        out.push(element('rule', { selector, ...rule }, HOST_OWNER));
        continue;
      }
      const src = tryParseAddress(r.src)?.text ?? r.src;
      out.push(element('rule', { selector: { from: src }, ...rule }, src));
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
  readonly line: string;
}

/** routingBatches' lines with the element each comes from, in the same order. */
export function routingLines(op: 'add' | 'del', elements: readonly IntentElement[]): RoutingLine[] {
  const order = op === 'add' ? ['route', 'rule'] : ['rule', 'route'];
  return order.flatMap((kind) =>
    elements
      .filter((e) => e.kind === kind)
      .map((e) => ({ family: familyOf(e), element: e, line: routingLine(op, e) })),
  );
}

/**
 * The `ip` command that adds (`route replace`, `rule add`) or deletes one route or rule, with
 * ipferry's protocol number: a deletion matches only what carries it.
 */
export function routingLine(op: 'add' | 'del', e: IntentElement): string {
  const t = decodeElement(e);
  if (t.kind === 'route') {
    const r = t.data;
    const words = [
      r.prefix,
      ...(r.table !== undefined ? ['table', String(r.table)] : []),
      'dev',
      r.dev,
      ...(r.via !== undefined ? ['via', r.via] : []),
      ...(r.src !== undefined ? ['src', r.src] : []),
      ...(r.mtu !== undefined ? ['mtu', String(r.mtu)] : []),
    ];
    return `route ${op === 'add' ? 'replace' : 'del'} ${words.join(' ')} proto ${ROUTE_PROTO}`;
  }
  if (t.kind !== 'rule') throw new Error(`not a routing element: ${e.kind}`);
  const r = t.data;
  const selector =
    'from' in r.selector
      ? `from ${r.selector.from}`
      : `fwmark ${r.selector.fwmark}/${r.selector.mask}`;
  const suppress =
    r.suppressPrefixLength === undefined ? '' : ` suppress_prefixlength ${r.suppressPrefixLength}`;
  return `rule ${op} ${selector} lookup ${r.table}${suppress} priority ${r.priority} protocol ${ROUTE_PROTO}`;
}

function familyOf(e: IntentElement): 4 | 6 {
  if (isKind(e, 'rule')) {
    const { selector } = decode(e);
    return 'from' in selector ? (selector.from.includes(':') ? 6 : 4) : selector.family;
  }
  return isKind(e, 'route') && decode(e).prefix.includes(':') ? 6 : 4;
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
