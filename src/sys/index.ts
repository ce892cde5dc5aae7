/**
 * sys: the only importer of the native addon (native/). Typed, promise-returning wrappers for what
 * Node lacks: fallocate modes, BLKDISCARD, BLKZEROOUT, BLKGETSIZE64, BLKSSZGET, SEEK_DATA/HOLE.
 * Arguments are validated here (asserts); the addon re-checks cheaply. Failures become IoError with
 * the errno name (ENODEV from an optional method arrives as EOPNOTSUPP).
 * When the addon is missing (not built, non-Linux), src/sys/fallback.ts answers EOPNOTSUPP.
 * The parts: ./binding.ts loads and types the addon; ./threads.ts wraps a connection's threads
 * (sender, data path), the shared memory budget and the request verdict; ./ceph.ts the RADOS
 * client and RBD images; this module the rest, and it re-exports them, so
 * `import * as sys from '../sys/index'` is the one way in.
 */
import assert from 'node:assert';
import { IoError } from '../errors';
import { LIMITS } from '../limits';
import { binding, type BatchCallback, type NativeWriter } from './binding';

export * from './threads';
export * from './ceph';
export type {
  BatchCallback, DatapathEventHandler, NativeBinding, NativeDatapath, NativeSender, NativeWriter,
  SendCallback,
} from './binding';
export { isNative } from './binding';

function checkRange(fd: number, offset: number, length: number): void {
  assert(Number.isInteger(fd) && fd >= 0);
  assert(Number.isSafeInteger(offset) && offset >= 0);
  assert(Number.isSafeInteger(length) && length > 0);
}

async function call<T>(syscall: string, run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (cause) {
    throw IoError.fromSystem(cause, syscall);
  }
}

function callSync<T>(syscall: string, run: () => T): T {
  try {
    return run();
  } catch (cause) {
    throw IoError.fromSystem(cause, syscall);
  }
}

const C = binding.constants;

/** fallocate(PUNCH_HOLE|KEEP_SIZE): deallocates; the range reads as zeros afterwards. */
export function punchHole(fd: number, offset: number, length: number): Promise<void> {
  checkRange(fd, offset, length);
  const mode = C.FALLOC_FL_PUNCH_HOLE | C.FALLOC_FL_KEEP_SIZE;
  return call('fallocate', () => binding.fallocate(fd, mode, offset, length));
}

/** fallocate(ZERO_RANGE|KEEP_SIZE): zeros and keeps the range allocated. */
export function zeroRange(fd: number, offset: number, length: number): Promise<void> {
  checkRange(fd, offset, length);
  const mode = C.FALLOC_FL_ZERO_RANGE | C.FALLOC_FL_KEEP_SIZE;
  return call('fallocate', () => binding.fallocate(fd, mode, offset, length));
}

/** fallocate(0 or KEEP_SIZE): allocates blocks. */
export function allocate(fd: number, offset: number, length: number, keepSize = true,
): Promise<void> {
  checkRange(fd, offset, length);
  const mode = keepSize ? C.FALLOC_FL_KEEP_SIZE : 0;
  return call('fallocate', () => binding.fallocate(fd, mode, offset, length));
}

/** ioctl(BLKDISCARD) on a block device. */
export function blkDiscard(fd: number, offset: number, length: number): Promise<void> {
  checkRange(fd, offset, length);
  return call('ioctl(BLKDISCARD)', () => binding.blkDiscard(fd, offset, length));
}

/** ioctl(BLKZEROOUT) on a block device: the range reads as zeros afterwards. */
export function blkZeroout(fd: number, offset: number, length: number): Promise<void> {
  checkRange(fd, offset, length);
  return call('ioctl(BLKZEROOUT)', () => binding.blkZeroout(fd, offset, length));
}

/**
 * preadv2(RWF_NOWAIT), synchronous: the bytes read (0 at EOF) when the page cache could serve
 * them without blocking, else -errno (-EAGAIN: not cached; -EOPNOTSUPP: not supported here or
 * without the addon). Never throws for I/O errors: callers fall back to fs.read, which reports
 * them.
 */
export function preadNoWait(
  fd: number, buffer: Buffer, bufferOffset: number, length: number, position: number,
): number {
  return binding.preadNoWait(fd, buffer, bufferOffset, length, position);
}


/** Numbers per piece in pwriteBatch's and writerSubmit's `pieces`: fd, bufferOffset, length,
 * position. */
export const BATCH_PIECE_FIELDS = 4;
/** Pieces one pwriteBatch or writerSubmit call takes (the addon's limit, from LIMITS). */
export const BATCH_PIECES_MAX = LIMITS.backingBatchPiecesMax;

/**
 * Writes every piece ((fd, bufferOffset, length, position) quadruples in `pieces`, copied at the
 * call) from `buffer` in one job on the libuv pool, in order, each to its end; the first failure
 * stops the job. One pool hand-off per request instead of one per piece (native/src/
 * pwrite-batch.c). Without the addon the pieces go through fs.write one after another.
 */
