/**
 * The test cluster and the process's one RADOS client, on one real single-node cluster.
 * scripts/ceph/up.sh returns with the cluster HEALTH_OK, every PG active+clean, the pool tagged
 * for RBD and every daemon on 127.0.0.1; an RBD image can be created, written and read back at
 * once. The client (src/ceph/client.ts) connects once as CEPH_CONF and the client name say; it
 * tells its own address, as a blocklist names it; it runs monitor commands, a failed one
 * rejecting with the monitor's own message; it refuses to end while an image is open.
 * Blocklisting its own address makes the next RBD write fail with ESHUTDOWN (Ceph's
 * EBLOCKLISTED); a new client (shutdown, connect) has a new address and writes again: the
 * fencing primitive cross-host failover is built on. Last, scripts/ceph/down.sh stops every
 * daemon and removes the directory.
 */
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { openRbdBacking, type RbdBacking } from '../../src/backing/rbd-backing';
import {
  cephAddress, cephMonCommand, configureCeph, connectCeph, shutdownCeph,
} from '../../src/ceph/client';
import { IoError } from '../../src/errors';
import { startCeph, type CephCluster } from '../helpers/ceph';

let cluster: CephCluster;

t.before(async () => {
  cluster = await startCeph(t);
});

function pidsOf(dir: string): number[] {
  return ['mon.a', 'mgr.x', 'osd.0'].map((name) =>
    Number(fs.readFileSync(path.join(dir, `${name}.pid`), 'utf8').trim()));
}

function isAlive(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.split(' ')[2] !== 'Z';
  } catch {
    return false;
  }
}

function writeAt(backing: RbdBacking, data: Buffer, position: number): Promise<number> {
  return new Promise((resolve, reject) => {
    backing.write(data, 0, data.length, position, (error, bytes) => {
      if (error === null) resolve(bytes);
      else reject(error);
    });
  });
}

function readAt(backing: RbdBacking, length: number, position: number): Promise<Buffer> {
  const buffer = Buffer.alloc(length);
  return new Promise((resolve, reject) => {
    backing.read(buffer, 0, length, position, (error, bytes) => {
      if (error === null && bytes === length) resolve(buffer);
      else reject(error ?? new Error(`short read: ${bytes}`));
    });
  });
}

t.test('up.sh gives a healthy loopback cluster', async (t) => {
  t.equal(cluster.env.CEPH_CONF, cluster.conf, 'CEPH_CONF names the printed configuration');
  t.match(fs.readFileSync(cluster.conf, 'utf8'), `keyring = ${cluster.keyring}`,
    'the configuration names the keyring');
  t.equal(fs.statSync(cluster.keyring).mode & 0o777, 0o600, 'the keyring is private');

  const status = JSON.parse(cluster.ceph(['-s', '-f', 'json'])) as {
    health: { status: string };
    pgmap: { num_pgs: number; pgs_by_state: { state_name: string; count: number }[] };
  };
  t.equal(status.health.status, 'HEALTH_OK');
  t.ok(status.pgmap.num_pgs > 0, 'the pool has PGs');
  t.same(status.pgmap.pgs_by_state, [{ state_name: 'active+clean', count: status.pgmap.num_pgs }],
    'every PG is active+clean');
  const apps = JSON.parse(cluster.ceph(['osd', 'pool', 'application', 'get', cluster.pool,
    '-f', 'json'])) as Record<string, unknown>;
  t.ok('rbd' in apps, `pool ${cluster.pool} is tagged for RBD`);

  const mons = JSON.parse(cluster.ceph(['mon', 'dump', '-f', 'json'])) as {
    mons: { public_addrs: { addrvec: { addr: string }[] } }[];
  };
  const osds = JSON.parse(cluster.ceph(['osd', 'dump', '-f', 'json'])) as {
    osds: { public_addrs: { addrvec: { addr: string }[] } }[];
  };
  const addrs = [...mons.mons, ...osds.osds].flatMap((d) => d.public_addrs.addrvec)
    .map((a) => a.addr);
  t.ok(addrs.length >= 2, 'the mon and the OSD have addresses');
  for (const addr of addrs) t.match(addr, /^127\.0\.0\.1:\d+$/, `${addr} is on loopback`);

  cluster.rbd(['create', '--size', '8M', `${cluster.pool}/probe`]);
  const pattern = path.join(cluster.dir, 'pattern');
  fs.writeFileSync(pattern, Buffer.alloc(8 << 20, 0x5a));
  cluster.rbd(['import', '--no-progress', pattern, `${cluster.pool}/copy`]);
  const back = path.join(cluster.dir, 'back');
  cluster.rbd(['export', '--no-progress', `${cluster.pool}/copy`, back]);
  t.ok(fs.readFileSync(back).equals(fs.readFileSync(pattern)), 'an image reads back as written');
  t.match(cluster.rbd(['ls', cluster.pool]), /^copy\nprobe\n$/, 'both images are listed');
});

