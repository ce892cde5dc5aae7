/**
 * catalog (implementation): the Catalog interface of ./index.ts over one better-sqlite3 handle.
 *
 * Each public mutator runs as one `db.transaction(fn).immediate()`; everything it needs (free
 * runs, dead VDs, held VDs, blocked extents) is read inside that transaction, so concurrent
 * processes serialize on the write lock and never see each other's half-done work. Statements
 * are prepared once per handle. Placement decisions are pure (src/allocator/allocator.ts).
 */
import assert from 'node:assert';
import path from 'node:path';
import type Database from 'better-sqlite3';
import { UsageError, EmuError } from '../errors';
import { LIMITS } from '../limits';
import {
  allocate, availableBytes, freeAfter, mergeAdjacent, runsBytes, sliceRuns, virtualOffsetOf,
  type AllocationRequest, type DeadVd, type MemberRange, type Run,
} from '../allocator/allocator';
import {
  describeConflict, findSharingConflict, type ExpertLevel, type Holder,
} from '../allocator/sharing';
import type { Catalog } from './index';
import { openDatabase, type Db } from './database';
import { isProcessAlive, processStartTime } from './liveness';
import { humanBytes } from './human';
import type {
  AddVbdInput, ByteRange, CheckReport, CreateVdInput, FreeSpace, Lease, Member, MemberFree,
  MemberInput, MemberKind, OpenOptions, PendingZero, ResolvedVbd, Vbd, VbdSource, VdDetail,
  VdExtent, VdState, VdSummary,
} from './types';
import { checkCatalog } from './check';

interface MemberRow {
  id: number; path: string; kind: MemberKind; size_bytes: number; extent_size: number;
  extent_count: number; identity: string; added_at: number;
}
interface VdRow {
  id: number; name: string | null; size_bytes: number; expires_at: number | null;
  created_at: number; generation: number; state: 'active' | 'deleted';
  undelete_expert: 0 | 1 | 2 | null;
}
interface RunRow { vd_id: number; seq: number; member_id: number; first_extent: number;
  extent_count: number }
interface FreeRow { member_id: number; first_extent: number; extent_count: number }
interface VbdRow {
  id: number; domain: number; device: string; mode: 'r' | 'w';
  source_kind: 'vd' | 'phy' | 'extents'; vd_id: number | null; phy_path: string | null;
  phy_size: number | null; created_at: number; expert: 0 | 1 | 2 | null;
}
interface RangeRow { vbd_id: number; seq: number; path: string; offset: number; length: number }
interface PendingRow { vd_id: number; member_id: number; offset: number; length: number }
interface ServerRow { id: number; pid: number; pid_start_time: string; heartbeat_at: number }
interface ImportRow {
  vd_id: number; pid: number; pid_start_time: string; started_at: number; expiry_seconds: number;
}