export function pwriteBatch(buffer: Buffer, pieces: Float64Array, callback: BatchCallback): void {
  assert(pieces.length > 0 && pieces.length % BATCH_PIECE_FIELDS === 0);
  assert(pieces.length / BATCH_PIECE_FIELDS <= BATCH_PIECES_MAX);
  binding.pwriteBatch(buffer, pieces, callback);
}

/**
 * A writer thread for one backing file (native/src/writer.c): requests queued with writerSubmit
 * are written in order by that thread alone, with pwriteBatch's contract, so buffered writes to
 * one file never contend for its inode lock. closeWriter drains the queue and joins the thread
 * (call it when nothing is pending, before closing the descriptor). Without the addon the
 * requests go through fs.write.
 */
export function createWriter(): NativeWriter {
  return binding.createWriter();
}

export function writerSubmit(
  writer: NativeWriter, buffer: Buffer, pieces: Float64Array, callback: BatchCallback,
): void {
  assert(pieces.length > 0 && pieces.length % BATCH_PIECE_FIELDS === 0);
  assert(pieces.length / BATCH_PIECE_FIELDS <= BATCH_PIECES_MAX);
  binding.writerSubmit(writer, buffer, pieces, callback);
}

export function closeWriter(writer: NativeWriter): void {
  binding.closeWriter(writer);
}

/** setsockopt(fd, level, name, int value), synchronous: 0, or -errno (-EOPNOTSUPP without the
 * addon). Never throws for a failing syscall. */
export function setSockOptInt(fd: number, level: number, name: number, value: number): number {
  assert(Number.isInteger(fd) && fd >= 0);
  return binding.setSockOptInt(fd, level, name, value);
}

/** getsockopt(fd, level, name) of an int option, synchronous: its value, or -errno. */
export function getSockOptInt(fd: number, level: number, name: number): number {
  assert(Number.isInteger(fd) && fd >= 0);
  return binding.getSockOptInt(fd, level, name);
}

export const constants = binding.constants;

/** One run of a file's data: [start, end), where `end` is the hole (or EOF) after it. */
export interface DataRun {
  start: number;
  end: number;
}

/**
 * The data runs of `fd` that start in [offset, end), in order, at most `runsMax` of them, by
 * lseek(SEEK_DATA/SEEK_HOLE), a walk of up to DATA_RUNS_MAX runs per trip to the thread pool
 * (mapping a pool member of a thousand extents is one trip, not 2 000). A run's `end` is where
 * its data really ends (it may be past `end`). Fewer than runsMax runs means the walk reached
 * `end` or the last data. Rejects with the errno of an lseek that failed (EINVAL, EOPNOTSUPP,
 * ... where the file system cannot seek holes).
 */
export function dataRuns(
  fd: number, offset: number, end: number, runsMax: number,
): Promise<DataRun[]> {
  assert(Number.isInteger(fd) && fd >= 0);
  assert(Number.isSafeInteger(offset) && offset >= 0);
  assert(Number.isSafeInteger(end) && end >= offset);
  assert(Number.isSafeInteger(runsMax) && runsMax >= 1);
  return walkDataRuns(fd, offset, end, runsMax);
}

async function walkDataRuns(
  fd: number, offset: number, end: number, runsMax: number,
): Promise<DataRun[]> {
  const runs: DataRun[] = [];
  let cursor = offset;
  while (runs.length < runsMax && cursor < end) {
    const want = Math.min(runsMax - runs.length, constants.DATA_RUNS_MAX);
    const pairs = await call('lseek(SEEK_DATA)', () => binding.dataRuns(fd, cursor, end, want));
    for (let at = 0; at < pairs.length; at += 2) {
      const start = pairs[at] as number;
      const hole = pairs[at + 1] as number;
      // no hole after data only when the file shrank between the two lseeks: data up to `end`
      runs.push({ start, end: hole < 0 ? Math.max(end, start + 1) : hole });
    }
    if (pairs.length < 2 * want) break;
    cursor = (runs[runs.length - 1] as DataRun).end;
  }
  return runs;
}

/** ioctl(BLKGETSIZE64): the size of a block device in bytes, from the kernel. */
export function blockDeviceSize(fd: number): number {
  assert(Number.isInteger(fd) && fd >= 0);
  return callSync('ioctl(BLKGETSIZE64)', () => binding.blkGetSize64(fd));
}

/** ioctl(BLKSSZGET): the logical sector size of a block device. */
export function blockDeviceSectorSize(fd: number): number {
  assert(Number.isInteger(fd) && fd >= 0);
  return callSync('ioctl(BLKSSZGET)', () => binding.blkGetSectorSize(fd));
}

/** ioctl(BLKDISCARDZEROES): whether discarded ranges read back as zeros (often false). */
export function blockDeviceDiscardZeroes(fd: number): boolean {
  assert(Number.isInteger(fd) && fd >= 0);
  return callSync('ioctl(BLKDISCARDZEROES)', () => binding.blkGetDiscardZeroes(fd));
}
