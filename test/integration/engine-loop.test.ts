/**
 * The engine on real loop devices (root): a VBD whose extents alternate between two loop devices
 * over sparse images. Every byte written through the engine must land exactly where the map says;
 * the rest of each device keeps its fill pattern. Loop devices are always detached in teardown.
 */
import t, { type Test } from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { BackingPool } from '../../src/backing/pool';
import { openExport, type ExtentExport } from '../../src/engine/extent-export';
import type { ExtentSpec } from '../../src/engine/extent-map';
import { loopUnavailable } from '../helpers/process';
import { firstDifference } from '../helpers/replies';

const DEVICE_BYTES = 8 * 1024 * 1024;
const FILL = [0xa5, 0x5a];

function attach(t: Test, image: string, readOnly = false): string {
  const args = readOnly ? ['-r', '-f', '--show', image] : ['-f', '--show', image];
  const device = execFileSync('losetup', args, { encoding: 'utf8' }).trim();
  t.teardown(() => {
    execFileSync('losetup', ['-d', device]);
  });
  return device;
}

function makeImage(dir: string, name: string, fill: number): string {
  const file = path.join(dir, name);
  fs.writeFileSync(file, Buffer.alloc(DEVICE_BYTES, fill));
  return file;
}

function readDevice(device: string): Buffer {
  const fd = fs.openSync(device, 'r');
  try {
    const data = Buffer.alloc(DEVICE_BYTES);
    fs.readSync(fd, data, 0, DEVICE_BYTES, 0);
    return data;
  } finally {
    fs.closeSync(fd);
  }
}

/** 24 extents alternating between the devices, odd sizes, gaps between them on each device. */
function alternatingMap(devices: string[]): ExtentSpec[] {
  const extents: ExtentSpec[] = [];
  const cursors = [4096, 8192];
  for (let i = 0; i < 24; i++) {
    const which = i % 2;
    const length = 65536 + (i % 5) * 4096 + (i === 23 ? 1234 : 0);
    const offset = cursors[which] as number;
    extents.push({ path: devices[which] as string, offset, length });
    cursors[which] = offset + length + 16384; // a gap that must stay untouched
  }
  return extents;
}

/** The expected device contents after writing `virtual` through the map. */
function expectedDevices(extents: ExtentSpec[], devices: string[], virtual: Buffer): Buffer[] {
  const images = FILL.map((fill) => Buffer.alloc(DEVICE_BYTES, fill));
  let cursor = 0;
  for (const e of extents) {
    virtual.copy(images[devices.indexOf(e.path)] as Buffer, e.offset, cursor, cursor + e.length);
    cursor += e.length;
  }
  return images;
}

/** Two pattern-filled loop devices and a writable export whose extents alternate between them. */
async function openAlternating(t: Test): Promise<{ devices: string[]; extents: ExtentSpec[];
  size: number; pool: BackingPool; exp: ExtentExport }> {
  const dir = t.testdir();
  const devices = FILL.map((fill, i) => attach(t, makeImage(dir, `disk${i}.img`, fill)));
  const extents = alternatingMap(devices);
  const size = extents.reduce((sum, e) => sum + e.length, 0);
  const pool = new BackingPool();
  const exp = await openExport({ name: 'd/loop', description: '', mode: 'w', size, extents,
    pool });
  t.teardown(async () => {
    await exp.close();
    await pool.close();
  });
  return { devices, extents, size, pool, exp };
}

const skip = loopUnavailable();

t.test('writes through an alternating map land exactly where the map says', { skip: skip ?? false },
  async (t) => {
    const { devices, extents, size, pool, exp } = await openAlternating(t);
    t.equal(exp.isReadOnly, false);
    t.equal(pool.size, 2);

    const virtual = Buffer.alloc(size);
    for (let i = 0; i < size; i++) virtual[i] = (i * 7 + (i >>> 9)) & 0xff;
    await exp.write(0, virtual.subarray(0, 300_000), { fua: false });
    await exp.write(300_000, virtual.subarray(300_000, 300_001), { fua: true }); // one byte
    await exp.write(300_001, virtual.subarray(300_001), { fua: false });
    await exp.flush();

    const expected = expectedDevices(extents, devices, virtual);
    devices.forEach((device, i) => {
      const actual = readDevice(device);
      t.equal(firstDifference(actual, expected[i] as Buffer), -1, `${device} matches the map`);
    });

    const back = Buffer.alloc(size);
    await exp.read(0, size, back, 0);
    t.ok(back.equals(virtual), 'reads back through the map');
  });

