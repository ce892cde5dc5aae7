/**
 * Every bad input the issue lists gets one line on stderr naming what was wrong, the documented
 * exit code, and leaves the catalog exactly as it was (all tables compared row by row).
 */
import { once } from 'node:events';
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import t, { type Test } from 'tap';
import { makeImage, runXvd, snapshotCatalog, spawnXvd, type CliResult } from '../helpers/cli';

const MIB = 1024 * 1024;

async function pool(dir: string): Promise<{ catalog: string; image: string; id: string }> {
  const catalog = path.join(dir, 'catalog.sqlite');
  const image = makeImage(path.join(dir, 'pool.img'), 64 * MIB);
  const formatted = await runXvd(['format', image, '--extent-size', '1M'], { catalog });
  if (formatted.code !== 0) throw new Error(`format failed: ${formatted.stderr}`);
  const created = await runXvd(['create', '8M'], { catalog });
  if (created.code !== 0) throw new Error(`create failed: ${created.stderr}`);
  return { catalog, image, id: created.stdout.trim() };
}

function assertOneLine(t: Test, result: CliResult, code: number, pattern: RegExp): void {
  t.equal(result.code, code, `exit ${code}: ${result.stderr.trim()}`);
  t.equal(result.stdout, '', 'nothing on stdout');
  t.match(result.stderr, /^xvd: [^\n]+\n$/, 'exactly one line on stderr');
  t.match(result.stderr, pattern);
  t.notMatch(result.stderr, /\n\s+at /, 'no stack trace');
}

interface Case {
  name: string;
  args: (setup: { image: string; id: string; dir: string }) => string[];
  code: number;
  pattern: RegExp;
}

const cases: Case[] = [
  { name: 'size 0', args: () => ['create', '0'], code: 2, pattern: /size '0': must be positive/ },
  { name: 'a negative size', args: () => ['create', '--', '-5'], code: 2, pattern: /size '-5'/ },
  { name: 'size abc', args: () => ['create', 'abc'], code: 2, pattern: /size 'abc'/ },
  { name: 'size 1.5Q', args: () => ['create', '1.5Q'], code: 2, pattern: /size '1.5Q'.*unit/ },
  { name: 'a size larger than the pool', args: () => ['create', '1G'], code: 1,
    pattern: /free|space/i },
  { name: 'an unknown id', args: () => ['delete', '999'], code: 1, pattern: /999/ },
  { name: 'show of an unknown id', args: () => ['show', '999'], code: 1, pattern: /999/ },
  { name: 'an id that is not a number', args: () => ['delete', 'x1'], code: 2, pattern: /id 'x1'/ },
  { name: 'refresh with a negative expiry', args: ({ id }) => ['refresh', id, '--', '-1'],
    code: 2, pattern: /expiry '-1'/ },
  { name: 'format of a missing path', args: ({ dir }) => ['format', path.join(dir, 'nope.img')],
    code: 1, pattern: /nope\.img: no such file/ },
  { name: 'format of a directory', args: ({ dir }) => ['format', dir], code: 1,
    pattern: /a directory/ },
  { name: 'format of a pool member twice', args: ({ image }) => ['format', image], code: 1,
    pattern: /already in the pool/ },
  { name: 'format of a member by another path (hard link)', args: ({ dir }) =>
    ['format', path.join(dir, 'link.img')], code: 1, pattern: /shares bytes with pool member/ },
  { name: 'an extent size that is not a multiple of 512', args: ({ dir }) =>
    ['format', path.join(dir, 'other.img'), '--extent-size', '1000B'], code: 2,
    pattern: /--extent-size '1000B'.*multiple of 512/ },
  { name: 'a member smaller than one extent', args: ({ dir }) =>
    ['format', path.join(dir, 'tiny.img'), '--extent-size', '4M'], code: 1,
    pattern: /smaller than one extent/ },
  { name: 'format of a file that backs a phy: VBD', args: ({ dir }) =>
    ['format', path.join(dir, 'attached.img')], code: 1, pattern: /backs VBD 7\/xvdz/ },
  { name: 'an unknown command', args: () => ['frobnicate'], code: 2, pattern: /unknown command/ },
  { name: 'an unknown option', args: () => ['list', '--bogus'], code: 2,
    pattern: /unknown option/ },
  { name: 'a missing argument', args: () => ['create'], code: 2, pattern: /missing required/ },
  { name: 'vbd add with a bad mode', args: ({ id }) =>
    ['vbd', 'add', `vd:${id}`, 'xvda', '--domain', '1', '--mode', 'x'], code: 2,
    pattern: /--mode 'x'/ },
  { name: 'vbd add with a bad source', args: () =>
    ['vbd', 'add', 'nfs:foo', 'xvda', '--domain', '1', '--mode', 'r'], code: 2,
    pattern: /source 'nfs:foo'/ },
  { name: 'vbd remove of a device that is not attached', args: () =>
    ['vbd', 'remove', 'xvdq', '--domain', '3'], code: 1, pattern: /xvdq/ },
  { name: 'export to an existing file', args: ({ id, image }) => ['export', id, image], code: 1,
    pattern: /already exists/ },
  { name: 'import of a missing file', args: ({ dir }) => ['import', path.join(dir, 'none')],
    code: 1, pattern: /no such file/ },
  // refused before the catalog is opened and before anything listens
  { name: 'serve with a busy-poll that is not a number', args: () =>
    ['serve', '--listen', '127.0.0.1:0', '--busy-poll', 'fast'], code: 2,
    pattern: /--busy-poll: expected 0\.\.10000 microseconds, not fast/ },
  { name: 'serve with a busy-poll past its bound', args: () =>
    ['serve', '--listen', '127.0.0.1:0', '--busy-poll', '10001'], code: 2,
    pattern: /--busy-poll: expected 0\.\.10000/ },
  { name: 'serve with no pool threads', args: () =>
    ['serve', '--listen', '127.0.0.1:0', '--threads', '0'], code: 2,
    pattern: /--threads: expected 1\.\.128, not 0/ },
  { name: 'serve with more pool threads than its bound', args: () =>
    ['serve', '--listen', '127.0.0.1:0', '--threads', '129'], code: 2,
    pattern: /--threads: expected 1\.\.128, not 129/ },
];

