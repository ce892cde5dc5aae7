import t from 'tap';
import { isHealthy, readsRight, startFileExport, threadServes } from '../helpers/file-export';
import { requestErrno } from '../helpers/nbd-client';
import { CMD, ERRNO, requestFrame } from '../helpers/wire';

const MiB = 1024 * 1024;

t.test('data path: a 33 MiB WRITE is read, discarded and refused with EINVAL; in sync after',
  async (t) => {
    const fixture = await startFileExport(t);
    const client = await fixture.connect();
    await client.handshake();
    t.ok(await threadServes(fixture, client), 'the thread holds the connection');
    t.equal(await requestErrno(client, { type: CMD.WRITE, offset: 0, cookie: 1n,
      payload: Buffer.alloc(33 * MiB, 0xee) }), ERRNO.EINVAL);
    t.equal(await requestErrno(client, { type: CMD.READ, offset: 0, length: 32 * MiB + 1 }),
      ERRNO.EINVAL, 'a READ over 32 MiB is EINVAL');
    // the thread gave the stream to the JS side with the WRITE (datapath.c: "raw")
    t.ok(await readsRight(fixture, client), 'the stream stays in sync');
    t.ok(fixture.fileBytes().equals(fixture.image), 'nothing was written');
    client.end();
    t.ok(await isHealthy(fixture));
  });

t.test('data path: a WRITE header announcing more than the discard cap disconnects', async (t) => {
  const fixture = await startFileExport(t);
  const client = await fixture.connect();
  await client.handshake();
  t.ok(await threadServes(fixture, client), 'the thread holds the connection');
  client.write(requestFrame({ type: CMD.WRITE, offset: 0, length: 0xffffffff }));
  t.equal(await client.waitClosed(), true);
  t.ok(await isHealthy(fixture));
});
