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
import { type Exec, type Manager, type Phase, undoEach } from './manager.js';

interface Write {
  readonly path: string;
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

  /** The wanted sysctls only: one ipferry does not want is not its to report. */
  async observe(wanted: readonly IntentElement[]): Promise<IntentElement[]> {
    return Promise.all(
      wanted.flatMap((e) => (isKind(e, 'sysctl') ? [this.element(decode(e).path)] : [])),
    );
  }

  plan(diff: IntentDiff, phase: Phase): Write[] | undefined {
    if (phase !== 'add') return undefined;
    const writes = [...diff.add, ...diff.replace.map((r) => r.to)].flatMap((e) =>
      isKind(e, 'sysctl') ? [decode(e)] : [],
    );
    return writes.length > 0 ? writes : undefined;
  }

  async apply(writes: Write[]): Promise<Written[]> {
    const written: Written[] = [];
    try {
      for (const w of writes) {
        const before = await this.read(w.path);
        await this.write(w.path, w.value);
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
    await undoEach([...written].reverse().map((w) => () => this.write(w.path, w.before)));
  }

  private async element(path: string): Promise<IntentElement> {
    // A per-interface sysctl of a tunnel not created yet reads as missing.
    return element('sysctl', { path, value: (await this.read(path)) ?? 'missing' }, HOST_OWNER);
  }

  private async read(path: string): Promise<string | undefined> {
    const { stdout } = await this.exec('sysctl', ['-n', path], { tolerate: () => true });
    return stdout.trim() || undefined;
  }

  private async write(path: string, value: string): Promise<void> {
    await this.exec('sysctl', ['-qw', `${path}=${value}`]);
  }
}
