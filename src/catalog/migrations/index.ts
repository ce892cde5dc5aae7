/**
 * migrations: the catalog schema as append-only steps. Step N (1-based) moves PRAGMA user_version
 * from N-1 to N; never edit a released step, add one. The SQL is embedded as strings so dist/
 * needs no copy step; each step is named as its NNNN-verb-noun.sql would be.
 */
export interface Migration {
  name: string;
  sql: string;
}

const M0001_CREATE_SCHEMA = `
CREATE TABLE members (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  path TEXT NOT NULL UNIQUE,
  kind TEXT NOT NULL CHECK (kind IN ('file', 'device')),
  size_bytes INTEGER NOT NULL CHECK (size_bytes > 0),
  extent_size INTEGER NOT NULL CHECK (extent_size > 0 AND extent_size % 512 = 0),
  extent_count INTEGER NOT NULL CHECK (extent_count > 0),
  identity TEXT NOT NULL UNIQUE,
  added_at INTEGER NOT NULL
) STRICT;

CREATE TABLE free_runs (
  member_id INTEGER NOT NULL REFERENCES members(id),
  first_extent INTEGER NOT NULL CHECK (first_extent >= 0),
  extent_count INTEGER NOT NULL CHECK (extent_count > 0),
  PRIMARY KEY (member_id, first_extent)
) STRICT;

CREATE TABLE vds (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  name TEXT,
  size_bytes INTEGER NOT NULL CHECK (size_bytes > 0),
  expires_at INTEGER,
  created_at INTEGER NOT NULL,
  generation INTEGER NOT NULL CHECK (generation > 0),
  state TEXT NOT NULL CHECK (state IN ('active', 'deleted'))
) STRICT;
CREATE INDEX vds_expires_at ON vds(expires_at);

CREATE TABLE vd_runs (
  vd_id INTEGER NOT NULL REFERENCES vds(id),
  seq INTEGER NOT NULL CHECK (seq >= 0),
  member_id INTEGER NOT NULL REFERENCES members(id),
  first_extent INTEGER NOT NULL CHECK (first_extent >= 0),
  extent_count INTEGER NOT NULL CHECK (extent_count > 0),
  PRIMARY KEY (vd_id, seq)
) STRICT;
CREATE INDEX vd_runs_member ON vd_runs(member_id, first_extent);

CREATE TABLE vd_losses (
  vd_id INTEGER NOT NULL REFERENCES vds(id),
  member_id INTEGER NOT NULL REFERENCES members(id),
  first_extent INTEGER NOT NULL,
  extent_count INTEGER NOT NULL CHECK (extent_count > 0),
  taken_by INTEGER NOT NULL REFERENCES vds(id),
  taken_at INTEGER NOT NULL
) STRICT;
CREATE INDEX vd_losses_vd ON vd_losses(vd_id);

CREATE TABLE pending_zero (
  vd_id INTEGER NOT NULL REFERENCES vds(id),
  member_id INTEGER NOT NULL REFERENCES members(id),
  first_extent INTEGER NOT NULL,
  extent_count INTEGER NOT NULL CHECK (extent_count > 0),
  PRIMARY KEY (vd_id, member_id, first_extent)
) STRICT;

CREATE TABLE vbds (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  domain INTEGER NOT NULL CHECK (domain >= 0),
  device TEXT NOT NULL,
  mode TEXT NOT NULL CHECK (mode IN ('r', 'w')),
  source_kind TEXT NOT NULL CHECK (source_kind IN ('vd', 'phy', 'extents')),
  vd_id INTEGER REFERENCES vds(id),
  phy_path TEXT,
  phy_size INTEGER,
  created_at INTEGER NOT NULL,
  UNIQUE (domain, device),
  CHECK ((source_kind = 'vd') = (vd_id IS NOT NULL)),
  CHECK ((source_kind = 'phy') = (phy_path IS NOT NULL))
) STRICT;

CREATE TABLE vbd_ranges (
  vbd_id INTEGER NOT NULL REFERENCES vbds(id) ON DELETE CASCADE,
  seq INTEGER NOT NULL,
  path TEXT NOT NULL,
  offset INTEGER NOT NULL CHECK (offset >= 0),
  length INTEGER NOT NULL CHECK (length > 0),
  PRIMARY KEY (vbd_id, seq)
) STRICT;

CREATE TABLE servers (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  pid INTEGER NOT NULL,
  pid_start_time TEXT NOT NULL,
  heartbeat_at INTEGER NOT NULL,
  started_at INTEGER NOT NULL
) STRICT;

CREATE TABLE leases (
  server_id INTEGER NOT NULL REFERENCES servers(id) ON DELETE CASCADE,
  vd_id INTEGER NOT NULL REFERENCES vds(id),
  generation INTEGER NOT NULL,
  PRIMARY KEY (server_id, vd_id)
) STRICT;
CREATE INDEX leases_vd ON leases(vd_id);
`;

