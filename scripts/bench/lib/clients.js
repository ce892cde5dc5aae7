// The clients that drive every server the same way: fio (nbd engine, JSON output read from a
// file, never scraped) and nbdcopy (whole export to null:, and a cached source file into it).
// Each cell returns { value, unit, bytes, seconds, cpuSeconds, cpuSecondsPerGiB, raw } or
// { error }. Server CPU is sampled from /proc around the measured part: for fio, from the end
// of the ramp to fio's exit, and the CPU rate over that window is divided by the throughput.
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const proc = require('./proc');

const GIB = 1024 ** 3;
const MIB = 1024 ** 2;

const FIO_JOBS = [
  { id: 'randread-4k', label: 'randread 4k qd32', rw: 'randread', bs: '4k', iodepth: 32,
    unit: 'IOPS' },
  { id: 'randwrite-4k', label: 'randwrite 4k qd32', rw: 'randwrite', bs: '4k', iodepth: 32,
    unit: 'IOPS' },
  { id: 'read-1m', label: 'read 1M qd8', rw: 'read', bs: '1m', iodepth: 8, unit: 'MiB/s' },
  { id: 'write-1m', label: 'write 1M qd8', rw: 'write', bs: '1m', iodepth: 8, unit: 'MiB/s' },
];
const COPY_JOBS = [
  { id: 'copy-to-null', label: 'nbdcopy -> null:', direction: 'read', unit: 'MiB/s' },
  { id: 'copy-from-file', label: 'nbdcopy file ->', direction: 'write', unit: 'MiB/s' },
];

function fioArgs(job, target, timing, outPath) {
  const common = [
    '--name=job', `--rw=${job.rw}`, `--bs=${job.bs}`, `--iodepth=${job.iodepth}`,
    `--runtime=${timing.runtimeS}`, `--ramp_time=${timing.rampS}`, '--time_based',
    '--numjobs=1', '--output-format=json', `--output=${outPath}`,
  ];
  if (target.uri !== undefined) return [...common, '--ioengine=nbd', `--uri=${target.uri}`];
  if (target.rbd !== undefined) { // librbd from fio itself: the ceiling of bench --ceph
    return [...common, '--ioengine=rbd', '--clientname=admin', `--pool=${target.rbd.pool}`,
      `--rbdname=${target.rbd.image}`];
  }
  return [
    ...common, '--ioengine=io_uring', `--filename=${target.file}`, '--direct=0', '--invalidate=0',
  ];
}

function cpuRate(pid, start) {
  const seconds = Number(process.hrtime.bigint() - start.ns) / 1e9;
  const machine = proc.machineCpuSeconds();
  const endCpu = pid === null ? null : proc.cpuSecondsTree(pid);
  return {
    cpuSeconds: endCpu === null || start.cpu === null ? null : endCpu - start.cpu,
    seconds,
    machineBusySeconds: machine.busySeconds - start.machine.busySeconds,
    stealSeconds: machine.stealSeconds - start.machine.stealSeconds,
  };
}

/**
 * CPU (in cores) that neither the server nor fio used during the measured window: other work on
 * the machine, which makes a cell noisy. Steal is time the hypervisor gave to other guests.
 */
function contention(window, job) {
  const fioCores = ((job.usr_cpu || 0) + (job.sys_cpu || 0)) / 100;
  const serverCores = window.cpuSeconds === null ? 0 : window.cpuSeconds / window.seconds;
  const otherCores = window.machineBusySeconds / window.seconds - fioCores - serverCores;
  return {
    otherCores: Math.max(0, Number(otherCores.toFixed(2))),
    stealCores: Number((window.stealSeconds / window.seconds).toFixed(2)),
  };
}

function summarizeFio(report, job) {
  const result = report.jobs && report.jobs[0];
  if (!result) throw new Error('fio JSON has no jobs');
  if (result.error) throw new Error(`fio job error ${result.error}`);
  const bytes = result.read.io_bytes + result.write.io_bytes;
  const bytesPerSecond = result.read.bw_bytes + result.write.bw_bytes;
  const iops = result.read.iops + result.write.iops;
  if (!(bytes > 0)) throw new Error('fio moved no data');
  const value = job.unit === 'IOPS' ? iops : bytesPerSecond / MIB;
  return { value, unit: job.unit, iops, bytesPerSecond, bytes, runtimeMs: result.job_runtime };
}

