/**
 * Happy paths of every command, through the real built CLI on a temporary catalog and sparse
 * images.
 */
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { makeImage, runXvd } from '../helpers/cli';

const MIB = 1024 * 1024;

interface ListedVd {
  id: number;
  name: string | null;
  size: number;
  expires_at: string | null;
}

interface ShownVd {
  id: number;
  size: number;
  extents: { path: string; offset: number; length: number }[];
}

async function ok(args: string[], catalog: string): Promise<string> {
  const result = await runXvd(args, { catalog });
  if (result.code !== 0) throw new Error(`xvd ${args.join(' ')}: ${result.code}: ${result.stderr}`);
  return result.stdout;
}

async function json<T>(args: string[], catalog: string): Promise<T> {
  return JSON.parse(await ok([...args, '--json'], catalog)) as T;
}

t.test('format --size creates a sparse image and adds its extents to the pool', async (t) => {
  const dir = t.testdir();
  const catalog = path.join(dir, 'c.sqlite');
  const image = path.join(dir, 'new.img');
  const out = await ok(['format', image, '--size', '32M', '--extent-size', '1M'], catalog);
  t.match(out, /32 extents of 1\.00 MiB/);
  t.equal(fs.statSync(image).size, 32 * MIB);
  t.ok(fs.statSync(image).blocks < 64, 'the new image is sparse');
  const free = await json<{ free: number; total: number }>(['free'], catalog);
  t.equal(free.free, 32 * MIB);
  t.equal(free.total, 32 * MIB);
});

t.test('create prints only the new id; list and show report it exactly', async (t) => {
  const dir = t.testdir();
  const catalog = path.join(dir, 'c.sqlite');
  await ok(['format', makeImage(path.join(dir, 'a.img'), 16 * MIB), '--extent-size', '1M'],
    catalog);
  const out = await ok(['create', '2.5M', '--name', 'web'], catalog);
  t.match(out, /^\d+\n$/, 'stdout is the id and a newline');
  const id = Number(out);
  const listed = await json<ListedVd[]>(['list'], catalog);
  t.same(listed.map((vd) => [vd.id, vd.name, vd.size, vd.expires_at]),
    [[id, 'web', 2.5 * MIB, null]]);
  const shown = await json<ShownVd>(['show', String(id)], catalog);
  t.equal(shown.size, 2.5 * MIB);
  const total = shown.extents.reduce((sum, e) => sum + e.length, 0);
  t.ok(total >= 2.5 * MIB, 'extents cover the size');
  const real = fs.realpathSync(path.join(dir, 'a.img'));
  for (const extent of shown.extents) t.equal(extent.path, real);
  const table = await ok(['list'], catalog);
  t.match(table, /2\.50 MiB/);
});

t.test('a second create gets a larger id; ids are never reused after delete', async (t) => {
  const dir = t.testdir();
  const catalog = path.join(dir, 'c.sqlite');
  await ok(['format', makeImage(path.join(dir, 'a.img'), 16 * MIB), '--extent-size', '1M'],
    catalog);
  const first = Number(await ok(['create', '4M'], catalog));
  await ok(['delete', String(first)], catalog);
  const second = Number(await ok(['create', '4M'], catalog));
  t.ok(second > first);
});

t.test('refresh sets an expiry, delete hides, undelete restores, list --all shows', async (t) => {
  const dir = t.testdir();
  const catalog = path.join(dir, 'c.sqlite');
  await ok(['format', makeImage(path.join(dir, 'a.img'), 16 * MIB), '--extent-size', '1M'],
    catalog);
  const id = (await ok(['create', '3M'], catalog)).trim();
  await ok(['refresh', id, '3600'], catalog);
  const refreshed = await json<ListedVd[]>(['list'], catalog);
  t.not(refreshed[0]?.expires_at, null, 'an expiry is set');
  await ok(['delete', id], catalog);
  t.same(await json<ListedVd[]>(['list'], catalog), [], 'deleted VD is not listed');
  const all = await json<ListedVd[]>(['list', '--all'], catalog);
  t.same(all.map((vd) => vd.id), [Number(id)], 'list --all shows it');
  await ok(['undelete', id], catalog);
  const back = await json<ListedVd[]>(['list'], catalog);
  t.same(back.map((vd) => [vd.id, vd.expires_at]), [[Number(id), null]]);
});

t.test('enlarge grows the visible size by the amount given', async (t) => {
  const dir = t.testdir();
  const catalog = path.join(dir, 'c.sqlite');
  await ok(['format', makeImage(path.join(dir, 'a.img'), 16 * MIB), '--extent-size', '1M'],
    catalog);
  const id = (await ok(['create', '3M'], catalog)).trim();
  await ok(['enlarge', id, '2M'], catalog);
  const shown = await json<ShownVd>(['show', id], catalog);
  t.equal(shown.size, 5 * MIB);
  t.ok(shown.extents.reduce((sum, e) => sum + e.length, 0) >= 5 * MIB);
});

