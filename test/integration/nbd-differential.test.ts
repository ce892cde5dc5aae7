/**
 * Differential fuzzing of the two executors: the same seeded request streams go to the same
 * file-backed export (an extent export over two files, so the data-path thread can take the
 * connection) once with the data-path thread alone (native/src/datapath.h, XVD_DATAPATH=thread),
 * once with it and its reader thread taking every large READ (XVD_DATAPATH=reader-always; by
 * default the reader takes them only while a CPU is free), and once with
 * XVD_DATAPATH=off (every request on JS, transmission.ts), each run starting from identical file
 * contents. The replies must be byte-identical: errors (simple or structured) and data, with
 * one exception the kernel causes (isSameReadOtherHoles): a structured READ that one run's file
 * has as a hole and the other's as zeros. Replies may complete out of order on either path, so
 * pipelined rounds are compared per cookie (each request's reply bytes, the same set of
 * cookies); sequential sessions (one request in flight) are compared as whole streams. The
 * files must be identical afterwards. The data-path run must have had requests served by the
 * thread (server.stats.threadRequests > 0), the other none.
 *
 * Streams mix plain READs and WRITEs (the thread's) with everything else: FLUSH, TRIM,
 * WRITE_ZEROES, CACHE, BLOCK_STATUS, FUA/DF/NO_HOLE/REQ_ONE/FAST_ZERO and unknown flags and
 * commands, zero lengths, ranges past the end, unaligned ranges (with NBD_INFO_BLOCK_SIZE asked
 * for), READs over nbdPayloadMax, an oversize WRITE (discarded), and WRITEs on a read-only
 * export; with simple and structured replies, with and without base:allocation. Requests in a
 * pipelined round use disjoint ranges, so their outcome does not depend on completion order.
 *
 * Copy-on-write: the `clone` export maps the same extents with every other one shared (a clone's
 * view, engine/cow.ts, with a fake catalog whose reserve is a third file). The thread forwards
 * WRITEs touching a shared extent and serves from each new map the JS path hands it
 * (datapathRemap); the replies and the VD's bytes afterwards must be the same on both paths, and
 * the shared bytes of the files never change.
 */
import t, { type Test } from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { BackingPool } from '../../src/backing/pool';
import { CowVolume, type CowCatalog, type ReserveExtent } from '../../src/engine/cow';
import { openExport, type ExtentExport } from '../../src/engine/extent-export';
import type { ExtentSpec } from '../../src/engine/extent-map';
import { LIMITS } from '../../src/limits';
import { routeEnvOf } from '../../src/cli/route-env';
import type { DatapathSetting } from '../../src/dataplane/routes';
import { createServer, type NbdServer } from '../../src/nbd/index';
import { ScriptedClient, createFixedProvider, quietLog } from '../helpers/nbd-client';
import { connectRaw, listenTcpAndUnix } from '../helpers/sockets';
import { firstDifference } from '../helpers/replies';
import { FuzzRandom } from '../helpers/wire-fuzz';
import { CMD, CMD_FLAG, INFO, REPLY_TYPE, SIMPLE_REPLY_MAGIC, requestFrame } from '../helpers/wire';

const KiB = 1024;
const MiB = 1024 * KiB;
const FILE_BYTES = 6 * MiB;
const SEED = Number(process.env['XVD_FUZZ_SEED'] ?? 15);
const SESSIONS = Number(process.env['XVD_DIFF_SESSIONS'] ?? 5);
const ROUNDS = 40;
const REPLY_FLAG_DONE = 1;
const SEQUENTIAL_SEED_OFFSET = 1000;

/** Eight extents alternating between two files, odd lengths, gaps between them. */
function extentsOf(files: readonly string[]): ExtentSpec[] {
  const cursors = [4096, 8192 + 17];
  return Array.from({ length: 8 }, (_, index) => {
    const which = index % 2;
    const length = 512 * KiB + index * 37 * KiB + (index % 3) * 511;
    const extent = { path: files[which]!, offset: cursors[which]!, length };
    cursors[which] = cursors[which]! + length + 4097;
    return extent;
  });
}

interface Request {
  type: number;
  flags: number;
  cookie: bigint;
  offset: bigint;
  length: number;
  payload?: Buffer;
}

interface Session {
  name: 'disk' | 'ro' | 'clone';
  structured: boolean;
  meta: boolean;
  blockSize: boolean;
  rounds: Request[][];
}

