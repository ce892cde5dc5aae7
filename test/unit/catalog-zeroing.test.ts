import assert from 'node:assert';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import t, { type Test } from 'tap';
import {
  identityOfDevice, identityOfFile, openCatalog, zeroPending, type Catalog,
} from '../../src/catalog';
import * as sys from '../../src/sys';
import { loopUnavailable } from '../helpers/process';

const MiB = 1024 * 1024;

/** Writes `image` as `sizeBytes` of `fill` and makes it a pool member of 4 MiB extents. */
function formatFilePool(catalog: Catalog, image: string, sizeBytes: number, fill: number): void {
  fs.writeFileSync(image, Buffer.alloc(sizeBytes, fill));
  const st = fs.statSync(image);
  catalog.formatMember({ path: image, kind: 'file', sizeBytes, extentSize: 4 * MiB,
    identity: identityOfFile(st.dev, st.ino) });
}

t.test('zeroing a VD on a loop device member leaves its extents zero and the rest intact',
  { skip: loopUnavailable() ?? false }, async (t) => {
    const dir = t.testdir();
    const image = path.join(dir, 'disk.img');
    fs.writeFileSync(image, Buffer.alloc(16 * MiB, 0xab));
    const device = execFileSync('losetup', ['-f', '--show', image], { encoding: 'utf8' }).trim();
    t.teardown(() => execFileSync('losetup', ['-d', device]));
    const rdev = fs.statSync(device).rdev;
    const majMin = `${Math.floor(rdev / 256) & 0xfff}:${(rdev & 0xff) | ((rdev >> 12) & 0xfff00)}`;
    const catalog = openCatalog(path.join(dir, 'catalog.sqlite'));
    t.teardown(() => catalog.close());
    catalog.formatMember({ path: device, kind: 'device', sizeBytes: 16 * MiB, extentSize: 4 * MiB,
      identity: identityOfDevice(majMin) });
    const vd = catalog.createVd({ size: 6 * MiB });
    t.same(await zeroPending(catalog), [vd.id]);
    const fd = fs.openSync(device, 'r');
    const data = Buffer.alloc(16 * MiB);
    fs.readSync(fd, data, 0, data.length, 0);
    fs.closeSync(fd);
    t.ok(data.subarray(0, 8 * MiB).every((b) => b === 0), 'both allocated extents read zero');
    t.ok(data.subarray(8 * MiB).every((b) => b === 0xab), 'unallocated extents are untouched');
    t.equal(catalog.getVd(vd.id).state, 'live');
  });

t.test('zeroing left over from a VD whose extents went to another VD never touches them',
  async (t) => {
    const dir = t.testdir();
    const image = path.join(dir, 'pool.img');
    const catalog = openCatalog(path.join(dir, 'catalog.sqlite'));
    t.teardown(() => catalog.close());
    formatFilePool(catalog, image, 8 * MiB, 0xab);
    const a = catalog.createVd({ size: 8 * MiB });
    catalog.deleteVd(a.id);
    const b = catalog.createVd({ size: 8 * MiB, zero: false });
    fs.writeFileSync(image, Buffer.alloc(8 * MiB, 0xcd));
    t.same(catalog.pendingZeroing(), [], 'taking the extents dropped the old pending zeroing');
    t.same(await zeroPending(catalog), []);
    t.ok(fs.readFileSync(image).every((x) => x === 0xcd), 'the new owner keeps its data');
    t.equal(catalog.getVd(b.id).state, 'live');
  });

t.test('a crash between allocation and zeroing leaves the VD unserved until a later run',
  async (t) => {
    const dir = t.testdir();
    const image = path.join(dir, 'pool.img');
    const file = path.join(dir, 'catalog.sqlite');
    const first = openCatalog(file);
    formatFilePool(first, image, 8 * MiB, 0xab);
    const vd = first.createVd({ size: 4 * MiB });
    first.addVbd({ domain: 1, device: 'xvda', mode: 'w', source: { kind: 'vd', vdId: vd.id } });
    first.close(); // the process "dies" before zeroing
    const second = openCatalog(file, { create: false });
    t.teardown(() => second.close());
    t.equal(second.resolveVbd(1, 'xvda').isDangling, true);
    t.same(await zeroPending(second), [vd.id]);
    t.equal(second.resolveVbd(1, 'xvda').isDangling, false);
    t.ok(fs.readFileSync(image).subarray(0, 4 * MiB).every((x) => x === 0));
  });

/** The bytes of [start, end) of a VD, read from its member file through its extent list. */
function readVirtual(catalog: Catalog, vdId: number, start: number, end: number): Buffer {
  const out = Buffer.alloc(end - start);
  let base = 0;
  for (const extent of catalog.getVd(vdId).extents) {
    const from = Math.max(start, base);
    const to = Math.min(end, base + extent.length);
    if (from < to) {
      const fd = fs.openSync(extent.path, 'r');
      fs.readSync(fd, out, from - start, to - from, extent.offset + (from - base));
      fs.closeSync(fd);
    }
    base += extent.length;
  }
  assert(base >= end, 'the VD holds the range read');
  return out;
}


