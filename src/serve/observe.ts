/**
 * serve/observe: what lets an operator see into a running `xvd serve`: the control socket
 * (control.ts, read by `xvd status`) and, with `--metrics HOST:PORT`, the Prometheus endpoint
 * (metrics.ts). Both answer the same status document (status-document.ts), built from the
 * server's counts when asked.
 *
 * Order (serve/index.ts): the control socket listens before the server registers in the
 * catalog, so the path its row records answers as soon as the row is there; a control socket
 * that cannot be created is a warning (the server serves without one, its row says so). The
 * metrics endpoint starts once the NBD listeners are up; failing to listen where asked is an
 * error that stops serve, as for an NBD listener. close() stops both (at stop, after the server
 * left the catalog).
 */
import { XvdError } from '../errors';
import type { Logger } from '../log';
import type { NbdServer } from '../nbd/index';
import type { CatalogProvider } from './catalog-provider';
import type { CatalogWriterThread } from './catalog-writer-thread';
import { ControlSocket } from './control';
import { MetricsEndpoint } from './metrics';
import { type StatusDocument, statusDocumentOf } from './status-document';

export interface ObservedParts {
  server: NbdServer;
  provider: CatalogProvider;
  writer: CatalogWriterThread;
  /** the TLS mode served (off, on, require) */
  tls: string;
  log: Logger;
}

export class Observers {
  /** where the NBD listeners are, as the document shows them (set once listening) */
  listeners: string[] = [];
  private readonly startedAtMs = Date.now();
  private control: ControlSocket | null = null;
  private metrics: MetricsEndpoint | null = null;

  constructor(private readonly parts: ObservedParts) {}

  /** The status document now. */
  document(): StatusDocument {
    const { server, provider, writer, tls } = this.parts;
    return statusDocumentOf({ server, provider, commitTimes: writer.commitTimes, tls,
      listeners: this.listeners, controlPath: this.control?.path ?? null,
      metrics: this.metrics?.address ?? null, startedAtMs: this.startedAtMs });
  }

  /** Listens at `socketPath`; its path, or null when it could not (logged). */
  async startControl(socketPath: string): Promise<string | null> {
    try {
      this.control = await ControlSocket.start(socketPath, () => this.document(), this.parts.log);
      return this.control.path;
    } catch (error) {
      if (!(error instanceof XvdError)) throw error;
      this.parts.log.warn({ err: error }, 'no control socket: xvd status cannot see this server');
      return null;
    }
  }

  /** Serves /metrics on host:port (serve --metrics); rejects when it cannot listen there. */
  async startMetrics(host: string, port: number): Promise<string> {
    this.metrics = await MetricsEndpoint.start(host, port, () => this.document(), this.parts.log);
    this.parts.log.info({ address: this.metrics.address }, 'metrics: serving /metrics');
    return this.metrics.address;
  }

  async close(): Promise<void> {
    const control = this.control;
    const metrics = this.metrics;
    this.control = null;
    this.metrics = null;
    await Promise.all([control?.close(), metrics?.close()]);
  }
}

/** An NBD listener's address as the document shows it: HOST:PORT, [V6]:PORT or a path. */
export function listenerText(address: string | { address: string; port: number }): string {
  if (typeof address === 'string') return address;
  const host = address.address.includes(':') ? `[${address.address}]` : address.address;
  return `${host}:${address.port}`;
}
