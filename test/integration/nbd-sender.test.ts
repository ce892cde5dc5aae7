/**
 * Large READ replies sent by a connection's sender thread (nbd/reply-sender.ts,
 * native/src/sender.c) from real file backings, over TCP and a unix socket: exact bytes in simple
 * and structured mode, pipelined mixes with small READs, WRITEs and FLUSH (the stream changes
 * hands between the JS socket and the thread), clients that vanish or stop reading with large
 * READs in flight, DISC with them in flight, a reply still queued when the server closes and the
 * backing is written afterwards, and nbdcopy.
 *
 * That the sender really serves the reads is observed from outside: its thread holds a dup of
 * the connection's socket, so while it lives one socket inode of this process has two
 * descriptors in /proc/self/fd (none without it). The server uses the sender only when asked
 * (its `sendfile` option, serve --sendfile: unix sockets); XVD_SENDER=on turns it on for both
 * transports (sendfile on unix, copy on TCP), which most tests here use.
 */
import t, { type Test } from 'tap';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import type { Logger } from 'pino';
import { BackingPool } from '../../src/backing/pool';
import { LIMITS } from '../../src/limits';
import { openExport } from '../../src/engine/extent-export';
import type { ExtentSpec } from '../../src/engine/extent-map';
import { routeEnvOf } from '../../src/cli/route-env';
import { createServer, type NbdServer } from '../../src/nbd/index';
import {
  ScriptedClient, checkHealthy, createFixedProvider, hasTool, quietLog, runTool,
} from '../helpers/nbd-client';
import { CMD } from '../helpers/wire';
import { bounded, duplicatedSockets, eventually, untilStable } from '../helpers/waits';
import {
  TRANSPORTS, type Transport, connectRaw, listenTcpAndUnix, seededRandom, withEnv,
} from '../helpers/sockets';
import {
  collectReplies, describeRequest, firstDifference, succeeded, type Outcome,
  type PipelinedRequest as Request,
} from '../helpers/replies';
import { captureLog } from '../helpers/serve-catalog';

// this file is about the sender thread and the JS path: no data-path thread takes the socket
process.env['XVD_DATAPATH'] = 'off';

const KiB = 1024;
const MiB = 1024 * KiB;
const FILE_BYTES = 20 * MiB;
const EXTENT_COUNT = 16;
const READ_MAX = 32 * MiB;
/** the tail of the export that the mixed tests write; their reads stay below it */
const WRITE_AREA = 4 * MiB;
/** server.close() must finish within this */
const CLOSE_BOUND_MS = 8000;

/** Whether the requests `server` took and the reply bytes it queued stopped changing. */
async function settled(server: NbdServer): Promise<boolean> {
  const { isStable } = await untilStable(() => [server.stats.requests, server.stats.bytesWritten]);
  return isStable;
}

interface Fixture {
  server: NbdServer;
  port: number;
  socketPath: string;
  /** what the export holds, kept up to date with the writes the tests make */
  image: Buffer;
  size: number;
  /** virtual offsets where one extent ends and the next begins */
  boundaries: number[];
  extents: ExtentSpec[];
}

/** 16 extents alternating between two files of random bytes, odd lengths, gaps between them. */
function fragmentedMap(files: string[], contents: Buffer[]): { extents: ExtentSpec[];
  image: Buffer; boundaries: number[] } {
  const extents: ExtentSpec[] = [];
  const parts: Buffer[] = [];
  const boundaries: number[] = [];
  const cursors = [4096, 8192 + 17];
  let virtual = 0;
  for (let index = 0; index < EXTENT_COUNT; index++) {
    const which = index % 2;
    const length = 2 * MiB + index * 37 * KiB + (index % 3) * 511;
    const offset = cursors[which]!;
    extents.push({ path: files[which]!, offset, length });
    parts.push(contents[which]!.subarray(offset, offset + length));
    cursors[which] = offset + length + 4097;
    virtual += length;
    if (index + 1 < EXTENT_COUNT) boundaries.push(virtual);
  }
  return { extents, image: Buffer.concat(parts), boundaries };
}

