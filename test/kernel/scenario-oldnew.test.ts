/**
 * The oldNew lab on the real kernel, without agents or tunnels: the old server answers on its
 * public address (out of the pool its provider routes to it), the new server is reachable by its
 * own address through its own provider, and that provider validates sources (BCP 38) — so the
 * new server cannot simply answer from the old address through its own default route, which is
 * why the move needs a tunnel back. The client's record of the sources it saw works. The root
 * namespace is only read; the lab is destroyed.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { listNamespaces, randomPrefix } from '../../src/lab/netns.js';
import { echoProbe, outboundProbe, ping, startEchoServer } from '../../src/lab/probe.js';
import {
  OLD_NEW as O,
  oldNew,
  oldNewCounters,
  oldNewForgetSeen,
  oldNewSeen,
  oldNewSpec,
} from '../../src/lab/scenarios.js';
import type { EchoServer } from '../../src/lab/probe.js';
import type { Lab } from '../../src/lab/topology.js';

const CLIENT_TCP = 7000;

let lab: Lab;
let clientServer: EchoServer;
const prefix = randomPrefix();

before(async () => {
  lab = await oldNew({ prefix });
  clientServer = await startEchoServer(lab, 'client', { tcp: [CLIENT_TCP] });
  await startEchoServer(lab, 'new', { tcp: [O.service.tcp] });
});

after(async () => {
  await lab?.destroy();
});

describe('oldNew lab (spec only)', () => {
  it('has the two datacenters behind up, on distinct ranges', () => {
    const spec = oldNewSpec({ prefix: 'ipft-x-' });
    assert.deepEqual(
      spec.hosts.map((h) => h.name),
      ['client', 'up', 'old', 'dcb', 'new'],
    );
    assert.deepEqual(
      spec.links.map((l) => `${l.a.host}/${l.a.ifname}-${l.b.host}/${l.b.ifname}`),
      [
        'client/to-up-up/to-client',
        'up/to-old-old/wan0',
        'up/to-dcb-dcb/to-up',
        'dcb/to-new-new/eth0',
      ],
    );
    assert.deepEqual(spec.hosts.find((h) => h.name === 'up')?.routes, [
      { to: '203.0.113.0/24', via: '192.0.2.2' },
      { to: '2001:db8:f::/48', via: '2001:db8:1::2' },
      { to: '198.18.0.0/24', via: '198.19.0.2' },
      { to: '2001:db8:3::/48', via: '2001:db8:2::2' },
    ]);
  });
});

describe('oldNew lab on the kernel', () => {
  it('the old server answers on its address from the pool, with the client’s address seen', async () => {
    for (const [address, client] of [
      [O.service.v4, O.client.v4],
      [O.service.v6, O.client.v6],
    ] as const) {
      for (const protocol of ['tcp', 'udp'] as const) {
        const port = protocol === 'tcp' ? O.service.tcp : O.service.udp;
        assert.deepEqual(await echoProbe(lab, 'client', protocol, address, port), {
          name: O.service.name,
          address: client,
        });
      }
      assert.ok(await ping(lab, 'client', address));
    }
  });

  it('the new server is reachable by its own address through its own provider, both ways', async () => {
    for (const [own, client] of [
      [O.new.v4, O.client.v4],
      [O.new.v6, O.client.v6],
    ] as const) {
      assert.deepEqual(await echoProbe(lab, 'client', 'tcp', own, O.service.tcp), {
        name: 'new',
        address: client,
      });
      assert.equal(await outboundProbe(lab, 'new', clientServer, client), own);
    }
  });

  it('dcb drops what the new server sends from the old server’s address (BCP 38)', async () => {
    const before = await oldNewCounters(lab);
    await oldNewForgetSeen(lab);
    const held = [`${O.service.v4}/32`, `${O.service.v6}/128`];
    for (const cidr of held) await lab.exec('new', ['ip', 'address', 'add', cidr, 'dev', 'lo']);
    try {
      for (const [source, client] of [
        [O.service.v4, O.client.v4],
        [O.service.v6, O.client.v6],
      ] as const) {
        const argv = ['ping', '-n', '-q', '-c', '1', '-W', '1', '-I', source, client];
        await assert.rejects(lab.exec('new', argv), /exit 1\)/, `ping from ${source}`);
      }
    } finally {
      for (const cidr of held) await lab.exec('new', ['ip', 'address', 'del', cidr, 'dev', 'lo']);
    }
    const after = await oldNewCounters(lab);
    assert.ok(after.spoofedV4 > before.spoofedV4, 'no IPv4 drop counted');
    assert.ok(after.spoofedV6 > before.spoofedV6, 'no IPv6 drop counted');
    const seen = await oldNewSeen(lab);
    assert.ok(!seen.v4.includes(O.service.v4) && !seen.v6.includes(O.service.v6), 'it arrived');
  });

  it('records every source that reaches the client, and forgets them on demand', async () => {
    await oldNewForgetSeen(lab);
    assert.deepEqual(await oldNewSeen(lab), { v4: [], v6: [] });
    await echoProbe(lab, 'client', 'tcp', O.service.v4, O.service.tcp);
    await echoProbe(lab, 'client', 'tcp', O.new.v6, O.service.tcp);
    const seen = await oldNewSeen(lab);
    assert.deepEqual(seen.v4, [O.service.v4]);
    assert.ok(seen.v6.includes(O.new.v6), seen.v6.join(', '));
  });

  it('leaves no namespace behind', async () => {
    await lab.destroy();
    assert.deepEqual(
      (await listNamespaces()).filter((n) => n.startsWith(prefix)),
      [],
    );
  });
});
