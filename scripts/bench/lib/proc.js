// Process plumbing for the benchmark: every server is started in its own process group and
// registered here, so that it is stopped by its PID/group after its cells, on a failure, and on
// Ctrl-C. CPU accounting reads /proc/PID/stat for the server and all its descendants (threads
// are already summed per process; cutime/cstime carry reaped children, so a forking server such
// as nbd-server is counted whole: a child moves from "live descendant" to the parent's cutime
// when it is reaped, and the sum does not change).
'use strict';
const fs = require('node:fs');
const net = require('node:net');
const { spawn, spawnSync } = require('node:child_process');

const CLOCK_TICKS_PER_SECOND = Number(spawnSync('getconf', ['CLK_TCK']).stdout || 100) || 100;
const STOP_GRACE_MS = 3000;
const POLL_INTERVAL_MS = 50;

/** Live process groups (pgid -> label) we started; all of them are killed on exit. */
const groups = new Map();

function registerGroup(pgid, label) {
  groups.set(pgid, label);
}

function signalGroup(pgid, signal) {
  try {
    process.kill(-pgid, signal);
  } catch {
    // already gone
  }
  try {
    process.kill(pgid, signal);
  } catch {
    // already gone
  }
}

function isAlive(pid) {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  const stat = readStat(pid);
  return stat !== null && stat.state !== 'Z';
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** SIGTERM the group and the given extra pids, wait, then SIGKILL what is left. */
async function stopGroup(pgid, extraPids = []) {
  const pids = [pgid, ...extraPids, ...descendants(pgid)];
  signalGroup(pgid, 'SIGTERM');
  for (const pid of pids) signalGroup(pid, 'SIGTERM');
  const deadline = Date.now() + STOP_GRACE_MS;
  while (Date.now() < deadline && pids.some(isAlive)) await sleep(POLL_INTERVAL_MS);
  for (const pid of pids) if (isAlive(pid)) signalGroup(pid, 'SIGKILL');
  signalGroup(pgid, 'SIGKILL');
  groups.delete(pgid);
}

/** Synchronous last resort for exit paths: kill every registered group at once. */
function killAllGroupsSync() {
  for (const pgid of groups.keys()) {
    for (const pid of [pgid, ...descendants(pgid)]) signalGroup(pid, 'SIGKILL');
  }
  groups.clear();
}

function readStat(pid) {
  let text;
  try {
    text = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  // comm may contain spaces and parentheses: the fields start after the last ')'
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return {
    state: fields[0],
    ppid: Number(fields[1]),
    ticksSelf: Number(fields[11]) + Number(fields[12]),
    ticksChildren: Number(fields[13]) + Number(fields[14]),
  };
}

function allStats() {
  const stats = new Map();
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const stat = readStat(Number(name));
    if (stat !== null) stats.set(Number(name), stat);
  }
  return stats;
}

function descendants(rootPid, stats = allStats()) {
  const children = new Map();
  for (const [pid, stat] of stats) {
    if (!children.has(stat.ppid)) children.set(stat.ppid, []);
    children.get(stat.ppid).push(pid);
  }
  const found = [];
  const queue = [...(children.get(rootPid) || [])];
  while (queue.length > 0 && found.length < 100000) {
    const pid = queue.shift();
    found.push(pid);
    queue.push(...(children.get(pid) || []));
  }
  return found;
}

/** CPU seconds used so far by pid, its reaped children and all live descendants. */
function cpuSecondsTree(rootPid) {
  const stats = allStats();
  const root = stats.get(rootPid);
  if (root === undefined) return null;
  let ticks = root.ticksSelf + root.ticksChildren;
  for (const pid of descendants(rootPid, stats)) {
    const stat = stats.get(pid);
    ticks += stat.ticksSelf + stat.ticksChildren;
  }
  return ticks / CLOCK_TICKS_PER_SECOND;
}

/** Whole-machine CPU seconds so far: busy (user+nice+system+irq+softirq) and steal. */
function machineCpuSeconds() {
  const line = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0];
  const ticks = line.trim().split(/\s+/).slice(1).map(Number);
  const [user, nice, system, , , irq, softirq, steal] = ticks;
  return {
    busySeconds: (user + nice + system + irq + softirq) / CLOCK_TICKS_PER_SECOND,
    stealSeconds: (steal || 0) / CLOCK_TICKS_PER_SECOND,
  };
}

/**
 * Runs a command to completion with a timeout; resolves {code, signal, stdout, stderr, wallMs}.
 * The child gets its own process group, registered while it runs.
 */
function run(command, args, { timeoutMs = 60000, env, cwd } = {}) {
  return new Promise((resolve) => {
    const started = process.hrtime.bigint();
    const child = spawn(command, args, {
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: env || process.env,
      cwd,
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk) => {
      if (stdout.length < 4e6) stdout += chunk;
    });
    child.stderr.on('data', (chunk) => {
      if (stderr.length < 1e6) stderr += chunk;
    });
    if (child.pid !== undefined) registerGroup(child.pid, command);
    const timer = setTimeout(() => {
      stderr += `\n(timed out after ${timeoutMs} ms; killed)`;
      signalGroup(child.pid, 'SIGKILL');
    }, timeoutMs);
    const finish = (code, signal, error) => {
      clearTimeout(timer);
      if (child.pid !== undefined) groups.delete(child.pid);
      const wallMs = Number(process.hrtime.bigint() - started) / 1e6;
      if (error) stderr += `\n${error.message}`;
      resolve({ code, signal, stdout, stderr, wallMs });
    };
    child.on('error', (error) => finish(-1, null, error));
    child.on('close', (code, signal) => finish(code, signal));
  });
}

/** Starts a long-running server in its own group; output goes to logPath. */
function startDetached(command, args, { logPath, env, cwd } = {}) {
  const logFd = fs.openSync(logPath, 'a');
  const child = spawn(command, args, {
    detached: true,
    stdio: ['ignore', logFd, logFd],
    env: env || process.env,
    cwd,
  });
  fs.closeSync(logFd);
  const state = { exited: false, code: null, signal: null, error: null };
  child.on('exit', (code, signal) => Object.assign(state, { exited: true, code, signal }));
  child.on('error', (error) => Object.assign(state, { exited: true, error }));
  if (child.pid !== undefined) registerGroup(child.pid, command);
  return { child, state };
}

function tryConnect(target) {
  return new Promise((resolve) => {
    const socket = net.connect(target);
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/** Polls until the listener accepts, `isDead()` turns true, or the timeout passes. */
async function waitForListener(target, { timeoutMs = 15000, isDead = () => false } = {}) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (isDead()) return 'server exited before listening';
    if (await tryConnect(target)) return null;
    await sleep(POLL_INTERVAL_MS);
  }
  return `not listening after ${timeoutMs} ms`;
}

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

function tail(text, lines = 5) {
  return String(text).trim().split('\n').slice(-lines).join(' | ');
}

module.exports = {
  cpuSecondsTree,
  descendants,
  freePort,
  isAlive,
  killAllGroupsSync,
  machineCpuSeconds,
  registerGroup,
  run,
  sleep,
  startDetached,
  stopGroup,
  tail,
  waitForListener,
};
