/**
 * engine/export: the Export interface, which is all the NBD layer (src/nbd) knows of a VBD.
 *
 * One Export is one VBD as the wire sees it: a size, capabilities, and the operations. Offsets and
 * lengths are bytes, already validated by src/nbd/validate.ts against `size` (0 <= offset,
 * offset + length <= size, length > 0 unless stated). Operations reject with IoError (errno name in
 * `.errno`, such as 'EIO', 'ENOSPC', 'EPERM', 'ENOTSUP', 'ESHUTDOWN'); src/nbd/errno.ts maps those.
 * Implementations live in src/engine (extent-mapped backings) and test helpers (memory).
 */
import type { DatapathMap } from '../sys/index';

/** One run of a block-status answer (NBD base:allocation semantics). */
export interface StatusRun {
  length: number;
  /** no storage allocated (NBD_STATE_HOLE) */
  isHole: boolean;
  /** reads as zeros (NBD_STATE_ZERO) */
  isZero: boolean;
}

/**
 * One piece of a sparse read: data, or a run known to read as zeros. `offset` counts from the start
 * of the request (0 = the first byte asked for; the bytes sit at target[targetOffset + offset]).
 */
export interface ReadPiece {
  offset: number;
  length: number;
  isZero: boolean;
}

export interface WriteFlags {
  /** NBD_CMD_FLAG_FUA: durable before the reply */
  fua: boolean;
}

export interface ZeroFlags extends WriteFlags {
  /** false when the client sent NBD_CMD_FLAG_NO_HOLE: the range must stay allocated */
  mayTrim: boolean;
  /** NBD_CMD_FLAG_FAST_ZERO: fail with ENOTSUP rather than fall back to a slow method */
  fastOnly: boolean;
}

/**
 * A READ that a connection's sender thread sends straight from backing descriptors
 * (native/src/sender.c): `pieces` are (fd, position, length) triples tiling the range in order.
 * The descriptors stay open, and the read counts as in flight (close() waits for it), until
 * done() runs; call it exactly once, after the sender finished with the pieces.
 */
export interface ReadPlan {
  readonly pieces: Float64Array;
  done(): void;
}

/**
 * What an export whose backings have descriptors offers the data plane (src/dataplane), as one
 * optional capability (Export.dataPlane). None of its methods throws.
 */
export interface DataPlaneSource {
  /**
   * A ReadPlan for [offset, offset+length), or null when this read cannot be sent from
   * descriptors (a backing without one, the export closed) or, with `requireData`, when the
   * range may hold holes (a sparse reply would describe them).
   */
  planRead(offset: number, length: number, requireData: boolean): ReadPlan | null;
  /**
   * The map as a connection's data-path thread takes it (native/src/dp-map.c), or null when a
   * backing has no descriptor or the export is closed. Its descriptors stay open as long as the
   * export does.
   */
  datapathMap(): DatapathMap | null;
  /**
   * Calls `listener` when requests starting later use another map; returns an unsubscribe. The
   * listener's promise says when it no longer uses the old map (copy-on-write waits for it).
   */
  onMapReplaced(listener: () => void | Promise<void>): () => void;
}

export interface Export {
  /** NBD export name, `DOMAIN/DEVICE` */
  readonly name: string;
  /** human text for NBD_INFO_DESCRIPTION (may be '') */
  readonly description: string;
  /** virtual size in bytes */
  readonly size: number;
  readonly isReadOnly: boolean;
  readonly canFlush: boolean;
  readonly canFua: boolean;
  readonly canTrim: boolean;
  readonly canZero: boolean;
  readonly canFastZero: boolean;
  readonly canCache: boolean;
  /** true only when FLUSH on any connection makes writes from every connection durable */
  readonly canMultiConn: boolean;
  /** NBD_INFO_BLOCK_SIZE: minimum, preferred, maximum (bytes) */
  readonly blockSizeMin: number;
  readonly blockSizePreferred: number;
  readonly blockSizeMax: number;

  /** Reads [offset, offset+length) into target[targetOffset ..]. Every byte is written. */
  read(offset: number, length: number, target: Buffer, targetOffset: number): Promise<void>;
  /**
   * Optional: which parts of [offset, offset+length) read as zeros, for sparse structured replies.
   * Pieces cover the range in order; data pieces are read into target like read().
   */
  readSparse?(offset: number, length: number, target: Buffer, targetOffset: number,
  ): Promise<ReadPiece[]>;
  /**
   * Optional: the export's backing descriptors, for the data plane (src/dataplane: the sender
   * and data-path threads). The NBD layer hands it to the data plane and never looks inside.
   */
  readonly dataPlane?: DataPlaneSource | undefined;
  write(offset: number, data: Buffer, flags: WriteFlags): Promise<void>;
  flush(): Promise<void>;
  trim(offset: number, length: number, flags: WriteFlags): Promise<void>;
  zero(offset: number, length: number, flags: ZeroFlags): Promise<void>;
  /** At least one run, covering a prefix of the range (never past it), at most `runsMax` runs. */
  blockStatus(offset: number, length: number, runsMax: number): Promise<StatusRun[]>;
  cache(offset: number, length: number): Promise<void>;
  /** Releases what this Export holds (descriptors through refcounts). Idempotent. */
  close(): Promise<void>;
}
