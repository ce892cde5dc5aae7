/**
 * Imports in the catalog: a VD being imported is usable by nobody until completeImport flips it
 * live; an import whose process is gone is a note for check (not a fault) and
 * cleanAbandonedImports gives its extents back to the free runs and removes the VD nobody saw.
 * A dead owner is made by rewriting the owner's start time, as a reused pid would look.
 */
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import t, { type Test } from 'tap';
import { identityOfFile, openCatalog, type Catalog } from '../../src/catalog';

const MIB = 1024 * 1024;
const EXTENT = MIB;

interface Fixture {
  file: string;
  catalog: Catalog;
  clock: { ms: number };
}

function setup(t: Test, extents = 16): Fixture {
  const dir = t.testdir();
  const clock = { ms: 1_000_000 };
  const file = path.join(dir, 'catalog.sqlite');
  const catalog = openCatalog(file, { now: () => clock.ms });
  t.teardown(() => catalog.close());
  const image = path.join(dir, 'pool.img');
  fs.writeFileSync(image, '');
  fs.truncateSync(image, extents * EXTENT);
  const st = fs.statSync(image);
  catalog.formatMember({ path: image, kind: 'file', sizeBytes: extents * EXTENT,
    extentSize: EXTENT, identity: identityOfFile(st.dev, st.ino) });
  return { file, catalog, clock };
}

function codeOf(run: () => unknown): string | null {
  try {
    run();
    return null;
  } catch (error) {
    return (error as { code?: string }).code ?? 'no code';
  }
}

/** Runs SQL on the catalog file as another tool would (foreign keys off). */
function raw(file: string, sql: string): void {
  const db = new Database(file);
  try {
    db.exec(sql);
  } finally {
    db.close();
  }
}

/** Makes the import of vdId look abandoned: its owner's start time no longer matches. */
function killOwner(file: string, vdId: number): void {
  raw(file, `UPDATE vd_imports SET pid_start_time = 'gone' WHERE vd_id = ${vdId}`);
}

t.test('an importing VD is not listed and nothing can use it until it completes', async (t) => {
  const { catalog, clock } = setup(t);
  const vd = catalog.beginImport({ size: 3 * MIB, expiresInS: 60, name: 'img' });
  t.equal(vd.state, 'importing');
  t.equal(vd.expiresAt, null, 'no expiry while importing: nothing may reclaim it');
  t.same(catalog.listVds().map((v) => v.id), [], 'not listed');
  t.same(catalog.listVds({ all: true }).map((v) => [v.id, v.state]), [[vd.id, 'importing']]);
  t.equal(codeOf(() => catalog.growVd(vd.id, MIB)), 'ERR_VD_IMPORTING');
  t.equal(codeOf(() => catalog.refreshVd(vd.id, 5)), 'ERR_VD_IMPORTING');
  t.equal(codeOf(() => catalog.deleteVd(vd.id)), 'ERR_VD_IMPORTING');
  t.equal(codeOf(() => catalog.undeleteVd(vd.id)), 'ERR_VD_IMPORTING');
  t.equal(codeOf(() => catalog.addVbd({ domain: 1, device: 'xvda', mode: 'r',
    source: { kind: 'vd', vdId: vd.id } })), 'ERR_VD_IMPORTING');
  const server = catalog.registerServer();
  t.equal(codeOf(() => catalog.acquireLease(server, vd.id)), 'ERR_VD_IMPORTING');
  const report = catalog.checkReport();
  t.same(report.faults, []);
  t.match(report.notes, [new RegExp(`^VD ${vd.id}: being imported by pid ${process.pid}`)]);
  t.same(catalog.cleanAbandonedImports(), [], 'a running import is left alone');
  t.ok(catalog.isImportOwned(vd.id), 'this process owns it');
  clock.ms += 10_000;
  const live = catalog.completeImport(vd.id);
  t.equal(live.state, 'zeroing', 'live (its zeroing was not run here)');
  t.equal(live.expiresAt, clock.ms + 60_000, 'the expiry counts from completion');
  t.same(catalog.listVds().map((v) => v.id), [vd.id]);
  t.equal(codeOf(() => catalog.completeImport(vd.id)), 'ERR_VD_IMPORT_LOST', 'only once');
  t.notOk(catalog.isImportOwned(vd.id), 'a live VD is owned by no import');
  t.same(catalog.checkReport(), { faults: [], notes: [] });
});

