/**
 * Connection tracking: a moved or released FIP must not keep feeding established (or, for UDP,
 * merely recent) flows to its old target. In the delete phase, after every other step, the
 * conntrack entries whose original destination is the FIP and whose reply comes from the old
 * target are deleted, and the old target's own SNATed flows. A deleted entry cannot be put
 * back, so this step is last and its undo does nothing; should it fail, the steps before it
 * are undone and the next apply deletes them again.
 */
import type { IntentDiff } from '../../intent/diff.js';
import { decodeElement, type ElementKind, type IntentElement } from '../../intent/elements.js';
import { conntrack, forElement } from './args.js';
import type { Exec, Manager, Phase } from './manager.js';

/** `conntrack -D` runs at once; more only queue on the kernel's conntrack lock. */
const CONNTRACK_PARALLEL = 4;

const NOTHING_DELETED = (stderr: string): boolean =>
  /0 flow entries have been deleted/.test(stderr);

/** `conntrack -D` filters, one per flow kind an element going away carried. */
type Filters = readonly (readonly string[])[];

export class ConntrackManager implements Manager<Filters> {
  readonly name = 'conntrack';
  /** It holds no elements: it forgets the flows of those that go away. */
  readonly kinds: ReadonlySet<ElementKind> = new Set();

  constructor(private readonly exec: Exec) {}

  plan(diff: IntentDiff, phase: Phase): Filters | undefined {
    if (phase !== 'delete') return undefined;
    const filters = [...diff.remove, ...diff.replace.map((r) => r.from)]
      .map(staleConnectionFilter)
      .filter((args): args is string[] => args !== undefined);
    return filters.length > 0 ? filters : undefined;
  }

  /**
   * Each `conntrack -D` walks the whole table (~15 ms): a move needs two (DNAT and SNAT), a
   * mass release thousands. They are independent, so a few run at once.
   */
  async apply(filters: Filters): Promise<Filters> {
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < filters.length) {
        const args = filters[next++] ?? [];
        await this.exec('conntrack', ['-D', ...args], { tolerate: NOTHING_DELETED });
      }
    };
    await Promise.all(Array.from({ length: Math.min(CONNTRACK_PARALLEL, filters.length) }, worker));
    return filters;
  }

  /** Deleted entries cannot come back; new packets make new ones by the maps as they are. */
  undo(): Promise<void> {
    return Promise.resolve();
  }
}

/**
 * `conntrack -D` arguments for the flows an old element was carrying, if it carried any. Each
 * value is parsed again (./args.ts): an element that does not parse is refused, as its nft
 * deletion is.
 */
export function staleConnectionFilter(e: IntentElement): string[] | undefined {
  return forElement(e, () => {
    const t = decodeElement(e);
    switch (t.kind) {
      case 'dnat':
        return flow(t.data.fip, '-d', t.data.target, '-r');
      case 'snat':
        return flow(t.data.target, '-s', t.data.fip, '-q');
      case 'fwd': {
        const { fip, protocol, ports, target } = t.data;
        const single = ports.first === ports.last ? ['--dport', conntrack.port(ports.first)] : [];
        return [...flow(fip, '-d', target, '-r'), '-p', conntrack.protocol(protocol), ...single];
      }
      case 'fwdport': {
        const { fip, protocol, port, target } = t.data;
        const p = ['-p', conntrack.protocol(protocol), '--dport', conntrack.port(port)];
        return [...flow(fip, '-d', target, '-r'), ...p];
      }
      default:
        return undefined;
    }
  });
}

/**
 * The family option and one address of each direction: `first` as `firstOption`, `second` as
 * `secondOption`. Both of one family: conntrack filters one family at a time.
 */
function flow(first: string, firstOption: string, second: string, secondOption: string): string[] {
  const a = conntrack.address(first);
  const b = conntrack.address(second, a.family);
  return [...conntrack.family(a), firstOption, a.text, secondOption, b.text];
}
