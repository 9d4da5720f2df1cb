/**
 * Part 2: a cloud VM's floating IP served from a home server through a WireGuard tunnel, then
 * the server moves. The `cloudHome({ homes: 2 })` lab (a small cloud VM as the public router of
 * two home servers behind their own ISP), the VM's agent as the hub, home's agent joined with a
 * join token, the FIP routed to home, then moved to home2 under a probe every 10 ms.
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ROUTE_PROTO, ROUTE_TABLE } from '../src/core/names.js';
import { writeSecretFile } from '../src/lab/agents.js';
import { freePort } from '../src/lab/ports.js';
import { echoProbe, startEchoServer } from '../src/lab/probe.js';
import { CLOUD_HOME as H, cloudHome } from '../src/lab/scenarios.js';
import { wireguardDaemons } from '../src/lab/wireguard.js';
import { check } from './check.js';
import { runCli } from './cli.js';
import { type Demo, FIP } from './context.js';
import { measureMove, reportMove } from './move.js';
import { part, type Step } from './steps.js';

/** The UDP ports of the tunnel ends in the second lab (each in its own namespace). */
const GW_TUNNEL_PORT = 51820;
const HOME_TUNNEL_PORTS = { home: 51821, home2: 51822 } as const;
type Home = keyof typeof HOME_TUNNEL_PORTS;

/** The tunnel ends of the second lab: `ip -br address show`, filtered to ipferry's `ipf…`. */
async function tunnelAddresses(d: Demo, host: 'gw' | Home): Promise<string[]> {
  const { stdout } = await d.second().exec(host, ['ip', '-br', 'address', 'show']);
  return stdout.split('\n').filter((l) => l.startsWith('ipf'));
}

/** Prints a home server's tunnel end (`ip -br address show | grep ^ipf`) and returns it. */
async function showTunnel(d: Demo, host: Home, comment = ''): Promise<string[]> {
  d.command(`ip netns exec ${d.second().ns(host)} ip -br address show | grep ^ipf`, comment);
  const addresses = await tunnelAddresses(d, host);
  if (addresses.length > 0) d.say(addresses.join('\n'));
  else d.note(`(nothing: with no FIP to serve, ${host} has no tunnel interface)`);
  return addresses;
}

function holds(addresses: readonly string[]): boolean {
  return addresses.some((l) => l.split(/\s+/).includes(`${FIP}/32`));
}

/** The second lab's own side of a host: its echo server, on its own address via its ISP. */
function ownAddress(d: Demo, host: Home, why: string): Promise<unknown> {
  return d.probe(
    ['client', 'tcp', H[host].v4, 80],
    { by: host, sees: H.client.v4, why },
    d.second(),
  );
}

/** A home server's own connection out to the client: it leaves through its ISP. */
function ownOutbound(d: Demo, host: Home): Promise<void> {
  const why = `${host}'s own connections still leave through its ISP`;
  return d.outbound(host, H[host].v4, why, { lab: d.second(), server: d.homeClientServer });
}

// ---------------------------------------------------------------------------------------------
// Joining a home server to the hub

/**
 * A join token made with the CLI for `node` (a secret: kept in a 0600 file, printed shortened);
 * resolves with the file.
 */
async function joinToken(d: Demo, node: Home): Promise<string> {
  const tokenFile = join(d.cloudDir, `join-token-${node}`);
  const args = ['node', 'join-token', 'create', '--node', node, '--ttl', '10m'];
  d.command(`ipferry ${args.join(' ')} >${tokenFile}`);
  const created = await d.ipferry(args, { quiet: true });
  const token = created.stdout.trim();
  check(token !== '' && !token.includes('\n'), 'join-token create printed no single token');
  await writeSecretFile(tokenFile, `${token}\n`);
  d.say(created.stderr);
  d.ok(`${tokenFile} (mode 0600) holds ${token.slice(0, 16)}… (a secret: shortened here)`);
  return tokenFile;
}

