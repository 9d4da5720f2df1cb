import { createHash } from 'node:crypto';
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseAddress } from '../../src/core/address.js';
import { type ErrorCode, IpferryError } from '../../src/core/errors.js';
import {
  addForward,
  allocateFingerprint,
  associate,
  checkRelease,
  disassociate,
  move,
  newFloatingIp,
  portText,
  removeForward,
} from '../../src/core/lifecycle.js';
import type { FloatingIp, Pool, ReservedPort } from '../../src/core/model.js';
import {
  type AssociateInput,
  type ForwardInput,
  validateAllocate,
  validateAssociate,
  validateForward,
} from '../../src/core/validate.js';

const T0 = '2024-01-01T00:00:00.000Z';
const T1 = '2024-01-02T00:00:00.000Z';
const T2 = '2024-01-03T00:00:00.000Z';

const POOL: Pool = {
  name: 'p1',
  gateway: 'gw1',
  delivery: 'routed',
  entries: [
    { kind: 'cidr', cidr: '203.0.113.0/28' },
    { kind: 'address', address: '192.0.2.1', shared: true },
  ],
  tags: [],
  createdAt: T0,
};

function fip(address = '203.0.113.5'): FloatingIp {
  return newFloatingIp(POOL, parseAddress(address), validateAllocate({}), T0);
}

const sharedFip = (): FloatingIp => fip('192.0.2.1');

function assoc(input: AssociateInput): ReturnType<typeof validateAssociate> {
  return validateAssociate(input);
}

function fwd(input: ForwardInput): ReturnType<typeof validateForward> {
  return validateForward({ protocol: 'tcp', target: '10.0.0.5', ...input });
}

/** Adds forwards one after the other; returns the FIP. */
function withForwards(start: FloatingIp, ...inputs: ForwardInput[]): FloatingIp {
  return inputs.reduce((f, input) => addForward(f, fwd(input), [], T1).fip, start);
}

function isError(
  code: ErrorCode,
  params: Record<string, string | number> = {},
): (e: unknown) => boolean {
  return (e) => {
    assert.ok(e instanceof IpferryError, `expected an IpferryError, got ${String(e)}`);
    assert.equal(e.code, code);
    for (const [k, v] of Object.entries(params)) assert.equal(e.params[k], v, k);
    return true;
  };
}

void describe('core/lifecycle: allocate', () => {
  void it('creates an unassociated FIP record', () => {
    const request = validateAllocate({
      pool: 'p1',
      clientToken: 'tok',
      description: 'web',
      tags: ['a'],
    });
    assert.deepEqual(newFloatingIp(POOL, parseAddress('203.0.113.5'), request, T0), {
      address: '203.0.113.5',
      family: 4,
      pool: 'p1',
      shared: false,
      description: 'web',
      tags: ['a'],
      // Only the token's SHA-256 is kept: FIP records are readable by nodes and read-only tokens.
      clientTokenSha256: createHash('sha256').update('tok').digest('hex'),
      forwards: [],
      allocatedAt: T0,
    });
  });

  void it('marks the shared address', () => {
    assert.equal(sharedFip().shared, true);
    assert.equal(fip().shared, false);
  });

  void it('fingerprints what a client token stands for', () => {
    const a = allocateFingerprint(validateAllocate({ pool: 'p1', clientToken: 'x' }));
    assert.equal(
      a,
      allocateFingerprint(validateAllocate({ pool: 'p1', clientToken: 'y', tags: ['t'] })),
    );
    assert.notEqual(a, allocateFingerprint(validateAllocate({ pool: 'p2', clientToken: 'x' })));
    assert.notEqual(a, allocateFingerprint(validateAllocate({ pool: 'p1', family: 6 })));
    assert.notEqual(
      a,
      allocateFingerprint(validateAllocate({ pool: 'p1', address: '203.0.113.5' })),
    );
    assert.equal(
      allocateFingerprint(validateAllocate({ address: '2001:DB8::1' })),
      allocateFingerprint(validateAllocate({ address: '2001:db8:0::1' })),
    );
  });
});

