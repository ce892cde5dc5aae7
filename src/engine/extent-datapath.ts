/**
 * engine/extent-datapath: the descriptor-facing view of an ExtentExport, for native threads.
 *
 * planReadPieces gives a sender thread (native/src/sender.c) a READ as (fd, position, length)
 * triples tiling the range in order, from the state's sendFds; null when the state has no send
 * descriptors, the range is invalid, the map is broken (read() reports that), or, with
 * `requireData`, the range may hold holes. The export counts a plan as in flight until its
 * done() runs (ExtentExport.planRead), so its descriptors stay open meanwhile.
 *
 * datapathMapOf gives a connection's data-path thread (native/src/dp-map.c) the whole map as
 * DATAPATH_EXTENT_FIELDS-tuples (startVirtual, length, fd, offsetBacking, backingIndex, kind) plus
 * each backing's dirty flag; kind says device, file, or file range known to be all data (a
 * capability of the backing, extent-state isBackingAllData), which spares the thread a SEEK_HOLE
 * per large structured READ; DATAPATH_EXTENT_SHARED is added to the kind of a shared extent
 * (copy-on-write, cow.ts), whose WRITEs the thread forwards to JS.
 * Map replacement is the export's: it notifies onMapReplaced listeners, which hand the thread
 * the new datapathMap (backing indices stay: see datapathMapOf).
 */
import {
  DATAPATH_EXTENT_FIELDS, DATAPATH_EXTENT_KIND, DATAPATH_EXTENT_SHARED, type DatapathMap,
} from '../sys/index';
import type { PooledBacking } from '../backing/pool';
import { isAllData, isBackingAllData, type ExtentState } from './extent-state';

interface PlanContext {
  readonly fds: readonly number[];
  readonly pieces: number[];
}

/** The (fd, position, length) triples of [offset, offset+length), or null (see the header). */
export function planReadPieces(
  state: ExtentState,
  offset: number,
  length: number,
  requireData: boolean,
): Float64Array | null {
  if (state.sendFds === null || !Number.isSafeInteger(offset) ||
    !Number.isSafeInteger(length) || offset < 0 || length <= 0 || offset + length > state.size) {
    return null;
  }
  if (requireData && !isAllData(state, offset, length)) return null;
  const plan: PlanContext = { fds: state.sendFds, pieces: [] };
  try {
    state.map.visit(offset, length, planPiece, plan);
  } catch {
    return null; // a broken map (a bug): read() reports it
  }
  return Float64Array.from(plan.pieces);
}

function planPiece(plan: PlanContext, backingIndex: number, offsetBacking: number,
  length: number): void {
  plan.pieces.push(plan.fds[backingIndex]!, offsetBacking, length);
}

/**
 * The data-path thread's view of `state`, or null when a backing has no send descriptor.
 * Backing indices are positions in `held` (every backing the export holds, in the order it
 * acquired them), so they stay the same across map swaps (datapathRemap).
 */
export function datapathMapOf(state: ExtentState, isWritable: boolean,
  held: ReadonlyMap<string, PooledBacking>): DatapathMap | null {
  const entries = [...held.values()];
  const sendFds = entries.map((entry) => entry.backing.sendFd);
  if (state.sendFds === null || sendFds.some((fd) => fd < 0)) return null;
  const { map } = state;
  const indexOf = new Map([...held.keys()].map((path, index) => [path, index]));
  const extents = new Float64Array(DATAPATH_EXTENT_FIELDS * map.count);
  for (let index = 0; index < map.count; index++) {
    const extent = map.at(index);
    const backingIndex = indexOf.get(extent.path)!;
    const length = extent.endVirtual - extent.startVirtual;
    const backing = entries[backingIndex]!.backing;
    const kind = (backing.kind === 'device' ? DATAPATH_EXTENT_KIND.device
      : isBackingAllData(backing, extent.offsetBacking, length)
        ? DATAPATH_EXTENT_KIND.fileAllData : DATAPATH_EXTENT_KIND.file) +
      (extent.isShared ? DATAPATH_EXTENT_SHARED : 0);
    extents.set([extent.startVirtual, length, sendFds[backingIndex]!, extent.offsetBacking,
      backingIndex, kind], DATAPATH_EXTENT_FIELDS * index);
  }
  return { extents, size: state.size, isWritable, dirty: entries.map((entry) => entry.dirtyFlag) };
}
