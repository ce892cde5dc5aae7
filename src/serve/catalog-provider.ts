/**
 * serve/catalog-provider: the NBD server's ExportProvider over the catalog, with live reload and
 * the fence that guards ARCHITECTURE invariant 2.
 *
 * Invariant 2: no write from any client lands on an extent after the catalog has handed that
 * extent to another VD. The CLI and the server are separate processes sharing one SQLite file,
 * so the guarantee is built from three pieces:
 *
 *   1. Leases. Before the server serves a VD it takes a lease on it in the catalog
 *      (acquireLease, one IMMEDIATE transaction that also checks the VD is alive; the exports of
 *      one VD share its lease, counted in lease-keeper.ts). The allocator never takes extents of
 *      a dead VD that a live server still leases (inside its own IMMEDIATE transaction), so
 *      "create" and "lease" are serialised by SQLite's write lock.
 *   2. Fence, then drain, then release. This provider polls PRAGMA data_version (cheap: no I/O
 *      unless another connection committed) and re-resolves every open export on a change and on
 *      a slow tick (expiry is a matter of time, not of commits). An export whose VBD was removed,
 *      whose VD is dead, or whose mode or extents changed (judge() in export-verdict.ts, pure) is
 *      taken out of the table first (new opens no longer find it), then fenced: every connection
 *      bound to it answers later requests with NBD_ESHUTDOWN while requests in flight finish.
 *      Only when none is in flight is the lease released, and only then can the allocator reuse
 *      the extents.
 *   3. Liveness. A lease counts only while its server process lives (pid plus its start time
 *      from /proc, so a recycled pid does not count). When the server dies nothing is in flight
 *      any more, and its leases stop counting at once.
 *
 * Enlarge never fences (as lvextend on an active LV): the VD stays alive and its old extents stay
 * its own. A zeroed enlarge is two commits: the new size with the added bytes (the slack of the
 * old last extent and the new extents) recorded as pending zeroing, then, once `xvd enlarge` has
 * zeroed them, the pending rows cleared. resolveVbd serves a VD only up to its first pending byte,
 * so in between the VD resolves to its old size and old extents (a new VD, pending from byte 0,
 * is not served at all). Each commit bumps the VD's generation and so replaces the entry (judge:
 * 'replace'): connections that have the old Export keep it and keep working at the old size
 * (NBD sizes are fixed at negotiation); new connections get the old size until the zeroing is
 * done and the new size after it (an open racing either commit resolves again: resolveLeased).
 * They never wait: the simplest behaviour that is correct. The zeroing cannot race an export:
 * it writes only bytes past the old size, which no Export of the old size reaches, and nothing
 * else can take those extents meanwhile (the VD is live, and leased besides; the allocator takes
 * only dead, unleased VDs' extents). A connection must reconnect to see the new size.
 *
 * Writes off the event loop: heartbeats and leases go through a CatalogWriter (catalog-writer.ts,
 * over a worker thread in `xvd serve`), so no commit's fsync or wait for a CLI's write lock
 * stalls the connections this thread serves. Reads, register and unregister (once each, and the
 * last must work even if the writer died) stay here. Lease writes are asynchronous; the rules:
 * an open answers only after its acquireLease committed (serving before the lease is committed
 * is never allowed); a release is sent only after fence and drain, and may commit later (holding
 * a lease a little longer is always safe); the takes and drops of one VD run one after another
 * (LeaseKeeper), so its reference count and its lease row agree; stop() waits for every open,
 * retire and release in flight before it unregisters. A heartbeat still running skips a tick.
 *
 * Copy-on-write (cow-vds.ts): every export of a VD joins the VD's CowVolume and opens with its
 * map; a VD's extents are judged once per VD by that volume (reconcile.ts), so this server's own
 * remap commits neither fence nor replace its exports, and a clone of a VD it serves switches
 * that VD to copy-on-write without a fence before the lease records the new generation.
 *
 * Domains: with an authenticated domain, a client sees and opens only `DOMAIN/…` exports; without
 * authentication (domain null) every export is visible, as on any plain NBD server.
 *
 * Many hosts (host-lease.ts): leases live by heartbeat (heartbeat.ts); an open of a VD another
 * host leases is refused, or once that lease expired preceded by its fence and takeover.
 *
 * Log (log-events.ts): a `fence` line per export the catalog takes away; a `takeover` line per
 * registered server found dead at start (registering removes its rows and leases); one
 * `lease-lost` line if this server's own row disappears while it runs (a heartbeat finds it
 * gone: another process judged it dead, and its leases no longer protect its extents).
 */
