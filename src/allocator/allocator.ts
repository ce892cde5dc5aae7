/**
 * allocator: the placement policy as pure functions over runs (member, first extent, count).
 *
 * Order (Xen 1.2's, with its reversed-layout bug fixed):
 *   1. never-used space first. Among free runs, best fit: the smallest run that holds the whole
 *      remainder; when none does, the largest run whole, then again. A VD thus gets few runs.
 *   2. then the extents of dead VDs, the one that expired longest ago first, each eaten from its
 *      tail so a recently deleted disk keeps its head (partition table, superblock) and stays
 *      restorable longest. Pieces taken from one dead VD keep that VD's (ascending) order.
 * Extents in `blocked` (under a phy:/extent VBD, or shared with a live or held VD) are never
 * taken; dead VDs that are held (leased by a live server) must be left out of `deadVds` by the
 * caller. Dead VDs may share extents (clones): each is taken and counted once. All or nothing: the
 * result is null when the space does not suffice.
 */
import assert from 'node:assert';

export interface Run {
  memberId: number;
  firstExtent: number;
  extentCount: number;
}

export interface DeadVd {
  vdId: number;
  expiresAt: number;
  /** The VD's runs in virtual order. */
  runs: Run[];
}

export interface AllocationRequest {
  sizeBytes: number;
  /** Extent size of each member by id. */
  extentSizes: ReadonlyMap<number, number>;
  /** Never-used runs. */
  freeRuns: readonly Run[];
  /** Dead VDs whose extents may be taken. */
  deadVds: readonly DeadVd[];
  /** Extents that must not be taken. */
  blocked: readonly Run[];
  /** Restrict to one member (null: any). */
  onMemberId: number | null;
}

export interface Allocation {
  /** The new extents in virtual order (adjacent pieces merged). */
  runs: Run[];
  /** Exact pieces taken from free runs. */
  fromFree: Run[];
  /** Pieces taken from each dead VD (ascending), and what that VD keeps (virtual order). */
  fromDead: { vdId: number; taken: Run[]; remaining: Run[] }[];
}

export function runEnd(run: Run): number {
  return run.firstExtent + run.extentCount;
}

function extentSizeOf(sizes: ReadonlyMap<number, number>, memberId: number): number {
  const size = sizes.get(memberId);
  assert(size !== undefined && size > 0, `allocator: unknown member ${memberId}`);
  return size;
}

/** `runs` minus every extent in `cut`, order kept (runs split where cut). */
export function subtractRuns(runs: readonly Run[], cut: readonly Run[]): Run[] {
  if (cut.length === 0) return runs.slice();
  const byMember = new Map<number, Run[]>();
  for (const c of cut) {
    const list = byMember.get(c.memberId) ?? [];
    list.push(c);
    byMember.set(c.memberId, list);
  }
  for (const list of byMember.values()) list.sort((a, b) => a.firstExtent - b.firstExtent);
  const out: Run[] = [];
  for (const run of runs) {
    let pieces: Run[] = [run];
    for (const c of byMember.get(run.memberId) ?? []) {
      if (c.firstExtent >= runEnd(run) || runEnd(c) <= run.firstExtent) continue;
      pieces = pieces.flatMap((p) => cutOne(p, c));
    }
    out.push(...pieces);
  }
  return out;
}

function cutOne(p: Run, c: Run): Run[] {
  const out: Run[] = [];
  if (c.firstExtent > p.firstExtent) {
    const end = Math.min(c.firstExtent, runEnd(p));
    const extentCount = end - p.firstExtent;
    out.push({ memberId: p.memberId, firstExtent: p.firstExtent, extentCount });
  }
  if (runEnd(c) < runEnd(p)) {
    const start = Math.max(runEnd(c), p.firstExtent);
    out.push({ memberId: p.memberId, firstExtent: start, extentCount: runEnd(p) - start });
  }
  return out;
}

/** Merges runs adjacent in order and on disk (same member, contiguous). */
export function mergeAdjacent(runs: readonly Run[]): Run[] {
  const out: Run[] = [];
  for (const run of runs) {
    const last = out[out.length - 1];
    if (last !== undefined && last.memberId === run.memberId && runEnd(last) === run.firstExtent) {
      out[out.length - 1] = { ...last, extentCount: last.extentCount + run.extentCount };
    } else {
      out.push({ ...run });
    }
  }
  return out;
}

/** Bytes of whole extents in `runs`. */
export function runsBytes(runs: readonly Run[], sizes: ReadonlyMap<number, number>): number {
  let total = 0;
  for (const run of runs) total += run.extentCount * extentSizeOf(sizes, run.memberId);
  return total;
}

/** A byte range of one member. */
export interface MemberRange {
  memberId: number;
  offset: number;
  length: number;
}

/**
 * The member byte ranges behind the virtual range [startVirtual, endVirtual) of a VD whose runs
 * (in virtual order) are `runs`; the range must lie within the runs.
 */
export function sliceRuns(runs: readonly Run[], sizes: ReadonlyMap<number, number>,
  startVirtual: number, endVirtual: number): MemberRange[] {
  assert(Number.isSafeInteger(startVirtual));
  assert(startVirtual >= 0);
  assert(startVirtual <= endVirtual);
  const ranges: MemberRange[] = [];
  let base = 0;
  for (const run of runs) {
    if (base >= endVirtual) break;
    const extentSize = extentSizeOf(sizes, run.memberId);
    const end = base + run.extentCount * extentSize;
    const from = Math.max(base, startVirtual);
    const to = Math.min(end, endVirtual);
    if (from < to) {
      const offset = run.firstExtent * extentSize + (from - base);
      ranges.push({ memberId: run.memberId, offset, length: to - from });
    }
    base = end;
  }
  assert(base >= endVirtual, 'sliceRuns: the range ends past the runs');
  return ranges;
}