/** A server on 127.0.0.1 and a unix socket exporting `disk`: an ExtentExport over files. */
async function startServerOver(t: Test, extents: ExtentSpec[], image: Buffer,
  boundaries: number[], log: Logger = quietLog, isSendfile = false): Promise<Fixture> {
  const pool = new BackingPool();
  const exp = await openExport({ name: 'disk', description: 'files', mode: 'w',
    size: image.length, extents, pool });
  // the environment as `xvd serve` reads it (XVD_SENDER, XVD_DATAPATH: cli/route-env.ts)
  const { datapath, sender } = routeEnvOf(process.env);
  const server = createServer({ provider: createFixedProvider([exp]), log,
    sendfile: isSendfile, datapath, sender });
  const { port, socketPath } = await listenTcpAndUnix(t, server, 'xvd-snd-', async () => {
    await exp.close();
    await pool.close();
  });
  return { server, port, socketPath, image, size: image.length, boundaries, extents };
}

/** The fragmented export over two files of random bytes. */
async function startFileServer(t: Test, log?: Logger, isSendfile = false): Promise<Fixture> {
  const dir = t.testdir();
  const files = ['a.img', 'b.img'].map((name) => path.join(dir, name));
  const contents = files.map((file, index) => {
    const data = patternBytes(FILE_BYTES, index + 1);
    fs.writeFileSync(file, data);
    return data;
  });
  const { extents, image, boundaries } = fragmentedMap(files, contents);
  return startServerOver(t, extents, image, boundaries, log, isSendfile);
}

/** Bytes where every 4-byte word differs from its neighbours and from the other file's. */
const patterns = new Map<string, Buffer>();

function patternBytes(length: number, seed: number): Buffer {
  const key = `${length}:${seed}`;
  const known = patterns.get(key);
  if (known !== undefined) return known;
  const words = new Uint32Array(Math.ceil(length / 4));
  for (let index = 0; index < words.length; index++) {
    words[index] = Math.imul(index + 1, 2_654_435_761) ^ Math.imul(seed, 0x9e3779b9);
  }
  const bytes = Buffer.from(words.buffer, 0, length);
  patterns.set(key, bytes);
  return bytes;
}

async function connect(t: Test, fixture: Fixture, transport: Transport, structured: boolean,
): Promise<{ client: ScriptedClient; socket: net.Socket }> {
  const socket = await connectRaw(t, fixture, transport);
  const client = new ScriptedClient(socket, socket);
  await client.handshake({ structured });
  return { client, socket };
}

function send(client: ScriptedClient, request: Request): void {
  const { type, cookie, offset, length, payload } = request;
  client.request(payload === undefined ? { type, cookie, offset, length }
    : { type, cookie, offset, length, payload });
}

/** Checks each request's outcome against the image (READs) or success (others). */
function verify(t: Test, fixture: Fixture, structured: boolean, requests: Request[],
  outcomes: Map<bigint, Outcome>): void {
  let wrong = 0;
  for (const request of requests) {
    const outcome = succeeded(t, request, outcomes.get(request.cookie));
    if (outcome === null) {
      wrong += 1;
      continue;
    }
    if (request.type !== CMD.READ) continue;
    const what = describeRequest(request);
    const expected = fixture.image.subarray(request.offset, request.offset + request.length);
    const at = firstDifference(outcome.data!, expected);
    if (at !== -1) {
      t.fail(`${what}: first wrong byte at ${at}`);
      wrong += 1;
    }
    if (structured && request.length >= 64 * KiB &&
      (outcome.chunkCount !== 1 || !outcome.isAllOffsetData)) {
      t.fail(`${what}: ${outcome.chunkCount} chunks, not one OFFSET_DATA`);
      wrong += 1;
    }
  }
  t.equal(wrong, 0, `${requests.length} replies, each correct`);
  t.equal(outcomes.size, requests.length, 'one final reply per request');
}

