import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { identityOfDevice, identityOfFile, openCatalog, zeroPending } from '../../src/catalog';

const MiB = 1024 * 1024;

function hasLosetup(): boolean {
  try {
    execFileSync('losetup', ['--version'], { stdio: 'ignore' });
    return process.getuid?.() === 0;
  } catch {
    return false;
  }
}

t.test('zeroing a VD on a loop device member leaves its extents zero and the rest intact',
  { skip: hasLosetup() ? false : 'needs root and losetup' }, async (t) => {
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
    fs.writeFileSync(image, Buffer.alloc(8 * MiB, 0xab));
    const st = fs.statSync(image);
    const catalog = openCatalog(path.join(dir, 'catalog.sqlite'));
    t.teardown(() => catalog.close());
    catalog.formatMember({ path: image, kind: 'file', sizeBytes: 8 * MiB, extentSize: 4 * MiB,
      identity: identityOfFile(st.dev, st.ino) });
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
    fs.writeFileSync(image, Buffer.alloc(8 * MiB, 0xab));
    const st = fs.statSync(image);
    const file = path.join(dir, 'catalog.sqlite');
    const first = openCatalog(file);
    first.formatMember({ path: image, kind: 'file', sizeBytes: 8 * MiB, extentSize: 4 * MiB,
      identity: identityOfFile(st.dev, st.ino) });
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