/** One fio cell; target is { uri }, { rbd: { pool, image } } or { file }; pid is the server to charge (null for local). */
async function runFio(job, target, pid, timing, dir) {
  const outPath = path.join(dir, `fio-${process.pid}-${Date.now()}.json`);
  let window = null;
  let start = null;
  const sampler = setTimeout(() => {
    start = {
      cpu: pid === null ? null : proc.cpuSecondsTree(pid),
      machine: proc.machineCpuSeconds(),
      ns: process.hrtime.bigint(),
    };
  }, timing.rampS * 1000 + 100);
  const timeoutMs = (timing.runtimeS + timing.rampS) * 1000 + 60000;
  const result = await proc.run('fio', fioArgs(job, target, timing, outPath), { timeoutMs });
  clearTimeout(sampler);
  if (start !== null) window = cpuRate(pid, start);
  try {
    if (result.code !== 0) {
      throw new Error(`fio exit ${result.code}: ${proc.tail(result.stderr, 2)}`);
    }
    const text = fs.readFileSync(outPath, 'utf8');
    const report = JSON.parse(text.slice(text.indexOf('{')));
    const summary = summarizeFio(report, job);
    let cpuSecondsPerGiB = null;
    if (window !== null && window.seconds > 0 && window.cpuSeconds !== null) {
      cpuSecondsPerGiB = (window.cpuSeconds / window.seconds) / (summary.bytesPerSecond / GIB);
    }
    return {
      ...summary,
      cpuSeconds: window && window.cpuSeconds,
      cpuWindowS: window && window.seconds,
      cpuSecondsPerGiB,
      ...(window === null ? {} : contention(window, report.jobs[0])),
      wallMs: result.wallMs,
      raw: report.jobs[0],
    };
  } catch (error) {
    return { error: error.message, wallMs: result.wallMs };
  } finally {
    fs.rmSync(outPath, { force: true });
  }
}

/**
 * One nbdcopy cell, best of `reps` runs; CPU is summed over all runs. `beforeRep` runs before
 * every run after the first (the caller syncs the backing files, so each run starts on clean
 * pages as the first did).
 */
async function runCopy(job, target, pid, ctx, beforeRep = async () => {}) {
  const source = job.direction === 'read' ? target.uri || target.file : ctx.copySource;
  const destination = job.direction === 'read' ? 'null:' : target.uri || target.file;
  let bestSeconds = Infinity;
  let cpuSeconds = 0;
  let bytesTotal = 0;
  let lastError = null;
  for (let rep = 0; rep < ctx.timing.copyReps; rep += 1) {
    if (rep > 0) await beforeRep();
    const before = pid === null ? null : proc.cpuSecondsTree(pid);
    const result = await proc.run('nbdcopy', [source, destination], { timeoutMs: 120000 });
    const after = pid === null ? null : proc.cpuSecondsTree(pid);
    if (result.code !== 0) {
      lastError = `nbdcopy exit ${result.code}: ${proc.tail(result.stderr, 2)}`;
      continue;
    }
    bestSeconds = Math.min(bestSeconds, result.wallMs / 1000);
    bytesTotal += ctx.sizeBytes;
    if (before !== null && after !== null) cpuSeconds += after - before;
  }
  if (bytesTotal === 0) return { error: lastError };
  return {
    value: ctx.sizeBytes / MIB / bestSeconds,
    unit: 'MiB/s',
    bytes: ctx.sizeBytes,
    bestSeconds,
    reps: ctx.timing.copyReps,
    cpuSeconds: pid === null ? null : cpuSeconds,
    cpuSecondsPerGiB: pid === null ? null : cpuSeconds / (bytesTotal / GIB),
    error: lastError || undefined,
  };
}

module.exports = { COPY_JOBS, FIO_JOBS, GIB, MIB, runCopy, runFio };
