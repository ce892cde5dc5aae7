// The sender thread per connection (native/src/sender.c) on real unix and TCP sockets and real
// files: jobs arrive whole and in order in both modes (sendfile mode sends cached pages with
// sendfile(2) and reads other jobs first, as copy mode does), pieces past EOF are zero-padded,
// a piece that cannot be read fails its job before any byte is sent, a failure after part of a
// job went out (socket error, a read past the first window, sendfile) breaks the stream and
// cancels what follows, abort wakes a send blocked on a full socket (also checked from a child
// process, where a hang cannot stall the runner), a graceful close drains the queue, bad
// arguments are refused at the call, and an idle sender does not hold the process.
import t, { type Test } from 'tap';
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import * as sys from '../../src/sys/index';
import { shortTempDir } from '../helpers/process';
import { bounded } from '../helpers/waits';
import { type SocketPair, type Transport, socketPair } from '../helpers/sockets';
import { firstDifference } from '../helpers/replies';

const KiB = 1024;
const MiB = 1024 * KiB;
const { EBADF, ECANCELED, ECONNRESET, EISDIR, EPIPE } = os.constants.errno;
/** every wait on the peer is bounded by this */
const WAIT_MS = 20_000;
/** closeSender(abort) must return within this */
const ABORT_BOUND_MS = 5000;
/** a job more than both socket buffers hold while the peer does not read */
const BIG_BYTES = 24 * MiB;

const TRANSPORTS: readonly Transport[] = ['unix', 'tcp'];
const MODES: readonly sys.SenderMode[] = ['sendfile', 'copy'];

/** What the peer received: every byte, kept in arrival order, and whether the stream ended. */
class Sink {
  private chunks: Buffer[] = [];
  length = 0;
  isEnded = false;
  private waiter: (() => void) | null = null;

  constructor(socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.chunks.push(chunk);
      this.length += chunk.length;
      this.wake();
    });
    const end = (): void => {
      this.isEnded = true;
      this.wake();
    };
    socket.on('end', end);
    socket.on('close', end);
    socket.on('error', end);
  }

  private wake(): void {
    const waiter = this.waiter;
    this.waiter = null;
    waiter?.();
  }

  get bytes(): Buffer {
    const all = Buffer.concat(this.chunks);
    this.chunks = [all];
    return all;
  }

  /** Resolves once `done()` holds, rejects after timeoutMs. */
  private async until(done: () => boolean, what: string, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!done()) {
      const remaining = deadline - Date.now();
      if (remaining <= 0) throw new Error(`timeout waiting for ${what} (have ${this.length})`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, remaining);
        this.waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  }

  waitLength(length: number, timeoutMs = WAIT_MS): Promise<void> {
    return this.until(() => this.length >= length || this.isEnded, `${length} bytes`, timeoutMs);
  }

  waitEnd(timeoutMs = WAIT_MS): Promise<void> {
    return this.until(() => this.isEnded, 'the end of the stream', timeoutMs);
  }
}

/** A connected pair; both sides destroyed in teardown. */
async function connectPair(t: Test, transport: Transport): Promise<SocketPair> {
  const pair = await socketPair(t, transport, { prefix: 'xvd-sender-' });
  t.teardown(() => {
    pair.peer.destroy();
    pair.server.destroy();
  });
  return pair;
}

interface Result {
  error: NodeJS.ErrnoException | null;
  isIntact: boolean;
}

function submit(sender: sys.NativeSender, bytes: Buffer, pieces: number[][] | null,
  order?: number[], index?: number): Promise<Result> {
  return new Promise((resolve) => {
    sys.senderSubmit(sender, bytes, pieces === null ? null : Float64Array.from(pieces.flat()),
      (error, isIntact) => {
        if (order !== undefined && index !== undefined) order.push(index);
        resolve({ error, isIntact });
      });
  });
}

interface DataFile {
  fd: number;
  data: Buffer;
}

/** A file of random bytes, open for reading, closed in teardown. */
function dataFile(t: Test, dir: string, name: string, length: number): DataFile {
  const file = path.join(dir, name);
  const data = crypto.randomBytes(length);
  fs.writeFileSync(file, data);
  const fd = fs.openSync(file, 'r');
  t.teardown(() => fs.closeSync(fd));
  return { fd, data };
}

/** The bytes a piece must arrive as: the file's, then zeros past its end. */
function pieceBytes(file: DataFile, position: number, length: number): Buffer {
  const out = Buffer.alloc(length);
  if (position < file.data.length) file.data.copy(out, 0, position, position + length);
  return out;
}

