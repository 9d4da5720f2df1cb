/**
 * `ipferry pool` against the in-process fake agent (test/support/cli-harness.ts): create, list,
 * show, update and delete — the exact request each sends, what it prints, and its exit code.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { PoolView } from '../../src/api/contract.js';
import { fake, only, poolView, run, sent, TOKEN, useFakeAgent } from '../support/cli-harness.js';

describe('ipferry CLI', () => {
  useFakeAgent();

  describe('pool', () => {
    it('create sends the entries in the order given, with shared, onlink, description and tags', async () => {
      fake.reply('POST /v1/pools', 201, poolView());
      const r = await run([
        'pool',
        'create',
        'public',
        '--gateway',
        'gw1',
        '--cidr',
        '192.0.2.0/28',
        '--address',
        '198.51.100.7=52:54:00:12:34:56',
        '--range',
        '2001:db8::10-2001:db8::1f',
        '--cidr',
        '2001:db8:ff::/64',
        '--shared',
        '203.0.113.1',
        '--shared',
        '2001:db8::1',
        '--onlink',
        'eth0',
        '--description',
        'main uplink',
        '--tag',
        'prod',
        '--tag',
        'eu',
      ]);
      assert.equal(r.code, 0, r.err);
      const req = only();
      assert.equal(req.method, 'POST');
      assert.equal(req.url, '/v1/pools');
      assert.equal(req.authorization, `Bearer ${TOKEN}`);
      assert.equal(req.contentType, 'application/json');
      assert.deepEqual(req.body, {
        name: 'public',
        gateway: 'gw1',
        delivery: 'onlink',
        uplink: 'eth0',
        entries: [
          '192.0.2.0/28',
          '198.51.100.7=52:54:00:12:34:56',
          '2001:db8::10-2001:db8::1f',
          '2001:db8:ff::/64',
        ],
        shared: ['203.0.113.1', '2001:db8::1'],
        description: 'main uplink',
        tags: ['prod', 'eu'],
      });
      assert.match(r.out, /^name: +public$/m);
      assert.match(
        r.out,
        /^entries: +192\.0\.2\.0\/28\n +2001:db8::10-2001:db8::1f\n +198\.51\.100\.7=52:54:00:12:34:56$/m,
      );
    });

    it('create with only the required flags sends no optional fields', async () => {
      fake.reply('POST /v1/pools', 201, poolView());
      const r = await run(['pool', 'create', 'p2', '--gateway', 'gw1', '--cidr', '192.0.2.0/30']);
      assert.equal(r.code, 0, r.err);
      assert.deepEqual(only().body, { name: 'p2', gateway: 'gw1', entries: ['192.0.2.0/30'] });
    });

    it('create without --gateway is a usage error and sends nothing', async () => {
      const r = await run(['pool', 'create', 'p2', '--cidr', '192.0.2.0/30']);
      assert.equal(r.code, 2);
      assert.equal(fake.requests.length, 0);
      assert.match(r.err, /^error IPF_E_USAGE: required option '--gateway <node>' not specified$/m);
      assert.match(r.err, /^hint: Run `ipferry pool create --help` for usage\.$/m);
    });

    it('list prints a table', async () => {
      fake.reply('GET /v1/pools', 200, [
        poolView(),
        poolView({
          name: 'lan',
          delivery: 'onlink',
          uplink: 'eth1',
          entries: [],
          tags: [],
          size: '0',
          allocated: 0,
          description: 'home',
        }),
      ]);
      const r = await run(['pool', 'list']);
      assert.equal(r.code, 0, r.err);
      assert.deepEqual(sent(), [{ method: 'GET', url: '/v1/pools', body: undefined }]);
      assert.equal(
        r.out,
        [
          'NAME    GATEWAY  DELIVERY     SIZE  ALLOCATED  ENTRIES                                                                DESCRIPTION',
          'public  gw1      routed       33    2          192.0.2.0/28,2001:db8::10-2001:db8::1f,198.51.100.7=52:54:00:12:34:56  -',
          'lan     gw1      onlink:eth1  0     0          -                                                                      home',
          '',
        ].join('\n'),
      );
    });

    it('list and show write an IPv6-sized pool as powers of two; --json keeps the exact count', async () => {
      const size = (2n ** 64n + 16n).toString();
      fake.reply('GET /v1/pools', 200, [poolView({ size })]);
      fake.reply('GET /v1/pools/public', 200, poolView({ size }));
      const list = await run(['pool', 'list']);
      assert.match(list.out, /^public +gw1 +routed +2\^64 \+ 16 +2 +/m);
      assert.match((await run(['pool', 'show', 'public'])).out, /^size: +2\^64 \+ 16$/m);
      const asJson = await run(['pool', 'list', '--json']);
      assert.equal((JSON.parse(asJson.out) as PoolView[])[0]?.size, '18446744073709551632');
    });

    it('update sends only what changes: entries to add in order, shared, removals, description, tags', async () => {
      fake.reply('PATCH /v1/pools/public', 200, poolView());
      const r = await run([
        'pool',
        'update',
        'public',
        '--shared',
        '203.0.113.1',
        '--cidr',
        '192.0.2.64/28',
        '--address',
        '198.51.100.8=52:54:00:12:34:57',
        '--remove',
        '198.51.100.7',
        '--description',
        '',
        '--tag',
        'eu',
      ]);
      assert.equal(r.code, 0, r.err);
      assert.deepEqual(sent(), [
        {
          method: 'PATCH',
          url: '/v1/pools/public',
          body: {
            addEntries: ['192.0.2.64/28', '198.51.100.8=52:54:00:12:34:57'],
            addShared: ['203.0.113.1'],
            removeAddresses: ['198.51.100.7'],
            description: '',
            tags: ['eu'],
          },
        },
      ]);
      assert.match(r.out, /^name: +public$/m);
      fake.reset();
      fake.reply('PATCH /v1/pools/public', 200, poolView());
      assert.equal((await run(['pool', 'update', 'public', '--clear-tags'])).code, 0);
      assert.deepEqual(only().body, { tags: [] });
    });

    it('update with nothing to change, or with --tag and --clear-tags, is a usage error', async () => {
      const none = await run(['pool', 'update', 'public']);
      assert.equal(none.code, 2);
      assert.match(none.err, /^error IPF_E_USAGE: nothing to change: give --cidr, /m);
      assert.match(none.err, /^hint: Run `ipferry pool update --help` for usage\.$/m);
      const both = await run(['pool', 'update', 'public', '--tag', 'a', '--clear-tags']);
      assert.equal(both.code, 2);
      assert.equal(fake.requests.length, 0);
    });

    it('update reports the agent’s refusal, exit 1', async () => {
      fake.reply('PATCH /v1/pools/public', 409, {
        error: {
          code: 'IPF_E_ADDRESS_ALLOCATED',
          message: 'Address 192.0.2.9 of pool public is allocated as a floating IP.',
          hint: 'Release it first (`ipferry fip release 192.0.2.9`), then remove it from the pool.',
        },
      });
      const r = await run(['pool', 'update', 'public', '--remove', '192.0.2.9']);
      assert.equal(r.code, 1);
      assert.match(r.err, /^error IPF_E_ADDRESS_ALLOCATED: /m);
    });

    it('show and delete use the pool path', async () => {
      fake.reply('GET /v1/pools/my%20pool', 200, poolView({ name: 'my pool' }));
      fake.reply('DELETE /v1/pools/public', 200, { name: 'public', deleted: true });
      assert.equal((await run(['pool', 'show', 'my pool'])).code, 0);
      const del = await run(['pool', 'delete', 'public']);
      assert.equal(del.code, 0, del.err);
      assert.equal(del.out, 'deleted pool public\n');
      assert.deepEqual(sent(), [
        { method: 'GET', url: '/v1/pools/my%20pool', body: undefined },
        { method: 'DELETE', url: '/v1/pools/public', body: undefined },
      ]);
    });
  });
});
