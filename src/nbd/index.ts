/**
 * nbd: the NBD server module (NetworkBlockDevice/nbd doc/proto.md). Public API:
 * createServer({provider, tls?, limits?, log?}) → NbdServer with listen(), serveStream(),
 * fenceExport(), close(), connectionCount, stats; the provider interfaces; TLS helpers; and
 * listenFdsFromEnv() for systemd socket activation.
 */
export { createServer, NbdServer, DEFAULT_HOST, DEFAULT_PORT } from './server';
export type { ListenTarget, NbdServerLimits, NbdServerOptions, NbdServerStats } from './server';
export type { Domain, ExportHandle, ExportListing, ExportProvider } from './provider';
export { domainOfIdentity, readPskFile, readX509Dir } from './tls';
export type { TlsOptions } from './tls';
export { listenFdsFromEnv } from './systemd';
