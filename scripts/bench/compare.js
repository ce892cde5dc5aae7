#!/usr/bin/env node
// `npm run bench`: xvd against nbdkit, qemu-nbd and nbd-server, side by side in one run.
//
// One 1 GiB backing file of random data (page-cached) is served by every server, over TCP
// (127.0.0.1) and a unix socket (in a temp dir), and each server is driven by the same clients:
// fio's nbd engine (randread/randwrite 4 KiB qd32, read/write 1 MiB qd8) and nbdcopy (export to
// null:, and a cached 1 GiB file into the export; nbdcopy uses multi-conn when offered). xvd
// runs twice: a single-run VD and a VD of >= 1024 extents over two members (lib/xvd.js). The
// local ceiling is the same fio jobs with io_uring on the file itself. Server CPU comes from
// /proc (the server's process tree), as seconds per GiB moved.
//
// Fairness. All servers start first, one instance per transport, and stay up (idle) for the
// whole run; nbdkit, qemu-nbd and nbd-server share the one file (only one is driven at a time;
// qemu-nbd 7.2 takes no conflicting lock on a raw file). Cells run interleaved in rounds
// (lib/rounds.js): for each transport and job, every server in turn, the order rotated each
// round, so a load spike or a writeback burst does not fall on one server's block of cells; the
// table shows each cell's median over the rounds. Before every cell (and every nbdcopy run) the
// backing files are fdatasync'ed: on ext4, dirtying a clean page costs about 5x re-dirtying a
// dirty one, and pages stay dirty for 30 s, so without the sync a write cell's figure would
// depend on which cell wrote the file last. The files are read through (cat) once per round so
// that they stay cached.
//
// A/B: `--base DIR` adds xvd-base and xvd-frag-base, the same two VDs served by another
// checkout's xvd (DIR/dist/cli/main.js, built there, on pools of their own), measured in the same
// rotated rounds as everyone else; the table gains "xvd/base paired" and "frag/base paired" (the
// median and quartiles of this xvd's figure over the base's, round by round) and lists the rows
// where this xvd fell by more than BASE_FALL_NOTED against the base.
//
// Output: one table on stdout, raw JSON in results/bench-<timestamp>.json (every round's cell
// under `rounds`), a PNG chart (grouped bars, best peer = 1.0) in results/ and, on an unfiltered
// run, scripts/bench/results.png. A server that fails to start gives n/a cells with the reason.
// Every server is stopped by its process group at the end, and on Ctrl-C or a crash.
// `--ceph` runs scripts/bench/ceph.js instead: xvd over RBD against qemu-nbd's rbd: driver.
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const proc = require('./lib/proc');
const clients = require('./lib/clients');
const { PEERS, SERVERS } = require('./lib/servers');
const report = require('./lib/report');
const rounds = require('./lib/rounds');

