import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import Database from 'better-sqlite3';
import { openCatalog } from '../../src/catalog';
import { MIGRATIONS } from '../../src/catalog/migrations';

const FIXTURES = path.resolve(__dirname, '..', '..', 'fixtures');

t.test('every released fixture catalog opens, upgrades to the current version and checks clean',
  async (t) => {
    const fixtures = fs.readdirSync(FIXTURES).filter((f) => /^catalog-v\d+\.sqlite$/.test(f));
    t.ok(fixtures.includes('catalog-v1.sqlite'));
    for (const name of fixtures) {
      const copy = path.join(t.testdir(), name);
      fs.copyFileSync(path.join(FIXTURES, name), copy);
      const catalog = openCatalog(copy, { create: false, now: () => 1764115200000 + 5000 });
      t.equal(catalog.schemaVersion, MIGRATIONS.length, `${name} is upgraded`);
      t.same(catalog.check(), [], `${name} passes check`);
      t.same(catalog.listVds({ all: true }).map((v) => [v.id, v.name, v.state]),
        [[1, 'root', 'live'], [2, 'scratch', 'live'], [3, null, 'deleted']]);
      t.equal(catalog.resolveVbd(1, 'xvda').size, 10 * 1024 ** 3);
      t.ok(catalog.createVd({ size: 1024 ** 3 }).id > 3, 'the upgraded catalog takes new VDs');
      catalog.close();
    }
  });

t.test('migrations are named NNNN-verb-noun in order', async (t) => {
  MIGRATIONS.forEach((m, i) => {
    t.match(m.name, new RegExp(`^${String(i + 1).padStart(4, '0')}-[a-z]+-[a-z-]+$`));
  });
});

t.test('pending zeroing of a v1 catalog (whole extents) becomes the same bytes', async (t) => {
  const copy = path.join(t.testdir(), 'catalog-v1.sqlite');
  fs.copyFileSync(path.join(FIXTURES, 'catalog-v1.sqlite'), copy);
  const db = new Database(copy);
  db.prepare('INSERT INTO pending_zero (vd_id, member_id, first_extent, extent_count) '
    + 'VALUES (1, 1, 10, 2)').run();
  db.close();
  const catalog = openCatalog(copy, { create: false, now: () => 1764115200000 + 5000 });
  t.teardown(() => catalog.close());
  t.same(catalog.pendingZeroing().map((z) => [z.vdId, z.memberId, z.offset, z.length]),
    [[1, 1, 10 * 4 * 1024 ** 2, 2 * 4 * 1024 ** 2]]);
  t.equal(catalog.getVd(1).state, 'zeroing');
  t.same(catalog.check(), []);
});

t.test('VBDs of a v1 catalog have no recorded expert level; new ones record theirs',
  async (t) => {
    const copy = path.join(t.testdir(), 'catalog-v1.sqlite');
    fs.copyFileSync(path.join(FIXTURES, 'catalog-v1.sqlite'), copy);
    const catalog = openCatalog(copy, { create: false, now: () => 1764115200000 + 5000 });
    catalog.addVbd({ domain: 2, device: 'xvda', mode: 'r', source: { kind: 'vd', vdId: 1 },
      expert: 1 });
    catalog.close();
    const db = new Database(copy, { readonly: true });
    t.same(db.prepare('SELECT domain, expert FROM vbds ORDER BY id').all(),
      [{ domain: 1, expert: null }, { domain: 2, expert: 1 }]);
    db.close();
  });