/** The large READs every mode must get right (and one just under the sender's threshold). */
function largeReads(fixture: Fixture, firstCookie: number): Request[] {
  const [b1, b2, b5] = [fixture.boundaries[0]!, fixture.boundaries[1]!, fixture.boundaries[4]!];
  const spans: [number, number][] = [
    [0, 64 * KiB],
    [12_345, 256 * KiB],
    [b1 - 12_345, MiB + 7], // crosses from a.img into b.img
    [b2 - 1, 64 * KiB], // one byte of one extent, the rest of the next
    [b5 - 3, 64 * KiB - 1], // below the sender's threshold: sent from JS
    [MiB - 3, READ_MAX], // the maximum, across about 14 extents
    [fixture.size - MiB - 1, MiB + 1], // the last bytes of the export
  ];
  return spans.map(([offset, length], index) => ({ type: CMD.READ,
    cookie: BigInt(firstCookie + index), offset, length }));
}

async function readOneByOne(client: ScriptedClient, requests: Request[],
): Promise<Map<bigint, Outcome>> {
  const outcomes = new Map<bigint, Outcome>();
  for (const request of requests) {
    send(client, request);
    const one = await collectReplies(client, [request]);
    for (const [cookie, outcome] of one) outcomes.set(cookie, outcome);
  }
  return outcomes;
}

/**
 * Large READs one by one, then all pipelined, each checked byte for byte; whether a sender
 * thread served them (a second descriptor on the connection's socket) must match `isSent`.
 */
async function checkLargeReads(t: Test, fixture: Fixture, transport: Transport,
  structured: boolean, isSent: boolean, isPipelined = true): Promise<void> {
  const baseline = duplicatedSockets();
  const { client, socket } = await connect(t, fixture, transport, structured);
  const oneByOne = largeReads(fixture, 100);
  verify(t, fixture, structured, oneByOne, await readOneByOne(client, oneByOne));
  t.equal(duplicatedSockets() - baseline, isSent ? 1 : 0,
    isSent ? 'a sender thread holds the connection socket' : 'no sender thread');
  if (isPipelined) {
    const pipelined = largeReads(fixture, 200);
    for (const request of pipelined) send(client, request);
    verify(t, fixture, structured, pipelined, await collectReplies(client, pipelined));
  }
  client.request({ type: CMD.DISC });
  t.equal(await client.waitClosed(), true, 'closed after DISC');
  socket.destroy();
  t.ok(await eventually(() => duplicatedSockets() === baseline),
    'the sender thread let go of the socket');
}

for (const transport of TRANSPORTS) {
  for (const structured of [false, true]) {
    const mode = structured ? 'structured' : 'simple';
    t.test(`${transport}, ${mode} replies: large READs are the file bytes, from the sender`,
      async (t) => {
        withEnv(t, 'XVD_SENDER', 'on');
        const fixture = await startFileServer(t);
        await checkLargeReads(t, fixture, transport, structured, true);
      });
  }
}

t.test('the same READs under each XVD_SENDER setting: same bytes, sender only when on',
  async (t) => {
    const settings: [string | undefined, boolean][] = [
      ['off', false], [undefined, false], ['auto', false], ['on', true], ['sendfile', true],
      ['copy', true],
    ];
    for (const [setting, isSent] of settings) {
      for (const transport of TRANSPORTS) {
        await t.test(`XVD_SENDER=${setting ?? '(unset)'} over ${transport}`, async (t) => {
          withEnv(t, 'XVD_SENDER', setting);
          const fixture = await startFileServer(t);
          await checkLargeReads(t, fixture, transport, transport === 'unix', isSent, false);
        });
      }
    }
  });

t.test('the server option sendfile: the sender on unix sockets only, unless XVD_SENDER says',
  async (t) => {
    const cases: [string | undefined, Transport, boolean][] = [
      [undefined, 'unix', true], [undefined, 'tcp', false], ['off', 'unix', false],
      ['copy', 'tcp', true],
    ];
    for (const [setting, transport, isSent] of cases) {
      await t.test(`XVD_SENDER=${setting ?? '(unset)'} over ${transport}`, async (t) => {
        withEnv(t, 'XVD_SENDER', setting);
        const fixture = await startFileServer(t, undefined, true);
        await checkLargeReads(t, fixture, transport, transport === 'unix', isSent, false);
      });
    }
  });

