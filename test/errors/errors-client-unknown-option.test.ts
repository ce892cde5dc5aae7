import t from 'tap';
import { checkHealthy, memoryDisk, startServer } from '../helpers/nbd-client';
import { OPT, REP, goPayload } from '../helpers/wire';

t.test('unknown option 0x7654321 with a 4-byte payload: ERR_UNSUP, then GO parses', async (t) => {
  const { connect, port } = await startServer(t, [memoryDisk()]);
  const client = await connect();
  await client.start();
  const [reply] = await client.option(0x7654321, Buffer.from('abcd'));
  t.equal(reply?.type, REP.ERR_UNSUP);
  t.equal(reply?.option, 0x7654321, 'the option is echoed');
  const extended = await client.option(OPT.EXTENDED_HEADERS);
  t.equal(extended[0]?.type, REP.ERR_UNSUP, 'extended headers are not offered');
  const go = await client.option(OPT.GO, goPayload('disk'));
  t.equal(go[go.length - 1]?.type, REP.ACK, 'the stream is in sync');
  client.end();
  t.equal(await checkHealthy(port), true);
});
