import fs from 'node:fs';
import path from 'node:path';
import t, { type Test } from 'tap';
import Database from 'better-sqlite3';
import { openCatalog, identityOfFile, zeroPending, type Catalog } from '../../src/catalog';
import { MIGRATIONS } from '../../src/catalog/migrations';

const MiB = 1024 * 1024;
const EXTENT = 4 * MiB;

interface Fixture {
  dir: string;
  catalog: Catalog;
  file: string;
  clock: { ms: number };
}

function makeImage(dir: string, name: string, sizeBytes: number): { file: string; identity: string } {
  const file = path.join(dir, name);
  fs.writeFileSync(file, '');
  fs.truncateSync(file, sizeBytes);
  const st = fs.statSync(file);
  return { file, identity: identityOfFile(st.dev, st.ino) };
}

function setup(t: Test, extents = 16): Fixture {
  const dir = t.testdir();
  const clock = { ms: 1_000_000 };
  const catalog = openCatalog(path.join(dir, 'sub', 'catalog.sqlite'), { now: () => clock.ms });
  t.teardown(() => catalog.close());
  const image = makeImage(dir, 'pool.img', extents * EXTENT);
  catalog.formatMember({ path: image.file, kind: 'file', sizeBytes: extents * EXTENT,
    extentSize: EXTENT, identity: image.identity });
  return { dir, catalog, file: image.file, clock };
}

function dump(file: string): string {
  const db = new Database(file, { readonly: true });
  try {
    const tables = db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
      .all() as { name: string }[];
    return JSON.stringify(tables.map(({ name }) => [name, db.prepare(`SELECT * FROM "${name}"`).all()]));
  } finally {
    db.close();
  }
}


t.test('create allocates whole extents, keeps the exact size and reports extents', async (t) => {
  const { catalog, file } = setup(t);
  const vd = catalog.createVd({ size: 10 * MiB, name: 'web' });
  t.equal(vd.size, 10 * MiB);
  t.equal(vd.allocatedBytes, 3 * EXTENT);
  t.equal(vd.name, 'web');
  t.equal(vd.expiresAt, null);
  t.same(vd.extents, [{ memberId: 1, path: file, offset: 0, length: 3 * EXTENT }]);
  t.equal(vd.extents.reduce((s, e) => s + e.length, 0), vd.allocatedBytes);
  t.same(catalog.check(), []);
});

t.test('ids are never reused, even after delete', async (t) => {
  const { catalog } = setup(t);
  const a = catalog.createVd({ size: MiB });
  catalog.deleteVd(a.id);
  const b = catalog.createVd({ size: MiB });
  t.ok(b.id > a.id);
});

t.test('new extents are pending zeroing until zeroPending runs, and then read as zero',
  async (t) => {
    const { catalog, file } = setup(t, 4);
    fs.writeFileSync(file, Buffer.alloc(4 * EXTENT, 0xab));
    const vd = catalog.createVd({ size: 2 * EXTENT });
    t.equal(vd.state, 'zeroing');
    t.equal(catalog.pendingZeroing().length, 1);
    t.same(await zeroPending(catalog), [vd.id]);
    t.equal(catalog.getVd(vd.id).state, 'live');
    t.same(catalog.pendingZeroing(), []);
    const data = fs.readFileSync(file);
    t.ok(data.subarray(0, 2 * EXTENT).every((b) => b === 0), 'allocated extents are zero');
    t.ok(data.subarray(2 * EXTENT).every((b) => b === 0xab), 'the rest is untouched');
    const raw = catalog.createVd({ size: EXTENT, zero: false });
    t.equal(raw.state, 'live', '--no-zero skips zeroing');
  });

t.test('delete expires now; the extents are reused, the VD keeps its head', async (t) => {
  const { catalog, clock } = setup(t, 4);
  const a = catalog.createVd({ size: 3 * EXTENT, zero: false });
  t.equal(catalog.deleteVd(a.id).state, 'deleted');
  clock.ms += 1000;
  const b = catalog.createVd({ size: 2 * EXTENT, zero: false });
  t.same(b.extents.map((e) => e.offset), [3 * EXTENT, 2 * EXTENT], 'free first, then the tail');
  t.equal(catalog.getVd(a.id).extents.length, 1);
  t.equal(catalog.getVd(a.id).extents[0]!.offset, 0);
  t.same(catalog.check(), []);
});

