/**
 * nbd/replies: simple and structured replies (proto.md "Simple reply message", "Structured reply
 * chunk message", "Structured reply types"): OFFSET_DATA, OFFSET_HOLE, BLOCK_STATUS, ERROR.
 *
 * A READ reply is one Buffer: header then data, allocated once so the Export reads straight into
 * it (node-perf.md §8.3). Every chunk built here lies inside the request range, the last chunk
 * carries NBD_REPLY_FLAG_DONE, and block-status runs from the Export are clipped to the request
 * (never trusted: CVE-2025-47711). Error messages are cut to LIMITS.nbdEchoLengthMax.
 *
 * BufferPool (node-perf.md §8.3): READ reply buffers and WRITE payloads spanning socket chunks
 * come from power-of-two size classes and go back once the socket has taken the reply (write
 * callback) or the Export has settled the write. A fresh 1 MiB allocUnsafe costs an mmap, 256
 * page faults (kernel zeroing) and GC pressure; reuse removes all three. Pooled buffers hold stale
 * bytes of earlier requests: callers send only ranges the Export overwrote (invariant 3: the
 * engine fills every byte of a read target, zeros on short reads and on failure) and send no
 * payload at all on a READ error. A buffer is never handed out twice (the free set asserts it).
 */
import assert from 'node:assert';
import type { ReadPiece, StatusRun } from '../engine/export';
import { LIMITS } from '../limits';
import {
  CHUNK_HEADER_LENGTH,
  NBD_REPLY_FLAG,
  NBD_REPLY_TYPE,
  NBD_STATE,
  SIMPLE_REPLY_LENGTH,
} from './constants';
import { writeChunkHeader, writeSimpleReply, writeU64 } from './wire-writer';

/** Bytes before the data in a READ reply buffer. */
export const READ_DATA_OFFSET_SIMPLE = SIMPLE_REPLY_LENGTH;
export const READ_DATA_OFFSET_STRUCTURED = CHUNK_HEADER_LENGTH + 8;

/** Free lists of reusable Buffers by power-of-two size class (see the header). */
export class BufferPool {
  private readonly lists = new Map<number, Buffer[]>();
  private readonly free = new Set<Buffer>();
  private bytesFree = 0;

  constructor(
    private readonly classMinBytes: number,
    private readonly classMaxBytes: number,
    private readonly bytesFreeMax: number,
  ) {
    assert(classMinBytes > 0 && (classMinBytes & (classMinBytes - 1)) === 0);
    assert(classMaxBytes >= classMinBytes);
  }

  /** A buffer of at least `length` bytes (its contents are stale); give it back with release(). */
  acquire(length: number): Buffer {
    const size = classSizeOf(length);
    if (!this.isPooled(length, size)) return Buffer.allocUnsafeSlow(length);
    const buffer = this.lists.get(size)?.pop();
    if (buffer === undefined) return Buffer.allocUnsafeSlow(size);
    this.free.delete(buffer);
    this.bytesFree -= size;
    return buffer;
  }

  /** Returns a buffer from acquire(); buffers outside the classes are left to the GC. */
  release(buffer: Buffer): void {
    const size = buffer.length;
    if (!this.isPooled(size, size) || classSizeOf(size) !== size) return;
    assert(!this.free.has(buffer), 'BufferPool: buffer released twice');
    if (this.bytesFree + size > this.bytesFreeMax) return;
    let list = this.lists.get(size);
    if (list === undefined) {
      list = [];
      this.lists.set(size, list);
    }
    list.push(buffer);
    this.free.add(buffer);
    this.bytesFree += size;
  }

  /** A length the pool serves: inside [classMin, classMax + slack] by its class size. */
  private isPooled(length: number, size: number): boolean {
    return length >= this.classMinBytes && size <= this.classMaxBytes + CLASS_SLACK;
  }

  get bytesHeld(): number {
    return this.bytesFree;
  }
}

/** Bytes each class has beyond its power of two: room for a reply header before 2^k data. */
const CLASS_SLACK = 64;

function classSizeOf(length: number): number {
  return 2 ** Math.ceil(Math.log2(Math.max(1, length - CLASS_SLACK))) + CLASS_SLACK;
}

