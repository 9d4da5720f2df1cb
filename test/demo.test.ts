/**
 * The README's demo (`bash scripts/demo.sh`) as a test: runs it with its output captured and
 * checks that every step passed, that the output states the key facts, and that it left
 * nothing behind — no namespace of its lab, no agent process.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { after, it } from 'node:test';
import { runDemo } from '../src/lab/demo.js';
import { cleanupLabs, randomPrefix } from '../src/lab/netns.js';
import { ensureBuilt } from './build.js';

const prefix = randomPrefix('ipft-demotest-');

// Should an assertion in runDemo's own teardown ever fail, still leave nothing behind.
after(async () => {
  await cleanupLabs(prefix);
});

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

it(
  'the demo walks floating IPs through their life on a real kernel and leaves nothing behind',
  { timeout: 180_000 },
  async () => {
    await ensureBuilt(); // the demo drives bin/ipferry, which runs the compiled dist/
    const lines: string[] = [];
    const result = await runDemo({ out: (line) => lines.push(line), prefix });
    const output = lines.join('\n');

    assert.ok(result.ok, `the demo failed: ${JSON.stringify(result.failure)}\n${output}`);
    assert.equal(result.passed, result.steps);
    assert.match(output, new RegExp(`demo: all ${result.steps} steps passed$`));
    assert.ok(!output.includes('\u001b['), 'no colour codes when the output is not a terminal');

    // The key facts, as a person reads them.
    assert.match(
      output,
      /client 198\.51\.100\.9 → 203\.0\.113\.10:80\/tcp answered by be1, which saw 198\.51\.100\.9 \(client address preserved\)/,
    );
    assert.match(output, /client 198\.51\.100\.9 → 203\.0\.113\.10:5353\/udp answered by be1/);
    assert.match(
      output,
      /be1 10\.0\.0\.11 → client 198\.51\.100\.9:80\/tcp: the client saw 203\.0\.113\.10/,
    );
    assert.match(output, /lanc 10\.0\.0\.50 → 203\.0\.113\.10:80\/tcp answered by be1/);
    assert.match(output, /nothing to change/);
    assert.match(output, /elements = \{ 203\.0\.113\.10 : 10\.0\.0\.11 \}/);
    assert.match(output, /moved to be2: be2 answered first \d+ ms after/);
    assert.match(
      output,
      /client 198\.51\.100\.9 → 203\.0\.113\.10:80\/tcp answered by be2, which saw 198\.51\.100\.9 \(client address preserved\)/,
    );
    assert.match(output, /interruption: \d+ ms .*no probe failed/);
    assert.match(output, /192\.0\.2\.2:25\/tcp answered by be2/);
    assert.match(output, /192\.0\.2\.2:2222\/tcp answered by gw/);
    assert.match(output, /error IPF_E_PORT_RESERVED/);
    assert.match(output, /\[2001:db8:f::10\]:80\/tcp answered by be1, which saw 2001:db8:c::9/);
    assert.match(output, /error IPF_E_FIP_STILL_ASSOCIATED/);
    assert.match(
      output,
      /released: no answer for client 198\.51\.100\.9 → 203\.0\.113\.10:80\/tcp/,
    );
    assert.match(
      output,
      /released: no answer for client 2001:db8:c::9 → \[2001:db8:f::10\]:80\/tcp/,
    );

    const move = result.move;
    assert.ok(move, 'the move was measured');
    assert.equal(move.failed, 0);
    assert.ok(move.byBe1 > 0 && move.byBe2 > 0, JSON.stringify(move));
    assert.ok(Number.isFinite(move.sinceReturnedMs), JSON.stringify(move));

    // Nothing left behind.
    const namespaces = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
    assert.ok(!namespaces.includes(result.prefix), `namespaces left behind:\n${namespaces}`);
    assert.ok(result.agentPid !== undefined, 'an agent was started');
    assert.ok(!alive(result.agentPid), `agent pid ${result.agentPid} still runs`);
    const ps = execFileSync('ps', ['-eo', 'pid,args'], { encoding: 'utf8' });
    assert.ok(
      !ps.includes(`--netns ${result.prefix}gw`),
      `an agent of this lab still runs:\n${ps}`,
    );
  },
);
