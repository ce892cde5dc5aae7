/**
 * port: what the CLI needs from the catalog, in the CLI's own words. Commands call only this
 * interface; src/cli/context.ts adapts the catalog module (src/catalog) to it. Keeping the seam
 * here lets command logic stay small and lets the catalog's API evolve behind one adapter.
 * Sizes are bytes; times are seconds since the epoch; `expiresAt` null means never.
 */
import type { MemberIdentity } from './probe';

export interface VdRecord {
  id: number;
  name: string | null;
  sizeBytes: number;
  /** Bytes of whole extents held (>= sizeBytes for a live VD). */
  allocatedBytes: number;
  expiresAt: number | null;
  isLive: boolean;
  /** Being filled by `xvd import` (or abandoned by a killed one): not usable. */
  isImporting: boolean;
}

/** One backing piece in virtual order: `length` bytes at `offset` of `path`. */
export interface PieceRecord {
  path: string;
  offset: number;
  length: number;
}

export interface MemberRecord {
  path: string;
  kind: 'file' | 'block' | 'rbd';
  sizeBytes: number;
  extentSizeBytes: number;
  extentCount: number;
  freeExtentCount: number;
}

export interface VbdRecord {
  domain: number;
  device: string;
  mode: 'r' | 'w';
  /** `vd:ID`, `phy:PATH` or `extents:…` as given. */
  source: string;
  pieces: PieceRecord[];
}

export interface NewMember {
  path: string;
  kind: 'file' | 'block' | 'rbd';
  sizeBytes: number;
  extentSizeBytes: number;
  /** `MAJ:MIN` of a block device, null for a file. */
  majMin: string | null;
  identity: MemberIdentity;
}

export interface NewVd {
  sizeBytes: number;
  expirySeconds: number;
  name: string | null;
  onPath: string | null;
  isZeroing: boolean;
}

export interface NewVbd {
  domain: number;
  device: string;
  mode: 'r' | 'w';
  source: string;
  pieces: PieceRecord[];
  expert: 0 | 1 | 2;
}

/** A server registered in the catalog (`xvd status`). */
export interface ServerRecord {
  id: number;
  pid: number;
  startedAt: number;
  /** where it answers `xvd status` (src/serve/control.ts); null when it has no such socket */
  controlPath: string | null;
  /** its process still runs */
  isAlive: boolean;
}

/** How much of a VD's extents it shares with its clones or origin (`xvd show`). */
export interface SharingRecord {
  sharedBytes: number;
  ownBytes: number;
  reserveBytes: number;
  originId: number | null;
}

export interface CatalogPort {
  members(): MemberRecord[];
  format(member: NewMember): MemberRecord;
  create(request: NewVd): number;
  /** `create` for `xvd import`: the VD is not usable, nor listed, until completeImport. */
  beginImport(request: NewVd): number;
  /** Makes the import live; call after the copy was synced to the members. */
  completeImport(id: number): void;
  /** Frees an import whose copy failed, as if it never began. */
  abandonImport(id: number): void;
  /** True while this process still owns the import of VD `id`. */
  isImportOwned(id: number): boolean;
  refresh(id: number, expirySeconds: number): void;
  delete(id: number): void;
  enlarge(id: number, addBytes: number, isZeroing: boolean): void;
  /** `expert`: how much sharing with VBDs added while the VD was deleted is accepted. */
  undelete(id: number, expirySeconds: number, expert: 0 | 1 | 2): void;
  list(isAll: boolean): VdRecord[];
  show(id: number): { vd: VdRecord; pieces: PieceRecord[]; sharing: SharingRecord };
  /** A copy-on-write clone of a live VD, one transaction whatever its size; its id. */
  clone(id: number, request: { name: string | null; expirySeconds: number }): number;
  /** False while a running server serves the clone's origin without copy-on-write yet. */
  isCloneSwitched(id: number): boolean;
  /**
   * A full consistency check: faults (none when the catalog is sound) and notes (harmless, such
   * as stale leases of a server that is not running).
   */
  check(): { faults: string[]; notes: string[] };
  /** Runs the zeroing the catalog recorded as pending (after create/enlarge). */
  zeroPending(): Promise<void>;
  vbdAdd(vbd: NewVbd): void;
  vbdRemove(domain: number, device: string): void;
  vbdList(): VbdRecord[];
  /** Every server registered, running or not. */
  servers(): ServerRecord[];
  close(): void;
}
