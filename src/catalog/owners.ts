/**
 * catalog/owners: the owner counts of extents (extent_owners) and the copy-on-write reserves
 * (cow_reserve) as the other catalog modules read and change them.
 *
 * Contract: nothing here opens a transaction; every writer runs inside its caller's IMMEDIATE
 * transaction. Counts are runs (src/allocator/owners.ts): a row only where two or more VDs,
 * live or dead, map the extents. "An extent goes back to the free pool only when its last
 * owner dies": the allocator may take an extent of a dead VD only when no live VD, and no dead
 * VD a live server still leases, maps it too (sharedBlocked); when it takes one, every dead VD
 * that mapped it loses it (recorded, so undelete refuses with the reason) and its count goes
 * (takeFromDead). A reserve is owned by its VD alone and in no map: it is never free and never
 * another VD's. It is kept only while a live server leases its VD (the server copies into it):
 * releasing the last lease, unregistering a server, and every allocation give the reserves of
 * VDs no live server leases back to the free runs (releaseIdleReserves). A server killed before
 * it could release leaves its VDs' reserves until the next of these; free space counts a dead
 * VD's reserve as reclaimable and a live one's as used until then. An extent of a reserve the
 * server copied into but never committed is no loss: the VD's map still names the shared
 * extent (uncommitted writes are ones NBD lets a crash lose), and a reused extent is zeroed.
 */
import assert from 'node:assert';
import {
  subtractRuns, type Run,
} from '../allocator/allocator';
import {
  addOwners, clearOwners, intersectRuns, normalRuns, splitByOwners, type OwnedPiece,
  type OwnerRun,
} from '../allocator/owners';
import { freeRuns } from './allocation';
import {
  all, get, toRun, type CatalogContext, type OwnerRow, type ReserveRow, type RunRow, type VdRow,
} from './statements';
import { isDead, runsOf } from './vd-rows';

function toOwnerRun(row: OwnerRow): OwnerRun {
  return { ...toRun(row), owners: row.owners };
}

/** Every stored count (owners >= 2), sorted by member and first extent. */
export function storedOwners(cx: CatalogContext): OwnerRun[] {
  return all<OwnerRow>(cx.st.ownersAll).map(toOwnerRun);
}

/** The count rows that overlap `run` (index lookups: the one holding its start, then later). */
function ownerRowsOver(cx: CatalogContext, run: Run): OwnerRun[] {
  const rows: OwnerRun[] = [];
  const at = get<OwnerRow>(cx.st.ownerRowAt, run.memberId, run.firstExtent);
  if (at !== undefined && at.first_extent + at.extent_count > run.firstExtent) {
    rows.push(toOwnerRun(at));
  }
  for (const row of all<OwnerRow>(cx.st.ownerRowsIn, run.memberId, run.firstExtent,
    run.firstExtent + run.extentCount)) {
    rows.push(toOwnerRun(row));
  }
  return rows;
}

/**
 * Rewrites, run by run, the count rows that overlap each of `runs` (disjoint) through `next`:
 * O(log rows + rows touched) per run, whatever the number of rows.
 */
function rewriteOwners(
  cx: CatalogContext, runs: readonly Run[],
  next: (current: OwnerRun[], run: Run) => OwnerRun[],
): void {
  for (const run of normalRuns(runs)) {
    const current = ownerRowsOver(cx, run);
    const rows = next(current, run);
    for (const r of current) cx.st.deleteOwnerRow.run(r.memberId, r.firstExtent);
    for (const r of rows) {
      assert(r.owners >= 2 && r.memberId === run.memberId);
      cx.st.insertOwners.run(r.memberId, r.firstExtent, r.extentCount, r.owners);
    }
  }
}

/** Every extent of `runs` (each mapped by some VD) gains `delta` owners. */
export function changeOwners(cx: CatalogContext, runs: readonly Run[], delta: number): void {
  rewriteOwners(cx, runs, (current, run) => addOwners(current, [run], delta));
}

