// The parts of scripts/bench/clone.js (npm run bench:clone): the xvd CLI, a golden image, the
// first-write pass (one 4 KiB write into each extent, QUEUE_DEPTH in flight, through a raw NBD
// client, then a FLUSH), server start and stop, and the fio steady-state cells.
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const proc = require('./proc');
const { median } = require('./rounds');
const { FIO_JOBS: FIO_JOBS_ALL, runFio } = require('./clients');
const { RawClient, requestFrame, CMD } = require('./nbd-raw');

const ROOT = path.resolve(__dirname, '..', '..', '..');
const CLI = path.join(ROOT, 'dist', 'cli', 'main.js');
const MiB = 1024 ** 2;
const GiB = 1024 ** 3;
const TiB = 1024 ** 4;
const EXTENT = 4 * MiB;
const GOLDEN_BYTES = 2 * GiB;
const ROUNDS = 5;
const QUEUE_DEPTH = 32;
const WRITE = 4096;
const TIMING = { runtimeS: 3, rampS: 1 };
/** The main bench's 4 KiB random jobs (lib/clients.js). */
const FIO_JOBS = FIO_JOBS_ALL.filter((job) => ['randread-4k', 'randwrite-4k'].includes(job.id));

async function xvd(catalog, args, timeoutMs = 300000) {
  const result = await proc.run(process.execPath, [CLI, '--catalog', catalog, ...args],
    { timeoutMs });
  if (result.code !== 0) {
    throw new Error(`xvd ${args.join(' ')}: exit ${result.code}: ${proc.tail(result.stderr, 3)}`);
  }
  return { out: result.stdout.trim(), wallMs: result.wallMs };
}

async function run(command, args) {
  const result = await proc.run(command, args, { timeoutMs: 300000 });
  if (result.code !== 0) {
    throw new Error(`${command}: exit ${result.code}: ${proc.tail(result.stderr, 3)}`);
  }
  return result;
}

/** A golden image of recognisable data: a random MiB, stamped with its index, repeated. */
function writeGolden(file, bytes) {
  const block = Buffer.alloc(MiB);
  for (let at = 0; at < MiB; at += 4) block.writeUInt32LE((Math.random() * 2 ** 32) >>> 0, at);
  const fd = fs.openSync(file, 'w');
  try {
    for (let index = 0; index < bytes / MiB; index++) {
      block.writeUInt32LE(index, 0);
      fs.writeSync(fd, block, 0, MiB, index * MiB);
    }
  } finally {
    fs.closeSync(fd);
  }
}

function sparse(file, bytes) {
  fs.closeSync(fs.openSync(file, 'w'));
  fs.truncateSync(file, bytes);
}

/** Offsets of one 4 KiB write inside each extent, in random order. */
function firstWriteOffsets(bytes) {
  const offsets = [];
  for (let extent = 0; extent < bytes / EXTENT; extent++) {
    offsets.push(extent * EXTENT + Math.floor(Math.random() * (EXTENT / WRITE)) * WRITE);
  }
  for (let index = offsets.length - 1; index > 0; index--) {
    const other = Math.floor(Math.random() * (index + 1));
    [offsets[index], offsets[other]] = [offsets[other], offsets[index]];
  }
  return offsets;
}

/** The writes at `offsets`, QUEUE_DEPTH in flight, then a FLUSH: { iops, flushMs }. */
async function firstWrites(socketPath, exportName, offsets) {
  const client = await RawClient.connect({ path: socketPath });
  try {
    await client.handshake(exportName);
    const payload = Buffer.alloc(WRITE, 0xc3);
    const start = process.hrtime.bigint();
    let sent = 0;
    const send = () => {
      const offset = offsets[sent];
      client.write(Buffer.concat([requestFrame(CMD.WRITE, 0, BigInt(sent + 1), BigInt(offset),
        WRITE), payload]));
      sent += 1;
    };
    while (sent < Math.min(QUEUE_DEPTH, offsets.length)) send();
    for (let done = 0; done < offsets.length; done++) {
      const errno = await client.readSimpleReply(0);
      if (errno !== 0) throw new Error(`WRITE failed: errno ${errno}`);
      if (sent < offsets.length) send();
    }
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    const flushStart = process.hrtime.bigint();
    client.write(requestFrame(CMD.FLUSH, 0, 0n, 0n, 0));
    const flushed = await client.readSimpleReply(0);
    if (flushed !== 0) throw new Error(`FLUSH failed: errno ${flushed}`);
    return { iops: offsets.length / seconds,
      flushMs: Number(process.hrtime.bigint() - flushStart) / 1e6 };
  } finally {
    client.destroy();
  }
}

async function startServer(name, command, args, socketPath, dir) {
  fs.rmSync(socketPath, { force: true });
  const { child, state } = proc.startDetached(command, args,
    { logPath: path.join(dir, `${name}.log`) });
  const problem = await proc.waitForListener({ path: socketPath },
    { timeoutMs: 20000, isDead: () => state.exited });
  if (problem !== null) {
    await proc.stopGroup(child.pid);
    throw new Error(`${name}: ${problem}`);
  }
  return { pid: child.pid, stop: () => proc.stopGroup(child.pid) };
}

function uriOf(socketPath, exportName) {
  return `nbd+unix:///${exportName}?socket=${socketPath}`;
}

async function steady(socketPath, exportName, pid, dir) {
  const figures = {};
  for (const job of FIO_JOBS) {
    const cell = await runFio(job, { uri: uriOf(socketPath, exportName) }, pid, TIMING, dir);
    if (cell.error !== undefined) throw new Error(`fio ${job.id}: ${cell.error}`);
    figures[job.id] = cell.value;
  }
  return figures;
}

module.exports = {
  CLI, EXTENT, GOLDEN_BYTES, GiB, MiB, QUEUE_DEPTH, ROUNDS, TiB, firstWriteOffsets, firstWrites,
  median, run, sparse, startServer, steady, uriOf, writeGolden, xvd,
};