/** A directory opened read-only: pread gives EISDIR, sendfile refuses it too. */
function directoryFd(t: Test, dir: string): number {
  const fd = fs.openSync(dir, 'r');
  t.teardown(() => fs.closeSync(fd));
  return fd;
}

function startSender(t: Test, fd: number, mode: sys.SenderMode): sys.NativeSender {
  const sender = sys.createSender(fd, mode);
  t.teardown(() => sys.closeSender(sender, true));
  return sender;
}

t.test('the addon is loaded and exports the sender', async (t) => {
  t.equal(sys.isNative, true, 'without the addon every test below fails');
});

for (const transport of TRANSPORTS) {
  for (const mode of MODES) {
    t.test(`${mode} over ${transport}: jobs arrive whole, in order, header then pieces`,
      async (t) => {
        const dir = t.testdir();
        const a = dataFile(t, dir, 'a', 12 * MiB + 333);
        const b = dataFile(t, dir, 'b', 3 * MiB + 5);
        const pair = await connectPair(t, transport);
        const sink = new Sink(pair.peer);
        const sender = startSender(t, pair.fd, mode);
        const jobs: [Buffer, [DataFile, number, number][] | null][] = [
          [crypto.randomBytes(16), [[a, 4097, 5 * MiB + 3], [b, 12345, 777], [a, 1, 1]]],
          [crypto.randomBytes(7), null],
          [crypto.randomBytes(32), [[b, 0, 64 * KiB]]],
          [Buffer.alloc(0), [[a, 6 * MiB + 11, 6 * MiB - 11 + 333]]], // to EOF exactly
          [crypto.randomBytes(1), []],
          // past a's end: not all cached, so sendfile mode reads this one first, as copy does
          [crypto.randomBytes(20), [[a, 0, 4 * MiB + 1], [b, 3 * MiB, 5], [a, 12 * MiB, 99]]],
        ];
        const order: number[] = [];
        const expected: Buffer[] = [];
        const results = jobs.map(([bytes, pieces], index) => {
          expected.push(bytes);
          for (const [file, position, length] of pieces ?? []) {
            expected.push(pieceBytes(file, position, length));
          }
          const triples = pieces === null ? null
            : pieces.map(([file, position, length]) => [file.fd, position, length]);
          return submit(sender, bytes, triples, order, index);
        });
        const all = Buffer.concat(expected);
        const settled = await bounded(Promise.all(results), WAIT_MS, 'the jobs');
        t.same(settled.map((result) => result.error), jobs.map(() => null), 'every job sent');
        t.same(order, [0, 1, 2, 3, 4, 5], 'completions in submission order');
        await sink.waitLength(all.length);
        t.equal(sink.length, all.length, 'nothing more, nothing less');
        t.equal(firstDifference(sink.bytes, all), -1, 'the exact bytes, in job order');
        // the stream is whole: the JS side can write after the sender's queue emptied
        pair.server.write('tail');
        await sink.waitLength(all.length + 4);
        t.equal(sink.bytes.subarray(all.length).toString(), 'tail');
      });

    t.test(`${mode} over ${transport}: a piece past EOF arrives zero-padded to its length`,
      async (t) => {
        const dir = t.testdir();
        const short = dataFile(t, dir, 'short', 1000);
        const pair = await connectPair(t, transport);
        const sink = new Sink(pair.peer);
        const sender = startSender(t, pair.fd, mode);
        const jobs: [Buffer, [number, number][]][] = [
          // ends inside the file's last (cached) page: sendfile meets EOF and pads
          [crypto.randomBytes(16), [[500, 4096 - 500]]],
          [crypto.randomBytes(16), [
            [500, 70_000], // crosses EOF
            [5000, 3000], // wholly past EOF
            [0, 1000], // exactly the file
            [999, 5 * MiB], // one byte, then more zeros than the socket holds
          ]],
          [Buffer.from('next'), []],
        ];
        const results = jobs.map(([header, pieces]) => submit(sender, header,
          pieces.map(([position, length]) => [short.fd, position, length])));
        const all = Buffer.concat(jobs.flatMap(([header, pieces]) => [header,
          ...pieces.map(([position, length]) => pieceBytes(short, position, length))]));
        const settled = await bounded(Promise.all(results), WAIT_MS, 'the jobs');
        t.same(settled.map((result) => result.error), [null, null, null]);
        await sink.waitLength(all.length);
        t.equal(sink.length, all.length);
        t.equal(firstDifference(sink.bytes, all), -1, 'file bytes, then zeros, then the next');
      });

    t.test(`${mode} over ${transport}: a socket error breaks the stream; later jobs cancel`,
      async (t) => {
        const dir = t.testdir();
        const a = dataFile(t, dir, 'a', 12 * MiB);
        const pair = await connectPair(t, transport);
        const sender = startSender(t, pair.fd, mode);
        const closed = new Promise((resolve) => pair.server.once('end', resolve));
        pair.server.resume();
        pair.peer.destroy();
        await bounded(closed, WAIT_MS, 'the peer closing');
        const broken = await bounded(submit(sender, Buffer.alloc(16, 1), [[a.fd, 0, 12 * MiB]]),
          WAIT_MS, 'the job to a closed peer');
        t.not(broken.error, null, 'a peer that closed cannot take 12 MiB');
        t.ok([EPIPE, ECONNRESET].includes(broken.error?.errno ?? 0),
          `a socket error (errno ${broken.error?.errno})`);
        t.match(broken.error?.code, /^(EPIPE|ECONNRESET)$/, 'named by its errno');
        t.equal(broken.isIntact, false, 'a socket error is never intact');
        const later = await bounded(submit(sender, Buffer.from('later'), null), WAIT_MS,
          'the job after');
        t.equal(later.error?.errno, ECANCELED, 'the next job is cancelled');
        t.equal(later.isIntact, false);
      });
  }

  for (const mode of MODES) {
    t.test(`${mode} over ${transport}: a piece that cannot be read fails its job before any ` +
      'byte is sent; the next job is intact', async (t) => {
      const dir = t.testdir();
      const a = dataFile(t, dir, 'a', 2 * MiB);
      const dirFd = directoryFd(t, dir);
      const pair = await connectPair(t, transport);
      const sink = new Sink(pair.peer);
      const sender = startSender(t, pair.fd, mode);
      const first = crypto.randomBytes(16);
      const second = crypto.randomBytes(16);
      const results = await bounded(Promise.all([
        submit(sender, first, [[a.fd, 100, MiB]]),
        // a readable piece before the failing one: still nothing of the job goes out
        submit(sender, Buffer.from('HEADER-OF-FAILED'), [[a.fd, 0, 4096], [dirFd, 0, 4096]]),
        submit(sender, second, [[a.fd, 7, 65_536 + 3]]),
      ]), WAIT_MS, 'the jobs');
      t.equal(results[0]?.error, null);
      t.match(results[1]?.error, { code: 'EISDIR', errno: EISDIR }, 'a directory');
      t.equal(results[1]?.isIntact, true, 'found before any byte of the job was sent');
      t.same(results[2], { error: null, isIntact: false }, 'the job after it is sent');
      const all = Buffer.concat([first, pieceBytes(a, 100, MiB), second,
        pieceBytes(a, 7, 65_536 + 3)]);
      // the stream ends once the sender and the JS side both closed: nothing else was sent
      sys.closeSender(sender, false);
      pair.server.end();
      await sink.waitEnd();
      t.equal(sink.length, all.length, 'no byte of the failed job');
      t.equal(firstDifference(sink.bytes, all), -1, 'the other jobs, whole and in order');
    });

    t.test(`${mode} over ${transport}: a read failing after part of its job was sent breaks ` +
      'the stream; later jobs cancel', async (t) => {
      const dir = t.testdir();
      const a = dataFile(t, dir, 'a', 12 * MiB);
      const dirFd = directoryFd(t, dir);
      const pair = await connectPair(t, transport);
      const sink = new Sink(pair.peer);
      const sender = startSender(t, pair.fd, mode);
      const first = crypto.randomBytes(16);
      const failedHeader = crypto.randomBytes(16);
      // 12 MiB before the failing piece: more than the sender reads ahead of the socket
      const results = await bounded(Promise.all([
        submit(sender, first, [[a.fd, 100, MiB]]),
        submit(sender, failedHeader, [[a.fd, 0, 12 * MiB], [dirFd, 0, 4096]]),
        submit(sender, Buffer.from('NEVER-SENT-1'), [[a.fd, 0, 4096]]),
        submit(sender, Buffer.from('NEVER-SENT-2'), null),
      ]), WAIT_MS, 'the jobs');
      t.equal(results[0]?.error, null);
      t.match(results[1]?.error, { errno: EISDIR }, 'the directory piece fails');
      t.equal(results[1]?.isIntact, false, 'part of the job was sent: the stream is broken');
      for (const index of [2, 3]) {
        t.equal(results[index]?.error?.errno, ECANCELED, `job ${index} cancelled`);
        t.equal(results[index]?.isIntact, false);
      }
      const after = await bounded(submit(sender, Buffer.from('NEVER-SENT-3'), null), WAIT_MS,
        'a job submitted after the failure');
      t.equal(after.error?.errno, ECANCELED, 'a job submitted later is cancelled too');
      t.equal(after.error?.code, 'ECANCELED', 'the error carries the errno name');
      sys.closeSender(sender, false);
      pair.server.end();
      await sink.waitEnd();
      const before = Buffer.concat([first, pieceBytes(a, 100, MiB), failedHeader]);
      const cut = sink.length - before.length;
      t.ok(cut > 0 && cut <= 12 * MiB, `the failed job was cut short after ${cut} bytes`);
      const prefix = Buffer.concat([before, a.data.subarray(0, Math.max(0, cut))]);
      t.equal(firstDifference(sink.bytes, prefix), -1, 'the first job, then the failed one cut');
      t.equal(sink.bytes.includes('NEVER-SENT'), false, 'nothing of the cancelled jobs');
    });
  }

  t.test(`copy over ${transport}: a write-only descriptor fails its job before any byte is ` +
    'sent', async (t) => {
    const dir = t.testdir();
    const a = dataFile(t, dir, 'a', 64 * KiB);
    const writeOnly = fs.openSync(path.join(dir, 'a'), fs.constants.O_WRONLY);
    t.teardown(() => fs.closeSync(writeOnly));
    const pair = await connectPair(t, transport);
    const sink = new Sink(pair.peer);
    const sender = startSender(t, pair.fd, 'copy');
    const failed = await bounded(submit(sender, Buffer.from('NOT-SENT'), [[writeOnly, 0, 4096]]),
      WAIT_MS, 'the failing job');
    t.match(failed.error, { code: 'EBADF', errno: EBADF }, 'pread refuses it');
    t.equal(failed.isIntact, true);
    const next = await bounded(submit(sender, Buffer.from('next'), [[a.fd, 0, 100]]), WAIT_MS,
      'the next job');
    t.equal(next.error, null);
    const all = Buffer.concat([Buffer.from('next'), a.data.subarray(0, 100)]);
    await sink.waitLength(all.length);
    t.equal(firstDifference(sink.bytes, all), -1, 'only the next job');
  });

  t.test(`sendfile over ${transport}: sendfile failing after the header went out breaks the ` +
    'stream; later jobs cancel', async (t) => {
    const dir = t.testdir();
    const a = dataFile(t, dir, 'a', 2 * MiB); // just written: its pages are cached
    // cachestat(2) finds the pages cached through it; sendfile(2) refuses it (EBADF) after
    // the job's bytes went out
    const writeOnly = fs.openSync(path.join(dir, 'a'), fs.constants.O_WRONLY);
    t.teardown(() => fs.closeSync(writeOnly));
    const pair = await connectPair(t, transport);
    const sink = new Sink(pair.peer);
    const sender = startSender(t, pair.fd, 'sendfile');
    const first = crypto.randomBytes(16);
    const failedHeader = crypto.randomBytes(16);
    const results = await bounded(Promise.all([
      submit(sender, first, [[a.fd, 100, MiB]]),
      submit(sender, failedHeader, [[writeOnly, 0, 4096]]),
      submit(sender, Buffer.from('NEVER-SENT-1'), [[a.fd, 0, 4096]]),
      submit(sender, Buffer.from('NEVER-SENT-2'), null),
    ]), WAIT_MS, 'the jobs');
    t.equal(results[0]?.error, null);
    t.match(results[1]?.error, { errno: EBADF }, 'sendfile from a write-only descriptor');
    t.equal(results[1]?.isIntact, false, 'its header was sent: the stream is broken');
    for (const index of [2, 3]) {
      t.equal(results[index]?.error?.errno, ECANCELED, `job ${index} cancelled`);
      t.equal(results[index]?.isIntact, false);
    }
    sys.closeSender(sender, false);
    pair.server.end();
    await sink.waitEnd();
    const all = Buffer.concat([first, pieceBytes(a, 100, MiB), failedHeader]);
    t.equal(sink.length, all.length, 'the first job and the failed header, nothing after');
    t.equal(firstDifference(sink.bytes, all), -1);
  });
}

