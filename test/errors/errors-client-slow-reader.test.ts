import t from 'tap';
import { checkHealthy, memoryDisk, startServer } from '../helpers/nbd-client';
import { CMD } from '../helpers/wire';

const MiB = 1024 * 1024;

t.test('a client that pipelines 200 MiB of READs and never reads replies is bounded',
  async (t) => {
    const { connect, port, server } = await startServer(t, [memoryDisk('disk', 64 * MiB)]);
    const client = await connect();
    await client.handshake();
    for (let index = 0; index < 200; index++) {
      client.request({ type: CMD.READ, offset: (index % 60) * MiB, length: MiB,
        cookie: BigInt(index) });
    }
    await new Promise((resolve) => setTimeout(resolve, 1500));
    const sent = server.stats.bytesWritten;
    t.ok(sent < 200 * MiB, `server queued ${Math.round(sent / MiB)} MiB, not all 200`);
    t.equal(await checkHealthy(port), true, 'others are served meanwhile');
    let received = 0;
    for (let index = 0; index < 200; index++) {
      const reply = await client.readSimpleReply();
      await client.read(MiB);
      if (reply.errno === 0) received++;
    }
    t.equal(received, 200, 'once the client reads, every reply arrives');
    client.end();
  });
