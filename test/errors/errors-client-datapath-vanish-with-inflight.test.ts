import t from 'tap';
import { isHealthy, startFileExport, threadServes } from '../helpers/file-export';
import { eventually } from '../helpers/waits';
import { CMD } from '../helpers/wire';

const MiB = 1024 * 1024;

t.test('data path: a client that resets with READs and a WRITE in flight leaves no connection',
  async (t) => {
    const fixture = await startFileExport(t, { size: 16 * MiB });
    for (let round = 0; round < 4; round++) {
      const transport = round % 2 === 0 ? 'tcp' : 'unix';
      const { client, socket } = await fixture.connectWithSocket(transport);
      await client.handshake();
      t.ok(await threadServes(fixture, client), `round ${round}: the thread holds it`);
      for (let index = 0; index < 8; index++) {
        client.request({ type: CMD.READ, offset: index * MiB, length: MiB, cookie: BigInt(index) });
      }
      const write = Buffer.alloc(2 * MiB, 0x42);
      client.request({ type: CMD.WRITE, offset: 0, cookie: 9n, payload: write });
      // replies unread, the WRITE's payload cut short: a reset (unix: a close with unread data)
      if (transport === 'tcp') socket.resetAndDestroy();
      else socket.destroy();
    }
    t.ok(await eventually(() => fixture.server.connectionCount === 0),
      'every connection left the registry (its thread ended)');
    t.ok(await isHealthy(fixture));
  });