const FLAG_CHOICES = [0, 0, 0, 0, CMD_FLAG.FUA, CMD_FLAG.DF, CMD_FLAG.NO_HOLE, CMD_FLAG.REQ_ONE,
  CMD_FLAG.FAST_ZERO, 0x40, 0x8000] as const;
const TYPE_CHOICES = [CMD.READ, CMD.READ, CMD.READ, CMD.WRITE, CMD.WRITE, CMD.WRITE, CMD.FLUSH,
  CMD.TRIM, CMD.WRITE_ZEROES, CMD.CACHE, CMD.BLOCK_STATUS, 8, 0x1234] as const;

/** A request inside [slotStart, slotEnd) most of the time; else one of the bad kinds. */
function makeRequest(random: FuzzRandom, cookie: bigint, size: number, slotStart: number,
  slotEnd: number): Request {
  const type = random.pick(TYPE_CHOICES);
  const flags = random.chance(0.75) ? 0 : random.pick(FLAG_CHOICES);
  const slot = slotEnd - slotStart;
  let length = 1 + random.below(Math.min(slot, random.chance(0.7) ? 64 * KiB : 2 * MiB));
  let offset = BigInt(slotStart + random.below(slot - length + 1));
  if (random.chance(0.3)) { // aligned, as real clients send
    offset = BigInt(slotStart + Math.floor(random.below(slot) / 4096) * 4096);
    length = Math.min(slotEnd - Number(offset), 4096 * (1 + random.below(16)));
  }
  switch (random.below(16)) {
    case 0:
      offset = BigInt(size - random.below(4096));
      length = 4096 + random.below(4096); // runs past the end
      break;
    case 1:
      offset = random.pick([BigInt(size), 2n ** 63n, 2n ** 64n - 1n]);
      break;
    case 2:
      length = 0;
      break;
    case 3:
      if (type === CMD.READ) length = LIMITS.nbdPayloadMax + 1; // oversize READ: EINVAL
      break;
    default:
      break;
  }
  const request: Request = { type, flags, cookie, offset, length };
  if (type === CMD.WRITE) {
    request.payload = random.chance(0.5) ? Buffer.alloc(length, random.below(256))
      : random.bytes(length);
  }
  return request;
}

function makeSession(seed: number, isPipelined: boolean, size: number,
  isReadOnly: boolean, name: 'disk' | 'clone' = 'disk'): Session {
  const random = new FuzzRandom(seed);
  const session: Session = { name: isReadOnly ? 'ro' : name,
    structured: random.chance(0.5), meta: false, blockSize: random.chance(0.4), rounds: [] };
  session.meta = session.structured && random.chance(0.5);
  let cookie = BigInt(random.u32()) << 8n;
  for (let round = 0; round < ROUNDS; round++) {
    const count = isPipelined ? 1 + random.below(16) : 1;
    const slot = Math.floor(size / count);
    session.rounds.push(Array.from({ length: count }, (_, index) => {
      cookie += 1n;
      return makeRequest(random, cookie, size, index * slot, (index + 1) * slot);
    }));
  }
  return session;
}

interface Fixture {
  server: NbdServer;
  port: number;
  socketPath: string;
  files: string[];
  size: number;
  clone: ExtentExport | null;
  /** the clone's copies of `files` */
  cloneFiles: string[];
}

const COW_EXTENT = 64 * KiB;

/** A fake catalog: reserve extents from `reservePath`, commits accepted. */
function cowCatalogOf(reservePath: string): CowCatalog {
  let next = 0;
  return {
    reserve: async (extentSize, count) => Array.from({ length: count }, (): ReserveExtent => {
      const extentIndex = next++;
      return { memberId: 3, extentIndex, path: reservePath, offset: extentIndex * extentSize,
        extentSize };
    }),
    commit: async () => undefined,
    extentSizeOf: () => COW_EXTENT,
  };
}

/**
 * `clone`: the same layout over copies of the files (one pool per file, as `xvd serve` has; the
 * export's own pool must not open the files another pool writes), every other extent shared,
 * with copy-on-write.
 */