function prepareAll(db: Db) {
  const p = (sql: string) => db.prepare(sql);
  return {
    members: p('SELECT * FROM members ORDER BY id'),
    memberById: p('SELECT * FROM members WHERE id = ?'),
    memberByPath: p('SELECT * FROM members WHERE path = ?'),
    memberByIdentity: p('SELECT * FROM members WHERE identity = ?'),
    insertMember: p('INSERT INTO members (path, kind, size_bytes, extent_size, extent_count, '
      + 'identity, added_at) VALUES (?, ?, ?, ?, ?, ?, ?)'),
    freeRuns: p('SELECT * FROM free_runs ORDER BY member_id, first_extent'),
    freeRunsOf: p('SELECT * FROM free_runs WHERE member_id = ? ORDER BY first_extent'),
    deleteFreeOf: p('DELETE FROM free_runs WHERE member_id = ?'),
    insertFree: p('INSERT INTO free_runs (member_id, first_extent, extent_count) VALUES (?, ?, ?)'),
    vd: p('SELECT * FROM vds WHERE id = ?'),
    vds: p('SELECT * FROM vds ORDER BY id'),
    deadVds: p('SELECT * FROM vds WHERE expires_at IS NOT NULL AND expires_at <= ? '
      + 'ORDER BY expires_at, id'),
    insertVd: p('INSERT INTO vds (name, size_bytes, expires_at, created_at, generation, state) '
      + "VALUES (?, ?, ?, ?, 1, 'active')"),
    setVdSize: p('UPDATE vds SET size_bytes = ?, generation = generation + 1 WHERE id = ?'),
    setVdExpiry: p('UPDATE vds SET expires_at = ?, state = ?, generation = generation + 1 '
      + 'WHERE id = ?'),
    bumpVd: p('UPDATE vds SET generation = generation + 1 WHERE id = ?'),
    setVdUndeleteExpert: p('UPDATE vds SET undelete_expert = ? WHERE id = ?'),
    runsOf: p('SELECT * FROM vd_runs WHERE vd_id = ? ORDER BY seq'),
    allRuns: p('SELECT * FROM vd_runs ORDER BY vd_id, seq'),
    deleteRunsOf: p('DELETE FROM vd_runs WHERE vd_id = ?'),
    insertRun: p('INSERT INTO vd_runs (vd_id, seq, member_id, first_extent, extent_count) '
      + 'VALUES (?, ?, ?, ?, ?)'),
    maxSeq: p('SELECT COALESCE(MAX(seq), -1) AS seq FROM vd_runs WHERE vd_id = ?'),
    allocatedAll: p('SELECT r.vd_id AS vd_id, SUM(r.extent_count * m.extent_size) AS bytes '
      + 'FROM vd_runs r JOIN members m ON m.id = r.member_id GROUP BY r.vd_id'),
    insertLoss: p('INSERT INTO vd_losses (vd_id, member_id, first_extent, extent_count, '
      + 'taken_by, taken_at) VALUES (?, ?, ?, ?, ?, ?)'),
    lossesOf: p('SELECT l.*, m.path AS path FROM vd_losses l JOIN members m '
      + 'ON m.id = l.member_id WHERE l.vd_id = ? ORDER BY l.taken_at, l.first_extent'),
    pendingAll: p('SELECT z.*, m.path AS path, m.kind AS kind '
      + 'FROM pending_zero z JOIN members m ON m.id = z.member_id '
      + 'ORDER BY z.vd_id, z.member_id, z.offset'),
    pendingVds: p('SELECT DISTINCT vd_id FROM pending_zero'),
    pendingOf: p('SELECT COUNT(*) AS n FROM pending_zero WHERE vd_id = ?'),
    pendingRowsOf: p('SELECT * FROM pending_zero WHERE vd_id = ?'),
    insertPending: p('INSERT INTO pending_zero (vd_id, member_id, offset, length) '
      + 'VALUES (?, ?, ?, ?) ON CONFLICT (vd_id, member_id, offset) '
      + 'DO UPDATE SET length = MAX(length, excluded.length)'),
    deletePendingOf: p('DELETE FROM pending_zero WHERE vd_id = ?'),
    vbds: p('SELECT * FROM vbds ORDER BY domain, device'),
    vbd: p('SELECT * FROM vbds WHERE domain = ? AND device = ?'),
    insertVbd: p('INSERT INTO vbds (domain, device, mode, source_kind, vd_id, phy_path, phy_size, '
      + 'created_at, expert) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)'),
    lossesAll: p('SELECT vd_id, taken_by FROM vd_losses ORDER BY vd_id, taken_at'),
    deleteVbd: p('DELETE FROM vbds WHERE id = ?'),
    rangesAll: p('SELECT * FROM vbd_ranges ORDER BY vbd_id, seq'),
    rangesOf: p('SELECT * FROM vbd_ranges WHERE vbd_id = ? ORDER BY seq'),
    insertRange: p('INSERT INTO vbd_ranges (vbd_id, seq, path, offset, length) '
      + 'VALUES (?, ?, ?, ?, ?)'),
    servers: p('SELECT * FROM servers ORDER BY id'),
    server: p('SELECT * FROM servers WHERE id = ?'),
    insertServer: p('INSERT INTO servers (pid, pid_start_time, heartbeat_at, started_at) '
      + 'VALUES (?, ?, ?, ?)'),
    heartbeat: p('UPDATE servers SET heartbeat_at = ? WHERE id = ?'),
    deleteServer: p('DELETE FROM servers WHERE id = ?'),
    leases: p('SELECT * FROM leases ORDER BY server_id, vd_id'),
    upsertLease: p('INSERT INTO leases (server_id, vd_id, generation) VALUES (?, ?, ?) '
      + 'ON CONFLICT (server_id, vd_id) DO UPDATE SET generation = excluded.generation'),
    deleteLease: p('DELETE FROM leases WHERE server_id = ? AND vd_id = ?'),
    imports: p('SELECT * FROM vd_imports ORDER BY vd_id'),
    importOf: p('SELECT * FROM vd_imports WHERE vd_id = ?'),
    insertImport: p('INSERT INTO vd_imports (vd_id, pid, pid_start_time, started_at, '
      + 'expiry_seconds) VALUES (?, ?, ?, ?, ?)'),
    deleteImport: p('DELETE FROM vd_imports WHERE vd_id = ?'),
    vdReferences: p('SELECT (SELECT COUNT(*) FROM vbds WHERE vd_id = @id) '
      + '+ (SELECT COUNT(*) FROM leases WHERE vd_id = @id) '
      + '+ (SELECT COUNT(*) FROM vd_losses WHERE vd_id = @id OR taken_by = @id) AS n'),
    deleteVdRow: p('DELETE FROM vds WHERE id = ?'),
  };
}

type Statements = ReturnType<typeof prepareAll>;

function invalid(message: string): never {
  throw new UsageError('ERR_CATALOG_INVALID', message);
}

function checkSize(op: string, size: number): void {
  if (!Number.isSafeInteger(size) || size <= 0) {
    invalid(`${op}: size must be a positive whole number of bytes: ${size}`);
  }
}

function checkSeconds(op: string, seconds: number): void {
  if (!Number.isSafeInteger(seconds) || seconds < 0 || seconds > LIMITS.vdExpirySecondsMax) {
    invalid(`${op}: expiry must be a whole number of seconds from 0 to `
      + `${LIMITS.vdExpirySecondsMax}: ${seconds}`);
  }
}

/**
 * VBD paths are compared as strings (sharing, allocation blocking, check), so they must be in
 * the canonical form the CLI resolves (src/cli/commands/vbd.ts); at least they are absolute.
 */
function checkVbdPath(file: string): void {
  if (typeof file !== 'string' || !path.isAbsolute(file)) {
    invalid(`vbd add: the path must be absolute (resolved): '${String(file)}'`);
  }
}

function toMember(row: MemberRow): Member {
  return {
    id: row.id, path: row.path, kind: row.kind, sizeBytes: row.size_bytes,
    extentSize: row.extent_size, extentCount: row.extent_count, identity: row.identity,
    addedAt: row.added_at,
  };
}

function toRun(row: FreeRow): Run {
  return { memberId: row.member_id, firstExtent: row.first_extent, extentCount: row.extent_count };
}

function sourceText(source: VbdSource): string {
  if (source.kind === 'vd') return `vd:${source.vdId}`;
  if (source.kind === 'phy') return `phy:${source.path}`;
  return 'extents:' + source.extents.map((e) => `${e.path}:${e.offset}+${e.length}`).join(',');
}

interface VdMarks {
  pending: Set<number>;
  importing: Set<number>;
}

class CatalogImpl implements Catalog {
  readonly path: string;
  readonly schemaVersion: number;
  private readonly db: Db;
  private readonly st: Statements;
  private readonly now: () => number;

  constructor(file: string, db: Db, version: number, now: () => number) {
    this.path = file;
    this.db = db;
    this.schemaVersion = version;
    this.now = now;
    this.st = prepareAll(db);
  }

  private tx<T>(fn: () => T): T {
    return this.db.transaction(fn).immediate();
  }

  private all<T>(stmt: Database.Statement, ...args: unknown[]): T[] {
    return stmt.all(...args) as T[];
  }

  private get<T>(stmt: Database.Statement, ...args: unknown[]): T | undefined {
    return stmt.get(...args) as T | undefined;
  }

  // --- members ---

