/**
 * contrib/systemd: the shipped units pass `systemd-analyze verify` without a warning and stay
 * hardened (`systemd-analyze security --offline`), and socket activation works end to end:
 * `systemd-socket-activate` holds the port as xvd.socket does and runs xvd.service's ExecStart
 * with its Environment= on the first connection, with the empty capability set the unit gives
 * (setpriv drops them when root); real clients (nbdinfo, libnbd's python) read what the test
 * wrote, and a loop-device `phy:` VBD takes writes, trims and zeroes without any capability.
 *
 * The units run /usr/local/bin/xvd, the README's symlink to dist/cli/main.js, which this host
 * need not have; verify checks that ExecStart's file is executable, so the test gives it the
 * symlink's target (this checkout's dist/cli/main.js) in a copy and changes nothing else.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import t, { type Test } from 'tap';
import { ensureBuilt, MAIN, makeImage, ROOT, runXvd } from '../helpers/cli';
import { hasTool, PYTHON_LIBNBD, runTool } from '../helpers/nbd-client';
import { freePort, loopUnavailable, stopChild } from '../helpers/process';
import { eventually } from '../helpers/waits';

const UNITS = path.join(ROOT, 'contrib', 'systemd');
const INSTALLED = '/usr/local/bin/xvd';
const MiB = 1024 * 1024;
const isRoot = process.getuid?.() === 0;
const NOTHING = (): undefined => undefined;

/** Copies of both units in `dir`, ExecStart's installed path replaced by this checkout's. */
function unitsWithLocalExec(dir: string): { service: string; socket: string } {
  const original = fs.readFileSync(path.join(UNITS, 'xvd.service'), 'utf8');
  const service = original.replace(`ExecStart=${INSTALLED} `, `ExecStart=${MAIN} `);
  const changed = original.split('\n').filter((line, index) =>
    line !== service.split('\n')[index]);
  if (changed.length !== 1) {
    throw new Error(`expected one ExecStart line, changed: ${changed.join(' | ')}`);
  }
  fs.writeFileSync(path.join(dir, 'xvd.service'), service);
  fs.copyFileSync(path.join(UNITS, 'xvd.socket'), path.join(dir, 'xvd.socket'));
  return { service: path.join(dir, 'xvd.service'), socket: path.join(dir, 'xvd.socket') };
}

/** `KEY=VALUE` of every Environment= line, and ExecStart's words after the program. */
function serviceSettings(): { environment: Record<string, string>; args: string[] } {
  const text = fs.readFileSync(path.join(UNITS, 'xvd.service'), 'utf8');
  const environment: Record<string, string> = {};
  for (const match of text.matchAll(/^Environment=([A-Z_]+)=(.*)$/gm)) {
    environment[match[1] ?? ''] = match[2] ?? '';
  }
  const exec = /^ExecStart=(\S+)((?: \S+)*)$/m.exec(text);
  if (exec?.[1] !== INSTALLED) throw new Error('xvd.service: ExecStart is not ' + INSTALLED);
  return { environment, args: (exec[2] ?? '').trim().split(' ') };
}

t.test('systemd-analyze verify accepts both units without a warning', async (t) => {
  if (!hasTool('systemd-analyze')) return t.skip('systemd-analyze missing (systemd)', NOTHING);
  ensureBuilt();
  t.ok((fs.statSync(MAIN).mode & 0o111) !== 0, 'dist/cli/main.js is executable');
  const units = unitsWithLocalExec(t.testdir());
  const result = await runTool('systemd-analyze', ['verify', '--man=no', units.socket,
    units.service], { timeoutMs: 60_000 });
  t.equal(result.code, 0, result.stderr);
  t.equal(result.stdout + result.stderr, '', 'no warning (an unknown key only warns)');
});

t.test('xvd.service stays hardened: offline exposure at most 2.5 of 10', async (t) => {
  if (!hasTool('systemd-analyze')) return t.skip('systemd-analyze missing (systemd)', NOTHING);
  const units = unitsWithLocalExec(t.testdir());
  const result = await runTool('systemd-analyze', ['security', '--offline=yes',
    '--threshold=25', units.service], { timeoutMs: 60_000 });
  t.equal(result.code, 0, result.stdout.split('\n').filter((line) => line.includes('✗'))
    .join('\n'));
  t.match(result.stdout, /Overall exposure level for xvd\.service: [0-2]\.\d/);
});

interface Served {
  catalog: string;
  content: Buffer;
  loop: string | null;
}

/** A catalog with `1/xvda` (a VD imported from `content`) and, with loop devices, `1/xvdb`. */
async function servedCatalog(t: Test): Promise<Served> {
  const dir = t.testdir();
  const catalog = path.join(dir, 'catalog.sqlite');
  const content = crypto.randomBytes(3 * MiB + 512);
  fs.writeFileSync(path.join(dir, 'content.bin'), content);
  const steps = [['format', path.join(dir, 'pool.img'), '--size', '16M'],
    ['import', path.join(dir, 'content.bin')], ['vbd', 'add', 'vd:1', 'xvda', '--domain', '1',
      '--mode', 'w']];
  for (const step of steps) {
    const result = await runXvd(step, { catalog });
    t.equal(result.code, 0, `${step.join(' ')}: ${result.stderr}`);
  }
  let loop: string | null = null;
  if (loopUnavailable() === null) {
    const image = makeImage(path.join(dir, 'phy.img'), 4 * MiB);
    loop = execFileSync('losetup', ['-f', '--show', image], { encoding: 'utf8' }).trim();
    const attached = loop;
    t.teardown(() => execFileSync('losetup', ['-d', attached]));
    const result = await runXvd(['vbd', 'add', `phy:${loop}`, 'xvdb', '--domain', '1',
      '--mode', 'w'], { catalog });
    t.equal(result.code, 0, result.stderr);
  }
  return { catalog, content, loop };
}

