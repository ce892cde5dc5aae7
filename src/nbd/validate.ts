/**
 * nbd/validate: pure request decoding and checks (proto.md "Request message", "Request types",
 * "Error values", "Size constraints"), run before any I/O. decodeRequest reads a 28-byte header
 * (throwing ProtocolError ERR_NBD_BAD_MAGIC on a wrong magic); each check returns an NBD errno
 * (0 = valid); nothing here touches the Export's data. native/src/request.c is the same decoding
 * and checks in C for the data-path thread: test/unit/protocol-corpus.test.ts (every case of
 * fixtures/requests/) and test/unit/native-request.test.ts (random headers) hold them equal.
 *
 * Order, following the spec's error choices: unknown command → EINVAL; flags not defined for the
 * command or not advertised → EINVAL; write-type command on a read-only export → EPERM; command
 * not advertised → EINVAL; FLUSH with offset/length → EINVAL; zero length → EINVAL (unspecified by
 * the spec, never a disconnect); payload above LIMITS.nbdPayloadMax → EINVAL (WRITE: the payload
 * is still consumed); unaligned to the advertised minimum block → EINVAL; past the end → ENOSPC
 * for WRITE/WRITE_ZEROES, EINVAL otherwise. Offsets arrive as two u32 halves; `offset` is -1 when
 * the high half makes it unsafe as a number, which always lies past the end of any export.
 */
import assert from 'node:assert';
import { ProtocolError } from '../errors';
import { LIMITS } from '../limits';
import {
  NBD_CMD, NBD_CMD_FLAG, NBD_CMD_FLAGS_ALLOWED, NBD_E, NBD_FLAG_T, NBD_REQUEST_MAGIC,
  type NbdErrno, REQUEST_LENGTH,
} from './constants';

export interface Request {
  flags: number;
  type: number;
  cookieHigh: number;
  cookieLow: number;
  /** byte offset, or -1 when it exceeds Number.MAX_SAFE_INTEGER */
  offset: number;
  length: number;
}

export interface ValidateContext {
  /** transmission flags advertised to this client */
  eflags: number;
  size: number;
  isStructured: boolean;
  hasBaseAllocation: boolean;
  /** the minimum block size advertised in NBD_INFO_BLOCK_SIZE, or 1 when none was */
  blockSizeMin: number;
}

/** Offsets whose high u32 half reaches this are above Number.MAX_SAFE_INTEGER (2^53 - 1). */
const OFFSET_HIGH_UNSAFE_MIN = 0x200000;

/**
 * The request whose header is the first REQUEST_LENGTH bytes of `header`. Throws ProtocolError
 * ERR_NBD_BAD_MAGIC when the magic is not NBD_REQUEST_MAGIC (proto.md: the server may close).
 * The offset is -1 when it is unsafe as a number (see Request.offset).
 */
export function decodeRequest(header: Buffer): Request {
  assert(header.length >= REQUEST_LENGTH, 'decodeRequest: a whole header');
  if (header.readUInt32BE(0) !== NBD_REQUEST_MAGIC) {
    throw new ProtocolError('ERR_NBD_BAD_MAGIC', 'request: bad request magic');
  }
  const offsetHigh = header.readUInt32BE(16);
  const offsetLow = header.readUInt32BE(20);
  return {
    flags: header.readUInt16BE(4),
    type: header.readUInt16BE(6),
    cookieHigh: header.readUInt32BE(8),
    cookieLow: header.readUInt32BE(12),
    offset: offsetHigh >= OFFSET_HIGH_UNSAFE_MIN ? -1 : offsetHigh * 0x100000000 + offsetLow,
    length: header.readUInt32BE(24),
  };
}

/** NBD_CMD_FLAGS_ALLOWED by command value. */
const ALLOWED_FLAGS: ReadonlyMap<number, number> = new Map(
  (Object.keys(NBD_CMD) as (keyof typeof NBD_CMD)[])
    .map((name): [number, number] => [NBD_CMD[name], NBD_CMD_FLAGS_ALLOWED[name]]),
);

function isWriteType(type: number): boolean {
  return type === NBD_CMD.WRITE || type === NBD_CMD.TRIM || type === NBD_CMD.WRITE_ZEROES;
}