/** The process-wide pool for reply and payload buffers (one JS thread: no locking). */
export const bufferPool = new BufferPool(LIMITS.nbdBufferPoolClassMin,
  LIMITS.nbdBufferPoolClassMax, LIMITS.nbdBufferPoolBytesMax);

export function simpleReply(errno: number, cookieHigh: number, cookieLow: number): Buffer {
  const frame = Buffer.allocUnsafe(SIMPLE_REPLY_LENGTH);
  writeSimpleReply(frame, 0, errno, cookieHigh, cookieLow);
  return frame;
}

/**
 * The success header of a READ reply of `length` bytes alone (the data follows from elsewhere:
 * dataplane/reply-sender.ts): a simple reply, or an OFFSET_DATA chunk flagged DONE with its
 * offset.
 */
export function readReplyHeader(
  isStructured: boolean, cookieHigh: number, cookieLow: number, offset: number, length: number,
): Buffer {
  const header = Buffer.allocUnsafe(isStructured ? READ_DATA_OFFSET_STRUCTURED
    : READ_DATA_OFFSET_SIMPLE);
  writeReadReplyHeader(header, isStructured, cookieHigh, cookieLow, offset, length);
  return header;
}

function writeReadReplyHeader(
  frame: Buffer, isStructured: boolean, cookieHigh: number, cookieLow: number, offset: number,
  length: number,
): void {
  if (!isStructured) {
    writeSimpleReply(frame, 0, 0, cookieHigh, cookieLow);
    return;
  }
  writeChunkHeader(frame, 0, NBD_REPLY_FLAG.DONE, NBD_REPLY_TYPE.OFFSET_DATA,
    cookieHigh, cookieLow, 8 + length);
  writeU64(frame, offset, CHUNK_HEADER_LENGTH);
}

/**
 * Allocates a READ reply with its success header written; data goes at the returned offset.
 * Structured: one OFFSET_DATA chunk flagged DONE. With `storage` (at least the frame's length,
 * e.g. from bufferPool) the frame is a view of it; else a new Buffer.
 */
export function readReplyBuffer(
  isStructured: boolean, cookieHigh: number, cookieLow: number, offset: number, length: number,
  storage?: Buffer,
): Buffer {
  const frameLength = (isStructured ? READ_DATA_OFFSET_STRUCTURED : READ_DATA_OFFSET_SIMPLE) +
    length;
  const frame = storage === undefined
    ? Buffer.allocUnsafe(frameLength)
    : storage.subarray(0, frameLength);
  writeReadReplyHeader(frame, isStructured, cookieHigh, cookieLow, offset, length);
  return frame;
}

export function errorChunk(
  errno: number, cookieHigh: number, cookieLow: number, message: string,
): Buffer {
  const text = Buffer.from(message, 'utf8').subarray(0, LIMITS.nbdEchoLengthMax);
  const frame = Buffer.allocUnsafe(CHUNK_HEADER_LENGTH + 6 + text.length);
  writeChunkHeader(frame, 0, NBD_REPLY_FLAG.DONE, NBD_REPLY_TYPE.ERROR,
    cookieHigh, cookieLow, 6 + text.length);
  frame.writeUInt32BE(errno, CHUNK_HEADER_LENGTH);
  frame.writeUInt16BE(text.length, CHUNK_HEADER_LENGTH + 4);
  text.copy(frame, CHUNK_HEADER_LENGTH + 6);
  return frame;
}

/** Runs clipped to [0, length): drops empty runs, cuts the one crossing the end. */
export function clipStatusRuns(runs: readonly StatusRun[], length: number): StatusRun[] {
  const clipped: StatusRun[] = [];
  let covered = 0;
  for (const run of runs) {
    if (covered >= length) break;
    if (!Number.isSafeInteger(run.length) || run.length <= 0) continue;
    const take = Math.min(run.length, length - covered);
    clipped.push({ length: take, isHole: run.isHole, isZero: run.isZero });
    covered += take;
  }
  return clipped;
}

