/**
 * catalog/vbds: virtual block devices (domain, device, mode, source), their resolution into the
 * byte ranges an export serves, and the sharing check run when one is added.
 *
 * Contract: addVbd and removeVbd are one IMMEDIATE transaction each; resolveVbd reads in one
 * deferred transaction (one consistent snapshot). A new VBD is judged against every current
 * holder of bytes (each VBD, and each live VD as a writer on its extents) by the pure rules of
 * src/allocator/sharing.ts, at the expert level given (default 0), and refused with
 * ERR_VBD_SHARING when they refuse it. A VBD of a VD resolves to the VD's extents trimmed to its
 * size; it dangles (served by nobody) while the VD is dead, importing or pending zeroing from
 * byte 0, and is served only up to its first pending byte otherwise. A clone dangles too until
 * the servers of its origin switched to copy-on-write (./clones.ts); a VD's ranges are cut where
 * sharing changes and its shared pieces marked `shared`.
 */
import assert from 'node:assert';
import path from 'node:path';
import { virtualOffsetOf } from '../allocator/allocator';
import { isRbdImagePath } from '../backing/rbd-backing';
import {
  describeConflict, findSharingConflict, type ExpertLevel, type Holder,
} from '../allocator/sharing';
import { UsageError } from '../errors';
import { LIMITS } from '../limits';
import { extentSizesOf, memberMap } from './members';
import {
  all, checkSize, get, invalid, tx, type CatalogContext, type PendingRow,
  type RangeRow, type VbdRow, type VdRow,
} from './statements';
import { isCloneSwitched } from './clones';
import { ownedPieces } from './owners';
import type {
  AddVbdInput, ByteRange, ResolvedExtent, ResolvedVbd, Vbd, VbdSource,
} from './types';
import { extentsOf, isDead, isImporting, liveVdRow, runsOf } from './vd-rows';

/**
 * VBD paths are compared as strings (sharing, allocation blocking, check), so they must be in
 * the canonical form the CLI resolves (src/cli/commands/vbd.ts); at least they are absolute,
 * or an RBD member's `rbd:POOL/IMAGE`.
 */
function checkVbdPath(file: string): void {
  if (typeof file !== 'string' || !(path.isAbsolute(file) || isRbdImagePath(file))) {
    invalid(`vbd add: the path must be absolute (resolved): '${String(file)}'`);
  }
}

function sourceText(source: VbdSource): string {
  if (source.kind === 'vd') return `vd:${source.vdId}`;
  if (source.kind === 'phy') return `phy:${source.path}`;
  return 'extents:' + source.extents.map((e) => `${e.path}:${e.offset}+${e.length}`).join(',');
}

/** The byte ranges a VBD maps, in virtual order. */
export function rangesOfVbd(cx: CatalogContext, vbd: VbdRow): ByteRange[] {
  if (vbd.source_kind === 'phy') {
    return [{ path: vbd.phy_path!, offset: 0, length: vbd.phy_size! }];
  }
  if (vbd.source_kind === 'extents') {
    return all<RangeRow>(cx.st.rangesOf, vbd.id)
      .map((r) => ({ path: r.path, offset: r.offset, length: r.length }));
  }
  return extentsOf(cx, vbd.vd_id!, memberMap(cx))
    .map((e) => ({ path: e.path, offset: e.offset, length: e.length }));
}

function sourceOf(cx: CatalogContext, vbd: VbdRow): VbdSource {
  if (vbd.source_kind === 'vd') return { kind: 'vd', vdId: vbd.vd_id! };
  if (vbd.source_kind === 'phy') {
    return { kind: 'phy', path: vbd.phy_path!, sizeBytes: vbd.phy_size! };
  }
  return { kind: 'extents', extents: rangesOfVbd(cx, vbd) };
}

function toVbd(cx: CatalogContext, row: VbdRow): Vbd {
  const source = sourceOf(cx, row);
  return {
    domain: row.domain, device: row.device, mode: row.mode, source,
    sourceText: sourceText(source), createdAt: row.created_at,
  };
}

