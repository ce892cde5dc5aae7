#!/usr/bin/env node
// Profiles `xvd serve` under one fio job: starts the server with --cpu-prof on a Unix socket,
// runs fio's nbd engine against it, stops the server with SIGTERM (so the profile is written),
// and prints self time by function (top N) plus the server CPU seconds per GiB moved.
// Usage: node scripts/bench/profile.js --catalog PATH [--job read-1m|write-1m|randread-4k|
//   randwrite-4k|copy-to-null|copy-from-file] [--runtime S] [--copies N] [--source FILE] [--threads N] [--top N] [--export NAME] [--no-prof]
//   [--tcp PORT] (TCP on 127.0.0.1:PORT instead of a Unix socket) [--busy-poll US] (serve flag);
//   XVD_MAIN=path/to/cli/main.js
//   profiles another build (e.g. a worktree of an earlier commit) for A/B runs
// A catalog with a VD attached as 1/xvda: `npm run bench -- --keep` leaves one under the temp dir.
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawn, spawnSync } = require('node:child_process');

const JOBS = {
  'read-1m': ['--rw=read', '--bs=1m', '--iodepth=8'],
  'write-1m': ['--rw=write', '--bs=1m', '--iodepth=8'],
  'randread-4k': ['--rw=randread', '--bs=4k', '--iodepth=32'],
  'randwrite-4k': ['--rw=randwrite', '--bs=4k', '--iodepth=32'],
};
/** nbdcopy jobs (multi-conn, as `npm run bench` runs them): the export to null:, a file into it. */
const COPY_JOBS = new Set(['copy-to-null', 'copy-from-file']);

function parse(argv) {
  const o = { catalog: null, job: 'read-1m', runtime: 5, threads: null, top: 25,
    exportName: '1/xvda', prof: true, tcpPort: null, copies: 3, source: null, busyPoll: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--catalog') o.catalog = argv[++i];
    else if (a === '--job') o.job = argv[++i];
    else if (a === '--runtime') o.runtime = Number(argv[++i]);
    else if (a === '--threads') o.threads = argv[++i];
    else if (a === '--top') o.top = Number(argv[++i]);
    else if (a === '--export') o.exportName = argv[++i];
    else if (a === '--no-prof') o.prof = false;
    else if (a === '--tcp') o.tcpPort = Number(argv[++i]);
    else if (a === '--copies') o.copies = Number(argv[++i]);
    else if (a === '--source') o.source = argv[++i];
    else if (a === '--busy-poll') o.busyPoll = argv[++i];
    else throw new Error(`unknown argument ${a}`);
  }
  if (o.catalog === null) throw new Error('--catalog is required');
  if (!(o.job in JOBS) && !COPY_JOBS.has(o.job)) throw new Error(`unknown job ${o.job}`);
  if (o.job === 'copy-from-file' && o.source === null) throw new Error('copy-from-file needs --source');
  if (!(Number.isInteger(o.copies) && o.copies > 0 && o.copies <= 20)) throw new Error('--copies 1..20');
  return o;
}

const TICKS = Number(spawnSync('getconf', ['CLK_TCK']).stdout || 100) || 100;
function cpuSeconds(pid) {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / TICKS; // utime + stime
}

