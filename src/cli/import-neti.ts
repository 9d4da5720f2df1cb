/** `ipferry import neti`: placeholder until the importer lands. */
import { Command } from 'commander';
import type { CliContext } from './context.js';

export function importNetiCommand(ctx: CliContext): Command {
  void ctx;
  return new Command('neti').description('not yet implemented');
}
