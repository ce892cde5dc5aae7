/**
 * Many processes against one catalog file: 20 writers at once never hand one extent to two VDs
 * or lose a VD; writers SIGKILLed at random moments leave a catalog that check() passes.
 * Workers are small inline scripts that load src/ transpiled once by the parent.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import t from 'tap';
import ts from 'typescript';
import { openCatalog, identityOfFile } from '../../src/catalog';

const EXTENT = 4 * 1024 * 1024;

/** The worker: plain JS loading the transpiled catalog from $XVD_SRC. */
const WORKER = `
const { openCatalog } = require(process.env.XVD_SRC + '/catalog');
const [file, ops, seed] = process.env.XVD_CATALOG_WORKER.split('|');
const EXTENT = ${EXTENT};
const catalog = openCatalog(file, { create: false });
let state = Number(seed);
const random = () => { state = (state * 1103515245 + 12345) % 2147483648; return state / 2147483648; };
const mine = [];
for (let i = 0; i < Number(ops); i++) {
  try {
    if (mine.length > 0 && random() < 0.4) {
      const id = mine.splice(Math.floor(random() * mine.length), 1)[0];
      catalog.deleteVd(id);
      process.stdout.write('deleted ' + id + '\\n');
    } else if (mine.length > 0 && random() < 0.2) {
      const vd = catalog.getVd(mine[0]);
      catalog.enlargeVd(vd.id, vd.size + EXTENT, { zero: false });
      process.stdout.write('enlarged ' + vd.id + '\\n');
    } else {
      const vd = catalog.createVd({ size: Math.ceil(random() * 3 * EXTENT), zero: random() < 0.5 });
      mine.push(vd.id);
      process.stdout.write('created ' + vd.id + '\\n');
    }
  } catch (error) {
    if (error.code !== 'ERR_VD_NO_SPACE') throw error;
    process.stdout.write('nospace\\n');
  }
}
catalog.close();
`;

const SRC = path.resolve(__dirname, '..', '..', 'src');
const SRC_DIRS = ['catalog', 'catalog/migrations', 'allocator', 'sys', 'backing', 'ceph'];

/**
 * Transpiles the catalog's sources once into `dir` (inside the project, so better-sqlite3
 * resolves), so each worker starts in milliseconds instead of compiling TypeScript itself.
 */
function transpileCatalog(dir: string): string {
  const out = path.join(dir, 'src');
  const files = ['errors.ts', 'limits.ts', 'log.ts'];
  for (const sub of SRC_DIRS) {
    for (const name of fs.readdirSync(path.join(SRC, sub))) {
      if (name.endsWith('.ts')) files.push(path.join(sub, name));
    }
  }
  for (const file of files) {
    const source = fs.readFileSync(path.join(SRC, file), 'utf8');
    const js = ts.transpileModule(source, { compilerOptions: {
      module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, esModuleInterop: true,
    } }).outputText;
    fs.mkdirSync(path.dirname(path.join(out, file)), { recursive: true });
    fs.writeFileSync(path.join(out, file.replace(/\.ts$/, '.js')), js);
  }
  return out;
}

{
  function makePool(dir: string, extents: number): string {
    const file = path.join(dir, 'catalog.sqlite');
    const image = path.join(dir, 'pool.img');
    fs.writeFileSync(image, '');
    fs.truncateSync(image, extents * EXTENT);
    const st = fs.statSync(image);
    const catalog = openCatalog(file);
    catalog.formatMember({ path: image, kind: 'file', sizeBytes: extents * EXTENT,
      extentSize: EXTENT, identity: identityOfFile(st.dev, st.ino) });
    catalog.close();
    return file;
  }

  let compiled: string | null = null;
  function startWorker(file: string, ops: number, seed: number): ChildProcess {
    compiled ??= transpileCatalog(t.testdir());
    return spawn(process.execPath, ['-e', WORKER], {
      env: { ...process.env, XVD_CATALOG_WORKER: `${file}|${ops}|${seed}`, XVD_SRC: compiled },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
  }

  function collect(child: ChildProcess): Promise<{ lines: string[]; code: number | null;
    stderr: string }> {
    const lines: string[] = [];
    let stderr = '';
    readline.createInterface({ input: child.stdout! }).on('line', (line) => lines.push(line));
    child.stderr!.on('data', (chunk: Buffer) => { stderr += chunk.toString(); });
    return new Promise((resolve) => {
      child.on('close', (code) => resolve({ lines, code, stderr }));
    });
  }

  t.test('20 processes creating and deleting at once never share an extent or lose a VD',
    async (t) => {
      const file = makePool(t.testdir(), 400);
      const children = Array.from({ length: 20 }, (_, i) => startWorker(file, 8, i + 1));
      const results = await Promise.all(children.map(collect));
      for (const r of results) t.equal(r.code, 0, r.stderr);
      const created = results.flatMap((r) => r.lines.filter((l) => l.startsWith('created '))
        .map((l) => Number(l.split(' ')[1])));
      const deleted = new Set(results.flatMap((r) => r.lines.filter((l) => l.startsWith('deleted '))
        .map((l) => Number(l.split(' ')[1]))));
      t.equal(new Set(created).size, created.length, 'every id was handed out once');
      t.ok(created.length >= 20, `created ${created.length} VDs`);
      const catalog = openCatalog(file, { create: false });
      t.teardown(() => catalog.close());
      t.same(catalog.check(), []);
      for (const id of created) {
        const vd = catalog.getVd(id);
        t.equal(vd.state === 'deleted', deleted.has(id), `VD ${id} has the state its writer left`);
      }
    });

  t.test('writers killed with SIGKILL at random moments leave a sound catalog', async (t) => {
    const file = makePool(t.testdir(), 200);
    for (let round = 0; round < 10; round++) {
      const children = [startWorker(file, 400, round * 7 + 3)];
      const killAfter = 1 + ((round * 13) % 25);
      await Promise.all(children.map((child) => new Promise<void>((resolve) => {
        let seen = 0;
        readline.createInterface({ input: child.stdout! }).on('line', () => {
          seen++;
          if (seen === killAfter) child.kill('SIGKILL');
        });
        child.stderr!.resume();
        child.on('close', () => resolve());
      })));
      const catalog = openCatalog(file, { create: false });
      const faults = catalog.check();
      catalog.close();
      t.same(faults, [], `round ${round}: check passes`);
      t.comment(`round ${round} done at ${Date.now() % 100000}`);
    }
  });
}
