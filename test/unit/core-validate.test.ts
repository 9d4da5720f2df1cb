import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { IpferryError, type Problem } from '../../src/core/errors.js';
import {
  checkDescription,
  type PoolInput,
  Problems,
  validateAllocate,
  validateAssociate,
  validateForward,
  validateMove,
  validatePool,
  validatePoolUpdate,
  updatedPool,
  ownAddressEntry,
} from '../../src/core/validate.js';
import type { Pool } from '../../src/core/model.js';
import { MAX_POOL_ENTRIES } from '../../src/core/pool.js';

/** `n` distinct single addresses from 10.1.0.0 on, every other one (none adjacent). */
function singles(n: number, base = 0x0a010000): string[] {
  return Array.from({ length: n }, (_, i) => {
    const v = base + i * 2;
    return [v >>> 24, (v >>> 16) & 255, (v >>> 8) & 255, v & 255].join('.');
  });
}

/** Runs `fn`, expects an IPF_E_VALIDATION and returns its problems. */
function problemsOf(fn: () => unknown): readonly Problem[] {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof IpferryError, `expected an IpferryError, got ${String(e)}`);
    assert.equal(e.code, 'IPF_E_VALIDATION');
    assert.equal(e.status, 400);
    assert.ok(e.problems.length > 0, 'a validation error lists its problems');
    assert.deepEqual(e.toJSON().error.problems, e.problems);
    return e.problems;
  }
  assert.fail('expected IPF_E_VALIDATION, but nothing was thrown');
}

function pathsOf(fn: () => unknown): string[] {
  return problemsOf(fn).map((p) => p.path);
}

const pool = (input: PoolInput): PoolInput => ({ name: 'p1', gateway: 'gw1', ...input });

