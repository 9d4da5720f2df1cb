/**
 * Property-based fuzzing of the nft scripts an agent writes (issue 12): the desired states of
 * test/unit/fuzz-records.test.ts, some records mutated, decoded and compiled for every node
 * and rendered; every script must parse with `nft -c -f -` (which hands the transaction to the
 * kernel without committing it, so conflicting intervals and type mismatches count too). Then,
 * as an agent moves from one state to the next: one world's table applied for real, and the
 * transaction the nftables manager (src/dataplane/linux/nft.ts) builds toward another world's
 * checked with `nft -c`.
 *
 * Everything runs in one throwaway namespace (`ipft-fuzz…`) deleted in `after`, also when a
 * property failed. One script per `nft` call, so the case counts are moderate; FUZZ_SEED and
 * FUZZ_RUNS replay and scale them (test/support/fuzz.ts).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { NFT_FAMILY, NFT_TABLE } from '../../src/core/names.js';
import { NftManager, type NftTransport } from '../../src/dataplane/linux/nft.js';
import { diffIntent } from '../../src/intent/diff.js';
import { fuzzParameters, mutatedWorld, Tally } from '../support/fuzz.js';
import { type FuzzNamespace, fuzzNamespace } from '../support/fuzz-netns.js';
import { compileAndRender, decodeWorld, passOptions } from '../support/fuzz-pipeline.js';

const tally = new Tally('render');

/** The lines nft points at, and its first complaint: enough to see what went wrong. */
function nftComplaint(stderr: string): string {
  return stderr
    .split('\n')
    .filter((l) => /Error|^add element|^\s*map |^\s*set /.test(l))
    .slice(0, 6)
    .join('\n')
    .slice(0, 1500);
}

describe('fuzz: every rendered nft script parses with nft -c', () => {
  let ns: FuzzNamespace;

  before(async () => {
    ns = await fuzzNamespace();
  });

  after(async () => {
    await ns?.remove();
    console.log(tally.summary());
    for (const c of tally.crashes.slice(0, 10)) console.log(`  crash: ${c}`);
  });

  it('parses every node’s whole table, as an apply on a fresh host writes it', async () => {
    await fc.assert(
      fc.asyncProperty(mutatedWorld, passOptions, async (world, options) => {
        tally.cases++;
        const { snapshot } = decodeWorld(world);
        for (const part of compileAndRender(snapshot, options, tally)) {
          if (part.script === undefined) continue;
          const checked = await ns.nft(['-c', '-f', '-'], part.script);
          tally.count(checked.code === 0 ? 'scripts-parsed' : 'scripts-refused-by-nft');
          assert.equal(
            checked.code,
            0,
            `nft -c refused ${part.node}'s table:\n${nftComplaint(checked.stderr)}`,
          );
        }
      }),
      fuzzParameters(200),
    );
  });

  it('parses the transaction from one world’s table to another’s', async () => {
    const table = `${NFT_FAMILY} ${NFT_TABLE}`;
    const check: NftTransport = {
      listJson: async () => {
        const listed = await ns.nft(['-j', 'list', 'table', NFT_FAMILY, NFT_TABLE]);
        return listed.code === 0 && listed.stdout.trim() ? listed.stdout : undefined;
      },
      run: async (script) => {
        const checked = await ns.nft(['-c', '-f', '-'], script);
        tally.count(checked.code === 0 ? 'deltas-parsed' : 'deltas-refused-by-nft');
        assert.equal(checked.code, 0, `nft -c refused the delta:\n${nftComplaint(checked.stderr)}`);
      },
    };
    await fc.assert(
      fc.asyncProperty(mutatedWorld, mutatedWorld, passOptions, async (from, to, options) => {
        tally.cases++;
        const [a] = compileAndRender(decodeWorld(from).snapshot, options, tally);
        const [b] = compileAndRender(decodeWorld(to).snapshot, options, tally);
        if (!a?.script || !b?.intent) return;
        try {
          const applied = await ns.nft(['-f', '-'], a.script);
          assert.equal(applied.code, 0, `nft refused gw's table:\n${nftComplaint(applied.stderr)}`);
          const manager = new NftManager(check);
          const observed = await manager.observe();
          const change = manager.plan(diffIntent(b.intent.elements, observed), 'add');
          if (change) await manager.apply(change);
        } finally {
          await ns.nft(['delete', 'table', ...table.split(' ')]);
        }
      }),
      fuzzParameters(100),
    );
  });

  it('saw no crash', () => {
    assert.deepEqual(tally.crashes, []);
  });
});