t.test('a structured READ over a hole is not sent by the sender: it gets a sparse reply',
  async (t) => {
    withEnv(t, 'XVD_SENDER', 'on');
    const fixture = await startFileServer(t);
    const baseline = duplicatedSockets();
    const { client } = await connect(t, fixture, 'unix', true);
    // a hole in the middle of extent 0 (a.img from 4096): zero then punch through the export
    const holeOffset = MiB;
    client.request({ type: CMD.TRIM, cookie: 1n, offset: holeOffset, length: 256 * KiB });
    const trimmed = await collectReplies(client, [{ type: CMD.TRIM, cookie: 1n,
      offset: holeOffset, length: 256 * KiB }]);
    t.equal(trimmed.get(1n)?.errno, 0);
    // after TRIM the range reads as zeros or its old bytes; WRITE_ZEROES makes it zeros
    client.request({ type: CMD.WRITE_ZEROES, cookie: 2n, offset: holeOffset,
      length: 256 * KiB });
    const zeroed = await collectReplies(client, [{ type: CMD.WRITE_ZEROES, cookie: 2n,
      offset: holeOffset, length: 256 * KiB }]);
    t.equal(zeroed.get(2n)?.errno, 0);
    fixture.image.fill(0, holeOffset, holeOffset + 256 * KiB);
    const request: Request = { type: CMD.READ, cookie: 3n, offset: holeOffset - 64 * KiB,
      length: 512 * KiB };
    send(client, request);
    const outcomes = await collectReplies(client, [request]);
    t.equal(outcomes.get(3n)?.errno, 0);
    t.equal(firstDifference(outcomes.get(3n)!.data!, fixture.image.subarray(request.offset,
      request.offset + request.length)), -1, 'the bytes, holes as zeros');
    t.equal(duplicatedSockets() - baseline, 0, 'no sender thread was needed');
  });

t.test('an extent past the end of its file reads as zeros, from the sender too', async (t) => {
  withEnv(t, 'XVD_SENDER', 'on');
  const file = path.join(t.testdir(), 'short.img');
  const data = crypto.randomBytes(100 * KiB + 3);
  fs.writeFileSync(file, data);
  const image = Buffer.alloc(3 * MiB);
  data.copy(image, 0, 4096); // the export starts 4096 bytes into the file
  const fixture = await startServerOver(t, [{ path: file, offset: 4096, length: 3 * MiB }],
    image, []);
  for (const transport of TRANSPORTS) {
    const baseline = duplicatedSockets();
    const { client } = await connect(t, fixture, transport, false);
    const reads: Request[] = [
      { type: CMD.READ, cookie: 1n, offset: 0, length: 3 * MiB },
      { type: CMD.READ, cookie: 2n, offset: 64 * KiB + 1, length: 128 * KiB },
      { type: CMD.READ, cookie: 3n, offset: 2 * MiB, length: MiB }, // wholly past EOF
    ];
    verify(t, fixture, false, reads, await readOneByOne(client, reads));
    t.equal(duplicatedSockets() - baseline, 1, `${transport}: sent by the sender`);
    client.request({ type: CMD.DISC });
    t.equal(await client.waitClosed(), true);
  }
});

/** A seeded mix: small and large READs below the write area, WRITEs into it, FLUSHes. */
function mixedRequests(fixture: Fixture, seed: number, count: number): Request[] {
  const next = seededRandom(seed);
  const readEnd = fixture.size - WRITE_AREA;
  const writeStart = readEnd;
  const requests: Request[] = [];
  let writeCursor = writeStart;
  for (let index = 0; index < count; index++) {
    const cookie = BigInt(1000 + index);
    const kind = index % 8;
    if (kind === 2 || kind === 5) {
      // WRITEs to fresh, non-overlapping places: no READ in flight overlaps them
      const length = kind === 2 ? 4096 : 128 * KiB + next(4096);
      const offset = writeCursor;
      writeCursor += length + next(512);
      if (writeCursor > fixture.size) break;
      requests.push({ type: CMD.WRITE, cookie, offset, length,
        payload: crypto.randomBytes(length) });
    } else if (kind === 7) {
      requests.push({ type: CMD.FLUSH, cookie, offset: 0, length: 0 });
    } else {
      const isLarge = kind === 1 || kind === 4 || kind === 6;
      const length = isLarge ? 64 * KiB + next(2 * MiB) : 4096;
      requests.push({ type: CMD.READ, cookie, offset: next(readEnd - length), length });
    }
  }
  return requests;
}

