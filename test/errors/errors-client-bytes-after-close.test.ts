import t from 'tap';
import { checkHealthy, connectUnix, memoryDisk, startServer, type ScriptedClient }
  from '../helpers/nbd-client';
import { REP, optionFrame } from '../helpers/wire';

// The issue-15 reproducer: two 64 KiB unknown options grow the receive arena, a bad option
// header closes the connection, and bytes that keep arriving after that made the socket's
// onread buffer() switch arenas on a disposed receiver ("arena released twice"): the process
// died. Now the connection is closed once and the server and its other clients carry on.
async function attack(client: ScriptedClient): Promise<number[]> {
  await client.start(3);
  client.write(optionFrame(0x1234, Buffer.alloc(65_536)));
  client.write(optionFrame(0x1235, Buffer.alloc(65_536)));
  client.write(Buffer.from('IHAVEOPU', 'latin1'));
  const types = [(await client.readOptionReply()).type, (await client.readOptionReply()).type];
  client.write(Buffer.from('0000000300000000', 'hex'));
  client.write(Buffer.alloc(200 * 1024));
  await client.waitClosed();
  return types;
}

for (const transport of ['tcp', 'unix'] as const) {
  t.test(`bytes after a bad option header do not kill the server (${transport})`, async (t) => {
    const { connect, port, server, socketPath } = await startServer(t, [memoryDisk()]);
    for (let round = 0; round < 5; round++) {
      const client = transport === 'tcp' ? await connect() : await connectUnix(socketPath);
      t.same(await attack(client), [REP.ERR_UNSUP, REP.ERR_UNSUP], 'both options refused');
      t.equal(client.isEnded, true, 'the violating connection is closed');
    }
    t.equal(await checkHealthy(port), true, 'others are served');
    t.equal(server.stats.connectionFaults, 0, 'no fault was contained: none happened');
  });
}
