/**
 * Inline page-cache reads (fd-backing: preadv2 RWF_NOWAIT before fs.read) and the all-data
 * knowledge of file backings (file-backing: allDataEnd): reads return the file's bytes whichever
 * path served them, short reads at EOF report the bytes there, the callback is never synchronous,
 * a backing's own trim makes the range it touched "may be a hole" again, and the data runs on
 * both sides of a hole are known as data from open.
 */
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { openBacking } from '../../src/backing/open-backing';
import { FileBacking } from '../../src/backing/file-backing';
import type { Backing } from '../../src/backing/backing';
import * as sys from '../../src/sys/index';

const MiB = 1024 * 1024;

function patterned(dir: string, length: number): { file: string; data: Buffer } {
  const data = Buffer.alloc(length);
  for (let i = 0; i < length; i++) data[i] = (i * 7 + (i >> 12)) & 0xff;
  const file = path.join(dir, 'image');
  fs.writeFileSync(file, data);
  return { file, data };
}

function readVia(backing: Backing, target: Buffer, at: number, length: number, position: number):
Promise<{ bytes: number; isSync: boolean }> {
  return new Promise((resolve, reject) => {
    let isReturned = false;
    backing.read(target, at, length, position, (error, bytes) => {
      if (error !== null) reject(error);
      else resolve({ bytes, isSync: !isReturned });
    });
    isReturned = true;
  });
}

t.test('reads up to the inline limit return the file bytes, asynchronously', async (t) => {
  const { file, data } = patterned(t.testdir(), 2 * MiB);
  const backing = await openBacking(file, 'r');
  t.teardown(() => backing.close());
  fs.readFileSync(file); // into the page cache: the inline path serves these
  const cases: [number, number][] = [[0, 4096], [12345, 777], [MiB - 65536, 65536], [4096, 1], [0, MiB],
    [MiB - 1, MiB], [4096, MiB + 4096]]; // the last is past the inline limit: the pool reads it
  for (const [position, length] of cases) {
    const target = Buffer.alloc(length + 16, 0xee);
    const { bytes, isSync } = await readVia(backing, target, 16, length, position);
    t.equal(bytes, length, `bytes at ${position}`);
    t.equal(isSync, false, 'callback after read() returned');
    t.ok(target.subarray(16).equals(data.subarray(position, position + length)), 'data matches');
    t.ok(target.subarray(0, 16).every((b) => b === 0xee), 'bytes before the target untouched');
  }
});

t.test('a read crossing EOF reports the bytes before EOF; at EOF it reports 0', async (t) => {
  const { file, data } = patterned(t.testdir(), 10000);
  const backing = await openBacking(file, 'r');
  t.teardown(() => backing.close());
  const target = Buffer.alloc(4096);
  const crossing = await readVia(backing, target, 0, 4096, 8000);
  t.equal(crossing.bytes, 2000);
  t.ok(target.subarray(0, 2000).equals(data.subarray(8000)));
  t.equal((await readVia(backing, target, 0, 4096, 10000)).bytes, 0);
});

t.test('preadNoWait answers bytes for cached data, never throws for a bad descriptor', (t) => {
  if (!sys.isNative) {
    t.skip('native addon not built', () => undefined);
    t.end();
    return;
  }
  const { file, data } = patterned(t.testdir(), 65536);
  fs.readFileSync(file);
  const fd = fs.openSync(file, 'r');
  t.teardown(() => fs.closeSync(fd));
  const target = Buffer.alloc(4096);
  const bytes = sys.preadNoWait(fd, target, 0, 4096, 8192);
  t.ok(bytes === 4096 || bytes === -11, `bytes or -EAGAIN, got ${bytes}`);
  if (bytes === 4096) t.ok(target.equals(data.subarray(8192, 8192 + 4096)));
  t.equal(sys.preadNoWait(987654, target, 0, 4096, 0), -9, '-EBADF, not a throw');
  t.throws(() => sys.preadNoWait(fd, target, 1, 4096, 0), RangeError, 'range checked');
  t.end();
});

t.test('a filled file is all data until its own trim; then only the trimmed start matters',
  async (t) => {
    const { file } = patterned(t.testdir(), MiB);
    const backing = (await openBacking(file, 'w')) as FileBacking;
    t.teardown(() => backing.close());
    t.equal(backing.isAllData(0, MiB), true);
    await backing.trim(MiB / 2, 65536);
    t.equal(backing.isAllData(0, MiB / 2), true, 'before the trimmed range: still known data');
    t.equal(backing.isAllData(MiB / 2, 4096), false, 'the trimmed range may be a hole');
    t.equal(backing.isAllData(MiB / 2 + 65536, 4096), true, 'after it: still known data');
    t.equal(backing.isAllData(MiB / 2 - 4096, 8192), false, 'a range crossing into it is not');
    t.same(await backing.blockStatus(MiB / 2, 65536, 4),
      [{ length: 65536, isHole: true, isZero: true }]);
  });

t.test('the data runs on both sides of a hole are known as data from open', async (t) => {
  const file = path.join(t.testdir(), 'holey');
  const fd = fs.openSync(file, 'w');
  fs.writeSync(fd, Buffer.alloc(MiB, 1), 0, MiB, 0);
  fs.writeSync(fd, Buffer.alloc(MiB, 2), 0, MiB, 3 * MiB);
  fs.closeSync(fd);
  const backing = (await openBacking(file, 'r')) as FileBacking;
  t.teardown(() => backing.close());
  if (!backing.canSeek) {
    t.skip('no SEEK_DATA here: everything counts as data', () => undefined);
    return;
  }
  t.equal(backing.isAllData(0, MiB), true, 'first run');
  t.equal(backing.isAllData(3 * MiB, MiB), true, 'run after the hole');
  t.equal(backing.isAllData(MiB, 4096), false, 'the hole');
  t.equal(backing.isAllData(MiB - 4096, 8192), false, 'crossing into the hole');
  t.equal(backing.mayHaveHoles, true);
});
