/**
 * nbd/wire-writer: encoders for the fixed-layout headers of proto.md ("Newstyle negotiation",
 * "Option reply", "Simple reply message", "Structured reply chunk message"). Transmission
 * encoders write into a caller-provided Buffer at an offset so that a READ reply is one Buffer:
 * header followed by the data the Export reads straight into it.
 */
import assert from 'node:assert';
import {
  CHUNK_HEADER_LENGTH,
  GREETING_LENGTH,
  IHAVEOPT_HIGH,
  IHAVEOPT_LOW,
  NBDMAGIC_HIGH,
  NBDMAGIC_LOW,
  NBD_SIMPLE_REPLY_MAGIC,
  NBD_STRUCTURED_REPLY_MAGIC,
  OPTION_REPLY_HEADER_LENGTH,
  REPLY_MAGIC_HIGH,
  REPLY_MAGIC_LOW,
  SIMPLE_REPLY_LENGTH,
} from './constants';

export function encodeGreeting(handshakeFlags: number): Buffer {
  const frame = Buffer.allocUnsafe(GREETING_LENGTH);
  frame.writeUInt32BE(NBDMAGIC_HIGH, 0);
  frame.writeUInt32BE(NBDMAGIC_LOW, 4);
  frame.writeUInt32BE(IHAVEOPT_HIGH, 8);
  frame.writeUInt32BE(IHAVEOPT_LOW, 12);
  frame.writeUInt16BE(handshakeFlags, 16);
  return frame;
}

export function encodeOptionReply(option: number, type: number, payload?: Buffer): Buffer {
  const length = payload === undefined ? 0 : payload.length;
  const frame = Buffer.allocUnsafe(OPTION_REPLY_HEADER_LENGTH + length);
  frame.writeUInt32BE(REPLY_MAGIC_HIGH, 0);
  frame.writeUInt32BE(REPLY_MAGIC_LOW, 4);
  frame.writeUInt32BE(option >>> 0, 8);
  frame.writeUInt32BE(type >>> 0, 12);
  frame.writeUInt32BE(length, 16);
  if (payload !== undefined) payload.copy(frame, OPTION_REPLY_HEADER_LENGTH);
  return frame;
}

/** Writes a u64 that is a safe integer (sizes, offsets) as two u32 halves. */
export function writeU64(target: Buffer, value: number, at: number): void {
  assert(Number.isSafeInteger(value));
  assert(value >= 0);
  target.writeUInt32BE(Math.floor(value / 0x100000000), at);
  target.writeUInt32BE(value >>> 0, at + 4);
}

export function writeSimpleReply(
  target: Buffer, at: number, errno: number, cookieHigh: number, cookieLow: number,
): void {
  assert(target.length - at >= SIMPLE_REPLY_LENGTH);
  target.writeUInt32BE(NBD_SIMPLE_REPLY_MAGIC, at);
  target.writeUInt32BE(errno, at + 4);
  target.writeUInt32BE(cookieHigh, at + 8);
  target.writeUInt32BE(cookieLow, at + 12);
}

export function writeChunkHeader(
  target: Buffer, at: number, flags: number, type: number,
  cookieHigh: number, cookieLow: number, length: number,
): void {
  assert(target.length - at >= CHUNK_HEADER_LENGTH);
  target.writeUInt32BE(NBD_STRUCTURED_REPLY_MAGIC, at);
  target.writeUInt16BE(flags, at + 4);
  target.writeUInt16BE(type, at + 6);
  target.writeUInt32BE(cookieHigh, at + 8);
  target.writeUInt32BE(cookieLow, at + 12);
  target.writeUInt32BE(length, at + 16);
}
