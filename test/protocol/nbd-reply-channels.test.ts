// The reply channels (src/nbd/reply-stream.ts, reply-datapath.ts) against fakes of the stream,
// the thread and the connection: frames of one event-loop turn are corked and leave together;
// a frame's held bytes count until its write callback and the host hears when they fall below
// the cap; a full stream blocks until 'drain'; a closed channel drops frames but still lets
// their buffers go; the data-path channel submits a multi-frame reply whole and ends the
// connection when the thread refuses a frame.
import t from 'tap';
import { Writable } from 'node:stream';
import type { Datapath } from '../../src/dataplane/datapath';
import type { ReplyHost } from '../../src/nbd/reply-channel';
import { DatapathChannel } from '../../src/nbd/reply-datapath';
import { StreamChannel } from '../../src/nbd/reply-stream';

interface FakeHost extends ReplyHost {
  released: boolean[];
  writable: number;
  closed: string[];
  synced: number;
}

function fakeHost(): FakeHost {
  const host: FakeHost = {
    released: [], writable: 0, closed: [], synced: 0,
    syncBudget: () => { host.synced += 1; },
    onReplyReleased: (isUnblocked) => { host.released.push(isUnblocked); },
    onWritable: () => { host.writable += 1; },
    onThreadSettled: () => undefined,
    onStreamBroken: (code) => { host.closed.push(`broken ${code}`); },
    closeHard: (_error, reason) => { host.closed.push(reason); },
    fault: (error) => { throw error; },
  };
  return host;
}

/** A Writable that records each batch it is handed and calls back when told to. */
function recordingStream(highWaterMark = 1 << 20): { stream: Writable; batches: number[][];
  flush(): void; } {
  const batches: number[][] = [];
  const pending: (() => void)[] = [];
  const stream = new Writable({
    highWaterMark,
    writev(chunks, callback) {
      batches.push(chunks.map(({ chunk }) => (chunk as Buffer).length));
      pending.push(callback);
    },
    write(chunk: Buffer, _encoding, callback) {
      batches.push([chunk.length]);
      pending.push(callback);
    },
  });
  return { stream, batches, flush: () => { for (const done of pending.splice(0)) done(); } };
}

const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

t.test('frames of one turn are corked and handed over together', async (t) => {
  const host = fakeHost();
  const { stream, batches } = recordingStream();
  const counts = { bytesWritten: 0 };
  const channel = new StreamChannel(stream, host, counts, 1000);
  channel.send(Buffer.alloc(16));
  channel.sendv([Buffer.alloc(12), Buffer.alloc(100)]);
  t.same(batches, [], 'nothing before the turn ends');
  await turn();
  t.same(batches, [[16, 12, 100]], 'one batch');
  t.equal(counts.bytesWritten, 128);
});

t.test('held bytes count until the write callback; the host hears when the cap is left',
  async (t) => {
    const host = fakeHost();
    const { stream, flush } = recordingStream();
    const channel = new StreamChannel(stream, host, { bytesWritten: 0 }, 1000);
    let written = 0;
    channel.send(Buffer.alloc(10), () => { written += 1; }, 600);
    channel.send(Buffer.alloc(10), () => { written += 1; }, 600);
    t.equal(channel.replyBytes, 1200);
    t.ok(host.synced >= 2, 'the budget heard of both');
    await turn();
    flush();
    await turn();
    t.equal(written, 2);
    t.equal(channel.replyBytes, 0);
    t.same(host.released, [true, false], 'unblocked once: the first release left the cap');
  });

t.test('a full stream blocks the channel until drain', async (t) => {
  const host = fakeHost();
  const { stream, flush } = recordingStream(8);
  const channel = new StreamChannel(stream, host, { bytesWritten: 0 }, 1000);
  channel.send(Buffer.alloc(64));
  t.equal(channel.isBlocked, true);
  await turn();
  flush();
  await turn();
  t.equal(channel.isBlocked, false);
  t.equal(host.writable, 1, 'the host was told');
});

t.test('a closed channel drops frames and lets their buffers go', async (t) => {
  const host = fakeHost();
  const { stream, batches } = recordingStream();
  const counts = { bytesWritten: 0 };
  const channel = new StreamChannel(stream, host, counts, 1000);
  channel.close();
  let written = 0;
  channel.send(Buffer.alloc(10), () => { written += 1; }, 100);
  await turn();
  t.equal(written, 1);
  t.same(batches, []);
  t.equal(counts.bytesWritten, 0);
  t.equal(channel.replyBytes, 0);
});

function fakeDatapath(refuse = false): { datapath: Datapath; submitted: number[];
  finish(): void; } {
  const submitted: number[] = [];
  const callbacks: ((error: Error | null) => void)[] = [];
  const datapath = {
    submit(frame: Buffer, done: (error: Error | null) => void): void {
      if (refuse) throw new Error('ENOMEM');
      submitted.push(frame.length);
      callbacks.push(done);
    },
  } as unknown as Datapath;
  const finish = (): void => {
    for (const done of callbacks.splice(0)) done(null);
  };
  return { datapath, submitted, finish };
}

t.test('the data-path channel submits a multi-frame reply whole, and counts it until sent',
  (t) => {
    const host = fakeHost();
    const { datapath, submitted, finish } = fakeDatapath();
    const channel = new DatapathChannel(datapath, host, 1000);
    let written = 0;
    channel.sendv([Buffer.alloc(20), Buffer.alloc(300)], () => { written += 1; }, 4096);
    t.same(submitted, [320], 'one frame');
    t.equal(written, 1, 'the pieces were copied: their buffer may go');
    t.equal(channel.replyBytes, 320);
    finish();
    t.equal(channel.replyBytes, 0);
    t.end();
  });

t.test('a frame the data-path thread refuses ends the connection', (t) => {
  const host = fakeHost();
  const { datapath } = fakeDatapath(true);
  const channel = new DatapathChannel(datapath, host, 1000);
  let written = 0;
  channel.send(Buffer.alloc(20), () => { written += 1; });
  t.equal(written, 1);
  t.equal(channel.replyBytes, 0);
  t.same(host.closed, ['data path refused a reply']);
  t.end();
});
