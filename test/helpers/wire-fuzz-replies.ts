/**
 * wire-fuzz-replies: the fuzzer's framing oracle. Given the bytes a client sent and the bytes
 * the server answered on one connection, checkConversation() walks both as the server must have
 * (proto.md "Handshake", "Option types", "Transmission phase", "Structured reply chunk message")
 * and says whether every reply frame the server sent is valid NBD: the greeting; option replies
 * with the right magic, the option echoed, a known type allowed for that option, a payload of
 * the type's shape, NBD_INFO_EXPORT before a GO/INFO ACK, nothing after a reply the server must
 * close after; the EXPORT_NAME reply; in transmission, simple and structured replies whose
 * cookies match requests the client sent whole and not yet answered, with READ data of the
 * requested length, chunks inside the request's range and known errnos.
 *
 * The server may close at any point (limits, violations, deadlines) and a reply stream may stop
 * in the middle of a frame when the client left first, so a truncated tail is accepted; bytes
 * the server should not have sent are not. Returns null when valid, else why not.
 */

export interface ConversationContext {
  /** sizes of the exports the server serves: NBD_INFO_EXPORT and EXPORT_NAME must name one */
  sizes: ReadonlySet<bigint>;
  optionLengthMax: number;
  optionCountMax: number;
  writeDiscardMax: number;
}

const NBDMAGIC = Buffer.from('NBDMAGIC');
const IHAVEOPT = Buffer.from('IHAVEOPT');
const OPTION_REPLY_MAGIC = 0x0003e889045565a9n;
const SIMPLE_REPLY_MAGIC = 0x67446698;
const STRUCTURED_REPLY_MAGIC = 0x668e33ef;
const REQUEST_MAGIC = 0x25609513;
const OPT = { EXPORT_NAME: 1, ABORT: 2, LIST: 3, STARTTLS: 5, INFO: 6, GO: 7,
  STRUCTURED_REPLY: 8, LIST_META_CONTEXT: 9, SET_META_CONTEXT: 10 } as const;
const REP = { ACK: 1, SERVER: 2, INFO: 3, META_CONTEXT: 4 } as const;
const REP_ERR_MIN = 0x80000001;
const REP_ERR_MAX = 0x80000008;
const CMD = { READ: 0, WRITE: 1, DISC: 2, BLOCK_STATUS: 7 } as const;
const ERRNOS = new Set([0, 1, 5, 12, 22, 28, 75, 95, 108]);
const FLAG_HAS_FLAGS = 1;
const REPLY_FLAG_DONE = 1;
const CHUNK = { NONE: 0, OFFSET_DATA: 1, OFFSET_HOLE: 2, BLOCK_STATUS: 5, ERROR: 0x8001,
  ERROR_OFFSET: 0x8002 } as const;
/** a frame from the server this long is not NBD any more (replies here are far shorter) */
const REPLY_PAYLOAD_MAX = 64 * 1024 * 1024;

class Cursor {
  at = 0;
  constructor(readonly bytes: Buffer) {}

  get left(): number {
    return this.bytes.length - this.at;
  }

  /** The next n bytes, or null (and nothing consumed) when fewer are there. */
  take(n: number): Buffer | null {
    if (this.left < n) return null;
    const out = this.bytes.subarray(this.at, this.at + n);
    this.at += n;
    return out;
  }
}

/** Thrown by the walk: the server's bytes end here (fine, the connection closed). */
class Ended extends Error {}

function need(cursor: Cursor, n: number): Buffer {
  const out = cursor.take(n);
  if (out === null) throw new Ended();
  return out;
}

function expectEnd(reply: Cursor, after: string): string | null {
  return reply.left === 0 ? null
    : `${reply.left} bytes after ${after}, where the server must close: ` +
      reply.bytes.subarray(reply.at, reply.at + 32).toString('hex');
}

interface OptionState {
  isStructured: boolean;
  hasExportInfo: boolean;
}