import assert from 'node:assert';
import { BackingPool } from '../backing/pool';
import type { Catalog, ResolvedVbd } from '../catalog/index';
import { openExport, type ExtentExport } from '../engine/extent-export';
import { LIMITS } from '../limits';
import type { Logger } from '../log';
import { LOG_EVENT } from '../log-events';
import type { Domain, ExportHandle, ExportListing, ExportProvider } from '../nbd/provider';
import { catalogWriterOf, type CatalogWriter } from './catalog-writer';
import { CowVds } from './cow-vds';
import { describeResolved, parseExportName } from './export-verdict';
import { Heartbeat } from './heartbeat';
import type { HostLeases } from './host-lease';
import { LeaseKeeper } from './lease-keeper';
import { reconcileEntries } from './reconcile';

/** What the provider needs of the NBD server. */
export interface Fencer {
  fenceExport(name: string): Promise<void>;
}

interface Entry {
  readonly name: string;
  readonly resolved: ResolvedVbd;
  readonly export: ExtentExport;
  refs: number;
  /** out of the table: no new opens; closed when refs reach 0 (after a fence, if one ran) */
  isRetired: boolean;
  isClosed: boolean;
}

export interface CatalogProviderOptions {
  catalog: Catalog;
  /** where heartbeats and leases are written; in process through `catalog` unless given */
  writer?: CatalogWriter;
  log: Logger;
  pool?: BackingPool;
  pollMs?: number;
  /** heartbeat period; LIMITS.serveHeartbeatMs (host: TTL / 5) unless a test wants it sooner */
  heartbeatMs?: number;
  /** leases across hosts (host-lease.ts); none: the single-host pid rule */
  hostLeases?: HostLeases;
  /** the RADOS clients this server writes through, registered with its host */
  radosAddrs?: string[];
  /** host mode: called once when this server lost its leases */
  onLost?: (reason: string) => void;
}

export class CatalogProvider implements ExportProvider {
  private readonly catalog: Catalog;
  private readonly writer: CatalogWriter;
  private readonly log: Logger;
  private readonly pool: BackingPool;
  private readonly pollMs: number;
  private readonly heartbeatMs: number;
  private readonly entries = new Map<string, Entry>();
  /** entries not yet closed, in the table or retired and still used */
  private readonly live = new Set<Entry>();
  private readonly leases: LeaseKeeper;
  private readonly opening = new Set<Promise<unknown>>();
  private readonly retiring = new Set<Promise<void>>();
  private readonly hostLeases: HostLeases | null;
  private readonly radosAddrs: string[];
  private readonly beat: Heartbeat;
  /** copy-on-write: one volume per VD served (cow-vds.ts) */
  readonly cow: CowVds;
  private isStopping = false;
  private fencer: Fencer | null = null;
  private serverId: number | null = null;
  private timerPoll: NodeJS.Timeout | null = null;
  private timerHeartbeat: NodeJS.Timeout | null = null;
  private dataVersionSeen = -1;
  private tickLast = 0;
  private isReconciling = false;

  constructor(options: CatalogProviderOptions) {
    this.catalog = options.catalog;
    this.writer = options.writer ?? catalogWriterOf(options.catalog);
    this.log = options.log;
    this.pool = options.pool ?? new BackingPool();
    this.pollMs = options.pollMs ?? LIMITS.servePollMs;
    this.hostLeases = options.hostLeases ?? null;
    this.radosAddrs = options.radosAddrs ?? [];
    this.heartbeatMs = options.heartbeatMs ?? this.hostLeases?.heartbeatMs ??
      LIMITS.serveHeartbeatMs;
    this.leases = new LeaseKeeper(this.writer, this.log, () => this.serverId);
    this.cow = new CowVds({ catalog: this.catalog, writer: this.writer, pool: this.pool,
      log: this.log, serverIdOf: () => this.serverId });
    this.beat = new Heartbeat({ writer: this.writer, log: this.log, hostLeases: this.hostLeases,
      leasedVds: () => this.leasedVds, onLost: (reason) => {
        this.halt(); // not one more catalog read: a blocklisted libcephsqlite aborts at the next
        options.onLost?.(reason);
      } });
  }

