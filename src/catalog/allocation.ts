/**
 * catalog/allocation: turns the catalog's rows into an allocation request for the pure
 * allocator (src/allocator/allocator.ts), records its plan, and reports free space.
 *
 * Contract: every function writes only in the caller's IMMEDIATE transaction (createVd,
 * enlargeVd, beginImport, abandonImport), so free runs, dead VDs, leases and VBDs are read under
 * the same write lock the plan is recorded under. What the allocator may take: never-used runs,
 * then extents of dead VDs, except dead VDs a live server still leases (invariant 2: they are
 * being fenced and drained) and extents under a phy:/extent VBD. Extents taken from a dead VD
 * are recorded as its losses (undelete then refuses) and its pending zeroing is dropped. With
 * isZero, the new extents are recorded as pending zeroing (invariant 3). Clones share extents:
 * one a live (or held) VD maps is never taken, one shared by dead VDs is taken from all of them
 * and counted once (./owners.ts).
 */
import {
  allocate, availableBytes, freeAfter, mergeAdjacent, runsBytes, sliceRuns, type AllocationRequest,
  type DeadVd, type MemberRange, type Run,
} from '../allocator/allocator';
import { UsageError } from '../errors';
import { humanBytes } from './human';
import { heldVdIds } from './leases';
import { listMembers, memberMap } from './members';
import {
  all, get, toRun, type CatalogContext, type FreeRow, type MemberRow, type VbdRow, type VdRow,
} from './statements';
import type { FreeSpace, MemberFree } from './types';
import { rangesOfVbd } from './vbds';
import { releaseIdleReserves, reserveRunsOf, sharedBlocked, takeFromDead } from './owners';
import { runsOf } from './vd-rows';
/** Extents under phy:/extent VBDs, mapped onto members by path. */
function blockedRuns(cx: CatalogContext, members: Map<number, MemberRow>): Run[] {
  const byPath = new Map([...members.values()].map((m) => [m.path, m]));
  const blocked: Run[] = [];
  for (const vbd of all<VbdRow>(cx.st.vbds)) {
    if (vbd.source_kind === 'vd') continue;
    for (const range of rangesOfVbd(cx, vbd)) {
      const m = byPath.get(range.path);
      if (m === undefined) continue;
      const first = Math.floor(range.offset / m.extent_size);
      const end = Math.min(Math.ceil((range.offset + range.length) / m.extent_size),
        m.extent_count);
      if (end <= first) continue;
      blocked.push({ memberId: m.id, firstExtent: first, extentCount: end - first });
    }
  }
  return blocked;
}

/** Whole members whose extent size is not `extentSize` (null: none). */
function otherSizes(members: Map<number, MemberRow>, extentSize: number | null): Run[] {
  if (extentSize === null) return [];
  return [...members.values()].filter((m) => m.extent_size !== extentSize)
    .map((m) => ({ memberId: m.id, firstExtent: 0, extentCount: m.extent_count }));
}

/**
 * What the allocator may take: free runs, then dead VDs not held, minus extents under VBDs and
 * extents a live or held VD maps too (clones); `extentSize` restricts to members of that size.
 * A dead VD's reserve counts as its extents (freeSpace; allocations release it first).
 */
function allocationRequest(
  cx: CatalogContext, sizeBytes: number, onMemberId: number | null, now: number,
  extentSize: number | null = null,
): { request: AllocationRequest; heldDead: DeadVd[] } {
  const members = memberMap(cx);
  const held = heldVdIds(cx);
  const deadVds: DeadVd[] = [];
  const heldDead: DeadVd[] = [];
  for (const row of all<VdRow>(cx.st.deadVds, now)) {
    const runs = [...runsOf(cx, row.id), ...reserveRunsOf(cx, row.id)];
    const dead = { vdId: row.id, expiresAt: row.expires_at!, runs };
    if (dead.runs.length === 0) continue;
    (held.has(row.id) ? heldDead : deadVds).push(dead);
  }
  const request: AllocationRequest = {
    sizeBytes,
    extentSizes: new Map([...members.values()].map((m) => [m.id, m.extent_size])),
    freeRuns: all<FreeRow>(cx.st.freeRuns).map(toRun),
    deadVds,
    blocked: [...blockedRuns(cx, members), ...sharedBlocked(cx, held, now),
      ...otherSizes(members, extentSize)],
    onMemberId,
  };
  return { request, heldDead };
}

function noSpace(op: string, request: AllocationRequest, heldDead: DeadVd[]): never {
  const avail = availableBytes(request);
  const free = avail.neverUsed + avail.reclaimable;
  const heldBytes = availableBytes({ ...request, freeRuns: [], deadVds: heldDead }).reclaimable;
  const where = request.onMemberId === null ? '' : ` on member ${request.onMemberId}`;
  let message = `${op}: not enough space${where}: need ${request.sizeBytes} bytes `
    + `(${humanBytes(request.sizeBytes)}), free ${free} bytes (${humanBytes(free)}: `
    + `never used ${avail.neverUsed}, reclaimable ${avail.reclaimable})`;
  if (heldBytes > 0) {
    message += `; ${heldBytes} bytes (${humanBytes(heldBytes)}) of deleted disks are held by `
      + 'exports still being fenced and drained by a running server';
  }
  const isDraining = heldDead.length > 0 &&
    allocate({ ...request, deadVds: [...request.deadVds, ...heldDead] }) !== null;
  throw new UsageError(isDraining ? 'ERR_VD_SPACE_DRAINING' : 'ERR_VD_NO_SPACE', message);
}

