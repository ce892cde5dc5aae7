/**
 * nbd/constants: wire constants spelled as in proto.md ("Values" section of
 * NetworkBlockDevice/nbd doc/proto.md), grouped by prefix as `as const` tables, and nameOf() for
 * logs. Magic numbers appear only here. 64-bit magics are split into two u32 halves (high, low)
 * so that encoders and decoders never need BigInt on the hot path.
 */

/** "NBDMAGIC" then "IHAVEOPT": the newstyle greeting (proto.md "Newstyle negotiation"). */
export const NBDMAGIC_HIGH = 0x4e42444d;
export const NBDMAGIC_LOW = 0x41474943;
export const IHAVEOPT_HIGH = 0x49484156;
export const IHAVEOPT_LOW = 0x454f5054;
/** Option reply magic 0x0003e889045565a9. */
export const REPLY_MAGIC_HIGH = 0x0003e889;
export const REPLY_MAGIC_LOW = 0x045565a9;
export const NBD_REQUEST_MAGIC = 0x25609513;
export const NBD_SIMPLE_REPLY_MAGIC = 0x67446698;
export const NBD_STRUCTURED_REPLY_MAGIC = 0x668e33ef;

/** Handshake flags (server, 16 bits). */
export const NBD_FLAG = { FIXED_NEWSTYLE: 1 << 0, NO_ZEROES: 1 << 1 } as const;
/** Client flags (32 bits). */
export const NBD_FLAG_C = { FIXED_NEWSTYLE: 1 << 0, NO_ZEROES: 1 << 1 } as const;

/** Transmission flags (16 bits, NBD_INFO_EXPORT and EXPORT_NAME reply). */
export const NBD_FLAG_T = {
  HAS_FLAGS: 1 << 0,
  READ_ONLY: 1 << 1,
  SEND_FLUSH: 1 << 2,
  SEND_FUA: 1 << 3,
  ROTATIONAL: 1 << 4,
  SEND_TRIM: 1 << 5,
  SEND_WRITE_ZEROES: 1 << 6,
  SEND_DF: 1 << 7,
  CAN_MULTI_CONN: 1 << 8,
  SEND_RESIZE: 1 << 9,
  SEND_CACHE: 1 << 10,
  SEND_FAST_ZERO: 1 << 11,
} as const;

export const NBD_OPT = {
  EXPORT_NAME: 1,
  ABORT: 2,
  LIST: 3,
  PEEK_EXPORT: 4,
  STARTTLS: 5,
  INFO: 6,
  GO: 7,
  STRUCTURED_REPLY: 8,
  LIST_META_CONTEXT: 9,
  SET_META_CONTEXT: 10,
  EXTENDED_HEADERS: 11,
} as const;

const ERR = 0x80000000;
export const NBD_REP = {
  ACK: 1,
  SERVER: 2,
  INFO: 3,
  META_CONTEXT: 4,
  ERR_UNSUP: ERR + 1,
  ERR_POLICY: ERR + 2,
  ERR_INVALID: ERR + 3,
  ERR_PLATFORM: ERR + 4,
  ERR_TLS_REQD: ERR + 5,
  ERR_UNKNOWN: ERR + 6,
  ERR_SHUTDOWN: ERR + 7,
  ERR_BLOCK_SIZE_REQD: ERR + 8,
  ERR_TOO_BIG: ERR + 9,
} as const;

export const NBD_INFO = { EXPORT: 0, NAME: 1, DESCRIPTION: 2, BLOCK_SIZE: 3 } as const;

export const NBD_CMD = {
  READ: 0,
  WRITE: 1,
  DISC: 2,
  FLUSH: 3,
  TRIM: 4,
  CACHE: 5,
  WRITE_ZEROES: 6,
  BLOCK_STATUS: 7,
} as const;

export const NBD_CMD_FLAG = {
  FUA: 1 << 0,
  NO_HOLE: 1 << 1,
  DF: 1 << 2,
  REQ_ONE: 1 << 3,
  FAST_ZERO: 1 << 4,
} as const;

