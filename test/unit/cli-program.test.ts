/**
 * The CLI's program (which options reach which command) and the table and details printers.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CliContext } from '../../src/cli/context.js';
import { details, table } from '../../src/cli/format.js';
import { buildProgram } from '../../src/cli/main.js';

describe('ipferry CLI', () => {
  describe('program', () => {
    it('`agent --token-file` reaches the agent’s own option, not the client’s', async () => {
      const ctx = new CliContext({
        io: { out: () => undefined, err: () => undefined },
        env: {},
        flags: () => ({}),
        version: '0',
      });
      const program = buildProgram(ctx, '0');
      const agent = program.commands.find((c) => c.name() === 'agent')!;
      let seen: Record<string, unknown> = {};
      agent.action((flags: Record<string, unknown>) => {
        seen = flags;
      });
      await program.parseAsync(['node', 'ipferry', 'agent', '--token-file', '/etc/ipferry/tokens']);
      assert.equal(seen['tokenFile'], '/etc/ipferry/tokens');
      assert.equal(program.opts()['tokenFile'], undefined);
    });
  });

  describe('printers', () => {
    it('table aligns columns, capitalises headers and trims trailing spaces', () => {
      assert.equal(
        table(
          ['a', 'long header'],
          [
            ['xxxx', ''],
            ['y', 'z'],
          ],
        ),
        'A     LONG HEADER\nxxxx\ny     z\n',
      );
      assert.equal(table(['only'], []), 'ONLY\n');
    });

    it('details aligns values and continues lists under the first item', () => {
      assert.equal(
        details([
          ['a', '1'],
          ['longer', ['x', 'y']],
          ['empty', []],
        ]),
        'a:       1\nlonger:  x\n         y\nempty:   -\n',
      );
    });
  });
});
