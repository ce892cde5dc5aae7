/**
 * `xvd serve` keeps serving while its catalog writes wait: another process holds the catalog's
 * write lock (BEGIN IMMEDIATE, as a CLI command inside a transaction does) for LOCK_HOLD_MS
 * while the server heartbeats, or while a client opens a second export; meanwhile a client on an
 * export already open keeps getting its READs answered within LATENCY_MAX_MS. The open that
 * needs a lease is answered only after the lock holder committed (never before its lease is).
 */
import path from 'node:path';
import t, { type Test } from 'tap';
import { startServe, type RunningServe } from '../../src/serve/index';
import { connectUnix, quietLog } from '../helpers/nbd-client';
import { shortTempDir } from '../helpers/process';
import {
  DISK_BYTES, captureLog, holdWriteLock, makeServedCatalog, readLatencies, serversAndLeases,
} from '../helpers/serve-catalog';

const LOCK_HOLD_MS = 2000;
/** Far below LOCK_HOLD_MS, far above a READ of 4 KiB on a busy 2-core machine. */
const LATENCY_MAX_MS = 500;
const READS_MAX = 20_000;

async function serve(t: Test, catalogPath: string, heartbeatMs: number, log = quietLog):
  Promise<{ running: RunningServe; socket: string }> {
  const socket = path.join(shortTempDir(t), 'nbd.sock');
  const running = await startServe({ catalogPath, tcp: [], sockets: [socket], isStdio: false,
    tls: { mode: 'off' }, log, heartbeatMs });
  t.teardown(() => running.stop());
  return { running, socket };
}

function assertPromptly(t: Test, latencies: number[]): void {
  const worst = Math.max(...latencies);
  t.ok(latencies.length >= 5, `reads went on while the lock was held (${latencies.length})`);
  t.ok(worst < LATENCY_MAX_MS, `every READ answered within ${LATENCY_MAX_MS} ms (worst `
    + `${worst.toFixed(1)} ms)`);
}

t.test('a heartbeat waiting for the catalog write lock does not stall READs', async (t) => {
  const catalogPath = await makeServedCatalog(t.testdir(), 1);
  const { log, lines } = captureLog();
  const { running, socket } = await serve(t, catalogPath, 100, log);
  const client = await connectUnix(socket);
  const { size } = await client.handshake({ name: '1/xvda' });
  t.equal(size, BigInt(DISK_BYTES));
  await readLatencies(client, new Promise((resolve) => setTimeout(resolve, 300)), 100);
  const lock = holdWriteLock(catalogPath, LOCK_HOLD_MS);
  await lock.locked;
  const skippedBefore = lines.filter((line) => line.msg.startsWith('heartbeat skipped')).length;
  assertPromptly(t, await readLatencies(client, lock.released, READS_MAX));
  const skipped = lines.filter((line) => line.msg.startsWith('heartbeat skipped')).length;
  t.ok(skipped > skippedBefore, `the heartbeat waited for the lock: ${skipped - skippedBefore} `
    + 'ticks skipped meanwhile, not queued');
  t.notOk(lines.some((line) => line.msg === 'heartbeat failed'), 'and then committed');
  client.end();
  await running.stop();
  t.same(serversAndLeases(catalogPath), { servers: [], leases: [] },
    'stop released every lease and unregistered');
});

t.test('an open waiting for the catalog write lock does not stall READs on another export, '
  + 'and is answered after the lock holder commits', async (t) => {
  const catalogPath = await makeServedCatalog(t.testdir(), 2);
  const { running, socket } = await serve(t, catalogPath, 60_000);
  const reader = await connectUnix(socket);
  await reader.handshake({ name: '1/xvda' });
  const lock = holdWriteLock(catalogPath, LOCK_HOLD_MS);
  await lock.locked;
  const opener = await connectUnix(socket);
  const opened = opener.handshake({ name: '1/xvdb' }).then(() => Date.now());
  assertPromptly(t, await readLatencies(reader, lock.released, READS_MAX));
  const [openedAt, releasedAt] = await Promise.all([opened, lock.released]);
  t.ok(openedAt >= releasedAt, 'the open was answered after the lock holder committed '
    + `(${openedAt - releasedAt} ms after)`);
  t.equal((await opener.readData(0, 4096)).length, 4096, 'the new export serves');
  const held = serversAndLeases(catalogPath);
  t.same(held.leases.map((lease) => lease.vd_id), [1, 2], 'both VDs are leased while open');
  reader.end();
  opener.end();
  await running.stop();
  t.same(serversAndLeases(catalogPath), { servers: [], leases: [] },
    'stop released every lease and unregistered');
});
