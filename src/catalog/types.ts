/**
 * types: the plain data the catalog API takes and returns. Sizes and offsets are bytes, times are
 * unix milliseconds (`expiresAt` null = never), ranges are half-open. Extents are counted in
 * whole member extents; a "run" is (member, first extent index, extent count).
 */

export type MemberKind = 'file' | 'device';

export interface MemberInput {
  /** Absolute path (the CLI resolves symlinks). */
  path: string;
  /** 'block' is accepted as an alias of 'device'. */
  kind: MemberKind | 'block';
  sizeBytes: number;
  /** Bytes per extent: a multiple of 512 within LIMITS.extentSize{Min,Max}. */
  extentSize: number;
  /**
   * Identity unique across the pool: use identityOfFile(dev, ino) for files and
   * identityOfDevice('MAJ:MIN') for block devices.
   */
  identity: string;
}

export interface Member {
  id: number;
  path: string;
  kind: MemberKind;
  sizeBytes: number;
  extentSize: number;
  extentCount: number;
  identity: string;
  addedAt: number;
}

/**
 * Computed state: 'zeroing' = allocated or enlarged, zeroing not yet finished (served only up to
 * the first pending byte: a new VD not at all, an enlarged one at its old size); 'importing' =
 * `xvd import` is still copying into it (or was killed doing so): not usable at all.
 */
export type VdState = 'live' | 'zeroing' | 'importing' | 'expired' | 'deleted';

export interface VdSummary {
  id: number;
  name: string | null;
  /** Visible size, exact. */
  size: number;
  /** Bytes of whole extents still owned (>= size for a usable VD). */
  allocatedBytes: number;
  expiresAt: number | null;
  createdAt: number;
  generation: number;
  state: VdState;
}

/**
 * One allocated extent run of a VD, in virtual order. `length` is whole extents (the sum over a
 * VD is `allocatedBytes`, which may exceed `size`; the last run is not trimmed).
 */
export interface VdExtent {
  memberId: number;
  path: string;
  /** Byte offset in the member. */
  offset: number;
  length: number;
}

export interface VdDetail extends VdSummary {
  extents: VdExtent[];
  /** Bytes of its extents that another VD (live or dead) maps too: copy-on-write. */
  sharedBytes: number;
  /** Bytes of its extents no other VD maps (sharedBytes + ownBytes = allocatedBytes). */
  ownBytes: number;
  /** Bytes of whole extents a server took ahead for its copy-on-write, in no map yet. */
  reserveBytes: number;
  /** The VD it was cloned from, or null. */
  originId: number | null;
}

export interface CloneOptions {
  name?: string | null;
  /** Seconds until expiry; 0 or absent = never. */
  expiresInS?: number;
}

/** A run of whole extents of one member taken for a VD's copy-on-write reserve. */
export interface CowExtents {
  memberId: number;
  path: string;
  firstExtent: number;
  extentCount: number;
  extentSize: number;
}

/**
 * One copy-on-write remap: the VD's extent at virtualOffset (`length` = its extent size) is
 * replaced by extent `firstExtent` of member `memberId`, from the VD's reserve.
 */
export interface CowRemap {
  virtualOffset: number;
  length: number;
  memberId: number;
  firstExtent: number;
}

export interface CreateVdInput {
  size: number;
  /** Seconds until expiry; 0 or absent = never. */
  expiresInS?: number;
  name?: string | null;
  /** Restrict placement to this member (id or path). */
  onMember?: number | string | null;
  /** Record the new extents as pending zeroing (default true). */
  zero?: boolean;
}

export interface MemberFree {
  memberId: number;
  path: string;
  extentSize: number;
  extentCount: number;
  neverUsedExtents: number;
  neverUsedBytes: number;
  /** Extents of expired/deleted VDs that may be taken now. */
  reclaimableExtents: number;
  reclaimableBytes: number;
  /** Extents of dead VDs still held (live lease, attached VBD, zeroing in progress). */
  heldExtents: number;
  heldBytes: number;
}

export interface FreeSpace {
  members: MemberFree[];
  neverUsedBytes: number;
  reclaimableBytes: number;
  heldBytes: number;
  /** neverUsedBytes + reclaimableBytes. */
  totalBytes: number;
}

/** A byte range of a backing path (for a VBD: absolute, in the form the CLI resolves). */
export interface ByteRange {
  path: string;
  offset: number;
  length: number;
}

export type VbdSource =
  | { kind: 'vd'; vdId: number }
  /** A whole device, partition or file of `sizeBytes`. */
  | { kind: 'phy'; path: string; sizeBytes: number }
  | { kind: 'extents'; extents: ByteRange[] };

export interface AddVbdInput {
  domain: number;
  device: string;
  mode: 'r' | 'w';
  source: VbdSource;
  /** 0: only read-only sharing; 1: one writer with readers; 2: anything. Default 0. */
  expert?: 0 | 1 | 2;
}

export interface Vbd {
  domain: number;
  device: string;
  mode: 'r' | 'w';
  source: VbdSource;
  /** `vd:ID`, `phy:PATH` or `extents:PATH:OFF+LEN,...`. */
  sourceText: string;
  createdAt: number;
}

export interface ResolvedVbd {
  domain: number;
  device: string;
  mode: 'r' | 'w';
  /** Exact size served: an enlarged VD's old size while its new range is pending zeroing. */
  size: number;
  vdId: number | null;
  /** The VD's generation (0 for phy/extents). */
  generation: number;
  /** True when the VD is dead, or new and not yet zeroed: serve nothing. */
  isDangling: boolean;
  /**
   * Backing ranges in virtual order; the last is trimmed so lengths add up to `size`. A VD's
   * are cut where sharing changes; `shared` is true on the pieces other VDs map too (clones:
   * copy-on-write), absent elsewhere.
   */
  extents: ResolvedExtent[];
}

export interface ResolvedExtent extends ByteRange {
  shared?: boolean;
}

/** A registered server (catalog/leases.ts). Times are ms since the epoch. */
export interface ServerInfo {
  id: number;
  pid: number;
  startedAtMs: number;
  heartbeatAtMs: number;
  /** its control socket (src/serve/control.ts), or null when it has none */
  controlPath: string | null;
  /** its process still runs (pid and start time, catalog/liveness.ts); for a server with a
   * host: its heartbeat is fresh (within leaseTtlMs) */
  isAlive: boolean;
  /** registered with `xvd serve --host`: leases by heartbeat (src/serve/host-lease.ts) */
  host: string | null;
  leaseTtlMs: number | null;
  /** the RADOS clients it writes through (blocklisted when another server takes over) */
  radosAddrs: string[];
  /** its process's start time (catalog/liveness.ts), to judge or fence it on its own host */
  pidStartTime: string;
}

/** How a server registered with a host name holds its leases (src/serve/host-lease.ts). */
export interface HostIdentity {
  host: string;
  leaseTtlMs: number;
  /** the address of every RADOS client this server writes through */
  radosAddrs: string[];
}

export interface Lease {
  serverId: number;
  vdId: number;
  generation: number;
}

/** What `check` found: faults make the catalog unsound; notes are worth knowing, harmless. */
export interface CheckReport {
  faults: string[];
  notes: string[];
}

export interface PendingZero {
  vdId: number;
  memberId: number;
  path: string;
  kind: MemberKind;
  offset: number;
  length: number;
}

export interface OpenOptions {
  /** Create the file (and parent directories) when missing. Default true. */
  create?: boolean;
  /** Clock injection for tests: unix ms. */
  now?: () => number;
  /** Read-only open (no migrations, no writes). */
  readonly?: boolean;
}
