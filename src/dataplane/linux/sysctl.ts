/**
 * Sysctls (`sysctl` elements): read with `sysctl -n`, written with `sysctl -w` only when the
 * diff says they differ. ipferry never resets one it no longer wants (the delete phase has
 * nothing to do), but an apply that fails after writing one puts back the value it read just
 * before.
 */
import {
  decode,
  element,
  HOST_OWNER,
  type IntentElement,
  isKind,
  kindsOf,
} from '../../intent/elements.js';
import type { IntentDiff } from '../../intent/diff.js';
import { IpferryError } from '../../core/errors.js';
import { forElement, shown, sysctl } from './args.js';
import { type Exec, type Manager, type Phase, undoEach } from './manager.js';

interface Write {
  /** The element's name (`net.ipv4.ip_forward`), as the diff and the observation know it. */
  readonly path: string;
  /** The name and the value as sysctl's argv gets them (./args.ts). */
  readonly name: string;
  readonly value: string;
}

/** A value written, and the one it replaced. */
interface Written extends Write {
  readonly before: string;
}

export class SysctlManager implements Manager<Write[], Written[]> {
  readonly name = 'sysctl';
  readonly kinds = kindsOf('sysctl');

  constructor(private readonly exec: Exec) {}

  /**
   * The wanted sysctls only: one ipferry does not want is not its to report. One whose name
   * does not parse is not read; it reads as missing, and planning its write refuses it.
   */
  async observe(wanted: readonly IntentElement[]): Promise<IntentElement[]> {
    return Promise.all(
      wanted.flatMap((e) => (isKind(e, 'sysctl') ? [this.element(decode(e).path)] : [])),
    );
  }

  /** Renders every write now: one that does not parse refuses the change before any runs. */
  plan(diff: IntentDiff, phase: Phase): Write[] | undefined {
    if (phase !== 'add') return undefined;
    const writes = [...diff.add, ...diff.replace.map((r) => r.to)].flatMap((e) => {
      if (!isKind(e, 'sysctl')) return [];
      const { path, value } = decode(e);
      return [forElement(e, () => ({ path, name: sysctl.path(path), value: sysctl.value(value) }))];
    });
    return writes.length > 0 ? writes : undefined;
  }

  async apply(writes: Write[]): Promise<Written[]> {
    const written: Written[] = [];
    try {
      for (const w of writes) {
        const read = await this.read(w.name);
        const before = read === undefined ? undefined : restorable(w, read);
        await this.write(w.name, w.value);
        // A sysctl that could not be read could not be written either: the write threw.
        if (before !== undefined) written.push({ ...w, before });
      }
    } catch (error) {
      await this.undo(written).catch(() => undefined);
      throw error;
    }
    return written;
  }

  async undo(written: Written[]): Promise<void> {
    await undoEach([...written].reverse().map((w) => () => this.write(w.name, w.before)));
  }

  private async element(path: string): Promise<IntentElement> {
    // A per-interface sysctl of a tunnel not created yet reads as missing.
    const name = parsedName(path);
    const value = name === undefined ? undefined : await this.read(name);
    return element('sysctl', { path, value: value ?? 'missing' }, HOST_OWNER);
  }

  /** `name` as sysctl.path wrote it. */
  private async read(name: string): Promise<string | undefined> {
    const { stdout } = await this.exec('sysctl', ['-n', name], { tolerate: () => true });
    return stdout.trim() || undefined;
  }

  /** `name` and `value` as sysctl.path and sysctl.value wrote them. */
  private async write(name: string, value: string): Promise<void> {
    await this.exec('sysctl', ['-qw', `${name}=${value}`]);
  }
}

/**
 * What undo would write back, checked like any value before the new one is written: a value
 * that could not be put back is not overwritten.
 */
function restorable(w: Write, read: string): string {
  try {
    return sysctl.value(read);
  } catch {
    throw new IpferryError('IPF_E_DATAPLANE', {
      reason: `sysctl ${w.path} holds ${shown(read)}, which could not be written back; it is left as it is`,
    });
  }
}

function parsedName(path: string): string | undefined {
  try {
    return sysctl.path(path);
  } catch {
    return undefined;
  }
}
