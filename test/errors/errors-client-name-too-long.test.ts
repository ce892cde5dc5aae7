import t from 'tap';
import { checkHealthy, memoryDisk, startServer } from '../helpers/nbd-client';
import { INFO, OPT, REP, goPayload, optionFrame } from '../helpers/wire';

const NAME_4096 = 'n'.repeat(4096);

t.test('a 4096-byte export name works; 4097 bytes, NUL and bad UTF-8 are refused', async (t) => {
  const { connect, port } = await startServer(t, [memoryDisk(), memoryDisk(NAME_4096, 65536)]);
  const client = await connect();
  await client.start();
  const ok = await client.option(OPT.INFO, goPayload(NAME_4096, [INFO.NAME]));
  t.equal(ok[ok.length - 1]?.type, REP.ACK, '4096 bytes work');
  t.equal(ok[1]?.payload.length, 2 + 4096);
  for (const [label, name] of [['4097 bytes', Buffer.from('n'.repeat(4097))],
    ['NUL', Buffer.from('di\0sk')], ['bad UTF-8', Buffer.from([0x64, 0xff, 0xfe])]] as const) {
    const replies = await client.option(OPT.GO, goPayload(name));
    t.equal(replies[0]?.type, REP.ERR_INVALID, label);
  }
  for (const length of [257, 1025, 3000]) {
    const replies = await client.option(OPT.GO, goPayload('x'.repeat(length)));
    t.equal(replies[0]?.type, REP.ERR_UNKNOWN, `${length}-byte unknown name`);
    t.ok((replies[0]?.payload.length ?? 0) <= 256, 'error text is short');
  }
  client.end();
  const viaExportName = await connect();
  await viaExportName.start();
  viaExportName.write(optionFrame(OPT.EXPORT_NAME, Buffer.from('n'.repeat(4097))));
  t.equal(await viaExportName.waitClosed(), true, 'EXPORT_NAME with 4097 bytes disconnects');
  const fits = await connect();
  await fits.start();
  fits.write(optionFrame(OPT.EXPORT_NAME, Buffer.from(NAME_4096)));
  t.equal((await fits.read(10)).readBigUInt64BE(0), 65536n, 'EXPORT_NAME with 4096 bytes works');
  fits.end();
  t.equal(await checkHealthy(port), true);
});