/** Checks one option reply's payload shape; null when fine. */
function checkOptionPayload(option: number, type: number, payload: Buffer,
  context: ConversationContext, state: OptionState): string | null {
  if (type === REP.ACK) return payload.length === 0 ? null : 'ACK with a payload';
  if (type >= REP_ERR_MIN) {
    return type <= REP_ERR_MAX ? null : `unknown error 0x${type.toString(16)}`;
  }
  if (type === REP.SERVER) {
    if (option !== OPT.LIST) return 'NBD_REP_SERVER outside NBD_OPT_LIST';
    if (payload.length < 4 || payload.readUInt32BE(0) > payload.length - 4) return 'bad SERVER';
    return null;
  }
  if (type === REP.INFO) {
    if (option !== OPT.INFO && option !== OPT.GO) return 'NBD_REP_INFO outside INFO/GO';
    if (payload.length < 2) return 'INFO without a type';
    const info = payload.readUInt16BE(0);
    if (info === 0) {
      if (payload.length !== 12) return `NBD_INFO_EXPORT of ${payload.length} bytes`;
      if (!context.sizes.has(payload.readBigUInt64BE(2))) return 'NBD_INFO_EXPORT: unknown size';
      if ((payload.readUInt16BE(10) & FLAG_HAS_FLAGS) === 0) return 'INFO_EXPORT without HAS_FLAGS';
      state.hasExportInfo = true;
    } else if (info === 3) {
      if (payload.length !== 14) return `NBD_INFO_BLOCK_SIZE of ${payload.length} bytes`;
      const [min, preferred, max] = [2, 6, 10].map((at) => payload.readUInt32BE(at));
      if (!(min! >= 1 && min! <= preferred! && min! <= max!)) return 'bad NBD_INFO_BLOCK_SIZE';
    } else if (info > 3) {
      return `unknown NBD_INFO type ${info}`;
    }
    return null;
  }
  if (type === REP.META_CONTEXT) {
    if (option !== OPT.LIST_META_CONTEXT && option !== OPT.SET_META_CONTEXT) {
      return 'META_CONTEXT outside the meta-context options';
    }
    return payload.length >= 4 ? null : 'META_CONTEXT too short';
  }
  return `unknown reply type 0x${type.toString(16)}`;
}

/**
 * Reads the replies to one option up to the final one; returns its type, or a string why
 * the replies are bad. Throws Ended when the server's bytes end first.
 */
function readOptionReplies(reply: Cursor, option: number, context: ConversationContext,
  state: OptionState): number | string {
  state.hasExportInfo = false;
  for (;;) {
    const header = need(reply, 20);
    if (header.readBigUInt64BE(0) !== OPTION_REPLY_MAGIC) {
      return `bad option reply magic ${header.subarray(0, 8).toString('hex')}`;
    }
    if (header.readUInt32BE(8) !== option) {
      return `option reply for 0x${header.readUInt32BE(8).toString(16)} to ` +
        `0x${option.toString(16)}`;
    }
    const type = header.readUInt32BE(12);
    const length = header.readUInt32BE(16);
    if (length > REPLY_PAYLOAD_MAX) return `option reply of ${length} bytes`;
    const payload = need(reply, length);
    const why = checkOptionPayload(option, type, payload, context, state);
    if (why !== null) return `${why} (option 0x${option.toString(16)})`;
    if (type === REP.ACK || type >= REP_ERR_MIN) return type;
  }
}

interface Pending {
  type: number;
  offset: bigint;
  length: number;
}

/** The whole requests in the client's transmission bytes, in order. */
function clientRequests(client: Cursor, context: ConversationContext): [bigint, Pending][] {
  const requests: [bigint, Pending][] = [];
  for (;;) {
    const header = client.take(28);
    if (header === null || header.readUInt32BE(0) !== REQUEST_MAGIC) return requests;
    const type = header.readUInt16BE(6);
    if (type === CMD.DISC) return requests;
    const length = header.readUInt32BE(24);
    if (type === CMD.WRITE) {
      if (length > context.writeDiscardMax) return requests;
      if (client.take(length) === null) return requests;
    }
    requests.push([header.readBigUInt64BE(8), { type, offset: header.readBigUInt64BE(16),
      length }]);
  }
}

