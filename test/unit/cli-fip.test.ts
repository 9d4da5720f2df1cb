/**
 * `ipferry fip` against the in-process fake agent (test/support/cli-harness.ts): allocate, list,
 * show, associate, move, disassociate and release — the exact request each sends, what it prints,
 * and its exit code.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  fake,
  fipView,
  forward,
  only,
  run,
  sent,
  useFakeAgent,
  V6,
  V6_PATH,
} from '../support/cli-harness.js';

describe('ipferry CLI', () => {
  useFakeAgent();

  describe('fip', () => {
    it('allocate sends only the flags given', async () => {
      fake.reply('POST /v1/fips', 201, { ...fipView(), created: true });
      const r = await run([
        'fip',
        'allocate',
        '--pool',
        'public',
        '--address',
        V6,
        '--client-token',
        'ct-1',
        '--description',
        'web',
        '--tag',
        'a',
        '--tag',
        'b',
      ]);
      assert.equal(r.code, 0, r.err);
      assert.deepEqual(only().body, {
        pool: 'public',
        address: V6,
        clientToken: 'ct-1',
        description: 'web',
        tags: ['a', 'b'],
      });
      fake.reset();
      fake.reply('POST /v1/fips', 200, { ...fipView(), created: false });
      const again = await run(['fip', 'allocate']);
      assert.deepEqual(only().body, {});
      assert.match(again.out, /earlier allocation/);
    });

    it('associate encodes an IPv6 FIP in the path and sends mode, node and switches', async () => {
      fake.reply(`POST /v1/fips/${V6_PATH}/associate`, 200, fipView({ address: V6, family: 6 }));
      const r = await run([
        'fip',
        'associate',
        V6,
        '--target',
        '2001:db8:1::5',
        '--node',
        'home',
        '--mode',
        'routed',
        '--masquerade',
        '--allow-reassociation',
      ]);
      assert.equal(r.code, 0, r.err);
      const req = only();
      assert.equal(req.method, 'POST');
      assert.equal(req.url, '/v1/fips/2001%3Adb8%3A%3A10/associate');
      assert.deepEqual(req.body, {
        target: '2001:db8:1::5',
        node: 'home',
        mode: 'routed',
        masquerade: true,
        allowReassociation: true,
      });
    });

    it('associate without options sends just the target (the server defaults to nat)', async () => {
      fake.reply('POST /v1/fips/192.0.2.10/associate', 200, fipView());
      const r = await run(['fip', 'associate', '192.0.2.10', '--target', '10.0.0.5']);
      assert.equal(r.code, 0, r.err);
      assert.deepEqual(only().body, { target: '10.0.0.5' });
    });

    it('associate in routed mode may leave out --target (it is the FIP); nat may not', async () => {
      fake.reply('POST /v1/fips/192.0.2.10/associate', 200, fipView());
      const routed = await run([
        'fip',
        'associate',
        '192.0.2.10',
        '--mode',
        'routed',
        '--node',
        'b1',
      ]);
      assert.equal(routed.code, 0, routed.err);
      assert.deepEqual(only().body, { mode: 'routed', node: 'b1' });
      fake.reset();
      const nat = await run(['fip', 'associate', '192.0.2.10', '--node', 'b1']);
      assert.equal(nat.code, 2);
      assert.match(
        nat.err,
        /^error IPF_E_USAGE: required option '--target <ip>' not specified \(only --mode routed may omit it\)$/m,
      );
      assert.equal(fake.requests.length, 0);
      fake.reply('POST /v1/fips/192.0.2.10/move', 200, fipView());
      assert.equal((await run(['fip', 'move', '192.0.2.10', '--node', 'b2'])).code, 0);
      assert.deepEqual(only().body, { node: 'b2' });
    });

    it('rejects an unknown --mode before sending anything', async () => {
      const r = await run([
        'fip',
        'associate',
        '192.0.2.10',
        '--target',
        '10.0.0.5',
        '--mode',
        'foo',
      ]);
      assert.equal(r.code, 2);
      assert.equal(fake.requests.length, 0);
      assert.match(
        r.err,
        /^error IPF_E_USAGE: option '--mode <mode>' argument 'foo' is invalid\. Allowed choices are nat, routed, ports\.$/m,
      );
    });

    it('move, disassociate, release, list and show', async () => {
      fake.reply('POST /v1/fips/192.0.2.10/move', 200, fipView());
      fake.reply('POST /v1/fips/192.0.2.10/disassociate', 200, fipView());
      fake.reply('DELETE /v1/fips/192.0.2.10?force=true', 200, {
        address: '192.0.2.10',
        released: true,
      });
      fake.reply(`DELETE /v1/fips/${V6_PATH}`, 200, { address: V6, released: true });
      fake.reply('GET /v1/fips?pool=public', 200, []);
      fake.reply(`GET /v1/fips/${V6_PATH}`, 200, fipView({ address: V6 }));
      const results = [
        await run(['fip', 'move', '192.0.2.10', '--target', '10.0.0.6', '--node', 'n2']),
        await run(['fip', 'disassociate', '192.0.2.10']),
        await run(['fip', 'release', '192.0.2.10', '--force']),
        await run(['fip', 'release', V6]),
        await run(['fip', 'list', '--pool', 'public']),
        await run(['fip', 'show', V6]),
      ];
      for (const r of results) assert.equal(r.code, 0, r.err);
      assert.deepEqual(sent(), [
        {
          method: 'POST',
          url: '/v1/fips/192.0.2.10/move',
          body: { target: '10.0.0.6', node: 'n2' },
        },
        { method: 'POST', url: '/v1/fips/192.0.2.10/disassociate', body: {} },
        { method: 'DELETE', url: '/v1/fips/192.0.2.10?force=true', body: undefined },
        { method: 'DELETE', url: `/v1/fips/${V6_PATH}`, body: undefined },
        { method: 'GET', url: '/v1/fips?pool=public', body: undefined },
        { method: 'GET', url: `/v1/fips/${V6_PATH}`, body: undefined },
      ]);
      assert.equal(results[2]!.out, 'released 192.0.2.10\n');
      assert.equal(results[4]!.out, 'ADDRESS  POOL  MODE  TARGET  NODE  STATE  DESCRIPTION\n');
    });

    it('list prints ADDRESS POOL MODE TARGET NODE STATE DESCRIPTION, marking stale status', async () => {
      fake.reply('GET /v1/fips', 200, [
        fipView({
          association: { mode: 'nat', target: '10.0.0.5', associatedAt: 't' },
          status: { state: 'ACTIVE', node: 'gw1', revision: 7 },
          description: 'web',
        }),
        fipView({
          address: V6,
          family: 6,
          association: { mode: 'routed', target: '2001:db8:1::5', node: 'home', associatedAt: 't' },
          status: { state: 'ACTIVE', node: 'gw1', revision: 6, stale: true },
        }),
        fipView({ address: '192.0.2.11', status: { state: 'ERROR', message: 'nft failed' } }),
      ]);
      const r = await run(['fip', 'list']);
      assert.equal(r.code, 0, r.err);
      assert.equal(only().url, '/v1/fips');
      assert.equal(
        r.out,
        [
          'ADDRESS       POOL    MODE    TARGET         NODE  STATE           DESCRIPTION',
          '192.0.2.10    public  nat     10.0.0.5       -     ACTIVE          web',
          '2001:db8::10  public  routed  2001:db8:1::5  home  ACTIVE (stale)  -',
          '192.0.2.11    public  -       -              -     ERROR           -',
          '',
        ].join('\n'),
      );
    });

    it('show prints details with forwards', async () => {
      fake.reply(
        'GET /v1/fips/192.0.2.10',
        200,
        fipView({
          association: { mode: 'ports', target: '2001:db8:1::5', associatedAt: 't' },
          forwards: [
            forward,
            {
              ...forward,
              id: 'f2',
              protocol: 'udp',
              port: 53,
              portEnd: 53,
              targetPort: 53,
              target: '10.0.0.9',
              node: 'home',
            },
          ],
          status: { state: 'ERROR', node: 'gw1', message: 'nft: no such table' },
          tags: ['x', 'y'],
        }),
      );
      const r = await run(['fip', 'show', '192.0.2.10']);
      assert.equal(r.code, 0, r.err);
      assert.equal(
        r.out,
        [
          'address:      192.0.2.10',
          'pool:         public',
          'state:        ERROR on gw1: nft: no such table',
          'mode:         ports',
          'target:       2001:db8:1::5',
          'node:         -',
          'masquerade:   no',
          'forwards:     tcp 8000-8010 -> [2001:db8:1::5]:9000-9010 [f1]',
          '              udp 53 -> 10.0.0.9:53 on home [f2]',
          'description:  -',
          'tags:         x, y',
          'allocated:    2025-01-01T00:00:00.000Z',
          'revision:     7',
          '',
        ].join('\n'),
      );
    });

    it('--json prints the returned data, before or after the command', async () => {
      const data = [fipView()];
      fake.reply('GET /v1/fips', 200, data);
      const before = await run(['--json', 'fip', 'list']);
      const afterwards = await run(['fip', 'list', '--json']);
      assert.deepEqual(JSON.parse(before.out), data);
      assert.equal(afterwards.out, before.out);
    });
  });
});