const REPO = path.resolve(__dirname, '..', '..');
const RESULTS_DIR = path.join(REPO, 'results');
const CHART_COMMITTED = path.join(__dirname, 'results.png');
const SIZE_BYTES = 1024 ** 3;
const TRANSPORTS = ['tcp', 'unix'];
// One figure per cell and round (nbdcopy once: the rounds' median filters noise, for fio and
// nbdcopy alike). Default: one round of short cells, a full run in about 4 minutes on the
// 2-core development machine (66 cells of 3-4 s, a sync of up to 1 s before each write cell).
const TIMING_SHORT = { runtimeS: 2, rampS: 1, copyReps: 1, rounds: 1 };
/** --long: medians of 3 rounds of longer cells (about 18 minutes). */
const TIMING_LONG = { runtimeS: 5, rampS: 1, copyReps: 1, rounds: 3 };
const ROUNDS_MAX = 100;
/** A cell whose rounds differ by more than this (max - min over the median) is reported. */
const SPREAD_NOTED = 0.2;
/** A fio cell is flagged noisy when other work took this much CPU (cores) during it. */
const NOISY_OTHER_CORES = 0.25;
const NOISY_STEAL_CORES = 0.1;
/** A row whose xvd/base paired median is below 1 - this is listed under the table. */
const BASE_FALL_NOTED = 0.05;
const ALL_SERVER_NAMES = [...SERVERS.map((server) => server.name), 'local'];
const BASE_NAMES = SERVERS.filter((server) => server.isBase).map((server) => server.name);
const TOOL_PACKAGES = {
  fio: 'fio',
  nbdkit: 'nbdkit',
  'qemu-nbd': 'qemu-utils',
  'nbd-server': 'nbd-server',
  nbdcopy: 'libnbd-bin',
  nbdinfo: 'libnbd-bin',
  gnuplot: 'gnuplot-nox',
};
const JOB_IDS = [...clients.FIO_JOBS, ...clients.COPY_JOBS].map((job) => job.id);
const plural = (count, noun) => `${count} ${noun}${count === 1 ? '' : 's'}`;
const describeTiming = (timing) => `${plural(timing.rounds, 'round')}, fio ${timing.runtimeS} s ` +
  `+ ${timing.rampS} s ramp per cell, nbdcopy ` +
  `${timing.copyReps === 1 ? 'once' : `best of ${timing.copyReps}`} per cell`;
const USAGE = `usage: npm run bench -- [options]
  --rounds N           run every cell N times, servers interleaved; the table shows medians
  --long               ${describeTiming(TIMING_LONG)}
                       (default ${describeTiming(TIMING_SHORT)})
  --servers a,b        only these of: ${ALL_SERVER_NAMES.join(', ')}
  --only xvd           same as --servers xvd,xvd-frag (and xvd-base,xvd-frag-base with --base)
  --base DIR           also run xvd-base and xvd-frag-base from the checkout DIR (its
                       dist/cli/main.js, built there: npm ci or npm run build), interleaved in the
                       same rounds; adds the xvd/base and frag/base paired columns
  --transports t,u     tcp, unix (default both)
  --jobs a,b           only these jobs: ${JOB_IDS.join(', ')}
  --runtime S --ramp S fio seconds per cell
  --rebuild-pool       rebuild the cached fragmented xvd pools (results/cache/xvd-frag*)
  --chart PATH         also write the chart there (default: scripts/bench/results.png on full runs)
  --keep               keep the temp dir (logs, configs)
`;

function parseArgs(argv) {
  const options = {
    long: false, servers: null, transports: TRANSPORTS, jobs: null, runtimeS: null, rampS: null,
    rounds: null, rebuildPool: false, chart: null, keep: false, base: null,
  };
  const list = (value) => String(value || '').split(',').map((item) => item.trim()).filter(Boolean);
  for (let index = 0; index < argv.length; index += 1) {
    const arg = argv[index];
    const next = () => {
      index += 1;
      if (index >= argv.length) throw new Error(`${arg} needs a value`);
      return argv[index];
    };
    if (arg === '--long') options.long = true;
    else if (arg === '--servers') options.servers = list(next());
    else if (arg === '--only') options.servers = list(next()).flatMap((name) =>
      name === 'xvd' ? ['xvd', 'xvd-frag', ...BASE_NAMES] : [name]);
    else if (arg === '--transports') options.transports = list(next());
    else if (arg === '--jobs') options.jobs = list(next());
    else if (arg === '--runtime') options.runtimeS = Number(next());
    else if (arg === '--ramp') options.rampS = Number(next());
    else if (arg === '--rounds') options.rounds = Number(next());
    else if (arg === '--rebuild-pool') options.rebuildPool = true;
    else if (arg === '--chart') options.chart = path.resolve(next());
    else if (arg === '--keep') options.keep = true;
    else if (arg === '--base') options.base = path.resolve(next());
    else if (arg === '--help' || arg === '-h') {
      process.stdout.write(USAGE);
      process.exit(0);
    } else throw new Error(`unknown option ${arg}`);
  }
  if (options.base === null && options.servers !== null) {
    if (argv.includes('--only')) {
      options.servers = options.servers.filter((name) => !BASE_NAMES.includes(name));
    }
    const base = options.servers.find((name) => BASE_NAMES.includes(name));
    if (base !== undefined) throw new Error(`${base} needs --base DIR`);
  }
  for (const name of options.servers || []) {
    if (!ALL_SERVER_NAMES.includes(name)) throw new Error(`unknown server ${name}`);
  }
  if (options.base !== null && !fs.existsSync(path.join(options.base, 'dist', 'cli', 'main.js'))) {
    throw new Error(`--base ${options.base}: no dist/cli/main.js (build that checkout first)`);
  }
  for (const name of options.transports) {
    if (!TRANSPORTS.includes(name)) throw new Error(`unknown transport ${name}`);
  }
  const isRoundCount = (count) => Number.isSafeInteger(count) && count >= 1 && count <= ROUNDS_MAX;
  if (options.rounds !== null && !isRoundCount(options.rounds)) {
    throw new Error(`--rounds must be 1 to ${ROUNDS_MAX}`);
  }
  return options;
}