  formatMember(input: MemberInput): Member {
    const kind: MemberKind = input.kind === 'block' ? 'device' : input.kind;
    const { path: file, sizeBytes, extentSize, identity } = input;
    if (typeof file !== 'string' || file === '') invalid('format: the path is empty');
    if (typeof identity !== 'string' || identity === '') invalid('format: the identity is empty');
    if (kind !== 'file' && kind !== 'device') invalid(`format: unknown member kind: ${kind}`);
    if (!Number.isSafeInteger(extentSize) || extentSize % 512 !== 0
      || extentSize < LIMITS.extentSizeMin || extentSize > LIMITS.extentSizeMax) {
      invalid(`format: extent size must be a multiple of 512 between ${LIMITS.extentSizeMin} `
        + `and ${LIMITS.extentSizeMax} bytes: ${extentSize}`);
    }
    checkSize('format', sizeBytes);
    const extentCount = Math.floor(sizeBytes / extentSize);
    if (extentCount < 1) {
      invalid(`format: ${file}: ${sizeBytes} bytes is smaller than one extent (${extentSize})`);
    }
    return this.tx(() => {
      const byPath = this.get<MemberRow>(this.st.memberByPath, file);
      if (byPath !== undefined) this.duplicate(`${file} is already pool member ${byPath.id}`);
      const byId = this.get<MemberRow>(this.st.memberByIdentity, identity);
      if (byId !== undefined) {
        this.duplicate(`${file} is the same ${kind} as pool member ${byId.id} (${byId.path})`);
      }
      const info = this.st.insertMember.run(file, kind, sizeBytes, extentSize, extentCount,
        identity, this.now());
      const id = Number(info.lastInsertRowid);
      this.st.insertFree.run(id, 0, extentCount);
      return toMember(this.get<MemberRow>(this.st.memberById, id)!);
    });
  }

  private duplicate(detail: string): never {
    throw new UsageError('ERR_CATALOG_MEMBER_DUPLICATE', `format: ${detail}`);
  }

  listMembers(): Member[] {
    return this.all<MemberRow>(this.st.members).map(toMember);
  }

  getMember(idOrPath: number | string): Member | null {
    const row = typeof idOrPath === 'number'
      ? this.get<MemberRow>(this.st.memberById, idOrPath)
      : this.get<MemberRow>(this.st.memberByPath, idOrPath);
    return row === undefined ? null : toMember(row);
  }

  private memberMap(): Map<number, MemberRow> {
    return new Map(this.all<MemberRow>(this.st.members).map((m) => [m.id, m]));
  }

  // --- VD reads ---

  private isDead(row: VdRow, now: number): boolean {
    return row.expires_at !== null && row.expires_at <= now;
  }

  private stateOf(row: VdRow, now: number, marks: VdMarks): VdState {
    if (this.isDead(row, now)) return row.state === 'deleted' ? 'deleted' : 'expired';
    if (marks.importing.has(row.id)) return 'importing';
    return marks.pending.has(row.id) ? 'zeroing' : 'live';
  }

  /** Which VDs have pending zeroing and which are being imported, read once per answer. */
  private marks(): VdMarks {
    return {
      pending: new Set(this.all<{ vd_id: number }>(this.st.pendingVds).map((r) => r.vd_id)),
      importing: new Set(this.all<ImportRow>(this.st.imports).map((r) => r.vd_id)),
    };
  }

  private isImporting(vdId: number): boolean {
    return this.get<ImportRow>(this.st.importOf, vdId) !== undefined;
  }

  private summary(row: VdRow, allocated: number, now: number, marks: VdMarks): VdSummary {
    return {
      id: row.id, name: row.name, size: row.size_bytes, allocatedBytes: allocated,
      expiresAt: row.expires_at, createdAt: row.created_at, generation: row.generation,
      state: this.stateOf(row, now, marks),
    };
  }

  private vdRow(op: string, id: number): VdRow {
    if (!Number.isSafeInteger(id)) throw new UsageError('ERR_VD_UNKNOWN', `${op}: no VD ${id}`);
    const row = this.get<VdRow>(this.st.vd, id);
    if (row === undefined) throw new UsageError('ERR_VD_UNKNOWN', `${op}: no VD ${id}`);
    return row;
  }

  private liveVdRow(op: string, id: number, now: number): VdRow {
    const row = this.vdRow(op, id);
    if (this.isDead(row, now)) {
      const how = row.state === 'deleted' ? 'deleted' : 'expired';
      throw new UsageError('ERR_VD_DELETED', `${op}: VD ${id} is ${how} (undelete it first)`);
    }
    this.refuseImporting(op, id);
    return row;
  }

  private refuseImporting(op: string, id: number): void {
    if (this.isImporting(id)) {
      throw new UsageError('ERR_VD_IMPORTING', `${op}: VD ${id} is still being imported `
        + '(usable once its copy is complete)');
    }
  }

  private runsOf(vdId: number): Run[] {
    return this.all<RunRow>(this.st.runsOf, vdId).map(toRun);
  }

  private extentsOf(vdId: number, members: Map<number, MemberRow>): VdExtent[] {
    return this.runsOf(vdId).map((run) => {
      const m = members.get(run.memberId)!;
      return {
        memberId: m.id, path: m.path, offset: run.firstExtent * m.extent_size,
        length: run.extentCount * m.extent_size,
      };
    });
  }

  private detail(id: number): VdDetail {
    const row = this.vdRow('show', id);
    const members = this.memberMap();
    const extents = this.extentsOf(id, members);
    const allocated = extents.reduce((sum, e) => sum + e.length, 0);
    return { ...this.summary(row, allocated, this.now(), this.marks()), extents };
  }

  getVd(id: number): VdDetail {
    return this.detail(id);
  }

  listVds(options: { all?: boolean } = {}): VdSummary[] {
    const now = this.now();
    const marks = this.marks();
    const allocated = new Map(this.all<{ vd_id: number; bytes: number }>(this.st.allocatedAll)
      .map((r) => [r.vd_id, r.bytes]));
    const isShown = (row: VdRow) => options.all === true
      || (!this.isDead(row, now) && !marks.importing.has(row.id));
    return this.all<VdRow>(this.st.vds).filter(isShown)
      .map((row) => this.summary(row, allocated.get(row.id) ?? 0, now, marks));
  }