for (const transport of TRANSPORTS) {
  for (const [mode, source] of [['sendfile', 'cached'], ['sendfile', 'sparse'],
    ['copy', 'cached']] as const) {
    // sendfile mode sends cached pages with sendfile(2) and reads others first, as copy does
    t.test(`${mode} over ${transport}: abort wakes a send of ${source} pages blocked on a ` +
      'peer that does not read', async (t) => {
        const dir = t.testdir();
        const big = path.join(dir, 'big');
        if (source === 'cached') {
          fs.writeFileSync(big, Buffer.alloc(BIG_BYTES, 0x33)); // in the page cache now
        } else {
          fs.writeFileSync(big, '');
          fs.truncateSync(big, BIG_BYTES); // a hole: never read, so not in the page cache
        }
        const bigFd = fs.openSync(big, 'r');
        t.teardown(() => fs.closeSync(bigFd));
        const small = dataFile(t, dir, 'small', 4096);
        const pair = await connectPair(t, transport);
        const sender = sys.createSender(pair.fd, mode);
        const jobs: [Buffer, number[][] | null][] = [
          [Buffer.from('first'), [[small.fd, 0, 4096]]], // fits in the socket buffer
          [Buffer.from('big'), [[bigFd, 0, BIG_BYTES]]], // does not: the thread waits in poll
          [Buffer.from('queued-1'), [[small.fd, 0, 4096]]],
          [Buffer.from('queued-2'), null],
          [Buffer.from('queued-3'), [[bigFd, 0, MiB]]],
        ];
        const isSettled = jobs.map(() => false);
        const results = jobs.map(([bytes, pieces], index) =>
          submit(sender, bytes, pieces).finally(() => { isSettled[index] = true; }));
        // the client never reads: give the thread time to fill both socket buffers
        await new Promise((resolve) => setTimeout(resolve, 300));
        t.equal(isSettled[1], false, 'the big job is still being sent: the thread waits');
        const started = Date.now();
        sys.closeSender(sender, true);
        const elapsedMs = Date.now() - started;
        t.ok(elapsedMs < ABORT_BOUND_MS, `closeSender(abort) returned in ${elapsedMs} ms`);
        const settled = await bounded(Promise.all(results), ABORT_BOUND_MS, 'the callbacks');
        for (const [index, result] of settled.entries()) {
          if (index === 0) continue; // may have gone out before the buffers filled
          t.not(result.error, null, `job ${index} reports an error`);
          t.equal(result.isIntact, false, `job ${index} is not intact`);
        }
        for (const index of [2, 3, 4]) {
          t.equal(settled[index]?.error?.errno, ECANCELED, `queued job ${index}: ECANCELED`);
        }
        // what reported success must be on the stream, in order, and nothing after the failure
        const sink = new Sink(pair.peer);
        pair.server.end();
        await sink.waitEnd();
        const sent = settled[0]?.error === null
          ? Buffer.concat([Buffer.from('first'), small.data]) : Buffer.alloc(0);
        t.ok(sink.length >= sent.length, 'the jobs that succeeded were delivered');
        t.equal(firstDifference(sink.bytes.subarray(0, sent.length), sent), -1);
        t.ok(sink.length < sent.length + 3 + BIG_BYTES, 'the big job was cut short');
        t.equal(sink.bytes.includes('queued-'), false, 'no cancelled job reached the peer');
      });
  }

  t.test(`over ${transport}: closeSender(abort) of an idle sender returns at once`,
    async (t) => {
      const pair = await connectPair(t, transport);
      const sender = sys.createSender(pair.fd, 'copy');
      const started = Date.now();
      sys.closeSender(sender, true);
      t.ok(Date.now() - started < ABORT_BOUND_MS);
      t.throws(() => sys.senderSubmit(sender, Buffer.alloc(1), null, () => t.fail('no call')),
        /closed/);
    });

  for (const mode of MODES) {
    t.test(`${mode} over ${transport}: a graceful close sends every queued job first`,
      async (t) => {
        const dir = t.testdir();
        const a = dataFile(t, dir, 'a', 64 * KiB);
        const pair = await connectPair(t, transport);
        const sink = new Sink(pair.peer);
        const sender = sys.createSender(pair.fd, mode);
        // small enough to fit in the socket buffers: closeSender blocks the JS thread (the
        // reader) until the queue drained
        const jobs: [Buffer, number[][] | null][] = [
          [crypto.randomBytes(16), [[a.fd, 3, 3000]]],
          [crypto.randomBytes(5), null],
          [crypto.randomBytes(16), [[a.fd, 4096, 2048], [a.fd, 60_000, 4000]]],
        ];
        const results = jobs.map(([bytes, pieces]) => submit(sender, bytes, pieces));
        sys.closeSender(sender, false);
        const settled = await bounded(Promise.all(results), WAIT_MS, 'the callbacks');
        t.same(settled.map((result) => result.error), [null, null, null], 'all sent');
        const all = Buffer.concat([jobs[0]![0], pieceBytes(a, 3, 3000), jobs[1]![0],
          jobs[2]![0], pieceBytes(a, 4096, 2048), pieceBytes(a, 60_000, 4000)]);
        pair.server.end('after');
        await sink.waitEnd();
        t.equal(firstDifference(sink.bytes, Buffer.concat([all, Buffer.from('after')])), -1,
          'every job, then what JS wrote after the close');
        t.throws(() => sys.senderSubmit(sender, Buffer.alloc(1), null, () => t.fail('no call')),
          /closed/, 'submit after close throws');
      });
  }

  t.test(`over ${transport}: the thread sends through its own dup of the socket`, async (t) => {
    const dir = t.testdir();
    const a = dataFile(t, dir, 'a', 8 * MiB);
    const pair = await connectPair(t, transport);
    const sink = new Sink(pair.peer);
    const sender = sys.createSender(pair.fd, 'sendfile');
    const result = submit(sender, Buffer.from('dup'), [[a.fd, 0, 8 * MiB]]);
    pair.server.destroy(); // the JS side closes its descriptor while the job is being sent
    t.same(await bounded(result, WAIT_MS, 'the job'), { error: null, isIntact: false });
    await sink.waitLength(3 + 8 * MiB);
    t.equal(sink.isEnded, false, 'the dup keeps the socket open');
    sys.closeSender(sender, false);
    await sink.waitEnd();
    t.equal(sink.length, 3 + 8 * MiB);
    t.equal(firstDifference(sink.bytes, Buffer.concat([Buffer.from('dup'), a.data])), -1);
  });
}

