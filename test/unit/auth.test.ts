import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import { bearerToken, TokenSet } from '../../src/api/auth.js';
import { IpferryError } from '../../src/core/errors.js';

const ADMIN = 'admin-token-0123456789';
const VIEWER = 'viewer-token-0123456789';
const sha = (t: string) => createHash('sha256').update(t).digest('hex');

describe('API tokens', () => {
  it('grants rw by default, ro when marked, nothing otherwise', () => {
    const set = TokenSet.parse(`# comment\n\n${ADMIN}\n${VIEWER} ro  # trailing comment\n`, 'f');
    assert.equal(set.check(ADMIN), 'rw');
    assert.equal(set.check(VIEWER), 'ro');
    assert.equal(set.check('admin-token-012345678'), undefined);
    assert.equal(set.check(undefined), undefined);
    assert.equal(set.check(''), undefined);
  });

  it('accepts tokens stored only as their SHA-256', () => {
    const set = TokenSet.parse(
      `sha256:${sha(ADMIN)}\nsha256:${sha(VIEWER).toUpperCase()} ro\n`,
      'f',
    );
    assert.equal(set.check(ADMIN), 'rw');
    assert.equal(set.check(VIEWER), 'ro');
    assert.equal(set.check(`sha256:${sha(ADMIN)}`), undefined, 'the digest itself is not a token');
  });

  it('refuses short tokens, bad access words and empty files, naming the line but never the token', () => {
    for (const text of [
      'short\n',
      `${ADMIN} admin\n`,
      `${ADMIN} ro extra\n`,
      'sha256:abc\n',
      '# nothing\n',
    ]) {
      assert.throws(
        () => TokenSet.parse(text, '/etc/t'),
        (e: unknown) =>
          e instanceof IpferryError && e.code === 'IPF_E_SECRET_FILE' && !e.message.includes(ADMIN),
      );
    }
  });

  it('reads only well-formed bearer headers', () => {
    assert.equal(bearerToken(`Bearer ${ADMIN}`), ADMIN);
    assert.equal(bearerToken(`bearer   ${ADMIN} `), ADMIN);
    assert.equal(bearerToken(`Basic ${ADMIN}`), undefined);
    assert.equal(bearerToken(`Bearer a b`), undefined);
    assert.equal(bearerToken(undefined), undefined);
  });
});
