/**
 * scripts/ceph/up.sh and down.sh: the single-node cluster the RBD tests run on. up.sh returns
 * with the cluster HEALTH_OK, every PG active+clean, the pool tagged for RBD and every daemon on
 * 127.0.0.1; an RBD image can be created, written and read back at once; down.sh stops every
 * daemon it started and removes the directory.
 */
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { startCeph } from '../helpers/ceph';

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

t.test('up.sh gives a healthy loopback cluster; down.sh leaves nothing', async (t) => {
  const cluster = await startCeph(t);
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

  const pids = pidsOf(cluster.dir);
  t.ok(pids.every(isAlive), 'mon, mgr and OSD run');
  cluster.stop();
  t.notOk(pids.some(isAlive), 'down.sh stopped every daemon');
  t.notOk(fs.existsSync(cluster.dir), 'down.sh removed the directory');
});