async function openClone(files: readonly string[], size: number, dir: string,
  pool: BackingPool): Promise<{ clone: ExtentExport; volume: CowVolume; cloneFiles: string[] }> {
  const cloneFiles = files.map((file) => path.join(dir, `clone-${path.basename(file)}`));
  files.forEach((file, index) => fs.copyFileSync(file, cloneFiles[index]!));
  const reservePath = path.join(dir, 'r.img');
  fs.writeFileSync(reservePath, '');
  fs.truncateSync(reservePath, 2 * FILE_BYTES);
  const shared = extentsOf(cloneFiles).map((extent, index) => ({ ...extent,
    shared: index % 2 === 0 }));
  const volume = new CowVolume(shared, cowCatalogOf(reservePath), pool, 'w');
  const clone = await openExport({ name: 'clone', description: 'cow', mode: 'w', size,
    extents: volume.map.toList(), pool });
  clone.attachCow(volume);
  return { clone, volume, cloneFiles };
}

/** Files of seeded bytes, a writable export `disk` and a read-only `ro` over them (and `clone`). */
async function startFixture(t: Test, dir: string, seed: number, datapath: DatapathSetting,
  withClone: boolean): Promise<Fixture> {
  const files = ['a.img', 'b.img'].map((name) => path.join(dir, name));
  const random = new FuzzRandom(seed);
  for (const file of files) fs.writeFileSync(file, random.bytes(FILE_BYTES));
  const extents = extentsOf(files);
  const size = extents.reduce((sum, extent) => sum + extent.length, 0);
  const pool = new BackingPool();
  const disk = await openExport({ name: 'disk', description: 'rw', mode: 'w', size, extents,
    pool });
  const roPool = new BackingPool();
  const ro = await openExport({ name: 'ro', description: 'ro', mode: 'r', size, extents,
    pool: roPool });
  // the clone only in clone sessions: the others run on the server as it was before clones
  const cowPool = new BackingPool();
  const cow = withClone ? await openClone(files, size, dir, cowPool) : null;
  // XVD_DATAPATH as `xvd serve` reads it (cli/route-env.ts)
  const server = createServer({
    provider: createFixedProvider(cow === null ? [disk, ro] : [disk, ro, cow.clone]),
    log: quietLog, datapath: routeEnvOf({ XVD_DATAPATH: datapath }).datapath });
  const { port, socketPath } = await listenTcpAndUnix(t, server, 'xvd-diff-', async () => {
    await disk.close();
    await ro.close();
    await cow?.clone.close();
    await cow?.volume.close();
    await pool.close();
    await roPool.close();
    await cowPool.close();
  });
  return { server, port, socketPath, files, size, clone: cow?.clone ?? null,
    cloneFiles: cow?.cloneFiles ?? [] };
}

/** Reads one request's replies, up to its final one; their raw bytes. */
async function readReplyFrames(client: ScriptedClient, byCookie: Map<bigint, Request>,
  done: Map<bigint, Buffer[]>): Promise<void> {
  const magicBytes = await client.read(4);
  if (magicBytes.readUInt32BE(0) === SIMPLE_REPLY_MAGIC) {
    const rest = await client.read(12);
    const cookie = rest.readBigUInt64BE(4);
    const request = byCookie.get(cookie);
    if (request === undefined) throw new Error(`simple reply for unknown cookie ${cookie}`);
    const frames = [magicBytes, rest];
    if (request.type === CMD.READ && rest.readUInt32BE(0) === 0) {
      frames.push(await client.read(request.length));
    }
    done.set(cookie, [...(done.get(cookie) ?? []), ...frames]);
    byCookie.delete(cookie);
    return;
  }
  const header = await client.read(16);
  const cookie = header.readBigUInt64BE(4);
  if (!byCookie.has(cookie)) throw new Error(`chunk for unknown cookie ${cookie}`);
  const payload = await client.read(header.readUInt32BE(12));
  done.set(cookie, [...(done.get(cookie) ?? []), magicBytes, header, payload]);
  if ((header.readUInt16BE(0) & REPLY_FLAG_DONE) !== 0) byCookie.delete(cookie);
}

interface RunResult {
  /** every reply byte in arrival order */
  stream: Buffer;
  perCookie: Map<bigint, Buffer>;
  threadRequests: number;
  readerRequests: number;
  files: Buffer[];
  /** the clone's bytes afterwards (null for the other exports) */
  cloneBytes: Buffer | null;
}

