/**
 * engine/cow-copy: copies one extent between pooled backings for copy-on-write (engine/cow.ts).
 *
 * copyExtent reads [offsetSource, +length) of `source` and writes it at offsetTarget of
 * `target`, LIMITS.cowCopyChunkBytes at a time through one buffer, with the short-I/O retries
 * of the read and write paths (a read of 0 bytes is the end of a sparse file: zeros). The
 * target is marked dirty after every piece, as any write, so the next FLUSH syncs it. Any
 * failure rejects (an IoError); the target's bytes are then unspecified, which is harmless: it
 * is a reserve extent in no map yet.
 */
import { IoError } from '../errors';
import { LIMITS } from '../limits';
import type { PooledBacking } from '../backing/pool';

function readFully(entry: PooledBacking, buffer: Buffer, length: number, position: number):
Promise<void> {
  return new Promise((resolve, reject) => {
    const step = (done: number, retries: number): void => {
      if (done >= length) {
        resolve();
        return;
      }
      entry.backing.read(buffer, done, length - done, position + done, (error, bytes) => {
        if (error !== null) reject(IoError.fromSystem(error, 'read'));
        else if (bytes === 0) {
          buffer.fill(0, done, length);
          resolve();
        } else if (bytes < length - done && retries >= LIMITS.shortIoRetriesMax) {
          reject(new IoError('EIO', 'read', 'read: EIO: too many short reads'));
        } else step(done + bytes, bytes < length - done ? retries + 1 : retries);
      });
    };
    step(0, 0);
  });
}

function writeFully(entry: PooledBacking, buffer: Buffer, length: number, position: number):
Promise<void> {
  return new Promise((resolve, reject) => {
    const step = (done: number, retries: number): void => {
      if (done >= length) {
        resolve();
        return;
      }
      entry.backing.write(buffer, done, length - done, position + done, (error, bytes) => {
        entry.markDirty();
        if (error !== null) reject(IoError.fromSystem(error, 'write'));
        else if (bytes <= 0 || (bytes < length - done && retries >= LIMITS.shortIoRetriesMax)) {
          reject(new IoError('EIO', 'write', `write: EIO: short write of ${bytes}`));
        } else step(done + bytes, bytes < length - done ? retries + 1 : retries);
      });
    };
    step(0, 0);
  });
}

/** Copies `length` bytes (see the header). */
export async function copyExtent(source: PooledBacking, offsetSource: number,
  target: PooledBacking, offsetTarget: number, length: number): Promise<void> {
  const buffer = Buffer.allocUnsafe(Math.min(length, LIMITS.cowCopyChunkBytes));
  for (let done = 0; done < length; done += buffer.length) {
    const take = Math.min(buffer.length, length - done);
    await readFully(source, buffer, take, offsetSource + done);
    await writeFully(target, buffer, take, offsetTarget + done);
  }
}