function checkVbdInput(input: AddVbdInput): void {
  const { domain, device, mode, source } = input;
  if (!Number.isSafeInteger(domain) || domain < 0) invalid(`vbd add: bad domain: ${domain}`);
  if (typeof device !== 'string' || device === '' || device.length > LIMITS.deviceNameLengthMax
    || device.includes('/')) {
    invalid(`vbd add: bad device name: ${device}`);
  }
  if (mode !== 'r' && mode !== 'w') invalid(`vbd add: mode must be r or w: ${String(mode)}`);
  if (source.kind === 'phy') {
    checkVbdPath(source.path);
    checkSize('vbd add', source.sizeBytes);
  } else if (source.kind === 'extents') {
    if (source.extents.length === 0 || source.extents.length > LIMITS.catalogVbdRangesMax) {
      invalid(`vbd add: an extent list holds 1 to ${LIMITS.catalogVbdRangesMax} ranges`);
    }
    for (const e of source.extents) {
      checkVbdPath(e.path);
      if (!Number.isSafeInteger(e.offset) || e.offset < 0) {
        invalid(`vbd add: bad offset ${e.offset}`);
      }
      checkSize('vbd add', e.length);
    }
  }
}

/** Every current range holder: VBDs, and for each member the live VDs on it (writers). */
function holders(cx: CatalogContext, now: number): Holder[] {
  const holders = vbdHolders(cx);
  const members = memberMap(cx);
  for (const row of all<VdRow>(cx.st.vds)) {
    if (!isDead(row, now)) holders.push(vdHolder(cx, row.id, members));
  }
  return holders;
}

/** The VBDs as holders. */
export function vbdHolders(cx: CatalogContext): Holder[] {
  return all<VbdRow>(cx.st.vbds).map((vbd) => ({
    label: `VBD ${vbd.domain}/${vbd.device} (${vbd.mode})`, kind: 'vbd', mode: vbd.mode,
    vdId: vbd.vd_id, ranges: rangesOfVbd(cx, vbd),
  }));
}

/** A VD as a holder: a writer on all its extents. */
export function vdHolder(cx: CatalogContext, vdId: number, members = memberMap(cx)): Holder {
  return {
    label: `pool VD ${vdId}`, kind: 'vd', mode: 'w', vdId,
    ranges: extentsOf(cx, vdId, members)
      .map((e) => ({ path: e.path, offset: e.offset, length: e.length })),
  };
}

/** Refuses (ERR_VBD_SHARING) what the sharing rules (allocator/sharing.ts) refuse. */
export function checkSharing(
  op: string, mine: Holder, others: Holder[], expert: ExpertLevel,
): void {
  const conflict = findSharingConflict(mine, others, expert);
  if (conflict === null) return;
  throw new UsageError('ERR_VBD_SHARING', describeConflict(op, mine, conflict, expert));
}

export function addVbd(cx: CatalogContext, input: AddVbdInput): Vbd {
  checkVbdInput(input);
  const { domain, device, mode, source } = input;
  return tx(cx, () => {
    const now = cx.now();
    if (get<VbdRow>(cx.st.vbd, domain, device) !== undefined) {
      throw new UsageError('ERR_VBD_EXISTS', `vbd add: domain ${domain} already has ${device}`);
    }
    let ranges: ByteRange[];
    let vdId: number | null = null;
    if (source.kind === 'vd') {
      liveVdRow(cx, 'vbd add', source.vdId, now);
      vdId = source.vdId;
      ranges = extentsOf(cx, vdId, memberMap(cx))
        .map((e) => ({ path: e.path, offset: e.offset, length: e.length }));
    } else if (source.kind === 'phy') {
      ranges = [{ path: source.path, offset: 0, length: source.sizeBytes }];
    } else {
      ranges = source.extents.map((e) => ({ ...e }));
    }
    const mine: Holder = { label: `VBD ${domain}/${device} (${mode})`, kind: 'vbd', mode,
      vdId, ranges };
    const expert = input.expert ?? 0;
    checkSharing('vbd add', mine, holders(cx, now), expert);
    const info = cx.st.insertVbd.run(domain, device, mode, source.kind, vdId,
      source.kind === 'phy' ? source.path : null,
      source.kind === 'phy' ? source.sizeBytes : null, now, expert);
    const id = Number(info.lastInsertRowid);
    if (source.kind === 'extents') {
      ranges.forEach((r, seq) => cx.st.insertRange.run(id, seq, r.path, r.offset, r.length));
    }
    return toVbd(cx, get<VbdRow>(cx.st.vbd, domain, device)!);
  });
}

