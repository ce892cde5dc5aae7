/**
 * backing/rbd-backing: an RBD image as a Backing, named `rbd:POOL/IMAGE`, through librbd's
 * asynchronous C API on the process's one RADOS client (src/ceph/client.ts, src/sys/ceph.ts).
 *
 * Every data call is one librbd aio call whose completion comes back to the event loop: read
 * (rbd_aio_read), write (rbd_aio_write), sync (rbd_aio_flush: FLUSH and FUA), trim
 * (rbd_aio_discard, advisory: librbd may skip discards smaller than an object), zero
 * (rbd_aio_write_zeroes, which always leaves zeros and is cheap: whole objects are removed;
 * where librbd lacks it, the ladder writes zeros, or ENOTSUP when fastOnly). Nothing blocks the
 * event loop. There is no descriptor (batchFd and sendFd are -1): exports over RBD are served on
 * the JS path, never by a data-path or sender thread.
 * Block status is what RBD knows (rbd_diff_iterate2, whole objects, the parent's included): an
 * object that does not exist reads as zeros (a hole); one that exists is data. Where RBD cannot
 * say (an error of UNSUPPORTED_ERRNOS), everything is data from then on. Reads never ask it first
 * (isAllData answers true): an unwritten object costs the OSD little to read, and a diff per read
 * would cost more.
 * Read-only opens use rbd_open_read_only: no write can reach the image (invariant 7).
 * The image's size is read at open; extents never reach past it (the catalog cut them from it).
 */
import { connectCeph } from '../ceph/client';
import { IoError, UsageError } from '../errors';
import { log } from '../log';
import * as sys from '../sys/index';
import { isUnsupported, type Backing, type BackingRun, type ByteCountCallback } from './backing';
import { writeZeros } from './write-zeros';

export const RBD_PREFIX = 'rbd:';

/** A pool or image name: no '/', '@' (snapshots) or whitespace, not empty. */
const NAME = /^[^/@\s]+$/;

/** True for paths naming an RBD image (`rbd:…`). */
export function isRbdPath(path: string): boolean {
  return path.startsWith(RBD_PREFIX);
}

/** The pool and image of a well-formed `rbd:POOL/IMAGE`, else null. */
function rbdNamesOf(path: string): { pool: string; image: string } | null {
  const [pool, image, ...rest] = path.slice(RBD_PREFIX.length).split('/');
  if (!isRbdPath(path) || pool === undefined || image === undefined || rest.length > 0 ||
    !NAME.test(pool) || !NAME.test(image)) {
    return null;
  }
  return { pool, image };
}

/** True for a well-formed `rbd:POOL/IMAGE`. */
export function isRbdImagePath(path: string): boolean {
  return rbdNamesOf(path) !== null;
}

/** The pool and image of `rbd:POOL/IMAGE`; ERR_CEPH_PATH for anything else. */
export function parseRbdPath(path: string): { pool: string; image: string } {
  const names = rbdNamesOf(path);
  if (names === null) throw new UsageError('ERR_CEPH_PATH', `${path}: not rbd:POOL/IMAGE`);
  return names;
}

export class RbdBacking implements Backing {
  readonly kind = 'rbd' as const;
  readonly sectorSize = 1;
  readonly batchFd = -1;
  readonly sendFd = -1;
  readonly path: string;
  readonly isWritable: boolean;
  readonly sizeBytes: number;
  private readonly image: sys.NativeRbdImage;
  private canWriteZeroes = true;
  private canDiff = true;
  private closing: Promise<void> | null = null;

  constructor(path: string, image: sys.NativeRbdImage, sizeBytes: number, isWritable: boolean) {
    this.path = path;
    this.image = image;
    this.sizeBytes = sizeBytes;
    this.isWritable = isWritable;
  }

  get canTrim(): boolean {
    return this.isWritable;
  }

  /** Reads are plain reads, never preceded by block status (see the header). */
  isAllData(_offset: number, _length: number): boolean {
    return true;
  }

  read(buffer: Buffer, bufferOffset: number, length: number, position: number,
    callback: ByteCountCallback): void {
    this.submit(sys.RBD_OP.READ, buffer, bufferOffset, length, position, callback);
  }

