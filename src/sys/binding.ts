/**
 * sys/binding: loads the native addon (native/) once and types it: the NativeBinding interface,
 * the opaque handles of its threads and the callbacks they complete with. Only src/sys imports
 * this module; everything else goes through ./index.ts's checked wrappers.
 * XVD_ADDON_PATH names another build of the addon to load instead (npm run test:asan loads one
 * built with sanitizers); it must load. It is read here, at load, because the addon is loaded
 * once per process before any option could reach it.
 */
import path from 'node:path';
import { fallbackBinding } from './fallback';

/**
 * pwriteBatch's result: (null, -1) all written; (error, i) piece i failed with errno error.code;
 * (null, i) piece i's pwrite wrote 0 bytes (a short write).
 */
export type BatchCallback = (error: NodeJS.ErrnoException | null, index: number) => void;

/** A writer thread's handle (native/src/writer.c); opaque. */
export interface NativeWriter {
  readonly __brand?: 'NativeWriter';
}

/** A connection's sender thread (native/src/sender.c); opaque. */
export interface NativeSender {
  readonly __brand?: 'NativeSender';
}

/**
 * A sender job's result: error null when every byte went out; else `isIntact` is true only when
 * the pieces could not be read and nothing of the job was sent (copy mode): the stream is whole.
 * Any other failure may have cut a reply short.
 */
export type SendCallback = (error: NodeJS.ErrnoException | null, isIntact: boolean) => void;

/** A connection's data-path thread (native/src/datapath.h and its parts); opaque. */
export interface NativeDatapath {
  readonly __brand?: 'NativeDatapath';
}

/** A data-path event on the JS thread: `bytes` for forward, `value` (errno) for error. */
export type DatapathEventHandler = (kind: number, bytes: Buffer | null, value: number) => void;

/** An open RBD image (native/src/rbd.c); opaque. */
export interface NativeRbdImage {
  readonly __brand?: 'NativeRbdImage';
}

/** An RBD request's result: bytes read (READ) or the length (the others); error on failure. */
export type RbdCallback = (error: NodeJS.ErrnoException | null, bytes: number) => void;

