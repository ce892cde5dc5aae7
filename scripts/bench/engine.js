#!/usr/bin/env node
/**
 * bench:engine: the translation engine against plain positioned fs I/O, in one process and run.
 *
 *   npm run bench:engine            (builds nothing: run `npx tsc -p .` first; uses dist/)
 *   XVD_BENCH_QUICK=1 npm run bench:engine   (fewer rounds, for a smoke run)
 *
 * Prints: translations per second for maps of 1, 100, 10 000 and 1 000 000 extents (4 KiB
 * requests at random offsets, ExtentMap.visit with a no-op visitor); then, on a page-cached
 * 256 MiB file, 4 KiB random reads/writes (32 in flight) and 1 MiB sequential reads/writes
 * (8 in flight) through an ExtentExport next to plain fs.read/fs.write on the same file, as a
 * ratio; then a 1 024-extent fragmented map (shuffled 256 KiB extents) against a single extent,
 * twice: with the file's page cache built by 4 KiB writes (small folios) and by a sequential
 * read (readahead: large folios). On Linux 6.18's ext4 a write smaller than the folio it lands
 * in costs more per byte than one that covers it, so 4 x 256 KiB pieces lose to one 1 MiB write
 * when the folios are large, and the engine cannot change that (the "same pieces" rows show it
 * adds nothing over issuing the pieces by hand). Last, the first pass of 1 MiB writes through
 * extents in every other MiB (`npm run bench`'s fragmented pool) against one extent, on a cache
 * built by a sequential read: each such write covers half a 2 MiB folio, and the kernel accounts
 * (and ext4 prepares) the whole folio, so the halves cost more per byte by hand and through the
 * engine alike.
 * Each cell is the median of several alternating rounds (the machine is noisy). Nothing global is
 * set: the libuv pool size is whatever UV_THREADPOOL_SIZE says (printed).
 */
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawnSync } = require('node:child_process');

const dist = path.join(__dirname, '..', '..', 'dist');
const { ExtentMap } = require(path.join(dist, 'engine', 'extent-map.js'));
const { openExport } = require(path.join(dist, 'engine', 'extent-export.js'));
const { BackingPool } = require(path.join(dist, 'backing', 'pool.js'));

const QUICK = process.env.XVD_BENCH_QUICK === '1';
const ROUNDS = QUICK ? 3 : 9;
const FILE_BYTES = 256 * 1024 * 1024;
const KiB = 1024;
const MiB = 1024 * 1024;

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

