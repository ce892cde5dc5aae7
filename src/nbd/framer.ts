/**
 * nbd/framer: accumulates stream chunks and yields exact-length frames (proto.md has no framing
 * of its own: every frame's length is known from its header, so the reader asks for n bytes).
 * Used for stream pairs (--stdio, tests) and TLS; plain sockets read into arenas instead
 * (arena-receiver.ts). Both implement Receiver, the interface connection.ts reads through.
 *
 * take(n) returns a view into the received chunk when the frame lies within one chunk (no copy,
 * the common case for 28-byte requests and small WRITE payloads) and copies into one Buffer
 * only when a frame spans chunks. takePayload(n) copies a spanning WRITE payload into a
 * bufferPool buffer that release() gives back. skip(n) discards without buffering, for payloads
 * the server refuses. The framer never holds more than what the stream delivered; callers
 * bound that by pausing the stream (see connection.ts).
 */
import assert from 'node:assert';
import { bufferPool } from './replies';

/** A WRITE payload: `data` stays valid until release() runs (once). */
export interface Payload {
  readonly data: Buffer;
  release(): void;
}

/** What connection.ts reads frames from: this Framer, or an ArenaReceiver for sockets. */
export interface Receiver {
  readonly length: number;
  /** The next n bytes (the caller checked `length >= n`); valid until the next read. */
  take(n: number): Buffer;
  /** The next n bytes as a WRITE payload that outlives later reads. */
  takePayload(n: number): Payload;
  skip(n: number): number;
  clear(): number;
  /** The frame being received needs `length` bytes in all (a hint for buffer sizing). */
  expect(length: number): void;
  dispose(): void;
}

function noRelease(): void { /* the payload is a view of a chunk the GC owns */ }

export class Framer implements Receiver {
  private chunks: Buffer[] = [];
  private headOffset = 0;
  private lengthTotal = 0;

  get length(): number {
    return this.lengthTotal;
  }

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.lengthTotal += chunk.length;
  }

  /**
   * Removes and returns the next n bytes; the caller checked `length >= n`. `allocate`, when
   * given, supplies the storage for a frame that spans chunks (at least n bytes; the frame is a
   * view of its first n); the returned frame is then a view of that storage.
   */
  take(n: number, allocate?: (length: number) => Buffer): Buffer {
    assert(n >= 0);
    assert(n <= this.lengthTotal);
    const head = this.chunks[0];
    if (n === 0 || head === undefined) return Buffer.alloc(0);
    if (head.length - this.headOffset >= n) {
      const frame = head.subarray(this.headOffset, this.headOffset + n);
      this.advance(n);
      return frame;
    }
    const frame = allocate === undefined ? Buffer.allocUnsafe(n) : allocate(n).subarray(0, n);
    assert(frame.length === n);
    let filled = 0;
    while (filled < n) {
      const chunk = this.chunks[0];
      assert(chunk !== undefined); // lengthTotal >= n guarantees enough chunks
      const take = Math.min(n - filled, chunk.length - this.headOffset);
      chunk.copy(frame, filled, this.headOffset, this.headOffset + take);
      filled += take;
      this.advance(take);
    }
    return frame;
  }

  /** A payload spanning chunks is copied into a pooled buffer that release() gives back. */
  takePayload(n: number): Payload {
    let storage: Buffer | null = null;
    const data = this.take(n, (length) => {
      storage = bufferPool.acquire(length);
      return storage;
    });
    if (storage === null) return { data, release: noRelease };
    const pooled: Buffer = storage;
    return { data, release: () => bufferPool.release(pooled) };
  }

  expect(): void { /* chunks come from the stream at its own size */ }

  dispose(): void {
    this.clear();
  }

  /** Discards up to n bytes; returns how many were discarded. */
  skip(n: number): number {
    assert(n >= 0);
    let skipped = 0;
    while (skipped < n && this.chunks.length > 0) {
      const chunk = this.chunks[0];
      assert(chunk !== undefined);
      const take = Math.min(n - skipped, chunk.length - this.headOffset);
      this.advance(take);
      skipped += take;
    }
    return skipped;
  }

  /** Drops everything buffered (used after STARTTLS: nothing from before TLS survives). */
  clear(): number {
    const dropped = this.lengthTotal;
    this.chunks = [];
    this.headOffset = 0;
    this.lengthTotal = 0;
    return dropped;
  }

  private advance(n: number): void {
    const head = this.chunks[0];
    assert(head !== undefined);
    this.headOffset += n;
    this.lengthTotal -= n;
    if (this.headOffset === head.length) {
      this.chunks.shift();
      this.headOffset = 0;
    }
    assert(this.lengthTotal >= 0);
  }
}
