/**
 * errors: every error code xvd throws, with its description, in one registry.
 *
 * Consumers branch on `.code`, never on message text. Messages read
 * `<phase or op>: <what>: <detail>`. test/unit/errors.test.ts checks that every code thrown in
 * src/ is registered here and every registered code is used.
 *
 * Each area owns one block below; add codes to your area's block only.
 */

export const ERRORS = {
  // --- usage and input (cli, size parsing) ---
  ERR_USAGE: 'the command line is malformed: unknown command, missing or extra argument, bad flag',
  ERR_SIZE_INVALID:
    'a size is not a positive whole number of bytes with an optional K/M/G/T suffix',
  ERR_CLI_MEMBER_MISSING: 'format: the path does not exist (pass --size to create an image file)',
  ERR_CLI_MEMBER_KIND: 'format: the path is neither a regular file nor a block device',
  ERR_CLI_MEMBER_OVERLAP: 'format: the path shares bytes with a pool member (same file, disk and '
    + 'its partition, loop device and its backing file)',
  ERR_CLI_MEMBER_IN_USE: 'format/vbd: the device is mounted, used as swap, or backs a VBD',
  ERR_CLI_MEMBER_TOO_SMALL: 'format: the path is smaller than one extent',
  ERR_CLI_FILE: 'import/export: the file cannot be used (missing, not a regular file, exists)',
  ERR_CLI_CHECK_FAULTS: 'check: the catalog has faults (CLI exit 4)',

  // --- catalog ---
  ERR_CATALOG_OPEN: 'the catalog file cannot be opened or is not an SQLite database',
  ERR_CATALOG_VERSION: 'the catalog was written by a newer xvd (user_version too high)',
  ERR_CATALOG_MEMBER_DUPLICATE: 'format: the path or its identity is already a pool member',
  ERR_CATALOG_MEMBER_UNKNOWN: 'no pool member has that id or path',
  ERR_CATALOG_INVALID:
    'a catalog call got an argument out of range (size, extent size, expiry, a relative path)',
  ERR_CATALOG_SERVER_UNKNOWN: 'fencing: no registered server has that id (unregistered or reaped)',
  ERR_LEASE_HELD: 'lease: a server of another host (or a predecessor on this one) leases the VD: '
    + 'live until its heartbeat is older than its TTL, then until it is fenced and taken over',

  // --- allocator and virtual disks ---
  ERR_VD_UNKNOWN: 'no virtual disk has that id',
  ERR_VD_DELETED: 'the virtual disk is deleted or expired (undelete it first)',
  ERR_VD_SPACE_DRAINING: 'the space exists but a running server still fences and drains the '
    + 'deleted VD that held it; the CLI waits up to LIMITS.vdDrainWaitMs',
  ERR_VD_NO_SPACE: 'not enough free extents for the request; nothing was changed',
  ERR_VD_REUSED: 'undelete: some extents of the disk were handed to another disk',
  ERR_VD_SHRINK: 'enlarge: the new size is smaller than the current size',
  ERR_VD_IMPORTING: 'the virtual disk is still being imported; usable once its copy is complete',
  ERR_VD_IMPORT_LOST: 'import: the VD is no longer being imported by this process (cleaned up)',
  ERR_VD_ZEROING: 'clone: the virtual disk is still being zeroed; clone it once it is live',
  ERR_VD_CLONE_SWITCH: 'clone: a running server serving the origin did not switch it to '
    + 'copy-on-write within LIMITS.cloneSwitchWaitMs; the clone was deleted',
  ERR_COW_NO_LEASE: 'copy-on-write: the server holds no live lease on the VD',
  ERR_COW_NOT_SHARED: 'copy-on-write: the remap does not replace one shared extent of the VD',
  ERR_COW_NOT_RESERVED: 'copy-on-write: the new extent is not in the VD\'s reserve',

  // --- vbd ---
  ERR_VBD_UNKNOWN: 'no VBD has that domain and device',
  ERR_VBD_EXISTS: 'the domain already has a VBD with that device name',
  ERR_VBD_SHARING: 'vbd add / undelete: a VBD and another VBD, a VD or a pool member would share '
    + 'bytes (or storage under another name) beyond the expert level',

  // --- serve ---
  ERR_SERVE_CATALOG_WRITER: 'serve: the catalog writer thread is gone (it exited, or was closed): '
    + 'heartbeats and lease writes fail, so opens of VD exports fail until the server restarts',
  ERR_SERVE_CONTROL: 'serve: the control socket `xvd status` reads cannot be created or read '
    + '(its directory is not private, the path is unusable, or the server does not answer)',
  ERR_SERVE_METRICS: 'serve --metrics: the metrics endpoint cannot listen where asked',

  // --- io (sys, backing, engine) ---
  ERR_IO_SYSCALL: 'a backing syscall failed; see .errno and .syscall',

  // --- ceph ---
  ERR_CEPH_CLIENT: 'the RADOS client cannot be set up: the configuration (CEPH_CONF, default '
    + '/etc/ceph/ceph.conf) or its keyring is missing or unreadable, no monitor answered, the '
    + 'key was refused, or librados/librbd are not installed',
  ERR_CEPH_PATH: 'an rbd: path is not rbd:POOL/IMAGE (a pool and an image name, no snapshot)',

  // --- nbd ---
  ERR_NBD_BAD_MAGIC: 'peer sent a frame whose magic does not match the current phase',
  ERR_NBD_CLIENT_FLAGS: 'client flags contain a bit the server does not know or did not offer',
  ERR_NBD_OPTION_TOO_LONG: 'option payload exceeds LIMITS.nbdOptionLengthMax',
  ERR_NBD_TOO_MANY_OPTIONS:
    'more options than LIMITS.nbdOptionCountMax before an export was chosen',
  ERR_NBD_OVERSIZE_WRITE: 'a WRITE payload above LIMITS.nbdWriteDiscardMax: hard disconnect',
  ERR_NBD_HANDSHAKE_TIMEOUT: 'negotiation did not finish within LIMITS.nbdHandshakeTimeoutMs',
  ERR_NBD_STALLED:
    'a client holding server memory neither sent nor took bytes for LIMITS.nbdStallTimeoutMs',
  ERR_NBD_TLS: 'the TLS handshake after NBD_OPT_STARTTLS failed',
  ERR_NBD_TLS_CONFIG: 'the TLS configuration is incomplete or unreadable',
  ERR_NBD_LISTEN: 'the server cannot listen on the requested address, path or fd',
} as const;

