import t from 'tap';
import { LIMITS } from '../../src/limits';
import { checkHealthy, memoryDisk, startServer } from '../helpers/nbd-client';
import { OPT, REP, goPayload } from '../helpers/wire';

t.test('GO for an unknown export repeated past the option cap: ERR_UNKNOWN, then disconnect',
  async (t) => {
    const { connect, port } = await startServer(t, [memoryDisk()]);
    const client = await connect();
    await client.start();
    for (let index = 0; index < LIMITS.nbdOptionCountMax; index++) {
      const [reply] = await client.option(OPT.GO, goPayload('missing'));
      t.equal(reply?.type, REP.ERR_UNKNOWN);
    }
    client.sendOption(OPT.GO, goPayload('missing'));
    t.equal(await client.waitClosed(), true, 'option number cap + 1 disconnects');
    t.equal(await checkHealthy(port), true);
  });