t.test('an abandoned import is a note; the cleanup frees its extents and its VD', async (t) => {
  const { file, catalog } = setup(t);
  const kept = catalog.createVd({ size: 2 * MIB });
  const before = catalog.freeSpace();
  const vd = catalog.beginImport({ size: 5 * MIB });
  catalog.createVd({ size: 1 * MIB }); // allocated after it: its freed runs are not at the end
  killOwner(file, vd.id);
  t.notOk(catalog.isImportOwned(vd.id), 'no longer owned by this process');
  const report = catalog.checkReport();
  t.same(report.faults, [], 'not a fault');
  t.match(report.notes, [new RegExp(`^VD ${vd.id}: import abandoned \\(pid \\d+ is not running`)]);
  t.same(catalog.cleanAbandonedImports(), [vd.id]);
  t.same(catalog.cleanAbandonedImports(), [], 'once');
  t.equal(codeOf(() => catalog.getVd(vd.id)), 'ERR_VD_UNKNOWN', 'the VD nobody saw is gone');
  t.equal(catalog.freeSpace().totalBytes, before.totalBytes - 1 * EXTENT);
  t.equal(catalog.pendingZeroing().filter((z) => z.vdId === vd.id).length, 0);
  t.same(catalog.checkReport(), { faults: [], notes: [] });
  t.same(catalog.listVds().map((v) => v.id), [kept.id, vd.id + 1]);
  const reused = catalog.createVd({ size: 5 * MIB });
  t.ok(reused.extents.some((e) => e.offset === 2 * EXTENT), 'its extents are taken again');
  t.equal(reused.state, 'zeroing', 'and zeroed on reuse');
});

t.test('the owner that fails its copy frees the import; completing it then fails', async (t) => {
  const { catalog } = setup(t);
  const before = catalog.freeSpace().totalBytes;
  const vd = catalog.beginImport({ size: 4 * MIB });
  catalog.abandonImport(vd.id);
  t.equal(catalog.freeSpace().totalBytes, before);
  t.equal(codeOf(() => catalog.completeImport(vd.id)), 'ERR_VD_IMPORT_LOST');
  t.equal(codeOf(() => catalog.abandonImport(vd.id)), 'ERR_VD_IMPORT_LOST');
  t.same(catalog.check(), []);
});

t.test('an abandoned import that took a dead VD\'s extents stays as a deleted VD that cannot '
  + 'come back', async (t) => {
  const { file, catalog } = setup(t, 4);
  const old = catalog.createVd({ size: 4 * MIB });
  catalog.deleteVd(old.id);
  const vd = catalog.beginImport({ size: 2 * MIB });
  killOwner(file, vd.id);
  t.same(catalog.cleanAbandonedImports(), [vd.id]);
  t.equal(catalog.getVd(vd.id).state, 'deleted', 'kept: the dead VD\'s losses name it');
  t.equal(catalog.getVd(vd.id).allocatedBytes, 0);
  t.equal(codeOf(() => catalog.undeleteVd(vd.id)), 'ERR_VD_REUSED');
  t.equal(codeOf(() => catalog.undeleteVd(old.id)), 'ERR_VD_REUSED');
  t.equal(catalog.freeSpace().totalBytes, 4 * MIB, 'all four extents can be taken');
  t.same(catalog.check(), []);
});

t.test('check flags an importing VD that has an expiry, a VBD or a lease', async (t) => {
  const { file, catalog } = setup(t);
  const vd = catalog.beginImport({ size: 2 * MIB });
  const server = catalog.registerServer();
  raw(file, `PRAGMA foreign_keys = OFF;
    UPDATE vds SET expires_at = 5 WHERE id = ${vd.id};
    INSERT INTO vbds (domain, device, mode, source_kind, vd_id, created_at, expert)
      VALUES (1, 'xvda', 'r', 'vd', ${vd.id}, 0, 0);
    INSERT INTO leases (server_id, vd_id, generation) VALUES (${server}, ${vd.id}, 1);
    INSERT INTO vd_imports (vd_id, pid, pid_start_time, started_at, expiry_seconds)
      VALUES (99, 1, 'x', 0, 0);`);
  const faults = catalog.check();
  t.ok(faults.includes('import by pid 1 names VD 99, which does not exist'), 'an import of no VD');
  for (const what of ['has an expiry', 'a VBD names it', 'a server leases it']) {
    t.ok(faults.some((f) => f.startsWith(`VD ${vd.id}: being imported, yet`) && f.includes(what)),
      what);
  }
});
