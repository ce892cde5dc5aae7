import t from 'tap';
import { checkHealthy, memoryDisk, startServer } from '../helpers/nbd-client';
import { whenStable } from '../helpers/stable';
import { eventually } from '../helpers/waits';
import { CMD, requestFrame } from '../helpers/wire';

const MiB = 1024 * 1024;
const limits = { budgetBytesMax: 8 * MiB, budgetFloorBytes: 256 * 1024, stallTimeoutMs: 500 };

t.test('a client that holds replies and never reads them is ended at the deadline', async (t) => {
  const { connect, port, server } = await startServer(t, [memoryDisk('disk', 64 * MiB)],
    { limits });
  const client = await connect();
  await client.handshake();
  client.pause();
  for (let index = 0; index < 64; index++) {
    client.request({ type: CMD.READ, offset: index * MiB, length: MiB, cookie: BigInt(index) });
  }
  const state = (): object => {
    const { connectionsStalled, connectionsOpen, budgetHeldBytes } = server.stats;
    return { connectionsStalled, connectionsOpen, budgetHeldBytes };
  };
  const expected = { connectionsStalled: 1, connectionsOpen: 0, budgetHeldBytes: 0 };
  await eventually(() => JSON.stringify(state()) === JSON.stringify(expected), 20_000);
  t.same(state(), expected, 'ended, and what it held came back');
  t.ok(server.stats.budgetPeakBytes >= limits.budgetBytesMax, 'it had held the whole budget');
  t.equal(await checkHealthy(port), true, 'others are served');
});

t.test('stalled WRITE payloads hold at most the budget, then are ended', async (t) => {
  const { connect, port, server } = await startServer(t, [memoryDisk('disk', 64 * MiB)],
    { limits: { ...limits, stallTimeoutMs: 60_000 } });
  const clients = [];
  for (let index = 0; index < 8; index++) {
    const client = await connect();
    await client.handshake();
    // a 4 MiB WRITE whose payload never comes after its first 64 KiB
    client.write(requestFrame({ type: CMD.WRITE, offset: 0, length: 4 * MiB }));
    client.write(Buffer.alloc(64 * 1024, 0xee));
    clients.push(client);
  }
  const held = await whenStable(() => {
    const { budgetHeldBytes, budgetWaiting } = server.stats;
    return { budgetHeldBytes, budgetWaiting };
  });
  t.ok(held.value.budgetHeldBytes <= limits.budgetBytesMax,
    `at most the budget is reserved: ${held.value.budgetHeldBytes}`);
  t.ok(held.value.budgetWaiting >= 6, `the rest wait: ${held.value.budgetWaiting}`);
  t.equal(await checkHealthy(port), true, 'a client of small requests is served meanwhile');
  for (const client of clients) client.end(); // half-close: the payloads never complete
  const after = await whenStable(() => server.stats.connectionsOpen);
  t.equal(after.value, 0, 'every attacker is gone');
  t.equal(server.stats.budgetHeldBytes, 0, 'and what they held came back');
  t.equal(server.stats.connectionFaults, 0);
});
