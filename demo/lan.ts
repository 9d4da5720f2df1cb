/**
 * Part 1: floating IPs on a gateway, delivered to its LAN by 1:1 NAT. The `gatewayLan()` lab
 * (an outside client, the provider's router, the gateway, two LAN backends and a LAN client),
 * one agent for gw, and a FIP allocated, associated, probed, moved under load, port-forwarded,
 * in IPv6, and released.
 */
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../src/lab/ports.js';
import { startEchoServer } from '../src/lab/probe.js';
import { GATEWAY_LAN as L, gatewayLan } from '../src/lab/scenarios.js';
import { Lab } from '../src/lab/topology.js';
import { check } from './check.js';
import { field } from './cli.js';
import { type Demo, FIP, FIP6 } from './context.js';
import { measureMove, reportMove } from './move.js';
import { mapBlock, nftTable, ruleLines, waitNotInKernel } from './nft.js';
import { part, type Step } from './steps.js';

/** The gateway's own uplink address, shared: port forwards only, its own services stay. */
const SHARED = L.gw.uplink.v4;
const PRESERVED = 'client address preserved';

async function buildLab(d: Demo): Promise<void> {
  check(process.getuid?.() === 0, 'the lab needs root (it creates network namespaces)');
  d.lab = await Lab.create(gatewayLan({ prefix: d.prefix }));
  const l = d.lab;
  [d.clientServer] = await Promise.all([
    startEchoServer(l, 'client', { tcp: [80] }),
    startEchoServer(l, 'be1', { tcp: [80], udp: [5353] }),
    startEchoServer(l, 'be2', { tcp: [80, 25], udp: [5353] }),
    startEchoServer(l, 'gw', { tcp: [2222] }),
  ]);
  d.ok(`network namespaces ${l.hosts.map((h) => l.ns(h)).join(', ')}`);
  d.ok(`outside: client ${L.client.v4} and ${L.client.v6}`);
  d.ok(`the provider routes ${L.pool.v4} and ${L.pool.v6} to gw's uplink ${L.gw.uplink.v4}`);
  d.ok(
    `gw's LAN ${L.lanPrefix.v4}: gw ${L.gw.lan.v4}, be1 ${L.be1.v4}, be2 ${L.be2.v4}, lanc ${L.lanc.v4}`,
  );
  d.ok('echo servers, which answer "<name> <source address they saw>":');
  d.note('be1: tcp/80 udp/5353; be2: tcp/80 tcp/25 udp/5353; client: tcp/80 (for outbound)');
  d.note("gw: tcp/2222, the gateway's own service on its own address");
  await d.silent('before ipferry, the pool reaches gw but goes nowhere', [
    ['client', 'tcp', FIP, 80],
  ]);
}

async function startAgent(d: Demo): Promise<void> {
  const workDir = await mkdtemp(join(tmpdir(), 'ipferry-demo-'));
  d.workDir = workDir;
  const port = await freePort();
  const server = `http://127.0.0.1:${port}`;
  const tokenFile = join(workDir, 'api-token');
  d.env = { ...process.env, IPFERRY_SERVER: server, IPFERRY_TOKEN_FILE: tokenFile };
  delete d.env.IPFERRY_TOKEN;
  delete d.env.IPFERRY_CA_FILE;
  const options = {
    node: 'gw',
    netns: d.live().ns('gw'),
    store: `sqlite:${join(workDir, 'ipferry.db')}`,
    port,
    tokenFile,
    stateDir: join(workDir, 'state'),
    resyncSeconds: 2,
  };
  const proc = await d.startAgent('gw', options, join(workDir, 'agent.log'));
  d.ok(`agent pid ${proc.pid}, API on ${server}`);
  d.note(`the CLI finds it by IPFERRY_SERVER=${server} IPFERRY_TOKEN_FILE=${tokenFile}`);
  await d.ipferry(['status']);
}

async function createPool(d: Demo): Promise<void> {
  await d.ipferry([
    ...['pool', 'create', 'public', '--gateway', 'gw'],
    ...['--cidr', '203.0.113.0/28', '--cidr', '2001:db8:f::/64', '--shared', SHARED],
  ]);
}

