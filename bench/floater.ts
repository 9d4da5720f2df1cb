/**
 * The baseline: IP Floater-style rules in iptables (see ../shared/ANCHORS.md), written here from
 * its public description, not its code. Per redirection FIP → TARGET, three chains in the nat
 * table, each reached by its own jump from a base chain — so a packet to the last FIP walks
 * past every other FIP's jump first:
 *
 *   PREROUTING  -d FIP -j flpre-FIP     flpre-FIP   -j DNAT --to-destination TARGET
 *   OUTPUT      -d FIP -j flout-FIP     flout-FIP   -j DNAT --to-destination TARGET
 *   POSTROUTING -s TARGET -j flpost-FIP flpost-FIP  -j SNAT --to-source FIP
 *
 * plus a base rule first in POSTROUTING that limits SNAT to connections that were DNATed (a
 * target's own outbound traffic does not leave as its FIP), and a DROP in INPUT for every pool
 * address (nothing on the gateway answers on them).
 *
 * A move rewrites only that FIP's chains, with `iptables-restore --noflush` (declaring a chain
 * flushes it; the other chains stay): the cheapest way to change one redirection in iptables,
 * cheaper than IP Floater's own full replay. Its POSTROUTING jump names the target, so it is
 * deleted and added again.
 */

export interface Redirection {
  readonly fip: string;
  readonly target: string;
}

/** Chain names carry the FIP: at most 28 characters, `flpost-255.255.255.255` is 22. */
export const chain = {
  pre: (fip: string): string => `flpre-${fip}`,
  out: (fip: string): string => `flout-${fip}`,
  post: (fip: string): string => `flpost-${fip}`,
};

function redirectionRules(r: Redirection): string[] {
  return [
    `-A ${chain.pre(r.fip)} -j DNAT --to-destination ${r.target}`,
    `-A ${chain.out(r.fip)} -j DNAT --to-destination ${r.target}`,
    `-A ${chain.post(r.fip)} -j SNAT --to-source ${r.fip}`,
  ];
}

function declarations(r: Redirection): string[] {
  return [
    `:${chain.pre(r.fip)} - [0:0]`,
    `:${chain.out(r.fip)} - [0:0]`,
    `:${chain.post(r.fip)} - [0:0]`,
  ];
}

/**
 * The whole rule set for `iptables-restore` (flushing the nat and filter tables it names): the
 * jumps in the order of `redirections`, so the last one is matched after all the others.
 */
export function floaterRuleset(redirections: readonly Redirection[]): string {
  const nat = [
    '*nat',
    ':PREROUTING ACCEPT [0:0]',
    ':INPUT ACCEPT [0:0]',
    ':OUTPUT ACCEPT [0:0]',
    ':POSTROUTING ACCEPT [0:0]',
  ];
  for (const r of redirections) for (const d of declarations(r)) nat.push(d);
  // Only what was DNATed is considered for SNAT; everything else leaves unchanged.
  nat.push('-A POSTROUTING -m conntrack ! --ctstate DNAT -j RETURN');
  for (const r of redirections) {
    nat.push(
      `-A PREROUTING -d ${r.fip}/32 -j ${chain.pre(r.fip)}`,
      `-A OUTPUT -d ${r.fip}/32 -j ${chain.out(r.fip)}`,
      `-A POSTROUTING -s ${r.target}/32 -j ${chain.post(r.fip)}`,
    );
  }
  // Loops, not spreads: 100,000 FIPs are more arguments than a call may take.
  for (const r of redirections) for (const rule of redirectionRules(r)) nat.push(rule);
  nat.push('COMMIT');
  const filter = [
    '*filter',
    ':INPUT ACCEPT [0:0]',
    ':FORWARD ACCEPT [0:0]',
    ':OUTPUT ACCEPT [0:0]',
  ];
  for (const r of redirections) filter.push(`-A INPUT -d ${r.fip}/32 -j DROP`);
  filter.push('COMMIT', '');
  return nat.join('\n') + '\n' + filter.join('\n');
}

/** One FIP moved from `from` to `to`, for `iptables-restore --noflush`. */
export function floaterMove(fip: string, from: string, to: string): string {
  const moved = { fip, target: to };
  return [
    '*nat',
    ...declarations(moved),
    ...redirectionRules(moved),
    `-D POSTROUTING -s ${from}/32 -j ${chain.post(fip)}`,
    `-A POSTROUTING -s ${to}/32 -j ${chain.post(fip)}`,
    'COMMIT',
    '',
  ].join('\n');
}