t.test('undelete restores a VD nothing was taken from, and refuses naming reused extents',
  async (t) => {
    const { catalog } = setup(t, 8);
    const a = catalog.createVd({ size: 2 * EXTENT, zero: false });
    catalog.deleteVd(a.id);
    const back = catalog.undeleteVd(a.id, 60);
    t.equal(back.state, 'live');
    t.equal(back.expiresAt, 1_000_000 + 60_000);
    const b = catalog.createVd({ size: 4 * EXTENT, zero: false });
    catalog.deleteVd(b.id);
    catalog.createVd({ size: 4 * EXTENT, zero: false });
    catalog.createVd({ size: EXTENT, zero: false });
    t.throws(() => catalog.undeleteVd(b.id), { code: 'ERR_VD_REUSED', message: /extents \[\d+, \d+\) of .* went to VD 4/ });
    t.equal(catalog.getVd(b.id).state, 'deleted');
  });

t.test('undelete refuses to revive a VD under a VBD added while it was dead, by expert level',
  async (t) => {
    const { catalog, file } = setup(t, 8);
    const vd = catalog.createVd({ size: 2 * EXTENT, zero: false });
    catalog.addVbd({ domain: 1, device: 'xvda', mode: 'w', source: { kind: 'vd', vdId: vd.id } });
    catalog.deleteVd(vd.id);
    // (levels as vbd add needs them against xvda, which still names the dead VD)
    catalog.addVbd({ domain: 2, device: 'xvdb', mode: 'w', expert: 2,
      source: { kind: 'extents', extents: [{ path: file, offset: EXTENT, length: 512 }] } });
    catalog.addVbd({ domain: 3, device: 'xvdc', mode: 'r', expert: 1,
      source: { kind: 'phy', path: file, sizeBytes: 8 * EXTENT } });
    const before = dump(catalog.path);
    t.throws(() => catalog.undeleteVd(vd.id), { code: 'ERR_VBD_SHARING',
      message: /^undelete: VD 1 would share .*pool\.img \[0, 8388608\) with VBD 2\/xvdb \(w\) at .*\[4194304, 4194816\): needs expert level 2, have 0$/ });
    t.throws(() => catalog.undeleteVd(vd.id, 0, { expert: 1 }), { code: 'ERR_VBD_SHARING',
      message: /VBD 2\/xvdb \(w\).*needs expert level 2, have 1/ });
    t.equal(dump(catalog.path), before, 'a refused undelete changes nothing');
    catalog.removeVbd(2, 'xvdb');
    t.throws(() => catalog.undeleteVd(vd.id), { code: 'ERR_VBD_SHARING',
      message: /VBD 3\/xvdc \(r\).*needs expert level 1, have 0/ }, 'a reader needs level 1');
    t.equal(catalog.undeleteVd(vd.id, 0, { expert: 1 }).state, 'live',
      'its own vd: VBD is no conflict');
    t.same(catalog.check(), [], 'check judges the revived VD at the level it was undeleted with');
    t.equal(catalog.undeleteVd(vd.id).state, 'live', 'undelete of a live VD judges nothing anew');
    t.same(catalog.check(), []);
  });

t.test('undelete --expert 2 revives a VD under a writable VBD, and check agrees', async (t) => {
  const { catalog, file } = setup(t, 8);
  const vd = catalog.createVd({ size: 2 * EXTENT, zero: false });
  catalog.deleteVd(vd.id);
  catalog.addVbd({ domain: 2, device: 'xvdb', mode: 'w',
    source: { kind: 'phy', path: file, sizeBytes: 8 * EXTENT } });
  t.equal(catalog.undeleteVd(vd.id, 0, { expert: 2 }).state, 'live');
  t.same(catalog.check(), []);
  catalog.deleteVd(vd.id);
  t.throws(() => catalog.undeleteVd(vd.id), { code: 'ERR_VBD_SHARING' },
    'each undelete is judged at its own level');
});

