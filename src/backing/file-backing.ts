/**
 * backing/file-backing: a regular file (a sparse image).
 *
 * Zeroing ladder, each rung learned once: fallocate(ZERO_RANGE) (fast, keeps blocks allocated);
 * then, only when holes are allowed (mayTrim), fallocate(PUNCH_HOLE) (fast; punched ranges of a
 * regular file read as zeros); then writing zeros (slow: refused with ENOTSUP when fastOnly).
 * Trim is PUNCH_HOLE, or a no-op once the file system has said it cannot punch.
 * Block status comes from SEEK_DATA/SEEK_HOLE (holes read as zeros); past EOF is a zero hole.
 * Without SEEK support everything is reported as data.
 *
 * learnHoles() maps the file's data runs at open (SEEK_DATA/SEEK_HOLE, at most
 * LIMITS.fileDataRunsLearnMax runs; past that the rest counts as unknown): inside a known run
 * block status answers "data" without any syscall, and isAllData() says so synchronously (the
 * engine finds that method as a capability, engine/extent-state hasKnownData, and then skips
 * sparse-read work; a pool member holding many VDs has one run per extent).
 * This backing's own zero/trim removes the range it touched from the known runs (only that range
 * may have become holes). Every data run a block-status query finds with SEEK_DATA/SEEK_HOLE is
 * learned too (up to LIMITS.fileDataRunsLearnMax runs), so a region written after open, such as
 * a new VD's zeroed extents once a client has filled them, costs its lseeks once rather than on
 * every READ; writes themselves are not learned.
 * Reporting data where another process later punched a hole is still correct (data that reads as
 * zeros), so the shortcut is safe; only a stale "hole" answer would not be. The runs also
 * outlive the descriptor: at close they are kept by the file's dev:ino with its ctime (the last
 * LIMITS.fileRunsRememberedMax files), and the next open of that file starts from them instead
 * of mapping it again when its ctime is unchanged (nothing wrote, punched or truncated it
 * meanwhile, and it is not another file on a reused inode). A VD on a pool member of 1 024
 * extent runs costs 2 048 lseeks to map, and every client that reconnects after the last one
 * left (every nbdcopy, say) reopened it. The lseeks of one mapping run in one thread-pool job
 * (sys.dataRuns): one at a time from JS, they took 120 ms of a fragmented VD's open.
 */
import fs from 'node:fs';
import { IoError } from '../errors';
import { LIMITS } from '../limits';
import { log } from '../log';
import * as sys from '../sys/index';
import { isUnsupported, type BackingRun } from './backing';
import { FdBacking } from './fd-backing';
import { writeZeros } from './write-zeros';

/** Data runs of files this process closed, by `dev:ino`, oldest first (see the header). */
const runsOfClosed = new Map<string, { starts: number[]; ends: number[]; ctimeMs: number }>();

export class FileBacking extends FdBacking {
  readonly kind = 'file' as const;
  readonly sectorSize = 1;
  readonly sizeBytes: number;
  canZeroRange = sys.isNative;
  canPunchHole = sys.isNative;
  canSeek = sys.isNative;
  /** sorted, disjoint runs [starts[i], ends[i]) known to hold no hole (see the header) */
  private dataStarts: number[] = [];
  private dataEnds: number[] = [];

  /** `dev:ino` and ctime at open: the key its data runs are kept under; null: not kept */
  private readonly identity: { key: string; ctimeMs: number } | null;
  private isRemembered = false;

  constructor(
    path: string, fd: number, isWritable: boolean, sizeBytes: number,
    identity: { key: string; ctimeMs: number } | null = null,
  ) {
    super(path, fd, isWritable);
    this.sizeBytes = sizeBytes;
    this.identity = identity;
  }

  /** false only while the file is known to have no hole inside [0, sizeBytes) */
  get mayHaveHoles(): boolean {
    return !this.isAllData(0, this.sizeBytes);
  }

  /** True when [offset, offset+length) is known to be all data (no syscall; see the header). */
  isAllData(offset: number, length: number): boolean {
    if (!this.canSeek) return true;
    const index = this.runIndexOf(offset);
    return index >= 0 && offset + length <= (this.dataEnds[index] as number);
  }

  /** Index of the known data run containing `offset`, or -1. */
  private runIndexOf(offset: number): number {
    let low = 0;
    let high = this.dataStarts.length - 1;
    while (low <= high) {
      const middle = (low + high) >>> 1;
      if ((this.dataStarts[middle] as number) <= offset) low = middle + 1;
      else high = middle - 1;
    }
    return high >= 0 && offset < (this.dataEnds[high] as number) ? high : -1;
  }

  /**
   * Adds [start, end), just seen to hold data, to the known runs, merged with any run it touches;
   * skipped when it would be a new run past LIMITS.fileDataRunsLearnMax.
   */
  private learnData(start: number, end: number): void {
    if (end <= start) return;
    // first run ending at or after start, last run starting at or before end: the ones to merge
    let low = 0;
    let high = this.dataEnds.length;
    while (low < high) {
      const middle = (low + high) >>> 1;
      if ((this.dataEnds[middle] as number) < start) low = middle + 1;
      else high = middle;
    }
    const first = low;
    let last = first - 1;
    while (last + 1 < this.dataStarts.length && (this.dataStarts[last + 1] as number) <= end) {
      last++;
    }
    if (last < first) {
      if (this.dataStarts.length >= LIMITS.fileDataRunsLearnMax) return;
      this.dataStarts.splice(first, 0, start);
      this.dataEnds.splice(first, 0, end);
      return;
    }
    const mergedStart = Math.min(start, this.dataStarts[first] as number);
    const mergedEnd = Math.max(end, this.dataEnds[last] as number);
    this.dataStarts.splice(first, last - first + 1, mergedStart);
    this.dataEnds.splice(first, last - first + 1, mergedEnd);
  }

