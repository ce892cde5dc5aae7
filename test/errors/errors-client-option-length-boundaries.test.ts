import t from 'tap';
import { checkHealthy, memoryDisk, startServer } from '../helpers/nbd-client';
import { OPT, REP, goPayload, u16, u32 } from '../helpers/wire';

t.test('GO and INFO with inconsistent lengths get ERR_INVALID and the stream stays in sync',
  async (t) => {
    const { connect, port } = await startServer(t, [memoryDisk()]);
    const client = await connect();
    await client.start();
    const cases: [string, Buffer][] = [
      ['empty', Buffer.alloc(0)],
      ['5 bytes', Buffer.alloc(5)],
      ['name length optlen-5', Buffer.concat([u32(2), Buffer.from('di')])],
      ['name length 0xffffffff', Buffer.concat([u32(0xffffffff), u16(0)])],
      ['info count too high', Buffer.concat([u32(4), Buffer.from('disk'), u16(3), u16(0)])],
      ['trailing byte', Buffer.concat([goPayload('disk'), Buffer.alloc(1)])],
    ];
    for (const option of [OPT.INFO, OPT.GO]) {
      for (const [label, payload] of cases) {
        const replies = await client.option(option, payload);
        t.equal(replies[0]?.type, REP.ERR_INVALID, `${option}: ${label}`);
      }
    }
    for (const option of [OPT.STARTTLS, OPT.LIST, OPT.STRUCTURED_REPLY]) {
      const [reply] = await client.option(option, Buffer.alloc(3));
      t.ok((reply?.type ?? 0) >= 0x80000000, `${option}: a payload where none is allowed`);
    }
    const go = await client.option(OPT.GO, goPayload('disk'));
    t.equal(go[go.length - 1]?.type, REP.ACK, 'in sync after every malformed option');
    client.end();
    t.equal(await checkHealthy(port), true);
  });
