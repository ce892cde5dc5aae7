/**
 * The data-path thread (nbd/datapath.ts, native/src/datapath.c) behind a real NbdServer over
 * file-backed exports, on TCP and unix sockets: it is used by default and not with
 * XVD_DATAPATH=off or stream receive, with the same server.stats either way; pipelined mixes of
 * every command match a model of the disk (replies and the files afterwards), simple and
 * structured, also under tight in-flight limits and when sent with NBD_OPT_GO; a WRITE it served
 * is synced by a FLUSH on another connection (multi-conn); a fence during traffic resolves, later
 * requests get ESHUTDOWN and no write lands after it; a replaced map (enlarge, remap) is followed
 * at once on an open connection; a read-only export refuses WRITEs; a half-closed client and one
 * that sent DISC get every reply; a client that reads nothing does not hold server.close(), one
 * that vanishes leaves no error; nbdsh and nbdcopy get the bytes back.
 *
 * What shows that the thread served a request, without hooks: the export's JS methods (read,
 * write, ...) are wrapped to count calls, so a READ or WRITE served by the thread never reaches
 * them; and the thread holds a dup of the connection's socket, so while it lives one socket
 * inode of this process has two descriptors in /proc/self/fd. server.stats cannot tell: it adds
 * the thread's counters to the connection's (and should match the JS path's totals, checked).
 */
import t, { type Test } from 'tap';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import type { Logger } from 'pino';
import { openBacking } from '../../src/backing/open-backing';
import { BackingPool } from '../../src/backing/pool';
import { openExport, type ExtentExport } from '../../src/engine/extent-export';
import { ExtentMap, type ExtentSpec } from '../../src/engine/extent-map';
import { LIMITS } from '../../src/limits';
import { routeEnvOf } from '../../src/cli/route-env';
import { createServer, type NbdServer, type NbdServerLimits } from '../../src/nbd/index';
import {
  PYTHON_LIBNBD, ScriptedClient, createFixedProvider, hasTool, quietLog, runTool,
} from '../helpers/nbd-client';
import {
  CMD, CMD_FLAG, ERRNO, OPT, REP, goPayload, optionFrame, requestFrame,
} from '../helpers/wire';
import { bounded, duplicatedSockets, eventually } from '../helpers/waits';
import {
  TRANSPORTS, type Transport, connectRaw, listenTcpAndUnix, seededRandom, withEnv,
} from '../helpers/sockets';
import {
  collectReplies as collect, describeRequest, firstDifference, succeeded, type Outcome,
  type PipelinedRequest as Request,
} from '../helpers/replies';
import { captureLog } from '../helpers/serve-catalog';

const KiB = 1024;
const MiB = 1024 * KiB;
const FILE_BYTES = 16 * MiB;
const STATE_ZERO = 2;
/** server.close() must finish within this */
const CLOSE_BOUND_MS = LIMITS.nbdFenceSenderWaitMs + 6000;
/** every loop of requests stops after this many or this long */
const LOOP_MAX = 20_000;
const LOOP_MS = 20_000;

/** Calls of the export's JS methods: a READ or WRITE the thread serves makes none. */
interface Calls {
  read: number;
  readSparse: number;
  write: number;
  zero: number;
  trim: number;
  flush: number;
  blockStatus: number;
}

interface Fixture {
  server: NbdServer;
  port: number;
  socketPath: string;
  exp: ExtentExport;
  pool: BackingPool;
  /** t.testdir(), which holds the files (calling t.testdir() again would empty it) */
  dir: string;
  files: string[];
  extents: ExtentSpec[];
  size: number;
  /** what the export held at the start */
  image: Buffer;
  calls: Calls;
  /** backing.sync() (fdatasync) calls per file */
  syncs: Map<string, number>;
}

interface FixtureOptions {
  receive?: 'arena' | 'stream';
  /** the export's extents (default: eight alternating between two files of random bytes) */
  extents?: (files: string[]) => ExtentSpec[];
  size?: number;
  /** the export's mode (default 'w') */
  mode?: 'r' | 'w';
  limits?: Partial<NbdServerLimits>;
  log?: Logger;
}

/** Eight extents alternating between two files, odd lengths, gaps between them. */
function fragmented(files: string[]): ExtentSpec[] {
  const extents: ExtentSpec[] = [];
  const cursors = [4096, 8192 + 17];
  for (let index = 0; index < 8; index++) {
    const which = index % 2;
    const length = 1536 * KiB + index * 37 * KiB + (index % 3) * 511;
    extents.push({ path: files[which]!, offset: cursors[which]!, length });
    cursors[which] = cursors[which]! + length + 4097;
  }
  return extents;
}

/** The bytes of [offset, +length) of the export, read from the files through `extents`. */
function readThrough(extents: readonly ExtentSpec[], offset: number, length: number): Buffer {
  const out = Buffer.alloc(length);
  let virtual = 0;
  for (const extent of extents) {
    const start = Math.max(offset, virtual);
    const end = Math.min(offset + length, virtual + extent.length);
    if (start < end) {
      const fd = fs.openSync(extent.path, 'r');
      try {
        fs.readSync(fd, out, start - offset, end - start, extent.offset + start - virtual);
      } finally {
        fs.closeSync(fd);
      }
    }
    virtual += extent.length;
  }
  return out;
}

function spyExport(exp: ExtentExport, calls: Calls): void {
  const target = exp as unknown as Record<string, (...args: unknown[]) => unknown>;
  for (const name of Object.keys(calls) as (keyof Calls)[]) {
    const original = target[name]!.bind(exp);
    target[name] = (...args: unknown[]): unknown => {
      calls[name] += 1;
      return original(...args);
    };
  }
}

