import t from 'tap';
import { createServer } from '../../src/nbd/index';
import { createFixedProvider, memoryDisk, quietLog, streamClient } from '../helpers/nbd-client';
import { CMD, INFO, OPT, clientFlags, goPayload, optionFrame, requestFrame } from '../helpers/wire';

t.test('a client that closes at every byte offset of a session leaks no connection',
  async (t) => {
    const provider = createFixedProvider([memoryDisk('disk', 1024 * 1024)]);
    const server = createServer({ provider, log: quietLog });
    const session = Buffer.concat([clientFlags(3), optionFrame(OPT.STRUCTURED_REPLY),
      optionFrame(OPT.GO, goPayload('disk', [INFO.BLOCK_SIZE])),
      requestFrame({ type: CMD.WRITE, offset: 0, payload: Buffer.alloc(64, 1) }),
      requestFrame({ type: CMD.READ, offset: 0, length: 64 })]);
    for (let cut = 0; cut <= session.length; cut++) {
      const { client, done } = streamClient(server);
      client.write(session.subarray(0, cut));
      await new Promise((resolve) => setImmediate(resolve));
      client.end();
      await done;
    }
    t.equal(server.connectionCount, 0, 'every connection was forgotten');
    t.equal(provider.opens, provider.releases, 'every opened export was released');
  });
