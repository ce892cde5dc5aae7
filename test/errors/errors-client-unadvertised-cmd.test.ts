import t from 'tap';
import type { Export } from '../../src/engine/export';
import { checkHealthy, memoryDisk, requestErrno, startServer } from '../helpers/nbd-client';
import { CMD, CMD_FLAG, EFLAG, ERRNO } from '../helpers/wire';

t.test('TRIM, WRITE_ZEROES, FLUSH and FUA not advertised get EINVAL', async (t) => {
  const base = memoryDisk('plain');
  const plain: Export = Object.assign(Object.create(base) as Export, {
    canTrim: false, canZero: false, canFastZero: false, canFlush: false, canFua: false,
    canCache: false,
  });
  const { connect, port } = await startServer(t, [memoryDisk(), plain]);
  const client = await connect();
  const { eflags } = await client.handshake({ name: 'plain' });
  t.equal(eflags & (EFLAG.SEND_TRIM | EFLAG.SEND_WRITE_ZEROES | EFLAG.SEND_FLUSH |
    EFLAG.SEND_FUA | EFLAG.SEND_CACHE), 0, 'none of them advertised');
  for (const [label, type, flags] of [['TRIM', CMD.TRIM, 0], ['WRITE_ZEROES', CMD.WRITE_ZEROES, 0],
    ['FUA READ', CMD.READ, CMD_FLAG.FUA]] as const) {
    t.equal(await requestErrno(client, { type, flags, offset: 0, length: 512 }), ERRNO.EINVAL,
      label);
  }
  t.equal(await requestErrno(client, { type: CMD.FLUSH }), ERRNO.EINVAL, 'FLUSH');
  t.equal(await requestErrno(client, { type: CMD.CACHE, offset: 0, length: 512 }), 0,
    'CACHE unadvertised is tolerated (a no-op)');
  client.end();
  t.equal(await checkHealthy(port), true);
});