/** Runs the session on a fresh fixture with XVD_DATAPATH as given; the replies and files. */
async function runSession(t: Test, session: Session, fileSeed: number,
  datapath: DatapathSetting): Promise<RunResult> {
  const dir = path.join(t.testdir(), datapath);
  fs.mkdirSync(dir, { recursive: true });
  const fixture = await startFixture(t, dir, fileSeed, datapath, session.name === 'clone');
  const socket = await connectRaw(t, fixture, 'tcp');
  socket.on('error', () => undefined);
  const client = new ScriptedClient(socket, socket);
  await client.handshake({ name: session.name, structured: session.structured,
    meta: session.meta, infos: session.blockSize ? [INFO.BLOCK_SIZE] : [] });
  const stream: Buffer[] = [];
  const perCookie = new Map<bigint, Buffer>();
  for (const round of session.rounds) {
    const byCookie = new Map(round.map((request) => [request.cookie, request]));
    client.write(Buffer.concat(round.map((request) => requestFrame(request))));
    const done = new Map<bigint, Buffer[]>();
    for (let count = 0; byCookie.size > 0 && count < 100_000; count++) {
      await readReplyFrames(client, byCookie, done);
    }
    for (const [cookie, frames] of done) {
      perCookie.set(cookie, Buffer.concat(frames));
      stream.push(...frames);
    }
  }
  client.request({ type: CMD.DISC });
  await client.waitClosed(10_000);
  const { threadRequests, readerRequests } = fixture.server.stats;
  let cloneBytes: Buffer | null = null;
  if (fixture.clone !== null) {
    cloneBytes = Buffer.alloc(fixture.size);
    await fixture.clone.read(0, fixture.size, cloneBytes, 0);
  }
  const files = session.name === 'clone' ? fixture.cloneFiles : fixture.files;
  return { stream: Buffer.concat(stream), perCookie, threadRequests, readerRequests,
    files: files.map((file) => fs.readFileSync(file)), cloneBytes };
}

function describe(request: Request | undefined): string {
  return request === undefined ? 'unknown' : `type ${request.type} flags ${request.flags} ` +
    `[${request.offset}, +${request.length})`;
}

/** What a request's reply bytes say: errno, READ data (holes as zeros), chunk types. */
/** A reply's errno, READ data (holes as zeros), chunk types, and the bytes its data and hole
 * chunks cover (-1 when it has a chunk of any other kind; a simple reply: its length). */
function decode(bytes: Buffer, request: Request): { errno: number; data: Buffer | null;
  types: number[]; covered: number; } {
  const data = request.type === CMD.READ && request.length <= LIMITS.nbdPayloadMax
    ? Buffer.alloc(request.length) : null;
  if (bytes.readUInt32BE(0) === SIMPLE_REPLY_MAGIC) {
    const errno = bytes.readUInt32BE(4);
    if (data !== null && errno === 0) bytes.copy(data, 0, 16);
    return { errno, data, types: [], covered: bytes.length - 16 };
  }
  let errno = 0;
  let covered = 0;
  const types: number[] = [];
  for (let at = 0; at + 20 <= bytes.length;) {
    const type = bytes.readUInt16BE(at + 6);
    const length = bytes.readUInt32BE(at + 16);
    const payload = bytes.subarray(at + 20, at + 20 + length);
    types.push(type);
    if (type === REPLY_TYPE.OFFSET_DATA && data !== null) {
      payload.copy(data, Number(payload.readBigUInt64BE(0) - request.offset), 8);
    } else if (type >= 0x8000) {
      errno = payload.readUInt32BE(0);
    }
    if (type === REPLY_TYPE.OFFSET_DATA) covered += length - 8;
    else if (type === REPLY_TYPE.OFFSET_HOLE) covered += payload.readUInt32BE(8);
    else if (type !== REPLY_TYPE.NONE) covered = -Infinity;
    at += 20 + length;
  }
  return { errno, data, types, covered: Math.max(covered, -1) };
}

/**
 * The one allowed difference: a structured READ whose chunks cover the range exactly on both
 * sides, with the same bytes (holes read as zeros), where one side reports as a hole what the
 * other sends as zeros. Each run has its own files, and whether the kernel's SEEK_HOLE calls a
 * range that WRITE_ZEROES made an unwritten extent a hole depends on writeback and the page
 * cache (ext4), not on the executor: the same READ is then a hole on one run and zeros on the
 * other. NBD lets a server send either.
 */
