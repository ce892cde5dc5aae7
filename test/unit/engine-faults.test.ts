import t, { type Test } from 'tap';
import { BackingPool, type BackingMode } from '../../src/backing/pool';
import { MemoryBacking } from '../../src/backing/memory-backing';
import { openExport, type ExtentExport } from '../../src/engine/extent-export';
import { FaultyBacking, type FaultyBackingOptions } from '../helpers/faulty-backing';

const SIZE = 256 * 1024;

interface Rig {
  exp: ExtentExport;
  pool: BackingPool;
  faulty: Map<string, FaultyBacking>;
  opened: string[];
}

/** Two memory backings 'a' and 'b', 64 KiB extents alternating between them. */
async function rig(
  t: Test,
  mode: BackingMode = 'w',
  options: FaultyBackingOptions = {},
): Promise<Rig> {
  const faulty = new Map<string, FaultyBacking>();
  const opened: string[] = [];
  const pool = new BackingPool({
    opener: async (path, openMode) => {
      opened.push(`${path}:${openMode}`);
      const backing = new FaultyBacking(new MemoryBacking(path, SIZE, openMode === 'w'), options);
      faulty.set(path, backing);
      return backing;
    },
  });
  const extents = [];
  for (let i = 0; i < 4; i++) {
    extents.push({ path: i % 2 === 0 ? 'a' : 'b', offset: (3 - i) * 65536, length: 65536 });
  }
  const exp = await openExport({ name: 'd/f', description: 'x', mode, size: 4 * 65536, extents,
    pool });
  t.teardown(async () => {
    await exp.close();
    await pool.close();
  });
  return { exp, pool, faulty, opened };
}

function fb(r: Rig, path: string): FaultyBacking {
  const backing = r.faulty.get(path);
  if (backing === undefined) throw new Error(`no backing ${path}`);
  return backing;
}

t.test('an EIO on one piece rejects that read, zero-fills the target, and the next read works',
  async (t) => {
  const r = await rig(t);
  await r.exp.write(0, Buffer.alloc(4 * 65536, 7), { fua: false });
  fb(r, 'b').failNext('read', 'EIO');
  const target = Buffer.alloc(4 * 65536, 0x55);
  await t.rejects(r.exp.read(0, 4 * 65536, target, 0), { code: 'ERR_IO_SYSCALL', errno: 'EIO' });
  t.equal(target.every((b) => b === 0), true, 'no partial data left behind');
  await r.exp.read(0, 4 * 65536, target, 0);
  t.equal(target.every((b) => b === 7), true);
});

t.test('an ENOSPC write rejects with ENOSPC and later writes land', async (t) => {
  const r = await rig(t);
  fb(r, 'a').failNext('write', 'ENOSPC');
  await t.rejects(r.exp.write(60_000, Buffer.alloc(10_000, 1), { fua: false }),
    { code: 'ERR_IO_SYSCALL', errno: 'ENOSPC' });
  await r.exp.write(60_000, Buffer.alloc(10_000, 2), { fua: false });
  const back = Buffer.alloc(10_000);
  await r.exp.read(60_000, 10_000, back, 0);
  t.equal(back.every((b) => b === 2), true);
});

t.test('short reads and writes are continued until the whole range moved', async (t) => {
  const r = await rig(t, 'w', { seed: 99, rates: { read: 0.5, write: 0.5 }, randomFault: 'short' });
  const data = Buffer.alloc(4 * 65536);
  for (let i = 0; i < data.length; i++) data[i] = (i * 31 + 7) & 0xff;
  await r.exp.write(0, data, { fua: false });
  for (let round = 0; round < 5; round++) {
    const back = Buffer.alloc(data.length);
    await r.exp.read(0, data.length, back, 0);
    t.ok(back.equals(data), `round ${round} read back what was written`);
  }
  t.ok(fb(r, 'a').injected.write + fb(r, 'b').injected.write > 0, 'short writes were injected');
  t.ok(fb(r, 'a').injected.read + fb(r, 'b').injected.read > 0, 'short reads were injected');
});

t.test('a failed fdatasync fails that flush and every later flush (invariant 4)', async (t) => {
  const r = await rig(t);
  await r.exp.write(0, Buffer.alloc(100, 1), { fua: false });
  await r.exp.write(65536, Buffer.alloc(100, 1), { fua: false });
  fb(r, 'a').failNext('sync', 'EIO');
  await t.rejects(r.exp.flush(), { code: 'ERR_IO_SYSCALL', errno: 'EIO' });
  await t.rejects(r.exp.flush(), { code: 'ERR_IO_SYSCALL', errno: 'EIO' },
    'no write in between, still fails');
  await r.exp.write(0, Buffer.alloc(100, 2), { fua: false });
  await t.rejects(r.exp.flush(), { code: 'ERR_IO_SYSCALL', errno: 'EIO' },
    'after a new write, still fails');
  await t.rejects(r.exp.write(0, Buffer.alloc(1), { fua: true }), { code: 'ERR_IO_SYSCALL',
    errno: 'EIO' }, 'FUA fails too');
});