t.test('connect, address, monitor commands, blocklist and a new client', async (t) => {
  t.teardown(() => shutdownCeph().catch(() => undefined));
  cluster.rbd(['create', '--size', '16M', '--image-feature', 'layering', `${cluster.pool}/c1`]);
  configureCeph({ conf: cluster.conf, id: 'admin' });
  await Promise.all([connectCeph(), connectCeph()]);

  const address = cephAddress();
  t.match(address, /127\.0\.0\.1:\d+\/\d+/, `the client's address: ${address}`);
  const status = await cephMonCommand({ prefix: 'status', format: 'json' });
  const fsid = (JSON.parse(status.out.toString()) as { fsid: string }).fsid;
  t.match(cluster.ceph(['fsid']), fsid, 'a monitor command answers with this cluster');
  const missing = cephMonCommand({ prefix: 'osd pool get', pool: 'nope', var: 'size' });
  await t.rejects(missing, { code: 'ERR_IO_SYSCALL', errno: 'ENOENT', message: /nope/ },
    'a failed command rejects with the monitor\'s text');

  const backing = await openRbdBacking(`rbd:${cluster.pool}/c1`, 'w');
  t.equal(backing.sizeBytes, 16 << 20, 'the image has its size');
  await t.rejects(shutdownCeph(), { code: 'ERR_IO_SYSCALL', errno: 'EBUSY' }, 'no shutdown while an image is open');
  const first = Buffer.alloc(65536, 0x11);
  t.equal(await writeAt(backing, first, 0), first.length, 'a write lands');
  await backing.sync();

  await cephMonCommand({ prefix: 'osd blocklist', blocklistop: 'add', addr: address });
  t.match(cluster.ceph(['osd', 'blocklist', 'ls']), address, 'the monitors list our address');
  const fenced = writeAt(backing, Buffer.alloc(65536, 0x22), 0);
  await t.rejects(fenced, { code: 'ESHUTDOWN' }, 'a blocklisted client\'s write fails');
  const failure = await fenced.catch((error: unknown) => error);
  t.equal(IoError.fromSystem(failure, 'write').errno, 'ESHUTDOWN', 'as ESHUTDOWN');
  await backing.close().catch(() => undefined);
  await shutdownCeph();

  await connectCeph();
  const renewed = cephAddress();
  t.not(renewed, address, `a new client has a new address: ${renewed}`);
  const again = await openRbdBacking(`rbd:${cluster.pool}/c1`, 'w');
  t.same(await readAt(again, 65536, 0), first, 'the fenced write never landed');
  t.equal(await writeAt(again, Buffer.alloc(4096, 0x33), 0), 4096, 'the new client writes');
  await again.sync();
  await again.close();
  await shutdownCeph();
});

t.test('down.sh stops every daemon and removes the directory', async (t) => {
  const pids = pidsOf(cluster.dir);
  t.ok(pids.every(isAlive), 'mon, mgr and OSD run');
  cluster.stop();
  t.notOk(pids.some(isAlive), 'down.sh stopped every daemon');
  t.notOk(fs.existsSync(cluster.dir), 'down.sh removed the directory');
});
