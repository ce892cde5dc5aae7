/**
 * serve/host-lease: leases across hosts (`xvd serve --host NAME [--lease-ttl SECONDS]`, and every
 * server on a catalog in RADOS), the takeover of a host whose lease expired, and the fence that
 * keeps ARCHITECTURE invariant 2 across hosts. catalog-provider.ts holds the single-host design;
 * this module adds what changes when the servers of one catalog run on many hosts.
 *
 * The rule. A server with a host writes a heartbeat into its catalog row every
 * TTL / LIMITS.hostHeartbeatsPerTtl. Its lease on a VD is live while that heartbeat is fresh
 * (now - heartbeat_at < TTL), not while a pid lives: a pid means nothing on another host. A live
 * lease excludes every other server from the VD: an open on host B of a VD that host A leases is
 * refused, naming A (NBD_REP_ERR_POLICY with the reason, and an `export-refused` line). An
 * expired lease still holds (for the allocator, and against opens) until its row is removed, by
 * A itself at stop or by a takeover: nothing is handed on while A may still have writes in flight.
 *
 * The takeover (HostLeases.clearFor, before B takes the lease of a VD it is asked to open):
 *   1. B reads A's row: heartbeat_at H, TTL, and the address of every RADOS client A writes
 *      through (its libcephsqlite client and its RBD client, which A recorded in its row before
 *      writing a byte through either: registerServer, setServerAddrs).
 *   2. B has the monitors blocklist every one of those addresses (`osd blocklist add`, answered
 *      once the osdmap that holds them is committed) and waits until its own RADOS client has that
 *      osdmap, so every op B sends from then on carries an epoch at which A is blocklisted. (A
 *      server with no RADOS client, on a local catalog, is fenced by SIGKILL when its process runs
 *      on this host, and is dead otherwise.)
 *   3. B removes A's row and leases if heartbeat_at is still H (takeOverServer, one transaction),
 *      takes its own lease, opens the image, and only then answers the client.
 *
 * Why no write from A lands after B's first write. An OSD checks every op against its osdmap and
 * rejects an op of a blocklisted client with EBLOCKLISTED; an op that carries a newer epoch than
 * the OSD has makes it fetch that map first, and a PG applies ops in order. B's first write to
 * an object carries an epoch ≥ the blocklist's, so when the OSD applies it, it has that map: any
 * op of A that reaches the object later is rejected, and any that was applied earlier is ordered
 * before B's write and is what B reads. This holds for every object (the image's and the
 * catalog's), for A frozen (SIGSTOP), cut off or slow, and whatever the clocks say: the fence,
 * not the timing, is what keeps A out.
 *
 * Why a write A acknowledged is never lost. A acknowledges a FLUSH (or a FUA write) only after
 * librbd's flush completed, i.e. after the OSDs committed every write before it. If that happened
 * before the blocklist it is in RADOS, and B, which reads only after the blocklist, reads it; if
 * A was blocklisted first, the flush fails and A never acknowledged it. Writes without a flush
 * are volatile by NBD's contract, as on a local disk's cache.
 *
 * Timing. Safety needs no clock; liveness does. B takes over once B's clock is TTL past A's last
 * heartbeat_at (A's clock): with clocks within ε of each other (NTP), a live A (heartbeats every
 * TTL / 5) is never taken over while ε + one heartbeat period + one commit < TTL; a wrong
 * takeover (a skewed clock, a catalog stalled longer than TTL) fences A, it loses no acknowledged
 * write, and its clients reconnect to B. A stops by itself before B can start: it counts its
 * lease from the moment it sent its last heartbeat that committed (on its monotonic clock; the
 * heartbeat_at B sees is later), and at TTL from then, or when a heartbeat finds its row gone, or
 * when the catalog answers with an I/O error (a blocklisted client), it is lost: it fences every
 * connection (later requests fail with ESHUTDOWN, which is also the errno of an op Ceph refuses
 * as blocklisted, 108), lets go of every export, and exits with EXIT_LEASE_LOST, so that its
 * supervisor (contrib/systemd: Restart=on-failure) starts it again with new RADOS clients,
 * which register anew: only after it has let go of everything. libcephsqlite 16 cannot replace
 * a blocklisted client within a process, so a new process is the way to a new client.
 * Freeze to first byte on B: TTL, plus B's next open, plus the blocklist (one monitor commit)
 * and the image's open: 15.2-15.8 s with the default TTL, 3.3-4.8 s with 3 s, on one test
 * cluster. When A dies holding the catalog's RADOS lock, up to 30 s more (Ceph's lock timeout),
 * during which B's catalog reads, made on its event loop, wait too (66.6 s seen once in 5 kills).
 *
 * Log (log-events.ts): `takeover` when B fences A (host, server, addresses), `lease-lost` when
 * A finds it lost its leases (reason), `export-refused` with the reason when A's lease is live.
 */
