/**
 * catalog/vds: the life of a virtual disk: create, enlarge (grow), refresh its expiry, delete
 * (expire now), undelete, and its pending zeroing rows.
 *
 * Contract: each mutator is one IMMEDIATE transaction that reads what it decides on (the VD's
 * row and runs, free space, leases, VBDs) under the write lock. A VD is created with whole
 * extents for its size (src/catalog/allocation.ts); enlarge appends extents in virtual order and
 * never shrinks; with zeroing (the default) every byte that becomes part of the VD, new extents
 * and the slack of its last extent up to the new size, is recorded as pending zeroing in the
 * same transaction (zeroPending in ./zeroing.ts does the I/O; completeZeroing clears the rows
 * and bumps the generation). Delete sets expires_at = now; undelete brings back a dead VD none
 * of whose extents were taken, after judging the VBDs added meanwhile by the sharing rules.
 */
import os from 'node:os';
import assert from 'node:assert';
import { runsBytes, sliceRuns } from '../allocator/allocator';
import type { ExpertLevel } from '../allocator/sharing';
import { UsageError } from '../errors';
import { LIMITS } from '../limits';
import { allocateFor, recordPending } from './allocation';
import { processStartTime } from './liveness';
import { extentSizesOf, resolveMemberId } from './members';
import {
  all, checkSeconds, checkSize, expiryAt, get, invalid, tx, type CatalogContext, type FreeRow,
  type PendingRow,
} from './statements';
import type { CreateVdInput, MemberKind, PendingZero, VdDetail, VdSummary } from './types';
import { checkSharing, vbdHolders, vdHolder } from './vbds';
import { detail, isDead, liveVdRow, refuseImporting, runsOf, summaryOf, vdRow } from './vd-rows';

export function createVd(cx: CatalogContext, input: CreateVdInput): VdDetail {
  return detail(cx, insertVd(cx, input, false));
}

/**
 * One transaction: the VD row, its extents and their pending zeroing; for an import also the
 * import row naming this process as the owner, and no expiry yet. Returns the new id.
 */
export function insertVd(cx: CatalogContext, input: CreateVdInput, isImport: boolean): number {
  checkSize('create', input.size);
  if (input.expiresInS !== undefined) checkSeconds('create', input.expiresInS);
  const name = input.name ?? null;
  if (name !== null && (typeof name !== 'string' || name.length > LIMITS.vdNameLengthMax)) {
    invalid(`create: the name must be at most ${LIMITS.vdNameLengthMax} characters`);
  }
  return tx(cx, () => {
    const now = cx.now();
    const onMemberId = resolveMemberId(cx, 'create', input.onMember);
    const expiresAt = isImport ? null : expiryAt(input.expiresInS, now);
    const info = cx.st.insertVd.run(name, input.size, expiresAt, now);
    const vdId = Number(info.lastInsertRowid);
    allocateFor(cx, 'create', vdId, input.size, onMemberId, input.zero !== false, now);
    if (isImport) {
      const start = processStartTime(process.pid);
      assert(start !== '', 'import: this process has no start time in /proc');
      cx.st.insertImport.run(vdId, process.pid, start, now, input.expiresInS ?? 0, os.hostname());
    }
    return vdId;
  });
}

export function enlargeVd(
  cx: CatalogContext, id: number, newSize: number, options: { zero?: boolean } = {},
): VdDetail {
  checkSize('enlarge', newSize);
  return enlargeTo(cx, id, () => newSize, options.zero !== false);
}

export function growVd(
  cx: CatalogContext, id: number, addBytes: number, options: { zero?: boolean } = {},
): VdDetail {
  if (!Number.isSafeInteger(addBytes) || addBytes < 0) {
    invalid(`enlarge: the growth must be a whole number of bytes >= 0: ${addBytes}`);
  }
  return enlargeTo(cx, id, (size) => size + addBytes, options.zero !== false);
}