/** Waits (bounded) until the hub lists `node` as alive with its tunnel key registered. */
async function waitRegistered(d: Demo, node: Home): Promise<void> {
  const started = Date.now();
  for (;;) {
    const shown = await runCli(['node', 'show', node, '--json'], d.env);
    const record =
      shown.code === 0 ? (JSON.parse(shown.stdout) as { alive?: boolean; publicKey?: string }) : {};
    if (record.alive === true && record.publicKey) break;
    check(
      Date.now() - started < 15_000,
      `${node} did not register with its tunnel key within 15 s`,
    );
    await sleep(200);
  }
  const list = await d.ipferry(['node', 'list']);
  check(new RegExp(`^${node}\\s+yes\\b`, 'm').test(list.stdout), `${node} is not listed as alive`);
}

/**
 * Joins a home server to the hub as an operator would: a join token made with the CLI, the
 * node's agent started on the hub's store with it, then waited for until it is registered.
 */
async function joinHome(d: Demo, node: Home): Promise<void> {
  const tokenFile = await joinToken(d, node);
  const file = (name: string): string => join(d.cloudDir, `${node}-${name}`);
  const options = {
    node,
    netns: d.second().ns(node),
    store: d.hub,
    port: await freePort(),
    tokenFile: file('api-token'),
    stateDir: file('state'),
    resyncSeconds: 2,
    extra: [
      ...['--join-token-file', tokenFile, '--credential-file', file('credential')],
      ...['--tunnel-port', String(HOME_TUNNEL_PORTS[node])],
    ],
  };
  const proc = await d.startAgent(
    node,
    options,
    join(d.cloudDir, `${node}.log`),
    `no --endpoint: behind its home router, ${node} calls gw and keeps the path open`,
  );
  d.ok(`${node} agent pid ${proc.pid}: it follows gw's store over ${d.hub}`);
  await waitRegistered(d, node);
}

// ---------------------------------------------------------------------------------------------
// The steps

async function buildLab(d: Demo): Promise<void> {
  d.homeLab = await cloudHome({ prefix: d.homePrefix, homes: 2 });
  const h = d.homeLab;
  [d.homeClientServer] = await Promise.all(
    ['client', 'home', 'home2'].map((host) => startEchoServer(h, host, { tcp: [80] })),
  );
  d.ok(`network namespaces ${h.hosts.map((n) => h.ns(n)).join(', ')}`);
  d.ok(`the internet routes ${H.pool.v4} to the cloud VM gw ${H.gw.uplink.v4}`);
  d.ok(
    `home ${H.home.v4} has its own address and default route from its ISP (isp, customers ${H.ispCustomers.v4})`,
  );
  d.ok(
    `home2 ${H.home2.v4}, where the service will move, sits behind the same ISP with its own address`,
  );
  d.ok(
    `isp validates sources (BCP 38): it drops what home and home2 send from outside ${H.ispCustomers.v4}`,
  );
  d.note('echo servers: home, home2 tcp/80 (on all their addresses); client tcp/80 (for outbound)');
  for (const host of ['home', 'home2'] as const) {
    await ownAddress(d, host, `${host}'s own address, through its own ISP`);
  }
  await d.silent(
    'before ipferry, the pool reaches gw but goes nowhere',
    [['client', 'tcp', FIP, 80]],
    h,
  );
}

async function startHub(d: Demo): Promise<void> {
  check(d.workDir, 'no work directory');
  d.cloudDir = join(d.workDir, 'cloud');
  await mkdir(d.cloudDir, { mode: 0o700 });
  const port = await freePort();
  d.hub = `http://127.0.0.1:${port}`;
  const tokenFile = join(d.cloudDir, 'gw-api-token');
  d.env = { ...d.env, IPFERRY_SERVER: d.hub, IPFERRY_TOKEN_FILE: tokenFile };
  const options = {
    node: 'gw',
    netns: d.second().ns('gw'),
    store: `sqlite:${join(d.cloudDir, 'gw.db')}`,
    port,
    tokenFile,
    stateDir: join(d.cloudDir, 'gw-state'),
    resyncSeconds: 2,
    extra: [
      ...['--endpoint', `${H.gw.uplink.v4}:${GW_TUNNEL_PORT}`],
      ...['--tunnel-port', String(GW_TUNNEL_PORT)],
    ],
  };
  const proc = await d.startAgent('cloud gw', options, join(d.cloudDir, 'gw.log'));
  d.ok(`agent pid ${proc.pid}, API on ${d.hub}, its own store: the hub other nodes follow`);
  d.note(`the CLI talks to this agent from now on: IPFERRY_SERVER=${d.hub}`);
}

