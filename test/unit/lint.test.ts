/**
 * ESLint as a test (STYLE.md §4.7), so that CI's pass/fail count includes it: runs the flat config
 * in eslint.config.mjs (typescript-eslint recommended type-checked plus the house rules) over
 * src/, test/ and scripts/ through ESLint's Node API, with one assertion per file that lists its
 * problems as `line:column rule message`. `npm run lint` prints the same findings.
 */
import t from 'tap';
import path from 'node:path';
import { ESLint } from 'eslint';

const ROOT = path.resolve(__dirname, '..', '..');
const TARGETS = ['src', 'test', 'scripts', 'eslint.config.mjs'];

t.test('every file in src/, test/ and scripts/ passes ESLint', async (t) => {
  const eslint = new ESLint({ cwd: ROOT });
  const results = await eslint.lintFiles(TARGETS);
  t.ok(results.length > 100, `ESLint looked at ${results.length} files`);
  for (const result of results) {
    const file = path.relative(ROOT, result.filePath);
    const problems = result.messages.map((message) =>
      `${file}:${message.line}:${message.column} ${message.ruleId ?? 'parse'} ${message.message}`);
    t.same(problems, [], `${file}: no lint problems (fix them, or see eslint.config.mjs)`);
  }
});
