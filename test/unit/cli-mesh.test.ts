/**
 * `ipferry mesh` against the in-process fake agent (test/support/cli-harness.ts): policy, trials,
 * confirm, audit and node removal — the exact request each sends, what it prints, and its exit
 * code.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { MeshAudit, MeshView } from '../../src/api/contract.js';
import type { MeshPolicy, MeshPolicyRecord } from '../../src/core/mesh.js';
import type { NodeView } from '../../src/core/model.js';
import { fake, only, run, sent, TOKEN, useFakeAgent } from '../support/cli-harness.js';

describe('ipferry CLI', () => {
  useFakeAgent();

  describe('mesh', () => {
    let dir = '';
    before(() => {
      dir = mkdtempSync(join(tmpdir(), 'ipferry-mesh-'));
    });
    after(() => {
      rmSync(dir, { recursive: true, force: true });
    });

    const policy: MeshPolicy = {
      overlay: '192.168.0.0/18',
      maxChange: 2,
      fleet: { openPorts: ['tcp/443'], sshAllow: ['192.0.2.0/24'] },
      sites: {
        fra: { lans: ['10.1.0.0/16'] },
        ams: { lans: ['10.2.0.0/16'], openPorts: ['udp/53'], rejectAll: true },
      },
      nodes: {
        web1: { rejectAll: true, natOverrides: { '192.168.0.9': '198.51.100.9' } },
      },
    };
    const previous: MeshPolicy = { ...policy, nodes: {} };
    const onTrial: MeshView = {
      record: {
        policy,
        trial: { previous, deadline: '2026-03-01T12:05:00.000Z' },
        updatedAt: '2026-03-01T12:00:00.000Z',
      },
      inForce: policy,
      rolledBack: false,
      confirmation: { revision: 40, at: '2026-02-28T09:00:00.000Z' },
      revision: 57,
    };
    const MESH_LINES = [
      'overlay:       192.168.0.0/18',
      'max change:    2',
      'fleet:         open tcp/443; ssh 192.0.2.0/24',
      'site ams:      lans 10.2.0.0/16; open udp/53; reject_all on',
      'site fra:      lans 10.1.0.0/16',
    ];

    it('show prints the policy in force, its trial and deadline, and the latest confirmation', async () => {
      fake.reply('GET /v1/mesh', 200, onTrial);
      const r = await run(['mesh', 'show']);
      assert.equal(r.code, 0, r.err);
      assert.equal(
        r.out,
        [
          'policy:        set 2026-03-01T12:00:00.000Z',
          'trial:         until 2026-03-01T12:05:00.000Z: `ipferry mesh confirm` keeps it, else every node goes back to the previous policy',
          'rolled back:   no',
          'last confirm:  2026-02-28T09:00:00.000Z: released holds up to revision 40',
          'revision:      57',
          ...MESH_LINES,
          'node web1:     reject_all on; nat 192.168.0.9->198.51.100.9',
          '',
        ].join('\n'),
      );
      assert.deepEqual(sent(), [{ method: 'GET', url: '/v1/mesh', body: undefined }]);
    });

    it('show says when a trial ran out and shows the previous policy, or that there is none', async () => {
      const rollback = {
        at: '2026-03-01T12:05:00.000Z',
        changedAt: '2026-03-01T12:00:00.000Z',
        policy,
      };
      const ranOut = [
        'trial:         ran out unconfirmed at 2026-03-01T12:05:00.000Z: `ipferry mesh confirm` is refused',
        'rolled back:   yes, at 2026-03-01T12:05:00.000Z: every node went back; `ipferry mesh set` applies the change again',
        'last confirm:  2026-02-28T09:00:00.000Z: released holds up to revision 40',
      ];
      // Before an agent wrote the rollback (the record still holds the trial), and after (the
      // record holds the previous policy): the same story.
      for (const view of [
        { ...onTrial, inForce: previous, rolledBack: true, rollback },
        {
          ...onTrial,
          record: { policy: previous, updatedAt: '2026-03-01T12:05:01.000Z' },
          inForce: previous,
          rolledBack: true,
          rollback,
          revision: 58,
        },
      ]) {
        fake.reset();
        fake.reply('GET /v1/mesh', 200, view);
        const back = await run(['mesh', 'show']);
        assert.equal(back.code, 0, back.err);
        assert.equal(
          back.out,
          [
            'policy:        the one before the change of 2026-03-01T12:00:00.000Z (below)',
            ...ranOut,
            `revision:      ${view.revision}`,
            ...MESH_LINES,
            '',
          ].join('\n'),
        );
      }
      // A first policy that ran out: no policy at all now.
      fake.reset();
      fake.reply('GET /v1/mesh', 200, {
        rolledBack: true,
        rollback,
        confirmation: onTrial.confirmation,
        revision: 0,
      });
      const gone = await run(['mesh', 'show']);
      assert.equal(
        gone.out,
        [
          'policy:        none in force: the change of 2026-03-01T12:00:00.000Z was the first policy',
          ...ranOut,
          'revision:      0',
          '',
        ].join('\n'),
      );
      fake.reset();
      fake.reply('GET /v1/mesh', 200, { rolledBack: false, revision: 3 });
      const none = await run(['mesh', 'show']);
      assert.equal(
        none.out,
        [
          'policy:        none: set one with `ipferry mesh set --file POLICY.yaml`',
          'last confirm:  -',
          'revision:      3',
          '',
        ].join('\n'),
      );
      const asJson = await run(['mesh', 'show', '--json']);
      assert.deepEqual(JSON.parse(asJson.out), { rolledBack: false, revision: 3 });
    });

    it('set reads a YAML or JSON policy file and sends it, with --confirm-within in seconds', async () => {
      const yamlFile = join(dir, 'mesh.yaml');
      writeFileSync(
        yamlFile,
        [
          'overlay: 192.168.0.0/18',
          'maxChange: 2',
          'fleet:',
          '  openPorts: [tcp/443]',
          '  sshAllow: [192.0.2.0/24]',
          'sites:',
          '  fra: { lans: [10.1.0.0/16] }',
          'nodes:',
          '  web1: { rejectAll: true }',
          '',
        ].join('\n'),
      );
      const expected = {
        overlay: '192.168.0.0/18',
        maxChange: 2,
        fleet: { openPorts: ['tcp/443'], sshAllow: ['192.0.2.0/24'] },
        sites: { fra: { lans: ['10.1.0.0/16'] } },
        nodes: { web1: { rejectAll: true } },
      };
      const record: MeshPolicyRecord = {
        policy: expected,
        trial: { previous: null, deadline: '2026-03-01T12:05:00.000Z' },
        updatedAt: '2026-03-01T12:00:00.000Z',
      };
      fake.reply('PUT /v1/mesh/policy', 200, record);
      const r = await run(['mesh', 'set', '--file', yamlFile, '--confirm-within', '5m']);
      assert.equal(r.code, 0, r.err);
      assert.deepEqual(sent(), [
        {
          method: 'PUT',
          url: '/v1/mesh/policy',
          body: { policy: expected, confirmWithinSeconds: 300 },
        },
      ]);
      assert.equal(
        r.out,
        [
          'policy:  set 2026-03-01T12:00:00.000Z: overlay 192.168.0.0/18, 1 site(s), 1 node layer(s)',
          'trial:   until 2026-03-01T12:05:00.000Z: `ipferry mesh confirm` keeps it, else the mesh goes away (there was no policy before)',
          '',
        ].join('\n'),
      );

      fake.reset();
      const jsonFile = join(dir, 'mesh.json');
      writeFileSync(jsonFile, JSON.stringify(expected));
      fake.reply('PUT /v1/mesh/policy', 200, { policy: expected, updatedAt: 't' });
      const plain = await run(['mesh', 'set', '--file', jsonFile]);
      assert.equal(plain.code, 0, plain.err);
      assert.deepEqual(only().body, { policy: expected }, 'no trial without --confirm-within');
      assert.match(plain.out, /^trial: +none \(confirmed\)$/m);
    });

    it('set refuses an unreadable or broken file and a bad duration without sending anything', async () => {
      const broken = join(dir, 'broken.yaml');
      writeFileSync(broken, 'overlay: 192.168.0.0/18\nfleet: [unclosed\n');
      let r = await run(['mesh', 'set', '--file', broken]);
      assert.equal(r.code, 1);
      assert.match(
        r.err,
        /^error IPF_E_CONFIG: Configuration --file .*broken\.yaml is invalid: is not valid YAML or JSON at line \d+$/m,
      );
      assert.match(r.err, /^hint: /m);
      r = await run(['mesh', 'set', '--file', join(dir, 'missing.yaml')]);
      assert.equal(r.code, 1);
      assert.match(r.err, /IPF_E_CONFIG.*cannot be read \(ENOENT\)/);
      r = await run(['mesh', 'set', '--file', broken, '--confirm-within', '5x']);
      assert.equal(r.code, 2);
      assert.match(r.err, /IPF_E_USAGE.*duration such as 90s/);
      r = await run(['mesh', 'set']);
      assert.equal(r.code, 2);
      assert.match(r.err, /--file/);
      assert.equal(fake.requests.length, 0);
    });

    it('set reports the agent’s validation problems, exit 1', async () => {
      const file = join(dir, 'bad-ports.yaml');
      writeFileSync(file, 'overlay: 192.168.0.0/18\nfleet: { openPorts: [tcp/70000] }\n');
      fake.reply('PUT /v1/mesh/policy', 400, {
        error: {
          code: 'IPF_E_VALIDATION',
          message: 'The request is invalid: fleet.openPorts[0]: must be a port 1–65535',
          hint: 'Fix every problem listed in "problems" and try again.',
          problems: [{ path: 'fleet.openPorts[0]', message: 'must be a port 1–65535' }],
        },
      });
      const r = await run(['mesh', 'set', '--file', file]);
      assert.equal(r.code, 1);
      assert.equal(r.out, '');
      assert.match(r.err, /^error IPF_E_VALIDATION: .*fleet\.openPorts\[0\]/m);
    });

    it('reject-all switches one node in the policy in force and sets it, as a trial', async () => {
      fake.reply('GET /v1/nodes/web2', 200, { name: 'web2' });
      // The last trial ran out: the previous policy is what the nodes run and what changes.
      fake.reply('GET /v1/mesh', 200, { ...onTrial, inForce: previous, rolledBack: true });
      const next = { ...previous, nodes: { web2: { rejectAll: true } } };
      fake.reply('PUT /v1/mesh/policy', 200, {
        policy: next,
        trial: { previous, deadline: '2026-03-01T13:01:30.000Z' },
        updatedAt: '2026-03-01T13:00:00.000Z',
      });
      const r = await run(['mesh', 'reject-all', 'web2', 'on', '--confirm-within', '90s']);
      assert.equal(r.code, 0, r.err);
      assert.deepEqual(
        sent().map((s) => `${s.method} ${s.url}`),
        ['GET /v1/nodes/web2', 'GET /v1/mesh', 'PUT /v1/mesh/policy'],
      );
      assert.deepEqual(sent()[2]?.body, { policy: next, confirmWithinSeconds: 90 });
      assert.equal(
        r.out,
        [
          'reject_all:  on for node web2',
          'trial:       until 2026-03-01T13:01:30.000Z: `ipferry mesh confirm` keeps it, else every node goes back to the previous policy',
          '',
        ].join('\n'),
      );

      fake.reset();
      fake.reply('GET /v1/nodes/web1', 200, { name: 'web1' });
      fake.reply('GET /v1/mesh', 200, { ...onTrial, record: { policy, updatedAt: 't' } });
      fake.reply('PUT /v1/mesh/policy', 200, { policy, updatedAt: 't' });
      const off = await run(['mesh', 'reject-all', 'web1', 'off']);
      assert.equal(off.code, 0, off.err);
      assert.deepEqual(sent()[2]?.body, {
        policy: {
          ...policy,
          nodes: {
            web1: { rejectAll: false, natOverrides: { '192.168.0.9': '198.51.100.9' } },
          },
        },
      });
    });

    it('reject-all refuses a bad state, an unknown node and a mesh without policy', async () => {
      let r = await run(['mesh', 'reject-all', 'web1', 'maybe']);
      assert.equal(r.code, 2);
      assert.match(r.err, /IPF_E_USAGE.*Allowed choices are on, off/);
      assert.equal(fake.requests.length, 0);

      fake.reply('GET /v1/nodes/web9', 404, {
        error: {
          code: 'IPF_E_NODE_NOT_FOUND',
          message: 'Node web9 is not known.',
          hint: 'Check `ipferry node list`.',
        },
      });
      r = await run(['mesh', 'reject-all', 'web9', 'on']);
      assert.equal(r.code, 1);
      assert.match(r.err, /IPF_E_NODE_NOT_FOUND/);
      assert.deepEqual(
        sent().map((s) => s.url),
        ['/v1/nodes/web9'],
      );

      fake.reset();
      fake.reply('GET /v1/nodes/web1', 200, { name: 'web1' });
      fake.reply('GET /v1/mesh', 200, { rolledBack: false, revision: 3 });
      r = await run(['mesh', 'reject-all', 'web1', 'on']);
      assert.equal(r.code, 1);
      assert.match(r.err, /^error IPF_E_MESH_NOT_CONFIGURED: No mesh policy is set\.$/m);
      assert.ok(!sent().some((s) => s.method === 'PUT'), 'nothing set');
    });

    it('confirm posts and says what it kept and released', async () => {
      fake.reply('POST /v1/mesh/confirm', 200, {
        confirmedTrial: true,
        confirmation: { revision: 61, at: 't' },
        released: [],
      });
      const r = await run(['mesh', 'confirm']);
      assert.equal(r.code, 0, r.err);
      assert.deepEqual(only(), {
        method: 'POST',
        url: '/v1/mesh/confirm',
        authorization: `Bearer ${TOKEN}`,
        contentType: 'application/json',
        body: {},
      });
      assert.equal(
        r.out,
        [
          'confirmed:  the policy on trial: it stays',
          'released:   nothing: no node reported a membership change held back (revision 61)',
          '',
        ].join('\n'),
      );
      // Only what it did: no trial, the holds it released.
      fake.reset();
      fake.reply('POST /v1/mesh/confirm', 200, {
        confirmedTrial: false,
        confirmation: { revision: 70, at: 't' },
        released: [
          {
            node: 'web1',
            hold: { keeping: ['192.168.0.3', '192.168.0.4'], maxChange: 1, sinceRevision: 66 },
          },
          { node: 'web2', hold: { keeping: ['192.168.0.3'], maxChange: 0, sinceRevision: 67 } },
        ],
      });
      const holds = await run(['mesh', 'confirm']);
      assert.equal(
        holds.out,
        [
          'confirmed:  nothing: no policy change was on trial',
          'released:   web1: 2 departed member(s) (192.168.0.3, 192.168.0.4), dropped now',
          '            web2: 1 departed member(s) (192.168.0.3), dropped now',
          '',
        ].join('\n'),
      );
      fake.reset();
      fake.reply('POST /v1/mesh/confirm', 200, {
        confirmedTrial: false,
        trialDeadline: '2026-03-01T12:05:00.000Z',
        confirmation: { revision: 71, at: 't' },
        released: [],
      });
      const holdsOnly = await run(['mesh', 'confirm', '--holds-only']);
      assert.deepEqual(sent()[0]?.body, { holdsOnly: true });
      assert.match(
        holdsOnly.out,
        /^confirmed: +nothing \(--holds-only\): the policy on trial still rolls back at 2026-03-01T12:05:00\.000Z unless confirmed$/m,
      );
      fake.reset();
      fake.reply('POST /v1/mesh/confirm', 409, {
        error: {
          code: 'IPF_E_MESH_NO_TRIAL',
          message: 'The mesh policy change of a was not confirmed by its deadline, b: …',
          hint: 'To apply it after all, set it again.',
        },
      });
      const late = await run(['mesh', 'confirm']);
      assert.equal(late.code, 1);
      assert.equal(late.out, '');
      assert.match(late.err, /^error IPF_E_MESH_NO_TRIAL: /m);
    });

    const audit: MeshAudit = {
      revision: 88,
      overlay: { prefix: '192.168.0.0/18', used: 4, size: 16382 },
      unregistered: [
        { name: 'db-main', addresses: ['10.2.0.50', '203.0.113.50'], site: 'ams', line: 3 },
        { name: 'mail', addresses: ['10.1.0.25'], line: 7 },
      ],
      unlisted: ['gw1'],
      lagging: [
        { node: 'web2', appliedRevision: 80, alive: true },
        { node: 'web3', alive: false },
        { node: 'web4', appliedRevision: 77, alive: false },
      ],
      rejectAll: { on: ['web1'], off: ['gw1', 'web2', 'web3'] },
      holds: [
        {
          node: 'web1',
          hold: { keeping: ['192.168.0.4', '192.168.0.5'], maxChange: 1, sinceRevision: 85 },
        },
      ],
      rolledBack: [],
    };

    it('audit sends the inventory file with its name and prints one section per finding', async () => {
      const inventory = join(dir, 'hosts.txt');
      const text = 'web1 10.1.0.11\ndb-main 10.2.0.50,203.0.113.50 site=ams\n';
      writeFileSync(inventory, text);
      fake.reply('POST /v1/mesh/audit', 200, audit);
      const r = await run(['mesh', 'audit', '--inventory', inventory]);
      assert.equal(r.code, 0, r.err);
      assert.deepEqual(only().body, { inventory: text, source: inventory });
      assert.equal(
        r.out,
        [
          'revision: 88',
          'overlay:  4 of 16382 addresses used (192.168.0.0/18)',
          '',
          'unregistered hosts (2):',
          '  db-main  10.2.0.50,203.0.113.50  site=ams  (line 3)',
          '  mail  10.1.0.25  (line 7)',
          'unlisted nodes (1):',
          '  gw1',
          'lagging nodes (3):',
          '  web2  applied revision 80',
          '  web3  not alive; no applied revision known',
          '  web4  not alive; last applied revision 77',
          'reject_all on (1):',
          '  web1',
          'reject_all off (3):',
          '  gw1',
          '  web2',
          '  web3',
          'holds (1):',
          '  web1  keeping 2 departed member(s) (192.168.0.4, 192.168.0.5), max change 1, since revision 85: `ipferry mesh confirm` releases it',
          'rolled back (0):',
          '  none',
          '',
        ].join('\n'),
      );
      const asJson = await run(['mesh', 'audit', '--inventory', inventory, '--json']);
      assert.deepEqual(JSON.parse(asJson.out), audit);
    });

    it('audit without an inventory sends an empty body and says which sections need one', async () => {
      fake.reply('POST /v1/mesh/audit', 200, { ...audit, unregistered: [], unlisted: [] });
      const r = await run(['mesh', 'audit']);
      assert.equal(r.code, 0, r.err);
      assert.deepEqual(only().body, {});
      assert.match(
        r.out,
        /^unregistered hosts:\n {2}\(no inventory given\)\nunlisted nodes:\n {2}\(no inventory given\)$/m,
      );
    });

    it('audit reports an inventory line that does not parse (exit 1) and an unreadable file', async () => {
      const inventory = join(dir, 'bad-hosts.txt');
      writeFileSync(inventory, 'web1 10.1.0.11\nweb2 10.2.0.300\n');
      fake.reply('POST /v1/mesh/audit', 400, {
        error: {
          code: 'IPF_E_INVENTORY',
          message: `${inventory} line 2: "10.2.0.300" is not an IP address`,
          hint: 'Write one host per line: NAME ADDRESS[,ADDRESS…] [site=SITE]; "#" starts a comment.',
        },
      });
      let r = await run(['mesh', 'audit', '--inventory', inventory]);
      assert.equal(r.code, 1);
      assert.equal(r.out, '');
      assert.equal(
        r.err,
        [
          `error IPF_E_INVENTORY: ${inventory} line 2: "10.2.0.300" is not an IP address`,
          'hint: Write one host per line: NAME ADDRESS[,ADDRESS…] [site=SITE]; "#" starts a comment.',
          '',
        ].join('\n'),
      );
      fake.reset();
      r = await run(['mesh', 'audit', '--inventory', join(dir, 'nope.txt')]);
      assert.equal(r.code, 1);
      assert.match(
        r.err,
        /IPF_E_CONFIG: Configuration --inventory .*nope\.txt is invalid: cannot be read/,
      );
      assert.equal(fake.requests.length, 0);
    });

    const meshNode = (over: Partial<NodeView>): NodeView => ({
      name: 'web1',
      site: 'fra',
      addresses: ['10.1.0.11'],
      reservedPorts: [],
      registeredAt: 't',
      alive: true,
      ...over,
    });

    it('status prints one row per node from its agent’s mesh report', async () => {
      fake.reply('GET /v1/nodes', 200, [
        meshNode({
          name: 'gw1',
          overlayIp: '192.168.0.1',
          mesh: { appliedRevision: 88, rejectAll: false, members: 3 },
        }),
        meshNode({
          overlayIp: '192.168.0.11',
          mesh: {
            appliedRevision: 85,
            rejectAll: true,
            members: 3,
            hold: { keeping: ['192.168.0.4', '192.168.0.5'], maxChange: 1, sinceRevision: 85 },
            rolledBack: true,
          },
        }),
        meshNode({ name: 'new1', site: undefined, alive: false }),
      ]);
      const r = await run(['mesh', 'status']);
      assert.equal(r.code, 0, r.err);
      assert.equal(
        r.out,
        [
          'NAME  SITE  OVERLAY       ALIVE  APPLIED  REJECT_ALL  MEMBERS  HOLD  ROLLED_BACK',
          'gw1   fra   192.168.0.1   yes    88       off         3        -     no',
          'web1  fra   192.168.0.11  yes    85       on          3        2     yes',
          'new1  -     -             no     -        -           -        -     -',
          '',
        ].join('\n'),
      );
    });

    it('node show prints the mesh report with its hold', async () => {
      fake.reply(
        'GET /v1/nodes/web1',
        200,
        meshNode({
          overlayIp: '192.168.0.11',
          mesh: {
            appliedRevision: 85,
            rejectAll: true,
            members: 3,
            hold: { keeping: ['192.168.0.4'], maxChange: 0, sinceRevision: 85 },
          },
        }),
      );
      const r = await run(['node', 'show', 'web1']);
      assert.equal(r.code, 0, r.err);
      assert.match(r.out, /^overlay: +192\.168\.0\.11$/m);
      assert.match(
        r.out,
        /^mesh: +applied revision 85, reject_all on, 3 member\(s\)\n +hold: keeping 1 departed member\(s\) \(192\.168\.0\.4\), max change 0, since revision 85$/m,
      );
    });

    it('node remove deletes the node and says its overlay address is free; in use is exit 1', async () => {
      fake.reply('DELETE /v1/nodes/old1', 200, {
        name: 'old1',
        removed: true,
        overlayIp: '192.168.0.7',
      });
      const r = await run(['node', 'remove', 'old1']);
      assert.equal(r.code, 0, r.err);
      assert.deepEqual(sent(), [{ method: 'DELETE', url: '/v1/nodes/old1', body: undefined }]);
      assert.equal(r.out, 'removed node old1 (overlay address 192.168.0.7 is free again)\n');
      fake.reset();
      fake.reply('DELETE /v1/nodes/gw1', 409, {
        error: {
          code: 'IPF_E_NODE_IN_USE',
          message: 'Node gw1 is still in use: pool public.',
          hint: 'Move its floating IPs elsewhere and give its pools another gateway first.',
        },
      });
      const used = await run(['node', 'remove', 'gw1']);
      assert.equal(used.code, 1);
      assert.match(used.err, /^error IPF_E_NODE_IN_USE: Node gw1 is still in use: pool public\.$/m);
    });
  });
});
