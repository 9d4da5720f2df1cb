/**
 * The cloudHome lab as an operator stands in it before moving any address: the gateway agent on
 * the cloud VM (`gw`, SQLite store, a tunnel endpoint), the pool `public` made with the CLI, and
 * home's agent joined with a join token made by `ipferry node join-token create`. Shared by the
 * suites that then drive the migration with the CLI; `stopCloudHomeHub` kills the agents by
 * pid, destroys the lab and checks that no namespace of it is left, also after a failed start.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { FipView } from '../../src/api/contract.js';
import type { ApiClient } from '../../src/client/api-client.js';
import { LabAgents } from '../../src/lab/agents.js';
import { listNamespaces } from '../../src/lab/netns.js';
import { CLOUD_HOME as H, cloudHome, type CloudHomeOptions } from '../../src/lab/scenarios.js';
import type { Lab } from '../../src/lab/topology.js';
import { BIN, ensureBuilt } from './build.js';
import { activeFip, tempDir } from './helpers.js';

const execFileP = promisify(execFile);

export const TUNNEL_PORTS = { gw: 51820, home: 51821 } as const;

/** Everything a start made, filled as it goes so `stopCloudHomeHub` removes what exists. */
export interface CloudHomeHub {
  readonly prefix: string;
  tmp?: { dir: string; remove: () => Promise<void> };
  lab?: Lab;
  /** The agents started (the VM's, home's): killed by pid in `stopCloudHomeHub`. */
  agents?: LabAgents;
  /** The gateway agent's API, and the CLI's environment for it. */
  api?: ApiClient;
  env?: Record<string, string>;
}

export interface CloudHomeHubOptions {
  readonly lab?: Omit<CloudHomeOptions, 'prefix'>;
  /** Flags both agents get (`--tunnel-driver tinc`, `--probe-seconds 1`). */
  readonly agentFlags?: readonly string[];
  /** Which family the tunnel's own packets travel over (the VM's endpoint); default 4. */
  readonly underlay?: 4 | 6;
  /** The pool's flags after `pool create public --gateway gw` (`--cidr …`, `--shared …`). */
  readonly pool: readonly string[];
  /** Servers and the like to start once the lab stands, before any agent. */
  readonly beforeAgents?: (lab: Lab) => Promise<void>;
}

export async function startCloudHomeHub(h: CloudHomeHub, o: CloudHomeHubOptions): Promise<void> {
  await ensureBuilt();
  h.tmp = await tempDir('cloudhome');
  h.lab = await cloudHome({ ...o.lab, prefix: h.prefix });
  await o.beforeAgents?.(h.lab);
  const agents = new LabAgents({ lab: h.lab, dir: h.tmp.dir, extra: [...(o.agentFlags ?? [])] });
  h.agents = agents;
  const gw = await agents.startHub('gw', {
    endpoint: {
      address: (o.underlay ?? 4) === 4 ? H.gw.uplink.v4 : H.gw.uplink.v6,
      port: TUNNEL_PORTS.gw,
    },
  });
  h.api = gw.api;
  h.env = {
    PATH: process.env.PATH ?? '',
    HOME: h.tmp.dir,
    IPFERRY_SERVER: gw.agent.url,
    IPFERRY_TOKEN_FILE: gw.agent.tokenFile,
  };
  await ipferryAt(h, ['pool', 'create', 'public', '--gateway', 'gw', ...o.pool]);
  // On the VM: a single-use join token for home, copied to the home server (a file, 0600).
  const token = (
    await ipferryAt(h, ['node', 'join-token', 'create', '--node', 'home', '--ttl', '10m'])
  ).trim();
  // home has no public endpoint for its tunnel: it calls the VM and keeps the path open.
  await agents.join('home', {
    api: h.api,
    token,
    extra: ['--tunnel-port', String(TUNNEL_PORTS.home)],
  });
}

/** Kills the agents by pid, destroys the lab, removes its sockets and files; checks netns. */
export async function stopCloudHomeHub(h: CloudHomeHub): Promise<void> {
  try {
    await (h.agents ? h.agents.teardown() : h.lab?.destroy());
  } finally {
    await h.api?.close();
    await h.tmp?.remove();
  }
  const left = (await listNamespaces()).filter((ns) => ns.startsWith(h.prefix));
  assert.deepEqual(left, [], 'namespaces of the lab left behind');
}

/** Runs the CLI against the gateway agent, as the operator on the VM would; its stdout. */
export async function ipferryAt(h: CloudHomeHub, args: readonly string[]): Promise<string> {
  assert.ok(h.env, 'the gateway agent is not running');
  // On failure the error's message carries the command's stderr (the agent's refusal).
  const { stdout } = await execFileP(BIN, args, { env: h.env, timeout: 30_000 });
  return stdout;
}

/** Waits until the gateway reports `address` ACTIVE at its current revision. */
export function activeAt(h: CloudHomeHub, address: string, timeoutMs = 30_000): Promise<FipView> {
  assert.ok(h.api, 'the gateway agent is not running');
  return activeFip(h.api, address, timeoutMs);
}
