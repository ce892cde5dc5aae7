/**
 * copy: the data side of `xvd import` and `xvd export`, sparse-aware in both directions.
 *
 * A VD is a list of pieces `{path, offset, length}` in virtual order (what `xvd show` prints).
 * Both directions walk the virtual range once through one bounded buffer (LIMITS.copyChunkBytes):
 *   - only data runs of the source are read: SEEK_DATA/SEEK_HOLE skip holes of sparse files
 *     (any error from them, e.g. on a block device, means "all data");
 *   - within what is read, all-zero blocks of ZERO_BLOCK_BYTES are not written: on import the new
 *     VD already reads as zero (the catalog's zeroing), on export they stay holes in the output.
 * Writes are followed by fdatasync of every file written before success is reported (a flush
 * on RBD). Members are reached through copy-member.ts (files, devices, RBD images).
 */
import assert from 'node:assert';
import fs from 'node:fs';
import cliProgress from 'cli-progress';
import { XvdError } from '../errors';
import { LIMITS } from '../limits';
import { fdDataRuns, MemberCache, readFully, writeFully } from './copy-member';
import { killPoint } from './kill-point';

/** One backing piece of a VD, in virtual order. */
export interface Piece {
  path: string;
  offset: number;
  length: number;
}

/** Granularity of zero detection: the page size most filesystems allocate in. */
const ZERO_BLOCK_BYTES = 4096;

const zeroBlock = Buffer.alloc(ZERO_BLOCK_BYTES);

/** Calls `write(offsetInBuffer, length)` for each maximal run of non-zero blocks in `buffer`. */
function forEachNonZeroRun(buffer: Buffer, write: (start: number, length: number) => void): void {
  let runStart = -1;
  for (let start = 0; start < buffer.length; start += ZERO_BLOCK_BYTES) {
    const end = Math.min(buffer.length, start + ZERO_BLOCK_BYTES);
    const isZero = buffer.subarray(start, end).equals(zeroBlock.subarray(0, end - start));
    if (!isZero && runStart < 0) runStart = start;
    if (isZero && runStart >= 0) {
      write(runStart, start - runStart);
      runStart = -1;
    }
  }
  if (runStart >= 0) write(runStart, buffer.length - runStart);
}

/** A progress bar on stderr when it is a terminal (position in virtual bytes); else a no-op. */
interface Progress {
  at(doneBytes: number): void;
  stop(): void;
}

function makeProgress(totalBytes: number, label: string): Progress {
  if (process.stderr.isTTY !== true) return { at: () => undefined, stop: () => undefined };
  const bar = new cliProgress.SingleBar({
    stream: process.stderr,
    format: `${label} [{bar}] {percentage}% | {value}/{total} MiB`,
    hideCursor: true,
  }, cliProgress.Presets.shades_classic);
  const mib = (bytes: number): number => Math.floor(bytes / (1024 * 1024));
  bar.start(mib(totalBytes), 0);
  return {
    at(doneBytes: number) {
      bar.update(mib(doneBytes));
    },
    stop() {
      bar.stop();
    },
  };
}

/** A copy step: bytes [start, end) of the virtual range, with its piece. */
interface Span {
  piece: Piece;
  startVirtual: number;
}

function spansOf(pieces: readonly Piece[]): Span[] {
  let startVirtual = 0;
  return pieces.map((piece) => {
    const span = { piece, startVirtual };
    startVirtual += piece.length;
    return span;
  });
}

/**
 * Copies `sizeBytes` of the file at `source` into the VD made of `pieces` (already zeroed).
 * `isOwned` is asked before each chunk: once the import is no longer this process's (another
 * process freed it, judging this one gone), its extents may be another VD's, so the copy stops
 * with ERR_VD_IMPORT_LOST rather than write there.
 */
export async function importInto(source: string, pieces: readonly Piece[], sizeBytes: number,
  isOwned: () => boolean): Promise<void> {
  const total = pieces.reduce((sum, piece) => sum + piece.length, 0);
  assert(total >= sizeBytes);
  const sourceFd = fs.openSync(source, 'r');
  const members = new MemberCache(true);
  const progress = makeProgress(sizeBytes, 'import');
  const buffer = Buffer.allocUnsafe(LIMITS.copyChunkBytes);
  try {
    for (const { piece, startVirtual } of spansOf(pieces)) {
      const endVirtual = Math.min(sizeBytes, startVirtual + piece.length);
      if (startVirtual >= endVirtual) break;
      for (const [runStart, runEnd] of await fdDataRuns(sourceFd, startVirtual, endVirtual)) {
        for (let at = runStart; at < runEnd; at += buffer.length) {
          const chunk = buffer.subarray(0, Math.min(buffer.length, runEnd - at));
          readFully(sourceFd, chunk, at);
          if (!isOwned()) {
            throw new XvdError('ERR_VD_IMPORT_LOST', `import: ${source}: the VD was freed while `
              + 'copying (its import was judged abandoned)');
          }
          const member = await members.get(piece.path);
          const offsetBacking = piece.offset + (at - startVirtual);
          const writes: [number, number][] = [];
          forEachNonZeroRun(chunk, (start, length) => writes.push([start, length]));
          for (const [start, length] of writes) {
            await member.write(chunk.subarray(start, start + length), offsetBacking + start);
          }
          progress.at(at + chunk.length);
          killPoint('import:chunk');
        }
      }
      progress.at(endVirtual);
    }
    await members.closeAll(true);
  } finally {
    await members.closeAll(false);
    fs.closeSync(sourceFd);
    progress.stop();
  }
}

/**
 * Writes the VD made of `pieces`, `sizeBytes` long, to the new file `target`, sparse, and syncs
 * it (the caller stages it: src/cli/staging.ts).
 */
export async function exportTo(pieces: readonly Piece[], sizeBytes: number, target: string,
): Promise<void> {
  const targetFd = fs.openSync(target, 'wx');
  const members = new MemberCache(false);
  const progress = makeProgress(sizeBytes, 'export');
  const buffer = Buffer.allocUnsafe(LIMITS.copyChunkBytes);
  try {
    fs.ftruncateSync(targetFd, sizeBytes);
    for (const { piece, startVirtual } of spansOf(pieces)) {
      const length = Math.min(piece.length, sizeBytes - startVirtual);
      if (length <= 0) break;
      const member = await members.get(piece.path);
      const end = piece.offset + length;
      for (const [runStart, runEnd] of await member.dataRuns(piece.offset, end)) {
        for (let at = runStart; at < runEnd; at += buffer.length) {
          const chunk = buffer.subarray(0, Math.min(buffer.length, runEnd - at));
          await member.read(chunk, at);
          const offsetTarget = startVirtual + (at - piece.offset);
          forEachNonZeroRun(chunk, (start, count) =>
            writeFully(targetFd, chunk.subarray(start, start + count), offsetTarget + start));
          progress.at(offsetTarget + chunk.length);
          killPoint('export:chunk');
        }
      }
      progress.at(startVirtual + length);
    }
    fs.fdatasyncSync(targetFd);
  } finally {
    await members.closeAll(false);
    fs.closeSync(targetFd);
    progress.stop();
  }
}