function isSameReadOtherHoles(a: Buffer, b: Buffer, request: Request): boolean {
  if (request.type !== CMD.READ || a.readUInt32BE(0) === SIMPLE_REPLY_MAGIC ||
    b.readUInt32BE(0) === SIMPLE_REPLY_MAGIC) return false;
  const [left, right] = [decode(a, request), decode(b, request)];
  return left.errno === 0 && right.errno === 0 && left.data !== null && right.data !== null &&
    left.data.equals(right.data) && left.covered === request.length &&
    right.covered === request.length;
}

/** READs the reader threads read, over every session (the last test checks there were some). */
let readerTotal = 0;

/** The thread's runs against the JS path's: without its reader (XVD_DATAPATH=thread), and with
 * its reader taking every READ of LIMITS.nbdDatapathReaderMin or more (=reader-always). */
async function compare(t: Test, session: Session, fileSeed: number,
  isSequential: boolean): Promise<void> {
  const js = await runSession(t, session, fileSeed, 'off');
  t.equal(js.threadRequests, 0, 'XVD_DATAPATH=off: no request on a thread');
  for (const datapath of ['thread', 'reader-always'] as const) {
    const thread = await runSession(t, session, fileSeed, datapath);
    compareRuns(t, session, thread, js, isSequential, datapath);
  }
}

function compareRuns(t: Test, session: Session, thread: RunResult, js: RunResult,
  isSequential: boolean, datapath: string): void {
  const requests = new Map(session.rounds.flat().map((request) => [request.cookie, request]));
  t.ok(thread.threadRequests > 0,
    `${datapath}: the thread served requests (${thread.threadRequests})`);
  if (datapath === 'thread') t.equal(thread.readerRequests, 0, 'XVD_DATAPATH=thread: no reader');
  readerTotal += thread.readerRequests;
  t.same([...thread.perCookie.keys()].sort(), [...js.perCookie.keys()].sort(),
    'the same cookies were answered');
  let differences = 0;
  let holeLayouts = 0;
  for (const [cookie, bytes] of thread.perCookie) {
    const other = js.perCookie.get(cookie);
    if (other !== undefined && bytes.equals(other)) continue;
    const request = requests.get(cookie)!;
    if (other !== undefined && isSameReadOtherHoles(bytes, other, request)) {
      holeLayouts += 1;
      continue;
    }
    differences += 1;
    if (differences <= 5) {
      t.fail(`cookie ${cookie} (${describe(request)}): replies differ at byte ` +
        `${other === undefined ? 0 : firstDifference(bytes, other)}`, {
        thread: bytes.subarray(0, 48).toString('hex'),
        js: other?.subarray(0, 48).toString('hex') ?? 'none',
        threadChunks: decode(bytes, request).types,
        jsChunks: other === undefined ? [] : decode(other, request).types,
      });
    }
  }
  t.equal(differences, 0, 'every reply is byte-identical on both executors' +
    (holeLayouts > 0 ? ` (but ${holeLayouts} READ(s) whose holes the kernel placed otherwise)`
      : ''));
  if (isSequential && differences === 0 && holeLayouts === 0) {
    t.equal(firstDifference(thread.stream, js.stream), -1, 'the whole reply streams are equal');
  }
  for (const [index, file] of thread.files.entries()) {
    t.equal(firstDifference(file, js.files[index]!), -1, `backing file ${index} is identical`);
  }
  if (thread.cloneBytes !== null && js.cloneBytes !== null) {
    t.equal(firstDifference(thread.cloneBytes, js.cloneBytes), -1, 'the clone reads the same');
  }
}

t.test('the data-path thread and the JS path answer alike', async (t) => {
  const size = extentsOf(['a', 'b']).reduce((sum, extent) => sum + extent.length, 0);
  for (let index = 0; index < SESSIONS; index++) {
    for (const isPipelined of [false, true]) {
      const seed = SEED * 100 + index + (isPipelined ? 0 : SEQUENTIAL_SEED_OFFSET);
      // every third pair on the read-only export: its WRITEs, TRIMs and zeroes get EPERM
      const session = makeSession(seed, isPipelined, size, index % 3 === 2);
      const label = `${isPipelined ? 'pipelined' : 'sequential'} seed ${seed}: ` +
        `${session.name}, ${session.structured ? 'structured' : 'simple'}` +
        `${session.meta ? ' +base:allocation' : ''}${session.blockSize ? ' +BLOCK_SIZE' : ''}`;
      await t.test(label, (t) => compare(t, session, seed, !isPipelined));
    }
  }
});

