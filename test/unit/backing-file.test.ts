/**
 * File backings: the zeroing ladder is learned once per backing (ext4 has ZERO_RANGE; tmpfs has
 * only PUNCH_HOLE), fastOnly refuses the slow rung with ENOTSUP, block status follows holes.
 */
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { openBacking } from '../../src/backing/open-backing';
import { FileBacking } from '../../src/backing/file-backing';
import { BackingPool } from '../../src/backing/pool';

const MiB = 1024 * 1024;

function image(dir: string, name: string, fill: number): string {
  const file = path.join(dir, name);
  fs.writeFileSync(file, Buffer.alloc(MiB, fill));
  return file;
}

function readAt(file: string, offset: number, length: number): Buffer {
  const data = Buffer.alloc(length);
  const fd = fs.openSync(file, 'r');
  fs.readSync(fd, data, 0, length, offset);
  fs.closeSync(fd);
  return data;
}

t.test('on ext4 zero uses ZERO_RANGE and keeps blocks allocated', async (t) => {
  const file = image(t.testdir(), 'a', 0xcc);
  const backing = await openBacking(file, 'w');
  t.teardown(() => backing.close());
  t.ok(backing instanceof FileBacking);
  const fileBacking = backing as FileBacking;
  await backing.zero(4096, 65536, false, true);
  t.equal(fileBacking.canZeroRange, true);
  t.equal(readAt(file, 4096, 65536).every((b) => b === 0), true);
  t.equal(readAt(file, 4095, 1)[0], 0xcc, 'byte before untouched');
  t.equal(readAt(file, 4096 + 65536, 1)[0], 0xcc, 'byte after untouched');
  const runs = await backing.blockStatus(0, MiB, 16);
  t.same(runs, [{ length: MiB, isHole: false, isZero: false }], 'still allocated');
});

t.test('on tmpfs the ladder learns ZERO_RANGE is missing and punches or refuses', async (t) => {
  const dir = fs.mkdtempSync('/dev/shm/xvd-backing-');
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = image(dir, 'a', 0xcc);
  const backing = (await openBacking(file, 'w')) as FileBacking;
  t.teardown(() => backing.close());
  await t.rejects(backing.zero(0, 8192, false, true), { code: 'ERR_IO_SYSCALL', errno: 'ENOTSUP' },
    'no hole allowed and fast only: refused');
  t.equal(backing.canZeroRange, false, 'learned');
  t.equal(readAt(file, 0, 8192).every((b) => b === 0xcc), true, 'refusal changed nothing');
  await backing.zero(0, 8192, true, true);
  t.equal(readAt(file, 0, 8192).every((b) => b === 0), true, 'punched');
  const runs = await backing.blockStatus(0, MiB, 16);
  t.same(runs[0], { length: 8192, isHole: true, isZero: true });
  await backing.zero(65536, 100, false, false);
  t.equal(readAt(file, 65536, 100).every((b) => b === 0), true, 'slow rung wrote zeros');
  t.equal(readAt(file, 65636, 1)[0], 0xcc);
});

t.test('block status past the end of a file is a zero hole', async (t) => {
  const file = path.join(t.testdir(), 'short');
  fs.writeFileSync(file, Buffer.alloc(4096, 1));
  const backing = await openBacking(file, 'r');
  t.teardown(() => backing.close());
  t.same(await backing.blockStatus(0, 3 * 4096, 8), [
    { length: 4096, isHole: false, isZero: false },
    { length: 8192, isHole: true, isZero: true },
  ]);
  t.same(await backing.blockStatus(0, 3 * 4096, 1), [{ length: 4096, isHole: false,
    isZero: false }]);
});

t.test('a read-only backing refuses writes with EROFS', async (t) => {
  const file = image(t.testdir(), 'a', 0);
  const backing = await openBacking(file, 'r');
  t.teardown(() => backing.close());
  t.equal(backing.isWritable, false);
  t.equal(backing.canTrim, false);
  await t.rejects(backing.zero(0, 1, true, false), { code: 'ERR_IO_SYSCALL', errno: 'EROFS' });
  const error = await new Promise<NodeJS.ErrnoException | null>((resolve) =>
    backing.write(Buffer.alloc(1), 0, 1, 0, (e) => resolve(e)));
  t.equal(error?.code, 'EROFS');
});

t.test('the pool shares one descriptor per backing and mode and closes with the last release',
  async (t) => {
    const dir = t.testdir();
    const file = image(dir, 'a', 0);
    fs.symlinkSync(file, path.join(dir, 'link'));
    const pool = new BackingPool();
    t.teardown(() => pool.close());
    const [one, two] = await Promise.all([pool.acquire(file, 'w'), pool.acquire(path.join(dir,
      'link'), 'w')]);
    t.equal(one, two, 'same entry through a symlink');
    const reader = await pool.acquire(file, 'r');
    t.not(reader, one, 'read-only is a separate descriptor');
    t.equal(reader.backing.isWritable, false);
    t.equal(pool.size, 2);
    await pool.release(one);
    t.equal(pool.size, 2);
    await pool.release(two);
    await pool.release(reader);
    t.equal(pool.size, 0);
  });

t.test('a fully allocated file answers block status as data; its own trim brings seeks back',
  async (t) => {
    const file = image(t.testdir(), 'full', 1);
    const backing = (await openBacking(file, 'w')) as FileBacking;
    t.teardown(() => backing.close());
    t.equal(backing.mayHaveHoles, false);
    t.same(await backing.blockStatus(0, MiB, 8), [{ length: MiB, isHole: false, isZero: false }]);
    await backing.trim(0, 65536);
    t.equal(backing.mayHaveHoles, true);
    t.same(await backing.blockStatus(0, MiB, 8), [
      { length: 65536, isHole: true, isZero: true },
      { length: MiB - 65536, isHole: false, isZero: false },
    ]);
    const sparseFile = path.join(t.testdir(), 'sparse');
    fs.writeFileSync(sparseFile, '');
    fs.truncateSync(sparseFile, MiB);
    const sparse = (await openBacking(sparseFile, 'r')) as FileBacking;
    t.teardown(() => sparse.close());
    t.equal(sparse.mayHaveHoles, true);
  });
