/**
 * House-style checks that a reviewer would otherwise do by eye (STYLE.md §4.3, §4.4): every error
 * code thrown in src/ is registered and described in src/errors.ts and every registered code is
 * used; src/ has no console.* and no `any`; lines stay within 100 columns and every module opens
 * with a header comment, in src/ and in native/src/; no function is longer than 70 lines (found
 * with the TypeScript compiler API in src/, by brace matching of top-level definitions in
 * native/src/); no file is longer than 400 lines in src/ or 500 in native/src/.
 *
 * Today's offenders are listed in KNOWN_LONG_FILES and KNOWN_LONG_FUNCTIONS with their exact
 * current length. Those lists may only shrink: an entry must match the code (lower it when the
 * file or function shrinks, delete it when it is within the limit), and nothing may be added.
 */
import t, { type Test } from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import ts from 'typescript';
import { ERRORS } from '../../src/errors';

const ROOT = path.resolve(__dirname, '..', '..');
const LINE_MAX = 100;
const FUNCTION_LINES_MAX = 70;
const FILE_LINES_MAX_TS = 400;
const FILE_LINES_MAX_C = 500;

/**
 * Files over their limit today, with their length in lines. MAY ONLY SHRINK: lower an entry when
 * its file shrinks, delete it once the file is within the limit, and never add one (split the
 * file instead).
 */
const KNOWN_LONG_FILES: Readonly<Record<string, number>> = {
  // empty: every file is within the limit today; keep it that way
};

/**
 * Functions over 70 body lines today (`file: Class.method` or `file: outer>inner`), with their
 * body length. MAY ONLY SHRINK, like KNOWN_LONG_FILES: split a long function rather than list it.
 */
const KNOWN_LONG_FUNCTIONS: Readonly<Record<string, number>> = {
  // empty: every function is within the limit today; keep it that way
};

function filesUnder(dir: string, suffix: string): string[] {
  const out: string[] = [];
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) out.push(...filesUnder(full, suffix));
    else if (entry.name.endsWith(suffix)) out.push(full);
  }
  return out;
}

function read(files: string[]): { file: string; text: string }[] {
  return files.map((file) =>
    ({ file: path.relative(ROOT, file), text: fs.readFileSync(file, 'utf8') }));
}

const sources = read(filesUnder(path.join(ROOT, 'src'), '.ts'));
const nativeDir = path.join(ROOT, 'native', 'src');
const natives = read([...filesUnder(nativeDir, '.c'), ...filesUnder(nativeDir, '.h')]);

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
  for (const { file, text } of [...sources, ...natives]) {
    const long = text.split('\n').map((line, index) => ({ line, index }))
      .filter(({ line }) => line.length > LINE_MAX).map(({ index }) => index + 1);
    t.same(long, [], `${file}: lines over ${LINE_MAX} columns`);
    const head = text.replace(/^#!.*\n/, '').trimStart();
    t.ok(head.startsWith('/*') || head.startsWith('//'), `${file}: header comment`);
  }
});

/** Lines of a file, not counting the empty string after a final newline. */
function lineCount(text: string): number {
  return text.endsWith('\n') ? text.split('\n').length - 1 : text.split('\n').length;
}

/** The name a function node goes by: its own, or that of what it is assigned to. */
function functionName(node: ts.Node): string {
  if (ts.isConstructorDeclaration(node)) return 'constructor';
  const named = node as ts.Node & { name?: ts.Node };
  if (named.name !== undefined && !ts.isArrowFunction(node)) return named.name.getText();
  const parent = node.parent;
  if (ts.isVariableDeclaration(parent) || ts.isPropertyAssignment(parent)
    || ts.isPropertyDeclaration(parent)) return parent.name.getText();
  return '(anonymous)';
}

