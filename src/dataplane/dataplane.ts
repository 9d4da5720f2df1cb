/**
 * The seam between the reconcile loop and a host's kernel. The agent diffs the compiled intent
 * against `observe()` and hands the difference to `apply()`, which must be all-or-nothing: on
 * failure the host keeps exactly its previous state, so a refused FIP never leaves half a
 * mapping behind. Real drivers (nftables, iproute2, conntrack) and the strict fake implement it
 * alike and are held to one conformance suite.
 */
import type { IntentDiff, IntentElement } from '../core/intent.js';

/** One entry of a host's neighbour (ARP/NDP) table, for `ipferry arp MAC`. */
export interface Neighbour {
  readonly address: string;
  readonly mac: string;
  readonly interface: string;
}

export interface Dataplane {
  /** `fake`, `linux`… for logs and status. */
  readonly kind: string;
  /** The elements this host holds now (only those ipferry owns). */
  observe(): Promise<IntentElement[]>;
  /** Applies a diff in one transaction; throws IpferryError('IPF_E_DATAPLANE') and changes nothing on failure. */
  apply(diff: IntentDiff): Promise<void>;
  close(): Promise<void>;
}