void describe('core/validate: validatePool', () => {
  void it('reports every problem at once', () => {
    const problems = problemsOf(() =>
      validatePool({
        name: 'Bad Name',
        gateway: 'gw1',
        delivery: 'onlink',
        entries: ['203.0.113.0/28', '203.0.113.5', 'nonsense', '192.0.2.5=zz:zz', '010.1.1.1'],
        shared: ['198.51.100.1'],
      }),
    );
    assert.deepEqual(
      problems.map((p) => p.path),
      ['name', 'uplink', 'entries[2]', 'entries[3]', 'entries[4]', 'entries'],
    );
    const byPath = new Map(problems.map((p) => [p.path, p.message]));
    assert.match(byPath.get('name')!, /lower-case letters/);
    assert.match(byPath.get('uplink')!, /uplink interface/);
    assert.match(byPath.get('entries[2]')!, /"nonsense" is not a valid IP address/);
    assert.match(byPath.get('entries[3]')!, /"zz:zz" is not a MAC address/);
    assert.match(byPath.get('entries[4]')!, /"010\.1\.1\.1" is not a valid IP address/);
    assert.equal(
      byPath.get('entries'),
      'entries 203.0.113.0/28 and 203.0.113.5 overlap at 203.0.113.5',
    );
  });

  void it('summarises several problems in the message, one in full', () => {
    try {
      validatePool({ name: 'X', gateway: 'Y', entries: ['192.0.2.1'] });
      assert.fail('expected a throw');
    } catch (e) {
      assert.ok(e instanceof IpferryError);
      assert.equal(e.message, 'The request is invalid: 2 problems');
    }
    try {
      validatePool(pool({ entries: ['192.0.2.1/24'] }));
      assert.fail('expected a throw');
    } catch (e) {
      assert.ok(e instanceof IpferryError);
      assert.match(
        e.message,
        /^The request is invalid: entries\[0\]: "192\.0\.2\.1\/24" is not a CIDR/,
      );
    }
  });

  void it('returns entries in canonical form', () => {
    const valid = validatePool({
      name: 'edge-1',
      gateway: 'gw.a',
      entries: [
        '203.0.113.0/28',
        '198.51.100.10-198.51.100.20',
        '2001:DB8:0:0:0:0:0:0/64',
        '2001:db8:1:0:0:0:0:10-2001:DB8:1::20',
        '192.0.2.5=52-54-00-AB-CD-EF',
        '192.0.2.6=52:54:00:AB:CD:F0',
        '192.0.2.7',
      ],
      shared: ['192.0.2.1'],
      tags: ['zeta', 'alpha', 'zeta'],
      description: 'edge pool',
    });
    assert.deepEqual(valid, {
      name: 'edge-1',
      gateway: 'gw.a',
      delivery: 'routed',
      entries: [
        { kind: 'cidr', cidr: '203.0.113.0/28' },
        { kind: 'range', first: '198.51.100.10', last: '198.51.100.20' },
        { kind: 'cidr', cidr: '2001:db8::/64' },
        { kind: 'range', first: '2001:db8:1::10', last: '2001:db8:1::20' },
        { kind: 'address', address: '192.0.2.5', mac: '52:54:00:ab:cd:ef' },
        { kind: 'address', address: '192.0.2.6', mac: '52:54:00:ab:cd:f0' },
        { kind: 'address', address: '192.0.2.7' },
        { kind: 'address', address: '192.0.2.1', shared: true },
      ],
      description: 'edge pool',
      tags: ['alpha', 'zeta'],
    });
  });

  void it('accepts an on-link pool with its uplink', () => {
    const valid = validatePool(
      pool({ delivery: 'onlink', uplink: 'eth0', entries: ['203.0.113.0/24'] }),
    );
    assert.equal(valid.delivery, 'onlink');
    assert.equal(valid.uplink, 'eth0');
    assert.deepEqual(valid.tags, []);
    assert.equal('description' in valid, false);
  });

  void it('refuses an uplink on a routed pool and bad delivery values', () => {
    assert.deepEqual(
      pathsOf(() => validatePool(pool({ uplink: 'eth0', entries: ['192.0.2.1'] }))),
      ['uplink'],
    );
    assert.deepEqual(
      pathsOf(() => validatePool(pool({ delivery: 'arp', entries: ['192.0.2.1'] }))),
      ['delivery'],
    );
    assert.deepEqual(
      pathsOf(() =>
        validatePool(
          pool({ delivery: 'onlink', uplink: 'a-very-long-interface', entries: ['192.0.2.1'] }),
        ),
      ),
      ['uplink'],
    );
  });

  void it('needs at least one entry', () => {
    assert.deepEqual(
      pathsOf(() => validatePool(pool({ entries: [] }))),
      ['entries'],
    );
    assert.deepEqual(
      pathsOf(() => validatePool(pool({}))),
      ['entries'],
    );
    assert.deepEqual(
      pathsOf(() => validatePool(pool({ entries: '192.0.2.1' }))),
      ['entries'],
    );
    assert.deepEqual(
      pathsOf(() => validatePool(pool({ entries: [42] }))),
      ['entries[0]'],
    );
  });

  void it('refuses pools larger than /8 (IPv4) or /32 (IPv6)', () => {
    const v4 = problemsOf(() => validatePool(pool({ entries: ['10.0.0.0/7'] })));
    assert.deepEqual(v4, [
      {
        path: 'entries[0]',
        message: '10.0.0.0/7 is larger than a floating IP pool can sensibly be (at most /8)',
      },
    ]);
    assert.deepEqual(
      pathsOf(() => validatePool(pool({ entries: ['2001:db8::/31'] }))),
      ['entries[0]'],
    );
    assert.equal(validatePool(pool({ entries: ['10.0.0.0/8'] })).entries.length, 1);
    assert.equal(validatePool(pool({ entries: ['2001:db8::/32'] })).entries.length, 1);
  });

  void it('refuses prefixes with host bits set', () => {
    assert.deepEqual(
      pathsOf(() => validatePool(pool({ entries: ['203.0.113.5/24'] }))),
      ['entries[0]'],
    );
  });

  void it('refuses special addresses as entries', () => {
    const special = [
      '127.0.0.1',
      '224.0.0.1',
      '239.255.255.255',
      '169.254.1.1',
      '0.0.0.0',
      '255.255.255.255',
      '::',
      '::1',
      'fe80::1',
      'febf::1',
      'ff02::1',
      '::ffff:192.0.2.1',
      '::ffff:c000:201',
    ];
    const problems = problemsOf(() => validatePool(pool({ entries: special })));
    assert.deepEqual(
      problems.map((p) => p.path),
      special.map((_, i) => `entries[${i}]`),
    );
    const messages = problems.map((p) => p.message);
    assert.match(messages[0]!, /loopback/);
    assert.match(messages[1]!, /multicast/);
    assert.match(messages[3]!, /link-local/);
    assert.match(messages[4]!, /unspecified/);
    assert.match(messages[5]!, /broadcast/);
    assert.match(messages[6]!, /unspecified/);
    assert.match(messages[7]!, /loopback/);
    assert.match(messages[8]!, /link-local/);
    assert.match(messages[10]!, /multicast/);
    assert.match(messages[11]!, /IPv4-mapped/);
  });

  void it('refuses special addresses as CIDR networks, range ends and shared addresses', () => {
    assert.deepEqual(
      pathsOf(() =>
        validatePool(
          pool({
            entries: [
              '127.0.0.0/8',
              '224.0.0.0/8',
              'fe80::/32',
              '::ffff:0:0/96',
              '127.0.0.1-127.0.0.9',
            ],
            shared: ['169.254.0.1'],
          }),
        ),
      ),
      ['entries[0]', 'entries[1]', 'entries[2]', 'entries[3]', 'entries[4]', 'shared[0]'],
    );
  });

  void it('refuses CIDRs and ranges that reach into special addresses', () => {
    const entries = [
      '126.255.255.0-128.0.0.10', // spans loopback 127/8
      '169.252.0.0/14', // contains link-local 169.254/16
      '223.255.255.0-224.0.0.5', // reaches into multicast
      '255.0.0.0/8', // contains the broadcast address
      '::fffe:0:0/95', // contains IPv4-mapped ::ffff:0:0/96
      'fe7f:ffff::-fe80::5', // reaches into link-local
    ];
    const problems = problemsOf(() => validatePool(pool({ entries })));
    assert.deepEqual(
      problems.map((p) => p.path),
      entries.map((_, i) => `entries[${i}]`),
    );
    assert.match(problems[0]!.message, /127\.0\.0\.0/);
    assert.match(problems[1]!.message, /169\.254\.0\.0/);
    assert.match(problems[2]!.message, /multicast/);
    assert.match(problems[3]!.message, /255\.255\.255\.255/);
    assert.match(problems[4]!.message, /::ffff:0:0/);
    assert.match(problems[5]!.message, /link-local/);
    assert.equal(
      problems[0]!.message,
      '126.255.255.0-128.0.0.10 contains 127.0.0.0, which is a loopback address',
    );
  });

  void it('refuses a shared entry that is not a single address', () => {
    assert.deepEqual(
      pathsOf(() => validatePool(pool({ shared: ['192.0.2.0/30'] }))),
      ['shared[0]'],
    );
    assert.deepEqual(
      pathsOf(() => validatePool(pool({ shared: ['192.0.2.1=52:54:00:12:34:56'] }))),
      ['shared[0]'],
    );
  });

  void it('refuses overlapping entries, including shared against the rest', () => {
    const problems = problemsOf(() =>
      validatePool(
        pool({
          entries: ['192.0.2.0/28', '192.0.2.8-192.0.2.20', '198.51.100.1'],
          shared: ['198.51.100.1'],
        }),
      ),
    );
    assert.deepEqual(problems, [
      {
        path: 'entries',
        message: 'entries 192.0.2.0/28 and 192.0.2.8-192.0.2.20 overlap at 192.0.2.8',
      },
      {
        path: 'entries',
        message: 'entries 198.51.100.1 and 198.51.100.1 (shared) overlap at 198.51.100.1',
      },
    ]);
  });

  void it('does not count the network and broadcast of an on-link IPv4 prefix as overlap', () => {
    const valid = validatePool(
      pool({
        delivery: 'onlink',
        uplink: 'eth0',
        entries: ['203.0.113.0/24', '203.0.113.255'],
      }),
    );
    assert.equal(valid.entries.length, 2);
    assert.deepEqual(
      pathsOf(() => validatePool(pool({ entries: ['203.0.113.0/24', '203.0.113.255'] }))),
      ['entries'],
    );
  });

  void it('refuses malformed IP=MAC entries', () => {
    for (const entry of [
      '192.0.2.5=52:54-00:ab:cd:ef',
      '192.0.2.5=',
      '192.0.2.5=52:54:00:ab:cd:ef=1',
      '192.0.2.5=525400abcdef',
    ]) {
      assert.deepEqual(
        pathsOf(() => validatePool(pool({ entries: [entry] }))),
        ['entries[0]'],
        entry,
      );
    }
    // A bad address and a bad MAC in one entry are both reported.
    assert.deepEqual(
      pathsOf(() => validatePool(pool({ entries: ['1.1=zz'] }))),
      ['entries[0]', 'entries[0]'],
    );
  });

  void it('checks names, gateway, tags and description', () => {
    assert.deepEqual(
      pathsOf(() =>
        validatePool({
          name: '-p',
          gateway: 'g'.repeat(64),
          entries: ['192.0.2.1'],
          tags: ['ok', ' bad', 3],
          description: 'line\nbreak',
        }),
      ),
      ['name', 'gateway', 'description', 'tags[1]', 'tags[2]'],
    );
    assert.deepEqual(
      pathsOf(() => validatePool(pool({ entries: ['192.0.2.1'], description: 'x'.repeat(257) }))),
      ['description'],
    );
    assert.equal(validatePool({ name: 'a', gateway: 'b', entries: ['192.0.2.1'] }).name, 'a');
    assert.equal(
      validatePool(pool({ name: 'a'.repeat(63), entries: ['192.0.2.1'] })).name.length,
      63,
    );
    assert.deepEqual(
      pathsOf(() => validatePool(pool({ name: 'a'.repeat(64), entries: ['192.0.2.1'] }))),
      ['name'],
    );
  });
});

