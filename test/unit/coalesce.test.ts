/**
 * coalesced (src/agent/coalesce.ts): the first request is written at once; requests while a
 * write runs or within the spacing fold into one more write, made with what is current then;
 * a request the writer has nothing new for does not hold the next one back.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { coalesced } from '../../src/agent/coalesce.js';

/** A writer whose writes finish only when the test says so. */
function gatedWriter(wrote = true) {
  const calls: (() => void)[] = [];
  return {
    calls,
    write: () =>
      new Promise<boolean>((resolve) => {
        calls.push(() => resolve(wrote));
      }),
    finish: (i: number) => calls[i]!(),
  };
}

const tick = () => new Promise((resolve) => setImmediate(resolve));

describe('coalesced writes', () => {
  it('writes the first request at once', async () => {
    const w = gatedWriter();
    const c = coalesced(w.write, 60_000);
    c.request();
    await tick();
    assert.equal(w.calls.length, 1);
    w.finish(0);
    await c.settled();
    c.stop();
  });

  it('folds every request made while a write runs into one more write', async () => {
    const w = gatedWriter();
    const c = coalesced(w.write, 0);
    c.request();
    await tick();
    for (let i = 0; i < 50; i++) c.request();
    await tick();
    assert.equal(w.calls.length, 1, 'one write at a time');
    w.finish(0);
    await tick();
    await tick();
    assert.equal(w.calls.length, 2, 'the 50 requests made one write');
    w.finish(1);
    await c.settled();
    assert.equal(w.calls.length, 2);
    c.stop();
  });

  it('holds the next write back for the spacing, and stop() drops it', async () => {
    const w = gatedWriter();
    const c = coalesced(w.write, 60_000);
    c.request();
    await tick();
    w.finish(0);
    await tick();
    c.request();
    await tick();
    assert.equal(w.calls.length, 1, 'within the spacing: not yet');
    c.stop();
    await c.settled();
    assert.equal(w.calls.length, 1, 'stopped: never');
  });

  it('a request with nothing new to write does not count against the spacing', async () => {
    let wrote = false;
    let calls = 0;
    const c = coalesced(() => {
      calls++;
      return Promise.resolve(wrote);
    }, 60_000);
    c.request();
    await c.settled();
    wrote = true;
    c.request();
    await c.settled();
    assert.equal(calls, 2, 'the second request was written at once');
    c.request();
    await tick();
    assert.equal(calls, 2, 'a third, within the spacing of a real write, waits');
    c.stop();
  });

  it('a failed write counts, and the next request is written after the spacing', async () => {
    let calls = 0;
    const c = coalesced(() => {
      calls++;
      return Promise.reject(new Error('store down'));
    }, 0);
    c.request();
    await c.settled();
    c.request();
    await c.settled();
    assert.equal(calls, 2);
    c.stop();
  });
});