  /** Our own zero/trim of [offset, offset+length) may make holes there: forget that range. */
  private mayPunch(offset: number, length: number): void {
    const end = offset + length;
    const starts: number[] = [];
    const ends: number[] = [];
    this.dataStarts.forEach((start, index) => {
      const runEnd = this.dataEnds[index] as number;
      if (runEnd <= offset || start >= end) {
        starts.push(start);
        ends.push(runEnd);
        return;
      }
      if (start < offset) {
        starts.push(start);
        ends.push(offset);
      }
      if (runEnd > end) {
        starts.push(end);
        ends.push(runEnd);
      }
    });
    this.dataStarts = starts;
    this.dataEnds = ends;
  }

  get canTrim(): boolean {
    return this.canPunchHole && this.isWritable;
  }

  /** Maps the data runs once, at open, or takes those kept at the last close (see the header). */
  async learnHoles(): Promise<void> {
    if (!this.canSeek || this.sizeBytes === 0) return;
    if (this.identity !== null) {
      const kept = runsOfClosed.get(this.identity.key);
      runsOfClosed.delete(this.identity.key);
      if (kept !== undefined && kept.ctimeMs === this.identity.ctimeMs) {
        this.dataStarts = kept.starts;
        this.dataEnds = kept.ends;
        return;
      }
    }
    // block status learns every data run it finds: at most the cap's runs, each after a hole
    await this.blockStatus(0, this.sizeBytes, 2 * LIMITS.fileDataRunsLearnMax + 1);
  }

  /** Keeps the known data runs for the next open of this file, then closes (see the header). */
  override close(): Promise<void> {
    if (!this.isRemembered && this.identity !== null && this.dataStarts.length > 0) {
      this.isRemembered = true;
      const ctimeMs = this.ctimeNow();
      runsOfClosed.delete(this.identity.key);
      if (ctimeMs !== null) {
        runsOfClosed.set(this.identity.key,
          { starts: this.dataStarts, ends: this.dataEnds, ctimeMs });
      }
      for (const key of runsOfClosed.keys()) {
        if (runsOfClosed.size <= LIMITS.fileRunsRememberedMax) break;
        runsOfClosed.delete(key);
      }
    }
    return super.close();
  }

  /** The file's ctime now (after this backing's own writes), or null when fstat fails. */
  private ctimeNow(): number | null {
    try {
      return fs.fstatSync(this.fd).ctimeMs;
    } catch {
      return null;
    }
  }

  async zero(offset: number, length: number, mayTrim: boolean, fastOnly: boolean): Promise<void> {
    this.checkWritable('zero');
    this.mayPunch(offset, length);
    if (this.canZeroRange) {
      const done = await this.tryOptional('fallocate(ZERO_RANGE)', () =>
        sys.zeroRange(this.fd, offset, length));
      if (done) return;
      this.canZeroRange = false;
    }
    if (mayTrim && this.canPunchHole) {
      const done = await this.tryOptional('fallocate(PUNCH_HOLE)', () =>
        sys.punchHole(this.fd, offset, length));
      if (done) return;
      this.canPunchHole = false;
    }
    if (fastOnly) {
      throw new IoError('ENOTSUP', 'zero', `zero: ENOTSUP: no fast zeroing method on ${this.path}`);
    }
    await writeZeros(this, offset, length);
  }

  async trim(offset: number, length: number): Promise<void> {
    this.checkWritable('trim');
    if (!this.canPunchHole) return;
    this.mayPunch(offset, length);
    const done = await this.tryOptional('fallocate(PUNCH_HOLE)', () =>
      sys.punchHole(this.fd, offset, length));
    if (!done) this.canPunchHole = false;
  }

  async blockStatus(offset: number, length: number, runsMax: number): Promise<BackingRun[]> {
    const end = offset + length;
    if (this.isAllData(offset, length)) return [{ length, isHole: false, isZero: false }];
    const runs: BackingRun[] = [];
    let cursor = offset;
    try {
      // a data run gives at most two runs (the hole before it, itself): runsMax of them suffice
      for (const found of await sys.dataRuns(this.fd, offset, end, runsMax)) {
        if (found.start > cursor) {
          runs.push({ length: found.start - cursor, isHole: true, isZero: true });
          if (runs.length === runsMax) return runs;
        }
        this.learnData(found.start, Math.min(found.end, this.sizeBytes));
        const dataEnd = Math.min(found.end, end);
        runs.push({ length: dataEnd - found.start, isHole: false, isZero: false });
        cursor = dataEnd;
        if (runs.length === runsMax) return runs;
      }
      if (cursor < end) runs.push({ length: end - cursor, isHole: true, isZero: true });
    } catch (error) {
      if (!(error instanceof IoError) || !isUnsupported(error.errno)) throw error;
      this.canSeek = false;
      log.debug({ path: this.path, errno: error.errno }, 'SEEK_DATA unsupported; all data');
      return [{ length, isHole: false, isZero: false }];
    }
    return runs;
  }

  /** Runs an optional method: true when it worked, false when unsupported; rethrows the rest. */
  private async tryOptional(name: string, run: () => Promise<void>): Promise<boolean> {
    try {
      await run();
      return true;
    } catch (error) {
      if (!(error instanceof IoError) || !isUnsupported(error.errno)) throw error;
      log.debug({ path: this.path, method: name, errno: error.errno }, 'method unsupported');
      return false;
    }
  }
}