  // --- allocation ---

  /**
   * VD ids whose extents must stay put although dead: leased by a live server that has not yet
   * fenced and drained them (invariant 2). A VBD that still names a dead VD holds nothing: as in
   * the Xen tools, deleting frees the space; the VBD dangles and is not served.
   */
  private heldVdIds(): Set<number> {
    return new Set(this.liveLeasesAt().map((lease) => lease.vdId));
  }

  /** Extents under phy:/extent VBDs, mapped onto members by path. */
  private blockedRuns(members: Map<number, MemberRow>): Run[] {
    const byPath = new Map([...members.values()].map((m) => [m.path, m]));
    const blocked: Run[] = [];
    for (const vbd of this.all<VbdRow>(this.st.vbds)) {
      if (vbd.source_kind === 'vd') continue;
      for (const range of this.rangesOfVbd(vbd)) {
        const m = byPath.get(range.path);
        if (m === undefined) continue;
        const first = Math.floor(range.offset / m.extent_size);
        const end = Math.min(Math.ceil((range.offset + range.length) / m.extent_size),
          m.extent_count);
        if (end <= first) continue;
        blocked.push({ memberId: m.id, firstExtent: first, extentCount: end - first });
      }
    }
    return blocked;
  }

  private allocationRequest(sizeBytes: number, onMemberId: number | null, now: number):
    { request: AllocationRequest; heldDead: DeadVd[] } {
    const members = this.memberMap();
    const held = this.heldVdIds();
    const deadVds: DeadVd[] = [];
    const heldDead: DeadVd[] = [];
    for (const row of this.all<VdRow>(this.st.deadVds, now)) {
      const dead = { vdId: row.id, expiresAt: row.expires_at!, runs: this.runsOf(row.id) };
      if (dead.runs.length === 0) continue;
      (held.has(row.id) ? heldDead : deadVds).push(dead);
    }
    const request: AllocationRequest = {
      sizeBytes,
      extentSizes: new Map([...members.values()].map((m) => [m.id, m.extent_size])),
      freeRuns: this.all<FreeRow>(this.st.freeRuns).map(toRun),
      deadVds,
      blocked: this.blockedRuns(members),
      onMemberId,
    };
    return { request, heldDead };
  }

  private noSpace(op: string, request: AllocationRequest, heldDead: DeadVd[]): never {
    const avail = availableBytes(request);
    const free = avail.neverUsed + avail.reclaimable;
    const heldBytes = availableBytes({ ...request, freeRuns: [], deadVds: heldDead }).reclaimable;
    const where = request.onMemberId === null ? '' : ` on member ${request.onMemberId}`;
    let message = `${op}: not enough space${where}: need ${request.sizeBytes} bytes `
      + `(${humanBytes(request.sizeBytes)}), free ${free} bytes (${humanBytes(free)}: `
      + `never used ${avail.neverUsed}, reclaimable ${avail.reclaimable})`;
    if (heldBytes > 0) {
      message += `; ${heldBytes} bytes (${humanBytes(heldBytes)}) of deleted disks are held by `
        + 'exports still being fenced and drained by a running server';
    }
    const isDraining = heldDead.length > 0 &&
      allocate({ ...request, deadVds: [...request.deadVds, ...heldDead] }) !== null;
    throw new UsageError(isDraining ? 'ERR_VD_SPACE_DRAINING' : 'ERR_VD_NO_SPACE', message);
  }

  /**
   * Rewrites the free runs of every member that `runs` lie on (in the caller's transaction):
   * `next(current, ofMember)` gives the member's new free runs from its current ones and the
   * part of `runs` on it.
   */
  private rewriteFreeRuns(runs: readonly Run[], next: (current: Run[], ofMember: Run[]) => Run[],
  ): void {
    for (const memberId of new Set(runs.map((r) => r.memberId))) {
      const current = this.all<FreeRow>(this.st.freeRunsOf, memberId).map(toRun);
      const runsNext = next(current, runs.filter((r) => r.memberId === memberId));
      this.st.deleteFreeOf.run(memberId);
      for (const r of runsNext) this.st.insertFree.run(r.memberId, r.firstExtent, r.extentCount);
    }
  }

  /** Allocates and records `sizeBytes` more for vdId, appending after its runs. */
  private allocateFor(op: string, vdId: number, sizeBytes: number, onMemberId: number | null,
    isZero: boolean, now: number): void {
    const { request, heldDead } = this.allocationRequest(sizeBytes, onMemberId, now);
    const plan = allocate(request);
    if (plan === null) this.noSpace(op, request, heldDead);
    this.rewriteFreeRuns(plan.fromFree, freeAfter);
    for (const dead of plan.fromDead) {
      this.st.deleteRunsOf.run(dead.vdId);
      dead.remaining.forEach((r, seq) => {
        this.st.insertRun.run(dead.vdId, seq, r.memberId, r.firstExtent, r.extentCount);
      });
      for (const r of dead.taken) {
        this.st.insertLoss.run(dead.vdId, r.memberId, r.firstExtent, r.extentCount, vdId, now);
      }
      this.st.deletePendingOf.run(dead.vdId);
      this.st.bumpVd.run(dead.vdId);
    }
    let seq = (this.get<{ seq: number }>(this.st.maxSeq, vdId)!.seq) + 1;
    for (const r of plan.runs) {
      this.st.insertRun.run(vdId, seq++, r.memberId, r.firstExtent, r.extentCount);
    }
    if (isZero) {
      const bytes = runsBytes(plan.runs, request.extentSizes);
      this.recordPending(vdId, sliceRuns(plan.runs, request.extentSizes, 0, bytes));
    }
  }

  /** Records member byte ranges of vdId as pending zeroing (in the caller's transaction). */
  private recordPending(vdId: number, ranges: readonly MemberRange[]): void {
    for (const r of ranges) this.st.insertPending.run(vdId, r.memberId, r.offset, r.length);
  }