/**
 * The virtual offset of byte `offset` of member `memberId` in a VD whose runs (in virtual order)
 * are `runs`, or null when no run holds that byte: the inverse of sliceRuns.
 */
export function virtualOffsetOf(runs: readonly Run[], sizes: ReadonlyMap<number, number>,
  memberId: number, offset: number): number | null {
  assert(Number.isSafeInteger(offset));
  assert(offset >= 0);
  let base = 0;
  for (const run of runs) {
    const extentSize = extentSizeOf(sizes, run.memberId);
    const start = run.firstExtent * extentSize;
    const length = run.extentCount * extentSize;
    if (run.memberId === memberId && start <= offset && offset < start + length) {
      return base + (offset - start);
    }
    base += length;
  }
  return null;
}

function eligible(runs: readonly Run[], request: AllocationRequest): Run[] {
  const onMember = request.onMemberId;
  const mine = onMember === null ? runs : runs.filter((r) => r.memberId === onMember);
  return subtractRuns(mine, request.blocked);
}

/** Bytes the request could get at most: [never-used, reclaimable]. */
export function availableBytes(request: AllocationRequest):
  { neverUsed: number; reclaimable: number } {
  const sizes = request.extentSizes;
  const neverUsed = runsBytes(eligible(request.freeRuns, request), sizes);
  // dead VDs may share extents (clones): each extent counts once
  let reclaimable = 0;
  const counted: Run[] = [];
  for (const vd of request.deadVds) {
    const mine = subtractRuns(eligible(vd.runs, request), counted);
    reclaimable += runsBytes(mine, sizes);
    counted.push(...mine);
  }
  return { neverUsed, reclaimable };
}

/** Best fit over never-used runs; returns the pieces taken and the bytes still needed. */
function takeFromFree(request: AllocationRequest, needBytes: number):
  { taken: Run[]; rest: number } {
  const sizes = request.extentSizes;
  const candidates = eligible(request.freeRuns, request)
    .map((run) => ({ run, bytes: run.extentCount * extentSizeOf(sizes, run.memberId) }));
  const taken: Run[] = [];
  let rest = needBytes;
  while (rest > 0 && candidates.length > 0) {
    let fit = -1;
    let largest = 0;
    for (let i = 0; i < candidates.length; i++) {
      const c = candidates[i]!;
      if (c.bytes >= rest && (fit < 0 || c.bytes < candidates[fit]!.bytes)) fit = i;
      if (c.bytes > candidates[largest]!.bytes) largest = i;
    }
    if (fit >= 0) {
      const { run } = candidates[fit]!;
      const count = Math.ceil(rest / extentSizeOf(sizes, run.memberId));
      taken.push({ memberId: run.memberId, firstExtent: run.firstExtent, extentCount: count });
      rest = 0;
    } else {
      const [c] = candidates.splice(largest, 1);
      taken.push({ ...c!.run });
      rest -= c!.bytes;
    }
  }
  return { taken, rest };
}

/** Takes from the tail of one dead VD; pieces come back in the VD's ascending order. */
function takeFromDeadTail(vd: DeadVd, request: AllocationRequest, needBytes: number):
  { taken: Run[]; rest: number } {
  const sizes = request.extentSizes;
  const usable = eligible(vd.runs, request);
  const reversed: Run[] = [];
  let rest = needBytes;
  for (let i = usable.length - 1; i >= 0 && rest > 0; i--) {
    const run = usable[i]!;
    const extentSize = extentSizeOf(sizes, run.memberId);
    const count = Math.min(run.extentCount, Math.ceil(rest / extentSize));
    reversed.push({ memberId: run.memberId, firstExtent: runEnd(run) - count, extentCount: count });
    rest -= count * extentSize;
  }
  return { taken: reversed.reverse(), rest: Math.max(rest, 0) };
}

/** Plans an allocation of whole extents covering sizeBytes, or null when space is short. */
export function allocate(request: AllocationRequest): Allocation | null {
  assert(Number.isSafeInteger(request.sizeBytes) && request.sizeBytes > 0);
  const free = takeFromFree(request, request.sizeBytes);
  const fromFree = free.taken;
  const pieces: Run[] = [...fromFree].sort((a, b) => a.memberId - b.memberId
    || a.firstExtent - b.firstExtent);
  const fromDead: Allocation['fromDead'] = [];
  let rest = free.rest;
  const order = [...request.deadVds].sort((a, b) => a.expiresAt - b.expiresAt || a.vdId - b.vdId);
  for (const vd of order) {
    if (rest <= 0) break;
    // an extent shared by dead VDs (clones) is taken once: later VDs see it as blocked
    const unlessTaken = { ...request, blocked: [...request.blocked, ...pieces] };
    const got = takeFromDeadTail(vd, unlessTaken, rest);
    if (got.taken.length === 0) continue;
    rest = got.rest;
    pieces.push(...got.taken);
    fromDead.push({ vdId: vd.vdId, taken: got.taken, remaining: subtractRuns(vd.runs, got.taken) });
  }
  if (rest > 0) return null;
  const runs = mergeAdjacent(pieces);
  assert(runsBytes(runs, request.extentSizes) >= request.sizeBytes);
  return { runs, fromFree, fromDead };
}

/** A sorted free list minus `taken`, merged: what stays free after an allocation. */
export function freeAfter(free: readonly Run[], taken: readonly Run[]): Run[] {
  const left = subtractRuns(free, taken);
  left.sort((a, b) => a.memberId - b.memberId || a.firstExtent - b.firstExtent);
  return mergeAdjacent(left);
}
