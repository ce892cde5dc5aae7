/**
 * House-style checks that a reviewer would otherwise do by eye (STYLE.md §4.3, §4.4): every error
 * code thrown in src/ is registered and described in src/errors.ts and every registered code is
 * used; src/ has no console.* and no `any`; lines stay within 100 columns; every module opens
 * with a header comment.
 */
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { ERRORS } from '../../src/errors';

const ROOT = path.resolve(__dirname, '..', '..');
const LINE_MAX = 100;

function filesUnder(dir: string, suffix: string): string[] {
  const out: string[] = [];
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) out.push(...filesUnder(full, suffix));
    else if (entry.name.endsWith(suffix)) out.push(full);
  }
  return out;
}

const sources = filesUnder(path.join(ROOT, 'src'), '.ts')
  .map((file) => ({ file: path.relative(ROOT, file), text: fs.readFileSync(file, 'utf8') }));

t.test('every error code used in src/ is registered with a description', async (t) => {
  const used = new Set<string>();
  for (const { text } of sources) {
    for (const match of text.matchAll(/'(ERR_[A-Z0-9_]+)'/g)) used.add(match[1] ?? '');
  }
  const registered = new Set(Object.keys(ERRORS));
  for (const code of used) t.ok(registered.has(code), `${code} is registered in src/errors.ts`);
  for (const [code, text] of Object.entries(ERRORS)) {
    t.ok(text.length >= 10, `${code} has a description`);
  }
});

t.test('every registered error code is used somewhere in src/', async (t) => {
  // the registry itself does not count as a use; the classes below it in errors.ts do
  const all = sources.map(({ file, text }) => file === path.join('src', 'errors.ts')
    ? text.slice(text.indexOf('} as const;')) : text).join('\n');
  for (const code of Object.keys(ERRORS)) {
    t.ok(all.includes(`'${code}'`), `${code} is used`);
  }
});

t.test('src/ has no console.* and no `any`', async (t) => {
  for (const { file, text } of sources) {
    const code = text.replace(/\/\*[\s\S]*?\*\//g, '').replace(/\/\/.*$/gm, '');
    t.notMatch(code, /\bconsole\.[a-z]+\(/, `${file}: no console`);
    t.notMatch(code, /:\s*any\b|<any>|\bas any\b/, `${file}: no any`);
  }
});

t.test('source lines are at most 100 columns and modules open with a header', async (t) => {
  for (const { file, text } of sources) {
    const long = text.split('\n').map((line, index) => ({ line, index }))
      .filter(({ line }) => line.length > LINE_MAX).map(({ index }) => index + 1);
    t.same(long, [], `${file}: lines over ${LINE_MAX} columns`);
    const head = text.replace(/^#!.*\n/, '').trimStart();
    t.ok(head.startsWith('/**') || head.startsWith('//'), `${file}: header comment`);
  }
});
