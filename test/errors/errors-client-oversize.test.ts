import t from 'tap';
import { checkHealthy, memoryDisk, requestErrno, startServer } from '../helpers/nbd-client';
import { CMD, ERRNO, requestFrame } from '../helpers/wire';

const MiB = 1024 * 1024;

t.test('a 33 MiB WRITE is read, discarded and refused with EINVAL; the stream stays in sync',
  async (t) => {
    const disk = memoryDisk('disk', 64 * MiB);
    const { connect, port } = await startServer(t, [disk]);
    const client = await connect();
    await client.handshake();
    const errno = await requestErrno(client, { type: CMD.WRITE, offset: 0, cookie: 1n,
      payload: Buffer.alloc(33 * MiB, 0xee) });
    t.equal(errno, ERRNO.EINVAL);
    t.equal(disk.counts.write, 0, 'nothing was written');
    t.equal((await client.readData(0, 4096)).every((byte) => byte === 0), true, 'in sync');
    t.equal(await requestErrno(client, { type: CMD.READ, offset: 0, length: 32 * MiB + 1 }),
      ERRNO.EINVAL, 'a READ over 32 MiB is EINVAL');
    client.end();
    t.equal(await checkHealthy(port), true);
  });

t.test('a WRITE header announcing more than the discard cap disconnects at once', async (t) => {
  const { connect, port } = await startServer(t, [memoryDisk('disk', 64 * MiB)]);
  const client = await connect();
  await client.handshake();
  client.write(requestFrame({ type: CMD.WRITE, offset: 0, length: 0xffffffff }));
  t.equal(await client.waitClosed(), true);
  t.equal(await checkHealthy(port), true);
});
