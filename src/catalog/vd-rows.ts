/**
 * catalog/vd-rows: reading VDs: their rows, runs and extents, their state, and the checks the
 * mutators share (the VD exists; it is alive; it is not being imported).
 *
 * Contract: nothing here writes or opens a transaction; each function reads in the caller's
 * transaction when there is one. A VD is dead when expires_at <= now (deleted: state 'deleted';
 * expired otherwise); its runs stay its own until the allocator takes them. Its state as shown:
 * dead, else 'importing' (a vd_imports row), else 'zeroing' (pending_zero rows), else 'live'.
 */
import type { Run } from '../allocator/allocator';
import { splitByOwners } from '../allocator/owners';
import { UsageError } from '../errors';
import { memberMap } from './members';
import {
  all, get, toRun, type CatalogContext, type CloneRow, type ImportRow, type MemberRow,
  type OwnerRow, type ReserveRow, type RunRow, type VdRow,
} from './statements';
import type { VdDetail, VdExtent, VdState, VdSummary } from './types';

/** The VDs with pending zeroing, and those being imported. */
export interface VdMarks {
  pending: Set<number>;
  importing: Set<number>;
}

export function isDead(row: VdRow, now: number): boolean {
  return row.expires_at !== null && row.expires_at <= now;
}

function stateOf(row: VdRow, now: number, marks: VdMarks): VdState {
  if (isDead(row, now)) return row.state === 'deleted' ? 'deleted' : 'expired';
  if (marks.importing.has(row.id)) return 'importing';
  return marks.pending.has(row.id) ? 'zeroing' : 'live';
}

/** Which VDs have pending zeroing and which are being imported, read once per answer. */
export function vdMarks(cx: CatalogContext): VdMarks {
  return {
    pending: new Set(all<{ vd_id: number }>(cx.st.pendingVds).map((r) => r.vd_id)),
    importing: new Set(all<ImportRow>(cx.st.imports).map((r) => r.vd_id)),
  };
}

export function isImporting(cx: CatalogContext, vdId: number): boolean {
  return get<ImportRow>(cx.st.importOf, vdId) !== undefined;
}

function summary(row: VdRow, allocated: number, now: number, marks: VdMarks): VdSummary {
  return {
    id: row.id, name: row.name, size: row.size_bytes, allocatedBytes: allocated,
    expiresAt: row.expires_at, createdAt: row.created_at, generation: row.generation,
    state: stateOf(row, now, marks),
  };
}

/** The row of VD `id`, dead or alive; ERR_VD_UNKNOWN. */
export function vdRow(cx: CatalogContext, op: string, id: number): VdRow {
  if (!Number.isSafeInteger(id)) throw new UsageError('ERR_VD_UNKNOWN', `${op}: no VD ${id}`);
  const row = get<VdRow>(cx.st.vd, id);
  if (row === undefined) throw new UsageError('ERR_VD_UNKNOWN', `${op}: no VD ${id}`);
  return row;
}

/** The row of a VD alive and not being imported; else ERR_VD_DELETED or ERR_VD_IMPORTING. */
export function liveVdRow(cx: CatalogContext, op: string, id: number, now: number): VdRow {
  const row = vdRow(cx, op, id);
  if (isDead(row, now)) {
    const how = row.state === 'deleted' ? 'deleted' : 'expired';
    throw new UsageError('ERR_VD_DELETED', `${op}: VD ${id} is ${how} (undelete it first)`);
  }
  refuseImporting(cx, op, id);
  return row;
}

export function refuseImporting(cx: CatalogContext, op: string, id: number): void {
  if (isImporting(cx, id)) {
    throw new UsageError('ERR_VD_IMPORTING', `${op}: VD ${id} is still being imported `
      + '(usable once its copy is complete)');
  }
}

export function runsOf(cx: CatalogContext, vdId: number): Run[] {
  return all<RunRow>(cx.st.runsOf, vdId).map(toRun);
}

/** The VD's extents in virtual order, as member byte ranges. */
export function extentsOf(
  cx: CatalogContext, vdId: number, members: Map<number, MemberRow> = memberMap(cx),
): VdExtent[] {
  return runsOf(cx, vdId).map((run) => {
    const m = members.get(run.memberId)!;
    return {
      memberId: m.id, path: m.path, offset: run.firstExtent * m.extent_size,
      length: run.extentCount * m.extent_size,
    };
  });
}

/** The VD with its extents and how much of them it shares; ERR_VD_UNKNOWN. */
export function detail(cx: CatalogContext, id: number): VdDetail {
  const row = vdRow(cx, 'show', id);
  const members = memberMap(cx);
  const extents = extentsOf(cx, id, members);
  const allocated = extents.reduce((sum, e) => sum + e.length, 0);
  const sizeOf = (memberId: number) => members.get(memberId)!.extent_size;
  const stored = all<OwnerRow>(cx.st.ownersAll).map((r) => ({ ...toRun(r), owners: r.owners }));
  const sharedBytes = splitByOwners(runsOf(cx, id), stored).filter((p) => p.owners > 1)
    .reduce((sum, p) => sum + p.extentCount * sizeOf(p.memberId), 0);
  const reserveBytes = all<ReserveRow>(cx.st.reserveOf, id)
    .reduce((sum, r) => sum + r.extent_count * sizeOf(r.member_id), 0);
  const originId = get<CloneRow>(cx.st.cloneOf, id)?.origin_id ?? null;
  return {
    ...summary(row, allocated, cx.now(), vdMarks(cx)), extents, sharedBytes,
    ownBytes: allocated - sharedBytes, reserveBytes, originId,
  };
}

export function listVds(cx: CatalogContext, options: { all?: boolean } = {}): VdSummary[] {
  const now = cx.now();
  const marks = vdMarks(cx);
  const allocated = new Map(all<{ vd_id: number; bytes: number }>(cx.st.allocatedAll)
    .map((r) => [r.vd_id, r.bytes]));
  const isShown = (row: VdRow) => options.all === true
    || (!isDead(row, now) && !marks.importing.has(row.id));
  return all<VdRow>(cx.st.vds).filter(isShown)
    .map((row) => summary(row, allocated.get(row.id) ?? 0, now, marks));
}

/** The VD without its extents. */
export function summaryOf(cx: CatalogContext, id: number): VdSummary {
  const row = vdRow(cx, 'show', id);
  const allocated = extentsOf(cx, id).reduce((sum, e) => sum + e.length, 0);
  return summary(row, allocated, cx.now(), vdMarks(cx));
}

