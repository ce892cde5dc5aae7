/**
 * catalog/leases.ts with hosts: a lease of a server registered with a host is live while its
 * heartbeat is fresh and excludes other servers (ERR_LEASE_HELD naming the host, live or
 * expired); an expired one still keeps its VD's extents from the allocator until
 * takeOverServer removes the server, which it does only once the lease expired and only if no
 * heartbeat came since the one the caller saw; registerServer never reaps a host's row; check
 * notes an expired host; servers without a host keep sharing and the pid rule. An import whose
 * process ran on another host is never taken for abandoned here; one of this host whose process
 * is gone is.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import t, { type Test } from 'tap';
import { identityOfFile, openCatalog, type Catalog } from '../../src/catalog';
import { XvdError } from '../../src/errors';

const EXTENT = 4 * 1024 * 1024;
const TTL_MS = 15_000;

function setup(t: Test): { catalog: Catalog; clock: { ms: number }; vdId: number;
  file: string } {
  const dir = t.testdir();
  const clock = { ms: 1_000_000 };
  const catalog = openCatalog(path.join(dir, 'catalog.sqlite'), { now: () => clock.ms });
  t.teardown(() => catalog.close());
  const file = path.join(dir, 'pool.img');
  fs.writeFileSync(file, '');
  fs.truncateSync(file, 4 * EXTENT);
  const st = fs.statSync(file);
  catalog.formatMember({ path: file, kind: 'file', sizeBytes: 4 * EXTENT, extentSize: EXTENT,
    identity: identityOfFile(st.dev, st.ino) });
  const vdId = catalog.createVd({ size: 2 * EXTENT, zero: false }).id;
  return { catalog, clock, vdId, file: path.join(dir, 'catalog.sqlite') };
}

function codeOf(fn: () => unknown): string | null {
  try {
    fn();
    return null;
  } catch (error) {
    return error instanceof XvdError ? error.code : String(error);
  }
}

const hostOf = (host: string): { host: string; leaseTtlMs: number; radosAddrs: string[] } =>
  ({ host, leaseTtlMs: TTL_MS, radosAddrs: [`127.0.0.1:0/${host.length}`] });

t.test('a live host lease excludes another server and names its host', async (t) => {
  const { catalog, clock, vdId } = setup(t);
  const alpha = catalog.registerServer(null, hostOf('alpha'));
  const beta = catalog.registerServer(null, hostOf('beta'));
  catalog.acquireLease(alpha, vdId);
  t.throws(() => catalog.acquireLease(beta, vdId), { code: 'ERR_LEASE_HELD',
    message: /host alpha .*lease is live/ });
  clock.ms += TTL_MS - 1;
  t.equal(codeOf(() => catalog.acquireLease(beta, vdId)), 'ERR_LEASE_HELD', 'live up to the TTL');
  t.equal(catalog.leaseHolders(vdId)[0]?.isAlive, true);
  clock.ms += 1;
  t.throws(() => catalog.acquireLease(beta, vdId), { code: 'ERR_LEASE_HELD',
    message: /expired .* not fenced yet/ }, 'expired, it still excludes until taken over');
  const holder = catalog.leaseHolders(vdId)[0];
  t.equal(holder?.isAlive, false);
  t.same(holder?.radosAddrs, ['127.0.0.1:0/5'], 'its RADOS clients are recorded');
  t.same(catalog.liveLeases().map((l) => l.serverId), [alpha], 'and it still holds the extents');
});

t.test('takeOverServer removes only an expired server that did not beat since', async (t) => {
  const { catalog, clock, vdId } = setup(t);
  const alpha = catalog.registerServer(null, hostOf('alpha'));
  const beta = catalog.registerServer(null, hostOf('beta'));
  catalog.acquireLease(alpha, vdId);
  const seen = catalog.leaseHolders(vdId)[0]?.heartbeatAtMs ?? 0;
  t.equal(catalog.takeOverServer(alpha, seen), false, 'not while its lease is live');
  clock.ms += TTL_MS;
  catalog.heartbeat(alpha);
  t.equal(catalog.takeOverServer(alpha, seen), false, 'not after a heartbeat since');
  clock.ms += TTL_MS;
  const now = catalog.leaseHolders(vdId)[0]?.heartbeatAtMs ?? 0;
  t.equal(catalog.takeOverServer(alpha, now), true, 'expired and unchanged: removed');
  t.same(catalog.leaseHolders(vdId), [], 'with its leases');
  t.same(catalog.acquireLease(beta, vdId).serverId, beta, 'beta leases the VD');
  t.equal(codeOf(() => catalog.heartbeat(alpha)), 'ERR_CATALOG_SERVER_UNKNOWN',
    'alpha finds its row gone');
});

t.test('hosts are never reaped by registerServer; check notes an expired one', async (t) => {
  const { catalog, clock, vdId } = setup(t);
  const alpha = catalog.registerServer(null, hostOf('alpha'));
  catalog.acquireLease(alpha, vdId);
  clock.ms += 2 * TTL_MS;
  catalog.registerServer(null, hostOf('beta'));
  t.equal(catalog.listServers().length, 2, 'alpha is still registered');
  const report = catalog.checkReport();
  t.same(report.faults, []);
  t.match(report.notes.join('\n'), /host alpha: no heartbeat for 30\.0 s .*VD 1 hold until/);
});

t.test('servers without a host still share a VD and follow the pid rule', async (t) => {
  const { catalog, vdId } = setup(t);
  const one = catalog.registerServer();
  const two = catalog.registerServer();
  catalog.acquireLease(one, vdId);
  t.same(catalog.acquireLease(two, vdId).serverId, two, 'no exclusion without hosts');
  t.equal(catalog.listServers()[0]?.host, null);
  t.equal(catalog.listServers()[0]?.isAlive, true, 'this process runs');
});

t.test('an import of another host is never taken for abandoned here', async (t) => {
  const { catalog, file } = setup(t);
  const vdId = catalog.beginImport({ size: EXTENT }).id;
  t.equal(catalog.isImportOwned(vdId), true, 'this process owns its import');
  const db = new Database(file);
  t.teardown(() => db.close());
  const rehost = (host: string): void => {
    db.prepare('UPDATE vd_imports SET pid = 999999999, host = ? WHERE vd_id = ?').run(host, vdId);
  };
  rehost('elsewhere');
  t.same(catalog.cleanAbandonedImports(), [], 'a process on another host is not judged from here');
  t.match(catalog.checkReport().notes.join('\n'), new RegExp(`VD ${vdId}: being imported`));
  rehost(os.hostname());
  t.same(catalog.cleanAbandonedImports(), [vdId], 'one of this host whose process is gone is');
});