t.test('enlarge zeroes the slack a --no-zero create left with the old owner\'s bytes',
  async (t) => {
    const dir = t.testdir();
    const catalog = path.join(dir, 'c.sqlite');
    const image = makeImage(path.join(dir, 'a.img'), 2 * MIB);
    await ok(['format', image, '--extent-size', '1M'], catalog);
    const a = (await ok(['create', '2M'], catalog)).trim();
    fs.writeFileSync(image, Buffer.alloc(2 * MIB, 0xab)); // the old owner's data
    await ok(['delete', a], catalog);
    const b = (await ok(['create', '1536K', '--no-zero'], catalog)).trim();
    await ok(['enlarge', b, '256K'], catalog);
    const shown = await json<ShownVd>(['show', b], catalog);
    t.equal(shown.size, 1792 * 1024);
    const pool = fs.readFileSync(image);
    const data = Buffer.concat(shown.extents.map((e) => pool.subarray(e.offset,
      e.offset + e.length)));
    t.equal(data.length, 1792 * 1024, 'the pieces add up to the size');
    t.ok(data.subarray(0, 1536 * 1024).every((x) => x === 0xab), 'B\'s own bytes are kept');
    t.ok(data.subarray(1536 * 1024).every((x) => x === 0), 'the enlarged range reads zero');
    t.equal((await runXvd(['check'], { catalog })).code, 0);
  });

t.test('create --on places the VD on the named member only', async (t) => {
  const dir = t.testdir();
  const catalog = path.join(dir, 'c.sqlite');
  const a = makeImage(path.join(dir, 'a.img'), 8 * MIB);
  const b = makeImage(path.join(dir, 'b.img'), 8 * MIB);
  await ok(['format', a, '--extent-size', '1M'], catalog);
  await ok(['format', b, '--extent-size', '1M'], catalog);
  const id = (await ok(['create', '4M', '--on', b], catalog)).trim();
  const shown = await json<ShownVd>(['show', id], catalog);
  t.same([...new Set(shown.extents.map((e) => e.path))], [fs.realpathSync(b)]);
});

t.test('check passes on a sound catalog', async (t) => {
  const dir = t.testdir();
  const catalog = path.join(dir, 'c.sqlite');
  await ok(['format', makeImage(path.join(dir, 'a.img'), 16 * MIB), '--extent-size', '1M'],
    catalog);
  await ok(['create', '3M'], catalog);
  const result = await runXvd(['check'], { catalog });
  t.equal(result.code, 0, result.stdout + result.stderr);
});

t.test('vbd add, list and remove a vd:, phy: and extents: source', async (t) => {
  const dir = t.testdir();
  const catalog = path.join(dir, 'c.sqlite');
  const pool = makeImage(path.join(dir, 'a.img'), 16 * MIB);
  const raw = makeImage(path.join(dir, 'raw.img'), 4 * MIB);
  await ok(['format', pool, '--extent-size', '1M'], catalog);
  const id = (await ok(['create', '3M'], catalog)).trim();
  await ok(['vbd', 'add', `vd:${id}`, 'xvda', '--domain', '1', '--mode', 'w'], catalog);
  await ok(['vbd', 'add', `phy:${raw}`, 'xvdb', '--domain', '1', '--mode', 'r'], catalog);
  await ok(['vbd', 'add', `extents:${raw}:0+1M,${raw}:2M+512K`, 'xvdc', '--domain', '2',
    '--mode', 'r'], catalog);
  type Listed = { export: string; mode: string; size: number }[];
  const listed = await json<Listed>(['vbd', 'list'], catalog);
  t.same(listed.map((v) => [v.export, v.mode, v.size]).sort(), [
    ['1/xvda', 'w', 3 * MIB], ['1/xvdb', 'r', 4 * MIB], ['2/xvdc', 'r', 1.5 * MIB]]);
  await ok(['vbd', 'remove', 'xvdb', '--domain', '1'], catalog);
  const after = await json<Listed>(['vbd', 'list'], catalog);
  t.same(after.map((v) => v.export).sort(), ['1/xvda', '2/xvdc']);
});

t.test('XVD_CATALOG selects the catalog when --catalog is absent', async (t) => {
  const dir = t.testdir();
  const catalog = path.join(dir, 'env.sqlite');
  const image = makeImage(path.join(dir, 'a.img'), 8 * MIB);
  const result = await runXvd(['format', image, '--extent-size', '1M'], {
    env: { XVD_CATALOG: catalog },
  });
  t.equal(result.code, 0, result.stderr);
  t.ok(fs.existsSync(catalog), 'the catalog was created at XVD_CATALOG');
});

t.test('quickstart sets up pool, VD and 0/xvda and a second run reuses them', async (t) => {
  const dir = t.testdir();
  const catalog = path.join(dir, 'data', 'catalog.sqlite');
  const first = await runXvd(['quickstart', '--no-serve'], { catalog });
  t.equal(first.code, 0, first.stderr);
  t.match(first.stdout, /nbdinfo nbd:\/\/127\.0\.0\.1:10809\/0\/xvda/);
  t.match(first.stdout, /nbd-client 127\.0\.0\.1 10809 \/dev\/nbd0 -N 0\/xvda/);
  t.ok(fs.statSync(path.join(dir, 'data', 'pool.img')).blocks < 1024, 'pool image is sparse');
  const second = await runXvd(['quickstart', '--no-serve'], { catalog });
  t.equal(second.code, 0, second.stderr);
  const listed = await json<ListedVd[]>(['list', '--all'], catalog);
  t.equal(listed.length, 1, 'one VD after two runs');
  const vbds = await json<{ export: string }[]>(['vbd', 'list'], catalog);
  t.same(vbds.map((v) => v.export), ['0/xvda']);
});
