/**
 * ExtentExport over real sparse files: block status through the map (merged runs, runsMax, holes
 * past EOF), sparse reads, map swaps with requests in flight, cache, capabilities.
 */
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { BackingPool } from '../../src/backing/pool';
import { openExport } from '../../src/engine/extent-export';
import { ExtentMap } from '../../src/engine/extent-map';
import { DATAPATH_EXTENT_KIND } from '../../src/sys/index';

const KiB = 1024;

function sparse(dir: string, name: string, bytes: number): string {
  const file = path.join(dir, name);
  fs.writeFileSync(file, '');
  fs.truncateSync(file, bytes);
  return file;
}

t.test('block status merges equal runs across extents and honours runsMax', async (t) => {
  const dir = t.testdir();
  const a = sparse(dir, 'a', 1024 * KiB);
  const b = sparse(dir, 'b', 1024 * KiB);
  const pool = new BackingPool();
  const exp = await openExport({
    name: 'd/s', description: '', mode: 'w', size: 256 * KiB, pool,
    extents: [
      { path: a, offset: 0, length: 64 * KiB },
      { path: b, offset: 512 * KiB, length: 64 * KiB },
      { path: a, offset: 256 * KiB, length: 64 * KiB },
      { path: b, offset: 0, length: 64 * KiB },
    ],
  });
  t.teardown(async () => {
    await exp.close();
    await pool.close();
  });
  t.same(await exp.blockStatus(0, 256 * KiB, 10), [
    { length: 256 * KiB, isHole: true, isZero: true },
  ], 'four hole extents merge into one run');
  await exp.write(64 * KiB, Buffer.alloc(64 * KiB, 1), { fua: false });
  const runs = await exp.blockStatus(0, 256 * KiB, 10);
  t.same(runs, [
    { length: 64 * KiB, isHole: true, isZero: true },
    { length: 64 * KiB, isHole: false, isZero: false },
    { length: 128 * KiB, isHole: true, isZero: true },
  ]);
  t.same(await exp.blockStatus(0, 256 * KiB, 1), [{ length: 64 * KiB, isHole: true,
    isZero: true }]);
  t.same(await exp.blockStatus(100 * KiB, 10, 5), [{ length: 10, isHole: false, isZero: false }]);

  const target = Buffer.alloc(256 * KiB, 0x99);
  const pieces = await exp.readSparse(0, 256 * KiB, target, 0);
  const shifted = Buffer.alloc(200 * KiB + 16, 0x99);
  t.same(await exp.readSparse(56 * KiB, 200 * KiB, shifted, 16), [
    { offset: 0, length: 8 * KiB, isZero: true },
    { offset: 8 * KiB, length: 64 * KiB, isZero: false },
    { offset: 72 * KiB, length: 128 * KiB, isZero: true },
  ], 'offsets count from the start of the request, not of the export');
  t.equal(shifted[15], 0x99, 'nothing written before targetOffset');
  t.equal(shifted.subarray(16 + 8 * KiB, 16 + 72 * KiB).every((b) => b === 1), true);
  t.same(pieces, [
    { offset: 0, length: 64 * KiB, isZero: true },
    { offset: 64 * KiB, length: 64 * KiB, isZero: false },
    { offset: 128 * KiB, length: 128 * KiB, isZero: true },
  ], 'pieces carry offsets relative to the request');
  const expected = Buffer.alloc(256 * KiB);
  expected.fill(1, 64 * KiB, 128 * KiB);
  t.ok(target.equals(expected), 'every byte of the target written, zero pieces included');
});

t.test('reads past the end of a short sparse file return zeros', async (t) => {
  const dir = t.testdir();
  const file = path.join(dir, 'short');
  fs.writeFileSync(file, Buffer.alloc(1000, 7));
  const pool = new BackingPool();
  const exp = await openExport({
    name: 'd/s', description: '', mode: 'r', size: 8192, pool,
    extents: [{ path: file, offset: 0, length: 8192 }],
  });
  t.teardown(async () => {
    await exp.close();
    await pool.close();
  });
  const target = Buffer.alloc(8192, 0xff);
  await exp.read(0, 8192, target, 0);
  t.equal(target.subarray(0, 1000).every((b) => b === 7), true);
  t.equal(target.subarray(1000).every((b) => b === 0), true, 'zero-filled, not left as 0xff');
});

