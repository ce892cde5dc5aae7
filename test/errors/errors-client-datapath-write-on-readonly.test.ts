import t from 'tap';
import { isHealthy, startFileExport, threadServes } from '../helpers/file-export';
import { requestErrno } from '../helpers/nbd-client';
import { CMD, EFLAG, ERRNO } from '../helpers/wire';

t.test('data path: WRITEs on a read-only export get EPERM and change nothing', async (t) => {
  const fixture = await startFileExport(t, { mode: 'r' });
  const client = await fixture.connect('unix');
  const { eflags } = await client.handshake();
  t.ok(eflags & EFLAG.READ_ONLY, 'READ_ONLY advertised');
  t.ok(await threadServes(fixture, client), 'the thread holds the connection');
  for (const [label, offset, length] of [['4 KiB', 0, 4096], ['1 MiB', 4096, 1024 * 1024],
    ['past the end: EPERM first', fixture.size, 512]] as const) {
    t.equal(await requestErrno(client, { type: CMD.WRITE, offset,
      payload: Buffer.alloc(length, 0x77) }), ERRNO.EPERM, `WRITE ${label}`);
  }
  t.equal(await requestErrno(client, { type: CMD.WRITE_ZEROES, offset: 0, length: 512 }),
    ERRNO.EPERM, 'WRITE_ZEROES');
  t.ok(await threadServes(fixture, client, 8192), 'in sync; the thread still serves');
  t.ok(fixture.fileBytes().equals(fixture.image), 'no byte of the file changed');
  client.end();
  t.ok(await isHealthy(fixture));
});