export interface NativeBinding {
  fallocate(fd: number, mode: number, offset: number, length: number): Promise<void>;
  blkDiscard(fd: number, offset: number, length: number): Promise<void>;
  blkZeroout(fd: number, offset: number, length: number): Promise<void>;
  dataRuns(fd: number, offset: number, end: number, runsMax: number): Promise<Float64Array>;
  blkGetSize64(fd: number): number;
  blkGetSectorSize(fd: number): number;
  blkGetDiscardZeroes(fd: number): boolean;
  preadNoWait(
    fd: number, buffer: Buffer, bufferOffset: number, length: number, position: number,
  ): number;
  pwriteBatch(buffer: Buffer, pieces: Float64Array, callback: BatchCallback): void;
  createWriter(): NativeWriter;
  writerSubmit(
    writer: NativeWriter, buffer: Buffer, pieces: Float64Array, callback: BatchCallback,
  ): void;
  closeWriter(writer: NativeWriter): void;
  createSender(socketFd: number, mode: number): NativeSender;
  senderSubmit(
    sender: NativeSender, bytes: Buffer, pieces: Float64Array | null, callback: SendCallback,
  ): void;
  closeSender(sender: NativeSender, abort: boolean): void;
  createDatapath(
    socketFd: number, extents: Float64Array, size: number, options: number,
    blockSizeMin: number, spinMicros: number, dirty: Int32Array[], initial: Buffer | null,
    onEvent: DatapathEventHandler,
  ): NativeDatapath;
  datapathSubmit(
    datapath: NativeDatapath, bytes: Buffer, callback: ((error: Error | null) => void) | null,
  ): void;
  datapathControl(datapath: NativeDatapath, op: number, value: number): number;
  datapathStats(datapath: NativeDatapath): Float64Array;
  datapathRemap(datapath: NativeDatapath, extents: Float64Array, dirty: Int32Array[],
    sequence: number): void;
  /** budget.c: reports what JS holds and the limit; returns what the data-path threads hold */
  budgetSync(jsHeldBytes: number, maxBytes: number): number;
  requestStep(
    bytes: Buffer, size: number, eflags: number, options: number, blockSizeMin: number,
  ): Float64Array;
  setSockOptInt(fd: number, level: number, name: number, value: number): number;
  getSockOptInt(fd: number, level: number, name: number): number;
  /** native/src/ceph.c: the process's one RADOS client (librados loaded at first use) */
  cephConnect(conf: string, id: string, mountTimeoutSeconds: number): Promise<void>;
  cephShutdown(): Promise<void>;
  cephAddrs(): string;
  cephMonCommand(command: string, input: Buffer | null): Promise<{ out: Buffer; outs: string }>;
  /** native/src/ceph-osdmap.c: rados_wait_for_latest_osdmap on that client */
  cephWaitForLatestOsdmap(): Promise<void>;
  /** native/src/rbd.c, rbd-aio.c: RBD images on that client */
  rbdCreate(pool: string, image: string, size: number, features: number): Promise<void>;
  rbdOpen(pool: string, image: string, isReadOnly: boolean,
  ): Promise<{ handle: NativeRbdImage; size: number }>;
  rbdClose(image: NativeRbdImage): Promise<void>;
  rbdAio(
    image: NativeRbdImage, op: number, buffer: Buffer | null, bufferOffset: number,
    length: number, position: number, callback: RbdCallback,
  ): void;
  rbdAllocated(image: NativeRbdImage, offset: number, length: number, runsMax: number,
  ): Promise<Float64Array>;
  constants: {
    FALLOC_FL_KEEP_SIZE: number;
    FALLOC_FL_PUNCH_HOLE: number;
    FALLOC_FL_ZERO_RANGE: number;
    /** the most runs one dataRuns call returns */
    DATA_RUNS_MAX: number;
    SOL_SOCKET: number;
    SO_SNDBUF: number;
    SO_RCVBUF: number;
    SO_SNDBUFFORCE: number;
    SO_RCVLOWAT: number;
    /** the data path's bounds (native/src/datapath.h; a test keeps them equal to LIMITS) */
    DATAPATH_PAYLOAD_MAX?: number;
    DATAPATH_SPARSE_MIN?: number;
    /** the receive buffer's first capacity, and what it shrinks back to when idle */
    DATAPATH_RECV_MIN?: number;
    DATAPATH_LOWAT_MIN?: number;
    DATAPATH_LOWAT_MAX?: number;
    DATAPATH_FORWARD_MAX?: number;
    DATAPATH_SEND_BATCH?: number;
    DATAPATH_SPIN_MAX_US?: number;
    DATAPATH_SPIN_LENGTH_MAX?: number;
    /** connections that may spin at once (half the CPUs, at least one) */
    DATAPATH_SPINNERS_MAX?: number;
    /** datapathStats' counters, then its latency buckets (sys DATAPATH_STATS_COUNTS and
     * LATENCY_BUCKETS) */
    DATAPATH_STATS_COUNTS?: number;
    DATAPATH_LATENCY_BUCKETS?: number;
    /** rbdAio's ops (native/src/rbd.h) */
    RBD_OP_READ?: number;
    RBD_OP_WRITE?: number;
    RBD_OP_FLUSH?: number;
    RBD_OP_DISCARD?: number;
    RBD_OP_WRITE_ZEROES?: number;
  };
}

function loadBinding(): { binding: NativeBinding; isNative: boolean } {
  const override = process.env.XVD_ADDON_PATH;
  if (override !== undefined && override !== '') {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return { binding: require(path.resolve(override)) as NativeBinding, isNative: true };
  }
  const file = path.join(__dirname, '..', '..', 'native', 'build', 'Release', 'xvd_native.node');
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return { binding: require(file) as NativeBinding, isNative: true };
  } catch {
    return { binding: fallbackBinding, isNative: false };
  }
}

const loaded = loadBinding();

/** True when the real addon is loaded (false: every optional method answers EOPNOTSUPP). */
export const isNative: boolean = loaded.isNative;
export const binding: NativeBinding = loaded.binding;