function checkChunk(type: number, flags: number, payload: Buffer, request: Pending,
): string | null {
  const end = request.offset + BigInt(request.length);
  const inRange = (offset: bigint, length: number): boolean =>
    offset >= request.offset && offset + BigInt(length) <= end && length > 0;
  switch (type) {
    case CHUNK.NONE:
      return (flags & REPLY_FLAG_DONE) !== 0 && payload.length === 0 ? null : 'bad NONE chunk';
    case CHUNK.OFFSET_DATA:
      if (request.type !== CMD.READ || payload.length < 9) return 'bad OFFSET_DATA chunk';
      return inRange(payload.readBigUInt64BE(0), payload.length - 8) ? null
        : 'OFFSET_DATA outside the request';
    case CHUNK.OFFSET_HOLE:
      if (request.type !== CMD.READ || payload.length !== 12) return 'bad OFFSET_HOLE chunk';
      return inRange(payload.readBigUInt64BE(0), payload.readUInt32BE(8)) ? null
        : 'OFFSET_HOLE outside the request';
    case CHUNK.BLOCK_STATUS:
      if (request.type !== CMD.BLOCK_STATUS) return 'BLOCK_STATUS chunk for another command';
      return payload.length >= 12 && (payload.length - 4) % 8 === 0 ? null
        : 'bad BLOCK_STATUS chunk';
    case CHUNK.ERROR:
    case CHUNK.ERROR_OFFSET: {
      const minimum = type === CHUNK.ERROR ? 6 : 14;
      if (payload.length < minimum) return 'short error chunk';
      const errno = payload.readUInt32BE(0);
      if (errno === 0 || !ERRNOS.has(errno)) return `error chunk with errno ${errno}`;
      return payload.readUInt16BE(4) <= payload.length - minimum ? null : 'bad error message';
    }
    default:
      return `unknown chunk type 0x${type.toString(16)}`;
  }
}

/** One reply frame; null when fine, else why not. Throws Ended on a truncated tail. */
function checkReply(reply: Cursor, pending: Map<bigint, Pending[]>, isStructured: boolean,
): string | null {
  const magic = need(reply, 4).readUInt32BE(0);
  if (magic === SIMPLE_REPLY_MAGIC) {
    const rest = need(reply, 12);
    const errno = rest.readUInt32BE(0);
    const cookie = rest.readBigUInt64BE(4);
    const request = pending.get(cookie)?.shift();
    if (request === undefined) return `simple reply to unknown cookie ${cookie}`;
    if (!ERRNOS.has(errno)) return `simple reply with errno ${errno}`;
    if (request.type === CMD.READ && errno === 0) {
      if (isStructured) return 'simple data reply to a READ with structured replies';
      need(reply, request.length);
    }
    return null;
  }
  if (magic !== STRUCTURED_REPLY_MAGIC) return `bad reply magic 0x${magic.toString(16)}`;
  if (!isStructured) return 'structured reply without NBD_OPT_STRUCTURED_REPLY';
  const header = need(reply, 16);
  const flags = header.readUInt16BE(0);
  const type = header.readUInt16BE(2);
  const cookie = header.readBigUInt64BE(4);
  const length = header.readUInt32BE(12);
  if ((flags & ~REPLY_FLAG_DONE) !== 0) return `chunk flags 0x${flags.toString(16)}`;
  if (length > REPLY_PAYLOAD_MAX) return `chunk of ${length} bytes`;
  const queue = pending.get(cookie);
  const request = queue?.[0];
  if (request === undefined) return `chunk for unknown cookie ${cookie}`;
  const payload = need(reply, length);
  const why = checkChunk(type, flags, payload, request);
  if (why !== null) return `${why} (cookie ${cookie})`;
  if ((flags & REPLY_FLAG_DONE) !== 0) queue!.shift();
  return null;
}

