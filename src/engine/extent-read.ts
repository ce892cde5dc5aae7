/**
 * engine/extent-read: the read path of an ExtentExport (read, readSparse, cache).
 *
 * issueRead translates the range with ExtentMap.visit (no allocation) and issues one positioned
 * Backing.read per piece, straight into the caller's buffer, callback style; pieces run
 * concurrently and the Job settles once, after every piece has settled. A short read retries the
 * rest (at most LIMITS.shortIoRetriesMax times); a read of 0 bytes is EOF of a sparse file and
 * zero-fills the rest of its piece; a failed read zero-fills the whole target range, so no path
 * leaves uninitialised bytes in it (invariant 3).
 *
 * readSparse answers which parts of a range read as zeros: when the state says the range is all
 * data (extent-state isAllData) it is one plain read; else block status first, zeros filled in,
 * data pieces read. Either way every byte of the target range is written, or the whole range is
 * zeroed and the promise rejects.
 */
import assert from 'node:assert';
import { IoError } from '../errors';
import { LIMITS } from '../limits';
import type { PooledBacking } from '../backing/pool';
import type { ReadPiece, StatusRun } from './export';
import { isAllData, type ExtentState } from './extent-state';
import { Job, pieceError, settleAll, visitSafely } from './extent-job';

/** Issues every piece of [offset, offset+length) of job.state into job.buffer; settles once. */
export function issueRead(job: Job, offset: number, length: number): void {
  visitSafely(job, offset, length, visitRead);
  finishRead(job);
}

function visitRead(
  job: Job,
  backingIndex: number,
  offsetBacking: number,
  length: number,
  offsetRequest: number,
): void {
  const entry = job.state.entries[backingIndex];
  assert(entry !== undefined);
  job.pending++;
  readPiece(job, entry, job.bufferBase + offsetRequest, length, offsetBacking, 0);
}

function readPiece(
  job: Job,
  entry: PooledBacking,
  bufferOffset: number,
  length: number,
  position: number,
  retries: number,
): void {
  entry.backing.read(job.buffer, bufferOffset, length, position, (error, bytes) => {
    if (error !== null) {
      job.error ??= pieceError(error, 'read');
    } else if (bytes < length) {
      if (bytes === 0) {
        job.buffer.fill(0, bufferOffset, bufferOffset + length); // EOF of a sparse file
      } else if (retries < LIMITS.shortIoRetriesMax) {
        readPiece(job, entry, bufferOffset + bytes, length - bytes, position + bytes, retries + 1);
        return;
      } else {
        job.error ??= new IoError('EIO', 'read', 'read: EIO: too many short reads');
      }
    }
    finishRead(job);
  });
}

function finishRead(job: Job): void {
  if (--job.pending > 0) return;
  if (job.error === null) {
    job.owner.leave(job.state);
    job.resolve();
    return;
  }
  // on failure, overwrite whatever pieces did arrive: the caller gets zeros or nothing
  job.buffer.fill(0, job.bufferBase, job.bufferBase + job.length);
  job.owner.leave(job.state);
  job.reject(job.error);
}

/** The two requests readSparse is made of: the export's own read and blockStatus. */
export interface SparseSource {
  read(offset: number, length: number, target: Buffer, targetOffset: number): Promise<void>;
  blockStatus(offset: number, length: number, runsMax: number): Promise<StatusRun[]>;
}

/** ExtentExport.readSparse on the state the request started with. */
export async function readSparse(
  source: SparseSource,
  state: ExtentState,
  offset: number,
  length: number,
  target: Buffer,
  targetOffset: number,
): Promise<ReadPiece[]> {
  if (isAllData(state, offset, length)) {
    // no hole to find: skip the block-status round (seeks, promises) on every large READ
    await source.read(offset, length, target, targetOffset);
    return [{ offset: 0, length, isZero: false }];
  }
  const runs = await source.blockStatus(offset, length, LIMITS.readSparseRunsMax);
  const pieces: ReadPiece[] = []; // offsets relative to the start of the request
  let cursor = 0;
  for (const run of runs) {
    addPiece(pieces, cursor, run.length, run.isZero);
    cursor += run.length;
  }
  if (cursor < length) addPiece(pieces, cursor, length - cursor, false);
  const reads: Promise<void>[] = [];
  for (const piece of pieces) {
    const at = targetOffset + piece.offset;
    if (piece.isZero) target.fill(0, at, at + piece.length);
    else reads.push(source.read(offset + piece.offset, piece.length, target, at));
  }
  try {
    await settleAll(reads);
  } catch (error) {
    target.fill(0, targetOffset, targetOffset + length);
    throw error;
  }
  return pieces;
}

function addPiece(pieces: ReadPiece[], offset: number, length: number, isZero: boolean): void {
  const last = pieces[pieces.length - 1];
  if (last !== undefined && last.isZero === isZero) last.length += length;
  else pieces.push({ offset, length, isZero });
}

/** Readahead: reads [offset, offset+length) into `scratch`, one chunk after the other. */
export async function readAhead(
  source: Pick<SparseSource, 'read'>,
  offset: number,
  length: number,
  scratch: Buffer,
): Promise<void> {
  for (let cursor = offset; cursor < offset + length; cursor += scratch.length) {
    await source.read(cursor, Math.min(scratch.length, offset + length - cursor), scratch, 0);
  }
}