function log(message) {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${message}\n`);
}

function has(command) {
  return spawnSync('sh', ['-c', `command -v ${command}`], { stdio: 'ignore' }).status === 0;
}

function ensureTools() {
  const missing = new Set();
  for (const [command, pkg] of Object.entries(TOOL_PACKAGES)) if (!has(command)) missing.add(pkg);
  if (missing.size === 0) return;
  if (process.getuid === undefined || process.getuid() !== 0) {
    log(`missing ${[...missing].join(' ')} (not root: not installing; their cells will be n/a)`);
    return;
  }
  log(`installing ${[...missing].join(' ')} from Debian`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const stdio = ['ignore', 'ignore', 'inherit'];
  spawnSync('apt-get', ['update', '-qq'], { stdio, env });
  const install = ['install', '-y', '-qq', '--no-install-recommends', ...missing];
  spawnSync('apt-get', install, { stdio, env });
}

/** The checkout's HEAD commit (and "+dirty" with uncommitted changes), or null. */
function commitOf(dir) {
  const head = spawnSync('git', ['-C', dir, 'rev-parse', '--short=12', 'HEAD'], {
    encoding: 'utf8', timeout: 10000,
  });
  if (head.status !== 0) return null;
  const status = spawnSync('git', ['-C', dir, 'status', '--porcelain', '--untracked-files=no'], {
    encoding: 'utf8', timeout: 10000,
  });
  return `${head.stdout.trim()}${status.stdout && status.stdout.trim() ? '+dirty' : ''}`;
}

function versionOf(command, args) {
  const result = spawnSync(command, args, { encoding: 'utf8', timeout: 10000 });
  const text = `${result.stdout || ''}${result.stderr || ''}`.trim();
  return result.status === 0 || text ? text.split('\n').filter(Boolean)[0] || null : null;
}

function machineInfo() {
  const cpus = os.cpus();
  return {
    hostname: os.hostname(),
    cpuModel: cpus[0] ? cpus[0].model : 'unknown',
    cpuCount: cpus.length,
    memGiB: Math.round(os.totalmem() / 1024 ** 3),
    kernel: os.release(),
    node: process.version,
    loadAverage: os.loadavg(),
    tools: {
      fio: versionOf('fio', ['--version']),
      nbdkit: versionOf('nbdkit', ['--version']),
      qemuNbd: versionOf('qemu-nbd', ['--version']),
      nbdServer: versionOf('nbd-server', ['-V']),
      nbdcopy: versionOf('nbdcopy', ['--version']),
    },
  };
}

async function shell(script, timeoutMs = 180000) {
  const result = await proc.run('sh', ['-c', script], { timeoutMs });
  if (result.code !== 0) throw new Error(`${script}: ${proc.tail(result.stderr, 2)}`);
}

const quote = (file) => `'${file.replace(/'/g, "'\\''")}'`;

async function warm(files) {
  await shell(files.map((file) => `cat ${quote(file)} >/dev/null`).join(' && '));
}

