/**
 * backing/open-backing: opens a path as the right kind of Backing.
 *
 * Mode 'r' opens O_RDONLY: a read-only VBD never holds a writable descriptor (invariant 7). Mode
 * 'w' opens O_RDWR; a block device that is read-only (sysfs `ro` is 1, as after `losetup -r`, or
 * the kernel refuses write access with EROFS/EACCES) is opened O_RDONLY instead: every write
 * through it fails with EROFS, the export over it is read-only, and reads keep working.
 * Files are never created here (the catalog makes images).
 * A path `rbd:POOL/IMAGE` is an RBD image (rbd-backing.ts), opened read-only for mode 'r'; its
 * identity is its path.
 */
import fs from 'node:fs';
import { promisify } from 'node:util';
import { IoError } from '../errors';
import type { Backing } from './backing';
import { DeviceBacking, sysfsValue } from './device-backing';
import { FileBacking } from './file-backing';
import { isRbdPath, openRbdBacking, parseRbdPath } from './rbd-backing';

export type BackingMode = 'r' | 'w';

const openAsync = promisify(fs.open);
const fstatAsync = promisify(fs.fstat);
const closeAsync = promisify(fs.close);

async function openFd(path: string, flags: number): Promise<number> {
  try {
    return await openAsync(path, flags);
  } catch (cause) {
    throw IoError.fromSystem(cause, 'open');
  }
}

/** What identifies a backing across paths (symlinks, /dev aliases): device+inode or rdev. */
export async function backingIdentity(path: string): Promise<string> {
  if (isRbdPath(path)) {
    const { pool, image } = parseRbdPath(path);
    return `rbd:${pool}/${image}`;
  }
  let stats: fs.Stats;
  try {
    stats = await promisify(fs.stat)(path);
  } catch (cause) {
    throw IoError.fromSystem(cause, 'stat');
  }
  return stats.isBlockDevice() ? `b:${stats.rdev}` : `f:${stats.dev}:${stats.ino}`;
}

async function fstatOrClose(fd: number): Promise<fs.Stats> {
  try {
    return await fstatAsync(fd);
  } catch (cause) {
    await closeAsync(fd);
    throw IoError.fromSystem(cause, 'fstat');
  }
}

export async function openBacking(path: string, mode: BackingMode): Promise<Backing> {
  if (isRbdPath(path)) return openRbdBacking(path, mode);
  const C = fs.constants;
  let isWritable = mode === 'w';
  let fd: number;
  try {
    fd = await openFd(path, isWritable ? C.O_RDWR : C.O_RDONLY);
  } catch (error) {
    const refused = error instanceof IoError &&
      (error.errno === 'EROFS' || error.errno === 'EACCES');
    if (!isWritable || !refused) throw error;
    fd = await openFd(path, C.O_RDONLY);
    if (!(await fstatOrClose(fd)).isBlockDevice()) {
      await closeAsync(fd);
      throw error;
    }
    isWritable = false;
  }
  let stats = await fstatOrClose(fd);
  if (stats.isBlockDevice() && isWritable && sysfsValue(stats.rdev, 'ro') === 1) {
    // Linux lets O_RDWR open a read-only device and fails each write with EPERM instead
    await closeAsync(fd);
    fd = await openFd(path, C.O_RDONLY);
    stats = await fstatOrClose(fd);
    isWritable = false;
  }
  try {
    if (stats.isBlockDevice()) return new DeviceBacking(path, fd, isWritable, stats.rdev);
    if (stats.isFile()) {
      const file = new FileBacking(path, fd, isWritable, stats.size,
        { key: `${stats.dev}:${stats.ino}`, ctimeMs: stats.ctimeMs });
      await file.learnHoles();
      return file;
    }
    const what = `open: EINVAL: ${path} is neither a file nor a block device`;
    throw new IoError('EINVAL', 'open', what);
  } catch (error) {
    await closeAsync(fd);
    throw error;
  }
}