/**
 * A description reaches people through terminals, dashboards and logs: the API refuses what a
 * terminal would act on instead of showing (issue 12, finding 8), naming the character without
 * writing it, wherever a description is taken.
 */
void describe('core/validate: descriptions a terminal cannot show', () => {
  const refused: readonly [string, string, string][] = [
    ['NUL', 'a\u0000b', 'U+0000 at character 2'],
    ['ESC', '\u001b[31mred', 'U+001B at character 1'],
    ['a newline', 'line\nbreak', 'U+000A at character 5'],
    ['DEL', 'x\u007f', 'U+007F at character 2'],
    ['the first C1 control (U+0080)', 'x\u0080', 'U+0080 at character 2'],
    ['NEL (U+0085)', 'x\u0085y', 'U+0085 at character 2'],
    ['CSI as C1 (U+009B)', 'x\u009b31m', 'U+009B at character 2'],
    ['the last C1 control (U+009F)', '\u009f', 'U+009F at character 1'],
    ['RIGHT-TO-LEFT OVERRIDE', 'web \u202e4.3.2.1', 'U+202E at character 5'],
    ['LEFT-TO-RIGHT EMBEDDING', '\u202ax', 'U+202A at character 1'],
    ['POP DIRECTIONAL FORMATTING', 'x\u202c', 'U+202C at character 2'],
    ['LEFT-TO-RIGHT ISOLATE', '\u2066x', 'U+2066 at character 1'],
    ['POP DIRECTIONAL ISOLATE', 'x\u2069', 'U+2069 at character 2'],
    ['LEFT-TO-RIGHT MARK', 'x\u200e', 'U+200E at character 2'],
    ['RIGHT-TO-LEFT MARK', 'x\u200f', 'U+200F at character 2'],
    ['ARABIC LETTER MARK', 'x\u061c', 'U+061C at character 2'],
    ['LINE SEPARATOR', 'a\u2028b', 'U+2028 at character 2'],
    ['PARAGRAPH SEPARATOR', 'a\u2029b', 'U+2029 at character 2'],
    // Counted in characters, not UTF-16 units: an emoji before it is one.
    ['an override after an emoji', '🚀\u202e', 'U+202E at character 2'],
  ];

  for (const [what, description, where] of refused) {
    void it(`refuses ${what} in every description the API takes`, () => {
      const everywhere = [
        () => validatePool(pool({ entries: ['192.0.2.1'], description })),
        () => validatePoolUpdate({ description }),
        () => validateAllocate({ description }),
        () => validateForward({ protocol: 'tcp', port: 80, target: '10.0.0.1', description }),
      ];
      for (const fn of everywhere) {
        const problems = problemsOf(fn);
        assert.deepEqual(
          problems.map((x) => x.path),
          ['description'],
        );
        const message = problems[0]?.message ?? '';
        assert.ok(message.includes(where), message);
        assert.match(message, /control characters, bidirectional controls or line separators/);
        // The message names the character; it does not carry it.
        assert.ok(!message.includes(description), message);
      }
    });
  }

  void it('takes text of any script, symbols and emoji, up to 256 characters', () => {
    for (const description of [
      'web server',
      'café – ünïcödé',
      'שרת אינטרנט',
      'خادم الويب',
      '日本語',
      'emoji 🚀',
      'tab-less\\backslash',
      // Neighbours of the refused ranges: NBSP, ZWSP/ZWNJ/ZWJ, NARROW NBSP, WORD JOINER.
      '\u00a0\u200b\u200c\u200d\u202f\u2060',
      'x'.repeat(256),
    ]) {
      assert.equal(validateAllocate({ description }).description, description);
      assert.equal(
        validatePool(pool({ entries: ['192.0.2.1'], description })).description,
        description,
      );
    }
  });

  void it('lets a stored record keep what older versions took, but never C0 (checkDescription)', () => {
    // A FIP stored with a right-to-left mark keeps serving; the CLI shows the mark escaped.
    for (const description of ['\u05e9\u200f 1.2.3.4', 'x\u0085', '\u202ex\u2029']) {
      const p = new Problems();
      assert.equal(checkDescription(p, 'description', description), description);
      assert.deepEqual(p.list, []);
    }
    const p = new Problems();
    assert.equal(checkDescription(p, 'description', 'a\u001b[2J'), undefined);
    assert.deepEqual(p.list, [
      {
        path: 'description',
        message: 'contains U+001B at character 2: a description may not hold control characters',
      },
    ]);
  });

  void it('still refuses what is not text or is too long, with its own message', () => {
    for (const description of [7, 'x'.repeat(257)]) {
      const [problem] = problemsOf(() => validateAllocate({ description }));
      assert.equal(problem?.message, 'must be text of at most 256 characters');
    }
  });
});

