/**
 * catalog/statements: what every concern of the catalog shares: the row shapes of the schema
 * (src/catalog/migrations), the statements prepared once per handle, the context the concern
 * modules (members, vd-rows, allocation, vds, imports, vbds, leases) take as their first
 * argument, and the argument checks they have in common.
 *
 * Contract: a function taking a CatalogContext reads or writes only through `cx.st`, reads the
 * clock only through `cx.now()`, and never opens a transaction of its own except through tx(),
 * which each public mutator calls exactly once (BEGIN IMMEDIATE: concurrent processes serialize
 * on the write lock). Helpers called inside a mutator's transaction never call tx() again.
 */
import type Database from 'better-sqlite3';
import type { Run } from '../allocator/allocator';
import { UsageError } from '../errors';
import { LIMITS } from '../limits';
import type { Db } from './database';
import type { MemberKind } from './types';

export interface MemberRow {
  id: number; path: string; kind: MemberKind; size_bytes: number; extent_size: number;
  extent_count: number; identity: string; added_at: number;
}
export interface VdRow {
  id: number; name: string | null; size_bytes: number; expires_at: number | null;
  created_at: number; generation: number; state: 'active' | 'deleted';
  undelete_expert: 0 | 1 | 2 | null;
}
export interface RunRow { vd_id: number; seq: number; member_id: number; first_extent: number;
  extent_count: number }
export interface FreeRow { member_id: number; first_extent: number; extent_count: number }
export interface VbdRow {
  id: number; domain: number; device: string; mode: 'r' | 'w';
  source_kind: 'vd' | 'phy' | 'extents'; vd_id: number | null; phy_path: string | null;
  phy_size: number | null; created_at: number; expert: 0 | 1 | 2 | null;
}
export interface RangeRow {
  vbd_id: number; seq: number; path: string; offset: number; length: number;
}
export interface PendingRow { vd_id: number; member_id: number; offset: number; length: number }
export interface ServerRow {
  id: number; pid: number; pid_start_time: string; heartbeat_at: number; started_at: number;
  control_path: string | null; host: string | null; lease_ttl_ms: number | null;
  rados_addrs: string;
}
/** extent_owners: a run whose extents have `owners` (>= 2) owners. */
export interface OwnerRow extends FreeRow { owners: number }
/** cow_reserve: extents taken ahead for the copy-on-write of VD vd_id. */
export interface ReserveRow extends FreeRow { vd_id: number }
export interface CloneRow { vd_id: number; origin_id: number; origin_generation: number }
export interface ImportRow {
  vd_id: number; pid: number; pid_start_time: string; started_at: number; expiry_seconds: number;
  host: string | null;
}

