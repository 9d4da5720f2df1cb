/**
 * What reaches the tunnel drivers' command lines and tincd's files (issue 12: typed values all
 * the way to the kernel). Store records are decoded before compile makes tunnel intents of
 * them (src/core/records.ts) and the drivers validate an intent again; this is the wall behind
 * both: every value of a `wg set` argv, an `ip` command or `ip -batch` line of a tunnel, and a
 * line of tinc.conf or hosts/NAME is parsed again by the renderers of
 * src/dataplane/linux/args.ts, and a value that does not parse refuses the tunnel with
 * IPF_E_DATAPLANE before a file is written or a command runs. The renderers and the config
 * writer are driven here with hostile values the earlier walls would have stopped, and the
 * drivers themselves, on a temporary state directory and a PATH whose `ip`, `wg`, `tincd` and
 * `wireguard-go` only record that they were called, with values that pass the intent's checks
 * and still must not reach a file or a command.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { chmod, mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { IpferryError } from '../../src/core/errors.js';
import { diffTunnel, type TunnelIntent, type TunnelPeer } from '../../src/core/tunnel.js';
import {
  forValue,
  ipLineOf,
  tinc,
  tincFileOf,
  tunnel,
  Unfit,
  wg,
} from '../../src/dataplane/linux/args.js';
import { generateKeyPair } from '../../src/dataplane/tunnel/keys.js';
import { readConfig, renderConfig, writeConfig } from '../../src/dataplane/tunnel/tinc-config.js';
import { tapCommands, tapLines } from '../../src/dataplane/tunnel/tinc-tap.js';
import { TincDriver } from '../../src/dataplane/tunnel/tinc.js';
import { WireGuardDriver, wireGuardCommands } from '../../src/dataplane/tunnel/wireguard.js';
import { tempDir } from '../support/helpers.js';

const WG_A = generateKeyPair().publicKey;
const WG_B = generateKeyPair().publicKey;

function rsaPublicKey(): string {
  const { publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return publicKey.export({ type: 'pkcs1', format: 'pem' }).toString();
}

const RSA_OWN = rsaPublicKey();
const RSA_B = rsaPublicKey();
/** Shaped like a key (src/core/tunnel.ts's isTincKey admits it), but no RSA key. */
const RSA_FAKE = `-----BEGIN RSA PUBLIC KEY-----\n${'A'.repeat(64)}\n${'A'.repeat(64)}\n-----END RSA PUBLIC KEY-----\n`;

const INJECTED = 'Subnet = 0.0.0.0/0';

/** An endpoint the intent's checks write canonically (`[2001:db8::1]:655`); a renderer only takes that. */
const NOT_CANONICAL = '[2001:db8::0001]:655';

/** Endpoints that would be more words, another line or another option. */
const HOSTILE_ENDPOINTS: readonly string[] = [
  '100.64.0.2:655;reboot',
  '100.64.0.2:655 ; reboot',
  '100.64.0.2 655',
  '"100.64.0.2":655',
  "'100.64.0.2':655",
  '100.64.0.2:655\nSubnet = 0.0.0.0/0',
  '100.64.0.2:655\rConnectTo = evil',
  ' 100.64.0.2:655',
  '100.064.0.2:655',
  '100.64.0.2:0655',
  '-h:655',
];

/** A value's refusal: IPF_E_DATAPLANE, naming the tunnel, the value shown escaped. */
function refused(tunnelName: string): (e: unknown) => boolean {
  return (e: unknown) => {
    assert.ok(e instanceof IpferryError, `not an IpferryError: ${String(e)}`);
    assert.equal(e.code, 'IPF_E_DATAPLANE', e.message);
    assert.match(e.message, /refused an element: tunnel /);
    assert.ok(e.message.includes(JSON.stringify(tunnelName).slice(0, 20)), e.message);
    // A shown value is escaped: no raw newline reaches a message or a log line.
    assert.ok(!/[\n\r]/.test(e.message), e.message);
    return true;
  };
}

/** The renderer's own refusal, as a forValue around it turns it into IPF_E_DATAPLANE. */
function unfit(render: () => unknown): void {
  assert.throws(render, (e: unknown) => e instanceof Unfit);
  assert.throws(() => forValue('tunnel', 'ipftest0', render), refused('ipftest0'));
}