void describe('core/validate: validateAllocate', () => {
  void it('accepts an empty request', () => {
    assert.deepEqual(validateAllocate({}), { tags: [] });
  });

  void it('returns the request in canonical form', () => {
    const v = validateAllocate({
      pool: 'p1',
      address: '2001:DB8:0:0:0:0:0:10',
      clientToken: 'retry-1',
      description: 'web',
      tags: ['b', 'a'],
    });
    assert.equal(v.pool, 'p1');
    assert.equal(v.address?.text, '2001:db8::10');
    assert.equal(v.address?.family, 6);
    assert.equal(v.clientToken, 'retry-1');
    assert.equal(v.description, 'web');
    assert.deepEqual(v.tags, ['a', 'b']);
  });

  void it('accepts client tokens of 1–64 printable ASCII characters', () => {
    for (const token of [
      'x',
      'a'.repeat(64),
      '!~{}[]()<>"\'`|\\/=+-_.,;:?@#$%^&*',
      'ABC-123_x.y',
    ]) {
      assert.equal(validateAllocate({ clientToken: token }).clientToken, token);
    }
  });

  void it('refuses other client tokens', () => {
    for (const token of [
      '',
      'a'.repeat(65),
      'has space',
      'tab\there',
      'new\nline',
      'ünïcode',
      42,
      null,
      {},
    ]) {
      assert.deepEqual(
        problemsOf(() => validateAllocate({ clientToken: token })),
        [
          {
            path: 'clientToken',
            message: 'must be 1–64 printable ASCII characters without spaces',
          },
        ],
        JSON.stringify(token),
      );
    }
  });

  void it('reports all problems together', () => {
    assert.deepEqual(
      pathsOf(() =>
        validateAllocate({ pool: 'P', address: '127.0.0.1', clientToken: ' ', tags: 'x' }),
      ),
      ['pool', 'address', 'clientToken', 'tags'],
    );
    assert.deepEqual(
      pathsOf(() => validateAllocate({ address: '192.0.2.010' })),
      ['address'],
    );
  });
});