/** A server on 127.0.0.1 and a unix socket exporting `disk`: an ExtentExport over files. */
async function startFixture(t: Test, options: FixtureOptions = {}): Promise<Fixture> {
  const dir = t.testdir();
  const files = ['a.img', 'b.img'].map((name) => path.join(dir, name));
  for (const file of files) fs.writeFileSync(file, crypto.randomBytes(FILE_BYTES));
  const extents = (options.extents ?? fragmented)(files);
  const size = options.size ?? extents.reduce((sum, extent) => sum + extent.length, 0);
  const syncs = new Map<string, number>();
  const pool = new BackingPool({
    opener: async (file, mode) => {
      const backing = await openBacking(file, mode);
      const sync = backing.sync.bind(backing);
      backing.sync = (): Promise<void> => {
        syncs.set(file, (syncs.get(file) ?? 0) + 1);
        return sync();
      };
      return backing;
    },
  });
  const exp = await openExport({ name: 'disk', description: 'files', mode: options.mode ?? 'w',
    size, extents, pool });
  const calls: Calls = { read: 0, readSparse: 0, write: 0, zero: 0, trim: 0, flush: 0,
    blockStatus: 0 };
  spyExport(exp, calls);
  // XVD_DATAPATH and XVD_SENDER as `xvd serve` reads them (cli/route-env.ts)
  const { datapath, sender } = routeEnvOf(process.env);
  const server = createServer({ provider: createFixedProvider([exp]), log: options.log ?? quietLog,
    receive: options.receive ?? 'arena', datapath, sender,
    ...(options.limits === undefined ? {} : { limits: options.limits }) });
  const { port, socketPath } = await listenTcpAndUnix(t, server, 'xvd-dp-', async () => {
    await exp.close();
    await pool.close();
  });
  return { server, port, socketPath, exp, pool, dir, files, extents, size,
    image: readThrough(extents, 0, size), calls, syncs };
}

async function connect(t: Test, fixture: Fixture, transport: Transport,
  options: { structured?: boolean; meta?: boolean } = {},
): Promise<{ client: ScriptedClient; socket: net.Socket }> {
  const socket = await connectRaw(t, fixture, transport);
  socket.on('error', () => undefined);
  const client = new ScriptedClient(socket, socket);
  await client.handshake(options);
  return { client, socket };
}

function send(client: ScriptedClient, request: Request): void {
  client.request(request);
}

/**
 * The disk as the client should see it. A TRIM leaves either zeros or the old bytes (proto.md);
 * the model keeps both until the range is written again.
 */
class DiskModel {
  readonly image: Buffer;
  private readonly old: Buffer;
  private readonly isEither: Uint8Array;
  /** 1 where TRIM or WRITE_ZEROES may have left a hole (the files start all data) */
  private readonly mayBeHole: Uint8Array;

  constructor(image: Buffer) {
    this.image = Buffer.from(image);
    this.old = Buffer.alloc(image.length);
    this.isEither = new Uint8Array(image.length);
    this.mayBeHole = new Uint8Array(image.length);
  }

  write(offset: number, payload: Buffer): void {
    payload.copy(this.image, offset);
    this.isEither.fill(0, offset, offset + payload.length);
    this.mayBeHole.fill(0, offset, offset + payload.length);
  }

  zero(offset: number, length: number): void {
    this.image.fill(0, offset, offset + length);
    this.isEither.fill(0, offset, offset + length);
    this.mayBeHole.fill(1, offset, offset + length);
  }

  trim(offset: number, length: number): void {
    for (let at = offset; at < offset + length; at++) {
      if (this.isEither[at] === 0) this.old[at] = this.image[at]!;
    }
    this.image.fill(0, offset, offset + length);
    this.isEither.fill(1, offset, offset + length);
    this.mayBeHole.fill(1, offset, offset + length);
  }

  /**
   * Whether [offset, offset+length) may touch a hole. A READ there is JS's by design when
   * structured (hole chunks), and reading a hole's uncached page with RWF_NOWAIT fails (EAGAIN)
   * until something caches it, which the order of a pipelined round decides.
   */
  touchesHole(offset: number, length: number): boolean {
    return this.mayBeHole.subarray(offset, offset + length).includes(1);
  }

  /** Index of the first byte of `data` (at `offset`) the model does not allow, or -1. */
  mismatch(offset: number, data: Buffer): number {
    for (let i = 0; i < data.length; i++) {
      const at = offset + i;
      if (data[i] === this.image[at]) continue;
      if (this.isEither[at] === 1 && data[i] === this.old[at]) continue;
      return i;
    }
    return -1;
  }
}

interface Range {
  start: number;
  end: number;
}

function overlaps(ranges: readonly Range[], start: number, end: number): boolean {
  return ranges.some((range) => start < range.end && range.start < end);
}

/**
 * One round of pipelined requests in which no two requests touch the same bytes unless both
 * only read them (the server may run requests in flight in any order).
 */
