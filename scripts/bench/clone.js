// npm run bench:clone: what copy-on-write clones cost (issue 18), beside qemu-nbd serving a qcow2
// overlay on the same golden raw image. A few minutes at most; run it on a quiet machine.
//
// What it measures, each figure the median of ROUNDS rounds (ratios paired round by round):
//   1. Clone a 1 TiB VD: `xvd clone` wall time (the CLI process, as a user runs it) and the
//      catalog call alone (in process), against `qemu-img create -f qcow2 -b` on a sparse 1 TiB
//      raw image. The VD is one extent run of a sparse 1 TiB pool image.
//   2. First write to a shared extent: 4 KiB writes, one into each extent of a fresh clone of a
//      GOLDEN_BYTES golden VD, in random order, QUEUE_DEPTH in flight (every write copies its
//      4 MiB extent), as IOPS, against the same writes on a VD of its own (the golden data
//      imported into a second VD); beside them qemu-nbd on a fresh overlay (64 KiB clusters)
//      and on a raw copy of the golden image.
//   3. Steady state, after that pass (every extent copied once): fio randread and randwrite 4 KiB
//      qd32 over the clone against the VD of its own (target: within 5%), and qemu-nbd's overlay
//      against its raw copy; which runs first alternates from round to round.
// xvd serves over a Unix socket from this checkout's dist/ (npm run build first); every server
// runs one at a time against its own files in a temp dir removed at the end. Output: the figures
// on stdout, every round's in results/bench-clone-<time>.json. The parts are lib/clone-io.js.
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const proc = require('./lib/proc');
const {
  CLI, EXTENT, GOLDEN_BYTES, GiB, MiB, QUEUE_DEPTH, ROUNDS, TiB, firstWriteOffsets, firstWrites,
  median, run, sparse, startServer, steady, writeGolden, xvd,
} = require('./lib/clone-io');

/** 1: the time to clone a 1 TiB VD (CLI and catalog call), and a qcow2 overlay of 1 TiB. */
async function cloneTime(dir) {
  const catalog = path.join(dir, 'big.sqlite');
  const member = path.join(dir, 'big.img');
  sparse(member, TiB + 64 * MiB);
  await xvd(catalog, ['format', member, '--extent-size', '4M']);
  const origin = (await xvd(catalog, ['create', '1T', '--no-zero'])).out;
  const cli = [];
  for (let round = 0; round < ROUNDS; round++) {
    cli.push((await xvd(catalog, ['clone', origin])).wallMs);
  }
  const { openCatalog } = require(path.join(path.dirname(CLI), '..', 'catalog', 'index.js'));
  const direct = openCatalog(catalog);
  const call = [];
  try {
    for (let round = 0; round < ROUNDS; round++) {
      const start = process.hrtime.bigint();
      direct.cloneVd(Number(origin));
      call.push(Number(process.hrtime.bigint() - start) / 1e6);
    }
  } finally {
    direct.close();
  }
  const raw = path.join(dir, 'big.raw');
  sparse(raw, TiB);
  const qemu = [];
  for (let round = 0; round < ROUNDS; round++) {
    const overlay = path.join(dir, `big-${round}.qcow2`);
    qemu.push((await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', raw, '-F', 'raw',
      overlay])).wallMs);
  }
  fs.rmSync(member);
  fs.rmSync(raw);
  return { cliMs: median(cli), callMs: median(call), qemuImgMs: median(qemu) };
}

/** The pool, the golden VD and a VD of its own with the same data; xvd serving the own VD. */
async function prepareXvd(dir, golden) {
  const catalog = path.join(dir, 'pool.sqlite');
  const member = path.join(dir, 'pool.img');
  sparse(member, (ROUNDS + 3) * GOLDEN_BYTES + 64 * MiB);
  await xvd(catalog, ['format', member, '--extent-size', `${EXTENT / MiB}M`]);
  const goldenId = (await xvd(catalog, ['import', golden])).out;
  const ownId = (await xvd(catalog, ['import', golden])).out;
  await xvd(catalog, ['vbd', 'add', `vd:${ownId}`, 'own', '--domain', '1', '--mode', 'w']);
  const socket = path.join(dir, 'xvd.sock');
  const server = await startServer('xvd', process.execPath,
    [CLI, '--catalog', catalog, 'serve', '--socket', socket], socket, dir);
  return { catalog, goldenId, socket, server };
}

/** One round of xvd: a fresh clone's first writes and steady state, the own VD's alike. */
async function xvdRound(dir, pool, round, offsets) {
  const cloneId = (await xvd(pool.catalog, ['clone', pool.goldenId])).out;
  await xvd(pool.catalog, ['vbd', 'add', `vd:${cloneId}`, `c${round}`, '--domain', '1',
    '--mode', 'w']);
  const clone = await firstWrites(pool.socket, `1/c${round}`, offsets);
  const own = await firstWrites(pool.socket, '1/own', offsets);
  // which of the two runs first alternates, so that a load swing does not favour one
  const names = round % 2 === 0 ? [`1/c${round}`, '1/own'] : ['1/own', `1/c${round}`];
  const figures = {};
  for (const name of names) figures[name] = await steady(pool.socket, name, pool.server.pid, dir);
  return { clone, own, cloneSteady: figures[`1/c${round}`], ownSteady: figures['1/own'] };
}

