import t from 'tap';
import { checkHealthy, memoryDisk, startServer } from '../helpers/nbd-client';

for (const flags of [1 << 5, 0x80000003]) {
  t.test(`client flags 0x${flags.toString(16)} with an unknown bit: the server disconnects`,
    async (t) => {
      const { connect, port, server } = await startServer(t, [memoryDisk()]);
      const client = await connect();
      await client.start(flags);
      t.equal(await client.waitClosed(), true, 'disconnected');
      t.equal(await checkHealthy(port), true, 'another client is served');
      t.ok(server.connectionCount <= 1);
    });
}
