import t from 'tap';
import { isHealthy, startFileExport, threadServes } from '../helpers/file-export';
import { CMD, requestFrame } from '../helpers/wire';

t.test('data path: a request with a bad magic closes the connection, nothing written',
  async (t) => {
    const fixture = await startFileExport(t);
    for (const transport of ['tcp', 'unix'] as const) {
      const client = await fixture.connect(transport);
      await client.handshake();
      t.ok(await threadServes(fixture, client), `${transport}: the thread holds the connection`);
      const frame = requestFrame({ type: CMD.WRITE, offset: 0, length: 512, magic: 0x25609514 });
      client.write(Buffer.concat([frame, Buffer.alloc(512, 0x66)]));
      t.equal(await client.waitClosed(), true, `${transport}: closed`);
    }
    t.ok(fixture.fileBytes().equals(fixture.image), 'nothing was written');
    t.ok(await isHealthy(fixture));
  });