  /**
   * Registers this server in the catalog, with where it answers `xvd status` (`controlPath`,
   * control.ts; null: nowhere), and starts watching it.
   */
  start(fencer: Fencer, controlPath: string | null = null): void {
    assert(this.serverId === null);
    this.fencer = fencer;
    const dead = this.catalog.listServers().filter((server) => server.host === null &&
      !server.isAlive);
    const host = this.hostLeases;
    this.serverId = this.catalog.registerServer(controlPath, host === null ? null
      : { host: host.host, leaseTtlMs: host.leaseTtlMs, radosAddrs: this.radosAddrs });
    this.dataVersionSeen = this.catalog.dataVersion();
    this.timerPoll = setInterval(() => void this.poll(), this.pollMs).unref();
    this.timerHeartbeat = setInterval(() => {
      if (this.serverId !== null) this.beat.tick(this.serverId);
    }, this.heartbeatMs).unref();
    this.log.info({ serverId: this.serverId, host: host?.host, leaseTtlMs: host?.leaseTtlMs,
      radosAddrs: this.radosAddrs }, 'registered in the catalog');
    for (const server of dead) {
      this.log.warn({ event: LOG_EVENT.takeover, serverId: this.serverId,
        deadServerId: server.id, deadPid: server.pid, heartbeatAtMs: server.heartbeatAtMs },
      'took over from a server that no longer runs: its rows and leases are removed');
    }
  }

  list(domain: Domain): ExportListing[] {
    return this.catalog.listVbds().filter((vbd) => domain === null || vbd.domain === domain)
      .map((vbd) => ({ name: `${vbd.domain}/${vbd.device}`, description: vbd.sourceText }));
  }

  /** The empty export name means the domain's only export, when it has exactly one. */
  defaultName(domain: Domain): string | null {
    const visible = this.list(domain);
    return visible.length === 1 && visible[0] !== undefined ? visible[0].name : null;
  }

  async open(name: string, domain: Domain): Promise<ExportHandle | null> {
    const parts = parseExportName(name);
    if (parts === null) return null;
    if (domain !== null && parts.domain !== domain) return null;
    if (this.isStopping) return null;
    const existing = this.entries.get(name);
    if (existing !== undefined && !existing.isRetired) return this.handleOf(existing);
    const opening = this.openEntry(name, parts.domain, parts.device);
    this.opening.add(opening);
    try {
      const entry = await opening;
      return entry === null ? null : this.handleOf(entry);
    } finally {
      this.opening.delete(opening);
    }
  }

  /**
   * Fences every export, releases every lease, leaves the catalog: opens in flight finish (and
   * give their lease back), every entry is retired with a fence, every release is committed (or
   * has failed, logged), the last heartbeat has ended; only then is the server unregistered.
   * `isLost` (host mode, leases lost): the same without a single catalog write (a blocklisted
   * libcephsqlite client aborts the process at its next lock).
   */
  async stop(isLost = false): Promise<void> {
    this.halt();
    if (isLost) this.leases.abandon();
    await Promise.allSettled([...this.opening]);
    for (const entry of [...this.live]) await this.retire(entry, true);
    await Promise.all([...this.retiring]);
    await this.leases.settled();
    await this.beat.running;
    assert(this.leases.countedVds === 0, 'stop: a lease is still counted after every retire');
    if (this.serverId !== null && !isLost) this.unregister(this.serverId);
    this.serverId = null;
    await this.pool.close();
  }

  /** No more opens, polls or heartbeats. */
  private halt(): void {
    this.isStopping = true;
    if (this.timerPoll !== null) clearInterval(this.timerPoll); // again is harmless
    if (this.timerHeartbeat !== null) clearInterval(this.timerHeartbeat);
  }

  /** Leaves the catalog; a server that lost its leases may find its row gone or its catalog
   * unusable (blocklisted), and has nothing left to give back: logged, not thrown. */
  private unregister(serverId: number): void {
    try {
      this.catalog.unregisterServer(serverId);
    } catch (error) {
      if (this.hostLeases === null) throw error;
      this.log.warn({ err: error, serverId }, 'could not leave the catalog');
    }
  }

  private handleOf(entry: Entry): ExportHandle {
    entry.refs += 1;
    let isReleased = false;
    return {
      export: entry.export,
      release: () => {
        if (isReleased) return;
        isReleased = true;
        entry.refs -= 1;
        assert(entry.refs >= 0);
        if (entry.refs === 0) {
          this.retire(entry, false).catch((error: unknown) =>
            this.log.error({ err: error, export: entry.name }, 'retire failed'));
        }
      },
    };
  }


