#!/usr/bin/env node
// `npm run bench -- --ceph`: xvd serving a VD on an RBD pool member, beside qemu-nbd's rbd:
// driver serving the same RBD image, with fio's rbd engine (librbd straight from fio, no NBD) as
// the ceiling. All three go to one image on a throwaway single-node cluster (scripts/ceph/up.sh,
// stopped at the end, on Ctrl-C and on a crash).
//
// The image (1 GiB plus one extent) is written whole first (reads of objects never written skip
// the OSD's disk). xvd adopts it as a pool member and serves a 1 GiB VD on its first extents, so
// xvd and qemu-nbd serve the same bytes at the same offsets. Neither uses librbd's cache: xvd
// turns it off (several hosts write one image), qemu-nbd runs with --cache=none (its default,
// writeback, turns librbd's cache on, which would make 4 KiB writes a memory copy), nor does
// the ceiling (CEPH_ARGS=--rbd_cache=false, which fio's rbd engine reads). Both servers serve
// TCP on 127.0.0.1 with fio's nbd engine as client; the cells are fio's jobs of the main bench
// (randread/randwrite 4 KiB qd32, read/write 1 MiB qd8), interleaved in rounds with the order
// rotated (lib/rounds.js): the table shows medians over the rounds, and the ratios of xvd to
// qemu-nbd and to the ceiling. Server CPU is seconds per GiB moved, from /proc. `--jobs
// read-1m,write-1m` runs only the jobs named (ids of lib/clients.js FIO_JOBS).
// Output: the table on stdout, raw JSON in results/bench-ceph-<timestamp>.json.
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const proc = require('./lib/proc');
const clients = require('./lib/clients');
const rounds = require('./lib/rounds');

const REPO = path.resolve(__dirname, '..', '..');
const XVD = path.join(REPO, 'dist', 'cli', 'main.js');
const MIB = 1024 ** 2;
const SIZE_BYTES = 1024 ** 3;
const EXTENT_BYTES = 4 * MIB;
const IMAGE = 'bench';
const SERVERS = ['xvd', 'qemu-nbd', 'fio-rbd'];

function parseArgs(argv) {
  const options = { rounds: 1, runtimeS: 5, rampS: 1, jobs: clients.FIO_JOBS };
  for (let i = 0; i < argv.length; i += 1) {
    if (argv[i] === '--ceph') continue;
    if (argv[i] === '--rounds') options.rounds = Number(argv[++i]);
    else if (argv[i] === '--runtime') options.runtimeS = Number(argv[++i]);
    else if (argv[i] === '--jobs') options.jobs = pickJobs(String(argv[++i]));
    else throw new Error(`unknown option ${argv[i]} (--rounds N, --runtime SECONDS, --jobs IDS)`);
  }
  if (!(options.rounds >= 1 && options.rounds <= 20)) throw new Error('--rounds: 1 to 20');
  return options;
}

/** The fio jobs named in a comma-separated list of ids (randread-4k,read-1m,…). */
function pickJobs(list) {
  const ids = list.split(',');
  const unknown = ids.filter((id) => !clients.FIO_JOBS.some((job) => job.id === id));
  if (unknown.length > 0 || ids.length === 0) {
    throw new Error(`--jobs: ${unknown.join(',')} unknown (${clients.FIO_JOBS.map((j) => j.id)})`);
  }
  return clients.FIO_JOBS.filter((job) => ids.includes(job.id));
}

function check(result, what) {
  if (result.code !== 0) {
    throw new Error(`${what}: exit ${result.code}: ${proc.tail(result.stderr)}`);
  }
  return result.stdout;
}

async function startCluster(dir) {
  const up = await proc.run(path.join(REPO, 'scripts', 'ceph', 'up.sh'), [dir],
    { timeoutMs: 180000 });
  const values = Object.fromEntries(check(up, 'up.sh').trim().split('\n')
    .map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)]));
  return { conf: values.CEPH_CONF, pool: values.CEPH_POOL };
}

/** The image, written whole, adopted as a member, a 1 GiB VD on it attached as 1/xvda. */
async function prepare(cluster, work) {
  const env = { ...process.env, CEPH_CONF: cluster.conf };
  const spec = `${cluster.pool}/${IMAGE}`;
  check(await proc.run('rbd', ['-c', cluster.conf, 'create', '--size',
    `${(SIZE_BYTES + EXTENT_BYTES) / MIB}M`, '--image-feature', 'layering', spec]), 'rbd create');
  check(await proc.run('fio', ['--name=fill', '--ioengine=rbd', '--clientname=admin',
    `--pool=${cluster.pool}`, `--rbdname=${IMAGE}`, '--rw=write', '--bs=4m', '--iodepth=8',
    `--size=${SIZE_BYTES + EXTENT_BYTES}`], { env, timeoutMs: 600000 }), 'fill');
  const catalog = path.join(work, 'catalog.sqlite');
  const xvd = (args) => proc.run(process.execPath, [XVD, '--catalog', catalog, ...args], { env });
  check(await xvd(['format', `rbd:${spec}`]), 'xvd format');
  const id = check(await xvd(['create', '1G', '--no-zero']), 'xvd create').trim();
  check(await xvd(['vbd', 'add', `vd:${id}`, 'xvda', '--domain', '1', '--mode', 'w']), 'vbd');
  return { env, catalog, spec };
}