  private resolveMemberId(op: string, onMember: number | string | null | undefined): number | null {
    if (onMember === undefined || onMember === null) return null;
    const m = this.getMember(onMember);
    if (m === null) {
      throw new UsageError('ERR_CATALOG_MEMBER_UNKNOWN', `${op}: no pool member ${onMember}`);
    }
    return m.id;
  }

  private expiryAt(seconds: number | undefined, now: number): number | null {
    return seconds === undefined || seconds === 0 ? null : now + seconds * 1000;
  }

  createVd(input: CreateVdInput): VdDetail {
    return this.detail(this.insertVd(input, false));
  }

  /**
   * One transaction: the VD row, its extents, their pending zeroing and the import row naming
   * this process as the owner. The VD carries no expiry while importing (nothing may reclaim
   * it); completeImport applies the one asked for.
   */
  beginImport(input: CreateVdInput): VdDetail {
    return this.detail(this.insertVd(input, true));
  }

  private insertVd(input: CreateVdInput, isImport: boolean): number {
    checkSize('create', input.size);
    if (input.expiresInS !== undefined) checkSeconds('create', input.expiresInS);
    const name = input.name ?? null;
    if (name !== null && (typeof name !== 'string' || name.length > LIMITS.vdNameLengthMax)) {
      invalid(`create: the name must be at most ${LIMITS.vdNameLengthMax} characters`);
    }
    return this.tx(() => {
      const now = this.now();
      const onMemberId = this.resolveMemberId('create', input.onMember);
      const expiresAt = isImport ? null : this.expiryAt(input.expiresInS, now);
      const info = this.st.insertVd.run(name, input.size, expiresAt, now);
      const vdId = Number(info.lastInsertRowid);
      this.allocateFor('create', vdId, input.size, onMemberId, input.zero !== false, now);
      if (isImport) {
        const start = processStartTime(process.pid);
        assert(start !== '', 'import: this process has no start time in /proc');
        this.st.insertImport.run(vdId, process.pid, start, now, input.expiresInS ?? 0);
      }
      return vdId;
    });
  }

  isImportOwned(vdId: number): boolean {
    return this.isMine(this.get<ImportRow>(this.st.importOf, vdId));
  }

  private isMine(row: ImportRow | undefined): row is ImportRow {
    return row !== undefined && row.pid === process.pid
      && row.pid_start_time === processStartTime(process.pid);
  }

  /** The import row of vdId when this process owns it; ERR_VD_IMPORT_LOST otherwise. */
  private ownImportRow(op: string, vdId: number): ImportRow {
    const row = this.get<ImportRow>(this.st.importOf, vdId);
    if (!this.isMine(row)) {
      throw new EmuError('ERR_VD_IMPORT_LOST', `${op}: VD ${vdId} is not being imported by this `
        + 'process (its import was abandoned and cleaned up, or never began)');
    }
    return row;
  }

  completeImport(vdId: number): VdSummary {
    this.tx(() => {
      const row = this.ownImportRow('import', vdId);
      this.vdRow('import', vdId);
      this.st.deleteImport.run(vdId);
      this.st.setVdExpiry.run(this.expiryAt(row.expiry_seconds, this.now()), 'active', vdId);
    });
    return this.summaryOf(vdId);
  }

  abandonImport(vdId: number): void {
    this.tx(() => {
      this.ownImportRow('import', vdId);
      this.freeImport(vdId);
    });
  }

  cleanAbandonedImports(): number[] {
    const isAbandoned = (row: ImportRow) => !isProcessAlive(row.pid, row.pid_start_time);
    if (!this.all<ImportRow>(this.st.imports).some(isAbandoned)) return [];
    return this.tx(() => {
      const abandoned = this.all<ImportRow>(this.st.imports).filter(isAbandoned);
      for (const row of abandoned) this.freeImport(row.vd_id);
      return abandoned.map((row) => row.vd_id);
    });
  }

  /**
   * Ends an import that will not complete (in the caller's transaction): its extents go back to
   * the free runs (zeroed on reuse like any others), its pending zeroing and import row go, and
   * so does the VD row, which nobody ever saw. When another row names it (extents it took from
   * a dead VD are recorded as that VD's losses), it stays as a deleted VD without extents, which
   * undelete refuses.
   */
  private freeImport(vdId: number): void {
    this.rewriteFreeRuns(this.runsOf(vdId), (current, freed) =>
      mergeAdjacent([...current, ...freed].sort((a, b) => a.firstExtent - b.firstExtent)));
    this.st.deleteRunsOf.run(vdId);
    this.st.deletePendingOf.run(vdId);
    this.st.deleteImport.run(vdId);
    if (this.get<{ n: number }>(this.st.vdReferences, { id: vdId })!.n === 0) {
      this.st.deleteVdRow.run(vdId);
    } else {
      this.st.setVdExpiry.run(this.now(), 'deleted', vdId);
    }
  }

  enlargeVd(id: number, newSize: number, options: { zero?: boolean } = {}): VdDetail {
    checkSize('enlarge', newSize);
    return this.enlargeTo(id, () => newSize, options.zero !== false);
  }

  growVd(id: number, addBytes: number, options: { zero?: boolean } = {}): VdDetail {
    if (!Number.isSafeInteger(addBytes) || addBytes < 0) {
      invalid(`enlarge: the growth must be a whole number of bytes >= 0: ${addBytes}`);
    }
    return this.enlargeTo(id, (size) => size + addBytes, options.zero !== false);
  }

  /** One transaction: the new size is computed from the size read under the write lock. */
  private enlargeTo(id: number, sizeFrom: (size: number) => number, isZero: boolean): VdDetail {
    this.tx(() => {
      const now = this.now();
      const row = this.liveVdRow('enlarge', id, now);
      const newSize = sizeFrom(row.size_bytes);
      checkSize('enlarge', newSize);
      if (newSize < row.size_bytes) {
        throw new UsageError('ERR_VD_SHRINK', `enlarge: VD ${id}: ${newSize} bytes is smaller `
          + `than its size ${row.size_bytes} (xvd never shrinks a disk)`);
      }
      const sizes = new Map([...this.memberMap().values()].map((m) => [m.id, m.extent_size]));
      const runs = this.runsOf(id);
      const allocated = runsBytes(runs, sizes);
      const slackEnd = Math.min(newSize, allocated);
      if (isZero && slackEnd > row.size_bytes) {
        // the slack of the last extent becomes visible: it holds whatever was there when the
        // extent was taken (--no-zero) and must read as zero like the new extents (invariant 3)
        this.recordPending(id, sliceRuns(runs, sizes, row.size_bytes, slackEnd));
      }
      if (newSize > allocated) {
        this.allocateFor('enlarge', id, newSize - allocated, null, isZero, now);
      }
      this.st.setVdSize.run(newSize, id);
    });
    return this.detail(id);
  }

