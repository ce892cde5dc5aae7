/**
 * catalog: the public face of the xvd catalog (one SQLite file through better-sqlite3 12).
 *
 * Every method that changes anything is one `BEGIN IMMEDIATE` transaction and returns plain
 * data; nothing is cached across calls, so many processes can share one file (WAL,
 * synchronous=FULL, busy_timeout = LIMITS.catalogBusyTimeoutMs). Free space and VD extents are
 * stored as runs (member, first extent, count), never a row per extent. A VD is dead when its
 * expires_at <= now (delete = expire now); its extents stay its own until the allocator takes
 * them (src/allocator/allocator.ts: never-used space first, then the VD dead longest, each
 * from its tail), so undelete works while nothing was reused.
 *
 * Zeroing is two-phase: createVd/enlargeVd record as pending, in the same transaction, every
 * byte range that becomes part of the VD: the new extents, and for an enlarge the slack of its
 * last extent up to the new size (--no-zero opts out only for the range of that call);
 * zeroPending() (src/catalog/zeroing.ts) zeroes them and completeZeroing() clears them. A VD
 * with pending zeroing is served only up to its first pending byte: a new VD not at all
 * (resolveVbd says isDangling), an enlarged one at its size before the enlarge.
 *
 * Imports are all or nothing: beginImport records, in the transaction that allocates it, that
 * the new VD is being imported by this process (pid and start time, as a server is known); such
 * a VD is not listed, attached, leased, enlarged or served. The importer flips it live with
 * completeImport, one transaction, after its copy is durable (fdatasync).
 * When the importer is gone (killed), cleanAbandonedImports, which every CLI command but
 * `check` runs first, gives its extents back to the free runs (zeroed on reuse as usual) and
 * removes the VD nobody saw; `check` reports such an import as a note until then.
 *
 * Fencing: servers register, heartbeat and lease the VDs they serve; the allocator never takes
 * extents of a dead VD that a live server still leases, nor extents under a phy:/extent VBD.
 *
 * Clones (issue 18): cloneVd shares the origin's extents; each extent's owner count is stored
 * as runs (./owners.ts), and an extent is reclaimable only once every VD that maps it is dead
 * and not leased. A server serving a clone or its origin copies a shared extent on its first
 * write into an extent of the VD's reserve and commits the remap (./cow.ts).
 */
import os from 'node:os';
import path from 'node:path';
import type {
  AddVbdInput, CheckReport, CloneOptions, CowExtents, CowRemap, CreateVdInput, FreeSpace,
  HostIdentity, Lease, Member, MemberInput, OpenOptions, PendingZero, ResolvedVbd, ServerInfo,
  Vbd, VdDetail, VdSummary,
} from './types';

export * from './types';

export interface Catalog {
  /** The catalog file. */
  readonly path: string;
  /** The schema version (PRAGMA user_version) after migrations. */
  readonly schemaVersion: number;

  // --- members ---
  formatMember(input: MemberInput): Member;
  listMembers(): Member[];
  getMember(idOrPath: number | string): Member | null;

  // --- virtual disks ---
  /** Allocates whole extents for `size` bytes; returns the new VD with its extents. */
  createVd(input: CreateVdInput): VdDetail;
  /**
   * createVd for `xvd import`: the VD is 'importing', owned by this process, without expiry,
   * and usable by nobody until completeImport (expiresInS then counts from completion).
   */
  beginImport(input: CreateVdInput): VdDetail;
  /** Makes this process's import live (after its copy was synced); ERR_VD_IMPORT_LOST if gone. */
  completeImport(id: number): VdSummary;
  /** Frees this process's import that will not complete (its copy failed). */
  abandonImport(id: number): void;
  /**
   * True while VD `id` is being imported by this process: the copy asks between chunks and
   * stops when it is not (cleaned up by a process that judged this one gone).
   */
  isImportOwned(id: number): boolean;
  /** Frees every import whose process is not running; returns their VD ids. */
  cleanAbandonedImports(): number[];
  /** Grows a live VD to newSize (>= size); new extents are appended in virtual order. */
  enlargeVd(id: number, newSize: number, options?: { zero?: boolean }): VdDetail;
  /** Grows a live VD by addBytes, reading its size under the same write lock (atomic). */
  growVd(id: number, addBytes: number, options?: { zero?: boolean }): VdDetail;
  /** Sets expiry to now + expiresInS seconds (0 = never) on a live VD. */
  refreshVd(id: number, expiresInS: number): VdSummary;
  /** Expires a live VD now. Dead → ERR_VD_DELETED, unknown → ERR_VD_UNKNOWN. */
  deleteVd(id: number): VdSummary;
  /**
   * Brings a dead VD back when none of its extents was reused (ERR_VD_REUSED otherwise) and no
   * VBD added while it was dead shares its bytes beyond `expert` (ERR_VBD_SHARING otherwise,
   * judged as addVbd judges a new VBD: the VD is a writer; default 0). The level is recorded.
   */
  undeleteVd(id: number, expiresInS?: number, options?: { expert?: 0 | 1 | 2 }): VdSummary;
  /**
   * A copy-on-write clone of a live VD (not importing, not zeroing), in one transaction,
   * O(runs), whatever its size: same extents, each gaining an owner; the origin's generation
   * moves on (./clones.ts).
   */
  cloneVd(id: number, options?: CloneOptions): VdDetail;
  /** False while a running server serves the clone's origin without copy-on-write yet. */
  isCloneSwitched(id: number): boolean;
  /**
   * Takes `count` whole extents of `extentSize` as VD vdId's copy-on-write reserve (the server
   * must lease it: ERR_COW_NO_LEASE) (./cow.ts).
   */
  reserveCowExtents(serverId: number, vdId: number, extentSize: number, count: number):
    CowExtents[];
  /**
   * Replaces shared extents of the VD's map with extents of its reserve, all or none
   * (ERR_COW_NO_LEASE, ERR_COW_NOT_SHARED, ERR_COW_NOT_RESERVED); the generation stays.
   */
  commitCowRemaps(serverId: number, vdId: number, remaps: readonly CowRemap[]): void;
  /** Live and zeroing VDs; with all, dead and importing ones too. Ordered by id. */
  listVds(options?: { all?: boolean }): VdSummary[];
  /** ERR_VD_UNKNOWN when there is no such id. */
  getVd(id: number): VdDetail;
  freeSpace(): FreeSpace;
  /** Faults found by a full consistency check, one line each; empty when sound. */
  check(): string[];
  /** The same check with its notes (stale leases of servers that are not running). */
  checkReport(): CheckReport;

