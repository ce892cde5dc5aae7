/**
 * The Linux kernel's own NBD client (nbd.ko + nbd-client in a qemu guest, see
 * test/helpers/testhost.ts) against an NBD server on this host: ext4 round trip with reattach,
 * a read-only export, and `nbd-client -C 4`, with nbdkit's file plugin as the server: the
 * baseline that proves the harness on its own. kernel-xvd.test.ts runs the same scenarios
 * against `xvd serve`.
 */
import t, { type Test } from 'tap';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import {
  kernelScenarios,
  requireTools,
  testhostSkipReason,
  type ServerSpec,
  type ServerUnderTest,
  type StartServer,
} from '../helpers/testhost';
import { freePort, shortTempDir, stopChild } from '../helpers/process';

const READY_TIMEOUT_MS = 20_000;
const READY_POLL_MS = 50;
const EXPORT_NAME = 'xvd-kernel-test';

/** Resolves when nbdkit has written its pidfile (it does so once it listens). */
async function waitReady(child: ChildProcess, pidFile: string): Promise<void> {
  for (let waitedMs = 0; waitedMs < READY_TIMEOUT_MS; waitedMs += READY_POLL_MS) {
    if (child.exitCode !== null) throw new Error(`nbdkit exited ${child.exitCode}`);
    if (fs.existsSync(pidFile) && fs.statSync(pidFile).size > 0) return;
    await new Promise((resolve) => setTimeout(resolve, READY_POLL_MS));
  }
  throw new Error('nbdkit did not become ready');
}

/** nbdkit's file plugin: writable over a sparse file via TCP, read-only over a Unix socket. */
const startNbdkit: StartServer = async (t: Test, spec: ServerSpec) => {
  // a short path for the Unix socket: spec.dir can pass the 108-byte sun_path limit
  const dir = shortTempDir(t, 'xvd-nbdkit-');
  let image = spec.imagePath;
  if (image === undefined) {
    image = path.join(spec.dir, 'disk.img');
    fs.writeFileSync(image, '');
    fs.truncateSync(image, spec.sizeBytes);
  }
  const pidFile = path.join(dir, 'nbdkit.pid');
  const args = ['--exit-with-parent', '-f', '-P', pidFile, '-e', EXPORT_NAME];
  let listen: Pick<ServerUnderTest, 'nbdPort' | 'nbdSocket'>;
  if (spec.isReadOnly) {
    const socket = path.join(dir, 'nbd.sock');
    args.push('-r', '-U', socket);
    listen = { nbdSocket: socket };
  } else {
    const port = await freePort();
    args.push('-i', '127.0.0.1', '-p', String(port));
    listen = { nbdPort: port };
  }
  args.push('file', image);
  const child = spawn('nbdkit', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  try {
    await waitReady(child, pidFile);
  } catch (error) {
    await stopChild(child);
    throw new Error(`${(error as Error).message}: ${stderr}`);
  }
  const served = image;
  return {
    ...listen,
    exportName: EXPORT_NAME,
    stop: () => stopChild(child),
    snapshot: () => Promise.resolve(served),
  };
};

const hasNbdkit = spawnSync('sh', ['-c', 'command -v nbdkit'], { stdio: 'ignore' }).status === 0;
const cannotRun = testhostSkipReason();
if (!hasNbdkit && cannotRun === null) {
  // the machine runs the test host: nbdkit missing is a failure as root, a skip otherwise
  t.test('kernel NBD scenarios against nbdkit', async (t) => {
    requireTools(t, ['nbdkit']);
  });
} else {
  // every scenario against nbdkit: XVD_KERNEL_BASELINE=all (kernel-xvd.test.ts runs all three
  // against xvd; the baseline round trip shows whether a failure there is the harness's)
  const isAll = process.env['XVD_KERNEL_BASELINE'] === 'all';
  kernelScenarios(t, startNbdkit, isAll ? {} : { only: ['round-trip'] });
}