for (const transport of TRANSPORTS) {
  // copy mode only: sendfile queues page-cache pages, not bytes, so a write after completion
  // reaches a peer that has not read yet; that is why the server uses it only when asked
  // (serve --sendfile, documented in src/dataplane/reply-sender.ts)
  for (const mode of ['copy'] as const) {
    // the server counts a READ done (its plan released, fence() satisfied) at the callback:
    // what the peer gets must not change after it
    t.test(`${mode} over ${transport}: the peer gets the bytes the file held when the job ` +
      'completed, not later writes', async (t) => {
      const file = path.join(t.testdir(), 'f');
      fs.writeFileSync(file, Buffer.alloc(64 * KiB, 0x01)); // cached: sendfile sends it
      const fd = fs.openSync(file, 'r+');
      t.teardown(() => fs.closeSync(fd));
      const pair = await connectPair(t, transport);
      const sender = startSender(t, pair.fd, mode);
      // the peer does not read yet: the reply waits in the socket buffers
      const result = await bounded(submit(sender, Buffer.from('h'), [[fd, 0, 64 * KiB]]),
        WAIT_MS, 'the job');
      t.equal(result.error, null);
      fs.writeSync(fd, Buffer.alloc(64 * KiB, 0x02), 0, 64 * KiB, 0); // after completion
      const sink = new Sink(pair.peer);
      await sink.waitLength(1 + 64 * KiB);
      const data = sink.bytes.subarray(1);
      const changed = data.filter((byte) => byte !== 0x01).length;
      t.equal(changed, 0, `${changed} bytes changed after the job completed`);
    });
  }
}

