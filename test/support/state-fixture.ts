/**
 * The state every test/unit/state-*.test.ts starts from: a gateway's pools (nat, ports and an
 * onlink pool for routed), FIPs associated in each mode with forwards, a joined node's
 * credential, an allocate's client token, and runtime records (a liveness key under a lease, a
 * FIP status, a health report) that an export must leave out.
 *
 * Also writes the committed fixtures: `node --import tsx test/support/state-fixture.ts --write`
 * makes test/support/fixtures/state-v1.db (a store file of schema 1) and state-export-v1.json
 * (an export of format 1) with this version, so a later version's tests open what this one wrote.
 */
import { rm, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { keys, ROOT } from '../../src/core/keys.js';
import { ControlPlane } from '../../src/service/control.js';
import { openStore } from '../../src/store/open.js';
import type { Store } from '../../src/store/store.js';

export const FIXTURES = new URL('./fixtures/', import.meta.url);
export const STORE_FIXTURE = fileURLToPath(new URL('state-v1.db', FIXTURES));
export const EXPORT_FIXTURE = fileURLToPath(new URL('state-export-v1.json', FIXTURES));

export const CREDENTIAL_SHA256 = 'ab'.repeat(32);

/** Writes the desired and runtime state into `store` through the control plane, as the API does. */
export async function writeGatewayState(store: Store): Promise<void> {
  const control = new ControlPlane(store);
  await control.registerNode({
    name: 'gw',
    addresses: ['192.0.2.1'],
    reservedPorts: [{ protocol: 'tcp', port: 22 }],
  });
  await control.registerNode({ name: 'home', addresses: [], reservedPorts: [] });
  await control.createPool({ name: 'nat', gateway: 'gw', entries: ['203.0.113.8/30'] });
  await control.createPool({
    name: 'routed',
    gateway: 'gw',
    entries: ['198.51.100.16/30'],
  });
  const nat = await control.allocate({ pool: 'nat', address: '203.0.113.9', clientToken: 'tok-1' });
  await control.associate(nat.address, { target: '10.0.0.5', mode: 'nat' });
  const ports = await control.allocate({ pool: 'nat', address: '203.0.113.10' });
  await control.associate(ports.address, { target: '10.0.0.6', mode: 'ports' });
  await control.addForward(ports.address, {
    protocol: 'tcp',
    port: '8080',
    target: '10.0.0.6',
    targetPort: 80,
  });
  await control.addForward(ports.address, {
    protocol: 'udp',
    port: '5000-5002',
    target: '10.0.0.7',
  });
  const routed = await control.allocate({ pool: 'routed', address: '198.51.100.17' });
  await control.associate(routed.address, {
    target: '198.51.100.17',
    mode: 'routed',
    node: 'home',
  });
  // What joining leaves behind (api/join.ts): the hash of the node's credential.
  await store.txn({
    compare: [],
    success: [
      {
        type: 'put',
        key: keys.nodeCredential('home'),
        value: JSON.stringify({ sha256: CREDENTIAL_SHA256 }),
      },
    ],
  });
  // Runtime: liveness under a lease, a status, a health report, an unused join token.
  const lease = await store.grantLease(60);
  await store.txn({
    compare: [],
    success: [
      { type: 'put', key: keys.nodeAlive('gw'), value: '{}', lease },
      { type: 'put', key: keys.joinToken('cd'.repeat(32)), value: '{}', lease },
      {
        type: 'put',
        key: keys.status(nat.address),
        value: JSON.stringify({ address: nat.address, state: 'ACTIVE', node: 'gw', revision: 1 }),
      },
      { type: 'put', key: keys.nodeHealth('gw'), value: '{}' },
    ],
  });
}

async function writeFixtures(): Promise<void> {
  const { buildStateExport, renderStateDocument } = await import('../../src/service/state.js');
  const { VERSION } = await import('../../src/version.js');
  for (const suffix of ['', '-wal', '-shm']) await rm(`${STORE_FIXTURE}${suffix}`, { force: true });
  const store = await openStore(`sqlite:${STORE_FIXTURE}`);
  await writeGatewayState(store);
  const snapshot = await store.list(ROOT);
  // Closing checkpoints the WAL into the file: the fixture is one file.
  await store.close();
  const { document } = buildStateExport({ kind: 'sqlite', snapshot }, VERSION, new Date(0));
  await writeFile(EXPORT_FIXTURE, renderStateDocument(document), { mode: 0o600 });
}

if (process.argv.includes('--write')) await writeFixtures();
