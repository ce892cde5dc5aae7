/**
 * zeroing: executes the pending zeroing the catalog recorded (invariant 3: a new or enlarged VD
 * reads as zero until written). Files get holes punched; devices get BLKZEROOUT, falling back to
 * writing zeros. Each VD's pending rows are cleared by completeZeroing only after all its ranges
 * were zeroed, so a crash at any moment leaves the work pending for the next command.
 */
import type { Catalog } from './index';

/** Zeroes every pending range and clears it per VD; returns the VD ids completed. */
export async function zeroPending(catalog: Catalog): Promise<number[]> {
  void catalog;
  throw new Error('not implemented');
}
