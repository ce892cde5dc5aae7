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
 * learnHoles() finds the first hole at open: below it (allDataEnd) block status answers "data"
 * without any syscall, and isAllData() says so synchronously (the engine then skips sparse-read
 * work). This backing's own zero/trim lowers allDataEnd to the start of the range it touched
 * (only that range may have become holes). Reporting data where another process later punched a
 * hole is still correct (data that reads as zeros), so the shortcut is safe; only a stale "hole"
 * answer would not be.
 */
import { IoError } from '../errors';
import { log } from '../log';
import * as sys from '../sys/index';
import { isUnsupported, type BackingRun } from './backing';
import { FdBacking } from './fd-backing';
import { writeZeros } from './write-zeros';

export class FileBacking extends FdBacking {
  readonly kind = 'file' as const;
  readonly sectorSize = 1;
  readonly sizeBytes: number;
  canZeroRange = sys.isNative;
  canPunchHole = sys.isNative;
  canSeek = sys.isNative;
  /** [0, allDataEnd) is known to hold no hole (learned at open, lowered by zero/trim) */
  private allDataEnd = 0;

  constructor(path: string, fd: number, isWritable: boolean, sizeBytes: number) {
    super(path, fd, isWritable);
    this.sizeBytes = sizeBytes;
  }

  /** false only while the file is known to have no hole inside [0, sizeBytes) */
  get mayHaveHoles(): boolean {
    return this.allDataEnd < this.sizeBytes;
  }

  /** True when [offset, offset+length) is known to be all data (no syscall; see the header). */
  isAllData(offset: number, length: number): boolean {
    return !this.canSeek || offset + length <= this.allDataEnd;
  }

  /** Our own zero/trim of [offset, ..) may make holes there: forget what we knew from there on. */
  private mayPunch(offset: number): void {
    this.allDataEnd = Math.min(this.allDataEnd, offset);
  }

  get canTrim(): boolean {
    return this.canPunchHole && this.isWritable;
  }

  /** Checks once whether the file has any hole before its end (see the header). */
  async learnHoles(): Promise<void> {
    if (!this.canSeek || this.sizeBytes === 0) return;
    try {
      const hole = await sys.seekHole(this.fd, 0);
      this.allDataEnd = hole === -1 ? this.sizeBytes : Math.min(hole, this.sizeBytes);
    } catch (error) {
      if (!(error instanceof IoError) || !isUnsupported(error.errno)) throw error;
      this.canSeek = false;
    }
  }

  async zero(offset: number, length: number, mayTrim: boolean, fastOnly: boolean): Promise<void> {
    this.checkWritable('zero');
    this.mayPunch(offset);
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
    this.mayPunch(offset);
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
      while (cursor < end && runs.length < runsMax) {
        const data = await sys.seekData(this.fd, cursor);
        if (data === -1 || data >= end) {
          runs.push({ length: end - cursor, isHole: true, isZero: true });
          break;
        }
        if (data > cursor) {
          runs.push({ length: data - cursor, isHole: true, isZero: true });
          if (runs.length === runsMax) break;
        }
        const hole = await sys.seekHole(this.fd, data);
        const dataEnd = hole === -1 || hole > end ? end : hole;
        runs.push({ length: dataEnd - data, isHole: false, isZero: false });
        cursor = dataEnd;
      }
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