/**
 * Rebuilds the page cache of `files` the same way before every cell: dropped (they are synced
 * first, by syncBacking; dd iflag=nocache is posix_fadvise DONTNEED) and read back sequentially,
 * about 0.35 s per GiB here. On Linux 6.18's ext4 the folio sizes of a file's cache are set when
 * its pages enter the cache and change write costs several-fold (`npm run bench:engine`: 4 KiB
 * random writes about 7x faster on a cache built by 4 KiB writes than on one built by readahead;
 * 256 KiB writes into large folios about twice the cost of 1 MiB writes), and random writes
 * change them as a run goes on: the image nbdkit, qemu-nbd, nbd-server and the local ceiling
 * share took 4 KiB random writes 2-6x faster by round 3 than in round 1, while xvd's own files,
 * written by one server, stayed slow. So each cell starts from the same cache, built by one
 * sequential read (as after a copy or a backup read). Returns false when a cache could not be
 * dropped.
 */
async function resetCaches(files) {
  let isDropped = true;
  for (const file of files) {
    const dropped = await proc.run('sh', ['-c',
      `dd if=${quote(file)} iflag=nocache count=0 status=none`]);
    if (dropped.code !== 0) isDropped = false;
  }
  await warm(files);
  return isDropped;
}

async function makeBacking(ctx) {
  log('writing 1 GiB of random data and a copy for nbdcopy');
  await shell(`dd if=/dev/urandom of=${quote(ctx.image)} bs=4M count=${SIZE_BYTES / 4194304} ` +
    'iflag=fullblock status=none');
  await shell(`cp ${quote(ctx.image)} ${quote(ctx.copySource)}`);
  await warm([ctx.image, ctx.copySource]);
}

function emptyRows(ctx) {
  const rows = [];
  for (const transport of ctx.options.transports) {
    for (const job of ctx.jobs) {
      rows.push({
        key: `${job.id}/${transport}`, job: job.id, label: job.label, transport, unit: job.unit,
        cells: {},
      });
    }
  }
  return rows;
}

function setCell(ctx, server, transport, jobId, cell) {
  const row = ctx.run.rows.find((candidate) => candidate.key === `${jobId}/${transport}`);
  if (row) row.cells[server] = cell;
}

function markAll(ctx, server, transports, reason) {
  for (const transport of transports) {
    for (const job of ctx.jobs) setCell(ctx, server, transport, job.id, { error: reason });
  }
  ctx.run.servers[server].reasons.push(reason);
  log(`${server}: n/a: ${reason}`);
}

/** fdatasync of every backing file, so the next cell starts on clean (cached) pages; in ms. */
async function syncBacking(ctx) {
  const started = process.hrtime.bigint();
  await Promise.all(ctx.backingFiles.map(async (file) => {
    const handle = await fs.promises.open(file, 'r');
    try {
      await handle.datasync();
    } finally {
      await handle.close();
    }
  }));
  return Number(process.hrtime.bigint() - started) / 1e6;
}

/**
 * Before a cell: every backing file synced (clean pages everywhere), then the cache of the
 * measured server's files rebuilt (resetCaches). Returns the ms the sync took.
 */
async function prepareCell(ctx, name) {
  const syncMs = await syncBacking(ctx);
  const files = ctx.filesOf.get(name) ?? [];
  if (!(await resetCaches(files))) ctx.run.cacheResetFailed = true;
  return syncMs;
}

/** Runs one cell and notes the 1-minute load average after it (other work on the machine). */
async function runCell(ctx, job, target, pid) {
  const cell = job.rw !== undefined
    ? await clients.runFio(job, target, pid, ctx.timing, ctx.dir)
    : await clients.runCopy(job, target, pid, ctx, () => prepareCell(ctx, target.server));
  cell.load1 = os.loadavg()[0];
  return cell;
}

/** Every cell run once ('local' fills all transports' rows with one cell), round by round. */
function roundCells(run) {
  const cells = new Set(run.rows.flatMap((row) => Object.values(row.cells)));
  return [...cells].flatMap((cell) => cell.rounds || [cell]);
}