t.test('unknown and deleted ids fail with their codes; delete twice fails', async (t) => {
  const { catalog } = setup(t);
  const a = catalog.createVd({ size: MiB });
  catalog.deleteVd(a.id);
  t.throws(() => catalog.deleteVd(a.id), { code: 'ERR_VD_DELETED' });
  t.throws(() => catalog.refreshVd(a.id, 5), { code: 'ERR_VD_DELETED' });
  t.throws(() => catalog.enlargeVd(a.id, 2 * MiB), { code: 'ERR_VD_DELETED' });
  for (const op of [() => catalog.deleteVd(99), () => catalog.getVd(99),
    () => catalog.undeleteVd(99), () => catalog.refreshVd(99, 0)]) {
    t.throws(op, { code: 'ERR_VD_UNKNOWN' });
  }
});

t.test('out of space names the free space and leaves the catalog byte-identical', async (t) => {
  const { catalog } = setup(t, 4);
  catalog.createVd({ size: EXTENT });
  const before = dump(catalog.path);
  t.throws(() => catalog.createVd({ size: 4 * EXTENT }), { code: 'ERR_VD_NO_SPACE', message: /free 12582912 bytes \(12\.0 MiB/ });
  t.throws(() => catalog.enlargeVd(1, 8 * EXTENT), { code: 'ERR_VD_NO_SPACE' });
  t.equal(dump(catalog.path), before);
});

t.test('invalid input is refused before anything changes', async (t) => {
  const { catalog } = setup(t);
  const before = dump(catalog.path);
  for (const size of [0, -1, 1.5, Number.NaN]) {
    t.throws(() => catalog.createVd({ size }), { code: 'ERR_CATALOG_INVALID' });
  }
  t.throws(() => catalog.createVd({ size: MiB, expiresInS: -1 }),
    { code: 'ERR_CATALOG_INVALID' });
  t.throws(() => catalog.createVd({ size: MiB, onMember: '/nope' }),
    { code: 'ERR_CATALOG_MEMBER_UNKNOWN' });
  t.equal(dump(catalog.path), before);
});

t.test('enlarge grows by appending extents; the slack counts; shrinking is refused', async (t) => {
  const { catalog } = setup(t);
  const vd = catalog.createVd({ size: EXTENT + 1, zero: false });
  const same = catalog.enlargeVd(vd.id, 2 * EXTENT);
  t.equal(same.extents.length, 1, 'slack in the last extent is used first');
  t.equal(same.size, 2 * EXTENT);
  const other = catalog.createVd({ size: EXTENT, zero: false });
  const grown = catalog.enlargeVd(vd.id, 4 * EXTENT);
  t.equal(grown.allocatedBytes, 4 * EXTENT);
  t.same(grown.extents.slice(0, 1), same.extents, 'old extents stay first');
  t.ok(grown.generation > same.generation);
  t.equal(catalog.getVd(other.id).extents[0]!.offset, 2 * EXTENT);
  t.throws(() => catalog.enlargeVd(vd.id, EXTENT), { code: 'ERR_VD_SHRINK' });
  t.same(catalog.check(), []);
});

t.test('expiry makes a VD dead at its time; refresh 0 means never', async (t) => {
  const { catalog, clock } = setup(t, 2);
  const a = catalog.createVd({ size: EXTENT, expiresInS: 10, zero: false });
  const b = catalog.createVd({ size: EXTENT, expiresInS: 10, zero: false });
  catalog.refreshVd(b.id, 0);
  clock.ms += 10_000;
  t.equal(catalog.getVd(a.id).state, 'expired');
  t.same(catalog.listVds().map((v) => v.id), [b.id]);
  t.same(catalog.listVds({ all: true }).map((v) => v.id), [a.id, b.id]);
  t.equal(catalog.freeSpace().reclaimableBytes, EXTENT);
  t.equal(catalog.createVd({ size: EXTENT }).extents[0]!.offset, 0, 'expired space is reused');
});

t.test('onMember restricts placement; duplicates by path or identity are refused', async (t) => {
  const { catalog, dir, file } = setup(t, 2);
  const second = makeImage(dir, 'b.img', 2 * EXTENT);
  const m = catalog.formatMember({ path: second.file, kind: 'file', sizeBytes: 2 * EXTENT,
    extentSize: EXTENT, identity: second.identity });
  t.equal(catalog.createVd({ size: EXTENT, onMember: second.file }).extents[0]!.memberId, m.id);
  t.equal(catalog.createVd({ size: EXTENT, onMember: m.id }).extents[0]!.memberId, m.id);
  t.throws(() => catalog.createVd({ size: EXTENT, onMember: m.id }),
    { code: 'ERR_VD_NO_SPACE' });
  t.throws(() => catalog.formatMember({ path: file, kind: 'file', sizeBytes: EXTENT,
    extentSize: EXTENT, identity: 'file:1:1' }), { code: 'ERR_CATALOG_MEMBER_DUPLICATE' });
  t.throws(() => catalog.formatMember({ path: '/other/name', kind: 'file', sizeBytes: EXTENT,
    extentSize: EXTENT, identity: second.identity }),
  { code: 'ERR_CATALOG_MEMBER_DUPLICATE', message: /same file/ });
  t.throws(() => catalog.formatMember({ path: '/x', kind: 'file', sizeBytes: EXTENT,
    extentSize: 1000, identity: 'file:9:9' }), { code: 'ERR_CATALOG_INVALID' });
  t.throws(() => catalog.formatMember({ path: '/x', kind: 'file', sizeBytes: 100,
    extentSize: 512, identity: 'file:9:9' }), { code: 'ERR_CATALOG_INVALID' });
  t.equal(catalog.listMembers().length, 2);
});

t.test('freeSpace reports never-used, reclaimable and totals per member', async (t) => {
  const { catalog } = setup(t, 10);
  const a = catalog.createVd({ size: 3 * EXTENT });
  catalog.deleteVd(a.id);
  catalog.createVd({ size: 2 * EXTENT });
  const free = catalog.freeSpace();
  t.equal(free.neverUsedBytes, 5 * EXTENT);
  t.equal(free.reclaimableBytes, 3 * EXTENT);
  t.equal(free.totalBytes, 8 * EXTENT);
  t.equal(free.members[0]!.neverUsedExtents, 5);
  t.equal(free.members[0]!.reclaimableExtents, 3);
});

t.test('check finds double ownership, lost extents and short VDs', async (t) => {
  const { catalog } = setup(t, 4);
  catalog.createVd({ size: 2 * EXTENT });
  const db = new Database(catalog.path);
  db.prepare('UPDATE free_runs SET first_extent = 1, extent_count = 2').run();
  db.prepare('UPDATE vds SET size_bytes = ?').run(3 * EXTENT);
  db.close();
  const faults = catalog.check();
  t.ok(faults.some((f) => /owned by both/.test(f)), 'double ownership');
  t.ok(faults.some((f) => /\[3, 4\) are lost/.test(f)), 'lost extents');
  t.ok(faults.some((f) => /less than its size/.test(f)), 'short VD');
});

t.test('check finds pending zeroing outside its VD\'s extents, to the byte', async (t) => {
  const { catalog } = setup(t, 4);
  const vd = catalog.createVd({ size: EXTENT + 512, zero: false });
  catalog.enlargeVd(vd.id, 2 * EXTENT);
  t.same(catalog.pendingZeroing().map((z) => [z.offset, z.length]),
    [[EXTENT + 512, EXTENT - 512]], 'the slack made visible is pending, not the whole extent');
  t.same(catalog.check(), []);
  const db = new Database(catalog.path);
  db.prepare('UPDATE pending_zero SET length = length + 1').run();
  db.close();
  t.match(catalog.check(), [/VD 1: pending zeroing of member 1 bytes \[4194816, 8388609\) lies outside/]);
});

t.test('checkReport: VBDs keep their expert level; stale leases are notes, not faults',
  async (t) => {
    const { catalog } = setup(t, 8);
    const vd = catalog.createVd({ size: 2 * EXTENT, zero: false });
    catalog.addVbd({ domain: 1, device: 'xvda', mode: 'w', source: { kind: 'vd', vdId: vd.id } });
    catalog.addVbd({ domain: 2, device: 'xvda', mode: 'r', source: { kind: 'vd', vdId: vd.id },
      expert: 1 });
    const server = catalog.registerServer();
    catalog.acquireLease(server, vd.id);
    t.same(catalog.checkReport(), { faults: [], notes: [] });
    const db = new Database(catalog.path);
    t.same(db.prepare('SELECT expert FROM vbds ORDER BY id').all(), [{ expert: 0 }, { expert: 1 }]);
    db.prepare("UPDATE servers SET pid_start_time = 'gone'").run();
    db.close();
    const report = catalog.checkReport();
    t.same(report.faults, []);
    t.match(report.notes, [/^server 1 \(pid \d+\) is not running: its leases of VD 1 are stale/]);
    t.same(catalog.check(), [], 'check() is the faults alone');
  });

t.test('VBD sharing: writers overlapping are refused by level, containment included',
  async (t) => {
    const { catalog, file } = setup(t, 8);
    const vd = catalog.createVd({ size: 2 * EXTENT, zero: false });
    catalog.addVbd({ domain: 1, device: 'xvda', mode: 'w', source: { kind: 'vd', vdId: vd.id } });
    t.throws(() => catalog.addVbd({ domain: 1, device: 'xvda', mode: 'r',
      source: { kind: 'vd', vdId: vd.id } }), { code: 'ERR_VBD_EXISTS' });
    t.throws(() => catalog.addVbd({ domain: 2, device: 'xvda', mode: 'r',
      source: { kind: 'vd', vdId: vd.id } }), { code: 'ERR_VBD_SHARING' });
    catalog.addVbd({ domain: 2, device: 'xvda', mode: 'r', source: { kind: 'vd', vdId: vd.id },
      expert: 1 });
    t.throws(() => catalog.addVbd({ domain: 3, device: 'xvda', mode: 'w',
      source: { kind: 'vd', vdId: vd.id }, expert: 1 }), { code: 'ERR_VBD_SHARING' });
    // An extent list strictly inside the VD's range (neither endpoint shared) is still caught.
    const inside = { path: file, offset: EXTENT / 2, length: EXTENT };
    t.throws(() => catalog.addVbd({ domain: 4, device: 'xvda', mode: 'w',
      source: { kind: 'extents', extents: [inside] } }), { code: 'ERR_VBD_SHARING' });
    t.throws(() => catalog.addVbd({ domain: 4, device: 'xvda', mode: 'r',
      source: { kind: 'phy', path: file, sizeBytes: 8 * EXTENT } }),
    { code: 'ERR_VBD_SHARING' }, 'a phy: member overlaps every VD on it');
    catalog.addVbd({ domain: 5, device: 'xvdb', mode: 'w', source: { kind: 'vd', vdId: vd.id },
      expert: 2 });
    t.equal(catalog.listVbds().length, 3);
    catalog.removeVbd(5, 'xvdb');
    t.throws(() => catalog.removeVbd(5, 'xvdb'), { code: 'ERR_VBD_UNKNOWN' });
  });

t.test('resolveVbd trims to the exact size and flags dead or zeroing VDs', async (t) => {
  const { catalog, file } = setup(t, 8);
  const vd = catalog.createVd({ size: EXTENT + 512 });
  catalog.addVbd({ domain: 1, device: 'xvda', mode: 'w', source: { kind: 'vd', vdId: vd.id } });
  t.equal(catalog.resolveVbd(1, 'xvda').isDangling, true, 'zeroing is not served');
  await zeroPending(catalog);
  const r = catalog.resolveVbd(1, 'xvda');
  t.equal(r.isDangling, false);
  t.equal(r.size, EXTENT + 512);
  t.same(r.extents, [{ path: file, offset: 0, length: EXTENT + 512 }]);
  const version = catalog.dataVersion();
  t.equal(typeof version, 'number');
  catalog.deleteVd(vd.id);
  const dead = catalog.resolveVbd(1, 'xvda');
  t.equal(dead.isDangling, true);
  t.same(dead.extents, []);
  t.throws(() => catalog.resolveVbd(1, 'nope'), { code: 'ERR_VBD_UNKNOWN' });
});

t.test('an enlarged VD is served at its old size until the new range is zeroed', async (t) => {
  const { catalog, file } = setup(t, 8);
  const vd = catalog.createVd({ size: EXTENT + 512 });
  await zeroPending(catalog);
  catalog.addVbd({ domain: 1, device: 'xvda', mode: 'w', source: { kind: 'vd', vdId: vd.id } });
  const before = catalog.resolveVbd(1, 'xvda');
  catalog.growVd(vd.id, 2 * EXTENT);
  catalog.growVd(vd.id, EXTENT, { zero: false });
  t.equal(catalog.getVd(vd.id).state, 'zeroing');
  const during = catalog.resolveVbd(1, 'xvda');
  t.equal(during.isDangling, false, 'the old range stays servable');
  t.equal(during.size, EXTENT + 512, 'up to the first byte pending zeroing');
  t.same(during.extents, before.extents);
  t.ok(during.generation > before.generation);
  await zeroPending(catalog);
  const after = catalog.resolveVbd(1, 'xvda');
  t.equal(after.size, 4 * EXTENT + 512);
  t.same(after.extents.map((e) => [e.path, e.offset, e.length]),
    [[file, 0, 2 * EXTENT], [file, 2 * EXTENT, 2 * EXTENT], [file, 4 * EXTENT, 512]]);
  t.ok(after.generation > during.generation, 'the end of zeroing is a change servers see');
});

t.test('a VBD naming a deleted VD holds nothing: the space is free, the VBD dangles', async (t) => {
  const { catalog } = setup(t, 2);
  const vd = catalog.createVd({ size: 2 * EXTENT, zero: false });
  catalog.addVbd({ domain: 1, device: 'xvda', mode: 'w', source: { kind: 'vd', vdId: vd.id } });
  catalog.deleteVd(vd.id);
  t.equal(catalog.resolveVbd(1, 'xvda').isDangling, true);
  t.ok(catalog.createVd({ size: 2 * EXTENT }), 'the deleted VD\'s extents are reused');
  t.equal(catalog.resolveVbd(1, 'xvda').isDangling, true, 'still dangling after reuse');
});

t.test('VBD paths must be absolute: the catalog compares them as strings', async (t) => {
  const { catalog } = setup(t, 4);
  const before = dump(catalog.path);
  t.throws(() => catalog.addVbd({ domain: 1, device: 'xvdz', mode: 'r',
    source: { kind: 'extents', extents: [{ path: 'pool.img', offset: 0, length: EXTENT }] } }),
  { code: 'ERR_CATALOG_INVALID', message: /absolute/ });
  t.throws(() => catalog.addVbd({ domain: 1, device: 'xvdz', mode: 'r',
    source: { kind: 'phy', path: '', sizeBytes: EXTENT } }), { code: 'ERR_CATALOG_INVALID' });
  t.equal(dump(catalog.path), before);
});

t.test('phy: and extent-list VBDs over pool space block allocation there', async (t) => {
  const { catalog, file } = setup(t, 4);
  catalog.addVbd({ domain: 1, device: 'xvdz', mode: 'r',
    source: { kind: 'extents', extents: [{ path: file, offset: 0, length: 2 * EXTENT }] } });
  const vd = catalog.createVd({ size: 2 * EXTENT });
  t.same(vd.extents.map((e) => e.offset), [2 * EXTENT]);
  t.throws(() => catalog.createVd({ size: EXTENT }), { code: 'ERR_VD_NO_SPACE' });
});

t.test('a live server lease holds a deleted VD until released, however silent', async (t) => {
  const { catalog, clock } = setup(t, 2);
  const vd = catalog.createVd({ size: 2 * EXTENT, zero: false });
  const server = catalog.registerServer();
  t.same(catalog.acquireLease(server, vd.id),
    { serverId: server, vdId: vd.id, generation: vd.generation });
  t.equal(catalog.liveLeases().length, 1);
  catalog.deleteVd(vd.id);
  t.throws(() => catalog.createVd({ size: EXTENT }),
    { code: 'ERR_VD_SPACE_DRAINING', message: /fenced and drained by a running server/ });
  t.equal(catalog.freeSpace().heldBytes, 2 * EXTENT);
  clock.ms += 600_000;
  t.equal(catalog.liveLeases().length, 1, 'no heartbeat for 10 minutes: the live process holds');
  t.throws(() => catalog.createVd({ size: EXTENT }), { code: 'ERR_VD_SPACE_DRAINING' });
  t.throws(() => catalog.heartbeat(999), { code: 'ERR_CATALOG_SERVER_UNKNOWN' });
  catalog.heartbeat(server);
  catalog.releaseLease(server, vd.id);
  t.ok(catalog.createVd({ size: EXTENT }), 'released: the space is reused');
  catalog.unregisterServer(server);
  t.throws(() => catalog.heartbeat(server), { code: 'ERR_CATALOG_SERVER_UNKNOWN' });
});

t.test('a request larger than the held space says no space, not draining', async (t) => {
  const { catalog } = setup(t, 2);
  const vd = catalog.createVd({ size: EXTENT, zero: false });
  const server = catalog.registerServer();
  catalog.acquireLease(server, vd.id);
  catalog.deleteVd(vd.id);
  t.throws(() => catalog.createVd({ size: 3 * EXTENT }), { code: 'ERR_VD_NO_SPACE' });
});

t.test('a lease of a server whose pid is gone is dead at once', async (t) => {
  const { catalog } = setup(t, 2);
  const vd = catalog.createVd({ size: EXTENT, zero: false });
  const server = catalog.registerServer();
  catalog.acquireLease(server, vd.id);
  const db = new Database(catalog.path);
  db.prepare("UPDATE servers SET pid_start_time = 'not-a-start-time'").run();
  db.close();
  t.same(catalog.liveLeases(), []);
});

t.test('open: not SQLite, unreadable, missing without create, and newer versions fail clearly',
  async (t) => {
    const dir = t.testdir({ 'junk.sqlite': 'this is not a database, just some text '.repeat(200) });
    t.throws(() => openCatalog(path.join(dir, 'junk.sqlite')), { code: 'ERR_CATALOG_OPEN', message: /^[^\n]*$/ });
    t.throws(() => openCatalog(dir), { code: 'ERR_CATALOG_OPEN' }, 'a directory');
    t.throws(() => openCatalog(path.join(dir, 'none.sqlite'), { create: false }),
      { code: 'ERR_CATALOG_OPEN' });
    const newer = path.join(dir, 'newer.sqlite');
    openCatalog(newer).close();
    const db = new Database(newer);
    db.pragma('user_version = 999');
    db.close();
    t.throws(() => openCatalog(newer), { code: 'ERR_CATALOG_VERSION' });
  });

t.test('the catalog runs WAL with synchronous=FULL and foreign keys on', async (t) => {
  const { catalog } = setup(t);
  const db = new Database(catalog.path, { readonly: true });
  t.equal(db.pragma('journal_mode', { simple: true }), 'wal');
  db.close();
  t.equal(catalog.schemaVersion, MIGRATIONS.length);
});

t.test('growVd adds to the size read under the write lock', async (t) => {
  const { catalog } = setup(t);
  const vd = catalog.createVd({ size: MiB, zero: false });
  t.equal(catalog.growVd(vd.id, MiB).size, 2 * MiB);
  t.equal(catalog.growVd(vd.id, 0).size, 2 * MiB);
  t.throws(() => catalog.growVd(vd.id, -1), { code: 'ERR_CATALOG_INVALID' });
  t.equal(catalog.growVd(vd.id, 2 * EXTENT).allocatedBytes, 3 * EXTENT);
});

t.test('an expiry too far in the future is refused, not stored imprecisely', async (t) => {
  const { catalog } = setup(t);
  t.throws(() => catalog.createVd({ size: MiB, expiresInS: 2 ** 52 }), { code: 'ERR_CATALOG_INVALID' });
  t.ok(catalog.createVd({ size: MiB, expiresInS: 10_000_000_000 }).expiresAt);
});
