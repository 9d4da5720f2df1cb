/**
 * Whether a write is applied (core/applied.ts), judged from what the agents reported: a FIP's
 * gateway by the FIP's status at the record's revision, any other agent by its latest pass.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { appliedReport, type ConcernedAgent, nodeList, settled } from '../../src/core/applied.js';
import type { FipState } from '../../src/core/model.js';

const status = (state: FipState, revision: number, message?: string) => ({
  address: '203.0.113.10',
  state,
  node: 'gw',
  revision,
  ...(message !== undefined ? { message } : {}),
  updatedAt: '2026-12-08T00:00:00Z',
});

const gateway = (s?: ReturnType<typeof status>): ConcernedAgent => ({
  node: 'gw',
  alive: true,
  fip: { fipRevision: 40, ...(s ? { status: s } : {}) },
});

const home = (revision: number, errors?: string[]): ConcernedAgent => ({
  node: 'home',
  alive: true,
  pass: { revision, ...(errors ? { errors } : {}) },
});

describe('a write is applied', () => {
  it('once the gateway’s status describes the FIP’s revision and every other agent passed it', () => {
    const r = appliedReport(41, [gateway(status('ACTIVE', 40)), home(41)]);
    assert.equal(r.outcome, 'applied');
    assert.deepEqual(
      r.agents.map((a) => [a.node, a.state, a.held]),
      [
        ['gw', 'applied', undefined],
        ['home', 'applied', undefined],
      ],
    );
    assert.ok(settled(r));
  });

  it('is pending while the status describes an older record, or an agent passed an older revision', () => {
    assert.equal(appliedReport(41, [gateway(status('ACTIVE', 39)), home(41)]).outcome, 'pending');
    assert.equal(appliedReport(41, [gateway(status('ACTIVE', 40)), home(40)]).outcome, 'pending');
    assert.equal(appliedReport(41, [gateway()]).outcome, 'pending');
    assert.ok(!settled(appliedReport(41, [gateway()])));
  });

  it('a FIP held DOWN at its revision is applied, with the gateway’s reason, and not settled', () => {
    const why =
      'waiting for the path through the tunnel to home to be measured before routing into it';
    const r = appliedReport(41, [gateway(status('DOWN', 40, why)), home(41)]);
    assert.equal(r.outcome, 'applied');
    assert.equal(r.agents[0]?.held, why);
    assert.ok(!settled(r), 'worth waiting for while there is time');
  });

  it('a FIP DOWN with no reason (not associated) is plainly applied', () => {
    const r = appliedReport(41, [gateway(status('DOWN', 40))]);
    assert.equal(r.outcome, 'applied');
    assert.equal(r.agents[0]?.held, undefined);
    assert.ok(settled(r));
  });

  it('ERROR and UNREACHABLE, a failed pass and a dead agent are final, with the reason', () => {
    const error = appliedReport(41, [gateway(status('ERROR', 40, 'refused')), home(41)]);
    assert.equal(error.outcome, 'error');
    assert.equal(error.agents[0]?.message, 'refused');
    assert.ok(settled(error));
    assert.equal(appliedReport(41, [gateway(status('UNREACHABLE', 40))]).outcome, 'unreachable');
    const failed = appliedReport(41, [home(41, ['nft said no', 'twice'])]);
    assert.equal(failed.outcome, 'error');
    assert.equal(failed.agents[0]?.message, 'nft said no; twice');
    const dead = appliedReport(41, [{ ...home(41), alive: false }]);
    assert.equal(dead.outcome, 'unreachable');
    assert.equal(dead.agents[0]?.message, 'its agent is not alive');
  });

  it('an error wins over a pending agent: the answer is final at once', () => {
    const r = appliedReport(41, [gateway(status('ERROR', 40, 'refused')), home(30)]);
    assert.equal(r.outcome, 'error');
  });
});

describe('nodeList', () => {
  it('joins names for one line of output', () => {
    assert.equal(nodeList([]), '');
    assert.equal(nodeList(['gw']), 'gw');
    assert.equal(nodeList(['gw', 'home']), 'gw and home');
    assert.equal(nodeList(['gw', 'home', 'vps']), 'gw, home and vps');
  });
});
