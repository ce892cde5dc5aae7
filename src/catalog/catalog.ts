/**
 * catalog (implementation): the Catalog interface of ./index.ts over one better-sqlite3 handle,
 * as a thin class that delegates each method to the module of its concern:
 *   members.ts     pool members                  vd-rows.ts    reading VDs, their state
 *   vds.ts         create, enlarge, refresh,     allocation.ts the allocator's request and plan,
 *                  delete, undelete, zeroing rows              free space
 *   imports.ts     import all or nothing         vbds.ts       VBDs, resolution, sharing check
 *   leases.ts      servers and leases            statements.ts rows, statements, the context
 *   clones.ts      copy-on-write clones          cow.ts        a server's reserves and remaps
 *   owners.ts      owner counts of extents, reserves
 * Sharing rules and placement are pure, beside each other in src/allocator/.
 *
 * Each public mutator runs as one `db.transaction(fn).immediate()` (statements.ts tx()); all it
 * needs (free runs, dead VDs, held VDs, blocked extents) is read inside that transaction, so
 * concurrent processes serialize on the write lock and never see each other's half-done work.
 * Statements are prepared once per handle. The consistency check reads in one deferred
 * transaction (one snapshot) and judges in src/catalog/check.ts.
 */
import { freeSpace } from './allocation';
import { checkCatalog } from './check';
import * as clones from './clones';
import * as cow from './cow';
import { cephSqliteAddress } from './ceph-sqlite';
import { openDatabase, type Db } from './database';
import { isCephCatalog } from './location';
import type { Catalog } from './index';
import { isImporterAlive } from './liveness';
import * as imports from './imports';
import * as leases from './leases';
import * as members from './members';
import {
  all, prepareStatements, type CatalogContext, type CloneRow, type FreeRow, type ImportRow,
  type MemberRow, type OwnerRow, type PendingRow, type RangeRow, type ReserveRow, type RunRow,
  type ServerRow, type VbdRow, type VdRow,
} from './statements';
import type {
  AddVbdInput, CheckReport, CloneOptions, CowExtents, CowRemap, CreateVdInput, FreeSpace,
  HostIdentity, Lease, Member, MemberInput, OpenOptions, PendingZero, ResolvedVbd, ServerInfo,
  Vbd, VdDetail, VdSummary,
} from './types';
import * as vbds from './vbds';
import * as vdRows from './vd-rows';
import * as vds from './vds';

class CatalogImpl implements Catalog {
  readonly path: string;
  readonly schemaVersion: number;
  private readonly cx: CatalogContext;

  constructor(file: string, db: Db, version: number, now: () => number) {
    this.path = file;
    this.schemaVersion = version;
    this.cx = { db, st: prepareStatements(db), now };
  }

  // --- members ---
  formatMember(input: MemberInput): Member { return members.formatMember(this.cx, input); }
  listMembers(): Member[] { return members.listMembers(this.cx); }
  getMember(idOrPath: number | string): Member | null {
    return members.getMember(this.cx, idOrPath);
  }

  // --- virtual disks ---
  createVd(input: CreateVdInput): VdDetail { return vds.createVd(this.cx, input); }
  beginImport(input: CreateVdInput): VdDetail { return imports.beginImport(this.cx, input); }
  completeImport(id: number): VdSummary { return imports.completeImport(this.cx, id); }
  abandonImport(id: number): void { imports.abandonImport(this.cx, id); }
  isImportOwned(id: number): boolean { return imports.isImportOwned(this.cx, id); }
  cleanAbandonedImports(): number[] { return imports.cleanAbandonedImports(this.cx); }
  enlargeVd(id: number, newSize: number, options?: { zero?: boolean }): VdDetail {
    return vds.enlargeVd(this.cx, id, newSize, options);
  }
  growVd(id: number, addBytes: number, options?: { zero?: boolean }): VdDetail {
    return vds.growVd(this.cx, id, addBytes, options);
  }
  refreshVd(id: number, expiresInS: number): VdSummary {
    return vds.refreshVd(this.cx, id, expiresInS);
  }
  deleteVd(id: number): VdSummary { return vds.deleteVd(this.cx, id); }
  undeleteVd(id: number, expiresInS?: number, options?: { expert?: 0 | 1 | 2 }): VdSummary {
    return vds.undeleteVd(this.cx, id, expiresInS, options);
  }
  cloneVd(id: number, options?: CloneOptions): VdDetail {
    return clones.cloneVd(this.cx, id, options);
  }
  isCloneSwitched(id: number): boolean { return clones.isCloneSwitched(this.cx, id); }
  reserveCowExtents(serverId: number, vdId: number, extentSize: number, count: number):
    CowExtents[] {
    return cow.reserveCowExtents(this.cx, serverId, vdId, extentSize, count);
  }
  commitCowRemaps(serverId: number, vdId: number, remaps: readonly CowRemap[]): void {
    cow.commitCowRemaps(this.cx, serverId, vdId, remaps);
  }
  listVds(options?: { all?: boolean }): VdSummary[] { return vdRows.listVds(this.cx, options); }
  getVd(id: number): VdDetail { return vdRows.detail(this.cx, id); }
  freeSpace(): FreeSpace { return freeSpace(this.cx); }
  check(): string[] { return this.checkReport().faults; }

