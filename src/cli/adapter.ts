/**
 * adapter: the catalog module (src/catalog) seen through the CLI's port (src/cli/port.ts).
 * Converts units (the catalog keeps unix ms, the CLI prints seconds), names ('device' ↔
 * 'block'), and shapes: `show` trims the last run so piece lengths add up to the visible size,
 * as the seed's vd_lookup did; `members` joins the member list with the free-space report.
 */
import assert from 'node:assert';
import {
  identityOfDevice, identityOfFile, openCatalog, zeroPending, type Catalog, type VbdSource,
  type VdSummary,
} from '../catalog';
import { isRbdPath } from '../backing/rbd-backing';
import { XvdError } from '../errors';
import { LIMITS } from '../limits';
import type {
  CatalogPort, MemberRecord, NewMember, NewVbd, PieceRecord, ServerRecord, VdRecord,
} from './port';

/** Pause between allocation tries while a server drains a deleted VD (one serve poll). */
const DRAIN_RETRY_MS = 100;

function vdRecord(vd: VdSummary): VdRecord {
  return {
    id: vd.id,
    name: vd.name,
    sizeBytes: vd.size,
    allocatedBytes: vd.allocatedBytes,
    expiresAt: vd.expiresAt === null ? null : Math.floor(vd.expiresAt / 1000),
    isLive: vd.state === 'live' || vd.state === 'zeroing',
    isImporting: vd.state === 'importing',
  };
}

/** Runs in virtual order, the last cut so that the lengths add up to `sizeBytes`. */
export function trimPieces(runs: readonly PieceRecord[], sizeBytes: number): PieceRecord[] {
  const pieces: PieceRecord[] = [];
  let remaining = sizeBytes;
  for (const run of runs) {
    if (remaining <= 0) break;
    const length = Math.min(run.length, remaining);
    pieces.push({ path: run.path, offset: run.offset, length });
    remaining -= length;
  }
  return pieces;
}

/** An RBD image (path rbd:POOL/IMAGE) is kept as a 'device' member; its identity is its path. */
function kindOf(member: { kind: 'file' | 'device'; path: string }): MemberRecord['kind'] {
  if (member.kind === 'file') return 'file';
  return isRbdPath(member.path) ? 'rbd' : 'block';
}

function identityKey(member: NewMember): string {
  if (member.kind === 'rbd') return member.path;
  if (member.kind === 'block') {
    assert(member.majMin !== null);
    return identityOfDevice(member.majMin);
  }
  const file = member.identity.files[0];
  assert(file !== undefined);
  return identityOfFile(file.dev, file.ino);
}

function sourceOf(vbd: NewVbd): VbdSource {
  if (vbd.source.startsWith('vd:')) return { kind: 'vd', vdId: Number(vbd.source.slice(3)) };
  const first = vbd.pieces[0];
  if (vbd.source.startsWith('phy:') && first !== undefined) {
    return { kind: 'phy', path: first.path, sizeBytes: first.length };
  }
  return { kind: 'extents', extents: vbd.pieces.map((p) => ({ ...p })) };
}

class CatalogAdapter implements CatalogPort {
  constructor(private readonly catalog: Catalog) {}

  members(): MemberRecord[] {
    const free = new Map(this.catalog.freeSpace().members.map((m) => [m.memberId, m]));
    return this.catalog.listMembers().map((member) => {
      const memberFree = free.get(member.id);
      const freeExtentCount = memberFree === undefined
        ? 0 : memberFree.neverUsedExtents + memberFree.reclaimableExtents;
      return {
        path: member.path,
        kind: kindOf(member),
        sizeBytes: member.sizeBytes,
        extentSizeBytes: member.extentSize,
        extentCount: member.extentCount,
        freeExtentCount,
      };
    });
  }

  format(member: NewMember): MemberRecord {
    const added = this.catalog.formatMember({
      path: member.path, kind: member.kind === 'rbd' ? 'device' : member.kind,
      sizeBytes: member.sizeBytes,
      extentSize: member.extentSizeBytes, identity: identityKey(member),
    });
    return {
      path: added.path, kind: kindOf(added),
      sizeBytes: added.sizeBytes,
      extentSizeBytes: added.extentSize, extentCount: added.extentCount,
      freeExtentCount: added.extentCount,
    };
  }

  create(request: Parameters<CatalogPort['create']>[0]): number {
    return waitForDrain(() => this.catalog.createVd({
      size: request.sizeBytes, expiresInS: request.expirySeconds, name: request.name,
      onMember: request.onPath, zero: request.isZeroing,
    }).id);
  }