  // --- zeroing ---
  pendingZeroing(): PendingZero[];
  /** True while the VD has ranges left to zero. */
  hasPendingZero(vdId: number): boolean;
  /** Clears the pending zeroing of a VD (after its extents were zeroed). */
  completeZeroing(vdId: number): void;

  // --- vbds ---
  addVbd(input: AddVbdInput): Vbd;
  removeVbd(domain: number, device: string): void;
  listVbds(): Vbd[];
  /** ERR_VBD_UNKNOWN when there is no such VBD. */
  resolveVbd(domain: number, device: string): ResolvedVbd;
  /** The address of the RADOS client a catalog in RADOS is reached through (null: a file). */
  radosAddress(): string | null;
  /** PRAGMA data_version: changes when another connection commits. */
  dataVersion(): number;

  // --- fencing (server) ---
  /**
   * Registers this process as a server; `controlPath`: where it answers `xvd status`;
   * `identity`: its host, lease TTL and RADOS clients (leases by heartbeat; none: by pid).
   */
  registerServer(controlPath?: string | null, identity?: HostIdentity | null): number;
  /** Records the RADOS clients a server writes through. */
  setServerAddrs(serverId: number, addrs: string[]): void;
  /** The servers leasing a VD. */
  leaseHolders(vdId: number): ServerInfo[];
  /**
   * Removes an expired, fenced host server's row and leases if it has not beaten since
   * `heartbeatAtMs`; true when removed (catalog/leases.ts).
   */
  takeOverServer(serverId: number, heartbeatAtMs: number): boolean;
  /** Every registered server, with whether its process still runs. */
  listServers(): ServerInfo[];
  heartbeat(serverId: number): void;
  unregisterServer(serverId: number): void;
  /**
   * Takes or renews a lease at the VD's generation, or at `generation` (between the lease's and
   * the VD's): the one this server switched to copy-on-write for (isCloneSwitched).
   */
  acquireLease(serverId: number, vdId: number, generation?: number): Lease;
  releaseLease(serverId: number, vdId: number): void;
  /** Leases that keep their VDs' extents from the allocator (live servers, unfenced hosts). */
  liveLeases(): Lease[];

  close(): void;
}

/** `override` (the CLI passes XVD_CATALOG) when given, else
 * `~/.local/share/xvd/catalog.sqlite`. */
export function defaultCatalogPath(override?: string): string {
  if (override !== undefined && override !== '') return override;
  return path.join(os.homedir(), '.local', 'share', 'xvd', 'catalog.sqlite');
}

/** Identity string of a regular file member (st_dev, st_ino). */
export function identityOfFile(dev: number | bigint, ino: number | bigint): string {
  return `file:${dev}:${ino}`;
}

/** Identity string of a block device member ('MAJ:MIN'). */
export function identityOfDevice(majMin: string): string {
  return `blk:${majMin}`;
}

/**
 * Opens (and by default creates) the catalog at `file`, running migrations.
 * ERR_CATALOG_OPEN: unreadable or not SQLite; ERR_CATALOG_VERSION: written by a newer xvd.
 */
export function openCatalog(file: string = defaultCatalogPath(), options: OpenOptions = {}):
  Catalog {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const impl = require('./catalog') as { openCatalogImpl(f: string, o: OpenOptions): Catalog };
  return impl.openCatalogImpl(file, options);
}

export { zeroPending } from './zeroing';
