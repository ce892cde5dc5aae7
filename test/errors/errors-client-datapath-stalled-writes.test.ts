import t from 'tap';
import { isHealthy, startFileExport, threadServes } from '../helpers/file-export';
import { whenStable } from '../helpers/stable';
import { CMD, requestFrame } from '../helpers/wire';

const MiB = 1024 * 1024;

// Six clients each send an 8 MiB WRITE whose payload stops 1 KiB short. The data-path thread
// needs an 8 MiB receive buffer for each; the server's budget (20 MiB here) lets at most two
// grow, the others read nothing more until bytes come back. Once each payload completes, every
// WRITE lands.
t.test('data path: stalled WRITE payloads grow receive buffers only within the budget',
  async (t) => {
    const budgetBytesMax = 20 * MiB;
    const fixture = await startFileExport(t, { size: 64 * MiB,
      limits: { budgetBytesMax, stallTimeoutMs: 120_000 } });
    const clients = [];
    for (let index = 0; index < 6; index++) {
      const client = await fixture.connect();
      await client.handshake();
      t.ok(await threadServes(fixture, client), `the thread holds connection ${index}`);
      client.write(requestFrame({ type: CMD.WRITE, offset: index * 8 * MiB, length: 8 * MiB,
        cookie: BigInt(index) }));
      client.write(Buffer.alloc(8 * MiB - 1024, index + 1));
      clients.push(client);
    }
    const held = await whenStable(() => fixture.server.stats.budgetThreadsBytes);
    t.ok(held.value >= 8 * MiB - 256 * 1024, `threads hold payloads: ${held.value}`);
    t.ok(held.value <= budgetBytesMax, `never more than the budget: ${held.value}`);
    t.ok(await isHealthy(fixture), 'a client of small requests is served meanwhile');
    for (const [index, client] of clients.entries()) {
      client.write(Buffer.alloc(1024, index + 1));
    }
    for (const [index, client] of clients.entries()) {
      const reply = await client.readSimpleReply();
      t.same(reply, { errno: 0, cookie: BigInt(index) }, `WRITE ${index} landed`);
    }
    const bytes = fixture.fileBytes();
    for (let index = 0; index < 6; index++) {
      const written = bytes.subarray(index * 8 * MiB, (index + 1) * 8 * MiB);
      t.ok(written.every((byte) => byte === index + 1), `the file holds WRITE ${index}`);
    }
    t.ok(fixture.server.stats.budgetPeakBytes <= budgetBytesMax + 6 * MiB,
      `peak ${fixture.server.stats.budgetPeakBytes}`);
    for (const client of clients) client.end();
  });
