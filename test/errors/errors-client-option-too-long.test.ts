import t from 'tap';
import { LIMITS } from '../../src/limits';
import { checkHealthy, memoryDisk, startServer } from '../helpers/nbd-client';
import { IHAVEOPT, OPT, u32 } from '../helpers/wire';

for (const length of [0xffffffff, 64 * 1024 * 1024 + 1, LIMITS.nbdOptionLengthMax + 1]) {
  t.test(`option length ${length}: immediate disconnect without reading the payload`,
    async (t) => {
      const { connect, port } = await startServer(t, [memoryDisk()]);
      const client = await connect();
      await client.start();
      client.write(Buffer.concat([IHAVEOPT, u32(OPT.GO), u32(length)]));
      t.equal(await client.waitClosed(), true, 'closed while the payload is still unsent');
      t.equal(await checkHealthy(port), true);
    });
}