  write(buffer: Buffer, bufferOffset: number, length: number, position: number,
    callback: ByteCountCallback): void {
    if (!this.isWritable) {
      const error = Object.assign(new Error(`write: EROFS: ${this.path} is open read-only`),
        { code: 'EROFS', syscall: 'write' });
      process.nextTick(callback, error, 0);
      return;
    }
    this.submit(sys.RBD_OP.WRITE, buffer, bufferOffset, length, position, callback);
  }

  private submit(op: number, buffer: Buffer | null, bufferOffset: number, length: number,
    position: number, callback: ByteCountCallback): void {
    if (this.closing !== null) {
      const error = Object.assign(new Error(`rbd: EBADF: ${this.path} is closed`),
        { code: 'EBADF', syscall: 'rbd_aio' });
      process.nextTick(callback, error, 0);
      return;
    }
    sys.rbdAio(this.image, op, buffer, bufferOffset, length, position, callback);
  }

  /** One aio call as a promise; failures are IoError with librbd's errno. */
  private call(op: number, offset: number, length: number): Promise<void> {
    return new Promise((resolve, reject) => {
      this.submit(op, null, 0, length, offset, (error) => {
        if (error === null) resolve();
        else reject(error instanceof IoError ? error : IoError.fromSystem(error, 'rbd_aio'));
      });
    });
  }

  sync(): Promise<void> {
    return this.call(sys.RBD_OP.FLUSH, 0, 0);
  }

  private checkWritable(op: string): void {
    if (!this.isWritable) throw new IoError('EROFS', op, `${op}: EROFS: ${this.path} is read-only`);
  }

  async zero(offset: number, length: number, _mayTrim: boolean, fastOnly: boolean): Promise<void> {
    this.checkWritable('zero');
    if (this.canWriteZeroes) {
      try {
        await this.call(sys.RBD_OP.WRITE_ZEROES, offset, length);
        return;
      } catch (error) {
        if (!(error instanceof IoError) || !isUnsupported(error.errno)) throw error;
        this.canWriteZeroes = false;
        log.debug({ path: this.path, errno: error.errno }, 'rbd_aio_write_zeroes unsupported');
      }
    }
    if (fastOnly) {
      throw new IoError('ENOTSUP', 'zero', `zero: ENOTSUP: no fast zeroing method on ${this.path}`);
    }
    await writeZeros(this, offset, length);
  }

  async trim(offset: number, length: number): Promise<void> {
    this.checkWritable('trim');
    await this.call(sys.RBD_OP.DISCARD, offset, length);
  }

  async blockStatus(offset: number, length: number, runsMax: number): Promise<BackingRun[]> {
    const all: BackingRun[] = [{ length, isHole: false, isZero: false }];
    if (!this.canDiff) return all;
    let found: { start: number; end: number }[];
    try {
      found = await sys.rbdAllocated(this.image, offset, length, runsMax);
    } catch (error) {
      if (!(error instanceof IoError) || !isUnsupported(error.errno)) throw error;
      this.canDiff = false;
      return all;
    }
    const end = offset + length;
    const runs: BackingRun[] = [];
    let cursor = offset;
    for (const run of found) {
      const start = Math.max(run.start, cursor);
      const stop = Math.min(run.end, end);
      if (stop <= start) continue;
      if (start > cursor) runs.push({ length: start - cursor, isHole: true, isZero: true });
      if (runs.length >= runsMax) return runs;
      runs.push({ length: stop - start, isHole: false, isZero: false });
      cursor = stop;
      if (runs.length >= runsMax) return runs;
    }
    // a full answer may have been cut short: claim nothing past its last run
    if (cursor < end && found.length < runsMax) {
      runs.push({ length: end - cursor, isHole: true, isZero: true });
    }
    return runs.length > 0 ? runs : all;
  }

  close(): Promise<void> {
    this.closing ??= sys.rbdClose(this.image);
    return this.closing;
  }
}

/** Opens `rbd:POOL/IMAGE` on the process's client, read-only for mode 'r'. */
export async function openRbdBacking(path: string, mode: 'r' | 'w'): Promise<RbdBacking> {
  const { pool, image } = parseRbdPath(path);
  await connectCeph();
  const opened = await sys.rbdOpen(pool, image, mode === 'r');
  return new RbdBacking(path, opened.handle, opened.size, mode === 'w');
}