for (const transport of TRANSPORTS) {
  for (const structured of [false, true]) {
    const mode = structured ? 'structured' : 'simple';
    t.test(`${transport}, ${mode}: pipelined small and large READs, WRITEs and FLUSH`,
      async (t) => {
        withEnv(t, 'XVD_SENDER', 'on');
        const fixture = await startFileServer(t);
        const baseline = duplicatedSockets();
        const { client } = await connect(t, fixture, transport, structured);
        for (const [round, seed] of [[0, 7], [1, 1234]] as const) {
          const requests = mixedRequests(fixture, seed + (structured ? 1 : 0), 120)
            .map((request) => ({ ...request, cookie: request.cookie + BigInt(round * 10_000) }));
          for (const request of requests) send(client, request);
          const outcomes = await collectReplies(client, requests);
          verify(t, fixture, structured, requests, outcomes);
          for (const request of requests) {
            if (request.type === CMD.WRITE) request.payload!.copy(fixture.image, request.offset);
          }
          // read back what was written, by large READs (the sender reads the files' pages)
          const writeStart = fixture.size - WRITE_AREA;
          const back: Request[] = [];
          for (let offset = writeStart, index = 0; offset < fixture.size; index++) {
            const length = Math.min(fixture.size - offset, 64 * KiB + index * 100_003);
            back.push({ type: CMD.READ, cookie: BigInt(50_000 + round * 1000 + index), offset,
              length });
            offset += length;
          }
          back.push({ type: CMD.READ, cookie: BigInt(60_000 + round), offset: writeStart,
            length: WRITE_AREA });
          for (const request of back) send(client, request);
          verify(t, fixture, structured, back, await collectReplies(client, back));
        }
        t.equal(duplicatedSockets() - baseline, 1, 'the large READs went through the sender');
        client.request({ type: CMD.DISC });
        t.equal(await client.waitClosed(), true);
      });
  }
}

/** After a misbehaving client: the server answers others, and closes promptly. */
async function checkServerAfter(t: Test, fixture: Fixture, transport: Transport,
  baseline: number): Promise<void> {
  t.ok(await eventually(() => fixture.server.connectionCount === 0),
    'the connection left the registry');
  t.ok(await eventually(() => duplicatedSockets() === baseline), 'its sender thread ended');
  t.equal(await checkHealthy(fixture.port), true, 'a well-behaved client gets service');
  fixture.image.fill(0x5a, 8192, 8192 + 4096); // what checkHealthy wrote
  const { client } = await connect(t, fixture, transport, false);
  const reads = largeReads(fixture, 300);
  for (const request of reads) send(client, request);
  verify(t, fixture, false, reads, await collectReplies(client, reads));
  client.end();
  const started = Date.now();
  await bounded(fixture.server.close({ graceMs: 2000 }), CLOSE_BOUND_MS, 'server.close()');
  t.ok(Date.now() - started < CLOSE_BOUND_MS, `closed in ${Date.now() - started} ms`);
}

