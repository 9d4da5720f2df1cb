// Type-aware linting; the import rules keep the arrows of DESIGN.md pointing one way:
// src/core is pure (no I/O modules, no imports from the edges), and each layer imports only
// the layers below it (docs/architecture.md, "Layers"). Import cycles are found by
// dependency-cruiser (.dependency-cruiser.mjs, scripts/test.sh), which sees type-only imports.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import globals from 'globals';

const ioModules = [
  'fs',
  'fs/promises',
  'child_process',
  'net',
  'http',
  'https',
  'dgram',
  'dns',
  'os',
  'worker_threads',
  'cluster',
  'process',
].flatMap((m) => [m, `node:${m}`]);

/**
 * A layer's files (but `ignores`) may import nothing from the directories (under src/) named in
 * `above`. One object per file set: a later object's rule would replace, not add to, an earlier.
 */
function layer(files, above, message, ignores = []) {
  return {
    files,
    ignores,
    rules: {
      'no-restricted-imports': [
        'error',
        { patterns: [{ group: above.map((dir) => `**/${dir}/**`), message }] },
      ],
    },
  };
}

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', '.state/**', 'bin/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      globals: globals.node,
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/await-thenable': 'error',
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_', ignoreRestSiblings: true },
      ],
      '@typescript-eslint/consistent-type-imports': 'error',
      eqeqeq: ['error', 'always'],
    },
  },
  {
    files: ['src/core/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          paths: ioModules.map((name) => ({
            name,
            message: 'src/core is pure: do I/O at the edges.',
          })),
          patterns: [
            {
              group: [
                '**/store/**',
                '**/agent/**',
                '**/api/**',
                '**/cli/**',
                '**/dataplane/**',
                '**/service/**',
                '**/lab/**',
                '**/client/**',
              ],
              message: 'src/core must not depend on the edges.',
            },
            {
              group: ['**/core/compile/**', '../compile/**', './compile/**'],
              message: 'Only the reconcile loop (agent/reconcile.ts) runs compile.',
            },
          ],
        },
      ],
      'no-restricted-globals': ['error', 'process', 'fetch', 'setTimeout', 'setInterval'],
    },
  },
  layer(
    ['src/store/**/*.ts', 'src/dataplane/**/*.ts'],
    ['api', 'cli', 'agent', 'service', 'lab', 'client', 'core/compile'],
    'Drivers and stores sit below the control plane, the agent, the API and its clients.',
  ),
  layer(
    ['src/service/**/*.ts'],
    ['api', 'cli', 'agent', 'lab', 'core/compile'],
    'The control plane sits below the API and the agent: put shared types in service/views.ts or core.',
  ),
  layer(
    ['src/api/**/*.ts'],
    ['cli', 'agent', 'lab', 'core/compile'],
    'The API serves the control plane; the agent builds it (agent/run.ts), not the other way.',
  ),
  layer(
    ['src/agent/**/*.ts'],
    ['cli', 'lab', 'core/compile'],
    'The agent does not depend on the CLI or the lab, which drive it from outside; only its reconcile loop runs compile.',
    ['src/agent/reconcile.ts'],
  ),
  layer(
    ['src/agent/reconcile.ts'],
    ['cli', 'lab'],
    'The agent does not depend on the CLI or the lab, which drive it from outside.',
  ),
  layer(
    ['src/client/**/*.ts'],
    ['cli', 'agent', 'service', 'lab', 'dataplane', 'core/compile'],
    'The API client knows the HTTP contract (api/contract.ts) and core, nothing of the server.',
  ),
  layer(
    ['src/lab/**/*.ts'],
    ['cli', 'core/compile'],
    'The lab drives agents through src/client; the CLI sits on top of the lab, not below it.',
  ),
  {
    // src/intent stands on core/address.ts and the error registry (a leaf) alone: nothing else
    // from src but its own modules.
    files: ['src/intent/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              regex: '^\\.\\./(?!core/(address|errors)\\.js$)',
              message:
                'src/intent imports only ../core/address.js, ../core/errors.js and its own modules.',
            },
          ],
        },
      ],
    },
  },
  {
    files: ['test/**/*.ts', 'bench/**/*.ts', '**/*.test.ts'],
    rules: {
      '@typescript-eslint/no-non-null-assertion': 'off',
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-call': 'off',
      '@typescript-eslint/no-unsafe-argument': 'off',
      '@typescript-eslint/no-explicit-any': 'off',
      // node:test's describe/it return promises the runner itself awaits.
      '@typescript-eslint/no-floating-promises': [
        'error',
        {
          allowForKnownSafeCalls: [
            { from: 'package', package: 'node:test', name: ['describe', 'it', 'test', 'suite'] },
          ],
        },
      ],
    },
  },
  {
    files: ['eslint.config.js', '.dependency-cruiser.mjs'],
    ...tseslint.configs.disableTypeChecked,
  },
  {
    // The web page's scripts (served as they are, no build step) run in the browser.
    files: ['src/ui/**/*.js'],
    ...tseslint.configs.disableTypeChecked,
    languageOptions: {
      ...tseslint.configs.disableTypeChecked.languageOptions,
      globals: globals.browser,
      sourceType: 'module',
    },
  },
);
