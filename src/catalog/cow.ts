/**
 * catalog/cow: what a server doing copy-on-write asks of the catalog (issue 18): reserves of
 * whole extents taken ahead, and the remaps that replace shared extents of a VD's map with
 * extents of its reserve.
 *
 * Contract: both calls are one IMMEDIATE transaction each, and both need the server to hold a
 * live lease on the VD (ERR_COW_NO_LEASE otherwise: a lease row of a running server).
 * reserveCowExtents takes `count` whole extents of one extent size for a live VD, as an
 * allocation does (free runs first, then dead VDs not held; never an extent a live VD maps),
 * unzeroed (the server copies whole extents into them before any is mapped), and records them
 * as the VD's reserve. commitCowRemaps applies a batch of remaps at once, or none: each names
 * one whole extent of the VD's map (virtualOffset, length = its extent size) whose owner count
 * is 2 or more (ERR_COW_NOT_SHARED otherwise), and an extent of the VD's reserve of that size
 * (ERR_COW_NOT_RESERVED otherwise); the map takes the new extent, the reserve loses it, the old
 * extent loses an owner. The VD's generation is not changed (the server already serves the new
 * map). A dead VD still leased (being drained) may commit, so that its data stays whole for an
 * undelete; it may not reserve.
 */
import assert from 'node:assert';
import { mergeAdjacent, runEnd, subtractRuns, type Run } from '../allocator/allocator';
import { normalRuns } from '../allocator/owners';
import { XvdError } from '../errors';
import { LIMITS } from '../limits';
import { takeExtents } from './allocation';
import { holdsLeases } from './leases';
import { extentSizesOf, memberMap } from './members';
import { changeOwners, ownersAt, reserveRunsOf } from './owners';
import {
  all, get, invalid, toRun, tx, type CatalogContext, type RunRow, type ServerRow,
} from './statements';
import type { CowExtents, CowRemap } from './types';
import { liveVdRow, vdRow } from './vd-rows';

function requireLease(cx: CatalogContext, op: string, serverId: number, vdId: number): void {
  const lease = get<{ generation: number }>(cx.st.lease, serverId, vdId);
  const server = get<ServerRow>(cx.st.server, serverId);
  if (lease === undefined || server === undefined || !holdsLeases(server, cx.now())) {
    throw new XvdError('ERR_COW_NO_LEASE', `${op}: server ${serverId} holds no live lease `
      + `on VD ${vdId}`);
  }
}

export function reserveCowExtents(
  cx: CatalogContext, serverId: number, vdId: number, extentSize: number, count: number,
): CowExtents[] {
  if (!Number.isSafeInteger(count) || count < 1 || count > LIMITS.cowReserveExtentsMax) {
    invalid(`reserve: the count must be 1 to ${LIMITS.cowReserveExtentsMax}: ${count}`);
  }
  if (!Number.isSafeInteger(extentSize) || extentSize <= 0) {
    invalid(`reserve: bad extent size ${extentSize}`);
  }
  return tx(cx, () => {
    const now = cx.now();
    requireLease(cx, 'reserve', serverId, vdId);
    liveVdRow(cx, 'reserve', vdId, now);
    const plan = takeExtents(cx, 'reserve', vdId, count * extentSize, null, now, extentSize);
    const members = memberMap(cx);
    for (const r of plan.runs) {
      cx.st.insertReserve.run(vdId, r.memberId, r.firstExtent, r.extentCount);
    }
    return plan.runs.map((r) => ({
      memberId: r.memberId, path: members.get(r.memberId)!.path, firstExtent: r.firstExtent,
      extentCount: r.extentCount, extentSize,
    }));
  });
}

function isInRuns(runs: readonly Run[], memberId: number, extent: number): boolean {
  return runs.some((r) => r.memberId === memberId && r.firstExtent <= extent
    && extent < runEnd(r));
}

interface RemapPlan {
  /** the VD's new runs in virtual order */
  runs: Run[];
  /** the index of each old run a remap cut, and the pieces that replace it */
  cut: Map<number, Run[]>;
  olds: Run[];
  used: Run[];
}