t.test('a FUA write syncs the backings it touched before resolving', async (t) => {
  const r = await rig(t);
  fb(r, 'b').failNext('sync', 'EIO');
  await r.exp.write(0, Buffer.alloc(100, 1), { fua: true }); // only 'a' (extent 0 is on a)
  await t.rejects(r.exp.write(65536, Buffer.alloc(100, 1), { fua: true }),
    { code: 'ERR_IO_SYSCALL', errno: 'EIO' });
});

t.test('flush does not fdatasync a backing that was not written', async (t) => {
  const r = await rig(t);
  fb(r, 'a').failNext('sync', 'EIO');
  await r.exp.write(65536, Buffer.alloc(100, 1), { fua: false }); // on 'b'
  await r.exp.flush();
  t.equal(fb(r, 'a').injected.sync, 0);
});

t.test('a read-only export rejects write, trim and zero with EPERM and opens only for reading',
  async (t) => {
    const r = await rig(t, 'r');
    t.equal(r.exp.isReadOnly, true);
    t.equal(r.exp.canTrim, false);
    await t.rejects(r.exp.write(0, Buffer.alloc(1), { fua: false }), { code: 'ERR_IO_SYSCALL',
      errno: 'EPERM' });
    await t.rejects(r.exp.trim(0, 1, { fua: false }), { code: 'ERR_IO_SYSCALL', errno: 'EPERM' });
    await t.rejects(r.exp.zero(0, 1, { fua: false, mayTrim: true, fastOnly: false }),
      { code: 'ERR_IO_SYSCALL', errno: 'EPERM' });
    const back = Buffer.alloc(10, 9);
    await r.exp.read(0, 10, back, 0);
    t.equal(back.every((b) => b === 0), true);
    t.same(r.opened.sort(), ['a:r', 'b:r']);
  });

t.test('an error in zero or trim on one backing rejects the request and later ones work',
  async (t) => {
    const r = await rig(t);
    fb(r, 'b').failNext('zero', 'EIO');
    await t.rejects(r.exp.zero(0, 4 * 65536, { fua: false, mayTrim: false, fastOnly: false }),
      { code: 'ERR_IO_SYSCALL', errno: 'EIO' });
    fb(r, 'a').failNext('trim', 'EIO');
    await t.rejects(r.exp.trim(0, 65536, { fua: false }), { code: 'ERR_IO_SYSCALL', errno: 'EIO' });
    await r.exp.zero(0, 4 * 65536, { fua: false, mayTrim: false, fastOnly: false });
  });

t.test('a closed export rejects with ESHUTDOWN and releases its backings', async (t) => {
  const r = await rig(t);
  t.equal(r.pool.size, 2);
  await r.exp.close();
  await r.exp.close();
  t.equal(r.pool.size, 0);
  await t.rejects(r.exp.flush(), { code: 'ERR_IO_SYSCALL', errno: 'ESHUTDOWN' });
  await t.rejects(r.exp.read(0, 1, Buffer.alloc(1), 0), { code: 'ERR_IO_SYSCALL',
    errno: 'ESHUTDOWN' });
});

t.test('close waits for requests in flight before releasing descriptors', async (t) => {
  const r = await rig(t);
  const inner = fb(r, 'a').inner as MemoryBacking;
  const read = inner.read.bind(inner);
  let isClosedAtCompletion: boolean | null = null;
  let release = (): void => undefined;
  const gate = new Promise<void>((resolve) => {
    release = resolve;
  });
  inner.read = (buffer, bufferOffset, length, position, callback) => {
    read(buffer, bufferOffset, length, position, (error, bytes) => {
      void gate.then(() => {
        isClosedAtCompletion = inner.isClosed;
        callback(error, bytes);
      });
    });
  };
  const reading = r.exp.read(0, 65536, Buffer.alloc(65536), 0);
  const closing = r.exp.close();
  await t.rejects(r.exp.read(0, 1, Buffer.alloc(1), 0),
    { code: 'ERR_IO_SYSCALL', errno: 'ESHUTDOWN' });
  release();
  await Promise.all([reading, closing]);
  t.equal(isClosedAtCompletion, false, 'the descriptor was open when the read completed');
  t.equal(inner.isClosed, true, 'closed afterwards');
});
