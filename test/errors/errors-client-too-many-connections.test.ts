import t from 'tap';
import { checkHealthy, memoryDisk, startServer } from '../helpers/nbd-client';

t.test('connections over the cap are closed at accept; freed slots are reused', async (t) => {
  const { connect, port, server } = await startServer(t, [memoryDisk()],
    { limits: { connectionsMax: 2 } });
  const first = await connect();
  const second = await connect();
  await first.readGreeting();
  await second.readGreeting();
  const third = await connect();
  t.equal(await third.waitClosed(), true, 'the third connection is refused');
  t.equal(server.stats.connectionsRefused, 1);
  first.end();
  second.end();
  await new Promise((resolve) => setTimeout(resolve, 100));
  t.equal(await checkHealthy(port), true, 'a new client gets in after others left');
});