async function allocate(d: Demo): Promise<void> {
  const args = ['fip', 'allocate', '--address', FIP, '--client-token', 'demo-web'];
  const first = await d.ipferry(args);
  check(field(first.stdout, 'address') === FIP, `allocated ${field(first.stdout, 'address')}`);
  const again = await d.ipferry(args, { comment: 'the same request again, as a retry would' });
  check(field(again.stdout, 'address') === FIP, 'the replay returned another address');
  const list = await d.ipferry(['fip', 'list']);
  const rows = list.stdout
    .split('\n')
    .slice(1)
    .filter((l) => l.trim() !== ''); // minus header
  check(rows.length === 1, `${rows.length} FIPs allocated, expected 1`);
  d.ok(`the replay returned the same ${FIP} and took no second address`);
}

async function associate(d: Demo): Promise<void> {
  await d.ipferry(['fip', 'associate', FIP, '--target', L.be1.v4]);
  await d.waitActive(FIP);
}

async function realPackets(d: Demo): Promise<void> {
  await d.probe(['client', 'tcp', FIP, 80], { by: 'be1', sees: L.client.v4, why: PRESERVED });
  await d.probe(['client', 'udp', FIP, 5353], { by: 'be1', sees: L.client.v4, why: PRESERVED });
  await d.outbound('be1', FIP, "be1's own connections leave as its FIP");
  await d.probe(['lanc', 'tcp', FIP, 80], {
    by: 'be1',
    sees: L.gw.lan.v4,
    why: "hairpin: masqueraded to gw's LAN address, so be1's answer goes back through gw",
  });
}

async function kernelState(d: Demo): Promise<void> {
  const plan = await d.ipferry(['plan']);
  check(/nothing to change/.test(plan.stdout), 'the plan is not empty');
  const table = await nftTable(d.live());
  d.command(
    `ip netns exec ${d.live().ns('gw')} nft list table inet ipferry`,
    'excerpt: maps dnat4 and snat4',
  );
  for (const name of ['dnat4', 'snat4']) {
    const block = mapBlock(table, name);
    check(block, `no map ${name} in table inet ipferry`);
    d.say(block.replace(/\t/g, '  '));
  }
  check(mapBlock(table, 'dnat4')?.includes(`${FIP} : ${L.be1.v4}`), `dnat4 lacks ${FIP}`);
  const rules = ruleLines(table);
  const naming = rules.filter((r) => r.includes(FIP) || r.includes(L.be1.v4));
  check(naming.length === 0, `rules name the FIP or its target: ${naming.join('; ')}`);
  d.ok(
    `${FIP} is an element of dnat4 (FIP → target) and snat4 (target → FIP); none of the table's ${rules.length} rules names an address`,
  );
}

async function moveUnderLoad(d: Demo): Promise<void> {
  const rulesBefore = ruleLines(await nftTable(d.live(), true));
  const probes = { probeTimeoutMs: 1000, maxInFlight: 20, settleMs: 8000 };
  const m = await measureMove(d.live(), { address: FIP, from: 'be1', to: 'be2', ...probes }, () =>
    // Timed against the API's answer: the move does not wait for the gateway's report.
    d.ipferry(['fip', 'move', FIP, '--target', L.be2.v4, '--no-wait']),
  );
  d.move = m;
  reportMove(d, m);
  check(m.failed === 0, `${m.failed} probes failed during the move`);
  await d.waitActive(FIP);
  await d.probe(['client', 'tcp', FIP, 80], { by: 'be2', sees: L.client.v4, why: PRESERVED });
  await d.outbound('be2', FIP, "be2's own connections leave as the FIP now");
  await d.outbound('be1', L.be1.v4, 'be1 leaves with its own address again');
  const table = await nftTable(d.live(), true);
  check(ruleLines(table).join('\n') === rulesBefore.join('\n'), 'the move changed rules');
  check(mapBlock(table, 'dnat4')?.includes(`${FIP} : ${L.be2.v4}`), `dnat4 lacks ${FIP}`);
  d.ok(
    `the move changed map elements only (dnat4 now holds ${FIP} : ${L.be2.v4}); the ${rulesBefore.length} rules are as they were`,
  );
}