function mixedRound(next: (bound: number) => number, size: number, count: number,
  firstCookie: number, withStatus: boolean): Request[] {
  const reads: Range[] = [];
  const changes: Range[] = [];
  const requests: Request[] = [];
  for (let index = 0; index < count; index++) {
    const cookie = BigInt(firstCookie + index);
    const kind = next(16);
    if (kind === 0) {
      requests.push({ type: CMD.FLUSH, cookie, offset: 0, length: 0 });
      continue;
    }
    const isChange = kind >= 8 && !(kind === 15 && withStatus);
    for (let attempt = 0; attempt < 20; attempt++) {
      const isLarge = next(4) === 0;
      const length = isLarge ? 64 * KiB + next(2 * MiB) : 1 + next(16 * KiB);
      const aligned = next(2) === 0;
      const offset = aligned ? Math.min(next(size / 4096) * 4096, size - length)
        : next(size - length);
      const end = offset + length;
      if (overlaps(changes, offset, end) || (isChange && overlaps(reads, offset, end))) continue;
      (isChange ? changes : reads).push({ start: offset, end });
      if (kind === 15 && withStatus) {
        requests.push({ type: CMD.BLOCK_STATUS, cookie, offset, length });
      } else if (!isChange) {
        requests.push({ type: CMD.READ, cookie, offset, length });
      } else if (kind <= 11) {
        // plain WRITEs (the thread's), a FUA one now and then (the JS path's)
        requests.push({ type: CMD.WRITE, cookie, offset, length, payload: crypto.randomBytes(
          length), flags: kind === 11 ? CMD_FLAG.FUA : 0 });
      } else if (kind <= 13) {
        requests.push({ type: CMD.WRITE_ZEROES, cookie, offset, length,
          flags: kind === 13 ? CMD_FLAG.NO_HOLE : 0 });
      } else {
        requests.push({ type: CMD.TRIM, cookie, offset, length });
      }
      break;
    }
  }
  return requests;
}

/** Checks a round's outcomes against the model (before the round), then applies its changes. */
function verifyRound(t: Test, model: DiskModel, requests: readonly Request[],
  outcomes: Map<bigint, Outcome>): number {
  let wrong = 0;
  for (const request of requests) {
    const outcome = succeeded(t, request, outcomes.get(request.cookie));
    if (outcome === null) {
      wrong += 1;
      continue;
    }
    const what = describeRequest(request);
    if (request.type === CMD.READ) {
      const at = model.mismatch(request.offset, outcome.data!);
      if (at !== -1) {
        t.fail(`${what}: first wrong byte at ${at}`);
        wrong += 1;
      }
    } else if (request.type === CMD.BLOCK_STATUS) {
      let covered = 0;
      for (const [length, flags] of outcome.status) {
        if ((flags & STATE_ZERO) !== 0 && model.image.subarray(request.offset + covered,
          request.offset + covered + length).some((byte) => byte !== 0)) {
          t.fail(`${what}: [+${covered}, +${length}) reported zero, but holds data`);
          wrong += 1;
        }
        covered += length;
      }
      if (outcome.status.length === 0 || covered === 0) {
        t.fail(`${what}: no descriptor`);
        wrong += 1;
      }
    }
  }
  for (const request of requests) {
    if (request.type === CMD.WRITE) model.write(request.offset, request.payload!);
    else if (request.type === CMD.WRITE_ZEROES) model.zero(request.offset, request.length);
    else if (request.type === CMD.TRIM) model.trim(request.offset, request.length);
  }
  return wrong;
}

for (const transport of TRANSPORTS) {
  t.test(`${transport}: the thread serves by default; not with XVD_DATAPATH=off or stream ` +
    'receive; server.stats are the same either way', async (t) => {
    const settings: [string, string | undefined, 'arena' | 'stream', boolean][] = [
      ['default', undefined, 'arena', true],
      ['XVD_DATAPATH=on', 'on', 'arena', true],
      ['XVD_DATAPATH=off', 'off', 'arena', false],
      ['stream receive', undefined, 'stream', false],
    ];
    const totals: string[] = [];
    for (const [name, setting, receive, isServed] of settings) {
      await t.test(name, async (t) => {
        withEnv(t, 'XVD_DATAPATH', setting);
        const fixture = await startFixture(t, { receive });
        const baseline = duplicatedSockets();
        const { client } = await connect(t, fixture, transport);
        t.equal(duplicatedSockets() - baseline, isServed ? 1 : 0,
          isServed ? 'a thread holds a dup of the socket' : 'no thread');
        const requests: Request[] = [];
        for (let index = 0; index < 24; index++) {
          const offset = index * 311 * KiB + index;
          const length = 4096 + index * 1000;
          requests.push(index % 3 === 2
            ? { type: CMD.WRITE, cookie: BigInt(index), offset, length,
              payload: Buffer.alloc(length, index) }
            : { type: CMD.READ, cookie: BigInt(index), offset, length });
        }
        requests.push({ type: CMD.FLUSH, cookie: 100n, offset: 0, length: 0 });
        for (const request of requests) send(client, request);
        const model = new DiskModel(fixture.image);
        t.equal(verifyRound(t, model, requests, await collect(client, requests)), 0);
        const plain = requests.length - 1;
        t.equal(fixture.calls.read + fixture.calls.write, isServed ? 0 : plain,
          `${isServed ? 'no' : 'every'} plain READ and WRITE reached the export's JS methods`);
        t.equal(fixture.calls.flush, 1, 'FLUSH is the JS path\'s either way');
        client.request({ type: CMD.DISC });
        t.equal(await client.waitClosed(), true);
        t.ok(await eventually(() => fixture.server.connectionCount === 0), 'connection gone');
        t.ok(await eventually(() => duplicatedSockets() === baseline), 'the thread let go');
        const stats = fixture.server.stats;
        t.equal(stats.requests, requests.length + 1, 'every request counted (DISC too)');
        totals.push(JSON.stringify({ requests: stats.requests, errors: stats.requestErrors,
          read: stats.bytesRead, written: stats.bytesWritten }));
      });
    }
    t.equal(new Set(totals).size, 1, `the same totals with and without the thread: ${totals[0]}`);
  });
}

