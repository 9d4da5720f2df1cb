/**
 * What the agents' active probes through a tunnel decide. The probes themselves are effects
 * (src/agent/path-monitor.ts sends them through the dataplane); the rules live here.
 *
 * Why probe at all: a tunnel's packets are bigger than what they carry, and somewhere between
 * the two ends a link may carry less than either end believes. When that link also loses
 * fragments and the ICMP "too big" messages (an MTU black hole), small packets pass and large
 * ones vanish: handshakes work and the first large packet of a connection — a browser's TLS
 * ClientHello with a post-quantum key share is about 1,900 bytes — never arrives. So the probes
 * send a payload of that size, and when it does not come back, search the largest packet that
 * does, trusting only answers that came through the tunnel, never ICMP.
 */

/** ICMPv6 echo payload of the liveness probe. */
export const SMALL_PROBE_PAYLOAD = 56;
/** ICMPv6 echo payload of the large probe: about a large TLS ClientHello. */
export const LARGE_PROBE_PAYLOAD = 1900;
/** IPv6 (40) and ICMPv6 echo (8) headers around a probe's payload. */
export const PROBE_HEADERS = 48;
/** The smallest MTU a path may be lowered to: IPv6 needs every link to carry 1280 bytes. */
export const MIN_PATH_MTU = 1280;
/** Rounds without an answer before a peer counts as dead (one lost round is not a dead path). */
export const DEAD_AFTER_ROUNDS = 2;

/** How many sizes the path MTU search asks at once. */
export const SEARCH_WIDTH = 8;

/**
 * The largest size in [lo, hi] for which `passes` holds, assuming that every size below a
 * passing one passes too; undefined when even `lo` fails. Asks `width` sizes at once and
 * narrows to the gap between the largest that passed and the smallest that failed above it:
 * three rounds for 1280…1440, so a search costs about three probe timeouts, not eight.
 */
export async function largestPassing(
  lo: number,
  hi: number,
  passes: (size: number) => Promise<boolean>,
  width = SEARCH_WIDTH,
): Promise<number | undefined> {
  if (hi < lo) return undefined;
  let good = lo - 1;
  let bad = hi + 1;
  while (bad - good > 1) {
    const sizes = spread(good + 1, bad - 1, width);
    const results = await Promise.all(sizes.map(passes));
    // A size that failed bounds the search from above; only a passing size below every failed
    // one counts (a lost probe must not let a larger, failing size look good).
    const failed = sizes.filter((_, i) => !results[i]);
    if (failed.length > 0) bad = Math.min(bad, ...failed);
    const passed = sizes.filter((size, i) => results[i] && size < bad);
    if (passed.length > 0) good = Math.max(good, ...passed);
  }
  return good >= lo ? good : undefined;
}

/** Up to `width` sizes spread evenly over [from, to], both ends included. */
export function spread(from: number, to: number, width: number): number[] {
  const count = Math.min(width, to - from + 1);
  if (count <= 1) return [to];
  const out = new Set<number>();
  for (let i = 0; i < count; i++) out.add(from + Math.round(((to - from) * i) / (count - 1)));
  return [...out];
}

export interface SearchOutcome {
  /** The MTU to give routes toward the peer; undefined: leave them at the tunnel's. */
  readonly pathMtu: number | undefined;
  readonly note: string;
}

/** What to do with the result of a search below a tunnel of MTU `tunnelMtu`. */
export function searchOutcome(found: number | undefined, tunnelMtu: number): SearchOutcome {
  if (found === undefined) {
    return {
      pathMtu: undefined,
      note: `small probes pass but not even ${MIN_PATH_MTU}-byte packets do: the path is too narrow for a tunnel carrying IPv6; MTU left at ${tunnelMtu}`,
    };
  }
  if (found >= tunnelMtu) {
    return {
      pathMtu: undefined,
      note: `${tunnelMtu}-byte packets pass whole but a ${LARGE_PROBE_PAYLOAD}-byte payload in fragments does not: fragments are lost on the path`,
    };
  }
  return {
    pathMtu: found,
    note: `a ${LARGE_PROBE_PAYLOAD}-byte probe did not pass at MTU ${tunnelMtu}; the largest packet that does is ${found} bytes: routes to this peer now use MTU ${found} and TCP MSS ${found - 40} (IPv4) / ${found - 60} (IPv6)`,
  };
}
