/**
 * Copy-on-write in the engine (src/engine/cow.ts) over real sparse files and the real pool, with
 * a fake catalog: the first write to a shared extent copies it into a reserve extent and swaps
 * the map of every export of the VD, the shared bytes never change, concurrent first writes copy
 * once and lose nothing, reads never wait for a copy, and remaps are committed at FLUSH or FUA,
 * once, after the sync.
 */
import t, { type Test } from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { BackingPool } from '../../src/backing/pool';
import { CowVolume, type CowCatalog, type CowRemap, type ReserveExtent } from
  '../../src/engine/cow';
import { openExport, type ExtentExport } from '../../src/engine/extent-export';
import type { ExtentSpec } from '../../src/engine/extent-map';

const KiB = 1024;
const EXTENT = 64 * KiB;

function file(dir: string, name: string, bytes: number, fill?: number): string {
  const at = path.join(dir, name);
  if (fill === undefined) {
    fs.writeFileSync(at, '');
    fs.truncateSync(at, bytes);
  } else fs.writeFileSync(at, Buffer.alloc(bytes, fill));
  return at;
}

interface FakeCatalog extends CowCatalog {
  commits: CowRemap[][];
  reserved: number;
  /** set to hold reserve() until released */
  gate: Promise<void> | null;
  failCommit: boolean;
}

function fakeCatalog(reservePath: string): FakeCatalog {
  let next = 0;
  const fake: FakeCatalog = {
    commits: [], reserved: 0, gate: null, failCommit: false,
    reserve: async (extentSize, count) => {
      if (fake.gate !== null) await fake.gate;
      const got: ReserveExtent[] = [];
      for (let index = 0; index < count; index++, next++) {
        got.push({ memberId: 2, extentIndex: next, path: reservePath, offset: next * extentSize,
          extentSize });
      }
      fake.reserved += count;
      return got;
    },
    commit: async (remaps) => {
      if (fake.failCommit) throw new Error('no lease');
      fake.commits.push([...remaps]);
    },
    extentSizeOf: () => EXTENT,
  };
  return fake;
}

async function setup(t: Test, exports = 1): Promise<{ origin: string; reserve: string;
  catalog: FakeCatalog; volume: CowVolume; exps: ExtentExport[] }> {
  const dir = t.testdir();
  const origin = file(dir, 'origin', 4 * EXTENT, 0x11);
  const reserve = file(dir, 'reserve', 64 * EXTENT);
  const pool = new BackingPool();
  const catalog = fakeCatalog(reserve);
  const extents: ExtentSpec[] = [
    { path: origin, offset: 0, length: 2 * EXTENT, shared: true },
    { path: origin, offset: 2 * EXTENT, length: 2 * EXTENT },
  ];
  const volume = new CowVolume(extents, catalog, pool, 'w');
  const exps: ExtentExport[] = [];
  for (let index = 0; index < exports; index++) {
    const exp = await openExport({ name: `1/x${index}`, description: '', mode: 'w',
      size: 4 * EXTENT, extents: volume.map.toList(), pool });
    exp.attachCow(volume);
    exps.push(exp);
  }
  t.teardown(async () => {
    for (const exp of exps) await exp.close();
    await volume.close();
    await pool.close();
  });
  return { origin, reserve, catalog, volume, exps };
}

async function read(exp: ExtentExport, offset: number, length: number): Promise<Buffer> {
  const buffer = Buffer.alloc(length);
  await exp.read(offset, length, buffer, 0);
  return buffer;
}

t.test('a first write copies the extent, swaps the map, and never touches the shared bytes',
  async (t) => {
    const { origin, catalog, volume, exps } = await setup(t);
    const exp = exps[0]!;
    await exp.write(EXTENT + 4 * KiB, Buffer.alloc(4 * KiB, 0x22), { fua: false });
    t.equal(volume.pendingCount, 1, 'one remap pending');
    t.equal(exp.map.touchesShared(EXTENT, EXTENT), false, 'the written extent is the VD\'s own');
    t.equal(exp.map.touchesShared(0, EXTENT), true, 'the other shared extent is still shared');
    const got = await read(exp, EXTENT, EXTENT);
    t.ok(got.subarray(0, 4 * KiB).every((byte) => byte === 0x11), 'bytes before: copied');
    t.ok(got.subarray(4 * KiB, 8 * KiB).every((byte) => byte === 0x22), 'the write');
    t.ok(got.subarray(8 * KiB).every((byte) => byte === 0x11), 'bytes after: copied');
    t.ok(fs.readFileSync(origin).every((byte) => byte === 0x11), 'the shared file is unchanged');
    t.same(catalog.commits, [], 'nothing committed before a FLUSH');
    await exp.write(2 * EXTENT, Buffer.alloc(4 * KiB, 0x33), { fua: false });
    t.equal(volume.pendingCount, 1, 'a write to an own extent makes no remap');
    t.equal(fs.readFileSync(origin)[2 * EXTENT], 0x33, 'an own extent is written in place');
  });

