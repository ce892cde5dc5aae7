import net from 'node:net';
import t from 'tap';
import { createServer } from '../../src/nbd/index';
import {
  ScriptedClient, checkHealthy, createFixedProvider, memoryDisk, quietLog,
} from '../helpers/nbd-client';
import { OPT, goPayload } from '../helpers/wire';
import { eventually } from '../helpers/waits';

const ROUNDS = 6;

t.test('a client that leaves (FIN or reset) while GO waits on the provider leaves no export open',
  async (t) => {
    const provider = createFixedProvider([memoryDisk()]);
    const open = provider.open;
    let started = 0;
    let openGate: (() => void) | null = null;
    provider.open = async (name, domain) => {
      started += 1;
      if (started <= ROUNDS) await new Promise<void>((resolve) => (openGate = resolve));
      return open(name, domain);
    };
    const server = createServer({ provider, log: quietLog });
    const address = await server.listen({ host: '127.0.0.1', port: 0 });
    t.teardown(() => server.close({ graceMs: 1000 }));
    const port = typeof address === 'string' ? 0 : address.port;
    for (let round = 0; round < ROUNDS; round++) {
      const socket = net.connect(port, '127.0.0.1');
      socket.on('error', () => undefined);
      const client = new ScriptedClient(socket, socket);
      await client.start();
      client.sendOption(OPT.GO, goPayload('disk'));
      t.ok(await eventually(() => started === round + 1), `round ${round}: GO is opening`);
      // the attack: gone before the open finished, with a FIN or with a reset
      if (round % 2 === 0) client.end();
      else socket.resetAndDestroy();
      (openGate as (() => void) | null)?.(); // set by the open above (TS cannot see it)
      t.ok(await eventually(() => provider.opens === round + 1 && server.connectionCount === 0),
        `round ${round}: the open finished and the connection left the registry`);
      t.equal(provider.releases, provider.opens, `round ${round}: its export was released`);
    }
    t.equal(provider.opens, ROUNDS, 'every GO opened the export after its client had left');
    t.equal(await checkHealthy(port), true, 'the server still serves');
  });