/** The SQL of every statement, by the name the concern modules use it by. */
const SQL = {
  members: 'SELECT * FROM members ORDER BY id',
  memberById: 'SELECT * FROM members WHERE id = ?',
  memberByPath: 'SELECT * FROM members WHERE path = ?',
  memberByIdentity: 'SELECT * FROM members WHERE identity = ?',
  insertMember: 'INSERT INTO members (path, kind, size_bytes, extent_size, extent_count, '
    + 'identity, added_at) VALUES (?, ?, ?, ?, ?, ?, ?)',
  freeRuns: 'SELECT * FROM free_runs ORDER BY member_id, first_extent',
  freeRunsOf: 'SELECT * FROM free_runs WHERE member_id = ? ORDER BY first_extent',
  deleteFreeOf: 'DELETE FROM free_runs WHERE member_id = ?',
  insertFree: 'INSERT INTO free_runs (member_id, first_extent, extent_count) VALUES (?, ?, ?)',
  vd: 'SELECT * FROM vds WHERE id = ?',
  vds: 'SELECT * FROM vds ORDER BY id',
  deadVds: 'SELECT * FROM vds WHERE expires_at IS NOT NULL AND expires_at <= ? '
    + 'ORDER BY expires_at, id',
  insertVd: 'INSERT INTO vds (name, size_bytes, expires_at, created_at, generation, state) '
    + "VALUES (?, ?, ?, ?, 1, 'active')",
  setVdSize: 'UPDATE vds SET size_bytes = ?, generation = generation + 1 WHERE id = ?',
  setVdExpiry: 'UPDATE vds SET expires_at = ?, state = ?, generation = generation + 1 '
    + 'WHERE id = ?',
  bumpVd: 'UPDATE vds SET generation = generation + 1 WHERE id = ?',
  setVdUndeleteExpert: 'UPDATE vds SET undelete_expert = ? WHERE id = ?',
  runsOf: 'SELECT * FROM vd_runs WHERE vd_id = ? ORDER BY seq',
  allRuns: 'SELECT * FROM vd_runs ORDER BY vd_id, seq',
  deleteRunsOf: 'DELETE FROM vd_runs WHERE vd_id = ?',
  insertRun: 'INSERT INTO vd_runs (vd_id, seq, member_id, first_extent, extent_count) '
    + 'VALUES (?, ?, ?, ?, ?)',
  updateRun: 'UPDATE vd_runs SET member_id = ?, first_extent = ?, extent_count = ? '
    + 'WHERE vd_id = ? AND seq = ?',
  maxSeq: 'SELECT COALESCE(MAX(seq), -1) AS seq FROM vd_runs WHERE vd_id = ?',
  allocatedAll: 'SELECT r.vd_id AS vd_id, SUM(r.extent_count * m.extent_size) AS bytes '
    + 'FROM vd_runs r JOIN members m ON m.id = r.member_id GROUP BY r.vd_id',
  insertLoss: 'INSERT INTO vd_losses (vd_id, member_id, first_extent, extent_count, '
    + 'taken_by, taken_at) VALUES (?, ?, ?, ?, ?, ?)',
  lossesOf: 'SELECT l.*, m.path AS path FROM vd_losses l JOIN members m '
    + 'ON m.id = l.member_id WHERE l.vd_id = ? ORDER BY l.taken_at, l.first_extent',
  pendingAll: 'SELECT z.*, m.path AS path, m.kind AS kind '
    + 'FROM pending_zero z JOIN members m ON m.id = z.member_id '
    + 'ORDER BY z.vd_id, z.member_id, z.offset',
  pendingVds: 'SELECT DISTINCT vd_id FROM pending_zero',
  pendingOf: 'SELECT COUNT(*) AS n FROM pending_zero WHERE vd_id = ?',
  pendingRowsOf: 'SELECT * FROM pending_zero WHERE vd_id = ?',
  insertPending: 'INSERT INTO pending_zero (vd_id, member_id, offset, length) '
    + 'VALUES (?, ?, ?, ?) ON CONFLICT (vd_id, member_id, offset) '
    + 'DO UPDATE SET length = MAX(length, excluded.length)',
  deletePendingOf: 'DELETE FROM pending_zero WHERE vd_id = ?',
  vbds: 'SELECT * FROM vbds ORDER BY domain, device',
  vbd: 'SELECT * FROM vbds WHERE domain = ? AND device = ?',
  insertVbd: 'INSERT INTO vbds (domain, device, mode, source_kind, vd_id, phy_path, phy_size, '
    + 'created_at, expert) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
  lossesAll: 'SELECT vd_id, taken_by FROM vd_losses ORDER BY vd_id, taken_at',
  deleteVbd: 'DELETE FROM vbds WHERE id = ?',
  rangesAll: 'SELECT * FROM vbd_ranges ORDER BY vbd_id, seq',
  rangesOf: 'SELECT * FROM vbd_ranges WHERE vbd_id = ? ORDER BY seq',
  insertRange: 'INSERT INTO vbd_ranges (vbd_id, seq, path, offset, length) '
    + 'VALUES (?, ?, ?, ?, ?)',
  servers: 'SELECT * FROM servers ORDER BY id',
  server: 'SELECT * FROM servers WHERE id = ?',
  insertServer: 'INSERT INTO servers (pid, pid_start_time, heartbeat_at, started_at, '
    + 'control_path, host, lease_ttl_ms, rados_addrs) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
  setServerAddrs: 'UPDATE servers SET rados_addrs = ? WHERE id = ?',
  deleteServerSeen: 'DELETE FROM servers WHERE id = ? AND heartbeat_at = ?',
  leasesOfVd: 'SELECT * FROM leases WHERE vd_id = ? ORDER BY server_id',
  heartbeat: 'UPDATE servers SET heartbeat_at = ? WHERE id = ?',
  deleteServer: 'DELETE FROM servers WHERE id = ?',
  leases: 'SELECT * FROM leases ORDER BY server_id, vd_id',
  upsertLease: 'INSERT INTO leases (server_id, vd_id, generation) VALUES (?, ?, ?) '
    + 'ON CONFLICT (server_id, vd_id) DO UPDATE SET generation = excluded.generation',
  deleteLease: 'DELETE FROM leases WHERE server_id = ? AND vd_id = ?',
  imports: 'SELECT * FROM vd_imports ORDER BY vd_id',
  importOf: 'SELECT * FROM vd_imports WHERE vd_id = ?',
  insertImport: 'INSERT INTO vd_imports (vd_id, pid, pid_start_time, started_at, '
    + 'expiry_seconds, host) VALUES (?, ?, ?, ?, ?, ?)',
  deleteImport: 'DELETE FROM vd_imports WHERE vd_id = ?',
  vdReferences: 'SELECT (SELECT COUNT(*) FROM vbds WHERE vd_id = @id) '
    + '+ (SELECT COUNT(*) FROM leases WHERE vd_id = @id) '
    + '+ (SELECT COUNT(*) FROM vd_losses WHERE vd_id = @id OR taken_by = @id) AS n',
  deleteVdRow: 'DELETE FROM vds WHERE id = ?',
  ownersAll: 'SELECT * FROM extent_owners ORDER BY member_id, first_extent',
  ownerRowAt: 'SELECT * FROM extent_owners WHERE member_id = ? AND first_extent <= ? '
    + 'ORDER BY first_extent DESC LIMIT 1',
  ownerRowsIn: 'SELECT * FROM extent_owners WHERE member_id = ? AND first_extent > ? '
    + 'AND first_extent < ? ORDER BY first_extent',
  deleteOwnerRow: 'DELETE FROM extent_owners WHERE member_id = ? AND first_extent = ?',
  insertOwners: 'INSERT INTO extent_owners (member_id, first_extent, extent_count, owners) '
    + 'VALUES (?, ?, ?, ?)',
  runsOverShared: 'SELECT DISTINCT r.* FROM vd_runs r JOIN extent_owners o '
    + 'ON o.member_id = r.member_id AND r.first_extent < o.first_extent + o.extent_count '
    + 'AND o.first_extent < r.first_extent + r.extent_count',
  vdsOverlapping: 'SELECT DISTINCT vd_id FROM vd_runs WHERE member_id = ? '
    + 'AND first_extent < ? AND first_extent + extent_count > ?',
  reserveAll: 'SELECT * FROM cow_reserve ORDER BY vd_id, member_id, first_extent',
  reserveOf: 'SELECT * FROM cow_reserve WHERE vd_id = ? ORDER BY member_id, first_extent',
  reserveVds: 'SELECT DISTINCT vd_id FROM cow_reserve',
  deleteReserveOf: 'DELETE FROM cow_reserve WHERE vd_id = ?',
  insertReserve: 'INSERT INTO cow_reserve (vd_id, member_id, first_extent, extent_count) '
    + 'VALUES (?, ?, ?, ?)',
  clonesAll: 'SELECT * FROM vd_clones ORDER BY vd_id',
  cloneOf: 'SELECT * FROM vd_clones WHERE vd_id = ?',
  clonesOfOrigin: 'SELECT * FROM vd_clones WHERE origin_id = ? ORDER BY vd_id',
  insertClone: 'INSERT INTO vd_clones (vd_id, origin_id, origin_generation) VALUES (?, ?, ?)',
  lease: 'SELECT * FROM leases WHERE server_id = ? AND vd_id = ?',
} as const;