async function joinFirstHome(d: Demo): Promise<void> {
  await joinHome(d, 'home');
  d.ok(
    'home joined: registered and alive; only its WireGuard public key is in the store, its private key never left home',
  );
}

async function routeToHome(d: Demo): Promise<void> {
  await d.ipferry(['pool', 'create', 'public', '--gateway', 'gw', '--cidr', '203.0.113.0/28']);
  await d.ipferry(['fip', 'allocate', '--address', FIP]);
  await d.ipferry([
    ...['fip', 'associate', FIP],
    ...['--mode', 'routed', '--node', 'home', '--target', FIP],
  ]);
  await d.waitActive(FIP);
}

/**
 * home applies the association when it sees it in gw's store, then the tunnel's first
 * handshake: the first answer may take a moment after ACTIVE.
 */
async function waitThroughTunnel(d: Demo): Promise<void> {
  const started = Date.now();
  while ((await echoProbe(d.second(), 'client', 'tcp', FIP, 80, 1500)) === undefined) {
    check(Date.now() - started < 15_000, `no answer from ${FIP} through the tunnel within 15 s`);
    await sleep(100);
  }
}

async function throughTheTunnel(d: Demo): Promise<void> {
  await waitThroughTunnel(d);
  await d.probe(
    ['client', 'tcp', FIP, 80],
    { by: 'home', sees: H.client.v4, why: 'routed through the tunnel, client address preserved' },
    d.second(),
  );
  await ownAddress(d, 'home', "home's own address still works, through its own ISP");
  await ownOutbound(d, 'home');
  d.ok(
    `isp drops packets from home with a 203.0.113.x source (BCP 38): home's answers from ${FIP} must have gone back through the tunnel`,
  );
  await showPolicyRouting(d);
  const daemons = wireguardDaemons(d.second());
  d.sawDaemons(daemons);
  if (daemons.length > 0) {
    const where = daemons.map((w) => `pid ${w.pid} serves ${w.name} (${w.ns})`).join(', ');
    d.note(`userspace WireGuard (wireguard-go, started detached by the agents): ${where}`);
  }
}

/** home's tunnel end, rule and routing table for the FIP, and gw's route into the tunnel. */
async function showPolicyRouting(d: Demo): Promise<void> {
  const h = d.second();
  const proto = `proto ${ROUTE_PROTO}`;
  const addresses = await showTunnel(d, 'home', "home's tunnel end");
  check(holds(addresses), `home's tunnel interface does not hold ${FIP}`);
  d.command(`ip netns exec ${h.ns('home')} ip rule show | grep '${proto}'`);
  const rules = (await h.exec('home', ['ip', 'rule', 'show'])).stdout
    .split('\n')
    .filter((l) => l.includes(proto))
    .map((l) => l.replace(/\t/g, ' '));
  d.say(rules.join('\n'));
  check(
    rules.some((l) => l.includes(`from ${FIP} lookup ${ROUTE_TABLE}`)),
    `home has no rule from ${FIP} lookup ${ROUTE_TABLE}`,
  );
  d.command(`ip netns exec ${h.ns('home')} ip route show table ${ROUTE_TABLE}`);
  d.say((await h.exec('home', ['ip', 'route', 'show', 'table', String(ROUTE_TABLE)])).stdout);
  d.command(`ip netns exec ${h.ns('gw')} ip route show ${proto}`, "the cloud VM's side");
  d.say((await h.exec('gw', ['ip', 'route', 'show', 'proto', String(ROUTE_PROTO)])).stdout);
  d.ok(
    `policy routing on home: it holds ${FIP} on its tunnel interface; what it sends from ${FIP} looks up table ${ROUTE_TABLE}, whose default route is the tunnel; everything else keeps its own default route via isp`,
  );
  d.note(`ipferry marks its routes and rules with protocol ${ROUTE_PROTO}; it touches no others`);
}

async function joinSecondHome(d: Demo): Promise<void> {
  await joinHome(d, 'home2');
  const addresses = await showTunnel(d, 'home2', 'before the move');
  check(!holds(addresses), `home2 holds ${FIP} before the move`);
  d.ok(`home2 is ready: it will build its tunnel to gw when it has ${FIP} to serve`);
}