for (const transport of TRANSPORTS) {
  t.test(`${transport}: a client that vanishes with large READs in flight`, async (t) => {
    withEnv(t, 'XVD_SENDER', 'on');
    const { log, lines } = captureLog('warn');
    const fixture = await startFileServer(t, log);
    const baseline = duplicatedSockets();
    const { client, socket } = await connect(t, fixture, transport, false);
    for (let index = 0; index < 40; index++) {
      send(client, { type: CMD.READ, cookie: BigInt(index), offset: (index * 3 * MiB) % (
        fixture.size - 4 * MiB), length: 2 * MiB + index });
    }
    await client.read(64 * KiB); // the replies have started
    socket.destroy();
    await checkServerAfter(t, fixture, transport, baseline);
    // from JS (XVD_SENDER=off) replies to a client that left are dropped without a word
    const errors = lines.filter((line) => line.level >= 50);
    t.equal(errors.length, 0, `no error logged for a client that left (${errors.length}: ` +
      `${errors[0]?.msg})`);
  });

  t.test(`${transport}: a client that stops reading, then vanishes`, async (t) => {
    withEnv(t, 'XVD_SENDER', 'on');
    const fixture = await startFileServer(t);
    const baseline = duplicatedSockets();
    const { client, socket } = await connect(t, fixture, transport, true);
    socket.pause();
    for (let index = 0; index < 48; index++) {
      send(client, { type: CMD.READ, cookie: BigInt(index), offset: index * 512 * KiB,
        length: 4 * MiB - index });
    }
    t.ok(await settled(fixture.server), 'the server stopped taking requests and queuing replies');
    t.equal(await checkHealthy(fixture.port), true, 'others get service meanwhile');
    fixture.image.fill(0x5a, 8192, 8192 + 4096);
    t.ok(await eventually(() => fixture.server.connectionCount === 1),
      'only the stalled connection is left');
    socket.destroy();
    await checkServerAfter(t, fixture, transport, baseline);
  });

  t.test(`${transport}: server.close() with a stalled client ends it promptly; complete ` +
    'replies before the cut are correct', async (t) => {
    withEnv(t, 'XVD_SENDER', 'on');
    const fixture = await startFileServer(t);
    const baseline = duplicatedSockets();
    const { client, socket } = await connect(t, fixture, transport, false);
    socket.pause();
    const requests: Request[] = [];
    for (let index = 0; index < 24; index++) {
      requests.push({ type: CMD.READ, cookie: BigInt(index), offset: index * MiB + 1,
        length: index % 3 === 0 ? 4096 : 3 * MiB + index });
    }
    for (const request of requests) send(client, request);
    t.ok(await settled(fixture.server), 'the server stopped taking requests and queuing replies');
    const started = Date.now();
    await bounded(fixture.server.close({ graceMs: 500 }), CLOSE_BOUND_MS, 'server.close()');
    t.ok(Date.now() - started < CLOSE_BOUND_MS, `closed in ${Date.now() - started} ms`);
    t.ok(await eventually(() => duplicatedSockets() === baseline), 'its sender thread ended');
    socket.resume();
    t.equal(await client.waitClosed(), true, 'the server ended the stalled connection');
    // every reply that arrived whole is right; the last one may be cut short
    const byCookie = new Map(requests.map((request) => [request.cookie, request]));
    let complete = 0;
    for (let count = 0; count < requests.length && client.bufferedLength >= 16; count++) {
      const reply = await client.readSimpleReply();
      const request = byCookie.get(reply.cookie);
      t.not(request, undefined, `a known cookie (${reply.cookie})`);
      if (request === undefined || reply.errno !== 0) break;
      if (client.bufferedLength < request.length) break;
      const data = await client.read(request.length);
      t.equal(firstDifference(data, fixture.image.subarray(request.offset,
        request.offset + request.length)), -1, `cookie ${request.cookie} is the file's bytes`);
      complete += 1;
    }
    t.ok(complete >= 1, `${complete} replies arrived whole before the cut`);
  });

  t.test(`${transport}: bytes written to a backing after server.close() never reach a ` +
    'client whose READ reply was still queued', async (t) => {
    withEnv(t, 'XVD_SENDER', undefined); // the server's default: replies are copied
    const fixture = await startFileServer(t);
    const { client, socket } = await connect(t, fixture, transport, false);
    socket.pause(); // past the stream's own buffer (64 KiB) the reply waits in the socket's
    // more than that buffer, less than a paused TCP peer takes in before the reply completes
    const length = transport === 'unix' ? MiB : 96 * KiB;
    const offset = 12_345;
    const before = Buffer.from(fixture.image.subarray(offset, offset + length));
    const requestsBefore = fixture.server.stats.requests;
    client.request({ type: CMD.READ, cookie: 1n, offset, length });
    t.ok(await eventually(() => fixture.server.stats.requests === requestsBefore + 1) &&
      await settled(fixture.server), 'the server took the READ and queued its reply');
    // close() waits for every request in flight: the READ counts as done once it was sent
    await bounded(fixture.server.close({ graceMs: 2000 }), CLOSE_BOUND_MS, 'server.close()');
    // the next owner of these bytes (another VD on the same extent) writes them
    const extent = fixture.extents[0]!;
    const fd = fs.openSync(extent.path, 'r+');
    fs.writeSync(fd, Buffer.alloc(length, 0xee), 0, length, extent.offset + offset);
    fs.closeSync(fd);
    socket.resume();
    const reply = await client.readSimpleReply();
    t.same(reply, { errno: 0, cookie: 1n });
    const data = await client.read(length);
    const leaked = data.filter((byte, index) => byte !== before[index]).length;
    t.equal(leaked, 0, `${leaked} bytes of the reply were written after close()`);
  });

  t.test(`${transport}: DISC with large READs in flight: every reply arrives, then the close`,
    async (t) => {
      withEnv(t, 'XVD_SENDER', 'on');
      const fixture = await startFileServer(t);
      const { client } = await connect(t, fixture, transport, transport === 'unix');
      const structured = transport === 'unix';
      const requests: Request[] = [];
      for (let index = 0; index < 16; index++) {
        const length = [2 * MiB, 4096, MiB + 13, 8 * MiB][index % 4]!;
        requests.push({ type: CMD.READ, cookie: BigInt(index), length,
          offset: (index * 2 * MiB + 511) % (fixture.size - length) });
      }
      for (const request of requests) send(client, request);
      client.request({ type: CMD.DISC });
      client.request({ type: CMD.READ, cookie: 999n, offset: 0, length: 4096 });
      verify(t, fixture, structured, requests, await collectReplies(client, requests));
      t.equal(await client.waitClosed(), true, 'the server closed after the last reply');
      t.equal(client.bufferedLength, 0, 'nothing after DISC was answered');
    });

  t.test(`${transport}: nbdcopy of the whole export matches the backing files`,
    { skip: hasTool('nbdcopy') ? false : 'nbdcopy missing' }, async (t) => {
      withEnv(t, 'XVD_SENDER', 'on');
      const fixture = await startFileServer(t);
      const uri = transport === 'tcp' ? `nbd://127.0.0.1:${fixture.port}/disk`
        : `nbd+unix:///disk?socket=${fixture.socketPath}`;
      for (const args of [[], ['--request-size=8388608', '--connections=1']]) {
        const out = path.join(t.testdir(), `copy${args.length}.img`);
        const result = await runTool('nbdcopy', [...args, uri, out], { timeoutMs: 60_000 });
        t.equal(result.code, 0, result.stderr);
        const copy = fs.readFileSync(out);
        t.equal(copy.length, fixture.size, `nbdcopy ${args.join(' ')}: the whole export`);
        t.equal(firstDifference(copy, fixture.image), -1, 'byte for byte');
      }
    });
}

