/**
 * `ipferry import`: turn another tool's configuration into ipferry's, so its users switch by
 * pointing what they have at ipferry. Each source has its own module.
 */
import { Command } from 'commander';
import type { CliContext } from './context.js';
import { importIpfloaterCommand } from './import-ipfloater.js';
import { importNetiCommand } from './import-neti.js';

export function importCommand(ctx: CliContext): Command {
  return new Command('import')
    .description("Import another tool's configuration (IP Floater, Neti) into ipferry")
    .addCommand(importIpfloaterCommand(ctx))
    .addCommand(importNetiCommand(ctx));
}