/**
 * Rewrites the free runs of every member that `runs` lie on (in the caller's transaction):
 * `next(current, ofMember)` gives the member's new free runs from its current ones and the
 * part of `runs` on it.
 */
export function rewriteFreeRuns(
  cx: CatalogContext, runs: readonly Run[], next: (current: Run[], ofMember: Run[]) => Run[],
): void {
  for (const memberId of new Set(runs.map((r) => r.memberId))) {
    const current = all<FreeRow>(cx.st.freeRunsOf, memberId).map(toRun);
    const runsNext = next(current, runs.filter((r) => r.memberId === memberId));
    cx.st.deleteFreeOf.run(memberId);
    for (const r of runsNext) cx.st.insertFree.run(r.memberId, r.firstExtent, r.extentCount);
  }
}

/** Gives `runs` back to the free runs of their members (in the caller's transaction). */
export function freeRuns(cx: CatalogContext, runs: readonly Run[]): void {
  rewriteFreeRuns(cx, runs, (current, mine) =>
    mergeAdjacent([...current, ...mine].sort((a, b) => a.firstExtent - b.firstExtent)));
}

/**
 * Takes whole extents covering `sizeBytes` for VD vdId (in the caller's transaction): from the
 * free runs, then from dead VDs (every dead VD that maps a taken extent loses it); returns the
 * new runs in virtual order. `extentSize`: only from members of that extent size.
 */
export function takeExtents(
  cx: CatalogContext, op: string, vdId: number, sizeBytes: number, onMemberId: number | null,
  now: number, extentSize: number | null = null,
): { runs: Run[]; extentSizes: ReadonlyMap<number, number> } {
  releaseIdleReserves(cx, heldVdIds(cx));
  const { request, heldDead } = allocationRequest(cx, sizeBytes, onMemberId, now, extentSize);
  const plan = allocate(request);
  if (plan === null) noSpace(op, request, heldDead);
  rewriteFreeRuns(cx, plan.fromFree, freeAfter);
  takeFromDead(cx, plan.fromDead.flatMap((dead) => dead.taken), vdId, now);
  return { runs: plan.runs, extentSizes: request.extentSizes };
}

/** Allocates and records `sizeBytes` more for vdId, appending after its runs. */
export function allocateFor(
  cx: CatalogContext, op: string, vdId: number, sizeBytes: number, onMemberId: number | null,
  isZero: boolean, now: number,
): void {
  const plan = takeExtents(cx, op, vdId, sizeBytes, onMemberId, now);
  let seq = (get<{ seq: number }>(cx.st.maxSeq, vdId)!.seq) + 1;
  for (const r of plan.runs) {
    cx.st.insertRun.run(vdId, seq++, r.memberId, r.firstExtent, r.extentCount);
  }
  if (isZero) {
    const bytes = runsBytes(plan.runs, plan.extentSizes);
    recordPending(cx, vdId, sliceRuns(plan.runs, plan.extentSizes, 0, bytes));
  }
}

/** Records member byte ranges of vdId as pending zeroing (in the caller's transaction). */
export function recordPending(
  cx: CatalogContext, vdId: number, ranges: readonly MemberRange[],
): void {
  for (const r of ranges) cx.st.insertPending.run(vdId, r.memberId, r.offset, r.length);
}

/** Free space per member and in all: never used, reclaimable (dead VDs), held. */
export function freeSpace(cx: CatalogContext): FreeSpace {
  const now = cx.now();
  const { request, heldDead } = allocationRequest(cx, 1, null, now);
  const members: MemberFree[] = listMembers(cx).map((m) => {
    const only = { ...request, onMemberId: m.id };
    const avail = availableBytes(only);
    const held = availableBytes({ ...only, freeRuns: [], deadVds: heldDead }).reclaimable;
    const blocked = runsBytes(request.blocked.filter((b) => b.memberId === m.id),
      request.extentSizes);
    const heldBytes = held + blocked;
    return {
      memberId: m.id, path: m.path, extentSize: m.extentSize, extentCount: m.extentCount,
      neverUsedExtents: avail.neverUsed / m.extentSize, neverUsedBytes: avail.neverUsed,
      reclaimableExtents: avail.reclaimable / m.extentSize, reclaimableBytes: avail.reclaimable,
      heldExtents: heldBytes / m.extentSize, heldBytes,
    };
  });
  const sum = (f: (m: MemberFree) => number) => members.reduce((s, m) => s + f(m), 0);
  const neverUsedBytes = sum((m) => m.neverUsedBytes);
  const reclaimableBytes = sum((m) => m.reclaimableBytes);
  return {
    members, neverUsedBytes, reclaimableBytes, heldBytes: sum((m) => m.heldBytes),
    totalBytes: neverUsedBytes + reclaimableBytes,
  };
}
