/**
 * The process's one RADOS client (src/ceph/client.ts) on a real cluster: it connects once as
 * CEPH_CONF and the client name say; it tells its own address, as a blocklist names it; it runs
 * monitor commands, a failed one rejecting with the monitor's own message; it refuses to end
 * while an image is open. Blocklisting its own address makes the next RBD write fail with
 * ESHUTDOWN (Ceph's EBLOCKLISTED); a new client (shutdown, connect) has a new address and
 * writes again. That is the fencing primitive cross-host failover is built on.
 */
import t from 'tap';
import { openRbdBacking, type RbdBacking } from '../../src/backing/rbd-backing';
import {
  cephAddress, cephMonCommand, configureCeph, connectCeph, shutdownCeph,
} from '../../src/ceph/client';
import { IoError } from '../../src/errors';
import { startCeph } from '../helpers/ceph';

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

t.test('connect, address, monitor commands, blocklist and a new client', async (t) => {
  const cluster = await startCeph(t);
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
