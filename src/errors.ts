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
  ERR_SIZE_INVALID: 'a size is not a positive whole number of bytes with an optional K/M/G/T suffix',

  // --- catalog ---
  ERR_CATALOG_OPEN: 'the catalog file cannot be opened or is not an SQLite database',
  ERR_CATALOG_VERSION: 'the catalog was written by a newer xvd (user_version too high)',
  ERR_CATALOG_CORRUPT: 'the catalog violates an invariant (see `xvd check`)',

  // --- allocator and virtual disks ---

  // --- vbd ---

  // --- io (sys, backing, engine) ---
  ERR_IO_SYSCALL: 'a backing syscall failed; see .errno and .syscall',
  ERR_IO_NATIVE_MISSING: 'the native addon is not built (run npm install)',

  // --- nbd ---
} as const;

export type ErrorCode = keyof typeof ERRORS;

/** Base of every error xvd throws on purpose. */
export class EmuError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/** The user gave bad input: CLI exit code 2 when it is a usage error, 1 otherwise. */
export class UsageError extends EmuError {}

/** The peer violated the NBD protocol. */
export class ProtocolError extends EmuError {}

/** An operating failure of a syscall on a backing. `errno` is the name, such as 'ENOSPC'. */
export class IoError extends EmuError {
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

export function isEmuError(value: unknown): value is EmuError {
  return value instanceof EmuError;
}
