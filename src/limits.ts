/**
 * limits: every bound xvd enforces, each with the reason it is that value.
 * Invariant 6: no input from a client or a user grows memory without bound; each limit is named here.
 */
export const LIMITS = {
  /** Default pool extent size: the seed tools' 4 MiB default is kept... as bytes. */
  extentSizeDefault: 4 * 1024 * 1024,
  /** Smallest extent: one 512-byte sector. */
  extentSizeMin: 512,
  /** Largest extent: 1 GiB keeps per-extent zeroing work bounded. */
  extentSizeMax: 1024 * 1024 * 1024,
  /** SQLite busy_timeout: many concurrent CLI processes wait this long for the write lock. */
  catalogBusyTimeoutMs: 30_000,
  // --- engine and backings ---
  /** Writing zeros (last zeroing rung) goes in chunks of one shared 1 MiB zero buffer. */
  zeroWriteChunkBytes: 1024 * 1024,
  /** cache(): readahead by reading into one scratch buffer of this size (bounded memory). */
  cacheChunkBytes: 1024 * 1024,
  /** blockStatus translates at most this many pieces per call, then answers a prefix. */
  blockStatusPiecesMax: 1024,
  /** readSparse asks block status for at most this many runs before treating the rest as data. */
  readSparseRunsMax: 256,
  /** A pool acquire that races with the last release of the same backing retries this often. */
  poolAcquireAttemptsMax: 8,
  /** A short read or write is continued at most this many times before failing with EIO. */
  shortIoRetriesMax: 64,
  /** NBD_INFO_BLOCK_SIZE maximum of an engine export: 32 MiB, the common NBD request cap. */
  exportBlockSizeMax: 32 * 1024 * 1024,
  /** NBD_INFO_BLOCK_SIZE preferred: one page (raised to the sector size of a device backing). */
  exportBlockSizePreferred: 4096,

} as const;
