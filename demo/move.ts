/**
 * A move measured from the client: a TCP probe to the FIP every 10 ms from 300 ms before the
 * move until the new target has answered for 300 ms, timed against `ipferry fip move`.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { echoProbe } from '../src/lab/probe.js';
import type { Lab } from '../src/lab/topology.js';
import { check } from './check.js';
import type { CliResult } from './cli.js';
import type { Output } from './output.js';

export interface MoveMeasurement {
  readonly address: string;
  /** The echo servers (lab hosts) answering before and after the move. */
  readonly from: string;
  readonly to: string;
  readonly probes: number;
  readonly byFrom: number;
  readonly byTo: number;
  /** Probes that got no answer (refused or timed out). */
  readonly failed: number;
  /**
   * Time to the first answer of `to` from `ipferry fip move` being started (Node start-up
   * included), and from the API's response reaching the CLI (negative: `to` answered first).
   */
  readonly sinceSentMs: number;
  readonly sinceReturnedMs: number;
  /** How far apart the last probe `from` answered and the first `to` answered were started. */
  readonly switchWindowMs: number;
  /**
   * The interruption: from the last answer of `from` to the first answer of `to` (by the time
   * each answer arrived; 0 when they overlapped).
   */
  readonly gapMs: number;
  /** Probes started after the first answer of `to` had arrived that `from` still answered. */
  readonly lateFrom: number;
}

/** What a move is measured on: the FIP, who answers before and after, how probes are paced. */
export interface MoveProbes {
  readonly address: string;
  readonly from: string;
  readonly to: string;
  /** Each probe's bound: a probe that gets no answer within it counts as unanswered. */
  readonly probeTimeoutMs: number;
  /** At most this many probes in flight, so a long gap cannot pile up processes. */
  readonly maxInFlight: number;
  /** How long after the move `to` may take to answer at all. */
  readonly settleMs: number;
}

interface ProbeRecord {
  readonly sentAt: number;
  readonly doneAt: number;
  readonly name: string | undefined;
}

/** Starts a TCP probe from the client every 10 ms until stopped (bounded by the settle time). */
function probeEvery10ms(
  lab: Lab,
  p: MoveProbes,
): { records: ProbeRecord[]; stop: () => Promise<void> } {
  const records: ProbeRecord[] = [];
  const inFlight = new Set<Promise<void>>();
  let stopped = false;
  const loop = (async () => {
    const deadline = Date.now() + 300 + 20_000 + p.settleMs;
    while (!stopped && Date.now() < deadline) {
      if (inFlight.size < p.maxInFlight) {
        const sentAt = performance.now();
        const record = (name: string | undefined): void => {
          records.push({ sentAt, doneAt: performance.now(), name });
        };
        const probe = echoProbe(lab, 'client', 'tcp', p.address, 80, p.probeTimeoutMs).then(
          (reply) => record(reply?.name),
          () => record(undefined),
        );
        inFlight.add(probe);
        void probe.finally(() => inFlight.delete(probe));
      }
      await sleep(10);
    }
  })();
  const stop = async (): Promise<void> => {
    stopped = true;
    await loop;
    await Promise.all([...inFlight]);
  };
  return { records, stop };
}

/** The probe `name` answered first (by answer time). */
function firstAnswer(records: readonly ProbeRecord[], name: string): ProbeRecord | undefined {
  let first: ProbeRecord | undefined;
  for (const r of records) if (r.name === name && (!first || r.doneAt < first.doneAt)) first = r;
  return first;
}

/** Waits until `to` has been answering for 300 ms, or `settleMs` have passed. */
async function waitTakeOver(records: readonly ProbeRecord[], p: MoveProbes): Promise<void> {
  const deadline = Date.now() + p.settleMs;
  for (;;) {
    const first = firstAnswer(records, p.to);
    if (first !== undefined && performance.now() - first.doneAt > 300) return;
    if (Date.now() > deadline) return;
    await sleep(20);
  }
}