/** Waits (bounded) until `host` no longer holds the FIP on a tunnel interface. */
async function waitReleased(d: Demo, host: Home): Promise<void> {
  const started = Date.now();
  while ((await tunnelAddresses(d, host)).some((l) => l.includes(`${FIP}/`))) {
    check(Date.now() - started < 10_000, `${host} still holds ${FIP} after 10 s`);
    await sleep(100);
  }
}

async function moveToHome2(d: Demo): Promise<void> {
  // 500 ms per probe: one whose SYN is lost while home2's tunnel comes up counts as
  // unanswered rather than as a late answer from TCP's retransmission a second later.
  const probes = { probeTimeoutMs: 500, maxInFlight: 60, settleMs: 15_000 };
  const m = await measureMove(
    d.second(),
    { address: FIP, from: 'home', to: 'home2', ...probes },
    // Timed against the API's answer: the move does not wait for the gateway's report.
    () => d.ipferry(['fip', 'move', FIP, '--node', 'home2', '--target', FIP, '--no-wait']),
  );
  d.remoteMove = m;
  reportMove(d, m);
  d.note(
    'the interruption includes home2 building its tunnel and its first handshake with gw: home2 had none before',
  );
  await d.waitActive(FIP);
  await d.probe(
    ['client', 'tcp', FIP, 80],
    {
      by: 'home2',
      sees: H.client.v4,
      why: 'the same IP, from its new place, client address preserved',
    },
    d.second(),
  );
  await waitReleased(d, 'home');
  check(holds(await showTunnel(d, 'home2', "home2's tunnel end")), `home2 does not hold ${FIP}`);
  await showTunnel(d, 'home', 'the old place');
  d.ok(`home2 holds ${FIP} now; home gave it up`);
  await ownAddress(d, 'home', "home's own address is untouched");
  await ownOutbound(d, 'home2');
}

async function disassociate(d: Demo): Promise<void> {
  const h = d.second();
  await d.ipferry(['fip', 'disassociate', FIP]);
  const started = Date.now();
  for (;;) {
    const held = (await tunnelAddresses(d, 'home2')).some((l) => l.includes(`${FIP}/`));
    const routed = (await h.exec('gw', ['ip', 'route', 'show', 'proto', String(ROUTE_PROTO)]))
      .stdout;
    if (!held && !routed.includes(FIP)) break;
    check(Date.now() - started < 10_000, `${FIP} still routed to or held by home2 after 10 s`);
    await sleep(100);
  }
  await showTunnel(d, 'home2');
  d.ok(`home2 no longer holds ${FIP}; gw no longer routes it into the tunnel`);
  await d.silent('disassociated', [['client', 'tcp', FIP, 80]], h);
  await ownAddress(d, 'home2', "home2's own address is untouched");
}

export const HOME_STEPS: readonly Step[] = part(
  "Part 2: a cloud VM's floating IP served from a home server through a tunnel; then the server moves, and its IP keeps answering",
  [
    {
      title:
        'build a second lab, cloudHome: client — up (the internet) — gw (a small cloud VM), and up — isp — home, home2',
      run: buildLab,
    },
    {
      title: `start the agent for the cloud VM gw, its tunnel reachable at ${H.gw.uplink.v4}:${GW_TUNNEL_PORT}`,
      run: startHub,
    },
    {
      title: 'a join token for node home, and the home agent joining the hub with it',
      run: joinFirstHome,
    },
    {
      title: `route ${FIP} to home through the tunnel (routed: delivered unchanged, no NAT)`,
      run: routeToHome,
    },
    {
      title: `real packets: ${FIP} through the tunnel to home, and home's own address on its ISP`,
      run: throughTheTunnel,
    },
    {
      title: 'the server moves: its new place, home2, joins the hub with its own join token',
      run: joinSecondHome,
    },
    {
      title: `move ${FIP} from home to home2 while the client probes it every 10 ms`,
      run: moveToHome2,
    },
    {
      title: `disassociate ${FIP}: home2 gives it up, gw drops it again`,
      run: disassociate,
    },
  ],
);
