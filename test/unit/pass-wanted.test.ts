/**
 * Pass reports on demand (core/pass-wanted.ts): what the hub stores when writes wait, and when
 * an agent answers. An agent reports a pass only when asked and only once per revision asked.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  answersPassWanted,
  decodePassWanted,
  mergePassWanted,
} from '../../src/core/pass-wanted.js';

describe('the ask as stored', () => {
  it('decodes a revision and an optional list of node names; anything else is ignored', () => {
    assert.deepEqual(decodePassWanted({ revision: 7 }), { revision: 7 });
    assert.deepEqual(decodePassWanted({ revision: 7, nodes: ['gw', 'home'] }), {
      revision: 7,
      nodes: ['gw', 'home'],
    });
    for (const bad of [
      null,
      [],
      'x',
      { revision: 0 },
      { revision: 1.5 },
      { revision: '7' },
      { revision: 7, nodes: 'gw' },
      { revision: 7, nodes: ['Not A Name'] },
      { revision: 7, nodes: [1] },
    ]) {
      assert.equal(decodePassWanted(bad), undefined, JSON.stringify(bad));
    }
  });

  it('merges so that both asks are answered, and writes nothing when the standing one covers it', () => {
    assert.deepEqual(mergePassWanted(undefined, { revision: 5, nodes: ['a'] }), {
      revision: 5,
      nodes: ['a'],
    });
    assert.equal(mergePassWanted({ revision: 9 }, { revision: 5, nodes: ['a'] }), undefined);
    assert.equal(
      mergePassWanted({ revision: 9, nodes: ['a', 'b'] }, { revision: 9, nodes: ['b'] }),
      undefined,
    );
    assert.deepEqual(
      mergePassWanted({ revision: 9, nodes: ['b'] }, { revision: 5, nodes: ['a'] }),
      {
        revision: 9,
        nodes: ['a', 'b'],
      },
    );
    assert.deepEqual(mergePassWanted({ revision: 9, nodes: ['b'] }, { revision: 12 }), {
      revision: 12,
    });
    assert.deepEqual(mergePassWanted({ revision: 9 }, { revision: 12, nodes: ['a'] }), {
      revision: 12,
    });
  });
});

describe('an agent answers', () => {
  const asked = { revision: 10, nodes: ['home'] };

  it('once it has passed the revision asked for, if it is named', () => {
    assert.equal(answersPassWanted('home', asked, { revision: 9 }, 0), false, 'not there yet');
    assert.equal(answersPassWanted('home', asked, { revision: 10 }, 0), true);
    assert.equal(answersPassWanted('home', asked, { revision: 14 }, 0), true);
    assert.equal(answersPassWanted('gw', asked, { revision: 14 }, 0), false, 'not named');
    assert.equal(answersPassWanted('gw', { revision: 10 }, { revision: 14 }, 0), true, 'all');
  });

  it('once per revision asked for, and never unasked', () => {
    assert.equal(answersPassWanted('home', asked, { revision: 14 }, 10), false);
    assert.equal(answersPassWanted('home', undefined, { revision: 14 }, 0), false);
    assert.equal(answersPassWanted('home', asked, undefined, 0), false);
  });
});
