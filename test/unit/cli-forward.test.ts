/**
 * `ipferry forward` against the in-process fake agent (test/support/cli-harness.ts): add, list and
 * remove — the exact request each sends, what it prints, and its exit code.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { fake, forward, run, sent, useFakeAgent, V6, V6_PATH } from '../support/cli-harness.js';

describe('ipferry CLI', () => {
  useFakeAgent();

  describe('forward', () => {
    it('add, list and remove', async () => {
      fake.reply(`POST /v1/fips/${V6_PATH}/forwards`, 201, forward);
      fake.reply('GET /v1/fips/192.0.2.10/forwards', 200, [
        forward,
        {
          ...forward,
          id: 'f2',
          protocol: 'udp',
          port: 53,
          portEnd: 53,
          targetPort: 5353,
          target: '10.0.0.9',
          node: 'home',
          description: 'dns',
        },
      ]);
      fake.reply('DELETE /v1/fips/192.0.2.10/forwards/f1', 200, {
        address: '192.0.2.10',
        id: 'f1',
        removed: true,
      });
      const add = await run([
        'forward',
        'add',
        V6,
        '--proto',
        'tcp',
        '--port',
        '8000-8010',
        '--target-port',
        '9000',
        '--target',
        '2001:db8:1::5',
        '--node',
        'home',
        '--description',
        'web',
      ]);
      const minimal = await run([
        'forward',
        'add',
        V6,
        '--proto',
        'udp',
        '--port',
        '53',
        '--target',
        '10.0.0.9',
      ]);
      const list = await run(['forward', 'list', '192.0.2.10']);
      const remove = await run(['forward', 'remove', '192.0.2.10', 'f1']);
      for (const r of [add, minimal, list, remove]) assert.equal(r.code, 0, r.err);
      assert.deepEqual(sent(), [
        {
          method: 'POST',
          url: `/v1/fips/${V6_PATH}/forwards`,
          body: {
            protocol: 'tcp',
            port: '8000-8010',
            targetPort: 9000,
            target: '2001:db8:1::5',
            node: 'home',
            description: 'web',
          },
        },
        {
          method: 'POST',
          url: `/v1/fips/${V6_PATH}/forwards`,
          body: { protocol: 'udp', port: '53', target: '10.0.0.9' },
        },
        { method: 'GET', url: '/v1/fips/192.0.2.10/forwards', body: undefined },
        { method: 'DELETE', url: '/v1/fips/192.0.2.10/forwards/f1', body: undefined },
      ]);
      assert.equal(
        list.out,
        [
          'ID  PROTO  PORT       TARGET         TARGET-PORT  NODE  DESCRIPTION',
          'f1  tcp    8000-8010  2001:db8:1::5  9000-9010    -     -',
          'f2  udp    53         10.0.0.9       5353         home  dns',
          '',
        ].join('\n'),
      );
      assert.equal(remove.out, 'removed forward f1 from 192.0.2.10\n');
    });

    it('rejects a bad --proto, a malformed --port and a missing --target', async () => {
      for (const args of [
        ['--proto', 'icmp', '--port', '80', '--target', '10.0.0.5'],
        ['--proto', 'tcp', '--port', 'http', '--target', '10.0.0.5'],
        ['--proto', 'tcp', '--port', '80', '--target-port', '99999', '--target', '10.0.0.5'],
        ['--proto', 'tcp', '--port', '80'],
      ]) {
        const r = await run(['forward', 'add', '192.0.2.10', ...args]);
        assert.equal(r.code, 2, args.join(' '));
        assert.match(r.err, /^error IPF_E_USAGE: /);
      }
      assert.equal(fake.requests.length, 0);
    });
  });
});
