/**
 * Copy-on-write clones in the catalog (issue 18), on real SQLite files: cloneVd shares the
 * origin's extents with owner counts stored as runs, the allocator never takes an extent a live
 * VD maps, reserves and remaps (the server's calls) refuse what the contract refuses and change
 * nothing then, and `check` finds a wrong owner count.
 */
import fs from 'node:fs';
import path from 'node:path';
import t, { type Test } from 'tap';
import Database from 'better-sqlite3';
import { openCatalog, identityOfFile, type Catalog } from '../../src/catalog';

const MiB = 1024 * 1024;
const EXTENT = MiB;

function setup(t: Test, extents = 16): { catalog: Catalog; file: string; clock: { ms: number } } {
  const dir = t.testdir();
  const clock = { ms: 1_000_000 };
  const catalog = openCatalog(path.join(dir, 'catalog.sqlite'), { now: () => clock.ms });
  t.teardown(() => catalog.close());
  const file = path.join(dir, 'pool.img');
  fs.writeFileSync(file, '');
  fs.truncateSync(file, extents * EXTENT);
  const st = fs.statSync(file);
  catalog.formatMember({ path: file, kind: 'file', sizeBytes: extents * EXTENT,
    extentSize: EXTENT, identity: identityOfFile(st.dev, st.ino) });
  return { catalog, file, clock };
}

function rows(catalog: Catalog, sql: string): unknown[] {
  const db = new Database(catalog.path, { readonly: true });
  try {
    return db.prepare(sql).all();
  } finally {
    db.close();
  }
}

function dump(catalog: Catalog): string {
  const sql = "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name";
  const tables = rows(catalog, sql) as { name: string }[];
  return JSON.stringify(tables.map(({ name }) => [name, rows(catalog, `SELECT * FROM "${name}"`)]));
}

function live(catalog: Catalog, size: number): number {
  const vd = catalog.createVd({ size, zero: false });
  return vd.id;
}

t.test('a clone maps the origin\'s extents; counts are one row per run', async (t) => {
  const { catalog } = setup(t);
  const a = live(catalog, 3 * EXTENT + 512);
  const before = catalog.getVd(a).generation;
  const b = catalog.cloneVd(a, { name: 'b' });
  t.same(b.extents, catalog.getVd(a).extents, 'same extents, same order');
  t.equal(b.size, 3 * EXTENT + 512);
  t.equal(b.name, 'b');
  t.equal(b.originId, a);
  t.equal(catalog.getVd(a).generation, before + 1, 'the origin\'s generation moves on');
  t.same(rows(catalog, 'SELECT member_id, first_extent, extent_count, owners FROM extent_owners'),
    [{ member_id: 1, first_extent: 0, extent_count: 4, owners: 2 }], 'one row for the run');
  const c = catalog.cloneVd(b.id);
  t.same(rows(catalog, 'SELECT owners FROM extent_owners'), [{ owners: 3 }], 'clone of clone');
  t.equal(c.sharedBytes, 4 * EXTENT);
  t.equal(c.ownBytes, 0);
  t.equal(catalog.freeSpace().totalBytes, 12 * EXTENT, 'shared extents count once');
  t.same(catalog.check(), []);
});

t.test('a clone is refused, the catalog unchanged, when its origin is not usable', async (t) => {
  const { catalog } = setup(t);
  const dead = live(catalog, EXTENT);
  catalog.deleteVd(dead);
  const zeroing = catalog.createVd({ size: EXTENT }).id;
  const importing = catalog.beginImport({ size: EXTENT }).id;
  const snapshot = dump(catalog);
  t.throws(() => catalog.cloneVd(dead), { code: 'ERR_VD_DELETED' });
  t.throws(() => catalog.cloneVd(zeroing), { code: 'ERR_VD_ZEROING' });
  t.throws(() => catalog.cloneVd(importing), { code: 'ERR_VD_IMPORTING' });
  t.throws(() => catalog.cloneVd(99), { code: 'ERR_VD_UNKNOWN' });
  t.throws(() => catalog.cloneVd(dead, { expiresInS: -1 }), { code: 'ERR_CATALOG_INVALID' });
  t.equal(dump(catalog), snapshot, 'nothing changed');
});