  beginImport(request: Parameters<CatalogPort['beginImport']>[0]): number {
    return waitForDrain(() => this.catalog.beginImport({
      size: request.sizeBytes, expiresInS: request.expirySeconds, name: request.name,
      onMember: request.onPath, zero: request.isZeroing,
    }).id);
  }

  completeImport(id: number): void {
    this.catalog.completeImport(id);
  }

  abandonImport(id: number): void {
    this.catalog.abandonImport(id);
  }

  isImportOwned(id: number): boolean {
    return this.catalog.isImportOwned(id);
  }

  refresh(id: number, expirySeconds: number): void {
    this.catalog.refreshVd(id, expirySeconds);
  }

  delete(id: number): void {
    this.catalog.deleteVd(id);
  }

  enlarge(id: number, addBytes: number, isZeroing: boolean): void {
    waitForDrain(() => this.catalog.growVd(id, addBytes, { zero: isZeroing }));
  }

  undelete(id: number, expirySeconds: number, expert: 0 | 1 | 2): void {
    this.catalog.undeleteVd(id, expirySeconds, { expert });
  }

  list(isAll: boolean): VdRecord[] {
    return this.catalog.listVds({ all: isAll }).map(vdRecord);
  }

  show(id: number): ReturnType<CatalogPort['show']> {
    const vd = this.catalog.getVd(id);
    const runs = vd.extents.map((e) => ({ path: e.path, offset: e.offset, length: e.length }));
    const sharing = { sharedBytes: vd.sharedBytes, ownBytes: vd.ownBytes,
      reserveBytes: vd.reserveBytes, originId: vd.originId };
    return { vd: vdRecord(vd), pieces: trimPieces(runs, vd.size), sharing };
  }

  clone(id: number, request: { name: string | null; expirySeconds: number }): number {
    return this.catalog.cloneVd(id, { name: request.name, expiresInS: request.expirySeconds }).id;
  }

  isCloneSwitched(id: number): boolean {
    return this.catalog.isCloneSwitched(id);
  }

  check(): { faults: string[]; notes: string[] } {
    return this.catalog.checkReport();
  }

  async zeroPending(): Promise<void> {
    await zeroPending(this.catalog);
  }

  vbdAdd(vbd: NewVbd): void {
    this.catalog.addVbd({
      domain: vbd.domain, device: vbd.device, mode: vbd.mode, source: sourceOf(vbd),
      expert: vbd.expert,
    });
  }

  vbdRemove(domain: number, device: string): void {
    this.catalog.removeVbd(domain, device);
  }

  vbdList(): ReturnType<CatalogPort['vbdList']> {
    return this.catalog.listVbds().map((vbd) => ({
      domain: vbd.domain, device: vbd.device, mode: vbd.mode, source: vbd.sourceText,
      pieces: this.catalog.resolveVbd(vbd.domain, vbd.device).extents.map((e) => ({ ...e })),
    }));
  }

  servers(): ServerRecord[] {
    return this.catalog.listServers().map((s) => ({ id: s.id, pid: s.pid,
      startedAt: Math.floor(s.startedAtMs / 1000), controlPath: s.controlPath,
      isAlive: s.isAlive }));
  }

  close(): void {
    this.catalog.close();
  }
}

/**
 * Opens the catalog; when `isRecovering`, first frees imports abandoned by a killed `xvd import`
 * (every command but `check`, which reports them as they are).
 */
export function openCatalogPort(catalogPath: string, isRecovering: boolean): CatalogPort {
  const catalog = openCatalog(catalogPath);
  try {
    if (isRecovering) catalog.cleanAbandonedImports();
  } catch (error) {
    catalog.close();
    throw error;
  }
  return new CatalogAdapter(catalog);
}

/**
 * Runs an allocation, waiting while the space it needs is still being fenced and drained by a
 * running server (ERR_VD_SPACE_DRAINING: invariant 2 lets the extents go only after that). The
 * CLI process does nothing else meanwhile, so a blocking sleep between tries is fine. Bounded
 * by LIMITS.vdDrainWaitMs; then the last error stands.
 */
function waitForDrain<T>(allocate: () => T): T {
  const deadline = Date.now() + LIMITS.vdDrainWaitMs;
  const sleeper = new Int32Array(new SharedArrayBuffer(4));
  for (;;) {
    try {
      return allocate();
    } catch (error) {
      const isDraining = error instanceof XvdError && error.code === 'ERR_VD_SPACE_DRAINING';
      if (!isDraining || Date.now() >= deadline) throw error;
      Atomics.wait(sleeper, 0, 0, DRAIN_RETRY_MS);
    }
  }
}
