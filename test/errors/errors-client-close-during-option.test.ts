import t from 'tap';
import { createServer } from '../../src/nbd/index';
import {
  checkHealthy, connectClient, createFixedProvider, memoryDisk, quietLog,
} from '../helpers/nbd-client';
import { OPT, goPayload } from '../helpers/wire';

t.test('a client that closes while GO waits on a slow provider leaves no export open',
  async (t) => {
    const provider = createFixedProvider([memoryDisk()]);
    const open = provider.open;
    provider.open = async (name, domain) => {
      await new Promise((resolve) => setTimeout(resolve, 200));
      return open(name, domain);
    };
    const server = createServer({ provider, log: quietLog });
    const address = await server.listen({ host: '127.0.0.1', port: 0 });
    t.teardown(() => server.close({ graceMs: 1000 }));
    const port = typeof address === 'string' ? 0 : address.port;
    for (let round = 0; round < 5; round++) {
      const client = await connectClient(port);
      await client.start();
      client.sendOption(OPT.GO, goPayload('disk'));
      client.end();
      t.equal(await client.waitClosed(), true);
    }
    await new Promise((resolve) => setTimeout(resolve, 400));
    t.equal(provider.opens, provider.releases, 'every export opened was released');
    t.equal(await checkHealthy(port), true, 'the server still serves');
  });
