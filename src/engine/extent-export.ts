/**
 * engine/extent-export: the Export over an ExtentMap and pooled backings; every byte of every VBD
 * goes through here.
 *
 * Data path (node-perf.md section 8): read and write translate the range with ExtentMap.visit (no
 * allocation) and issue one positioned fs.read/fs.write per piece, straight into/out of the
 * caller's buffer, callback style; pieces run concurrently and the request settles once, after
 * every piece has settled (so nothing writes into the caller's buffer after the promise settles).
 * A short read at EOF of a sparse file zero-fills the rest; a failed read zero-fills the whole
 * target range, so no path leaves uninitialised bytes in it (invariant 3).
 *
 * Durability (invariant 4): a completed write marks its pooled backing dirty; flush() syncs every
 * backing of the export (PooledBacking.sync runs fdatasync only for dirty ones and joins one in
 * flight), FUA syncs the backings the write touched before resolving, and a failed fdatasync makes
 * every later flush on that backing fail. Dirty state lives in the pool entry, shared by every
 * export and connection using the descriptor, so canMultiConn is true.
 *
 * Map swap: each request captures `this.state` ({map, entries}) when it starts and finishes on it;
 * replaceMap() acquires any new backings first, then swaps the state in one assignment. Backings
 * are released when the export closes (an enlarged map keeps them all anyway).
 *
 * Close: new requests reject with ESHUTDOWN at once; close() resolves after every request in
 * flight has settled and the descriptors are released, so no I/O ever reaches a descriptor number
 * that the pool has closed (and the kernel may have reused).
 *
 * Read-only (invariant 7): mode 'r' opens every backing O_RDONLY and write/trim/zero reject with
 * EPERM; a 'w' export whose backing the kernel would only open read-only is read-only too.
 * cache() is readahead by reading into one scratch buffer (Node has no posix_fadvise).
 */
import assert from 'node:assert';
import { IoError } from '../errors';
import { LIMITS } from '../limits';
import type { BackingPool, BackingMode, PooledBacking } from '../backing/pool';
import { FileBacking } from '../backing/file-backing';
import {
  BATCH_PIECE_FIELDS, BATCH_PIECES_MAX, writeBatch, type BatchCallback,
} from '../backing/batch';
import { DATAPATH_EXTENT_FIELDS, DATAPATH_EXTENT_KIND, type DatapathMap } from '../sys/index';
import { ExtentMap, type ExtentSpec, type Piece, type PieceVisitor } from './extent-map';
import type { Export, ReadPiece, ReadPlan, StatusRun, WriteFlags, ZeroFlags } from './export';

export interface OpenExportOptions {
  name: string;
  description: string;
  mode: BackingMode;
  /** virtual size in bytes; at most the sum of the extents */
  size: number;
  extents: readonly ExtentSpec[];
  pool: BackingPool;
}

interface EngineState {
  readonly map: ExtentMap;
  /** entries[i] backs map.paths[i] */
  readonly entries: readonly PooledBacking[];
  readonly size: number;
  /** batchFds[i]: entries[i]'s descriptor for writeBatch; null when one of them has none */
  readonly batchFds: readonly number[] | null;
  /** sendFds[i]: entries[i]'s descriptor for a sender thread; null when one of them has none */
  readonly sendFds: readonly number[] | null;
}

/** What a Job reports to when it settles: the export's in-flight count. */
interface JobOwner {
  leave(): void;
}

/** One read or write request in flight: counts pieces, keeps the first error, settles once. */
class Job {
  pending = 1;
  error: Error | null = null;
  touched: PooledBacking | PooledBacking[] | null = null;
  /** a FUA write: `resolve` syncs first and leaves the owner itself */
  isFua = false;
  constructor(
    readonly owner: JobOwner,
    readonly state: EngineState,
    readonly buffer: Buffer,
    readonly bufferBase: number,
    readonly length: number,
    readonly resolve: () => void,
    readonly reject: (error: Error) => void,
  ) {}

  touch(entry: PooledBacking): void {
    if (this.touched === null) this.touched = entry;
    else if (this.touched === entry) return;
    else if (Array.isArray(this.touched)) {
      if (!this.touched.includes(entry)) this.touched.push(entry);
    } else this.touched = [this.touched, entry];
  }
}

function pieceError(cause: unknown, syscall: string): IoError {
  return cause instanceof IoError ? cause : IoError.fromSystem(cause, syscall);
}