void describe('core/validate: validateAllocate family', () => {
  void it('accepts 4 or 6, alone or matching the address', () => {
    assert.equal(validateAllocate({ family: 4 }).family, 4);
    assert.equal(validateAllocate({ family: 6, pool: 'p1' }).family, 6);
    assert.equal(validateAllocate({ family: 6, address: '2001:db8::1' }).family, 6);
    assert.equal('family' in validateAllocate({}), false);
  });

  void it('refuses other values and a family the address does not have', () => {
    for (const family of [5, '4', 0, null, 'ipv6']) {
      assert.deepEqual(
        pathsOf(() => validateAllocate({ family })),
        ['family'],
        String(family),
      );
    }
    assert.deepEqual(
      problemsOf(() => validateAllocate({ family: 6, address: '192.0.2.1' })),
      [{ path: 'family', message: '192.0.2.1 is IPv4, not IPv6' }],
    );
  });
});

void describe('core/validate: validateAssociate', () => {
  void it('defaults to nat without masquerade or reassociation', () => {
    const v = validateAssociate({ target: '10.0.0.5' });
    assert.equal(v.mode, 'nat');
    assert.equal(v.target.text, '10.0.0.5');
    assert.equal(v.masquerade, false);
    assert.equal(v.allowReassociation, false);
    assert.equal('node' in v, false);
  });

  void it('canonicalises the target and keeps options', () => {
    const v = validateAssociate(
      {
        target: '2001:DB8::0:5',
        node: 'n1',
        mode: 'ports',
        masquerade: true,
        allowReassociation: true,
      },
      6,
    );
    assert.deepEqual(
      { ...v, target: v.target.text },
      {
        target: '2001:db8::5',
        node: 'n1',
        mode: 'ports',
        masquerade: true,
        allowReassociation: true,
      },
    );
  });

  void it('routed mode needs a node', () => {
    assert.deepEqual(
      problemsOf(() => validateAssociate({ target: '10.0.0.5', mode: 'routed' })),
      [
        {
          path: 'node',
          message: 'routed mode delivers the FIP to a node: name the node that holds the target',
        },
      ],
    );
    const v = validateAssociate({ target: '10.0.0.5', mode: 'routed', node: 'n1' });
    assert.equal(v.mode, 'routed');
    assert.equal(v.node, 'n1');
  });

  void it('refuses masquerade in routed mode', () => {
    assert.deepEqual(
      pathsOf(() =>
        validateAssociate({ target: '10.0.0.5', mode: 'routed', node: 'n1', masquerade: true }),
      ),
      ['masquerade'],
    );
    assert.equal(validateAssociate({ target: '10.0.0.5', masquerade: true }).masquerade, true);
  });

  void it('refuses a target of the other family than the FIP', () => {
    assert.deepEqual(
      problemsOf(() => validateAssociate({ target: '2001:db8::5' }, 4)),
      [{ path: 'target', message: '2001:db8::5 is IPv6 but IPv4 is needed here' }],
    );
    assert.deepEqual(
      pathsOf(() => validateAssociate({ target: '10.0.0.5' }, 6)),
      ['target'],
    );
    assert.equal(validateAssociate({ target: '10.0.0.5' }, 4).target.family, 4);
  });

  void it('refuses bad modes, booleans, targets and node names together', () => {
    assert.deepEqual(
      pathsOf(() =>
        validateAssociate({
          target: '127.0.0.1',
          node: 'N 1',
          mode: 'bridge',
          masquerade: 'yes',
          allowReassociation: 1,
        }),
      ),
      ['target', 'node', 'mode', 'masquerade', 'allowReassociation'],
    );
    assert.deepEqual(
      pathsOf(() => validateAssociate({})),
      ['target'],
    );
  });
});

