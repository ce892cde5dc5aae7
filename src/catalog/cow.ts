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
import { mergeAdjacent, runEnd, subtractRuns, type Run } from '../allocator/allocator';
import { normalRuns } from '../allocator/owners';
import { XvdError } from '../errors';
import { LIMITS } from '../limits';
import { takeExtents } from './allocation';
import { holdsLeases } from './leases';
import { extentSizesOf, memberMap } from './members';
import { changeOwners, ownersAt, reserveRunsOf } from './owners';
import {
  get, invalid, tx, type CatalogContext, type ServerRow,
} from './statements';
import type { CowExtents, CowRemap } from './types';
import { liveVdRow, runsOf, vdRow } from './vd-rows';

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
  runs: Run[];
  olds: Run[];
  used: Run[];
}

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
  const plan: RemapPlan = { runs: [], olds: [], used: [] };
  let base = 0;
  let i = 0;
  for (const run of runs) {
    const size = sizes.get(run.memberId)!;
    const end = base + run.extentCount * size;
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
    base = end;
  }
  if (i < sorted.length) notShared(sorted[i]!, 'lies past the VD\'s extents');
  return plan;
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
    const plan = planRemaps(vdId, runsOf(cx, vdId), extentSizesOf(cx), remaps,
      (memberId, extent) => ownersAt(cx, memberId, extent), reserve);
    cx.st.deleteRunsOf.run(vdId);
    mergeAdjacent(plan.runs).forEach((r, seq) => {
      cx.st.insertRun.run(vdId, seq, r.memberId, r.firstExtent, r.extentCount);
    });
    cx.st.deleteReserveOf.run(vdId);
    for (const r of normalRuns(subtractRuns(reserve, plan.used))) {
      cx.st.insertReserve.run(vdId, r.memberId, r.firstExtent, r.extentCount);
    }
    changeOwners(cx, plan.olds, -1);
  });
}
