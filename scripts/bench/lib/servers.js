// The servers under comparison. Each entry knows how to serve the prepared backing for one
// transport ('tcp' on 127.0.0.1, or 'unix' in the run's temp dir) and returns
// { uri, pid, stop } where pid is the process whose tree is charged for CPU. A server that cannot
// start throws an Error whose message becomes the "n/a" reason in the table. The `isBase` servers
// (xvd-base, xvd-frag-base) run another checkout's xvd (compare.js --base DIR) on pools of their
// own, for an A/B of two versions in the same rounds; they are not peers.
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const proc = require('./proc');
const xvd = require('./xvd');

const START_TIMEOUT_MS = 20000;

function uriFor(transport, endpoint, exportName = '') {
  if (transport === 'tcp') return `nbd://127.0.0.1:${endpoint}/${exportName}`;
  return `nbd+unix:///${exportName}?socket=${endpoint}`;
}

async function endpointFor(ctx, name, transport) {
  if (transport === 'tcp') return proc.freePort();
  const socketPath = path.join(ctx.dir, `${name}.sock`);
  fs.rmSync(socketPath, { force: true });
  return socketPath;
}

function listenTarget(transport, endpoint) {
  return transport === 'tcp' ? { host: '127.0.0.1', port: endpoint } : { path: endpoint };
}

/** Checks that the export answers NBD and has the expected size. */
async function verifyExport(uri, sizeBytes) {
  const result = await proc.run('nbdinfo', ['--size', uri], { timeoutMs: 15000 });
  if (result.code !== 0) throw new Error(`nbdinfo failed: ${proc.tail(result.stderr, 2)}`);
  const size = Number(result.stdout.trim());
  if (size !== sizeBytes) throw new Error(`export size ${size}, expected ${sizeBytes}`);
}

/** Starts a foreground server in its own process group and waits until it serves. */
async function startForeground(ctx, name, transport, command, args, exportName, env) {
  const endpoint = await endpointFor(ctx, name, transport);
  const logPath = path.join(ctx.dir, `${name}-${transport}.log`);
  const { child, state } = proc.startDetached(command, args(endpoint), { logPath, env });
  const stop = () => proc.stopGroup(child.pid);
  try {
    if (child.pid === undefined) throw new Error(`cannot spawn ${command}`);
    const problem = await proc.waitForListener(listenTarget(transport, endpoint), {
      timeoutMs: START_TIMEOUT_MS,
      isDead: () => state.exited,
    });
    if (problem !== null) {
      const log = fs.existsSync(logPath) ? fs.readFileSync(logPath, 'utf8') : '';
      throw new Error(`${problem}${log ? `: ${proc.tail(log, 3)}` : ''}`);
    }
    const uri = uriFor(transport, endpoint, exportName);
    await verifyExport(uri, ctx.sizeBytes);
    return { uri, pid: child.pid, stop, multiConn: null };
  } catch (error) {
    await stop();
    throw error;
  }
}

const nbdkit = {
  name: 'nbdkit',
  describe: 'nbdkit file plugin (default 16 threads)',
  start(ctx, transport) {
    const listen = (endpoint) =>
      transport === 'tcp' ? ['-i', '127.0.0.1', '-p', String(endpoint)] : ['-U', endpoint];
    return startForeground(ctx, 'nbdkit', transport, 'nbdkit', (endpoint) => [
      '-f', '--exit-with-parent', ...listen(endpoint), 'file', ctx.image,
    ], '');
  },
};

const qemuNbd = {
  name: 'qemu-nbd',
  describe: 'qemu-nbd -f raw -t -e 8 --cache=writeback',
  start(ctx, transport) {
    const listen = (endpoint) =>
      transport === 'tcp' ? ['-b', '127.0.0.1', '-p', String(endpoint)] : ['-k', endpoint];
    return startForeground(ctx, 'qemu-nbd', transport, 'qemu-nbd', (endpoint) => [
      '-f', 'raw', ...listen(endpoint), '-t', '-e', '8', '--cache=writeback', ctx.image,
    ], '');
  },
};