void describe('core/validate: validateMove', () => {
  void it('canonicalises the target and checks the family', () => {
    const v = validateMove({ target: '10.0.0.6', node: 'n2' }, 4);
    assert.equal(v.target.text, '10.0.0.6');
    assert.equal(v.node, 'n2');
    assert.deepEqual(
      pathsOf(() => validateMove({ target: '2001:db8::6' }, 4)),
      ['target'],
    );
    assert.deepEqual(
      pathsOf(() => validateMove({ target: '10.0.0.6', node: 'Bad' })),
      ['node'],
    );
  });
});

void describe('core/validate: validateForward', () => {
  const base = { protocol: 'tcp', target: '10.0.0.5' };

  void it('accepts a single port as number or text', () => {
    for (const port of [443, '443']) {
      const v = validateForward({ ...base, port });
      assert.equal(v.protocol, 'tcp');
      assert.equal(v.port, 443);
      assert.equal(v.portEnd, 443);
      assert.equal(v.targetPort, 443);
      assert.equal(v.target.text, '10.0.0.5');
    }
    assert.equal(validateForward({ ...base, port: 1 }).port, 1);
    assert.equal(validateForward({ ...base, port: 65535 }).port, 65535);
  });

  void it('accepts a range, mapped onto itself or from targetPort', () => {
    const same = validateForward({ ...base, protocol: 'udp', port: '8000-8010' });
    assert.deepEqual([same.port, same.portEnd, same.targetPort], [8000, 8010, 8000]);
    const moved = validateForward({
      ...base,
      port: '8000-8010',
      targetPort: 9000,
      node: 'n1',
      description: 'x',
    });
    assert.deepEqual([moved.port, moved.portEnd, moved.targetPort], [8000, 8010, 9000]);
    assert.equal(moved.node, 'n1');
    assert.equal(moved.description, 'x');
    assert.equal(validateForward({ ...base, port: 22, targetPort: '2222' }).targetPort, 2222);
    const top = validateForward({ ...base, port: '65530-65535', targetPort: 65530 });
    assert.equal(top.portEnd, 65535);
    const one = validateForward({ ...base, port: '80-80' });
    assert.deepEqual([one.port, one.portEnd], [80, 80]);
  });

  void it('refuses a range whose target ports end past 65535', () => {
    assert.deepEqual(
      problemsOf(() => validateForward({ ...base, port: '65530-65535', targetPort: 65531 })),
      [
        {
          path: 'targetPort',
          message: 'the range 65530-65535 mapped from 65531 would end past port 65535',
        },
      ],
    );
    assert.deepEqual(
      pathsOf(() => validateForward({ ...base, port: '1000-2000', targetPort: 65000 })),
      ['targetPort'],
    );
  });

  void it('refuses bad ports', () => {
    for (const port of [
      0,
      '0',
      65536,
      '65536',
      '99999',
      '1-65536',
      '0-10',
      '80-70',
      'abc',
      '',
      ' 80',
      '80 ',
      '-80',
      '80-',
      80.5,
      -1,
      NaN,
      null,
      true,
      [80],
    ]) {
      assert.deepEqual(
        pathsOf(() => validateForward({ ...base, port })),
        ['port'],
        String(port),
      );
    }
    assert.deepEqual(
      pathsOf(() => validateForward({ ...base })),
      ['port'],
    );
    assert.deepEqual(
      problemsOf(() => validateForward({ ...base, port: '80-70' })),
      [{ path: 'port', message: 'range 80-70 ends before it starts' }],
    );
  });

  void it('refuses bad target ports', () => {
    for (const targetPort of [0, 65536, 'abc', '8080-8090', 1.5]) {
      assert.deepEqual(
        pathsOf(() => validateForward({ ...base, port: 80, targetPort })),
        ['targetPort'],
        String(targetPort),
      );
    }
  });

  void it('refuses protocols other than tcp and udp', () => {
    for (const protocol of ['sctp', 'TCP', 'icmp', '', undefined, 6]) {
      assert.deepEqual(
        problemsOf(() => validateForward({ ...base, protocol, port: 80 })),
        [{ path: 'protocol', message: 'must be one of tcp, udp' }],
        String(protocol),
      );
    }
  });

  void it('checks the target family and reports all problems at once', () => {
    assert.deepEqual(
      pathsOf(() => validateForward({ ...base, port: 80, target: '2001:db8::5' }, 4)),
      ['target'],
    );
    assert.deepEqual(
      pathsOf(() =>
        validateForward({
          protocol: 'sctp',
          port: 'abc',
          targetPort: 0,
          target: '224.0.0.1',
          node: 'X',
          description: 7,
        }),
      ),
      ['protocol', 'port', 'targetPort', 'target', 'node', 'description'],
    );
  });
});