/** The busiest 1-minute load average seen after any cell (the bench itself adds about 2). */
function loadMax(run) {
  return Math.max(0, ...roundCells(run).map((cell) => cell.load1 || 0));
}

function describeCell(cell) {
  if (cell.error && !(cell.value > 0)) return `n/a (${cell.error})`;
  const perGiB = cell.cpuSecondsPerGiB;
  const cpu = perGiB === null || perGiB === undefined ? '' : `, ${perGiB.toFixed(2)} cpu s/GiB`;
  const other = cell.otherCores === undefined
    ? ''
    : `; other work ${cell.otherCores} cores, steal ${cell.stealCores}`;
  const sync = cell.syncMs === undefined ? '' : `; sync ${Math.round(cell.syncMs)} ms before`;
  return `${cell.value.toFixed(cell.unit === 'IOPS' ? 0 : 1)} ${cell.unit}${cpu}${other}${sync}`;
}

async function prepareXvd(ctx, server) {
  try {
    const xvd = require('./lib/xvd');
    const view = server.viewOf(ctx);
    await xvd.serveFlags(view);
    ctx.run.servers[server.name].repo = { dir: view.repo, commit: commitOf(view.repo) };
    ctx.run.servers[server.name].isDistStale = xvd.isDistStale(view);
    if (ctx.run.servers[server.name].isDistStale) {
      log(`${server.name}: warning: dist/ is older than src/ (run npm run build first)`);
    }
    const prepared = await server.prepare(ctx);
    ctx.run.servers[server.name].layout = prepared.layout;
    log(`${server.name}: VD ${prepared.id}: ${prepared.layout.runs} extent runs on ` +
      `${prepared.layout.members} member(s)`);
    return prepared;
  } catch (error) {
    markAll(ctx, server.name, ctx.options.transports, error.message);
    return null;
  }
}

/** Copies the backing data into a fresh xvd VD once, through whichever listener is up. */
async function fillXvd(ctx, server, prepared, instances) {
  const instance = Object.values(instances)[0];
  if (!prepared.needsFill || instance === undefined) return;
  log(`${server.name}: filling the VD with the backing data`);
  const fill = await proc.run('nbdcopy', [ctx.image, instance.uri], { timeoutMs: 300000 });
  if (fill.code !== 0) throw new Error(`fill failed: ${proc.tail(fill.stderr, 2)}`);
  prepared.needsFill = false;
}

/**
 * Starts one instance of the server per transport (its own port or socket; all stay up for the
 * whole run, idle while another server is measured) into ctx.instances.
 */
async function startServer(ctx, server) {
  ctx.run.servers[server.name] = { describe: server.describe, reasons: [] };
  const prepared = server.isXvd ? await prepareXvd(ctx, server) : null;
  if (server.isXvd && prepared === null) return;
  const instances = {};
  for (const transport of ctx.options.transports) {
    try {
      instances[transport] = await server.start(ctx, transport, prepared);
    } catch (error) {
      markAll(ctx, server.name, [transport], `${transport}: ${error.message}`);
    }
  }
  try {
    if (prepared !== null) await fillXvd(ctx, server, prepared, instances);
  } catch (error) {
    for (const instance of Object.values(instances)) await instance.stop();
    markAll(ctx, server.name, Object.keys(instances), error.message);
    return;
  }
  if (prepared !== null) ctx.backingFiles.push(...prepared.files);
  ctx.filesOf.set(server.name, prepared === null ? [ctx.image] : prepared.files);
  ctx.instances.set(server.name, instances);
}

async function stopServers(ctx) {
  for (const instances of ctx.instances.values()) {
    for (const instance of Object.values(instances)) await instance.stop();
  }
  ctx.instances.clear();
}

