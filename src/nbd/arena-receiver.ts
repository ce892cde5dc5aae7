/**
 * nbd/arena-receiver: a socket read straight into large reused buffers ("arenas") through
 * net's onread user-buffer mode (node-perf.md §3, §8.5), so every frame lies contiguous in one
 * arena: take() is a view, and a WRITE payload goes to the backing without being copied in user
 * space. The Framer path instead gets a fresh zero-filled 64 KiB chunk per socket read and copies
 * every payload that spans chunks; for 1 MiB writes that was half the server's CPU per GiB.
 *
 * Layout: bytes [readPos, writePos) of the current arena are received and not yet consumed; the
 * next socket read lands at writePos (nextBuffer() hands that tail to libuv after every read).
 * Views returned by take() are valid until the next read; a payload view (takePayload) holds a
 * reference on its arena and stays valid until its release() runs.
 *
 * nextBuffer() is the only place the layout changes, because libuv keeps the tail it was given
 * until the next read completes, even while the socket is paused:
 * - when no payload view is outstanding and nothing is pending, the next read lands at the
 *   front again (the same cache-hot bytes for request/response traffic); when the tail is short
 *   of room (below) and what is pending is short, those bytes move to the front (copyWithin):
 *   reads, flushes and small writes never leave the first arena;
 * - when the tail is too short for the rest of the frame in progress (expect()), or between
 *   frames for one as long as the last, or for one read of LIMITS.nbdRecvReadMin, a new arena is
 *   taken from bufferPool, sized for a few frames of that length, and the pending bytes are
 *   copied to its start. The old arena goes back to the pool when its last payload view is
 *   released.
 * - the read that completes a large frame (LIMITS.nbdRecvExactMin) stops at its end, so the next
 *   frame starts where the room was checked: with frames of similar length the copy at a switch
 *   is a header's worth of bytes, not part of a payload.
 * Memory held per connection is one arena plus those that payloads in flight still reference;
 * payloads in flight are bounded by LIMITS.nbdInflightBytesMax (connection.ts).
 */
import assert from 'node:assert';
import { LIMITS } from '../limits';
import type { Payload, Receiver } from './framer';
import { bufferPool } from './replies';

/**
 * Where socket reads land once the receiver is disposed: libuv may ask for a buffer again within
 * the read loop that closed the connection, or while a paused socket's last read is pending (the
 * data-path thread took it over). Those bytes are dropped; nothing may land in an arena whose
 * payload views are still being written out, and a disposed receiver touches no arena again.
 */
const DISCARD = Buffer.allocUnsafe(LIMITS.nbdRecvReadMin);

class Arena {
  /** the receiver's own reference (while current) plus one per outstanding payload view */
  refs = 1;
  constructor(readonly buffer: Buffer) {}
}

export class ArenaReceiver implements Receiver {
  private arena: Arena;
  private readPos = 0;
  private writePos = 0;
  private frameLength = 0;
  /** the last frame length expect() announced: the next frame is likely as long */
  private frameLengthRecent = 0;
  private isDisposed = false;
  /** statistics: arena switches and bytes copied by them and by compaction */
  readonly stats = { arenas: 1, bytesCopied: 0 };

  constructor() {
    this.arena = new Arena(bufferPool.acquire(LIMITS.nbdRecvArenaMin));
  }

  get length(): number {
    return this.writePos - this.readPos;
  }

  /** For net's onread.buffer: where the next socket read lands (see the header). */
  nextBuffer(): Buffer {
    if (this.isDisposed) return DISCARD;
    const pending = this.length;
    // room for the rest of the frame in progress, or between frames for one like the last
    const expected = this.frameLength > 0
      ? this.frameLength
      : this.frameLengthRecent + LIMITS.nbdRecvFrameSlack;
    const room = Math.max(LIMITS.nbdRecvReadMin, expected - pending);
    let buffer = this.arena.buffer;
    const isShort = buffer.length - this.writePos < room;
    if (this.arena.refs === 1 && this.readPos > 0 &&
      (pending === 0 || (isShort && pending <= LIMITS.nbdRecvCompactMax))) {
      buffer.copyWithin(0, this.readPos, this.writePos);
      this.stats.bytesCopied += pending;
      this.readPos = 0;
      this.writePos = pending;
    }
    if (buffer.length - this.writePos < room) {
      buffer = this.switchArena(pending, room);
    }
    const rest = this.frameRemaining;
    if (this.frameLength >= LIMITS.nbdRecvExactMin && rest > 0) {
      // a large frame's last read stops at its end: the next frame starts a read of its own,
      // with room for a whole frame like this one, so it never straddles an arena's end
      return buffer.subarray(this.writePos, this.writePos + rest);
    }
    return buffer.subarray(this.writePos);
  }

  /** Bytes of the frame in progress still to arrive (0 between frames). */
  get frameRemaining(): number {
    return Math.max(0, this.frameLength - this.length);
  }

  /** For net's onread.callback: `length` bytes landed at the tail nextBuffer() gave. */
  received(length: number, target: Buffer): void {
    if (this.isDisposed) return; // landed in DISCARD: dropped
    assert(target.buffer === this.arena.buffer.buffer, 'ArenaReceiver: read into a stale arena');
    assert(length > 0 && this.writePos + length <= this.arena.buffer.length);
    this.writePos += length;
  }

  /** The frame being received needs `length` bytes in all (0: none in particular). */
  expect(length: number): void {
    assert(length >= 0);
    this.frameLength = length;
    if (length > 0) this.frameLengthRecent = length;
  }

  take(length: number): Buffer {
    assert(length >= 0 && length <= this.length);
    const frame = this.arena.buffer.subarray(this.readPos, this.readPos + length);
    this.readPos += length;
    return frame;
  }

  takePayload(length: number): Payload {
    const data = this.take(length);
    const arena = this.arena;
    arena.refs += 1;
    return { data, release: () => this.unref(arena) };
  }

  skip(length: number): number {
    const skipped = Math.min(length, this.length);
    this.readPos += skipped;
    return skipped;
  }

  clear(): number {
    const dropped = this.length;
    this.readPos = this.writePos;
    return dropped;
  }

  /**
   * The connection is closed (or the data-path thread took the socket): libuv may still hold the
   * current tail until the socket closes, so the current arena is left to the GC rather than
   * pooled, and later reads land in DISCARD.
   */
  dispose(): void {
    if (this.isDisposed) return;
    this.isDisposed = true;
    this.arena.refs -= 1;
  }

  private switchArena(pending: number, room: number): Buffer {
    const size = Math.max(LIMITS.nbdRecvArenaMin,
      Math.min(LIMITS.nbdRecvArenaFrames * (pending + room), LIMITS.nbdRecvArenaMax),
      pending + room);
    const next = new Arena(bufferPool.acquire(size));
    this.arena.buffer.copy(next.buffer, 0, this.readPos, this.writePos);
    this.stats.arenas += 1;
    this.stats.bytesCopied += pending;
    const previous = this.arena;
    this.arena = next;
    this.unref(previous);
    this.readPos = 0;
    this.writePos = pending;
    return next.buffer;
  }

  private unref(arena: Arena): void {
    arena.refs -= 1;
    assert(arena.refs >= 0, 'ArenaReceiver: arena released twice');
    if (arena.refs === 0 && arena !== this.arena) bufferPool.release(arena.buffer);
  }
}
