/**
 * serve/control: where the control socket goes (beside the catalog, or in the runtime dir when
 * that path is too long for a Unix socket), that it answers one JSON document and ends, that it
 * refuses a directory open to others, sweeps the sockets of pids that no longer run (and only
 * those), and is removed at close; readControl's failures are one-line reasons.
 */
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import pino from 'pino';
import {
  CONTROL_PATH_MAX, ControlSocket, controlPathOf, readControl,
} from '../../src/serve/control';
import { XvdError } from '../../src/errors';
import { shortTempDir } from '../helpers/process';

const log = pino({ level: 'silent' });
const DEAD_PID = 2 ** 22 + 12345; // above the kernel's pid_max: never a running process

t.test('the path: beside the catalog when it fits, else in the runtime dir', async (t) => {
  t.equal(controlPathOf('/var/lib/xvd/catalog.sqlite', 42, '/run/user/0'),
    '/var/lib/xvd/.xvd-control/42.sock');
  const deep = `/${'d'.repeat(120)}/catalog.sqlite`;
  const uid = process.getuid?.() ?? 0;
  t.equal(controlPathOf(deep, 42, '/run/user/0'), `/run/user/0/xvd-control-${uid}/42.sock`);
  t.ok(Buffer.byteLength(controlPathOf(deep, 42, '/tmp')) <= CONTROL_PATH_MAX);
});

t.test('it answers one document per connection, sweeps dead sockets, and goes at close',
  async (t) => {
    const dir = path.join(shortTempDir(t), '.xvd-control');
    fs.mkdirSync(dir, { mode: 0o700 });
    const dead = path.join(dir, `${DEAD_PID}.sock`);
    const live = path.join(dir, `${process.ppid}.sock`);
    const other = path.join(dir, 'notes.txt');
    for (const file of [dead, live, other]) fs.writeFileSync(file, '');
    const socketPath = path.join(dir, `${process.pid}.sock`);
    let asked = 0;
    const control = await ControlSocket.start(socketPath, () => ({ format: 1, asked: ++asked }),
      log);
    t.notOk(fs.existsSync(dead), 'a dead pid\'s socket is swept');
    t.ok(fs.existsSync(live) && fs.existsSync(other), 'a live pid\'s and other files stay');
    t.equal(fs.statSync(socketPath).mode & 0o777, 0o600);
    t.same(await readControl(socketPath), { format: 1, asked: 1 });
    t.same(await readControl(socketPath), { format: 1, asked: 2 }, 'built anew each time');
    await control.close();
    t.notOk(fs.existsSync(socketPath));
    await t.rejects(readControl(socketPath), { code: 'ERR_SERVE_CONTROL', message: 'ENOENT' });
  });

t.test('a directory open to others is refused', async (t) => {
  const dir = path.join(shortTempDir(t), 'open');
  fs.mkdirSync(dir, { mode: 0o755 });
  fs.chmodSync(dir, 0o755);
  const error = await ControlSocket.start(path.join(dir, '1.sock'), () => ({}), log)
    .catch((caught: unknown) => caught);
  t.ok(error instanceof XvdError);
  t.match(error, { code: 'ERR_SERVE_CONTROL', message: /is not a directory of this user closed/ });
});
