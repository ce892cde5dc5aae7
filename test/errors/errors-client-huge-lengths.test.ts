import t from 'tap';
import { checkHealthy, memoryDisk, requestErrno, startServer } from '../helpers/nbd-client';
import { CMD, ERRNO } from '../helpers/wire';

t.test('BLOCK_STATUS, TRIM and WRITE_ZEROES with length 0xffffffff: clean errors', async (t) => {
  const { connect, port } = await startServer(t, [memoryDisk('disk', 8 * 1024 * 1024)]);
  const client = await connect();
  await client.handshake({ structured: true, meta: true });
  for (const offset of [0, 4096, 8 * 1024 * 1024 - 512]) {
    t.equal(await requestErrno(client, { type: CMD.BLOCK_STATUS, offset, length: 0xffffffff }),
      ERRNO.EINVAL, `BLOCK_STATUS at ${offset}`);
    t.equal(await requestErrno(client, { type: CMD.TRIM, offset, length: 0xffffffff }),
      ERRNO.EINVAL, `TRIM at ${offset}`);
    t.equal(await requestErrno(client, { type: CMD.WRITE_ZEROES, offset, length: 0xffffffff }),
      ERRNO.ENOSPC, `WRITE_ZEROES at ${offset}`);
  }
  client.request({ type: CMD.BLOCK_STATUS, offset: 0, length: 8 * 1024 * 1024, cookie: 9n });
  const chunk = await client.readChunk();
  let covered = 0;
  for (let at = 4; at < chunk.payload.length; at += 8) covered += chunk.payload.readUInt32BE(at);
  t.ok(covered > 0 && covered <= 8 * 1024 * 1024, 'runs stay inside the request');
  client.end();
  t.equal(await checkHealthy(port), true);
});