for (const transport of TRANSPORTS) {
  for (const structured of [false, true]) {
    const mode = structured ? 'structured' : 'simple';
    t.test(`${transport}, ${mode}: pipelined READ, WRITE, FLUSH, TRIM, WRITE_ZEROES` +
      `${structured ? ', BLOCK_STATUS' : ''} match a model of the disk`, async (t) => {
      const fixture = await startFixture(t);
      const baseline = duplicatedSockets();
      const { client } = await connect(t, fixture, transport, { structured, meta: structured });
      t.equal(duplicatedSockets() - baseline, 1, 'served with a thread');
      const model = new DiskModel(fixture.image);
      const next = seededRandom(structured ? 77 : 4242);
      let plain = 0;
      let holeReads = 0; // plain READs that may touch a hole (a round's READs and changes are
      // disjoint, so the model before the round is what they see)
      for (let round = 0; round < 6; round++) {
        const requests = mixedRound(next, fixture.size, 64, 1000 * (round + 1), structured);
        plain += requests.filter((request) => (request.type === CMD.READ ||
          request.type === CMD.WRITE) && request.flags !== CMD_FLAG.FUA).length;
        holeReads += requests.filter((request) => request.type === CMD.READ &&
          request.flags !== CMD_FLAG.FUA && model.touchesHole(request.offset, request.length))
          .length;
        for (const request of requests) send(client, request);
        const outcomes = await collect(client, requests);
        t.equal(verifyRound(t, model, requests, outcomes), 0,
          `round ${round}: ${requests.length} replies, each as the model says`);
      }
      // of the plain requests no hole can send to JS, the thread served most (a READ touching a
      // hole is JS's, or fails RWF_NOWAIT until a pipelined neighbour cached the page)
      const served = fixture.server.stats.threadRequests;
      t.ok(served > (plain - holeReads) / 2, `the thread served most plain requests (${served} ` +
        `of ${plain}; ${holeReads} READs may touch a hole; JS: ${fixture.calls.read} reads, ` +
        `${fixture.calls.write} writes)`);
      // reading everything back by large READs (the JS path for holes when structured)
      const back: Request[] = [];
      for (let offset = 0, index = 0; offset < fixture.size; index++) {
        const length = Math.min(fixture.size - offset, 3 * MiB + index * 4097);
        back.push({ type: CMD.READ, cookie: BigInt(90_000 + index), offset, length });
        offset += length;
      }
      for (const request of back) send(client, request);
      t.equal(verifyRound(t, model, back, await collect(client, back)), 0, 'the whole disk');
      client.request({ type: CMD.DISC });
      t.equal(await client.waitClosed(), true);
      const files = readThrough(fixture.extents, 0, fixture.size);
      t.equal(model.mismatch(0, files), -1, 'the files hold what the model says');
    });
  }
}

for (const transport of TRANSPORTS) {
  t.test(`${transport}: with tight in-flight limits the JS side pauses and resumes the thread; ` +
    'every request of a long pipelined mix is answered', async (t) => {
    const fixture = await startFixture(t, { limits: { inflightMax: 2,
      inflightBytesMax: 256 * KiB } });
    const { client } = await connect(t, fixture, transport, { structured: true });
    const requests: Request[] = [];
    const area = fixture.size - 8 * MiB; // WRITEs above it, READs below
    for (let index = 0; index < 400; index++) {
      const cookie = BigInt(index);
      if (index % 3 === 0) {
        requests.push({ type: CMD.WRITE, cookie, offset: area + (index / 3) * 16 * KiB,
          length: 16 * KiB, payload: crypto.randomBytes(16 * KiB),
          flags: index % 2 === 0 ? CMD_FLAG.FUA : 0 });
      } else if (index % 10 === 1) {
        requests.push({ type: CMD.FLUSH, cookie, offset: 0, length: 0 });
      } else {
        requests.push({ type: CMD.READ, cookie, offset: (index * 61 * KiB) % (area - MiB),
          length: 128 * KiB + index });
      }
    }
    for (const request of requests) send(client, request);
    const model = new DiskModel(fixture.image);
    const outcomes = await bounded(collect(client, requests), 30_000, 'the replies');
    t.equal(verifyRound(t, model, requests, outcomes), 0, `${requests.length} replies, right`);
    t.equal(model.mismatch(0, readThrough(fixture.extents, 0, fixture.size)), -1);
    t.ok(fixture.calls.read < 10, `the thread served the READs (JS: ${fixture.calls.read})`);
    t.ok(fixture.calls.write > 0, 'the JS path the FUA WRITEs');
  });
}

for (const transport of TRANSPORTS) {
  t.test(`${transport}: requests sent with NBD_OPT_GO in one write are served (the bytes the ` +
    'JS side had go to the thread first)', async (t) => {
    const fixture = await startFixture(t);
    const socket = await connectRaw(t, fixture, transport);
    const client = new ScriptedClient(socket, socket);
    await client.start();
    const requests: Request[] = [
      { type: CMD.READ, cookie: 1n, offset: 100, length: 64 * KiB },
      { type: CMD.WRITE, cookie: 2n, offset: 3 * MiB, length: 4096,
        payload: crypto.randomBytes(4096) },
      { type: CMD.FLUSH, cookie: 3n, offset: 0, length: 0 },
      { type: CMD.READ, cookie: 4n, offset: 3 * MiB - 100, length: 8192 },
    ];
    // the READ after the WRITE waits for its reply: replies to requests in flight may come in
    // any order, so only the first three are pipelined with GO
    client.write(Buffer.concat([optionFrame(OPT.GO, goPayload('disk')),
      ...requests.slice(0, 3).map((request) => requestFrame(request))]));
    const replies = await client.readOptionReplies();
    t.equal(replies[replies.length - 1]?.type, REP.ACK, 'GO acknowledged first');
    const model = new DiskModel(fixture.image);
    t.equal(verifyRound(t, model, requests.slice(0, 3), await collect(client,
      requests.slice(0, 3))), 0, 'the pipelined requests answered');
    send(client, requests[3]!);
    t.equal(verifyRound(t, model, [requests[3]!], await collect(client, [requests[3]!])), 0,
      'a READ across the WRITE sees it');
    t.equal(fixture.calls.read + fixture.calls.write, 0, 'served by the thread');
  });
}

