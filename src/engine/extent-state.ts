/**
 * engine/extent-state: what one request of an ExtentExport runs on, and the questions asked of it
 * without I/O.
 *
 * An ExtentState is immutable: the map, the pooled backing behind each of the map's paths, the
 * virtual size, and the descriptors the native paths take (null when any backing lacks one).
 * Each request captures the export's current state when it starts and finishes on it, so a map
 * swap (ExtentExport.replaceMap) is one assignment. The one mutable part is `flight`, the
 * requests running on the state now, so that copy-on-write can wait until none runs on a map it
 * replaced (ExtentExport.drainedBefore).
 *
 * isAllData() answers "is every byte of this range known to be data?" from capabilities, never
 * from a backing's class: devices always are; a backing that offers `isAllData(offset, length)`
 * (hasKnownData, a structural guard: a file backing that mapped its data runs at open) answers
 * for its own range; anything else is unknown (false).
 */
import assert from 'node:assert';
import { IoError } from '../errors';
import type { Backing } from '../backing/backing';
import type { PooledBacking } from '../backing/pool';
import type { ExtentMap } from './extent-map';

export interface ExtentState {
  readonly map: ExtentMap;
  /** entries[i] backs map.paths[i] */
  readonly entries: readonly PooledBacking[];
  readonly size: number;
  /** batchFds[i]: entries[i]'s descriptor for writeBatch; null when one of them has none */
  readonly batchFds: readonly number[] | null;
  /** sendFds[i]: entries[i]'s descriptor for a sender thread; null when one of them has none */
  readonly sendFds: readonly number[] | null;
  /** requests started on this state and not yet settled */
  readonly flight: { count: number };
}

/** The state for `map` over the held entries; every path of the map must be held. */
export function makeExtentState(
  map: ExtentMap,
  held: ReadonlyMap<string, PooledBacking>,
  size: number,
): ExtentState {
  assert(Number.isSafeInteger(size) && size >= 0);
  assert(size <= map.sizeVirtual, `size ${size} > extents ${map.sizeVirtual}`);
  const entries = map.paths.map((path) => {
    const entry = held.get(path);
    assert(entry !== undefined);
    return entry;
  });
  const fds = entries.map((entry) => entry.backing.batchFd);
  const batchFds = fds.every((fd) => fd >= 0) ? fds : null;
  const sends = entries.map((entry) => entry.backing.sendFd);
  const sendFds = sends.every((fd) => fd >= 0) ? sends : null;
  return { map, entries, size, batchFds, sendFds, flight: { count: 0 } };
}

/** A backing that knows, synchronously, whether a range of it is all data. */
export interface KnowsData {
  /** true only when every byte of [offset, offset+length) is known to be data */
  isAllData(offset: number, length: number): boolean;
}

/** Capability check: the backing can say which of its ranges are all data (see the header). */
export function hasKnownData(backing: Backing): backing is Backing & KnowsData {
  return 'isAllData' in backing && typeof backing.isAllData === 'function';
}

/** True when [offsetBacking, offsetBacking+length) of `backing` is known to be data. */
export function isBackingAllData(
  backing: Backing | undefined,
  offsetBacking: number,
  length: number,
): boolean {
  if (backing === undefined) return false;
  if (hasKnownData(backing)) return backing.isAllData(offsetBacking, length);
  return backing.kind === 'device';
}

interface DataProbe {
  readonly state: ExtentState;
  isAllData: boolean;
}

/**
 * True when every backing byte under [offset, offset+length) is known to be data without a
 * syscall: devices always (block status reports them as data), files below their first hole.
 */
export function isAllData(state: ExtentState, offset: number, length: number): boolean {
  if (offset < 0 || length <= 0 || offset + length > state.size) return false; // read() rejects
  const probe: DataProbe = { state, isAllData: true };
  state.map.visit(offset, length, probePiece, probe);
  return probe.isAllData;
}

function probePiece(
  probe: DataProbe,
  backingIndex: number,
  offsetBacking: number,
  length: number,
): void {
  const backing = probe.state.entries[backingIndex]?.backing;
  if (!isBackingAllData(backing, offsetBacking, length)) probe.isAllData = false;
}

/** Devices and RBD images have a fixed size: every extent on one must lie inside it. */
export async function checkExtentsFit(
  map: ExtentMap,
  held: ReadonlyMap<string, PooledBacking>,
): Promise<void> {
  for (let index = 0; index < map.count; index++) {
    const extent = map.at(index);
    const backing = held.get(extent.path)?.backing;
    assert(backing !== undefined);
    if (backing.kind !== 'device' && backing.kind !== 'rbd') continue;
    const end = extent.offsetBacking + (extent.endVirtual - extent.startVirtual);
    if (end > backing.sizeBytes) {
      throw new IoError('EINVAL', 'open', `open: EINVAL: extent ends at ${end} past the end of ` +
        `${extent.path} (${backing.sizeBytes} bytes)`);
    }
  }
}