  private async openEntry(name: string, domain: number, device: string): Promise<Entry | null> {
    assert(this.serverId !== null, 'open before start');
    const resolved = await this.leases.takeResolved(this.catalog, domain, device,
      (vdId) => this.hostLeases?.clearFor(vdId, this.serverId ?? 0, name));
    if (resolved === null) return null;
    // the lease is committed (or there is no VD): the extents are this VD's until we release it
    let exp: ExtentExport;
    // a VD opens with its volume's map: remaps this server made may not be committed yet
    const volume = resolved.vdId === null ? null : this.cow.open(resolved);
    try {
      exp = await openExport({ name, description: describeResolved(resolved), mode: resolved.mode,
        size: Math.min(resolved.size, volume?.map.sizeVirtual ?? resolved.size),
        extents: volume?.map.toList() ?? resolved.extents, pool: this.pool });
      if (volume !== null) exp.attachCow(volume);
    } catch (error) {
      if (resolved.vdId !== null) await this.dropVd(resolved.vdId);
      this.log.error({ err: error, export: name }, 'open: backing failed');
      return null;
    }
    const raced = this.entries.get(name);
    if (this.isStopping || (raced !== undefined && !raced.isRetired)) {
      // stopping, or another open of the same name finished first (use it): drop ours
      await exp.close();
      if (resolved.vdId !== null) await this.dropVd(resolved.vdId);
      return this.isStopping ? null : raced ?? null;
    }
    const entry: Entry = { name, resolved, export: exp, refs: 0, isRetired: false,
      isClosed: false };
    this.entries.set(name, entry);
    this.live.add(entry);
    this.log.info({ export: name, vd: resolved.vdId, size: resolved.size,
      extents: resolved.extents.length, mode: resolved.mode }, 'export opened');
    return entry;
  }

  /** Takes an entry out of the table; with `isFence` its connections are fenced and drained
   * first; the Export is closed and the lease released once nothing uses it. */
  private retire(entry: Entry, isFence: boolean): Promise<void> {
    const work = this.retireNow(entry, isFence);
    this.retiring.add(work);
    const forget = (): void => void this.retiring.delete(work);
    work.then(forget, forget);
    return work;
  }

  private async retireNow(entry: Entry, isFence: boolean): Promise<void> {
    if (this.entries.get(entry.name) === entry) this.entries.delete(entry.name);
    entry.isRetired = true;
    if (isFence && this.fencer !== null && entry.refs > 0) {
      await this.fencer.fenceExport(entry.name);
    }
    if (entry.isClosed) return;
    if (!isFence && entry.refs > 0) return;
    entry.isClosed = true;
    this.live.delete(entry);
    await entry.export.close().catch((error: unknown) =>
      this.log.error({ err: error, export: entry.name }, 'close failed'));
    // fenced and drained (or unused): only now may the catalog hand the extents on
    if (entry.resolved.vdId !== null) await this.dropVd(entry.resolved.vdId);
  }

  /** One export of the VD less: its volume (the last commits what is pending), then its lease. */
  private async dropVd(vdId: number): Promise<void> {
    await this.cow.release(vdId);
    await this.leases.drop(vdId);
  }

  /** This server's id in the catalog (null before start and after stop). */
  get registeredId(): number | null {
    return this.serverId;
  }

  /** VDs this server holds a lease on now. */
  get leasedVds(): number {
    return this.leases.countedVds;
  }

  /** Heartbeat ticks so far, and of them those skipped (heartbeat.ts). */
  get heartbeatCounts(): { ticks: number; skipped: number } {
    return { ...this.beat.counts };
  }

  private async poll(): Promise<void> {
    if (this.isReconciling) return;
    let version: number;
    try {
      version = this.catalog.dataVersion();
    } catch (error) { // a catalog in RADOS whose client was blocklisted, say: judged as a heartbeat
      if (this.serverId !== null) this.beat.failed(this.serverId, error);
      return;
    }
    if (version === this.dataVersionSeen && Date.now() - this.tickLast < LIMITS.serveTickMs) return;
    this.dataVersionSeen = version;
    this.tickLast = Date.now();
    this.isReconciling = true;
    try {
      await this.reconcile();
    } catch (error) {
      this.log.error({ err: error }, 'catalog reconcile failed');
    } finally {
      this.isReconciling = false;
    }
  }

  /**
   * Re-resolves every open export and fences those whose VBD or VD went away; a VD's extents
   * are judged by its copy-on-write volume (reconcile.ts).
   */
  async reconcile(): Promise<void> {
    await reconcileEntries({ catalog: this.catalog, cow: this.cow, log: this.log,
      retire: (entry: Entry, isFence: boolean) => this.retire(entry, isFence) },
    [...this.entries.values()]);
  }
}
