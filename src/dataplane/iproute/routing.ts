/**
 * Routes and policy rules as intent elements, read with `ip -j` and written
 * with `ip -batch`, one batch per family (iproute2 cannot switch family inside a batch).
 *
 * - `route` key `PREFIX` (main table) or `PREFIX table T`, value `dev DEV [via [inet6 ]HOP]
 *   [src ADDRESS] [mtu N]` (see routeValue): carries ipferry's route protocol number, which is
 *   how ipferry finds its own routes and never others'.
 * - `rule`  key `from ADDRESS lookup T[ suppress_prefixlength N]` or `fwmark MARK/MASK lookup T
 *   ipv4|ipv6`, value the priority: carries the same protocol number.
 */
import { tryParseAddress } from '../../core/address.js';
import type { IntentElement } from '../../core/intent.js';
import { ROUTE_PROTO, routeValue } from '../../core/names.js';
import type { ExecResult, RunOptions } from '../exec.js';

type Exec = (file: string, args: readonly string[], options?: RunOptions) => Promise<ExecResult>;

export const ROUTING_KINDS = new Set(['route', 'rule']);

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
      const key = r.table && r.table !== 'main' ? `${prefix} table ${r.table}` : prefix;
      out.push({ kind: 'route', key, value: observedRouteValue(r), owner: ownerOf(prefix) });
    }
    for (const r of JSON.parse(rules.stdout || '[]') as IpRule[]) {
      if (r.protocol !== String(ROUTE_PROTO) || !r.src) continue;
      if (r.fwmark) {
        const family_ = family === '-4' ? 'ipv4' : 'ipv6';
        const key = `fwmark ${r.fwmark}/${r.fwmask ?? '0xffffffff'} lookup ${r.table ?? '?'} ${family_}`;
        out.push({ kind: 'rule', key, value: String(r.priority ?? ''), owner: 'host' });
        continue;
      }
      const src = tryParseAddress(r.src)?.text ?? r.src;
      const suppress =
        r.suppress_prefixlen === undefined ? '' : ` suppress_prefixlength ${r.suppress_prefixlen}`;
      out.push({
        kind: 'rule',
        key: `from ${src} lookup ${r.table ?? '?'}${suppress}`,
        value: String(r.priority ?? ''),
        owner: src,
      });
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
  const order = op === 'add' ? ['route', 'rule'] : ['rule', 'route'];
  const lines: Record<4 | 6, string[]> = { 4: [], 6: [] };
  for (const kind of order) {
    for (const e of elements.filter((x) => x.kind === kind)) lines[familyOf(e)].push(line(op, e));
  }
  return lines;
}

function line(op: 'add' | 'del', e: IntentElement): string {
  switch (e.kind) {
    case 'route':
      return `route ${op === 'add' ? 'replace' : 'del'} ${e.key} ${e.value} proto ${ROUTE_PROTO}`;
    default: {
      const [selector = 'from', subject = '', , table = '', ...rest] = e.key.split(' ');
      // What follows the table (`suppress_prefixlength N`) is ip syntax too; the family is not.
      const extra = rest.filter((w) => w !== 'ipv4' && w !== 'ipv6').map((w) => ` ${w}`);
      return `rule ${op} ${selector} ${subject} lookup ${table}${extra.join('')} priority ${e.value} protocol ${ROUTE_PROTO}`;
    }
  }
}

function familyOf(e: IntentElement): 4 | 6 {
  if (e.kind === 'rule' && e.key.startsWith('fwmark ')) return e.key.endsWith(' ipv6') ? 6 : 4;
  const subject = e.kind === 'rule' ? (e.key.split(' ')[1] ?? '') : (e.key.split(' ')[0] ?? '');
  return subject.includes(':') ? 6 : 4;
}

function observedRouteValue(r: IpRoute): string {
  const via = r.gateway ?? r.via?.host;
  const inet6 = r.gateway === undefined && r.via?.family === 'inet6';
  const canonical = (a: string | undefined): string | undefined =>
    a === undefined ? undefined : (tryParseAddress(a)?.text ?? a);
  const mtu = r.metrics?.find((m) => m.mtu !== undefined)?.mtu;
  const viaText = canonical(via);
  const src = canonical(r.prefsrc);
  return routeValue(r.dev ?? '?', {
    ...(viaText !== undefined ? { via: inet6 ? `inet6 ${viaText}` : viaText } : {}),
    ...(src !== undefined ? { src } : {}),
    ...(mtu !== undefined ? { mtu } : {}),
  });
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
