/**
 * nbd: the NBD server module (NetworkBlockDevice/nbd doc/proto.md). Public API:
 * createServer({provider, tls?, limits?, log?}) → NbdServer with listen(), serveStream(),
 * fenceExport(), close(), connectionCount, stats, exportStats(); the provider interfaces; TLS
 * helpers; listenFdsFromEnv() for systemd socket activation; and the request counts' buckets
 * (request-stats.ts) that status and metrics read.
 */
export { createServer, NbdServer, DEFAULT_HOST, DEFAULT_PORT } from './server';
export type { ListenTarget, NbdServerLimits, NbdServerOptions, NbdServerStats } from './server';
export type { Domain, ExportHandle, ExportListing, ExportProvider } from './provider';
export { ExportRefusal } from './provider';
export { domainOfIdentity, readPskFile, readX509Dir } from './tls';
export type { TlsOptions } from './tls';
export { listenFdsFromEnv } from './systemd';
export type { ConnectionInfo, ExportStats } from './server-stats';
export {
  COMMAND_OTHER, COMMAND_SLOTS, RequestCounts, latencyBucketEndUs, latencyBucketOf,
  latencyQuantileUs,
} from './request-stats';
