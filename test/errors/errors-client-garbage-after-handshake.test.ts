import crypto from 'node:crypto';
import t from 'tap';
import { checkHealthy, memoryDisk, startServer } from '../helpers/nbd-client';

t.test('random bytes after GO close the connection without affecting others', async (t) => {
  const { connect, port, server } = await startServer(t, [memoryDisk()]);
  const bystander = await connect();
  await bystander.handshake();
  for (let seed = 0; seed < 5; seed++) {
    const client = await connect();
    await client.handshake();
    client.write(crypto.randomBytes(4096));
    t.equal(await client.waitClosed(), true, `stream ${seed} closed`);
  }
  t.equal((await bystander.readData(0, 4096)).length, 4096, 'an open connection still works');
  bystander.end();
  t.equal(await checkHealthy(port), true);
  t.ok(server.connectionCount <= 2);
});