function nbdServerConfig(ctx, transport, endpoint) {
  const listen = transport === 'tcp'
    ? `listenaddr = 127.0.0.1\nport = ${endpoint}\n`
    : `unixsock = ${endpoint}\n`;
  return `[generic]\n${listen}allowlist = true\nmax_threads = 4\n\n` +
    `[disk]\nexportname = ${ctx.image}\nflush = true\nfua = true\ntrim = true\n`;
}

async function waitForPidFile(pidPath, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const text = fs.existsSync(pidPath) ? fs.readFileSync(pidPath, 'utf8').trim() : '';
    if (/^\d+$/.test(text)) return Number(text);
    await proc.sleep(50);
  }
  return null;
}

// nbd-server daemonizes (setsid + fork) and forks one process per client; its PID comes from
// the pid file, and it leads its own process group.
const nbdServer = {
  name: 'nbd-server',
  describe: 'nbd-server 3.24, max_threads 4, forks per client',
  async start(ctx, transport) {
    const endpoint = await endpointFor(ctx, 'nbd-server', transport);
    const confPath = path.join(ctx.dir, `nbd-server-${transport}.conf`);
    const pidPath = path.join(ctx.dir, `nbd-server-${transport}.pid`);
    fs.writeFileSync(confPath, nbdServerConfig(ctx, transport, endpoint));
    fs.rmSync(pidPath, { force: true });
    const launch = await proc.run('nbd-server', [
      '-C', confPath, '-p', pidPath, '-l', path.join(ctx.dir, 'nbd-server.allow-none'),
    ], { timeoutMs: START_TIMEOUT_MS });
    if (launch.code !== 0) {
      throw new Error(`nbd-server exit ${launch.code}: ${proc.tail(launch.stderr, 2)}`);
    }
    const pid = await waitForPidFile(pidPath, START_TIMEOUT_MS);
    if (pid === null) throw new Error('nbd-server wrote no pid file');
    proc.registerGroup(pid, 'nbd-server');
    const stop = () => proc.stopGroup(pid);
    try {
      const problem = await proc.waitForListener(listenTarget(transport, endpoint), {
        timeoutMs: START_TIMEOUT_MS,
        isDead: () => !proc.isAlive(pid),
      });
      if (problem !== null) throw new Error(problem);
      const uri = uriFor(transport, endpoint, 'disk');
      await verifyExport(uri, ctx.sizeBytes);
      return { uri, pid, stop, multiConn: null };
    } catch (error) {
      await stop();
      throw error;
    }
  },
};

/**
 * xvd serving the VD prepared by lib/xvd.js for this variant ('single' or 'fragmented'), run from
 * this checkout or, for a base server, from the checkout given by --base (ctx.options.base).
 * viewOf(ctx) is the context lib/xvd.js gets: ctx with `repo` set to that checkout.
 */
function xvdServer(name, variant, isBase = false) {
  const viewOf = (ctx) => isBase ? { ...ctx, repo: ctx.options.base } : ctx;
  const pool = variant === 'single'
    ? 'VD of one extent run'
    : 'VD of >= 1024 extents over two pool members';
  return {
    name,
    describe: `xvd serve${isBase ? ' (the --base checkout)' : ''}, ${pool}`,
    isXvd: true,
    isBase,
    viewOf,
    async prepare(ctx) {
      return xvd.preparePool(viewOf(ctx), variant, name);
    },
    async start(ctx, transport, prepared) {
      const view = viewOf(ctx);
      const flags = await xvd.serveFlags(view);
      const listen = (endpoint) => transport === 'tcp'
        ? [flags.listen, `127.0.0.1:${endpoint}`]
        : [flags.socket, endpoint];
      return startForeground(ctx, name, transport, process.execPath, (endpoint) => [
        xvd.cliPath(view), '--catalog', prepared.catalog, 'serve', ...listen(endpoint),
      ], prepared.exportName, { ...process.env, XVD_CATALOG: prepared.catalog });
    },
  };
}

const SERVERS = [
  nbdkit,
  qemuNbd,
  nbdServer,
  xvdServer('xvd', 'single'),
  xvdServer('xvd-frag', 'fragmented'),
  xvdServer('xvd-base', 'single', true),
  xvdServer('xvd-frag-base', 'fragmented', true),
];
const PEERS = ['nbdkit', 'qemu-nbd', 'nbd-server'];

module.exports = { PEERS, SERVERS, uriFor, verifyExport };