const wgIntent = (
  over: Partial<TunnelIntent> = {},
  peer: Partial<TunnelPeer> = {},
): TunnelIntent => ({
  name: 'ipftest0',
  listenPort: 51820,
  mtu: 1420,
  addresses: ['10.200.0.1/30', 'fe80::1/64'],
  peers: [
    {
      publicKey: WG_B,
      endpoint: '100.64.0.2:51820',
      allowedIps: ['10.200.0.2/32'],
      keepaliveSeconds: 25,
      ...peer,
    },
  ],
  ...over,
});

const tincIntent = (
  over: Partial<TunnelIntent> = {},
  peer: Partial<TunnelPeer> = {},
): TunnelIntent => ({
  name: 'ipftest0',
  driver: 'tinc',
  listenPort: 655,
  mtu: 1400,
  addresses: ['10.200.0.1/30', 'fe80::1/64'],
  peers: [
    {
      publicKey: RSA_B,
      node: 'node-b',
      endpoint: '100.64.0.2:655',
      allowedIps: ['10.200.0.2/32'],
      ...peer,
    },
  ],
  ...over,
});

const OWN = { name: 'node_a', keyFile: '/var/lib/ipferry/tinc/rsa_key.priv', publicKey: RSA_OWN };

describe('tunnel renderers (src/dataplane/linux/args.ts)', () => {
  it('write WireGuard keys, endpoints, allowed IPs, ports and keepalives as they parse', () => {
    assert.equal(wg.key(WG_A), WG_A);
    assert.equal(wg.endpoint('100.64.0.2:51820'), '100.64.0.2:51820');
    assert.equal(wg.endpoint('[2001:db8::2]:51820'), '[2001:db8::2]:51820');
    assert.equal(wg.allowedIps(['10.200.0.2/32', '2001:db8::/64']), '10.200.0.2/32,2001:db8::/64');
    assert.equal(wg.allowedIps([]), '');
    assert.equal(wg.keepalive(undefined), 'off');
    assert.equal(wg.keepalive(25), '25');
    assert.equal(wg.port(51820), '51820');
  });

  it('refuse a WireGuard key that is not 44 characters of base64 of 32 bytes', () => {
    for (const key of [
      `${WG_A}\n${INJECTED}`,
      `${WG_A} `,
      WG_A.slice(0, 43),
      `${WG_A}=`,
      `A${WG_A}`,
      WG_A.replace(/.=$/, 'B='), // 33rd byte's bits: not 32 bytes
      `-${WG_A.slice(1)}`,
      '',
    ]) {
      unfit(() => wg.key(key));
    }
  });

  it('refuse endpoints with separators, blanks, quotes, newlines or a form that is not canonical', () => {
    for (const endpoint of [...HOSTILE_ENDPOINTS, NOT_CANONICAL]) {
      unfit(() => wg.endpoint(endpoint));
      unfit(() => tinc.address(endpoint));
    }
  });

  it('refuse an allowed IP with more words, host bits or no prefix length', () => {
    for (const prefix of [
      '0.0.0.0/0 dev x',
      '0.0.0.0/0,dev',
      '0.0.0.0/0\nConnectTo = evil',
      '10.200.0.1/30',
      '10.200.0.2',
      '::/0 ',
    ]) {
      unfit(() => wg.allowedIps(['10.200.0.2/32', prefix]));
    }
  });

  it('refuse ports, keepalives and MTUs out of range or not integers', () => {
    for (const n of [0, -1, 65536, 1.5, NaN, '655\nConnectTo = evil' as unknown as number]) {
      unfit(() => wg.port(n));
      unfit(() => tinc.port(n));
      unfit(() => wg.keepalive(n));
    }
    for (const n of [67, 65536, NaN, '1400 up' as unknown as number]) unfit(() => tunnel.mtu(n));
  });

  it('write tinc names, addresses and PEM lines, and refuse what would be another line', () => {
    assert.equal(tinc.name('node_b'), 'node_b');
    assert.equal(tinc.address('100.64.0.2:655'), '100.64.0.2 655');
    assert.equal(tinc.address('[2001:db8::2]:655'), '2001:db8::2 655');
    assert.deepEqual(tinc.pem(RSA_B), RSA_B.trimEnd().split('\n'));
    for (const name of [
      'b\nConnectTo = evil',
      'b ConnectTo',
      'node-b',
      '../b',
      'b/c',
      '',
      'x'.repeat(64),
    ]) {
      unfit(() => tinc.name(name));
    }
    for (const pem of [
      `${RSA_B}${INJECTED}\n`,
      `${RSA_B.trimEnd()}\n${INJECTED}`,
      RSA_B.replace('\n', `\n${INJECTED}\n`),
      RSA_B.replace('-----END', 'Subnet=0.0.0.0/0\n-----END'),
      RSA_FAKE,
      WG_B,
      '',
    ]) {
      unfit(() => tinc.pem(pem));
    }
  });

  it('write tunnel interfaces, their addresses and MACs, and refuse anything else', () => {
    assert.equal(tunnel.ifname('ipftest0'), 'ipftest0');
    assert.deepEqual(tunnel.interfaceAddress('10.200.0.1/30'), {
      text: '10.200.0.1/30',
      family: 4,
    });
    assert.deepEqual(tunnel.interfaceAddress('fe80::1/64'), { text: 'fe80::1/64', family: 6 });
    assert.equal(tunnel.mac('02:00:5e:10:00:01'), '02:00:5e:10:00:01');
    for (const name of [
      'eth0',
      'ipftest0\nConnectTo = evil',
      'ipf test',
      'ipf"x',
      'ipf0123456789abc',
    ]) {
      unfit(() => tunnel.ifname(name));
    }
    for (const address of [
      '10.200.0.1/30 dev lo',
      '10.200.0.1/30\nlink set lo down',
      '10.200.0.1',
      '10.200.0.1/33',
      '10.200.0.1/030',
      'FE80::1/64',
      '10.200.0.01/30',
    ]) {
      unfit(() => tunnel.interfaceAddress(address));
    }
    for (const mac of ['02:00:5E:10:00:01', '02:00:5e:10:00:01 up', '02:00:5e:10:00']) {
      unfit(() => tunnel.mac(mac));
    }
    for (const path of ['/x\nConnectTo = evil', '/x ', '-x', '']) {
      unfit(() => tunnel.localFile(path));
    }
  });

  it('check every word of a batch line and every line of a tinc file once more', () => {
    assert.equal(
      ipLineOf('tunnel', 'ipftest0', ['link', 'set', 'dev', 'ipftest0', 'up']),
      'link set dev ipftest0 up',
    );
    for (const word of ['ipftest0\nlink', 'a b', 'a#b', 'a"b', 'a\\']) {
      assert.throws(() => ipLineOf('tunnel', 'ipftest0', ['link', word]), refused('ipftest0'));
    }
    assert.equal(
      tincFileOf('tunnel', 'ipftest0', ['Name = a', 'Port = 655']),
      'Name = a\nPort = 655\n',
    );
    for (const line of [
      `Name = a\n${INJECTED}`,
      'Name = a\rx',
      'Name = a\u2028x',
      'Name = a\u0000',
    ]) {
      assert.throws(() => tincFileOf('tunnel', 'ipftest0', [line]), refused('ipftest0'));
    }
  });
});

