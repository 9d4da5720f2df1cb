/**
 * Unmanaged nodes: hosts at the far end of a gateway's tunnel that run no agent (a FreeBSD
 * server, a Linux host the operator configures by hand). The operator registers one with its
 * WireGuard public key — its private key is made on that host and never leaves it — its endpoint
 * when it has one (behind NAT it calls out) and its addresses. The gateway's agent peers with it
 * as with any node; the host itself is configured from `ipferry node render` (src/core/render/).
 */
import { tryParseAddress } from './address.js';
import type { NodeRecord } from './model.js';
import { parseEndpoint, isWireGuardKey } from './tunnel.js';
import { checkName, Problems } from './validate.js';

/** What `POST /v1/nodes` takes, before validation. */
export interface UnmanagedNodeInput {
  name?: unknown;
  unmanaged?: unknown;
  publicKey?: unknown;
  endpoint?: unknown;
  addresses?: unknown;
  site?: unknown;
  tunnelDriver?: unknown;
}

/** A node record as the operator registers it, without its registration time. */
export type UnmanagedNode = Omit<NodeRecord, 'registeredAt' | 'overlayIp'> & {
  readonly unmanaged: true;
  readonly publicKey: string;
};

/** The most addresses a registration may list (as for an agent's own: node-writes.ts). */
export const MAX_UNMANAGED_ADDRESSES = 64;

/** Checks every field, reports every problem at once (IPF_E_VALIDATION). */
export function validateUnmanagedNode(input: UnmanagedNodeInput): UnmanagedNode {
  const p = new Problems();
  const name = checkName(p, 'name', input.name);
  if (input.unmanaged !== true) {
    p.add(
      'unmanaged',
      'must be true: a node with an agent registers itself (ipferry node join-token create)',
    );
  }
  if (input.tunnelDriver !== undefined && input.tunnelDriver !== 'wireguard') {
    p.add(
      'tunnelDriver',
      input.tunnelDriver === 'tinc'
        ? 'an unmanaged node runs WireGuard only: tinc needs an agent to keep its host files'
        : 'must be wireguard',
    );
  }
  const publicKey =
    typeof input.publicKey === 'string' && isWireGuardKey(input.publicKey)
      ? input.publicKey
      : undefined;
  if (!publicKey) {
    p.add('publicKey', 'must be a WireGuard public key (44 characters of base64: wg pubkey)');
  }
  const endpoint = checkEndpoint(p, input.endpoint);
  const addresses = checkAddresses(p, input.addresses);
  const site = input.site === undefined ? undefined : checkName(p, 'site', input.site);
  p.done();
  return {
    name: name!,
    unmanaged: true,
    publicKey: publicKey!,
    ...(endpoint ? { endpoint } : {}),
    ...(site ? { site } : {}),
    addresses,
    reservedPorts: [],
  };
}

function checkEndpoint(p: Problems, value: unknown): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'string') {
    p.add('endpoint', 'must be host:port or [IPv6]:port');
    return undefined;
  }
  try {
    return parseEndpoint(value).text;
  } catch (e) {
    p.add('endpoint', (e as Error).message);
    return undefined;
  }
}

function checkAddresses(p: Problems, value: unknown): string[] {
  if (value === undefined) return [];
  if (!Array.isArray(value) || value.length > MAX_UNMANAGED_ADDRESSES) {
    p.add('addresses', `must be a list of at most ${MAX_UNMANAGED_ADDRESSES} addresses`);
    return [];
  }
  const out: string[] = [];
  value.forEach((a, i) => {
    const parsed = typeof a === 'string' ? tryParseAddress(a) : undefined;
    if (!parsed) p.add(`addresses[${i}]`, 'must be an IPv4 or IPv6 address');
    else if (!out.includes(parsed.text)) out.push(parsed.text);
  });
  return out;
}