t.test('a clone with copy-on-write: the thread and the JS path answer alike', async (t) => {
  const size = extentsOf(['a', 'b']).reduce((sum, extent) => sum + extent.length, 0);
  for (let index = 0; index < 2; index++) {
    for (const isPipelined of [false, true]) {
      const seed = SEED * 100 + 50 + index + (isPipelined ? 0 : SEQUENTIAL_SEED_OFFSET);
      const session = makeSession(seed, isPipelined, size, false, 'clone');
      const label = `${isPipelined ? 'pipelined' : 'sequential'} seed ${seed}: clone, ` +
        `${session.structured ? 'structured' : 'simple'}`;
      await t.test(label, async (t) => {
        await compare(t, session, seed, !isPipelined);
        const js = await runSession(t, session, seed, 'off');
        const pristine = new FuzzRandom(seed).bytes(FILE_BYTES); // a.img as startFixture wrote it
        extentsOf(['a', 'b']).forEach((extent, at) => {
          if (at % 2 !== 0) return; // the shared ones, all in a.img
          const range = [extent.offset, extent.offset + extent.length] as const;
          t.equal(firstDifference(pristine.subarray(...range), js.files[0]!.subarray(...range)),
            -1, `shared extent ${at} is unchanged`);
        });
      });
    }
  }
});

t.test('an oversize WRITE is discarded alike by both executors', async (t) => {
  const oversize = LIMITS.nbdPayloadMax + 4096;
  const plain = (cookie: bigint, offset: number): Request => ({ type: CMD.WRITE, flags: 0,
    cookie, offset: BigInt(offset), length: 4096, payload: Buffer.alloc(4096, 0x3c) });
  const session: Session = { name: 'disk', structured: false, meta: false, blockSize: false,
    rounds: [[plain(1n, 0)], [{ type: CMD.WRITE, flags: 0, cookie: 2n, offset: 0n,
      length: oversize, payload: Buffer.alloc(oversize, 0x5a) }], [plain(3n, 8192)],
    [{ type: CMD.READ, flags: 0, cookie: 4n, offset: 0n, length: 16_384 }]] };
  await compare(t, session, SEED, true);
});

t.test('a structured READ over a range trimmed on the same connection', async (t) => {
  const write = (cookie: bigint, offset: number, length: number): Request => ({ type: CMD.WRITE,
    flags: 0, cookie, offset: BigInt(offset), length, payload: Buffer.alloc(length, 0x11) });
  const session: Session = { name: 'disk', structured: true, meta: false, blockSize: false,
    rounds: [[write(1n, 0, 256 * KiB)],
      [{ type: CMD.TRIM, flags: 0, cookie: 2n, offset: BigInt(64 * KiB), length: 128 * KiB }],
      [{ type: CMD.READ, flags: 0, cookie: 3n, offset: 0n, length: 256 * KiB }]] };
  await compare(t, session, SEED, true);
});

t.test('READs of 1 MiB and more among small ones: the corked TCP sends keep every byte in order',
  async (t) => {
    // On TCP a payload of LIMITS.nbdDatapathCorkMin or more goes in a sendmsg of its own after
    // the bytes before it (MSG_MORE): gathered small replies, the reader's reply after them, or
    // a large reply followed by small ones in one batch; both the thread and the reader send so.
    const read = (cookie: bigint, offset: number, length: number): Request => ({
      type: CMD.READ, flags: 0, cookie, offset: BigInt(offset), length });
    const cork = LIMITS.nbdDatapathCorkMin;
    const round = [read(1n, 0, 4096), read(2n, 8192, 4096), read(3n, 64 * KiB, cork),
      read(4n, 12_288, 4096), read(5n, 4096, 2 * cork), read(6n, 16_384, 512),
      read(7n, 3 * 4096, cork + 4096), read(8n, 0, 4096)];
    for (const structured of [false, true]) {
      const again = round.map((request) => ({ ...request, cookie: request.cookie + 16n }));
      const session: Session = { name: 'disk', structured, meta: false, blockSize: false,
        rounds: [round, [read(9n, 100_000, cork)], again] };
      await t.test(structured ? 'structured' : 'simple', (t) => compare(t, session, SEED, false));
    }
  });

t.test('the reader thread read large READs in the sessions above', async (t) => {
  t.ok(readerTotal > 0, `${readerTotal} READs`);
});
