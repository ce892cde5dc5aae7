import t, { type Test } from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { LIMITS } from '../../src/limits';
import * as sys from '../../src/sys/index';

t.test('the native addon is loaded on Linux', async (t) => {
  t.equal(sys.isNative, true);
});

t.test('the data-path thread\'s bounds are the ones in LIMITS', async (t) => {
  const C = sys.constants;
  t.equal(C.DATAPATH_PAYLOAD_MAX, LIMITS.nbdPayloadMax);
  t.equal(C.DATAPATH_SPARSE_MIN, LIMITS.nbdSparseReadMin);
  t.equal(C.DATAPATH_LOWAT_MIN, LIMITS.nbdRecvLowWaterMin);
  t.equal(C.DATAPATH_LOWAT_MAX, LIMITS.nbdRecvLowWaterMax);
  t.equal(C.DATAPATH_FORWARD_MAX, LIMITS.nbdDatapathForwardMax);
  t.equal(C.DATAPATH_SEND_BATCH, LIMITS.nbdDatapathSendBatch);
  t.equal(C.DATAPATH_SPIN_MAX_US, LIMITS.nbdDatapathSpinMaxUs);
  t.equal(C.DATAPATH_SPIN_LENGTH_MAX, LIMITS.nbdDatapathSpinLengthMax);
  t.equal(C.DATAPATH_STATS_COUNTS, sys.DATAPATH_STATS_COUNTS);
  t.equal(C.DATAPATH_LATENCY_BUCKETS, sys.LATENCY_BUCKETS);
});

t.test('punchHole makes a written range read as zeros and SEEK_DATA skips it', async (t) => {
  const dir = t.testdir();
  const file = path.join(dir, 'img');
  const fd = fs.openSync(file, 'w+');
  t.teardown(() => fs.closeSync(fd));
  fs.ftruncateSync(fd, 1 << 20);
  fs.writeSync(fd, Buffer.alloc(65536, 0xaa), 0, 65536, 262144);
  fs.fdatasyncSync(fd);
  t.same(await sys.dataRuns(fd, 0, 1 << 20, 8), [{ start: 262144, end: 327680 }]);
  await sys.punchHole(fd, 262144, 65536);
  const back = Buffer.alloc(65536, 1);
  fs.readSync(fd, back, 0, 65536, 262144);
  t.ok(back.equals(Buffer.alloc(65536)), 'reads zeros');
  t.same(await sys.dataRuns(fd, 0, 1 << 20, 8), [], 'no data left');
});

/** A sparse file of `size` bytes with data written at each [start, end) of `runs`. */
function sparseFile(t: Test, size: number, runs: [number, number][]): number {
  const fd = fs.openSync(path.join(t.testdir(), 'img'), 'w+');
  t.teardown(() => fs.closeSync(fd));
  fs.ftruncateSync(fd, size);
  for (const [start, end] of runs) {
    fs.writeSync(fd, Buffer.alloc(end - start, 0x5a), 0, end - start, start);
  }
  fs.fdatasyncSync(fd);
  return fd;
}

t.test('dataRuns walks every data run of a sparse file in one call', async (t) => {
  const MIB = 1 << 20;
  // 300 runs of 64 KiB, one per MiB, as a pool member with one VD every other extent
  const written: [number, number][] = [];
  for (let i = 0; i < 300; i++) written.push([i * MIB, i * MIB + 65536]);
  const fd = sparseFile(t, 300 * MIB, written);
  const all = await sys.dataRuns(fd, 0, 300 * MIB, 1000);
  t.same(all.map((run) => [run.start, run.end]), written, 'every run, in order');
  const first = await sys.dataRuns(fd, 0, 300 * MIB, 7);
  t.same(first.map((run) => run.start), written.slice(0, 7).map(([start]) => start), 'runsMax');
  const inside = await sys.dataRuns(fd, 5 * MIB + 4096, 8 * MIB, 1000);
  t.same(inside.map((run) => [run.start, run.end]),
    [[5 * MIB + 4096, 5 * MIB + 65536], [6 * MIB, 6 * MIB + 65536], [7 * MIB, 7 * MIB + 65536]],
    'from inside a run: that run from the offset on');
  const cut = await sys.dataRuns(fd, 0, 32768, 1000);
  t.same(cut, [{ start: 0, end: 65536 }], 'a run\'s end is its real end, past the range');
  t.same(await sys.dataRuns(fd, 65536, MIB, 1000), [], 'a hole only');
  t.same(await sys.dataRuns(fd, 400 * MIB, 500 * MIB, 1000), [], 'past EOF');
  t.same(await sys.dataRuns(fd, MIB, MIB, 1000), [], 'an empty range');
});

t.test('dataRuns fails with the errno of the lseek, as an IoError', async (t) => {
  const fifo = path.join(t.testdir(), 'fifo');
  execFileSync('mkfifo', [fifo]);
  const fd = fs.openSync(fifo, fs.constants.O_RDWR); // O_RDWR: does not wait for a writer
  t.teardown(() => fs.closeSync(fd));
  await t.rejects(sys.dataRuns(fd, 0, 1 << 20, 8),
    { code: 'ERR_IO_SYSCALL', errno: 'ESPIPE', syscall: 'lseek(SEEK_DATA)' });
});

t.test('dataRuns\' arguments are checked', async (t) => {
  t.throws(() => sys.dataRuns(3, 10, 5, 1), 'end before offset');
  t.throws(() => sys.dataRuns(3, 0, 5, 0), 'no runs wanted');
  t.throws(() => sys.dataRuns(-1, 0, 5, 1), 'bad fd');
});