async function startServers(cluster, prepared, work) {
  const xvdPort = await proc.freePort();
  const qemuPort = await proc.freePort();
  const xvd = proc.startDetached(process.execPath, [XVD, '--catalog', prepared.catalog, 'serve',
    '--listen', `127.0.0.1:${xvdPort}`], { logPath: path.join(work, 'xvd.log'),
    env: { ...prepared.env, XVD_LOG_LEVEL: 'warn' } });
  const qemu = proc.startDetached('qemu-nbd', ['-f', 'raw', '--cache=none', '--persistent',
    '--shared=8', '-b', '127.0.0.1', '-p', String(qemuPort), '-x', 'bench',
    `rbd:${prepared.spec}:conf=${cluster.conf}`], { logPath: path.join(work, 'qemu-nbd.log') });
  for (const [name, server, port] of [['xvd', xvd, xvdPort], ['qemu-nbd', qemu, qemuPort]]) {
    const failure = await proc.waitForListener({ host: '127.0.0.1', port },
      { timeoutMs: 30000, isDead: () => server.state.exited });
    if (failure !== null) throw new Error(`${name}: ${failure}`);
  }
  return {
    xvd: { target: { uri: `nbd://127.0.0.1:${xvdPort}/1/xvda` }, pid: xvd.child.pid, server: xvd },
    'qemu-nbd': { target: { uri: `nbd://127.0.0.1:${qemuPort}/bench` }, pid: qemu.child.pid,
      server: qemu },
    'fio-rbd': { target: { rbd: { pool: cluster.pool, image: IMAGE } }, pid: null },
  };
}

function table(summary, jobs) {
  const lines = [`${'job'.padEnd(18)}${SERVERS.map((s) => s.padStart(12)).join('')}` +
    '  xvd/qemu  xvd/fio-rbd  cpu s/GiB xvd qemu'];
  for (const job of jobs) {
    const cells = SERVERS.map((server) => summary[job.id][server]);
    const value = (cell) => (cell && cell.value !== undefined ? cell.value : NaN);
    const ratio = (a, b) => (Number.isFinite(a / b) ? (a / b).toFixed(2) : 'n/a');
    const cpu = (cell) => (cell && typeof cell.cpuSecondsPerGiB === 'number'
      ? cell.cpuSecondsPerGiB.toFixed(2) : '-');
    lines.push(`${job.label.padEnd(18)}${cells.map((c) => (Number.isFinite(value(c))
      ? value(c).toFixed(0) : 'n/a').padStart(12)).join('')}` +
      `  ${ratio(value(cells[0]), value(cells[1])).padStart(8)}` +
      `  ${ratio(value(cells[0]), value(cells[2])).padStart(11)}` +
      `  ${cpu(cells[0]).padStart(13)} ${cpu(cells[1]).padStart(4)}  (${job.unit})`);
  }
  return lines.join('\n');
}

async function measure(servers, timing, work) {
  const cells = {};
  for (let round = 0; round < timing.rounds; round += 1) {
    for (const job of timing.jobs) {
      for (const name of rounds.rotate(SERVERS, round)) {
        const { target, pid } = servers[name];
        const cell = await clients.runFio(job, target, pid, timing, work);
        ((cells[job.id] ||= {})[name] ||= []).push(cell);
        process.stderr.write(`round ${round + 1} ${job.label} ${name}: ` +
          `${cell.error || `${cell.value.toFixed(0)} ${cell.unit}`}\n`);
      }
    }
  }
  const summary = {};
  for (const [jobId, byServer] of Object.entries(cells)) {
    summary[jobId] = {};
    for (const [name, list] of Object.entries(byServer)) {
      summary[jobId][name] = rounds.summarizeRounds(list);
    }
  }
  return { cells, summary };
}

async function main() {
  const options = parseArgs(process.argv.slice(2));
  const timing = { runtimeS: options.runtimeS, rampS: options.rampS, copyReps: 1,
    rounds: options.rounds, jobs: options.jobs };
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'xvd-bench-ceph-'));
  const clusterDir = path.join(work, 'cluster');
  const stop = () => {
    proc.killAllGroupsSync();
    require('node:child_process').spawnSync(path.join(REPO, 'scripts', 'ceph', 'down.sh'),
      [clusterDir], { stdio: 'ignore' });
  };
  process.once('SIGINT', () => {
    stop();
    process.exit(130);
  });
  try {
    const cluster = await startCluster(clusterDir);
    process.env.CEPH_CONF = cluster.conf; // fio's rbd engine finds the cluster by it
    // and takes options from CEPH_ARGS: no librbd cache for the ceiling either (with it, fio's
    // 4 KiB random writes measured 3x faster than without: a cache, not the cluster)
    process.env.CEPH_ARGS = '--rbd_cache=false';
    const prepared = await prepare(cluster, work);
    const servers = await startServers(cluster, prepared, work);
    const { cells, summary } = await measure(servers, timing, work);
    process.stdout.write(`xvd over RBD, qemu-nbd rbd: (--cache=none), fio's rbd engine; ` +
      `medians of ${timing.rounds} round(s), fio ${timing.runtimeS} s per cell\n` +
      `${table(summary, timing.jobs)}\n`);
    fs.mkdirSync(path.join(REPO, 'results'), { recursive: true });
    const file = path.join(REPO, 'results', `bench-ceph-${Date.now()}.json`);
    const jobIds = timing.jobs.map((job) => job.id);
    fs.writeFileSync(file, JSON.stringify({ timing: { ...timing, jobs: jobIds }, summary, cells },
      null, 1));
    process.stdout.write(`raw: ${path.relative(REPO, file)}\n`);
  } finally {
    stop(); // the servers by their process groups, then the cluster
    fs.rmSync(work, { recursive: true, force: true });
  }
}

main().catch((error) => {
  process.stderr.write(`bench --ceph: ${error.message}\n`);
  process.exitCode = 1;
});
