/**
 * sys/ceph-osdmap: the typed wrapper of the addon's cephWaitForLatestOsdmap
 * (native/src/ceph-osdmap.c): the process's RADOS client (sys/ceph.ts) fetches the latest
 * osdmap, so every op it sends from then on carries that epoch (serve/rados-fence.ts).
 */
import { IoError } from '../errors';
import { binding } from './binding';

/** rados_wait_for_latest_osdmap; rejects with IoError (ENOTCONN when not connected). */
export async function radosWaitForLatestOsdmap(): Promise<void> {
  try {
    await binding.cephWaitForLatestOsdmap();
  } catch (cause) {
    const info = cause as { code?: unknown; message?: unknown };
    const errno = typeof info.code === 'string' ? info.code : 'EIO';
    const message = typeof info.message === 'string' ? info.message
      : `rados_wait_for_latest_osdmap: ${errno}`;
    throw new IoError(errno, 'rados_wait_for_latest_osdmap', message, { cause });
  }
}