/**
 * Pending zeroing in bytes of a member instead of whole extents, so that the slack of a VD's
 * last extent (bytes past its size) can be recorded when an enlarge makes it visible. Existing
 * rows become the same ranges in bytes.
 */
const M0002_MEASURE_PENDING_ZERO_BYTES = `
CREATE TABLE pending_zero_bytes (
  vd_id INTEGER NOT NULL REFERENCES vds(id),
  member_id INTEGER NOT NULL REFERENCES members(id),
  offset INTEGER NOT NULL CHECK (offset >= 0),
  length INTEGER NOT NULL CHECK (length > 0),
  PRIMARY KEY (vd_id, member_id, offset)
) STRICT;
INSERT INTO pending_zero_bytes (vd_id, member_id, offset, length)
  SELECT z.vd_id, z.member_id, z.first_extent * m.extent_size, z.extent_count * m.extent_size
  FROM pending_zero z JOIN members m ON m.id = z.member_id;
DROP TABLE pending_zero;
ALTER TABLE pending_zero_bytes RENAME TO pending_zero;
`;

/**
 * The expert level a VBD was added with, so that `check` can re-judge its sharing as addVbd did.
 * NULL for VBDs added before it was recorded: their level is unknown and check does not judge it.
 */
const M0003_RECORD_VBD_EXPERT = `
ALTER TABLE vbds ADD COLUMN expert INTEGER CHECK (expert IN (0, 1, 2));
`;

/**
 * The expert level a VD was last undeleted with: undelete judges the VBDs added over its extents
 * while it was dead as vbd add judges a new VBD, and `check` re-judges those pairs at this level.
 * NULL for VDs never undeleted since it was recorded.
 */
const M0004_RECORD_UNDELETE_EXPERT = `
ALTER TABLE vds ADD COLUMN undelete_expert INTEGER CHECK (undelete_expert IN (0, 1, 2));
`;

/**
 * Imports in progress: a VD with a row here is being filled by `xvd import` and is not usable
 * (not listed, not attachable, not served) until the importer flips it live, in one transaction
 * after its copy is durable. The owner is a process as servers are (pid and its start time from
 * /proc): when it is gone, the import was abandoned and the next command frees the VD's extents.
 * The requested expiry is applied when the import completes, so it counts from then.
 */
const M0005_RECORD_VD_IMPORTS = `
CREATE TABLE vd_imports (
  vd_id INTEGER PRIMARY KEY REFERENCES vds(id),
  pid INTEGER NOT NULL,
  pid_start_time TEXT NOT NULL,
  started_at INTEGER NOT NULL,
  expiry_seconds INTEGER NOT NULL CHECK (expiry_seconds >= 0)
) STRICT;
`;

/**
 * Where a running server answers `xvd status` (src/serve/control.ts): the path of its control
 * socket, recorded when it registers; null for a server that has none (it could not create one,
 * or an xvd from before this step registered it).
 */
const M0006_RECORD_SERVER_CONTROL = `
ALTER TABLE servers ADD COLUMN control_path TEXT;
`;

