/**
 * A real ENOSPC: a 1 MiB tmpfs (root), a sparse 4 MiB image on it. Writing more than fits fails
 * that request with ENOSPC; reads and writes into already allocated space keep working.
 * The tmpfs is unmounted in teardown.
 */
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { BackingPool } from '../../src/backing/pool';
import { openExport } from '../../src/engine/extent-export';

const skip = process.getuid?.() !== 0 ? 'needs root to mount a tmpfs' : false;

t.test('a full tmpfs fails the write with ENOSPC and later requests work', { skip }, async (t) => {
  const mountPoint = fs.mkdtempSync('/tmp/xvd-enospc-');
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1M', 'tmpfs', mountPoint]);
  let cleanup = async (): Promise<void> => undefined;
  t.teardown(async () => {
    await cleanup();
    execFileSync('umount', [mountPoint]);
    fs.rmdirSync(mountPoint);
  });
  const image = path.join(mountPoint, 'img');
  fs.writeFileSync(image, '');
  fs.truncateSync(image, 4 * 1024 * 1024);
  const pool = new BackingPool();
  const exp = await openExport({
    name: 'd/full', description: '', mode: 'w', size: 4 * 1024 * 1024, pool,
    extents: [
      { path: image, offset: 2 * 1024 * 1024, length: 2 * 1024 * 1024 },
      { path: image, offset: 0, length: 2 * 1024 * 1024 },
    ],
  });
  cleanup = async () => {
    await exp.close();
    await pool.close();
  };
  await exp.write(0, Buffer.alloc(256 * 1024, 1), { fua: false });
  await t.rejects(exp.write(1024 * 1024, Buffer.alloc(2 * 1024 * 1024, 2), { fua: false }),
    { code: 'ERR_IO_SYSCALL', errno: 'ENOSPC' });
  const back = Buffer.alloc(256 * 1024);
  await exp.read(0, back.length, back, 0);
  t.equal(back.every((b) => b === 1), true, 'earlier data reads back');
  await exp.write(4096, Buffer.alloc(4096, 3), { fua: true });
  await exp.read(4096, 4096, back, 0);
  t.equal(back.subarray(0, 4096).every((b) => b === 3), true, 'a write into allocated space works');
});
