import t from 'tap';
import { checkHealthy, memoryDisk, startServer } from '../helpers/nbd-client';
import { CMD } from '../helpers/wire';

t.test('cookies 0, 2^64-1 and duplicates in flight are echoed byte for byte', async (t) => {
  const { connect, port } = await startServer(t, [memoryDisk()]);
  const client = await connect();
  await client.handshake();
  const cookies = [0n, 0xffffffffffffffffn, 0x8000000000000001n, 7n, 7n, 7n];
  for (const cookie of cookies) client.request({ type: CMD.READ, offset: 0, length: 512, cookie });
  const seen: bigint[] = [];
  for (let index = 0; index < cookies.length; index++) {
    const reply = await client.readSimpleReply();
    t.equal(reply.errno, 0);
    seen.push(reply.cookie);
    await client.read(512);
  }
  t.same([...seen].sort(), [...cookies].sort());
  client.end();
  t.equal(await checkHealthy(port), true);
});
