import t from 'tap';
import { isHealthy, startFileExport, threadServes } from '../helpers/file-export';
import { requestErrno } from '../helpers/nbd-client';
import { CMD, ERRNO } from '../helpers/wire';

const SIZE = 1024 * 1024;

t.test('data path: out-of-range READs get EINVAL, WRITEs ENOSPC, nothing aliased onto the file',
  async (t) => {
    const fixture = await startFileExport(t, { size: SIZE });
    const client = await fixture.connect();
    await client.handshake();
    t.ok(await threadServes(fixture, client), 'the thread holds the connection');
    const offsets: [string, bigint][] = [
      ['offset + length wraps 2^64', 0xffffffffffffff00n],
      ['offset 2^53 + 1', 2n ** 53n + 1n],
      ['offset 2^32 + 512', 2n ** 32n + 512n],
      ['offset = size', BigInt(SIZE)],
      ['crossing the end', BigInt(SIZE - 512)],
    ];
    for (const [label, offset] of offsets) {
      t.equal(await requestErrno(client, { type: CMD.READ, offset, length: 1024 }), ERRNO.EINVAL,
        `READ ${label}`);
      t.equal(await requestErrno(client, { type: CMD.WRITE, offset,
        payload: Buffer.alloc(1024, 9) }), ERRNO.ENOSPC, `WRITE ${label}`);
    }
    t.ok(await threadServes(fixture, client, SIZE - 4096), 'in sync; the thread still serves');
    t.ok(fixture.fileBytes().equals(fixture.image), 'no byte of the file changed');
    client.end();
    t.ok(await isHealthy(fixture));
  });