export type Statements = { readonly [Name in keyof typeof SQL]: Database.Statement };

/** Prepares every statement once for one handle. */
export function prepareStatements(db: Db): Statements {
  const names = Object.keys(SQL) as (keyof typeof SQL)[];
  return Object.fromEntries(names.map((name) => [name, db.prepare(SQL[name])])) as Statements;
}

/** One open catalog: its handle, its prepared statements and its clock (ms since the epoch). */
export interface CatalogContext {
  readonly db: Db;
  readonly st: Statements;
  readonly now: () => number;
}

/** Runs `fn` as one BEGIN IMMEDIATE transaction: the one way a mutator writes. */
export function tx<T>(cx: CatalogContext, fn: () => T): T {
  return cx.db.transaction(fn).immediate();
}

export function all<T>(stmt: Database.Statement, ...args: unknown[]): T[] {
  return stmt.all(...args) as T[];
}

export function get<T>(stmt: Database.Statement, ...args: unknown[]): T | undefined {
  return stmt.get(...args) as T | undefined;
}

export function invalid(message: string): never {
  throw new UsageError('ERR_CATALOG_INVALID', message);
}

export function checkSize(op: string, size: number): void {
  if (!Number.isSafeInteger(size) || size <= 0) {
    invalid(`${op}: size must be a positive whole number of bytes: ${size}`);
  }
}

export function checkSeconds(op: string, seconds: number): void {
  if (!Number.isSafeInteger(seconds) || seconds < 0 || seconds > LIMITS.vdExpirySecondsMax) {
    invalid(`${op}: expiry must be a whole number of seconds from 0 to `
      + `${LIMITS.vdExpirySecondsMax}: ${seconds}`);
  }
}

export function toRun(row: FreeRow): Run {
  return { memberId: row.member_id, firstExtent: row.first_extent, extentCount: row.extent_count };
}

/** expires_at for an expiry `seconds` from `now` (undefined or 0: never). */
export function expiryAt(seconds: number | undefined, now: number): number | null {
  return seconds === undefined || seconds === 0 ? null : now + seconds * 1000;
}
