#!/usr/bin/env node
// Fuzzes the data-path thread's reading of client bytes (native/src/request.c) with libFuzzer:
// builds native/fuzz/fuzz-request.c with clang (-fsanitize=fuzzer,address,undefined), replays
// every input under fixtures/fuzz/native/crashes/, then runs a campaign from the seeds in
// fixtures/fuzz/native/seeds/ (recorded from real clients; see --record-seeds) and from every
// case of the request corpus fixtures/requests/corpus.json (written as inputs into the work
// directory: its context as the preamble, then the header and its payload). A new crash is
// copied into fixtures/fuzz/native/crashes/, so it is replayed by every later run, and exits 1.
// The last stdout line is a JSON summary: execs, cov, ft, corpus size, seconds, crashes.
//
// Usage: fuzz-native.js [--minutes N | --runs N] [--seed S] [--work DIR] [--json]
//        (--work keeps the build and the corpus found there; default: a temporary directory)
//        fuzz-native.js --record-seeds   (rewrites fixtures/fuzz/native/seeds/ from real
//                                         sessions of nbdsh, qemu-io, qemu-img, nbdcopy against
//                                         nbdkit's memory plugin; needs those tools)
// npm test runs it through test/fuzz/native-request-fuzz.test.ts with a fixed seed and run count;
// `npm run fuzz:native -- --minutes 10` is a long campaign.
'use strict';
const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { loadTypeScript } = require('./gen-protocol.js');

const ROOT = path.join(__dirname, '..');
const FIXTURES = path.join(ROOT, 'fixtures', 'fuzz', 'native');
const SEEDS = path.join(FIXTURES, 'seeds');
const CRASHES = path.join(FIXTURES, 'crashes');
const REQUEST_CORPUS = path.join(ROOT, 'fixtures', 'requests', 'corpus.json');
const SOURCES = [path.join(ROOT, 'native', 'fuzz', 'fuzz-request.c'),
  path.join(ROOT, 'native', 'src', 'request.c')];
const CFLAGS = ['-g', '-O1', '-fsanitize=fuzzer,address,undefined', '-fno-sanitize-recover=all',
  '-std=gnu11', '-Wall', '-Wextra', '-Werror'];
/** libFuzzer's bound on one input: a few frames and a little payload */
const INPUT_BYTES_MAX = 4096;
/** fuzz-request.c's preamble: options 1, eflags 2, log2(block size) 1, size 8, cut seed 1 */
const PREAMBLE_LENGTH = 13;

function parseArgs(argv) {
  const options = { minutes: 0, runs: 0, seed: 0, work: '', isJson: false, isRecord: false };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = () => {
      i += 1;
      if (i >= argv.length) throw new Error(`${arg} needs a value`);
      return argv[i];
    };
    if (arg === '--minutes') options.minutes = Number(value());
    else if (arg === '--runs') options.runs = Number(value());
    else if (arg === '--seed') options.seed = Number(value());
    else if (arg === '--work') options.work = value();
    else if (arg === '--json') options.isJson = true;
    else if (arg === '--record-seeds') options.isRecord = true;
    else throw new Error(`unknown argument ${arg}`);
  }
  if (!(options.minutes >= 0) || !Number.isInteger(options.runs) || options.runs < 0) {
    throw new Error('--minutes must be a number >= 0, --runs an integer >= 0');
  }
  if (options.minutes === 0 && options.runs === 0) options.minutes = 1;
  return options;
}

/** Builds the harness into `work`; returns its path. */
function build(work) {
  const binary = path.join(work, 'fuzz-request');
  const result = spawnSync('clang', [...CFLAGS, ...SOURCES, '-o', binary], { encoding: 'utf8' });
  if (result.error !== undefined || result.status !== 0) {
    const why = result.error !== undefined ? result.error.message : result.stderr;
    throw new Error(`fuzz-native: clang failed: ${why}`);
  }
  return binary;
}

function filesIn(dir) {
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir).filter((name) => !name.startsWith('.') && name !== 'README')
    .map((name) => path.join(dir, name)).filter((file) => fs.statSync(file).isFile());
}

/** Runs every known crash input once: they must all pass now. */
function replayCrashes(binary) {
  const crashes = filesIn(CRASHES);
  if (crashes.length === 0) return 0;
  const result = spawnSync(binary, crashes, { encoding: 'utf8' });
  if (result.status !== 0) {
    process.stderr.write(result.stderr);
    throw new Error('fuzz-native: a recorded crash input fails again');
  }
  return crashes.length;
}

/** Writes each case of the request corpus as a harness input into `dir`; returns the count. */
function writeCorpusSeeds(dir) {
  fs.mkdirSync(dir, { recursive: true });
  const corpus = JSON.parse(fs.readFileSync(REQUEST_CORPUS, 'utf8'));
  let count = 0;
  for (const entry of corpus.cases) {
    const context = typeof entry.context === 'string' ? corpus.contexts[entry.context]
      : entry.context;
    const header = Buffer.from(entry.header.replaceAll(' ', ''), 'hex');
    const payloadMax = INPUT_BYTES_MAX - PREAMBLE_LENGTH - header.length;
    const input = Buffer.concat([
      preambleOf(context.isStructured, context.hasBaseAllocation, context.eflags,
        Math.log2(context.blockSizeMin), context.size, count % 256),
      header, Buffer.alloc(Math.min(entry.payload, payloadMax), 0xa5)]);
    fs.writeFileSync(path.join(dir, `request-corpus-${String(count).padStart(4, '0')}`), input);
    count += 1;
  }
  return count;
}

