/**
 * The floating IP lifecycle as pure decisions, learnt from AWS Elastic IPs and OpenStack
 * floating IPs:
 *
 *   allocate ─▶ associate ─▶ (move)* ─▶ disassociate ─▶ release
 *
 * - allocate takes any free address of a pool, or a requested one; a client token makes a
 *   retried allocate return the FIP the first call created (AWS lacks this: a retry there
 *   allocates twice).
 * - associate refuses a FIP that is already associated unless reassociation is allowed
 *   (AWS's AllowReassociation); move re-targets an associated FIP in one step.
 * - disassociate is idempotent; release is refused while associated unless forced.
 * - A shared address (the gateway's own) only ever carries port forwards.
 *
 * Each function takes the current records and returns the next ones, or throws an
 * IpferryError; the service layer turns the result into one compare-and-swap transaction.
 */
import type { Address } from './address.js';
import { IpferryError, validationError } from './errors.js';
import { clientTokenDigest } from './keys.js';
import type { Association, FloatingIp, Pool, PortForward, ReservedPort } from './model.js';
import { isSharedAddress } from './pool.js';
import { invalid, type ValidAllocate, type ValidAssociate, type ValidForward } from './validate.js';

export function newFloatingIp(
  pool: Pool,
  address: Address,
  request: ValidAllocate,
  now: string,
): FloatingIp {
  return {
    address: address.text,
    family: address.family,
    pool: pool.name,
    shared: isSharedAddress(pool, address),
    ...(request.description !== undefined ? { description: request.description } : {}),
    tags: request.tags,
    ...(request.clientToken ? { clientTokenSha256: clientTokenDigest(request.clientToken) } : {}),
    forwards: [],
    allocatedAt: now,
  };
}

/** Whether `token` is the client token that allocated `fip` (its digest, or an older record's text). */
export function allocatedWith(fip: FloatingIp, token: string): boolean {
  return fip.clientTokenSha256 !== undefined
    ? fip.clientTokenSha256 === clientTokenDigest(token)
    : fip.clientToken === token;
}

/**
 * A FIP record as this version writes it: a client token an older version stored as text is
 * replaced by its digest (the caller moves the token's own key along, keys.legacyClientToken).
 */
export function withTokenDigest(fip: FloatingIp): FloatingIp {
  if (fip.clientToken === undefined) return fip;
  const { clientToken, ...rest } = fip;
  return { ...rest, clientTokenSha256: rest.clientTokenSha256 ?? clientTokenDigest(clientToken) };
}

/** What a client token remembers, so that a reuse for another request is caught. */
export function allocateFingerprint(request: ValidAllocate): string {
  return JSON.stringify([
    request.pool ?? null,
    request.address?.text ?? null,
    request.family ?? null,
    request.description ?? null,
  ]);
}

export function describeTarget(association: Association): string {
  return association.node ? `${association.target} on ${association.node}` : association.target;
}

export function associate(fip: FloatingIp, request: ValidAssociate, now: string): FloatingIp {
  if (request.mode !== 'routed') refuseSelfTarget(fip, request.target);
  if (fip.shared && request.mode !== 'ports') {
    throw new IpferryError('IPF_E_ADDRESS_SHARED', { address: fip.address });
  }
  if (fip.association && !request.allowReassociation) {
    throw new IpferryError('IPF_E_FIP_ASSOCIATED', {
      address: fip.address,
      target: describeTarget(fip.association),
    });
  }
  const association: Association = {
    mode: request.mode,
    target: request.target.text,
    ...(request.node ? { node: request.node } : {}),
    ...(request.masquerade ? { masquerade: true } : {}),
    associatedAt: now,
  };
  // A new association in another mode starts with no forwards; in ports mode the forwards
  // that followed the old default target follow the new one.
  const forwards =
    request.mode === 'ports' && fip.association?.mode === 'ports'
      ? retarget(fip.forwards, fip.association, association)
      : [];
  return { ...fip, association, forwards };
}

export function move(
  fip: FloatingIp,
  target: Address,
  node: string | undefined,
  now: string,
): FloatingIp {
  if (fip.association?.mode !== 'routed') refuseSelfTarget(fip, target);
  if (!fip.association)
    throw new IpferryError('IPF_E_FIP_NOT_ASSOCIATED', { address: fip.address });
  // As in validateAssociate: a routed FIP is delivered to a node, so a move must name one.
  if (fip.association.mode === 'routed' && !node) {
    throw validationError([
      {
        path: 'node',
        message: 'routed mode delivers the FIP to a node: name the node that holds the target',
      },
    ]);
  }
  const association: Association = {
    ...withoutNode(fip.association),
    target: target.text,
    ...(node ? { node } : {}),
    associatedAt: now,
  };
  return { ...fip, association, forwards: retarget(fip.forwards, fip.association, association) };
}

/**
 * A routed FIP goes through a tunnel from its pool's gateway to another node; routed to the
 * gateway itself it has nowhere to go, and the gateway's compile would refuse it (compile/tunnels.ts).
 * Refused here instead, when it is asked for.
 */