  refreshVd(id: number, expiresInS: number): VdSummary {
    checkSeconds('refresh', expiresInS);
    this.tx(() => {
      const now = this.now();
      this.liveVdRow('refresh', id, now);
      this.st.setVdExpiry.run(this.expiryAt(expiresInS, now), 'active', id);
    });
    return this.summaryOf(id);
  }

  deleteVd(id: number): VdSummary {
    this.tx(() => {
      const now = this.now();
      this.liveVdRow('delete', id, now);
      this.st.setVdExpiry.run(now, 'deleted', id);
    });
    return this.summaryOf(id);
  }

  undeleteVd(id: number, expiresInS = 0, options: { expert?: 0 | 1 | 2 } = {}): VdSummary {
    checkSeconds('undelete', expiresInS);
    const expert = options.expert ?? 0;
    if (expert !== 0 && expert !== 1 && expert !== 2) {
      invalid(`undelete: the expert level must be 0, 1 or 2: ${String(expert)}`);
    }
    this.tx(() => {
      const now = this.now();
      const row = this.vdRow('undelete', id);
      this.refuseImporting('undelete', id);
      const losses = this.all<FreeRow & { path: string; taken_by: number }>(this.st.lossesOf, id);
      if (losses.length > 0) {
        const shown = losses.slice(0, 4).map((l) => `extents [${l.first_extent}, `
          + `${l.first_extent + l.extent_count}) of ${l.path} went to VD ${l.taken_by}`);
        const more = losses.length > 4 ? `, and ${losses.length - 4} more runs` : '';
        throw new UsageError('ERR_VD_REUSED', `undelete: VD ${id} cannot come back: `
          + `${shown.join('; ')}${more}`);
      }
      const sizes = new Map([...this.memberMap().values()].map((m) => [m.id, m.extent_size]));
      if (runsBytes(this.runsOf(id), sizes) < row.size_bytes) {
        throw new UsageError('ERR_VD_REUSED', `undelete: VD ${id} cannot come back: it holds `
          + 'fewer extents than its size (an abandoned import, whose extents were freed)');
      }
      if (this.isDead(row, now)) {
        // VBDs added while it was dead were judged without it: judge them now, as vbd add would
        const mine = { ...this.vdHolder(row.id), label: `VD ${row.id}` };
        this.checkSharing('undelete', mine, this.vbdHolders(), expert);
        this.st.setVdUndeleteExpert.run(expert, id);
      }
      this.st.setVdExpiry.run(this.expiryAt(expiresInS, now), 'active', id);
    });
    return this.summaryOf(id);
  }

  private summaryOf(id: number): VdSummary {
    const { extents: _extents, ...summary } = this.detail(id);
    void _extents;
    return summary;
  }

  freeSpace(): FreeSpace {
    const now = this.now();
    const { request, heldDead } = this.allocationRequest(1, null, now);
    const members: MemberFree[] = this.listMembers().map((m) => {
      const only = { ...request, onMemberId: m.id };
      const avail = availableBytes(only);
      const held = availableBytes({ ...only, freeRuns: [], deadVds: heldDead }).reclaimable;
      const blocked = runsBytes(request.blocked.filter((b) => b.memberId === m.id),
        request.extentSizes);
      const heldBytes = held + blocked;
      return {
        memberId: m.id, path: m.path, extentSize: m.extentSize, extentCount: m.extentCount,
        neverUsedExtents: avail.neverUsed / m.extentSize, neverUsedBytes: avail.neverUsed,
        reclaimableExtents: avail.reclaimable / m.extentSize, reclaimableBytes: avail.reclaimable,
        heldExtents: heldBytes / m.extentSize, heldBytes,
      };
    });
    const sum = (f: (m: MemberFree) => number) => members.reduce((s, m) => s + f(m), 0);
    const neverUsedBytes = sum((m) => m.neverUsedBytes);
    const reclaimableBytes = sum((m) => m.reclaimableBytes);
    return {
      members, neverUsedBytes, reclaimableBytes, heldBytes: sum((m) => m.heldBytes),
      totalBytes: neverUsedBytes + reclaimableBytes,
    };
  }

  check(): string[] {
    return this.checkReport().faults;
  }

  checkReport(): CheckReport {
    return this.db.transaction(() => {
      const servers = this.all<ServerRow>(this.st.servers);
      return checkCatalog({
        members: this.all<MemberRow>(this.st.members),
        freeRuns: this.all<FreeRow>(this.st.freeRuns),
        vds: this.all<VdRow>(this.st.vds),
        runs: this.all<RunRow>(this.st.allRuns),
        pending: this.all<PendingRow>(this.st.pendingAll),
        losses: this.all<{ vd_id: number; taken_by: number }>(this.st.lossesAll),
        vbds: this.all<VbdRow>(this.st.vbds),
        vbdRanges: this.all<RangeRow>(this.st.rangesAll),
        servers,
        liveServerIds: servers.filter((s) => this.isServerAlive(s)).map((s) => s.id),
        leases: this.all<{ server_id: number; vd_id: number; generation: number }>(
          this.st.leases),
        imports: this.all<ImportRow>(this.st.imports).map((row) => ({
          vd_id: row.vd_id, pid: row.pid,
          isOwnerAlive: isProcessAlive(row.pid, row.pid_start_time),
        })),
        now: this.now(),
      });
    }).deferred();
  }

  // --- zeroing ---

