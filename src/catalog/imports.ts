/**
 * catalog/imports: `xvd import`'s VDs, all or nothing.
 *
 * Contract: beginImport is one IMMEDIATE transaction that allocates the VD and records, with
 * it, that this process (pid, start time and host) is importing it; such a VD is
 * not listed, attached, leased, enlarged or served (vd-rows.ts refuses it). completeImport, one
 * transaction, flips it live with the expiry asked for, after the importer made its copy
 * durable. An import whose process is gone is abandoned: cleanAbandonedImports (every CLI
 * command but `check` runs it first) or abandonImport (the copy failed) gives its extents back
 * to the free runs and removes the VD nobody saw; an import by a process of another host (a
 * catalog shared by many hosts) is never judged gone from this one. Only the owning process
 * completes or abandons its import (ERR_VD_IMPORT_LOST otherwise).
 */
import { XvdError } from '../errors';
import { freeRuns } from './allocation';
import { isImporterAlive, isOnThisHost, processStartTime } from './liveness';
import { all, expiryAt, get, tx, type CatalogContext, type ImportRow } from './statements';
import type { CreateVdInput, VdDetail, VdSummary } from './types';
import { detail, runsOf, summaryOf, vdRow } from './vd-rows';
import { insertVd } from './vds';

/**
 * One transaction: the VD row, its extents, their pending zeroing and the import row naming
 * this process as the owner. The VD carries no expiry while importing (nothing may reclaim
 * it); completeImport applies the one asked for.
 */
export function beginImport(cx: CatalogContext, input: CreateVdInput): VdDetail {
  return detail(cx, insertVd(cx, input, true));
}

/** True while VD `vdId` is being imported by this process. */
export function isImportOwned(cx: CatalogContext, vdId: number): boolean {
  return isMine(get<ImportRow>(cx.st.importOf, vdId));
}

function isMine(row: ImportRow | undefined): row is ImportRow {
  return row !== undefined && row.pid === process.pid
    && row.pid_start_time === processStartTime(process.pid)
    && isOnThisHost(row.host);
}

/** The import row of vdId when this process owns it; ERR_VD_IMPORT_LOST otherwise. */
function ownImportRow(cx: CatalogContext, op: string, vdId: number): ImportRow {
  const row = get<ImportRow>(cx.st.importOf, vdId);
  if (!isMine(row)) {
    throw new XvdError('ERR_VD_IMPORT_LOST', `${op}: VD ${vdId} is not being imported by this `
      + 'process (its import was abandoned and cleaned up, or never began)');
  }
  return row;
}

export function completeImport(cx: CatalogContext, vdId: number): VdSummary {
  tx(cx, () => {
    const row = ownImportRow(cx, 'import', vdId);
    vdRow(cx, 'import', vdId);
    cx.st.deleteImport.run(vdId);
    cx.st.setVdExpiry.run(expiryAt(row.expiry_seconds, cx.now()), 'active', vdId);
  });
  return summaryOf(cx, vdId);
}

export function abandonImport(cx: CatalogContext, vdId: number): void {
  tx(cx, () => {
    ownImportRow(cx, 'import', vdId);
    freeImport(cx, vdId);
  });
}

export function cleanAbandonedImports(cx: CatalogContext): number[] {
  const isAbandoned = (row: ImportRow): boolean => !isImporterAlive(row);
  if (!all<ImportRow>(cx.st.imports).some(isAbandoned)) return [];
  return tx(cx, () => {
    const abandoned = all<ImportRow>(cx.st.imports).filter(isAbandoned);
    for (const row of abandoned) freeImport(cx, row.vd_id);
    return abandoned.map((row) => row.vd_id);
  });
}

/**
 * Ends an import that will not complete (in the caller's transaction): its extents go back to
 * the free runs (zeroed on reuse like any others), its pending zeroing and import row go, and
 * so does the VD row, which nobody ever saw. When another row names it (extents it took from
 * a dead VD are recorded as that VD's losses), it stays as a deleted VD without extents, which
 * undelete refuses.
 */
function freeImport(cx: CatalogContext, vdId: number): void {
  freeRuns(cx, runsOf(cx, vdId));
  cx.st.deleteRunsOf.run(vdId);
  cx.st.deletePendingOf.run(vdId);
  cx.st.deleteImport.run(vdId);
  if (get<{ n: number }>(cx.st.vdReferences, { id: vdId })!.n === 0) {
    cx.st.deleteVdRow.run(vdId);
  } else {
    cx.st.setVdExpiry.run(cx.now(), 'deleted', vdId);
  }
}

