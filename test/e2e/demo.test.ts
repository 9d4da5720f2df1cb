/**
 * The README's demo (`bash scripts/demo.sh`) as a test: runs it with its output captured and
 * checks that every step passed, that the output states the key facts — among them both moves,
 * between LAN backends and to a remote home server, each with its measured interruption — and
 * that it left nothing behind: no namespace of its labs, no agent, no wireguard-go or its socket.
 * The measured figures are printed, not asserted beyond being there.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { after, it } from 'node:test';
import { runDemo } from '../../demo/demo.js';
import { JOIN_TOKEN_PREFIX } from '../../src/core/join.js';
import { cleanupLabs, randomPrefix } from '../../src/lab/netns.js';
import { alive } from '../../src/lab/procs.js';
import { wireguardSocket } from '../../src/lab/wireguard.js';
import { ensureBuilt } from '../support/build.js';

const prefix = randomPrefix('ipft-demotest-');

// Should an assertion in runDemo's own teardown ever fail, still leave nothing behind.
after(async () => {
  await cleanupLabs(prefix);
});

/** The demo's `interruption:` line of the move to `to`. */
function interruptionLine(output: string, to: string): string {
  const line = output.split('\n').find((l) => l.includes('interruption:') && l.includes(` ${to}`));
  return line?.replace(/^.*interruption: /, '') ?? '(not found)';
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
    assert.match(output, new RegExp(`demo: all ${result.steps} steps passed in \\d+ s$`));
    // Every step is numbered out of the total, teardown last.
    const numbered = [...output.matchAll(/^== (\d+)\/(\d+)\. /gm)].map((m) => [m[1], m[2]]);
    assert.deepEqual(
      numbered,
      Array.from({ length: result.steps }, (_, i) => [String(i + 1), String(result.steps)]),
    );
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

    // Part 2: a FIP served from the home server through the tunnel.
    assert.match(output, /^home\s+yes\b/m, 'home joined and is alive in `ipferry node list`');
    assert.match(output, /^home2\s+yes\b/m, 'home2 joined and is alive in `ipferry node list`');
    assert.match(output, new RegExp(`holds ${JOIN_TOKEN_PREFIX.replace('.', '\\.')}\\S*…`));
    assert.doesNotMatch(
      output,
      new RegExp(`${JOIN_TOKEN_PREFIX.replace('.', '\\.')}[\\w-]{8,}`),
      'the join token is a secret: printed shortened only',
    );
    assert.match(
      output,
      /client 198\.51\.100\.9 → 203\.0\.113\.10:80\/tcp answered by home, which saw 198\.51\.100\.9 \(routed through the tunnel, client address preserved\)/,
    );
    assert.match(
      output,
      /client 198\.51\.100\.9 → 198\.18\.0\.10:80\/tcp answered by home, which saw 198\.51\.100\.9 \(home's own address still works, through its own ISP\)/,
    );
    assert.match(
      output,
      /home 198\.18\.0\.10 → client 198\.51\.100\.9:80\/tcp: the client saw 198\.18\.0\.10/,
    );
    assert.match(
      output,
      /\(BCP 38\): home's answers from 203\.0\.113\.10 must have gone back through the tunnel/,
    );
    assert.match(
      output,
      /^ipf\S+\s+\S+\s+.*\b203\.0\.113\.10\/32\b/m,
      "home's tunnel holds the FIP",
    );
    assert.match(output, /^10100: from 203\.0\.113\.10 lookup 7447 proto 241$/m);
    assert.match(output, /^default dev ipf\S+ proto 241 /m);
    assert.match(output, /^203\.0\.113\.10 dev ipf\S+ /m, 'gw routes the FIP into the tunnel');

    // The server moves to home2 and its IP follows, measured.
    assert.match(output, /move 203\.0\.113\.10 from home to home2 while the client probes it/);
    assert.match(
      output,
      /\$ ipferry fip move 203\.0\.113\.10 --node home2 --target 203\.0\.113\.10/,
    );
    assert.match(output, /\d+ answered by home, then \d+ by home2, \d+ unanswered/);
    assert.match(output, /moved to home2: home2 answered first \d+ ms after/);
    assert.match(
      output,
      /interruption: (\d+ ms between the last answer from home and the first from home2|\d+ ms from the move API call returning to the first answer of home2)/,
    );
    assert.match(
      output,
      /client 198\.51\.100\.9 → 203\.0\.113\.10:80\/tcp answered by home2, which saw 198\.51\.100\.9 \(the same IP, from its new place, client address preserved\)/,
    );
    assert.match(output, /home2 holds 203\.0\.113\.10 now; home gave it up/);
    assert.match(
      output,
      /198\.18\.0\.10:80\/tcp answered by home, .*\(home's own address is untouched\)/,
    );
    assert.match(
      output,
      /home2 198\.18\.0\.20 → client 198\.51\.100\.9:80\/tcp: the client saw 198\.18\.0\.20/,
    );
    assert.match(
      output,
      /disassociated: no answer for client 198\.51\.100\.9 → 203\.0\.113\.10:80\/tcp/,
    );
    assert.match(
      output,
      /198\.18\.0\.20:80\/tcp answered by home2, .*\(home2's own address is untouched\)/,
    );

    const move = result.move;
    assert.ok(move, 'the move was measured');
    assert.equal(move.failed, 0);
    assert.deepEqual([move.from, move.to], ['be1', 'be2']);
    assert.ok(move.byFrom > 0 && move.byTo > 0, JSON.stringify(move));
    assert.equal(move.lateFrom, 0);
    assert.ok(Number.isFinite(move.sinceReturnedMs), JSON.stringify(move));

    // The remote move: a new tunnel comes up during it, so probes may go unanswered; but home2
    // took over, and once it had, home answered nothing more.
    const remote = result.remoteMove;
    assert.ok(remote, 'the remote move was measured');
    assert.deepEqual([remote.address, remote.from, remote.to], ['203.0.113.10', 'home', 'home2']);
    assert.ok(remote.byFrom > 0 && remote.byTo > 0, JSON.stringify(remote));
    assert.equal(remote.lateFrom, 0);
    assert.ok(Number.isFinite(remote.gapMs) && remote.gapMs >= 0, JSON.stringify(remote));
    console.log(`demo: LAN move ${interruptionLine(output, 'be2')}`);
    console.log(`demo: remote move ${interruptionLine(output, 'home2')}`);

    // Nothing left behind.
    const namespaces = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
    assert.ok(!namespaces.includes(result.prefix), `namespaces left behind:\n${namespaces}`);
    assert.ok(result.homePrefix.startsWith(result.prefix));
    assert.ok(result.agentPid !== undefined, 'an agent was started');
    assert.equal(result.agentPids.length, 4, 'gw, then the cloud VM gw, home and home2');
    for (const pid of result.agentPids) assert.ok(!alive(pid), `agent pid ${pid} still runs`);
    const ps = execFileSync('ps', ['-eo', 'pid,args'], { encoding: 'utf8' });
    assert.ok(
      !ps.includes(`--netns ${result.prefix}`),
      `an agent of these labs still runs:\n${ps}`,
    );
    // wireguard-go serves the tunnel ends where the kernel lacks WireGuard (as on the lab machines).
    for (const { pid, name } of result.wireguard) {
      assert.ok(!alive(pid), `wireguard-go pid ${pid} (${name}) still runs`);
      assert.ok(!ps.includes(`wireguard-go -f ${name}`), `wireguard-go for ${name} still runs`);
      assert.ok(!existsSync(wireguardSocket(name)), `${name}.sock left behind`);
    }
  },
);