/** The servers measured in a group of this transport, in table order ('local' on the first). */
function groupServers(ctx, transport) {
  return ALL_SERVER_NAMES.filter((name) => name === 'local'
    ? ctx.hasLocal && transport === ctx.options.transports[0]
    : ctx.instances.has(name) && ctx.instances.get(name)[transport] !== undefined);
}

async function runRoundCell(ctx, name, transport, job, where) {
  const instance = name === 'local' ? null : ctx.instances.get(name)[transport];
  let cell;
  if (instance !== null && !proc.isAlive(instance.pid)) {
    cell = { error: 'server died' };
  } else {
    const syncMs = await prepareCell(ctx, name);
    const target = instance === null ? { file: ctx.image, server: name }
      : { uri: instance.uri, server: name };
    cell = await runCell(ctx, job, target, instance === null ? null : instance.pid);
    cell.syncMs = syncMs;
  }
  Object.assign(cell, where);
  const label = name === 'local' ? 'local' : `${name} ${transport}`;
  log(`round ${where.round + 1} ${label} ${job.id}: ${describeCell(cell)}`);
  const key = `${name}/${transport}/${job.id}`;
  if (!ctx.samples.has(key)) ctx.samples.set(key, []);
  ctx.samples.get(key).push(cell);
}

/** One round: every (transport, job) group, each on every server, the order rotated. */
async function runRound(ctx, round) {
  await warm(ctx.backingFiles);
  let group = 0;
  for (const transport of ctx.options.transports) {
    for (const job of ctx.jobs) {
      const order = rounds.rotate(groupServers(ctx, transport), round + group);
      for (const [position, name] of order.entries()) {
        await runRoundCell(ctx, name, transport, job, { round, position });
      }
      group += 1;
    }
  }
}

/** Puts the median of each cell's rounds into the table; 'local' fills every transport's row. */
function summarizeSamples(ctx) {
  for (const [key, cells] of ctx.samples) {
    const [name, transport, jobId] = key.split('/');
    const cell = rounds.summarizeRounds(cells);
    const transports = name === 'local' ? ctx.options.transports : [transport];
    for (const each of transports) setCell(ctx, name, each, jobId, cell);
  }
}

/** Notes cells with failed rounds and, over several rounds, how far each cell's rounds differ. */
function writeRoundNotes(run) {
  const named = run.rows.flatMap((row) => Object.entries(row.cells)
    .filter(([name]) => name !== 'local' || row.transport === run.rows[0].transport)
    .map(([name, cell]) => ({ name: `${row.job}/${row.transport} ${name}`, cell })));
  const failed = named.filter(({ cell }) => cell.failedRounds > 0 && cell.value > 0);
  if (failed.length > 0) {
    process.stdout.write(`warning: some rounds failed in ${failed.map(({ name, cell }) =>
      `${name} (${cell.failedRounds})`).join(', ')}; their medians are of the rest\n`);
  }
  const spread = named.filter(({ cell }) => cell.spread !== null && cell.spread !== undefined);
  if (spread.length === 0) return;
  spread.sort((a, b) => b.cell.spread - a.cell.spread);
  const percent = (value) => `${Math.round(value * 100)}%`;
  const wide = spread.filter(({ cell }) => cell.spread > SPREAD_NOTED);
  process.stdout.write(`rounds: (max - min) / median per cell: median ` +
    `${percent(rounds.median(spread.map(({ cell }) => cell.spread)))}; ` +
    `${wide.length} of ${spread.length} cells above ${percent(SPREAD_NOTED)}` +
    `${wide.length === 0 ? '' : `, widest ${wide.slice(0, 3).map(({ name, cell }) =>
      `${name} ${percent(cell.spread)}`).join(', ')}`}\n`);
}