/**
 * Seq numbers of a map that commits rewrote are this far apart, so that the next commits
 * insert their pieces between two runs (a local write) instead of renumbering the whole map.
 */
const SEQ_STRIDE = 1024;

function checkRemap(remap: CowRemap): void {
  for (const key of ['virtualOffset', 'length', 'memberId', 'firstExtent'] as const) {
    const value = remap[key];
    if (!Number.isSafeInteger(value) || value < 0) invalid(`commit: bad remap ${key}: ${value}`);
  }
}

/** The VD's runs with each remap applied, walked once in virtual order. */
function planRemaps(
  vdId: number, runs: readonly Run[], sizes: ReadonlyMap<number, number>,
  remaps: readonly CowRemap[], owners: (memberId: number, extent: number) => number,
  reserve: readonly Run[],
): RemapPlan {
  const sorted = [...remaps].sort((a, b) => a.virtualOffset - b.virtualOffset);
  const notShared = (m: CowRemap, why: string): never => {
    throw new XvdError('ERR_COW_NOT_SHARED', `commit: VD ${vdId}: the remap at virtual offset `
      + `${m.virtualOffset} (${m.length} bytes) ${why}`);
  };
  const plan: RemapPlan = { runs: [], cut: new Map(), olds: [], used: [] };
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
      if (delta % size !== 0 || m.length !== size) notShared(m, 'is not one whole extent');
      const extent = run.firstExtent + delta / size;
      if (extent < at) notShared(m, 'remaps an extent twice');
      if (owners(run.memberId, extent) < 2) notShared(m, 'names an extent not shared');
      const isReserved = sizes.get(m.memberId) === size
        && isInRuns(reserve, m.memberId, m.firstExtent)
        && !isInRuns(plan.used, m.memberId, m.firstExtent);
      if (!isReserved) {
        throw new XvdError('ERR_COW_NOT_RESERVED', `commit: VD ${vdId}: extent ${m.firstExtent} `
          + `of member ${m.memberId} is not in its reserve (of ${size}-byte extents)`);
      }
      if (extent > at) plan.runs.push({ memberId: run.memberId, firstExtent: at,
        extentCount: extent - at });
      const taken = { memberId: m.memberId, firstExtent: m.firstExtent, extentCount: 1 };
      plan.runs.push(taken);
      plan.used.push(taken);
      plan.olds.push({ memberId: run.memberId, firstExtent: extent, extentCount: 1 });
      at = extent + 1;
    }
    if (runEnd(run) > at) {
      plan.runs.push({ memberId: run.memberId, firstExtent: at, extentCount: runEnd(run) - at });
    }
    if (at !== run.firstExtent) plan.cut.set(index, plan.runs.slice(first));
    base = end;
  }
  if (i < sorted.length) notShared(sorted[i]!, 'lies past the VD\'s extents');
  return plan;
}

/**
 * Writes the cut runs in place: the first piece of each takes its run's seq, the others seqs
 * between it and the next run's; when a gap is too narrow, the whole map is written again
 * with seqs SEQ_STRIDE apart. A commit thus writes O(remaps) rows, not O(runs of the map).
 */
function writeRemappedRuns(
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

export function commitCowRemaps(
  cx: CatalogContext, serverId: number, vdId: number, remaps: readonly CowRemap[],
): void {
  remaps.forEach(checkRemap);
  tx(cx, () => {
    requireLease(cx, 'commit', serverId, vdId);
    vdRow(cx, 'commit', vdId);
    if (remaps.length === 0) return;
    const reserve = reserveRunsOf(cx, vdId);
    const rows = all<RunRow>(cx.st.runsOf, vdId);
    const plan = planRemaps(vdId, rows.map(toRun), extentSizesOf(cx), remaps,
      (memberId, extent) => ownersAt(cx, memberId, extent), reserve);
    writeRemappedRuns(cx, vdId, rows, plan);
    cx.st.deleteReserveOf.run(vdId);
    for (const r of normalRuns(subtractRuns(reserve, plan.used))) {
      cx.st.insertReserve.run(vdId, r.memberId, r.firstExtent, r.extentCount);
    }
    changeOwners(cx, plan.olds, -1);
  });
}