describe('WireGuard commands (wireGuardCommands)', () => {
  const keyFile = '/var/lib/ipferry/wireguard/private.key';

  it('are what the intent says, word for word', () => {
    const commands = wireGuardCommands('ipftest0', diffTunnel(wgIntent(), undefined, ''), keyFile);
    assert.deepEqual(commands.wg, [
      'set',
      'ipftest0',
      'private-key',
      keyFile,
      'listen-port',
      '51820',
      'peer',
      WG_B,
      'endpoint',
      '100.64.0.2:51820',
      'allowed-ips',
      '10.200.0.2/32',
      'persistent-keepalive',
      '25',
    ]);
    assert.deepEqual(commands.ip, [
      ['link', 'set', 'dev', 'ipftest0', 'mtu', '1420'],
      ['address', 'add', '10.200.0.1/30', 'dev', 'ipftest0'],
      ['address', 'add', 'fe80::1/64', 'dev', 'ipftest0', 'nodad'],
      ['link', 'set', 'dev', 'ipftest0', 'addrgenmode', 'none'],
      ['link', 'set', 'dev', 'ipftest0', 'up'],
    ]);
  });

  it('are refused whole, as IPF_E_DATAPLANE naming the tunnel, when one value does not parse', () => {
    const hostile: [string, TunnelIntent][] = [
      ['a key with a line of its own', wgIntent({}, { publicKey: `${WG_B}\n${INJECTED}` })],
      ['a key with a blank', wgIntent({}, { publicKey: `${WG_B} remove` })],
      ['an allowed IP with more words', wgIntent({}, { allowedIps: ['0.0.0.0/0 dev x'] })],
      ['an allowed IP with host bits', wgIntent({}, { allowedIps: ['10.200.0.1/30'] })],
      [
        'a keepalive that is no number',
        wgIntent({}, { keepaliveSeconds: '25 x' as unknown as number }),
      ],
      ['a listen port out of range', wgIntent({ listenPort: 70000 })],
      ['an MTU with more words', wgIntent({ mtu: '1420 up' as unknown as number })],
      [
        'an address with a second command',
        wgIntent({ addresses: ['10.200.0.1/30\nlink set lo down'] }),
      ],
      ['an interface name with a newline', wgIntent({ name: 'ipftest0\nx' })],
      ['a foreign interface', wgIntent({ name: 'eth0' })],
      ...[...HOSTILE_ENDPOINTS, NOT_CANONICAL].map((endpoint): [string, TunnelIntent] => [
        `endpoint ${JSON.stringify(endpoint)}`,
        wgIntent({}, { endpoint }),
      ]),
    ];
    for (const [what, intent] of hostile) {
      assert.throws(
        () => wireGuardCommands(intent.name, diffTunnel(intent, undefined, ''), keyFile),
        refused(intent.name),
        what,
      );
    }
    // A peer to remove, as the kernel's dump named it, is parsed too.
    assert.throws(
      () =>
        wireGuardCommands('ipftest0', [{ kind: 'peer-remove', publicKey: `${WG_A}\n-x` }], keyFile),
      refused('ipftest0'),
    );
    assert.throws(
      () => wireGuardCommands('ipftest0', [{ kind: 'private-key' }], '/state\n/private.key'),
      refused('ipftest0'),
    );
  });
});

