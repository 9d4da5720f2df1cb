/**
 * `ipferry node`, `status` and `version` against the in-process fake agent
 * (test/support/cli-harness.ts): the exact request each sends, what it prints, and its exit code.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { StatusResponse } from '../../src/api/contract.js';
import type { NodeView } from '../../src/core/model.js';
import { closedPort, fake, run, sent, TOKEN, useFakeAgent } from '../support/cli-harness.js';

describe('ipferry CLI', () => {
  useFakeAgent();

  describe('node, status and version', () => {
    const node: NodeView = {
      name: 'gw1',
      site: 'fra',
      endpoint: '203.0.113.1:51820',
      addresses: ['203.0.113.1', '2001:db8::1'],
      reservedPorts: [{ protocol: 'tcp', port: 22 }],
      agentVersion: '0.1.0',
      registeredAt: 't',
      overlayIp: '192.168.0.10',
      alive: true,
    };

    it('node list and show', async () => {
      fake.reply('GET /v1/nodes', 200, [
        node,
        {
          ...node,
          name: 'home',
          site: undefined,
          overlayIp: undefined,
          endpoint: undefined,
          addresses: [],
          alive: false,
        },
      ]);
      fake.reply('GET /v1/nodes/gw1', 200, node);
      const list = await run(['node', 'list']);
      const show = await run(['node', 'show', 'gw1']);
      assert.equal(list.code, 0, list.err);
      assert.equal(show.code, 0, show.err);
      assert.equal(
        list.out,
        [
          'NAME  ALIVE  SITE  OVERLAY       ENDPOINT           ADDRESSES                VERSION',
          'gw1   yes    fra   192.168.0.10  203.0.113.1:51820  203.0.113.1,2001:db8::1  0.1.0',
          'home  no     -     -             -                  -                        0.1.0',
          '',
        ].join('\n'),
      );
      assert.match(show.out, /^reserved ports: +tcp\/22$/m);
      assert.match(show.out, /^overlay: +192\.168\.0\.10$/m);
      assert.match(show.out, /^mesh: +-$/m);
      assert.deepEqual(
        sent().map((s) => s.url),
        ['/v1/nodes', '/v1/nodes/gw1'],
      );
    });

    it('status', async () => {
      const status: StatusResponse = {
        node: 'gw1',
        version: '0.1.0',
        store: { kind: 'sqlite', revision: 42 },
        dataplane: { kind: 'fake', lastApply: 't', realisedRevision: 41, lastError: 'boom' },
        fips: { ACTIVE: 2, DOWN: 1, UNREACHABLE: 0, ERROR: 0 },
        nodes: { total: 2, alive: 1 },
      };
      fake.reply('GET /v1/status', 200, status);
      const r = await run(['status']);
      assert.equal(r.code, 0, r.err);
      assert.equal(
        r.out,
        [
          'node:       gw1',
          'version:    0.1.0',
          'store:      sqlite (revision 42)',
          'dataplane:  fake, last apply t, realised revision 41',
          '            last error: boom',
          'fips:       ACTIVE 2, DOWN 1, UNREACHABLE 0, ERROR 0',
          'nodes:      1 alive of 2',
          'tunnel:     -',
          '',
        ].join('\n'),
      );
    });

    it('version prints the CLI version and the agent’s, or why the agent did not answer', async () => {
      fake.reply('GET /v1/version', 200, { version: '9.9.9', node: 'gw1' });
      const ok = await run(['version']);
      assert.equal(ok.code, 0, ok.err);
      assert.match(ok.out, /^cli: +\d+\.\d+\.\d+/m);
      assert.match(ok.out, /^agent: +9\.9\.9 \(node gw1\)$/m);

      const down = await run(['version'], { IPFERRY_TOKEN: TOKEN }, await closedPort());
      assert.equal(down.code, 0, down.err);
      assert.match(down.out, /^agent: +unknown \(IPF_E_UNREACHABLE: /m);
      const asJson = await run(['version', '--json'], { IPFERRY_TOKEN: TOKEN }, await closedPort());
      const parsed = JSON.parse(asJson.out) as { cli: string; agentError: { code: string } };
      assert.equal(parsed.agentError.code, 'IPF_E_UNREACHABLE');
    });
  });
});