function fmt(n) {
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)} M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)} k`;
  return n.toFixed(1);
}

/** xorshift32 stream of integers in [0, bound) */
function randomInts(count, bound, seed) {
  const out = new Float64Array(count);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < count; i++) {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    out[i] = Math.floor((x / 2 ** 32) * bound);
  }
  return out;
}

function noop() {}

function benchTranslate() {
  console.log('translations per second (4 KiB requests, random offsets, visit):');
  const probes = randomInts(1 << 20, 2 ** 31, 7);
  for (const count of [1, 100, 10_000, 1_000_000]) {
    const extentBytes = count === 1 ? 2 ** 40 : Math.max(8192,
      Math.floor(2 ** 40 / count / 4096) * 4096);
    const extents = [];
    for (let i = 0; i < count; i++) {
      // every other extent on another backing and out of order, so nothing merges
      extents.push({ path: i % 2 ? 'b' : 'a', offset: (count - i) * extentBytes * 2,
        length: extentBytes });
    }
    const map = ExtentMap.fromList(extents);
    if (map.count !== count) throw new Error('extents merged unexpectedly');
    const limit = map.sizeVirtual - 4096;
    const offsets = probes.map((p) => Math.floor((p / 2 ** 31) * limit));
    const rates = [];
    for (let round = 0; round < ROUNDS; round++) {
      const ops = 1 << 20;
      const start = process.hrtime.bigint();
      for (let i = 0; i < ops; i++) map.visit(offsets[i], 4096, noop, null);
      const seconds = Number(process.hrtime.bigint() - start) / 1e9;
      rates.push(ops / seconds);
    }
    console.log(`  ${String(count).padStart(9)} extents: ${fmt(median(rates))}/s`);
  }
}

/** The file's content: the same bytes in every MiB. */
function fillPattern(chunk) {
  for (let i = 0; i < chunk.length; i++) chunk[i] = (i * 131) & 0xff;
  return chunk;
}

function prepareFile(dir) {
  const file = path.join(dir, 'bench.img');
  const fd = fs.openSync(file, 'w+');
  const chunk = fillPattern(Buffer.alloc(MiB));
  for (let at = 0; at < FILE_BYTES; at += MiB) fs.writeSync(fd, chunk, 0, MiB, at);
  fs.fsyncSync(fd);
  for (let at = 0; at < FILE_BYTES; at += MiB) fs.readSync(fd, chunk, 0, MiB, at); // warm cache
  fs.closeSync(fd);
  return file;
}

/** Runs `total` operations keeping `depth` in flight; op(i, buffer, done) */
function runDepth(total, depth, blockBytes, op) {
  return new Promise((resolve, reject) => {
    let issued = 0;
    let finished = 0;
    const start = process.hrtime.bigint();
    const buffers = Array.from({ length: depth }, () => Buffer.alloc(blockBytes, 1));
    function next(slot) {
      if (issued >= total) return;
      const index = issued++;
      op(index, buffers[slot], (error) => {
        if (error) return reject(error);
        finished++;
        if (finished === total) resolve(Number(process.hrtime.bigint() - start) / 1e9);
        else next(slot);
      });
    }
    for (let slot = 0; slot < depth; slot++) next(slot);
  });
}

function plainOp(fd, kind, offsets, blockBytes) {
  if (kind === 'read') {
    return (i, buffer, done) => fs.read(fd, buffer, 0, blockBytes, offsets[i], (e) => done(e));
  }
  return (i, buffer, done) => fs.write(fd, buffer, 0, blockBytes, offsets[i], (e) => done(e));
}

/** Plain fs I/O over pieces translated before timing: all pieces of a request concurrently. */
function plainPiecesOp(fd, map, kind, offsets, blockBytes) {
  const plans = Array.from(offsets, (offset) => map.translate(offset, blockBytes));
  const io = kind === 'read' ? fs.read : fs.write;
  return (i, buffer, done) => {
    const pieces = plans[i];
    let pending = pieces.length;
    for (const piece of pieces) {
      io(fd, buffer, piece.offsetRequest, piece.length, piece.offsetBacking, (error) => {
        if (error) done(error);
        else if (--pending === 0) done(null);
      });
    }
  };
}

function engineOp(exp, kind, offsets, blockBytes) {
  const ok = (done) => () => done(null);
  if (kind === 'read') {
    return (i, buffer, done) => exp.read(offsets[i], blockBytes, buffer, 0).then(ok(done), done);
  }
  return (i, buffer, done) =>
    exp.write(offsets[i], buffer.subarray(0, blockBytes), { fua: false }).then(ok(done), done);
}

function cellOffsets(pattern, blockBytes, total) {
  if (pattern === 'random') {
    return randomInts(total, FILE_BYTES / blockBytes, 11).map((b) => b * blockBytes);
  }
  return Float64Array.from({ length: total }, (_, i) => (i * blockBytes) % FILE_BYTES);
}

const CELLS = [
  { label: '4 KiB random read ', kind: 'read', pattern: 'random', blockBytes: 4 * KiB, depth: 32,
    total: 20_000 },
  { label: '4 KiB random write', kind: 'write', pattern: 'random', blockBytes: 4 * KiB, depth: 32,
    total: 10_000 },
  { label: '1 MiB seq read    ', kind: 'read', pattern: 'seq', blockBytes: MiB, depth: 8,
    total: 256 },
  { label: '1 MiB seq write   ', kind: 'write', pattern: 'seq', blockBytes: MiB, depth: 8,
    total: 192 },
];

function throughput(cell, seconds) {
  return cell.blockBytes >= MiB ? `${fmt((cell.total * cell.blockBytes) / MiB / seconds)} MiB/s`
    : `${fmt(cell.total / seconds)} IOPS`;
}

/**
 * Runs A and B back to back for ROUNDS rounds (ABBA order, so drift hits both alike); returns the
 * median seconds of each and the median of the per-round ratios A/B (the noise-robust figure).
 */
async function compare(cell, makeA, makeB) {
  const a = [];
  const b = [];
  const ratios = [];
  const total = QUICK ? Math.ceil(cell.total / 4) : cell.total;
  const scaled = { ...cell, total };
  const offsets = cellOffsets(cell.pattern, cell.blockBytes, total);
  const runA = () => runDepth(total, cell.depth, cell.blockBytes, makeA(offsets));
  const runB = () => runDepth(total, cell.depth, cell.blockBytes, makeB(offsets));
  await runA(); // warm-up
  await runB();
  for (let round = 0; round < ROUNDS; round++) {
    const first = round % 2 === 0;
    const secondsA1 = first ? await runA() : 0;
    const secondsB = await runB();
    const secondsA = first ? secondsA1 : await runA();
    a.push(secondsA);
    b.push(secondsB);
    ratios.push(secondsA / secondsB);
  }
  return { cell: scaled, a: median(a), b: median(b), ratio: median(ratios) };
}

async function benchIo(file) {
  console.log(`\nengine vs plain positioned fs I/O, page-cached ${FILE_BYTES / MiB} MiB file ` +
    `(UV_THREADPOOL_SIZE=${process.env.UV_THREADPOOL_SIZE ?? 'default 4'}; ratio = engine/plain):`);
  const pool = new BackingPool();
  const exp = await openExport({
    name: 'bench/one', description: '', mode: 'w', size: FILE_BYTES, pool,
    extents: [{ path: file, offset: 0, length: FILE_BYTES }],
  });
  const fd = fs.openSync(file, 'r+');
  for (const cell of CELLS) {
    const result = await compare(cell,
      (offsets) => plainOp(fd, cell.kind, offsets, cell.blockBytes),
      (offsets) => engineOp(exp, cell.kind, offsets, cell.blockBytes));
    console.log(`  ${cell.label}  plain ${throughput(result.cell, result.a).padStart(14)}   ` +
      `engine ${throughput(result.cell, result.b).padStart(14)}` +
      `   ratio ${result.ratio.toFixed(3)}`);
  }
  fs.closeSync(fd);
  await exp.close();
  await pool.close();
}

/**
 * Drops the file's page cache (fdatasync, then dd iflag=nocache: posix_fadvise DONTNEED) and
 * builds it again by `how`: 'write4k' rewrites the same bytes in 4 KiB writes (small folios),
 * 'read' reads it sequentially (readahead: large folios). False when the cache could not be
 * dropped (dd missing): the section then runs on the cache as it is.
 */
function rebuildCache(file, how) {
  const fd = fs.openSync(file, 'r+');
  try {
    fs.fdatasyncSync(fd);
    const dropped = spawnSync('dd', [`if=${file}`, 'iflag=nocache', 'count=0', 'status=none']);
    if (dropped.status !== 0) return false;
    const chunk = how === 'write4k' ? fillPattern(Buffer.alloc(MiB)) : Buffer.alloc(MiB);
    for (let at = 0; at < FILE_BYTES; at += MiB) {
      if (how === 'read') {
        fs.readSync(fd, chunk, 0, MiB, at);
        continue;
      }
      // whole pages, never read first: each write makes its own 4 KiB folio
      for (let page = 0; page < MiB; page += 4 * KiB) {
        fs.writeSync(fd, chunk, page, 4 * KiB, at + page);
      }
    }
    fs.fdatasyncSync(fd);
    return true;
  } finally {
    fs.closeSync(fd);
  }
}

async function benchFragmented(file, how) {
  const extentBytes = FILE_BYTES / 1024;
  const order = Array.from({ length: 1024 }, (_, i) => i);
  const shuffle = randomInts(1024, 2 ** 31, 3);
  for (let i = order.length - 1; i > 0; i--) {
    const j = shuffle[i] % (i + 1);
    [order[i], order[j]] = [order[j], order[i]];
  }
  const fragmented = order.map((slot) => ({ path: file, offset: slot * extentBytes,
    length: extentBytes }));
  const cache = rebuildCache(file, how) ? (how === 'write4k'
    ? 'page cache built by 4 KiB writes: small folios' : 'page cache built by a sequential read: '
      + 'large folios') : 'page cache as it was (dd could not drop it)';
  console.log('\n1 024-extent fragmented map (shuffled 256 KiB extents) vs single extent ' +
    `(ratio = fragmented/single; ${cache}):`);
  const pool = new BackingPool();
  const single = await openExport({
    name: 'bench/one', description: '', mode: 'w', size: FILE_BYTES, pool,
    extents: [{ path: file, offset: 0, length: FILE_BYTES }],
  });
  const frag = await openExport({
    name: 'bench/frag', description: '', mode: 'w', size: FILE_BYTES, pool, extents: fragmented,
  });
  console.log(`  (map has ${frag.map.count} extents after merging adjacent ones)`);
  const fd = fs.openSync(file, 'r+');
  for (const cell of CELLS) {
    const result = await compare(cell,
      (offsets) => engineOp(single, cell.kind, offsets, cell.blockBytes),
      (offsets) => engineOp(frag, cell.kind, offsets, cell.blockBytes));
    console.log(`  ${cell.label}  single ${throughput(result.cell, result.a).padStart(14)}   ` +
      `fragmented ${throughput(result.cell, result.b).padStart(14)}` +
      `   ratio ${result.ratio.toFixed(3)}`);
  }
  console.log('same fragmented pieces: engine vs plain fs I/O issuing each piece itself ' +
    '(ratio = engine/plain; the engine\'s own overhead on a fragmented map):');
  for (const cell of CELLS) {
    const result = await compare(cell,
      (offsets) => plainPiecesOp(fd, frag.map, cell.kind, offsets, cell.blockBytes),
      (offsets) => engineOp(frag, cell.kind, offsets, cell.blockBytes));
    console.log(`  ${cell.label}  plain  ${throughput(result.cell, result.a).padStart(14)}   ` +
      `engine     ${throughput(result.cell, result.b).padStart(14)}` +
      `   ratio ${result.ratio.toFixed(3)}`);
  }
  fs.closeSync(fd);
  await single.close();
  await frag.close();
  await pool.close();
}

/** MiB of dirty page cache the kernel accounts (Dirty: in /proc/meminfo). */
function dirtyMiB() {
  const line = fs.readFileSync('/proc/meminfo', 'utf8').split('\n')
    .find((text) => text.startsWith('Dirty:'));
  return line === undefined ? NaN : Number(line.split(/\s+/)[1]) / 1024;
}

/**
 * The first pass of 1 MiB writes after the cache was built by a sequential read, through a
 * 128-extent VD whose 1 MiB extents sit in every other MiB of the file (the layout of
 * `npm run bench`'s fragmented pool, where the VD got the extents freed by deleting every other
 * small VD) against one contiguous extent. Readahead caches the file in 2 MiB folios, so each
 * fragmented extent shares its folio with a neighbour the VD does not own: ext4 attaches buffer
 * heads for the whole folio and the kernel accounts the whole folio dirty on a write that covers
 * half of it. Each pass starts from a rebuilt cache (a second pass would find the folios dirty
 * already). The same pieces written by fs.writeSync, one writer in order as the server's data-path
 * thread writes, show the cost is the kernel's; the engine row (one write at a time through the
 * libuv pool, whose threads take turns) is the noisier of the two.
 */
async function benchHalfFolios(file) {
  const count = FILE_BYTES / MiB / 2;
  const contiguous = [{ path: file, offset: 0, length: count * MiB }];
  const halves = Array.from({ length: count }, (_, i) =>
    ({ path: file, offset: 2 * i * MiB, length: MiB }));
  const pool = new BackingPool();
  const open = (name, extents) => openExport({
    name, description: '', mode: 'w', size: count * MiB, pool, extents,
  });
  const single = await open('bench/one', contiguous);
  const frag = await open('bench/halves', halves);
  const fd = fs.openSync(file, 'r+');
  const offsets = Float64Array.from({ length: count }, (_, i) => i * MiB);
  const chunk = fillPattern(Buffer.alloc(MiB));
  /** One writer, as the server's data-path thread: each piece by fs.writeSync, in order. */
  const plainPass = (map) => async () => {
    const plans = Array.from(offsets, (offset) => map.translate(offset, MiB));
    const start = process.hrtime.bigint();
    for (const pieces of plans) {
      for (const piece of pieces) {
        fs.writeSync(fd, chunk, piece.offsetRequest, piece.length, piece.offsetBacking);
      }
    }
    return Number(process.hrtime.bigint() - start) / 1e9;
  };
  const enginePass = (exp) => () => runDepth(count, 1, MiB, engineOp(exp, 'write', offsets, MiB));
  const cells = {
    'plain contiguous': plainPass(single.map),
    'plain halves': plainPass(frag.map),
    'engine contiguous': enginePass(single),
    'engine halves': enginePass(frag),
  };
  const seconds = new Map(Object.keys(cells).map((name) => [name, []]));
  const dirtied = new Map(Object.keys(cells).map((name) => [name, []]));
  let isRebuilt = true;
  for (let round = 0; round < ROUNDS; round++) {
    const names = Object.keys(cells);
    if (round % 2 === 1) names.reverse();
    for (const name of names) {
      isRebuilt = rebuildCache(file, 'read') && isRebuilt;
      const before = dirtyMiB();
      seconds.get(name).push(await cells[name]());
      dirtied.get(name).push((dirtyMiB() - before) / count);
    }
  }
  console.log(`\n1 MiB writes, first pass after a sequential read (large folios), ${count} MiB: ` +
    `one extent vs ${frag.map.count} 1 MiB extents in every other MiB` +
    `${isRebuilt ? '' : ' (dd could not drop the cache: passes after the first find it dirty)'}` +
    ' (ratio = halves/contiguous, of throughput; dirtied = page cache accounted dirty per MiB ' +
    'written):');
  const rate = (name) => count / median(seconds.get(name));
  for (const how of ['plain', 'engine']) {
    const a = `${how} contiguous`;
    const b = `${how} halves`;
    const ratios = seconds.get(a).map((s, i) => s / seconds.get(b)[i]);
    console.log(`  ${how.padEnd(6)}  contiguous ${fmt(rate(a)).padStart(8)} MiB/s, dirtied ` +
      `${median(dirtied.get(a)).toFixed(2)}   halves ${fmt(rate(b)).padStart(8)} MiB/s, dirtied ` +
      `${median(dirtied.get(b)).toFixed(2)}   ratio ${median(ratios).toFixed(3)}`);
  }
  fs.closeSync(fd);
  await single.close();
  await frag.close();
  await pool.close();
}

async function main() {
  console.log(`bench:engine  node ${process.version}  ${os.cpus().length} cpus  load ` +
    `${os.loadavg().map((l) => l.toFixed(2)).join(' ')}  rounds ${ROUNDS} (medians)`);
  benchTranslate();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xvd-bench-engine-'));
  try {
    const file = prepareFile(dir);
    await benchIo(file);
    await benchFragmented(file, 'write4k');
    await benchFragmented(file, 'read');
    await benchHalfFolios(file);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((error) => {
  console.error(error);
  process.exitCode = 1;
});
