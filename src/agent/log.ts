/**
 * The agent's log: the API's pino logger, shared by the loops (fields first, then the message),
 * written to stderr as lines a person reads on a terminal (pino-pretty, in-process: no worker
 * thread to lose lines when the agent exits) or as JSON, one object per line, for the journal.
 * A module of its own, so the loops that share it need not import each other for it.
 */
import PinoPretty from 'pino-pretty';
import type { IntentDiff } from '../intent/diff.js';
import { type ElementFamily, HOST_OWNER, type IntentElement, kindsOf } from '../intent/elements.js';
import type { FloatingIp } from '../core/model.js';
import type { LogFormat } from './config.js';

export interface Logger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

/** Human on a terminal; JSON otherwise (systemd's journal, a file, a pipe). */
export function defaultLogFormat(stream: { readonly isTTY?: boolean } = process.stderr): LogFormat {
  return stream.isTTY === true ? 'human' : 'json';
}

/** A stream pino writes to: `out` itself for JSON, through pino-pretty for people. */
export function logStream(
  format: LogFormat,
  out: NodeJS.WritableStream & { readonly isTTY?: boolean } = process.stderr,
): NodeJS.WritableStream {
  if (format === 'json') return out;
  return PinoPretty({
    destination: out,
    sync: true,
    colorize: out.isTTY === true,
    singleLine: true,
    translateTime: 'SYS:yyyy-mm-dd HH:MM:ss.l',
    ignore: 'pid,hostname',
  });
}

/** At most this many FIPs are named in an applied line; the rest are counted. */
const NAMED_FIPS = 5;

const FAMILY_WORDS: Record<ElementFamily, readonly [string, string]> = {
  nft: ['nftables element', 'nftables elements'],
  routing: ['route', 'routes'],
  claim: ['address', 'addresses'],
  sysctl: ['sysctl', 'sysctls'],
};

const FAMILIES = (Object.keys(FAMILY_WORDS) as ElementFamily[]).map(
  (f) => [f, kindsOf(f)] as const,
);

/**
 * One line for an applied diff, saying what changed: each FIP concerned with where it now goes
 * (`203.0.113.10 → 10.0.0.12 (nat)`, or `(none)` once disassociated or released), then how many
 * kernel objects of each kind changed, and how long it took.
 */
export function appliedSummary(
  diff: IntentDiff,
  fips: ReadonlyMap<string, FloatingIp>,
  ms: number,
): string {
  const owners = new Set<string>();
  const byFamily = new Map<ElementFamily, number>();
  const count = (e: IntentElement): void => {
    owners.add(e.owner);
    const family = FAMILIES.find(([, kinds]) => kinds.has(e.kind))?.[0];
    if (family) byFamily.set(family, (byFamily.get(family) ?? 0) + 1);
  };
  diff.add.forEach(count);
  diff.remove.forEach(count);
  for (const r of diff.replace) count(r.to);
  const fipOwners = [...owners].filter((o) => o !== HOST_OWNER && !o.startsWith('pool:'));
  const named = fipOwners.slice(0, NAMED_FIPS).map((address) => {
    const a = fips.get(address)?.association;
    return a ? `${address} → ${a.target} (${a.mode})` : `${address} → (none)`;
  });
  if (fipOwners.length > NAMED_FIPS)
    named.push(`${fipOwners.length - NAMED_FIPS} more floating IPs`);
  const others = [
    ...(owners.has(HOST_OWNER) ? ['host settings'] : []),
    ...[...owners].filter((o) => o.startsWith('pool:')).map((o) => `pool ${o.slice(5)}`),
  ];
  const objects = (Object.keys(FAMILY_WORDS) as ElementFamily[]).flatMap((f) => {
    const n = byFamily.get(f);
    return n ? [`${n} ${FAMILY_WORDS[f][n === 1 ? 0 : 1]}`] : [];
  });
  const what = [...named, ...others].join(', ');
  return `applied: ${what}; ${objects.join(', ')}, in ${Math.round(ms)} ms`;
}
