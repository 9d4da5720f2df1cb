/**
 * `bash scripts/demo.sh` runs this (`node --import tsx demo/main.ts`, after setup built dist/
 * for the agents and the CLI the demo drives). Exits non-zero when a step fails.
 */
import { parseArgs } from 'node:util';
import { runDemo } from './demo.js';

const USAGE =
  'usage: bash scripts/demo.sh [--no-color]\n\n' +
  'Builds throwaway labs of network namespaces, runs real ipferry agents on their hosts\n' +
  'and walks floating IPs through their life with the CLI (NAT on a gateway, then routed\n' +
  'through a WireGuard tunnel to a home server and moved to another one), probing real\n' +
  'packets between the steps and timing both moves under a probe every 10 ms.\n' +
  'Needs root; touches nothing outside the labs; exits non-zero on failure.\n';

const { values } = parseArgs({
  options: { 'no-color': { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
});
if (values.help) {
  process.stdout.write(USAGE);
} else {
  const result = await runDemo(values['no-color'] ? { color: false } : {});
  process.exitCode = result.ok ? 0 : 1;
}