t.test('the pieces are copied at the call; a Float64Array view is read from its offset',
  async (t) => {
    const dir = t.testdir();
    const a = dataFile(t, dir, 'a', 256 * KiB);
    const pair = await connectPair(t, 'unix');
    const sink = new Sink(pair.peer);
    const sender = startSender(t, pair.fd, 'copy');
    const backing = Float64Array.from([-5, -5, -5, a.fd, 1000, 5000, a.fd, 0, 10]);
    const view = backing.subarray(3); // byteOffset 24: the triple at -5 must not be read
    const result = submit(sender, Buffer.from('v'), null);
    const done = new Promise<Result>((resolve) => {
      sys.senderSubmit(sender, Buffer.from('w'), view, (error, isIntact) =>
        resolve({ error, isIntact }));
    });
    backing.fill(0); // would send from fd 0 if the addon read the array later
    t.same((await bounded(result, WAIT_MS, 'job v')).error, null);
    t.same((await bounded(done, WAIT_MS, 'job w')).error, null);
    const all = Buffer.concat([Buffer.from('vw'), pieceBytes(a, 1000, 5000),
      pieceBytes(a, 0, 10)]);
    await sink.waitLength(all.length);
    t.equal(firstDifference(sink.bytes, all), -1);
  });

t.test('bad arguments are refused at the call, without a callback', async (t) => {
  const pair = await connectPair(t, 'unix');
  const sender = startSender(t, pair.fd, 'copy');
  const noCall = (): void => {
    t.fail('no callback for a refused call');
  };
  const bytes = Buffer.alloc(4);
  t.throws(() => sys.createSender(-1, 'copy'), 'a negative descriptor');
  t.throws(() => sys.createSender(pair.fd, 'bogus' as sys.SenderMode), TypeError, 'a bad mode');
  t.throws(() => sys.senderSubmit(sender, bytes, Float64Array.from([3, 0]), noCall),
    'a partial triple');
  t.throws(() => sys.senderSubmit(sender, bytes, [3, 0, 1] as unknown as Float64Array, noCall),
    TypeError, 'an array, not a Float64Array');
  t.throws(() => sys.senderSubmit(sender, bytes,
    Float32Array.from([3, 0, 1]) as unknown as Float64Array, noCall), TypeError, 'Float32Array');
  const bad: [string, number[]][] = [
    ['a negative fd', [-1, 0, 10]],
    ['a fractional fd', [3.5, 0, 10]],
    ['an fd past int32', [2 ** 31, 0, 10]],
    ['a negative position', [3, -1, 10]],
    ['a fractional position', [3, 0.5, 10]],
    ['a NaN position', [3, NaN, 10]],
    ['a zero length', [3, 0, 0]],
    ['a negative length', [3, 0, -4]],
    ['a fractional length', [3, 0, 1.5]],
    ['an infinite length', [3, 0, Infinity]],
    ['a bad second piece', [3, 0, 10, 3, 0, 0]],
  ];
  for (const [what, triples] of bad) {
    t.throws(() => sys.senderSubmit(sender, bytes, Float64Array.from(triples), noCall),
      RangeError, what);
  }
  t.throws(() => sys.senderSubmit(sender, 'text' as unknown as Buffer, null, noCall), TypeError,
    'bytes not a Buffer');
  t.throws(() => sys.senderSubmit(sender, bytes, null,
    'callback' as unknown as sys.SendCallback), TypeError, 'no callback function');
  t.throws(() => sys.senderSubmit({}, bytes, null, noCall), /not a sender/);
  t.throws(() => sys.closeSender({}, true), TypeError);
  // handles carry their kind: a writer's handle is refused, not read as a sender (and back)
  const writer = sys.createWriter();
  t.teardown(() => sys.closeWriter(writer));
  t.throws(() => sys.senderSubmit(writer as unknown as sys.NativeSender, bytes, null, noCall),
    /not a sender/, "a writer's handle is not a sender");
  t.throws(() => sys.closeSender(writer as unknown as sys.NativeSender, true), TypeError,
    "closeSender refuses a writer's handle");
  t.throws(() => sys.writerSubmit(sender as unknown as sys.NativeWriter, bytes,
    Float64Array.from([3, 0, 1, 0]), () => t.fail('no call')), /not a writer/,
  "a sender's handle is not a writer");
  t.throws(() => sys.closeWriter(sender as unknown as sys.NativeWriter), TypeError,
    "closeWriter refuses a sender's handle");
  // the refused calls queued nothing: the sender still works and sends only this
  const sink = new Sink(pair.peer);
  const ok = await bounded(submit(sender, Buffer.from('ok'), null), WAIT_MS, 'a good job');
  t.equal(ok.error, null);
  await sink.waitLength(2);
  await new Promise((resolve) => setTimeout(resolve, 50));
  t.equal(sink.bytes.toString(), 'ok');
});

