/**
 * Batched writes when the native path fails at submission: a writer thread that cannot start
 * (pthread_create's EAGAIN under a pids limit) makes the backing write through the pool instead,
 * and a submission that throws fails that one request while the export still drains and closes
 * (a request left counted would hang close(), and with it every fence: invariant 2).
 */
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { FdBacking } from '../../src/backing/fd-backing';
import { BackingPool } from '../../src/backing/pool';
import { openExport } from '../../src/engine/extent-export';
import * as sys from '../../src/sys/index';

const KiB = 1024;

async function twoExtentExport(dir: string) {
  const file = path.join(dir, 'img');
  fs.writeFileSync(file, Buffer.alloc(1024 * KiB));
  const pool = new BackingPool();
  const exp = await openExport({
    name: 'd/b', description: '', mode: 'w', size: 512 * KiB, pool,
    extents: [{ path: file, offset: 512 * KiB, length: 256 * KiB },
      { path: file, offset: 0, length: 256 * KiB }],
  });
  return { file, pool, exp };
}

function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  return Promise.race([promise, new Promise<T>((_, reject) =>
    setTimeout(() => reject(new Error(`${what}: not settled in ${ms} ms`)), ms).unref())]);
}

t.test('a writer thread that cannot start: the pool writes, the data lands', async (t) => {
  const original = sys.createWriter;
  let attempts = 0;
  Object.assign(sys, {
    createWriter: () => {
      attempts++;
      throw Object.assign(new Error('pthread_create: EAGAIN'), { code: 'EAGAIN' });
    },
  });
  t.teardown(() => Object.assign(sys, { createWriter: original }));
  const { file, pool, exp } = await twoExtentExport(t.testdir());
  const data = Buffer.alloc(384 * KiB);
  for (let i = 0; i < data.length; i++) data[i] = (i * 7) & 0xff;
  await exp.write(64 * KiB, data, { fua: false }); // pieces on one file: the writer path
  await exp.write(64 * KiB, data, { fua: true });
  t.equal(attempts, 1, 'one failed start, then the backing stops trying');
  const back = fs.readFileSync(file);
  t.ok(back.subarray(576 * KiB, 768 * KiB).equals(data.subarray(0, 192 * KiB)), 'first extent');
  t.ok(back.subarray(0, 192 * KiB).equals(data.subarray(192 * KiB)), 'second extent');
  await within(exp.close(), 5000, 'close');
  await pool.close();
});

t.test('a submission that throws fails its request and the export still closes', async (t) => {
  const original = FdBacking.prototype.writeBatch;
  let throwing = true;
  FdBacking.prototype.writeBatch = function (this: FdBacking, ...args) {
    if (throwing) throw Object.assign(new Error('writerSubmit: ENOMEM'), { code: 'ENOMEM' });
    return original.apply(this, args);
  };
  t.teardown(() => {
    FdBacking.prototype.writeBatch = original;
  });
  const { pool, exp } = await twoExtentExport(t.testdir());
  await t.rejects(exp.write(0, Buffer.alloc(4 * KiB, 1), { fua: false }),
    { code: 'ERR_IO_SYSCALL', errno: 'ENOMEM' });
  throwing = false;
  await exp.write(0, Buffer.alloc(4 * KiB, 2), { fua: false });
  const back = Buffer.alloc(4 * KiB);
  await exp.read(0, 4 * KiB, back, 0);
  t.ok(back.equals(Buffer.alloc(4 * KiB, 2)), 'later writes work');
  await within(exp.close(), 5000, 'close after a failed submission');
  await pool.close();
});
