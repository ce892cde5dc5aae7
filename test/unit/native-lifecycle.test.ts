/**
 * The lifecycle the writer, sender and data-path threads share (native/src/handle.c,
 * struct xvd_thread_box): a thread left running by JS is stopped and joined when its handle is
 * collected, and when its environment (a worker) is torn down. Observed from outside, in a
 * child process: its thread count (/proc/self/task) goes back to where it was, the peer of
 * each socket sees the end, and the process exits 0 (a thread still using a freed thread-safe
 * function, or a hook run twice, crashes it).
 * And the end a broken invariant gets: XVD_ASSERT (native/src/xvd-assert.h) aborts with file:line
 * and the invariant in every build, NDEBUG or not (checked on a small C program, when gcc is here).
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const ADDON = path.resolve(__dirname, '..', '..', 'native', 'build', 'Release',
  'xvd_native.node');
const COUNT = 8;

/** Runs in the child (and in its worker): opens COUNT of each kind and drops them unclosed. */
const SCRIPT = `
'use strict';
const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');
const { Worker, isMainThread, parentPort, workerData } = require('node:worker_threads');
const addon = require(${JSON.stringify(ADDON)});
const COUNT = ${COUNT};
const tasks = () => fs.readdirSync('/proc/self/task').length;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** COUNT socket pairs over a unix socket: [accepted, peer] with the accepted one's fd. */
async function pairs(dir) {
  const accepted = [];
  const server = net.createServer({ pauseOnConnect: true }, (socket) => accepted.push(socket));
  const file = path.join(dir, 's' + Math.random().toString(16).slice(2));
  await new Promise((resolve) => server.listen(file, resolve));
  const peers = [];
  for (let i = 0; i < COUNT; i++) {
    const peer = net.connect(file);
    peer.on('error', () => undefined);
    await new Promise((resolve) => peer.once('connect', resolve));
    peers.push(peer);
  }
  while (accepted.length < COUNT) await sleep(5);
  server.close();
  return accepted.map((socket, i) => ({ socket, fd: socket._handle.fd, peer: peers[i] }));
}

/** Starts COUNT writers, senders and data paths; returns the peers and a backing fd. */
async function open(dir) {
  const file = path.join(dir, 'backing' + Math.random().toString(16).slice(2));
  fs.writeFileSync(file, Buffer.alloc(1 << 20, 7));
  const backing = fs.openSync(file, 'r+');
  const senderPairs = await pairs(dir);
  const datapathPairs = await pairs(dir);
  const handles = [];
  for (let i = 0; i < COUNT; i++) {
    handles.push(addon.createWriter());
    handles.push(addon.createSender(senderPairs[i].fd, 1));
    handles.push(addon.createDatapath(datapathPairs[i].fd,
      Float64Array.from([0, 1 << 20, backing, 0, 0, 0]), 1 << 20, 2, 1, 100,
      [new Int32Array(new SharedArrayBuffer(4))], null, () => undefined));
  }
  return { handles, peers: [...senderPairs, ...datapathPairs], backing };
}

/** Resolves with how many of the data paths' peers saw the end (their thread closed its dup). */
function ends(peers) {
  let count = 0;
  for (const { peer } of peers) {
    peer.once('end', () => { count += 1; });
    peer.resume();
  }
  return () => count;
}

async function main() {
  const dir = workerData === null || workerData === undefined ? process.argv[2] : workerData;
  if (!isMainThread) {
    const opened = await open(dir);
    parentPort.postMessage({ tasks: tasks() });
    // the worker ends with everything open: its environment's cleanup hooks must stop them
    globalThis.keep = opened;
    process.exit(0);
  }
  const result = {};
  const baseline = tasks();
  // 1. collected handles: every thread is joined by its handle's finalizer
  {
    let opened = await open(dir);
    result.opened = tasks() - baseline;
    const seen = ends(opened.peers.slice(COUNT)); // the data paths' peers
    for (const { socket } of opened.peers) socket.destroy(); // JS lets go of its descriptors
    opened.handles.length = 0;
    opened = null;
    const until = Date.now() + 10000;
    while (Date.now() < until && (tasks() > baseline || seen() < COUNT)) {
      global.gc();
      await sleep(20);
    }
    result.afterGc = tasks() - baseline;
    result.endsAfterGc = seen();
  }
  // 2. a worker's teardown: the cleanup hooks stop and join what it left open
  {
    const before = tasks();
    const worker = new Worker(__filename, { workerData: dir, argv: [] });
    worker.on('message', (message) => { result.inWorker = message.tasks - before; });
    result.workerExit = await new Promise((resolve) => worker.on('exit', resolve));
    const until = Date.now() + 10000;
    while (Date.now() < until && tasks() > before) await sleep(20);
    result.afterWorker = tasks() - before;
  }
  process.stdout.write(JSON.stringify(result));
}

main().catch((error) => {
  process.stderr.write(String(error && error.stack || error));
  process.exit(1);
});
`;

t.test('threads left open are joined when their handles are collected and when their worker ' +
  'ends', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xvd-life-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const script = path.join(dir, 'child.js');
  fs.writeFileSync(script, SCRIPT);
  const child = spawnSync(process.execPath, ['--expose-gc', script, dir],
    { encoding: 'utf8', timeout: 60_000 });
  t.equal(child.status, 0, `the child exits 0 (no crash): ${child.stderr.slice(0, 2000)}`);
  const result = JSON.parse(child.stdout) as Record<string, number>;
  t.ok(result['opened']! >= 3 * COUNT, `${3 * COUNT} threads started (${result['opened']})`);
  t.equal(result['afterGc'], 0, 'collected: every thread joined');
  t.equal(result['endsAfterGc'], COUNT, 'every data path\'s peer saw the end');
  t.ok(result['inWorker']! >= 3 * COUNT, `the worker started its threads (${result['inWorker']})`);
  t.equal(result['workerExit'], 0, 'the worker exited 0');
  t.equal(result['afterWorker'], 0, 'the worker\'s teardown joined every thread it left');
});

t.test('a failed XVD_ASSERT aborts with where and which invariant, also with NDEBUG', async (t) => {
  const gcc = spawnSync('gcc', ['--version'], { encoding: 'utf8' });
  if (gcc.status !== 0) return t.skip('no gcc', () => undefined);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xvd-assert-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const source = path.join(dir, 'probe.c');
  fs.writeFileSync(source, '#include "xvd-assert.h"\n' +
    'int main(int argc, char **argv) {\n  (void)argv;\n' +
    '  XVD_ASSERT(argc == 1, "one argument");\n  return 0;\n}\n');
  const program = path.join(dir, 'probe');
  const include = path.resolve(__dirname, '..', '..', 'native', 'src');
  const built = spawnSync('gcc', ['-O2', '-DNDEBUG', '-Wall', '-Wextra', '-Werror', `-I${include}`,
    '-o', program, source], { encoding: 'utf8' });
  t.equal(built.status, 0, `it compiles: ${built.stderr}`);
  t.equal(spawnSync(program, [], { encoding: 'utf8' }).status, 0, 'a holding invariant: exit 0');
  const broken = spawnSync(program, ['x'], { encoding: 'utf8' });
  t.equal(broken.signal, 'SIGABRT', 'a broken one aborts');
  t.match(broken.stderr, /xvd: assertion failed at .*probe\.c:4: one argument \(argc == 1\)/);
});
