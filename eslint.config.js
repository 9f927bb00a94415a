// @ts-check
import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import { createNodeResolver, importX } from 'eslint-plugin-import-x';

/**
 * A folder is a room with one door (docs: DESIGN.md, "Layout"): another folder's module is
 * reached only through its `index.ts`. Relative specifiers are matched, since every in-repo
 * import is relative; a sibling inside the same folder (`./x.js`) is always fine.
 *
 * @param {string} up the `../` prefix that leaves the importing folder
 */
const throughDoors = (up) => [
  {
    // ../agent/runtime.js, ../core/planner.js: a private module of a top-level folder.
    regex: `^${up.replaceAll('.', '\\.')}(?!adapters/)[^/]+/(?!index\\.js$).+`,
    message: "Import another folder only through its index.ts (e.g. '../core/index.js'); add an export there if needed.",
  },
  {
    // ../adapters/lb/members.js: each adapter kind (lb, store, ...) is a folder with its own door.
    regex: `^${up.replaceAll('.', '\\.')}adapters/[^/]+/(?!index\\.js$).+`,
    message: "Import an adapter only through its index.ts (e.g. '../adapters/lb/index.js').",
  },
];

export default tseslint.config(
  { ignores: ['dist/', 'node_modules/', '**/*.js', '**/*.mjs', '**/*.d.mts', '.drover/', '.scratch/', '.bench-tmp/'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      // node:test's test()/describe() return promises the runner itself awaits.
      '@typescript-eslint/no-floating-promises': [
        'error',
        { allowForKnownSafeCalls: [{ from: 'package', package: 'node:test', name: ['test', 'it', 'describe', 'suite'] }] },
      ],
      '@typescript-eslint/no-misused-promises': ['error', { checksVoidReturn: { arguments: false } }],
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/explicit-module-boundary-types': 'off',
      '@typescript-eslint/no-explicit-any': 'error',
      // Interface methods are async by contract even where one implementation has nothing to await.
      '@typescript-eslint/require-await': 'off',
      '@typescript-eslint/restrict-template-expressions': ['error', { allowNumber: true, allowBoolean: true }],
    },
  },
  {
    // No import cycles anywhere in src/: a cycle hides an order of initialisation and a folder
    // that should have been split. Sources import `./x.js` that is `./x.ts` on disk.
    files: ['src/**/*.ts'],
    plugins: { 'import-x': importX },
    settings: {
      'import-x/extensions': ['.ts', '.js'],
      'import-x/resolver-next': [createNodeResolver({ extensions: ['.ts', '.js'], extensionAlias: { '.js': ['.ts', '.js'] } })],
    },
    rules: {
      'import-x/no-cycle': ['error', { ignoreExternal: true }],
    },
  },
  {
    // The pure core imports nothing from the rest of drover: no adapter, controller, agent,
    // cli or sim module, and no file outside src/core.
    files: ['src/core/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              regex: '^\\.\\./',
              message: 'src/core is pure: it imports no adapter, controller, agent, cli or sim module, nor anything outside src/core.',
            },
          ],
        },
      ],
    },
  },
  {
    files: ['src/agent/**/*.ts', 'src/cli/**/*.ts', 'src/controller/**/*.ts', 'src/sim/**/*.ts'],
    rules: { 'no-restricted-imports': ['error', { patterns: throughDoors('../') }] },
  },
  {
    // Adapters import core types and other adapters' doors, never an entry point (controller,
    // agent, cli) or the simulator.
    files: ['src/adapters/*/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            ...throughDoors('../../'),
            { regex: '^\\.\\./[^/.]+/(?!index\\.js$).+', message: "Import another adapter only through its index.ts (e.g. '../store/index.js')." },
            {
              regex: '^\\.\\./\\.\\./(agent|cli|controller|sim)/',
              message: 'Adapters import core (types) and other adapters only; entry points wire adapters together, not the reverse.',
            },
          ],
        },
      ],
    },
  },
);
