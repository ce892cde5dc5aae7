import net from 'node:net';
import t from 'tap';
import { ScriptedClient, checkHealthy, memoryDisk, startServer } from '../helpers/nbd-client';
import { eventually } from '../helpers/waits';
import { OPT, clientFlags, optionFrame } from '../helpers/wire';

const ROUNDS = 20;

t.test('LIST + ABORT then an immediate close or reset (nbd-client -l) leaves no connection',
  async (t) => {
    const { port, server } = await startServer(t, [memoryDisk()]);
    for (let round = 0; round < ROUNDS; round++) {
      const socket = net.connect(port, '127.0.0.1');
      socket.on('error', () => undefined);
      const client = new ScriptedClient(socket, socket);
      await client.readGreeting();
      client.write(Buffer.concat([clientFlags(3), optionFrame(OPT.LIST),
        optionFrame(OPT.ABORT)]));
      if (round % 2 === 0) client.end(); // replies never read
      else socket.resetAndDestroy();
    }
    t.ok(await eventually(() => server.stats.connectionsAccepted === ROUNDS &&
      server.connectionCount === 0), 'every connection was accepted, and every one left');
    t.equal(server.connectionCount, 0, 'no connection is left behind');
    t.equal(await checkHealthy(port), true);
    t.ok(await eventually(() => server.connectionCount === 0), 'nor after a healthy client');
  });
