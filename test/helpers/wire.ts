/**
 * wire: builders for client-side NBD frames (proto.md) used by protocol and error tests.
 * Deliberately independent of src/nbd/constants.ts, so a wrong constant there fails a test.
 */
export const OPT = {
  EXPORT_NAME: 1, ABORT: 2, LIST: 3, STARTTLS: 5, INFO: 6, GO: 7,
  STRUCTURED_REPLY: 8, LIST_META_CONTEXT: 9, SET_META_CONTEXT: 10, EXTENDED_HEADERS: 11,
} as const;
export const REP = {
  ACK: 1, SERVER: 2, INFO: 3, META_CONTEXT: 4,
  ERR_UNSUP: 0x80000001, ERR_POLICY: 0x80000002, ERR_INVALID: 0x80000003,
  ERR_TLS_REQD: 0x80000005, ERR_UNKNOWN: 0x80000006, ERR_SHUTDOWN: 0x80000007,
} as const;
export const CMD = {
  READ: 0, WRITE: 1, DISC: 2, FLUSH: 3, TRIM: 4, CACHE: 5, WRITE_ZEROES: 6, BLOCK_STATUS: 7,
} as const;
export const CMD_FLAG = { FUA: 1, NO_HOLE: 2, DF: 4, REQ_ONE: 8, FAST_ZERO: 16 } as const;
export const ERRNO = {
  EPERM: 1, EIO: 5, EINVAL: 22, ENOSPC: 28, EOVERFLOW: 75, ENOTSUP: 95, ESHUTDOWN: 108,
} as const;
export const EFLAG = {
  HAS_FLAGS: 1, READ_ONLY: 2, SEND_FLUSH: 4, SEND_FUA: 8, SEND_TRIM: 32,
  SEND_WRITE_ZEROES: 64, SEND_DF: 128, CAN_MULTI_CONN: 256, SEND_CACHE: 1024,
  SEND_FAST_ZERO: 2048,
} as const;
export const INFO = { EXPORT: 0, NAME: 1, DESCRIPTION: 2, BLOCK_SIZE: 3 } as const;
export const REPLY_TYPE = {
  NONE: 0, OFFSET_DATA: 1, OFFSET_HOLE: 2, BLOCK_STATUS: 5, ERROR: 0x8001,
} as const;

export const IHAVEOPT = Buffer.from('IHAVEOPT', 'latin1');
export const NBDMAGIC = Buffer.from('NBDMAGIC', 'latin1');
export const REQUEST_MAGIC = 0x25609513;
export const SIMPLE_REPLY_MAGIC = 0x67446698;
export const STRUCTURED_REPLY_MAGIC = 0x668e33ef;
export const OPTION_REPLY_MAGIC = Buffer.from('0003e889045565a9', 'hex');

export function u16(value: number): Buffer {
  const frame = Buffer.alloc(2);
  frame.writeUInt16BE(value);
  return frame;
}

export function u32(value: number): Buffer {
  const frame = Buffer.alloc(4);
  frame.writeUInt32BE(value >>> 0);
  return frame;
}

export function u64(value: bigint | number): Buffer {
  const frame = Buffer.alloc(8);
  frame.writeBigUInt64BE(BigInt(value));
  return frame;
}

export function clientFlags(flags = 3): Buffer {
  return u32(flags);
}

export function optionFrame(option: number, payload: Buffer = Buffer.alloc(0),
  length = payload.length): Buffer {
  return Buffer.concat([IHAVEOPT, u32(option), u32(length), payload]);
}

export function goPayload(name: string | Buffer, infos: number[] = []): Buffer {
  const nameBytes = typeof name === 'string' ? Buffer.from(name) : name;
  return Buffer.concat([u32(nameBytes.length), nameBytes, u16(infos.length), ...infos.map(u16)]);
}

export function metaPayload(name: string, queries: string[]): Buffer {
  const parts = [u32(Buffer.byteLength(name)), Buffer.from(name), u32(queries.length)];
  for (const query of queries) parts.push(u32(Buffer.byteLength(query)), Buffer.from(query));
  return Buffer.concat(parts);
}

export interface RequestSpec {
  type: number;
  flags?: number;
  cookie?: bigint;
  offset?: bigint | number;
  length?: number;
  payload?: Buffer;
  magic?: number;
}

export function requestFrame(spec: RequestSpec): Buffer {
  const header = Buffer.alloc(28);
  header.writeUInt32BE(spec.magic ?? REQUEST_MAGIC, 0);
  header.writeUInt16BE(spec.flags ?? 0, 4);
  header.writeUInt16BE(spec.type, 6);
  header.writeBigUInt64BE(spec.cookie ?? 1n, 8);
  header.writeBigUInt64BE(BigInt(spec.offset ?? 0), 16);
  header.writeUInt32BE(spec.length ?? spec.payload?.length ?? 0, 24);
  return spec.payload === undefined ? header : Buffer.concat([header, spec.payload]);
}
