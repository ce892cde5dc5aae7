import crypto from 'node:crypto';
import t from 'tap';
import { checkHealthy, memoryDisk, startServer } from '../helpers/nbd-client';
import { CMD, clientFlags, optionFrame, requestFrame } from '../helpers/wire';

t.test('a wrong IHAVEOPT magic closes the connection; others are unaffected', async (t) => {
  const { connect, port } = await startServer(t, [memoryDisk()]);
  const client = await connect();
  await client.start();
  const frame = optionFrame(3);
  frame[0] = 0x58;
  client.write(frame);
  t.equal(await client.waitClosed(), true);
  t.equal(await checkHealthy(port), true);
});

t.test('random bytes after the client flags close the connection cleanly', async (t) => {
  const { connect, port } = await startServer(t, [memoryDisk()]);
  for (let seed = 0; seed < 5; seed++) {
    const client = await connect();
    await client.readGreeting();
    client.write(Buffer.concat([clientFlags(3), crypto.randomBytes(64)]));
    t.equal(await client.waitClosed(), true, `stream ${seed} closed`);
  }
  t.equal(await checkHealthy(port), true);
});

t.test('a request with a bad magic closes the connection', async (t) => {
  const { connect, port } = await startServer(t, [memoryDisk()]);
  const client = await connect();
  await client.handshake();
  client.write(requestFrame({ type: CMD.READ, length: 512, magic: 0x25609514 }));
  t.equal(await client.waitClosed(), true);
  t.equal(await checkHealthy(port), true);
});
