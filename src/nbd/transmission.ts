/**
 * nbd/transmission: phase 2 execution (proto.md "Transmission", "Request types"): one validated
 * request in, the Export operation run, one reply out. request-intake.ts decodes, validates and
 * counts requests in flight, connection.ts pauses reading at the caps; this module only
 * executes and replies (through the connection's reply channel, reply-channel.ts).
 *
 * Replies: simple unless structured replies were negotiated; then READ answers with OFFSET_DATA
 * (or OFFSET_DATA/OFFSET_HOLE chunks when the Export can read sparsely and the read is long and
 * not DF), BLOCK_STATUS with one BLOCK_STATUS chunk, and errors on READ/BLOCK_STATUS with an
 * ERROR chunk. Other commands answer with simple replies, which the spec allows in both modes.
 * A READ reply is one Buffer that the Export fills in place; when the context says the output
 * is done with a buffer once its write callback runs (a socket), that Buffer comes from
 * bufferPool and goes back in the callback, or at once when the read fails (then no payload is
 * sent: only the error). With a sender thread (routesOf chose it) a READ of
 * LIMITS.nbdSenderReadMin or more is a header, then the range as the export's data plane plans
 * it from descriptors, sent by that thread (dataplane/reply-sender.ts). executeRequest never
 * rejects: every failure becomes an error reply (errno.ts), so one bad request never ends the
 * connection (a reply the sender cut short ends it); it resolves with the NBD errno it replied
 * (0: success), which request-intake.ts counts (request-stats.ts).
 */
import type { DataPlaneSource, Export } from '../engine/export';
import { isBug } from '../errors';
import type { Logger } from '../log';
import { LIMITS } from '../limits';
import { BASE_ALLOCATION_ID, NBD_CMD, NBD_CMD_FLAG, NBD_E, nameOf } from './constants';
import { nbdErrnoOf } from './errno';
import {
  READ_DATA_OFFSET_STRUCTURED,
  blockStatusChunk,
  bufferPool,
  clipStatusRuns,
  errorChunk,
  fillSmallZeroPieces,
  readReplyBuffer,
  readReplyHeader,
  simpleReply,
  sparseReadChunks,
} from './replies';
import type { ReplyChannel } from './reply-channel';
import type { Request } from './validate';

export interface TransmissionContext {
  readonly export: Export;
  readonly isStructured: boolean;
  readonly log: Logger;
  /** true when a buffer may be reused once send's onWritten ran (the output copied it) */
  readonly canReuseBuffers: boolean;
  /**
   * Where replies go (reply-channel.ts): send() queues a frame, onWritten runs once the output
   * no longer needs it (or it was dropped), `heldBytes` is what stays allocated until then (a
   * pooled buffer behind the frame). With a sender thread (`canSendPlanned`), sendPlanned()
   * sends a header then the file pieces of a ReadPlan; null when the output cannot take it now
   * (the caller sends the reply from a buffer); a rejection with `isIntact` false means the
   * connection is ending (a reply may have been cut short).
   */
  readonly channel: ReplyChannel;
  /** the export's data plane (Export.dataPlane), handed to the channel unopened */
  readonly dataPlane: DataPlaneSource | undefined;
  /**
   * Optional: a bug (errors.ts isBug) while serving a request: after its error
   * reply the connection ends, and the fault is logged and counted (connection.ts fault()).
   */
  fault?(error: unknown, where: string): void;
}

/** Sends an error for `request` in the form its command needs (ERROR chunk or simple reply). */
export function sendError(
  context: TransmissionContext, request: Request, errno: number, message: string,
): void {
  const isChunked = context.isStructured &&
    (request.type === NBD_CMD.READ || request.type === NBD_CMD.BLOCK_STATUS);
  context.channel.send(isChunked
    ? errorChunk(errno, request.cookieHigh, request.cookieLow, message)
    : simpleReply(errno, request.cookieHigh, request.cookieLow));
}

function hasFlag(request: Request, flag: number): boolean {
  return (request.flags & flag) !== 0;
}

function isSparseRead(context: TransmissionContext, request: Request): boolean {
  return context.isStructured && context.export.readSparse !== undefined &&
    request.length >= LIMITS.nbdSparseReadMin && !hasFlag(request, NBD_CMD_FLAG.DF);
}

/**
 * A large READ sent from the backing descriptors by the sender thread; null when it cannot be
 * (no sender, an export without a data plane, holes a sparse reply should describe).
 */
function sendPlanned(context: TransmissionContext, request: Request): Promise<void> | null {
  const source = context.dataPlane;
  if (!context.channel.canSendPlanned || source === undefined ||
    request.length < LIMITS.nbdSenderReadMin) {
    return null;
  }
  const { offset, length, cookieHigh, cookieLow } = request;
  return context.channel.sendPlanned(source, offset, length, isSparseRead(context, request),
    readReplyHeader(context.isStructured, cookieHigh, cookieLow, offset, length));
}

