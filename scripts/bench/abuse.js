#!/usr/bin/env node
// npm run bench:abuse [-- --connections N --seconds S --transport tcp|unix --memory-max SIZE
//                         --repo DIR]
// (--repo: the xvd of another checkout, built, e.g. an older commit, for a before/after)
//
// The memory budget under hostile clients, as figures (not a test): a real `xvd serve` (a 512
// MiB VD on an image member, so plain READs and WRITEs go to the data-path threads and the rest
// to JS) is attacked by N connections (default 256) of every kind that holds server memory:
//   read-pipeline  200 plain 1 MiB READs, never reads a reply
//   read-fua       the same with FUA (served on the JS path)
//   read-df        structured replies, DF READs (JS path)
//   write-stall    a 32 MiB WRITE header and all of its payload but the last KiB, then nothing
//   write-fua      the same with FUA
//   write-noread   16 whole 1 MiB WRITEs, never reads a reply
//   option-stall   an option header claiming 64 KiB and half of it, then nothing
// Meanwhile one well-behaved client does 4 KiB random READs one at a time. The server's RSS
// (/proc/PID/status) is sampled every 100 ms. Printed: RSS before, peak under attack (also the
// kernel's VmHWM), and after the attackers left; the good client's latency percentiles alone
// and under attack, and their ratio; and the verdict against the targets (RSS < 512 MiB, p99 <
// 50 ms). The attack lasts --seconds (default 10), well inside the stall deadline, so the
// attackers hold what they can for the whole measurement.
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const proc = require('./lib/proc');
const { CMD, FLAG, RawClient, optionFrame, requestFrame } = require('./lib/nbd-raw');

const MiB = 1024 * 1024;
const KINDS = ['read-pipeline', 'read-fua', 'read-df', 'write-stall', 'write-fua',
  'write-noread', 'option-stall'];
const RSS_TARGET_BYTES = 512 * MiB;
const P99_TARGET_MS = 50;
const VD_BYTES = 512 * MiB;
const SAMPLE_MS = 100;