import assert from 'node:assert';
import type { Catalog, ServerInfo } from '../catalog/index';
import { isProcessAlive } from '../catalog/liveness';
import { LIMITS } from '../limits';
import type { Logger } from '../log';
import { LOG_EVENT } from '../log-events';
import { ExportRefusal } from '../nbd/index';
import type { CatalogWriter } from './catalog-writer';

/** `xvd serve`'s exit code when it lost its leases and let go of everything (EX_TEMPFAIL). */
export const EXIT_LEASE_LOST = 75;

/** What the takeover needs of this process's RADOS client. */
export interface RadosFence {
  /**
   * Has the monitors blocklist each address, then waits until this process's client has the
   * osdmap that holds them (step 2 of the header).
   */
  blocklist(addrs: string[]): Promise<void>;
}

export interface HostLeaseOptions {
  host: string;
  leaseTtlMs: number;
  /** reads lease holders (the provider's catalog) */
  catalog: Catalog;
  /** removes a fenced server (takeOverServer) */
  writer: CatalogWriter;
  /** null: no RADOS client (a local catalog): a server with addresses cannot be fenced */
  rados: RadosFence | null;
  log: Logger;
}

export class HostLeases {
  readonly host: string;
  readonly leaseTtlMs: number;
  private readonly options: HostLeaseOptions;
  /** performance.now() when the last heartbeat that committed was sent */
  private beatOkAtMs = performance.now();

  constructor(options: HostLeaseOptions) {
    assert(options.leaseTtlMs > 0);
    this.options = options;
    this.host = options.host;
    this.leaseTtlMs = options.leaseTtlMs;
  }

  /** How often to beat: several times per TTL. */
  get heartbeatMs(): number {
    return Math.max(1, Math.floor(this.leaseTtlMs / LIMITS.hostHeartbeatsPerTtl));
  }

  /** A heartbeat sent at `sentAtMs` (performance.now()) committed. */
  beatCommitted(sentAtMs: number): void {
    this.beatOkAtMs = Math.max(this.beatOkAtMs, sentAtMs);
  }

  /**
   * Why this server's leases must be taken as lost, or null while they are not. A heartbeat
   * still in flight (`isBeatInFlight`) is waiting for the catalog's lock, which a dead holder
   * keeps for up to 30 s (catalog/ceph-sqlite.ts); nobody else can commit a takeover meanwhile,
   * so the lease is judged lost only LIMITS.hostCatalogWaitMs past the TTL.
   */
  lostReason(error: unknown = null, isBeatInFlight = false): string | null {
    const code = (error as { code?: unknown } | null)?.code;
    if (code === 'ERR_CATALOG_SERVER_UNKNOWN') return 'its row is gone: another server took over';
    if (typeof code === 'string' && code.startsWith('SQLITE_IOERR')) {
      return `the catalog fails with ${code} (a blocklisted client)`;
    }
    const ageMs = performance.now() - this.beatOkAtMs;
    if (ageMs >= this.leaseTtlMs + (isBeatInFlight ? LIMITS.hostCatalogWaitMs : 0)) {
      return `no heartbeat committed for ${(ageMs / 1000).toFixed(1)} s (TTL ` +
        `${(this.leaseTtlMs / 1000).toFixed(1)} s)`;
    }
    return null;
  }