/** systemd-socket-activate on 127.0.0.1:port running the unit's ExecStart and Environment=. */
function activate(catalog: string, port: number): { child: ChildProcess; log: () => string } {
  const { environment, args } = serviceSettings();
  const env = Object.entries({ ...environment, XVD_CATALOG: catalog })
    .flatMap(([key, value]) => ['-E', `${key}=${value}`]);
  const dropCapabilities = isRoot ? ['setpriv', '--bounding-set=-all', '--inh-caps=-all'] : [];
  const child = spawn('systemd-socket-activate', ['-l', `127.0.0.1:${port}`, ...env,
    ...dropCapabilities, MAIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let text = '';
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => (text += chunk));
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (text += chunk));
  return { child, log: () => text };
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/** Polls until the port accepts a connection, for at most timeoutMs. */
async function untilAccepting(port: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await accepts(port)) return true;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return false;
}

const READ_ALL = `
import nbd, sys, json, hashlib
h = nbd.NBD()
h.connect_uri(sys.argv[1])
size = h.get_size()
digest = hashlib.sha256()
for offset in range(0, size, 1 << 20):
    digest.update(h.pread(min(1 << 20, size - offset), offset))
print(json.dumps({'size': size, 'sha256': digest.hexdigest()}))
h.shutdown()
`;

const WRITE_TRIM_ZERO = `
import nbd, sys, json
h = nbd.NBD()
h.connect_uri(sys.argv[1])
h.pwrite(b'x' * 131072, 0)
h.flush()
written = h.pread(131072, 0) == b'x' * 131072
h.trim(65536, 0)
h.zero(65536, 65536)
print(json.dumps({'written': written, 'zeroed': h.pread(131072, 0) == bytes(131072),
    'trim': h.can_trim(), 'zero': h.can_zero()}))
h.shutdown()
`;

/** CapEff and CapBnd of a process, from /proc/PID/status. */
function capabilities(pid: number): { effective: string; bounding: string } {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const field = (name: string): string => new RegExp(`^${name}:\\s*(\\S+)`, 'm')
    .exec(status)?.[1] ?? '';
  return { effective: field('CapEff'), bounding: field('CapBnd') };
}

t.test('socket activation: the unit\'s command serves the inherited socket to real clients',
  async (t) => {
    for (const tool of ['systemd-socket-activate', 'nbdinfo']) {
      if (!hasTool(tool)) return t.skip(`${tool} missing`, NOTHING);
    }
    if (isRoot && !hasTool('setpriv')) return t.skip('setpriv missing (util-linux)', NOTHING);
    ensureBuilt();
    const served = await servedCatalog(t);
    const port = await freePort();
    const { child, log } = activate(served.catalog, port);
    t.teardown(() => {
      if (child.exitCode === null) child.kill('SIGKILL');
    });
    t.ok(await untilAccepting(port, 10_000), `port ${port} accepts: ${log()}`);
    const info = await runTool('nbdinfo', ['--json', `nbd://127.0.0.1:${port}/1/xvda`],
      { timeoutMs: 60_000 });
    t.equal(info.code, 0, info.stderr + log());
    const exported = (JSON.parse(info.stdout || '{}') as { exports?: { 'export-size': number }[] })
      .exports?.[0];
    t.equal(exported?.['export-size'], served.content.length, 'nbdinfo: the imported size');
    const read = await runTool(PYTHON_LIBNBD, ['-c', READ_ALL,
      `nbd://127.0.0.1:${port}/1/xvda`], { timeoutMs: 60_000 });
    t.equal(read.code, 0, read.stderr);
    t.same(JSON.parse(read.stdout || '{}'), { size: served.content.length,
      sha256: crypto.createHash('sha256').update(served.content).digest('hex') },
    'libnbd reads back the bytes the test imported');
    await servedLoop(t, served, port);
    if (isRoot && child.pid !== undefined) {
      t.same(capabilities(child.pid), { effective: '0000000000000000',
        bounding: '0000000000000000' }, 'it served all that with no capability');
    }
    t.match(log(), new RegExp(`"version":"[^"]+","address":\\{[^}]*"port":${port}\\},` +
      '"msg":"xvd serve: listening"'), 'the start-up line names the version and the port');
    await stopChild(child);
    t.equal(child.exitCode, 0, 'SIGTERM (systemctl stop): a clean exit');
    t.ok(await eventually(() => log().includes('"msg":"xvd serve: stopped"')), log());
  });

/** The loop-device VBD takes a write, a trim and a zero (BLKDISCARD, BLKZEROOUT). */
async function servedLoop(t: Test, served: Served, port: number): Promise<void> {
  if (served.loop === null) {
    t.comment(`no loop device: ${loopUnavailable() ?? ''}`);
    return;
  }
  const result = await runTool(PYTHON_LIBNBD, ['-c', WRITE_TRIM_ZERO,
    `nbd://127.0.0.1:${port}/1/xvdb`], { timeoutMs: 60_000 });
  t.equal(result.code, 0, result.stderr);
  t.same(JSON.parse(result.stdout || '{}'), { written: true, zeroed: true, trim: true,
    zero: true }, `${served.loop}: write, trim and zero through the block device's ioctls`);
}