function readPiece(
  job: Job,
  finish: (job: Job) => void,
  entry: PooledBacking,
  bufferOffset: number,
  length: number,
  position: number,
  retries: number,
): void {
  entry.backing.read(job.buffer, bufferOffset, length, position, (error, bytes) => {
    if (error !== null) {
      job.error ??= pieceError(error, 'read');
    } else if (bytes < length) {
      if (bytes === 0) {
        job.buffer.fill(0, bufferOffset, bufferOffset + length); // EOF of a sparse file
      } else if (retries < LIMITS.shortIoRetriesMax) {
        readPiece(job, finish, entry, bufferOffset + bytes, length - bytes, position + bytes,
          retries + 1);
        return;
      } else {
        job.error ??= new IoError('EIO', 'read', 'read: EIO: too many short reads');
      }
    }
    finish(job);
  });
}

function writePiece(
  job: Job,
  entry: PooledBacking,
  bufferOffset: number,
  length: number,
  position: number,
  retries: number,
): void {
  entry.backing.write(job.buffer, bufferOffset, length, position, (error, bytes) => {
    entry.markDirty();
    if (error !== null) {
      job.error ??= pieceError(error, 'write');
    } else if (bytes < length) {
      if (bytes > 0 && retries < LIMITS.shortIoRetriesMax) {
        writePiece(job, entry, bufferOffset + bytes, length - bytes, position + bytes, retries + 1);
        return;
      }
      job.error ??= new IoError('EIO', 'write', `write: EIO: short write of ${bytes}/${length}`);
    }
    finishWrite(job);
  });
}

function finishRead(job: Job): void {
  if (--job.pending > 0) return;
  if (job.error === null) {
    job.owner.leave();
    job.resolve();
    return;
  }
  // on failure, overwrite whatever pieces did arrive: the caller gets zeros or nothing
  job.buffer.fill(0, job.bufferBase, job.bufferBase + job.length);
  job.owner.leave();
  job.reject(job.error);
}

function finishWrite(job: Job): void {
  if (--job.pending > 0) return;
  if (job.error === null && job.isFua) {
    job.resolve(); // syncs, then leaves
    return;
  }
  job.owner.leave();
  if (job.error === null) job.resolve();
  else job.reject(job.error);
}

/** Issues every piece; a throw (a broken map: a bug) still settles the job once. */
function visitSafely(job: Job, offset: number, length: number, visitor: PieceVisitor<Job>): void {
  try {
    job.state.map.visit(offset, length, visitor, job);
  } catch (error) {
    job.error ??= error instanceof Error ? error : new Error(String(error));
  }
}

function visitRead(
  job: Job,
  backingIndex: number,
  offsetBacking: number,
  length: number,
  offsetRequest: number,
): void {
  const entry = job.state.entries[backingIndex];
  assert(entry !== undefined);
  job.pending++;
  readPiece(job, finishRead, entry, job.bufferBase + offsetRequest, length, offsetBacking, 0);
}

function visitWrite(
  job: Job,
  backingIndex: number,
  offsetBacking: number,
  length: number,
  offsetRequest: number,
): void {
  const entry = job.state.entries[backingIndex];
  assert(entry !== undefined);
  job.pending++;
  job.touch(entry);
  writePiece(job, entry, job.bufferBase + offsetRequest, length, offsetBacking, 0);
}

/** The pieces of the request being issued (the calls copy them: one array serves). */
let batchPieces = new Float64Array(BATCH_PIECE_FIELDS * 64);
let batchCount = 0;
/** the backing index of every piece so far: -2 before the first piece, -1 once two differ */
let batchBacking = -2;

/**
 * Issues a write as one batch: on its backing's writer thread when every piece is on one
 * backing (the usual case), else as one pool job (writeBatch). False when the request has more
 * pieces than one batch takes: the caller then issues them one by one.
 */
function issueBatch(job: Job, offset: number, length: number): boolean {
  batchCount = 0;
  batchBacking = -2;
  visitSafely(job, offset, length, visitBatch);
  if (job.error !== null || batchCount === 0) return true;
  if (batchCount > BATCH_PIECES_MAX) {
    job.touched = null;
    return false;
  }
  const pieces = batchPieces.subarray(0, BATCH_PIECE_FIELDS * batchCount);
  const done: BatchCallback = (error, index) => finishBatch(job, error, index);
  const backing = batchBacking >= 0 ? job.state.entries[batchBacking]?.backing : undefined;
  try {
    if (backing?.writeBatch !== undefined) backing.writeBatch(job.buffer, pieces, done);
    else writeBatch(job.buffer, pieces, done);
    job.pending++; // submitted: `done` will run once
  } catch (error) {
    job.error ??= pieceError(error, 'write'); // nothing was queued, nothing written
  }
  return true;
}

