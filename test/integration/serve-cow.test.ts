/**
 * Copy-on-write clones served by a real `xvd serve` process (issue 18), with real clients:
 * the repo's NBD client (whose connections the data-path thread takes) and nbdsh
 * (python3-libnbd). A golden VD of known bytes is cloned with `xvd clone`:
 *   - writes through two connections of the same clone see each other at once, without a FLUSH
 *     (the thread forwards a WRITE to a shared extent, JS copies and swaps every map);
 *   - writes to the origin and to the clone never show in the other, and the pool image bytes
 *     of the shared extents never change;
 *   - a clone of a VD the server is serving while a client writes it (the live handshake): the
 *     clone reads as the origin did, and later writes to the origin do not reach it;
 *   - SIGKILL of the server right after a FLUSH keeps every flushed byte, and `xvd check` passes;
 *   - SIGKILL before any FLUSH leaves every sector the old or the new bytes, and `xvd check`
 *     passes.
 *   - a clone of a served clone has every write acknowledged before `xvd clone`, also one to an
 *     extent the server had copied and not committed yet (the switch commits it first).
 * Nothing waits a fixed time: each step waits for what the server or the catalog reports.
 */
import t, { type Test } from 'tap';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { runXvd, startServeOnSocket } from '../helpers/cli';
import {
  PYTHON_LIBNBD, type ScriptedClient, connectUnix, runTool,
} from '../helpers/nbd-client';
import { shortTempDir, stopChild } from '../helpers/process';

const MiB = 1024 * 1024;
const SIZE = 8 * MiB;
const EXTENT = MiB;
const CMD_WRITE = 1;
const CMD_FLUSH = 3;

interface Setup {
  catalog: string;
  socket: string;
  golden: Buffer;
  pool: string;
  ok(args: string[]): Promise<string>;
}

async function setup(t: Test): Promise<Setup> {
  const dir = t.testdir();
  const catalog = path.join(dir, 'catalog.sqlite');
  const pool = path.join(dir, 'pool.img');
  fs.closeSync(fs.openSync(pool, 'w'));
  fs.truncateSync(pool, 8 * SIZE);
  const goldenFile = path.join(dir, 'golden.raw');
  const golden = crypto.randomBytes(SIZE);
  fs.writeFileSync(goldenFile, golden);
  const ok = async (args: string[]): Promise<string> => {
    const result = await runXvd(args, { catalog });
    t.equal(result.code, 0, `xvd ${args.join(' ')}: ${result.stderr}`);
    return result.stdout.trim();
  };
  await ok(['format', pool, '--extent-size', '1M']);
  t.equal(await ok(['import', goldenFile]), '1', 'the golden VD');
  await ok(['vbd', 'add', 'vd:1', 'g', '--domain', '1', '--mode', 'w']);
  return { catalog, socket: path.join(shortTempDir(t), 'nbd.sock'), golden, pool, ok };
}

async function open(socket: string, name: string): Promise<ScriptedClient> {
  const client = await connectUnix(socket);
  await client.handshake({ name });
  return client;
}

async function write(client: ScriptedClient, offset: number, payload: Buffer,
  cookie: bigint): Promise<void> {
  client.request({ type: CMD_WRITE, offset, cookie, payload });
  const reply = await client.readSimpleReply();
  if (reply.errno !== 0) throw new Error(`WRITE at ${offset}: errno ${reply.errno}`);
}

async function flush(client: ScriptedClient, cookie: bigint): Promise<void> {
  client.request({ type: CMD_FLUSH, offset: 0, length: 0, cookie });
  const reply = await client.readSimpleReply();
  if (reply.errno !== 0) throw new Error(`FLUSH: errno ${reply.errno}`);
}

/** nbdsh: the export's bytes [offset, offset+length) as hex. */
async function nbdshRead(socket: string, name: string, offset: number, length: number):
Promise<Buffer> {
  const script = 'import nbd, sys\nh = nbd.NBD()\n' +
    `h.set_export_name(${JSON.stringify(name)})\nh.connect_unix(sys.argv[1])\n` +
    `sys.stdout.write(h.pread(${length}, ${offset}).hex())\nh.shutdown()\n`;
  const result = await runTool(PYTHON_LIBNBD, ['-c', script, socket]);
  if (result.code !== 0) throw new Error(`nbdsh read: ${result.stderr}`);
  return Buffer.from(result.stdout.trim(), 'hex');
}

/** nbdsh: writes `payload` at `offset` and, with `isFlushed`, flushes. */
async function nbdshWrite(socket: string, name: string, offset: number, payload: Buffer,
  isFlushed: boolean): Promise<void> {
  const script = 'import nbd, sys\nh = nbd.NBD()\n' +
    `h.set_export_name(${JSON.stringify(name)})\nh.connect_unix(sys.argv[1])\n` +
    `h.pwrite(bytes.fromhex(sys.argv[2]), ${offset})\n` +
    (isFlushed ? 'h.flush()\n' : '') + 'h.shutdown()\n';
  const result = await runTool(PYTHON_LIBNBD, ['-c', script, socket, payload.toString('hex')]);
  if (result.code !== 0) throw new Error(`nbdsh write: ${result.stderr}`);
}