t.test('each bad input is refused with one line and the catalog unchanged', async (t) => {
  const dir = t.testdir({ 'other.img': '', 'tiny.img': 'x'.repeat(4096) });
  const setup = await pool(dir);
  fs.linkSync(setup.image, path.join(dir, 'link.img'));
  fs.truncateSync(path.join(dir, 'other.img'), 8 * MIB);
  const attached = makeImage(path.join(dir, 'attached.img'), 8 * MIB);
  const added = await runXvd(['vbd', 'add', `phy:${attached}`, 'xvdz', '--domain', '7',
    '--mode', 'r'], { catalog: setup.catalog });
  t.equal(added.code, 0, added.stderr);
  for (const testCase of cases) {
    await t.test(testCase.name, async (t) => {
      const before = snapshotCatalog(setup.catalog);
      const result = await runXvd(testCase.args({ ...setup, dir }), { catalog: setup.catalog });
      assertOneLine(t, result, testCase.code, testCase.pattern);
      t.equal(snapshotCatalog(setup.catalog), before, 'catalog unchanged');
    });
  }
});

t.test('a deleted id is refused by delete, refresh, enlarge and show --json', async (t) => {
  const dir = t.testdir();
  const { catalog, id } = await pool(dir);
  t.equal((await runXvd(['delete', id], { catalog })).code, 0, 'first delete works');
  const before = snapshotCatalog(catalog);
  const target = path.join(dir, 'out.raw');
  for (const args of [['delete', id], ['refresh', id, '60'], ['enlarge', id, '1M'],
    ['export', id, target]]) {
    const result = await runXvd(args, { catalog });
    assertOneLine(t, result, 1, new RegExp(id));
  }
  t.equal(snapshotCatalog(catalog), before, 'catalog unchanged');
  t.notOk(fs.existsSync(target), 'export of a deleted VD wrote no file');
});

t.test('undelete under a writable VBD added while the VD was deleted is refused, --expert 2 is '
  + 'the override, and check agrees', async (t) => {
  const dir = t.testdir();
  const { catalog, image, id } = await pool(dir);
  t.equal((await runXvd(['delete', id], { catalog })).code, 0);
  const added = await runXvd(['vbd', 'add', `extents:${image}:0+1M`, 'xvdb', '--domain', '2',
    '--mode', 'w'], { catalog });
  t.equal(added.code, 0, added.stderr);
  const before = snapshotCatalog(catalog);
  assertOneLine(t, await runXvd(['undelete', id], { catalog }), 1,
    /undelete: VD 1 would share .* with VBD 2\/xvdb \(w\).*needs expert level 2, have 0/);
  assertOneLine(t, await runXvd(['undelete', id, '--expert', '1'], { catalog }), 1,
    /VBD 2\/xvdb/);
  assertOneLine(t, await runXvd(['undelete', id, '--expert', '3'], { catalog }), 2,
    /--expert '3'/);
  t.equal(snapshotCatalog(catalog), before, 'catalog unchanged');
  const forced = await runXvd(['undelete', id, '--expert', '2'], { catalog });
  t.equal(forced.code, 0, forced.stderr);
  const check = await runXvd(['check'], { catalog });
  t.equal(check.code, 0, check.stdout + check.stderr);
});

