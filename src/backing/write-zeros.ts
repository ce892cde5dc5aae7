/**
 * backing/write-zeros: the last rung of every zeroing ladder, writing zeros through the backing's
 * own positioned write, in chunks of LIMITS.zeroWriteChunkBytes from one shared all-zero buffer
 * that nothing ever writes into. Short writes are continued; a zero-byte write is EIO.
 */
import assert from 'node:assert';
import { IoError } from '../errors';
import { LIMITS } from '../limits';
import type { Backing } from './backing';

let zeros: Buffer | null = null;

function zeroBuffer(): Buffer {
  if (zeros === null) zeros = Buffer.alloc(LIMITS.zeroWriteChunkBytes);
  return zeros;
}

function writeOnce(
  backing: Backing,
  buffer: Buffer,
  length: number,
  position: number,
): Promise<number> {
  return new Promise((resolve, reject) => {
    backing.write(buffer, 0, length, position, (error, bytes) => {
      if (error !== null) reject(IoError.fromSystem(error, 'write'));
      else resolve(bytes);
    });
  });
}

/** Writes zeros over [offset, offset+length) of `backing`. */
export async function writeZeros(backing: Backing, offset: number, length: number): Promise<void> {
  assert(Number.isSafeInteger(offset) && offset >= 0);
  assert(Number.isSafeInteger(length) && length >= 0);
  const buffer = zeroBuffer();
  let cursor = offset;
  const end = offset + length;
  while (cursor < end) {
    const take = Math.min(end - cursor, buffer.length);
    const written = await writeOnce(backing, buffer, take, cursor);
    if (written <= 0) throw new IoError('EIO', 'write', 'write zeros: EIO: wrote 0 bytes');
    cursor += written;
  }
}