void describe('core/validate: routed targets', () => {
  const fip = { address: '203.0.113.5', family: 4 as const };

  void it('defaults a routed target to the FIP and refuses any other', () => {
    const v = validateAssociate({ mode: 'routed', node: 'n1' }, fip);
    assert.equal(v.target.text, '203.0.113.5');
    assert.equal(
      validateAssociate({ mode: 'routed', node: 'n1', target: '203.0.113.5' }, fip).target.text,
      '203.0.113.5',
    );
    assert.deepEqual(
      pathsOf(() => validateAssociate({ mode: 'routed', node: 'n1', target: '10.0.0.5' }, fip)),
      ['target'],
    );
    assert.equal(
      validateMove({ node: 'n2' }, { ...fip, mode: 'routed' }).target.text,
      '203.0.113.5',
    );
    assert.deepEqual(
      pathsOf(() => validateMove({ target: '10.0.0.6', node: 'n2' }, { ...fip, mode: 'routed' })),
      ['target'],
    );
  });

  void it('still needs a target in nat and ports mode', () => {
    assert.deepEqual(
      problemsOf(() => validateAssociate({}, fip)),
      [
        {
          path: 'target',
          message: 'is required: the address to forward to (only a routed FIP may omit it)',
        },
      ],
    );
    assert.deepEqual(
      pathsOf(() => validateMove({}, { ...fip, mode: 'nat' })),
      ['target'],
    );
  });
});

void describe('core/validate: pool updates', () => {
  const base: Pool = {
    name: 'p1',
    gateway: 'gw1',
    delivery: 'routed',
    entries: [
      { kind: 'cidr', cidr: '203.0.113.0/29' },
      { kind: 'address', address: '192.0.2.2' },
    ],
    description: 'old',
    tags: ['a'],
    createdAt: 't',
  };

  void it('adds, removes and sets only what is given', () => {
    const next = updatedPool(
      base,
      validatePoolUpdate({ addShared: ['192.0.2.2'], removeAddresses: ['192.0.2.2'], tags: [] }),
    );
    assert.deepEqual(next.entries, [
      { kind: 'cidr', cidr: '203.0.113.0/29' },
      { kind: 'address', address: '192.0.2.2', shared: true },
    ]);
    assert.equal(next.description, 'old');
    assert.deepEqual(next.tags, []);
    assert.equal(updatedPool(base, validatePoolUpdate({ description: '' })).description, undefined);
  });

  void it('refuses overlaps with kept entries, parts of ranges, and emptying the pool', () => {
    assert.deepEqual(
      pathsOf(() => updatedPool(base, validatePoolUpdate({ addEntries: ['203.0.113.4'] }))),
      ['addEntries'],
    );
    assert.deepEqual(
      pathsOf(() => updatedPool(base, validatePoolUpdate({ removeAddresses: ['203.0.113.1'] }))),
      ['removeAddresses[0]'],
    );
    const single = { ...base, entries: [{ kind: 'address' as const, address: '192.0.2.2' }] };
    assert.deepEqual(
      pathsOf(() => updatedPool(single, validatePoolUpdate({ removeAddresses: ['192.0.2.2'] }))),
      ['removeAddresses'],
    );
    assert.deepEqual(
      pathsOf(() => validatePoolUpdate({})),
      ['request'],
    );
  });

  void it('finds a single plain entry that is the gateway’s own address, not a shared one or a prefix', () => {
    const own = ['192.0.2.2', '203.0.113.3', 'fe80::1'];
    assert.equal(ownAddressEntry(base.entries, own), '192.0.2.2');
    assert.equal(
      ownAddressEntry([{ kind: 'address', address: '192.0.2.2', shared: true }], own),
      undefined,
    );
    assert.equal(ownAddressEntry([{ kind: 'cidr', cidr: '203.0.113.0/29' }], own), undefined);
  });
});