t.test('an extent goes back to the pool only when its last owner dies', async (t) => {
  const { catalog, clock } = setup(t, 8);
  const a = live(catalog, 4 * EXTENT);
  const b = catalog.cloneVd(a, { expiresInS: 10 }).id;
  live(catalog, 4 * EXTENT);
  catalog.deleteVd(a);
  t.equal(catalog.freeSpace().totalBytes, 0, 'the clone still maps them');
  t.throws(() => catalog.createVd({ size: EXTENT }), { code: 'ERR_VD_NO_SPACE' });
  catalog.undeleteVd(a);
  t.equal(catalog.getVd(a).state, 'live', 'undelete works while its extents are shared');
  catalog.deleteVd(a);
  clock.ms += 11_000;
  t.equal(catalog.getVd(b).state, 'expired', 'expiry works on clones');
  t.equal(catalog.freeSpace().totalBytes, 4 * EXTENT, 'counted once');
  const c = catalog.createVd({ size: 4 * EXTENT, zero: false });
  t.equal(c.allocatedBytes, 4 * EXTENT);
  t.same(rows(catalog, 'SELECT * FROM extent_owners'), [], 'no counts left');
  t.throws(() => catalog.undeleteVd(a), { code: 'ERR_VD_REUSED', message: /went to VD/ });
  t.throws(() => catalog.undeleteVd(b), { code: 'ERR_VD_REUSED', message: /went to VD/ });
  t.same(catalog.check(), []);
});

t.test('a clone is not servable until the origin\'s live leases show its generation',
  async (t) => {
    const { catalog } = setup(t);
    const a = live(catalog, 2 * EXTENT);
    const server = catalog.registerServer();
    catalog.acquireLease(server, a);
    const b = catalog.cloneVd(a).id;
    catalog.addVbd({ domain: 1, device: 'xvda', mode: 'w', source: { kind: 'vd', vdId: b } });
    t.equal(catalog.isCloneSwitched(b), false);
    t.equal(catalog.resolveVbd(1, 'xvda').isDangling, true, 'not served meanwhile');
    catalog.acquireLease(server, a);
    t.equal(catalog.isCloneSwitched(b), true, 'the lease shows the new generation');
    const resolved = catalog.resolveVbd(1, 'xvda');
    t.equal(resolved.isDangling, false);
    t.same(resolved.extents.map((e) => e.shared), [true], 'the shared piece is marked');
  });

t.test('reserve and commit: the refusals change nothing; a remap replaces one extent',
  async (t) => {
    const { catalog } = setup(t);
    const a = live(catalog, 3 * EXTENT);
    const b = catalog.cloneVd(a).id;
    const own = live(catalog, EXTENT);
    const server = catalog.registerServer();
    t.throws(() => catalog.reserveCowExtents(server, b, EXTENT, 2), { code: 'ERR_COW_NO_LEASE' });
    catalog.acquireLease(server, b);
    catalog.acquireLease(server, own);
    const reserve = catalog.reserveCowExtents(server, b, EXTENT, 2);
    t.equal(reserve.reduce((n, r) => n + r.extentCount, 0), 2);
    t.equal(catalog.getVd(b).reserveBytes, 2 * EXTENT);
    t.same(catalog.check(), [], 'a reserve is owned, not free');
    const fresh = { memberId: reserve[0]!.memberId, firstExtent: reserve[0]!.firstExtent };
    const generation = catalog.getVd(b).generation;
    const snapshot = dump(catalog);
    t.throws(() => catalog.commitCowRemaps(server, a, [{ virtualOffset: 0, length: EXTENT,
      ...fresh }]), { code: 'ERR_COW_NO_LEASE' });
    t.throws(() => catalog.commitCowRemaps(server, own, [{ virtualOffset: 0, length: EXTENT,
      ...fresh }]), { code: 'ERR_COW_NOT_RESERVED' }, 'another VD\'s reserve');
    t.throws(() => catalog.commitCowRemaps(server, b, [{ virtualOffset: 3 * EXTENT,
      length: EXTENT, ...fresh }]), { code: 'ERR_COW_NOT_SHARED' }, 'past the map');
    t.throws(() => catalog.commitCowRemaps(server, b, [{ virtualOffset: 0, length: EXTENT / 2,
      ...fresh }]), { code: 'ERR_COW_NOT_SHARED' }, 'not one whole extent');
    t.throws(() => catalog.commitCowRemaps(server, b, [{ virtualOffset: 512, length: EXTENT,
      ...fresh }]), { code: 'ERR_COW_NOT_SHARED' });
    t.throws(() => catalog.commitCowRemaps(server, b, [{ virtualOffset: EXTENT, length: EXTENT,
      memberId: 1, firstExtent: 0 }]), { code: 'ERR_COW_NOT_RESERVED' });
    t.throws(() => catalog.commitCowRemaps(server, b, [
      { virtualOffset: EXTENT, length: EXTENT, ...fresh },
      { virtualOffset: 2 * EXTENT, length: EXTENT, ...fresh }]), { code: 'ERR_COW_NOT_RESERVED' },
    'one reserve extent twice');
    t.equal(dump(catalog), snapshot, 'nothing changed');
    catalog.commitCowRemaps(server, b, [{ virtualOffset: EXTENT, length: EXTENT, ...fresh }]);
    const after = catalog.getVd(b);
    t.equal(after.generation, generation, 'the generation stays');
    t.equal(after.sharedBytes, 2 * EXTENT);
    t.equal(after.ownBytes, EXTENT);
    t.equal(after.reserveBytes, EXTENT);
    t.equal(catalog.getVd(a).sharedBytes, 2 * EXTENT, 'the origin owns the old extent alone');
    t.equal(after.extents.length, 3, 'the run is cut around the new extent');
    t.same(catalog.check(), []);
    catalog.addVbd({ domain: 2, device: 'xvda', mode: 'w', source: { kind: 'vd', vdId: b } });
    t.same(catalog.resolveVbd(2, 'xvda').extents.map((e) => e.shared === true),
      [true, false, true]);
  });

