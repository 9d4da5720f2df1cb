/**
 * What the control plane and the agent hand back: records as a client sees them (with their
 * revision and status), the IP Floater views, and the agent's plan. They are defined here, below
 * the API, because the control plane and the agent build them; src/api/contract.ts serves them
 * as they are and re-exports them for the API's clients.
 */
import type { IntentElement } from '../intent/elements.js';
import type { AssociationMode, FipState, FloatingIp, Pool } from '../core/model.js';

export interface FipStatusView {
  readonly state: FipState;
  /** Node that realised (or failed to realise) the FIP. */
  readonly node?: string;
  /** Revision of the FIP that status describes; `stale` when the FIP changed since. */
  readonly revision?: number;
  readonly stale?: boolean;
  readonly message?: string;
  readonly updatedAt?: string;
}

export interface FipView extends FloatingIp {
  /** Store revision of this FIP record. */
  readonly revision: number;
  readonly status: FipStatusView;
}

export interface PoolView extends Pool {
  readonly revision: number;
  /** Number of usable addresses, as a decimal string (an IPv6 /64 does not fit a JSON number). */
  readonly size: string;
  readonly allocated: number;
}

export interface IppoolEntryView {
  readonly pool: string;
  readonly gateway: string;
  readonly entries: readonly string[];
  readonly size: string;
  readonly allocated: readonly {
    readonly address: string;
    readonly target?: string;
    readonly mode?: AssociationMode;
  }[];
}

export interface ArpResponse {
  readonly mac: string;
  readonly address: string;
  /** `pool`: pinned in a pool entry; `neighbour`: seen in the gateway's neighbour table. */
  readonly source: 'pool' | 'neighbour';
  readonly pool?: string;
  readonly interface?: string;
}

/** `GET /v1/plan`: what the agent would change in this host's kernel now. */
export interface PlanResponse {
  readonly node: string;
  readonly dataplane: string;
  /** Store revision the plan was compiled from. */
  readonly revision: number;
  readonly add: readonly IntentElement[];
  readonly replace: readonly { readonly from: IntentElement; readonly to: IntentElement }[];
  readonly remove: readonly IntentElement[];
  /** FIPs the agent refuses to realise on this host, with the reason. */
  readonly refused: readonly { readonly address: string; readonly reason: string }[];
  /** Store records the agent left out because it cannot use them, with the reason. */
  readonly skipped: readonly SkippedRecord[];
}

/** A store record an agent left out of its compile (store/records decoders), and why. */
export interface SkippedRecord {
  readonly key: string;
  readonly reason: string;
}
