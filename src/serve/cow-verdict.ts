/**
 * serve/cow-verdict: the pure decision of what a VD served with copy-on-write (engine/cow.ts)
 * does when the catalog resolves it anew (catalog-provider.ts reconcile, serve/cow-vds.ts).
 *
 * Contract: mergeResolved() lays the catalog's extents over the map the VD is served with now.
 * Byte by byte, in virtual order, the two must map the same place, except inside a remap this
 * server made and has not seen committed yet (`uncommitted`): there the catalog may still show
 * the shared extent the remap replaced, and the served map wins. Where they agree, the catalog's
 * shared mark wins: own → shared is a live clone of the VD (copy-on-write from now on),
 * shared → own a sharer that copied or died (the VD may write in place again). Beyond the
 * served size the catalog's extents are taken as they are (an enlarge). Anything else (a shrink,
 * an extent moved) is a reason to fence, as judge() says for exports without copy-on-write.
 * Nothing here touches the catalog or an export.
 */
import type { ExtentSpec } from '../engine/extent-map';
import type { FenceReason } from './export-verdict';

/** A virtual byte range [start, start + length). */
export interface VirtualRange {
  start: number;
  length: number;
}

export interface Merged {
  /** the map to serve from now on */
  extents: ExtentSpec[];
  /** it differs from the served one (marks, or an enlarge) */
  isChanged: boolean;
}

interface Cursor {
  list: readonly ExtentSpec[];
  index: number;
  /** virtual start of list[index] */
  start: number;
}

function pieceAt(cursor: Cursor, at: number): ExtentSpec | null {
  for (;;) {
    const spec = cursor.list[cursor.index];
    if (spec === undefined) return null;
    if (at < cursor.start + spec.length) return spec;
    cursor.start += spec.length;
    cursor.index += 1;
  }
}

function isInside(ranges: readonly VirtualRange[], start: number, end: number): boolean {
  return ranges.some((range) => range.start <= start && end <= range.start + range.length);
}

/** The served map with the catalog's marks and tail (see the header), or why to fence. */
export function mergeResolved(
  served: readonly ExtentSpec[],
  uncommitted: readonly VirtualRange[],
  now: readonly ExtentSpec[],
): Merged | FenceReason {
  const servedSize = served.reduce((sum, spec) => sum + spec.length, 0);
  const nowSize = now.reduce((sum, spec) => sum + spec.length, 0);
  if (nowSize < servedSize) return 'VD shrank';
  const mine: Cursor = { list: served, index: 0, start: 0 };
  const theirs: Cursor = { list: now, index: 0, start: 0 };
  const extents: ExtentSpec[] = [];
  let isChanged = nowSize > servedSize;
  for (let at = 0; at < nowSize;) {
    const b = pieceAt(theirs, at);
    if (b === null) return 'VD extents changed';
    const a = at < servedSize ? pieceAt(mine, at) : null;
    const end = Math.min(theirs.start + b.length, a === null ? Infinity : mine.start + a.length);
    const offsetB = b.offset + (at - theirs.start);
    const isSharedB = b.shared === true;
    if (a === null) {
      extents.push({ path: b.path, offset: offsetB, length: end - at, shared: isSharedB });
    } else {
      const offsetA = a.offset + (at - mine.start);
      const isSame = a.path === b.path && offsetA === offsetB;
      if (!isSame && !isInside(uncommitted, at, end)) return 'VD extents changed';
      const shared = isSame ? isSharedB : a.shared === true;
      if (shared !== (a.shared === true)) isChanged = true;
      extents.push({ path: a.path, offset: offsetA, length: end - at, shared });
    }
    at = end;
  }
  return { extents, isChanged };
}
