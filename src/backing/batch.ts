/**
 * backing/batch: one request's pieces written by one pool job. The engine fills a Float64Array
 * with (batchFd, bufferOffset, length, position) per piece, for backings whose `batchFd` is not
 * -1, and calls writeBatch once per request instead of Backing.write once per piece: on the
 * development machine a pool hand-off costs more than copying a 256 KiB piece into the page
 * cache, so a request over N extents of a fragmented VD paid N hand-offs (see
 * native/src/pwrite-batch.c).
 *
 * Scope: this module holds no state. The Float64Array a request's pieces are gathered in belongs
 * to the export that issues the request (engine/extent-write WriteBatcher, one per export);
 * pwriteBatch copies the pieces before it returns, so that array is free for the next request.
 */
import * as sys from '../sys/index';

export type { BatchCallback } from '../sys/index';
export const BATCH_PIECE_FIELDS = sys.BATCH_PIECE_FIELDS;
export const BATCH_PIECES_MAX = sys.BATCH_PIECES_MAX;

/**
 * Writes the pieces in order, each to its end; callback(null, -1) when all are written,
 * (error, i) when piece i failed, (null, i) when piece i's pwrite wrote nothing (short write).
 */
export const writeBatch = sys.pwriteBatch;
