import t from 'tap';
import { checkHealthy, memoryDisk, requestErrno, startServer } from '../helpers/nbd-client';
import { CMD, ERRNO } from '../helpers/wire';

const SIZE = 1024 * 1024;

t.test('range arithmetic: reads EINVAL, writes ENOSPC, never aliased onto the export',
  async (t) => {
    const disk = memoryDisk('disk', SIZE);
    const { connect, port } = await startServer(t, [disk]);
    const client = await connect();
    await client.handshake();
    const offsets: [string, bigint][] = [
      ['offset + length wraps 2^64', 0xffffffffffffff00n],
      ['offset 2^53 + 1', 2n ** 53n + 1n],
      ['offset 2^32 + 512', 2n ** 32n + 512n],
      ['offset = size', BigInt(SIZE)],
    ];
    for (const [label, offset] of offsets) {
      t.equal(await requestErrno(client, { type: CMD.READ, offset, length: 512 }), ERRNO.EINVAL,
        `READ ${label}`);
      t.equal(await requestErrno(client,
        { type: CMD.WRITE, offset, payload: Buffer.alloc(512, 9) }),
        ERRNO.ENOSPC, `WRITE ${label}`);
      t.equal(await requestErrno(client, { type: CMD.WRITE_ZEROES, offset, length: 512 }),
        ERRNO.ENOSPC, `WRITE_ZEROES ${label}`);
      t.equal(await requestErrno(client, { type: CMD.TRIM, offset, length: 512 }), ERRNO.EINVAL,
        `TRIM ${label}`);
    }
    t.equal(await requestErrno(client, { type: CMD.READ, offset: SIZE - 512, length: 1024 }),
      ERRNO.EINVAL, 'READ crossing the end');
    t.equal(disk.counts.write, 0, 'no write reached the export');
    t.ok(disk.snapshot().every((byte) => byte === 0), 'no byte changed (no aliasing)');
    client.end();
    t.equal(await checkHealthy(port), true);
  });
