/**
 * backing/zero-sparse: zeroing that leaves a sparse file sparse, for space being handed to a
 * new owner (the catalog's pending zeroing of a pool member's extents, src/catalog/zeroing.ts).
 *
 * It adds no rung of its own to the zeroing ladder of backing.ts: on a regular file it first
 * trims, which FileBacking does with fallocate(PUNCH_HOLE), and a punched range of a regular
 * file reads as zeros; when the file system cannot punch, trim turns canTrim off and the range
 * goes through Backing.zero's ladder (holes allowed, slow fallbacks allowed) like every other
 * range and every device. Punching first matters for pool images: ZERO_RANGE, the ladder's first
 * rung for files, keeps the blocks allocated, so a sparse pool would fill up with zeroed VDs.
 */
import assert from 'node:assert';
import type { Backing } from './backing';

/** Makes [offset, offset+length) of `backing` read as zeros, freeing a file's blocks if it can. */
export async function zeroSparse(backing: Backing, offset: number, length: number): Promise<void> {
  assert(Number.isSafeInteger(offset) && offset >= 0);
  assert(Number.isSafeInteger(length) && length > 0);
  if (backing.kind === 'file' && backing.canTrim) {
    await backing.trim(offset, length);
    if (backing.canTrim) return; // punched: a hole in a regular file reads as zeros
  }
  await backing.zero(offset, length, true, false);
}
