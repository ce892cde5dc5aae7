/**
 * engine/extent-write: the write path of an ExtentExport (write, zero, trim, FUA syncs).
 *
 * issueWrite issues one request's pieces, out of the caller's buffer, and settles its Job once
 * after every piece has settled. When every backing of the state has a batch descriptor, the
 * export's WriteBatcher gathers the pieces into (batchFd, bufferOffset, length, position)
 * quadruples and submits them as one batch: on the backing's own writer thread when every piece
 * is on one backing (the usual case), else as one pool job (backing/batch writeBatch). A request
 * of more than BATCH_PIECES_MAX pieces, or a state without batch descriptors, goes piece by piece
 * through Backing.write with the short-write retry (LIMITS.shortIoRetriesMax).
 *
 * Durability (invariant 4): a completed (or failed) piece marks its pooled backing dirty; a FUA
 * write syncs the backings it touched (Job.touched) before it resolves; zero and trim mark the
 * range dirty and possibly holed, and sync what they touched under FUA.
 *
 * Batch scratch scope: one WriteBatcher per export, owned by it. issue() fills and submits the
 * batch synchronously and the submit copies the pieces, so one reused array serves every request
 * of the export with no allocation per request (JS runs one request's issue at a time).
 */
import assert from 'node:assert';
import { IoError } from '../errors';
import { LIMITS } from '../limits';
import type { PooledBacking } from '../backing/pool';
import {
  BATCH_PIECE_FIELDS, BATCH_PIECES_MAX, writeBatch, type BatchCallback,
} from '../backing/batch';
import type { Piece } from './extent-map';
import type { ExtentState } from './extent-state';
import { Job, pieceError, settleAll, visitSafely, type Touched } from './extent-job';

/** Pieces a batcher holds room for before it first grows (it grows up to BATCH_PIECES_MAX). */
const BATCH_PIECES_INITIAL = 64;

/** Issues every piece of the write `job` (over job.state) at `offset`; settles once. */
export function issueWrite(job: Job, offset: number, batcher: WriteBatcher): void {
  if (job.state.batchFds === null || !batcher.issue(job, offset, job.length)) {
    visitSafely(job, offset, job.length, visitWrite);
  }
  finishWrite(job);
}

function visitWrite(
  job: Job,
  backingIndex: number,
  offsetBacking: number,
  length: number,
  offsetRequest: number,
): void {
  const entry = job.state.entries[backingIndex];
  assert(entry !== undefined);
  job.pending++;
  job.touch(entry);
  writePiece(job, entry, job.bufferBase + offsetRequest, length, offsetBacking, 0);
}

function writePiece(
  job: Job,
  entry: PooledBacking,
  bufferOffset: number,
  length: number,
  position: number,
  retries: number,
): void {
  entry.backing.write(job.buffer, bufferOffset, length, position, (error, bytes) => {
    entry.markDirty();
    if (error !== null) {
      job.error ??= pieceError(error, 'write');
    } else if (bytes < length) {
      if (bytes > 0 && retries < LIMITS.shortIoRetriesMax) {
        writePiece(job, entry, bufferOffset + bytes, length - bytes, position + bytes, retries + 1);
        return;
      }
      job.error ??= new IoError('EIO', 'write', `write: EIO: short write of ${bytes}/${length}`);
    }
    finishWrite(job);
  });
}

function finishWrite(job: Job): void {
  if (--job.pending > 0) return;
  if (job.error === null && job.isFua) {
    job.resolve(); // syncs, then leaves
    return;
  }
  job.owner.leave(job.state);
  if (job.error === null) job.resolve();
  else job.reject(job.error);
}

/** One export's batch scratch (see the header): the pieces of the request being issued. */
export class WriteBatcher {
  private pieces = new Float64Array(BATCH_PIECE_FIELDS * BATCH_PIECES_INITIAL);
  private count = 0;
  /** the backing index of every piece so far: -2 before the first piece, -1 once two differ */
  private backingIndex = -2;
  /** the job being gathered; set only inside issue() */
  private job: Job | null = null;