function visitBatch(
  job: Job,
  backingIndex: number,
  offsetBacking: number,
  length: number,
  offsetRequest: number,
): void {
  const fds = job.state.batchFds;
  const entry = job.state.entries[backingIndex];
  assert(fds !== null && entry !== undefined);
  if (batchCount < BATCH_PIECES_MAX) {
    let at = BATCH_PIECE_FIELDS * batchCount;
    if (at + BATCH_PIECE_FIELDS > batchPieces.length) {
      const grown = new Float64Array(2 * batchPieces.length);
      grown.set(batchPieces);
      batchPieces = grown;
    }
    batchPieces[at++] = fds[backingIndex]!;
    batchPieces[at++] = job.bufferBase + offsetRequest;
    batchPieces[at++] = length;
    batchPieces[at] = offsetBacking;
  }
  batchCount++;
  batchBacking = batchBacking === -2 || batchBacking === backingIndex ? backingIndex : -1;
  job.touch(entry);
}

function finishBatch(job: Job, error: NodeJS.ErrnoException | null, index: number): void {
  forEachTouched(job.touched, (entry) => entry.markDirty());
  if (error !== null) {
    job.error ??= pieceError(error, 'write');
  } else if (index >= 0) {
    job.error ??= new IoError('EIO', 'write', `write: EIO: short write of piece ${index}`);
  }
  finishWrite(job);
}

function forEachTouched(
  touched: PooledBacking | PooledBacking[] | null, visit: (entry: PooledBacking) => void,
): void {
  if (touched === null) return;
  if (Array.isArray(touched)) touched.forEach(visit);
  else visit(touched);
}

