import t from 'tap';
import { isHealthy, startFileExport, threadServes } from '../helpers/file-export';
import { requestErrno } from '../helpers/nbd-client';
import { CMD, ERRNO, INFO } from '../helpers/wire';

t.test('data path: unaligned requests get EINVAL when the client asked for a block size',
  async (t) => {
    const fixture = await startFileExport(t, { blockSizeMin: 512 });
    const client = await fixture.connect();
    await client.handshake({ infos: [INFO.BLOCK_SIZE] });
    t.ok(await threadServes(fixture, client), 'the thread holds the connection');
    t.equal(await requestErrno(client, { type: CMD.READ, offset: 1, length: 511 }), ERRNO.EINVAL);
    t.equal(await requestErrno(client, { type: CMD.READ, offset: 512, length: 100 }),
      ERRNO.EINVAL, 'unaligned length');
    t.equal(await requestErrno(client, { type: CMD.WRITE, offset: 512,
      payload: Buffer.alloc(100, 7) }), ERRNO.EINVAL, 'unaligned WRITE (payload consumed)');
    t.ok(await threadServes(fixture, client, 8192), 'in sync; the thread still serves');
    t.ok(fixture.fileBytes().equals(fixture.image), 'nothing was written');
    const lenient = await fixture.connect('unix');
    await lenient.handshake();
    t.equal(await requestErrno(lenient, { type: CMD.READ, offset: 1, length: 511 }), 0,
      'no block size asked: byte granularity (proto.md default minimum 1)');
    t.equal((await lenient.read(511)).equals(fixture.image.subarray(1, 512)), true);
    client.end();
    lenient.end();
    t.ok(await isHealthy(fixture));
  });
