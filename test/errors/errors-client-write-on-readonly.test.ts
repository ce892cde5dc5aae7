import t from 'tap';
import { checkHealthy, memoryDisk, requestErrno, startServer } from '../helpers/nbd-client';
import { CMD, EFLAG, ERRNO } from '../helpers/wire';

t.test('WRITE, TRIM and WRITE_ZEROES on a read-only export get EPERM; reads work', async (t) => {
  const ro = memoryDisk('ro', 1024 * 1024, true);
  const { connect, port } = await startServer(t, [memoryDisk(), ro]);
  const client = await connect();
  const { eflags } = await client.handshake({ name: 'ro' });
  t.ok(eflags & EFLAG.READ_ONLY, 'READ_ONLY advertised');
  t.equal(eflags & (EFLAG.SEND_TRIM | EFLAG.SEND_WRITE_ZEROES), 0, 'no write-type commands');
  t.equal(await requestErrno(client, { type: CMD.WRITE, offset: 0, payload: Buffer.alloc(512) }),
    ERRNO.EPERM);
  t.equal(await requestErrno(client, { type: CMD.TRIM, offset: 0, length: 512 }), ERRNO.EPERM);
  t.equal(await requestErrno(client, { type: CMD.WRITE_ZEROES, offset: 0, length: 512 }),
    ERRNO.EPERM);
  t.equal(await requestErrno(client, { type: CMD.WRITE, offset: 2 * 1024 * 1024,
    payload: Buffer.alloc(512) }), ERRNO.EPERM, 'EPERM before the range check');
  t.equal(ro.counts.write + ro.counts.trim + ro.counts.zero, 0, 'nothing reached the export');
  t.equal((await client.readData(0, 512)).length, 512);
  client.end();
  t.equal(await checkHealthy(port), true);
});