t.test('the reserve of a dead VD no server leases goes back to the pool', async (t) => {
  const { catalog } = setup(t, 4);
  const a = live(catalog, 2 * EXTENT);
  const b = catalog.cloneVd(a).id;
  const server = catalog.registerServer();
  catalog.acquireLease(server, b);
  catalog.reserveCowExtents(server, b, EXTENT, 2);
  t.throws(() => catalog.reserveCowExtents(server, b, EXTENT, 1), { code: 'ERR_VD_NO_SPACE' });
  catalog.deleteVd(b);
  t.throws(() => catalog.createVd({ size: 2 * EXTENT }), { code: 'ERR_VD_SPACE_DRAINING' },
    'held while its server leases it');
  catalog.releaseLease(server, b);
  t.equal(catalog.createVd({ size: 2 * EXTENT, zero: false }).allocatedBytes, 2 * EXTENT);
  t.same(rows(catalog, 'SELECT * FROM cow_reserve'), []);
  t.same(catalog.check(), []);
});

t.test('a live VD\'s reserve goes back to the pool with the last lease or its server',
  async (t) => {
    const { catalog } = setup(t, 8);
    const a = live(catalog, 2 * EXTENT);
    const b = catalog.cloneVd(a).id;
    const free = catalog.freeSpace().totalBytes;
    const first = catalog.registerServer();
    const second = catalog.registerServer();
    catalog.acquireLease(first, b);
    catalog.acquireLease(second, b);
    catalog.reserveCowExtents(first, b, EXTENT, 2);
    t.equal(catalog.freeSpace().totalBytes, free - 2 * EXTENT, 'reserved: not free');
    catalog.releaseLease(first, b);
    t.equal(rows(catalog, 'SELECT * FROM cow_reserve').length, 1, 'kept while a lease remains');
    catalog.releaseLease(second, b);
    t.same(rows(catalog, 'SELECT * FROM cow_reserve'), [], 'released with the last lease');
    t.equal(catalog.freeSpace().totalBytes, free, 'free again');
    catalog.acquireLease(first, b);
    catalog.reserveCowExtents(first, b, EXTENT, 3);
    catalog.unregisterServer(first);
    catalog.unregisterServer(second);
    t.same(rows(catalog, 'SELECT * FROM cow_reserve'), [], 'released when its server goes');
    t.equal(catalog.freeSpace().totalBytes, free);
    t.equal(catalog.getVd(b).state, 'live', 'the VD itself is untouched');
    t.same(catalog.check(), []);
  });

