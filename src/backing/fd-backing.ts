/**
 * backing/fd-backing: what files and block devices share: one descriptor, positioned fs.read and
 * fs.write straight into the caller's buffer (callback style, no fs/promises on the data path,
 * node-perf.md section 8), fdatasync, close. Subclasses add the zeroing ladder, trim and status.
 *
 * Reads up to LIMITS.backingReadInlineMax first try preadv2(RWF_NOWAIT) on the JS thread: a page
 * cache hit costs about a microsecond there (plus the copy), against several for the libuv pool
 * hand-off (one futex wake + eventfd per read, and on 2 cores a context switch with the
 * client). A miss (EAGAIN), a partial hit or any error falls through to fs.read for what is
 * left; an errno of UNSUPPORTED_ERRNOS (backing.ts) turns the inline path off for this fd.
 * The callback always runs asynchronously (process.nextTick), as fs.read's does.
 *
 * Batched writes go to one writer thread per backing (native/src/writer.c), started by the first
 * writeBatch. The count of live writer threads is process-wide on purpose: it bounds threads,
 * which are a resource of the process, by LIMITS.backingWriterThreadsMax whatever the number of
 * backings; past it a backing falls back to sys.pwriteBatch on the libuv pool.
 */
import assert from 'node:assert';
import fs from 'node:fs';
import { IoError } from '../errors';
import { LIMITS } from '../limits';
import * as sys from '../sys/index';
import {
  isUnsupportedErrno, type Backing, type BackingKind, type BackingRun, type ByteCountCallback,
} from './backing';

/** Writer threads alive in this process, of every backing (process-wide: see the header). */
let writersLive = 0;

export abstract class FdBacking implements Backing {
  abstract readonly kind: BackingKind;
  abstract readonly sizeBytes: number;
  abstract readonly sectorSize: number;
  abstract readonly canTrim: boolean;
  readonly path: string;
  readonly isWritable: boolean;
  protected fd: number;
  private canReadInline = sys.isNative;
  private closing: Promise<void> | null = null;

  /** the writer thread of writeBatch, started by the first batched write */
  private writer: sys.NativeWriter | null = null;
  private canStartWriter = true;

  get batchFd(): number {
    return this.isWritable && this.closing === null ? this.fd : -1;
  }

  get sendFd(): number {
    return this.closing === null ? this.fd : -1;
  }

  writeBatch(buffer: Buffer, pieces: Float64Array, callback: sys.BatchCallback): void {
    assert(this.isWritable && this.closing === null);
    if (this.writer === null && this.canStartWriter) this.startWriter();
    if (this.writer === null) sys.pwriteBatch(buffer, pieces, callback);
    else sys.writerSubmit(this.writer, buffer, pieces, callback);
  }

  /** A writer thread, unless LIMITS.backingWriterThreadsMax are running or one cannot start. */
  private startWriter(): void {
    if (writersLive >= LIMITS.backingWriterThreadsMax) return;
    try {
      this.writer = sys.createWriter();
      writersLive++;
    } catch {
      this.canStartWriter = false; // e.g. EAGAIN from pthread_create: the pool writes instead
    }
  }

  constructor(path: string, fd: number, isWritable: boolean) {
    assert(Number.isInteger(fd) && fd >= 0);
    this.path = path;
    this.fd = fd;
    this.isWritable = isWritable;
  }

  read(
    buffer: Buffer,
    bufferOffset: number,
    length: number,
    position: number,
    callback: ByteCountCallback,
  ): void {
    if (this.canReadInline && length <= LIMITS.backingReadInlineMax && length > 0) {
      const bytes = sys.preadNoWait(this.fd, buffer, bufferOffset, length, position);
      if (bytes === length || (bytes === 0 && length > 0)) {
        process.nextTick(callback, null, bytes); // all of it, or EOF
        return;
      }
      if (bytes > 0) {
        this.readRest(buffer, bufferOffset, length, position, bytes, callback);
        return;
      }
      // RWF_NOWAIT cannot work on this descriptor: stop trying
      if (bytes < 0 && isUnsupportedErrno(bytes)) this.canReadInline = false;
    }
    fs.read(this.fd, buffer, bufferOffset, length, position, callback);
  }

  /** A partial page-cache hit: fs.read the rest, report the total. */
  private readRest(
    buffer: Buffer, bufferOffset: number, length: number, position: number, done: number,
    callback: ByteCountCallback,
  ): void {
    fs.read(this.fd, buffer, bufferOffset + done, length - done, position + done,
      (error, bytes) => callback(error, error === null ? done + bytes : 0));
  }

  write(
    buffer: Buffer,
    bufferOffset: number,
    length: number,
    position: number,
    callback: ByteCountCallback,
  ): void {
    if (!this.isWritable) {
      process.nextTick(callback, this.readOnlyError('write'), 0);
      return;
    }
    fs.write(this.fd, buffer, bufferOffset, length, position, callback);
  }

  sync(): Promise<void> {
    return new Promise((resolve, reject) => {
      fs.fdatasync(this.fd, (error) => {
        if (error === null) resolve();
        else reject(IoError.fromSystem(error, 'fdatasync'));
      });
    });
  }

  abstract zero(offset: number, length: number, mayTrim: boolean, fastOnly: boolean): Promise<void>;
  abstract trim(offset: number, length: number): Promise<void>;
  abstract blockStatus(offset: number, length: number, runsMax: number): Promise<BackingRun[]>;

  close(): Promise<void> {
    if (this.closing === null) {
      const fd = this.fd;
      // nothing is pending (the engine closes a backing only when no request is in flight):
      // the thread exits at once, and no queued write can reach a closed descriptor number
      if (this.writer !== null) {
        sys.closeWriter(this.writer);
        writersLive--;
      }
      this.writer = null;
      this.closing = new Promise((resolve, reject) => {
        fs.close(fd, (error) => {
          if (error === null) resolve();
          else reject(IoError.fromSystem(error, 'close'));
        });
      });
    }
    return this.closing;
  }

  protected readOnlyError(op: string): NodeJS.ErrnoException {
    return Object.assign(new Error(`${op}: EROFS: ${this.path} is open read-only`), {
      code: 'EROFS',
      syscall: op,
    });
  }

  protected checkWritable(op: string): void {
    if (!this.isWritable) throw IoError.fromSystem(this.readOnlyError(op), op);
  }
}