void describe('core/validate: pool size limit', () => {
  void it('validates a pool at the limit, entries and shared together', () => {
    const all = singles(MAX_POOL_ENTRIES);
    const valid = validatePool(pool({ entries: all.slice(1), shared: all.slice(0, 1) }));
    assert.equal(valid.entries.length, MAX_POOL_ENTRIES);
  });

  void it('refuses one entry more before parsing any, saying to write blocks as CIDRs', () => {
    const problems = problemsOf(() =>
      validatePool(pool({ entries: [...singles(MAX_POOL_ENTRIES), 'nonsense'], name: 'Bad' })),
    );
    // The entries are not looked at one by one: no problem for "nonsense", and no overlap sweep.
    assert.deepEqual(
      problems.map((p) => p.path),
      ['name', 'entries'],
    );
    assert.equal(
      problems[1]!.message,
      `${MAX_POOL_ENTRIES + 1} entries given, more than the ${MAX_POOL_ENTRIES} a pool may hold: write a block of addresses as one CIDR or FIRST-LAST range`,
    );
    assert.deepEqual(
      pathsOf(() =>
        validatePool(pool({ entries: singles(MAX_POOL_ENTRIES), shared: ['192.0.2.2'] })),
      ),
      ['entries'],
    );
  });

  void it('refuses an update that adds or removes more than a pool may hold, or makes it too big', () => {
    assert.deepEqual(
      pathsOf(() => validatePoolUpdate({ addEntries: singles(MAX_POOL_ENTRIES + 1) })),
      ['addEntries'],
    );
    assert.deepEqual(
      pathsOf(() => validatePoolUpdate({ removeAddresses: singles(MAX_POOL_ENTRIES + 1) })),
      ['removeAddresses'],
    );
    const full: Pool = {
      ...validatePool(pool({ entries: singles(MAX_POOL_ENTRIES - 1) })),
      createdAt: 't',
    };
    const grown = updatedPool(full, validatePoolUpdate({ addShared: ['192.0.2.2'] }));
    assert.equal(grown.entries.length, MAX_POOL_ENTRIES);
    const over = problemsOf(() =>
      updatedPool(grown, validatePoolUpdate({ addEntries: ['192.0.2.3'] })),
    );
    assert.deepEqual(over, [
      {
        path: 'addEntries',
        message: `pool p1 would hold ${MAX_POOL_ENTRIES + 1} entries, more than the ${MAX_POOL_ENTRIES} a pool may hold: write a block of addresses as one CIDR or FIRST-LAST range`,
      },
    ]);
    // Swapping one entry for another keeps it at the limit.
    const swapped = updatedPool(
      grown,
      validatePoolUpdate({ removeAddresses: ['192.0.2.2'], addEntries: ['192.0.2.3'] }),
    );
    assert.equal(swapped.entries.length, MAX_POOL_ENTRIES);
  });

  void it('finds every overlap of a big update with the entries kept, each named once', () => {
    const big: Pool = {
      ...validatePool(pool({ entries: ['10.1.0.0/20'] })),
      createdAt: 't',
    };
    const problems = problemsOf(() =>
      updatedPool(big, validatePoolUpdate({ addEntries: singles(1000) })),
    );
    assert.equal(problems.length, 1000);
    assert.equal(problems[0]!.message, 'entries 10.1.0.0/20 and 10.1.0.0 overlap at 10.1.0.0');
    // Removing single addresses from a pool at the limit: each one looked up, not searched for.
    const full: Pool = {
      ...validatePool(pool({ entries: singles(MAX_POOL_ENTRIES) })),
      createdAt: 't',
    };
    const emptied = updatedPool(
      full,
      validatePoolUpdate({ removeAddresses: singles(MAX_POOL_ENTRIES - 1), addEntries: [] }),
    );
    assert.deepEqual(emptied.entries, [full.entries[MAX_POOL_ENTRIES - 1]]);
    assert.deepEqual(
      problemsOf(() =>
        updatedPool(big, validatePoolUpdate({ removeAddresses: ['10.1.0.5', '10.2.0.0'] })),
      ).map((p) => p.message),
      [
        '10.1.0.5 is part of 10.1.0.0/20: only single-address entries can be removed (delete and re-create the pool to change a range)',
        '10.2.0.0 is not in pool p1',
      ],
    );
  });
});
