/**
 * Many xvd processes at once never hand one extent to two VDs and never lose a VD; SIGKILL at
 * random moments leaves a catalog that `xvd check` passes. Real spawned processes, bounded rounds.
 */
import path from 'node:path';
import t from 'tap';
import { makeImage, runXvd, spawnXvd } from '../helpers/cli';

const MIB = 1024 * 1024;
const PARALLEL_COUNT = 20;
const KILL_ROUNDS = 5;
const KILL_PER_ROUND = 4;

async function setup(dir: string): Promise<string> {
  const catalog = path.join(dir, 'c.sqlite');
  const image = makeImage(path.join(dir, 'pool.img'), 256 * MIB);
  const result = await runXvd(['format', image, '--extent-size', '1M'], { catalog });
  if (result.code !== 0) throw new Error(result.stderr);
  return catalog;
}

t.test('20 parallel creates and deletes keep the catalog sound and lose no VD', async (t) => {
  const catalog = await setup(t.testdir());
  const seeded: string[] = [];
  for (let i = 0; i < 5; i++) {
    seeded.push((await runXvd(['create', '3M'], { catalog })).stdout.trim());
  }
  const runs = Array.from({ length: PARALLEL_COUNT }, (_, i) =>
    i < seeded.length ? runXvd(['delete', seeded[i] ?? ''], { catalog })
      : runXvd(['create', `${1 + (i % 5)}M`], { catalog }));
  const results = await Promise.all(runs);
  for (const result of results) t.equal(result.code, 0, result.stderr);
  const created = results.slice(seeded.length).map((r) => Number(r.stdout.trim()));
  t.equal(new Set(created).size, created.length, 'every printed id is distinct');
  const check = await runXvd(['check'], { catalog });
  t.equal(check.code, 0, `check: ${check.stdout}${check.stderr}`);
  const listed = JSON.parse((await runXvd(['list', '--json'], { catalog })).stdout) as
    { id: number }[];
  const ids = new Set(listed.map((vd) => vd.id));
  for (const id of created) t.ok(ids.has(id), `VD ${id} is listed`);
  for (const id of seeded) t.notOk(ids.has(Number(id)), `deleted VD ${id} is not listed`);
  type Shown = { extents: { path: string; offset: number; length: number }[] };
  const owners = new Map<string, number>();
  const shared: string[] = [];
  const shows = await Promise.all([...ids].map(async (id) => ({
    id,
    shown: JSON.parse((await runXvd(['show', String(id), '--json'], { catalog })).stdout) as Shown,
  })));
  for (const { id, shown } of shows) {
    for (const extent of shown.extents) {
      for (let at = extent.offset; at < extent.offset + extent.length; at += MIB) {
        const key = `${path.basename(extent.path)}@${Math.floor(at / MIB)}`;
        if (owners.has(key)) shared.push(`${key}: VD ${owners.get(key)} and VD ${id}`);
        owners.set(key, id);
      }
    }
  }
  t.same(shared, [], 'no extent belongs to two live VDs');
});

t.test('SIGKILL at random moments during create leaves a catalog check passes', async (t) => {
  const catalog = await setup(t.testdir());
  let seed = 12345;
  const random = (): number => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed / 2 ** 31;
  };
  for (let round = 0; round < KILL_ROUNDS; round++) {
    const children = Array.from({ length: KILL_PER_ROUND }, () =>
      spawnXvd(['create', `${1 + Math.floor(random() * 4)}M`], { catalog }));
    const exits = children.map((child) => new Promise<void>((resolve) => child.on('close', () =>
      resolve())));
    await Promise.all(children.map((child) => new Promise<void>((resolve) => {
      setTimeout(() => {
        child.kill('SIGKILL');
        resolve();
      }, Math.floor(random() * 400));
    })));
    await Promise.all(exits);
    const check = await runXvd(['check'], { catalog });
    t.equal(check.code, 0, `round ${round}: ${check.stdout}${check.stderr}`);
  }
  const after = await runXvd(['create', '2M'], { catalog });
  t.equal(after.code, 0, 'the catalog still works after the kills');
});
