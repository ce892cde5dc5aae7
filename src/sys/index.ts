/**
 * sys: the only importer of the native addon (native/). Typed, promise-returning wrappers for what
 * Node lacks: fallocate modes, BLKDISCARD, BLKZEROOUT, BLKGETSIZE64, BLKSSZGET, SEEK_DATA/HOLE.
 * Arguments are validated here (asserts); the addon re-checks cheaply. Failures become IoError with
 * the errno name (ENODEV from an optional method arrives as EOPNOTSUPP).
 * When the addon is missing (not built, non-Linux), src/sys/fallback.ts answers EOPNOTSUPP.
 * XVD_ADDON_PATH names another build of the addon to load instead (npm run test:asan loads one
 * built with sanitizers); it must load.
 */
import assert from 'node:assert';
import path from 'node:path';
import { IoError } from '../errors';
import { fallbackBinding } from './fallback';

/**
 * pwriteBatch's result: (null, -1) all written; (error, i) piece i failed with errno error.code;
 * (null, i) piece i's pwrite wrote 0 bytes (a short write).
 */
export type BatchCallback = (error: NodeJS.ErrnoException | null, index: number) => void;

/** A writer thread's handle (native/src/writer.c); opaque. */
export interface NativeWriter {
  readonly __brand?: 'NativeWriter';
}

/** A connection's sender thread (native/src/sender.c); opaque. */
export interface NativeSender {
  readonly __brand?: 'NativeSender';
}

/** How a sender thread sends file pieces: sendfile(2), or pread into its buffer and send. */
export const SENDER_MODE = { sendfile: 0, copy: 1 } as const;
export type SenderMode = keyof typeof SENDER_MODE;

/**
 * A sender job's result: error null when every byte went out; else `isIntact` is true only when
 * the pieces could not be read and nothing of the job was sent (copy mode): the stream is whole.
 * Any other failure may have cut a reply short.
 */
export type SendCallback = (error: NodeJS.ErrnoException | null, isIntact: boolean) => void;

/** Fields per piece in senderSubmit's Float64Array: fd, position, length. */
export const SEND_PIECE_FIELDS = 3;

/** A connection's data-path thread (native/src/datapath.h and its parts); opaque. */
export interface NativeDatapath {
  readonly __brand?: 'NativeDatapath';
}

/** Fields per extent in createDatapath's Float64Array. */
export const DATAPATH_EXTENT_FIELDS = 6;
/** The last field of an extent: what is under it (the thread probes holes only under `file`). */
export const DATAPATH_EXTENT_KIND = { file: 0, device: 1, fileAllData: 2 } as const;
export const DATAPATH_OPTION = { structured: 1, writable: 2, tcp: 4 } as const;
export const DATAPATH_EVENT = { forward: 1, eof: 2, error: 3, fenced: 4, stopped: 5 } as const;
const DATAPATH_OP = { pause: 1, fence: 2, stop: 3 } as const;

/** A data-path event on the JS thread: `bytes` for forward, `value` (errno) for error. */
export type DatapathEventHandler = (kind: number, bytes: Buffer | null, value: number) => void;

/** An export's map, in the one form the data-path thread takes it (engine datapathMapOf; the
 * contract is native/src/dp-map.c's header): the thread keeps no map or hole table of its own. */
export interface DatapathMap {
  /** (startVirtual, length, fd, offsetBacking, backingIndex, DATAPATH_EXTENT_KIND) per extent,
   * in order, contiguous from 0, covering `size`; fileAllData: the backing knew it has no hole */
  readonly extents: Float64Array;
  readonly size: number;
  readonly isWritable: boolean;
  /** by backing index: [dirty flag, set to 1 before a WRITE's reply; hole epoch, bumped after a
   * TRIM or WRITE_ZEROES: all the thread learned of that backing's holes is then stale] */
  readonly dirty: Int32Array[];
}

/** What createDatapath needs (native/src/datapath-binding.c): the map and the connection's part. */
export interface DatapathSpec extends DatapathMap {
  readonly isStructured: boolean;
  /** a TCP socket: SO_RCVLOWAT follows large WRITE payloads */
  readonly isTcp: boolean;
  readonly blockSizeMin: number;
  /** busy-poll budget in microseconds (0, the default: sleep in poll() at once) */
  readonly spinMicros?: number;
}