t.test('zero and trim on loop devices stay inside the mapped ranges', { skip: skip ?? false },
  async (t) => {
    const { devices, extents, size, exp } = await openAlternating(t);
    const virtual = Buffer.alloc(size, 0x33);
    await exp.write(0, virtual, { fua: false });
    // unaligned zero across several extents, without and with permission to trim
    await exp.zero(1001, 200_000, { fua: false, mayTrim: false, fastOnly: false });
    virtual.fill(0, 1001, 201_001);
    await exp.zero(400_003, 150_000, { fua: true, mayTrim: true, fastOnly: false });
    virtual.fill(0, 400_003, 550_003);
    await exp.flush();
    const expected = expectedDevices(extents, devices, virtual);
    devices.forEach((device, i) => {
      t.equal(firstDifference(readDevice(device), expected[i] as Buffer), -1, `${device} zeroed`);
    });

    // trim: contents of the trimmed range are unspecified; everything else must be untouched
    await exp.trim(700_001, 100_000, { fua: false });
    await exp.flush();
    devices.forEach((device, i) => {
      const actual = readDevice(device);
      const wanted = expected[i] as Buffer;
      let cursor = 0;
      let stray = -1;
      const trimmed = new Uint8Array(DEVICE_BYTES);
      for (const e of extents) {
        const lo = Math.max(cursor, 700_001);
        const hi = Math.min(cursor + e.length, 800_001);
        if (e.path === device && lo < hi) trimmed.fill(1, e.offset + lo - cursor,
          e.offset + hi - cursor);
        cursor += e.length;
      }
      for (let b = 0; b < DEVICE_BYTES && stray < 0; b++) {
        if (trimmed[b] === 0 && actual[b] !== wanted[b]) stray = b;
      }
      t.equal(stray, -1, `${device}: trim touched nothing outside its range`);
    });
  });

t.test('block devices report their kernel size; an extent past the end is refused',
  { skip: skip ?? false }, async (t) => {
    const dir = t.testdir();
    const device = attach(t, makeImage(dir, 'a.img', 0));
    const pool = new BackingPool();
    t.teardown(() => pool.close());
    const entry = await pool.acquire(device, 'r');
    t.equal(entry.backing.kind, 'device');
    t.equal(entry.backing.sizeBytes, DEVICE_BYTES);
    t.equal(entry.backing.sectorSize, 512);
    await pool.release(entry);
    await t.rejects(openExport({
      name: 'd/x', description: '', mode: 'r', size: 4096, pool,
      extents: [{ path: device, offset: DEVICE_BYTES - 2048, length: 4096 }],
    }), { code: 'ERR_IO_SYSCALL', errno: 'EINVAL' });
    t.equal(pool.size, 0, 'nothing left open after the refusal');
  });

t.test('a read-only loop device gives a read-only export: writes fail, reads work',
  { skip: skip ?? false }, async (t) => {
    const dir = t.testdir();
    const device = attach(t, makeImage(dir, 'ro.img', 0x77), true);
    const pool = new BackingPool();
    const exp = await openExport({
      name: 'd/ro', description: '', mode: 'w', size: 65536, pool,
      extents: [{ path: device, offset: 0, length: 65536 }],
    });
    t.teardown(async () => {
      await exp.close();
      await pool.close();
    });
    t.equal(exp.isReadOnly, true);
    await t.rejects(exp.write(0, Buffer.alloc(512, 1), { fua: false }),
      { code: 'ERR_IO_SYSCALL', errno: 'EPERM' });
    const back = Buffer.alloc(65536);
    await exp.read(0, 65536, back, 0);
    t.equal(back.every((b) => b === 0x77), true);
    const fdInfo = fs.readdirSync('/proc/self/fd').map((fd) => {
      try {
        return { link: fs.readlinkSync(`/proc/self/fd/${fd}`), fd };
      } catch {
        return { link: '', fd };
      }
    }).filter((x) => x.link === device);
    t.ok(fdInfo.length >= 1, 'the device is open');
    for (const { fd } of fdInfo) {
      const flags = fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8').match(/flags:\s+(\d+)/)?.[1];
      t.equal(Number.parseInt(flags ?? '1', 8) & 3, 0, 'opened O_RDONLY');
    }
  });