describe('tincd files (renderConfig, writeConfig) and the tap (tapLines, tapCommands)', () => {
  let root = '';
  let remove: () => Promise<void> = () => Promise.resolve();
  before(async () => ({ dir: root, remove } = await tempDir('tunnel-render')));
  after(() => remove());

  it('are what the intent says, line for line, and read back as the same peers', async () => {
    const files = renderConfig(OWN, tincIntent({}, { keepaliveSeconds: 25 }));
    assert.deepEqual([...files.keys()], ['tinc.conf', 'hosts/node_a', 'hosts/node_b']);
    const conf = files.get('tinc.conf') ?? '';
    assert.match(conf, /^Name = node_a$/m);
    assert.match(conf, /^Interface = ipftest0$/m);
    assert.match(conf, /^PrivateKeyFile = \/var\/lib\/ipferry\/tinc\/rsa_key\.priv$/m);
    assert.match(conf, /^ConnectTo = node_b$/m);
    assert.equal(files.get('hosts/node_a'), `Port = 655\n${RSA_OWN}`);
    assert.equal(
      files.get('hosts/node_b'),
      `# ipferry-allowed-ips: 10.200.0.2/32 (recorded; tinc's switch mode does not enforce them)\n# ipferry-keepalive: 25\nAddress = 100.64.0.2 655\n${RSA_B}`,
    );
    const dir = join(root, 'good');
    await writeConfig(dir, OWN, tincIntent({}, { keepaliveSeconds: 25 }));
    const read = await readConfig(dir, OWN.name);
    assert.equal(read.listenPort, 655);
    assert.deepEqual(read.peers, [
      {
        publicKey: RSA_B,
        node: 'node-b',
        endpoint: '100.64.0.2:655',
        allowedIps: ['10.200.0.2/32'],
        keepaliveSeconds: 25,
      },
    ]);
    assert.equal(
      tapLines('node-a', tincIntent())
        .split('\n')
        .filter((l) => l !== '').length,
      7,
    );
  });

  /** Intents whose values the intent's own checks would refuse (the first walls), as compile could never make them. */
  const hostile: [string, TunnelIntent][] = [
    ['a key followed by a Subnet line', tincIntent({}, { publicKey: `${RSA_B}${INJECTED}\n` })],
    [
      'a Subnet line inside the key block',
      tincIntent({}, { publicKey: RSA_B.replace('\n', `\n${INJECTED}\n`) }),
    ],
    ['a key shaped like one that is none', tincIntent({}, { publicKey: RSA_FAKE })],
    ['a WireGuard key', tincIntent({}, { publicKey: WG_B })],
    ['a node name with a ConnectTo line', tincIntent({}, { node: 'b\nConnectTo = evil' })],
    ['a node name with a blank', tincIntent({}, { node: 'b ConnectTo' })],
    ['a node name with a path', tincIntent({}, { node: '../../x' })],
    ['no node name', tincIntent({}, { node: undefined })],
    ['this node as a peer', tincIntent({}, { node: 'node-a' })],
    ['an allowed IP with more words', tincIntent({}, { allowedIps: ['0.0.0.0/0 dev x'] })],
    [
      'an allowed IP with a line of its own',
      tincIntent({}, { allowedIps: [`0.0.0.0/0\n${INJECTED}`] }),
    ],
    [
      'a keepalive with a line of its own',
      tincIntent({}, { keepaliveSeconds: `1\n${INJECTED}` as unknown as number }),
    ],
    [
      'a port with a line of its own',
      tincIntent({ listenPort: `655\nConnectTo = evil` as unknown as number }),
    ],
    ['an interface name with a line of its own', tincIntent({ name: 'ipftest0\nConnectTo=evil' })],
    ...[...HOSTILE_ENDPOINTS, NOT_CANONICAL].map((endpoint): [string, TunnelIntent] => [
      `endpoint ${JSON.stringify(endpoint)}`,
      tincIntent({}, { endpoint }),
    ]),
  ];

  it('refuse the tunnel with IPF_E_DATAPLANE before a file is written, a new directory made or an old file touched', async () => {
    const fresh = join(root, 'fresh');
    const kept = join(root, 'kept');
    await writeConfig(kept, OWN, tincIntent());
    const before = await snapshot(kept);
    for (const [what, intent] of hostile) {
      assert.throws(() => renderConfig(OWN, intent), refused(intent.name), what);
      await assert.rejects(writeConfig(fresh, OWN, intent), refused(intent.name), what);
      await assert.rejects(writeConfig(kept, OWN, intent), refused(intent.name), what);
      await assert.rejects(stat(fresh), { code: 'ENOENT' }, what);
      assert.deepEqual(await snapshot(kept), before, what);
    }
    for (const own of [
      { ...OWN, name: 'node_a\nConnectTo = evil' },
      { ...OWN, keyFile: '/x\nConnectTo = evil' },
      { ...OWN, publicKey: `${RSA_OWN}${INJECTED}` },
    ]) {
      await assert.rejects(writeConfig(fresh, own, tincIntent()), refused('ipftest0'));
      await assert.rejects(stat(fresh), { code: 'ENOENT' });
    }
  });

  it('refuse a tap whose lines would hold another word or another command', () => {
    for (const intent of [
      tincIntent({ addresses: ['10.200.0.1/30\nlink set lo down'] }),
      tincIntent({ addresses: ['10.200.0.1/30 dev lo'] }),
      tincIntent({ mtu: '1400\nlink set lo down' as unknown as number }),
      tincIntent({ name: 'ipftest0\nlink' }),
    ]) {
      assert.throws(() => tapLines('node-a', intent), refused(intent.name));
      assert.throws(
        () => tapCommands(intent.name, diffTunnel(intent, undefined, '')),
        refused(intent.name),
      );
    }
    assert.throws(
      () => tapCommands('ipftest0', [{ kind: 'address-del', address: '10.200.0.1/30 dev lo' }]),
      refused('ipftest0'),
    );
  });
});

