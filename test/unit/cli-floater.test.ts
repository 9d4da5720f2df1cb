/**
 * IP Floater's verbs against the in-process fake agent (test/support/cli-harness.ts): the exact
 * request each sends, what it prints, and its exit code.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  fake,
  fipView,
  only,
  run,
  sent,
  useFakeAgent,
  V6,
  V6_PATH,
} from '../support/cli-harness.js';

describe('ipferry CLI', () => {
  useFakeAgent();

  describe("IP Floater's verbs", () => {
    it('getip allocates any free FIP, associates it in nat mode and prints it', async () => {
      fake.reply('POST /v1/fips', 201, { ...fipView(), created: true });
      fake.reply(
        'POST /v1/fips/192.0.2.10/associate',
        200,
        fipView({ association: { mode: 'nat', target: '10.0.0.5', associatedAt: 't' } }),
      );
      const r = await run(['getip', '10.0.0.5', '--pool', 'public']);
      assert.equal(r.code, 0, r.err);
      assert.equal(r.out, '192.0.2.10\n');
      assert.deepEqual(sent(), [
        { method: 'POST', url: '/v1/fips', body: { pool: 'public', family: 4 } },
        {
          method: 'POST',
          url: '/v1/fips/192.0.2.10/associate',
          body: { target: '10.0.0.5', mode: 'nat' },
        },
      ]);
    });

    it('getip releases the FIP again when the association fails', async () => {
      fake.reply('POST /v1/fips', 201, { ...fipView({ address: V6, family: 6 }), created: true });
      fake.reply(`POST /v1/fips/${V6_PATH}/associate`, 409, {
        error: {
          code: 'IPF_E_TARGET_IN_USE',
          message: 'Target 2001:db8:1::5 already has floating IP 2001:db8::11 in nat mode.',
          hint: 'Move it first.',
        },
      });
      fake.reply(`DELETE /v1/fips/${V6_PATH}?force=true`, 200, { address: V6, released: true });
      const r = await run(['getip', '2001:db8:1::5']);
      assert.equal(r.code, 1);
      assert.equal(r.out, '');
      assert.deepEqual(sent(), [
        { method: 'POST', url: '/v1/fips', body: { family: 6 } },
        {
          method: 'POST',
          url: `/v1/fips/${V6_PATH}/associate`,
          body: { target: '2001:db8:1::5', mode: 'nat' },
        },
        { method: 'DELETE', url: `/v1/fips/${V6_PATH}?force=true`, body: undefined },
      ]);
      assert.equal(
        r.err,
        'error IPF_E_TARGET_IN_USE: Target 2001:db8:1::5 already has floating IP 2001:db8::11 in nat mode.\nhint: Move it first.\n',
      );
    });

    it('getip says so when the rollback fails too', async () => {
      fake.reply('POST /v1/fips', 201, { ...fipView(), created: true });
      fake.reply('POST /v1/fips/192.0.2.10/associate', 400, {
        error: {
          code: 'IPF_E_BAD_ADDRESS',
          message: 'Not a valid IP address: 10.0.0.300',
          hint: 'h',
        },
      });
      fake.reply('DELETE /v1/fips/192.0.2.10?force=true', 503, {
        error: { code: 'IPF_E_STORE', message: 'The store is unavailable: locked', hint: 'h' },
      });
      const r = await run(['getip', '10.0.0.300']);
      assert.equal(r.code, 1);
      assert.match(r.err, /^error IPF_E_BAD_ADDRESS: Not a valid IP address: 10\.0\.0\.300$/m);
      assert.match(
        r.err,
        /^ {2}- rollback: 192\.0\.2\.10 is still allocated: releasing it failed: The store is unavailable: locked$/m,
      );
    });

    it('redirect takes an already allocated address over (409 FIP_IN_USE is fine)', async () => {
      fake.reply('POST /v1/fips', 409, {
        error: {
          code: 'IPF_E_FIP_IN_USE',
          message: 'Floating IP 192.0.2.10 is already allocated.',
          hint: 'h',
        },
      });
      fake.reply(
        'POST /v1/fips/192.0.2.10/associate',
        200,
        fipView({ association: { mode: 'nat', target: '10.0.0.7', associatedAt: 't' } }),
      );
      const r = await run(['redirect', '192.0.2.10', '10.0.0.7']);
      assert.equal(r.code, 0, r.err);
      assert.equal(r.out, '192.0.2.10 -> 10.0.0.7\n');
      assert.deepEqual(sent(), [
        { method: 'POST', url: '/v1/fips', body: { address: '192.0.2.10' } },
        {
          method: 'POST',
          url: '/v1/fips/192.0.2.10/associate',
          body: { target: '10.0.0.7', mode: 'nat', allowReassociation: true },
        },
      ]);
    });

    it('redirect releases an address it allocated itself when the association fails, and keeps an older one', async () => {
      fake.reply('POST /v1/fips', 201, { ...fipView({ address: V6, family: 6 }), created: true });
      fake.reply(`POST /v1/fips/${V6_PATH}/associate`, 409, {
        error: { code: 'IPF_E_CONFLICT', message: 'm', hint: 'h' },
      });
      fake.reply(`DELETE /v1/fips/${V6_PATH}?force=true`, 200, { address: V6, released: true });
      const fresh = await run(['redirect', V6, '2001:db8:1::5']);
      assert.equal(fresh.code, 1);
      assert.deepEqual(
        sent().map((s) => `${s.method} ${s.url}`),
        [
          'POST /v1/fips',
          `POST /v1/fips/${V6_PATH}/associate`,
          `DELETE /v1/fips/${V6_PATH}?force=true`,
        ],
      );

      fake.reset();
      fake.reply('POST /v1/fips', 409, {
        error: { code: 'IPF_E_FIP_IN_USE', message: 'm', hint: 'h' },
      });
      fake.reply(`POST /v1/fips/${V6_PATH}/associate`, 409, {
        error: { code: 'IPF_E_CONFLICT', message: 'm', hint: 'h' },
      });
      const existing = await run(['redirect', V6, '2001:db8:1::5']);
      assert.equal(existing.code, 1);
      assert.deepEqual(
        sent().map((s) => s.method),
        ['POST', 'POST'],
      );
    });

    it('redirect stops at other allocation errors', async () => {
      fake.reply('POST /v1/fips', 400, {
        error: {
          code: 'IPF_E_ADDRESS_NOT_IN_POOL',
          message: 'Address 8.8.8.8 is not in any pool.',
          hint: 'h',
        },
      });
      const r = await run(['redirect', '8.8.8.8', '10.0.0.7']);
      assert.equal(r.code, 1);
      assert.equal(fake.requests.length, 1);
      assert.match(r.err, /^error IPF_E_ADDRESS_NOT_IN_POOL: /);
    });

    it('releaseip releases with force', async () => {
      fake.reply(`DELETE /v1/fips/${V6_PATH}?force=true`, 200, { address: V6, released: true });
      const r = await run(['releaseip', V6]);
      assert.equal(r.code, 0, r.err);
      assert.equal(r.out, `released ${V6}\n`);
      assert.equal(only().url, `/v1/fips/${V6_PATH}?force=true`);
    });

    it('ippool lists pools and allocations', async () => {
      fake.reply('GET /v1/ippool', 200, [
        {
          pool: 'public',
          gateway: 'gw1',
          entries: ['192.0.2.0/28'],
          size: '16',
          allocated: [
            { address: '192.0.2.10', target: '10.0.0.5', mode: 'nat' },
            { address: '192.0.2.11' },
          ],
        },
      ]);
      const r = await run(['ippool']);
      assert.equal(r.code, 0, r.err);
      assert.equal(only().url, '/v1/ippool');
      assert.equal(
        r.out,
        [
          'POOL    GATEWAY  SIZE  ALLOCATED  ENTRIES',
          'public  gw1      16    2          192.0.2.0/28',
          '',
          'ADDRESS     POOL    MODE  TARGET',
          '192.0.2.10  public  nat   10.0.0.5',
          '192.0.2.11  public  -     -',
          '',
        ].join('\n'),
      );
    });

    it('arp prints the address of a MAC', async () => {
      fake.reply('GET /v1/arp/52%3A54%3A00%3A12%3A34%3A56', 200, {
        mac: '52:54:00:12:34:56',
        address: '198.51.100.7',
        source: 'pool',
        pool: 'public',
      });
      const r = await run(['arp', '52:54:00:12:34:56']);
      assert.equal(r.code, 0, r.err);
      assert.equal(r.out, '198.51.100.7\n');
      assert.equal(only().url, '/v1/arp/52%3A54%3A00%3A12%3A34%3A56');
    });
  });
});