t.test('a FLUSH commits the pending remaps once, a FUA write at once', async (t) => {
  const { catalog, volume, exps } = await setup(t);
  const exp = exps[0]!;
  await exp.flush();
  t.same(catalog.commits, [], 'no remap, no commit');
  await exp.write(0, Buffer.alloc(512, 1), { fua: false });
  await exp.write(EXTENT, Buffer.alloc(512, 1), { fua: false });
  await exp.flush();
  t.equal(catalog.commits.length, 1, 'one commit');
  t.same(catalog.commits[0]!.map((remap) => remap.virtualOffset).sort((a, b) => a - b),
    [0, EXTENT], 'both remaps in it');
  t.equal(catalog.commits[0]![0]!.length, EXTENT, 'a remap covers one whole extent');
  await exp.flush();
  t.equal(catalog.commits.length, 1, 'nothing left to commit');
  t.equal(volume.counts.committed, 2);
});

t.test('a FUA write to a shared extent commits before it answers', async (t) => {
  const { catalog, exps } = await setup(t);
  await exps[0]!.write(EXTENT, Buffer.alloc(512, 7), { fua: true });
  t.equal(catalog.commits.length, 1, 'committed by the FUA write');
  t.equal(catalog.commits[0]![0]!.virtualOffset, EXTENT);
});

t.test('a failed commit fails the FLUSH and is tried again by the next', async (t) => {
  const { catalog, volume, exps } = await setup(t);
  await exps[0]!.write(0, Buffer.alloc(512, 1), { fua: false });
  catalog.failCommit = true;
  await t.rejects(exps[0]!.flush(), { message: /EIO/ }, 'the FLUSH fails');
  t.equal(volume.pendingCount, 1, 'the remap is still pending');
  catalog.failCommit = false;
  await exps[0]!.flush();
  t.equal(catalog.commits.length, 1, 'the next FLUSH commits it');
});

t.test('every export of the VD sees a remap at once', async (t) => {
  const { exps } = await setup(t, 2);
  const [a, b] = exps as [ExtentExport, ExtentExport];
  await a.write(100, Buffer.from('written through a'), { fua: false });
  t.equal((await read(b, 100, 17)).toString(), 'written through a', 'b reads it');
  t.equal(b.map.touchesShared(0, EXTENT), false, 'b maps the new extent');
  await b.write(200, Buffer.from('then b'), { fua: false });
  t.equal((await read(a, 200, 6)).toString(), 'then b', 'a reads b\'s write, no second copy');
});

t.test('concurrent first writes to one shared extent copy it once and lose nothing',
  async (t) => {
    const { catalog, volume, exps } = await setup(t, 2);
    const writes = [];
    for (let index = 0; index < 16; index++) {
      const exp = exps[index % 2]!;
      writes.push(exp.write(index * 4 * KiB, Buffer.alloc(4 * KiB, index + 1), { fua: false }));
    }
    await Promise.all(writes);
    t.equal(volume.counts.remaps, 1, 'one copy');
    t.equal(catalog.reserved, 16, 'one reserve batch');
    const got = await read(exps[0]!, 0, EXTENT);
    for (let index = 0; index < 16; index++) {
      t.equal(got[index * 4 * KiB], index + 1, `write ${index} is there`);
    }
  });

t.test('reads do not wait for a copy: they read the shared bytes until the swap', async (t) => {
  const { catalog, exps } = await setup(t);
  let open: () => void = () => undefined;
  catalog.gate = new Promise((resolve) => (open = resolve));
  let isWritten = false;
  const write = exps[0]!.write(0, Buffer.alloc(512, 9), { fua: false })
    .then(() => (isWritten = true));
  const got = await read(exps[0]!, 0, 512);
  t.equal(isWritten, false, 'the write still waits for its reserve');
  t.ok(got.every((byte) => byte === 0x11), 'the read got the old bytes');
  open();
  await write;
  t.equal((await read(exps[0]!, 0, 1))[0], 9, 'then the new ones');
});

t.test('zero and trim of a shared extent leave the shared bytes alone', async (t) => {
  const { origin, exps } = await setup(t);
  await exps[0]!.zero(0, 4 * KiB, { fua: false, mayTrim: true, fastOnly: false });
  t.ok((await read(exps[0]!, 0, 4 * KiB)).every((byte) => byte === 0), 'zeroed');
  t.equal((await read(exps[0]!, 4 * KiB, 1))[0], 0x11, 'the rest copied');
  if (exps[0]!.canTrim) await exps[0]!.trim(EXTENT, 4 * KiB, { fua: false });
  t.ok(fs.readFileSync(origin).every((byte) => byte === 0x11), 'the shared file is unchanged');
});
