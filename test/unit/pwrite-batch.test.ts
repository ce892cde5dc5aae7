// pwriteBatch: one request's pieces in one pool job (native/src/pwrite-batch.c); the writer
// thread per backing file (native/src/writer.c) with the same contract; and the fs.write
// stand-in used without the addon (src/sys/fallback.ts), held to it too.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import * as sys from '../../src/sys/index';
import { fallbackBinding } from '../../src/sys/fallback';
import type { BatchCallback } from '../../src/sys/index';

type Batch = (buffer: Buffer, pieces: Float64Array, callback: BatchCallback) => void;

/** One writer thread for the whole file's tests; closed at the end (it must then refuse). */
const writer = sys.createWriter();

const IMPLEMENTATIONS: [string, Batch][] = [
  ['addon', sys.pwriteBatch],
  ['writer thread', (buffer, pieces, callback) =>
    sys.writerSubmit(writer, buffer, pieces, callback)],
  ['fallback', fallbackBinding.pwriteBatch],
];

function run(batch: Batch, buffer: Buffer, pieces: number[][]): Promise<[Error | null, number]> {
  return new Promise((resolve) => {
    batch(buffer, Float64Array.from(pieces.flat()), (error, index) => resolve([error, index]));
  });
}

function pattern(length: number, seed: number): Buffer {
  const buffer = Buffer.allocUnsafe(length);
  for (let i = 0; i < length; i++) buffer[i] = (i * 31 + seed) & 0xff;
  return buffer;
}

t.test('the addon exports pwriteBatch', async (t) => {
  t.equal(sys.isNative, true);
});

for (const [name, batch] of IMPLEMENTATIONS) {
  t.test(`${name}: pieces land at their positions, in two files, others untouched`, async (t) => {
    const dir = t.testdir();
    const fdA = fs.openSync(path.join(dir, 'a'), 'w+');
    const fdB = fs.openSync(path.join(dir, 'b'), 'w+');
    t.teardown(() => [fdA, fdB].forEach((fd) => fs.closeSync(fd)));
    fs.ftruncateSync(fdA, 1 << 20);
    fs.ftruncateSync(fdB, 1 << 20);
    const data = pattern(300_000, 7);
    // the request's bytes [0, 100000) → a@500000, [100000, 250000) → b@4096,
    // [250000, 300000) → a@0 (out of order on purpose)
    const [error, index] = await run(batch, data, [
      [fdA, 0, 100_000, 500_000], [fdB, 100_000, 150_000, 4096], [fdA, 250_000, 50_000, 0],
    ]);
    t.equal(error, null);
    t.equal(index, -1, 'all pieces written');
    const a = fs.readFileSync(path.join(dir, 'a'));
    const b = fs.readFileSync(path.join(dir, 'b'));
    t.ok(a.subarray(500_000, 600_000).equals(data.subarray(0, 100_000)), 'piece 0');
    t.ok(b.subarray(4096, 154_096).equals(data.subarray(100_000, 250_000)), 'piece 1');
    t.ok(a.subarray(0, 50_000).equals(data.subarray(250_000)), 'piece 2');
    t.ok(a.subarray(50_000, 500_000).equals(Buffer.alloc(450_000)), 'a between pieces: zeros');
    t.ok(b.subarray(0, 4096).equals(Buffer.alloc(4096)), 'b before its piece: zeros');
  });

  t.test(`${name}: the first failing piece stops the job and is reported`, async (t) => {
    const dir = t.testdir();
    const fd = fs.openSync(path.join(dir, 'a'), 'w+');
    const readOnly = fs.openSync(path.join(dir, 'a'), 'r');
    t.teardown(() => [fd, readOnly].forEach((each) => fs.closeSync(each)));
    const data = pattern(8192, 3);
    const [error, index] = await run(batch, data, [
      [fd, 0, 4096, 0], [readOnly, 4096, 4096, 4096], [fd, 4096, 4096, 65536],
    ]);
    t.match(error, { code: 'EBADF', syscall: /write/ });
    t.equal(index, 1, 'piece 1 failed');
    const back = fs.readFileSync(path.join(dir, 'a'));
    t.ok(back.subarray(0, 4096).equals(data.subarray(0, 4096)), 'piece 0 was written');
    t.equal(back.length, 4096, 'piece 2 was not written (the file never grew to 64 KiB)');
  });
}

