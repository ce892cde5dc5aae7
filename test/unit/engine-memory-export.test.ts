import t from 'tap';
import { createMemoryExport, MEMORY_BLOCK_SIZE } from '../helpers/memory-export';

t.test('the memory export reads back what was written and zeros elsewhere', async (t) => {
  const e = createMemoryExport({ name: 'd/x', size: 1 << 20 });
  const data = Buffer.alloc(100_000, 0xab);
  await e.write(1000, data, { fua: false });
  const back = Buffer.alloc(1 << 20, 0x55);
  await e.read(0, 1 << 20, back, 0);
  t.ok(back.subarray(1000, 101_000).equals(data));
  t.equal(back.subarray(0, 1000).every((b) => b === 0), true);
  t.equal(back.subarray(101_000).every((b) => b === 0), true);
});

t.test('block status reports never-written blocks as zero holes and merges runs', async (t) => {
  const e = createMemoryExport({ name: 'd/x', size: 4 * MEMORY_BLOCK_SIZE });
  await e.write(MEMORY_BLOCK_SIZE + 5, Buffer.alloc(10, 1), { fua: false });
  const runs = await e.blockStatus(0, 4 * MEMORY_BLOCK_SIZE, 10);
  t.same(runs, [
    { length: MEMORY_BLOCK_SIZE, isHole: true, isZero: true },
    { length: MEMORY_BLOCK_SIZE, isHole: false, isZero: false },
    { length: 2 * MEMORY_BLOCK_SIZE, isHole: true, isZero: true },
  ]);
  t.equal((await e.blockStatus(0, 4 * MEMORY_BLOCK_SIZE, 1)).length, 1);
});

t.test('a read-only memory export rejects writes with EPERM', async (t) => {
  const e = createMemoryExport({ name: 'd/x', size: 4096, readOnly: true });
  await t.rejects(e.write(0, Buffer.alloc(1), { fua: false }), { code: 'ERR_IO_SYSCALL',
    errno: 'EPERM' });
  await t.rejects(e.zero(0, 1, { fua: false, mayTrim: true, fastOnly: false }),
    { code: 'ERR_IO_SYSCALL', errno: 'EPERM' });
});

t.test('failNext injects one failure and later calls work', async (t) => {
  const e = createMemoryExport({ name: 'd/x', size: 4096 });
  e.failNext('flush', 'EIO');
  await t.rejects(e.flush(), { code: 'ERR_IO_SYSCALL', errno: 'EIO' });
  await e.flush();
  t.equal(e.counts.flush, 2);
});

t.test('readSparse pieces of the memory export count from the start of the request', async (t) => {
  const e = createMemoryExport({ name: 'd/x', size: 4 * MEMORY_BLOCK_SIZE });
  await e.write(2 * MEMORY_BLOCK_SIZE, Buffer.alloc(10, 1), { fua: false });
  const target = Buffer.alloc(3 * MEMORY_BLOCK_SIZE);
  const readSparse = e.readSparse;
  if (readSparse === undefined) throw new Error('readSparse missing');
  const pieces = await readSparse(MEMORY_BLOCK_SIZE, 3 * MEMORY_BLOCK_SIZE, target, 0);
  t.same(pieces, [
    { offset: 0, length: MEMORY_BLOCK_SIZE, isZero: true },
    { offset: MEMORY_BLOCK_SIZE, length: MEMORY_BLOCK_SIZE, isZero: false },
    { offset: 2 * MEMORY_BLOCK_SIZE, length: MEMORY_BLOCK_SIZE, isZero: true },
  ]);
});