async function serveRead(context: TransmissionContext, request: Request): Promise<number> {
  const planned = sendPlanned(context, request);
  if (planned !== null) {
    await planned;
    return NBD_E.OK;
  }
  const { length } = request;
  const storage = context.canReuseBuffers
    ? bufferPool.acquire(READ_DATA_OFFSET_STRUCTURED + length)
    : undefined;
  const release = storage === undefined ? undefined : (): void => bufferPool.release(storage);
  try {
    return await readInto(context, request, storage, release);
  } catch (error) {
    // the Export settled: nothing writes into storage any more, and none of it was sent
    if (release !== undefined) release();
    throw error;
  }
}

async function readInto(
  context: TransmissionContext, request: Request, storage: Buffer | undefined,
  release: (() => void) | undefined,
): Promise<number> {
  const { offset, length, cookieHigh, cookieLow } = request;
  const exp = context.export;
  const frame = readReplyBuffer(context.isStructured, cookieHigh, cookieLow, offset, length,
    storage);
  const isSparse = isSparseRead(context, request);
  if (!isSparse || exp.readSparse === undefined) {
    await exp.read(offset, length, frame, frame.length - length);
    context.channel.send(frame, release, storage?.length);
    return NBD_E.OK;
  }
  const pieces = await exp.readSparse(offset, length, frame, READ_DATA_OFFSET_STRUCTURED);
  fillSmallZeroPieces(frame, pieces);
  const chunks = sparseReadChunks(frame, pieces, cookieHigh, cookieLow, offset, length);
  if (chunks === null) {
    context.log.error({ offset, length }, 'NBD_CMD_READ: readSparse pieces do not tile the range');
    if (release !== undefined) release();
    sendError(context, request, NBD_E.EIO, 'internal error');
    return NBD_E.EIO;
  }
  context.channel.sendv(chunks, release, storage?.length);
  return NBD_E.OK;
}

async function serveBlockStatus(context: TransmissionContext, request: Request,
): Promise<number> {
  const runsMax = hasFlag(request, NBD_CMD_FLAG.REQ_ONE) ? 1 : LIMITS.nbdBlockStatusRunsMax;
  const runs = await context.export.blockStatus(request.offset, request.length, runsMax);
  const clipped = clipStatusRuns(runs, request.length).slice(0, runsMax);
  if (clipped.length === 0) {
    sendError(context, request, NBD_E.EIO, 'block status returned no runs');
    return NBD_E.EIO;
  }
  context.channel.send(blockStatusChunk(request.cookieHigh, request.cookieLow, BASE_ALLOCATION_ID,
    clipped));
  return NBD_E.OK;
}

async function serveCommand(
  context: TransmissionContext, request: Request, payload: Buffer | null,
): Promise<number> {
  const exp = context.export;
  const fua = hasFlag(request, NBD_CMD_FLAG.FUA);
  switch (request.type) {
    case NBD_CMD.READ:
      return serveRead(context, request);
    case NBD_CMD.BLOCK_STATUS:
      return serveBlockStatus(context, request);
    case NBD_CMD.WRITE:
      if (payload === null) throw new Error('NBD_CMD_WRITE without payload');
      await exp.write(request.offset, payload, { fua });
      break;
    case NBD_CMD.FLUSH:
      await exp.flush();
      break;
    case NBD_CMD.TRIM:
      await exp.trim(request.offset, request.length, { fua });
      break;
    case NBD_CMD.WRITE_ZEROES:
      await exp.zero(request.offset, request.length, {
        fua,
        mayTrim: !hasFlag(request, NBD_CMD_FLAG.NO_HOLE),
        fastOnly: hasFlag(request, NBD_CMD_FLAG.FAST_ZERO),
      });
      break;
    case NBD_CMD.CACHE:
      if (exp.canCache) await exp.cache(request.offset, request.length);
      break;
    default:
      throw new Error(`unexpected command ${request.type}`); // validate.ts rejects these
  }
  context.channel.send(simpleReply(0, request.cookieHigh, request.cookieLow));
  return NBD_E.OK;
}

/** Runs one validated request and sends its reply; resolves with its errno, never rejects. */
export async function executeRequest(
  context: TransmissionContext, request: Request, payload: Buffer | null,
): Promise<number> {
  try {
    return await serveCommand(context, request, payload);
  } catch (error) {
    const errno = nbdErrnoOf(error, request.flags);
    const command = nameOf(NBD_CMD, request.type);
    const log = errno === NBD_E.EIO ? 'error' : 'debug';
    context.log[log]({ err: error, command, offset: request.offset, length: request.length,
      errno }, `NBD_CMD_${command}: failed`);
    sendError(context, request, errno, `${command} failed`);
    if (isBug(error) && context.fault !== undefined) context.fault(error, `NBD_CMD_${command}`);
    return errno;
  }
}
