/**
 * engine/extent-export: the Export over an ExtentMap and pooled backings; every byte of every VBD
 * goes through here. This module is the request lifecycle (admission, in-flight count, map swap,
 * close); the work is cut by concern:
 *   extent-state     the immutable state a request runs on; "known all data" as a capability
 *   extent-job       one read/write request in flight, settled once
 *   extent-read      read, readSparse, cache (zero-fill on EOF and on failure: invariant 3)
 *   extent-write     write (batched or per piece), zero, trim, FUA syncs
 *   extent-status    block status
 *   extent-datapath  planRead and datapathMap: descriptors for native sender/data-path threads
 *   extent-flight    requests in flight, in total and per state
 *   cow              copy-on-write of shared extents, shared by every export of a VD
 *
 * Data path (node-perf.md section 8): read and write allocate one Job and one promise per
 * request, translate with ExtentMap.visit (no allocation) and issue positioned I/O straight
 * into/out of the caller's buffer; the request settles once, after every piece has settled.
 *
 * Durability (invariant 4): a completed write marks its pooled backing dirty; flush() syncs every
 * backing of the export (PooledBacking.sync runs fdatasync only for dirty ones and joins one in
 * flight), FUA syncs the backings the write touched before resolving, and a failed fdatasync makes
 * every later flush on that backing fail. Dirty state lives in the pool entry, shared by every
 * export and connection using the descriptor, so canMultiConn is true.
 *
 * Map swap: each request captures `this.state` when it starts and finishes on it; replaceMap()
 * acquires any new backings first, then swaps the state in one assignment and tells the
 * onMapReplaced listeners (connections whose data-path thread holds the old map), whose promises
 * swapMap() waits for. Backings are released when the export closes (an enlarged map keeps them
 * all anyway).
 *
 * Copy-on-write (cow.ts, whose header is the design): an export of a VD that shares extents is
 * attached to the VD's CowVolume (attachCow). A write, zero or trim touching a shared extent
 * first has the volume break it (copy, swap every export's map), then runs on the new map; a
 * FLUSH, and a FUA request while remaps are pending, commits them after the sync. Exports
 * without shared extents never look (ExtentMap.sharedCount is 0).
 *
 * Close: new requests reject with ESHUTDOWN at once; close() resolves after every request in
 * flight (read plans included, until their done()) has settled and the descriptors are released,
 * so no I/O ever reaches a descriptor number that the pool has closed (and the kernel may have
 * reused).
 *
 * Read-only (invariant 7): mode 'r' opens every backing O_RDONLY and write/trim/zero reject with
 * EPERM; a 'w' export whose backing the kernel would only open read-only is read-only too.
 * cache() is readahead by reading into one scratch buffer (Node has no posix_fadvise).
 */
import assert from 'node:assert';
import { IoError } from '../errors';
import { LIMITS } from '../limits';
import type { BackingPool, BackingMode, PooledBacking } from '../backing/pool';
import type { DatapathMap } from '../sys/index';
import { ExtentMap, type ExtentSpec } from './extent-map';
import type {
  DataPlaneSource, Export, ReadPiece, ReadPlan, StatusRun, WriteFlags, ZeroFlags,
} from './export';
import { checkExtentsFit, makeExtentState, type ExtentState } from './extent-state';
import { Job, settleAll, type JobOwner } from './extent-job';
import { issueRead, readAhead, readSparse } from './extent-read';
import { eachPieceThenSync, issueWrite, syncTouched, WriteBatcher } from './extent-write';
import { statusOfExtents } from './extent-status';
import { datapathMapOf, planReadPieces } from './extent-datapath';
import { FlightTracker } from './extent-flight';
import type { CowMember, CowVolume } from './cow';

export interface OpenExportOptions {
  name: string;
  description: string;
  mode: BackingMode;
  /** virtual size in bytes; at most the sum of the extents */
  size: number;
  extents: readonly ExtentSpec[];
  pool: BackingPool;
}