/** Body length in lines of every function, method and arrow in one TypeScript file. */
function tsFunctionLengths(file: string, text: string, into: Map<string, number>): void {
  const source = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true);
  const lineOf = (position: number): number => source.getLineAndCharacterOfPosition(position).line;
  const visit = (node: ts.Node, scope: string): void => {
    let inner = scope;
    if (ts.isClassDeclaration(node) || ts.isClassExpression(node)) {
      inner = `${scope}${node.name?.getText() ?? '(class)'}.`;
    } else if (ts.isFunctionLike(node) && 'body' in node && node.body !== undefined) {
      const body = node.body as ts.Node;
      const length = ts.isBlock(body)
        ? lineOf(body.getEnd()) - lineOf(body.getStart()) - 1
        : lineOf(body.getEnd()) - lineOf(body.getStart()) + 1;
      let key = `${file}: ${scope}${functionName(node)}`;
      for (let index = 2; into.has(key); index++) key = `${key.replace(/#\d+$/, '')}#${index}`;
      into.set(key, length);
      inner = `${scope}${functionName(node)}>`;
    }
    ts.forEachChild(node, (child) => visit(child, inner));
  };
  visit(source, '');
}

/** Blanks comments, string and character literals and preprocessor lines, keeping newlines. */
function cCodeOnly(text: string): string {
  const blank = (match: string): string => match.replace(/[^\n]/g, ' ');
  return text
    .replace(/\/\*[\s\S]*?\*\/|\/\/[^\n]*|"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*'/g, blank)
    .replace(/^[ \t]*#(?:[^\n]*\\\n)*[^\n]*/gm, blank);
}

/** Body length in lines of every top-level function definition in one C file (brace matching). */
function cFunctionLengths(file: string, text: string, into: Map<string, number>): void {
  const code = cCodeOnly(text);
  let depth = 0;
  let line = 0;
  let head = '';
  let open: { name: string; line: number } | null = null;
  for (const char of code) {
    if (char === '\n') line++;
    if (char === '{') {
      if (depth === 0) {
        const signature = /([A-Za-z_]\w*)\s*\([^;={}]*\)\s*$/.exec(head);
        const isFunction = signature !== null && !head.includes('=');
        open = isFunction ? { name: signature[1] ?? '', line } : null;
      }
      depth++;
    } else if (char === '}') {
      depth--;
      if (depth === 0 && open !== null) into.set(`${file}: ${open.name}`, line - open.line - 1);
      if (depth === 0) head = '';
    } else if (depth === 0) {
      head = char === ';' ? '' : head + char;
    }
  }
}

/**
 * Compares what is over a limit with the allowlist of today's offenders: a new offender fails,
 * and so does an entry that no longer matches what it measures (the list may only shrink).
 */
function checkAgainstKnown(t: Test, what: string, measured: Map<string, number>,
  limitOf: (key: string) => number, known: Readonly<Record<string, number>>, list: string): void {
  t.pass(`${measured.size} measured against ${list}`);
  for (const [key, length] of measured) {
    const limit = limitOf(key);
    const entry = known[key];
    if (entry === undefined) {
      if (length > limit) t.fail(`${key}: ${what} is ${length} lines, over ${limit}: split it`);
    } else if (length <= limit) {
      t.fail(`${key}: ${what} is ${length} lines, within ${limit} now: delete its ${list} entry`);
    } else {
      t.equal(length, entry, `${key}: ${what} is ${length} lines and ${list} says ${entry}: `
        + (length < entry ? `lower the entry to ${length}` : 'the list may only shrink: split it'));
    }
  }
  for (const key of Object.keys(known)) {
    t.ok(measured.has(key), `${key} is in ${list} but no longer exists: delete its entry`);
  }
}

t.test('no function is longer than 70 lines, except known ones, which only shrink', async (t) => {
  const measured = new Map<string, number>();
  for (const { file, text } of sources) tsFunctionLengths(file, text, measured);
  for (const { file, text } of natives) {
    if (file.endsWith('.c')) cFunctionLengths(file, text, measured);
  }
  t.ok(measured.size > 500, `found ${measured.size} functions`);
  checkAgainstKnown(t, 'the function body', measured, () => FUNCTION_LINES_MAX,
    KNOWN_LONG_FUNCTIONS, 'KNOWN_LONG_FUNCTIONS');
});

t.test('no file is over 400 lines (src/) or 500 (native/src/), except known ones', async (t) => {
  const measured = new Map<string, number>();
  for (const { file, text } of [...sources, ...natives]) measured.set(file, lineCount(text));
  checkAgainstKnown(t, 'the file', measured,
    (file) => file.startsWith('src') ? FILE_LINES_MAX_TS : FILE_LINES_MAX_C,
    KNOWN_LONG_FILES, 'KNOWN_LONG_FILES');
});
