/**
 * The closest thing to the kernel client here: nbdfuse exposes the export as a file, losetup
 * makes it a block device, then mkfs.ext4 (with discard), mount, write, unmount, e2fsck.
 * The server runs in this process, so file I/O here must be asynchronous (a synchronous read
 * of the mounted file would block the event loop that has to answer it).
 *
 * It skips only where the machine cannot run it (not root, no /dev/fuse, no /dev/loop-control);
 * there, a missing tool, a failed losetup or a failed mount fails it.
 */
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { memoryDisk, runTool, startServer } from '../helpers/nbd-client';
import { requireTools } from '../helpers/testhost';

const TOOLS = ['nbdfuse', 'losetup', 'mkfs.ext4', 'mount', 'umount', 'e2fsck', 'fusermount3'];

async function waitFor(check: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (check()) return true;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return check();
}

/** Polls until the first 4 KiB of `file` read without error (asynchronously: the server that
 * answers runs in this process). */
async function readsWithin(file: string, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const handle = await fs.promises.open(file, 'r');
      try {
        const { bytesRead } = await handle.read(Buffer.alloc(4096), 0, 4096, 0);
        if (bytesRead === 4096) return true;
      } finally {
        await handle.close();
      }
    } catch {
      // not connected yet
    }
    if (Date.now() >= deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

t.test('nbdfuse + losetup + mkfs.ext4 + mount: files written survive a remount and fsck',
  async (t) => {
    const skip = (why: string): unknown => t.skip(why, () => undefined);
    if (process.getuid?.() !== 0) return skip('needs root for losetup and mount');
    if (!fs.existsSync('/dev/fuse')) return skip('/dev/fuse missing');
    if (!fs.existsSync('/dev/loop-control')) return skip('/dev/loop-control missing');
    if (!requireTools(t, TOOLS)) return;
    const disk = memoryDisk('disk', 64 * 1024 * 1024);
    const { uri } = await startServer(t, [disk]);
    const dir = t.testdir();
    const fuseDir = path.join(dir, 'fuse');
    const mountDir = path.join(dir, 'mnt');
    fs.mkdirSync(fuseDir);
    fs.mkdirSync(mountDir);
    const fuse = spawn('nbdfuse', [fuseDir, uri()], { stdio: 'ignore' });
    const fuseExited = new Promise((resolve) => fuse.once('exit', resolve));
    let loopDevice = '';
    t.teardown(async () => {
      // order matters: filesystem, then loop device, then the FUSE mount, then nbdfuse
      await runTool('umount', ['-l', mountDir], { timeoutMs: 10_000 });
      if (loopDevice !== '') await runTool('losetup', ['-d', loopDevice], { timeoutMs: 10_000 });
      await runTool('fusermount3', ['-uz', fuseDir], { timeoutMs: 10_000 });
      fuse.kill();
      await Promise.race([fuseExited, new Promise((resolve) => setTimeout(resolve, 5000))]);
    });
    const device = path.join(fuseDir, 'nbd');
    t.ok(await waitFor(() => fs.existsSync(device), 20_000), 'nbdfuse exposes the export');
    t.ok(await readsWithin(device, 20_000), 'and reads it (nbdfuse is connected)');
    const loop = await runTool('losetup', ['-f', '--show', device]);
    if (loop.code !== 0) return t.fail(`losetup -f --show: ${loop.stderr.trim()}`);
    loopDevice = loop.stdout.trim();
    const mkfs = await runTool('mkfs.ext4', ['-q', '-F', '-E', 'discard', loopDevice]);
    t.equal(mkfs.code, 0, mkfs.stderr);
    const payload = crypto.randomBytes(3 * 1024 * 1024);
    const mounted = await runTool('mount', [loopDevice, mountDir]);
    if (mounted.code !== 0) return t.fail(`mount: ${mounted.stderr.trim()}`);
    await fs.promises.writeFile(path.join(mountDir, 'data.bin'), payload);
    t.equal((await runTool('umount', [mountDir])).code, 0);
    t.ok(disk.counts.flush > 0, 'the filesystem flushed through NBD_CMD_FLUSH');
    const fsck = await runTool('e2fsck', ['-f', '-n', loopDevice]);
    t.equal(fsck.code, 0, fsck.stdout + fsck.stderr);
    t.equal((await runTool('mount', [loopDevice, mountDir])).code, 0);
    const back = await fs.promises.readFile(path.join(mountDir, 'data.bin'));
    t.ok(back.equals(payload), 'the file reads back identical after a remount');
    t.equal((await runTool('umount', [mountDir])).code, 0);
  });