t.test('replaceMap enlarges the export; a request in flight finishes on its old map', async (t) => {
  const dir = t.testdir();
  const a = sparse(dir, 'a', 1024 * KiB);
  const b = sparse(dir, 'b', 1024 * KiB);
  fs.writeFileSync(b, Buffer.alloc(64 * KiB, 2));
  const pool = new BackingPool();
  const exp = await openExport({
    name: 'd/g', description: '', mode: 'w', size: 64 * KiB, pool,
    extents: [{ path: a, offset: 0, length: 64 * KiB }],
  });
  t.teardown(async () => {
    await exp.close();
    await pool.close();
  });
  await exp.write(0, Buffer.alloc(64 * KiB, 1), { fua: false });
  const target = Buffer.alloc(64 * KiB);
  const inFlight = exp.read(0, 64 * KiB, target, 0);
  await exp.replaceMap(ExtentMap.fromList([
    { path: b, offset: 0, length: 64 * KiB },
    { path: a, offset: 0, length: 64 * KiB },
  ]));
  await inFlight;
  t.equal(target.every((x) => x === 1), true, 'old map used by the request started before');
  t.equal(exp.size, 128 * KiB);
  const after = Buffer.alloc(128 * KiB);
  await exp.read(0, 128 * KiB, after, 0);
  t.equal(after.subarray(0, 64 * KiB).every((x) => x === 2), true, 'new map in force');
  t.equal(after.subarray(64 * KiB).every((x) => x === 1), true);
  t.equal(pool.size, 2);
});

t.test('capabilities of a file export and cache() as readahead', async (t) => {
  const dir = t.testdir();
  const a = sparse(dir, 'a', 3 * 1024 * KiB);
  const pool = new BackingPool();
  const exp = await openExport({
    name: 'd/c', description: 'desc', mode: 'w', size: 3 * 1024 * KiB, pool,
    extents: [{ path: a, offset: 0, length: 3 * 1024 * KiB }],
  });
  t.teardown(async () => {
    await exp.close();
    await pool.close();
  });
  t.match(exp, {
    name: 'd/c', description: 'desc', isReadOnly: false, canFlush: true, canFua: true,
    canTrim: true, canZero: true, canFastZero: true, canCache: true, canMultiConn: true,
    blockSizeMin: 1, blockSizePreferred: 4096, blockSizeMax: 32 * 1024 * 1024,
  });
  await exp.cache(1000, 3 * 1024 * KiB - 1000);
  await exp.zero(0, 4096, { fua: false, mayTrim: false, fastOnly: true });
});

t.test('openExport releases what it opened when a backing is missing', async (t) => {
  const dir = t.testdir();
  const a = sparse(dir, 'a', 1024);
  const pool = new BackingPool();
  t.teardown(() => pool.close());
  await t.rejects(openExport({
    name: 'd/x', description: '', mode: 'r', size: 2048, pool,
    extents: [{ path: a, offset: 0, length: 1024 }, { path: path.join(dir, 'nope'), offset: 0,
      length: 1024 }],
  }), { code: 'ERR_IO_SYSCALL', errno: 'ENOENT' });
  t.equal(pool.size, 0);
});

t.test('datapathMap tells the data-path thread which extents are known to hold no hole',
  async (t) => {
    const dir = t.testdir();
    const a = sparse(dir, 'a', 1024 * KiB);
    const fd = fs.openSync(a, 'r+');
    fs.writeSync(fd, Buffer.alloc(256 * KiB, 7), 0, 256 * KiB, 0); // data [0, 256 KiB), holes on
    fs.closeSync(fd);
    const pool = new BackingPool();
    const exp = await openExport({
      name: 'd/k', description: '', mode: 'w', size: 192 * KiB, pool,
      extents: [
        { path: a, offset: 0, length: 64 * KiB }, // data
        { path: a, offset: 512 * KiB, length: 64 * KiB }, // a hole
        { path: a, offset: 192 * KiB, length: 64 * KiB }, // data up to the hole at 256 KiB
      ],
    });
    t.teardown(async () => {
      await exp.close();
      await pool.close();
    });
    const map = exp.datapathMap();
    t.ok(map !== null, 'a map for the thread');
    const kinds = [5, 11, 17].map((at) => map!.extents[at]);
    const { file, fileAllData } = DATAPATH_EXTENT_KIND;
    t.same(kinds, [fileAllData, file, fileAllData], 'the data runs mapped at open, per extent');
  });