/**
 * The command flags each command may carry (proto.md "Command flags": FUA on any command, DF on
 * READ, REQ_ONE on BLOCK_STATUS, NO_HOLE and FAST_ZERO on WRITE_ZEROES); DISC is honoured
 * whatever it carries. Keyed by NBD_CMD name; validate.ts and native/src/request.c both read it.
 */
export const NBD_CMD_FLAGS_ALLOWED = {
  READ: NBD_CMD_FLAG.FUA | NBD_CMD_FLAG.DF,
  WRITE: NBD_CMD_FLAG.FUA,
  DISC: 0xffff,
  FLUSH: NBD_CMD_FLAG.FUA,
  TRIM: NBD_CMD_FLAG.FUA,
  CACHE: NBD_CMD_FLAG.FUA,
  WRITE_ZEROES: NBD_CMD_FLAG.FUA | NBD_CMD_FLAG.NO_HOLE | NBD_CMD_FLAG.FAST_ZERO,
  BLOCK_STATUS: NBD_CMD_FLAG.FUA | NBD_CMD_FLAG.REQ_ONE,
} as const satisfies Record<keyof typeof NBD_CMD, number>;

export const NBD_REPLY_FLAG = { DONE: 1 << 0 } as const;

export const NBD_REPLY_TYPE = {
  NONE: 0,
  OFFSET_DATA: 1,
  OFFSET_HOLE: 2,
  BLOCK_STATUS: 5,
  ERROR: 0x8001,
  ERROR_OFFSET: 0x8002,
} as const;

/** base:allocation status bits. */
export const NBD_STATE = { HOLE: 1 << 0, ZERO: 1 << 1 } as const;

/** Error values (proto.md "Error values"); 0 is success. */
export const NBD_E = {
  OK: 0,
  EPERM: 1,
  EIO: 5,
  ENOMEM: 12,
  EINVAL: 22,
  ENOSPC: 28,
  EOVERFLOW: 75,
  ENOTSUP: 95,
  ESHUTDOWN: 108,
} as const;
export type NbdErrno = (typeof NBD_E)[keyof typeof NBD_E];

export const BASE_ALLOCATION = 'base:allocation';
/** The id this server gives base:allocation after SET_META_CONTEXT (LIST replies use 0). */
export const BASE_ALLOCATION_ID = 1;

/** Frame sizes in bytes. */
export const GREETING_LENGTH = 18; // NBDMAGIC 8 + IHAVEOPT 8 + handshake flags 2
export const CLIENT_FLAGS_LENGTH = 4;
export const OPTION_HEADER_LENGTH = 16; // IHAVEOPT 8 + option 4 + length 4
export const OPTION_REPLY_HEADER_LENGTH = 20; // magic 8 + option 4 + type 4 + length 4
export const REQUEST_LENGTH = 28; // magic 4 + flags 2 + type 2 + cookie 8 + offset 8 + length 4
export const SIMPLE_REPLY_LENGTH = 16; // magic 4 + error 4 + cookie 8
export const CHUNK_HEADER_LENGTH = 20; // magic 4 + flags 2 + type 2 + cookie 8 + length 4
/** Structured chunk payloads (proto.md "Structured reply chunk message types"). */
export const OFFSET_DATA_HEADER_LENGTH = CHUNK_HEADER_LENGTH + 8; // then offset 8, the data
export const OFFSET_HOLE_PAYLOAD_LENGTH = 12; // offset 8 + hole size 4
export const ERROR_PAYLOAD_HEADER_LENGTH = 6; // error 4 + message length 2, then the message
export const BLOCK_STATUS_CONTEXT_LENGTH = 4; // context id, then descriptors
export const BLOCK_STATUS_DESCRIPTOR_LENGTH = 8; // extent length 4 + status flags 4
export const EXPORT_NAME_PADDING_LENGTH = 124;

export function nameOf(table: Readonly<Record<string, number>>, value: number): string {
  for (const [name, candidate] of Object.entries(table)) if (candidate === value) return name;
  return `unknown(0x${value.toString(16)})`;
}