/**
 * Copy-on-write clones (issue 18). extent_owners: how many VDs (live or dead: a dead VD keeps its
 * extents until the allocator takes them) map each extent, as runs, for the extents mapped by
 * two or more; an extent in some VD's runs without a row here has one owner. cow_reserve: whole
 * extents a server took ahead for the copy-on-write of VD vd_id (owned by it, in no map yet).
 * vd_clones: the VD each clone was made from, and the generation the origin's leases must show
 * (its server switched to copy-on-write) before the clone may be served.
 */
const M0007_COUNT_EXTENT_OWNERS = `
CREATE TABLE extent_owners (
  member_id INTEGER NOT NULL REFERENCES members(id),
  first_extent INTEGER NOT NULL CHECK (first_extent >= 0),
  extent_count INTEGER NOT NULL CHECK (extent_count > 0),
  owners INTEGER NOT NULL CHECK (owners >= 2),
  PRIMARY KEY (member_id, first_extent)
) STRICT;
CREATE TABLE cow_reserve (
  vd_id INTEGER NOT NULL REFERENCES vds(id),
  member_id INTEGER NOT NULL REFERENCES members(id),
  first_extent INTEGER NOT NULL CHECK (first_extent >= 0),
  extent_count INTEGER NOT NULL CHECK (extent_count > 0),
  PRIMARY KEY (member_id, first_extent)
) STRICT;
CREATE INDEX cow_reserve_vd ON cow_reserve(vd_id);
CREATE TABLE vd_clones (
  vd_id INTEGER PRIMARY KEY REFERENCES vds(id),
  origin_id INTEGER NOT NULL REFERENCES vds(id),
  origin_generation INTEGER NOT NULL CHECK (origin_generation > 0)
) STRICT;
`;

/**
 * Servers of many hosts on one shared catalog (src/serve/host-lease.ts): a server registered
 * with a host name (`xvd serve --host`) holds its leases while its heartbeat is fresh, for
 * lease_ttl_ms, instead of while its pid lives; rados_addrs lists, as a JSON array, the address
 * of every RADOS client it writes through, which a server taking over has the monitors
 * blocklist. Rows without a host keep the pid rule.
 */
const M0008_RECORD_SERVER_HOSTS = `
ALTER TABLE servers ADD COLUMN host TEXT;
ALTER TABLE servers ADD COLUMN lease_ttl_ms INTEGER CHECK (lease_ttl_ms > 0);
ALTER TABLE servers ADD COLUMN rados_addrs TEXT NOT NULL DEFAULT '[]';
`;

/**
 * The host of the process that imports a VD (os.hostname()), so that on a catalog shared by many
 * hosts (a catalog in RADOS) a command on another host, which cannot see that process, never
 * takes the import for abandoned (catalog/liveness.ts isImporterAlive). Null for rows written
 * before this step: judged by pid, as they were.
 */
const M0009_RECORD_IMPORT_HOSTS = `
ALTER TABLE vd_imports ADD COLUMN host TEXT;
`;

/** In order; index i holds the step to user_version i + 1. */
export const MIGRATIONS: readonly Migration[] = [
  { name: '0001-create-schema', sql: M0001_CREATE_SCHEMA },
  { name: '0002-measure-pending-zero-bytes', sql: M0002_MEASURE_PENDING_ZERO_BYTES },
  { name: '0003-record-vbd-expert', sql: M0003_RECORD_VBD_EXPERT },
  { name: '0004-record-undelete-expert', sql: M0004_RECORD_UNDELETE_EXPERT },
  { name: '0005-record-vd-imports', sql: M0005_RECORD_VD_IMPORTS },
  { name: '0006-record-server-control', sql: M0006_RECORD_SERVER_CONTROL },
  { name: '0007-count-extent-owners', sql: M0007_COUNT_EXTENT_OWNERS },
  { name: '0008-record-server-hosts', sql: M0008_RECORD_SERVER_HOSTS },
  { name: '0009-record-import-hosts', sql: M0009_RECORD_IMPORT_HOSTS },
];