  /**
   * Issues a write as one batch. False when the request has more pieces than one batch takes:
   * the caller then issues them one by one (nothing was submitted).
   */
  issue(job: Job, offset: number, length: number): boolean {
    this.count = 0;
    this.backingIndex = -2;
    this.job = job;
    try {
      job.state.map.visit(offset, length, WriteBatcher.visitPiece, this);
    } catch (error) {
      job.error ??= error instanceof Error ? error : new Error(String(error));
    } finally {
      this.job = null;
    }
    if (job.error !== null || this.count === 0) return true;
    if (this.count > BATCH_PIECES_MAX) {
      job.touched = null;
      return false;
    }
    const pieces = this.pieces.subarray(0, BATCH_PIECE_FIELDS * this.count);
    const done: BatchCallback = (error, index) => finishBatch(job, error, index);
    const backing = this.backingIndex >= 0
      ? job.state.entries[this.backingIndex]?.backing : undefined;
    try {
      if (backing?.writeBatch !== undefined) backing.writeBatch(job.buffer, pieces, done);
      else writeBatch(job.buffer, pieces, done);
      job.pending++; // submitted: `done` will run once
    } catch (error) {
      job.error ??= pieceError(error, 'write'); // nothing was queued, nothing written
    }
    return true;
  }

  private static visitPiece(
    this: void,
    batcher: WriteBatcher,
    backingIndex: number,
    offsetBacking: number,
    length: number,
    offsetRequest: number,
  ): void {
    const job = batcher.job;
    assert(job !== null);
    const fds = job.state.batchFds;
    const entry = job.state.entries[backingIndex];
    assert(fds !== null && entry !== undefined);
    if (batcher.count < BATCH_PIECES_MAX) {
      let at = BATCH_PIECE_FIELDS * batcher.count;
      if (at + BATCH_PIECE_FIELDS > batcher.pieces.length) {
        const grown = new Float64Array(2 * batcher.pieces.length);
        grown.set(batcher.pieces);
        batcher.pieces = grown;
      }
      const pieces = batcher.pieces;
      pieces[at++] = fds[backingIndex]!;
      pieces[at++] = job.bufferBase + offsetRequest;
      pieces[at++] = length;
      pieces[at] = offsetBacking;
    }
    batcher.count++;
    const previous = batcher.backingIndex;
    batcher.backingIndex = previous === -2 || previous === backingIndex ? backingIndex : -1;
    job.touch(entry);
  }
}

function finishBatch(job: Job, error: NodeJS.ErrnoException | null, index: number): void {
  forEachTouched(job.touched, markDirty);
  if (error !== null) {
    job.error ??= pieceError(error, 'write');
  } else if (index >= 0) {
    job.error ??= new IoError('EIO', 'write', `write: EIO: short write of piece ${index}`);
  }
  finishWrite(job);
}

function markDirty(entry: PooledBacking): void {
  entry.markDirty();
}

function forEachTouched(touched: Touched, visit: (entry: PooledBacking) => void): void {
  if (touched === null) return;
  if (Array.isArray(touched)) touched.forEach(visit);
  else visit(touched);
}

/** fdatasync of every backing a request touched (FUA). */
export function syncTouched(touched: Touched): Promise<void> {
  if (touched === null) return Promise.resolve();
  if (!Array.isArray(touched)) return touched.sync();
  return settleAll(touched.map((entry) => entry.sync()));
}

/** Zero or trim: runs `run` on every piece concurrently, then syncs what they touched on FUA. */
export async function eachPieceThenSync(
  state: ExtentState,
  pieces: Piece[],
  isFua: boolean,
  run: (entry: PooledBacking, piece: Piece) => Promise<void>,
): Promise<void> {
  await settleAll(pieces.map(async (piece) => {
    const entry = state.entries[piece.backingIndex];
    assert(entry !== undefined);
    try {
      await run(entry, piece);
    } finally {
      entry.markDirty();
    }
  }));
  if (isFua) await syncTouched(touchedBy(state, pieces));
}

function touchedBy(state: ExtentState, pieces: Piece[]): PooledBacking[] {
  const entries = new Set<PooledBacking>();
  for (const piece of pieces) {
    const entry = state.entries[piece.backingIndex];
    assert(entry !== undefined);
    entries.add(entry);
  }
  return [...entries];
}
