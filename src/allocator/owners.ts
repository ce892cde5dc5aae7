/**
 * owners: owner counts of extents, as runs, in pure functions (the catalog's extent_owners rows,
 * src/catalog/owners.ts). A VD's map is runs; after a clone two VDs map the same extents. The
 * catalog stores the count only where it is two or more: an extent that some VD maps and no
 * count run covers has one owner, a free extent none. Counts change by whole runs (a clone adds
 * one over each run of its origin, a copy-on-write remap takes one off a single extent), so
 * every operation here is a sweep over run boundaries, O(runs log runs), never per extent.
 */
import assert from 'node:assert';
import { mergeAdjacent, runEnd, subtractRuns, type Run } from './allocator';

/** A run whose every extent has `owners` owners (>= 2 when stored). */
export interface OwnerRun extends Run {
  owners: number;
}

/** A run with a weight, for sweeps. */
interface WeightedRun extends Run {
  weight: number;
}

/**
 * The sum of the weights over every extent, as runs of equal sums (zero sums left out), sorted
 * by member and first extent, adjacent equal sums merged.
 */
export function sweepWeights(runs: readonly WeightedRun[]): OwnerRun[] {
  const byMember = new Map<number, { at: number; delta: number }[]>();
  for (const r of runs) {
    if (r.weight === 0 || r.extentCount <= 0) continue;
    const events = byMember.get(r.memberId) ?? [];
    events.push({ at: r.firstExtent, delta: r.weight }, { at: runEnd(r), delta: -r.weight });
    byMember.set(r.memberId, events);
  }
  const out: OwnerRun[] = [];
  for (const memberId of [...byMember.keys()].sort((a, b) => a - b)) {
    const events = byMember.get(memberId)!.sort((a, b) => a.at - b.at);
    let sum = 0;
    for (let i = 0; i < events.length; i++) {
      sum += events[i]!.delta;
      const next = events[i + 1];
      if (next === undefined || next.at === events[i]!.at || sum === 0) continue;
      const at = events[i]!.at;
      const last = out[out.length - 1];
      if (last !== undefined && last.memberId === memberId && runEnd(last) === at
        && last.owners === sum) {
        last.extentCount += next.at - at;
      } else {
        out.push({ memberId, firstExtent: at, extentCount: next.at - at, owners: sum });
      }
    }
  }
  return out;
}

/**
 * The stored counts after every extent of `runs` (each mapped, so counted 1 when no row covers
 * it) gains `delta` owners. The result keeps only counts >= 2; a count below 1 is a bug of the
 * caller (an extent nobody would map is freed with clearOwners instead).
 */
export function addOwners(current: readonly OwnerRun[], runs: readonly Run[], delta: number):
  OwnerRun[] {
  assert(Number.isSafeInteger(delta));
  const weighted: WeightedRun[] = current.map((r) => ({ ...r, weight: r.owners - 1 }));
  for (const r of runs) weighted.push({ ...r, weight: delta });
  const excess = sweepWeights(weighted);
  for (const r of excess) assert(r.owners > 0, 'owners: an extent would have no owner');
  return excess.filter((r) => r.owners >= 1).map((r) => ({ ...r, owners: r.owners + 1 }));
}

/** The stored counts without the extents of `cut` (taken by a new owner: one owner again). */
export function clearOwners(current: readonly OwnerRun[], cut: readonly Run[]): OwnerRun[] {
  return current.flatMap((row) => subtractRuns([row], cut)
    .map((piece) => ({ ...piece, owners: row.owners })));
}

/** The extents of `a` that are also in `b`, in the order of `a`. */
export function intersectRuns(a: readonly Run[], b: readonly Run[]): Run[] {
  if (a.length === 0 || b.length === 0) return [];
  return subtractRuns(a, subtractRuns(a, b));
}

/** A piece of a VD's map and the owner count of each of its extents. */
export interface OwnedPiece extends Run {
  owners: number;
}

/**
 * A VD's runs (virtual order) cut where the owner count changes: each piece with its count
 * (1 where no stored run covers it). A run without shared extents stays one piece.
 */
export function splitByOwners(runs: readonly Run[], stored: readonly OwnerRun[]): OwnedPiece[] {
  const byMember = new Map<number, OwnerRun[]>();
  for (const s of stored) {
    const list = byMember.get(s.memberId) ?? [];
    list.push(s);
    byMember.set(s.memberId, list);
  }
  for (const list of byMember.values()) list.sort((x, y) => x.firstExtent - y.firstExtent);
  const out: OwnedPiece[] = [];
  const push = (piece: OwnedPiece) => {
    if (piece.extentCount > 0) out.push(piece);
  };
  for (const run of runs) {
    let at = run.firstExtent;
    const list = byMember.get(run.memberId) ?? [];
    for (let i = firstEndingAfter(list, at); i < list.length; i++) {
      const s = list[i]!;
      if (s.firstExtent >= runEnd(run)) break;
      const start = Math.max(s.firstExtent, at);
      const end = Math.min(runEnd(s), runEnd(run));
      push({ memberId: run.memberId, firstExtent: at, extentCount: start - at, owners: 1 });
      push({ memberId: run.memberId, firstExtent: start, extentCount: end - start,
        owners: s.owners });
      at = end;
    }
    push({ memberId: run.memberId, firstExtent: at, extentCount: runEnd(run) - at, owners: 1 });
  }
  return out;
}

/** The index of the first of `sorted` (disjoint, ascending) that ends after `extent`. */
export function firstEndingAfter(sorted: readonly Run[], extent: number): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (runEnd(sorted[mid]!) <= extent) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Sorted by member and first extent, adjacent runs merged: a canonical list of runs. */
export function normalRuns(runs: readonly Run[]): Run[] {
  return mergeAdjacent([...runs].sort((a, b) => a.memberId - b.memberId
    || a.firstExtent - b.firstExtent));
}
