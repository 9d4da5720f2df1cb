/**
 * Renders docs/errors.md from the error registry, so the documented codes can never drift from
 * the code: `node --import tsx scripts/error-docs.ts --write` rewrites it, and a test fails
 * when it is out of date.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { ERRORS } from '../src/core/errors.js';

export const ERRORS_DOC = new URL('../docs/errors.md', import.meta.url);

export function renderErrorDocs(): string {
  const rows = Object.entries(ERRORS).map(
    ([code, spec]) =>
      `| \`${code}\` | ${spec.status} | ${escape(spec.message)} | ${escape(spec.hint)} |`,
  );
  return [
    '# Error codes',
    '',
    'Every failure of the API, the CLI and the agent carries one of these codes (generated from',
    '`src/core/errors.ts`; do not edit by hand). The API answers with the HTTP status and a body',
    '`{"error": {"code", "message", "hint", "problems"?}}`; the CLI prints code, message and hint',
    'and exits 1 (2 for usage errors, 3 when the agent cannot be reached). Validation errors list',
    'every problem at once in `problems` (`path` and `message`).',
    '',
    '| Code | HTTP | Message | Hint |',
    '|---|---|---|---|',
    ...rows,
    '',
  ].join('\n');
}

function escape(text: string): string {
  return text.replaceAll('|', '\\|');
}

if (process.argv.includes('--write')) writeFileSync(ERRORS_DOC, renderErrorDocs());
else if (
  process.argv.includes('--check') &&
  readFileSync(ERRORS_DOC, 'utf8') !== renderErrorDocs()
) {
  console.error(
    'docs/errors.md is out of date: run node --import tsx scripts/error-docs.ts --write',
  );
  process.exitCode = 1;
}