t.test('vbd add resolves a path reaching a pool member by a symlink, .., a relative path or a '
  + 'hard link: sharing, allocation and check see the member', async (t) => {
  const dir = t.testdir({ sub: {} });
  const { catalog, image } = await pool(dir); // VD 1 holds [0, 8M) of the image
  const real = fs.realpathSync(image);
  fs.symlinkSync(image, path.join(dir, 'symlink.img'));
  fs.linkSync(image, path.join(dir, 'hardlink.img'));
  const names = [path.join(dir, 'symlink.img'), path.join(dir, 'sub', '..', 'pool.img'),
    path.relative(process.cwd(), image), path.join(dir, 'hardlink.img')];
  const before = snapshotCatalog(catalog);
  for (const name of names) {
    for (const source of [`extents:${name}:1M+1M`, `phy:${name}`]) {
      const result = await runXvd(['vbd', 'add', source, 'xvdc', '--domain', '3', '--mode', 'w'],
        { catalog });
      assertOneLine(t, result, 1, /VBD 3\/xvdc \(w\) would share .* with pool VD 1/);
    }
  }
  t.equal(snapshotCatalog(catalog), before, 'catalog unchanged');
  const added = await runXvd(['vbd', 'add', `extents:${names[0]}:8M+1M,${names[3]}:9M+1M`, 'xvdd',
    '--domain', '4', '--mode', 'r'], { catalog });
  t.equal(added.code, 0, added.stderr);
  const listed = JSON.parse((await runXvd(['vbd', 'list', '--json'], { catalog })).stdout) as
    { source: string }[];
  t.same(listed.map((vbd) => vbd.source), [`extents:${real}:8388608+1048576,`
    + `${real}:9437184+1048576`], 'stored by the member\'s path');
  const created = await runXvd(['create', '4M', '--no-zero'], { catalog });
  t.equal(created.code, 0, created.stderr);
  const shown = JSON.parse((await runXvd(['show', created.stdout.trim(), '--json'],
    { catalog })).stdout) as { extents: { offset: number; length: number }[] };
  t.ok(shown.extents.every((e) => e.offset + e.length <= 8 * MIB || e.offset >= 10 * MIB),
    'the allocator keeps off the extents under the VBD');
  // a file outside the pool, by two names: the second VBD is judged against the first
  const other = makeImage(path.join(dir, 'other.img'), MIB);
  fs.linkSync(other, path.join(dir, 'other-link.img'));
  const first = await runXvd(['vbd', 'add', `phy:${other}`, 'xvde', '--domain', '5', '--mode',
    'w'], { catalog });
  t.equal(first.code, 0, first.stderr);
  assertOneLine(t, await runXvd(['vbd', 'add', `extents:${path.join(dir, 'other-link.img')}:0+4K`,
    'xvdf', '--domain', '6', '--mode', 'w'], { catalog }), 1, /with VBD 5\/xvde \(w\)/);
  const check = await runXvd(['check'], { catalog });
  t.equal(check.code, 0, check.stdout + check.stderr);
});

t.test('a catalog that is a text file is refused with exit 3 and left as it was', async (t) => {
  const dir = t.testdir({ 'catalog.sqlite': 'this is not a database\n'.repeat(100) });
  const catalog = path.join(dir, 'catalog.sqlite');
  const before = fs.readFileSync(catalog);
  for (const args of [['list'], ['create', '1M'], ['check']]) {
    const result = await runXvd(args, { catalog });
    assertOneLine(t, result, 3, /catalog/);
  }
  t.same(fs.readFileSync(catalog), before, 'file bytes unchanged');
});

t.test('an unreadable catalog path is refused with exit 3', async (t) => {
  const dir = t.testdir({ 'plain-file': 'x', 'a-directory': {} });
  const underFile = path.join(dir, 'plain-file', 'catalog.sqlite');
  assertOneLine(t, await runXvd(['list'], { catalog: underFile }), 3, /catalog/);
  const directory = path.join(dir, 'a-directory');
  assertOneLine(t, await runXvd(['list'], { catalog: directory }), 3, /catalog/);
  t.same(fs.readdirSync(directory), [], 'nothing created in the directory');
});

t.test('a catalog written by a newer xvd is refused with exit 3 and left as it was', async (t) => {
  const dir = t.testdir();
  const { catalog } = await pool(dir);
  const db = new Database(catalog);
  db.pragma('user_version = 9999');
  db.close();
  const before = snapshotCatalog(catalog);
  assertOneLine(t, await runXvd(['list'], { catalog }), 3, /catalog/);
  assertOneLine(t, await runXvd(['create', '1M'], { catalog }), 3, /catalog/);
  t.equal(snapshotCatalog(catalog), before, 'catalog unchanged');
});

t.test('a reader that closes stdout early ends the command quietly with exit 141', async (t) => {
  const dir = t.testdir();
  const { catalog, id } = await pool(dir);
  const before = snapshotCatalog(catalog);
  for (const args of [['list', '--json'], ['show', id, '--json'], ['--help']]) {
    const child = spawnXvd(args, { catalog });
    child.stdout!.destroy(); // as `| head -c 0` would: the read end is gone before the first write
    let stderr = '';
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    const [code] = await once(child, 'close') as [number | null];
    clearTimeout(timer);
    t.equal(code, 141, `xvd ${args.join(' ')}: exit 141`);
    t.equal(stderr, '', 'nothing on stderr (no EPIPE stack)');
  }
  t.equal(snapshotCatalog(catalog), before, 'catalog unchanged');
});
