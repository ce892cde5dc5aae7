/**
 * serve/heartbeat.ts with a host (serve/host-lease.ts): heartbeats that commit keep the leases;
 * none committed for a TTL, a row gone (another server took over) or a catalog I/O error (a
 * blocklisted client) lose them, and onLost is called once with the reason; without a host a
 * failed heartbeat only logs.
 */
import t from 'tap';
import type { Catalog } from '../../src/catalog';
import { XvdError } from '../../src/errors';
import { Heartbeat } from '../../src/serve/heartbeat';
import { HostLeases } from '../../src/serve/host-lease';
import type { CatalogWriter } from '../../src/serve/catalog-writer';
import { captureLog } from '../helpers/serve-catalog';

const TTL_MS = 200;

function writerOf(beat: () => Promise<void>): CatalogWriter {
  const never = (): Promise<never> => Promise.reject(new Error('not used'));
  return { heartbeat: beat, acquireLease: never, releaseLease: never, takeOverServer: never,
    reserveCowExtents: never, commitCowRemaps: never };
}

function setup(beat: () => Promise<void>, isHost = true): { heartbeat: Heartbeat;
  lost: string[] } {
  const { log } = captureLog();
  const writer = writerOf(beat);
  const hostLeases = isHost ? new HostLeases({ host: 'alpha', leaseTtlMs: TTL_MS, writer, log,
    catalog: {} as Catalog, rados: null }) : null;
  const lost: string[] = [];
  const heartbeat = new Heartbeat({ writer, log, hostLeases, leasedVds: () => 1,
    onLost: (reason) => lost.push(reason) });
  return { heartbeat, lost };
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

t.test('committed heartbeats keep the leases; a TTL without one loses them', async (t) => {
  let isFailing = false;
  const { heartbeat, lost } = setup(async () => {
    if (isFailing) throw new Error('SQLITE_BUSY: database is locked');
  });
  for (let index = 0; index < 6; index++) {
    heartbeat.tick(1);
    await heartbeat.running;
    await sleep(TTL_MS / 4);
  }
  t.same(lost, [], 'beats every TTL/4 that commit keep the leases');
  isFailing = true;
  for (let index = 0; index < 6; index++) {
    heartbeat.tick(1);
    await heartbeat.running;
    await sleep(TTL_MS / 4);
  }
  t.equal(lost.length, 1, 'lost once');
  t.match(lost[0], /no heartbeat committed for 0\.\d s \(TTL 0\.2 s\)/);
});

t.test('a row gone or a catalog I/O error loses the leases at once', async (t) => {
  const gone = setup(() => Promise.reject(new XvdError('ERR_CATALOG_SERVER_UNKNOWN', 'gone')));
  gone.heartbeat.tick(1);
  await gone.heartbeat.running;
  t.match(gone.lost, [/another server took over/]);
  const ioError = Object.assign(new Error('disk I/O error'), { code: 'SQLITE_IOERR_LOCK' });
  const blocklisted = setup(() => Promise.reject(ioError));
  blocklisted.heartbeat.tick(1);
  await blocklisted.heartbeat.running;
  t.match(blocklisted.lost, [/SQLITE_IOERR_LOCK \(a blocklisted client\)/]);
});

t.test('without a host a failed heartbeat loses nothing', async (t) => {
  const { heartbeat, lost } = setup(() => Promise.reject(
    new XvdError('ERR_CATALOG_SERVER_UNKNOWN', 'gone')), false);
  heartbeat.tick(1);
  await heartbeat.running;
  await sleep(TTL_MS + 50);
  heartbeat.tick(1);
  await heartbeat.running;
  t.same(lost, []);
  t.equal(heartbeat.counts.ticks, 2);
});