/** One BLOCK_STATUS chunk (flagged DONE) for context `contextId`; runs already clipped. */
export function blockStatusChunk(
  cookieHigh: number, cookieLow: number, contextId: number, runs: readonly StatusRun[],
): Buffer {
  assert(runs.length > 0);
  const payloadLength = 4 + 8 * runs.length;
  const frame = Buffer.allocUnsafe(CHUNK_HEADER_LENGTH + payloadLength);
  writeChunkHeader(frame, 0, NBD_REPLY_FLAG.DONE, NBD_REPLY_TYPE.BLOCK_STATUS,
    cookieHigh, cookieLow, payloadLength);
  frame.writeUInt32BE(contextId, CHUNK_HEADER_LENGTH);
  let at = CHUNK_HEADER_LENGTH + 4;
  for (const run of runs) {
    const state = (run.isHole ? NBD_STATE.HOLE : 0) | (run.isZero ? NBD_STATE.ZERO : 0);
    frame.writeUInt32BE(run.length, at);
    frame.writeUInt32BE(state, at + 4);
    at += 8;
  }
  return frame;
}

interface Span {
  start: number;
  end: number;
  isHole: boolean;
}

/** Merges pieces into spans: zero pieces shorter than nbdSparseHoleMin join the data. */
function sparseSpans(pieces: readonly ReadPiece[], length: number): Span[] | null {
  const spans: Span[] = [];
  let cursor = 0;
  for (const piece of pieces) {
    if (piece.offset !== cursor || piece.length <= 0 || piece.offset + piece.length > length) {
      return null; // pieces must tile the range in order
    }
    const isHole = piece.isZero && piece.length >= LIMITS.nbdSparseHoleMin;
    const last = spans[spans.length - 1];
    if (last !== undefined && last.isHole === isHole) last.end += piece.length;
    else spans.push({ start: cursor, end: cursor + piece.length, isHole });
    cursor += piece.length;
  }
  return cursor === length ? spans : null;
}

/**
 * Chunks for a sparse READ whose data was read into `frame` at READ_DATA_OFFSET_STRUCTURED.
 * Returns null when the pieces do not tile the request (the caller answers EIO).
 */
export function sparseReadChunks(
  frame: Buffer, pieces: readonly ReadPiece[], cookieHigh: number, cookieLow: number,
  offset: number, length: number,
): Buffer[] | null {
  const spans = sparseSpans(pieces, length);
  if (spans === null) return null;
  const chunks: Buffer[] = [];
  spans.forEach((span, index) => {
    const flags = index === spans.length - 1 ? NBD_REPLY_FLAG.DONE : 0;
    const spanLength = span.end - span.start;
    const header = Buffer.allocUnsafe(CHUNK_HEADER_LENGTH + (span.isHole ? 12 : 8));
    if (span.isHole) {
      writeChunkHeader(header, 0, flags, NBD_REPLY_TYPE.OFFSET_HOLE, cookieHigh, cookieLow, 12);
      writeU64(header, offset + span.start, CHUNK_HEADER_LENGTH);
      header.writeUInt32BE(spanLength, CHUNK_HEADER_LENGTH + 8);
      chunks.push(header);
      return;
    }
    writeChunkHeader(header, 0, flags, NBD_REPLY_TYPE.OFFSET_DATA,
      cookieHigh, cookieLow, 8 + spanLength);
    writeU64(header, offset + span.start, CHUNK_HEADER_LENGTH);
    const dataStart = READ_DATA_OFFSET_STRUCTURED + span.start;
    // zero pieces folded into data may not have been written by readSparse: zero them
    chunks.push(header, frame.subarray(dataStart, dataStart + spanLength));
  });
  return chunks;
}

/** Zero-fills the zero pieces of a sparse read that sparseReadChunks will send as data. */
export function fillSmallZeroPieces(frame: Buffer, pieces: readonly ReadPiece[]): void {
  for (const piece of pieces) {
    if (piece.isZero && piece.length < LIMITS.nbdSparseHoleMin) {
      const start = READ_DATA_OFFSET_STRUCTURED + piece.offset;
      frame.fill(0, start, start + piece.length);
    }
  }
}
