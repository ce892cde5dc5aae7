import t from 'tap';
import { checkHealthy, memoryDisk, startServer } from '../helpers/nbd-client';
import { OPT, clientFlags, optionFrame } from '../helpers/wire';

t.test('LIST + ABORT then an immediate close (nbd-client -l) leaves the server fine',
  async (t) => {
    const { connect, port, server } = await startServer(t, [memoryDisk()]);
    for (let round = 0; round < 20; round++) {
      const client = await connect();
      client.write(Buffer.concat([clientFlags(3), optionFrame(OPT.LIST),
        optionFrame(OPT.ABORT)]));
      client.end();
    }
    t.equal(await checkHealthy(port), true);
    await new Promise((resolve) => setTimeout(resolve, 200));
    t.ok(server.connectionCount <= 1, 'no connection is left behind');
  });