export function refuseRoutedToGateway(fip: FloatingIp, pool: Pick<Pool, 'name' | 'gateway'>): void {
  const a = fip.association;
  if (a?.mode === 'routed' && a.node === pool.gateway) {
    throw new IpferryError('IPF_E_ROUTED_TO_GATEWAY', {
      address: fip.address,
      node: pool.gateway,
      pool: pool.name,
    });
  }
}

export function disassociate(fip: FloatingIp): FloatingIp {
  if (!fip.association && fip.forwards.length === 0) return fip;
  const { association: _gone, ...rest } = fip;
  return { ...rest, forwards: [] };
}

export function checkRelease(fip: FloatingIp, force: boolean): void {
  if (fip.association && !force) {
    throw new IpferryError('IPF_E_FIP_STILL_ASSOCIATED', {
      address: fip.address,
      target: describeTarget(fip.association),
    });
  }
}

/**
 * Adds a port forward. A FIP that is not associated becomes a `ports` association whose
 * default target is the forward's target; a FIP in nat or routed mode already forwards every
 * port, so a forward there is refused rather than silently shadowed.
 */
export function addForward(
  fip: FloatingIp,
  request: ValidForward,
  gatewayReserved: readonly ReservedPort[],
  now: string,
): { fip: FloatingIp; forward: PortForward } {
  refuseSelfTarget(fip, request.target);
  if (fip.association && fip.association.mode !== 'ports') {
    throw new IpferryError('IPF_E_FIP_MODE', {
      address: fip.address,
      mode: fip.association.mode,
      reason: 'it already forwards every port',
    });
  }
  const clash = fip.forwards.find(
    (f) =>
      f.protocol === request.protocol && f.port <= request.portEnd && request.port <= f.portEnd,
  );
  if (clash) {
    throw new IpferryError('IPF_E_FORWARD_CONFLICT', {
      proto: request.protocol,
      ports: portText(request),
      address: fip.address,
      id: clash.id,
    });
  }
  if (fip.shared) refuseReservedPorts(fip, request, gatewayReserved);
  const serial = nextForwardSerial(fip);
  const forward: PortForward = {
    id: `f${serial}`,
    protocol: request.protocol,
    port: request.port,
    portEnd: request.portEnd,
    targetPort: request.targetPort,
    target: request.target.text,
    ...(request.node ? { node: request.node } : {}),
    ...(request.description !== undefined ? { description: request.description } : {}),
  };
  const association: Association = fip.association ?? {
    mode: 'ports',
    target: forward.target,
    ...(forward.node ? { node: forward.node } : {}),
    associatedAt: now,
  };
  return {
    fip: { ...fip, association, forwards: [...fip.forwards, forward], forwardSerial: serial },
    forward,
  };
}

export function removeForward(fip: FloatingIp, id: string): FloatingIp {
  if (!fip.forwards.some((f) => f.id === id)) {
    throw new IpferryError('IPF_E_FORWARD_NOT_FOUND', { address: fip.address, id });
  }
  return { ...fip, forwards: fip.forwards.filter((f) => f.id !== id) };
}

/**
 * A FIP forwarded (nat, ports) to itself would loop in the gateway. A routed FIP is delivered
 * unchanged, so there its target is naturally the FIP itself.
 */
function refuseSelfTarget(fip: FloatingIp, target: Address): void {
  if (target.text === fip.address) invalid('target', `${target.text} is the floating IP itself`);
}

export function portText(f: { port: number; portEnd: number }): string {
  return f.port === f.portEnd ? String(f.port) : `${f.port}-${f.portEnd}`;
}

function refuseReservedPorts(
  fip: FloatingIp,
  request: ValidForward,
  reserved: readonly ReservedPort[],
): void {
  const hit = reserved.find(
    (r) => r.protocol === request.protocol && r.port >= request.port && r.port <= request.portEnd,
  );
  if (hit) {
    throw new IpferryError('IPF_E_PORT_RESERVED', {
      address: fip.address,
      proto: hit.protocol,
      port: hit.port,
    });
  }
}

/**
 * Ids are never reused within a FIP's life, so a stale "remove f3" cannot delete a newer
 * forward that happens to get the same id.
 */
function nextForwardSerial(fip: FloatingIp): number {
  const used = fip.forwards.map((f) => Number(f.id.slice(1))).filter(Number.isInteger);
  return Math.max(fip.forwardSerial ?? 0, ...used) + 1;
}

function retarget(
  forwards: readonly PortForward[],
  from: Association,
  to: Association,
): PortForward[] {
  return forwards.map((f) =>
    f.target === from.target && f.node === from.node
      ? { ...withoutNode(f), target: to.target, ...(to.node ? { node: to.node } : {}) }
      : f,
  );
}

function withoutNode<T extends { node?: string }>(value: T): Omit<T, 'node'> {
  const { node: _node, ...rest } = value;
  return rest;
}
