/**
 * BackingPool and PooledBacking: refcounts per path and mode, and the durability bookkeeping
 * (fdatasync only when dirty, joining one in flight, sticky failure: invariant 4).
 */
import t from 'tap';
import { BackingPool, PooledBacking } from '../../src/backing/pool';
import { MemoryBacking } from '../../src/backing/memory-backing';
import { IoError } from '../../src/errors';

/** A memory backing whose fdatasync calls are counted and finished by hand. */
class SlowSync extends MemoryBacking {
  calls = 0;
  private finishers: Array<(error: Error | null) => void> = [];
  override sync(): Promise<void> {
    this.calls++;
    return new Promise((resolve, reject) => {
      this.finishers.push((error) => (error === null ? resolve() : reject(error)));
    });
  }
  finish(error: Error | null = null): void {
    const next = this.finishers.shift();
    if (next === undefined) throw new Error('no sync pending');
    next(error);
  }
}

t.test('sync runs fdatasync only when dirty and joins the one in flight', async (t) => {
  const backing = new SlowSync('m', 4096);
  const entry = new PooledBacking(backing, 'm|w');
  await entry.sync();
  t.equal(backing.calls, 0, 'clean: no fdatasync');
  entry.markDirty();
  const first = entry.sync();
  const joined = entry.sync();
  t.equal(backing.calls, 1, 'a second flush while clean joins the first');
  entry.markDirty(); // a write completed while the first fdatasync runs
  const second = entry.sync();
  t.equal(backing.calls, 2, 'a write after the start needs its own fdatasync');
  backing.finish();
  backing.finish();
  await Promise.all([first, joined, second]);
});

t.test('a failed fdatasync is sticky for every later sync', async (t) => {
  const backing = new SlowSync('m', 4096);
  const entry = new PooledBacking(backing, 'm|w');
  entry.markDirty();
  const failing = entry.sync();
  backing.finish(Object.assign(new Error('boom'), { code: 'EIO' }));
  await t.rejects(failing, { code: 'ERR_IO_SYSCALL', errno: 'EIO' });
  t.ok(entry.failure instanceof IoError);
  await t.rejects(entry.sync(), { code: 'ERR_IO_SYSCALL', errno: 'EIO' });
  entry.markDirty();
  await t.rejects(entry.sync(), { code: 'ERR_IO_SYSCALL', errno: 'EIO' });
  t.equal(backing.calls, 1, 'never retried');
});

t.test('the pool refcounts entries per path and mode and closes with the last release',
  async (t) => {
    const made: MemoryBacking[] = [];
    const pool = new BackingPool({
      opener: async (path, mode) => {
        const backing = new MemoryBacking(path, 4096, mode === 'w');
        made.push(backing);
        return backing;
      },
    });
    const [a1, a2] = await Promise.all([pool.acquire('a', 'w'), pool.acquire('a', 'w')]);
    t.equal(a1, a2, 'concurrent acquires share one open');
    t.equal(made.length, 1);
    const ar = await pool.acquire('a', 'r');
    t.not(ar, a1);
    t.equal(made.length, 2);
    await pool.release(a1);
    t.equal(made[0]?.isClosed, false);
    await pool.release(a2);
    t.equal(made[0]?.isClosed, true);
    t.equal(pool.size, 1);
    await pool.close();
    t.equal(made[1]?.isClosed, true);
    await t.rejects(pool.acquire('a', 'r'), { code: 'ERR_IO_SYSCALL', errno: 'ESHUTDOWN' });
  });
