/**
 * catalog/remaps: how commitCowRemaps (./cow.ts) applies a batch of copy-on-write remaps to a
 * VD's map: planned in one walk over its runs in virtual order, then written in place.
 *
 * Contract: planRemaps replaces, for each remap it applies, exactly one whole extent of the map
 * (at remap.virtualOffset, remap.length = that extent's size) with extent remap.firstExtent of
 * member remap.memberId, and records the old extent. Strict (the VD the server commits for), a
 * remap that does not name one whole extent of the map, or names one twice, throws
 * ERR_COW_NOT_SHARED and `accept` may throw; lenient (a clone that takes the same remaps), such
 * a remap, or one `accept` refuses, is skipped. writeRemappedRuns writes only the runs a plan
 * cut (seq numbers SEQ_STRIDE apart leave room between runs), or the whole map when a gap is
 * too narrow; nothing here opens a transaction.
 */
import assert from 'node:assert';
import { mergeAdjacent, runEnd, type Run } from '../allocator/allocator';
import { XvdError } from '../errors';
import { invalid, type CatalogContext, type RunRow } from './statements';
import type { CowRemap } from './types';

/** One remap applied: the extent the map had there, and the one it has now. */
export interface Applied {
  remap: CowRemap;
  old: Run;
  taken: Run;
}

export interface RemapPlan {
  /** the VD's new runs in virtual order */
  runs: Run[];
  /** the index of each old run a remap cut, and the pieces that replace it */
  cut: Map<number, Run[]>;
  applied: Applied[];
  /** the new extents, in the order applied */
  used: Run[];
}

/** Whether to apply remap `m` over `old` (an extent of `size` bytes); may throw. */
export type AcceptRemap = (m: CowRemap, size: number, used: readonly Run[], old: Run) => boolean;

/**
 * Seq numbers of a map that commits rewrote are this far apart, so that the next commits
 * insert their pieces between two runs (a local write) instead of renumbering the whole map.
 */
const SEQ_STRIDE = 1024;

export function checkRemap(remap: CowRemap): void {
  for (const key of ['virtualOffset', 'length', 'memberId', 'firstExtent'] as const) {
    const value = remap[key];
    if (!Number.isSafeInteger(value) || value < 0) invalid(`commit: bad remap ${key}: ${value}`);
  }
}

function isInRuns(runs: readonly Run[], memberId: number, extent: number): boolean {
  return runs.some((r) => r.memberId === memberId && r.firstExtent <= extent
    && extent < runEnd(r));
}

/** The new extent of `m` is in the VD's reserve, of `size` bytes, and not used twice. */
export function isReserved(vdId: number, reserve: readonly Run[], used: readonly Run[],
  sizes: ReadonlyMap<number, number>, m: CowRemap, size: number): boolean {
  if (sizes.get(m.memberId) === size && isInRuns(reserve, m.memberId, m.firstExtent)
    && !isInRuns(used, m.memberId, m.firstExtent)) {
    return true;
  }
  throw new XvdError('ERR_COW_NOT_RESERVED', `commit: VD ${vdId}: extent ${m.firstExtent} `
    + `of member ${m.memberId} is not in its reserve (of ${size}-byte extents)`);
}

export function sameRun(a: Run | undefined, b: Run): boolean {
  return a !== undefined && a.memberId === b.memberId && a.firstExtent === b.firstExtent
    && a.extentCount === b.extentCount;
}

/** How many VDs leave (or join) one extent. */
export interface Counted {
  run: Run;
  n: number;
}

export function count(counts: Map<string, Counted>, run: Run): void {
  const key = `${run.memberId}:${run.firstExtent}`;
  const entry = counts.get(key) ?? { run, n: 0 };
  entry.n += 1;
  counts.set(key, entry);
}

/** The VD's runs with each remap applied, walked once in virtual order. */
export function planRemaps(
  vdId: number, runs: readonly Run[], sizes: ReadonlyMap<number, number>,
  remaps: readonly CowRemap[], isStrict: boolean, accept: AcceptRemap,
): RemapPlan {
  const sorted = [...remaps].sort((a, b) => a.virtualOffset - b.virtualOffset);
  const refuse = (m: CowRemap, why: string): false => {
    if (!isStrict) return false;
    throw new XvdError('ERR_COW_NOT_SHARED', `commit: VD ${vdId}: the remap at virtual offset `
      + `${m.virtualOffset} (${m.length} bytes) ${why}`);
  };
  const plan: RemapPlan = { runs: [], cut: new Map(), applied: [], used: [] };
  let base = 0;
  let i = 0;
  for (const [index, run] of runs.entries()) {
    const size = sizes.get(run.memberId)!;
    const end = base + run.extentCount * size;
    const first = plan.runs.length;
    let at = run.firstExtent;
    for (; i < sorted.length && sorted[i]!.virtualOffset < end; i++) {
      const m = sorted[i]!;
      const delta = m.virtualOffset - base;
      if (delta % size !== 0 || m.length !== size) {
        refuse(m, 'is not one whole extent of its map');
        continue;
      }
      const extent = run.firstExtent + delta / size;
      const old = { memberId: run.memberId, firstExtent: extent, extentCount: 1 };
      if (extent < at) refuse(m, 'remaps an extent twice');
      if (extent < at || !accept(m, size, plan.used, old)) continue;
      if (extent > at) {
        plan.runs.push({ memberId: run.memberId, firstExtent: at, extentCount: extent - at });
      }
      const taken = { memberId: m.memberId, firstExtent: m.firstExtent, extentCount: 1 };
      plan.runs.push(taken);
      plan.used.push(taken);
      plan.applied.push({ remap: m, old, taken });
      at = extent + 1;
    }
    if (runEnd(run) > at) {
      plan.runs.push({ memberId: run.memberId, firstExtent: at, extentCount: runEnd(run) - at });
    }
    if (at !== run.firstExtent) plan.cut.set(index, plan.runs.slice(first));
    base = end;
  }
  if (i < sorted.length) refuse(sorted[i]!, 'lies past the end of its map');
  return plan;
}

/**
 * Writes the cut runs in place: the first piece of each takes its run's seq, the others seqs
 * between it and the next run's; when a gap is too narrow, the whole map is written again
 * with seqs SEQ_STRIDE apart. A commit thus writes O(remaps) rows, not O(runs of the map).
 */
export function writeRemappedRuns(
  cx: CatalogContext, vdId: number, rows: readonly RunRow[], plan: RemapPlan,
): void {
  const gapAfter = (index: number) => (rows[index + 1]?.seq ?? Number.MAX_SAFE_INTEGER)
    - rows[index]!.seq;
  const isRoomy = [...plan.cut].every(([index, pieces]) => gapAfter(index) > pieces.length);
  if (!isRoomy) {
    cx.st.deleteRunsOf.run(vdId);
    mergeAdjacent(plan.runs).forEach((r, index) => {
      cx.st.insertRun.run(vdId, index * SEQ_STRIDE, r.memberId, r.firstExtent, r.extentCount);
    });
    return;
  }
  for (const [index, pieces] of plan.cut) {
    const seq = rows[index]!.seq;
    const step = Math.min(SEQ_STRIDE, Math.floor(gapAfter(index) / pieces.length));
    assert(step >= 1);
    pieces.forEach((r, j) => {
      if (j === 0) cx.st.updateRun.run(r.memberId, r.firstExtent, r.extentCount, vdId, seq);
      else cx.st.insertRun.run(vdId, seq + j * step, r.memberId, r.firstExtent, r.extentCount);
    });
  }
}
