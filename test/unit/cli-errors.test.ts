/**
 * Errors and exit codes of the CLI against the in-process fake agent (test/support/cli-harness.ts):
 * how refusals, unreachable agents, usage errors and help are printed, and their exit codes.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { RemoteError } from '../../src/client/api-client.js';
import { closedPort, fake, run, TOKEN, useFakeAgent } from '../support/cli-harness.js';

describe('ipferry CLI', () => {
  useFakeAgent();

  describe('errors and exit codes', () => {
    const validation = {
      error: {
        code: 'IPF_E_VALIDATION',
        message: 'The request is invalid: 2 problems',
        hint: 'Fix every problem listed in "problems" and try again.',
        problems: [
          { path: 'entries[0]', message: 'not a CIDR' },
          { path: 'gateway', message: 'unknown node' },
        ],
      },
    };

    it('prints the error, its problems and its hint; exit 1', async () => {
      fake.reply('POST /v1/pools', 400, validation);
      const r = await run(['pool', 'create', 'p', '--gateway', 'nope', '--cidr', 'x']);
      assert.equal(r.code, 1);
      assert.equal(r.out, '');
      assert.equal(
        r.err,
        [
          'error IPF_E_VALIDATION: The request is invalid: 2 problems',
          '  - entries[0]: not a CIDR',
          '  - gateway: unknown node',
          'hint: Fix every problem listed in "problems" and try again.',
          '',
        ].join('\n'),
      );
    });

    it('--json prints the ErrorBody on stderr', async () => {
      fake.reply('POST /v1/pools', 400, validation);
      const r = await run(['--json', 'pool', 'create', 'p', '--gateway', 'nope', '--cidr', 'x']);
      assert.equal(r.code, 1);
      assert.equal(r.out, '');
      assert.deepEqual(JSON.parse(r.err), validation);
    });

    it('keeps the code, message and hint of an error this CLI does not know', async () => {
      const body = {
        error: {
          code: 'IPF_E_FROM_THE_FUTURE',
          message: 'Something new.',
          hint: 'Upgrade the CLI.',
        },
      };
      fake.reply('GET /v1/status', 418, body);
      const human = await run(['status']);
      assert.equal(human.code, 1);
      assert.equal(
        human.err,
        'error IPF_E_FROM_THE_FUTURE: Something new.\nhint: Upgrade the CLI.\n',
      );
      const asJson = await run(['status', '--json']);
      assert.deepEqual(JSON.parse(asJson.err), body);
    });

    it('reconstructs a known error as that IpferryError code', () => {
      const e = new RemoteError(404, {
        code: 'IPF_E_POOL_NOT_FOUND',
        message: 'Pool x does not exist.',
        hint: 'List pools.',
      });
      assert.equal(e.code, 'IPF_E_POOL_NOT_FOUND');
      assert.equal(e.status, 404);
      assert.equal(e.message, 'Pool x does not exist.');
      assert.equal(e.hint, 'List pools.');
      const unknown = new RemoteError(500, { code: 'IPF_E_NEW', message: 'm', hint: 'h' });
      assert.equal(unknown.code, 'IPF_E_INTERNAL');
      assert.equal(unknown.remoteCode, 'IPF_E_NEW');
    });

    it('reports an answer that is not an ipferry error', async () => {
      fake.replyRaw('GET /v1/status', 502, '<html>Bad Gateway</html>');
      const r = await run(['status']);
      assert.equal(r.code, 1);
      assert.match(
        r.err,
        /^error IPF_E_INTERNAL: The server answered GET \/v1\/status with HTTP 502 but no ipferry error: <html>Bad Gateway<\/html>$/m,
      );
    });

    it('exit 3 when the agent cannot be reached', async () => {
      const server = await closedPort();
      const r = await run(['fip', 'list'], { IPFERRY_TOKEN: TOKEN }, server);
      assert.equal(r.code, 3);
      assert.match(
        r.err,
        new RegExp(
          `^error IPF_E_UNREACHABLE: Cannot reach the agent at ${server.replace(/\./g, '\\.')}: .*ECONNREFUSED`,
          'm',
        ),
      );
      assert.match(r.err, /^hint: /m);
    });

    it('exit 2 for usage errors: unknown command, unknown option, extra argument, bad --server', async () => {
      const cases: [string[], RegExp][] = [
        [['bogus'], /^error IPF_E_USAGE: unknown command 'bogus'$/m],
        [['fip', 'list', '--bogus'], /^error IPF_E_USAGE: unknown option '--bogus'$/m],
        [
          ['fip', 'show', '192.0.2.1', 'extra'],
          /^error IPF_E_USAGE: too many arguments for 'show'/m,
        ],
        [['fip', 'show'], /^error IPF_E_USAGE: missing required argument 'fip'$/m],
      ];
      for (const [args, pattern] of cases) {
        const r = await run(args);
        assert.equal(r.code, 2, args.join(' '));
        assert.match(r.err, pattern);
      }
      const badServer = await run(['fip', 'list'], { IPFERRY_TOKEN: TOKEN }, 'ftp://example.net');
      assert.equal(badServer.code, 2);
      assert.match(
        badServer.err,
        /^error IPF_E_USAGE: --server ftp:\/\/example\.net: the scheme must be http or https$/m,
      );
      const jsonUsage = await run([
        '--json',
        'fip',
        'associate',
        '192.0.2.1',
        '--target',
        'x',
        '--mode',
        'foo',
      ]);
      assert.equal(jsonUsage.code, 2);
      assert.equal(
        (JSON.parse(jsonUsage.err) as { error: { code: string } }).error.code,
        'IPF_E_USAGE',
      );
      assert.equal(fake.requests.length, 0);
    });

    it('reports a mistyped flag as unknown, with the flag meant, before any required one it hides', async () => {
      const typo = await run([
        'forward',
        'add',
        '192.0.2.2',
        '--proto',
        'tcp',
        '--port',
        '25',
        '--traget',
        '10.0.0.5',
      ]);
      assert.equal(typo.code, 2);
      assert.match(
        typo.err,
        /^error IPF_E_USAGE: unknown option '--traget' \(did you mean --target\?\)$/m,
      );
      const gateway = await run([
        'pool',
        'create',
        'p',
        '--gatway',
        'gw1',
        '--cidr',
        '192.0.2.0/30',
      ]);
      assert.match(gateway.err, /unknown option '--gatway' \(did you mean --gateway\?\)$/m);
      const command = await run(['fip', 'lsit']);
      assert.match(
        command.err,
        /^error IPF_E_USAGE: unknown command 'lsit' \(did you mean list\?\)$/m,
      );
      // Without a typo, a missing required flag is still named.
      const missing = await run(['forward', 'add', '192.0.2.2', '--proto', 'tcp', '--port', '25']);
      assert.equal(missing.code, 2);
      assert.match(
        missing.err,
        /^error IPF_E_USAGE: required option '--target <ip>' not specified$/m,
      );
      assert.match(missing.err, /^hint: Run `ipferry forward add --help` for usage\.$/m);
      assert.equal(fake.requests.length, 0);
    });

    it('names --confirm-within, not the API field, for a trial longer than the agent allows', async () => {
      const r = await run(['mesh', 'set', '--file', '/nonexistent.yaml', '--confirm-within', '8d']);
      assert.equal(r.code, 2);
      assert.match(
        r.err,
        /^error IPF_E_USAGE: option '--confirm-within <duration>' argument '8d' is invalid\. At most 604800 seconds \(7 days\)\.$/m,
      );
      assert.doesNotMatch(r.err, /confirmWithinSeconds/);
      assert.equal(fake.requests.length, 0);
    });

    it('https:// against an agent that serves plain HTTP says so, exit 3', async () => {
      const r = await run(
        ['fip', 'list'],
        { IPFERRY_TOKEN: TOKEN },
        fake.url.replace('http:', 'https:'),
      );
      assert.equal(r.code, 3);
      assert.match(
        r.err,
        /^error IPF_E_NOT_TLS: The agent at https:\/\/127\.0\.0\.1:\d+ does not speak TLS\.$/m,
      );
      assert.match(r.err, /^hint: Use http:\/\/ in --server .*--tls-cert and --tls-key\.$/m);
      assert.doesNotMatch(r.err, /SSL routines|openssl/i);
    });

    it('help is exit 0 on stdout; a group without a subcommand prints help on stderr, exit 2', async () => {
      const help = await run(['fip', '--help']);
      assert.equal(help.code, 0);
      assert.match(help.out, /^Usage: ipferry fip \[options\] \[command\]/);
      assert.match(help.out, /associate \[options\] <fip>/);
      const top = await run(['--help']);
      assert.equal(top.code, 0);
      assert.match(top.out, /getip \[options\] <private-ip>/);
      const group = await run(['fip']);
      assert.equal(group.code, 2);
      assert.equal(group.out, '');
      assert.match(group.err, /^Usage: ipferry fip/);
    });
  });
});