/** One transaction: the new size is computed from the size read under the write lock. */
function enlargeTo(
  cx: CatalogContext, id: number, sizeFrom: (size: number) => number, isZero: boolean,
): VdDetail {
  tx(cx, () => {
    const now = cx.now();
    const row = liveVdRow(cx, 'enlarge', id, now);
    const newSize = sizeFrom(row.size_bytes);
    checkSize('enlarge', newSize);
    if (newSize < row.size_bytes) {
      throw new UsageError('ERR_VD_SHRINK', `enlarge: VD ${id}: ${newSize} bytes is smaller `
        + `than its size ${row.size_bytes} (xvd never shrinks a disk)`);
    }
    const sizes = extentSizesOf(cx);
    const runs = runsOf(cx, id);
    const allocated = runsBytes(runs, sizes);
    const slackEnd = Math.min(newSize, allocated);
    if (isZero && slackEnd > row.size_bytes) {
      // the slack of the last extent becomes visible: it holds whatever was there when the
      // extent was taken (--no-zero) and must read as zero like the new extents (invariant 3)
      recordPending(cx, id, sliceRuns(runs, sizes, row.size_bytes, slackEnd));
    }
    if (newSize > allocated) {
      allocateFor(cx, 'enlarge', id, newSize - allocated, null, isZero, now);
    }
    cx.st.setVdSize.run(newSize, id);
  });
  return detail(cx, id);
}

export function refreshVd(cx: CatalogContext, id: number, expiresInS: number): VdSummary {
  checkSeconds('refresh', expiresInS);
  tx(cx, () => {
    const now = cx.now();
    liveVdRow(cx, 'refresh', id, now);
    cx.st.setVdExpiry.run(expiryAt(expiresInS, now), 'active', id);
  });
  return summaryOf(cx, id);
}

export function deleteVd(cx: CatalogContext, id: number): VdSummary {
  tx(cx, () => {
    const now = cx.now();
    liveVdRow(cx, 'delete', id, now);
    cx.st.setVdExpiry.run(now, 'deleted', id);
  });
  return summaryOf(cx, id);
}

export function undeleteVd(
  cx: CatalogContext, id: number, expiresInS = 0, options: { expert?: ExpertLevel } = {},
): VdSummary {
  checkSeconds('undelete', expiresInS);
  const expert = options.expert ?? 0;
  if (expert !== 0 && expert !== 1 && expert !== 2) {
    invalid(`undelete: the expert level must be 0, 1 or 2: ${String(expert)}`);
  }
  tx(cx, () => {
    const now = cx.now();
    const row = vdRow(cx, 'undelete', id);
    refuseImporting(cx, 'undelete', id);
    const losses = all<FreeRow & { path: string; taken_by: number }>(cx.st.lossesOf, id);
    if (losses.length > 0) {
      const shown = losses.slice(0, 4).map((l) => `extents [${l.first_extent}, `
        + `${l.first_extent + l.extent_count}) of ${l.path} went to VD ${l.taken_by}`);
      const more = losses.length > 4 ? `, and ${losses.length - 4} more runs` : '';
      throw new UsageError('ERR_VD_REUSED', `undelete: VD ${id} cannot come back: `
        + `${shown.join('; ')}${more}`);
    }
    const sizes = extentSizesOf(cx);
    if (runsBytes(runsOf(cx, id), sizes) < row.size_bytes) {
      throw new UsageError('ERR_VD_REUSED', `undelete: VD ${id} cannot come back: it holds `
        + 'fewer extents than its size (an abandoned import, whose extents were freed)');
    }
    if (isDead(row, now)) {
      // VBDs added while it was dead were judged without it: judge them now, as vbd add would
      const mine = { ...vdHolder(cx, row.id), label: `VD ${row.id}` };
      checkSharing('undelete', mine, vbdHolders(cx), expert);
      cx.st.setVdUndeleteExpert.run(expert, id);
    }
    cx.st.setVdExpiry.run(expiryAt(expiresInS, now), 'active', id);
  });
  return summaryOf(cx, id);
}

// --- zeroing rows ---

export function pendingZeroing(cx: CatalogContext): PendingZero[] {
  type Row = PendingRow & { path: string; kind: MemberKind };
  return all<Row>(cx.st.pendingAll).map((r) => ({
    vdId: r.vd_id, memberId: r.member_id, path: r.path, kind: r.kind,
    offset: r.offset, length: r.length,
  }));
}

export function hasPendingZero(cx: CatalogContext, vdId: number): boolean {
  return get<{ n: number }>(cx.st.pendingOf, vdId)!.n > 0;
}

export function completeZeroing(cx: CatalogContext, vdId: number): void {
  tx(cx, () => {
    vdRow(cx, 'zero', vdId);
    cx.st.deletePendingOf.run(vdId);
    cx.st.bumpVd.run(vdId);
  });
}
