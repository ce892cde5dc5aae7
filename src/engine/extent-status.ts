/**
 * engine/extent-status: block status of an ExtentExport (NBD base:allocation).
 *
 * statusOfExtents asks each backing under the range in turn, over at most
 * LIMITS.blockStatusPiecesMax extents, and merges adjacent runs of equal state across extent
 * boundaries. The answer has at least one run and at most `runsMax`, covers a prefix of the range
 * (never past it), and stops early where a backing answered only a prefix of its piece.
 */
import assert from 'node:assert';
import { LIMITS } from '../limits';
import type { StatusRun } from './export';
import type { ExtentMap } from './extent-map';
import type { ExtentState } from './extent-state';

/** The runs of [offset, offset+length) on `state` (see the header). */
export async function statusOfExtents(
  state: ExtentState,
  offset: number,
  length: number,
  runsMax: number,
): Promise<StatusRun[]> {
  const clipped = clipToPieces(state.map, offset, length, LIMITS.blockStatusPiecesMax);
  const runs: StatusRun[] = [];
  for (const piece of state.map.translate(offset, clipped)) {
    const entry = state.entries[piece.backingIndex];
    assert(entry !== undefined);
    const budget = runsMax - runs.length + 1; // the first may merge into our last run
    const found = await entry.backing.blockStatus(piece.offsetBacking, piece.length, budget);
    assert(found.length >= 1);
    let covered = 0;
    for (const run of found) {
      assert(run.length > 0);
      const last = runs[runs.length - 1];
      if (last !== undefined && last.isHole === run.isHole && last.isZero === run.isZero) {
        last.length += run.length;
      } else if (runs.length < runsMax) {
        runs.push({ length: run.length, isHole: run.isHole, isZero: run.isZero });
      } else {
        return runs;
      }
      covered += run.length;
    }
    assert(covered <= piece.length);
    if (covered < piece.length) break; // the backing answered a prefix
  }
  assert(runs.length >= 1 && runs.length <= runsMax);
  return runs;
}

/** The prefix of [offset, offset+length) that spans at most `piecesMax` extents. */
function clipToPieces(map: ExtentMap, offset: number, length: number, piecesMax: number): number {
  const first = map.indexOf(offset);
  const last = Math.min(map.count - 1, first + piecesMax - 1);
  return Math.min(offset + length, map.at(last).endVirtual) - offset;
}
