// Import cycles in src, type-only imports included: a cycle ties its modules into one, so none
// of them can be read, tested or moved alone. eslint.config.js keeps each layer's imports
// pointing down (no-restricted-imports); this finds the cycles that rule cannot see, within a
// layer too. scripts/test.sh runs it: npx depcruise --config .dependency-cruiser.mjs src

/** @type {import('dependency-cruiser').IConfiguration} */
export default {
  forbidden: [
    {
      name: 'no-circular',
      severity: 'error',
      comment: 'A module reaches itself again through its imports.',
      from: { path: '^src/' },
      to: { circular: true },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
  },
};
