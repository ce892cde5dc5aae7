import t from 'tap';
import { checkHealthy, memoryDisk, requestErrno, startServer } from '../helpers/nbd-client';
import { CMD, ERRNO, INFO } from '../helpers/wire';

t.test('unaligned requests: EINVAL only when the client asked for a minimum block size',
  async (t) => {
    const base = memoryDisk('aligned');
    const aligned = Object.assign(Object.create(base) as typeof base, { blockSizeMin: 512 });
    const { connect, port } = await startServer(t, [memoryDisk(), aligned]);
    const strict = await connect();
    await strict.handshake({ name: 'aligned', infos: [INFO.BLOCK_SIZE] });
    t.equal(await requestErrno(strict, { type: CMD.READ, offset: 1, length: 511 }), ERRNO.EINVAL);
    t.equal(await requestErrno(strict, { type: CMD.WRITE, offset: 512,
      payload: Buffer.alloc(100) }), ERRNO.EINVAL, 'unaligned WRITE (payload consumed)');
    t.equal(await requestErrno(strict, { type: CMD.READ, offset: 512, length: 512 }), 0);
    strict.end();
    const lenient = await connect();
    await lenient.handshake({ name: 'aligned' });
    t.equal(await requestErrno(lenient, { type: CMD.READ, offset: 1, length: 511 }), 0,
      'no block size negotiated: byte granularity (proto.md default minimum 1)');
    lenient.end();
    t.equal(await checkHealthy(port), true);
  });
