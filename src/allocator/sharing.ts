/**
 * allocator/sharing: the safety rules for sharing bytes, as pure functions over plain data (no
 * SQLite; the catalog gathers the holders inside its transaction and throws on a conflict).
 *
 * A holder is anything that may write or read a byte range of a path: a VBD (mode r or w, over a
 * VD's extents, a phy: device or file, or an explicit extent list) or a live pool VD (always a
 * writer on all its extents, whether or not a VBD maps it). The rules, in the order they apply:
 *   1. Two ranges share bytes only when they lie on the same path and overlap; ranges are
 *      half-open, so ranges that merely touch share nothing.
 *   2. A VD and a VBD that maps that VD are never judged against each other: the VBD is how the
 *      VD is used, not a second user of its bytes.
 *   2b. Holders of two different VDs (each a VD or a VBD mapping one) are never judged against
 *      each other either: two VDs share extents only as copy-on-write clones, whose server
 *      copies a shared extent before any write to it (the allocator never gives one extent
 *      to two VDs otherwise).
 *   3. Every other pair sharing a byte needs an expert level equal to the number of writers in
 *      the pair: two readers 0, one writer and one reader 1, two writers 2. So two VBDs of one
 *      VD, or a phy: VBD over a pool member against each VD on it, are judged like any pair.
 *   4. The first pair (others in order, then the new holder's ranges in order) needing more
 *      than the expert level the user gave refuses the change; none does: it is allowed.
 * Paths are compared as strings: the catalog stores them resolved (absolute, canonical).
 */
import assert from 'node:assert';

export type SharingMode = 'r' | 'w';

/** What the user allows: 0 nothing shared with a writer, 1 one writer, 2 two writers. */
export type ExpertLevel = 0 | 1 | 2;

/** Bytes [offset, offset + length) of a file or device. */
export interface PathRange {
  path: string;
  offset: number;
  length: number;
}

export interface Holder {
  /** how messages name it: `VBD 1/xvda (w)`, `pool VD 3` */
  label: string;
  kind: 'vd' | 'vbd';
  mode: SharingMode;
  /** the VD it is (kind 'vd') or maps (a VBD of a VD); null for phy: and extent-list VBDs */
  vdId: number | null;
  ranges: readonly PathRange[];
}

/** A pair of holders sharing bytes beyond the expert level allowed. */
export interface SharingConflict {
  /** the range of the holder being judged */
  mine: PathRange;
  other: Holder;
  /** the range of `other` that `mine` overlaps */
  theirs: PathRange;
  levelNeeded: ExpertLevel;
}

/** Rule 1: same path and a common byte (half-open ranges). */
export function rangesOverlap(a: PathRange, b: PathRange): boolean {
  return a.path === b.path && a.offset < b.offset + b.length && b.offset < a.offset + a.length;
}

/** Rule 3: the expert level a pair sharing bytes needs, the number of writers in it. */
export function levelNeeded(a: SharingMode, b: SharingMode): ExpertLevel {
  const writers = (a === 'w' ? 1 : 0) + (b === 'w' ? 1 : 0);
  assert(writers === 0 || writers === 1 || writers === 2);
  return writers;
}

/** Rule 2: one of the pair is a VD and the other a VBD mapping that VD. */
export function isOwnMapping(a: Holder, b: Holder): boolean {
  if (a.vdId === null || a.vdId !== b.vdId) return false;
  return (a.kind === 'vd') !== (b.kind === 'vd');
}

/** Rule 2b: the pair are, or map, two different VDs. */
export function isCloneSharing(a: Holder, b: Holder): boolean {
  return a.vdId !== null && b.vdId !== null && a.vdId !== b.vdId;
}

/** Rule 4: the first pair of `mine` and one of `others` sharing beyond `expert`, else null. */
export function findSharingConflict(
  mine: Holder, others: readonly Holder[], expert: ExpertLevel,
): SharingConflict | null {
  for (const other of others) {
    if (isOwnMapping(mine, other) || isCloneSharing(mine, other)) continue;
    const level = levelNeeded(mine.mode, other.mode);
    if (level <= expert) continue;
    for (const range of mine.ranges) {
      const theirs = other.ranges.find((candidate) => rangesOverlap(range, candidate));
      if (theirs !== undefined) return { mine: range, other, theirs, levelNeeded: level };
    }
  }
  return null;
}

function describeRange(range: PathRange): string {
  return `${range.path} [${range.offset}, ${range.offset + range.length})`;
}

/** `OP: MINE would share RANGE with OTHER at RANGE: needs expert level N, have M`. */
export function describeConflict(
  op: string, mine: Holder, conflict: SharingConflict, expert: ExpertLevel,
): string {
  return `${op}: ${mine.label} would share ${describeRange(conflict.mine)} with `
    + `${conflict.other.label} at ${describeRange(conflict.theirs)}: needs expert level `
    + `${conflict.levelNeeded}, have ${expert}`;
}
