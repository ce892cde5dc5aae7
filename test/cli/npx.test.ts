/**
 * `npx xvd` in a checkout after `npm install` rebuilds nothing and needs no network. npm exec
 * installs the checkout into its exec cache as a link and runs the checkout's `prepare` there
 * (see scripts/build.js); `prepare` must find both builds current and leave them alone.
 *
 * The checkout is a copy of this one's sources, with node_modules linked and the built dist/ and
 * addon copied in; a real `npm install` there would build the addon again (a minute on two
 * CPUs), so the copy records its builds as current the way prepare does after building
 * (scripts/build.js's digests). npm runs with its own empty cache, an unreachable registry and
 * --offline, and with foreground scripts, so that what prepare says is visible.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { ensureBuilt, ROOT } from '../helpers/cli';
import { version } from '../../src/version';

interface BuildPart { output: string; stampDir: string; digest(): string }
interface BuildScript { PARTS: BuildPart[]; STAMP: string; staleParts(): BuildPart[] }

const ADDON = path.join('native', 'build', 'Release', 'xvd_native.node');
const OUTPUTS = [path.join('dist', 'cli', 'main.js'), path.join('dist', 'index.js'), ADDON];

/** A checkout as `npm install` leaves it: sources, builds, their recorded inputs. */
function installedCopy(dir: string): string {
  const copy = path.join(dir, 'checkout');
  for (const entry of ['package.json', 'package-lock.json', 'tsconfig.json', 'src', 'dist',
    path.join('scripts', 'build.js'), path.join('native', 'src'),
    path.join('native', 'binding.gyp'), ADDON]) {
    fs.cpSync(path.join(ROOT, entry), path.join(copy, entry), { recursive: true });
  }
  fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(copy, 'node_modules'));
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const build = require(path.join(copy, 'scripts', 'build.js')) as BuildScript;
  for (const part of build.PARTS) {
    fs.writeFileSync(path.join(copy, part.stampDir, build.STAMP), `${part.digest()}\n`);
  }
  return copy;
}

/** Modification time and inode of each build output: a build replaces or rewrites them. */
function outputsState(copy: string): string[] {
  return OUTPUTS.map((file) => {
    const stats = fs.statSync(path.join(copy, file));
    return `${file} ${stats.ino} ${stats.mtimeMs}`;
  });
}

/** The environment without the npm_* variables of an npm that may have started tap. */
function envOffline(cache: string): NodeJS.ProcessEnv {
  const env = Object.fromEntries(Object.entries(process.env)
    .filter(([key]) => !key.toLowerCase().startsWith('npm_')));
  return { ...env, npm_config_cache: cache, npm_config_offline: 'true',
    npm_config_registry: 'http://127.0.0.1:9/', npm_config_foreground_scripts: 'true',
    npm_config_update_notifier: 'false', npm_config_audit: 'false', npm_config_fund: 'false' };
}

function npx(copy: string, cache: string, args: string[]): ReturnType<typeof spawnSync> {
  const bin = path.join(path.dirname(process.execPath), 'npx');
  return spawnSync(fs.existsSync(bin) ? bin : 'npx', args, { cwd: copy, env: envOffline(cache),
    encoding: 'utf8', timeout: 120_000 });
}

t.test('npx xvd runs the built CLI offline; its prepare finds both builds current', (t) => {
  ensureBuilt();
  const dir = t.testdir();
  const copy = installedCopy(dir);
  const cache = path.join(dir, 'npm-cache');
  const before = outputsState(copy);
  for (const round of ['first', 'second']) {
    const startMs = Date.now();
    const result = npx(copy, cache, ['xvd', '--version']);
    t.comment(`${round} npx xvd --version: ${Date.now() - startMs} ms`);
    t.equal(result.status, 0, `${round}: ${String(result.stderr)}`);
    t.equal(result.stdout, `xvd ${version()}\n`, round);
    t.same(outputsState(copy), before, `${round}: no output was rebuilt`);
    t.notMatch(String(result.stderr), /tsc|node-gyp|gyp info/, `${round}: no compiler ran`);
    if (round === 'first') {
      t.match(String(result.stderr), /build: native addon is up to date\n/, 'prepare ran');
      t.match(String(result.stderr), /build: TypeScript is up to date\n/);
    }
  }
  const execDirs = fs.readdirSync(path.join(cache, '_npx'));
  t.equal(execDirs.length, 1, 'one exec-cache entry, for this checkout');
  const installed = path.join(cache, '_npx', execDirs[0] ?? '', 'node_modules', 'xvd');
  t.ok(fs.lstatSync(installed).isSymbolicLink(), 'npm exec linked the checkout, copied nothing');
  t.equal(fs.realpathSync(installed), fs.realpathSync(copy));
  t.end();
});

t.test('prepare rebuilds a part when its inputs change, and only that part', (t) => {
  ensureBuilt();
  const copy = installedCopy(t.testdir());
  const check = (): { status: number | null; stderr: string } => {
    const result = spawnSync(process.execPath, [path.join(copy, 'scripts', 'build.js'),
      '--check'], { encoding: 'utf8' });
    return { status: result.status, stderr: result.stderr };
  };
  t.same(check(), { status: 0, stderr: '' }, 'as installed: both current');
  fs.appendFileSync(path.join(copy, 'src', 'version.ts'), '// changed\n');
  t.same(check(), { status: 1, stderr: 'build: TypeScript is out of date\n' });
  fs.appendFileSync(path.join(copy, 'native', 'binding.gyp'), '\n');
  t.same(check(), { status: 1, stderr: 'build: native addon is out of date\n' +
    'build: TypeScript is out of date\n' });
  t.end();
});
