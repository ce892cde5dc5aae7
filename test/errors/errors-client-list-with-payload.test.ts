import t from 'tap';
import { checkHealthy, memoryDisk, startServer } from '../helpers/nbd-client';
import { OPT, REP } from '../helpers/wire';

t.test('LIST with a payload gets ERR_INVALID each time and the connection stays usable',
  async (t) => {
    const { connect, port } = await startServer(t, [memoryDisk()]);
    const client = await connect();
    await client.start();
    for (let round = 0; round < 2; round++) {
      const replies = await client.option(OPT.LIST, Buffer.from('payload'));
      t.same(replies.map((reply) => reply.type), [REP.ERR_INVALID]);
    }
    const listed = await client.option(OPT.LIST);
    t.same(listed.map((reply) => reply.type), [REP.SERVER, REP.ACK]);
    client.end();
    t.equal(await checkHealthy(port), true);
  });