export class ExtentExport implements Export, JobOwner, CowMember {
  readonly name: string;
  readonly description: string;
  readonly isReadOnly: boolean;
  readonly canFlush = true;
  readonly canFua = true;
  readonly canTrim: boolean;
  readonly canZero: boolean;
  readonly canFastZero: boolean;
  readonly canCache = true;
  readonly canMultiConn = true;
  readonly blockSizeMin = 1;
  readonly blockSizePreferred: number;
  readonly blockSizeMax = LIMITS.exportBlockSizeMax;
  private state: ExtentState;
  private readonly mode: BackingMode;
  private readonly pool: BackingPool;
  /** every pool entry this export holds a reference on, by path */
  private readonly held: Map<string, PooledBacking>;
  private isClosed = false;
  private closing: Promise<void> | null = null;
  /** requests started and not yet settled; close() waits for none before releasing descriptors */
  private readonly flight = new FlightTracker();
  /** the VD's copy-on-write, when the export is attached to one (attachCow) */
  private cow: CowVolume | null = null;
  private scratch: Buffer | null = null;
  /** this export's batch scratch for writes (extent-write) */
  private readonly batcher = new WriteBatcher();
  /** onMapReplaced() listeners: connections whose data-path thread holds the old map */
  private readonly mapListeners = new Set<() => void | Promise<void>>();
  /** the listeners' answers to the last swap: every data-path thread took the map */
  private swapped: Promise<unknown> = Promise.resolve();

  /** Use openExport(); the entries are already acquired and owned by the export from here on. */
  constructor(options: OpenExportOptions, map: ExtentMap, held: Map<string, PooledBacking>) {
    this.name = options.name;
    this.description = options.description;
    this.mode = options.mode;
    this.pool = options.pool;
    this.held = held;
    this.state = makeExtentState(map, held, options.size);
    const backings = [...held.values()].map((entry) => entry.backing);
    this.isReadOnly = options.mode === 'r' || backings.some((backing) => !backing.isWritable);
    this.canTrim = !this.isReadOnly && backings.every((backing) => backing.canTrim);
    this.canZero = !this.isReadOnly;
    this.canFastZero = !this.isReadOnly;
    const sector = Math.max(1, ...backings.map((backing) => backing.sectorSize));
    this.blockSizePreferred = Math.max(LIMITS.exportBlockSizePreferred, sector);
  }

  get size(): number {
    return this.state.size;
  }

  /** The map requests starting now will use. */
  get map(): ExtentMap {
    return this.state.map;
  }

  /**
   * Swaps in a new map (enlarge, changed VBD). New backings are opened first; requests in flight
   * finish on the map they started with.
   */
  async replaceMap(map: ExtentMap, size: number = map.sizeVirtual): Promise<void> {
    this.checkOpen('replaceMap');
    for (const path of map.paths) {
      if (this.held.has(path)) continue;
      const entry = await this.pool.acquire(path, this.mode);
      if (this.isClosed) {
        await this.pool.release(entry);
        this.checkOpen('replaceMap');
      }
      this.held.set(path, entry);
    }
    await checkExtentsFit(map, this.held);
    this.flight.retire(this.state);
    this.state = makeExtentState(map, this.held, size);
    this.swapped = Promise.all([...this.mapListeners].map(async (listener) => listener()));
  }

  /** Joins the VD's copy-on-write (cow.ts); its map must be the volume's. */
  attachCow(volume: CowVolume): void {
    assert(this.cow === null);
    this.cow = volume;
    volume.attach(this);
  }

  /** CowMember: `map` for requests from now on, at this export's size; threads included. */
  async swapMap(map: ExtentMap): Promise<void> {
    if (this.isClosed) return;
    await this.replaceMap(map, this.state.size);
    await this.swapped;
  }

  /** CowMember: every request on a replaced map settled. */
  drainedBefore(): Promise<void> {
    return this.flight.drainedBefore();
  }

  /** fdatasync of every backing (FLUSH, FUA after copy-on-write). */
  syncAll(): Promise<void> {
    return settleAll([...this.held.values()].map((entry) => entry.sync()));
  }