  checkReport(): CheckReport {
    const { db, st } = this.cx;
    return db.transaction(() => {
      const servers = all<ServerRow>(st.servers);
      return checkCatalog({
        members: all<MemberRow>(st.members),
        freeRuns: all<FreeRow>(st.freeRuns),
        vds: all<VdRow>(st.vds),
        runs: all<RunRow>(st.allRuns),
        pending: all<PendingRow>(st.pendingAll),
        owners: all<OwnerRow>(st.ownersAll),
        reserves: all<ReserveRow>(st.reserveAll),
        clones: all<CloneRow>(st.clonesAll),
        losses: all<{ vd_id: number; taken_by: number }>(st.lossesAll),
        vbds: all<VbdRow>(st.vbds),
        vbdRanges: all<RangeRow>(st.rangesAll),
        servers,
        liveServerIds: servers.filter((s) => leases.holdsLeases(s, this.cx.now()))
          .map((s) => s.id),
        leases: all<{ server_id: number; vd_id: number; generation: number }>(st.leases),
        imports: all<ImportRow>(st.imports).map((row) => ({
          vd_id: row.vd_id, pid: row.pid,
          isOwnerAlive: isImporterAlive(row),
        })),
        now: this.cx.now(),
      });
    }).deferred();
  }

  // --- zeroing ---
  pendingZeroing(): PendingZero[] { return vds.pendingZeroing(this.cx); }
  hasPendingZero(vdId: number): boolean { return vds.hasPendingZero(this.cx, vdId); }
  completeZeroing(vdId: number): void { vds.completeZeroing(this.cx, vdId); }

  // --- vbds ---
  addVbd(input: AddVbdInput): Vbd { return vbds.addVbd(this.cx, input); }
  removeVbd(domain: number, device: string): void { vbds.removeVbd(this.cx, domain, device); }
  listVbds(): Vbd[] { return vbds.listVbds(this.cx); }
  resolveVbd(domain: number, device: string): ResolvedVbd {
    return vbds.resolveVbd(this.cx, domain, device);
  }
  radosAddress(): string | null {
    return isCephCatalog(this.path) ? cephSqliteAddress(this.cx.db) : null;
  }
  dataVersion(): number { return this.cx.db.pragma('data_version', { simple: true }) as number; }

  // --- fencing (server) ---
  registerServer(controlPath: string | null = null, identity: HostIdentity | null = null,
  ): number {
    return leases.registerServer(this.cx, controlPath, identity);
  }
  setServerAddrs(serverId: number, addrs: string[]): void {
    leases.setServerAddrs(this.cx, serverId, addrs);
  }
  leaseHolders(vdId: number): ServerInfo[] { return leases.leaseHolders(this.cx, vdId); }
  takeOverServer(serverId: number, heartbeatAtMs: number): boolean {
    return leases.takeOverServer(this.cx, serverId, heartbeatAtMs);
  }
  listServers(): ServerInfo[] { return leases.listServers(this.cx); }
  heartbeat(serverId: number): void { leases.heartbeat(this.cx, serverId); }
  unregisterServer(serverId: number): void { leases.unregisterServer(this.cx, serverId); }
  acquireLease(serverId: number, vdId: number, generation?: number): Lease {
    return leases.acquireLease(this.cx, serverId, vdId, generation);
  }
  releaseLease(serverId: number, vdId: number): void {
    leases.releaseLease(this.cx, serverId, vdId);
  }
  liveLeases(): Lease[] { return leases.liveLeases(this.cx); }

  close(): void {
    if (this.cx.db.open) this.cx.db.close();
  }
}

export function openCatalogImpl(file: string, options: OpenOptions): Catalog {
  const { db, version } = openDatabase(file, options.create !== false, options.readonly === true);
  return new CatalogImpl(file, db, version, options.now ?? Date.now);
}
