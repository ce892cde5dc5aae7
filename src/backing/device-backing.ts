/**
 * backing/device-backing: a block device or partition (loop devices in tests).
 *
 * Size from ioctl(BLKGETSIZE64), sector size from BLKSSZGET: from the kernel, never guessed.
 * What the device can do is read once at open from sysfs (/sys/dev/block/MAJ:MIN/queue):
 * discard_max_bytes > 0 means BLKDISCARD works (canTrim); write_zeroes_max_bytes > 0 means
 * BLKZEROOUT is offloaded (fast); with 0 the kernel would write zeros itself (slow).
 * Zeroing ladder: BLKDISCARD when mayTrim and the device says discarded sectors read as zeros;
 * then BLKZEROOUT (refused when fastOnly and it is not offloaded); then writing zeros. The ioctls
 * need sector alignment, so an unaligned head and tail are written as zeros.
 * Block status: all data (a device has no holes we can see).
 */
import fs from 'node:fs';
import { IoError } from '../errors';
import { log } from '../log';
import * as sys from '../sys/index';
import { isUnsupported, type BackingRun } from './backing';
import { FdBacking } from './fd-backing';
import { writeZeros } from './write-zeros';

/** Reads one number from the device's sysfs directory (`name` relative to it); 0 when absent. */
export function sysfsValue(rdev: number, name: string): number {
  const major = Math.floor(rdev / 256) & 0xfff;
  const minor = (rdev & 0xff) | ((Math.floor(rdev / 4096) & 0xfff00) >>> 0);
  try {
    const text = fs.readFileSync(`/sys/dev/block/${major}:${minor}/${name}`, 'utf8');
    const value = Number(text.trim());
    return Number.isSafeInteger(value) ? value : 0;
  } catch {
    return 0;
  }
}

export class DeviceBacking extends FdBacking {
  readonly kind = 'device' as const;
  readonly sizeBytes: number;
  readonly sectorSize: number;
  canDiscard: boolean;
  canZeroout: boolean;
  isZerooutFast: boolean;
  readonly doesDiscardZero: boolean;

  constructor(path: string, fd: number, isWritable: boolean, rdev: number) {
    super(path, fd, isWritable);
    this.sizeBytes = sys.blockDeviceSize(fd);
    this.sectorSize = sys.blockDeviceSectorSize(fd);
    this.canDiscard = sys.isNative && sysfsValue(rdev, 'queue/discard_max_bytes') > 0;
    this.isZerooutFast = sys.isNative && sysfsValue(rdev, 'queue/write_zeroes_max_bytes') > 0;
    this.canZeroout = sys.isNative;
    let discardZeroes = false;
    try {
      discardZeroes = sys.blockDeviceDiscardZeroes(fd);
    } catch {
      discardZeroes = false;
    }
    this.doesDiscardZero = discardZeroes;
  }

  get canTrim(): boolean {
    return this.canDiscard && this.isWritable;
  }

  async zero(offset: number, length: number, mayTrim: boolean, fastOnly: boolean): Promise<void> {
    this.checkWritable('zero');
    const end = offset + length;
    const start = Math.ceil(offset / this.sectorSize) * this.sectorSize;
    const stop = Math.floor(end / this.sectorSize) * this.sectorSize;
    if (start >= stop) {
      if (fastOnly) throw this.notFast();
      await writeZeros(this, offset, length);
      return;
    }
    if (!(await this.zeroAligned(start, stop - start, mayTrim, fastOnly))) {
      if (fastOnly) throw this.notFast();
      await writeZeros(this, start, stop - start);
    }
    if (offset < start) await writeZeros(this, offset, start - offset);
    if (stop < end) await writeZeros(this, stop, end - stop);
  }

  async trim(offset: number, length: number): Promise<void> {
    this.checkWritable('trim');
    if (!this.canDiscard) return;
    const start = Math.ceil(offset / this.sectorSize) * this.sectorSize;
    const stop = Math.floor((offset + length) / this.sectorSize) * this.sectorSize;
    if (start >= stop) return;
    if (!(await this.tryOptional(() => sys.blkDiscard(this.fd, start, stop - start)))) {
      this.canDiscard = false;
    }
  }

  async blockStatus(_offset: number, length: number, _runsMax: number): Promise<BackingRun[]> {
    return [{ length, isHole: false, isZero: false }];
  }

  /** The fast rungs on a sector-aligned range: true when one of them did it. */
  private async zeroAligned(
    offset: number,
    length: number,
    mayTrim: boolean,
    fastOnly: boolean,
  ): Promise<boolean> {
    if (mayTrim && this.canDiscard && this.doesDiscardZero) {
      if (await this.tryOptional(() => sys.blkDiscard(this.fd, offset, length))) return true;
      this.canDiscard = false;
    }
    if (this.canZeroout && (this.isZerooutFast || !fastOnly)) {
      if (await this.tryOptional(() => sys.blkZeroout(this.fd, offset, length))) return true;
      this.canZeroout = false;
    }
    return false;
  }

  private notFast(): IoError {
    return new IoError('ENOTSUP', 'zero', `zero: ENOTSUP: no fast zeroing method on ${this.path}`);
  }

  private async tryOptional(run: () => Promise<void>): Promise<boolean> {
    try {
      await run();
      return true;
    } catch (error) {
      if (!(error instanceof IoError) || !isUnsupported(error.errno)) throw error;
      log.debug({ path: this.path, errno: error.errno }, 'device method unsupported');
      return false;
    }
  }
}
