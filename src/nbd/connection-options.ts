/**
 * nbd/connection-options: what the server gives a connection (ConnectionOptions: streams,
 * limits, TLS, executor settings, hooks, the memory budget) and what it reads back (stats).
 */
import type { Socket } from 'node:net';
import type { Readable, Writable } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import type { Logger } from '../log';
import type { MemoryBudget } from './budget';
import type { Connection } from './connection';
import type { ExecutorSettings } from './executors';
import type { Receiver } from './framer';
import type { Domain, ExportProvider } from './provider';

export interface ConnectionLimits {
  optionLengthMax: number;
  optionCountMax: number;
  inflightMax: number;
  inflightBytesMax: number;
  writeDiscardMax: number;
  handshakeTimeoutMs: number;
  /** the data-path thread's busy-poll budget in microseconds, 0: off (dp-loop.c spin()) */
  busyPollMicros: number;
  /** a connection holding memory whose client neither sends nor takes bytes this long ends */
  stallTimeoutMs: number;
}

export interface ConnectionStats {
  requests: number;
  errors: number;
  bytesRead: number;
  bytesWritten: number;
  /** of `requests`, those the data-path thread served itself (plain READs and WRITEs) */
  threadRequests: number;
  /** of `threadRequests`, the READs its reader thread read (native/src/dp-reader.c) */
  readerRequests: number;
  busyPollHits: number;
  busyPollMisses: number;
  /** internal errors contained by ending this connection (a bug, never the client's fault) */
  faults: number;
}

/** What a connection needs for STARTTLS (server.ts builds it from TlsOptions). */
export interface TlsUpgrader {
  readonly mode: 'on' | 'require';
  /** Wraps the socket; resolves with the TLS socket and the authenticated domain. */
  upgrade(socket: Socket): Promise<{ secure: TLSSocket; domain: Domain }>;
}

export interface ConnectionHooks {
  onBound(connection: Connection): void;
  onClosed(connection: Connection): void;
}

export interface ConnectionOptions {
  id: number;
  input: Readable;
  output: Writable;
  /** the raw socket, when there is one (needed for STARTTLS and the threads) */
  socket: Socket | null;
  /**
   * Where received bytes go when the socket reads into it (arena-receiver.ts) and calls
   * onSocketRead(); null: the connection listens to 'data' and frames with a Framer.
   */
  receiver?: Receiver | null;
  provider: ExportProvider;
  log: Logger;
  limits: ConnectionLimits;
  tls: TlsUpgrader | null;
  /** what routesOf needs from the server's options (executors.ts) */
  executors: ExecutorSettings;
  hooks: ConnectionHooks;
  isShuttingDown: () => boolean;
  /** the server's memory budget shared by all its connections (budget.ts) */
  budget: MemoryBudget;
}
