import t from 'tap';
import { isHealthy, startFileExport, threadServes } from '../helpers/file-export';
import { CMD } from '../helpers/wire';

const KiB = 1024;

t.test('data path: DISC with 16 WRITEs in flight: all answered and landed, nothing after',
  async (t) => {
    const fixture = await startFileExport(t);
    const client = await fixture.connect();
    await client.handshake();
    t.ok(await threadServes(fixture, client), 'the thread holds the connection');
    for (let index = 0; index < 16; index++) {
      client.request({ type: CMD.WRITE, offset: index * 64 * KiB, cookie: BigInt(index),
        payload: Buffer.alloc(64 * KiB, index + 1) });
    }
    client.request({ type: CMD.DISC });
    client.request({ type: CMD.READ, offset: 0, length: 512, cookie: 99n });
    const cookies = new Set<bigint>();
    for (let index = 0; index < 16; index++) {
      const reply = await client.readSimpleReply();
      if (reply.errno === 0) cookies.add(reply.cookie);
    }
    t.equal(cookies.size, 16, 'every WRITE before DISC succeeded');
    t.equal(await client.waitClosed(), true);
    t.equal(client.bufferedLength, 0, 'nothing answered after DISC');
    const file = fixture.fileBytes();
    t.ok(file.subarray(15 * 64 * KiB, 16 * 64 * KiB).every((byte) => byte === 16), 'landed');
    t.ok(await isHealthy(fixture));
  });