export interface NativeBinding {
  fallocate(fd: number, mode: number, offset: number, length: number): Promise<void>;
  blkDiscard(fd: number, offset: number, length: number): Promise<void>;
  blkZeroout(fd: number, offset: number, length: number): Promise<void>;
  dataRuns(fd: number, offset: number, end: number, runsMax: number): Promise<Float64Array>;
  blkGetSize64(fd: number): number;
  blkGetSectorSize(fd: number): number;
  blkGetDiscardZeroes(fd: number): boolean;
  preadNoWait(
    fd: number, buffer: Buffer, bufferOffset: number, length: number, position: number,
  ): number;
  pwriteBatch(buffer: Buffer, pieces: Float64Array, callback: BatchCallback): void;
  createWriter(): NativeWriter;
  writerSubmit(
    writer: NativeWriter, buffer: Buffer, pieces: Float64Array, callback: BatchCallback,
  ): void;
  closeWriter(writer: NativeWriter): void;
  createSender(socketFd: number, mode: number): NativeSender;
  senderSubmit(
    sender: NativeSender, bytes: Buffer, pieces: Float64Array | null, callback: SendCallback,
  ): void;
  closeSender(sender: NativeSender, abort: boolean): void;
  createDatapath(
    socketFd: number, extents: Float64Array, size: number, options: number,
    blockSizeMin: number, spinMicros: number, dirty: Int32Array[], initial: Buffer | null,
    onEvent: DatapathEventHandler,
  ): NativeDatapath;
  datapathSubmit(
    datapath: NativeDatapath, bytes: Buffer, callback: ((error: Error | null) => void) | null,
  ): void;
  datapathControl(datapath: NativeDatapath, op: number, value: number): number;
  datapathStats(datapath: NativeDatapath): Float64Array;
  /** budget.c: reports what JS holds and the limit; returns what the data-path threads hold */
  budgetSync(jsHeldBytes: number, maxBytes: number): number;
  requestStep(
    bytes: Buffer, size: number, eflags: number, options: number, blockSizeMin: number,
  ): Float64Array;
  setSockOptInt(fd: number, level: number, name: number, value: number): number;
  getSockOptInt(fd: number, level: number, name: number): number;
  constants: {
    FALLOC_FL_KEEP_SIZE: number;
    FALLOC_FL_PUNCH_HOLE: number;
    FALLOC_FL_ZERO_RANGE: number;
    /** the most runs one dataRuns call returns */
    DATA_RUNS_MAX: number;
    SOL_SOCKET: number;
    SO_SNDBUF: number;
    SO_RCVBUF: number;
    SO_SNDBUFFORCE: number;
    SO_RCVLOWAT: number;
    /** the data path's bounds (native/src/datapath.h; a test keeps them equal to LIMITS) */
    DATAPATH_PAYLOAD_MAX?: number;
    DATAPATH_SPARSE_MIN?: number;
    /** the receive buffer's first capacity, and what it shrinks back to when idle */
    DATAPATH_RECV_MIN?: number;
    DATAPATH_LOWAT_MIN?: number;
    DATAPATH_LOWAT_MAX?: number;
    DATAPATH_FORWARD_MAX?: number;
    DATAPATH_SEND_BATCH?: number;
    DATAPATH_SPIN_MAX_US?: number;
    DATAPATH_SPIN_LENGTH_MAX?: number;
    /** connections that may spin at once (half the CPUs, at least one) */
    DATAPATH_SPINNERS_MAX?: number;
  };
}

function loadBinding(): { binding: NativeBinding; isNative: boolean } {
  const override = process.env.XVD_ADDON_PATH;
  if (override !== undefined && override !== '') {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return { binding: require(path.resolve(override)) as NativeBinding, isNative: true };
  }
  const file = path.join(__dirname, '..', '..', 'native', 'build', 'Release', 'xvd_native.node');
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return { binding: require(file) as NativeBinding, isNative: true };
  } catch {
    return { binding: fallbackBinding, isNative: false };
  }
}

const loaded = loadBinding();
const binding = loaded.binding;

/** True when the real addon is loaded (false: every optional method answers EOPNOTSUPP). */
export const isNative: boolean = loaded.isNative;

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

/** Numbers per piece in pwriteBatch's `pieces`: fd, bufferOffset, length, position. */
export const BATCH_PIECE_FIELDS = 4;
/** Pieces one pwriteBatch call takes (the addon's limit). */
export const BATCH_PIECES_MAX = 4096;

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

/**
 * A sender thread for one connection's socket (native/src/sender.c): each job sends `bytes` and
 * then the file pieces ((fd, position, length) triples, copied at the call), whole and in
 * submission order, by sendfile(2) or by pread and send (`mode`). The thread sends through its
 * own dup of `socketFd`. closeSender(abort = false) lets the queue drain first; abort = true
 * cancels what is queued (ECANCELED) and wakes a send waiting for room. Both join the thread.
 * Throws without the addon (sys.isNative is false): callers send from JS instead.
 */
export function createSender(socketFd: number, mode: SenderMode): NativeSender {
  assert(Number.isInteger(socketFd) && socketFd >= 0);
  return binding.createSender(socketFd, SENDER_MODE[mode]);
}