for (const transport of TRANSPORTS) {
  for (const setting of ['on', 'off']) {
    // a client's FIN ends only its side: every reply still comes, from the sender too
    t.test(`${transport}, XVD_SENDER=${setting}: a client that half-closes after its READs ` +
      'gets every reply', async (t) => {
      withEnv(t, 'XVD_SENDER', setting);
      const fixture = await startFileServer(t);
      const { client, socket } = await connect(t, fixture, transport, false);
      const requests: Request[] = [];
      for (let index = 0; index < 8; index++) {
        requests.push({ type: CMD.READ, cookie: BigInt(index), offset: index * 3 * MiB + 7,
          length: MiB });
      }
      for (const request of requests) send(client, request);
      socket.end();
      verify(t, fixture, false, requests, await collectReplies(client, requests));
      t.equal(await client.waitClosed(), true, 'the server closed after the last reply');
    });
  }
}

t.test('fencing a connection whose client takes no replies ends it within the bound',
  async (t) => {
    withEnv(t, 'XVD_SENDER', 'on');
    const fixture = await startFileServer(t);
    const { client, socket } = await connect(t, fixture, 'unix', false);
    socket.pause(); // the READs below fill the socket and wait on the sender
    const requestsBefore = fixture.server.stats.requests;
    for (let index = 0; index < 8; index++) {
      send(client, { type: CMD.READ, cookie: BigInt(index), offset: index * 4 * MiB,
        length: 4 * MiB });
    }
    t.ok(await eventually(() => fixture.server.stats.requests === requestsBefore + 8),
      'the server took the eight READs');
    const started = Date.now();
    await bounded(fixture.server.fenceExport('disk'), LIMITS.nbdFenceSenderWaitMs + 5000,
      'fenceExport');
    const elapsed = Date.now() - started;
    t.ok(elapsed >= LIMITS.nbdFenceSenderWaitMs - 100 &&
      elapsed < LIMITS.nbdFenceSenderWaitMs + 3000, `fence resolved in ${elapsed} ms`);
    socket.resume();
    t.equal(await client.waitClosed(), true, 'the connection was ended');
    t.ok(await checkHealthy(fixture.port, 'disk'), 'the server serves new clients');
  });

