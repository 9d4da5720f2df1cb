import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { ERRORS_DOC, renderErrorDocs } from '../../scripts/error-docs.js';

describe('docs', () => {
  it('docs/errors.md lists exactly the registry (regenerate with scripts/error-docs.ts --write)', () => {
    assert.equal(readFileSync(ERRORS_DOC, 'utf8'), renderErrorDocs());
  });
});
