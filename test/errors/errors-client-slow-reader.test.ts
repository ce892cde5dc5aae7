import t from 'tap';
import { checkHealthy, memoryDisk, startServer } from '../helpers/nbd-client';
import { whenStable } from '../helpers/stable';
import { CMD } from '../helpers/wire';

const MiB = 1024 * 1024;

// Decided by what the server holds once it has settled, not by how long we waited: the client
// pipelines 200 MiB of READs and takes no reply; the server must stop at its memory budget.
t.test('a client that pipelines 200 MiB of READs and never reads replies is bounded',
  async (t) => {
    const budgetBytesMax = 16 * MiB;
    const budgetFloorBytes = 256 * 1024;
    const { connect, port, server } = await startServer(t, [memoryDisk('disk', 64 * MiB)],
      { limits: { budgetBytesMax, budgetFloorBytes } });
    const client = await connect();
    await client.handshake();
    client.pause(); // takes no reply from here on
    for (let index = 0; index < 200; index++) {
      client.request({ type: CMD.READ, offset: (index % 60) * MiB, length: MiB,
        cookie: BigInt(index) });
    }
    const settled = await whenStable(() => {
      const { budgetHeldBytes, budgetWaiting, bytesWritten, requests } = server.stats;
      return { budgetHeldBytes, budgetWaiting, bytesWritten, requests };
    });
    t.ok(settled.isStable, 'the server settled');
    const { budgetHeldBytes, budgetWaiting, requests } = settled.value;
    t.ok(budgetHeldBytes > budgetFloorBytes, `it holds replies: ${budgetHeldBytes} bytes`);
    t.ok(budgetHeldBytes <= budgetBytesMax + MiB,
      `it holds at most the budget and one request: ${budgetHeldBytes} bytes`);
    // reading stopped at the budget (the next READ parked) or, just before it, because the
    // socket's write buffer is full: either way the server holds no more
    t.ok(budgetWaiting <= 1, `at most the next READ waits: ${budgetWaiting}`);
    t.ok(requests < 200, `it stopped reading requests: ${requests} of 200`);
    t.equal(await checkHealthy(port), true, 'others are served meanwhile');
    client.resume();
    let received = 0;
    for (let index = 0; index < 200; index++) {
      const reply = await client.readSimpleReply();
      await client.read(MiB);
      if (reply.errno === 0) received++;
    }
    t.equal(received, 200, 'once the client reads, every reply arrives');
    client.end();
    const after = await whenStable(() => server.stats.budgetHeldBytes);
    t.equal(after.value, 0, 'everything held was given back');
    t.equal(server.stats.connectionFaults, 0);
  });