async function waitFor(file, timeoutMs) {
  const until = Date.now() + timeoutMs;
  while (!fs.existsSync(file)) {
    if (Date.now() > until) throw new Error(`${file} did not appear`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function summarise(profilePath, top) {
  const profile = JSON.parse(fs.readFileSync(profilePath, 'utf8'));
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map();
  const deltas = profile.timeDeltas;
  let total = 0;
  profile.samples.forEach((id, i) => {
    const node = byId.get(id);
    const f = node.callFrame;
    const key = `${f.functionName || '(anon)'} ${path.basename(f.url || '')}:${f.lineNumber + 1}`;
    const dt = deltas[i] || 0;
    self.set(key, (self.get(key) || 0) + dt);
    total += dt;
  });
  const rows = [...self.entries()].sort((a, b) => b[1] - a[1]).slice(0, top);
  for (const [key, us] of rows) {
    console.log(`${(100 * us / total).toFixed(1).padStart(5)}%  ${(us / 1000).toFixed(0).padStart(6)} ms  ${key}`);
  }
}

/** Each nbdcopy in turn: MiB/s and server CPU s/GiB (the first copy also faults in buffers). */
function runCopies(o, uri, pid) {
  for (let copy = 1; copy <= o.copies; copy++) {
    const [from, to] = o.job === 'copy-to-null' ? [uri, 'null:'] : [o.source, uri];
    const before = cpuSeconds(pid);
    const start = process.hrtime.bigint();
    const run = spawnSync('nbdcopy', [from, to], { encoding: 'utf8' });
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    const after = cpuSeconds(pid);
    if (run.status !== 0) throw new Error(`nbdcopy: ${run.stderr}`);
    const bytes = Number(spawnSync('nbdinfo', ['--size', uri], { encoding: 'utf8' }).stdout);
    const gib = bytes / 2 ** 30;
    console.log(`${o.job} ${copy}: ${(bytes / 1048576 / seconds).toFixed(0)} MiB/s, ` +
      `server ${((after - before) / gib).toFixed(2)} cpu s/GiB`);
  }
}

async function main() {
  const o = parse(process.argv.slice(2));
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xvd-prof-'));
  const sock = path.join(dir, 's');
  const args = [...(o.prof ? ['--cpu-prof', `--cpu-prof-dir=${dir}`] : []),
    (process.env.XVD_MAIN || path.join(__dirname, '../../dist/cli/main.js')), '--catalog', o.catalog, 'serve',
    ...(o.tcpPort ? ['--listen', `127.0.0.1:${o.tcpPort}`] : ['--socket', sock]),
    ...(o.threads ? ['--threads', o.threads] : []),
    ...(o.busyPoll !== null ? ['--busy-poll', o.busyPoll] : [])];
  const server = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'ignore'] });
  try {
    let uri = `nbd+unix:///${o.exportName}?socket=${sock}`;
    if (o.tcpPort) {
      uri = `nbd://127.0.0.1:${o.tcpPort}/${o.exportName}`;
      await new Promise((r) => setTimeout(r, 1500));
    } else {
      await waitFor(sock, 15000);
    }
    if (COPY_JOBS.has(o.job)) runCopies(o, uri, server.pid);
    else runFio(o, uri, server.pid);
  } finally {
    server.kill('SIGTERM');
    await new Promise((r) => server.once('exit', r));
  }
  if (!o.prof) return;
  const file = fs.readdirSync(dir).find((f) => f.endsWith('.cpuprofile'));
  if (file === undefined) throw new Error('no profile written');
  summarise(path.join(dir, file), o.top);
  console.log(`profile: ${path.join(dir, file)}`);
}

/** One fio job: IOPS, MiB/s and server CPU s/GiB. */
function runFio(o, uri, pid) {
  const before = cpuSeconds(pid);
  const fio = spawnSync('fio', ['--name=job', '--ioengine=nbd', `--uri=${uri}`, ...JOBS[o.job],
    `--runtime=${o.runtime}`, '--time_based', '--numjobs=1', '--output-format=json'],
  { encoding: 'utf8', maxBuffer: 1 << 26 });
  const after = cpuSeconds(pid);
  if (fio.status !== 0) throw new Error(`fio: ${fio.stderr}${fio.stdout.slice(0, 500)}`);
  const job = JSON.parse(fio.stdout.slice(fio.stdout.indexOf("{"))).jobs[0];
  const bytes = job.read.io_bytes + job.write.io_bytes;
  const iops = job.read.iops + job.write.iops;
  console.log(`${o.job}: ${Math.round(iops)} IOPS, ${(bytes / 1048576 / o.runtime).toFixed(0)} MiB/s,` +
    ` server ${((after - before) / (bytes / 2 ** 30)).toFixed(2)} cpu s/GiB`);
}

main().catch((error) => {
  console.error(error.message);
  process.exit(1);
});
