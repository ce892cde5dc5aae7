/**
 * ceph helper: a real single-node Ceph cluster for one test file (scripts/ceph/up.sh: one mon,
 * one mgr, one BlueStore OSD on a sparse file, 127.0.0.1 only, a pool ready for RBD), torn down
 * by scripts/ceph/down.sh when the test file ends. Start one per file (about 5 s each) and share
 * it between the file's tests: give each test its own image names.
 *
 * A cluster is never left running: besides t.teardown, the process's exit and SIGINT, SIGTERM and
 * SIGHUP (tap's timeout) stop every cluster still up, synchronously. Only a SIGKILL of the test
 * process can leave one behind (its directory is /tmp/xvd-ceph-*; down.sh DIR stops it).
 * The cluster's directory is under os.tmpdir(), short: the daemons' admin sockets live in it and a
 * socket path holds 108 bytes.
 */
import { execFile, execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { ROOT } from './cli';

const UP = path.join(ROOT, 'scripts', 'ceph', 'up.sh');
const DOWN = path.join(ROOT, 'scripts', 'ceph', 'down.sh');
const UP_TIMEOUT_MS = 180_000;

interface Teardown {
  teardown(fn: () => void | Promise<void>): void;
}

export interface CephCluster {
  dir: string;
  /** the client configuration (names the mon and the keyring) */
  conf: string;
  keyring: string;
  /** a pool tagged for RBD */
  pool: string;
  /** process.env with CEPH_CONF set: for the CLI, `rbd`, `ceph` */
  env: Record<string, string>;
  /** runs the rbd CLI on this cluster; its stdout */
  rbd(args: readonly string[]): string;
  /** runs the ceph CLI on this cluster; its stdout */
  ceph(args: readonly string[]): string;
  /** stops the cluster now (idempotent; teardown does it otherwise) */
  stop(): void;
}

const running = new Set<string>();
let isHooked = false;

function downSync(dir: string): void {
  if (!running.delete(dir)) return;
  spawnSync(DOWN, [dir], { stdio: 'ignore', timeout: 30_000 });
}

/** Stops every cluster still up when the process ends, however it ends short of SIGKILL. */
function hookExit(): void {
  if (isHooked) return;
  isHooked = true;
  process.on('exit', () => {
    for (const dir of [...running]) downSync(dir);
  });
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(signal, () => {
      for (const dir of [...running]) downSync(dir);
      process.kill(process.pid, signal);
    });
  }
}

function parseUp(stdout: string): Record<string, string> {
  const values: Record<string, string> = {};
  for (const line of stdout.split('\n')) {
    const at = line.indexOf('=');
    if (at > 0) values[line.slice(0, at)] = line.slice(at + 1);
  }
  return values;
}

/** Starts a cluster for this test file; stopped in teardown (and at exit, see the header). */
export async function startCeph(t: Teardown): Promise<CephCluster> {
  hookExit();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xvd-ceph-'));
  running.add(dir);
  t.teardown(() => downSync(dir));
  let stdout: string;
  try {
    ({ stdout } = await promisify(execFile)(UP, [dir], { timeout: UP_TIMEOUT_MS }));
  } catch (error) {
    const stderr = (error as { stderr?: string }).stderr ?? '';
    downSync(dir);
    throw new Error(`scripts/ceph/up.sh failed: ${stderr.trim() || String(error)}`);
  }
  const values = parseUp(stdout);
  const conf = values.CEPH_CONF;
  const keyring = values.CEPH_KEYRING;
  const pool = values.CEPH_POOL;
  if (conf === undefined || keyring === undefined || pool === undefined) {
    downSync(dir);
    throw new Error(`scripts/ceph/up.sh printed no CEPH_CONF, CEPH_KEYRING or CEPH_POOL`);
  }
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (value !== undefined) env[key] = value;
  }
  env.CEPH_CONF = conf;
  const run = (tool: string, args: readonly string[]): string =>
    execFileSync(tool, ['-c', conf, ...args], { encoding: 'utf8', timeout: 60_000, env });
  return {
    dir, conf, keyring, pool, env,
    rbd: (args) => run('rbd', args),
    ceph: (args) => run('ceph', args),
    stop: () => downSync(dir),
  };
}
