/**
 * The public API (src/index.ts, package.json `main`): the names it promises exist with the right
 * kinds, and the catalog it exports opens a fresh file in a temporary directory with nothing in
 * it. Runs from the TypeScript sources like every test; the build compiles the same file to
 * dist/index.js.
 */
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import * as xvd from '../../src/index';

const FUNCTIONS = [
  'openCatalog', 'defaultCatalogPath', 'identityOfDevice', 'identityOfFile', 'zeroPending',
  'startServe', 'runServeUntilSignal', 'tlsOptionsOf', 'createServer', 'listenFdsFromEnv',
  'openExport', 'isEmuError',
] as const;
const CLASSES = [
  'NbdServer', 'ExtentExport', 'BackingPool', 'XvdError', 'IoError', 'ProtocolError',
  'UsageError',
] as const;

t.test('the entry exports its functions, classes and constants', async (t) => {
  const api = xvd as unknown as Record<string, unknown>;
  for (const name of FUNCTIONS) t.type(api[name], 'function', `${name} is a function`);
  for (const name of CLASSES) {
    const value = api[name];
    t.ok(typeof value === 'function' && /^class\b/.test(Function.prototype.toString.call(value)),
      `${name} is a class`);
  }
  t.ok(new xvd.IoError('EIO', 'pread', 'read: EIO') instanceof xvd.XvdError,
    'IoError is an XvdError');
  t.type(xvd.ERRORS, 'object');
  t.type(xvd.LIMITS, 'object');
  t.type(xvd.DEFAULT_PORT, 'number');
});

t.test('package.json main and types name the built entry of src/index.ts', async (t) => {
  const root = path.resolve(__dirname, '..', '..');
  const manifest = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as
    { main?: string; types?: string };
  t.equal(manifest.main, 'dist/index.js');
  t.equal(manifest.types, 'dist/index.d.ts');
  t.ok(fs.existsSync(path.join(root, 'src', 'index.ts')), 'src/index.ts is what builds to it');
});

t.test('openCatalog creates a catalog in a fresh directory and lists nothing', async (t) => {
  const dir = t.testdir();
  const catalog = xvd.openCatalog(path.join(dir, 'catalog.sqlite'));
  t.teardown(() => catalog.close());
  t.ok(catalog.schemaVersion > 0, 'migrations ran');
  t.same(catalog.listMembers(), []);
  t.same(catalog.listVds({ all: true }), []);
  t.same(catalog.listVbds(), []);
});
