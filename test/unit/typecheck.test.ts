/**
 * Typecheck as a test: tap's TypeScript loader strips types without checking them, so this runs
 * `tsc --noEmit` over tsconfig.json (src/, what the build compiles) and tsconfig.test.json
 * (src/ and test/) and asserts there are no diagnostics, one assertion per file listing them.
 * tap's own `typecheck` option stays false in package.json on purpose: it checks every test file
 * separately and is several times slower than one tsc run over the whole tree.
 */
import t from 'tap';
import path from 'node:path';
import { spawnSync } from 'node:child_process';

const ROOT = path.resolve(__dirname, '..', '..');
const TSC = require.resolve('typescript/bin/tsc');
const CONFIGS = ['tsconfig.json', 'tsconfig.test.json'];

/** Runs tsc on one config and groups its diagnostics (with continuation lines) by file. */
function typecheck(config: string): { status: number | null; byFile: Map<string, string[]> } {
  const result = spawnSync(process.execPath, [TSC, '-p', config, '--noEmit', '--pretty', 'false'],
    { cwd: ROOT, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  const byFile = new Map<string, string[]>();
  let current: string[] | null = null;
  for (const line of `${result.stdout}${result.stderr}`.split('\n')) {
    if (line.trim() === '') continue;
    const match = /^(.+?)\(\d+,\d+\): /.exec(line);
    if (match === null && current !== null && line.startsWith(' ')) {
      current.push(line);
      continue;
    }
    const file = match?.[1] ?? '(tsc)';
    current = byFile.get(file) ?? [];
    byFile.set(file, current);
    current.push(line);
  }
  return { status: result.status, byFile };
}

for (const config of CONFIGS) {
  t.test(`tsc -p ${config} --noEmit reports no diagnostics`, async (t) => {
    const { status, byFile } = typecheck(config);
    for (const [file, diagnostics] of byFile) {
      t.same(diagnostics, [], `${file}: no type errors (run npx tsc -p ${config} --noEmit)`);
    }
    t.equal(status, 0, `tsc -p ${config} exits 0`);
  });
}
