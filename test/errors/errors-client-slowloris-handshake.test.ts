import t from 'tap';
import { checkHealthy, memoryDisk, startServer } from '../helpers/nbd-client';
import { OPT, clientFlags, goPayload, optionFrame } from '../helpers/wire';

t.test('a client dripping bytes is cut at the handshake deadline; others get in', async (t) => {
  const { connect, port } = await startServer(t, [memoryDisk()],
    { limits: { handshakeTimeoutMs: 500, connectionsMax: 4 } });
  const drips = await Promise.all([connect(), connect(), connect()]);
  const bytes = Buffer.concat([clientFlags(3), optionFrame(OPT.GO, goPayload('disk'))]);
  for (const [index, client] of drips.entries()) {
    client.write(bytes.subarray(index, index + 1));
  }
  t.equal(await checkHealthy(port), true, 'a fourth client is served meanwhile');
  const closed = await Promise.all(drips.map((client) => client.waitClosed(5000)));
  t.same(closed, [true, true, true], 'all slow clients cut by the deadline');
  t.equal(await checkHealthy(port), true);
});
