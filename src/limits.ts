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
} as const;