t.test('submit after close throws; closing twice is harmless', async (t) => {
  const pair = await connectPair(t, 'tcp');
  for (const abort of [false, true]) {
    const sender = sys.createSender(pair.fd, 'sendfile');
    sys.closeSender(sender, abort);
    sys.closeSender(sender, abort);
    sys.closeSender(sender, !abort);
    t.throws(() => sys.senderSubmit(sender, Buffer.alloc(1), null, () => t.fail('no call')),
      /closed/, `after closeSender(${abort})`);
  }
});

t.test('closeSender(abort) is bounded even were it to hang: checked in a child process',
  async (t) => {
    // in this process a closeSender that never returned would block the test runner itself
    const dir = shortTempDir(t, 'xvd-sender-');
    const cached = path.join(dir, 'cached');
    fs.writeFileSync(cached, Buffer.alloc(BIG_BYTES, 0x44));
    const sparse = path.join(dir, 'sparse');
    fs.writeFileSync(sparse, '');
    fs.truncateSync(sparse, BIG_BYTES);
    const sysModule = path.join(__dirname, '..', '..', 'src', 'sys', 'index.ts');
    const socketModule = path.join(__dirname, '..', '..', 'src', 'nbd', 'user-buffer-socket.ts');
    const script = `
      const fs = require('node:fs');
      const net = require('node:net');
      const sys = require(${JSON.stringify(sysModule)});
      const { socketFdOf } = require(${JSON.stringify(socketModule)});
      const fds = { cached: fs.openSync(${JSON.stringify(cached)}, 'r'),
        sparse: fs.openSync(${JSON.stringify(sparse)}, 'r') };
      const combos = [['unix', 'sendfile', 'cached'], ['unix', 'sendfile', 'sparse'],
        ['unix', 'copy', 'cached'], ['tcp', 'sendfile', 'cached'], ['tcp', 'copy', 'sparse']];
      async function run(transport, mode, source, index) {
        const listener = net.createServer();
        const accepted = new Promise((resolve) => listener.once('connection', resolve));
        const target = transport === 'unix' ? ${JSON.stringify(dir)} + '/s' + index : 0;
        await new Promise((resolve) => transport === 'unix' ? listener.listen(target, resolve)
          : listener.listen(0, '127.0.0.1', resolve));
        const client = transport === 'unix' ? net.connect(target)
          : net.connect(listener.address().port, '127.0.0.1');
        const server = await accepted;
        const sender = sys.createSender(socketFdOf(server), mode);
        const errors = [];
        const pieces = Float64Array.from([fds[source], 0, ${BIG_BYTES}]);
        const done = [0, 1, 2].map((job) => new Promise((resolve) =>
          sys.senderSubmit(sender, Buffer.from('x'), pieces,
            (error) => { errors[job] = error === null ? null : error.errno; resolve(); })));
        await new Promise((resolve) => setTimeout(resolve, 200));
        const started = Date.now();
        sys.closeSender(sender, true);
        const elapsedMs = Date.now() - started;
        await Promise.all(done);
        client.destroy();
        server.destroy();
        listener.close();
        return { transport, mode: mode + ' ' + source, elapsedMs, errors };
      }
      (async () => {
        const results = [];
        for (const [index, [transport, mode, source]] of combos.entries()) {
          results.push(await run(transport, mode, source, index));
        }
        process.stdout.write(JSON.stringify(results));
      })();
    `;
    const child = spawnSync(process.execPath, [...process.execArgv, '-e', script],
      { encoding: 'utf8', timeout: 30_000 });
    t.equal(child.signal, null, 'not killed by the timeout: no closeSender hung');
    t.equal(child.status, 0, child.stderr);
    const results = JSON.parse(child.stdout || '[]') as
      { transport: string; mode: string; elapsedMs: number; errors: (number | null)[] }[];
    t.equal(results.length, 5, 'every combination ran');
    for (const { transport, mode, elapsedMs, errors } of results) {
      t.ok(elapsedMs < ABORT_BOUND_MS, `${mode} over ${transport}: ${elapsedMs} ms`);
      t.ok(errors.length === 3 && errors.every((errno) => errno !== null),
        `${mode} over ${transport}: no big job claims success (${errors.join(', ')})`);
      t.same(errors.slice(1), [ECANCELED, ECANCELED], 'the queued jobs are cancelled');
    }
  });