void describe('core/lifecycle: associate', () => {
  void it('associates in nat mode', () => {
    const next = associate(fip(), assoc({ target: '10.0.0.5' }), T1);
    assert.deepEqual(next.association, { mode: 'nat', target: '10.0.0.5', associatedAt: T1 });
    assert.deepEqual(next.forwards, []);
  });

  void it('refuses a FIP as its own target, on associate, move and forward', () => {
    const self = (e: unknown) =>
      e instanceof IpferryError &&
      e.code === 'IPF_E_VALIDATION' &&
      e.problems[0]?.path === 'target';
    assert.throws(() => associate(fip(), assoc({ target: '203.0.113.5' }), T1), self);
    const associated = associate(fip(), assoc({ target: '10.0.0.5' }), T1);
    assert.throws(() => move(associated, parseAddress('203.0.113.5'), undefined, T2), self);
    assert.throws(
      () =>
        addForward(
          fip(),
          validateForward({ protocol: 'tcp', port: 80, target: '203.0.113.5' }),
          [],
          T1,
        ),
      self,
    );
  });

  void it('keeps node and masquerade', () => {
    const next = associate(fip(), assoc({ target: '10.0.0.5', node: 'n1', masquerade: true }), T1);
    assert.deepEqual(next.association, {
      mode: 'nat',
      target: '10.0.0.5',
      node: 'n1',
      masquerade: true,
      associatedAt: T1,
    });
    const routed = associate(fip(), assoc({ target: '10.0.0.5', mode: 'routed', node: 'n1' }), T1);
    assert.deepEqual(routed.association, {
      mode: 'routed',
      target: '10.0.0.5',
      node: 'n1',
      associatedAt: T1,
    });
  });

  void it('does not change its input', () => {
    const before = fip();
    const copy = structuredClone(before);
    associate(before, assoc({ target: '10.0.0.5' }), T1);
    assert.deepEqual(before, copy);
  });

  void it('refuses nat and routed on a shared address, allows ports', () => {
    assert.throws(
      () => associate(sharedFip(), assoc({ target: '10.0.0.5' }), T1),
      isError('IPF_E_ADDRESS_SHARED', { address: '192.0.2.1' }),
    );
    assert.throws(
      () => associate(sharedFip(), assoc({ target: '10.0.0.5', mode: 'routed', node: 'n1' }), T1),
      isError('IPF_E_ADDRESS_SHARED'),
    );
    const ports = associate(sharedFip(), assoc({ target: '10.0.0.5', mode: 'ports' }), T1);
    assert.equal(ports.association?.mode, 'ports');
  });

  void it('refuses a second association unless reassociation is allowed', () => {
    const first = associate(fip(), assoc({ target: '10.0.0.5', node: 'n1' }), T1);
    assert.throws(
      () => associate(first, assoc({ target: '10.0.0.6' }), T2),
      isError('IPF_E_FIP_ASSOCIATED', { address: '203.0.113.5', target: '10.0.0.5 on n1' }),
    );
    // Even to the same target: associate is not idempotent by accident.
    assert.throws(
      () => associate(first, assoc({ target: '10.0.0.5', node: 'n1' }), T2),
      isError('IPF_E_FIP_ASSOCIATED'),
    );
    const again = associate(first, assoc({ target: '10.0.0.6', allowReassociation: true }), T2);
    assert.deepEqual(again.association, { mode: 'nat', target: '10.0.0.6', associatedAt: T2 });
  });

  void it('drops forwards when reassociating into another mode', () => {
    const ports = withForwards(fip(), { port: 80 }, { port: 443 });
    assert.equal(ports.forwards.length, 2);
    const nat = associate(ports, assoc({ target: '10.0.0.9', allowReassociation: true }), T2);
    assert.equal(nat.association?.mode, 'nat');
    assert.deepEqual(nat.forwards, []);
  });

  void it('moves forwards of the default target along when reassociating in ports mode', () => {
    const ports = withForwards(fip(), { port: 80 }, { port: 443, target: '10.0.0.7' });
    const next = associate(
      ports,
      assoc({ target: '10.0.0.9', mode: 'ports', allowReassociation: true }),
      T2,
    );
    assert.deepEqual(
      next.forwards.map((f) => [f.id, f.target]),
      [
        ['f1', '10.0.0.9'],
        ['f2', '10.0.0.7'],
      ],
    );
  });
});