/** Extents no VD maps any more (every owner left them): no count rows, back in the free runs. */
export function dropOwners(cx: CatalogContext, runs: readonly Run[]): void {
  rewriteOwners(cx, runs, (current, run) => clearOwners(current, [run]));
  freeRuns(cx, runs);
}

/** The owner count of one extent that some VD maps (1 without a count row). */
export function ownersAt(cx: CatalogContext, memberId: number, extent: number): number {
  const row = get<OwnerRow>(cx.st.ownerRowAt, memberId, extent);
  return row !== undefined && row.first_extent + row.extent_count > extent ? row.owners : 1;
}

/** A VD's map cut where the owner count changes, each piece with its count. */
export function ownedPieces(cx: CatalogContext, vdId: number): OwnedPiece[] {
  return splitByOwners(runsOf(cx, vdId), storedOwners(cx));
}

/**
 * Extents a dead VD maps that the allocator must not take: those a live VD (or a dead one in
 * `held`, leased by a live server) maps too.
 */
export function sharedBlocked(cx: CatalogContext, held: ReadonlySet<number>, now: number): Run[] {
  const stored = storedOwners(cx);
  if (stored.length === 0) return [];
  const vds = new Map(all<VdRow>(cx.st.vds).map((v) => [v.id, v]));
  const keeping = all<RunRow>(cx.st.runsOverShared).filter((r) => {
    const vd = vds.get(r.vd_id);
    return vd !== undefined && (!isDead(vd, now) || held.has(vd.id));
  }).map(toRun);
  return intersectRuns(normalRuns(keeping), stored);
}

/**
 * The allocator took `taken` (extents of dead VDs) for VD `takerId`: every VD that maps any of
 * them (all dead, as sharedBlocked ensured) loses them: its runs shrink, the loss is recorded
 * (undelete refuses, naming it), its pending zeroing goes and its generation moves on. The
 * taken extents have one owner again: the taker.
 */
export function takeFromDead(
  cx: CatalogContext, taken: readonly Run[], takerId: number, now: number,
): void {
  if (taken.length === 0) return;
  const vdIds = new Set<number>();
  for (const t of taken) {
    const rows = all<{ vd_id: number }>(cx.st.vdsOverlapping, t.memberId,
      t.firstExtent + t.extentCount, t.firstExtent);
    for (const row of rows) vdIds.add(row.vd_id);
  }
  for (const vdId of [...vdIds].sort((a, b) => a - b)) {
    const runs = runsOf(cx, vdId);
    const lost = normalRuns(intersectRuns(runs, taken));
    if (lost.length === 0) continue;
    cx.st.deleteRunsOf.run(vdId);
    subtractRuns(runs, taken).forEach((r, seq) => {
      cx.st.insertRun.run(vdId, seq, r.memberId, r.firstExtent, r.extentCount);
    });
    for (const r of lost) {
      cx.st.insertLoss.run(vdId, r.memberId, r.firstExtent, r.extentCount, takerId, now);
    }
    cx.st.deletePendingOf.run(vdId);
    cx.st.bumpVd.run(vdId);
  }
  rewriteOwners(cx, taken, (current, run) => clearOwners(current, [run]));
}

/** The reserve of a VD as runs. */
export function reserveRunsOf(cx: CatalogContext, vdId: number): Run[] {
  return all<ReserveRow>(cx.st.reserveOf, vdId).map(toRun);
}

/** Gives the reserves of VDs that no live server leases (`held`: those leased) back to the
 * free runs. */
export function releaseIdleReserves(cx: CatalogContext, held: ReadonlySet<number>): void {
  for (const { vd_id: vdId } of all<{ vd_id: number }>(cx.st.reserveVds)) {
    if (held.has(vdId)) continue;
    freeRuns(cx, reserveRunsOf(cx, vdId));
    cx.st.deleteReserveOf.run(vdId);
  }
}
