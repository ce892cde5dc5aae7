/**
 * sys/ceph: typed wrappers of the addon's Ceph calls (native/src/ceph.c, rbd.c, rbd-aio.c):
 * the process's one RADOS client and RBD images on it. librados and librbd are loaded by the
 * addon at the first call, so none of this costs anything, or needs Ceph installed, until used;
 * where they are missing every call fails with ENOSYS and the loader's message.
 * Arguments are checked here (asserts); failures become IoError with the errno name (ESHUTDOWN
 * is Ceph's EBLOCKLISTED: the monitors blocklisted this client) and the message Ceph gave.
 * src/ceph/client.ts decides when to connect; src/backing/rbd-backing.ts uses the images.
 */
import assert from 'node:assert';
import { IoError } from '../errors';
import { binding, type NativeRbdImage, type RbdCallback } from './binding';

export type { NativeRbdImage, RbdCallback } from './binding';

/** Ceph's own message when it gave one ("rbd_open: ENOENT: No such file or directory"). */
function cephError(cause: unknown, syscall: string): IoError {
  const info = cause as { code?: unknown; syscall?: unknown; message?: unknown };
  const errno = typeof info.code === 'string' ? info.code : 'EIO';
  const sys = typeof info.syscall === 'string' ? info.syscall : syscall;
  const message = typeof info.message === 'string' ? info.message : `${sys}: ${errno}`;
  return new IoError(errno, sys, message, { cause });
}

async function call<T>(syscall: string, run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (cause) {
    throw cephError(cause, syscall);
  }
}

/** rados_create, conf, CEPH_ARGS, rados_connect; at once when connected. */
export function radosConnect(conf: string, id: string, mountTimeoutSeconds: number,
): Promise<void> {
  assert(conf.length > 0 && id.length > 0);
  assert(Number.isInteger(mountTimeoutSeconds) && mountTimeoutSeconds > 0);
  return call('rados_connect', () => binding.cephConnect(conf, id, mountTimeoutSeconds));
}

/** rados_shutdown (no image may be open); a no-op when not connected. */
export function radosShutdown(): Promise<void> {
  return call('rados_shutdown', () => binding.cephShutdown());
}

/** The client's addresses as a blocklist names them (rados_getaddrs). */
export function radosAddrs(): string {
  try {
    return binding.cephAddrs();
  } catch (cause) {
    throw cephError(cause, 'rados_getaddrs');
  }
}

/** One monitor command (rados_mon_command); `outs` is the monitor's status text. */
export function radosMonCommand(command: string, input: Buffer | null,
): Promise<{ out: Buffer; outs: string }> {
  return call('rados_mon_command', () => binding.cephMonCommand(command, input));
}

/** rbd_create2 of a thin image of `size` bytes with the feature bits given. */
export function rbdCreate(pool: string, image: string, size: number, features: number,
): Promise<void> {
  assert(Number.isSafeInteger(size) && size > 0);
  assert(Number.isSafeInteger(features) && features >= 0);
  return call('rbd_create2', () => binding.rbdCreate(pool, image, size, features));
}

/** Opens an image (read-only: no write ever reaches it); its handle and size. */
export function rbdOpen(pool: string, image: string, isReadOnly: boolean,
): Promise<{ handle: NativeRbdImage; size: number }> {
  return call('rbd_open', () => binding.rbdOpen(pool, image, isReadOnly));
}

/** rbd_close, once nothing is in flight on the image. */
export function rbdClose(image: NativeRbdImage): Promise<void> {
  return call('rbd_close', () => binding.rbdClose(image));
}

const C = binding.constants;
export const RBD_OP = {
  READ: C.RBD_OP_READ ?? 1,
  WRITE: C.RBD_OP_WRITE ?? 2,
  FLUSH: C.RBD_OP_FLUSH ?? 3,
  DISCARD: C.RBD_OP_DISCARD ?? 4,
  WRITE_ZEROES: C.RBD_OP_WRITE_ZEROES ?? 5,
} as const;

/** One asynchronous librbd call; `callback(error, bytes)` runs later on the JS thread. */
export function rbdAio(
  image: NativeRbdImage, op: number, buffer: Buffer | null, bufferOffset: number,
  length: number, position: number, callback: RbdCallback,
): void {
  assert(Number.isSafeInteger(position) && position >= 0);
  assert(Number.isSafeInteger(length) && length >= 0);
  binding.rbdAio(image, op, buffer, bufferOffset, length, position, callback);
}

/** Runs of [offset, offset+length) that may hold data, as [start, end) pairs, at most runsMax. */
export async function rbdAllocated(image: NativeRbdImage, offset: number, length: number,
  runsMax: number): Promise<{ start: number; end: number }[]> {
  assert(Number.isSafeInteger(offset) && offset >= 0);
  assert(Number.isSafeInteger(length) && length > 0);
  const pairs = await call('rbd_diff_iterate2',
    () => binding.rbdAllocated(image, offset, length, runsMax));
  const runs: { start: number; end: number }[] = [];
  for (let i = 0; i + 1 < pairs.length; i += 2) {
    runs.push({ start: pairs[i] as number, end: pairs[i + 1] as number });
  }
  return runs;
}