describe('the drivers refuse before they look, run or write', () => {
  let root = '';
  let log = '';
  let remove: () => Promise<void> = () => Promise.resolve();
  const path = process.env.PATH;

  before(async () => {
    ({ dir: root, remove } = await tempDir('tunnel-render-drivers'));
    const bin = join(root, 'bin');
    log = join(root, 'calls.log');
    await mkdir(bin);
    // Each tool a driver may call records its argv and fails: nothing of the host is touched.
    for (const tool of ['ip', 'wg', 'tincd', 'wireguard-go']) {
      await writeFile(join(bin, tool), `#!/bin/sh\necho "${tool} $*" >> '${log}'\nexit 1\n`);
      await chmod(join(bin, tool), 0o755);
    }
    process.env.PATH = `${bin}:${path ?? ''}`;
  });
  after(async () => {
    process.env.PATH = path;
    await remove();
  });

  const calls = async (): Promise<string> => readFile(log, 'utf8').catch(() => '');
  const entries = async (dir: string): Promise<string[]> => readdir(dir).catch(() => []);

  it('tinc: a key that passes the intent check but is no RSA key reaches no file and no command', async () => {
    const stateDir = join(root, 'tinc-state');
    const driver = new TincDriver({ stateDir, node: 'node-a' });
    await assert.rejects(
      driver.apply(tincIntent({}, { publicKey: RSA_FAKE })),
      refused('ipftest0'),
    );
    assert.equal(await calls(), '');
    assert.deepEqual(await entries(stateDir), []);
  });

  it('tinc: a state directory that would be a line of its own in tinc.conf is refused the same way', async () => {
    const stateDir = join(root, 'state\nConnectTo = evil');
    const driver = new TincDriver({ stateDir, node: 'node-a' });
    await assert.rejects(driver.apply(tincIntent()), refused('ipftest0'));
    assert.equal(await calls(), '');
    assert.deepEqual(await entries(stateDir), []);
  });

  it('WireGuard: a state directory that is no file path for `wg` is refused the same way', async () => {
    const stateDir = join(root, 'wg\nstate');
    const driver = new WireGuardDriver({ stateDir });
    await assert.rejects(driver.apply(wgIntent()), refused('ipftest0'));
    assert.equal(await calls(), '');
    assert.deepEqual(await entries(stateDir), []);
  });

  it('both: hostile values are refused by the intent checks already, with nothing run or written', async () => {
    const early = (e: unknown): boolean =>
      e instanceof IpferryError && ['IPF_E_VALIDATION', 'IPF_E_TUNNEL_ENDPOINT'].includes(e.code);
    const wgState = join(root, 'wg-state');
    const tincState = join(root, 'tinc-state-2');
    const wgDriver = new WireGuardDriver({ stateDir: wgState });
    const tincDriver = new TincDriver({ stateDir: tincState, node: 'node-a' });
    const peers: Partial<TunnelPeer>[] = [
      { allowedIps: ['0.0.0.0/0 dev x'] },
      { node: 'b\nConnectTo = evil' },
      ...HOSTILE_ENDPOINTS.map((endpoint) => ({ endpoint })),
    ];
    for (const peer of peers) {
      await assert.rejects(wgDriver.apply(wgIntent({}, peer)), early);
      await assert.rejects(tincDriver.apply(tincIntent({}, peer)), early);
    }
    await assert.rejects(
      wgDriver.apply(wgIntent({}, { publicKey: `${WG_B}\n${INJECTED}` })),
      early,
    );
    await assert.rejects(
      tincDriver.apply(tincIntent({}, { publicKey: `${RSA_B}${INJECTED}\n` })),
      early,
    );
    assert.equal(await calls(), '');
    assert.deepEqual(await entries(wgState), []);
    assert.deepEqual(await entries(tincState), []);
  });

  it('and a good intent does get as far as the tools (the recorder works)', async () => {
    const driver = new WireGuardDriver({ stateDir: join(root, 'wg-good') });
    await assert.rejects(driver.apply(wgIntent()), IpferryError);
    assert.match(await calls(), /^wg --version$/m);
  });
});

/** A directory's files, contents and mtimes. */
async function snapshot(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const name of [
    'tinc.conf',
    ...(await readdir(join(dir, 'hosts'))).map((n) => `hosts/${n}`),
  ]) {
    const file = join(dir, name);
    out[name] = `${(await stat(file)).mtimeMs} ${await readFile(file, 'utf8')}`;
  }
  return out;
}
