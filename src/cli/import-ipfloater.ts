/** `ipferry import ipfloater`: placeholder until the importer lands. */
import { Command } from 'commander';
import type { CliContext } from './context.js';

export function importIpfloaterCommand(ctx: CliContext): Command {
  void ctx;
  return new Command('ipfloater').description('not yet implemented');
}