t.test('multi-conn: a WRITE the thread served on one connection is synced by a FLUSH on ' +
  'another', async (t) => {
  const fixture = await startFixture(t);
  const [fileA, fileB] = fixture.files as [string, string];
  const a = (await connect(t, fixture, 'unix')).client;
  const b = (await connect(t, fixture, 'tcp')).client;
  const flush = async (cookie: bigint): Promise<number> => {
    b.request({ type: CMD.FLUSH, cookie });
    const reply = await b.readSimpleReply();
    t.equal(reply.cookie, cookie);
    return reply.errno;
  };
  t.equal(await flush(1n), 0);
  const synced = (file: string): number => fixture.syncs.get(file) ?? 0;
  const before = [synced(fileA), synced(fileB)];
  t.equal(await flush(2n), 0);
  t.same([synced(fileA), synced(fileB)], before, 'nothing written: no fdatasync');
  // extent 0 lies on a.img: the WRITE goes to it only
  const payload = crypto.randomBytes(64 * KiB);
  a.request({ type: CMD.WRITE, cookie: 3n, offset: 4096, payload });
  t.same(await a.readSimpleReply(), { errno: 0, cookie: 3n });
  t.equal(fixture.calls.write, 0, 'the thread served the WRITE (the JS path never saw it)');
  const entry = await fixture.pool.acquire(fileA, 'w');
  t.equal(Atomics.load(entry.dirtyFlag, 0), 1, 'a.img\'s pool entry is dirty');
  await fixture.pool.release(entry);
  t.equal(await flush(4n), 0);
  t.same([synced(fileA), synced(fileB)], [before[0]! + 1, before[1]],
    'the FLUSH on the other connection ran fdatasync on a.img only');
  const seen = await b.readData(4096, 64 * KiB, 5n);
  t.equal(firstDifference(seen, payload), -1, 'the other connection reads the WRITE');
  t.equal(await flush(6n), 0);
  t.same([synced(fileA), synced(fileB)], [before[0]! + 1, before[1]], 'clean again');
});

interface LoopWrite {
  index: number;
  slot: number;
  sentAt: number;
  errno: number | null;
}

/** Pipelined WRITEs (8 in flight, never two on one slot) until `isDone()`; bounded. */
async function writeLoop(client: ScriptedClient, slotOffsets: number[], slotBytes: number,
  isDone: () => boolean, onReply: (write: LoopWrite) => void): Promise<LoopWrite[]> {
  const writes: LoopWrite[] = [];
  const inflight = new Map<bigint, LoopWrite>();
  const deadline = Date.now() + LOOP_MS;
  let next = 0;
  try {
    while (Date.now() < deadline && (inflight.size > 0 || !isDone()) && next < LOOP_MAX) {
      while (!isDone() && inflight.size < 8 && next < LOOP_MAX) {
        const write: LoopWrite = { index: next, slot: next % slotOffsets.length,
          sentAt: Date.now(), errno: null };
        client.request({ type: CMD.WRITE, cookie: BigInt(next + 1),
          offset: slotOffsets[write.slot]!, payload: loopPayload(next, slotBytes) });
        inflight.set(BigInt(next + 1), write);
        writes.push(write);
        next += 1;
      }
      if (inflight.size === 0) break;
      const reply = await client.readSimpleReply();
      const write = inflight.get(reply.cookie);
      if (write === undefined) throw new Error(`unknown cookie ${reply.cookie}`);
      inflight.delete(reply.cookie);
      write.errno = reply.errno;
      onReply(write);
    }
  } catch {
    // the server closed the connection: what was in flight has no reply
  }
  return writes;
}

function loopPayload(index: number, length: number): Buffer {
  const payload = Buffer.alloc(length, (index % 250) + 1);
  payload.writeUInt32BE(index, 0);
  return payload;
}

for (const transport of TRANSPORTS) {
  t.test(`${transport}: a fence during sustained WRITEs resolves; later requests get ` +
    'ESHUTDOWN and no WRITE lands after it', async (t) => {
    const fixture = await startFixture(t);
    const { client } = await connect(t, fixture, transport);
    const slotBytes = 64 * KiB;
    const stride = Math.floor(fixture.size / 48);
    const slots = Array.from({ length: 48 }, (_v, index) => index * stride + 513);
    let acked = 0;
    let fencedAt = Infinity;
    let isStopping = false;
    let reachedWarmup: () => void = () => undefined;
    const warm = new Promise<void>((resolve) => (reachedWarmup = resolve));
    const loop = writeLoop(client, slots, slotBytes, () => isStopping, (write) => {
      if (write.errno === 0) acked += 1;
      if (acked === 200) reachedWarmup();
    });
    await bounded(Promise.race([warm, loop]), LOOP_MS, 'the warm-up');
    t.ok(acked >= 200, `${acked} WRITEs acknowledged before the fence`);
    await bounded(fixture.server.fenceExport('disk'), 10_000, 'fenceExport');
    fencedAt = Date.now();
    const snapshot = readThrough(fixture.extents, 0, fixture.size);
    await new Promise((resolve) => setTimeout(resolve, 300)); // the client keeps writing
    isStopping = true;
    const writes = await bounded(loop, LOOP_MS, 'the loop');
    const after = writes.filter((write) => write.sentAt > fencedAt);
    t.ok(after.length > 0, `${after.length} WRITEs sent after the fence resolved`);
    t.same(after.filter((write) => write.errno !== ERRNO.ESHUTDOWN && write.errno !== null)
      .map((write) => write.errno), [], 'each refused with ESHUTDOWN');
    t.ok(after.some((write) => write.errno === ERRNO.ESHUTDOWN), 'ESHUTDOWN arrived');
    const files = readThrough(fixture.extents, 0, fixture.size);
    t.equal(firstDifference(files, snapshot), -1, 'no byte changed after the fence resolved');
    // each slot holds its last acknowledged WRITE (or the original bytes)
    let wrongSlots = 0;
    for (const [slot, offset] of slots.entries()) {
      const last = writes.filter((write) => write.slot === slot && write.errno === 0).pop();
      const expected = last === undefined
        ? fixture.image.subarray(offset, offset + slotBytes) : loopPayload(last.index, slotBytes);
      if (!files.subarray(offset, offset + slotBytes).equals(expected)) wrongSlots += 1;
    }
    t.equal(wrongSlots, 0, 'every slot holds its last acknowledged WRITE');
    client.request({ type: CMD.READ, cookie: 999_999n, offset: 0, length: 4096 });
    t.same(await client.readSimpleReply(), { errno: ERRNO.ESHUTDOWN, cookie: 999_999n },
      'a READ after the fence is refused too');
    t.ok(fixture.calls.write < acked / 2, `the thread served most WRITEs (JS: ` +
      `${fixture.calls.write})`);
  });
}