  /**
   * Before this server leases VD `vdId`: refuses (ExportRefusal) while another host's lease on
   * it is live; fences and takes over each one whose lease expired (see the header).
   */
  async clearFor(vdId: number, serverId: number, exportName: string): Promise<void> {
    for (let attempt = 0; attempt < LIMITS.hostTakeoverTriesMax; attempt++) {
      const holders = this.options.catalog.leaseHolders(vdId)
        .filter((holder) => holder.id !== serverId && holder.host !== null);
      const holder = holders[0];
      if (holder === undefined) return;
      if (holder.isAlive) throw this.refusal(holder, vdId, exportName);
      await this.takeOver(holder, serverId, vdId, exportName);
    }
    throw new ExportRefusal(`${exportName}: VD ${vdId} changed hands ` +
      `${LIMITS.hostTakeoverTriesMax} times while this server tried to take it over; retry`);
  }

  private refusal(holder: ServerInfo, vdId: number, exportName: string): ExportRefusal {
    const ageS = ((Date.now() - holder.heartbeatAtMs) / 1000).toFixed(1);
    const ttlS = ((holder.leaseTtlMs ?? 0) / 1000).toFixed(1);
    return new ExportRefusal(`${exportName}: VD ${vdId} is served by host ${holder.host ?? '?'} ` +
      `(server ${holder.id}; its lease is live: last heartbeat ${ageS} s ago, TTL ${ttlS} s)`);
  }

  private async takeOver(holder: ServerInfo, serverId: number, vdId: number, exportName: string,
  ): Promise<void> {
    const ageMs = Date.now() - holder.heartbeatAtMs;
    this.options.log.warn({ event: LOG_EVENT.takeover, serverId, deadServerId: holder.id,
      deadHost: holder.host, deadPid: holder.pid, addrs: holder.radosAddrs, vd: vdId,
      export: exportName, heartbeatAgeMs: ageMs },
    `taking over from host ${holder.host ?? '?'}: its lease expired; fencing it first`);
    try {
      await this.fence(holder, exportName);
    } catch (error) {
      if (error instanceof ExportRefusal) throw error;
      this.options.log.error({ err: error, deadServerId: holder.id }, 'fencing failed');
      throw new ExportRefusal(`${exportName}: cannot fence host ${holder.host ?? '?'}, whose ` +
        `lease expired: ${(error as Error).message}`);
    }
    const isRemoved = await this.options.writer.takeOverServer(holder.id, holder.heartbeatAtMs);
    this.options.log.info({ serverId, deadServerId: holder.id, isRemoved },
      isRemoved ? 'took over: the fenced server\'s rows and leases are removed'
        : 'the fenced server\'s row changed meanwhile; looking again');
  }

  private async fence(holder: ServerInfo, exportName: string): Promise<void> {
    if (holder.radosAddrs.length > 0) {
      if (this.options.rados === null) {
        throw new ExportRefusal(`${exportName}: host ${holder.host ?? '?'} must be blocklisted ` +
          'first, and this server has no RADOS client');
      }
      await this.options.rados.blocklist(holder.radosAddrs);
      return;
    }
    await killLocal(holder);
  }
}

/** Fences a server with no RADOS client: SIGKILL if its process runs here; waits until gone. */
async function killLocal(holder: ServerInfo): Promise<void> {
  if (!isProcessAlive(holder.pid, holder.pidStartTime)) return;
  try {
    process.kill(holder.pid, 'SIGKILL');
  } catch {
    return; // gone meanwhile
  }
  const deadline = Date.now() + LIMITS.hostKillWaitMs;
  while (isProcessAlive(holder.pid, holder.pidStartTime)) {
    if (Date.now() >= deadline) {
      throw new ExportRefusal(`server ${holder.id} (pid ${holder.pid}) did not die of SIGKILL`);
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
