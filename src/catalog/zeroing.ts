/**
 * zeroing: executes the pending zeroing the catalog recorded (invariant 3: a new or enlarged VD
 * reads as zero until written). A pending range is bytes of a member: whole new extents, or the
 * slack of a VD's last extent that an enlarge made visible (it may hold the bytes of the
 * extent's previous owner when the extent was taken with --no-zero, and need not be aligned).
 * Files get holes punched (then ZERO_RANGE, then written zeros); devices get BLKZEROOUT, falling
 * back to written zeros. A VD's pending rows are cleared by completeZeroing only after all its
 * ranges were zeroed, so a crash at any moment leaves the work pending for the next command.
 * Ranges go in pieces of LIMITS.zeroRangeBytesMax, and the VD's pending rows are re-checked
 * between pieces: when another process took the extents (the VD died and was reused), this one
 * stops instead of zeroing someone else's data.
 */
import fs from 'node:fs/promises';
import { IoError } from '../errors';
import { LIMITS } from '../limits';
import * as sys from '../sys';
import type { Catalog } from './index';
import type { PendingZero } from './types';

let zeroBuffer: Buffer | null = null;

async function writeZeros(handle: fs.FileHandle, offset: number, length: number): Promise<void> {
  zeroBuffer ??= Buffer.alloc(LIMITS.zeroWriteChunkBytes);
  let done = 0;
  for (let writes = 0; done < length; writes++) {
    const chunk = Math.min(zeroBuffer.length, length - done);
    const { bytesWritten } = await handle.write(zeroBuffer, 0, chunk, offset + done);
    if (bytesWritten <= 0) throw new IoError('EIO', 'write', 'zero: write wrote nothing');
    done += bytesWritten;
  }
}

function isUnsupported(error: unknown): boolean {
  const unsupported = ['EOPNOTSUPP', 'ENOTTY', 'EINVAL', 'ENOSYS'];
  return error instanceof IoError && unsupported.includes(error.errno);
}

async function zeroFileRange(fd: number, handle: fs.FileHandle, offset: number, length: number):
  Promise<void> {
  try {
    await sys.punchHole(fd, offset, length);
    return;
  } catch (error) {
    if (!isUnsupported(error)) throw error;
  }
  try {
    await sys.zeroRange(fd, offset, length);
    return;
  } catch (error) {
    if (!isUnsupported(error)) throw error;
  }
  await writeZeros(handle, offset, length);
}

async function zeroDeviceRange(fd: number, handle: fs.FileHandle, offset: number, length: number):
  Promise<void> {
  try {
    await sys.blkZeroout(fd, offset, length);
    return;
  } catch (error) {
    if (!isUnsupported(error)) throw error;
  }
  await writeZeros(handle, offset, length);
}

/** Zeroes one pending range in pieces; false when the VD's zeroing vanished meanwhile. */
async function zeroRange(catalog: Catalog, row: PendingZero): Promise<boolean> {
  let handle: fs.FileHandle;
  try {
    handle = await fs.open(row.path, 'r+');
  } catch (cause) {
    throw IoError.fromSystem(cause, 'open');
  }
  try {
    for (let done = 0; done < row.length;) {
      if (!catalog.hasPendingZero(row.vdId)) return false;
      const piece = Math.min(LIMITS.zeroRangeBytesMax, row.length - done);
      const zero = row.kind === 'file' ? zeroFileRange : zeroDeviceRange;
      await zero(handle.fd, handle, row.offset + done, piece);
      done += piece;
    }
    await handle.datasync();
    return true;
  } finally {
    await handle.close();
  }
}

/** Zeroes every pending range and clears it per VD; returns the VD ids completed. */
export async function zeroPending(catalog: Catalog): Promise<number[]> {
  const byVd = new Map<number, PendingZero[]>();
  for (const row of catalog.pendingZeroing()) {
    const list = byVd.get(row.vdId) ?? [];
    list.push(row);
    byVd.set(row.vdId, list);
  }
  const completed: number[] = [];
  for (const [vdId, rows] of byVd) {
    let isWhole = true;
    for (const row of rows) {
      if (!(await zeroRange(catalog, row))) {
        isWhole = false;
        break;
      }
    }
    if (isWhole && catalog.hasPendingZero(vdId)) {
      catalog.completeZeroing(vdId);
      completed.push(vdId);
    }
  }
  return completed;
}
