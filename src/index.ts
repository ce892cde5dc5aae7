/**
 * xvd: the supported library API (package.json `main` and `types`, built to dist/index.js).
 * Everything a program embedding xvd may rely on is re-exported here and nothing else is
 * exported; deep imports of other modules under dist/ are internal and may change without
 * notice.
 *
 * - The catalog: openCatalog(file?, options?) opens (and by default creates) the SQLite catalog
 *   of members, VDs and VBDs; the Catalog interface and its row types.
 * - The server: startServe(options) runs `xvd serve` over a catalog and returns a RunningServe
 *   whose stop() drains, flushes and releases its leases; runServeUntilSignal does the same
 *   until SIGTERM/SIGINT. createServer({ provider, … }) is the bare NBD server over any
 *   ExportProvider, for programs that bring their own exports.
 * - The engine: openExport(options) opens a VD's extents as an Export (read, write, zero, trim,
 *   flush, block status) through a BackingPool, the way the server does.
 * - Errors: XvdError and its subclasses with a `.code` from ERRORS; branch on `.code`.
 */
export {
  openCatalog, defaultCatalogPath, identityOfDevice, identityOfFile, zeroPending,
} from './catalog/index';
export type * from './catalog/types';
export type { Catalog } from './catalog/index';

export { startServe, runServeUntilSignal, tlsOptionsOf } from './serve/index';
export type { ServeOptions, RunningServe } from './serve/index';
export {
  createServer, NbdServer, DEFAULT_HOST, DEFAULT_PORT, listenFdsFromEnv,
} from './nbd/index';
export type {
  Domain, ExportHandle, ExportListing, ExportProvider, ListenTarget, NbdServerLimits,
  NbdServerOptions, NbdServerStats, TlsOptions,
} from './nbd/index';

export { openExport, ExtentExport } from './engine/extent-export';
export type { OpenExportOptions } from './engine/extent-export';
export type {
  Export, ReadPiece, ReadPlan, StatusRun, WriteFlags, ZeroFlags,
} from './engine/export';
export type { ExtentSpec } from './engine/extent-map';
export { BackingPool } from './backing/pool';
export type { BackingMode, BackingPoolOptions } from './backing/pool';

export { ERRORS, XvdError, IoError, ProtocolError, UsageError, isEmuError } from './errors';
export type { ErrorCode } from './errors';
export { LIMITS } from './limits';
