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

t.test('data runs found by block status are learned; holes and own trims stay exact', async (t) => {
  const file = path.join(t.testdir(), 'fresh');
  fs.writeFileSync(file, '');
  fs.truncateSync(file, 4 * MiB);
  const backing = (await openBacking(file, 'w')) as FileBacking;
  t.teardown(() => backing.close());
  // written after open (as a client fills a new VD): not known yet
  const fd = fs.openSync(file, 'r+');
  fs.writeSync(fd, Buffer.alloc(MiB, 7), 0, MiB, MiB);
  fs.fsyncSync(fd);
  fs.closeSync(fd);
  t.equal(backing.isAllData(MiB, 65536), false, 'unknown before a query');
  t.same(await backing.blockStatus(MiB, 65536, 8), [{ length: 65536, isHole: false,
    isZero: false }]);
  t.equal(backing.isAllData(MiB, MiB), true, 'the whole run up to the hole is learned');
  t.equal(backing.isAllData(2 * MiB - 4096, 8192), false, 'not past the hole');
  t.same(await backing.blockStatus(0, 4 * MiB, 8), [
    { length: MiB, isHole: true, isZero: true },
    { length: MiB, isHole: false, isZero: false },
    { length: 2 * MiB, isHole: true, isZero: true },
  ], 'holes are still reported');
  await backing.trim(MiB + 65536, 65536);
  t.equal(backing.isAllData(MiB + 65536, 4096), false, 'an own trim forgets its range');
  t.equal(backing.isAllData(MiB, 65536), true, 'and only its range');
  t.same(await backing.blockStatus(MiB, 3 * 65536, 8), [
    { length: 65536, isHole: false, isZero: false },
    { length: 65536, isHole: true, isZero: true },
    { length: 65536, isHole: false, isZero: false },
  ]);
});

t.test('learned data runs match a model under random learn and punch', async (t) => {
  const fc = (await import('fast-check')).default;
  const dir = t.testdir();
  let files = 0;
  const op = fc.record({ isLearn: fc.boolean(), start: fc.nat(63), length: fc.integer({ min: 1,
    max: 20 }) });
  await fc.assert(fc.asyncProperty(fc.array(op, { maxLength: 40 }), async (ops) => {
    const file = path.join(dir, `model-${files++}`); // its own inode: no runs kept from before
    fs.writeFileSync(file, '');
    fs.truncateSync(file, 64);
    const backing = (await openBacking(file, 'r')) as FileBacking;
    const internals = backing as unknown as {
      learnData(start: number, end: number): void;
      mayPunch(offset: number, length: number): void;
      dataStarts: number[];
      dataEnds: number[];
    };
    try {
      const model = new Array<boolean>(64).fill(false);
      for (const { isLearn, start, length } of ops) {
        const end = Math.min(64, start + length);
        if (isLearn) internals.learnData(start, end);
        else internals.mayPunch(start, end - start);
        for (let i = start; i < end; i++) model[i] = isLearn;
      }
      for (let i = 0; i < 64; i++) {
        if (backing.isAllData(i, 1) !== model[i]) return false;
      }
      // sorted, disjoint, non-empty runs, and touching runs merged (after learns)
      const { dataStarts: starts, dataEnds: ends } = internals;
      return starts.every((start, i) => start < (ends[i] as number) &&
        (i === 0 || (ends[i - 1] as number) <= start));
    } finally {
      await backing.close();
    }
  }), { numRuns: 300 });
  t.pass('model held');
});

t.test('data runs outlive a close while the file is unchanged', async (t) => {
  const dir = t.testdir();
  const file = path.join(dir, 'kept');
  fs.writeFileSync(file, '');
  fs.truncateSync(file, 4 * MiB);
  const write = (offset: number): void => {
    const fd = fs.openSync(file, 'r+');
    fs.writeSync(fd, Buffer.alloc(MiB, 3), 0, MiB, offset);
    fs.closeSync(fd);
  };
  const learn = (backing: FileBacking, start: number, end: number): void =>
    (backing as unknown as { learnData(s: number, e: number): void }).learnData(start, end);
  write(0);
  const first = (await openBacking(file, 'w')) as FileBacking;
  t.equal(first.isAllData(0, MiB), true, 'mapped at the first open');
  // data it writes itself is learned by block status, and kept at close with the ctime after it
  await new Promise((resolve) => first.write(Buffer.alloc(MiB, 4), 0, MiB, 2 * MiB, resolve));
  await first.blockStatus(2 * MiB, 4096, 4);
  learn(first, 3 * MiB, 4 * MiB); // a claim no scan would make: shows whether runs were kept
  await first.close();
  const second = (await openBacking(file, 'r')) as FileBacking;
  t.equal(second.isAllData(2 * MiB, MiB), true, 'its own write, learned');
  t.equal(second.isAllData(3 * MiB, MiB), true, 'the kept runs were taken, not a new scan');
  await second.close();
  write(MiB); // written while closed: the ctime moved, so the file is mapped afresh
  const rescanned = (await openBacking(file, 'r')) as FileBacking;
  t.equal(rescanned.isAllData(MiB, MiB), true, 'a changed file is mapped again');
  t.equal(rescanned.isAllData(3 * MiB, MiB), false, 'and the old runs are dropped');
  await rescanned.close();
  // another file at the same path (a new inode) is mapped afresh
  const replacement = path.join(dir, 'new');
  fs.writeFileSync(replacement, '');
  fs.truncateSync(replacement, 4 * MiB);
  fs.renameSync(replacement, file);
  const third = (await openBacking(file, 'r')) as FileBacking;
  t.teardown(() => third.close());
  t.equal(third.isAllData(0, MiB), false, 'a new inode does not inherit the old runs');
});
