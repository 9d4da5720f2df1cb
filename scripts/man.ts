/**
 * Prints the man page ipferry.1, generated from the CLI's own command tree:
 * `node --import tsx scripts/man.ts > ipferry.1` (scripts/package.sh installs it).
 */
import { CliContext } from '../src/cli/context.js';
import { describeProgram, manPage } from '../src/cli/completion.js';
import { buildProgram } from '../src/cli/main.js';
import { VERSION } from '../src/version.js';

const ctx = new CliContext({
  io: { out: () => undefined, err: () => undefined },
  env: {},
  flags: () => ({}),
  version: VERSION,
});
process.stdout.write(manPage(describeProgram(buildProgram(ctx, VERSION)), VERSION));
