import crypto from 'node:crypto';
import t from 'tap';
import { isHealthy, startFileExport, threadServes } from '../helpers/file-export';

t.test('data path: random bytes after GO close that connection; others keep their thread',
  async (t) => {
    const fixture = await startFileExport(t);
    const bystander = await fixture.connect('unix');
    await bystander.handshake();
    t.ok(await threadServes(fixture, bystander), 'the bystander is served by its thread');
    for (let seed = 0; seed < 6; seed++) {
      const client = await fixture.connect(seed % 2 === 0 ? 'tcp' : 'unix');
      await client.handshake();
      t.ok(await threadServes(fixture, client), `stream ${seed}: the thread holds it`);
      client.write(crypto.randomBytes(4096));
      t.equal(await client.waitClosed(), true, `stream ${seed} closed`);
    }
    t.ok(await threadServes(fixture, bystander, 4096), 'the bystander still works');
    bystander.end();
    t.ok(await isHealthy(fixture));
  });