void describe('core/lifecycle: move', () => {
  void it('needs an association', () => {
    assert.throws(
      () => move(fip(), parseAddress('10.0.0.6'), undefined, T1),
      isError('IPF_E_FIP_NOT_ASSOCIATED', { address: '203.0.113.5' }),
    );
  });

  void it('re-targets and keeps the mode and masquerade', () => {
    const nat = associate(fip(), assoc({ target: '10.0.0.5', node: 'n1', masquerade: true }), T1);
    const moved = move(nat, parseAddress('10.0.0.6'), 'n2', T2);
    assert.deepEqual(moved.association, {
      mode: 'nat',
      target: '10.0.0.6',
      node: 'n2',
      masquerade: true,
      associatedAt: T2,
    });
  });

  void it('drops the old node when none is given', () => {
    const nat = associate(fip(), assoc({ target: '10.0.0.5', node: 'n1' }), T1);
    const moved = move(nat, parseAddress('10.0.0.6'), undefined, T2);
    assert.deepEqual(moved.association, { mode: 'nat', target: '10.0.0.6', associatedAt: T2 });
  });

  void it('keeps routed mode and needs a node for it', () => {
    const routed = associate(fip(), assoc({ target: '10.0.0.5', mode: 'routed', node: 'n1' }), T1);
    const moved = move(routed, parseAddress('10.0.0.6'), 'n2', T2);
    assert.deepEqual(moved.association, {
      mode: 'routed',
      target: '10.0.0.6',
      node: 'n2',
      associatedAt: T2,
    });
    assert.throws(
      () => move(routed, parseAddress('10.0.0.6'), undefined, T2),
      (e: unknown) => {
        assert.ok(e instanceof IpferryError);
        assert.equal(e.code, 'IPF_E_VALIDATION');
        assert.deepEqual(
          e.problems.map((p) => p.path),
          ['node'],
        );
        return true;
      },
    );
  });

  void it('re-targets the forwards that pointed at the old target, and only those', () => {
    let f = withForwards(
      fip(),
      { port: 80 }, // becomes the default target 10.0.0.5
      { port: 443 }, // also at the default target
      { port: 22, target: '10.0.0.7' }, // elsewhere
      { port: 53, protocol: 'udp', target: '10.0.0.5', node: 'n1' }, // same address, other node
    );
    f = move(f, parseAddress('10.0.0.6'), 'n2', T2);
    assert.equal(f.association?.mode, 'ports');
    assert.equal(f.association?.target, '10.0.0.6');
    assert.equal(f.association?.node, 'n2');
    assert.deepEqual(
      f.forwards.map((x) => ({ id: x.id, target: x.target, node: x.node })),
      [
        { id: 'f1', target: '10.0.0.6', node: 'n2' },
        { id: 'f2', target: '10.0.0.6', node: 'n2' },
        { id: 'f3', target: '10.0.0.7', node: undefined },
        { id: 'f4', target: '10.0.0.5', node: 'n1' },
      ],
    );
    // Ports and protocols are untouched.
    assert.deepEqual(
      f.forwards.map((x) => [x.protocol, x.port, x.targetPort]),
      [
        ['tcp', 80, 80],
        ['tcp', 443, 443],
        ['tcp', 22, 22],
        ['udp', 53, 53],
      ],
    );
  });

  void it('drops the node of re-targeted forwards when the new target has none', () => {
    const f = withForwards(fip(), { port: 80, node: 'n1' });
    const moved = move(f, parseAddress('10.0.0.6'), undefined, T2);
    assert.deepEqual(moved.forwards[0], {
      id: 'f1',
      protocol: 'tcp',
      port: 80,
      portEnd: 80,
      targetPort: 80,
      target: '10.0.0.6',
    });
  });
});