t.test('a client that takes no replies cannot make the server hold more than the limits',
  async (t) => {
    withEnv(t, 'XVD_SENDER', 'on');
    const fixture = await startFileServer(t);
    const server = fixture.server;
    const { client, socket } = await connect(t, fixture, 'unix', true);
    // a hole at the start: structured READs over it are not planned (sparse replies from JS)
    const hole = [{ type: CMD.TRIM, cookie: 1n, offset: 0, length: MiB }] as Request[];
    send(client, hole[0]!);
    t.equal((await collectReplies(client, hole)).get(1n)?.errno, 0);
    socket.pause();
    const before = process.memoryUsage().arrayBuffers;
    const requestsBefore = server.stats.requests;
    for (let index = 0; index < 4; index++) { // planned: the sender blocks on the full socket
      send(client, { type: CMD.READ, cookie: BigInt(10 + index), offset: 8 * MiB + index * 4 * MiB,
        length: 4 * MiB });
    }
    t.ok(await eventually(() => server.stats.requests === requestsBefore + 4),
      'the server took the four planned READs');
    const BIG_COUNT = 24;
    for (let index = 0; index < BIG_COUNT; index++) { // each holds a 32 MiB reply until sent
      send(client, { type: CMD.READ, cookie: BigInt(100 + index), offset: 0, length: READ_MAX });
    }
    // the server reads until its limits stop it: judged once what it read and holds (its memory
    // budget's count, nbd/budget.ts) stands still
    const stats = (): readonly number[] => [server.stats.requests, server.stats.budgetHeldBytes];
    const { values: [requests, held], isStable } = await untilStable(stats);
    t.ok(isStable, `what the server read and holds stopped changing (${requests} requests)`);
    const bound = 2 * LIMITS.nbdInflightBytesMax + 2 * READ_MAX;
    t.ok(held! >= READ_MAX, `the attack landed: it holds ${Math.round(held! / MiB)} MiB`);
    t.ok(requests! < requestsBefore + 4 + BIG_COUNT, 'it stopped reading before taking them all');
    t.ok(server.stats.budgetPeakBytes <= bound, `it never held more than the bound: peak ` +
      `${Math.round(server.stats.budgetPeakBytes / MiB)} MiB (bound ${Math.round(bound / MiB)})`);
    const grown = process.memoryUsage().arrayBuffers - before;
    t.ok(grown <= bound, `buffers grew by ${Math.round(grown / MiB)} MiB ` +
      `(bound ${Math.round(bound / MiB)} MiB)`);
    socket.destroy();
    t.ok(await eventually(() => server.stats.budgetHeldBytes === 0),
      'a client that leaves gives everything back');
    t.ok(await checkHealthy(fixture.port, 'disk'), 'the server serves new clients');
  });
