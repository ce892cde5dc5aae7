/**
 * zeroing: executes the pending zeroing the catalog recorded (invariant 3: a new or enlarged VD
 * reads as zero until written). A pending range is bytes of a member: whole new extents, or the
 * slack of a VD's last extent that an enlarge made visible (it may hold the bytes of the
 * extent's previous owner when the extent was taken with --no-zero, and need not be aligned).
 *
 * The bytes are zeroed by the one zeroing ladder, the backing layer's (src/backing): the member
 * is opened as a Backing (a file or a block device, as its fstat says) and each piece goes
 * through zeroSparse (backing/zero-sparse.ts): a file gets a hole punched, so a sparse pool image
 * stays sparse; otherwise, and on devices, Backing.zero with holes and slow fallbacks allowed
 * (fallocate ZERO_RANGE; BLKDISCARD when discarded sectors read as zeros, or BLKZEROOUT, with an
 * unaligned head and tail written; written zeros last). Then one fdatasync, before the rows are
 * cleared.
 *
 * A VD's pending rows are cleared by completeZeroing only after all its ranges were zeroed and
 * synced, so a crash at any moment leaves the work pending for the next command. Ranges go in
 * pieces of LIMITS.zeroRangeBytesMax, and the VD's pending rows are re-checked between pieces:
 * when another process took the extents (the VD died and was reused), this one stops instead of
 * zeroing someone else's data.
 */
import { openBacking } from '../backing/open-backing';
import { zeroSparse } from '../backing/zero-sparse';
import { LIMITS } from '../limits';
import type { Catalog } from './index';
import type { PendingZero } from './types';

/** Zeroes one pending range in pieces; false when the VD's zeroing vanished meanwhile. */
async function zeroRange(catalog: Catalog, row: PendingZero): Promise<boolean> {
  const backing = await openBacking(row.path, 'w');
  try {
    for (let done = 0; done < row.length;) {
      if (!catalog.hasPendingZero(row.vdId)) return false;
      const piece = Math.min(LIMITS.zeroRangeBytesMax, row.length - done);
      await zeroSparse(backing, row.offset + done, piece);
      done += piece;
    }
    await backing.sync();
    return true;
  } finally {
    await backing.close();
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