  read(offset: number, length: number, target: Buffer, targetOffset: number): Promise<void> {
    const state = this.state;
    try {
      this.checkRequest('read', state, offset, length);
      assert(Number.isSafeInteger(targetOffset) && targetOffset >= 0);
      assert(targetOffset + length <= target.length);
    } catch (error) {
      return Promise.reject(error);
    }
    this.flight.enter(state);
    return new Promise<void>((resolve, reject) => {
      issueRead(new Job(this, state, target, targetOffset, length, resolve, reject), offset,
        length);
    });
  }

  readSparse(
    offset: number,
    length: number,
    target: Buffer,
    targetOffset: number,
  ): Promise<ReadPiece[]> {
    return readSparse(this, this.state, offset, length, target, targetOffset);
  }

  /**
   * Export.dataPlane: the export is its own source (planRead, datapathMap, onMapReplaced); none
   * over an RBD image, which no thread can reach by a descriptor (the JS path serves it).
   */
  get dataPlane(): DataPlaneSource | undefined {
    return this.state.entries.some((entry) => entry.backing.kind === 'rbd') ? undefined : this;
  }

  planRead(offset: number, length: number, requireData: boolean): ReadPlan | null {
    if (this.isClosed) return null;
    const state = this.state;
    const pieces = planReadPieces(state, offset, length, requireData);
    if (pieces === null) return null;
    this.flight.enter(state);
    let isDone = false;
    return {
      pieces,
      done: (): void => {
        if (isDone) return;
        isDone = true;
        this.leave(state);
      },
    };
  }

  datapathMap(): DatapathMap | null {
    if (this.isClosed) return null;
    return datapathMapOf(this.state, !this.isReadOnly, this.held);
  }

  onMapReplaced(listener: () => void | Promise<void>): () => void {
    this.mapListeners.add(listener);
    return () => this.mapListeners.delete(listener);
  }

  write(offset: number, data: Buffer, flags: WriteFlags): Promise<void> {
    const state = this.state;
    const length = data.length;
    try {
      this.checkRequest('write', state, offset, length);
      this.checkWritable('write');
    } catch (error) {
      return Promise.reject(error);
    }
    if (this.needsCow(state, offset, length, flags.fua)) {
      return this.withCow(state, offset, length, flags.fua, () => this.write(offset, data,
        { ...flags, fua: false }));
    }
    this.flight.enter(state);
    return new Promise<void>((resolve, reject) => {
      const done = flags.fua
        ? (): void => {
          syncTouched(job.touched).then(() => {
            this.leave(state);
            resolve();
          }, (error: unknown) => {
            this.leave(state);
            reject(error);
          });
        }
        : resolve;
      const job: Job = new Job(this, state, data, 0, length, done, reject);
      job.isFua = flags.fua;
      issueWrite(job, offset, this.batcher);
    });
  }

  async flush(): Promise<void> {
    this.checkOpen('flush');
    const state = this.state;
    await this.tracked(state, () => this.syncAll());
    // not counted in flight: the commit waits for requests on replaced maps (cow.ts)
    if (this.cow?.hasUncommitted === true) await this.cow.commitPending();
  }

  /**
   * A write, zero or trim that may need copy-on-write: breaks the shared extents under it
   * first, then runs `run` (the request without FUA) on the new map; FUA then syncs and commits
   * the pending remaps (cow.ts). Counted in flight until the commit, which waits for requests
   * on replaced maps and so must not wait for itself.
   */
  private async withCow(state: ExtentState, offset: number, length: number, isFua: boolean,
    run: () => Promise<void>): Promise<void> {
    const cow = this.cow;
    if (cow === null) {
      throw new IoError('EPERM', 'write', `write: EPERM: ${this.name} maps shared extents ` +
        'without copy-on-write');
    }
    await this.tracked(state, async () => {
      await cow.breakShared(offset, length);
      await run();
      if (isFua) await this.syncAll();
    });
    if (isFua && cow.hasUncommitted) await cow.commitPending();
  }

