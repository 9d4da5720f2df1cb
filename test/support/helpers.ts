/** Shared fixtures: a control plane on a real (in-memory or temp-file) SQLite store. */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ROOT } from '../../src/core/keys.js';
import { ControlPlane } from '../../src/service/control.js';
import { openStore } from '../../src/store/open.js';
import type { Store } from '../../src/store/store.js';
import type { FipView } from '../../src/api/contract.js';
import type { ApiClient } from '../../src/client/api-client.js';
import type { FastifyInstance } from 'fastify';
import { buildApi, type ApiOptions } from '../../src/api/app.js';
import { TokenSet } from '../../src/api/auth.js';
import {
  KINDS,
  type ElementKind,
  type IntentElement,
  type Payloads,
} from '../../src/intent/elements.js';

export const TOKEN_RW = 'rw-token-0123456789abcdef';
export const TOKEN_RO = 'ro-token-0123456789abcdef';
export const TOKEN_FILE_TEXT = `# test tokens\n${TOKEN_RW}\n${TOKEN_RO} ro\n`;

export async function controlPlane(
  nodes: string[] = ['gw1'],
): Promise<{ control: ControlPlane; store: Store; close: () => Promise<void> }> {
  const store = await openStore('sqlite::memory:');
  const control = new ControlPlane(store);
  for (const name of nodes) {
    await control.registerNode({
      name,
      addresses: [],
      reservedPorts: [
        { protocol: 'tcp', port: 22 },
        { protocol: 'tcp', port: 7447 },
      ],
    });
  }
  return { control, store, close: () => store.close() };
}

/**
 * Every key and value under ipferry's root, with their revisions: equal dumps mean nothing
 * changed. Not the store's revision: the audit trail (outside the root) records every request,
 * refused ones too.
 */
export async function dumpStore(store: Store): Promise<string> {
  const { kvs } = await store.list(ROOT);
  return JSON.stringify({ kvs });
}

export async function tempDir(
  prefix: string,
): Promise<{ dir: string; remove: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), `ipferry-${prefix}-`));
  return { dir, remove: () => rm(dir, { recursive: true, force: true }) };
}

/** Polls `probe` until it returns a truthy value, at most `timeoutMs`; fails with `what`. */
export async function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined | false>,
  timeoutMs = 5000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(20);
  }
}

/**
 * Waits until the gateway reports `address` ACTIVE at its record's current revision. Through a
 * tunnel, ACTIVE means the path was measured: a new tunnel's first handshake comes first, which
 * WireGuard may retry only after 5 s when both ends start at once; hence 15 s by default.
 */
export function activeFip(
  api: Pick<ApiClient, 'getFip'>,
  address: string,
  timeoutMs = 15_000,
): Promise<FipView> {
  return waitFor(
    `${address} ACTIVE`,
    async () => {
      const f = await api.getFip(address);
      return f.status.state === 'ACTIVE' && f.status.revision === f.revision ? f : undefined;
    },
    timeoutMs,
  );
}

/**
 * An element as `element()` would build it, without its checks: what a store or a kernel could
 * still hand a driver, so that tests can show the driver's own refusal (its second wall).
 */
export function uncheckedElement<K extends ElementKind>(
  kind: K,
  data: Payloads[K],
  owner: string,
): IntentElement {
  const codec = KINDS[kind] as unknown as {
    encode: (d: Payloads[K]) => { key: string; value: string };
  };
  return { kind, ...codec.encode(data), owner };
}

/**
 * The agent's API over `control` with the test tokens (TOKEN_FILE_TEXT) and an agent that has
 * no plan and no neighbours unless `agent` gives them.
 */
export function testApi(
  control: ControlPlane,
  agent: Partial<ApiOptions['agent']> = {},
): Promise<FastifyInstance> {
  return buildApi({
    control,
    tokens: TokenSet.parse(TOKEN_FILE_TEXT, 'test'),
    agent: {
      node: 'gw1',
      version: 'test',
      dataplane: () => ({ kind: 'fake' }),
      plan: () => Promise.reject(new Error('no plan in this test')),
      neighbours: () => Promise.resolve([]),
      ...agent,
    },
  });
}
