/**
 * The `inet ipferry` nftables table (../nft/ruleset.ts renders and reads it): one transaction
 * per apply, in the add phase, holding the element deletions too (a transaction has no half to
 * see). Element adds and deletes only, unless the table is missing or damaged: then the whole
 * table is replaced in that one transaction (conntrack keeps established connections through
 * it). Undo is the inverse transaction: the elements added deleted and the deleted added back,
 * or, after a whole-table replacement, no table when there was none, else the elements the old
 * table held in a sound table. The old table itself cannot be written back: nft 1.0.6 does not
 * read its own listing of the skeleton's rules (`@nh,96,32 map @tuntarget4`), in text or JSON.
 */
import { NFT_FAMILY, NFT_TABLE } from '../../core/names.js';
import { elementId, type IntentDiff } from '../../intent/diff.js';
import type { IntentElement } from '../../intent/elements.js';
import { NFT_KINDS, parseTable, renderElements, renderTable } from '../nft/ruleset.js';
import type { Exec, Manager, Phase } from './manager.js';

/**
 * How the manager reaches nftables: the `nft` command today. libnftables takes the same script
 * text and prints the same listings, so it would be another implementation of this.
 */
export interface NftTransport {
  /** The table as `nft -j list table` prints it; undefined when there is none. */
  listJson(): Promise<string | undefined>;
  /** Runs a script as one transaction: all of it or nothing. */
  run(script: string): Promise<void>;
}

const NO_TABLE = (stderr: string): boolean => /No such file or directory/.test(stderr);

/** NftTransport by `nft` (inside the dataplane's namespace, through `exec`). */
export function nftCommand(exec: Exec): NftTransport {
  return {
    listJson: async () => {
      const args = ['-j', 'list', 'table', NFT_FAMILY, NFT_TABLE];
      const { stdout } = await exec('nft', args, { tolerate: NO_TABLE });
      return stdout.trim() ? stdout : undefined;
    },
    run: async (script) => {
      await exec('nft', ['-f', '-'], { input: script });
    },
  };
}

interface NftChange {
  /** Elements going away (removed, or the old value of a changed one). */
  readonly gone: readonly IntentElement[];
  /** Elements coming in (added, or the new value of a changed one); may hold the table. */
  readonly put: readonly IntentElement[];
  /** The table's fixed part changes: the whole table is written anew. */
  readonly table: boolean;
  /**
   * The element commands of the change. Undo renders the same elements with the other verb,
   * which parse as well: a value's text does not depend on the verb.
   */
  readonly script: readonly string[];
}

type NftDone =
  | { readonly table: false; readonly change: NftChange }
  /** `before`: the elements the table held, or undefined when there was none. */
  | { readonly table: true; readonly before: readonly IntentElement[] | undefined };

export class NftManager implements Manager<NftChange, NftDone> {
  readonly name = 'nft';
  readonly kinds = NFT_KINDS;

  constructor(private readonly nft: NftTransport) {}

  async observe(): Promise<IntentElement[]> {
    const json = await this.nft.listJson();
    return json ? parseTable(json) : [];
  }

  plan(diff: IntentDiff, phase: Phase): NftChange | undefined {
    if (phase !== 'add') return undefined;
    const ours = (e: IntentElement): boolean => NFT_KINDS.has(e.kind);
    const gone = [...diff.remove, ...diff.replace.map((r) => r.from)].filter(ours);
    const put = [...diff.add, ...diff.replace.map((r) => r.to)].filter(ours);
    if (gone.length === 0 && put.length === 0) return undefined;
    // Rendered now, so that an element that does not parse refuses the change before any step
    // of the apply runs.
    const script = [...renderElements('delete', gone), ...renderElements('add', put)];
    return { gone, put, table: put.some((e) => e.kind === 'table'), script };
  }

  async apply(change: NftChange): Promise<NftDone> {
    if (!change.table) {
      await this.runIfAny(change.script);
      return { table: false, change };
    }
    // The fixed part is missing or damaged: rebuild everything the table should hold.
    const json = await this.nft.listJson();
    const before = json === undefined ? undefined : parseTable(json).filter(notTable);
    const gone = new Set(change.gone.map(elementId));
    const kept = (before ?? []).filter((e) => !gone.has(elementId(e)));
    await this.nft.run(renderTable([...kept, ...change.put.filter(notTable)], json !== undefined));
    return { table: true, before };
  }

  async undo(done: NftDone): Promise<void> {
    if (done.table) {
      const table = `${NFT_FAMILY} ${NFT_TABLE}`;
      await this.nft.run(
        done.before
          ? renderTable(done.before, true)
          : `add table ${table}\ndelete table ${table}\n`,
      );
      return;
    }
    await this.runIfAny([
      ...renderElements('delete', done.change.put),
      ...renderElements('add', done.change.gone),
    ]);
  }

  private async runIfAny(lines: readonly string[]): Promise<void> {
    if (lines.length > 0) await this.nft.run(lines.join('\n') + '\n');
  }
}

const notTable = (e: IntentElement): boolean => e.kind !== 'table';