function validateFlags(request: Request, context: ValidateContext): NbdErrno {
  const allowed = ALLOWED_FLAGS.get(request.type);
  if (allowed === undefined) return NBD_E.EINVAL;
  if ((request.flags & ~allowed) !== 0) return NBD_E.EINVAL;
  const has = (flag: number): boolean => (request.flags & flag) !== 0;
  const advertised = (flag: number): boolean => (context.eflags & flag) !== 0;
  if (request.type === NBD_CMD.DISC) return NBD_E.OK;
  if (has(NBD_CMD_FLAG.FUA) && !advertised(NBD_FLAG_T.SEND_FUA)) return NBD_E.EINVAL;
  if (has(NBD_CMD_FLAG.DF) && !context.isStructured) return NBD_E.EINVAL;
  if (has(NBD_CMD_FLAG.FAST_ZERO) && !advertised(NBD_FLAG_T.SEND_FAST_ZERO)) return NBD_E.EINVAL;
  return NBD_E.OK;
}

function validateAdvertised(request: Request, context: ValidateContext): NbdErrno {
  const advertised = (flag: number): boolean => (context.eflags & flag) !== 0;
  if (isWriteType(request.type) && advertised(NBD_FLAG_T.READ_ONLY)) return NBD_E.EPERM;
  switch (request.type) {
    case NBD_CMD.FLUSH:
      return advertised(NBD_FLAG_T.SEND_FLUSH) ? NBD_E.OK : NBD_E.EINVAL;
    case NBD_CMD.TRIM:
      return advertised(NBD_FLAG_T.SEND_TRIM) ? NBD_E.OK : NBD_E.EINVAL;
    case NBD_CMD.WRITE_ZEROES:
      return advertised(NBD_FLAG_T.SEND_WRITE_ZEROES) ? NBD_E.OK : NBD_E.EINVAL;
    case NBD_CMD.BLOCK_STATUS:
      return context.isStructured && context.hasBaseAllocation ? NBD_E.OK : NBD_E.EINVAL;
    default:
      return NBD_E.OK; // READ, WRITE; CACHE is accepted unadvertised (a no-op then)
  }
}

function validateRange(request: Request, context: ValidateContext): NbdErrno {
  const { type, offset, length } = request;
  if (type === NBD_CMD.FLUSH) {
    return offset === 0 && length === 0 ? NBD_E.OK : NBD_E.EINVAL;
  }
  if (length === 0) return NBD_E.EINVAL;
  const hasPayloadLimit = type === NBD_CMD.READ || type === NBD_CMD.WRITE;
  if (hasPayloadLimit && length > LIMITS.nbdPayloadMax) return NBD_E.EINVAL;
  const min = context.blockSizeMin;
  if (min > 1 && offset >= 0 && (offset % min !== 0 || length % min !== 0)) return NBD_E.EINVAL;
  if (offset < 0 || offset + length > context.size) {
    return type === NBD_CMD.WRITE || type === NBD_CMD.WRITE_ZEROES ? NBD_E.ENOSPC : NBD_E.EINVAL;
  }
  return NBD_E.OK;
}

/** 0 when the request may execute, else the NBD errno to answer with. */
export function validateRequest(request: Request, context: ValidateContext): NbdErrno {
  const flagsErrno = validateFlags(request, context);
  if (flagsErrno !== NBD_E.OK) return flagsErrno;
  if (request.type === NBD_CMD.DISC) return NBD_E.OK;
  const advertisedErrno = validateAdvertised(request, context);
  if (advertisedErrno !== NBD_E.OK) return advertisedErrno;
  return validateRange(request, context);
}

/** Transmission flags for an Export (proto.md "Transmission flags"). */
export function transmissionFlagsOf(
  exp: {
    isReadOnly: boolean; canFlush: boolean; canFua: boolean; canTrim: boolean;
    canZero: boolean; canFastZero: boolean; canCache: boolean; canMultiConn: boolean;
  },
  isStructured: boolean,
): number {
  let flags: number = NBD_FLAG_T.HAS_FLAGS;
  if (exp.isReadOnly) flags |= NBD_FLAG_T.READ_ONLY;
  if (exp.canFlush) flags |= NBD_FLAG_T.SEND_FLUSH;
  if (exp.canFua && exp.canFlush) flags |= NBD_FLAG_T.SEND_FUA;
  if (!exp.isReadOnly && exp.canTrim) flags |= NBD_FLAG_T.SEND_TRIM;
  if (!exp.isReadOnly && exp.canZero) flags |= NBD_FLAG_T.SEND_WRITE_ZEROES;
  if (!exp.isReadOnly && exp.canZero && exp.canFastZero) flags |= NBD_FLAG_T.SEND_FAST_ZERO;
  if (isStructured) flags |= NBD_FLAG_T.SEND_DF;
  if (exp.canMultiConn) flags |= NBD_FLAG_T.CAN_MULTI_CONN;
  if (exp.canCache) flags |= NBD_FLAG_T.SEND_CACHE;
  return flags;
}