function argsOf(argv) {
  const args = { connections: 256, seconds: 10, transport: 'tcp', memoryMax: null,
    repo: path.resolve(__dirname, '..', '..') };
  for (let index = 0; index < argv.length; index++) {
    const [flag, value] = [argv[index], argv[index + 1]];
    if (flag === '--connections') args.connections = Number(value);
    else if (flag === '--seconds') args.seconds = Number(value);
    else if (flag === '--transport') args.transport = value;
    else if (flag === '--memory-max') args.memoryMax = value;
    else if (flag === '--repo') args.repo = path.resolve(value);
    else throw new Error(`bench:abuse: unknown argument ${flag}`);
    index++;
  }
  if (!(args.connections >= 1 && args.connections <= 4000)) throw new Error('--connections');
  if (!(args.seconds >= 1 && args.seconds <= 600)) throw new Error('--seconds 1..600');
  if (!['tcp', 'unix'].includes(args.transport)) throw new Error('--transport tcp|unix');
  return args;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function rssOf(pid) {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const field = (name) => Number(new RegExp(`${name}:\\s+(\\d+) kB`).exec(status)[1]) * 1024;
  return { rss: field('VmRSS'), hwm: field('VmHWM') };
}

async function cliOk(cli, args) {
  const result = await proc.run(process.execPath, [...cli, ...args], { timeoutMs: 60000 });
  if (result.code !== 0) throw new Error(`xvd ${args.join(' ')}: ${proc.tail(result.stderr)}`);
  return result.stdout.trim();
}

async function startServe(dir, args) {
  const catalog = path.join(dir, 'catalog.sqlite');
  const cli = [path.join(args.repo, 'dist', 'cli', 'main.js'), '--catalog', catalog];
  const help = await proc.run(process.execPath, [...cli, 'serve', '--help']);
  // an older xvd has no --max-connections: it serves at most 256 connections, the good one too
  const hasMax = help.stdout.includes('--max-connections');
  if (!hasMax && args.connections > 255) args.connections = 255;
  await cliOk(cli, ['format', path.join(dir, 'member.img'), '--size', `${VD_BYTES / MiB + 64}M`]);
  const id = await cliOk(cli, ['create', `${VD_BYTES / MiB}M`, '--no-zero']);
  await cliOk(cli, ['vbd', 'add', `vd:${id}`, 'xvda', '--domain', '1', '--mode', 'w']);
  const port = await proc.freePort();
  const socketPath = path.join(dir, 'nbd.sock');
  const target = args.transport === 'tcp' ? { host: '127.0.0.1', port } : { path: socketPath };
  const flags = ['serve', '--listen', `127.0.0.1:${port}`, '--socket', socketPath,
    ...(hasMax ? ['--max-connections', String(args.connections + 8)] : []),
    ...(args.memoryMax === null ? [] : ['--memory-max', args.memoryMax])];
  const server = proc.startDetached(process.execPath, [...cli, ...flags],
    { logPath: path.join(dir, 'serve.log'), env: { ...process.env, XVD_LOG_LEVEL: 'warn' } });
  const failure = await proc.waitForListener(target, { isDead: () => server.state.exited });
  if (failure !== null) throw new Error(`xvd serve: ${failure}`);
  return { server, target };
}

/** Opens one hostile connection of `kind` and leaves it holding what it can. */
async function attack(target, kind, index) {
  const client = await RawClient.connect(target);
  if (kind === 'option-stall') {
    await client.read(18);
    client.write(Buffer.from([0, 0, 0, 3]));
    client.write(optionFrame(0x1234, Buffer.alloc(64 * 1024)).subarray(0, 16 + 32 * 1024));
    return client;
  }
  await client.handshake('1/xvda', { structured: kind === 'read-df' });
  client.pause(); // from here on it takes no reply
  const offsetOf = (n) => ((index * 7 + n) % (VD_BYTES / MiB)) * MiB;
  if (kind.startsWith('read-')) {
    const flags = kind === 'read-fua' ? FLAG.FUA : kind === 'read-df' ? FLAG.DF : 0;
    for (let n = 0; n < 200; n++) client.write(requestFrame(CMD.READ, flags, n, offsetOf(n), MiB));
  } else if (kind === 'write-noread') {
    for (let n = 0; n < 16; n++) {
      client.write(requestFrame(CMD.WRITE, 0, n, offsetOf(n), MiB));
      client.write(Buffer.alloc(MiB, n));
    }
  } else {
    client.write(requestFrame(CMD.WRITE, kind === 'write-fua' ? FLAG.FUA : 0, 1, 0, 32 * MiB));
    client.write(Buffer.alloc(32 * MiB - 1024, 0xab));
  }
  return client;
}

/** 4 KiB random READs one at a time for `seconds`: latencies in ms (failures counted). */
async function goodClient(target, seconds) {
  const client = await RawClient.connect(target);
  await client.handshake('1/xvda');
  const latencies = [];
  let failures = 0;
  const end = Date.now() + seconds * 1000;
  for (let n = 0; Date.now() < end && n < 1e6; n++) {
    const offset = Math.floor(Math.random() * (VD_BYTES / 4096)) * 4096;
    const start = process.hrtime.bigint();
    client.write(requestFrame(CMD.READ, 0, n, offset, 4096));
    if ((await client.readSimpleReply(4096)) !== 0) failures++;
    latencies.push(Number(process.hrtime.bigint() - start) / 1e6);
  }
  client.write(requestFrame(CMD.DISC, 0, 0, 0, 0));
  client.destroy();
  return { latencies, failures };
}

function percentile(sorted, fraction) {
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * fraction))];
}

