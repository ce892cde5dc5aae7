import t from 'tap';
import { checkHealthy, memoryDisk, startServer } from '../helpers/nbd-client';
import { CMD } from '../helpers/wire';

t.test('DISC with 16 requests in flight: all 16 answered, then the connection closes',
  async (t) => {
    const disk = memoryDisk();
    const { connect, port } = await startServer(t, [disk]);
    const client = await connect();
    await client.handshake();
    for (let index = 0; index < 16; index++) {
      client.request({ type: CMD.WRITE, offset: index * 65536, cookie: BigInt(index),
        payload: Buffer.alloc(65536, index + 1) });
    }
    client.request({ type: CMD.DISC });
    client.request({ type: CMD.READ, offset: 0, length: 512, cookie: 99n });
    const cookies = new Set<bigint>();
    for (let index = 0; index < 16; index++) cookies.add((await client.readSimpleReply()).cookie);
    t.equal(cookies.size, 16, 'every request before DISC answered');
    t.equal(await client.waitClosed(), true);
    t.equal(client.bufferedLength, 0, 'nothing answered after DISC');
    t.equal(disk.snapshot()[15 * 65536], 16, 'the last write landed');
    t.equal(await checkHealthy(port), true);
  });
