/**
 * The lab the tunnel conformance suite (test/tunnel-conformance.ts) runs a real driver in: host
 * a (underlay 100.64.0.1/30) and host b (100.64.0.2/30) joined by one veth, a TCP echo server on
 * each, and a state directory per host. One place for what the WireGuard and tinc fixtures
 * share (the lab, the probes, the drift, what a tunnel leaves behind, the cleanup), so each
 * states only what is its own driver's.
 */
import { access, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { TunnelDriverKind } from '../../src/core/tunnel.js';
import { run } from '../../src/dataplane/exec.js';
import type { TunnelDriver } from '../../src/dataplane/tunnel/driver.js';
import { echoProbe, ping, startEchoServer } from '../../src/lab/probe.js';
import { Lab } from '../../src/lab/topology.js';
import { tempDir } from './helpers.js';
import type { Side, TunnelCapabilities, TunnelFixture } from './tunnel-conformance.js';

const ECHO_PORT = 7000;

export async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

/** What one real-kernel driver brings to the two-host lab. */
export interface TunnelLabDriver<D extends TunnelDriver> {
  readonly kind: TunnelDriverKind;
  readonly can: TunnelCapabilities;
  peerKey(): Promise<string>;
  /** The driver of lab host `side`, with `stateDir` as its own state. */
  driver(lab: Lab, side: Side, stateDir: string): D;
  /** The driver's directory in a host's state dir: its files of a tunnel start with the name. */
  readonly stateSubdir: string;
  /** What the driver leaves of tunnel `name` besides its link and files: daemons, sockets. */
  leftovers(side: Side, name: string, drivers: Readonly<Record<Side, D>>): Promise<string[]>;
  /** The lab exists (and its prefix salts the run's interface names): for the final checks. */
  onLab?(lab: Lab, stateDir: string): void;
  /** After the lab is destroyed (its daemons with it), before the state goes: their sockets. */
  afterDestroy?(): Promise<void>;
}

/** Builds the two-host lab for `d`'s driver; the fixture's cleanup removes all of it. */
export async function tunnelLabFixture<D extends TunnelDriver>(
  tempPrefix: string,
  d: TunnelLabDriver<D>,
): Promise<TunnelFixture> {
  const state = await tempDir(tempPrefix);
  let lab: Lab | undefined;
  const cleanup = async (): Promise<void> => {
    await lab?.destroy();
    await d.afterDestroy?.();
    await state.remove();
  };
  try {
    lab = await Lab.create({
      hosts: [{ name: 'a' }, { name: 'b' }],
      links: [
        {
          a: { host: 'a', ifname: 'a0', addresses: ['100.64.0.1/30'] },
          b: { host: 'b', ifname: 'b0', addresses: ['100.64.0.2/30'] },
        },
      ],
    });
    const theLab = lab;
    d.onLab?.(lab, state.dir);
    const drivers = {
      a: d.driver(lab, 'a', join(state.dir, 'a')),
      b: d.driver(lab, 'b', join(state.dir, 'b')),
    };
    await Promise.all([
      startEchoServer(lab, 'a', { tcp: [ECHO_PORT] }),
      startEchoServer(lab, 'b', { tcp: [ECHO_PORT] }),
    ]);
    return {
      kind: d.kind,
      can: d.can,
      peerKey: () => d.peerKey(),
      drivers,
      underlay: { a: '100.64.0.1', b: '100.64.0.2' },
      salt: lab.prefix,
      ping: (from, address) => ping(theLab, from, address, 1000),
      tcpEcho: (from, address) => echoProbe(theLab, from, 'tcp', address, ECHO_PORT),
      drift: async (side, name) => {
        await run('ip', ['-n', theLab.ns(side), 'link', 'set', 'dev', name, 'mtu', '1300', 'down']);
      },
      leftovers: async (side, name) => {
        const left: string[] = [];
        const link = await run('ip', ['-n', theLab.ns(side), '-j', 'link', 'show', 'dev', name], {
          tolerate: () => true,
        });
        if (link.stdout.includes(name)) left.push(`link ${name}`);
        left.push(...(await d.leftovers(side, name, drivers)));
        const files = await readdir(join(state.dir, side, d.stateSubdir)).catch(() => []);
        left.push(...files.filter((f) => f.startsWith(name)).map((f) => `file ${f}`));
        return left;
      },
      cleanup,
    };
  } catch (error) {
    await cleanup();
    throw error;
  }
}