/** a.img and b.img, 4 MiB each of random bytes; the export starts as a.img alone. */
function onlyA(files: string[]): ExtentSpec[] {
  return [{ path: files[0]!, offset: 0, length: 4 * MiB }];
}

t.test('enlarge (replaceMap) on an open connection: READs and WRITEs past the old size work',
  async (t) => {
    const fixture = await startFixture(t, { extents: onlyA });
    const [fileA, fileB] = fixture.files as [string, string];
    const { client } = await connect(t, fixture, 'unix');
    const head = await client.readData(0, 64 * KiB, 1n);
    t.equal(firstDifference(head, fixture.image.subarray(0, 64 * KiB)), -1);
    t.equal(fixture.calls.read, 0, 'served by the thread');
    const grown: ExtentSpec[] = [{ path: fileA, offset: 0, length: 4 * MiB },
      { path: fileB, offset: MiB, length: 4 * MiB }];
    await fixture.exp.replaceMap(ExtentMap.fromList(grown));
    t.equal(fixture.exp.size, 8 * MiB);
    const across = await client.readData(4 * MiB - 4096, 8192, 2n);
    t.equal(firstDifference(across, readThrough(grown, 4 * MiB - 4096, 8192)), -1,
      'a READ across the old end');
    const payload = crypto.randomBytes(128 * KiB);
    client.request({ type: CMD.WRITE, cookie: 3n, offset: 6 * MiB, payload });
    t.same(await client.readSimpleReply(), { errno: 0, cookie: 3n }, 'a WRITE past it');
    t.equal(firstDifference(readThrough([{ path: fileB, offset: 3 * MiB, length: 128 * KiB }],
      0, 128 * KiB), payload), -1, 'landed in b.img at 3 MiB');
    t.equal(firstDifference(await client.readData(6 * MiB, 128 * KiB, 4n), payload), -1,
      'and reads back');
    t.equal(firstDifference(await client.readData(8 * MiB - 512, 512, 5n),
      readThrough(grown, 8 * MiB - 512, 512)), -1, 'the new last bytes');
  });

t.test('a remapped range is read and written through the new map at once on an open ' +
  'connection', async (t) => {
  const fixture = await startFixture(t, { extents: onlyA });
  const [fileA, fileB] = fixture.files as [string, string];
  const { client } = await connect(t, fixture, 'tcp');
  t.equal(firstDifference(await client.readData(0, 4096, 1n), fixture.image.subarray(0, 4096)),
    -1, 'a.img before');
  t.equal(fixture.calls.read, 0, 'served by the thread (which holds the old map)');
  const before = fixture.calls.read;
  const remapped: ExtentSpec[] = [{ path: fileB, offset: 0, length: 4 * MiB },
    { path: fileA, offset: 0, length: 4 * MiB }];
  await fixture.exp.replaceMap(ExtentMap.fromList(remapped));
  const now = await client.readData(0, 4096, 2n);
  t.equal(firstDifference(now, readThrough(remapped, 0, 4096)), -1,
    'the same READ now gets b.img\'s bytes');
  t.equal(fixture.calls.read, before, 'the thread, given the new map (datapathRemap), served it');
  const aBefore = readThrough(onlyA(fixture.files), 0, 4 * MiB);
  const payload = crypto.randomBytes(8192);
  client.request({ type: CMD.WRITE, cookie: 3n, offset: 0, payload });
  t.same(await client.readSimpleReply(), { errno: 0, cookie: 3n });
  t.equal(firstDifference(readThrough([{ path: fileB, offset: 0, length: 8192 }], 0, 8192),
    payload), -1, 'a WRITE lands in b.img');
  t.equal(firstDifference(readThrough(onlyA(fixture.files), 0, 4 * MiB), aBefore), -1,
    'and nothing in a.img');
});