function summary({ latencies, failures }) {
  const sorted = [...latencies].sort((a, b) => a - b);
  return { count: sorted.length, failures, p50: percentile(sorted, 0.5),
    p99: percentile(sorted, 0.99), max: sorted[sorted.length - 1] };
}

async function sampleWhile(pid, promise) {
  let peak = 0;
  let isDone = false;
  promise.finally(() => { isDone = true; });
  while (!isDone) {
    peak = Math.max(peak, rssOf(pid).rss);
    await sleep(SAMPLE_MS);
  }
  return peak;
}

async function main() {
  const args = argsOf(process.argv.slice(2));
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xvd-abuse-'));
  const { server, target } = await startServe(dir, args);
  const pid = server.child.pid;
  try {
    const quiet = summary(await goodClient(target, Math.min(args.seconds, 5)));
    const before = rssOf(pid).rss;
    const attackers = [];
    for (let index = 0; index < args.connections; index++) {
      attackers.push(await attack(target, KINDS[index % KINDS.length], index));
    }
    const measured = goodClient(target, args.seconds);
    const peak = await sampleWhile(pid, measured);
    const abused = summary(await measured);
    const { hwm } = rssOf(pid);
    const alive = attackers.filter((client) => !client.isEnded).length;
    for (const client of attackers) client.destroy();
    await sleep(2000); // the server notices the closes; RSS after is a figure, not a verdict
    const after = rssOf(pid).rss;
    report(args, { quiet, abused, before, peak, hwm, after, alive, isAlive: !server.state.exited });
  } finally {
    await proc.stopGroup(pid);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

function revisionOf(repo) {
  const result = require('node:child_process').spawnSync('git', ['-C', repo, 'rev-parse',
    '--short', 'HEAD'], { encoding: 'utf8' });
  return result.status === 0 ? result.stdout.trim() : 'of unknown revision';
}

function report(args, figures) {
  const mib = (bytes) => `${(bytes / MiB).toFixed(0)} MiB`;
  const ms = (value) => `${value.toFixed(2)} ms`;
  const { quiet, abused } = figures;
  const lines = [
    `bench:abuse: xvd ${revisionOf(args.repo)}: ${args.connections} hostile connections over ` +
      `${args.transport} ` +
      `(${KINDS.join(', ')}), ${args.seconds} s; server alive: ${figures.isAlive}; ` +
      `attackers still connected at the end: ${figures.alive}`,
    `| measure | alone | under attack | ratio |`,
    `|---|---|---|---|`,
    `| server RSS | ${mib(figures.before)} | peak ${mib(figures.peak)} (VmHWM ` +
      `${mib(figures.hwm)}) | ${(figures.peak / figures.before).toFixed(2)}× |`,
    `| good client 4 KiB READs | ${quiet.count} | ${abused.count} (${abused.failures} failed) | ` +
      `${(abused.count / quiet.count).toFixed(2)}× |`,
    `| p50 latency | ${ms(quiet.p50)} | ${ms(abused.p50)} | ` +
      `${(abused.p50 / quiet.p50).toFixed(2)}× |`,
    `| p99 latency | ${ms(quiet.p99)} | ${ms(abused.p99)} | ` +
      `${(abused.p99 / quiet.p99).toFixed(2)}× |`,
    `RSS after the attackers left: ${mib(figures.after)}`,
    `target RSS < ${mib(RSS_TARGET_BYTES)}: ${figures.hwm < RSS_TARGET_BYTES ? 'met' : 'MISSED'}` +
      ` (VmHWM ${mib(figures.hwm)})`,
    `target p99 < ${P99_TARGET_MS} ms under attack: ` +
      `${abused.p99 < P99_TARGET_MS && abused.failures === 0 ? 'met' : 'MISSED'} ` +
      `(${ms(abused.p99)})`,
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
}

main().catch((error) => {
  process.stderr.write(`bench:abuse: ${error.stack}\n`);
  process.exitCode = 1;
});
