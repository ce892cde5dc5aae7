/**
 * backing/memory-backing: a Backing over one Buffer, for tests and demos. Behaves like a file of a
 * fixed size: reads past the end are short (the engine zero-fills), writes past it fail with
 * ENOSPC. Zero and trim fill with zeros; block status reports everything as data. Callbacks are
 * deferred with process.nextTick so callers see the same asynchrony as with real descriptors.
 */
import assert from 'node:assert';
import { IoError } from '../errors';
import type { Backing, BackingRun, ByteCountCallback } from './backing';

function errnoError(code: string, syscall: string, message: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`${syscall}: ${code}: ${message}`), { code, syscall });
}

export class MemoryBacking implements Backing {
  readonly kind = 'memory' as const;
  readonly sectorSize = 1;
  readonly batchFd = -1;
  readonly sendFd = -1;
  readonly canTrim: boolean;
  readonly path: string;
  readonly isWritable: boolean;
  readonly sizeBytes: number;
  readonly data: Buffer;
  isClosed = false;

  constructor(path: string, sizeBytes: number, isWritable = true) {
    assert(Number.isSafeInteger(sizeBytes) && sizeBytes >= 0);
    this.path = path;
    this.sizeBytes = sizeBytes;
    this.isWritable = isWritable;
    this.canTrim = isWritable;
    this.data = Buffer.alloc(sizeBytes);
  }

  read(
    buffer: Buffer,
    bufferOffset: number,
    length: number,
    position: number,
    callback: ByteCountCallback,
  ): void {
    const take = Math.max(0, Math.min(length, this.sizeBytes - position));
    if (take > 0) this.data.copy(buffer, bufferOffset, position, position + take);
    process.nextTick(callback, null, take);
  }

  write(
    buffer: Buffer,
    bufferOffset: number,
    length: number,
    position: number,
    callback: ByteCountCallback,
  ): void {
    if (!this.isWritable) {
      process.nextTick(callback, errnoError('EROFS', 'write', `${this.path} is read-only`), 0);
      return;
    }
    const take = Math.max(0, Math.min(length, this.sizeBytes - position));
    if (take === 0) {
      process.nextTick(callback, errnoError('ENOSPC', 'write', `${this.path} is full`), 0);
      return;
    }
    buffer.copy(this.data, position, bufferOffset, bufferOffset + take);
    process.nextTick(callback, null, take);
  }

  async sync(): Promise<void> {}

  async zero(offset: number, length: number, _mayTrim: boolean, _fastOnly: boolean): Promise<void> {
    this.fill('zero', offset, length);
  }

  async trim(offset: number, length: number): Promise<void> {
    this.fill('trim', offset, length);
  }

  async blockStatus(_offset: number, length: number, _runsMax: number): Promise<BackingRun[]> {
    return [{ length, isHole: false, isZero: false }];
  }

  async close(): Promise<void> {
    this.isClosed = true;
  }

  private fill(op: string, offset: number, length: number): void {
    if (!this.isWritable) {
      throw new IoError('EROFS', op, `${op}: EROFS: ${this.path} is read-only`);
    }
    if (offset + length > this.sizeBytes) {
      throw new IoError('ENOSPC', op, `${op}: ENOSPC: past the end of ${this.path}`);
    }
    this.data.fill(0, offset, offset + length);
  }
}
