/**
 * `xvd serve` when its catalog writer thread dies: the death is logged; a client already on an
 * export keeps reading and writing; an open that needs a new lease gets NBD_REP_ERR_UNKNOWN
 * (and the connection stays usable for another option); an export already open can still be
 * opened by another client; failed heartbeats are logged, not fatal; stop still ends the
 * server cleanly, and unregistering drops the leases the dead writer could not release.
 */
import path from 'node:path';
import t from 'tap';
import { startServe } from '../../src/serve/index';
import { connectUnix } from '../helpers/nbd-client';
import { shortTempDir } from '../helpers/process';
import { captureLog, makeServedCatalog, serversAndLeases } from '../helpers/serve-catalog';
import { OPT, REP, goPayload } from '../helpers/wire';

const HEARTBEAT_MS = 50;
const WAIT_MS_MAX = 10_000;

async function waitFor(condition: () => boolean): Promise<boolean> {
  const deadline = Date.now() + WAIT_MS_MAX;
  while (!condition() && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return condition();
}

t.test('the server survives its catalog writer thread: open exports serve, new leases fail',
  async (t) => {
    const catalogPath = await makeServedCatalog(t.testdir(), 2);
    const socket = path.join(shortTempDir(t), 'nbd.sock');
    const { log, lines } = captureLog('info');
    const running = await startServe({ catalogPath, tcp: [], sockets: [socket], isStdio: false,
      tls: { mode: 'off' }, log, heartbeatMs: HEARTBEAT_MS });
    t.teardown(() => running.stop());
    const first = await connectUnix(socket);
    await first.handshake({ name: '1/xvda' });

    await running.writer.worker.terminate();
    t.ok(await waitFor(() => lines.some((line) => line.level === 50 &&
      line.msg.startsWith('catalog writer thread died'))), 'the death is logged as an error');

    const payload = Buffer.alloc(4096, 0x3c);
    first.request({ type: 1, offset: 8192, cookie: 7n, payload });
    t.equal((await first.readSimpleReply()).errno, 0, 'the open export takes a write');
    t.ok((await first.readData(8192, 4096, 8n)).equals(payload), 'and reads it back');

    const second = await connectUnix(socket);
    await second.start();
    const refused = await second.option(OPT.GO, goPayload('1/xvdb'));
    t.equal(refused[refused.length - 1]?.type, REP.ERR_UNKNOWN,
      'an open needing a new lease gets NBD_REP_ERR_UNKNOWN');
    const shared = await second.option(OPT.GO, goPayload('1/xvda'));
    t.equal(shared[shared.length - 1]?.type, REP.ACK,
      'the same connection then opens the export already open');
    t.ok((await second.readData(8192, 4096, 9n)).equals(payload), 'and reads through it');

    t.ok(await waitFor(() => lines.some((line) => line.msg === 'heartbeat failed')),
      'failed heartbeats are logged');
    t.same(serversAndLeases(catalogPath).leases.map((lease) => lease.vd_id), [1],
      'the open export is still leased');
    first.end();
    second.end();
    await running.stop();
    t.same(serversAndLeases(catalogPath), { servers: [], leases: [] },
      'stop unregistered, and with the server its lease went');
  });