t.test('addon: pieces outside the buffer or malformed are refused at the call', async (t) => {
  const buffer = Buffer.alloc(4096);
  const noop: BatchCallback = () => t.fail('no callback for a refused call');
  t.throws(() => sys.pwriteBatch(buffer, Float64Array.from([3, 0, 4097, 0]), noop), RangeError);
  t.throws(() => sys.pwriteBatch(buffer, Float64Array.from([3, 4000, 200, 0]), noop), RangeError);
  t.throws(() => sys.pwriteBatch(buffer, Float64Array.from([3, 0, 0, 0]), noop), RangeError,
    'an empty piece');
  t.throws(() => sys.pwriteBatch(buffer, Float64Array.from([3, 0.5, 10, 0]), noop), RangeError);
  t.throws(() => sys.pwriteBatch(buffer, Float64Array.from([-1, 0, 10, 0]), noop), RangeError);
  t.throws(() => sys.pwriteBatch(buffer, Float64Array.from([3, 0, 10]), noop),
    'a partial quadruple');
  t.throws(() => sys.pwriteBatch(buffer, new Float64Array(0), noop), 'no pieces');
});

t.test('addon: the pieces are copied at the call (the caller may reuse its array)', async (t) => {
  const file = path.join(t.testdir(), 'a');
  const fd = fs.openSync(file, 'w+');
  t.teardown(() => fs.closeSync(fd));
  const data = pattern(4096, 9);
  const pieces = Float64Array.from([fd, 0, 4096, 8192]);
  const done = new Promise<[Error | null, number]>((resolve) => {
    sys.pwriteBatch(data, pieces, (error, index) => resolve([error, index]));
  });
  pieces.fill(0); // would write at position 0 of fd 0 if the addon read the array later
  t.same(await done, [null, -1]);
  t.ok(fs.readFileSync(file).subarray(8192).equals(data));
});

t.test('writer thread: requests are written in the order they were queued', async (t) => {
  const file = path.join(t.testdir(), 'a');
  const fd = fs.openSync(file, 'w+');
  t.teardown(() => fs.closeSync(fd));
  const rounds = 200;
  const settled: Promise<[Error | null, number]>[] = [];
  for (let round = 0; round < rounds; round++) {
    // every request overwrites the same 64 KiB with its own byte: the last queued must win
    const data = Buffer.alloc(65536, round & 0xff);
    settled.push(new Promise((resolve) => sys.writerSubmit(writer, data,
      Float64Array.from([fd, 0, 65536, 0]), (error, index) => resolve([error, index]))));
  }
  const results = await Promise.all(settled);
  t.ok(results.every(([error, index]) => error === null && index === -1), 'all written');
  t.ok(fs.readFileSync(file).equals(Buffer.alloc(65536, (rounds - 1) & 0xff)), 'the last wins');
});

t.test('writer thread: a closed writer refuses work; closing twice is harmless', async (t) => {
  const own = sys.createWriter();
  sys.closeWriter(own);
  sys.closeWriter(own);
  t.throws(() => sys.writerSubmit(own, Buffer.alloc(1), Float64Array.from([1, 0, 1, 0]),
    () => t.fail('no callback')), /closed/);
  t.throws(() => sys.writerSubmit({}, Buffer.alloc(1), Float64Array.from([1, 0, 1, 0]),
    () => t.fail('no callback')), /not a writer/);
});

t.test('writer thread: a pending write keeps the process alive, an idle writer does not',
  async (t) => {
    const file = path.join(t.testdir(), 'a');
    const sysModule = path.join(__dirname, '..', '..', 'src', 'sys', 'index.ts');
    const script = `
      const fs = require('node:fs');
      const sys = require(${JSON.stringify(sysModule)});
      const idle = sys.createWriter(); // never used, never closed: must not hold the process
      const fd = fs.openSync(${JSON.stringify(file)}, 'w+');
      const w = sys.createWriter();
      sys.writerSubmit(w, Buffer.alloc(1 << 20, 7), Float64Array.from([fd, 0, 1 << 20, 0]),
        (error, index) => { process.stdout.write('done ' + index); });
    `;
    const child = spawnSync(process.execPath, [...process.execArgv, '-e', script],
      { encoding: 'utf8', timeout: 30_000 });
    t.equal(child.status, 0, child.stderr);
    t.equal(child.stdout, 'done -1', 'the callback ran before the process exited');
    t.equal(fs.statSync(file).size, 1 << 20);
  });

t.test('writer thread: closed at the end of the file', async (t) => {
  sys.closeWriter(writer);
  t.throws(() => sys.writerSubmit(writer, Buffer.alloc(1), Float64Array.from([1, 0, 1, 0]),
    () => t.fail('no callback')), /closed/);
});