function checkTransmission(client: Cursor, reply: Cursor, context: ConversationContext,
  isStructured: boolean): string | null {
  const pending = new Map<bigint, Pending[]>();
  /** cookies reused with another command or length: which reply is whose cannot be told */
  const ambiguous = new Set<bigint>();
  for (const [cookie, request] of clientRequests(client, context)) {
    const queue = pending.get(cookie) ?? [];
    if (queue.some((other) => other.type !== request.type || other.length !== request.length)) {
      ambiguous.add(cookie);
    }
    queue.push(request);
    pending.set(cookie, queue);
  }
  while (reply.left > 0) {
    // the framing from here on depends on which request a reply answers: stop checking
    if (reply.left >= 16 && ambiguous.has(reply.bytes.readBigUInt64BE(reply.at + 8))) break;
    const why = checkReply(reply, pending, isStructured);
    if (why !== null) return why;
  }
  return null;
}

/** The handshake walk; returns null, a reason, or how transmission starts. */
function checkOptions(client: Cursor, reply: Cursor, context: ConversationContext,
  flags: number): string | null | { isStructured: boolean } {
  const state: OptionState = { isStructured: false, hasExportInfo: false };
  const isFixed = (flags & 1) !== 0;
  const noZeroes = (flags & 2) !== 0;
  for (let count = 1; ; count++) {
    const header = client.take(16);
    if (header === null) return expectEnd(reply, 'the last whole option');
    if (!header.subarray(0, 8).equals(IHAVEOPT)) return expectEnd(reply, 'a bad option magic');
    const option = header.readUInt32BE(8);
    const length = header.readUInt32BE(12);
    if (count > context.optionCountMax) return expectEnd(reply, 'too many options');
    if (length > context.optionLengthMax) return expectEnd(reply, 'an option too long');
    if (client.take(length) === null) return expectEnd(reply, 'a truncated option');
    if (!isFixed && option !== OPT.EXPORT_NAME) return expectEnd(reply, 'an option, not fixed');
    if (option === OPT.EXPORT_NAME) {
      const info = need(reply, 10);
      if (!context.sizes.has(info.readBigUInt64BE(0))) return 'EXPORT_NAME reply: unknown size';
      if ((info.readUInt16BE(8) & FLAG_HAS_FLAGS) === 0) return 'EXPORT_NAME without HAS_FLAGS';
      if (!noZeroes && !need(reply, 124).equals(Buffer.alloc(124))) return 'nonzero padding';
      return { isStructured: state.isStructured };
    }
    const outcome = readOptionReplies(reply, option, context, state);
    if (typeof outcome === 'string') return outcome;
    if (option === OPT.ABORT) return expectEnd(reply, 'NBD_OPT_ABORT');
    if (outcome !== REP.ACK) continue;
    if (option === OPT.STRUCTURED_REPLY) state.isStructured = true;
    if (option === OPT.STARTTLS) return null; // TLS records follow, not NBD
    if (option === OPT.INFO && !state.hasExportInfo) return 'INFO ACK without NBD_INFO_EXPORT';
    if (option === OPT.GO) {
      return state.hasExportInfo ? { isStructured: state.isStructured }
        : 'GO ACK without NBD_INFO_EXPORT';
    }
  }
}

export function checkConversation(clientBytes: Buffer, replyBytes: Buffer,
  context: ConversationContext): string | null {
  const client = new Cursor(clientBytes);
  const reply = new Cursor(replyBytes);
  try {
    const greeting = need(reply, 18);
    if (!greeting.subarray(0, 8).equals(NBDMAGIC) ||
      !greeting.subarray(8, 16).equals(IHAVEOPT)) return 'bad greeting';
    if ((greeting.readUInt16BE(16) & ~3) !== 0) return 'unknown handshake flags';
    const flagsFrame = client.take(4);
    if (flagsFrame === null) return expectEnd(reply, 'the greeting');
    const flags = flagsFrame.readUInt32BE(0);
    if ((flags & ~3) !== 0) return expectEnd(reply, 'unknown client flags');
    const outcome = checkOptions(client, reply, context, flags);
    if (outcome === null || typeof outcome === 'string') return outcome;
    return checkTransmission(client, reply, context, outcome.isStructured);
  } catch (error) {
    if (error instanceof Ended) return null;
    throw error;
  }
}