async function check(t: Test, catalog: string): Promise<void> {
  const result = await runXvd(['check'], { catalog });
  t.equal(result.code, 0, `xvd check: ${result.stdout}${result.stderr}`);
}

t.test('two connections of one clone see each other\'s writes at once', async (t) => {
  const s = await setup(t);
  t.equal(await s.ok(['clone', '1']), '2');
  await s.ok(['vbd', 'add', 'vd:2', 'c', '--domain', '1', '--mode', 'w']);
  const poolBefore = fs.readFileSync(s.pool);
  const server = await startServeOnSocket(t, s.catalog, s.socket);
  const a = await open(s.socket, '1/c');
  const b = await open(s.socket, '1/c');
  const one = crypto.randomBytes(4096);
  await write(a, EXTENT + 4096, one, 1n);
  t.ok((await b.readData(EXTENT + 4096, 4096, 2n)).equals(one), 'b reads a\'s write');
  t.ok((await b.readData(EXTENT, 4096, 3n)).equals(s.golden.subarray(EXTENT, EXTENT + 4096)),
    'and the copied bytes around it');
  const two = crypto.randomBytes(8192);
  await write(b, EXTENT + 64 * 1024, two, 4n);
  t.ok((await a.readData(EXTENT + 64 * 1024, 8192, 5n)).equals(two), 'a reads b\'s write');
  t.ok((await a.readData(EXTENT + 4096, 4096, 6n)).equals(one), 'a\'s own write is still there');
  a.end();
  b.end();
  const origin = await nbdshRead(s.socket, '1/g', EXTENT, EXTENT);
  t.ok(origin.equals(s.golden.subarray(EXTENT, 2 * EXTENT)), 'the origin is unchanged');
  await stopChild(server);
  const poolAfter = fs.readFileSync(s.pool);
  t.ok(poolAfter.subarray(0, SIZE).equals(poolBefore.subarray(0, SIZE)),
    'no byte of the pool under the golden VD (its first extents) changed');
  t.notOk(poolAfter.equals(poolBefore), 'the clone\'s writes went elsewhere in the pool');
  await check(t, s.catalog);
});

t.test('writes to the origin and to its clone never show in the other', async (t) => {
  const s = await setup(t);
  t.equal(await s.ok(['clone', '1']), '2');
  await s.ok(['vbd', 'add', 'vd:2', 'c', '--domain', '1', '--mode', 'w']);
  await startServeOnSocket(t, s.catalog, s.socket);
  const toOrigin = Buffer.alloc(4096, 0x0a);
  const toClone = Buffer.alloc(4096, 0x0c);
  await nbdshWrite(s.socket, '1/g', 0, toOrigin, true);
  await nbdshWrite(s.socket, '1/c', 3 * EXTENT, toClone, true);
  t.ok((await nbdshRead(s.socket, '1/g', 0, 4096)).equals(toOrigin), 'origin: its write');
  t.ok((await nbdshRead(s.socket, '1/g', 3 * EXTENT, 4096))
    .equals(s.golden.subarray(3 * EXTENT, 3 * EXTENT + 4096)), 'origin: not the clone\'s');
  t.ok((await nbdshRead(s.socket, '1/c', 3 * EXTENT, 4096)).equals(toClone), 'clone: its write');
  t.ok((await nbdshRead(s.socket, '1/c', 0, 4096)).equals(s.golden.subarray(0, 4096)),
    'clone: not the origin\'s');
  await check(t, s.catalog);
});

t.test('a clone of a VD served while a client writes it reads as the origin did', async (t) => {
  const s = await setup(t);
  await startServeOnSocket(t, s.catalog, s.socket);
  const client = await open(s.socket, '1/g');
  const before = Buffer.alloc(4096, 0xbe);
  await write(client, 2 * EXTENT, before, 1n);
  t.equal(await s.ok(['clone', '1']), '2', 'xvd clone returns once the server switched');
  const after = Buffer.alloc(4096, 0xaf);
  await write(client, 2 * EXTENT, after, 2n);
  await write(client, 5 * EXTENT, after, 3n);
  await flush(client, 4n);
  client.end();
  await s.ok(['vbd', 'add', 'vd:2', 'c', '--domain', '1', '--mode', 'r']);
  t.ok((await nbdshRead(s.socket, '1/c', 2 * EXTENT, 4096)).equals(before),
    'the clone has the write from before the clone');
  t.ok((await nbdshRead(s.socket, '1/c', 5 * EXTENT, 4096))
    .equals(s.golden.subarray(5 * EXTENT, 5 * EXTENT + 4096)), 'and none from after');
  t.ok((await nbdshRead(s.socket, '1/g', 2 * EXTENT, 4096)).equals(after), 'the origin has it');
  await check(t, s.catalog);
});

