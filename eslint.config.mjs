// ESLint flat config: typescript-eslint's recommended type-checked rules plus the house style
// (STYLE.md §4.7: eqeqeq, no-var, prefer-const, no floating promises) over src/, test/ and
// scripts/. `npm run lint` and test/unit/lint.test.ts run it; the type-aware pass reads
// tsconfig.test.json (src/ and test/) and takes about 15 s on two cores.
// Every rule relaxed below says why on its line; relax nothing without a reason.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import globals from 'globals';

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'native/**', 'fixtures/**'] },
  { linterOptions: { reportUnusedDisableDirectives: 'error' } },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    files: ['**/*.ts'],
    languageOptions: {
      parserOptions: { project: './tsconfig.test.json', tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      eqeqeq: ['error', 'always'],
      'no-var': 'error',
      'prefer-const': 'error',
      '@typescript-eslint/no-floating-promises': 'error',
      // async methods that implement a Promise-returning interface (Backing, option handlers,
      // commander actions) stay async without an await so that a throw becomes a rejection
      '@typescript-eslint/require-await': 'off',
      // a leading underscore marks a parameter an interface imposes but this body ignores
      '@typescript-eslint/no-unused-vars': ['error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' }],
      // a catch passes the caught value on unchanged; wrapping it would lose its class and code
      '@typescript-eslint/prefer-promise-reject-errors': ['error', { allowThrowingUnknown: true }],
      // validation of untrusted input prints the value its static type already rules out
      '@typescript-eslint/restrict-template-expressions': ['error', { allowNever: true }],
    },
  },
  {
    files: ['test/**/*.ts'],
    rules: {
      // tap awaits every t.test() it is handed; a test file does not await its subtests
      '@typescript-eslint/no-floating-promises': ['error', {
        allowForKnownSafeCalls: [
          { from: 'package', package: '@tapjs/test', name: ['test', 'skip', 'todo', 'only'] },
          { from: 'package', package: '@tapjs/core', name: ['test', 'skip', 'todo', 'only'] },
        ],
      }],
      // test helpers return records of closures typed as methods; tests destructure them
      '@typescript-eslint/unbound-method': 'off',
    },
  },
  {
    files: ['**/*.js', '**/*.mjs'],
    ...tseslint.configs.disableTypeChecked,
    languageOptions: { sourceType: 'commonjs', globals: { ...globals.node } },
    rules: {
      ...tseslint.configs.disableTypeChecked.rules,
      eqeqeq: ['error', 'always'],
      // the scripts are CommonJS run by plain node; require is how they import
      '@typescript-eslint/no-require-imports': 'off',
    },
  },
  { files: ['**/*.mjs'], languageOptions: { sourceType: 'module' } },
);