export type ErrorCode = keyof typeof ERRORS;

/** Base of every error xvd throws on purpose. */
export class XvdError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/** The user gave bad input: CLI exit code 2 when it is a usage error, 1 otherwise. */
export class UsageError extends XvdError {}

/** The peer violated the NBD protocol. */
export class ProtocolError extends XvdError {}

/** An operating failure of a syscall on a backing. `errno` is the name, such as 'ENOSPC'. */
export class IoError extends XvdError {
  readonly errno: string;
  readonly syscall: string;
  constructor(errno: string, syscall: string, message: string, options?: ErrorOptions) {
    super('ERR_IO_SYSCALL', message, options);
    this.errno = errno;
    this.syscall = syscall;
  }

  /** Wraps an error from Node's fs or the native addon, keeping its errno name. */
  static fromSystem(cause: unknown, syscall: string): IoError {
    const info = cause as { code?: unknown; syscall?: unknown; message?: unknown };
    const errno = typeof info.code === 'string' ? info.code : 'EIO';
    const sys = typeof info.syscall === 'string' ? info.syscall : syscall;
    const detail = typeof info.message === 'string' ? info.message : String(cause);
    return new IoError(errno, sys, `${sys}: ${errno}: ${detail}`, { cause });
  }
}

export function isEmuError(value: unknown): value is XvdError {
  return value instanceof XvdError;
}

/**
 * A bug rather than a failure the code expects: neither one of our coded errors nor a system
 * call's failure (an errno `code`, as Node's fs errors carry). The server counts these as
 * faults (nbd/connection.ts fault()).
 */
export function isBug(error: unknown): boolean {
  if (isEmuError(error)) return false;
  return typeof (error as { code?: unknown } | null)?.code !== 'string';
}