async function portForwards(d: Demo): Promise<void> {
  const forward = ['forward', 'add', SHARED, '--proto', 'tcp', '--port'];
  await d.ipferry(['fip', 'allocate', '--address', SHARED]);
  await d.ipferry([...forward, '25', '--target', L.be2.v4]);
  await d.waitActive(SHARED);
  await d.probe(['client', 'tcp', SHARED, 25], {
    by: 'be2',
    sees: L.client.v4,
    why: 'forwarded to be2, client address preserved',
  });
  await d.probe(['client', 'tcp', SHARED, 2222], {
    by: 'gw',
    sees: L.client.v4,
    why: "the gateway's own service on the same address still answers itself",
  });
  const refused = await d.ipferry([...forward, '22', '--target', L.be2.v4], { expectFail: true });
  check(/IPF_E_PORT_RESERVED/.test(refused.stderr), 'refused for another reason');
  d.ok("refused: tcp 22 is the gateway's own (SSH), reserved on its shared address");
  await d.ipferry(['forward', 'list', SHARED]);
}

async function ipv6(d: Demo): Promise<void> {
  await d.ipferry(['fip', 'allocate', '--address', FIP6]);
  await d.ipferry(['fip', 'associate', FIP6, '--target', L.be1.v6, '--mode', 'nat']);
  await d.waitActive(FIP6);
  await d.probe(['client', 'tcp', FIP6, 80], { by: 'be1', sees: L.client.v6, why: PRESERVED });
}

async function release(d: Demo): Promise<void> {
  const refused = await d.ipferry(['fip', 'release', FIP], { expectFail: true });
  check(/IPF_E_FIP_STILL_ASSOCIATED/.test(refused.stderr), 'refused for another reason');
  d.ok('refused: a FIP still forwarding traffic is not released by accident');
  for (const address of [FIP, FIP6]) {
    await d.ipferry(['fip', 'disassociate', address]);
    await d.ipferry(['fip', 'release', address]);
  }
  await d.ipferry(['fip', 'release', SHARED, '--force'], {
    comment: '--force: also removes its port forwards',
  });
  await d.ipferry(['fip', 'list']);
  await waitNotInKernel(d.live(), [`${FIP} `, `${FIP6} `, `${SHARED} `]);
  d.ok("gw's kernel no longer holds any of them");
  await d.silent('released', [
    ['client', 'tcp', FIP, 80],
    ['client', 'udp', FIP, 5353],
    ['client', 'tcp', FIP6, 80],
    ['client', 'tcp', SHARED, 25],
  ]);
  await d.probe(['client', 'tcp', SHARED, 2222], {
    by: 'gw',
    sees: L.client.v4,
    why: "the gateway's own service is untouched",
  });
  const plan = await d.ipferry(['plan']);
  check(/nothing to change/.test(plan.stdout), 'the plan is not empty');
}

export const LAN_STEPS: readonly Step[] = part(
  'Part 1: floating IPs on a gateway, delivered to its LAN by 1:1 NAT',
  [
    {
      title: 'build the lab: client — up (the provider) — gw (the gateway) — be1, be2, lanc',
      run: buildLab,
    },
    {
      title: 'start the agent for node gw, its Linux dataplane acting in the gw namespace',
      run: startAgent,
    },
    {
      title: "a pool of public addresses homed on gw, and the gateway's own shared address",
      run: createPool,
    },
    {
      title: `allocate ${FIP}, then replay the request with the same client token`,
      run: allocate,
    },
    { title: `associate ${FIP} 1:1 (nat) with be1 ${L.be1.v4}`, run: associate },
    {
      title: 'real packets: in from outside, out of be1, and from the LAN (hairpin)',
      run: realPackets,
    },
    {
      title: 'the kernel holds what the store asks for; FIPs are map elements, not rules',
      run: kernelState,
    },
    {
      title: `move ${FIP} to be2 ${L.be2.v4} while the client probes it every 10 ms`,
      run: moveUnderLoad,
    },
    { title: `port forwards on the gateway's own address ${SHARED}`, run: portForwards },
    {
      title: `IPv6: allocate ${FIP6} and associate it (NAT66) with be1 ${L.be1.v6}`,
      run: ipv6,
    },
    {
      title: 'release: refused while associated, then disassociate and release everything',
      run: release,
    },
  ],
);
