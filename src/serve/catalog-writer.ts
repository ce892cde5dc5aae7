/**
 * serve/catalog-writer: the catalog writes a running server makes while it serves (heartbeat,
 * acquireLease, releaseLease, takeOverServer of a fenced host: serve/host-lease.ts, and for
 * copy-on-write reserveCowExtents and commitCowRemaps: serve/cow-vds.ts), behind one
 * promise-returning interface, and the messages that carry them to the writer thread
 * (catalog-writer-thread.ts) and back.
 *
 * Why an interface: every catalog write is a BEGIN IMMEDIATE transaction that fsyncs its commit
 * (WAL, synchronous=FULL) and may wait up to LIMITS.catalogBusyTimeoutMs for the write lock that
 * a CLI process holds. On the one JS thread that serves every NBD connection that stalls every
 * client (a heartbeat once took 685 ms during heavy writeback). `xvd serve` therefore writes
 * through a worker thread with a connection of its own; CatalogProvider sees only this interface,
 * and unit tests keep the in-process writer over a Catalog (catalogWriterOf). Reads (resolveVbd,
 * listVbds, data_version) are WAL reads that never wait for the lock; they stay on the main
 * thread.
 *
 * Errors cross the thread boundary as data (WireError) and come back as the same class with the
 * same code and message (XvdError, UsageError, ProtocolError, IoError), so callers keep branching
 * on `instanceof XvdError` and `.code`; any other error comes back as an Error with its name,
 * message and, when it had one, its string code (SQLITE_BUSY).
 */
import { ERRORS, XvdError, IoError, ProtocolError, UsageError, type ErrorCode } from '../errors';
import type { Catalog, CowExtents, CowRemap, Lease } from '../catalog/index';

/** The catalog writes of a serving server. Each resolves once its transaction committed. */
export interface CatalogWriter {
  heartbeat(serverId: number): Promise<void>;
  /** with `generation`: records that one (a switch to copy-on-write: cow-vds.ts) */
  acquireLease(serverId: number, vdId: number, generation?: number): Promise<Lease>;
  releaseLease(serverId: number, vdId: number): Promise<void>;
  /** Catalog.takeOverServer: true when the fenced server's row and leases were removed. */
  takeOverServer(serverId: number, heartbeatAtMs: number): Promise<boolean>;
  /** Catalog.reserveCowExtents (copy-on-write: serve/cow-vds.ts) */
  reserveCowExtents(serverId: number, vdId: number, extentSize: number, count: number):
    Promise<CowExtents[]>;
  /** Catalog.commitCowRemaps: the one catalog write of a FLUSH after copy-on-write */
  commitCowRemaps(serverId: number, vdId: number, remaps: readonly CowRemap[]): Promise<void>;
}

/** Writes in process, on the caller's thread, through `catalog` (unit tests, tools). */
export function catalogWriterOf(catalog: Catalog): CatalogWriter {
  return {
    heartbeat: async (serverId) => catalog.heartbeat(serverId),
    acquireLease: async (serverId, vdId, generation) =>
      catalog.acquireLease(serverId, vdId, generation),
    releaseLease: async (serverId, vdId) => catalog.releaseLease(serverId, vdId),
    takeOverServer: async (serverId, heartbeatAtMs) =>
      catalog.takeOverServer(serverId, heartbeatAtMs),
    reserveCowExtents: async (serverId, vdId, extentSize, count) =>
      catalog.reserveCowExtents(serverId, vdId, extentSize, count),
    commitCowRemaps: async (serverId, vdId, remaps) =>
      catalog.commitCowRemaps(serverId, vdId, remaps),
  };
}

// --- the messages between CatalogWriterThread and catalog-writer-worker ---

/** The worker's first reply, to no request: its catalog connection is open (or failed to). */
export const WRITER_OPEN_ID = 0;

export type WriterRequest =
  | { id: number; op: 'heartbeat'; serverId: number }
  | { id: number; op: 'acquireLease'; serverId: number; vdId: number; generation?: number }
  | { id: number; op: 'releaseLease'; serverId: number; vdId: number }
  | { id: number; op: 'takeOverServer'; serverId: number; heartbeatAtMs: number }
  | { id: number; op: 'reserveCowExtents'; serverId: number; vdId: number; extentSize: number;
    count: number }
  | { id: number; op: 'commitCowRemaps'; serverId: number; vdId: number;
    remaps: readonly CowRemap[] }
  /** closes the worker's connection; answered after every request sent before it */
  | { id: number; op: 'close' };

export type WriterReply =
  | { id: number; isOk: true; lease: Lease | null; isTaken?: boolean; runs?: CowExtents[] }
  | { id: number; isOk: false; error: WireError };

export interface WriterData {
  catalogPath: string;
}

type WireClass = 'XvdError' | 'UsageError' | 'ProtocolError' | 'IoError' | 'Error';

/** An error as structured-clone data. */
export interface WireError {
  kind: WireClass;
  name: string;
  message: string;
  code: string | null;
  errno: string | null;
  syscall: string | null;
  stack: string | null;
}

function kindOf(error: unknown): WireClass {
  if (error instanceof IoError) return 'IoError';
  if (error instanceof UsageError) return 'UsageError';
  if (error instanceof ProtocolError) return 'ProtocolError';
  if (error instanceof XvdError) return 'XvdError';
  return 'Error';
}

export function wireErrorOf(error: unknown): WireError {
  const info = (typeof error === 'object' && error !== null ? error : {}) as
    { name?: unknown; message?: unknown; code?: unknown; errno?: unknown; syscall?: unknown;
      stack?: unknown };
  const text = (value: unknown): string | null => typeof value === 'string' ? value : null;
  return {
    kind: kindOf(error),
    name: text(info.name) ?? 'Error',
    message: text(info.message) ?? String(error),
    code: text(info.code),
    errno: text(info.errno),
    syscall: text(info.syscall),
    stack: text(info.stack),
  };
}

function isErrorCode(code: string | null): code is ErrorCode {
  return code !== null && Object.hasOwn(ERRORS, code);
}

/** The error a WireError describes, as its own class again. */
export function errorOfWire(wire: WireError): Error {
  const error = emuErrorOfWire(wire) ?? plainErrorOfWire(wire);
  if (wire.stack !== null) error.stack = wire.stack; // where the catalog threw, in the worker
  return error;
}

function emuErrorOfWire(wire: WireError): XvdError | null {
  if (wire.kind === 'IoError') {
    return new IoError(wire.errno ?? 'EIO', wire.syscall ?? 'unknown', wire.message);
  }
  if (wire.kind === 'Error' || !isErrorCode(wire.code)) return null;
  if (wire.kind === 'UsageError') return new UsageError(wire.code, wire.message);
  if (wire.kind === 'ProtocolError') return new ProtocolError(wire.code, wire.message);
  return new XvdError(wire.code, wire.message);
}

function plainErrorOfWire(wire: WireError): Error {
  const error = new Error(wire.message) as Error & { code?: string };
  error.name = wire.name;
  if (wire.code !== null) error.code = wire.code;
  return error;
}
