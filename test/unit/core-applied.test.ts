/**
 * The pure judgement of whether a write reached the kernels it concerns (src/core/applied.ts).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { appliedReport, type ConcernedAgent } from '../../src/core/applied.js';
import type { FipStatus } from '../../src/core/model.js';

const status = (state: FipStatus['state'], revision: number, message?: string): FipStatus => ({
  address: '203.0.113.10',
  state,
  node: 'gw',
  revision,
  ...(message ? { message } : {}),
  updatedAt: '2026-12-07T00:00:00.000Z',
});

const gateway = (fip: NonNullable<ConcernedAgent['fip']>): ConcernedAgent => ({
  node: 'gw',
  alive: true,
  fip,
});

describe('whether a FIP write was applied', () => {
  it('an associated FIP is applied only once its gateway reports it ACTIVE', () => {
    const active = appliedReport(7, [
      gateway({ fipRevision: 7, serving: true, status: status('ACTIVE', 7) }),
    ]);
    assert.equal(active.outcome, 'applied');
  });

  it('a gateway still holding an associated FIP DOWN at its revision has not applied it', () => {
    const waiting = 'waiting for the path through the tunnel to home2 to be measured';
    const report = appliedReport(7, [
      gateway({ fipRevision: 7, serving: true, status: status('DOWN', 7, waiting) }),
    ]);
    assert.equal(report.outcome, 'pending');
    assert.equal(report.agents[0]?.message, waiting);
  });

  it('DOWN is the applied state of a FIP that is neither associated nor forwarded', () => {
    const report = appliedReport(7, [
      gateway({ fipRevision: 7, serving: false, status: status('DOWN', 7) }),
    ]);
    assert.equal(report.outcome, 'applied');
  });

  it('a status of an older revision is pending; ERROR and UNREACHABLE fail with the reason', () => {
    assert.equal(
      appliedReport(7, [gateway({ fipRevision: 7, serving: true, status: status('ACTIVE', 6) })])
        .outcome,
      'pending',
    );
    const error = appliedReport(7, [
      gateway({ fipRevision: 7, serving: true, status: status('ERROR', 7, 'nft refused it') }),
    ]);
    assert.equal(error.outcome, 'error');
    assert.equal(error.agents[0]?.message, 'nft refused it');
    assert.equal(
      appliedReport(7, [
        gateway({ fipRevision: 7, serving: true, status: status('UNREACHABLE', 7) }),
      ]).outcome,
      'unreachable',
    );
  });
});
