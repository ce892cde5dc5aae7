/**
 * backing/backing: the Backing interface, one open file, block device, RBD image or memory store.
 *
 * Data calls (read/write) are callback-style and map 1:1 onto positioned pread/pwrite (Node's
 * fs.read/fs.write): the callback gets the raw byte count, short counts included, so the engine
 * owns the retry and zero-fill logic once for every kind of backing. Everything else returns a
 * Promise and rejects with IoError (errno name in `.errno`).
 *
 * Capabilities are learned at runtime and remembered per backing (STYLE 4.3): an errno of
 * UNSUPPORTED_ERRNOS (below, the one such list in xvd) from an optional method turns that method
 * off and the next rung of the ladder is tried. `zero()` implements the whole ladder (the only
 * one: the catalog's pending zeroing goes through it too); with `fastOnly` it rejects with errno
 * ENOTSUP instead of falling back to writing zeros. `trim()` never claims more than the backing
 * does: when the backing cannot discard, trim is a no-op (NBD trim is advisory) and `canTrim` is
 * false.
 */

import { constants } from 'node:os';
import type { BatchCallback } from '../sys/index';

export type BackingKind = 'file' | 'device' | 'memory' | 'rbd';

export type ByteCountCallback = (error: NodeJS.ErrnoException | null, bytes: number) => void;

/** One run of block status on a backing. */
export interface BackingRun {
  length: number;
  isHole: boolean;
  isZero: boolean;
}

export interface Backing {
  readonly path: string;
  readonly kind: BackingKind;
  /** false: opened O_RDONLY; every write/zero/trim rejects with EROFS */
  readonly isWritable: boolean;
  /**
   * bytes: the kernel's size for devices, the image's for RBD; the size at open for files (reads
   * past it are zeros)
   */
  readonly sizeBytes: number;
  /** logical sector size (devices), 1 for files and memory */
  readonly sectorSize: number;
  /** whether trim does anything on this backing (learned; may turn false) */
  readonly canTrim: boolean;
  /**
   * A writable descriptor the engine may hand to sys.pwriteBatch (every piece of a request in one
   * pool job) instead of calling write() per piece; -1 when writes must go through write()
   * (memory, read-only, fault injection). Valid until close().
   */
  readonly batchFd: number;
  /**
   * A descriptor another thread may read with pread or sendfile (a connection's sender thread,
   * native/src/sender.c) while the engine holds the backing open; -1 when reads must go through
   * read() (memory, fault injection, closing).
   */
  readonly sendFd: number;
  /**
   * Writes one request's pieces (pwriteBatch quadruples, every fd this backing's batchFd) in
   * order on this backing's own writer thread, with pwriteBatch's callback contract; present
   * where batchFd is not -1. One writer per file: buffered writes never contend for its inode
   * lock (native/src/writer.c).
   */
  writeBatch?(buffer: Buffer, pieces: Float64Array, callback: BatchCallback): void;

  /** pread: `callback(error, bytesRead)`; a short count means EOF for files */
  read(
    buffer: Buffer,
    bufferOffset: number,
    length: number,
    position: number,
    callback: ByteCountCallback,
  ): void;
  /** pwrite: `callback(error, bytesWritten)` */
  write(
    buffer: Buffer,
    bufferOffset: number,
    length: number,
    position: number,
    callback: ByteCountCallback,
  ): void;
  /** fdatasync */
  sync(): Promise<void>;
  /** makes [offset, offset+length) read as zeros; see the ladder above */
  zero(offset: number, length: number, mayTrim: boolean, fastOnly: boolean): Promise<void>;
  /** discards [offset, offset+length) when the backing can; contents afterwards are unspecified */
  trim(offset: number, length: number): Promise<void>;
  /** runs covering a prefix of [offset, offset+length) (at least one run, at most runsMax) */
  blockStatus(offset: number, length: number, runsMax: number): Promise<BackingRun[]>;
  /** closes the descriptor; idempotent */
  close(): Promise<void>;
}

/**
 * The one list of errnos meaning "this optional method is not available here" rather than "it
 * failed": the method is turned off and the next rung is tried (STYLE 4.3). Why each is in it:
 * - EOPNOTSUPP: the file system or driver does not implement it (a fallocate mode, SEEK_DATA,
 *   RWF_NOWAIT); the addon also reports ENODEV as EOPNOTSUPP, and src/sys/fallback.ts answers
 *   it for every optional method when the addon is missing.
 * - ENOTSUP: the same number as EOPNOTSUPP on Linux, but libuv and Node name it ENOTSUP, so an
 *   error may carry either name.
 * - ENOTTY: the ioctl is unknown to this descriptor (BLKZEROOUT or BLKDISCARD on a driver or a
 *   file that lacks it).
 * - EINVAL: the kernel rejects the mode or flag on this file (fallocate ZERO_RANGE on a file
 *   system without it, preadv2 flags it predates), not the arguments, which we checked.
 * - ENOSYS: the syscall itself is missing from this kernel (preadv2, fallocate on old kernels).
 */
const UNSUPPORTED_ERRNO_NAMES = ['EOPNOTSUPP', 'ENOTSUP', 'ENOTTY', 'EINVAL', 'ENOSYS'] as const;

/** The list above by name (IoError.errno, NodeJS.ErrnoException.code). */
export const UNSUPPORTED_ERRNOS: ReadonlySet<string> = new Set(UNSUPPORTED_ERRNO_NAMES);

/** The list above by number (positive errno, as this platform numbers it). */
export const UNSUPPORTED_ERRNO_NUMBERS: ReadonlySet<number> = new Set(
  UNSUPPORTED_ERRNO_NAMES.map((name) => constants.errno[name]),
);

/** Returns true for the errno names that mean "this optional method is not available here". */
export function isUnsupported(errno: string): boolean {
  return UNSUPPORTED_ERRNOS.has(errno);
}

/** The same for a raw errno number, either sign (native calls that return -errno). */
export function isUnsupportedErrno(errnoNumber: number): boolean {
  return UNSUPPORTED_ERRNO_NUMBERS.has(Math.abs(errnoNumber));
}
