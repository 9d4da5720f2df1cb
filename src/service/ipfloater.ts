/**
 * IP Floater's operations over the control plane: what its REST and XML-RPC servers
 * (src/api/ipfloater-*.ts) call. Decisions are core/ipfloater.ts's; here they become control
 * plane calls, each one transaction there, so the control plane stays the one arbiter: two
 * requests racing for an address or a port never both win, whatever this layer read before.
 */
import { randomInt } from 'node:crypto';
import { isIpferryError } from '../core/errors.js';
import {
  arpLookup,
  type Endpoint,
  floaterState,
  type FloaterState,
  IPFLOATER_TAG,
  parseRedirect,
  planRedirection,
  type PublicIp,
  type RawRedirect,
  type Redirection,
  redirectionFrom,
  servedPools,
} from '../core/ipfloater.js';
import type { ControlPlane } from './control.js';

export interface IpFloaterOptions {
  /** Pools served (their IPv4 addresses are IP Floater's public IPs); empty: every pool. */
  readonly pools: readonly string[];
  /** Where a random public port search starts (tests make it predictable). */
  readonly randomPort?: () => number;
}

/**
 * How a request ended: done; `refused`, the request cannot be met (IP Floater's "could not
 * obtain", REST 404); `failed`, the store or the agent failed it (REST 501).
 */
export type Outcome<T> =
  | { readonly ok: true; readonly value: T }
  | { readonly ok: false; readonly kind: 'refused' | 'failed'; readonly reason: string };

export class IpFloaterService {
  private readonly randomPort: () => number;

  constructor(
    private readonly control: ControlPlane,
    private readonly options: IpFloaterOptions,
  ) {
    this.randomPort = options.randomPort ?? (() => randomInt(65536));
  }

  async state(): Promise<FloaterState> {
    const [pools, fips] = await Promise.all([this.control.listPools(), this.control.listFips()]);
    return floaterState(servedPools(pools, this.options.pools), fips);
  }

  async arp(mac: string): Promise<string | undefined> {
    return arpLookup(servedPools(await this.control.listPools(), this.options.pools), mac);
  }

  /**
   * Creates a redirection: the public IP is allocated (tagged `ipfloater`) when it is not yet,
   * then associated nat (whole address) or given a TCP forward (a port). When the second step
   * fails, an address allocated by the first is released again.
   */
  async redirect(raw: RawRedirect): Promise<Outcome<Endpoint>> {
    const request = parseRedirect(raw);
    if (!request.ok) return { ok: false, kind: 'refused', reason: request.reason };
    const plan = planRedirection(await this.state(), request.value, this.randomPort);
    if (!plan.ok) return { ok: false, kind: 'refused', reason: plan.reason };
    const p = plan.value;
    let allocatedHere = false;
    try {
      if (!p.fip) {
        await this.control.allocate({
          address: p.publicIp,
          tags: [IPFLOATER_TAG],
          description: 'allocated through IP Floater’s API',
        });
        allocatedHere = true;
      }
      if (p.publicPort === 0) {
        await this.control.associate(p.publicIp, { target: p.privateIp, mode: 'nat' });
      } else {
        await this.control.addForward(p.publicIp, {
          protocol: 'tcp',
          port: p.publicPort,
          targetPort: p.privatePort,
          target: p.privateIp,
        });
      }
    } catch (e) {
      const outcome = failure(e);
      if (!allocatedHere) return outcome;
      try {
        await this.control.release(p.publicIp, true);
        return outcome;
      } catch (undo) {
        return {
          ...outcome,
          reason: `${outcome.reason} (and ${p.publicIp} is still allocated: releasing it failed: ${reasonOf(undo)})`,
        };
      }
    }
    const made = redirectionFrom(await this.state(), p.publicIp, p.publicPort);
    if (!made) {
      return {
        ok: false,
        kind: 'failed',
        reason: `${p.publicIp}:${p.publicPort} was changed meanwhile`,
      };
    }
    return { ok: true, value: made.endpoint };
  }

  /**
   * Removes redirections (read from `state`). A public IP left without any redirection goes
   * back to how IP Floater left it, free: released when the adapter allocated it, else only
   * disassociated. Every one is tried; the outcome names the first that failed.
   */
  async remove(
    state: FloaterState,
    redirections: readonly Redirection[],
  ): Promise<Outcome<number>> {
    let failed: Outcome<number> | undefined;
    let removed = 0;
    for (const r of redirections) {
      const at = state.publics.find((p) => p.address === r.endpoint.public_ip);
      if (!at) continue;
      try {
        await this.removeOne(at, r);
        removed++;
      } catch (e) {
        failed ??= failure(e);
      }
    }
    return failed ?? { ok: true, value: removed };
  }

  /**
   * The release is guarded by the revision read: a forward another client adds between this read
   * and the release makes it IPF_E_FIP_CHANGED, and the address stays with that forward.
   */
  private async removeOne(at: PublicIp, r: Redirection): Promise<void> {
    if (r.via.kind === 'forward') await this.control.removeForward(at.address, r.via.id);
    const fip = await this.control.getFip(at.address);
    if (r.via.kind === 'forward' && fip.forwards.length > 0) return;
    if (at.ours) await this.control.release(at.address, true, fip.revision);
    else await this.control.disassociate(at.address);
  }
}

function failure(e: unknown): { ok: false; kind: 'refused' | 'failed'; reason: string } {
  const kind = isIpferryError(e) && e.status < 500 ? 'refused' : 'failed';
  return { ok: false, kind, reason: reasonOf(e) };
}

function reasonOf(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
