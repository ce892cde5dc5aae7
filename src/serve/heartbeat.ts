/**
 * serve/heartbeat: the catalog provider's heartbeat (catalog-provider.ts): one heartbeat write at
 * a time through the CatalogWriter; a tick that finds the last one still running skips.
 *
 * Without a host the heartbeat is informational, and a heartbeat finding this server's row gone
 * is said once (`lease-lost`): another process judged it dead. With a host (host-lease.ts) the
 * heartbeat is what keeps the leases: each committed one renews them, and before each tick and
 * after each failure the lease is judged (HostLeases.lostReason: row gone, catalog I/O error,
 * or no heartbeat committed for a TTL); once lost, `onLost` is called, once, with the reason.
 */
import { XvdError } from '../errors';
import type { Logger } from '../log';
import { LOG_EVENT } from '../log-events';
import type { CatalogWriter } from './catalog-writer';
import type { HostLeases } from './host-lease';

export interface HeartbeatOptions {
  writer: CatalogWriter;
  log: Logger;
  hostLeases: HostLeases | null;
  /** called once when this server's leases are lost (host mode) */
  onLost: (reason: string) => void;
  /** VDs leased now, for the lease-lost line */
  leasedVds: () => number;
}

export class Heartbeat {
  private readonly options: HeartbeatOptions;
  /** the heartbeat in flight, if any */
  running: Promise<void> | null = null;
  readonly counts = { ticks: 0, skipped: 0 };
  /** host mode: the leases are lost (no more heartbeats) */
  private isLost = false;
  /** without a host: the row gone was said */
  private isGoneSaid = false;

  constructor(options: HeartbeatOptions) {
    this.options = options;
  }

  /** One tick of the timer. */
  tick(serverId: number): void {
    if (this.isLost) return;
    this.counts.ticks += 1;
    const hostLeases = this.options.hostLeases;
    const expired = hostLeases?.lostReason(null, this.running !== null) ?? null;
    if (expired !== null) {
      this.lose(serverId, expired, null);
      return;
    }
    if (this.running !== null) {
      this.counts.skipped += 1;
      this.options.log.debug('heartbeat skipped: the previous one is still running');
      return;
    }
    const sentAtMs = performance.now();
    this.running = this.options.writer.heartbeat(serverId)
      .then(() => hostLeases?.beatCommitted(sentAtMs))
      .catch((error: unknown) => this.failed(serverId, error))
      .finally(() => (this.running = null));
  }

  /** A failed heartbeat (or catalog read): judged (host mode) or, for a row gone, said once. */
  failed(serverId: number, error: unknown): void {
    const hostLeases = this.options.hostLeases;
    if (hostLeases !== null) {
      const reason = hostLeases.lostReason(error);
      if (reason !== null) this.lose(serverId, reason, error);
      else this.options.log.error({ err: error }, 'heartbeat failed');
      return;
    }
    const isGone = error instanceof XvdError && error.code === 'ERR_CATALOG_SERVER_UNKNOWN';
    if (!isGone || this.isGoneSaid) {
      this.options.log.error({ err: error }, 'heartbeat failed');
      return;
    }
    this.isGoneSaid = true;
    this.options.log.error({ event: LOG_EVENT.leaseLost, serverId,
      vds: this.options.leasedVds(), err: error }, 'this server is no longer registered in the ' +
      'catalog: its leases are gone, and the extents of the VDs it serves may be handed on');
  }

  private lose(serverId: number, reason: string, error: unknown): void {
    if (this.isLost) return;
    this.isLost = true;
    this.options.log.error({ event: LOG_EVENT.leaseLost, serverId, reason,
      vds: this.options.leasedVds(), ...(error === null ? {} : { err: error }) },
    `this server lost its leases (${reason}): fencing every connection, then exiting`);
    this.options.onLost(reason);
  }
}