export function removeVbd(cx: CatalogContext, domain: number, device: string): void {
  tx(cx, () => {
    const row = get<VbdRow>(cx.st.vbd, domain, device);
    if (row === undefined) {
      throw new UsageError('ERR_VBD_UNKNOWN', `vbd remove: domain ${domain} has no ${device}`);
    }
    cx.st.deleteVbd.run(row.id);
  });
}

export function listVbds(cx: CatalogContext): Vbd[] {
  return all<VbdRow>(cx.st.vbds).map((row) => toVbd(cx, row));
}

export function resolveVbd(cx: CatalogContext, domain: number, device: string): ResolvedVbd {
  return cx.db.transaction(() => {
    const row = get<VbdRow>(cx.st.vbd, domain, device);
    if (row === undefined) {
      throw new UsageError('ERR_VBD_UNKNOWN', `vbd: domain ${domain} has no ${device}`);
    }
    const base = { domain, device, mode: row.mode };
    if (row.source_kind !== 'vd') {
      const extents = rangesOfVbd(cx, row);
      const size = extents.reduce((s, e) => s + e.length, 0);
      return { ...base, size, vdId: null, generation: 0, isDangling: false, extents };
    }
    const vd = get<VdRow>(cx.st.vd, row.vd_id!)!;
    const isUnusable = isDead(vd, cx.now()) || isImporting(cx, vd.id)
      || !isCloneSwitched(cx, vd.id);
    const servable = isUnusable ? 0 : servableSize(cx, vd);
    const isDangling = servable === 0;
    const size = isDangling ? vd.size_bytes : servable;
    const extents = isDangling ? [] : trimTo(sharedRanges(cx, vd.id), size);
    return { ...base, size, vdId: vd.id, generation: vd.generation, isDangling, extents };
  }).deferred();
}

/**
 * How much of a live VD may be served: all of it, or up to its first byte pending zeroing.
 * That is 0 for a new VD, and the size before the enlarge for one enlarged (the slack of its
 * last extent and its new extents are pending; the old range is not). A pending byte outside
 * the VD's runs (a fault `check` reports) makes nothing servable.
 */
function servableSize(cx: CatalogContext, vd: VdRow): number {
  const pending = all<PendingRow>(cx.st.pendingRowsOf, vd.id);
  if (pending.length === 0) return vd.size_bytes;
  const runs = runsOf(cx, vd.id);
  const sizes = extentSizesOf(cx);
  let servable = vd.size_bytes;
  for (const z of pending) {
    const start = virtualOffsetOf(runs, sizes, z.member_id, z.offset) ?? 0;
    servable = Math.min(servable, start);
  }
  return servable;
}

/** A VD's extents in virtual order, cut where sharing changes, shared pieces marked. */
function sharedRanges(cx: CatalogContext, vdId: number): ResolvedExtent[] {
  const members = memberMap(cx);
  return ownedPieces(cx, vdId).map((p) => {
    const m = members.get(p.memberId)!;
    const range: ResolvedExtent = { path: m.path, offset: p.firstExtent * m.extent_size,
      length: p.extentCount * m.extent_size };
    if (p.owners > 1) range.shared = true;
    return range;
  });
}

/** Cuts ranges (virtual order) so that their lengths add up to exactly `size`. */
function trimTo(ranges: ResolvedExtent[], size: number): ResolvedExtent[] {
  const out: ResolvedExtent[] = [];
  let left = size;
  for (const r of ranges) {
    if (left <= 0) break;
    const length = Math.min(r.length, left);
    out.push({ ...r, length });
    left -= length;
  }
  assert(left === 0, 'resolve: a live VD holds fewer bytes than its size');
  return out;
}
