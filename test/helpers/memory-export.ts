/**
 * memory-export: a simple in-memory Export for tests of the layers above the engine (src/nbd).
 *
 * Storage is a sparse map of 64 KiB blocks; a block that was never written (or was wholly trimmed
 * or zeroed) is absent, reads as zeros and is reported by blockStatus as a hole that reads as zero.
 * All capabilities are true (canMultiConn too: there is one store); block sizes 1 / 4096 / 32 MiB.
 * A read-only export rejects write/trim/zero with IoError errno 'EPERM'.
 * Extra test hooks: `failNext(op, errno)` makes the next call of that operation reject with the
 * errno; `writes`/`flushes` count calls; `snapshot()` returns a flat copy of the contents.
 */
import assert from 'node:assert';
import { IoError } from '../../src/errors';
import type {
  Export,
  ReadPiece,
  StatusRun,
  WriteFlags,
  ZeroFlags,
} from '../../src/engine/export';

export const MEMORY_BLOCK_SIZE = 64 * 1024;

export type MemoryOp =
  | 'read'
  | 'write'
  | 'flush'
  | 'trim'
  | 'zero'
  | 'blockStatus'
  | 'cache';

export interface MemoryExportOptions {
  name: string;
  size: number;
  readOnly?: boolean;
  description?: string;
}

export interface MemoryExport extends Export {
  /** the next call of `op` rejects with IoError(errno) */
  failNext(op: MemoryOp, errno: string): void;
  /** a flat copy of [0, size) */
  snapshot(): Buffer;
  readonly counts: Record<MemoryOp, number>;
  readonly isClosed: boolean;
}

export function createMemoryExport(options: MemoryExportOptions): MemoryExport {
  const { name, size } = options;
  assert(Number.isSafeInteger(size) && size >= 0);
  const isReadOnly = options.readOnly === true;
  const blocks = new Map<number, Buffer>();
  const failures = new Map<MemoryOp, string>();
  const counts: Record<MemoryOp, number> = {
    read: 0, write: 0, flush: 0, trim: 0, zero: 0, blockStatus: 0, cache: 0,
  };
  let isClosed = false;

  function enter(op: MemoryOp): void {
    counts[op]++;
    const errno = failures.get(op);
    if (errno !== undefined) {
      failures.delete(op);
      throw new IoError(errno, op, `${op}: ${errno}: injected by memory export`);
    }
  }

  function checkRange(offset: number, length: number): void {
    assert(Number.isSafeInteger(offset) && offset >= 0);
    assert(Number.isSafeInteger(length) && length >= 0);
    assert(offset + length <= size, `range [${offset}, ${offset + length}) past size ${size}`);
  }

  function checkWritable(op: MemoryOp): void {
    if (isReadOnly) throw new IoError('EPERM', op, `${op}: EPERM: export is read-only`);
  }

  function readInto(offset: number, length: number, target: Buffer, targetOffset: number): void {
    let cursor = offset;
    const end = offset + length;
    while (cursor < end) {
      const index = Math.floor(cursor / MEMORY_BLOCK_SIZE);
      const within = cursor - index * MEMORY_BLOCK_SIZE;
      const take = Math.min(end - cursor, MEMORY_BLOCK_SIZE - within);
      const at = targetOffset + (cursor - offset);
      const block = blocks.get(index);
      if (block === undefined) target.fill(0, at, at + take);
      else block.copy(target, at, within, within + take);
      cursor += take;
    }
  }

  function writeFrom(offset: number, data: Buffer | null, length: number): void {
    let cursor = offset;
    const end = offset + length;
    while (cursor < end) {
      const index = Math.floor(cursor / MEMORY_BLOCK_SIZE);
      const within = cursor - index * MEMORY_BLOCK_SIZE;
      const take = Math.min(end - cursor, MEMORY_BLOCK_SIZE - within);
      if (data === null && take === MEMORY_BLOCK_SIZE) {
        blocks.delete(index);
      } else if (data === null) {
        blocks.get(index)?.fill(0, within, within + take);
      } else {
        let block = blocks.get(index);
        if (block === undefined) {
          block = Buffer.alloc(MEMORY_BLOCK_SIZE);
          blocks.set(index, block);
        }
        data.copy(block, within, cursor - offset, cursor - offset + take);
      }
      cursor += take;
    }
  }

  const memory: MemoryExport = {
    name,
    description: options.description ?? '',
    size,
    isReadOnly,
    canFlush: true,
    canFua: true,
    canTrim: true,
    canZero: true,
    canFastZero: true,
    canCache: true,
    canMultiConn: true,
    blockSizeMin: 1,
    blockSizePreferred: 4096,
    blockSizeMax: 32 * 1024 * 1024,
    counts,
    get isClosed() {
      return isClosed;
    },

    async read(offset, length, target, targetOffset) {
      checkRange(offset, length);
      assert(targetOffset >= 0 && targetOffset + length <= target.length);
      enter('read');
      readInto(offset, length, target, targetOffset);
    },

    async readSparse(offset, length, target, targetOffset): Promise<ReadPiece[]> {
      checkRange(offset, length);
      assert(targetOffset >= 0 && targetOffset + length <= target.length);
      enter('read');
      readInto(offset, length, target, targetOffset);
      const pieces: ReadPiece[] = [];
      for (const run of statusRuns(offset, length, Number.MAX_SAFE_INTEGER)) {
        const last = pieces[pieces.length - 1];
        const pieceOffset = last === undefined ? 0 : last.offset + last.length; // request-relative
        pieces.push({ offset: pieceOffset, length: run.length, isZero: run.isZero });
      }
      return pieces;
    },

    async write(offset, data, _flags: WriteFlags) {
      checkRange(offset, data.length);
      enter('write');
      checkWritable('write');
      writeFrom(offset, data, data.length);
    },

    async flush() {
      enter('flush');
    },

    async trim(offset, length, _flags: WriteFlags) {
      checkRange(offset, length);
      enter('trim');
      checkWritable('trim');
      writeFrom(offset, null, length);
    },

    async zero(offset, length, _flags: ZeroFlags) {
      checkRange(offset, length);
      enter('zero');
      checkWritable('zero');
      writeFrom(offset, null, length);
    },

    async blockStatus(offset, length, runsMax) {
      checkRange(offset, length);
      assert(runsMax >= 1);
      enter('blockStatus');
      return statusRuns(offset, length, runsMax);
    },

    async cache(offset, length) {
      checkRange(offset, length);
      enter('cache');
    },

    async close() {
      isClosed = true;
    },

    failNext(op, errno) {
      failures.set(op, errno);
    },

    snapshot() {
      const flat = Buffer.alloc(size);
      readInto(0, size, flat, 0);
      return flat;
    },
  };

  function statusRuns(offset: number, length: number, runsMax: number): StatusRun[] {
    const runs: StatusRun[] = [];
    let cursor = offset;
    const end = offset + length;
    while (cursor < end) {
      const index = Math.floor(cursor / MEMORY_BLOCK_SIZE);
      const take = Math.min(end - cursor, (index + 1) * MEMORY_BLOCK_SIZE - cursor);
      const isHole = !blocks.has(index);
      const last = runs[runs.length - 1];
      if (last !== undefined && last.isHole === isHole) {
        last.length += take;
      } else {
        if (runs.length === runsMax) break;
        runs.push({ length: take, isHole, isZero: isHole });
      }
      cursor += take;
    }
    return runs;
  }

  return memory;
}
