#!/usr/bin/env node
/**
 * bench:catalog — timings of the catalog at scale (not a test): format of 64 TiB of sparse images
 * in 4 MiB extents (16 M extents), create/zero/delete of a 1 TiB VD, and the same after the pool
 * was fragmented by many small VDs. Prints the median of several runs and the catalog file size.
 * Run through `npm run bench:catalog` (builds dist/ first).
 */
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { openCatalog, identityOfFile, zeroPending } = require('../../dist/catalog');

const TiB = 1024 ** 4;
const MiB = 1024 ** 2;
const RUNS = 5;
const MEMBERS = 16;
const MEMBER_BYTES = 4 * TiB;

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

function timeMs(fn) {
  const start = process.hrtime.bigint();
  const result = fn();
  return { ms: Number(process.hrtime.bigint() - start) / 1e6, result };
}

async function timeMsAsync(fn) {
  const start = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - start) / 1e6;
}

function fileBytes(file) {
  let total = 0;
  for (const suffix of ['', '-wal', '-shm']) {
    try { total += fs.statSync(file + suffix).size; } catch { /* absent */ }
  }
  return total;
}

function formatPool(dir) {
  const file = path.join(dir, `catalog-${Math.random().toString(36).slice(2)}.sqlite`);
  const catalog = openCatalog(file);
  const { ms } = timeMs(() => {
    for (let i = 0; i < MEMBERS; i++) {
      const image = path.join(dir, `m${i}.img`);
      if (!fs.existsSync(image)) {
        fs.writeFileSync(image, '');
        fs.truncateSync(image, MEMBER_BYTES);
      }
      const st = fs.statSync(image);
      catalog.formatMember({ path: image, kind: 'file', sizeBytes: MEMBER_BYTES,
        extentSize: 4 * MiB, identity: identityOfFile(st.dev, st.ino) });
    }
  });
  return { catalog, file, ms };
}

async function cycle(catalog) {
  const create = timeMs(() => catalog.createVd({ size: TiB }));
  const zeroMs = await timeMsAsync(() => zeroPending(catalog));
  const del = timeMs(() => catalog.deleteVd(create.result.id));
  return { createMs: create.ms, zeroMs, deleteMs: del.ms, runs: create.result.extents.length };
}

async function main() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xvd-bench-catalog-'));
  try {
    const formats = [];
    for (let i = 0; i < RUNS; i++) {
      const pool = formatPool(dir);
      formats.push(pool.ms);
      pool.catalog.close();
      fs.rmSync(pool.file, { force: true });
    }
    const { catalog, file } = formatPool(dir);
    const fresh = [];
    for (let i = 0; i < RUNS; i++) fresh.push(await cycle(catalog));
    // Fragment: 2000 small VDs, every other one deleted.
    const frag = timeMs(() => {
      for (let i = 0; i < 2000; i++) {
        const vd = catalog.createVd({ size: (1 + (i % 7)) * 4 * MiB, zero: false });
        if (i % 2 === 0) catalog.deleteVd(vd.id);
      }
    });
    const fragmented = [];
    for (let i = 0; i < RUNS; i++) fragmented.push(await cycle(catalog));
    const checkMs = timeMs(() => catalog.check()).ms;
    const report = {
      pool: `${MEMBERS} sparse images x 4 TiB = 64 TiB, 4 MiB extents (16 M extents)`,
      formatMs: median(formats),
      create1TiBMs: median(fresh.map((r) => r.createMs)),
      zero1TiBMs: median(fresh.map((r) => r.zeroMs)),
      delete1TiBMs: median(fresh.map((r) => r.deleteMs)),
      runsPerVd: fresh[0].runs,
      fragment2000VdsMs: frag.ms,
      fragmentedCreate1TiBMs: median(fragmented.map((r) => r.createMs)),
      fragmentedDelete1TiBMs: median(fragmented.map((r) => r.deleteMs)),
      fragmentedRunsPerVd: fragmented[0].runs,
      checkMs,
      catalogBytes: fileBytes(file),
    };
    catalog.close();
    report.catalogBytesAfterClose = fileBytes(file);
    process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((error) => {
  process.stderr.write(`bench:catalog: ${error.stack ?? error}\n`);
  process.exitCode = 1;
});
