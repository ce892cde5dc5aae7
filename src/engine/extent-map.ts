/**
 * engine/extent-map: an immutable, sorted, non-overlapping map from a VBD's virtual byte range onto
 * backing pieces.
 *
 * Built from `[{path, offset, length}]` in virtual order (exactly what the catalog's resolveVbd
 * gives; `phy:` is one extent covering the whole device or file). Virtual starts are implicit: the
 * running sum of lengths. Extents that continue each other on the same backing are merged, so a
 * contiguous VD costs one piece per request. Storage is three typed arrays (virtual starts with a
 * sentinel at the end, backing offsets, backing indices into `paths`). A lookup first reads a
 * bucket table (about one bucket per extent, equal virtual sizes) that bounds the candidates, then
 * does a branch-free binary search over them: O(1) for evenly sized extents, O(log n) at worst,
 * no allocation. Offsets stay exact up to 2^53.
 *
 * Sharing (copy-on-write, engine/cow.ts): an extent may be marked `shared` (another VD owns it
 * too). Extents with different marks never merge; `sharedCount` is 0 for a map with none, so
 * the write path asks `touchesShared()` only when there is something to find.
 *
 * Translation has two forms: `visit()` calls a visitor per piece with a caller-owned context (the
 * hot path: nothing allocated), and `translate()` returns an array (tests, block status).
 * All ranges are half-open.
 */
import assert from 'node:assert';
import { LIMITS } from '../limits';

export interface ExtentSpec {
  /** backing path: an image file or a block device */
  path: string;
  /** byte offset on the backing */
  offset: number;
  /** bytes */
  length: number;
  /** another VD owns these bytes too: never written in place (engine/cow.ts) */
  shared?: boolean;
}

/** One piece of a translated range: `length` bytes at `offsetBacking` of paths[backingIndex]. */
export interface Piece {
  backingIndex: number;
  offsetBacking: number;
  length: number;
  /** offset of this piece from the start of the translated range */
  offsetRequest: number;
}

/** One (merged) extent of a map, for tests and diagnostics. */
export interface ExtentView {
  startVirtual: number;
  endVirtual: number;
  path: string;
  offsetBacking: number;
  isShared: boolean;
}

/** Hot-path visitor: no closure needed, the context rides along. */
export type PieceVisitor<C> = (
  context: C,
  backingIndex: number,
  offsetBacking: number,
  length: number,
  offsetRequest: number,
) => void;

export class ExtentMap {
  /** distinct backing paths, in order of first use */
  readonly paths: readonly string[];
  /** number of (merged) extents */
  readonly count: number;
  readonly sizeVirtual: number;
  /** extents marked shared (0: no write needs copy-on-write) */
  readonly sharedCount: number;
  /** startsVirtual[i] = virtual start of extent i; startsVirtual[count] = sizeVirtual */
  private readonly startsVirtual: Float64Array;
  private readonly offsetsBacking: Float64Array;
  private readonly backingIndices: Uint32Array;
  /** 1 where the extent is shared */
  private readonly sharedFlags: Uint8Array;
  /** bucketFirst[k] = index of the extent holding byte k * bucketBytes (last: count - 1) */
  private readonly bucketFirst: Uint32Array;
  private readonly bucketBytes: number;

  private constructor(
    paths: string[],
    startsVirtual: Float64Array,
    offsetsBacking: Float64Array,
    backingIndices: Uint32Array,
    sharedFlags: Uint8Array,
  ) {
    this.paths = paths;
    this.sharedFlags = sharedFlags;
    this.sharedCount = sharedFlags.reduce((sum, flag) => sum + flag, 0);
    this.count = offsetsBacking.length;
    this.startsVirtual = startsVirtual;
    this.offsetsBacking = offsetsBacking;
    this.backingIndices = backingIndices;
    this.sizeVirtual = startsVirtual[this.count] ?? 0;
    // about one bucket per extent (a power of two, capped) keeps the final search a step or two
    let bucketCount = 1;
    while (bucketCount < this.count && bucketCount < LIMITS.extentMapBucketsMax) bucketCount *= 2;
    this.bucketBytes = Math.max(1, this.sizeVirtual / bucketCount);
    this.bucketFirst = new Uint32Array(bucketCount + 1);
    let index = 0;
    for (let bucket = 0; bucket <= bucketCount; bucket++) {
      const at = Math.min(bucket * this.bucketBytes, this.sizeVirtual - 1);
      while (index + 1 < this.count && (startsVirtual[index + 1] as number) <= at) index++;
      this.bucketFirst[bucket] = index;
    }
  }

  /** Builds a map from extents in virtual order; zero-length extents are not allowed. */
  static fromList(extents: readonly ExtentSpec[]): ExtentMap {
    const paths: string[] = [];
    const pathIndex = new Map<string, number>();
    const starts: number[] = [];
    const offsets: number[] = [];
    const indices: number[] = [];
    const shared: number[] = [];
    let cursor = 0;
    for (const extent of extents) {
      assert(typeof extent.path === 'string' && extent.path.length > 0);
      assert(Number.isSafeInteger(extent.offset) && extent.offset >= 0);
      assert(Number.isSafeInteger(extent.length) && extent.length > 0);
      assert(Number.isSafeInteger(extent.offset + extent.length));
      let index = pathIndex.get(extent.path);
      if (index === undefined) {
        index = paths.length;
        paths.push(extent.path);
        pathIndex.set(extent.path, index);
      }
      const last = offsets.length - 1;
      const lastStart = starts[last];
      const lastOffset = offsets[last];
      const flag = extent.shared === true ? 1 : 0;
      const continues = last >= 0 && indices[last] === index && shared[last] === flag &&
        lastStart !== undefined && lastOffset !== undefined &&
        lastOffset + (cursor - lastStart) === extent.offset;
      if (!continues) {
        starts.push(cursor);
        offsets.push(extent.offset);
        indices.push(index);
        shared.push(flag);
      }
      cursor += extent.length;
      assert(Number.isSafeInteger(cursor));
    }
    starts.push(cursor);
    return new ExtentMap(
      paths,
      Float64Array.from(starts),
      Float64Array.from(offsets),
      Uint32Array.from(indices),
      Uint8Array.from(shared),
    );
  }

