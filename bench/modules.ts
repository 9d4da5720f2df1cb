/**
 * Every benchmark module, in the order `bash bench/run.sh` runs them. Add a module here (one
 * line) and the runner, the report and `--only NAME` pick it up.
 */
import type { BenchModule } from './types.js';
import { dataplaneForward } from './dataplane-forward.js';
import { dataplaneApply } from './dataplane-apply.js';
import { controlFirstPacket } from './control-first-packet.js';
import { controlFleet } from './control-fleet.js';
import { controlMemory } from './control-memory.js';

export interface BenchEntry {
  /** For `--only NAME` and the report: short, stable, kebab-case. */
  readonly name: string;
  readonly module: BenchModule;
}

export const MODULES: readonly BenchEntry[] = [
  { name: 'dataplane-forward', module: dataplaneForward },
  { name: 'dataplane-apply', module: dataplaneApply },
  { name: 'control-first-packet', module: controlFirstPacket },
  { name: 'control-fleet', module: controlFleet },
  { name: 'control-memory', module: controlMemory },
];
