import t from 'tap';
import { isHealthy, startFileExport, threadServes } from '../helpers/file-export';
import { requestErrno } from '../helpers/nbd-client';
import { CMD, CMD_FLAG, ERRNO } from '../helpers/wire';

t.test('data path: unknown commands and flags get EINVAL, the thread keeps serving',
  async (t) => {
    const fixture = await startFileExport(t);
    const client = await fixture.connect('unix');
    await client.handshake();
    t.ok(await threadServes(fixture, client), 'the thread holds the connection');
    const cases: [string, number, number][] = [
      ['command 99', 99, 0],
      ['command 8 (RESIZE, not offered)', 8, 0],
      ['READ with flag bit 15', CMD.READ, 1 << 15],
      ['READ with DF but no structured replies', CMD.READ, CMD_FLAG.DF],
      ['READ with NO_HOLE', CMD.READ, CMD_FLAG.NO_HOLE],
      ['BLOCK_STATUS without structured replies', CMD.BLOCK_STATUS, 0],
    ];
    for (const [label, type, flags] of cases) {
      t.equal(await requestErrno(client, { type, flags, offset: 0, length: 512 }),
        ERRNO.EINVAL, label);
    }
    t.equal(await requestErrno(client, { type: CMD.WRITE, flags: 1 << 14, offset: 0,
      payload: Buffer.alloc(512, 3) }), ERRNO.EINVAL, 'WRITE with bit 14 (payload consumed)');
    t.ok(await threadServes(fixture, client, 4096), 'in sync; the thread still serves');
    t.ok(fixture.fileBytes().equals(fixture.image), 'nothing was written');
    client.end();
    t.ok(await isHealthy(fixture));
  });