async function settleAll(runs: Promise<void>[]): Promise<void> {
  const results = await Promise.allSettled(runs);
  for (const result of results) {
    if (result.status === 'rejected') throw pieceError(result.reason, 'io');
  }
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
  private state: EngineState;
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
  /** onMapReplaced() listeners: connections whose data-path thread holds the old map */
  private readonly mapListeners = new Set<() => void>();

  /** Use openExport(); the entries are already acquired and owned by the export from here on. */
  constructor(options: OpenExportOptions, map: ExtentMap, held: Map<string, PooledBacking>) {
    this.name = options.name;
    this.description = options.description;
    this.mode = options.mode;
    this.pool = options.pool;
    this.held = held;
    this.state = ExtentExport.makeState(map, held, options.size);
    const backings = [...held.values()].map((entry) => entry.backing);
    this.isReadOnly = options.mode === 'r' || backings.some((backing) => !backing.isWritable);
    this.canTrim = !this.isReadOnly && backings.every((backing) => backing.canTrim);
    this.canZero = !this.isReadOnly;
    this.canFastZero = !this.isReadOnly;
    const sector = Math.max(1, ...backings.map((backing) => backing.sectorSize));
    this.blockSizePreferred = Math.max(LIMITS.exportBlockSizePreferred, sector);
  }

  private static makeState(
    map: ExtentMap,
    held: Map<string, PooledBacking>,
    size: number,
  ): EngineState {
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
    return { map, entries, size, batchFds, sendFds };
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
    this.state = ExtentExport.makeState(map, this.held, size);
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
      const job = new Job(this, state, target, targetOffset, length, resolve, reject);
      visitSafely(job, offset, length, visitRead);
      finishRead(job);
    });
  }

  async readSparse(
    offset: number,
    length: number,
    target: Buffer,
    targetOffset: number,
  ): Promise<ReadPiece[]> {
    if (isAllData(this.state, offset, length)) {
      // no hole to find: skip the block-status round (seeks, promises) on every large READ
      await this.read(offset, length, target, targetOffset);
      return [{ offset: 0, length, isZero: false }];
    }
    const runs = await this.blockStatus(offset, length, LIMITS.readSparseRunsMax);
    const pieces: ReadPiece[] = []; // offsets relative to the start of the request
    let cursor = 0;
    for (const run of runs) {
      addPiece(pieces, cursor, run.length, run.isZero);
      cursor += run.length;
    }
    if (cursor < length) addPiece(pieces, cursor, length - cursor, false);
    const reads: Promise<void>[] = [];
    for (const piece of pieces) {
      const at = targetOffset + piece.offset;
      if (piece.isZero) target.fill(0, at, at + piece.length);
      else reads.push(this.read(offset + piece.offset, piece.length, target, at));
    }
    try {
      await settleAll(reads);
    } catch (error) {
      target.fill(0, targetOffset, targetOffset + length);
      throw error;
    }
    return pieces;
  }

  planRead(offset: number, length: number, requireData: boolean): ReadPlan | null {
    const state = this.state;
    if (this.isClosed || state.sendFds === null || !Number.isSafeInteger(offset) ||
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
    this.inflight++;
    let isDone = false;
    return {
      pieces: Float64Array.from(plan.pieces),
      done: (): void => {
        if (isDone) return;
        isDone = true;
        this.leave();
      },
    };
  }

  datapathMap(): DatapathMap | null {
    const state = this.state;
    if (this.isClosed || state.sendFds === null) return null;
    const { map, entries } = state;
    const indexOf = new Map(map.paths.map((path, index) => [path, index]));
    const extents = new Float64Array(DATAPATH_EXTENT_FIELDS * map.count);
    for (let index = 0; index < map.count; index++) {
      const extent = map.at(index);
      const backingIndex = indexOf.get(extent.path)!;
      const length = extent.endVirtual - extent.startVirtual;
      const backing = entries[backingIndex]!.backing;
      // the data runs mapped at open spare the thread a SEEK_HOLE per large structured READ
      const kind = backing.kind === 'device' ? DATAPATH_EXTENT_KIND.device
        : backing instanceof FileBacking && backing.isAllData(extent.offsetBacking, length)
          ? DATAPATH_EXTENT_KIND.fileAllData : DATAPATH_EXTENT_KIND.file;
      extents.set([extent.startVirtual, length, state.sendFds[backingIndex]!, extent.offsetBacking,
        backingIndex, kind], DATAPATH_EXTENT_FIELDS * index);
    }
    return { extents, size: state.size, isWritable: !this.isReadOnly,
      dirty: entries.map((entry) => entry.dirtyFlag) };
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
      if (state.batchFds === null || !issueBatch(job, offset, length)) {
        visitSafely(job, offset, length, visitWrite);
      }
      finishWrite(job);
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
    await this.tracked(async () => {
      await this.eachPiece(state, pieces, (entry, piece) =>
        entry.backing.trim(piece.offsetBacking, piece.length).finally(() => entry.markHoled()));
      if (flags.fua) await syncTouched(touchedBy(state, pieces));
    });
  }

  async zero(offset: number, length: number, flags: ZeroFlags): Promise<void> {
    const state = this.state;
    this.checkRequest('zero', state, offset, length);
    this.checkWritable('zero');
    const pieces = state.map.translate(offset, length);
    await this.tracked(async () => {
      await this.eachPiece(state, pieces, (entry, piece) =>
        entry.backing.zero(piece.offsetBacking, piece.length, flags.mayTrim, flags.fastOnly)
          .finally(() => entry.markHoled()));
      if (flags.fua) await syncTouched(touchedBy(state, pieces));
    });
  }

  async blockStatus(offset: number, length: number, runsMax: number): Promise<StatusRun[]> {
    const state = this.state;
    this.checkRequest('blockStatus', state, offset, length);
    assert(Number.isInteger(runsMax) && runsMax >= 1);
    return this.tracked(() => this.blockStatusOn(state, offset, length, runsMax));
  }

  private async blockStatusOn(
    state: EngineState,
    offset: number,
    length: number,
    runsMax: number,
  ): Promise<StatusRun[]> {
    const clipped = clipToPieces(state.map, offset, length, LIMITS.blockStatusPiecesMax);
    const runs: StatusRun[] = [];
    for (const piece of state.map.translate(offset, clipped)) {
      const entry = state.entries[piece.backingIndex];
      assert(entry !== undefined);
      const budget = runsMax - runs.length + 1; // the first may merge into our last run
      const found = await entry.backing.blockStatus(piece.offsetBacking, piece.length, budget);
      assert(found.length >= 1);
      let covered = 0;
      for (const run of found) {
        assert(run.length > 0);
        const last = runs[runs.length - 1];
        if (last !== undefined && last.isHole === run.isHole && last.isZero === run.isZero) {
          last.length += run.length;
        } else if (runs.length < runsMax) {
          runs.push({ length: run.length, isHole: run.isHole, isZero: run.isZero });
        } else {
          return runs;
        }
        covered += run.length;
      }
      assert(covered <= piece.length);
      if (covered < piece.length) break; // the backing answered a prefix
    }
    assert(runs.length >= 1 && runs.length <= runsMax);
    return runs;
  }

  async cache(offset: number, length: number): Promise<void> {
    const state = this.state;
    this.checkRequest('cache', state, offset, length);
    this.scratch ??= Buffer.alloc(LIMITS.cacheChunkBytes);
    const scratch = this.scratch;
    for (let cursor = offset; cursor < offset + length; cursor += scratch.length) {
      await this.read(cursor, Math.min(scratch.length, offset + length - cursor), scratch, 0);
    }
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

  private async eachPiece(
    state: EngineState,
    pieces: Piece[],
    run: (entry: PooledBacking, piece: Piece) => Promise<void>,
  ): Promise<void> {
    await settleAll(pieces.map(async (piece) => {
      const entry = state.entries[piece.backingIndex];
      assert(entry !== undefined);
      try {
        await run(entry, piece);
      } finally {
        entry.markDirty();
      }
    }));
  }

  private checkOpen(op: string): void {
    if (this.isClosed) throw new IoError('ESHUTDOWN', op, `${op}: ESHUTDOWN: export is closed`);
  }

  private checkRequest(op: string, state: EngineState, offset: number, length: number): void {
    this.checkOpen(op);
    assert(Number.isSafeInteger(offset) && offset >= 0);
    assert(Number.isSafeInteger(length) && length > 0);
    assert(offset + length <= state.size); // validated by src/nbd against size
  }

  private checkWritable(op: string): void {
    if (this.isReadOnly) throw new IoError('EPERM', op, `${op}: EPERM: ${this.name} is read-only`);
  }
}

/**
 * True when every backing byte under [offset, offset+length) is known to be data without a
 * syscall: devices always (block status reports them as data), files below their first hole.
 */
function isAllData(state: EngineState, offset: number, length: number): boolean {
  if (offset < 0 || length <= 0 || offset + length > state.size) return false; // read() rejects
  const probe = { state, isAllData: true };
  state.map.visit(offset, length, probePiece, probe);
  return probe.isAllData;
}

function probePiece(
  probe: { state: EngineState; isAllData: boolean },
  backingIndex: number,
  offsetBacking: number,
  length: number,
): void {
  const backing = probe.state.entries[backingIndex]?.backing;
  const isData = backing instanceof FileBacking
    ? backing.isAllData(offsetBacking, length)
    : backing?.kind === 'device';
  if (!isData) probe.isAllData = false;
}

interface PlanContext {
  readonly fds: readonly number[];
  readonly pieces: number[];
}

function planPiece(plan: PlanContext, backingIndex: number, offsetBacking: number,
  length: number): void {
  plan.pieces.push(plan.fds[backingIndex]!, offsetBacking, length);
}

function syncTouched(touched: PooledBacking | PooledBacking[] | null): Promise<void> {
  if (touched === null) return Promise.resolve();
  if (!Array.isArray(touched)) return touched.sync();
  return settleAll(touched.map((entry) => entry.sync()));
}

function touchedBy(state: EngineState, pieces: Piece[]): PooledBacking[] {
  const entries = new Set<PooledBacking>();
  for (const piece of pieces) {
    const entry = state.entries[piece.backingIndex];
    assert(entry !== undefined);
    entries.add(entry);
  }
  return [...entries];
}

function addPiece(pieces: ReadPiece[], offset: number, length: number, isZero: boolean): void {
  const last = pieces[pieces.length - 1];
  if (last !== undefined && last.isZero === isZero) last.length += length;
  else pieces.push({ offset, length, isZero });
}

/** The prefix of [offset, offset+length) that spans at most `piecesMax` extents. */
function clipToPieces(map: ExtentMap, offset: number, length: number, piecesMax: number): number {
  const first = map.indexOf(offset);
  const last = Math.min(map.count - 1, first + piecesMax - 1);
  return Math.min(offset + length, map.at(last).endVirtual) - offset;
}

/** Devices have a kernel size: every extent on one must lie inside it. */
async function checkExtentsFit(map: ExtentMap, held: Map<string, PooledBacking>): Promise<void> {
  for (let index = 0; index < map.count; index++) {
    const extent = map.at(index);
    const backing = held.get(extent.path)?.backing;
    assert(backing !== undefined);
    if (backing.kind !== 'device') continue;
    const end = extent.offsetBacking + (extent.endVirtual - extent.startVirtual);
    if (end > backing.sizeBytes) {
      throw new IoError('EINVAL', 'open', `open: EINVAL: extent ends at ${end} past the end of ` +
        `${extent.path} (${backing.sizeBytes} bytes)`);
    }
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