async function killAndRestart(t: Test, s: Setup, server: ChildProcess): Promise<void> {
  server.kill('SIGKILL');
  await new Promise((resolve) => server.once('exit', resolve));
  await check(t, s.catalog);
  fs.rmSync(s.socket, { force: true });
  await startServeOnSocket(t, s.catalog, s.socket);
}

t.test('SIGKILL after a FLUSH keeps every flushed byte of a clone', async (t) => {
  const s = await setup(t);
  t.equal(await s.ok(['clone', '1']), '2');
  await s.ok(['vbd', 'add', 'vd:2', 'c', '--domain', '1', '--mode', 'w']);
  const server = await startServeOnSocket(t, s.catalog, s.socket);
  const client = await open(s.socket, '1/c');
  const writes: [number, Buffer][] = [];
  for (let index = 0; index < 6; index++) {
    const offset = index * EXTENT + index * 8192;
    const payload = crypto.randomBytes(4096);
    await write(client, offset, payload, BigInt(index + 1));
    writes.push([offset, payload]);
  }
  await flush(client, 100n);
  await killAndRestart(t, s, server);
  const now = await nbdshRead(s.socket, '1/c', 0, SIZE);
  const expected = Buffer.from(s.golden);
  for (const [offset, payload] of writes) payload.copy(expected, offset);
  t.ok(now.equals(expected), 'every flushed write, and the golden bytes elsewhere');
  t.ok((await nbdshRead(s.socket, '1/g', 0, SIZE)).equals(s.golden), 'the origin is unchanged');
  await check(t, s.catalog);
});

t.test('SIGKILL before a FLUSH leaves each sector old or new', async (t) => {
  const s = await setup(t);
  t.equal(await s.ok(['clone', '1']), '2');
  await s.ok(['vbd', 'add', 'vd:2', 'c', '--domain', '1', '--mode', 'w']);
  const server = await startServeOnSocket(t, s.catalog, s.socket);
  const client = await open(s.socket, '1/c');
  const fresh = crypto.randomBytes(SIZE);
  for (let index = 0; index < SIZE / (64 * 1024); index++) {
    const offset = index * 64 * 1024;
    await write(client, offset, fresh.subarray(offset, offset + 64 * 1024), BigInt(index + 1));
  }
  await killAndRestart(t, s, server);
  const now = await nbdshRead(s.socket, '1/c', 0, SIZE);
  let mixed = 0;
  let newSectors = 0;
  for (let at = 0; at < SIZE; at += 512) {
    const sector = now.subarray(at, at + 512);
    const isOld = sector.equals(s.golden.subarray(at, at + 512));
    const isNew = sector.equals(fresh.subarray(at, at + 512));
    if (isNew) newSectors += 1;
    if (!isOld && !isNew) mixed += 1;
  }
  t.equal(mixed, 0, `every sector is the old or the new bytes (${newSectors} new)`);
  t.ok((await nbdshRead(s.socket, '1/g', 0, SIZE)).equals(s.golden), 'the origin is unchanged');
  await check(t, s.catalog);
});

t.test('a clone of a served clone has the writes acknowledged before it, flushed or not',
  async (t) => {
    const s = await setup(t);
    t.equal(await s.ok(['clone', '1']), '2');
    await s.ok(['vbd', 'add', 'vd:2', 'c', '--domain', '1', '--mode', 'w']);
    await startServeOnSocket(t, s.catalog, s.socket);
    const client = await open(s.socket, '1/c');
    const copied = Buffer.alloc(4096, 0x5c); // a first write: its extent copied, not committed
    await write(client, 4 * EXTENT, copied, 1n);
    t.equal(await s.ok(['clone', '2']), '3', 'xvd clone of the served clone');
    await s.ok(['vbd', 'add', 'vd:3', 'cc', '--domain', '1', '--mode', 'r']);
    t.ok((await nbdshRead(s.socket, '1/cc', 4 * EXTENT, 4096)).equals(copied),
      'the new clone has the unflushed write to the copied extent');
    const later = Buffer.alloc(4096, 0x1a);
    await write(client, 4 * EXTENT, later, 2n);
    await flush(client, 3n);
    client.end();
    t.ok((await nbdshRead(s.socket, '1/cc', 4 * EXTENT, 4096)).equals(copied),
      'and not the write made after it');
    t.ok((await nbdshRead(s.socket, '1/c', 4 * EXTENT, 4096)).equals(later), 'which 2 has');
    await check(t, s.catalog);
  });
