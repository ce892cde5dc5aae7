import t from 'tap';
import { checkHealthy, memoryDisk, requestErrno, startServer } from '../helpers/nbd-client';
import { CMD, CMD_FLAG, ERRNO } from '../helpers/wire';

t.test('unknown commands and flags not valid for a command get EINVAL, connection kept',
  async (t) => {
    const { connect, port } = await startServer(t, [memoryDisk()]);
    const client = await connect();
    await client.handshake();
    const cases: [string, number, number][] = [
      ['command 99', 99, 0],
      ['command 8 (RESIZE, not offered)', 8, 0],
      ['READ with flag bit 15', CMD.READ, 1 << 15],
      ['READ with DF but no structured replies', CMD.READ, CMD_FLAG.DF],
      ['READ with REQ_ONE', CMD.READ, CMD_FLAG.REQ_ONE],
      ['READ with NO_HOLE', CMD.READ, CMD_FLAG.NO_HOLE],
      ['TRIM with FAST_ZERO', CMD.TRIM, CMD_FLAG.FAST_ZERO],
      ['BLOCK_STATUS without structured replies', CMD.BLOCK_STATUS, 0],
    ];
    for (const [label, type, flags] of cases) {
      t.equal(await requestErrno(client, { type, flags, offset: 0, length: 512 }),
        ERRNO.EINVAL, label);
    }
    t.equal(await requestErrno(client, { type: CMD.WRITE, flags: CMD_FLAG.NO_HOLE, offset: 0,
      payload: Buffer.alloc(512) }), ERRNO.EINVAL, 'WRITE with NO_HOLE (payload consumed)');
    t.equal(await requestErrno(client, { type: CMD.READ, flags: CMD_FLAG.FUA, offset: 0,
      length: 512 }), 0, 'FUA on READ is accepted');
    await client.read(512);
    t.equal((await client.readData(0, 512)).length, 512, 'still in sync');
    client.end();
    t.equal(await checkHealthy(port), true);
  });
