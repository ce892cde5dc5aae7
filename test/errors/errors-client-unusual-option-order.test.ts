import t from 'tap';
import { checkHealthy, memoryDisk, startServer } from '../helpers/nbd-client';
import { CMD, ERRNO, INFO, OPT, REP, goPayload, metaPayload } from '../helpers/wire';

t.test('INFO(B) then GO(A), INFO x50, SET_META_CONTEXT(A) then GO(B): each answered right',
  async (t) => {
    const { connect, port } = await startServer(t, [memoryDisk('a', 65536),
      memoryDisk('b', 131072)]);
    const client = await connect();
    await client.start();
    for (let round = 0; round < 50; round++) {
      const replies = await client.option(OPT.INFO, goPayload('b'));
      t.equal(replies[replies.length - 1]?.type, REP.ACK);
    }
    await client.option(OPT.STRUCTURED_REPLY);
    await client.option(OPT.STRUCTURED_REPLY);
    const set = await client.option(OPT.SET_META_CONTEXT, metaPayload('a', ['base:allocation']));
    t.equal(set[0]?.type, REP.META_CONTEXT);
    const go = await client.option(OPT.GO, goPayload('b', [INFO.NAME]));
    t.equal(go[0]?.payload.readBigUInt64BE(2), 131072n, 'bound to b');
    client.request({ type: CMD.BLOCK_STATUS, offset: 0, length: 512, cookie: 1n });
    const chunk = await client.readChunk();
    t.equal(chunk.payload.readUInt32BE(0), ERRNO.EINVAL,
      'contexts negotiated for a do not apply to b');
    client.end();
    t.equal(await checkHealthy(port, 'a'), true);
  });