/** With --base: the base checkout, and the rows where xvd fell by more than BASE_FALL_NOTED. */
function writeBaseNotes(run, columns) {
  const compared = [['xvd', 'xvd-base', 'xvdOverBasePaired'],
    ['xvd-frag', 'xvd-frag-base', 'fragOverBasePaired']]
    .filter(([, base]) => columns.includes(base));
  if (compared.length === 0) return;
  const repo = (name) => run.servers[name].repo || {};
  process.stdout.write(`base: ${repo('xvd-base').dir || repo('xvd-frag-base').dir} at ` +
    `${repo('xvd-base').commit || repo('xvd-frag-base').commit}; this checkout at ` +
    `${(run.servers.xvd && run.servers.xvd.repo || {}).commit || 'n/a'}\n`);
  for (const [name, base, field] of compared) {
    const measured = run.rows.filter((row) => row[field]);
    const fallen = report.fallenRows(run.rows, field, 1 - BASE_FALL_NOTED);
    process.stdout.write(`${name} against ${base}: ${measured.length} row(s) paired; ` +
      `${fallen.length === 0 ? 'none' : fallen.map((row) =>
        `${row.label} ${row.transport} ${row[field].median.toFixed(2)}x`).join(', ')} ` +
      `below ${(1 - BASE_FALL_NOTED).toFixed(2)}x\n`);
  }
}

function timestamp(date) {
  return date.toISOString().replace(/[:.]/g, '-').replace('T', '_').slice(0, 19);
}

async function finish(ctx) {
  const columns = ALL_SERVER_NAMES.filter((name) => ctx.run.servers[name] !== undefined);
  const rows = report.buildRows(ctx.run, PEERS);
  ctx.run.rows = rows;
  ctx.run.finishedAt = new Date().toISOString();
  const stamp = timestamp(new Date(ctx.run.startedAt));
  fs.mkdirSync(RESULTS_DIR, { recursive: true });
  const jsonPath = path.join(RESULTS_DIR, `bench-${stamp}.json`);
  fs.writeFileSync(jsonPath, `${JSON.stringify(ctx.run, null, 1)}\n`);
  const { machine, timing } = ctx.run;
  process.stdout.write(`\nxvd benchmark, ${ctx.run.startedAt.slice(0, 16)}Z on ` +
    `${machine.cpuCount}x ` +
    `${machine.cpuModel}, ${machine.memGiB} GiB, Linux ${machine.kernel}, Node ${machine.node}; ` +
    `${describeTiming(timing)}\n`);
  process.stdout.write('cells: IOPS or MiB/s [server CPU seconds per GiB]' +
    `${timing.rounds > 1 ? `, medians of ${timing.rounds} interleaved rounds; the paired ` +
      'columns are the median (quartiles) of the ratios taken round by round' : ''}\n\n`);
  process.stdout.write(`${report.renderTable(rows, columns)}\n\n`);
  for (const name of columns) {
    const reasons = ctx.run.servers[name].reasons;
    if (reasons.length > 0) process.stdout.write(`${name} n/a: ${reasons.join('; ')}\n`);
  }
  writeRoundNotes(ctx.run);
  writeBaseNotes(ctx.run, columns);
  const cells = roundCells(ctx.run);
  const noisy = cells.filter((cell) => cell.otherCores > NOISY_OTHER_CORES ||
    cell.stealCores > NOISY_STEAL_CORES);
  if (noisy.length > 0) {
    process.stdout.write(`warning: in ${noisy.length} fio cell runs other processes or the ` +
      `hypervisor took more than ${NOISY_OTHER_CORES} cores (otherCores/stealCores in the JSON)\n`);
  }
  const busiest = loadMax(ctx.run);
  if (busiest > machine.cpuCount + 1) {
    process.stdout.write(`warning: load average reached ${busiest.toFixed(1)} on ` +
      `${machine.cpuCount} ` +
      'CPUs: other work shared the machine; figures are noisy\n');
  }
  process.stdout.write(`raw results: ${path.relative(REPO, jsonPath)}\n`);
  const chartServers = ['nbdkit', 'qemu-nbd', 'nbd-server', 'xvd', 'xvd-frag']
    .filter((name) => columns.includes(name));
  if (!has('gnuplot') || chartServers.length === 0) return;
  if (!rows.some((row) => row.bestPeer)) {
    log('chart not drawn: no peer figures to normalize to');
    return;
  }
  const pngPath = path.join(RESULTS_DIR, `bench-${stamp}.png`);
  const title = `xvd vs peers: ${machine.cpuCount}x ${machine.cpuModel}, ` +
    `Linux ${machine.kernel}, ` +
    `${ctx.run.startedAt.slice(0, 10)}, fio ${timing.runtimeS}+${timing.rampS} s/cell` +
    `${timing.rounds > 1 ? `, median of ${timing.rounds} rounds` : ''}`;
  try {
    await report.drawChart(rows, chartServers, title, pngPath, ctx.dir);
    const targets = [ctx.options.chart, ctx.isFiltered ? null : CHART_COMMITTED].filter(Boolean);
    for (const target of targets) fs.copyFileSync(pngPath, target);
    const written = [pngPath, ...targets].map((file) => path.relative(REPO, file));
    process.stdout.write(`chart: ${written.join(', ')}\n`);
  } catch (error) {
    log(`chart not drawn: ${error.message}`);
  }
}

