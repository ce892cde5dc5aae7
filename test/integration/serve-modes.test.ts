/**
 * `xvd serve` in the ways real clients start it: systemd socket activation (nbdinfo's
 * `[ CMD ]` form), one connection on stdin/stdout (libnbd's connect_command), and the live
 * catalog: a VBD added after the server started is listed and served without a restart, and a
 * removed one disappears.
 */
import t, { type Test } from 'tap';
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { MAIN, makeImage, runXvd, spawnXvd } from '../helpers/cli';
import { hasTool, PYTHON_LIBNBD, runTool } from '../helpers/nbd-client';

const MiB = 1024 * 1024;

async function setup(t: Test): Promise<string> {
  const dir = t.testdir();
  const catalog = path.join(dir, 'catalog.sqlite');
  const image = makeImage(path.join(dir, 'pool.img'), 64 * MiB);
  t.equal((await runXvd(['format', image], { catalog })).code, 0);
  t.equal((await runXvd(['create', '16M'], { catalog })).stdout.trim(), '1');
  const added = await runXvd(['vbd', 'add', 'vd:1', 'xvda', '--domain', '3', '--mode', 'w'],
    { catalog });
  t.equal(added.code, 0, added.stderr);
  return catalog;
}


/** The port from serve's 'listening' log line (it was asked for port 0). */
function listeningPort(server: ChildProcess): Promise<number> {
  return new Promise((resolve, reject) => {
    let text = '';
    const timer = setTimeout(() => reject(new Error('serve did not log its port')), 30_000);
    server.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
      text += chunk;
      const match = /"port":(\d+)\}?,"msg":"xvd serve: listening"/.exec(text);
      if (match === null) return;
      clearTimeout(timer);
      resolve(Number(match[1]));
    });
  });
}
const env = (catalog: string): NodeJS.ProcessEnv =>
  ({ ...process.env, XVD_CATALOG: catalog, XVD_LOG_LEVEL: 'warn' });

t.test('socket activation: nbdinfo starts xvd serve and reaches the only export by default',
  async (t) => {
    if (!hasTool('nbdinfo')) return t.skip('nbdinfo missing', () => undefined);
    const catalog = await setup(t);
    const result = await runTool('nbdinfo', ['--size', '--', '[', process.execPath, MAIN,
      'serve', ']'], { env: env(catalog), timeoutMs: 60_000 });
    t.equal(result.code, 0, result.stderr);
    t.equal(result.stdout.trim(), String(16 * MiB));
  });

t.test('stdio mode: libnbd connect_command writes and reads back through xvd serve --stdio',
  async (t) => {
    const probe = await runTool(PYTHON_LIBNBD, ['-c', 'import nbd']);
    if (probe.code !== 0) return t.skip('python3-libnbd missing', () => undefined);
    const catalog = await setup(t);
    const script = [
      'import nbd, sys',
      'h = nbd.NBD()',
      'h.set_export_name("3/xvda")',
      `h.connect_command([${JSON.stringify(process.execPath)}, ${JSON.stringify(MAIN)},`
        + ' "serve", "--stdio"])',
      'h.pwrite(b"xvd-stdio", 4096, nbd.CMD_FLAG_FUA)',
      'print(h.get_size(), bytes(h.pread(9, 4096)).decode(), bytes(h.pread(4, 0)).hex())',
      'h.shutdown()',
    ].join('\n');
    const result = await runTool(PYTHON_LIBNBD, ['-c', script],
      { env: env(catalog), timeoutMs: 60_000 });
    t.equal(result.code, 0, result.stderr);
    t.equal(result.stdout.trim(), `${16 * MiB} xvd-stdio 00000000`, 'data and zeros as written');
  });

t.test('a VBD added while serving is listed and served; a removed one is gone', async (t) => {
  if (!hasTool('nbdinfo')) return t.skip('nbdinfo missing', () => undefined);
  const catalog = await setup(t);
  const uri = 'nbd://127.0.0.1:';
  const server = spawnXvd(['serve', '--listen', '127.0.0.1:0'],
    { catalog, env: { XVD_LOG_LEVEL: 'info', XVD_LOG_PRETTY: '0' } });
  t.teardown(() => {
    if (server.exitCode === null) server.kill('SIGKILL');
  });
  const port = await listeningPort(server);
  const listOnce = async (): Promise<string> =>
    (await runTool('nbdinfo', ['--list', '--json', `${uri}${port}`])).stdout;
  const deadline = Date.now() + 30_000;
  let listing = '';
  while (Date.now() < deadline && !listing.includes('3/xvda')) {
    listing = await listOnce();
    if (!listing.includes('3/xvda')) await new Promise((resolve) => setTimeout(resolve, 200));
  }
  t.match(listing, '3/xvda', 'the first VBD is listed');
  t.equal((await runXvd(['create', '8M'], { catalog })).code, 0);
  t.equal((await runXvd(['vbd', 'add', 'vd:2', 'xvdb', '--domain', '4', '--mode', 'r'],
    { catalog })).code, 0);
  const size = await runTool('nbdinfo', ['--size', `${uri}${port}/4/xvdb`]);
  t.equal(size.stdout.trim(), String(8 * MiB), 'the new VBD is served without a restart');
  const ro = await runTool('nbdinfo', ['--can', 'write', `${uri}${port}/4/xvdb`]);
  t.equal(ro.code, 2, 'a read-only VBD is read-only on the wire (nbdinfo --can: 2 = no)');
  t.equal((await runXvd(['vbd', 'remove', 'xvdb', '--domain', '4'], { catalog })).code, 0);
  const gone = await runTool('nbdinfo', ['--size', `${uri}${port}/4/xvdb`]);
  t.not(gone.code, 0, 'a removed VBD is no longer served');
  t.notMatch(await listOnce(), '4/xvdb', 'nor listed');
  server.kill('SIGTERM');
  t.equal(await new Promise((resolve) => server.on('exit', resolve)), 0, 'SIGTERM exits 0');
});
