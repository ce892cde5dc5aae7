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
 * one whole extent of the VD's map (virtualOffset, length = its extent size; ERR_COW_NOT_SHARED
 * otherwise) and an extent of the VD's reserve of that size (ERR_COW_NOT_RESERVED otherwise);
 * the map takes the new extent, the reserve loses it, the old extent loses an owner. The old
 * extent need not be shared any more: the origin and a clone may both copy one extent before
 * either commits, and the second to commit finds itself its only owner; the old extent then has
 * no owner left and goes back to the free runs (the server no longer writes it: it never
 * writes a shared extent, and it remapped this one). A clone of the VD made after this
 * server's lease (it has not switched yet: the server commits its pending remaps during the
 * switch, before it records the new generation) takes the same remaps where it still maps the
 * same old extents, so it is a copy of the VD as of the switch, acknowledged writes included;
 * the new extent is then shared by the VD and those clones. The VD's generation is not changed
 * (the server already serves the new map). A dead VD still leased (being drained) may commit,
 * so that its data stays whole for an undelete; it may not reserve.
 */
import assert from 'node:assert';
import { subtractRuns } from '../allocator/allocator';
import { normalRuns } from '../allocator/owners';
import { XvdError } from '../errors';
import { LIMITS } from '../limits';
import { takeExtents } from './allocation';
import { holdsLeases } from './leases';
import { extentSizesOf, memberMap } from './members';
import { changeOwners, dropOwners, ownersAt, reserveRunsOf } from './owners';
import {
  checkRemap, count, isReserved, planRemaps, sameRun, writeRemappedRuns, type Counted,
} from './remaps';
import {
  all, get, invalid, toRun, tx, type CatalogContext, type CloneRow, type RunRow,
  type ServerRow,
} from './statements';
import type { CowExtents, CowRemap } from './types';
import { liveVdRow, vdRow } from './vd-rows';

/** The generation of the server's live lease on the VD; ERR_COW_NO_LEASE without one. */
function requireLease(cx: CatalogContext, op: string, serverId: number, vdId: number): number {
  const lease = get<{ generation: number }>(cx.st.lease, serverId, vdId);
  const server = get<ServerRow>(cx.st.server, serverId);
  if (lease === undefined || server === undefined || !holdsLeases(server, cx.now())) {
    throw new XvdError('ERR_COW_NO_LEASE', `${op}: server ${serverId} holds no live lease `
      + `on VD ${vdId}`);
  }
  return lease.generation;
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

/** The clones of VD vdId this server has not switched to yet (made after its lease). */
function unswitchedClones(cx: CatalogContext, vdId: number, generation: number): number[] {
  return all<CloneRow>(cx.st.clonesOfOrigin, vdId)
    .filter((c) => c.origin_generation > generation).map((c) => c.vd_id);
}

/** Owner counts after the remaps: old extents lose their leavers, new ones gain mappers. */
function settleOwners(cx: CatalogContext, leaving: Map<string, Counted>,
  gaining: Map<string, Counted>): void {
  for (const { run, n } of leaving.values()) {
    const count = ownersAt(cx, run.memberId, run.firstExtent);
    assert(count >= n, 'commit: more VDs leave an extent than map it');
    if (count > n) changeOwners(cx, [run], -n);
    else dropOwners(cx, [run]);
  }
  for (const { run, n } of gaining.values()) changeOwners(cx, [run], n);
}

export function commitCowRemaps(
  cx: CatalogContext, serverId: number, vdId: number, remaps: readonly CowRemap[],
): void {
  remaps.forEach(checkRemap);
  tx(cx, () => {
    const generation = requireLease(cx, 'commit', serverId, vdId);
    vdRow(cx, 'commit', vdId);
    if (remaps.length === 0) return;
    const sizes = extentSizesOf(cx);
    const reserve = reserveRunsOf(cx, vdId);
    const rows = all<RunRow>(cx.st.runsOf, vdId);
    const plan = planRemaps(vdId, rows.map(toRun), sizes, remaps, true,
      (m, size, used) => isReserved(vdId, reserve, used, sizes, m, size));
    writeRemappedRuns(cx, vdId, rows, plan);
    cx.st.deleteReserveOf.run(vdId);
    for (const r of normalRuns(subtractRuns(reserve, plan.used))) {
      cx.st.insertReserve.run(vdId, r.memberId, r.firstExtent, r.extentCount);
    }
    const leaving = new Map<string, Counted>();
    const gaining = new Map<string, Counted>();
    const oldAt = new Map(plan.applied.map((a) => [a.remap.virtualOffset, a.old]));
    plan.applied.forEach((a) => count(leaving, a.old));
    for (const cloneId of unswitchedClones(cx, vdId, generation)) {
      // acknowledged before the switch: the clone, a copy as of the switch, gets the remap too
      const cloneRows = all<RunRow>(cx.st.runsOf, cloneId);
      const clonePlan = planRemaps(cloneId, cloneRows.map(toRun), sizes, remaps, false,
        (m, _size, _used, old) => sameRun(oldAt.get(m.virtualOffset), old));
      writeRemappedRuns(cx, cloneId, cloneRows, clonePlan);
      for (const a of clonePlan.applied) {
        count(leaving, a.old);
        count(gaining, a.taken);
      }
    }
    settleOwners(cx, leaving, gaining);
  });
}
