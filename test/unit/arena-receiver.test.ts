/**
 * ArenaReceiver against a byte-stream model: a stream of frames (28-byte headers, payloads from
 * 0 bytes to several MiB) is delivered in reads of random sizes into the tails nextBuffer()
 * hands out, the way libuv fills them; a consumer takes headers and payloads as a connection
 * does, holds payload views for a random while and checks every byte of each one when it
 * releases it (a reused or compacted arena would have overwritten it). Property-based
 * (fast-check) plus fixed cases that force arena switches and compaction.
 */
import t from 'tap';
import fc from 'fast-check';
import { ArenaReceiver } from '../../src/nbd/arena-receiver';
import type { Payload } from '../../src/nbd/framer';
import { LIMITS } from '../../src/limits';

const HEADER = 28;

/** Deterministic bytes for frame `index` at `offset`: any misplaced byte shows. */
function byteAt(index: number, offset: number): number {
  return (index * 131 + offset * 7 + (offset >>> 8)) & 0xff;
}

function frameBytes(index: number, length: number): Buffer {
  const frame = Buffer.allocUnsafe(length);
  for (let offset = 0; offset < length; offset += 1) frame[offset] = byteAt(index, offset);
  return frame;
}

function isIntact(data: Buffer, index: number): boolean {
  for (let offset = 0; offset < data.length; offset += 1) {
    if (data[offset] !== byteAt(index, offset)) return false;
  }
  return true;
}

interface Scenario {
  payloadLengths: number[];
  readLengths: number[];
  /** how many newer payloads each payload is held past (0: released at once) */
  holds: number[];
}

/** Runs a scenario; returns problems found (empty when all is well) and the receiver. */
function run(scenario: Scenario): { problems: string[]; receiver: ArenaReceiver } {
  const receiver = new ArenaReceiver();
  const stream = Buffer.concat(scenario.payloadLengths.flatMap((length, index) =>
    [frameBytes(-1 - index, HEADER), frameBytes(index, length)]));
  const problems: string[] = [];
  const held: { payload: Payload; index: number; releaseAfter: number }[] = [];
  let frame = 0; // next frame to consume
  let isHeader = true;
  let sent = 0;
  let reads = 0;
  const consume = (): void => {
    for (;;) {
      if (frame >= scenario.payloadLengths.length) return;
      if (isHeader) {
        if (receiver.length < HEADER) return;
        const header = receiver.take(HEADER);
        if (!isIntact(header, -1 - frame)) problems.push(`header ${frame} corrupt`);
        receiver.expect(scenario.payloadLengths[frame] ?? 0);
        isHeader = false;
        continue;
      }
      const length = scenario.payloadLengths[frame] ?? 0;
      if (receiver.length < length) return;
      const payload = receiver.takePayload(length);
      receiver.expect(0);
      held.push({ payload, index: frame, releaseAfter: frame + (scenario.holds[frame] ?? 0) });
      for (let at = held.length - 1; at >= 0; at -= 1) {
        const entry = held[at];
        if (entry === undefined || entry.releaseAfter > frame) continue;
        if (!isIntact(entry.payload.data, entry.index)) problems.push(`payload ${entry.index}`);
        entry.payload.release();
        held.splice(at, 1);
      }
      frame += 1;
      isHeader = true;
    }
  };
  while (sent < stream.length) {
    const tail = receiver.nextBuffer();
    if (tail.length === 0) {
      problems.push('nextBuffer gave no room');
      break;
    }
    const want = scenario.readLengths[reads % scenario.readLengths.length] ?? 1;
    const length = Math.min(want, tail.length, stream.length - sent);
    stream.copy(tail, 0, sent, sent + length);
    receiver.received(length, tail);
    sent += length;
    reads += 1;
    consume();
  }
  for (const entry of held) {
    if (!isIntact(entry.payload.data, entry.index)) problems.push(`payload ${entry.index} late`);
    entry.payload.release();
  }
  if (frame !== scenario.payloadLengths.length) problems.push(`consumed ${frame} frames only`);
  if (receiver.length !== 0) problems.push(`${receiver.length} bytes left over`);
  receiver.dispose();
  return { problems, receiver };
}

t.test('every payload is intact until released, for random frames, reads and holds', (t) => {
  const payloadLength = fc.oneof(
    fc.constant(0),
    fc.integer({ min: 1, max: 4096 }),
    fc.integer({ min: 60 * 1024, max: 300 * 1024 }),
    fc.integer({ min: 1024 * 1024 - 3, max: 3 * 1024 * 1024 }),
  );
  fc.assert(fc.property(
    fc.array(payloadLength, { minLength: 1, maxLength: 24 }),
    fc.array(fc.oneof(fc.integer({ min: 1, max: 64 }), fc.integer({ min: 1, max: 1 << 21 })),
      { minLength: 1, maxLength: 8 }),
    fc.array(fc.integer({ min: 0, max: 6 }), { minLength: 24, maxLength: 24 }),
    (payloadLengths, readLengths, holds) => {
      const { problems } = run({ payloadLengths, readLengths, holds });
      if (problems.length > 0) throw new Error(problems.slice(0, 5).join('; '));
    },
  ), { numRuns: 120, seed: Number(process.env['XVD_FC_SEED'] ?? 20261126) });
  t.end();
});

t.test('1 MiB payloads held 8 deep: arenas switch, and only the first frame is copied', (t) => {
  const count = 64;
  const { problems, receiver } = run({
    payloadLengths: Array.from({ length: count }, () => 1024 * 1024),
    readLengths: [65536, 200000, 1 << 20, 7],
    holds: Array.from({ length: count }, () => 8),
  });
  t.same(problems, []);
  t.ok(receiver.stats.arenas > 2, `arenas used: ${receiver.stats.arenas}`);
  // once a frame's length is known, each new arena starts at a frame boundary: no payload bytes
  // are copied after the first frame (which arrived before its length was known)
  t.ok(receiver.stats.bytesCopied <= LIMITS.nbdRecvArenaMin,
    `copied ${receiver.stats.bytesCopied} bytes over ${receiver.stats.arenas} arenas`);
  t.end();
});

t.test('header-only traffic with nothing held stays in the first arena (compaction)', (t) => {
  const count = 20_000; // 560 KB of headers: more than the first arena holds
  const { problems, receiver } = run({
    payloadLengths: Array.from({ length: count }, () => 0),
    readLengths: [4000, 17, 65536],
    holds: [],
  });
  t.same(problems, []);
  t.equal(receiver.stats.arenas, 1);
  t.ok(count * HEADER > LIMITS.nbdRecvArenaMin);
  t.end();
});

t.test('a read into a tail that is no longer current is refused', (t) => {
  const receiver = new ArenaReceiver();
  const stale = Buffer.alloc(16);
  t.throws(() => receiver.received(4, stale), /stale arena/);
  t.end();
});
