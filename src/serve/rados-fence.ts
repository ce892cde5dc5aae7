/**
 * serve/rados-fence: the RadosFence of host-lease.ts over the process's RADOS client
 * (ceph/client.ts): `osd blocklist add` for each address of the host taken over (answered once
 * the monitors committed the osdmap that holds it), then rados_wait_for_latest_osdmap, so every
 * op this client sends afterwards carries an epoch at which that host is blocklisted (step 2 of
 * host-lease.ts's takeover).
 *
 * An entry expires after LIMITS.hostBlocklistSeconds (Ceph's default is an hour): a host frozen
 * longer than that with ops queued in librbd would be let back in. A week, and the host's
 * process exits as soon as it runs again (it finds its leases lost), so that cannot happen.
 * The client needs the monitor cap to blocklist: `profile rbd`, or
 * `allow command "osd blocklist"` (README).
 */
import { cephAddress, cephMonCommand, connectCeph } from '../ceph/client';
import { LIMITS } from '../limits';
import { radosWaitForLatestOsdmap } from '../sys/ceph-osdmap';
import type { RadosFence } from './host-lease';

export interface RadosClient extends RadosFence {
  /** the addresses this process's client writes through (rados_getaddrs) */
  addrs(): string[];
}

/** Connects the process's client (to learn its address before writing through it). */
export async function radosClient(): Promise<RadosClient> {
  await connectCeph();
  return {
    addrs: () => [cephAddress()],
    blocklist: async (addrs) => {
      // at once: the monitors commit them in one proposal (about a second each one by one)
      await Promise.all(addrs.map((addr) => cephMonCommand({ prefix: 'osd blocklist',
        blocklistop: 'add', addr,
        // the monitors take `expire` as a float only: a whole number is "bad or missing"
        expire: LIMITS.hostBlocklistSeconds + 0.5 })));
      await radosWaitForLatestOsdmap();
    },
  };
}
