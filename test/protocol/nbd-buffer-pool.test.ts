/**
 * BufferPool (nbd/replies): buffers come back for reuse by size class, one buffer is never handed
 * to two holders, a double release is refused, idle bytes stay under the cap, and sizes outside
 * the classes are plain allocations the pool does not keep.
 */
import t from 'tap';
import { BufferPool } from '../../src/nbd/replies';

t.test('a released buffer is handed out again for a request of the same class', (t) => {
  const pool = new BufferPool(4096, 1 << 20, 8 << 20);
  const first = pool.acquire(5000);
  t.ok(first.length >= 5000);
  pool.release(first);
  t.equal(pool.acquire(6000), first, 'same class: reused');
  t.not(pool.acquire(6000), first, 'taken: not handed out twice');
  t.end();
});

t.test('a class holds a 2^k data area plus room for a reply header', (t) => {
  const pool = new BufferPool(4096, 1 << 22, 8 << 20);
  const reply = pool.acquire((1 << 20) + 24);
  t.ok(reply.length >= (1 << 20) + 24);
  t.ok(reply.length < (1 << 20) + 4096, '1 MiB + header does not take a 2 MiB buffer');
  t.end();
});

t.test('releasing a buffer twice is refused', (t) => {
  const pool = new BufferPool(4096, 1 << 20, 8 << 20);
  const buffer = pool.acquire(8000);
  pool.release(buffer);
  t.throws(() => pool.release(buffer), { code: 'ERR_ASSERTION' });
  t.end();
});

t.test('idle bytes stay under the cap; out-of-class sizes are not kept', (t) => {
  const pool = new BufferPool(4096, 1 << 16, 100_000);
  const buffers = Array.from({ length: 4 }, () => pool.acquire(30_000));
  for (const buffer of buffers) pool.release(buffer);
  t.ok(pool.bytesHeld <= 100_000, `held ${pool.bytesHeld}`);
  t.ok(pool.bytesHeld > 0);
  const small = pool.acquire(100);
  const large = pool.acquire(1 << 17);
  const before = pool.bytesHeld;
  pool.release(small);
  pool.release(large);
  t.equal(pool.bytesHeld, before);
  t.end();
});