  private needsCow(state: ExtentState, offset: number, length: number, isFua: boolean): boolean {
    return state.map.touchesShared(offset, length) ||
      (isFua && this.cow?.hasUncommitted === true);
  }

  async trim(offset: number, length: number, flags: WriteFlags): Promise<void> {
    const state = this.state;
    this.checkRequest('trim', state, offset, length);
    this.checkWritable('trim');
    if (this.needsCow(state, offset, length, flags.fua)) {
      return this.withCow(state, offset, length, flags.fua, () => this.trim(offset, length,
        { ...flags, fua: false }));
    }
    const pieces = state.map.translate(offset, length);
    await this.tracked(state, () => eachPieceThenSync(state, pieces, flags.fua, (entry, piece) =>
      entry.backing.trim(piece.offsetBacking, piece.length).finally(() => entry.markHoled())));
  }

  async zero(offset: number, length: number, flags: ZeroFlags): Promise<void> {
    const state = this.state;
    this.checkRequest('zero', state, offset, length);
    this.checkWritable('zero');
    if (this.needsCow(state, offset, length, flags.fua)) {
      return this.withCow(state, offset, length, flags.fua, () => this.zero(offset, length,
        { ...flags, fua: false }));
    }
    const pieces = state.map.translate(offset, length);
    await this.tracked(state, () => eachPieceThenSync(state, pieces, flags.fua, (entry, piece) =>
      entry.backing.zero(piece.offsetBacking, piece.length, flags.mayTrim, flags.fastOnly)
        .finally(() => entry.markHoled())));
  }

  async blockStatus(offset: number, length: number, runsMax: number): Promise<StatusRun[]> {
    const state = this.state;
    this.checkRequest('blockStatus', state, offset, length);
    assert(Number.isInteger(runsMax) && runsMax >= 1);
    return this.tracked(state, () => statusOfExtents(state, offset, length, runsMax));
  }

  async cache(offset: number, length: number): Promise<void> {
    this.checkRequest('cache', this.state, offset, length);
    this.scratch ??= Buffer.alloc(LIMITS.cacheChunkBytes);
    await readAhead(this, offset, length, this.scratch);
  }

  /** Refuses new requests, waits for those in flight, then releases the descriptors. */
  close(): Promise<void> {
    if (this.closing === null) {
      this.isClosed = true;
      this.closing = this.flight.drained().then(() => {
        this.cow?.detach(this);
        const entries = [...this.held.values()];
        this.held.clear();
        return settleAll(entries.map((entry) => this.pool.release(entry)));
      });
    }
    return this.closing;
  }

  /** JobOwner: one request on `state` settled. */
  leave(state: ExtentState): void {
    this.flight.leave(state);
  }

  private async tracked<T>(state: ExtentState, run: () => Promise<T>): Promise<T> {
    this.flight.enter(state);
    try {
      return await run();
    } finally {
      this.leave(state);
    }
  }

  private checkOpen(op: string): void {
    if (this.isClosed) throw new IoError('ESHUTDOWN', op, `${op}: ESHUTDOWN: export is closed`);
  }

  private checkRequest(op: string, state: ExtentState, offset: number, length: number): void {
    this.checkOpen(op);
    assert(Number.isSafeInteger(offset) && offset >= 0);
    assert(Number.isSafeInteger(length) && length > 0);
    assert(offset + length <= state.size); // validated by src/nbd against size
  }

  private checkWritable(op: string): void {
    if (this.isReadOnly) throw new IoError('EPERM', op, `${op}: EPERM: ${this.name} is read-only`);
  }
}

/** Opens every backing of the extent list through the pool and returns the export. */
export async function openExport(options: OpenExportOptions): Promise<ExtentExport> {
  const map = ExtentMap.fromList(options.extents);
  const held = new Map<string, PooledBacking>();
  try {
    for (const path of map.paths) held.set(path, await options.pool.acquire(path, options.mode));
    await checkExtentsFit(map, held);
    return new ExtentExport(options, map, held);
  } catch (error) {
    await Promise.allSettled([...held.values()].map((entry) => options.pool.release(entry)));
    throw error;
  }
}