  pendingZeroing(): PendingZero[] {
    type Row = PendingRow & { path: string; kind: MemberKind };
    return this.all<Row>(this.st.pendingAll).map((r) => ({
      vdId: r.vd_id, memberId: r.member_id, path: r.path, kind: r.kind,
      offset: r.offset, length: r.length,
    }));
  }

  hasPendingZero(vdId: number): boolean {
    return this.get<{ n: number }>(this.st.pendingOf, vdId)!.n > 0;
  }

  completeZeroing(vdId: number): void {
    this.tx(() => {
      this.vdRow('zero', vdId);
      this.st.deletePendingOf.run(vdId);
      this.st.bumpVd.run(vdId);
    });
  }

  // --- vbds ---

  private rangesOfVbd(vbd: VbdRow): ByteRange[] {
    if (vbd.source_kind === 'phy') {
      return [{ path: vbd.phy_path!, offset: 0, length: vbd.phy_size! }];
    }
    if (vbd.source_kind === 'extents') {
      return this.all<RangeRow>(this.st.rangesOf, vbd.id)
        .map((r) => ({ path: r.path, offset: r.offset, length: r.length }));
    }
    return this.extentsOf(vbd.vd_id!, this.memberMap())
      .map((e) => ({ path: e.path, offset: e.offset, length: e.length }));
  }

  private sourceOf(vbd: VbdRow): VbdSource {
    if (vbd.source_kind === 'vd') return { kind: 'vd', vdId: vbd.vd_id! };
    if (vbd.source_kind === 'phy') {
      return { kind: 'phy', path: vbd.phy_path!, sizeBytes: vbd.phy_size! };
    }
    return { kind: 'extents', extents: this.rangesOfVbd(vbd) };
  }

  private toVbd(row: VbdRow): Vbd {
    const source = this.sourceOf(row);
    return {
      domain: row.domain, device: row.device, mode: row.mode, source,
      sourceText: sourceText(source), createdAt: row.created_at,
    };
  }

  private checkVbdInput(input: AddVbdInput): void {
    const { domain, device, mode, source } = input;
    if (!Number.isSafeInteger(domain) || domain < 0) invalid(`vbd add: bad domain: ${domain}`);
    if (typeof device !== 'string' || device === '' || device.length > LIMITS.deviceNameLengthMax
      || device.includes('/')) {
      invalid(`vbd add: bad device name: ${device}`);
    }
    if (mode !== 'r' && mode !== 'w') invalid(`vbd add: mode must be r or w: ${String(mode)}`);
    if (source.kind === 'phy') {
      checkVbdPath(source.path);
      checkSize('vbd add', source.sizeBytes);
    } else if (source.kind === 'extents') {
      if (source.extents.length === 0 || source.extents.length > LIMITS.catalogVbdRangesMax) {
        invalid(`vbd add: an extent list holds 1 to ${LIMITS.catalogVbdRangesMax} ranges`);
      }
      for (const e of source.extents) {
        checkVbdPath(e.path);
        if (!Number.isSafeInteger(e.offset) || e.offset < 0) {
          invalid(`vbd add: bad offset ${e.offset}`);
        }
        checkSize('vbd add', e.length);
      }
    }
  }

  /** Every current range holder: VBDs, and for each member the live VDs on it (writers). */
  private holders(now: number): Holder[] {
    const holders = this.vbdHolders();
    const members = this.memberMap();
    for (const row of this.all<VdRow>(this.st.vds)) {
      if (!this.isDead(row, now)) holders.push(this.vdHolder(row.id, members));
    }
    return holders;
  }

  /** The VBDs as holders. */
  private vbdHolders(): Holder[] {
    return this.all<VbdRow>(this.st.vbds).map((vbd) => ({
      label: `VBD ${vbd.domain}/${vbd.device} (${vbd.mode})`, kind: 'vbd', mode: vbd.mode,
      vdId: vbd.vd_id, ranges: this.rangesOfVbd(vbd),
    }));
  }

  /** A VD as a holder: a writer on all its extents. */
  private vdHolder(vdId: number, members = this.memberMap()): Holder {
    return {
      label: `pool VD ${vdId}`, kind: 'vd', mode: 'w', vdId,
      ranges: this.extentsOf(vdId, members)
        .map((e) => ({ path: e.path, offset: e.offset, length: e.length })),
    };
  }

  /** Refuses (ERR_VBD_SHARING) what the sharing rules (allocator/sharing.ts) refuse. */
  private checkSharing(op: string, mine: Holder, others: Holder[], expert: ExpertLevel): void {
    const conflict = findSharingConflict(mine, others, expert);
    if (conflict === null) return;
    throw new UsageError('ERR_VBD_SHARING', describeConflict(op, mine, conflict, expert));
  }

  addVbd(input: AddVbdInput): Vbd {
    this.checkVbdInput(input);
    const { domain, device, mode, source } = input;
    return this.tx(() => {
      const now = this.now();
      if (this.get<VbdRow>(this.st.vbd, domain, device) !== undefined) {
        throw new UsageError('ERR_VBD_EXISTS', `vbd add: domain ${domain} already has ${device}`);
      }
      let ranges: ByteRange[];
      let vdId: number | null = null;
      if (source.kind === 'vd') {
        this.liveVdRow('vbd add', source.vdId, now);
        vdId = source.vdId;
        ranges = this.extentsOf(vdId, this.memberMap())
          .map((e) => ({ path: e.path, offset: e.offset, length: e.length }));
      } else if (source.kind === 'phy') {
        ranges = [{ path: source.path, offset: 0, length: source.sizeBytes }];
      } else {
        ranges = source.extents.map((e) => ({ ...e }));
      }
      const mine: Holder = { label: `VBD ${domain}/${device} (${mode})`, kind: 'vbd', mode,
        vdId, ranges };
      const expert = input.expert ?? 0;
      this.checkSharing('vbd add', mine, this.holders(now), expert);
      const info = this.st.insertVbd.run(domain, device, mode, source.kind, vdId,
        source.kind === 'phy' ? source.path : null,
        source.kind === 'phy' ? source.sizeBytes : null, now, expert);
      const id = Number(info.lastInsertRowid);
      if (source.kind === 'extents') {
        ranges.forEach((r, seq) => this.st.insertRange.run(id, seq, r.path, r.offset, r.length));
      }
      return this.toVbd(this.get<VbdRow>(this.st.vbd, domain, device)!);
    });
  }

