/**
 * systemd socket activation: nbdinfo starts the server itself with a listening socket on fd 3
 * and LISTEN_PID/LISTEN_FDS set (libnbd's nbd_connect_systemd_socket_activation), and a
 * single-connection stdin/stdout server driven by nbdinfo through nbd_connect_command.
 */
import path from 'node:path';
import t from 'tap';
import { hasTool, runTool } from '../helpers/nbd-client';

const ROOT = path.join(__dirname, '..', '..');
const PRELUDE = `
const pino = require('pino');
const { createServer, listenFdsFromEnv } = require('${ROOT}/src/nbd/index.ts');
const { createFixedProvider } = require('${ROOT}/test/helpers/nbd-client.ts');
const { createMemoryExport } = require('${ROOT}/test/helpers/memory-export.ts');
const disk = createMemoryExport({ name: 'disk', size: 3 * 1024 * 1024, description: 'act' });
const server = createServer({ provider: createFixedProvider([disk]),
  log: pino({ level: 'silent' }) });
`;
const ACTIVATED = `${PRELUDE}
const fds = listenFdsFromEnv(process.env);
if (fds.length === 0) { process.stderr.write('not socket-activated\\n'); process.exit(3); }
for (const fd of fds) server.listen({ fd });
`;
const STDIO = `${PRELUDE}
server.serveStream(process.stdin, process.stdout).then(() => process.exit(0));
`;
const NODE = [process.execPath, '-r',
  path.join(ROOT, 'node_modules', '@isaacs', 'ts-node-temp-fork-for-pr-2009', 'register',
    'transpile-only.js'), '-e'];

t.test('socket activation: nbdinfo launches the server with a listening fd 3', async (t) => {
  if (!hasTool('nbdinfo')) return t.skip('nbdinfo missing', () => undefined);
  const result = await runTool('nbdinfo', ['--json', '--', '[', ...NODE, ACTIVATED, ']'],
    { env: { TS_NODE_PROJECT: path.join(ROOT, 'tsconfig.json') }, timeoutMs: 90_000 });
  t.equal(result.code, 0, result.stderr);
  const info = JSON.parse(result.stdout) as { exports: { 'export-size': number }[] };
  t.equal(info.exports[0]?.['export-size'], 3 * 1024 * 1024);
});

t.test('stdin/stdout mode: nbdinfo talks to the server over a pipe pair', async (t) => {
  if (!hasTool('nbdsh')) return t.skip('python3-libnbd missing', () => undefined);
  const script = `
import nbd, sys, json
h = nbd.NBD()
h.set_full_info(True)
h.connect_command(sys.argv[1:])
print(json.dumps({'size': h.get_size(), 'desc': h.get_export_description()}))
h.shutdown()
`;
  const python = await runTool('/usr/bin/python3', ['-c', script, ...NODE, STDIO],
    { env: { TS_NODE_PROJECT: path.join(ROOT, 'tsconfig.json') }, timeoutMs: 90_000 });
  t.equal(python.code, 0, python.stderr);
  t.same(JSON.parse(python.stdout || '{}'), { size: 3 * 1024 * 1024, desc: 'act' });
});
