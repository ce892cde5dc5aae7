/**
 * sys/threads: a connection's threads in the addon, typed and checked: the sender thread
 * (sender.c) and the data-path thread (datapath.h and its parts), the memory budget they share
 * with JS (budget.c), and the data-path thread's request verdict (request.c) for tests. Each
 * create* throws without the addon (sys.isNative false): callers keep the work on the JS side.
 */
import assert from 'node:assert';
import {
  binding, type DatapathEventHandler, type NativeDatapath, type NativeSender, type SendCallback,
} from './binding';

/** How a sender thread sends file pieces: sendfile(2), or pread into its buffer and send. */
export const SENDER_MODE = { sendfile: 0, copy: 1 } as const;
export type SenderMode = keyof typeof SENDER_MODE;

/** Fields per piece in senderSubmit's Float64Array: fd, position, length. */
export const SEND_PIECE_FIELDS = 3;

/** Fields per extent in createDatapath's Float64Array. */
export const DATAPATH_EXTENT_FIELDS = 6;
/** The last field of an extent: what is under it (the thread probes holes only under `file`). */
export const DATAPATH_EXTENT_KIND = { file: 0, device: 1, fileAllData: 2 } as const;
/** Added to an extent's kind when another VD shares it: the thread forwards every WRITE that
 * touches it to JS, which copies it first (engine/cow.ts); READs it serves as any other. */
export const DATAPATH_EXTENT_SHARED = 4;
export const DATAPATH_OPTION = {
  structured: 1, writable: 2, tcp: 4, reader: 8, readerAlways: 16,
} as const;
export const DATAPATH_EVENT = {
  forward: 1, eof: 2, error: 3, fenced: 4, stopped: 5, remapped: 7,
} as const;
const DATAPATH_OP = { pause: 1, fence: 2, stop: 3 } as const;

/** An export's map, in the one form the data-path thread takes it (engine datapathMapOf; the
 * contract is native/src/dp-map.c's header): the thread keeps no map or hole table of its own. */
export interface DatapathMap {
  /** (startVirtual, length, fd, offsetBacking, backingIndex, DATAPATH_EXTENT_KIND, plus
   * DATAPATH_EXTENT_SHARED when shared) per extent, in order, contiguous from 0, covering
   * `size`; fileAllData: the backing knew it has no hole */
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
  /** READs of LIMITS.nbdDatapathReaderMin bytes or more are read by a reader thread beside the
   * data-path thread, which sends the reply before meanwhile (native/src/dp-reader.c), while a
   * CPU is free ('always': whether one is or not, for tests) */
  readonly hasReader?: boolean | 'always';
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
    (spec.isWritable ? DATAPATH_OPTION.writable : 0) | (spec.isTcp ? DATAPATH_OPTION.tcp : 0) |
    (spec.hasReader === true ? DATAPATH_OPTION.reader : 0) |
    (spec.hasReader === 'always' ? DATAPATH_OPTION.reader | DATAPATH_OPTION.readerAlways : 0);
  return binding.createDatapath(socketFd, spec.extents, spec.size, options, spec.blockSizeMin,
    spec.spinMicros ?? 0, spec.dirty, initial, onEvent);
}

/** Queues a whole frame; `callback(error)` once sent (or failed, or cancelled). */
export function datapathSubmit(
  datapath: NativeDatapath, bytes: Buffer, callback: ((error: Error | null) => void) | null,
): void {
  binding.datapathSubmit(datapath, bytes, callback);
}

/**
 * Hands the thread a new map of the same export (copy-on-write swapped an extent): backing
 * indices must be stable, `map.dirty` starting with the arrays given before. A `remapped`
 * event with `sequence` follows once the thread serves from it; throws a RangeError (the
 * thread keeps its map) when the map is not usable.
 */
export function datapathRemap(datapath: NativeDatapath, map: DatapathMap, sequence: number):
void {
  assert(map.extents.length % DATAPATH_EXTENT_FIELDS === 0);
  assert(Number.isInteger(sequence) && sequence >= 0 && sequence <= 0x7fffffff);
  binding.datapathRemap(datapath, map.extents, map.dirty, sequence);
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

/** datapathStats' counters (native DP_STATS_COUNTS), before the latency buckets. */
export const DATAPATH_STATS_COUNTS = 12;

/**
 * Latency histograms' buckets, shared by the data-path thread and the JS path: log2
 * microseconds, bucket 0 is [0, 2) µs, bucket i [2^i, 2^(i+1)) µs, the last one open-ended
 * (native DP_LAT_BUCKETS).
 */
export const LATENCY_BUCKETS = 24;

/**
 * [requests served by the thread, bytes it received, bytes it sent, busy-polls that found a
 * request, busy-polls that found none, receive buffer capacity, reply buffer capacity (the
 * capacities are 0 once the thread freed its buffers), READs served by the thread, their bytes,
 * WRITEs served by the thread, their bytes, READs its reader thread read]; once the thread is
 * gone, its last counts.
 */
export function datapathStats(datapath: NativeDatapath): Float64Array {
  return binding.datapathStats(datapath).subarray(0, DATAPATH_STATS_COUNTS);
}

/** The thread's service times (request framed to reply ready) in LATENCY_BUCKETS buckets. */
export function datapathLatency(datapath: NativeDatapath): Float64Array {
  return binding.datapathStats(datapath).subarray(DATAPATH_STATS_COUNTS);
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