/** Runs the campaign; resolves to its summary. */
function campaign(binary, work, options) {
  const corpus = path.join(work, 'corpus');
  const artifacts = path.join(work, 'artifacts');
  fs.mkdirSync(corpus, { recursive: true });
  fs.mkdirSync(artifacts, { recursive: true });
  const args = [`-seed=${options.seed || 1}`, `-max_len=${INPUT_BYTES_MAX}`,
    '-print_final_stats=1', `-artifact_prefix=${artifacts}/`];
  if (options.runs > 0) args.push(`-runs=${options.runs}`);
  if (options.minutes > 0) args.push(`-max_total_time=${Math.ceil(options.minutes * 60)}`);
  const corpusSeeds = path.join(work, 'request-corpus');
  writeCorpusSeeds(corpusSeeds);
  // new units go to the first directory, never into fixtures/
  args.push(corpus, SEEDS, corpusSeeds);
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn(binary, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let tail = '';
    let last = null;
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (text) => {
      tail = (tail + text).slice(-20000);
      for (const line of text.split('\n')) {
        const match = /^#(\d+)\s+\S+\s+cov: (\d+) ft: (\d+) corp: (\d+)/.exec(line);
        if (match !== null) last = match.slice(1).map(Number);
      }
    });
    child.on('error', reject);
    child.on('close', (code) => {
      const execs = /stat::number_of_executed_units:\s*(\d+)/.exec(tail);
      const crashes = filesIn(artifacts);
      resolve({
        exitCode: code, execs: execs === null ? null : Number(execs[1]),
        cov: last === null ? null : last[1], ft: last === null ? null : last[2],
        corpus: last === null ? null : last[3], seconds: (Date.now() - started) / 1000,
        crashes: crashes.map((file) => path.basename(file)), artifacts, log: tail,
      });
    });
  });
}

async function fuzz(options) {
  const isTemporary = options.work === '';
  const work = isTemporary ? fs.mkdtempSync(path.join(os.tmpdir(), 'xvd-fuzz-native-'))
    : options.work;
  fs.mkdirSync(work, { recursive: true });
  const binary = build(work);
  const replayed = replayCrashes(binary);
  const summary = await campaign(binary, work, options);
  for (const name of summary.crashes) {
    fs.mkdirSync(CRASHES, { recursive: true });
    fs.copyFileSync(path.join(summary.artifacts, name), path.join(CRASHES, name));
  }
  if (!options.isJson || summary.exitCode !== 0) process.stderr.write(summary.log);
  const shown = { ...summary, replayed };
  delete shown.log;
  delete shown.artifacts;
  process.stdout.write(`${JSON.stringify(shown)}\n`);
  if (isTemporary) fs.rmSync(work, { recursive: true, force: true }); // crashes were copied
  return summary.exitCode === 0 && summary.crashes.length === 0 ? 0 : 1;
}

// --- seeds from real sessions ---

const { NBD_OPT, NBD_FLAG_T: T } = loadTypeScript(path.join(ROOT, 'src', 'nbd', 'constants.ts'));
const EFLAGS_WRITABLE = T.HAS_FLAGS | T.SEND_FLUSH | T.SEND_FUA | T.SEND_TRIM |
  T.SEND_WRITE_ZEROES | T.CAN_MULTI_CONN | T.SEND_CACHE | T.SEND_FAST_ZERO;
const EFLAGS_READ_ONLY = T.HAS_FLAGS | T.READ_ONLY | T.SEND_FLUSH | T.CAN_MULTI_CONN |
  T.SEND_CACHE;
const SIZE = 1 << 20;
const STREAM_BYTES_MAX = 3000; // of each session's transmission phase (seeds stay small)

/** The transmission-phase bytes of a client's side of a session, and what it negotiated. */
function transmissionOf(client) {
  let at = 4; // client flags
  let isStructured = false;
  let hasMeta = false;
  while (at + 16 <= client.length) {
    const option = client.readUInt32BE(at + 8);
    const length = client.readUInt32BE(at + 12);
    at += 16 + length;
    if (option === NBD_OPT.STRUCTURED_REPLY) isStructured = true;
    if (option === NBD_OPT.SET_META_CONTEXT) hasMeta = true;
    if (option === NBD_OPT.GO || option === NBD_OPT.EXPORT_NAME) {
      return { stream: client.subarray(at), isStructured, hasMeta };
    }
  }
  return null;
}

/** fuzz-request.c's preamble: options, eflags, log2(block size), size, cut seed. */
function preambleOf(isStructured, hasMeta, eflags, blockLog2, size, seed) {
  const bytes = Buffer.alloc(PREAMBLE_LENGTH);
  bytes[0] = (isStructured ? 1 : 0) | (hasMeta ? 2 : 0);
  bytes.writeUInt16BE(eflags, 1);
  bytes[3] = blockLog2;
  bytes.writeBigUInt64BE(BigInt(size), 4);
  bytes[12] = seed;
  return bytes;
}