  removeVbd(domain: number, device: string): void {
    this.tx(() => {
      const row = this.get<VbdRow>(this.st.vbd, domain, device);
      if (row === undefined) {
        throw new UsageError('ERR_VBD_UNKNOWN', `vbd remove: domain ${domain} has no ${device}`);
      }
      this.st.deleteVbd.run(row.id);
    });
  }

  listVbds(): Vbd[] {
    return this.all<VbdRow>(this.st.vbds).map((row) => this.toVbd(row));
  }

  resolveVbd(domain: number, device: string): ResolvedVbd {
    return this.db.transaction(() => {
      const row = this.get<VbdRow>(this.st.vbd, domain, device);
      if (row === undefined) {
        throw new UsageError('ERR_VBD_UNKNOWN', `vbd: domain ${domain} has no ${device}`);
      }
      const base = { domain, device, mode: row.mode };
      if (row.source_kind !== 'vd') {
        const extents = this.rangesOfVbd(row);
        const size = extents.reduce((s, e) => s + e.length, 0);
        return { ...base, size, vdId: null, generation: 0, isDangling: false, extents };
      }
      const vd = this.get<VdRow>(this.st.vd, row.vd_id!)!;
      const isUnusable = this.isDead(vd, this.now()) || this.isImporting(vd.id);
      const servable = isUnusable ? 0 : this.servableSize(vd);
      const isDangling = servable === 0;
      const size = isDangling ? vd.size_bytes : servable;
      const extents = isDangling ? [] : trimTo(this.rangesOfVbd(row), size);
      return { ...base, size, vdId: vd.id, generation: vd.generation, isDangling, extents };
    }).deferred();
  }

  /**
   * How much of a live VD may be served: all of it, or up to its first byte pending zeroing.
   * That is 0 for a new VD, and the size before the enlarge for one enlarged (the slack of its
   * last extent and its new extents are pending; the old range is not). A pending byte outside
   * the VD's runs (a fault `check` reports) makes nothing servable.
   */
  private servableSize(vd: VdRow): number {
    const pending = this.all<PendingRow>(this.st.pendingRowsOf, vd.id);
    if (pending.length === 0) return vd.size_bytes;
    const runs = this.runsOf(vd.id);
    const sizes = new Map([...this.memberMap().values()].map((m) => [m.id, m.extent_size]));
    let servable = vd.size_bytes;
    for (const z of pending) {
      const start = virtualOffsetOf(runs, sizes, z.member_id, z.offset) ?? 0;
      servable = Math.min(servable, start);
    }
    return servable;
  }

  dataVersion(): number {
    return this.db.pragma('data_version', { simple: true }) as number;
  }

  // --- fencing ---

  /**
   * Liveness is the process itself, not its heartbeat: a server that is alive but slow (or
   * stopped) may still have writes in flight, so its leases hold until it releases them or dies;
   * once it is dead nothing of it is in flight. The heartbeat is informational.
   */
  private isServerAlive(row: ServerRow): boolean {
    return isProcessAlive(row.pid, row.pid_start_time);
  }

  private liveLeasesAt(): Lease[] {
    const alive = new Set(this.all<ServerRow>(this.st.servers)
      .filter((s) => this.isServerAlive(s)).map((s) => s.id));
    return this.all<{ server_id: number; vd_id: number; generation: number }>(this.st.leases)
      .filter((l) => alive.has(l.server_id))
      .map((l) => ({ serverId: l.server_id, vdId: l.vd_id, generation: l.generation }));
  }

  registerServer(): number {
    return this.tx(() => {
      const now = this.now();
      for (const s of this.all<ServerRow>(this.st.servers)) {
        if (!this.isServerAlive(s)) this.st.deleteServer.run(s.id);
      }
      const start = processStartTime(process.pid);
      const info = this.st.insertServer.run(process.pid, start, now, now);
      return Number(info.lastInsertRowid);
    });
  }

  private serverRow(op: string, serverId: number): ServerRow {
    const row = this.get<ServerRow>(this.st.server, serverId);
    if (row === undefined) {
      throw new EmuError('ERR_CATALOG_SERVER_UNKNOWN', `${op}: no registered server ${serverId}`);
    }
    return row;
  }

  heartbeat(serverId: number): void {
    this.tx(() => {
      this.serverRow('heartbeat', serverId);
      this.st.heartbeat.run(this.now(), serverId);
    });
  }

  unregisterServer(serverId: number): void {
    this.tx(() => {
      this.st.deleteServer.run(serverId);
    });
  }

  acquireLease(serverId: number, vdId: number): Lease {
    return this.tx(() => {
      const now = this.now();
      this.serverRow('lease', serverId);
      const vd = this.liveVdRow('lease', vdId, now);
      this.st.heartbeat.run(now, serverId);
      this.st.upsertLease.run(serverId, vdId, vd.generation);
      return { serverId, vdId, generation: vd.generation };
    });
  }

  releaseLease(serverId: number, vdId: number): void {
    this.tx(() => {
      this.st.deleteLease.run(serverId, vdId);
    });
  }

  liveLeases(): Lease[] {
    return this.liveLeasesAt();
  }

  close(): void {
    if (this.db.open) this.db.close();
  }
}

/** Cuts ranges (virtual order) so that their lengths add up to exactly `size`. */
function trimTo(ranges: ByteRange[], size: number): ByteRange[] {
  const out: ByteRange[] = [];
  let left = size;
  for (const r of ranges) {
    if (left <= 0) break;
    const length = Math.min(r.length, left);
    out.push({ ...r, length });
    left -= length;
  }
  assert(left === 0, 'resolve: a live VD holds fewer bytes than its size');
  return out;
}

export function openCatalogImpl(file: string, options: OpenOptions): Catalog {
  const { db, version } = openDatabase(file, options.create !== false, options.readonly === true);
  return new CatalogImpl(file, db, version, options.now ?? Date.now);
}