function installExitHandlers(ctx) {
  const cleanup = () => {
    proc.killAllGroupsSync();
    if (!ctx.options.keep) fs.rmSync(ctx.dir, { recursive: true, force: true });
  };
  process.on('exit', cleanup);
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
    process.on(signal, () => {
      log(`${signal}: stopping servers`);
      cleanup();
      process.exit(130);
    });
  }
}

async function main() {
  const options = parseArgs(process.argv.slice(2));
  ensureTools();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xvd-bench-'));
  const timing = { ...(options.long ? TIMING_LONG : TIMING_SHORT) };
  if (options.runtimeS !== null) timing.runtimeS = options.runtimeS;
  if (options.rampS !== null) timing.rampS = options.rampS;
  if (options.rounds !== null) timing.rounds = options.rounds;
  const jobs = [...clients.FIO_JOBS, ...clients.COPY_JOBS]
    .filter((job) => options.jobs === null || options.jobs.includes(job.id));
  const ctx = {
    repo: REPO, dir, options, jobs, timing, log, sizeBytes: SIZE_BYTES,
    image: path.join(dir, 'disk.img'),
    copySource: path.join(dir, 'copy-source.img'),
    cacheDir: path.join(RESULTS_DIR, 'cache'),
    rebuildPool: options.rebuildPool,
    isFiltered: options.servers !== null || options.jobs !== null ||
      options.transports.length !== TRANSPORTS.length || options.runtimeS !== null,
    run: null,
    backingFiles: [],
    /** server name → the backing files it serves ('local' and the peers: the one image) */
    filesOf: new Map(),
    instances: new Map(),
    samples: new Map(),
    hasLocal: false,
  };
  ctx.backingFiles.push(ctx.image, ctx.copySource);
  ctx.filesOf.set('local', [ctx.image]);
  installExitHandlers(ctx);
  ctx.run = {
    version: 2, startedAt: new Date().toISOString(), machine: machineInfo(), timing,
    sizeBytes: SIZE_BYTES, servers: {}, rows: [],
  };
  ctx.run.rows = emptyRows(ctx);
  await makeBacking(ctx);
  const selected = (name) => BASE_NAMES.includes(name) && options.base === null ? false
    : options.servers === null || options.servers.includes(name);
  if (selected('local')) {
    ctx.hasLocal = true;
    ctx.run.servers.local = { describe: 'fio io_uring on the file itself (ceiling)', reasons: [] };
  }
  for (const server of SERVERS) if (selected(server.name)) await startServer(ctx, server);
  for (let round = 0; round < timing.rounds; round += 1) await runRound(ctx, round);
  await stopServers(ctx);
  summarizeSamples(ctx);
  await finish(ctx);
}

if (process.argv.includes('--ceph')) {
  require('./ceph'); // xvd over RBD beside qemu-nbd's rbd: driver and fio's rbd engine
} else {
  main().catch((error) => {
    log(`failed: ${error.stack || error.message}`);
    process.exitCode = 1;
  });
}
