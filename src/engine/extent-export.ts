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
 * onMapReplaced listeners (connections whose data-path thread holds the old map). Backings are
 * released when the export closes (an enlarged map keeps them all anyway).
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

export interface OpenExportOptions {
  name: string;
  description: string;
  mode: BackingMode;
  /** virtual size in bytes; at most the sum of the extents */
  size: number;
  extents: readonly ExtentSpec[];
  pool: BackingPool;
}

export class ExtentExport implements Export, JobOwner {
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
  /** requests started and not yet settled; close() waits for 0 before releasing descriptors */
  private inflight = 0;
  private onDrained: (() => void) | null = null;
  private scratch: Buffer | null = null;
  /** this export's batch scratch for writes (extent-write) */
  private readonly batcher = new WriteBatcher();
  /** onMapReplaced() listeners: connections whose data-path thread holds the old map */
  private readonly mapListeners = new Set<() => void>();

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
    this.state = makeExtentState(map, this.held, size);
    for (const listener of [...this.mapListeners]) listener();
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
    this.inflight++;
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
    const pieces = planReadPieces(this.state, offset, length, requireData);
    if (pieces === null) return null;
    this.inflight++;
    let isDone = false;
    return {
      pieces,
      done: (): void => {
        if (isDone) return;
        isDone = true;
        this.leave();
      },
    };
  }

  datapathMap(): DatapathMap | null {
    if (this.isClosed) return null;
    return datapathMapOf(this.state, !this.isReadOnly);
  }

  onMapReplaced(listener: () => void): () => void {
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
    this.inflight++;
    return new Promise<void>((resolve, reject) => {
      const done = flags.fua
        ? (): void => {
          syncTouched(job.touched).then(() => {
            this.leave();
            resolve();
          }, (error: unknown) => {
            this.leave();
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
    await this.tracked(() => settleAll([...this.held.values()].map((entry) => entry.sync())));
  }

  async trim(offset: number, length: number, flags: WriteFlags): Promise<void> {
    const state = this.state;
    this.checkRequest('trim', state, offset, length);
    this.checkWritable('trim');
    const pieces = state.map.translate(offset, length);
    await this.tracked(() => eachPieceThenSync(state, pieces, flags.fua, (entry, piece) =>
      entry.backing.trim(piece.offsetBacking, piece.length).finally(() => entry.markHoled())));
  }

  async zero(offset: number, length: number, flags: ZeroFlags): Promise<void> {
    const state = this.state;
    this.checkRequest('zero', state, offset, length);
    this.checkWritable('zero');
    const pieces = state.map.translate(offset, length);
    await this.tracked(() => eachPieceThenSync(state, pieces, flags.fua, (entry, piece) =>
      entry.backing.zero(piece.offsetBacking, piece.length, flags.mayTrim, flags.fastOnly)
        .finally(() => entry.markHoled())));
  }

  async blockStatus(offset: number, length: number, runsMax: number): Promise<StatusRun[]> {
    const state = this.state;
    this.checkRequest('blockStatus', state, offset, length);
    assert(Number.isInteger(runsMax) && runsMax >= 1);
    return this.tracked(() => statusOfExtents(state, offset, length, runsMax));
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
      this.closing = this.drain().then(() => {
        const entries = [...this.held.values()];
        this.held.clear();
        return settleAll(entries.map((entry) => this.pool.release(entry)));
      });
    }
    return this.closing;
  }

  /** JobOwner: one request settled. */
  leave(): void {
    assert(this.inflight > 0);
    this.inflight--;
    if (this.inflight === 0 && this.onDrained !== null) this.onDrained();
  }

  private drain(): Promise<void> {
    if (this.inflight === 0) return Promise.resolve();
    return new Promise((resolve) => {
      this.onDrained = resolve;
    });
  }

  private async tracked<T>(run: () => Promise<T>): Promise<T> {
    this.inflight++;
    try {
      return await run();
    } finally {
      this.leave();
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
