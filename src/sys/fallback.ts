/**
 * sys/fallback: pure-TS stand-in for the native addon (non-Linux hosts, addon not built, unit tests
 * of the layers above). Every optional method answers EOPNOTSUPP so callers fall back to portable
 * methods (writing zeros, no block status).
 */
import fs from 'node:fs';
import type { BatchCallback, NativeBinding } from './binding';

function unsupported(syscall: string): Error {
  const error = new Error(`${syscall}: EOPNOTSUPP: not supported without the native addon`);
  Object.assign(error, { code: 'EOPNOTSUPP', errno: 95, syscall });
  return error;
}

/** Ceph needs the addon (it loads librados and librbd): ENOSYS, as where they are missing. */
function noCeph(syscall: string): Error {
  const error = new Error(`${syscall}: ENOSYS: Ceph needs the native addon`);
  Object.assign(error, { code: 'ENOSYS', errno: 38, syscall });
  return error;
}

export const fallbackBinding: NativeBinding = {
  fallocate: () => Promise.reject(unsupported('fallocate')),
  blkDiscard: () => Promise.reject(unsupported('ioctl(BLKDISCARD)')),
  blkZeroout: () => Promise.reject(unsupported('ioctl(BLKZEROOUT)')),
  dataRuns: () => Promise.reject(unsupported('lseek(SEEK_DATA)')),
  blkGetSize64: () => {
    throw unsupported('ioctl(BLKGETSIZE64)');
  },
  blkGetSectorSize: () => {
    throw unsupported('ioctl(BLKSSZGET)');
  },
  blkGetDiscardZeroes: () => {
    throw unsupported('ioctl(BLKDISCARDZEROES)');
  },
  preadNoWait: () => -95, // -EOPNOTSUPP: callers use fs.read
  pwriteBatch,
  createWriter: () => ({}),
  writerSubmit: (_writer, buffer, pieces, callback) => pwriteBatch(buffer, pieces, callback),
  closeWriter: () => undefined,
  createSender: () => {
    throw unsupported('createSender');
  },
  senderSubmit: () => {
    throw unsupported('senderSubmit');
  },
  closeSender: () => undefined,
  createDatapath: () => {
    throw unsupported('createDatapath');
  },
  datapathSubmit: () => {
    throw unsupported('datapathSubmit');
  },
  datapathControl: () => 0,
  datapathStats: () => new Float64Array(12 + 24),
  datapathRemap: () => {
    throw unsupported('datapathRemap');
  },
  budgetSync: () => 0,
  requestStep: () => {
    throw unsupported('requestStep');
  },
  setSockOptInt: () => -95, // -EOPNOTSUPP: the socket keeps its defaults
  getSockOptInt: () => -95,
  cephConnect: () => Promise.reject(noCeph('rados_connect')),
  cephShutdown: () => Promise.resolve(),
  cephAddrs: () => {
    throw noCeph('rados_getaddrs');
  },
  cephMonCommand: () => Promise.reject(noCeph('rados_mon_command')),
  cephWaitForLatestOsdmap: () => Promise.reject(noCeph('rados_wait_for_latest_osdmap')),
  rbdCreate: () => Promise.reject(noCeph('rbd_create2')),
  rbdOpen: () => Promise.reject(noCeph('rbd_open')),
  rbdClose: () => Promise.resolve(),
  rbdAio: () => {
    throw noCeph('rbd_aio');
  },
  rbdAllocated: () => Promise.reject(noCeph('rbd_diff_iterate2')),
  constants: {
    FALLOC_FL_KEEP_SIZE: 1,
    FALLOC_FL_PUNCH_HOLE: 2,
    FALLOC_FL_ZERO_RANGE: 16,
    DATA_RUNS_MAX: 1 << 20,
    SOL_SOCKET: 1,
    SO_SNDBUF: 7,
    SO_RCVBUF: 8,
    SO_SNDBUFFORCE: 32,
    SO_RCVLOWAT: 18,
  },
};

/** pwriteBatch with fs.write, piece after piece (same contract as the addon's). */
function pwriteBatch(buffer: Buffer, pieces: Float64Array, callback: BatchCallback): void {
  const copy = Float64Array.from(pieces);
  const count = copy.length / 4;
  const writePiece = (index: number, done: number): void => {
    if (index === count) {
      callback(null, -1);
      return;
    }
    const at = 4 * index;
    const [fd, offset, length, position] = [copy[at]!, copy[at + 1]!, copy[at + 2]!, copy[at + 3]!];
    fs.write(fd, buffer, offset + done, length - done, position + done, (error, bytes) => {
      if (error !== null) callback(error, index);
      else if (bytes === 0) callback(null, index);
      else if (done + bytes < length) writePiece(index, done + bytes);
      else writePiece(index + 1, 0);
    });
  };
  writePiece(0, 0);
}