for (const transport of TRANSPORTS) {
  t.test(`${transport}: a client that half-closes after pipelined requests gets every reply`,
    async (t) => {
      const fixture = await startFixture(t);
      const { client, socket } = await connect(t, fixture, transport);
      const requests: Request[] = [];
      let plain = 0;
      for (let index = 0; index < 24; index++) {
        const offset = (index * 517 * KiB) % (fixture.size - 2 * MiB);
        const end = fixture.size - (index + 1) * 8192; // WRITEs at the end: no READ goes there
        if (index % 4 === 3) {
          // every other WRITE with FUA: the JS path answers it through the thread
          requests.push({ type: CMD.WRITE, cookie: BigInt(index), offset: end, length: 8192,
            payload: crypto.randomBytes(8192), flags: index % 8 === 3 ? CMD_FLAG.FUA : 0 });
        } else if (index % 6 === 1) {
          requests.push({ type: CMD.FLUSH, cookie: BigInt(index), offset: 0, length: 0 });
        } else {
          requests.push({ type: CMD.READ, cookie: BigInt(index), offset,
            length: [4096, MiB, 300_001][index % 3]! });
        }
        const last = requests[requests.length - 1]!;
        if ((last.type === CMD.READ || last.type === CMD.WRITE) && last.flags !== CMD_FLAG.FUA) {
          plain += 1;
        }
      }
      for (const request of requests) send(client, request);
      socket.end(); // FIN: the server may not close before the last reply
      const model = new DiskModel(fixture.image);
      t.equal(verifyRound(t, model, requests, await collect(client, requests)), 0,
        'every reply, each right');
      t.equal(await client.waitClosed(), true, 'then the server closed');
      t.equal(client.bufferedLength, 0, 'nothing more');
      t.equal(model.mismatch(0, readThrough(fixture.extents, 0, fixture.size)), -1,
        'the WRITEs landed');
      t.equal(fixture.calls.read, 0, `the thread served the ${plain} plain READs and WRITEs`);
      t.equal(fixture.calls.write, 3, 'the JS path the 3 FUA WRITEs');
    });

  t.test(`${transport}: DISC after pipelined requests: every reply, then the close; nothing ` +
    'after DISC is answered', async (t) => {
    const fixture = await startFixture(t);
    const { client } = await connect(t, fixture, transport, { structured: transport === 'unix' });
    const requests: Request[] = [];
    for (let index = 0; index < 16; index++) {
      const length = [2 * MiB, 4096, MiB + 13, 8 * MiB][index % 4]!;
      requests.push({ type: CMD.READ, cookie: BigInt(index), length,
        offset: (index * 2 * MiB + 511) % (fixture.size - length) });
    }
    requests.push({ type: CMD.FLUSH, cookie: 100n, offset: 0, length: 0 });
    for (const request of requests) send(client, request);
    client.request({ type: CMD.DISC });
    client.request({ type: CMD.READ, cookie: 999n, offset: 0, length: 4096 });
    const model = new DiskModel(fixture.image);
    t.equal(verifyRound(t, model, requests, await collect(client, requests)), 0);
    t.equal(await client.waitClosed(), true, 'the server closed after the last reply');
    t.equal(client.bufferedLength, 0, 'nothing after DISC was answered');
    t.equal(fixture.calls.read, 0, 'the thread served the READs');
  });
}

t.test('a read-only export: the thread serves READs; WRITEs get EPERM and change nothing',
  async (t) => {
    const fixture = await startFixture(t, { mode: 'r' });
    const { client } = await connect(t, fixture, 'unix');
    t.equal(firstDifference(await client.readData(4096, 64 * KiB, 1n),
      fixture.image.subarray(4096, 4096 + 64 * KiB)), -1);
    t.equal(fixture.calls.read, 0, 'served by the thread');
    client.request({ type: CMD.WRITE, cookie: 2n, offset: 4096, payload: Buffer.alloc(4096, 1) });
    t.same(await client.readSimpleReply(), { errno: ERRNO.EPERM, cookie: 2n });
    t.equal(firstDifference(readThrough(fixture.extents, 0, fixture.size), fixture.image), -1,
      'the files are unchanged');
    t.equal(firstDifference(await client.readData(4096, 4096, 3n),
      fixture.image.subarray(4096, 8192)), -1, 'and the connection goes on');
  });

for (const transport of TRANSPORTS) {
  t.test(`${transport}: a client that never reads replies does not hold server.close()`,
    async (t) => {
      const fixture = await startFixture(t);
      const baseline = duplicatedSockets();
      const { client, socket } = await connect(t, fixture, transport);
      socket.pause();
      for (let index = 0; index < 32; index++) {
        client.request({ type: CMD.READ, cookie: BigInt(index), offset: (index % 3) * MiB,
          length: 4 * MiB });
      }
      await new Promise((resolve) => setTimeout(resolve, 500)); // the socket fills up
      t.equal(duplicatedSockets() - baseline, 1, 'the thread is blocked sending');
      const started = Date.now();
      await bounded(fixture.server.close({ graceMs: 500 }), CLOSE_BOUND_MS, 'server.close()');
      const elapsed = Date.now() - started;
      t.ok(elapsed < CLOSE_BOUND_MS, `close() returned in ${elapsed} ms`);
      // close() waits for the listeners at most graceMs more: the connection may still be
      // ending (the thread gives a stalled client LIMITS.nbdFenceSenderWaitMs)
      t.ok(await eventually(() => fixture.server.connectionCount === 0, CLOSE_BOUND_MS),
        `no connection left ${Date.now() - started} ms after close() began`);
      t.ok(await eventually(() => duplicatedSockets() === baseline), 'the thread ended');
      socket.resume();
      t.equal(await client.waitClosed(), true, 'the client sees the end');
    });
}