t.test('check reports a wrong owner count as a fault', async (t) => {
  const { catalog } = setup(t);
  const a = live(catalog, 2 * EXTENT);
  catalog.cloneVd(a);
  const db = new Database(catalog.path);
  db.prepare('UPDATE extent_owners SET owners = 3').run();
  t.match(catalog.check(), [/owner count 3, yet 2 VDs map them/]);
  db.prepare('DELETE FROM extent_owners').run();
  t.match(catalog.check(), [/owner count 1, yet 2 VDs map them/]);
  db.prepare('INSERT INTO extent_owners VALUES (1, 10, 1, 2)').run();
  t.ok(catalog.check().some((f) => /\[10, 11\) have owner count 2, yet no VD maps/.test(f)));
  db.prepare("INSERT INTO cow_reserve VALUES (1, 1, 0, 1)").run();
  t.ok(catalog.check().some((f) => /owned by both the reserve of VD 1 and VD/.test(f)));
  db.close();
});

t.test('origin and clone both copy one extent: the second commit frees the old one',
  async (t) => {
    const { catalog } = setup(t, 8);
    const a = live(catalog, 2 * EXTENT);
    const b = catalog.cloneVd(a).id;
    const server = catalog.registerServer();
    catalog.acquireLease(server, a);
    catalog.acquireLease(server, b);
    const [ra] = catalog.reserveCowExtents(server, a, EXTENT, 1);
    const [rb] = catalog.reserveCowExtents(server, b, EXTENT, 1);
    const free = catalog.freeSpace().totalBytes;
    catalog.commitCowRemaps(server, a, [{ virtualOffset: 0, length: EXTENT, ...ra! }]);
    t.equal(catalog.getVd(b).sharedBytes, EXTENT, 'b alone maps the old extent now');
    catalog.commitCowRemaps(server, b, [{ virtualOffset: 0, length: EXTENT, ...rb! }]);
    t.equal(catalog.freeSpace().totalBytes, free + EXTENT, 'the old extent is free again');
    t.equal(catalog.getVd(a).sharedBytes, EXTENT);
    t.equal(catalog.getVd(b).ownBytes, EXTENT);
    t.same(catalog.check(), []);
  });

t.test('a commit during the switch gives a clone made after the lease the same remaps',
  async (t) => {
    const { catalog } = setup(t, 12);
    const a = live(catalog, 3 * EXTENT);
    const b = catalog.cloneVd(a).id; // an older clone: a's extents are shared
    const server = catalog.registerServer();
    catalog.acquireLease(server, a);
    const [r] = catalog.reserveCowExtents(server, a, EXTENT, 1);
    const c = catalog.cloneVd(a).id; // made while a write to a is copied, not yet committed
    t.equal(catalog.isCloneSwitched(c), false);
    catalog.commitCowRemaps(server, a, [{ virtualOffset: EXTENT, length: EXTENT, ...r! }]);
    const [ea, eb, ec] = [a, b, c].map((id) => catalog.getVd(id).extents);
    t.same(ec, ea, 'the clone maps what its origin maps, the new extent included');
    t.not(JSON.stringify(eb), JSON.stringify(ea), 'the older clone keeps the old extent');
    t.equal(catalog.getVd(c).sharedBytes, 3 * EXTENT);
    t.same(catalog.check(), [], 'counts: old extent 1 owner (b), new extent 2 (a, c)');
    catalog.acquireLease(server, a);
    const [r2] = catalog.reserveCowExtents(server, a, EXTENT, 1);
    catalog.commitCowRemaps(server, a, [{ virtualOffset: 0, length: EXTENT, ...r2! }]);
    t.not(JSON.stringify(catalog.getVd(c).extents), JSON.stringify(catalog.getVd(a).extents),
      'once switched, the clone no longer follows');
    t.same(catalog.check(), []);
  });

t.test('a lease may record the generation its server switched to, not a later one',
  async (t) => {
    const { catalog } = setup(t);
    const a = live(catalog, EXTENT);
    const server = catalog.registerServer();
    const g = catalog.acquireLease(server, a).generation;
    const b = catalog.cloneVd(a).id;
    const c = catalog.cloneVd(a).id;
    t.equal(catalog.acquireLease(server, a, g + 1).generation, g + 1);
    t.equal(catalog.isCloneSwitched(b), true, 'switched for the first clone');
    t.equal(catalog.isCloneSwitched(c), false, 'not yet for the second');
    t.throws(() => catalog.acquireLease(server, a, g + 3), { code: 'ERR_CATALOG_INVALID' });
    t.throws(() => catalog.acquireLease(server, a, g), { code: 'ERR_CATALOG_INVALID' },
      'never back');
    catalog.acquireLease(server, a);
    t.equal(catalog.isCloneSwitched(c), true);
  });