void describe('core/lifecycle: disassociate and release', () => {
  void it('clears the association and the forwards', () => {
    const f = withForwards(fip(), { port: 80 });
    const next = disassociate(f);
    assert.equal(next.association, undefined);
    assert.equal('association' in next, false);
    assert.deepEqual(next.forwards, []);
    assert.equal(next.address, f.address);
    assert.equal(next.allocatedAt, f.allocatedAt);
  });

  void it('is idempotent: nothing to do returns the very same object', () => {
    const plain = fip();
    assert.equal(disassociate(plain), plain);
    const once = disassociate(associate(fip(), assoc({ target: '10.0.0.5' }), T1));
    assert.equal(disassociate(once), once);
  });

  void it('refuses to release an associated FIP unless forced', () => {
    const nat = associate(fip(), assoc({ target: '10.0.0.5', node: 'n1' }), T1);
    assert.throws(
      () => checkRelease(nat, false),
      isError('IPF_E_FIP_STILL_ASSOCIATED', { address: '203.0.113.5', target: '10.0.0.5 on n1' }),
    );
    assert.doesNotThrow(() => checkRelease(nat, true));
    assert.doesNotThrow(() => checkRelease(fip(), false));
    assert.doesNotThrow(() => checkRelease(disassociate(nat), false));
  });
});