for (const transport of TRANSPORTS) {
  t.test(`${transport}: a client that vanishes with large READs in flight: the thread ends, ` +
    'nothing is logged as an error, others get service', async (t) => {
    const { log, lines } = captureLog('warn');
    const fixture = await startFixture(t, { log });
    const baseline = duplicatedSockets();
    const { client, socket } = await connect(t, fixture, transport);
    for (let index = 0; index < 40; index++) {
      client.request({ type: CMD.READ, cookie: BigInt(index),
        offset: (index * 3 * MiB) % (fixture.size - 4 * MiB), length: 2 * MiB + index });
    }
    await client.read(64 * KiB); // the replies have started
    socket.destroy();
    t.ok(await eventually(() => fixture.server.connectionCount === 0),
      'the connection left the registry');
    t.ok(await eventually(() => duplicatedSockets() === baseline), 'its thread ended');
    const errors = lines.filter((line) => line.level >= 50);
    t.equal(errors.length, 0, `no error logged (${errors[0]?.msg})`);
    const other = (await connect(t, fixture, transport)).client;
    t.equal(firstDifference(await other.readData(12_345, MiB, 1n),
      fixture.image.subarray(12_345, 12_345 + MiB)), -1, 'another client gets service');
    t.equal(fixture.calls.read, 0, 'from a thread');
  });
}

const MULTI_CONN_SCRIPT = `
import json, sys, nbd
a = nbd.NBD()
a.connect_uri(sys.argv[1])
b = nbd.NBD()
b.connect_uri(sys.argv[1])
r = {'multi_conn': a.can_multi_conn()}
data = bytes(range(256)) * 256
a.pwrite(data, 1048576)
b.flush()
r['b_reads_a'] = b.pread(len(data), 1048576) == data
r['a_reads_a'] = a.pread(len(data), 1048576) == data
a.shutdown()
b.shutdown()
print(json.dumps(r))
`;

t.test('nbdsh: a pwrite on one handle and a flush on another sync the backing',
  { skip: fs.existsSync(PYTHON_LIBNBD) && hasTool('nbdsh') ? false : 'python3-libnbd missing' },
  async (t) => {
    const fixture = await startFixture(t);
    const uri = `nbd+unix:///disk?socket=${fixture.socketPath}`;
    const result = await runTool(PYTHON_LIBNBD, ['-c', MULTI_CONN_SCRIPT, uri],
      { timeoutMs: 60_000 });
    t.equal(result.code, 0, result.stderr);
    t.same(JSON.parse(result.stdout || '{}'), { multi_conn: true, b_reads_a: true,
      a_reads_a: true });
    t.equal(fixture.calls.write, 0, 'the thread served the pwrite');
    // [1 MiB, +64 KiB) lies in extent 0 (a.img): only it was written
    const [fileA, fileB] = fixture.files as [string, string];
    t.equal(fixture.syncs.get(fileA), 1, 'the flush on the other handle synced a.img');
    t.equal(fixture.syncs.get(fileB) ?? 0, 0, 'and not b.img');
  });

for (const transport of TRANSPORTS) {
  t.test(`${transport}: nbdcopy round trip, byte for byte`,
    { skip: hasTool('nbdcopy') ? false : 'nbdcopy missing' }, async (t) => {
      const fixture = await startFixture(t);
      const uri = transport === 'tcp' ? `nbd://127.0.0.1:${fixture.port}/disk`
        : `nbd+unix:///disk?socket=${fixture.socketPath}`;
      const dir = fixture.dir;
      const source = path.join(dir, 'source.img');
      const image = crypto.randomBytes(fixture.size);
      fs.writeFileSync(source, image);
      const up = await runTool('nbdcopy', ['--flush', source, uri], { timeoutMs: 60_000 });
      t.equal(up.code, 0, up.stderr);
      t.equal(fixture.calls.write, 0, 'the threads served every WRITE');
      t.equal(firstDifference(readThrough(fixture.extents, 0, fixture.size), image), -1,
        'the files hold the image');
      for (const args of [[], ['--request-size=8388608', '--connections=1']]) {
        const back = path.join(dir, `back${args.length}.img`);
        const down = await runTool('nbdcopy', [...args, uri, back], { timeoutMs: 60_000 });
        t.equal(down.code, 0, down.stderr);
        t.equal(firstDifference(fs.readFileSync(back), image), -1,
          `nbdcopy ${args.join(' ')}: byte for byte`);
      }
      t.equal(fixture.calls.read, 0, 'the threads served every READ');
    });
}

for (const transport of TRANSPORTS) {
  t.test(`${transport}: the busy-poll budget is the server's limit: a client that answers at ` +
    'once is caught by spins, none with 0; server.stats count them', async (t) => {
    t.equal(createServer({ provider: createFixedProvider([]) }).limits.busyPollMicros,
      LIMITS.nbdDatapathSpinUs, 'on by default');
    for (const micros of [5000, 0]) {
      await t.test(`busyPollMicros ${micros}`, async (t) => {
        const fixture = await startFixture(t, { limits: { busyPollMicros: micros } });
        const { client } = await connect(t, fixture, transport);
        const model = new DiskModel(fixture.image);
        let wrong = 0;
        for (let index = 0; index < 40; index++) {
          const request: Request = { type: CMD.READ, cookie: BigInt(index),
            offset: index * 4096, length: 4096 };
          send(client, request);
          wrong += verifyRound(t, model, [request], await collect(client, [request]));
        }
        t.equal(wrong, 0, '40 READs one after the other, each as the model says');
        const stats = fixture.server.stats;
        if (micros === 0) {
          t.same([stats.busyPollHits, stats.busyPollMisses], [0, 0], 'no spin');
        } else {
          t.ok(stats.busyPollHits >= 20, `spins found the next request (${stats.busyPollHits})`);
        }
        client.request({ type: CMD.DISC });
        t.equal(await client.waitClosed(), true);
        t.ok(await eventually(() => fixture.server.connectionCount === 0), 'connection gone');
        const after = fixture.server.stats.busyPollHits;
        t.ok(after >= stats.busyPollHits, `a closed connection's spins stay counted (${after})`);
      });
    }
  });
}