  /** Index of the extent holding byte `offsetVirtual` (0 <= offsetVirtual < sizeVirtual). */
  indexOf(offsetVirtual: number): number {
    if (!(offsetVirtual >= 0 && offsetVirtual < this.sizeVirtual)) {
      assert.fail(`indexOf: ${offsetVirtual} outside [0, ${this.sizeVirtual})`);
    }
    const starts = this.startsVirtual;
    // narrow with the bucket table, then search the few extents left
    const buckets = this.bucketFirst;
    const bucket = Math.floor(offsetVirtual / this.bucketBytes);
    const low = buckets[bucket];
    const high = buckets[bucket + 1];
    if (low !== undefined && high !== undefined) {
      const index = ExtentMap.search(starts, offsetVirtual, low, high - low + 1);
      const isInside = (starts[index] as number) <= offsetVirtual &&
        offsetVirtual < (starts[index + 1] as number);
      if (isInside) return index;
    }
    return ExtentMap.search(starts, offsetVirtual, 0, this.count); // rounding at a bucket edge
  }

  /** Branch-free halving over [base, base+length): last index whose start <= offsetVirtual. */
  private static search(starts: Float64Array, offsetVirtual: number, from: number, count: number):
  number {
    let base = from;
    let length = count;
    while (length > 1) {
      const half = length >>> 1;
      base = (starts[base + half] as number) <= offsetVirtual ? base + half : base;
      length -= half;
    }
    return base;
  }

  /** The extent at `index` (merged), for tests and diagnostics. */
  at(index: number): ExtentView {
    assert(Number.isInteger(index) && index >= 0 && index < this.count);
    const path = this.paths[this.backingIndices[index] as number];
    assert(path !== undefined);
    return {
      startVirtual: this.startsVirtual[index] as number,
      endVirtual: this.startsVirtual[index + 1] as number,
      path,
      offsetBacking: this.offsetsBacking[index] as number,
      isShared: this.sharedFlags[index] === 1,
    };
  }

  /** True when some byte of [offsetVirtual, offsetVirtual + length) lies on a shared extent. */
  touchesShared(offsetVirtual: number, length: number): boolean {
    if (this.sharedCount === 0) return false;
    const end = offsetVirtual + length;
    for (let index = this.indexOf(offsetVirtual); index < this.count; index++) {
      if (this.sharedFlags[index] === 1) return true;
      if ((this.startsVirtual[index + 1] as number) >= end) return false;
    }
    return false;
  }

  /** The map's extents as a list fromList() takes again (merged, shared marks kept). */
  toList(): ExtentSpec[] {
    const list: ExtentSpec[] = [];
    for (let index = 0; index < this.count; index++) {
      const view = this.at(index);
      list.push({ path: view.path, offset: view.offsetBacking,
        length: view.endVirtual - view.startVirtual, shared: view.isShared });
    }
    return list;
  }

  /**
   * Calls `visitor` for each backing piece of [offsetVirtual, offsetVirtual + length), in order.
   * Returns the number of pieces. Allocates nothing.
   */
  visit<C>(offsetVirtual: number, length: number, visitor: PieceVisitor<C>, context: C): number {
    const end = offsetVirtual + length;
    if (!(length > 0 && end <= this.sizeVirtual)) {
      assert.fail(`visit: [${offsetVirtual}, +${length}) empty or past ${this.sizeVirtual}`);
    }
    const starts = this.startsVirtual;
    const offsets = this.offsetsBacking;
    const indices = this.backingIndices;
    const count = this.count;
    let index = this.indexOf(offsetVirtual);
    let cursor = offsetVirtual;
    let pieces = 0;
    while (cursor < end) {
      const start = starts[index] as number;
      const extentEnd = starts[index + 1] as number;
      // bounded by the map, not by the request; start <= cursor < extentEnd so take > 0
      if (!(index < count && start <= cursor && cursor < extentEnd)) assert.fail('visit: bad map');
      const take = (extentEnd < end ? extentEnd : end) - cursor;
      const offsetBacking = (offsets[index] as number) + (cursor - start);
      visitor(context, indices[index] as number, offsetBacking, take, cursor - offsetVirtual);
      cursor += take;
      index++;
      pieces++;
    }
    return pieces;
  }

  /** Like visit(), returning the pieces as an array. */
  translate(offsetVirtual: number, length: number): Piece[] {
    const pieces: Piece[] = [];
    this.visit(offsetVirtual, length, collectPiece, pieces);
    return pieces;
  }
}

function collectPiece(
  pieces: Piece[],
  backingIndex: number,
  offsetBacking: number,
  length: number,
  offsetRequest: number,
): void {
  pieces.push({ backingIndex, offsetBacking, length, offsetRequest });
}
