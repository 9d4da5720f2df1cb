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

/** `conntrack -D` arguments for the flows an old element was carrying, if it carried any. */
export function staleConnectionFilter(e: IntentElement): string[] | undefined {
  const family = (a: string): string[] => (a.includes(':') ? ['-f', 'ipv6'] : []);
  const t = decodeElement(e);
  switch (t.kind) {
    case 'dnat':
      return [...family(t.data.fip), '-d', t.data.fip, '-r', t.data.target];
    case 'snat':
      return [...family(t.data.target), '-s', t.data.target, '-q', t.data.fip];
    case 'fwd': {
      const { fip, protocol, ports, target } = t.data;
      const single = ports.first === ports.last ? ['--dport', String(ports.first)] : [];
      return [...family(fip), '-d', fip, '-r', target, '-p', protocol, ...single];
    }
    case 'fwdport': {
      const { fip, protocol, port, target } = t.data;
      return [...family(fip), '-d', fip, '-r', target, '-p', protocol, '--dport', String(port)];
    }
    default:
      return undefined;
  }
}
