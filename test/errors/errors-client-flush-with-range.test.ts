import t from 'tap';
import { checkHealthy, memoryDisk, requestErrno, startServer } from '../helpers/nbd-client';
import { CMD, ERRNO } from '../helpers/wire';

t.test('FLUSH with a non-zero offset or length gets EINVAL', async (t) => {
  const { connect, port } = await startServer(t, [memoryDisk()]);
  const client = await connect();
  await client.handshake();
  t.equal(await requestErrno(client, { type: CMD.FLUSH, offset: 512 }), ERRNO.EINVAL);
  t.equal(await requestErrno(client, { type: CMD.FLUSH, length: 512 }), ERRNO.EINVAL);
  t.equal(await requestErrno(client, { type: CMD.FLUSH }), 0);
  client.end();
  t.equal(await checkHealthy(port), true);
});
