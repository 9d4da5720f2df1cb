/**
 * Writes that wait, through the real binary against a lab's gateway agent in network
 * namespaces: `fip move` prints the time its gateway took to apply it (and the client then gets
 * the new target's answer); a move the gateway cannot realise (its kernel holds the FIP's
 * address as its own, so the agent refuses to take the gateway's traffic) exits 1 with the
 * agent's reason; `ipferry events --follow` prints the next write as it is recorded. The lab runs under a namespace base and state directory of this file's own.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import type { LabState, ProbeResult } from '../../src/lab/labs.js';
import { cleanupLabs } from '../../src/lab/netns.js';
import { BIN, ensureBuilt } from '../support/build.js';
import { tempDir, waitFor } from '../support/helpers.js';

const exec = promisify(execFile);

let tmp: { dir: string; remove: () => Promise<void> };
const BASE = `ipfw${[...randomBytes(6)].map((b) => 'abcdefghijklmnopqrstuvwxyz0123456789'[b % 36]).join('')}-`;
const LAB = 'wait';
const FIP = '203.0.113.10';

interface Result {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

async function ipferry(args: string[], extra: Record<string, string> = {}): Promise<Result> {
  const env = { ...process.env, IPFERRY_LAB_PREFIX: BASE, IPFERRY_LAB_DIR: tmp.dir, ...extra };
  try {
    const { stdout, stderr } = await exec(BIN, args, { env, timeout: 120_000 });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code?: number; stdout?: string; stderr?: string };
    return { code: err.code ?? -1, stdout: err.stdout ?? '', stderr: err.stderr ?? '' };
  }
}

async function ok(args: string[], extra: Record<string, string> = {}): Promise<Result> {
  const r = await ipferry(args, extra);
  assert.equal(r.code, 0, `ipferry ${args.join(' ')} failed: ${r.stderr}`);
  return r;
}

async function answeredBy(backend: string): Promise<void> {
  await waitFor(
    `${backend} answering on ${FIP}`,
    async () => {
      const r = await ipferry(['lab', 'probe', LAB, 'client', FIP, '--json']);
      if (r.code !== 0 && r.code !== 1) return false;
      return (JSON.parse(r.stdout) as ProbeResult).attempts[0]?.answeredBy === backend;
    },
    20_000,
  );
}

before(async () => {
  await ensureBuilt();
  tmp = await tempDir('cli-wait');
});

after(async () => {
  if (tmp) await ipferry(['lab', 'down', '--all']);
  await cleanupLabs(BASE);
  await tmp?.remove();
});

describe('CLI writes wait for the gateway’s kernel (lab)', { timeout: 240_000 }, () => {
  it('fip move prints the measured time it was applied; a move the gateway refuses exits 1 with why', async () => {
    const up = await ok(['lab', 'up', 'lan', '--agents', '--name', LAB, '--json']);
    const gw = (JSON.parse(up.stdout) as LabState).agents.find((a) => a.node === 'gw');
    assert.ok(gw);
    const api = { IPFERRY_SERVER: gw.url, IPFERRY_TOKEN_FILE: gw.tokenFile };

    const allocated = await ok(['fip', 'allocate', '--pool', 'public', '--address', FIP], api);
    assert.match(allocated.stdout, /^applied on gw in \d+ ms$/m);
    await ok(['fip', 'associate', FIP, '--target', '10.0.0.11'], api);
    await answeredBy('be1');

    const moved = await ok(['fip', 'move', FIP, '--target', '10.0.0.12'], api);
    const line = /^applied on gw in (\d+) ms$/m.exec(moved.stdout);
    assert.ok(line, moved.stdout);
    console.log(`fip move: ${line[0]}`);
    const json = await ok(['fip', 'show', FIP, '--json'], api);
    assert.equal((JSON.parse(json.stdout) as { status: { state: string } }).status.state, 'ACTIVE');
    await answeredBy('be2');

    // The gateway's kernel now holds the FIP's address itself: realising a 1:1 FIP on it would
    // take the gateway's own traffic, so its agent reports the move ERROR with the reason.
    await exec('ip', [
      'netns',
      'exec',
      `${BASE}${LAB}-gw`,
      'ip',
      'addr',
      'add',
      `${FIP}/32`,
      'dev',
      'lo',
    ]);
    const refused = await ipferry(['fip', 'move', FIP, '--target', '10.0.0.11'], api);
    assert.equal(refused.code, 1, refused.stdout);
    console.log(`refused move: exit ${refused.code}, ${refused.stderr.split('\n')[0]}`);
    assert.doesNotMatch(refused.stdout, /applied on/);
    assert.match(
      refused.stderr,
      /^error IPF_E_NOT_APPLIED: The write \(revision \d+\) is stored but was not applied: gw: ERROR: 203\.0\.113\.10 is an address of the gateway itself/m,
    );

    // --json: the report under `applied`, the FIP's own keys as they were.
    const report = await ipferry(['fip', 'move', FIP, '--target', '10.0.0.12', '--json'], api);
    assert.equal(report.code, 1);
    const body = JSON.parse(report.stdout) as {
      address: string;
      applied: { outcome: string; agents: { node: string; state: string; message: string }[] };
    };
    assert.equal(body.address, FIP);
    assert.equal(body.applied.outcome, 'error');
    assert.equal(body.applied.agents[0]?.node, 'gw');

    // The audit trail followed as it grows: the next write shows up as one JSON line.
    const follower = spawn(BIN, ['events', '--follow', '--json', '--limit', '1'], {
      env: { ...process.env, ...api },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    try {
      let out = '';
      follower.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
      await waitFor('the latest event', () => Promise.resolve(out.includes('\n')), 20_000);
      await ok(['fip', 'disassociate', FIP, '--no-wait'], api);
      const line = await waitFor(
        'the disassociate followed',
        () => Promise.resolve(out.split('\n').find((l) => l.includes('/disassociate'))),
        20_000,
      );
      const followed = JSON.parse(line) as { who: string; method: string; status: number };
      assert.equal(followed.method, 'POST');
      assert.equal(followed.status, 200);
    } finally {
      if (follower.pid !== undefined) process.kill(follower.pid, 'SIGTERM');
    }

    const down = await ok(['lab', 'down', LAB]);
    assert.match(down.stdout, /removed/);
  });
});
