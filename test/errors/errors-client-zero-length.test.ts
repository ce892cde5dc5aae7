import t from 'tap';
import { checkHealthy, memoryDisk, requestErrno, startServer } from '../helpers/nbd-client';
import { CMD, ERRNO } from '../helpers/wire';

t.test('zero-length READ, WRITE, TRIM, WRITE_ZEROES, CACHE: EINVAL, no disconnect', async (t) => {
  const { connect, port } = await startServer(t, [memoryDisk()]);
  const client = await connect();
  await client.handshake();
  for (const type of [CMD.READ, CMD.WRITE, CMD.TRIM, CMD.WRITE_ZEROES, CMD.CACHE]) {
    t.equal(await requestErrno(client, { type, offset: 4096, length: 0 }), ERRNO.EINVAL,
      `command ${type}`);
  }
  t.equal((await client.readData(0, 512)).length, 512, 'still connected and in sync');
  client.end();
  t.equal(await checkHealthy(port), true);
});