/** A pool of `extents` 4 MiB extents; VD A covers it, is written with 0xab and deleted. */
async function poolAfterDeletedVd(t: Test, extents: number): Promise<Catalog> {
  const dir = t.testdir();
  const image = path.join(dir, 'pool.img');
  const catalog = openCatalog(path.join(dir, 'catalog.sqlite'));
  t.teardown(() => catalog.close());
  formatFilePool(catalog, image, extents * 4 * MiB, 0);
  const a = catalog.createVd({ size: extents * 4 * MiB });
  t.same(await zeroPending(catalog), [a.id]);
  fs.writeFileSync(image, Buffer.alloc(extents * 4 * MiB, 0xab)); // A's owner fills its disk
  catalog.deleteVd(a.id);
  return catalog;
}

const isAll = (data: Buffer, byte: number) => data.every((x) => x === byte);

t.test('a zeroed enlarge into the slack of a --no-zero VD reads as zero there', async (t) => {
  const catalog = await poolAfterDeletedVd(t, 2);
  const b = catalog.createVd({ size: 5 * MiB, zero: false });
  t.equal(b.allocatedBytes, 8 * MiB, 'B took A\'s extents; [5, 8) MiB is slack');
  t.ok(isAll(readVirtual(catalog, b.id, 0, 5 * MiB), 0xab), '--no-zero: A\'s data shows');
  const grown = catalog.growVd(b.id, 2 * MiB);
  t.same(grown.extents, b.extents, 'the growth fits in the slack: no new extent');
  t.equal(grown.state, 'zeroing', 'not served until the slack is zeroed');
  t.same(await zeroPending(catalog), [b.id]);
  t.equal(catalog.getVd(b.id).state, 'live');
  t.ok(isAll(readVirtual(catalog, b.id, 5 * MiB, 7 * MiB), 0), 'the enlarged range reads zero');
  t.ok(isAll(readVirtual(catalog, b.id, 0, 5 * MiB), 0xab), 'what B had is untouched');
  t.ok(isAll(readVirtual(catalog, b.id, 7 * MiB, 8 * MiB), 0xab),
    'slack still outside the VD is left alone');
  t.same(catalog.check(), []);
});

t.test('a zeroed enlarge past the slack zeroes the slack as well as the new extents',
  async (t) => {
    const catalog = await poolAfterDeletedVd(t, 3);
    const b = catalog.createVd({ size: 5 * MiB, zero: false });
    t.equal(b.allocatedBytes, 8 * MiB);
    const grown = catalog.growVd(b.id, 5 * MiB);
    t.equal(grown.allocatedBytes, 12 * MiB, 'one new extent');
    t.same(await zeroPending(catalog), [b.id]);
    t.ok(isAll(readVirtual(catalog, b.id, 5 * MiB, 10 * MiB), 0), 'slack and new extent');
    t.ok(isAll(readVirtual(catalog, b.id, 0, 5 * MiB), 0xab), 'what B had is untouched');
    t.same(catalog.check(), []);
  });

t.test('an enlarge with --no-zero leaves its own range as it was (the explicit opt-out)',
  async (t) => {
    const catalog = await poolAfterDeletedVd(t, 2);
    const b = catalog.createVd({ size: 5 * MiB, zero: false });
    const grown = catalog.growVd(b.id, 2 * MiB, { zero: false });
    t.equal(grown.state, 'live', 'nothing pending');
    t.ok(isAll(readVirtual(catalog, b.id, 0, 7 * MiB), 0xab));
  });

t.test('zeroing a file member punches holes: a pool image stays sparse', async (t) => {
  const dir = t.testdir();
  const image = path.join(dir, 'pool.img');
  const catalog = openCatalog(path.join(dir, 'catalog.sqlite'));
  t.teardown(() => catalog.close());
  formatFilePool(catalog, image, 8 * MiB, 0xab); // every block allocated
  const allocatedBefore = fs.statSync(image).blocks * 512;
  t.ok(allocatedBefore >= 8 * MiB, 'the image starts dense');
  const vd = catalog.createVd({ size: 4 * MiB });
  t.same(await zeroPending(catalog), [vd.id]);
  const data = fs.readFileSync(image);
  t.ok(isAll(data.subarray(0, 4 * MiB), 0), 'the VD reads zero');
  t.ok(isAll(data.subarray(4 * MiB), 0xab), 'the rest is untouched');
  if (!sys.isNative) return; // without the addon zeros are written; nothing is punched
  t.ok(fs.statSync(image).blocks * 512 <= allocatedBefore - 4 * MiB,
    'the zeroed extent no longer holds blocks');
});
