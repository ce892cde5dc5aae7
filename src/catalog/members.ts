/**
 * catalog/members: the pool members (files and block devices cut into extents of one size).
 *
 * Contract: formatMember is one IMMEDIATE transaction that inserts the member and one free run
 * covering all its extents; a member is refused when its path or its identity (dev:ino, or
 * MAJ:MIN for a device) is already in the pool. Members are never removed. The other functions
 * only read, in the caller's transaction when there is one.
 */
import { UsageError } from '../errors';
import { LIMITS } from '../limits';
import {
  all, checkSize, get, invalid, tx, type CatalogContext, type MemberRow,
} from './statements';
import type { Member, MemberInput, MemberKind } from './types';

function toMember(row: MemberRow): Member {
  return {
    id: row.id, path: row.path, kind: row.kind, sizeBytes: row.size_bytes,
    extentSize: row.extent_size, extentCount: row.extent_count, identity: row.identity,
    addedAt: row.added_at,
  };
}

export function formatMember(cx: CatalogContext, input: MemberInput): Member {
  const kind: MemberKind = input.kind === 'block' ? 'device' : input.kind;
  const { path: file, sizeBytes, extentSize, identity } = input;
  if (typeof file !== 'string' || file === '') invalid('format: the path is empty');
  if (typeof identity !== 'string' || identity === '') invalid('format: the identity is empty');
  if (kind !== 'file' && kind !== 'device') invalid(`format: unknown member kind: ${kind}`);
  if (!Number.isSafeInteger(extentSize) || extentSize % 512 !== 0
    || extentSize < LIMITS.extentSizeMin || extentSize > LIMITS.extentSizeMax) {
    invalid(`format: extent size must be a multiple of 512 between ${LIMITS.extentSizeMin} `
      + `and ${LIMITS.extentSizeMax} bytes: ${extentSize}`);
  }
  checkSize('format', sizeBytes);
  const extentCount = Math.floor(sizeBytes / extentSize);
  if (extentCount < 1) {
    invalid(`format: ${file}: ${sizeBytes} bytes is smaller than one extent (${extentSize})`);
  }
  return tx(cx, () => {
    const byPath = get<MemberRow>(cx.st.memberByPath, file);
    if (byPath !== undefined) duplicate(`${file} is already pool member ${byPath.id}`);
    const byId = get<MemberRow>(cx.st.memberByIdentity, identity);
    if (byId !== undefined) {
      duplicate(`${file} is the same ${kind} as pool member ${byId.id} (${byId.path})`);
    }
    const info = cx.st.insertMember.run(file, kind, sizeBytes, extentSize, extentCount,
      identity, cx.now());
    const id = Number(info.lastInsertRowid);
    cx.st.insertFree.run(id, 0, extentCount);
    return toMember(get<MemberRow>(cx.st.memberById, id)!);
  });
}

function duplicate(detail: string): never {
  throw new UsageError('ERR_CATALOG_MEMBER_DUPLICATE', `format: ${detail}`);
}

export function listMembers(cx: CatalogContext): Member[] {
  return all<MemberRow>(cx.st.members).map(toMember);
}

export function getMember(cx: CatalogContext, idOrPath: number | string): Member | null {
  const row = typeof idOrPath === 'number'
    ? get<MemberRow>(cx.st.memberById, idOrPath)
    : get<MemberRow>(cx.st.memberByPath, idOrPath);
  return row === undefined ? null : toMember(row);
}

/** The members by id. */
export function memberMap(cx: CatalogContext): Map<number, MemberRow> {
  return new Map(all<MemberRow>(cx.st.members).map((m) => [m.id, m]));
}

/** Extent size of each member by id (what the allocator's functions take). */
export function extentSizesOf(cx: CatalogContext): Map<number, number> {
  return new Map(all<MemberRow>(cx.st.members).map((m) => [m.id, m.extent_size]));
}

/** The id of a member named by id or path; null for none given; ERR_CATALOG_MEMBER_UNKNOWN. */
export function resolveMemberId(
  cx: CatalogContext, op: string, onMember: number | string | null | undefined,
): number | null {
  if (onMember === undefined || onMember === null) return null;
  const m = getMember(cx, onMember);
  if (m === null) {
    throw new UsageError('ERR_CATALOG_MEMBER_UNKNOWN', `${op}: no pool member ${onMember}`);
  }
  return m.id;
}
