/**
 * `xvd status --watch` in a real terminal (tmux, on a server socket of this test's own): while
 * a real client (python3-libnbd) writes, the live view shows the export's row with writes per
 * second and MiB/s; `q` and Ctrl-C each end it with exit 0 and give the terminal back (main
 * screen, cursor shown). Every wait polls the captured pane, bounded.
 */
import t, { type Test } from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import path from 'node:path';
import { MAIN } from '../helpers/cli';
import { PYTHON_LIBNBD, hasTool, runTool } from '../helpers/nbd-client';
import { shortTempDir, stopChild } from '../helpers/process';
import { makeStatusCatalog, startServe } from '../helpers/serve-status';

/** Writes 64 KiB blocks until its stdin has a line (or closes). */
const WRITER = `
import nbd, select, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
for i in range(1000000):
    h.pwrite(b'w' * 65536, (i % 64) * 65536)
    if i % 20 == 0 and select.select([sys.stdin], [], [], 0)[0]:
        break
h.shutdown()
`;

interface Tmux {
  run(...args: string[]): string;
  capture(): string;
  /** polls the pane (every 100 ms, at most 30 s) until `isDone`; the last capture */
  until(isDone: (screen: string) => boolean): Promise<string>;
}

function startTmux(t: Test): Tmux {
  const socket = path.join(shortTempDir(t), 'tmux.sock');
  const run = (...args: string[]): string => {
    const result = spawnSync('tmux', ['-S', socket, ...args], { encoding: 'utf8',
      timeout: 10_000 });
    if (result.status !== 0) throw new Error(`tmux ${args[0]}: ${result.stderr}`);
    return result.stdout;
  };
  run('new-session', '-d', '-x', '160', '-y', '40', '-s', 'watch', 'sh');
  t.teardown(() => {
    spawnSync('tmux', ['-S', socket, 'kill-server'], { timeout: 10_000 });
  });
  const capture = (): string => run('capture-pane', '-p', '-t', 'watch');
  const until = async (isDone: (screen: string) => boolean): Promise<string> => {
    const deadline = Date.now() + 30_000;
    let screen = capture();
    while (!isDone(screen) && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      screen = capture();
    }
    return screen;
  };
  return { run, capture, until };
}

/** The w/s of the export's row, or -1 when the screen has none yet. */
function writesPerSecond(screen: string): number {
  const row = screen.split('\n').find((line) => line.startsWith('1/xvda '));
  const cells = row?.trim().split(/\s+/) ?? [];
  return cells.length === 11 ? Number(cells[3]) : -1;
}

t.test('--watch shows live rates in a terminal; q and Ctrl-C end it and restore the terminal',
  async (t) => {
    if (!hasTool('tmux')) return t.skip('tmux missing', () => undefined);
    if ((await runTool(PYTHON_LIBNBD, ['-c', 'import nbd'])).code !== 0) {
      return t.skip('python3-libnbd missing', () => undefined);
    }
    const catalog = await makeStatusCatalog(shortTempDir(t));
    const serve = await startServe(t, catalog);
    const tmux = startTmux(t);
    const command = `${process.execPath} ${MAIN} --catalog ${catalog} status --watch; ` +
      'echo "watch-exit=$?"';
    tmux.run('send-keys', '-t', 'watch', command, 'Enter');
    const first = await tmux.until((screen) => writesPerSecond(screen) >= 0);
    t.match(first, /^xvd status --watch {2}.*every 1 s, q quits/m, 'the heading');
    t.match(first, new RegExp(`^server \\d+ {2}pid ${serve.child.pid} `, 'm'));
    t.match(first, new RegExp('^export +conns +r/s +w/s +rMiB/s +wMiB/s +other/s +err/s ' +
      '+inflight +p50 +p99$', 'm'), 'iostat -x\'s columns');
    t.equal(tmux.run('display', '-p', '-t', 'watch', '#{alternate_on}').trim(), '1',
      'drawn on the alternate screen');

    const writer = spawn(PYTHON_LIBNBD, ['-c', WRITER, serve.uri], { stdio: ['pipe', 'ignore',
      'inherit'] });
    t.teardown(() => writer.kill('SIGKILL'));
    const busy = await tmux.until((screen) => writesPerSecond(screen) > 0);
    t.ok(writesPerSecond(busy) > 0, 'writes per second shown', { screen: busy });
    t.match(busy, /^1\/xvda +1 +/m, 'one connection');
    writer.stdin.end('stop\n');
    await new Promise((resolve) => writer.once('exit', resolve));

    tmux.run('send-keys', '-t', 'watch', 'q');
    const quit = await tmux.until((screen) => /^watch-exit=\d+$/m.test(screen));
    t.match(quit, /^watch-exit=0$/m, 'q quits with exit 0');
    t.notMatch(quit, /xvd status --watch {2}/, 'the main screen is back');
    t.equal(tmux.run('display', '-p', '-t', 'watch', '#{alternate_on}').trim(), '0');
    t.equal(tmux.run('display', '-p', '-t', 'watch', '#{cursor_flag}').trim(), '1',
      'the cursor is shown again');

    tmux.run('send-keys', '-t', 'watch', 'clear', 'Enter');
    await tmux.until((screen) => !/^watch-exit=/m.test(screen));
    tmux.run('send-keys', '-t', 'watch', command, 'Enter');
    await tmux.until((screen) => writesPerSecond(screen) >= 0);
    tmux.run('send-keys', '-t', 'watch', 'C-c');
    const interrupted = await tmux.until((screen) => /^watch-exit=\d+$/m.test(screen));
    t.match(interrupted, /^watch-exit=0$/m, 'Ctrl-C quits too');
    t.equal(tmux.run('display', '-p', '-t', 'watch', '#{alternate_on}').trim(), '0');
    await stopChild(serve.child);
  });