t.test('an idle sender never closed does not hold the process; a pending job does',
  async (t) => {
    const sysModule = path.join(__dirname, '..', '..', 'src', 'sys', 'index.ts');
    const socketModule = path.join(__dirname, '..', '..', 'src', 'nbd', 'user-buffer-socket.ts');
    const script = `
      const net = require('node:net');
      const sys = require(${JSON.stringify(sysModule)});
      const { socketFdOf } = require(${JSON.stringify(socketModule)});
      const listener = net.createServer((socket) => {
        const fd = socketFdOf(socket);
        sys.createSender(fd, 'sendfile'); // never used, never closed
        const used = sys.createSender(fd, 'copy'); // used once, then idle, never closed
        sys.senderSubmit(used, Buffer.from('hello'), null, (error) => {
          process.stdout.write('sent ' + error + ';');
          socket.end();
        });
        listener.close();
      });
      listener.listen(0, '127.0.0.1', () => {
        const client = net.connect(listener.address().port, '127.0.0.1');
        let text = '';
        client.on('data', (chunk) => { text += chunk; });
        client.on('end', () => { process.stdout.write('got ' + text); client.end(); });
      });
    `;
    const started = Date.now();
    const child = spawnSync(process.execPath, [...process.execArgv, '-e', script],
      { encoding: 'utf8', timeout: 30_000 });
    const elapsedMs = Date.now() - started;
    t.equal(child.signal, null, 'not killed by the timeout');
    t.equal(child.status, 0, child.stderr);
    t.equal(child.stdout, 'sent null;got hello', 'the callback ran, the peer got the bytes');
    t.ok(elapsedMs < 15_000, `exited in ${elapsedMs} ms`);
  });