/** One round of qemu-nbd: a fresh overlay on the golden image, and a raw copy of it. */
async function qemuRound(dir, golden, raw, round, offsets) {
  const overlay = path.join(dir, `overlay-${round}.qcow2`);
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', golden, '-F', 'raw', overlay]);
  const result = {};
  const both = [['overlay', overlay, 'qcow2'], ['raw', raw, 'raw']];
  for (const [name, file, format] of round % 2 === 0 ? both : both.reverse()) {
    const socket = path.join(dir, `qemu-${name}.sock`);
    const server = await startServer(`qemu-${name}`, 'qemu-nbd', ['--socket', socket,
      '--format', format, '--export-name', 'disk', '--persistent', '--shared', '8',
      '--cache', 'writeback', file], socket, dir);
    try {
      result[name] = await firstWrites(socket, 'disk', offsets);
      result[`${name}Steady`] = await steady(socket, 'disk', server.pid, dir);
    } finally {
      await server.stop();
    }
  }
  fs.rmSync(overlay);
  return result;
}

function ratios(rounds, pick) {
  return median(rounds.map(pick));
}

function report(clone, xvdRounds, qemuRounds) {
  const lines = [];
  const f = (value) => value >= 100 ? value.toFixed(0) : value.toFixed(2);
  lines.push(`clone of a 1 TiB VD: xvd clone ${f(clone.cliMs)} ms (CLI process), ` +
    `catalog call ${f(clone.callMs)} ms; qemu-img create -b (qcow2) ${f(clone.qemuImgMs)} ms`);
  const first = (rounds, a, b) => `${f(median(rounds.map((r) => r[a].iops)))} vs ` +
    `${f(median(rounds.map((r) => r[b].iops)))} IOPS, ratio ` +
    `${ratios(rounds, (r) => r[a].iops / r[b].iops).toFixed(3)}`;
  lines.push(`first write, 4 KiB into each ${EXTENT / MiB} MiB extent of ${GOLDEN_BYTES / GiB} ` +
    `GiB, qd${QUEUE_DEPTH}: xvd fresh clone vs own VD ${first(xvdRounds, 'clone', 'own')}; ` +
    `qemu-nbd fresh overlay vs raw ${first(qemuRounds, 'overlay', 'raw')}`);
  lines.push(`FLUSH after it: xvd clone ${f(median(xvdRounds.map((r) => r.clone.flushMs)))} ms ` +
    `(remaps committed), own ${f(median(xvdRounds.map((r) => r.own.flushMs)))} ms; qemu overlay ` +
    `${f(median(qemuRounds.map((r) => r.overlay.flushMs)))} ms`);
  for (const job of ['randread-4k', 'randwrite-4k']) {
    const steadyOf = (rounds, a, b) => `${f(median(rounds.map((r) => r[a][job])))} vs ` +
      `${f(median(rounds.map((r) => r[b][job])))} IOPS, ratio ` +
      `${ratios(rounds, (r) => r[a][job] / r[b][job]).toFixed(3)}`;
    lines.push(`steady ${job} qd32: xvd clone vs own VD ` +
      `${steadyOf(xvdRounds, 'cloneSteady', 'ownSteady')}; qemu-nbd overlay vs raw ` +
      `${steadyOf(qemuRounds, 'overlaySteady', 'rawSteady')}`);
  }
  return lines.join('\n');
}

async function main() {
  if (!fs.existsSync(CLI)) throw new Error('dist/cli/main.js missing: npm run build first');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xvd-bench-clone-'));
  try {
    const clone = await cloneTime(dir);
    const golden = path.join(dir, 'golden.raw');
    writeGolden(golden, GOLDEN_BYTES);
    const raw = path.join(dir, 'raw-copy.raw');
    fs.copyFileSync(golden, raw);
    const pool = await prepareXvd(dir, golden);
    const xvdRounds = [];
    const qemuRounds = [];
    try {
      for (let round = 0; round < ROUNDS; round++) {
        const offsets = firstWriteOffsets(GOLDEN_BYTES);
        xvdRounds.push(await xvdRound(dir, pool, round, offsets));
        qemuRounds.push(await qemuRound(dir, golden, raw, round, offsets));
        process.stderr.write(`round ${round + 1}/${ROUNDS} done\n`);
      }
    } finally {
      await pool.server.stop();
    }
    const text = report(clone, xvdRounds, qemuRounds);
    process.stdout.write(`${text}\n`);
    const results = path.join(__dirname, '..', '..', 'results');
    fs.mkdirSync(results, { recursive: true });
    const json = path.join(results, `bench-clone-${new Date().toISOString()}.json`);
    fs.writeFileSync(json, JSON.stringify({ clone, xvdRounds, qemuRounds, text }, null, 2));
    process.stdout.write(`raw figures: ${path.relative(process.cwd(), json)}\n`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((error) => {
  process.stderr.write(`bench:clone: ${error.stack || error.message}\n`);
  proc.killAllGroupsSync();
  process.exit(1);
});