/** A proxy on `listen` to nbdkit on `target` that keeps every client's bytes. */
function recordingProxy(listen, target, sessions) {
  const net = require('node:net');
  const server = net.createServer((client) => {
    const chunks = [];
    sessions.push(chunks);
    const upstream = net.connect(target);
    client.on('data', (chunk) => {
      chunks.push(Buffer.from(chunk));
      upstream.write(chunk);
    });
    upstream.pipe(client);
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
  });
  return new Promise((resolve) => server.listen(listen, () => resolve(server)));
}

const NBDSH_SCRIPTS = [
  'h.pread(4096, 0); h.pwrite(b"x" * 4096, 8192); h.flush(); h.pread(512, 1048064)',
  'h.pwrite(b"y" * 65536, 0, nbd.CMD_FLAG_FUA); h.zero(4096, 65536); h.trim(4096, 0)',
  'h.zero(8192, 0, nbd.CMD_FLAG_NO_HOLE); h.cache(4096, 0); h.pread(1, 7)',
  'h.block_status(1048576, 0, lambda *a: 0); ' +
    'h.pread_structured(65536, 131072, lambda *a: 0, nbd.CMD_FLAG_DF)',
  'h.pread_structured(4096, 4096, lambda *a: 0); h.block_status(4096, 0, lambda *a: 0, ' +
    'nbd.CMD_FLAG_REQ_ONE)',
  'h.zero(4096, 0, nbd.CMD_FLAG_FAST_ZERO); h.pwrite(b"z" * 3, 1048573)',
];

async function recordSeeds() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xvd-record-'));
  const target = path.join(dir, 'nbdkit.sock');
  const listen = path.join(dir, 'proxy.sock');
  const nbdkit = spawn('nbdkit', ['-f', '-U', target, 'memory', String(SIZE)],
    { stdio: 'ignore' });
  for (let i = 0; i < 100 && !fs.existsSync(target); i++) {
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const sessions = [];
  const proxy = await recordingProxy(listen, target, sessions);
  const uri = `nbd+unix:///?socket=${listen}`;
  // spawnSync blocks the proxy: clients run through an async spawn instead
  const runAsync = (command, args) => new Promise((resolve) => {
    const child = spawn(command, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (chunk) => { err += chunk; });
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      if (code !== 0) process.stderr.write(`record: ${command}: ${err}\n`);
      resolve();
    });
  });
  for (const script of NBDSH_SCRIPTS) {
    await runAsync('/usr/bin/python3', ['-m', 'nbd', '--base-allocation', '-u', uri, '-c', script]);
  }
  await runAsync('qemu-io', ['-f', 'raw', '-c', 'write -P 0x55 0 64k', '-c', 'read 4k 8k',
    '-c', 'write -z 128k 64k', '-c', 'discard 0 4k', '-c', 'flush', uri]);
  await runAsync('qemu-img', ['map', '--output=json', '-f', 'raw', uri]);
  const image = path.join(dir, 'image.raw');
  fs.writeFileSync(image, Buffer.concat([Buffer.alloc(8192, 0x61), Buffer.alloc(SIZE - 8192)]));
  await runAsync('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', image, uri]);
  await runAsync('nbdcopy', [image, uri]);
  await runAsync('nbdcopy', [uri, 'null:']);
  await runAsync('nbdinfo', ['--map', uri]);
  await new Promise((resolve) => setTimeout(resolve, 300));
  proxy.close();
  nbdkit.kill('SIGTERM');
  fs.rmSync(SEEDS, { recursive: true, force: true });
  fs.mkdirSync(SEEDS, { recursive: true });
  let count = 0;
  sessions.forEach((chunks, index) => {
    const found = transmissionOf(Buffer.concat(chunks));
    if (found === null || found.stream.length === 0) return;
    const stream = found.stream.subarray(0, STREAM_BYTES_MAX);
    const variants = [[EFLAGS_WRITABLE, 0], [EFLAGS_WRITABLE, 9], [EFLAGS_READ_ONLY, 12]];
    variants.forEach(([eflags, blockLog2], variant) => {
      const head = preambleOf(found.isStructured, found.hasMeta, eflags, blockLog2, SIZE,
        index + variant);
      const name = `session-${String(index).padStart(2, '0')}-${variant}.bin`;
      fs.writeFileSync(path.join(SEEDS, name), Buffer.concat([head, stream]));
      count += 1;
    });
  });
  fs.rmSync(dir, { recursive: true, force: true });
  process.stdout.write(`${JSON.stringify({ sessions: sessions.length, seeds: count })}\n`);
  return count > 0 ? 0 : 1;
}

async function main() {
  const options = parseArgs(process.argv.slice(2));
  process.exitCode = options.isRecord ? await recordSeeds() : await fuzz(options);
}

main().catch((error) => {
  process.stderr.write(`${error.stack}\n`);
  process.exitCode = 2;
});