/** The measurement, from the probes and when the move was started and answered. */
function summarize(
  records: readonly ProbeRecord[],
  p: MoveProbes,
  sentAt: number,
  returnedAt: number,
): MoveMeasurement {
  const first = firstAnswer(records, p.to);
  const byFrom = records.filter((r) => r.name === p.from);
  // By start time: the last probe `from` answered that was started before the first of `to`.
  const lastFromSent = byFrom
    .filter((r) => first === undefined || r.sentAt < first.sentAt)
    .reduce((latest, r) => Math.max(latest, r.sentAt), -Infinity);
  const lastFromDone = byFrom.reduce((latest, r) => Math.max(latest, r.doneAt), -Infinity);
  const ms = (t: number): number => Math.round(t);
  return {
    address: p.address,
    from: p.from,
    to: p.to,
    probes: records.length,
    byFrom: byFrom.length,
    byTo: records.filter((r) => r.name === p.to).length,
    failed: records.filter((r) => r.name === undefined).length,
    sinceSentMs: first ? ms(first.doneAt - sentAt) : NaN,
    sinceReturnedMs: first ? ms(first.doneAt - returnedAt) : NaN,
    switchWindowMs: first && Number.isFinite(lastFromSent) ? ms(first.sentAt - lastFromSent) : NaN,
    gapMs:
      first && Number.isFinite(lastFromDone) ? Math.max(0, ms(first.doneAt - lastFromDone)) : NaN,
    lateFrom: first ? byFrom.filter((r) => r.sentAt > first.doneAt).length : 0,
  };
}

/**
 * Probes the FIP every 10 ms from 300 ms before `move` until `to` has been answering for 300 ms
 * (`settleMs` at most after the move), and times the take-over against the command.
 */
export async function measureMove(
  lab: Lab,
  p: MoveProbes,
  move: () => Promise<CliResult>,
): Promise<MoveMeasurement> {
  const probes = probeEvery10ms(lab, p);
  try {
    await sleep(300);
    const sentAt = performance.now();
    const result = await move();
    const returnedAt = Number.isNaN(result.firstOutputAt)
      ? performance.now()
      : result.firstOutputAt;
    await waitTakeOver(probes.records, p);
    await probes.stop();
    return summarize(probes.records, p, sentAt, returnedAt);
  } finally {
    await probes.stop();
  }
}

/**
 * The interruption line. Without a lost probe, the figure is the time from the API's answer to
 * the first answer of `to` (the old target answered meanwhile); with lost probes, the time
 * between the last answer of `from` and the first of `to`, and how many went unanswered.
 */
export function interruption(m: MoveMeasurement): string {
  if (m.failed === 0) {
    const figure =
      m.sinceReturnedMs >= 0
        ? `${m.sinceReturnedMs} ms from the move API call returning to the first answer of ${m.to}`
        : `0 ms: ${m.to} answered ${-m.sinceReturnedMs} ms before the API's response reached the CLI`;
    return `${figure}; no probe failed, ${m.from} answered every one until ${m.to} took over (the switch fell between two probes started ${m.switchWindowMs} ms apart)`;
  }
  return (
    `${m.gapMs} ms between the last answer from ${m.from} and the first from ${m.to}; ` +
    `${m.failed} of ${m.probes} probes went unanswered meanwhile, none answered by ${m.from} after the switch ` +
    `(${m.sinceReturnedMs} ms from the move API call returning to the first answer of ${m.to})`
  );
}

/** Prints what the probes saw during a move, and checks that it switched once and for all. */
export function reportMove(o: Output, m: MoveMeasurement): void {
  o.ok(
    `${m.probes} TCP probes from the client, one started every 10 ms: ${m.byFrom} answered by ${m.from}, then ${m.byTo} by ${m.to}, ${m.failed} unanswered`,
  );
  check(m.byFrom > 0, `${m.from} never answered before the move`);
  check(m.byTo > 0, `${m.to} never answered`);
  check(
    m.lateFrom === 0,
    `${m.from} still answered ${m.lateFrom} probes started after ${m.to} had taken over`,
  );
  o.ok(
    `moved to ${m.to}: ${m.to} answered first ${m.sinceSentMs} ms after \`ipferry fip move\` was started (Node start-up included)`,
  );
  o.ok(`interruption: ${interruption(m)}`);
}