void describe('core/lifecycle: port forwards', () => {
  void it('turns an unassociated FIP into ports mode with the forward target as default', () => {
    const { fip: next, forward } = addForward(
      fip(),
      fwd({ port: '8000-8010', targetPort: 9000, node: 'n1', description: 'web' }),
      [],
      T1,
    );
    assert.deepEqual(forward, {
      id: 'f1',
      protocol: 'tcp',
      port: 8000,
      portEnd: 8010,
      targetPort: 9000,
      target: '10.0.0.5',
      node: 'n1',
      description: 'web',
    });
    assert.deepEqual(next.association, {
      mode: 'ports',
      target: '10.0.0.5',
      node: 'n1',
      associatedAt: T1,
    });
    assert.deepEqual(next.forwards, [forward]);
  });

  void it('keeps an existing ports association', () => {
    const ports = associate(fip(), assoc({ target: '10.0.0.9', mode: 'ports' }), T1);
    const { fip: next } = addForward(ports, fwd({ port: 80 }), [], T2);
    assert.deepEqual(next.association, ports.association);
  });

  void it('refuses forwards on a nat or routed FIP', () => {
    const nat = associate(fip(), assoc({ target: '10.0.0.5' }), T1);
    assert.throws(
      () => addForward(nat, fwd({ port: 80 }), [], T2),
      isError('IPF_E_FIP_MODE', { mode: 'nat' }),
    );
    const routed = associate(fip(), assoc({ target: '10.0.0.5', mode: 'routed', node: 'n1' }), T1);
    assert.throws(
      () => addForward(routed, fwd({ port: 80 }), [], T2),
      isError('IPF_E_FIP_MODE', { mode: 'routed' }),
    );
  });

  void it('refuses overlapping port ranges of one protocol', () => {
    const f = withForwards(fip(), { port: '8000-8010' }, { port: 443 });
    for (const port of [
      '8000',
      '8010',
      '7990-8000',
      '8010-8020',
      '8005',
      '7000-9000',
      '443',
      '400-500',
    ]) {
      assert.throws(
        () => addForward(f, fwd({ port }), [], T2),
        isError('IPF_E_FORWARD_CONFLICT', { proto: 'tcp', ports: port, address: '203.0.113.5' }),
        port,
      );
    }
    assert.throws(
      () => addForward(f, fwd({ port: 8005 }), [], T2),
      isError('IPF_E_FORWARD_CONFLICT', { id: 'f1' }),
    );
    assert.throws(
      () => addForward(f, fwd({ port: 443, target: '10.0.0.8' }), [], T2),
      isError('IPF_E_FORWARD_CONFLICT', { id: 'f2' }),
    );
  });

  void it('allows adjacent ranges and the same ports on the other protocol', () => {
    const f = withForwards(fip(), { port: '8000-8010' });
    assert.equal(addForward(f, fwd({ port: '7990-7999' }), [], T2).forward.id, 'f2');
    assert.equal(addForward(f, fwd({ port: '8011-8020' }), [], T2).forward.id, 'f2');
    const udp = addForward(f, fwd({ protocol: 'udp', port: '8000-8010' }), [], T2);
    assert.equal(udp.forward.protocol, 'udp');
    assert.equal(udp.fip.forwards.length, 2);
  });

  void it('refuses the gateway’s reserved ports on a shared address only', () => {
    const reserved: ReservedPort[] = [
      { protocol: 'tcp', port: 22 },
      { protocol: 'udp', port: 51820 },
    ];
    assert.throws(
      () => addForward(sharedFip(), fwd({ port: 22 }), reserved, T1),
      isError('IPF_E_PORT_RESERVED', { address: '192.0.2.1', proto: 'tcp', port: 22 }),
    );
    assert.throws(
      () => addForward(sharedFip(), fwd({ port: '20-30' }), reserved, T1),
      isError('IPF_E_PORT_RESERVED'),
    );
    assert.throws(
      () => addForward(sharedFip(), fwd({ protocol: 'udp', port: '51000-52000' }), reserved, T1),
      isError('IPF_E_PORT_RESERVED'),
    );
    // Other protocol or other ports are fine on the shared address …
    assert.equal(
      addForward(sharedFip(), fwd({ protocol: 'udp', port: 22 }), reserved, T1).forward.port,
      22,
    );
    assert.equal(addForward(sharedFip(), fwd({ port: '23-30' }), reserved, T1).forward.port, 23);
    // … and an address of its own may forward even the gateway's reserved ports.
    assert.equal(addForward(fip(), fwd({ port: 22 }), reserved, T1).forward.port, 22);
  });

  void it('names forwards f1, f2, … and keeps ids stable when others are removed', () => {
    let f = withForwards(fip(), { port: 80 }, { port: 443 }, { port: 22 });
    assert.deepEqual(
      f.forwards.map((x) => x.id),
      ['f1', 'f2', 'f3'],
    );
    f = removeForward(f, 'f2');
    assert.deepEqual(
      f.forwards.map((x) => [x.id, x.port]),
      [
        ['f1', 80],
        ['f3', 22],
      ],
    );
    const { fip: next, forward } = addForward(f, fwd({ port: 8080 }), [], T2);
    assert.equal(forward.id, 'f4');
    assert.deepEqual(
      next.forwards.map((x) => x.id),
      ['f1', 'f3', 'f4'],
    );
    f = removeForward(removeForward(next, 'f1'), 'f3');
    assert.deepEqual(
      f.forwards.map((x) => [x.id, x.port]),
      [['f4', 8080]],
    );
    assert.equal(addForward(f, fwd({ port: 9090 }), [], T2).forward.id, 'f5');
    // Removing the newest forward does not free its id for the next one.
    const latest = removeForward(f, 'f4');
    assert.equal(addForward(latest, fwd({ port: 9090 }), [], T2).forward.id, 'f5');
  });

  void it('frees the ports of a removed forward', () => {
    const f = removeForward(withForwards(fip(), { port: 80 }), 'f1');
    assert.deepEqual(f.forwards, []);
    assert.equal(addForward(f, fwd({ port: 80 }), [], T2).forward.port, 80);
  });

  void it('refuses to remove an unknown forward', () => {
    const f = withForwards(fip(), { port: 80 });
    assert.throws(
      () => removeForward(f, 'f9'),
      isError('IPF_E_FORWARD_NOT_FOUND', { address: '203.0.113.5', id: 'f9' }),
    );
    assert.throws(() => removeForward(fip(), 'f1'), isError('IPF_E_FORWARD_NOT_FOUND'));
  });

  void it('prints port ranges', () => {
    assert.equal(portText({ port: 80, portEnd: 80 }), '80');
    assert.equal(portText({ port: 8000, portEnd: 8010 }), '8000-8010');
  });
});