export function senderSubmit(
  sender: NativeSender, bytes: Buffer, pieces: Float64Array | null, callback: SendCallback,
): void {
  assert(pieces === null || pieces.length % SEND_PIECE_FIELDS === 0);
  binding.senderSubmit(sender, bytes, pieces, callback);
}

export function closeSender(sender: NativeSender, abort: boolean): void {
  binding.closeSender(sender, abort);
}

/**
 * Starts `socketFd`'s data-path thread: from now on it reads the socket (keep the JS socket
 * paused) and writes it (send every reply with datapathSubmit). `initial`: bytes already read.
 * Throws without the addon.
 */
export function createDatapath(
  socketFd: number, spec: DatapathSpec, initial: Buffer | null, onEvent: DatapathEventHandler,
): NativeDatapath {
  assert(Number.isInteger(socketFd) && socketFd >= 0);
  assert(spec.extents.length % DATAPATH_EXTENT_FIELDS === 0);
  const options = (spec.isStructured ? DATAPATH_OPTION.structured : 0) |
    (spec.isWritable ? DATAPATH_OPTION.writable : 0) | (spec.isTcp ? DATAPATH_OPTION.tcp : 0);
  return binding.createDatapath(socketFd, spec.extents, spec.size, options, spec.blockSizeMin,
    spec.spinMicros ?? 0, spec.dirty, initial, onEvent);
}

/** Queues a whole frame; `callback(error)` once sent (or failed, or cancelled). */
export function datapathSubmit(
  datapath: NativeDatapath, bytes: Buffer, callback: ((error: Error | null) => void) | null,
): void {
  binding.datapathSubmit(datapath, bytes, callback);
}

/** Stops (true) or resumes (false) reading the socket. */
export function datapathPause(datapath: NativeDatapath, isPaused: boolean): void {
  binding.datapathControl(datapath, DATAPATH_OP.pause, isPaused ? 1 : 0);
}

/**
 * No more I/O on the backings: every later byte is forwarded. True when none is under way;
 * else a `fenced` event follows once it ended.
 */
export function datapathFence(datapath: NativeDatapath): boolean {
  return binding.datapathControl(datapath, DATAPATH_OP.fence, 0) === 1;
}

/** Asks the thread to stop (after the queued frames, or at once); a `stopped` event follows. */
export function datapathStop(datapath: NativeDatapath, abort: boolean): void {
  binding.datapathControl(datapath, DATAPATH_OP.stop, abort ? 1 : 0);
}

/**
 * [requests served by the thread, bytes it received, bytes it sent, busy-polls that found a
 * request, busy-polls that found none, receive buffer capacity, reply buffer capacity (the
 * capacities are 0 once the thread freed its buffers)]; once the thread is gone, its last counts.
 */
export function datapathStats(datapath: NativeDatapath): Float64Array {
  return binding.datapathStats(datapath);
}

/**
 * The server's memory budget as the data-path threads share it (native/src/budget.c): tells
 * the addon what JS holds and the limit; returns what the threads hold (0 without the addon).
 */
export function budgetSync(jsHeldBytes: number, maxBytes: number): number {
  assert(Number.isSafeInteger(jsHeldBytes) && jsHeldBytes >= 0);
  assert(Number.isSafeInteger(maxBytes) && maxBytes > 0);
  return binding.budgetSync(jsHeldBytes, maxBytes);
}

/** What the data-path thread does with the bytes at the head of its stream (request.h). */
export const REQUEST_STEP = {
  shortHeader: 1, raw: 2, shortPayload: 3, serve: 4, forward: 5,
} as const;

/** requestStep's `options` bits. */
export const REQUEST_STEP_OPTION = { structured: 1, baseAllocation: 2 } as const;

export interface RequestStep {
  /** a REQUEST_STEP value */
  kind: number;
  /** the frame's length, header and WRITE payload (0 for shortHeader and raw) */
  frameLength: number;
  /** the NBD errno native/src/request.c finds (validate.ts's validateRequest in C) */
  errno: number;
}

/**
 * The data-path thread's verdict (native/src/request.c, the code the thread runs) on a stream
 * that starts with `bytes`, for an export of `size` bytes with transmission flags `eflags`.
 * Synchronous and pure; throws without the addon.
 */
export function requestStep(
  bytes: Buffer, size: number, eflags: number, options: number, blockSizeMin: number,
): RequestStep {
  assert(Number.isSafeInteger(size) && size >= 0);
  assert(Number.isInteger(blockSizeMin) && blockSizeMin >= 1);
  const [kind, frameLength, errno] = binding.requestStep(bytes, size, eflags, options,
    blockSizeMin);
  assert(kind !== undefined && frameLength !== undefined && errno !== undefined);
  return { kind, frameLength, errno };
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
